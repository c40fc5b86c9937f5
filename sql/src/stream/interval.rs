//! Interval joins of two streams: `FROM a JOIN b ON a.k = b.k AND b.ts BETWEEN a.ts -
//! INTERVAL … AND a.ts + INTERVAL …` (inner, or `LEFT` when the bounds are the whole
//! condition beyond the keys). Both sides' rows wait in the engine's [`JoinBuffer`] (a RocksDB
//! store backed by its changelog) until the watermark passes the last time a row of the other
//! side could still meet them; a pair is joined once, when its second row arrives, and a
//! `LEFT` join's row that met nothing comes out with NULLs when it expires. Rows travel and
//! wait in Arrow's row format; both sides are repartitioned by the join key (a JSON object of
//! its values) unless each has a single partition.
//!
//! Invariants: the time bounds are on each side's event time (its `WATERMARK FOR` column, or
//! `_timestamp`), so expiring by the watermark never drops a row that could still match; the
//! whole join condition is evaluated again on every joined row, so the buffer's bounds only
//! need to be wide enough.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use datafusion::arrow::array::{new_null_array, ArrayRef, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::physical_expr::PhysicalExpr;
use weir_engine::join::{JoinBuffer, JoinType, JoinWindow, Side};
use weir_engine::TaskContext;

use super::lookup::RowCodec;
use super::{Source, Step};
use crate::error::{from_datafusion, Result, SqlError};
use crate::format::{encode_rows, Format};

/// The task's store of both sides' waiting rows.
pub(crate) const JOIN_STORE: usize = 0;

/// A compiled interval join of two streams.
#[derive(Debug)]
pub(crate) struct StreamJoin {
    /// The right stream, and the steps over its rows before the join.
    pub(crate) right: Source,
    pub(crate) right_steps: Vec<Step>,
    /// Per side, the key expressions over its rows (the `ON` equalities), cast to `key_types`.
    pub(crate) keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    pub(crate) key_types: Vec<DataType>,
    /// How far apart the two rows' event times may be (right minus left within
    /// `[-before, after]`), as the condition bounds them.
    pub(crate) window: JoinWindow,
    pub(crate) kind: JoinType,
    /// A join of the same tumbling window of both sides: the windows' size (ms). Each side's
    /// scan then carries real `window_start`/`window_end` values, which the keys include.
    pub(crate) tumble: Option<i64>,
    /// The `ON` condition beyond the key equalities, over the joined rows.
    pub(crate) residual: Option<Arc<dyn PhysicalExpr>>,
    /// Per side, the schema of its rows at the join.
    pub(crate) sides: [SchemaRef; 2],
    /// The joined rows: the left side's columns, then the right's.
    pub(crate) schema: SchemaRef,
}

fn arrow(e: datafusion::arrow::error::ArrowError) -> SqlError {
    SqlError::Execution(e.to_string())
}

fn engine(e: weir_engine::EngineError) -> SqlError {
    SqlError::Execution(e.to_string())
}

/// Evaluates an expression over one time column with the column at a given time (ms).
type AtSample<'a> = &'a dyn Fn(&Expr, &Column, i64) -> Result<Option<i64>>;

/// The difference `right.time - left.time` a conjunct bounds: `(lower, upper)` in ms, either
/// possibly open.
type Bound = (Option<i64>, Option<i64>);

