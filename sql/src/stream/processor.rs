//! [`QueryProcessor`]: one task of a compiled query. Each engine batch becomes one Arrow
//! batch (decoded from the records, or generated), runs through the query's steps as a whole,
//! and its rows go to the sink — records emitted in the task's transaction, or counted.
//!
//! Invariants: a record that does not decode, or a row whose expression fails (a division by
//! zero, a bad cast), is reported as poison with its origin — the engine's error policy
//! dead-letters it — and every other row of the batch goes on; nothing is dropped silently.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StringArray, TimestampMillisecondArray, UInt32Array,
};
use datafusion::arrow::compute::{cast, filter, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use weir_engine::{InputRecord, Origin, TaskContext};
use weir_log::{Record, Timestamp};

use super::lookup::{self, RowCodec};
use super::table_source::Signs;
use super::updating::{UpdatingAggregate, OP_DELETE, OP_UPDATE_BEFORE};
use super::windowed::{GroupCodec, Results, WindowedAggregate};
use super::{Compiled, SinkTarget, Source, Step};
use crate::error::{from_datafusion, Result, SqlError};
use crate::format::{encode_rows, Format, LogRecord, META_COLUMNS};

mod lookup_join;
mod stream_join;

pub(crate) use stream_join::JOIN_OPERATOR;

/// A task's processor of a compiled query.
pub(crate) struct QueryProcessor {
    query: Arc<Compiled>,
    partition: u32,
    /// Output columns that are values, and the `_key` / `_timestamp` columns if selected.
    values: Vec<usize>,
    key_column: Option<usize>,
    timestamp_column: Option<usize>,
    /// Primary-key columns keying the output (a table sink).
    key_columns: Vec<usize>,
    /// The aggregate, if this task runs one.
    windowed: Option<GroupOp>,
    /// The repartition topic (and codec) this task writes groups to, if it does.
    shuffle: Option<(String, GroupCodec)>,
    role: Role,
    /// A join's stream rows, as repartition records carry them.
    left_codec: Option<RowCodec>,
    /// An interval join's state, in the task that joins.
    interval: Option<super::interval::IntervalTask>,
}

/// What a task of a query does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    /// Everything: source, steps, aggregate (if any), sink.
    Whole,
    /// Source and steps, then the rows to the repartition topic, keyed by group.
    Shuffle(String),
    /// The right stream of an interval join and its steps, then its rows to the join's
    /// repartition topic of the right side.
    ShuffleRight(String),
    /// A joined table's records, to the repartition topic of the table keyed by its key as
    /// Weir encodes it.
    ShuffleTable(String),
    /// The aggregate (or join) over the repartition topic(s), then the sink.
    Aggregate,
}

/// Decoded rows, the input record of each, and (over a table) their signs.
type Decoded = (RecordBatch, Vec<u32>, Option<Signs>);

/// The header that marks a repartitioned row of a table source as taken out.
pub(super) const RETRACT_HEADER: &str = "weir.retract";

/// The header that carries a repartitioned row's key in its table (a table join's left row).
pub(super) const ROW_KEY_HEADER: &str = "weir.row";

/// A batch on its way through the steps: its rows, and for each the decoded row it came from.
pub(super) struct Rows {
    pub(super) batch: RecordBatch,
    pub(super) from: UInt32Array,
}

fn arrow(e: datafusion::arrow::error::ArrowError) -> SqlError {
    SqlError::Execution(e.to_string())
}

impl QueryProcessor {
    pub(crate) fn new(query: Arc<Compiled>, partition: u32, role: Role) -> Result<QueryProcessor> {
        let schema = query.output.clone();
        let index = |name: &str| schema.index_of(name).ok();
        let values = (0..schema.fields().len())
            .filter(|&i| !META_COLUMNS.contains(&schema.field(i).name().as_str()))
            .collect();
        let key_columns = match &query.sink {
            SinkTarget::Topic { key, .. } => key.iter().filter_map(|k| index(k)).collect(),
            SinkTarget::Blackhole => Vec::new(),
        };
        let (windowed, shuffle) = match (&query.aggregate, &role) {
            (Some((agg, _)), Role::Shuffle(topic)) => {
                (None, Some((topic.clone(), GroupCodec::new(agg)?)))
            }
            (Some((agg, _)), _) => (Some(GroupOp::new(agg)?), None),
            (None, _) => (None, None),
        };
        let left_codec = match (&query.lookup, &role) {
            (Some((l, _)), Role::Shuffle(_) | Role::Aggregate) => {
                Some(RowCodec::new(l.left_schema())?)
            }
            _ => None,
        };
        let interval = match (&query.join, &role) {
            (Some((j, _)), Role::Whole | Role::Aggregate) => Some(j.task()?),
            _ => None,
        };
        Ok(QueryProcessor {
            interval,
            left_codec,
            key_column: index("_key"),
            timestamp_column: index("_timestamp"),
            values,
            key_columns,
            partition,
            windowed,
            shuffle,
            role,
            query,
        })
    }

