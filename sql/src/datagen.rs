//! The `datagen` connector: a stream whose rows are generated, not read (Flink's options),
//! so a user tries a query without data and a benchmark measures the engine alone.
//!
//! ```sql
//! CREATE STREAM gen (id BIGINT, name TEXT, auction AS id % 1000)
//!   WITH (connector = 'datagen', 'number-of-rows' = '1000000', 'rows-per-second' = '0',
//!         partitions = 2, seed = 7,
//!         'fields.id.kind' = 'sequence', 'fields.id.start' = '0',
//!         'fields.name.kind' = 'random', 'fields.name.length' = '8');
//! ```
//!
//! Invariant: a row's values depend only on the options and its index in the whole input —
//! row `i` is row `i / partitions` of partition `i % partitions` — so a restart regenerates
//! exactly the rows after the committed position, and a batch query sees the same rows a
//! streaming one does. Sequence fields count from `start` by the row index; random fields
//! hash (seed, column, row index) into their bounds.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray,
    TimestampMillisecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use weir_engine::GeneratedInput;

use crate::error::{Result, SqlError};

/// Options of the connector itself (fields' options are `fields.<column>.<property>`).
pub const DATAGEN_OPTIONS: &[&str] = &["number-of-rows", "rows-per-second", "seed"];

/// Properties of a field's generator.
const FIELD_PROPERTIES: &[&str] = &["kind", "start", "end", "min", "max", "length"];

/// Longest random string (`fields.x.length`): every row's string is built in memory.
pub const RANDOM_STRING_MAX: usize = 1 << 16;

/// Default length of a random string (Flink's default is 100; short keeps rows small).
const RANDOM_STRING_DEFAULT: usize = 10;

/// Default range of a random timestamp: 2020-01-01 to 2030-01-01 UTC.
const RANDOM_TIMESTAMP_DEFAULT: (i64, i64) = (1_577_836_800_000, 1_893_456_000_000);

/// How one column's values are made.
#[derive(Debug, Clone, PartialEq)]
enum FieldGen {
    /// `start + row index` (an `end` bounds the number of rows).
    Sequence { start: i64 },
    /// Uniform in `min..=max` (numbers, timestamps), or `length` random characters.
    Random {
        min: Option<f64>,
        max: Option<f64>,
        length: usize,
    },
}

/// A parsed `datagen` stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Datagen {
    /// Rows in all (`None`: unbounded).
    pub rows: Option<u64>,
    /// Rows per second over all partitions (0: as fast as they are taken).
    pub rows_per_second: u64,
    /// Partitions generating in parallel.
    pub partitions: u32,
    seed: u64,
    /// Per stored column, in order.
    fields: Vec<(String, DataType, FieldGen)>,
}

fn number<T: std::str::FromStr>(options: &BTreeMap<String, String>, key: &str) -> Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    options
        .get(key)
        .map(|v| {
            v.trim()
                .parse::<T>()
                .map_err(|e| SqlError::option(key, format!("`{v}`: {e}")))
        })
        .transpose()
}

impl Datagen {
    /// Parses the options of a stream with these stored columns; refuses unknown options,
    /// fields of columns it does not have, and types it cannot generate.
    pub fn from_options(
        options: &BTreeMap<String, String>,
        stored: &SchemaRef,
        partitions: u32,
    ) -> Result<Datagen> {
        for key in options.keys() {
            if let Some(rest) = key.strip_prefix("fields.") {
                let (column, property) = rest.rsplit_once('.').unwrap_or((rest, ""));
                if stored.field_with_name(column).is_err() {
                    return Err(SqlError::option(
                        key,
                        format!("`{column}` is not a stored column of the stream"),
                    ));
                }
                if !FIELD_PROPERTIES.contains(&property) {
                    return Err(SqlError::option(
                        key,
                        format!(
                            "unknown field property; known: {}",
                            FIELD_PROPERTIES.join(", ")
                        ),
                    ));
                }
            }
        }
        let mut rows = number::<u64>(options, "number-of-rows")?;
        let mut fields = Vec::new();
        for f in stored.fields() {
            let get = |p: &str| format!("fields.{}.{p}", f.name());
            let kind = options
                .get(&get("kind"))
                .map_or("random", |k| k.as_str())
                .to_ascii_lowercase();
            check_type(f.name(), f.data_type())?;
            let gen = match kind.as_str() {
                "sequence" => {
                    let start = number::<i64>(options, &get("start"))?.unwrap_or(0);
                    if let Some(end) = number::<i64>(options, &get("end"))? {
                        if end < start {
                            return Err(SqlError::option(&get("end"), "is before `start`"));
                        }
                        let n = (end - start) as u64 + 1;
                        rows = Some(rows.map_or(n, |r| r.min(n)));
                    }
                    FieldGen::Sequence { start }
                }
                "random" => {
                    let length =
                        number::<usize>(options, &get("length"))?.unwrap_or(RANDOM_STRING_DEFAULT);
                    if length > RANDOM_STRING_MAX {
                        return Err(SqlError::option(
                            &get("length"),
                            format!("at most {RANDOM_STRING_MAX}"),
                        ));
                    }
                    let min = number::<f64>(options, &get("min"))?;
                    let max = number::<f64>(options, &get("max"))?;
                    if let (Some(a), Some(b)) = (min, max) {
                        if b < a {
                            return Err(SqlError::option(&get("max"), "is below `min`"));
                        }
                    }
                    FieldGen::Random { min, max, length }
                }
                other => {
                    return Err(SqlError::option(
                        &get("kind"),
                        format!("`{other}`: `sequence` or `random`"),
                    ))
                }
            };
            fields.push((f.name().clone(), f.data_type().clone(), gen));
        }
        Ok(Datagen {
            rows,
            rows_per_second: number::<u64>(options, "rows-per-second")?.unwrap_or(0),
            partitions,
            seed: number::<u64>(options, "seed")?.unwrap_or(0),
            fields,
        })
    }