/// The time bounds of a join condition's residual (`filter`): each conjunct comparing one
/// side's event-time column with the other's plus or minus a constant. Returns the window
/// and whether the residual is nothing but those bounds (inclusive ones).
pub(crate) fn time_bounds(
    filter: Option<&Expr>,
    times: [&Column; 2],
    at_sample: AtSample<'_>,
) -> Result<(JoinWindow, bool)> {
    let mut lower: Option<i64> = None;
    let mut upper: Option<i64> = None;
    let mut only_bounds = true;
    let conjuncts = filter.map(split_conjunction).unwrap_or_default();
    for c in conjuncts {
        match bound_of(c, times, at_sample)? {
            Some(((lo, hi), inclusive)) => {
                lower = max_opt(lower, lo);
                upper = min_opt(upper, hi);
                only_bounds &= inclusive;
            }
            None => only_bounds = false,
        }
    }
    let (Some(lo), Some(hi)) = (lower, upper) else {
        return Err(SqlError::unsupported(
            format!(
                "a join of two streams without bounds on their event times both ways (add \
                 `{r} BETWEEN {l} - INTERVAL … AND {l} + INTERVAL …` to the ON condition; the \
                 rows of each side wait until no row of the other can match them)",
                l = times[0].flat_name(),
                r = times[1].flat_name()
            ),
            None,
        ));
    };
    if lo > hi {
        return Err(SqlError::plan(
            "the join's time bounds admit no pair of rows (the lower is above the upper)",
            None,
        ));
    }
    // Right within [left + lo, left + hi]: `before` = -lo, `after` = hi, each at least 0 for
    // the buffer (a narrower condition is checked again on each pair).
    let ms = |v: i64| Duration::from_millis(v.max(0) as u64);
    let window = JoinWindow {
        before: ms(lo.saturating_neg()),
        after: ms(hi),
        grace: Duration::ZERO,
    };
    Ok((window, only_bounds))
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn split_conjunction(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => {
            let mut v = split_conjunction(left);
            v.extend(split_conjunction(right));
            v
        }
        e => vec![e],
    }
}

/// The bound a conjunct puts on `right.time - left.time`, and whether it is inclusive; `None`
/// when it is not such a comparison.
fn bound_of(
    e: &Expr,
    times: [&Column; 2],
    at_sample: AtSample<'_>,
) -> Result<Option<(Bound, bool)>> {
    if let Expr::Between(b) = e {
        if b.negated {
            return Ok(None);
        }
        let ge = Expr::BinaryExpr(BinaryExpr::new(
            b.expr.clone(),
            Operator::GtEq,
            b.low.clone(),
        ));
        let le = Expr::BinaryExpr(BinaryExpr::new(
            b.expr.clone(),
            Operator::LtEq,
            b.high.clone(),
        ));
        let (Some((l, _)), Some((h, _))) = (
            bound_of(&ge, times, at_sample)?,
            bound_of(&le, times, at_sample)?,
        ) else {
            return Ok(None);
        };
        return Ok(Some(((l.0.or(h.0), l.1.or(h.1)), true)));
    }
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
        return Ok(None);
    };
    let (greater, inclusive) = match op {
        Operator::GtEq => (true, true),
        Operator::Gt => (true, false),
        Operator::LtEq => (false, true),
        Operator::Lt => (false, false),
        _ => return Ok(None),
    };
    // `x op y` with x a side's time column and y the other's plus a constant.
    let Some((x_side, y_side, k)) = column_and_offset(left, right, times, at_sample)? else {
        return Ok(None);
    };
    let _ = y_side;
    // x - y op k. With x the right side: right - left op k; else left - right op k, that is
    // right - left (reversed op) -k.
    let (k, greater) = match x_side {
        1 => (k, greater),
        _ => (k.saturating_neg(), !greater),
    };
    let bound = match greater {
        true => (Some(k), None),
        false => (None, Some(k)),
    };
    Ok(Some((bound, inclusive)))
}

/// For `x op y`: which side's time column `x` is, which side's `y` is built on, and the
/// constant `k` with `y = other.time + k`.
fn column_and_offset(
    x: &Expr,
    y: &Expr,
    times: [&Column; 2],
    at_sample: AtSample<'_>,
) -> Result<Option<(usize, usize, i64)>> {
    let Expr::Column(xc) = strip_casts(x) else {
        return Ok(None);
    };
    let Some(x_side) = times.iter().position(|t| *t == xc) else {
        return Ok(None);
    };
    let y_side = 1 - x_side;
    let used = y.column_refs();
    if used.len() != 1 || !used.contains(times[y_side]) {
        return Ok(None);
    }
    // y is a constant offset from the column: the same at two sample times.
    const SAMPLE: i64 = 1_700_000_000_000;
    const DAY: i64 = 86_400_000;
    let (Some(a), Some(b)) = (
        at_sample(y, times[y_side], SAMPLE)?,
        at_sample(y, times[y_side], SAMPLE + DAY)?,
    ) else {
        return Ok(None);
    };
    if a - SAMPLE != b - SAMPLE - DAY {
        return Ok(None);
    }
    Ok(Some((x_side, y_side, a - SAMPLE)))
}