    /// The batch's records as decoded rows (bad ones reported as poison), with the input
    /// record of each row, and — over a table — whether each row is taken out.
    fn read(&self, ctx: &mut TaskContext<'_>, source: &Source) -> Result<Decoded> {
        if let Some(changes) = &source.table {
            let rows =
                super::table_source::read(ctx, &source.relation.name, changes, &source.decoder)?;
            return Ok((rows.batch, rows.origin, Some(rows.signs)));
        }
        let (batch, origin) = self.read_stream(ctx, source)?;
        Ok((batch, origin, None))
    }

    /// A stream's records as decoded rows, with the input record of each.
    fn read_stream(
        &self,
        ctx: &mut TaskContext<'_>,
        source: &Source,
    ) -> Result<(RecordBatch, Vec<u32>)> {
        let input = ctx.input();
        if let Some(g) = &source.datagen {
            let (Some(first), Some(last)) = (input.first(), input.last()) else {
                return Ok((
                    RecordBatch::new_empty(source.decoder.schema().clone()),
                    Vec::new(),
                ));
            };
            let rows = first.offset.0..last.offset.0 + 1;
            let batch = g.batch(
                source.decoder.schema(),
                self.partition,
                rows,
                first.timestamp.0,
            )?;
            return Ok((
                with_placeholders(source, batch)?,
                (0..input.len() as u32).collect(),
            ));
        }
        let mut records = Vec::with_capacity(input.len());
        let mut origin = Vec::with_capacity(input.len());
        for (i, r) in input.iter().enumerate() {
            // A tombstone carries no row of a stream.
            let Some(value) = &r.value else { continue };
            records.push(log_record(r, value.clone()));
            origin.push(i as u32);
        }
        let (batch, bad) = source.decoder.decode(&records);
        let batch = with_placeholders(source, batch)?;
        if bad.is_empty() {
            return Ok((batch, origin));
        }
        let mut kept = Vec::with_capacity(batch.num_rows());
        let mut bad = bad.into_iter().peekable();
        for (r, &o) in records.iter().zip(&origin) {
            match bad.peek() {
                Some(b) if b.offset == r.offset => {
                    let reason = bad.next().map(|b| b.reason).unwrap_or_default();
                    ctx.poison(
                        Origin::input(o as usize),
                        format!("does not decode: {reason}"),
                    );
                }
                _ => kept.push(o),
            }
        }
        Ok((batch, kept))
    }

    /// The steps over a batch; when they fail, row by row, so that only the rows that fail
    /// are poison.
    fn process_rows(
        &self,
        ctx: &mut TaskContext<'_>,
        steps: &[Step],
        batch: &RecordBatch,
        origin: &[u32],
    ) -> Result<Vec<Rows>> {
        match run_steps(steps, batch.clone()) {
            Ok(rows) => Ok(vec![rows]),
            Err(_) => {
                let mut out = Vec::new();
                for (i, &source) in origin.iter().enumerate().take(batch.num_rows()) {
                    match run_steps(steps, batch.slice(i, 1)) {
                        Ok(mut rows) => {
                            rows.from = UInt32Array::from(vec![i as u32; rows.batch.num_rows()]);
                            out.push(rows);
                        }
                        Err(e) => ctx.poison(Origin::input(source as usize), e.to_string()),
                    }
                }
                Ok(out)
            }
        }
    }

