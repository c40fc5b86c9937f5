//! Joins of two tables (`FROM l [LEFT] JOIN r ON l.x = r.key`): a foreign-key join, as
//! ksqlDB and Kafka Streams have it — the condition names the right table's whole primary
//! key, so each left row meets at most one right row, and the result is a table whose rows
//! come and go as either side changes.
//!
//! The left table is read as signed rows ([`super::table_source`]) and repartitioned by its
//! join key to the right table's partition, each record carrying its left row's key (header
//! `weir.row`) and, for a row taken out, `weir.retract`. The join's task keeps the right
//! table's rows ([`super::table_state`]) and an index of the left rows by (join key, row key)
//! in a sorted store, so:
//! - a left row added or taken out meets the right row of its join key (or NULLs, LEFT);
//! - a right row that changes retracts what each left row of its key was joined with and
//!   adds what it is joined with now.
//!
//! Output rows are change rows (`insert`, `delete`) keyed by the left row's key plus the join
//! key (`_join`): a left row that moves to another join key is taken out by one task and
//! added by another, under two keys, so no order between the tasks can lose it.
//!
//! Invariant: the index holds exactly the left rows added and not taken out, per join key,
//! so a right change retracts exactly the joined rows emitted before.

use bytes::Bytes;
use datafusion::arrow::array::{RecordBatch, StringArray, UInt32Array};
use datafusion::arrow::compute::concat_batches;
use weir_engine::TaskContext;
use weir_log::{Header, Record};

use super::lookup::{Lookup, RowCodec, LOOKUP_OPERATOR};
use super::processor::{RETRACT_HEADER, ROW_KEY_HEADER};
use super::table_source::Signs;
use super::table_state;
use super::updating::{OP_DELETE, OP_INSERT};
use crate::error::{Result, SqlError};
use crate::format::LogRecord;

/// The join task's sorted store of the left table's rows by (join key, row key).
pub(crate) const LEFT_INDEX_STORE: &str = "left";

/// The repartition key of a left row whose join key is NULL (LEFT JOIN keeps it): it meets
/// no right row (their keys are JSON objects), and its add and retraction meet in one task.
const NULL_JOIN_KEY: &[u8] = b"null";

fn engine(e: weir_engine::EngineError) -> SqlError {
    SqlError::Execution(e.to_string())
}

fn arrow(e: datafusion::arrow::error::ArrowError) -> SqlError {
    SqlError::Execution(e.to_string())
}

/// Marks a left row's repartition record with its sign and its row key.
pub(crate) fn mark(record: &mut Record, signs: &Signs, row: usize) {
    if record.key.is_none() {
        record.key = Some(Bytes::from_static(NULL_JOIN_KEY));
    }
    if signs.retract[row] {
        record.headers.push(Header {
            key: RETRACT_HEADER.into(),
            value: None,
        });
    }
    record.headers.push(Header {
        key: ROW_KEY_HEADER.into(),
        value: Some(signs.keys[row].clone()),
    });
}

/// Joined rows as changes: row `j` of `batch` came from change `source[j]`, whose op, output
/// key, time and input record the other fields give.
pub(crate) struct JoinedChanges {
    pub(crate) batch: RecordBatch,
    pub(crate) source: Vec<u32>,
    pub(crate) ops: StringArray,
    pub(crate) keys: Vec<Bytes>,
    pub(crate) times: Vec<i64>,
    pub(crate) origin: Vec<u32>,
}

/// The index key of a left row: its join key's length, the join key, the row key.
fn index_key(join_key: &[u8], row_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + join_key.len() + row_key.len());
    k.extend_from_slice(&(join_key.len() as u32).to_be_bytes());
    k.extend_from_slice(join_key);
    k.extend_from_slice(row_key);
    k
}

/// The index keys of a join key's rows: `[from, to)`.
fn index_range(join_key: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let from = index_key(join_key, &[]);
    let mut to = from.clone();
    // The smallest key after every key starting with `from`.
    while let Some(last) = to.pop() {
        if last < u8::MAX {
            to.push(last + 1);
            break;
        }
    }
    (from, to)
}

/// A joined row's output key: the left row's key (a JSON object of its primary key's columns)
/// with the join key added as `_join`, so a left row under two join keys is two rows, and a
/// PostgreSQL sink finds the left key's columns in a tombstone. A left key that is not a
/// JSON object goes in as `_key` (text).
fn output_key(join_key: &[u8], row_key: &[u8]) -> Bytes {
    let mut k = Vec::with_capacity(join_key.len() + row_key.len() + 16);
    match row_key {
        [b'{', inner @ .., b'}'] => {
            k.push(b'{');
            k.extend_from_slice(inner);
            if inner.iter().any(|b| !b.is_ascii_whitespace()) {
                k.push(b',');
            }
        }
        other => {
            k.extend_from_slice(b"{\"_key\":");
            let text = serde_json::Value::String(String::from_utf8_lossy(other).into_owned());
            k.extend_from_slice(text.to_string().as_bytes());
            k.push(b',');
        }
    }
    k.extend_from_slice(b"\"_join\":");
    k.extend_from_slice(join_key);
    k.push(b'}');
    Bytes::from(k)
}