fn strip_casts(e: &Expr) -> &Expr {
    match e {
        Expr::Cast(c) => strip_casts(&c.expr),
        Expr::TryCast(c) => strip_casts(&c.expr),
        e => e,
    }
}

/// Evaluates `e` — an expression over one timestamp column — with the column at `t` ms.
pub(crate) fn evaluate_at(
    state: &datafusion::execution::SessionState,
    e: &Expr,
    column: &Column,
    t: i64,
) -> Result<Option<i64>> {
    let field = Field::new(
        column.name.clone(),
        DataType::Timestamp(TimeUnit::Millisecond, None),
        true,
    );
    let schema = DFSchema::try_from_qualified_schema(
        column.relation.clone().unwrap_or_else(|| "t".into()),
        &Schema::new(vec![field]),
    )
    .map_err(from_datafusion)?;
    let Ok(x) = state.create_physical_expr(e.clone(), &schema) else {
        return Ok(None);
    };
    let batch = RecordBatch::try_new(
        Arc::new(schema.as_arrow().clone()),
        vec![Arc::new(
            datafusion::arrow::array::TimestampMillisecondArray::from(vec![t]),
        )],
    )
    .map_err(arrow)?;
    let Ok(v) = x.evaluate(&batch).and_then(|v| v.into_array(1)) else {
        return Ok(None);
    };
    let Ok(v) = cast(&v, &DataType::Timestamp(TimeUnit::Millisecond, None)) else {
        return Ok(None);
    };
    Ok(
        match ScalarValue::try_from_array(&v, 0).map_err(from_datafusion)? {
            ScalarValue::TimestampMillisecond(Some(ms), _) => Some(ms),
            _ => None,
        },
    )
}

/// A row of one side on its way into the buffer.
pub(crate) struct SideRow {
    /// The join key (`None`: a NULL in it, which matches nothing).
    pub(crate) key: Option<Bytes>,
    pub(crate) ts: i64,
    pub(crate) seq: (i64, u32),
    pub(crate) value: Bytes,
    pub(crate) origin: weir_engine::Origin,
}

/// Joined rows: the batch, and per row its time and the input record it came from.
pub(crate) struct Joined {
    pub(crate) batch: RecordBatch,
    pub(crate) times: Vec<i64>,
    pub(crate) origins: Vec<weir_engine::Origin>,
}

/// One task's interval join: the buffer and both sides' row codecs.
pub(crate) struct IntervalTask {
    buffer: JoinBuffer,
    codecs: [RowCodec; 2],
}

impl StreamJoin {
    /// The join keys of a side's rows: a JSON object of the key values (as every Weir key).
    pub(crate) fn key_bytes(&self, side: Side, batch: &RecordBatch) -> Result<Vec<Option<Bytes>>> {
        let exprs = &self.keys[index(side)];
        let n = batch.num_rows();
        let mut fields = Vec::with_capacity(exprs.len());
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(exprs.len());
        for (i, (e, t)) in exprs.iter().zip(&self.key_types).enumerate() {
            let v = e
                .evaluate(batch)
                .and_then(|v| v.into_array(n))
                .map_err(from_datafusion)?;
            columns.push(cast(&v, t).map_err(arrow)?);
            fields.push(Field::new(format!("k{i}"), t.clone(), true));
        }
        let keys =
            RecordBatch::try_new(Arc::new(Schema::new(fields)), columns.clone()).map_err(arrow)?;
        Ok(encode_rows(Format::Json, &keys)?
            .into_iter()
            .enumerate()
            .map(|(r, k)| (!columns.iter().any(|c| c.is_null(r))).then_some(k))
            .collect())
    }

    /// The codec of a side's rows.
    pub(crate) fn codec(&self, side: Side) -> Result<RowCodec> {
        RowCodec::new(self.sides[index(side)].clone())
    }