    /// Emits the rows to the sink, each with its time: the `_timestamp` column if selected,
    /// else the event time of the row it came from.
    fn write(
        &self,
        ctx: &mut TaskContext<'_>,
        rows: &Rows,
        times: &[i64],
        origin: Option<&[u32]>,
        group_keys: Option<&[Bytes]>,
        ops: Option<&StringArray>,
    ) -> Result<usize> {
        let n = rows.batch.num_rows();
        let SinkTarget::Topic { topic, format, .. } = &self.query.sink else {
            return Ok(n);
        };
        if n == 0 {
            return Ok(0);
        }
        let mut values = rows.batch.project(&self.values).map_err(arrow)?;
        let upsert = matches!(self.query.sink, SinkTarget::Topic { upsert: true, .. });
        if let (Some(ops), false) = (ops, upsert) {
            values = with_op_column(&values, ops, rows.from.values())?;
        }
        let encoded = encode_rows(*format, &values)?;
        let keys = self.keys(&rows.batch)?;
        let stamps = match self.timestamp_column {
            Some(c) => Some(millis(rows.batch.column(c))?),
            None => None,
        };
        for (r, value) in encoded.into_iter().enumerate() {
            let d = rows.from.value(r) as usize;
            let key = match &keys {
                Keys::None => group_keys.and_then(|k| k.get(d).cloned()),
                Keys::Some(k) => k[r].clone(),
                Keys::NullPrimaryKey(k, column) => match &k[r] {
                    Some(k) => Some(k.clone()),
                    None => {
                        let at = origin.map_or(Origin::NONE, |o| Origin::input(o[d] as usize));
                        ctx.poison(at, format!("primary key column `{column}` is NULL"));
                        continue;
                    }
                },
            };
            let at = stamps
                .as_ref()
                .filter(|s| !s.is_null(r))
                .map_or(times[d], |s| s.value(r));
            // Into a table (upsert by key): a delete is a tombstone, an update's old row is
            // superseded by its new one.
            let op = ops.map(|o| o.value(d));
            if upsert && op == Some(OP_UPDATE_BEFORE) {
                continue;
            }
            let value = match (upsert, op) {
                (true, Some(OP_DELETE)) => None,
                _ => Some(value),
            };
            ctx.emit(
                topic,
                Record {
                    key,
                    value,
                    timestamp: Some(Timestamp(at)),
                    ..Record::default()
                },
            )
            .map_err(|e| SqlError::Execution(e.to_string()))?;
        }
        Ok(n)
    }

    /// The record keys of the rows.
    fn keys(&self, batch: &RecordBatch) -> Result<Keys> {
        if !self.key_columns.is_empty() {
            let key_rows = batch.project(&self.key_columns).map_err(arrow)?;
            let nulls: Option<usize> = self
                .key_columns
                .iter()
                .position(|&c| batch.column(c).null_count() > 0);
            let encoded: Vec<Option<Bytes>> = encode_rows(Format::Json, &key_rows)?
                .into_iter()
                .enumerate()
                .map(|(r, k)| {
                    let null = self.key_columns.iter().any(|&c| batch.column(c).is_null(r));
                    (!null).then_some(k)
                })
                .collect();
            return Ok(match nulls {
                None => Keys::Some(encoded),
                Some(i) => Keys::NullPrimaryKey(
                    encoded,
                    batch.schema().field(self.key_columns[i]).name().clone(),
                ),
            });
        }
        let Some(c) = self.key_column else {
            return Ok(Keys::None);
        };
        let text = cast(batch.column(c), &DataType::Utf8).map_err(arrow)?;
        let text: &StringArray = text
            .as_string_opt()
            .ok_or_else(|| SqlError::Execution("`_key` is not text".into()))?;
        Ok(Keys::Some(
            text.iter()
                .map(|k| k.map(|k| Bytes::copy_from_slice(k.as_bytes())))
                .collect(),
        ))
    }

    /// Per decoded row: its event time (the watermark column, else the record timestamp),
    /// reporting the batch's largest to the task's clock.
    fn times(
        &self,
        ctx: &mut TaskContext<'_>,
        source: &Source,
        batch: &RecordBatch,
    ) -> Result<Vec<i64>> {
        let record_time = batch
            .schema()
            .index_of("_timestamp")
            .map_err(arrow)
            .and_then(|i| millis(batch.column(i)))?;
        let Some((expr, _)) = &source.event_time else {
            return Ok(record_time.values().to_vec());
        };
        let event = expr
            .evaluate(batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(from_datafusion)?;
        let event = millis(&event)?;
        let times: Vec<i64> = (0..batch.num_rows())
            .map(|r| match event.is_null(r) {
                true => record_time.value(r),
                false => event.value(r),
            })
            .collect();
        if let Some(max) = event.iter().flatten().max() {
            ctx.observe_event_time(Timestamp(max));
        }
        Ok(times)
    }
}

/// A window's scan has `window_start` and `window_end` after the decoded columns: zeros,
/// never read (the compiler refuses expressions over them before the aggregate).
fn with_placeholders(source: &Source, batch: RecordBatch) -> Result<RecordBatch> {
    if !source.window_placeholders {
        return Ok(batch);
    }
    let n = batch.num_rows();
    let zeros: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![0i64; n]));
    let mut fields: Vec<datafusion::arrow::datatypes::Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| (**f).clone())
        .collect();
    fields.extend(crate::window::window_fields());
    let mut columns = batch.columns().to_vec();
    columns.extend([zeros.clone(), zeros]);
    RecordBatch::try_new(
        Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
        columns,
    )
    .map_err(arrow)
}