/// Left rows (repartitioned, signed): into the index, and joined with the right table.
pub(crate) fn left_rows(
    ctx: &mut TaskContext<'_>,
    lookup: &Lookup,
    codec: &RowCodec,
) -> Result<JoinedChanges> {
    let input = ctx.input();
    let n = input.len();
    let mut ops = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    let mut entries = Vec::with_capacity(n);
    for r in input {
        let join_key = r
            .key
            .clone()
            .unwrap_or_else(|| Bytes::from_static(NULL_JOIN_KEY));
        let header = |name: &str| r.headers.iter().find(|h| h.key == name);
        let row_key = header(ROW_KEY_HEADER)
            .and_then(|h| h.value.clone())
            .ok_or_else(|| SqlError::Execution("a join's left row without its row key".into()))?;
        let retract = header(RETRACT_HEADER).is_some();
        ops.push(if retract { OP_DELETE } else { OP_INSERT });
        keys.push(output_key(&join_key, &row_key));
        times.push(r.timestamp.0);
        entries.push((index_key(&join_key, &row_key), retract, r.value.clone()));
    }
    let batch = codec.decode(input.iter().map(|r| r.value.as_deref().unwrap_or_default()))?;
    let index = ctx.store(LEFT_INDEX_STORE).map_err(engine)?;
    for (key, retract, value) in entries {
        match (retract, value) {
            (false, Some(v)) => index.put(key, v),
            _ => index.delete(key),
        }
    }
    let (joined, matched) = lookup.join(ctx, &batch)?;
    Ok(JoinedChanges {
        batch: joined,
        source: matched.values().to_vec(),
        ops: StringArray::from(ops),
        keys,
        times,
        origin: (0..n as u32).collect(),
    })
}

/// One joined row a right change makes.
struct Pending {
    left: Bytes,
    right: Option<u32>,
    op: &'static str,
    key: Bytes,
    time: i64,
    input: u32,
}

/// The right table's records: into its store; for each change, the joined rows of its key's
/// left rows are retracted (as joined with the old row) and added (with the new one).
pub(crate) fn right_changes(
    ctx: &mut TaskContext<'_>,
    lookup: &Lookup,
    codec: &RowCodec,
) -> Result<JoinedChanges> {
    let applied = table_state::apply_batch(
        ctx,
        table_state::TABLE_STORE_NAME,
        &lookup.changes,
        &lookup.decoder,
        true,
    )?;
    if applied.replays > 0 {
        ctx.record_dropped(LOOKUP_OPERATOR, applied.replays);
    }
    let olds: Vec<LogRecord> = applied
        .changes
        .iter()
        .filter_map(|a| {
            Some(LogRecord {
                key: Some(a.key.clone()),
                value: a.old.clone()?,
                timestamp: 0,
                partition: 0,
                offset: a.input as i64,
            })
        })
        .collect();
    let (old_rows, bad) = lookup.decoder.decode(&olds);
    if let Some(b) = bad.first() {
        return Err(SqlError::Execution(format!(
            "a stored row of table `{}` does not decode: {}",
            lookup.table.name, b.reason
        )));
    }
    let n_old = old_rows.num_rows() as u32;
    let times: Vec<i64> = ctx.input().iter().map(|r| r.timestamp.0).collect();
    let index = ctx.store(LEFT_INDEX_STORE).map_err(engine)?;
    let mut pending = Vec::new();
    let mut next_old = 0u32;
    for a in &applied.changes {
        let old = a.old.as_ref().map(|_| {
            next_old += 1;
            next_old - 1
        });
        let new = a.new.map(|i| n_old + i as u32);
        let (from, to) = index_range(&a.key);
        let prefix = from.len();
        for entry in index.range(&from, &to).map_err(engine)? {
            let (key, left) = entry.map_err(engine)?;
            let key = output_key(&a.key, &key[prefix..]);
            let mut push = |right: Option<u32>, op: &'static str| {
                pending.push(Pending {
                    left: left.clone(),
                    right,
                    op,
                    key: key.clone(),
                    time: times[a.input],
                    input: a.input as u32,
                })
            };
            if old.is_some() || lookup.left_join {
                push(old, OP_DELETE);
            }
            if new.is_some() || lookup.left_join {
                push(new, OP_INSERT);
            }
        }
    }
    let right =
        concat_batches(lookup.decoder.schema(), [&old_rows, &applied.rows]).map_err(arrow)?;
    let left = codec.decode(pending.iter().map(|p| p.left.as_ref()))?;
    let n = pending.len() as u32;
    let rows: UInt32Array = pending.iter().map(|p| p.right).collect();
    let batch = lookup.assemble(&left, &UInt32Array::from_iter_values(0..n), &right, &rows)?;
    Ok(JoinedChanges {
        batch,
        source: (0..n).collect(),
        ops: pending.iter().map(|p| Some(p.op)).collect(),
        keys: pending.iter().map(|p| p.key.clone()).collect(),
        times: pending.iter().map(|p| p.time).collect(),
        origin: pending.iter().map(|p| p.input).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_keys_index_range_holds_its_rows_and_no_other_keys() {
        let (from, to) = index_range(br#"{"id":1}"#);
        let inside = index_key(br#"{"id":1}"#, br#"{"o":7}"#);
        let longer_key = index_key(br#"{"id":12}"#, br#"{"o":7}"#);
        assert!(from <= inside && inside < to);
        // Lengths come first: a join key that extends another is not in its range.
        assert!(!(from <= longer_key && longer_key < to));
        assert_eq!(
            output_key(b"null", br#"{"o":7}"#).as_ref(),
            br#"{"o":7,"_join":null}"#
        );
        assert_eq!(
            output_key(br#"{"id":1}"#, b"k1").as_ref(),
            br#"{"_key":"k1","_join":{"id":1}}"#
        );
    }
}