    /// A task's join state.
    pub(crate) fn task(&self) -> Result<IntervalTask> {
        Ok(IntervalTask {
            buffer: JoinBuffer::new(JOIN_STORE, self.window, self.kind),
            codecs: [self.codec(Side::Left)?, self.codec(Side::Right)?],
        })
    }

    /// Joined rows through the residual condition.
    fn assemble(&self, left: RecordBatch, right: RecordBatch) -> Result<(RecordBatch, Vec<u32>)> {
        let mut columns = left.columns().to_vec();
        columns.extend(right.columns().iter().cloned());
        let batch = RecordBatch::try_new(self.schema.clone(), columns).map_err(arrow)?;
        let n = batch.num_rows() as u32;
        let Some(residual) = &self.residual else {
            return Ok((batch, (0..n).collect()));
        };
        let run = super::processor::run_steps(&[Step::Filter(residual.clone())], batch)?;
        Ok((run.batch, run.from.values().to_vec()))
    }
}

fn index(side: Side) -> usize {
    match side {
        Side::Left => 0,
        Side::Right => 1,
    }
}

impl IntervalTask {
    /// Rows of `side` into the buffer; the pairs they complete, joined. Late rows are counted
    /// and dropped; under a `LEFT` join a left row with a NULL key comes out at once.
    pub(crate) fn push(
        &mut self,
        ctx: &mut TaskContext<'_>,
        join: &StreamJoin,
        side: Side,
        rows: Vec<SideRow>,
    ) -> Result<Joined> {
        let wm = ctx.watermark().map(|t| t.0);
        let mut pairs: Vec<(Bytes, Bytes, i64, weir_engine::Origin)> = Vec::new();
        let mut alone: Vec<&SideRow> = Vec::new();
        for row in &rows {
            if self.buffer.is_late(wm, row.ts) {
                ctx.record_late(super::processor::JOIN_OPERATOR, 1);
                continue;
            }
            let Some(key) = &row.key else {
                if join.kind == JoinType::Left && side == Side::Left {
                    alone.push(row);
                }
                continue;
            };
            let met = self
                .buffer
                .push(ctx, side, key, row.ts, row.seq, &row.value)
                .map_err(engine)?;
            for m in met {
                let (l, r) = match side {
                    Side::Left => (row.value.clone(), m.value),
                    Side::Right => (m.value, row.value.clone()),
                };
                pairs.push((l, r, row.ts.max(m.ts), row.origin));
            }
        }
        let mut joined = self.pairs(join, &pairs)?;
        if !alone.is_empty() {
            let lone = alone
                .iter()
                .map(|r| (r.value.clone(), r.ts, r.origin))
                .collect::<Vec<_>>();
            joined = concat(joined, self.unmatched(join, &lone)?)?;
        }
        Ok(joined)
    }

    /// Expires rows no match can reach; a `LEFT` join's left rows that met nothing, joined
    /// with NULLs.
    pub(crate) fn expire(
        &mut self,
        ctx: &mut TaskContext<'_>,
        join: &StreamJoin,
    ) -> Result<Joined> {
        let expired = self.buffer.expire(ctx).map_err(engine)?;
        let lone: Vec<_> = expired
            .into_iter()
            .filter(|u| u.side == Side::Left)
            .map(|u| (u.value, u.ts, weir_engine::Origin::NONE))
            .collect();
        self.unmatched(join, &lone)
    }

    fn pairs(
        &self,
        join: &StreamJoin,
        pairs: &[(Bytes, Bytes, i64, weir_engine::Origin)],
    ) -> Result<Joined> {
        let left = self.codecs[0].decode(pairs.iter().map(|p| p.0.as_ref()))?;
        let right = self.codecs[1].decode(pairs.iter().map(|p| p.1.as_ref()))?;
        let (batch, kept) = join.assemble(left, right)?;
        Ok(Joined {
            batch,
            times: kept.iter().map(|&i| pairs[i as usize].2).collect(),
            origins: kept.iter().map(|&i| pairs[i as usize].3).collect(),
        })
    }