/// Runs steps over a whole batch.
pub(super) fn run_steps(steps: &[Step], batch: RecordBatch) -> Result<Rows> {
    let n = batch.num_rows() as u32;
    let mut rows = Rows {
        batch,
        from: UInt32Array::from_iter_values(0..n),
    };
    for step in steps {
        rows = match step {
            Step::Columns(indices) => Rows {
                batch: rows.batch.project(indices).map_err(arrow)?,
                from: rows.from,
            },
            Step::Filter(predicate) => {
                let mask = predicate
                    .evaluate(&rows.batch)
                    .and_then(|v| v.into_array(rows.batch.num_rows()))
                    .map_err(from_datafusion)?;
                let mask = mask
                    .as_boolean_opt()
                    .ok_or_else(|| SqlError::Execution("a filter is not boolean".into()))?;
                let from = filter(&rows.from, mask).map_err(arrow)?;
                Rows {
                    batch: filter_record_batch(&rows.batch, mask).map_err(arrow)?,
                    from: from.as_primitive().clone(),
                }
            }
            Step::Project(exprs, schema) => {
                let n = rows.batch.num_rows();
                let columns = exprs
                    .iter()
                    .map(|e| e.evaluate(&rows.batch).and_then(|v| v.into_array(n)))
                    .collect::<datafusion::common::Result<Vec<ArrayRef>>>()
                    .map_err(from_datafusion)?;
                Rows {
                    batch: RecordBatch::try_new(schema.clone(), columns).map_err(arrow)?,
                    from: rows.from,
                }
            }
        };
    }
    Ok(rows)
}

/// The rows with their change operation as a last column `op` (row `r` came from result
/// row `from[r]`).
fn with_op_column(values: &RecordBatch, ops: &StringArray, from: &[u32]) -> Result<RecordBatch> {
    let column: StringArray = from.iter().map(|&d| Some(ops.value(d as usize))).collect();
    let mut fields: Vec<datafusion::arrow::datatypes::Field> = values
        .schema()
        .fields()
        .iter()
        .map(|f| (**f).clone())
        .collect();
    fields.push(datafusion::arrow::datatypes::Field::new(
        "op",
        DataType::Utf8,
        false,
    ));
    let mut columns = values.columns().to_vec();
    columns.push(Arc::new(column));
    RecordBatch::try_new(
        Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
        columns,
    )
    .map_err(arrow)
}

/// Record keys of a batch's rows.
enum Keys {
    None,
    Some(Vec<Option<Bytes>>),
    /// Keyed by a primary key, some of whose values are NULL (those rows are poison).
    NullPrimaryKey(Vec<Option<Bytes>>, String),
}

fn millis(a: &ArrayRef) -> Result<TimestampMillisecondArray> {
    let t = cast(a, &DataType::Timestamp(TimeUnit::Millisecond, None)).map_err(arrow)?;
    Ok(t.as_primitive::<TimestampMillisecondType>().clone())
}

fn log_record(r: &InputRecord, value: Bytes) -> LogRecord {
    LogRecord {
        key: r.key.clone(),
        value,
        timestamp: r.timestamp.0,
        partition: r.partition as i32,
        offset: r.offset.0,
    }
}

fn failed(e: SqlError) -> weir_engine::EngineError {
    weir_engine::EngineError::Internal(e.to_string())
}

