//! An updating aggregate: `GROUP BY` without a window over a stream or a table. The task keeps each
//! group's accumulators in a RocksDB key-value store (backed by its changelog) and, before
//! every commit, emits the groups that changed in the interval as change rows: `insert` for a
//! new group, `update_before` (the result emitted last) and `update_after` (the new one) for a
//! changed group — retractions, so a consumer that sums the changes never counts a row twice.
//! Over a table, rows also leave (an update's old row, a deleted row): the accumulators take
//! them out, each group counts its rows, and a group left with none is a `delete`.
//!
//! Invariant: what the store holds for a group is exactly what was last emitted for it (the
//! store is written in the same flush that emits), so the `update_before` row is always the
//! row the consumer has.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use rustc_hash::FxHashMap;
use weir_engine::TaskContext;

use super::aggregate::{Acc, AggSpec};
use super::windowed::{GroupCodec, Results};
use super::{Aggregate, GroupSlot};
use crate::error::{Result, SqlError};
use crate::format::{encode_rows, Format};

/// The operator's store and metrics slots in the task.
const GROUP_STORE: usize = 0;

/// Groups held in memory between commits; past it the changes are emitted and written early
/// (more, smaller change sets; the same final state).
pub const UPDATING_CACHE_MAX: usize = 50_000;

/// The change-row operations, as the `op` column says them.
pub const OP_INSERT: &str = "insert";
/// The result a change replaces.
pub const OP_UPDATE_BEFORE: &str = "update_before";
/// The result that replaces it.
pub const OP_UPDATE_AFTER: &str = "update_after";
/// A row that no longer holds.
pub const OP_DELETE: &str = "delete";

struct Group {
    /// As last emitted (and stored); `None` for a group new in this interval.
    before: Option<Vec<Acc>>,
    now: Vec<Acc>,
}

/// One task's updating aggregate.
pub(crate) struct UpdatingAggregate {
    codec: GroupCodec,
    specs: Arc<Vec<AggSpec>>,
    /// Rows are retracted too: each group's accumulators end with its row count.
    retracting: bool,
    /// There are GROUP BY columns (without, the one group stays when empty, as SQL's does).
    keyed: bool,
    changed: FxHashMap<Bytes, Group>,
}

fn engine(e: weir_engine::EngineError) -> SqlError {
    SqlError::Execution(e.to_string())
}

fn arrow(e: datafusion::arrow::error::ArrowError) -> SqlError {
    SqlError::Execution(e.to_string())
}

impl UpdatingAggregate {
    pub(crate) fn new(agg: &Aggregate) -> Result<UpdatingAggregate> {
        Ok(UpdatingAggregate {
            codec: GroupCodec::new(agg)?,
            specs: Arc::new(agg.aggregates.clone()),
            retracting: agg.retracting,
            keyed: !agg.slots.is_empty(),
            changed: FxHashMap::default(),
        })
    }

    pub(crate) fn codec(&self) -> &GroupCodec {
        &self.codec
    }

    /// The accumulators a group's state holds: one per aggregate, and its row count when
    /// rows are retracted.
    fn state_len(&self) -> usize {
        self.specs.len() + usize::from(self.retracting)
    }

    fn init(&self) -> Vec<Acc> {
        let mut accs: Vec<Acc> = self.specs.iter().map(AggSpec::init).collect();
        if self.retracting {
            accs.push(Acc::Count(0));
        }
        accs
    }

    /// Adds rows (row `r` of `args` under `keys[r]`; taken out where `retract[r]`); past the
    /// cache bound the changes so far are emitted.
    pub(crate) fn add(
        &mut self,
        ctx: &mut TaskContext<'_>,
        agg: &Aggregate,
        keys: Vec<Bytes>,
        args: Vec<Option<ArrayRef>>,
        retract: Option<&[bool]>,
    ) -> Result<Option<Results>> {
        let mut early = None;
        for (r, key) in keys.into_iter().enumerate() {
            if !self.changed.contains_key(&key) {
                if self.changed.len() >= UPDATING_CACHE_MAX {
                    early = merge(early, self.flush(ctx, agg)?)?;
                }
                let before = match ctx
                    .store_at(GROUP_STORE)
                    .map_err(engine)?
                    .get(&key)
                    .map_err(engine)?
                {
                    Some(b) => Some(decode(&b, self.state_len())?),
                    None => None,
                };
                let now = before.clone().unwrap_or_else(|| self.init());
                self.changed.insert(key.clone(), Group { before, now });
            }
            let Some(g) = self.changed.get_mut(&key) else {
                continue;
            };
            let out = retract.is_some_and(|x| x.get(r).copied().unwrap_or(false));
            for ((spec, acc), arg) in self.specs.iter().zip(g.now.iter_mut()).zip(&args) {
                match out {
                    false => spec.add(acc, arg.as_ref(), r),
                    true => spec.retract(acc, arg.as_ref(), r),
                }
            }
            if let (true, Some(Acc::Count(rows))) = (self.retracting, g.now.last_mut()) {
                *rows += if out { -1 } else { 1 };
            }
        }
        Ok(early)
    }

