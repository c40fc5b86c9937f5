//! The windowed `GROUP BY` of a task: rows go into the engine's window operator (tumbling and
//! hopping windows through slices, sessions merged per key) under their group key — the
//! grouping columns in Arrow's row format, which sorts and compares as the values do — and
//! results come back as an Arrow batch of the aggregate's output schema: one final row per
//! window on close, or, when emitting changes, change rows. For those, a second store keeps
//! the result last emitted per (window, key) — written in the flush that emits, so it is what
//! the consumer has — which the next change retracts (`update_before`), and which is deleted
//! once its window has closed.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::row::{RowConverter, SortField};
use weir_engine::window::{SessionWindows, SlicedWindows, WindowResult};
use weir_engine::{Emit, LatePolicy, Origin, TaskContext, WindowKind, WindowSpec};

use super::aggregate::{Acc, RowInput, SqlAggregates};
use super::{Aggregate, GroupSlot};
use crate::error::{from_datafusion, Result, SqlError};
use crate::format::{encode_rows, Format};

/// The operator's stores and metrics slot in the task.
const WINDOW_STORE: usize = 0;
/// Emitting changes: the result last emitted per (window start, key).
const EMITTED_STORE: usize = 1;
const WINDOW_OPERATOR: usize = 1;

/// Prefix of the emitted store's keys.
const EMITTED: u8 = 1;

/// A window start as big-endian bytes that sort as the numbers do.
fn start_bytes(start: i64) -> [u8; 8] {
    ((start as u64) ^ (1 << 63)).to_be_bytes()
}

fn emitted_key(start: i64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + key.len());
    k.push(EMITTED);
    k.extend_from_slice(&start_bytes(start));
    k.extend_from_slice(key);
    k
}

enum Windows {
    Sliced(SlicedWindows<SqlAggregates>),
    Session(SessionWindows<SqlAggregates>),
}

/// One task's windowed aggregate.
pub(crate) struct WindowedAggregate {
    windows: Windows,
    codec: GroupCodec,
    /// Results a session's add produced (when its cache was written back), for the next
    /// time update or flush.
    pending: Vec<WindowResult<Vec<Acc>>>,
    /// Emitting changes: (window size + grace) in ms, for deleting what closed windows emitted.
    changes: Option<i64>,
    /// The emitted store holds nothing of windows starting before this.
    emitted_floor: i64,
}

fn engine(e: weir_engine::EngineError) -> SqlError {
    SqlError::Execution(e.to_string())
}

fn arrow(e: datafusion::arrow::error::ArrowError) -> SqlError {
    SqlError::Execution(e.to_string())
}

/// Results of closed windows: the aggregate's output rows, each with its record time
/// (`window_end - 1`) and its record key (a JSON object of its grouping columns).
pub(crate) struct Results {
    pub(crate) batch: RecordBatch,
    pub(crate) times: Vec<i64>,
    pub(crate) keys: Vec<Bytes>,
    /// Change rows' operations (`None`: insert-only results).
    pub(crate) ops: Option<Arc<datafusion::arrow::array::StringArray>>,
}

impl WindowedAggregate {
    pub(crate) fn new(agg: &Aggregate) -> Result<WindowedAggregate> {
        let window = agg
            .window
            .as_ref()
            .ok_or_else(|| SqlError::Execution("a windowed aggregate without a window".into()))?;
        let mut spec = WindowSpec::new(window.kind);
        spec.emit = match agg.emit {
            crate::parser::EmitMode::OnWindowClose => Emit::OnWindowClose,
            crate::parser::EmitMode::Changes => Emit::OnUpdate,
        };
        spec.late = LatePolicy::Drop;
        let f = Arc::new(SqlAggregates {
            specs: agg.aggregates.clone(),
        });
        let windows = match window.kind {
            WindowKind::Session { .. } => Windows::Session(
                SessionWindows::new(f, &spec, WINDOW_STORE, WINDOW_OPERATOR).map_err(engine)?,
            ),
            _ => Windows::Sliced(
                SlicedWindows::new(f, &spec, WINDOW_STORE, WINDOW_OPERATOR).map_err(engine)?,
            ),
        };
        let changes = match (spec.emit, window.kind) {
            (Emit::OnUpdate, WindowKind::Tumbling { size } | WindowKind::Hopping { size, .. }) => {
                Some((size + spec.grace).as_millis() as i64)
            }
            _ => None,
        };
        Ok(WindowedAggregate {
            windows,
            codec: GroupCodec::new(agg)?,
            pending: Vec::new(),
            changes,
            emitted_floor: i64::MIN,
        })
    }