impl QueryProcessor {
    /// Rows after the steps: to the sink (no aggregate), into this task's windows, or to the
    /// repartition topic keyed by their group. Returns the rows handled.
    fn grouped(
        &mut self,
        ctx: &mut TaskContext<'_>,
        rows: &Rows,
        times: &[i64],
        origin: &[u32],
        signs: Option<&Signs>,
    ) -> Result<usize> {
        if self.query.lookup.is_some() {
            return self.lookup_rows(ctx, rows, times, origin, signs);
        }
        let Some((agg, _)) = &self.query.aggregate else {
            return self.write(ctx, rows, times, Some(origin), None, None);
        };
        let n = rows.batch.num_rows();
        let from = rows.from.values();
        let times: Vec<i64> = from.iter().map(|&d| times[d as usize]).collect();
        let origins: Vec<Origin> = from
            .iter()
            .map(|&d| Origin::input(origin[d as usize] as usize))
            .collect();
        let retract: Option<Vec<bool>> =
            signs.map(|s| from.iter().map(|&d| s.retract[d as usize]).collect());
        let early = match (&mut self.windowed, &self.shuffle) {
            (Some(w), _) => {
                let (keys, args) = w.codec().group(agg, &rows.batch)?;
                w.add(ctx, agg, (keys, args, retract.as_deref()), &times, &origins)?
            }
            (None, Some((topic, codec))) => {
                let (keys, args) = codec.group(agg, &rows.batch)?;
                let values = codec.encode_args(&args, n)?;
                for (r, ((key, value), ts)) in keys.into_iter().zip(values).zip(&times).enumerate()
                {
                    let mut record = Record::keyed(key, value).at(Timestamp(*ts));
                    if retract.as_ref().is_some_and(|x| x[r]) {
                        record.headers.push(weir_log::Header {
                            key: RETRACT_HEADER.into(),
                            value: None,
                        });
                    }
                    ctx.emit(topic, record)
                        .map_err(|e| SqlError::Execution(e.to_string()))?;
                }
                None
            }
            (None, None) => None,
        };
        self.emit_results(ctx, early)?;
        Ok(n)
    }

    /// The aggregate's part after a repartition: records keyed by their group key, valued by
    /// their aggregates' arguments, stamped with their event time.
    fn add_repartitioned(&mut self, ctx: &mut TaskContext<'_>) -> Result<usize> {
        let Some(w) = &mut self.windowed else {
            return Ok(0);
        };
        let input = ctx.input();
        let keys: Vec<Bytes> = input
            .iter()
            .map(|r| r.key.clone().unwrap_or_default())
            .collect();
        let args = w
            .codec()
            .decode_args(input.iter().map(|r| r.value.as_deref().unwrap_or_default()))?;
        let times: Vec<i64> = input.iter().map(|r| r.timestamp.0).collect();
        let origins: Vec<Origin> = (0..input.len()).map(Origin::input).collect();
        let n = keys.len();
        let Some((agg, _)) = &self.query.aggregate else {
            return Ok(0);
        };
        let retract: Option<Vec<bool>> = agg.retracting.then(|| {
            input
                .iter()
                .map(|r| r.headers.iter().any(|h| h.key == RETRACT_HEADER))
                .collect()
        });
        let early = w.add(ctx, agg, (keys, args, retract.as_deref()), &times, &origins)?;
        self.emit_results(ctx, early)?;
        Ok(n)
    }

    /// Closed windows through the steps after the aggregate, to the sink.
    fn emit_results(&self, ctx: &mut TaskContext<'_>, results: Option<Results>) -> Result<()> {
        let (Some(r), Some((_, after))) = (results, &self.query.aggregate) else {
            return Ok(());
        };
        let rows = run_steps(after, r.batch)?;
        self.write(ctx, &rows, &r.times, None, Some(&r.keys), r.ops.as_deref())?;
        Ok(())
    }
}

/// A task's aggregate: windows, or updating groups.
enum GroupOp {
    Windowed(Box<WindowedAggregate>),
    Updating(UpdatingAggregate),
}

impl GroupOp {
    fn new(agg: &super::Aggregate) -> Result<GroupOp> {
        Ok(match agg.window {
            Some(_) => GroupOp::Windowed(Box::new(WindowedAggregate::new(agg)?)),
            None => GroupOp::Updating(UpdatingAggregate::new(agg)?),
        })
    }

    fn codec(&self) -> &GroupCodec {
        match self {
            GroupOp::Windowed(w) => w.codec(),
            GroupOp::Updating(u) => u.codec(),
        }
    }

