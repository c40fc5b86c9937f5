//! SQL aggregates in the engine's windows: COUNT, COUNT(DISTINCT), SUM, MIN, MAX and AVG as
//! mergeable, serializable accumulators ([`weir_engine::window::WindowFunction`]), so a
//! windowed `GROUP BY` runs on the engine's window operator (slices for HOP, a RocksDB window
//! store backed by its changelog, results on close).
//!
//! Over a table, rows also leave (an update retracts the old row, a delete its row): the
//! retracting accumulators count what they hold — SUM with its count of values, MIN, MAX and
//! COUNT(DISTINCT) as a multiset of values with their counts — so a retraction is exact.
//!
//! Invariants: an accumulator's meaning does not depend on the order rows arrive in; a value
//! is read from the batch in one canonical type per aggregate (64-bit integers, doubles, text,
//! booleans; timestamps as epoch milliseconds), and the result is cast back to the type
//! DataFusion planned, so the streaming result equals the batch one.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, StringArray, UInt64Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::physical_expr::PhysicalExpr;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SqlError};

/// The aggregate functions a continuous query runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggKind {
    /// `COUNT(*)` (no argument) or `COUNT(x)` (non-null values).
    Count,
    /// `COUNT(DISTINCT x)`.
    CountDistinct,
    /// `SUM(x)`.
    Sum,
    /// `MIN(x)`.
    Min,
    /// `MAX(x)`.
    Max,
    /// `AVG(x)`.
    Avg,
}

/// One aggregate of a query: its function, its argument over the input rows, and the type
/// of its result.
#[derive(Debug, Clone)]
pub(crate) struct AggSpec {
    pub(crate) kind: AggKind,
    pub(crate) arg: Option<Arc<dyn PhysicalExpr>>,
    /// The canonical type the argument is read in.
    pub(crate) canonical: DataType,
    pub(crate) output: DataType,
    /// Rows may be retracted (the input is a table): the accumulators count what they hold.
    pub(crate) retracting: bool,
}

/// A value read from a row, in its canonical type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Value {
    /// A 64-bit integer (and timestamps, dates, as their integer).
    I(i64),
    /// An unsigned 64-bit integer.
    U(u64),
    /// A double.
    F(#[serde(with = "float")] f64),
    /// Text.
    S(String),
    /// A boolean.
    B(bool),
}