    /// The codec of the aggregate's keys and arguments.
    pub(crate) fn codec(&self) -> &GroupCodec {
        &self.codec
    }

    /// Adds rows: row `r` has group key `keys[r]`, event time `times[r]`, comes from
    /// `origins[r]`, and its aggregates' arguments are row `r` of `args`.
    pub(crate) fn add(
        &mut self,
        ctx: &mut TaskContext<'_>,
        keys: Vec<Bytes>,
        args: Vec<Option<ArrayRef>>,
        times: &[i64],
        origins: &[Origin],
    ) -> Result<()> {
        let args = Arc::new(args);
        for (r, key) in keys.into_iter().enumerate() {
            let input = RowInput {
                args: args.clone(),
                row: r,
            };
            let added = match &mut self.windows {
                Windows::Sliced(w) => w.add(ctx, origins[r], key, times[r], &input),
                Windows::Session(w) => {
                    w.add(ctx, origins[r], key, times[r], &input, &mut self.pending)
                }
            };
            added.map_err(engine)?;
        }
        Ok(())
    }

    /// The watermark moved: the windows it closed.
    pub(crate) fn on_time(
        &mut self,
        ctx: &mut TaskContext<'_>,
        agg: &Aggregate,
    ) -> Result<Option<Results>> {
        let mut out = std::mem::take(&mut self.pending);
        match &mut self.windows {
            Windows::Sliced(w) => w.on_time(ctx, &mut out),
            Windows::Session(w) => w.on_time(ctx, &mut out),
        }
        .map_err(engine)?;
        let results = self.results_or_changes(ctx, agg, out)?;
        self.forget_closed(ctx)?;
        Ok(results)
    }

    /// Before a commit: the cache is written to the store (and, emitting changes, the
    /// interval's changed windows come out).
    pub(crate) fn flush(
        &mut self,
        ctx: &mut TaskContext<'_>,
        agg: &Aggregate,
    ) -> Result<Option<Results>> {
        let mut out = std::mem::take(&mut self.pending);
        match &mut self.windows {
            Windows::Sliced(w) => w.flush(ctx, &mut out),
            Windows::Session(w) => w.flush(ctx, &mut out),
        }
        .map_err(engine)?;
        self.results_or_changes(ctx, agg, out)
    }

    /// Emitting changes: deletes what windows that have closed emitted (start + size + grace
    /// at or before the watermark), from the floor up.
    fn forget_closed(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        let (Some(span), Some(wm)) = (self.changes, ctx.watermark().map(|t| t.0)) else {
            return Ok(());
        };
        let bound = wm.saturating_sub(span).saturating_add(1);
        if bound <= self.emitted_floor {
            return Ok(());
        }
        let store = ctx.store_at(EMITTED_STORE).map_err(engine)?;
        let from = emitted_key(self.emitted_floor, &[]);
        let to = emitted_key(bound, &[]);
        let mut gone = Vec::new();
        for e in store.range(&from, &to).map_err(engine)? {
            gone.push(e.map_err(engine)?.0);
        }
        for k in gone {
            store.delete(k);
        }
        self.emitted_floor = bound;
        Ok(())
    }