    /// Before a commit: the interval's changes as change rows, and the groups written.
    pub(crate) fn flush(
        &mut self,
        ctx: &mut TaskContext<'_>,
        agg: &Aggregate,
    ) -> Result<Option<Results>> {
        if self.changed.is_empty() {
            return Ok(None);
        }
        let changed = std::mem::take(&mut self.changed);
        let mut keys: Vec<Bytes> = Vec::with_capacity(changed.len() * 2);
        let mut accs: Vec<Vec<Acc>> = Vec::with_capacity(changed.len() * 2);
        let mut ops: Vec<&'static str> = Vec::with_capacity(changed.len() * 2);
        let store = ctx.store_at(GROUP_STORE).map_err(engine)?;
        for (key, g) in changed {
            if self.is_empty(&g.now) {
                // The group's last row left: it is deleted, if it was ever emitted.
                store.delete(key.clone());
                if let Some(before) = g.before {
                    keys.push(key);
                    accs.push(before);
                    ops.push(OP_DELETE);
                }
                continue;
            }
            let value = serde_json::to_vec(&g.now)
                .map_err(|e| SqlError::Execution(format!("cannot encode a group: {e}")))?;
            store.put(key.clone(), value);
            match g.before {
                None => {
                    keys.push(key);
                    accs.push(g.now);
                    ops.push(OP_INSERT);
                }
                Some(before) if before != g.now => {
                    keys.push(key.clone());
                    accs.push(before);
                    ops.push(OP_UPDATE_BEFORE);
                    keys.push(key);
                    accs.push(g.now);
                    ops.push(OP_UPDATE_AFTER);
                }
                Some(_) => {}
            }
        }
        if keys.is_empty() {
            return Ok(None);
        }
        let at = ctx.stream_time().unwrap_or_else(|| ctx.now()).0;
        self.results(agg, &keys, &accs, ops, at).map(Some)
    }

    /// Whether a group holds no rows and goes (only a retracting aggregate's groups can; the
    /// one group of an aggregate without GROUP BY stays, as `SELECT COUNT(*)` is 0 then).
    fn is_empty(&self, accs: &[Acc]) -> bool {
        self.retracting && self.keyed && matches!(accs.last(), Some(Acc::Count(n)) if *n <= 0)
    }

    fn results(
        &self,
        agg: &Aggregate,
        keys: &[Bytes],
        accs: &[Vec<Acc>],
        ops: Vec<&'static str>,
        at: i64,
    ) -> Result<Results> {
        let key_columns = self.codec.key_columns(keys.iter().map(|k| k.as_ref()))?;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(agg.schema.fields().len());
        for slot in &agg.slots {
            match slot {
                GroupSlot::Key(k) => columns.push(key_columns[*k].clone()),
                _ => {
                    return Err(SqlError::Execution(
                        "a window column in an updating aggregate".into(),
                    ))
                }
            }
        }
        for (k, spec) in self.specs.iter().enumerate() {
            let column: Vec<&Acc> = accs.iter().map(|a| &a[k]).collect();
            columns.push(spec.results(&column)?);
        }
        let batch = RecordBatch::try_new(agg.schema.clone(), columns).map_err(arrow)?;
        let group = batch
            .project(&(0..agg.slots.len()).collect::<Vec<_>>())
            .map_err(arrow)?;
        let record_keys = match group.num_columns() {
            0 => vec![Bytes::from_static(b"{}"); batch.num_rows()],
            _ => encode_rows(Format::Json, &group)?,
        };
        Ok(Results {
            times: vec![at; batch.num_rows()],
            keys: record_keys,
            ops: Some(Arc::new(StringArray::from(ops))),
            batch,
        })
    }
}

/// Two result sets as one (an early flush and the flush that follows it).
fn merge(a: Option<Results>, b: Option<Results>) -> Result<Option<Results>> {
    Ok(match (a, b) {
        (None, b) => b,
        (a, None) => a,
        (Some(a), Some(b)) => {
            // Both are batches of the aggregate's schema: concatenating cannot fail, but if
            // it did, the interval's results must not be dropped silently.
            let batch =
                datafusion::arrow::compute::concat_batches(&a.batch.schema(), [&a.batch, &b.batch])
                    .map_err(|e| SqlError::Execution(format!("merging results: {e}")))?;
            let ops = match (a.ops, b.ops) {
                (Some(x), Some(y)) => {
                    Some(Arc::new(StringArray::from_iter(x.iter().chain(y.iter())))
                        as Arc<StringArray>)
                }
                _ => None,
            };
            Some(Results {
                batch,
                times: [a.times, b.times].concat(),
                keys: [a.keys, b.keys].concat(),
                ops,
            })
        }
    })
}

fn decode(bytes: &[u8], n: usize) -> Result<Vec<Acc>> {
    let acc: Vec<Acc> = serde_json::from_slice(bytes)
        .map_err(|e| SqlError::Execution(format!("a stored group does not decode: {e}")))?;
    if acc.len() != n {
        return Err(SqlError::Execution(format!(
            "{} accumulators stored for {n} aggregates",
            acc.len()
        )));
    }
    Ok(acc)
}
