//! A table's current rows in a task's key-value store (backed by its changelog): each key's
//! entry under the key — its row, and for a table of change events the source position
//! applied to the key, kept with the row (one read and one write per change; a deleted key
//! keeps its position, so an older change replayed after the delete is still refused). A batch of the table's records is applied
//! in order — upserts, deletes, replays skipped — and says what it did, so a stream–table
//! lookup can keep the rows and an aggregate over the table can retract the rows replaced.
//!
//! Invariants: a record whose row does not decode is poison (dead-lettered), never stored, so
//! a stored row always decodes; an entry of a table of change events carries the position
//! last applied to its key; a change older than the position applied for its key (a
//! replay) changes nothing and is counted.

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use weir_engine::changes::SourcePosition;
use weir_engine::{KvStore, Origin, TaskContext};

use crate::changes::{TableChange, TableChanges, TableOp};
use crate::error::{Result, SqlError};
use crate::format::{LogRecord, RowDecoder};

/// The first byte of an entry that carries a position (then 24 bytes of it, then the row;
/// no row: the key was deleted at that position).
const POSITIONED: u8 = 0xFF;

/// Bytes before the row in a positioned entry.
const POSITIONED_HEADER: usize = 1 + 24;

/// A stored entry's encoding: a row (or none) and the position applied (or none).
fn encode_entry(row: Option<&[u8]>, at: Option<SourcePosition>) -> Option<Bytes> {
    let Some(at) = at else {
        return row.map(Bytes::copy_from_slice);
    };
    let row = row.unwrap_or_default();
    let mut e = Vec::with_capacity(POSITIONED_HEADER + row.len());
    e.push(POSITIONED);
    e.extend_from_slice(&at.to_bytes());
    e.extend_from_slice(row);
    Some(Bytes::from(e))
}

/// The row of a stored entry (`None`: a deleted key's position only). `positioned`: the
/// table's records carry positions (its entries were written with them).
pub(crate) fn stored_row(entry: Bytes, positioned: bool) -> Option<Bytes> {
    if !positioned || entry.first() != Some(&POSITIONED) {
        return Some(entry);
    }
    let row = entry.slice(POSITIONED_HEADER.min(entry.len())..);
    (!row.is_empty()).then_some(row)
}

/// The position of a stored entry, if it has one.
fn stored_position(entry: &[u8], positioned: bool) -> Option<SourcePosition> {
    match (positioned, entry.first()) {
        (true, Some(&POSITIONED)) => SourcePosition::from_bytes(entry.get(1..POSITIONED_HEADER)?),
        _ => None,
    }
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
    let (records, read, mut poison) = read_input(ctx, changes);
    let index_of = |offset: i64| input_index(&records, offset);
    let upserts: Vec<LogRecord> = read
        .iter()
        .filter_map(|c| match &c.op {
            TableOp::Upsert(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    let (rows, bad_rows) = decoder.decode(&upserts);
    let positioned = changes.positioned();
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
        let stored = match positioned || want_old {
            true => store.get(&c.key).map_err(engine)?,
            false => None,
        };
        let applied_at = stored
            .as_deref()
            .and_then(|e| stored_position(e, positioned));
        let stale = match (c.position, applied_at) {
            (Some(at), Some(applied_at)) => at < applied_at,
            // A tombstone follows its delete event, which applied (or, replayed, was refused)
            // by position: on its own it could undo a newer change.
            (None, Some(_)) => matches!(c.op, TableOp::Delete),
            _ => false,
        };
        if stale {
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
            true => stored.and_then(|e| stored_row(e, positioned)),
            false => None,
        };
        let at = c.position.or(applied_at);
        let entry = encode_entry(row.as_ref().map(|(_, v)| v.as_ref()), at);
        match entry {
            Some(e) => store.put(c.key.clone(), e),
            None => store.delete(c.key.clone()),
        }
        let new = row.map(|(index, _)| index);
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

/// The task's input batch (one partition of a table) read as changes: its records, the
/// changes, and the input index of each record that is none, with the reason.
fn read_input(
    ctx: &TaskContext<'_>,
    changes: &TableChanges,
) -> (Vec<LogRecord>, Vec<TableChange>, Vec<(usize, String)>) {
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
    let (read, bad) = changes.read(&records);
    let poison = bad
        .into_iter()
        .filter_map(|b| Some((input_index(&records, b.offset)?, b.reason)))
        .collect();
    (records, read, poison)
}

/// The input index of the record at `offset` (the input is one partition, in offset order).
fn input_index(records: &[LogRecord], offset: i64) -> Option<usize> {
    records.binary_search_by_key(&offset, |r| r.offset).ok()
}

/// A joined table's records, each to the repartition topic `topic` under its key as Weir
/// encodes it (its value as it was): bad records and truncates are poison. Returns the
/// records sent.
pub(crate) fn shuffle_table(
    ctx: &mut TaskContext<'_>,
    changes: &TableChanges,
    topic: &str,
) -> Result<usize> {
    let (records, read, mut poison) = read_input(ctx, changes);
    let mut out = Vec::with_capacity(read.len());
    for c in read {
        let Some(i) = input_index(&records, c.offset) else {
            continue;
        };
        if let TableOp::Truncate = c.op {
            poison.push((i, TRUNCATE_NOT_APPLIED.to_string()));
            continue;
        }
        let r = &ctx.input()[i];
        out.push(weir_log::Record {
            key: Some(c.key),
            value: r.value.clone(),
            timestamp: Some(weir_log::Timestamp(r.timestamp.0)),
            ..weir_log::Record::default()
        });
    }
    for (i, reason) in poison {
        ctx.poison(
            Origin::input(i),
            format!("a table change that does not apply: {reason}"),
        );
    }
    let n = out.len();
    for record in out {
        ctx.emit(topic, record).map_err(engine)?;
    }
    Ok(n)
}