    /// The engine's view of it: partitions, rows and pace.
    pub fn input(&self) -> GeneratedInput {
        GeneratedInput {
            partitions: self.partitions,
            rows: self.rows,
            rows_per_second: self.rows_per_second,
        }
    }

    /// Rows partition `p` generates (`None`: unbounded).
    pub fn rows_of(&self, p: u32) -> Option<u64> {
        self.input().rows_of(p)
    }

    /// Rows `offsets` of partition `partition`: the stored columns, then the metadata columns
    /// (`_key` NULL, `_timestamp` = `timestamp`, `_partition`, `_offset`), in `schema`.
    pub fn batch(
        &self,
        schema: &SchemaRef,
        partition: u32,
        offsets: Range<i64>,
        timestamp: i64,
    ) -> Result<RecordBatch> {
        let n = (offsets.end - offsets.start).max(0) as usize;
        let parts = i64::from(self.partitions.max(1));
        let index = |o: i64| o * parts + i64::from(partition);
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for (c, (name, t, gen)) in self.fields.iter().enumerate() {
            let salt = self.seed ^ (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let column = generate(t, gen, salt, offsets.clone().map(index))
                .map_err(|e| SqlError::Execution(format!("datagen column `{name}`: {e}")))?;
            columns.push(column);
        }
        columns.push(Arc::new(StringArray::new_null(n)));
        columns.push(Arc::new(TimestampMillisecondArray::from(vec![
            timestamp;
            n
        ])));
        columns.push(Arc::new(Int32Array::from(vec![partition as i32; n])));
        columns.push(Arc::new(Int64Array::from_iter_values(offsets)));
        RecordBatch::try_new(schema.clone(), columns)
            .map_err(|e| SqlError::Execution(format!("datagen batch: {e}")))
    }
}

/// The types datagen makes: integers, floats, booleans, text and timestamps.
fn check_type(name: &str, t: &DataType) -> Result<()> {
    let ok = t.is_integer()
        || t.is_floating()
        || matches!(
            t,
            DataType::Boolean | DataType::Utf8 | DataType::Timestamp(..)
        );
    if ok {
        return Ok(());
    }
    Err(SqlError::unsupported(
        format!(
            "datagen cannot generate column `{name}` of type {}; declare it as a computed column \
             (`{name} AS expr`) over generated ones",
            crate::types::sql_name(t)
        ),
        None,
    ))
}

/// SplitMix64: a well-mixed hash of (salt, row index).
fn mix(salt: u64, i: i64) -> u64 {
    let mut z = salt.wrapping_add((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform integer between `lo` and `hi` (inclusive, in either order: a one-sided bound
/// may fall on the other side of the type's default) from a hash.
fn in_range(h: u64, lo: i64, hi: i64) -> i64 {
    let (lo, hi) = (lo.min(hi), lo.max(hi));
    let span = (hi as i128 - lo as i128 + 1) as u128;
    (lo as i128 + (h as u128 % span) as i128) as i64
}

fn generate(
    t: &DataType,
    gen: &FieldGen,
    salt: u64,
    rows: impl Iterator<Item = i64> + Clone,
) -> std::result::Result<ArrayRef, datafusion::arrow::error::ArrowError> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let array: ArrayRef = match (gen, t) {
        (FieldGen::Sequence { start }, DataType::Utf8) => Arc::new(StringArray::from_iter_values(
            rows.map(|i| start.wrapping_add(i).to_string()),
        )),
        (FieldGen::Sequence { start }, DataType::Boolean) => Arc::new(BooleanArray::from_iter(
            rows.map(|i| Some(start.wrapping_add(i) & 1 == 1)),
        )),
        (FieldGen::Sequence { start }, t) if t.is_floating() => Arc::new(
            Float64Array::from_iter_values(rows.map(|i| start.wrapping_add(i) as f64)),
        ),
        (FieldGen::Sequence { start }, DataType::Timestamp(..)) => Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.map(|i| start.wrapping_add(i))),
        ),
        (FieldGen::Sequence { start }, _) => Arc::new(Int64Array::from_iter_values(
            rows.map(|i| start.wrapping_add(i)),
        )),
        (FieldGen::Random { length, .. }, DataType::Utf8) => {
            Arc::new(StringArray::from_iter_values(rows.map(|i| {
                let mut h = mix(salt, i);
                (0..*length)
                    .map(|k| {
                        if k % 8 == 0 && k > 0 {
                            h = mix(h, k as i64);
                        }
                        let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
                        h /= ALPHABET.len() as u64;
                        c
                    })
                    .collect::<String>()
            })))
        }
        (FieldGen::Random { .. }, DataType::Boolean) => Arc::new(BooleanArray::from_iter(
            rows.map(|i| Some(mix(salt, i) & 1 == 1)),
        )),
        (FieldGen::Random { min, max, .. }, t) if t.is_floating() => {
            let (a, b) = (min.unwrap_or(0.0), max.unwrap_or(1.0));
            let (lo, hi) = (a.min(b), a.max(b));
            Arc::new(Float64Array::from_iter_values(rows.map(|i| {
                let unit = (mix(salt, i) >> 11) as f64 / (1u64 << 53) as f64;
                lo + unit * (hi - lo)
            })))
        }
        (FieldGen::Random { min, max, .. }, DataType::Timestamp(..)) => {
            let (lo, hi) = (
                min.map_or(RANDOM_TIMESTAMP_DEFAULT.0, |v| v as i64),
                max.map_or(RANDOM_TIMESTAMP_DEFAULT.1, |v| v as i64),
            );
            Arc::new(TimestampMillisecondArray::from_iter_values(
                rows.map(|i| in_range(mix(salt, i), lo, hi)),
            ))
        }
        (FieldGen::Random { min, max, .. }, t) => {
            let (tlo, thi) = integer_range(t);
            let lo = min.map_or(tlo, |v| (v as i64).clamp(tlo, thi));
            let hi = max.map_or(thi, |v| (v as i64).clamp(tlo, thi));
            Arc::new(Int64Array::from_iter_values(
                rows.map(|i| in_range(mix(salt, i), lo, hi)),
            ))
        }
    };
    match t {
        DataType::Timestamp(TimeUnit::Millisecond, None) => Ok(array),
        _ if array.data_type() == t => Ok(array),
        _ => cast(&array, t),
    }
}

/// The range of an integer type, as i64 (u64 capped at i64::MAX).
fn integer_range(t: &DataType) -> (i64, i64) {
    match t {
        DataType::Int8 => (i8::MIN.into(), i8::MAX.into()),
        DataType::Int16 => (i16::MIN.into(), i16::MAX.into()),
        DataType::Int32 => (i32::MIN.into(), i32::MAX.into()),
        DataType::UInt8 => (0, u8::MAX.into()),
        DataType::UInt16 => (0, u16::MAX.into()),
        DataType::UInt32 => (0, u32::MAX.into()),
        DataType::UInt64 => (0, i64::MAX),
        _ => (i64::MIN, i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema};

    fn stored() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("score", DataType::Int32, true),
        ]))
    }

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn rows_depend_only_on_their_index() {
        let o = options(&[
            ("fields.id.kind", "sequence"),
            ("fields.id.start", "100"),
            ("fields.id.end", "199"),
            ("fields.score.min", "1"),
            ("fields.score.max", "6"),
        ]);
        let g = Datagen::from_options(&o, &stored(), 2).expect("valid");
        assert_eq!(g.rows, Some(100));
        let mut fields: Vec<Field> = stored().fields().iter().map(|f| (**f).clone()).collect();
        fields.extend(crate::format::meta_fields());
        let schema = Arc::new(Schema::new(fields));
        let whole = g.batch(&schema, 1, 0..10, 0).expect("batch");
        let tail = g.batch(&schema, 1, 5..10, 0).expect("batch");
        assert_eq!(whole.slice(5, 5).columns()[..3], tail.columns()[..3]);
        let ids = whole
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("i64");
        // Partition 1 of 2: rows 1, 3, 5, …
        assert_eq!(ids.value(0), 101);
        assert_eq!(ids.value(1), 103);
        let scores = whole
            .column(2)
            .as_any()
            .downcast_ref::<Int32Array>()
            .expect("i32");
        assert!(scores.values().iter().all(|s| (1..=6).contains(s)));
    }

    #[test]
    fn ranges_never_panic_at_their_edges() {
        // Every span, reversed bounds (a one-sided bound past the default), the whole range.
        for (lo, hi) in [
            (5, 5),
            (6, 5),
            (i64::MIN, i64::MAX),
            (i64::MAX, i64::MIN),
            (0, -1),
        ] {
            for h in [0, 1, u64::MAX] {
                let v = in_range(h, lo, hi);
                assert!((lo.min(hi)..=lo.max(hi)).contains(&v), "{lo} {hi} {h}: {v}");
            }
        }
    }

    #[test]
    fn unknown_fields_and_types_are_refused() {
        let bad = options(&[("fields.nope.kind", "sequence")]);
        assert!(Datagen::from_options(&bad, &stored(), 1).is_err());
        let bad = options(&[("fields.id.kind", "zigzag")]);
        assert!(Datagen::from_options(&bad, &stored(), 1).is_err());
        let bad = options(&[("fields.id.colour", "red")]);
        assert!(Datagen::from_options(&bad, &stored(), 1).is_err());
    }
}