    /// Results as rows: final rows on close, or change rows against what was emitted before.
    fn results_or_changes(
        &mut self,
        ctx: &mut TaskContext<'_>,
        agg: &Aggregate,
        out: Vec<WindowResult<Vec<Acc>>>,
    ) -> Result<Option<Results>> {
        if self.changes.is_none() || out.is_empty() {
            return self.results(agg, out);
        }
        let store = ctx.store_at(EMITTED_STORE).map_err(engine)?;
        let mut rows = Vec::with_capacity(out.len() * 2);
        let mut ops = Vec::with_capacity(out.len() * 2);
        for r in out {
            let k = emitted_key(r.start, &r.key);
            let before: Option<Vec<Acc>> = match store.get(&k).map_err(engine)? {
                Some(b) => Some(serde_json::from_slice(&b).map_err(|e| {
                    SqlError::Execution(format!("an emitted window result does not decode: {e}"))
                })?),
                None => None,
            };
            let value = serde_json::to_vec(&r.acc)
                .map_err(|e| SqlError::Execution(format!("cannot encode a window result: {e}")))?;
            match before {
                None => {
                    store.put(k, value);
                    rows.push(r);
                    ops.push(super::updating::OP_INSERT);
                }
                Some(b) if b != r.acc => {
                    store.put(k, value);
                    rows.push(WindowResult {
                        acc: b,
                        ..r.clone()
                    });
                    ops.push(super::updating::OP_UPDATE_BEFORE);
                    rows.push(r);
                    ops.push(super::updating::OP_UPDATE_AFTER);
                }
                Some(_) => {}
            }
        }
        let results = self.rows(agg, rows)?;
        Ok(results.map(|mut r| {
            r.ops = Some(Arc::new(datafusion::arrow::array::StringArray::from(ops)));
            r
        }))
    }

    /// Closed windows as rows of the aggregate's output (retracted sessions left out).
    fn results(
        &self,
        agg: &Aggregate,
        out: Vec<WindowResult<Vec<Acc>>>,
    ) -> Result<Option<Results>> {
        let out: Vec<WindowResult<Vec<Acc>>> = out.into_iter().filter(|r| !r.retracted).collect();
        self.rows(agg, out)
    }