    /// Adds rows; an updating aggregate whose cache filled emits its changes so far.
    fn add(
        &mut self,
        ctx: &mut TaskContext<'_>,
        agg: &super::Aggregate,
        (keys, args, retract): (Vec<Bytes>, Vec<Option<ArrayRef>>, Option<&[bool]>),
        times: &[i64],
        origins: &[Origin],
    ) -> Result<Option<Results>> {
        match self {
            // The compiler gives windows streams only: nothing is retracted.
            GroupOp::Windowed(w) => w.add(ctx, keys, args, times, origins).map(|_| None),
            GroupOp::Updating(u) => u.add(ctx, agg, keys, args, retract),
        }
    }

    fn on_time(
        &mut self,
        ctx: &mut TaskContext<'_>,
        agg: &super::Aggregate,
    ) -> Result<Option<Results>> {
        match self {
            GroupOp::Windowed(w) => w.on_time(ctx, agg),
            GroupOp::Updating(_) => Ok(None),
        }
    }

    fn flush(
        &mut self,
        ctx: &mut TaskContext<'_>,
        agg: &super::Aggregate,
    ) -> Result<Option<Results>> {
        match self {
            GroupOp::Windowed(w) => w.flush(ctx, agg),
            GroupOp::Updating(u) => u.flush(ctx, agg),
        }
    }
}

impl weir_engine::Processor for QueryProcessor {
    fn process(&mut self, ctx: &mut TaskContext<'_>) -> weir_engine::Result<()> {
        let started = Instant::now();
        let records_in = ctx.input().len();
        if self.query.join.is_some() {
            let (operator, out) = self.stream_join_batch(ctx).map_err(failed)?;
            ctx.record_operator(operator, records_in, out, started.elapsed());
            return Ok(());
        }
        if let Role::ShuffleTable(topic) = &self.role {
            let query = self.query.clone();
            if let Some((lookup, _)) = &query.lookup {
                let out = lookup.shuffle_table(ctx, topic).map_err(failed)?;
                ctx.record_operator(lookup::LOOKUP_OPERATOR, records_in, out, started.elapsed());
            }
            return Ok(());
        }
        if self.query.lookup.is_some() {
            // The table's records, or (after the repartition) the stream's rows.
            let table_join = self
                .query
                .lookup
                .as_ref()
                .is_some_and(|(l, _)| l.table_join);
            let out = match (ctx.input_index(), &self.role) {
                (1, _) if table_join => self.join_tables(ctx, true),
                (1, _) => self.update_table(ctx).map(|()| 0),
                (_, Role::Aggregate) if table_join => self.join_tables(ctx, false),
                (_, Role::Aggregate) => self.join_repartitioned(ctx),
                _ => Ok(usize::MAX),
            }
            .map_err(failed)?;
            if out != usize::MAX {
                ctx.record_operator(lookup::LOOKUP_OPERATOR, records_in, out, started.elapsed());
                return Ok(());
            }
        }
        if self.role == Role::Aggregate {
            let out = self.add_repartitioned(ctx).map_err(failed)?;
            ctx.record_operator(1, records_in, out, started.elapsed());
            return Ok(());
        }
        let query = self.query.clone();
        let (batch, origin, signs) = self.read(ctx, &query.source).map_err(failed)?;
        let times = self.times(ctx, &query.source, &batch).map_err(failed)?;
        let mut out = 0;
        for rows in self
            .process_rows(ctx, &query.steps, &batch, &origin)
            .map_err(failed)?
        {
            out += self
                .grouped(ctx, &rows, &times, &origin, signs.as_ref())
                .map_err(failed)?;
        }
        ctx.record_operator(0, records_in, out, started.elapsed());
        Ok(())
    }

    fn on_time(&mut self, ctx: &mut TaskContext<'_>) -> weir_engine::Result<()> {
        if self.interval.is_some() {
            return self.expire_stream_join(ctx).map_err(failed);
        }
        let (Some(w), Some((agg, _))) = (&mut self.windowed, &self.query.aggregate) else {
            return Ok(());
        };
        let results = w.on_time(ctx, agg).map_err(failed)?;
        self.emit_results(ctx, results).map_err(failed)
    }

    fn flush(&mut self, ctx: &mut TaskContext<'_>) -> weir_engine::Result<()> {
        let (Some(w), Some((agg, _))) = (&mut self.windowed, &self.query.aggregate) else {
            return Ok(());
        };
        let results = w.flush(ctx, agg).map_err(failed)?;
        self.emit_results(ctx, results).map_err(failed)
    }
}