    /// Left rows without a match: the right side's columns NULL (no residual: a `LEFT` join's
    /// condition is its bounds, which they did not meet).
    fn unmatched(
        &self,
        join: &StreamJoin,
        lone: &[(Bytes, i64, weir_engine::Origin)],
    ) -> Result<Joined> {
        let left = self.codecs[0].decode(lone.iter().map(|l| l.0.as_ref()))?;
        let n = left.num_rows();
        let mut columns = left.columns().to_vec();
        columns.extend(
            join.sides[1]
                .fields()
                .iter()
                .map(|f| new_null_array(f.data_type(), n)),
        );
        let batch = RecordBatch::try_new(join.schema.clone(), columns).map_err(arrow)?;
        Ok(Joined {
            batch,
            times: lone.iter().map(|l| l.1).collect(),
            origins: lone.iter().map(|l| l.2).collect(),
        })
    }
}

fn concat(a: Joined, b: Joined) -> Result<Joined> {
    let batch = datafusion::arrow::compute::concat_batches(&a.batch.schema(), [&a.batch, &b.batch])
        .map_err(arrow)?;
    Ok(Joined {
        batch,
        times: a.times.into_iter().chain(b.times).collect(),
        origins: a.origins.into_iter().chain(b.origins).collect(),
    })
}

/// Compiles `left JOIN right` of two streams into `w` (the left side's walk): both sides'
/// steps, the keys, the time bounds and the residual condition.
pub(super) fn compile(
    cx: &super::Context<'_>,
    j: &datafusion::logical_expr::Join,
    w: &mut super::Walked,
) -> Result<()> {
    use datafusion::logical_expr::JoinType as Sql;
    let kind = match j.join_type {
        Sql::Inner => JoinType::Inner,
        Sql::Left => JoinType::Left,
        other => {
            return Err(SqlError::unsupported(
                format!(
                    "a {} join of two streams (INNER and LEFT run)",
                    other.to_string().to_uppercase()
                ),
                None,
            ))
        }
    };
    let mut right = super::Walked::default();
    super::walk(cx, &j.right, &mut right)?;
    super::walk(cx, &j.left, w)?;
    let nested =
        |x: &super::Walked| x.aggregate.is_some() || x.lookup.is_some() || x.join.is_some();
    if nested(w) || nested(&right) {
        return Err(super::unsupported_node(
            "a join of two streams over an aggregate or another join",
        ));
    }
    let tumble = same_tumbling_window(w.window.as_ref(), right.window.as_ref())?;
    let (Some(left_rel), Some(right_rel)) = (&w.relation, right.relation.take()) else {
        return Err(super::unsupported_node("a join without two streams"));
    };
    if left_rel.kind != crate::parser::RelationKind::Stream {
        return Err(SqlError::unsupported(
            format!(
                "a continuous join of table `{}` with stream `{}` (write FROM stream JOIN \
                 table ON …)",
                left_rel.name, right_rel.name
            ),
            None,
        ));
    }
    if left_rel.topic == right_rel.topic {
        return Err(super::unsupported_node("a stream joined with itself"));
    }
    let times = [
        time_column(j.left.schema(), left_rel),
        time_column(j.right.schema(), &right_rel),
    ];
    let (window, only_bounds) = match tumble {
        // Rows of one tumbling window are less than its size apart; the keys (which include
        // the window) decide.
        Some(size) => (
            JoinWindow::within(Duration::from_millis(size.saturating_sub(1) as u64)),
            j.filter.is_none(),
        ),
        None => time_bounds(j.filter.as_ref(), [&times[0], &times[1]], &|e, c, t| {
            evaluate_at(cx.state, e, c, t)
        })?,
    };
    if kind == JoinType::Left && !only_bounds {
        return Err(SqlError::unsupported(
            "a LEFT join of two streams whose ON condition has more than the key equalities \
             and inclusive time bounds (BETWEEN, >=, <=)",
            None,
        ));
    }
    if j.on.is_empty() {
        return Err(SqlError::unsupported(
            "a join of two streams without an equality of keys (ON a.k = b.k AND …): rows \
             meet by key",
            None,
        ));
    }
    let mut keys = [Vec::new(), Vec::new()];
    let mut key_types = Vec::new();
    let mut same_window = false;
    for (l, r) in &j.on {
        use datafusion::logical_expr::ExprSchemable;
        key_types.push(l.get_type(j.left.schema()).map_err(from_datafusion)?);
        let (l, r) = (
            super::physical(cx, l, j.left.schema())?,
            super::physical(cx, r, j.right.schema())?,
        );
        let marks = (
            super::mark_of(&l, &w.marks),
            super::mark_of(&r, &right.marks),
        );
        same_window |= matches!(marks, (Some(a), Some(b)) if a == b);
        keys[0].push(l);
        keys[1].push(r);
    }
    if tumble.is_some() && !same_window {
        return Err(SqlError::unsupported(
            "a join of two windowed streams without `a.window_start = b.window_start` (or \
             window_end) in its ON condition",
            None,
        ));
    }
    let residual = match (&j.filter, kind) {
        (Some(f), JoinType::Inner) => Some(super::physical(cx, f, &j.schema)?),
        _ => None,
    };
    let stream_join = StreamJoin {
        right: super::open_source(cx.state, right_rel, right.window.as_ref())?,
        right_steps: right.steps,
        keys,
        key_types,
        window,
        kind,
        tumble,
        residual,
        sides: [
            Arc::clone(j.left.schema().inner()),
            Arc::clone(j.right.schema().inner()),
        ],
        schema: Arc::clone(j.schema.inner()),
    };
    let before = std::mem::take(&mut w.steps);
    w.marks = vec![None; j.schema.fields().len()];
    w.join = Some((stream_join, before));
    Ok(())
}