impl Eq for Value {}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    /// Values of one aggregate are all of one kind; across kinds the order is by kind.
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Value::I(a), Value::I(b)) => a.cmp(b),
            (Value::U(a), Value::U(b)) => a.cmp(b),
            (Value::F(a), Value::F(b)) => a.total_cmp(b),
            (Value::S(a), Value::S(b)) => a.cmp(b),
            (Value::B(a), Value::B(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl Value {
    fn rank(&self) -> u8 {
        match self {
            Value::I(_) => 0,
            Value::U(_) => 1,
            Value::F(_) => 2,
            Value::S(_) => 3,
            Value::B(_) => 4,
        }
    }
}

/// One aggregate's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Acc {
    /// Rows (or non-null values) counted.
    Count(i64),
    /// Distinct non-null values.
    Distinct(BTreeSet<Value>),
    /// A sum (`None` until a non-null value arrives, as SQL's SUM of nothing is NULL).
    Sum(Option<Value>),
    /// The smallest value.
    Min(Option<Value>),
    /// The largest value.
    Max(Option<Value>),
    /// Sum and count of the non-null values.
    Avg(#[serde(with = "float")] f64, i64),
    /// A retractable sum: the sum and how many values it holds (`None` again at none).
    CountedSum(Option<Value>, i64),
    /// A retractable MIN, MAX or COUNT(DISTINCT): each value held, with how many times.
    Values(#[serde(with = "pairs")] BTreeMap<Value, i64>),
}

/// A multiset in the stores' JSON: a list of `[value, count]` pairs (JSON objects only have
/// string keys).
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::Value;

    pub(super) fn serialize<S: Serializer>(
        m: &BTreeMap<Value, i64>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<Value, i64>, D::Error> {
        let pairs: Vec<(Value, i64)> = Vec::deserialize(d)?;
        Ok(pairs.into_iter().collect())
    }
}

/// Doubles in the stores' JSON: finite ones as JSON numbers, NaN and the infinities (which
/// JSON has no numbers for, and `serde_json` would write as `null`) as strings.
mod float {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        match v {
            v if v.is_finite() => s.serialize_f64(*v),
            v if v.is_nan() => s.serialize_str("NaN"),
            v if *v > 0.0 => s.serialize_str("Infinity"),
            _ => s.serialize_str("-Infinity"),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        struct F;
        impl Visitor<'_> for F {
            type Value = f64;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number, or NaN, Infinity, -Infinity as a string")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
                Ok(v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
                Ok(v as f64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
                Ok(v as f64)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
                match v {
                    "NaN" => Ok(f64::NAN),
                    "Infinity" => Ok(f64::INFINITY),
                    "-Infinity" => Ok(f64::NEG_INFINITY),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(F)
    }
}

/// The canonical type a column of `t` is read in, or `None` for types not aggregated yet.
fn canonical(t: &DataType) -> Option<DataType> {
    Some(match t {
        t if t.is_signed_integer() => DataType::Int64,
        t if t.is_unsigned_integer() => DataType::UInt64,
        t if t.is_floating() => DataType::Float64,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::Boolean => DataType::Boolean,
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => DataType::Int64,
        _ => return None,
    })
}

impl AggSpec {
    /// The spec of a planned aggregate call, refusing what is not supported by name.
    pub(crate) fn new(
        call: &AggregateFunction,
        arg: Option<Arc<dyn PhysicalExpr>>,
        arg_type: Option<DataType>,
        output: DataType,
    ) -> Result<AggSpec> {
        let name = call.func.name().to_ascii_lowercase();
        let p = &call.params;
        let refuse = |what: String| Err(SqlError::unsupported(what, None));
        if p.filter.is_some() {
            return refuse(format!("{name}(…) FILTER (WHERE …) in a continuous query"));
        }
        if !p.order_by.is_empty() {
            return refuse(format!("{name}(… ORDER BY …) in a continuous query"));
        }
        let kind = match (name.as_str(), p.distinct) {
            ("count", false) => AggKind::Count,
            ("count", true) => AggKind::CountDistinct,
            ("sum", false) => AggKind::Sum,
            ("min", _) => AggKind::Min,
            ("max", _) => AggKind::Max,
            ("avg" | "mean", false) => AggKind::Avg,
            (other, distinct) => {
                return refuse(format!(
                    "the aggregate {}{other}(…) in a continuous query (COUNT, COUNT(DISTINCT), SUM, MIN, MAX and AVG run there)",
                    if distinct { "DISTINCT " } else { "" }
                ))
            }
        };
        let canonical = match &arg_type {
            None => DataType::Null,
            Some(t) => match (kind, canonical(t)) {
                (AggKind::Sum | AggKind::Avg, Some(DataType::Utf8 | DataType::Boolean))
                | (_, None) => {
                    return refuse(format!(
                        "{name} over a value of type {t} in a continuous query"
                    ))
                }
                (_, Some(c)) => c,
            },
        };
        // COUNT(1) and COUNT(*) count rows: a constant argument is never null.
        let arg = match kind {
            AggKind::Count if arg.as_ref().is_some_and(|a| is_literal(a.as_ref())) => None,
            _ => arg,
        };
        Ok(AggSpec {
            kind,
            arg,
            canonical,
            output,
            retracting: false,
        })
    }

    /// An empty accumulator.
    pub(crate) fn init(&self) -> Acc {
        if self.retracting {
            match self.kind {
                AggKind::Sum => return Acc::CountedSum(None, 0),
                AggKind::Min | AggKind::Max | AggKind::CountDistinct => {
                    return Acc::Values(BTreeMap::new())
                }
                AggKind::Count | AggKind::Avg => {}
            }
        }
        match self.kind {
            AggKind::Count => Acc::Count(0),
            AggKind::CountDistinct => Acc::Distinct(BTreeSet::new()),
            AggKind::Sum => Acc::Sum(None),
            AggKind::Min => Acc::Min(None),
            AggKind::Max => Acc::Max(None),
            AggKind::Avg => Acc::Avg(0.0, 0),
        }
    }

    /// The argument over a batch, in the canonical type (`None` for `COUNT(*)`).
    pub(crate) fn argument(
        &self,
        batch: &datafusion::arrow::array::RecordBatch,
    ) -> Result<Option<ArrayRef>> {
        let Some(arg) = &self.arg else {
            return Ok(None);
        };
        let values = arg
            .evaluate(batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(crate::error::from_datafusion)?;
        let values = match values.data_type() {
            DataType::Timestamp(..) => cast(
                &values,
                &DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, None),
            )
            .and_then(|v| cast(&v, &DataType::Int64)),
            DataType::Date32 | DataType::Date64 => cast(&values, &DataType::Int64),
            _ => cast(&values, &self.canonical),
        }
        .map_err(|e| SqlError::Execution(format!("aggregate argument: {e}")))?;
        Ok(Some(values))
    }

    /// Adds row `row` of the argument (`None`: `COUNT(*)`).
    pub(crate) fn add(&self, acc: &mut Acc, arg: Option<&ArrayRef>, row: usize) {
        let Some(values) = arg else {
            if let Acc::Count(n) = acc {
                *n += 1;
            }
            return;
        };
        if values.is_null(row) {
            return;
        }
        let v = read(values, row);
        match acc {
            Acc::Count(n) => *n += 1,
            Acc::Distinct(set) => {
                if let Some(v) = v {
                    set.insert(v);
                }
            }
            Acc::Sum(s) => *s = add_values(s.take(), v),
            Acc::Min(m) => {
                if v.is_some() && (m.is_none() || v < *m) {
                    *m = v;
                }
            }
            Acc::Max(m) => {
                if v > *m {
                    *m = v;
                }
            }
            Acc::Avg(sum, n) => {
                if let Some(x) = v.as_ref().and_then(as_f64) {
                    *sum += x;
                    *n += 1;
                }
            }
            Acc::CountedSum(s, n) => {
                *s = add_values(s.take(), v);
                *n += 1;
            }
            Acc::Values(m) => {
                if let Some(v) = v {
                    count_value(m, v, 1);
                }
            }
        }
    }

    /// Takes row `row` of the argument back out (`None`: `COUNT(*)`): the row left the
    /// input. Only retracting accumulators (and COUNT, AVG) can; the others are untouched.
    pub(crate) fn retract(&self, acc: &mut Acc, arg: Option<&ArrayRef>, row: usize) {
        let Some(values) = arg else {
            if let Acc::Count(n) = acc {
                *n -= 1;
            }
            return;
        };
        if values.is_null(row) {
            return;
        }
        let v = read(values, row);
        match acc {
            Acc::Count(n) => *n -= 1,
            Acc::Avg(sum, n) => {
                if let Some(x) = v.as_ref().and_then(as_f64) {
                    *sum -= x;
                    *n -= 1;
                    if *n == 0 {
                        // No float drift survives the last value.
                        *sum = 0.0;
                    }
                }
            }
            Acc::CountedSum(s, n) => {
                *n -= 1;
                *s = match *n {
                    0 => None,
                    _ => add_values(s.take(), v.map(negate)),
                };
            }
            Acc::Values(m) => {
                if let Some(v) = v {
                    count_value(m, v, -1);
                }
            }
            Acc::Distinct(_) | Acc::Sum(_) | Acc::Min(_) | Acc::Max(_) => {}
        }
    }

    /// Merges `other` into `acc`.
    pub(crate) fn merge(&self, acc: &mut Acc, other: &Acc) {
        match (acc, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (Acc::Distinct(a), Acc::Distinct(b)) => a.extend(b.iter().cloned()),
            (Acc::Sum(a), Acc::Sum(b)) => *a = add_values(a.take(), b.clone()),
            (Acc::Min(a), Acc::Min(Some(b))) if a.as_ref().is_none_or(|x| b < x) => {
                *a = Some(b.clone());
            }
            (Acc::Max(a), Acc::Max(Some(b))) if a.as_ref().is_none_or(|x| b > x) => {
                *a = Some(b.clone());
            }
            (Acc::Avg(s, n), Acc::Avg(s2, n2)) => {
                *s += s2;
                *n += n2;
            }
            (Acc::CountedSum(a, n), Acc::CountedSum(b, n2)) => {
                *a = add_values(a.take(), b.clone());
                *n += n2;
            }
            (Acc::Values(a), Acc::Values(b)) => {
                for (v, n) in b {
                    count_value(a, v.clone(), *n);
                }
            }
            _ => {}
        }
    }

    /// The results of accumulators, as an array of the planned output type.
    pub(crate) fn results(&self, accs: &[&Acc]) -> Result<ArrayRef> {
        let fail = |e: datafusion::arrow::error::ArrowError| {
            SqlError::Execution(format!("aggregate result: {e}"))
        };
        let array: ArrayRef = match self.kind {
            AggKind::Count | AggKind::CountDistinct => {
                Arc::new(Int64Array::from_iter_values(accs.iter().map(|a| match a {
                    Acc::Count(n) => *n,
                    Acc::Distinct(s) => s.len() as i64,
                    Acc::Values(m) => m.len() as i64,
                    _ => 0,
                })))
            }
            AggKind::Avg => Arc::new(Float64Array::from_iter(accs.iter().map(|a| match a {
                Acc::Avg(s, n) if *n > 0 => Some(s / *n as f64),
                _ => None,
            }))),
            AggKind::Sum | AggKind::Min | AggKind::Max => {
                let kind = self.kind;
                let values = accs.iter().map(|a| match a {
                    Acc::Sum(v) | Acc::Min(v) | Acc::Max(v) | Acc::CountedSum(v, _) => v.as_ref(),
                    Acc::Values(m) if kind == AggKind::Min => m.keys().next(),
                    Acc::Values(m) => m.keys().next_back(),
                    _ => None,
                });
                values_array(values, &self.canonical)
            }
        };
        if array.data_type() == &self.output {
            return Ok(array);
        }
        match &self.output {
            DataType::Timestamp(unit, tz) => {
                let ms = cast(
                    &array,
                    &DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, None),
                )
                .map_err(fail)?;
                cast(&ms, &DataType::Timestamp(*unit, tz.clone())).map_err(fail)
            }
            DataType::Date32 => cast(
                &cast(&array, &DataType::Int32).map_err(fail)?,
                &DataType::Date32,
            )
            .map_err(fail),
            t => cast(&array, t).map_err(fail),
        }
    }
}

fn is_literal(e: &dyn PhysicalExpr) -> bool {
    let any: &dyn std::any::Any = e;
    any.downcast_ref::<datafusion::physical_expr::expressions::Literal>()
        .is_some_and(|l| !l.value().is_null())
}

fn read(values: &ArrayRef, row: usize) -> Option<Value> {
    Some(match values.data_type() {
        DataType::Int64 => Value::I(values.as_primitive::<Int64Type>().value(row)),
        DataType::UInt64 => Value::U(values.as_primitive::<UInt64Type>().value(row)),
        DataType::Float64 => Value::F(values.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => Value::S(values.as_string::<i32>().value(row).to_string()),
        DataType::Boolean => Value::B(values.as_boolean().value(row)),
        _ => return None,
    })
}

/// Counts a value in (or, with a negative `by`, out of) a multiset; a value whose count
/// reaches zero is no longer held. Counts may go below zero for a moment (a retraction met
/// before its row in one batch) and come back.
fn count_value(m: &mut BTreeMap<Value, i64>, v: Value, by: i64) {
    use std::collections::btree_map::Entry;
    match m.entry(v) {
        Entry::Vacant(e) => {
            e.insert(by);
        }
        Entry::Occupied(mut e) => {
            *e.get_mut() += by;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// The value that adds up to zero with `v` (integers wrap, as sums do).
fn negate(v: Value) -> Value {
    match v {
        Value::I(x) => Value::I(x.wrapping_neg()),
        Value::U(x) => Value::U(x.wrapping_neg()),
        Value::F(x) => Value::F(-x),
        other => other,
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::I(x) => Some(*x as f64),
        Value::U(x) => Some(*x as f64),
        Value::F(x) => Some(*x),
        _ => None,
    }
}

/// A sum of two values (integers wrap on overflow, as DataFusion's SUM does).
fn add_values(a: Option<Value>, b: Option<Value>) -> Option<Value> {
    match (a, b) {
        (None, b) => b,
        (a, None) => a,
        (Some(Value::I(x)), Some(Value::I(y))) => Some(Value::I(x.wrapping_add(y))),
        (Some(Value::U(x)), Some(Value::U(y))) => Some(Value::U(x.wrapping_add(y))),
        (Some(x), Some(y)) => Some(Value::F(
            as_f64(&x).unwrap_or(0.0) + as_f64(&y).unwrap_or(0.0),
        )),
    }
}

fn values_array<'a>(
    values: impl Iterator<Item = Option<&'a Value>>,
    canonical: &DataType,
) -> ArrayRef {
    match canonical {
        DataType::UInt64 => Arc::new(UInt64Array::from_iter(values.map(|v| match v {
            Some(Value::U(x)) => Some(*x),
            _ => None,
        }))),
        DataType::Float64 => Arc::new(Float64Array::from_iter(values.map(|v| v.and_then(as_f64)))),
        DataType::Utf8 => Arc::new(StringArray::from_iter(values.map(|v| match v {
            Some(Value::S(s)) => Some(s.clone()),
            _ => None,
        }))),
        DataType::Boolean => Arc::new(BooleanArray::from_iter(values.map(|v| match v {
            Some(Value::B(b)) => Some(*b),
            _ => None,
        }))),
        _ => Arc::new(Int64Array::from_iter(values.map(|v| match v {
            Some(Value::I(x)) => Some(*x),
            _ => None,
        }))),
    }
}

/// The aggregates of one query as the engine's window function: a row's input is the batch's
/// argument arrays and the row's index.
#[derive(Debug)]
pub(crate) struct SqlAggregates {
    pub(crate) specs: Vec<AggSpec>,
}

/// One row's inputs to the aggregates.
#[derive(Debug, Clone)]
pub(crate) struct RowInput {
    pub(crate) args: Arc<Vec<Option<ArrayRef>>>,
    pub(crate) row: usize,
}

impl weir_engine::window::WindowFunction for SqlAggregates {
    type In = RowInput;
    type Acc = Vec<Acc>;

    fn init(&self) -> Vec<Acc> {
        self.specs.iter().map(AggSpec::init).collect()
    }

    fn add(&self, acc: &mut Vec<Acc>, _ts: i64, input: &RowInput) {
        for ((spec, a), arg) in self.specs.iter().zip(acc.iter_mut()).zip(input.args.iter()) {
            spec.add(a, arg.as_ref(), input.row);
        }
    }

    fn merge(&self, acc: &mut Vec<Acc>, other: &Vec<Acc>) {
        for ((spec, a), b) in self.specs.iter().zip(acc.iter_mut()).zip(other) {
            spec.merge(a, b);
        }
    }

    fn encode(&self, acc: &Vec<Acc>) -> std::result::Result<Vec<u8>, String> {
        serde_json::to_vec(acc).map_err(|e| e.to_string())
    }

    fn decode(&self, bytes: &[u8]) -> std::result::Result<Vec<Acc>, String> {
        let acc: Vec<Acc> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if acc.len() != self.specs.len() {
            return Err(format!(
                "{} accumulators stored for {} aggregates",
                acc.len(),
                self.specs.len()
            ));
        }
        Ok(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retracting_accumulators_take_rows_back_out() -> Result<()> {
        let values: ArrayRef = Arc::new(Int64Array::from(vec![Some(5), Some(2), None, Some(5)]));
        let spec = |kind| AggSpec {
            kind,
            arg: None,
            canonical: DataType::Int64,
            output: DataType::Int64,
            retracting: true,
        };
        for (kind, after_adds, after_retract) in [
            (AggKind::Sum, Some(12), Some(5)),
            (AggKind::Min, Some(2), Some(5)),
            (AggKind::Max, Some(5), Some(5)),
            (AggKind::CountDistinct, Some(2), Some(1)),
        ] {
            let s = spec(kind);
            let mut acc = s.init();
            for row in 0..4 {
                s.add(&mut acc, Some(&values), row);
            }
            let result = |acc: &Acc| -> Result<Option<i64>> {
                let a = s.results(&[acc])?;
                let a = a.as_primitive::<Int64Type>();
                Ok((!a.is_null(0)).then(|| a.value(0)))
            };
            assert_eq!(result(&acc)?, after_adds, "{kind:?}");
            // The 2 leaves, then one 5: MIN moves up, one 5 is still held.
            s.retract(&mut acc, Some(&values), 1);
            s.retract(&mut acc, Some(&values), 0);
            assert_eq!(result(&acc)?, after_retract, "{kind:?}");
            // The last value leaves: SUM, MIN and MAX are NULL again.
            s.retract(&mut acc, Some(&values), 3);
            let empty = if kind == AggKind::CountDistinct {
                Some(0)
            } else {
                None
            };
            assert_eq!(result(&acc)?, empty, "{kind:?}");
        }
        Ok(())
    }

    #[test]
    fn non_finite_doubles_round_trip_through_the_stores_json() -> Result<(), serde_json::Error> {
        let accs = vec![
            Acc::Avg(f64::NAN, 2),
            Acc::Max(Some(Value::F(f64::INFINITY))),
            Acc::Min(Some(Value::F(f64::NEG_INFINITY))),
            Acc::Sum(Some(Value::F(1.5))),
        ];
        let json = serde_json::to_vec(&accs)?;
        let back: Vec<Acc> = serde_json::from_slice(&json)?;
        assert!(matches!(back[0], Acc::Avg(s, 2) if s.is_nan()));
        assert_eq!(back[1..], accs[1..]);
        // A multiset is a list of [value, count] pairs (JSON objects have text keys only).
        let multiset = Acc::Values([(Value::I(-3), 2), (Value::S("x".into()), 1)].into());
        let json = serde_json::to_string(&multiset)?;
        assert_eq!(json, r#"{"Values":[[{"I":-3},2],[{"S":"x"},1]]}"#);
        assert_eq!(serde_json::from_str::<Acc>(&json)?, multiset);
        // Finite doubles stay JSON numbers: stores written before read the same.
        assert_eq!(serde_json::to_string(&Value::F(1.5))?, r#"{"F":1.5}"#);
        Ok(())
    }
}
