//! A table's current rows in a task's key-value store (backed by its changelog): each key's
//! row under the key (a JSON object, so its first byte is `{`), and the source position
//! applied to it under [`POSITION_PREFIX`] + key. A batch of the table's records is applied
//! in order — upserts, deletes, replays skipped — and says what it did, so a stream–table
//! lookup can keep the rows and an aggregate over the table can retract the rows replaced.
//!
//! Invariants: a record whose row does not decode is poison (dead-lettered), never stored, so
//! a stored row always decodes; a change older than the position applied for its key (a
//! replay) changes nothing and is counted.

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use weir_engine::changes::SourcePosition;
use weir_engine::{KvStore, Origin, TaskContext};

use crate::changes::{TableChanges, TableOp};
use crate::error::{Result, SqlError};
use crate::format::{LogRecord, RowDecoder};

/// The first byte of a position's store key (a row's key starts with `{`).
const POSITION_PREFIX: u8 = 0xFF;

fn position_key(key: &[u8]) -> Bytes {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(POSITION_PREFIX);
    k.extend_from_slice(key);
    Bytes::from(k)
}

fn engine(e: weir_engine::EngineError) -> SqlError {
    SqlError::Execution(e.to_string())
}

/// One change applied to the store.
#[derive(Debug)]
pub(crate) struct Applied {
    /// The input record it came from (an index into the task's batch).
    pub(crate) input: usize,
    /// The key.
    pub(crate) key: Bytes,
    /// The row the key had before (only when asked for).
    pub(crate) old: Option<Bytes>,
    /// The key's new row, as a row of [`AppliedBatch::rows`] (`None`: deleted).
    pub(crate) new: Option<usize>,
}

/// What a batch of a table's records did to its store.
pub(crate) struct AppliedBatch {
    /// The changes applied, in order.
    pub(crate) changes: Vec<Applied>,
    /// The decoded rows of the upserts (those that decoded).
    pub(crate) rows: RecordBatch,
    /// Changes skipped as replays.
    pub(crate) replays: u64,
}

/// Why a truncate is not applied to a hashed store.
pub(crate) const TRUNCATE_NOT_APPLIED: &str =
    "a truncate: a task's table state has no ranges to clear; re-create the query to start over";

/// The name of the store that holds a joined table's rows in a task.
pub(crate) const TABLE_STORE_NAME: &str = "table";

/// The name of the store that holds a table source's rows (a store's name is unique in its
/// query: a table source and a joined table each have their own).
pub(crate) const SOURCE_STORE_NAME: &str = "source";

/// Applies the task's input batch (records of one partition of the table) to its store
/// `store`; bad records, rows that do not decode and truncates are reported as poison with
/// their reason. With `want_old`, each change says the row it replaced.
pub(crate) fn apply_batch(
    ctx: &mut TaskContext<'_>,
    store: &str,
    changes: &TableChanges,
    decoder: &RowDecoder,
    want_old: bool,
) -> Result<AppliedBatch> {
    let records: Vec<LogRecord> = ctx
        .input()
        .iter()
        .map(|r| LogRecord {
            key: r.key.clone(),
            value: r.value.clone().unwrap_or_default(),
            timestamp: r.timestamp.0,
            partition: r.partition as i32,
            offset: r.offset.0,
        })
        .collect();
    // The input is one partition, in offset order: an offset names its record.
    let index_of = |offset: i64| records.binary_search_by_key(&offset, |r| r.offset).ok();
    let (read, bad) = changes.read(&records);
    let upserts: Vec<LogRecord> = read
        .iter()
        .filter_map(|c| match &c.op {
            TableOp::Upsert(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    let (rows, bad_rows) = decoder.decode(&upserts);
    let mut poison: Vec<(usize, String)> = bad
        .iter()
        .filter_map(|b| Some((index_of(b.offset)?, b.reason.clone())))
        .collect();
    let store: &mut KvStore = ctx.store(store).map_err(engine)?;
    let mut applied = Vec::with_capacity(read.len());
    let mut replays = 0;
    // Decoded rows are the upserts that decoded, in order.
    let mut next_row = 0;
    for c in read {
        let Some(input) = index_of(c.offset) else {
            continue;
        };
        let row = match &c.op {
            TableOp::Truncate => {
                poison.push((input, TRUNCATE_NOT_APPLIED.to_string()));
                continue;
            }
            TableOp::Upsert(r) => match bad_rows.iter().find(|b| b.offset == r.offset) {
                Some(b) => Err(b.reason.clone()),
                None => {
                    next_row += 1;
                    Ok(Some((next_row - 1, r.value.clone())))
                }
            },
            TableOp::Delete => Ok(None),
        };
        if is_replay(store, &c.key, c.position)? {
            replays += 1;
            continue;
        }
        let row = match row {
            Ok(row) => row,
            Err(reason) => {
                poison.push((input, reason));
                continue;
            }
        };
        let old = match want_old {
            true => store.get(&c.key).map_err(engine)?,
            false => None,
        };
        let new = match row {
            Some((index, value)) => {
                store.put(c.key.clone(), value);
                Some(index)
            }
            None => {
                store.delete(c.key.clone());
                None
            }
        };
        applied.push(Applied {
            input,
            key: c.key,
            old,
            new,
        });
    }
    for (i, reason) in poison {
        ctx.poison(
            Origin::input(i),
            format!("a table change that does not apply: {reason}"),
        );
    }
    Ok(AppliedBatch {
        changes: applied,
        rows,
        replays,
    })
}

/// Whether a change at `at` is older than the position applied for `key`; if not, `at` is
/// now the key's position.
fn is_replay(store: &mut KvStore, key: &[u8], at: Option<SourcePosition>) -> Result<bool> {
    let Some(at) = at else {
        return Ok(false);
    };
    let position_key = position_key(key);
    let applied = store
        .get(&position_key)
        .map_err(engine)?
        .and_then(|p| SourcePosition::from_bytes(&p));
    if applied.is_some_and(|applied| at < applied) {
        return Ok(true);
    }
    store.put(position_key, Bytes::copy_from_slice(&at.to_bytes()));
    Ok(false)
}