/// The size (ms) of the tumbling windows both sides are in, when they are windowed; a join of
/// other windows is refused.
fn same_tumbling_window(
    left: Option<&crate::window::WindowCall>,
    right: Option<&crate::window::WindowCall>,
) -> Result<Option<i64>> {
    use weir_engine::WindowKind::Tumbling;
    match (left.map(|c| c.kind), right.map(|c| c.kind)) {
        (None, None) => Ok(None),
        (Some(Tumbling { size: a }), Some(Tumbling { size: b })) if a == b => {
            Ok(Some(a.as_millis().min(i64::MAX as u128) as i64))
        }
        _ => Err(SqlError::unsupported(
            "a join of windows other than the same TUMBLE window of both streams (join the \
             streams by an interval instead: b.ts BETWEEN a.ts - INTERVAL … AND a.ts + …)",
            None,
        )),
    }
}

/// Fills a windowed scan's `window_start` and `window_end` (its last two columns) with the
/// tumbling window of each row's event time.
pub(crate) fn fill_windows(batch: RecordBatch, times: &[i64], size: i64) -> Result<RecordBatch> {
    use datafusion::arrow::array::TimestampMillisecondArray;
    let n = batch.num_columns();
    if n < 2 || size <= 0 {
        return Ok(batch);
    }
    let starts: Vec<i64> = times
        .iter()
        .map(|t| t.saturating_sub(t.rem_euclid(size)))
        .collect();
    let ends: Vec<i64> = starts.iter().map(|s| s.saturating_add(size)).collect();
    let mut columns = batch.columns().to_vec();
    columns[n - 2] = Arc::new(TimestampMillisecondArray::from(starts));
    columns[n - 1] = Arc::new(TimestampMillisecondArray::from(ends));
    RecordBatch::try_new(batch.schema(), columns).map_err(arrow)
}

/// A side's event-time column (its `WATERMARK FOR` column, else `_timestamp`) as the join's
/// input has it (qualified by the side's alias), or as it would be named when the condition
/// does not use it.
fn time_column(schema: &DFSchema, rel: &crate::catalog::Relation) -> Column {
    let name = rel
        .watermark
        .as_ref()
        .map_or("_timestamp", |w| w.column.as_str());
    let qualifier = schema
        .iter()
        .next()
        .and_then(|(q, _)| q.cloned())
        .unwrap_or_else(|| rel.name.as_str().into());
    schema
        .columns()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| Column::new(Some(qualifier), name))
}