    /// Window results as rows of the aggregate's output.
    fn rows(&self, agg: &Aggregate, out: Vec<WindowResult<Vec<Acc>>>) -> Result<Option<Results>> {
        if out.is_empty() {
            return Ok(None);
        }
        let keys = self.codec.key_columns(out.iter().map(|r| r.key.as_ref()))?;
        let timestamps = |f: &dyn Fn(&WindowResult<Vec<Acc>>) -> i64| -> ArrayRef {
            Arc::new(TimestampMillisecondArray::from_iter_values(
                out.iter().map(f),
            ))
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(agg.schema.fields().len());
        for (i, slot) in agg.slots.iter().enumerate() {
            let column = match slot {
                GroupSlot::WindowStart => timestamps(&|r| r.start),
                GroupSlot::WindowEnd => timestamps(&|r| r.end),
                GroupSlot::Key(k) => keys[*k].clone(),
            };
            let t = agg.schema.field(i).data_type();
            columns.push(match column.data_type() == t {
                true => column,
                false => cast(&column, t).map_err(arrow)?,
            });
        }
        for (k, spec) in agg.aggregates.iter().enumerate() {
            let accs: Vec<&Acc> = out.iter().map(|r| &r.acc[k]).collect();
            columns.push(spec.results(&accs)?);
        }
        let batch = RecordBatch::try_new(agg.schema.clone(), columns).map_err(arrow)?;
        let group = batch
            .project(&(0..agg.slots.len()).collect::<Vec<_>>())
            .map_err(arrow)?;
        let keys = encode_rows(Format::Json, &group)?;
        let times = out.iter().map(|r| r.end.saturating_sub(1)).collect();
        Ok(Some(Results {
            batch,
            times,
            keys,
            ops: None,
        }))
    }
}

/// Group keys and aggregate arguments in Arrow's row format: a key's bytes are what the
/// window store is keyed by (and a repartition record's key, so equal keys meet in one task);
/// the arguments of a row travel as a repartition record's value.
pub(crate) struct GroupCodec {
    keys: Option<RowConverter>,
    args: Option<RowConverter>,
    /// Which aggregates have an argument (`COUNT(*)` has none).
    has_arg: Vec<bool>,
}

impl GroupCodec {
    pub(crate) fn new(agg: &Aggregate) -> Result<GroupCodec> {
        let key_fields: Vec<SortField> = agg
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, GroupSlot::Key(_)))
            .map(|(i, _)| SortField::new(agg.schema.field(i).data_type().clone()))
            .collect();
        let has_arg: Vec<bool> = agg.aggregates.iter().map(|a| a.arg.is_some()).collect();
        let arg_fields: Vec<SortField> = agg
            .aggregates
            .iter()
            .filter(|a| a.arg.is_some())
            .map(|a| SortField::new(a.canonical.clone()))
            .collect();
        let converter = |f: Vec<SortField>| match f.is_empty() {
            true => Ok(None),
            false => RowConverter::new(f).map(Some).map_err(arrow),
        };
        Ok(GroupCodec {
            keys: converter(key_fields)?,
            args: converter(arg_fields)?,
            has_arg,
        })
    }

    /// The group key and the aggregates' arguments of every row of a batch.
    pub(crate) fn group(
        &self,
        agg: &Aggregate,
        batch: &RecordBatch,
    ) -> Result<(Vec<Bytes>, Vec<Option<ArrayRef>>)> {
        let n = batch.num_rows();
        let keys = match &self.keys {
            None => vec![Bytes::new(); n],
            Some(c) => {
                let columns = agg
                    .keys
                    .iter()
                    .map(|k| k.evaluate(batch).and_then(|v| v.into_array(n)))
                    .collect::<datafusion::common::Result<Vec<ArrayRef>>>()
                    .map_err(from_datafusion)?;
                let rows = c.convert_columns(&columns).map_err(arrow)?;
                (0..n)
                    .map(|r| Bytes::copy_from_slice(rows.row(r).as_ref()))
                    .collect()
            }
        };
        let args = agg
            .aggregates
            .iter()
            .map(|a| a.argument(batch))
            .collect::<Result<Vec<_>>>()?;
        Ok((keys, args))
    }

    /// The key columns of encoded keys.
    pub(crate) fn key_columns<'a>(
        &self,
        keys: impl Iterator<Item = &'a [u8]>,
    ) -> Result<Vec<ArrayRef>> {
        let Some(c) = &self.keys else {
            return Ok(Vec::new());
        };
        let parser = c.parser();
        let rows: Vec<_> = keys.map(|k| parser.parse(k)).collect();
        c.convert_rows(rows).map_err(arrow)
    }

    /// Each row's arguments as one value.
    pub(crate) fn encode_args(&self, args: &[Option<ArrayRef>], n: usize) -> Result<Vec<Bytes>> {
        let Some(c) = &self.args else {
            return Ok(vec![Bytes::new(); n]);
        };
        let columns: Vec<ArrayRef> = args.iter().flatten().cloned().collect();
        let rows = c.convert_columns(&columns).map_err(arrow)?;
        Ok((0..n)
            .map(|r| Bytes::copy_from_slice(rows.row(r).as_ref()))
            .collect())
    }

    /// The arguments of encoded rows (in the aggregates' order; `None` where one has none).
    pub(crate) fn decode_args<'a>(
        &self,
        values: impl Iterator<Item = &'a [u8]>,
    ) -> Result<Vec<Option<ArrayRef>>> {
        let mut decoded = match &self.args {
            None => Vec::new(),
            Some(c) => {
                let parser = c.parser();
                let rows: Vec<_> = values.map(|v| parser.parse(v)).collect();
                c.convert_rows(rows).map_err(arrow)?
            }
        }
        .into_iter();
        Ok(self
            .has_arg
            .iter()
            .map(|&has| if has { decoded.next() } else { None })
            .collect())
    }
}
