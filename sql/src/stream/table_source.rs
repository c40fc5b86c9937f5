//! A continuous query over a table (or a view): the table's records are read as changes
//! against the task's copy of its rows ([`super::table_state`]), and each change becomes
//! signed rows — the row it replaced, retracted, then its new row, added — so an aggregate
//! over the table takes an update's old row out before it counts the new one, and a delete
//! takes its row out.
//!
//! Invariants: the signed rows keep the changes' order (a change's retraction comes right
//! before its addition), so a consumer that stops between two rows has seen whole changes
//! but for the last; a retracted row is exactly the row that was added for its key before.

use bytes::Bytes;
use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use weir_engine::TaskContext;

use super::table_state;
use crate::changes::TableChanges;
use crate::error::{Result, SqlError};
use crate::format::{LogRecord, RowDecoder};

/// The operator id whose counters count a table source's replays (the query's first).
const SOURCE_OPERATOR: usize = 0;

/// A batch of a table's changes as signed rows.
pub(crate) struct SignedRows {
    /// The rows, decoded as the table's (stored columns, then metadata).
    pub(crate) batch: RecordBatch,
    /// For each row, the input record it came from.
    pub(crate) origin: Vec<u32>,
    pub(crate) signs: Signs,
}

/// Per signed row: whether it is taken out, and which row of the table it is.
pub(crate) struct Signs {
    /// Whether the row is taken out (the row a change replaced or deleted).
    pub(crate) retract: Vec<bool>,
    /// The key of the table's row it is.
    pub(crate) keys: Vec<Bytes>,
}

fn arrow(e: datafusion::arrow::error::ArrowError) -> SqlError {
    SqlError::Execution(e.to_string())
}

/// Applies the task's batch of the table's records to its copy of the table and returns the
/// signed rows they make.
pub(crate) fn read(
    ctx: &mut TaskContext<'_>,
    table: &str,
    changes: &TableChanges,
    decoder: &RowDecoder,
) -> Result<SignedRows> {
    let applied =
        table_state::apply_batch(ctx, table_state::SOURCE_STORE_NAME, changes, decoder, true)?;
    if applied.replays > 0 {
        ctx.record_dropped(SOURCE_OPERATOR, applied.replays);
    }
    let input = ctx.input();
    let olds: Vec<LogRecord> = applied
        .changes
        .iter()
        .filter_map(|a| {
            let r = &input[a.input];
            Some(LogRecord {
                key: Some(a.key.clone()),
                value: a.old.clone()?,
                timestamp: r.timestamp.0,
                partition: r.partition as i32,
                offset: r.offset.0,
            })
        })
        .collect();
    let (old_rows, bad) = decoder.decode(&olds);
    if let Some(b) = bad.first() {
        return Err(SqlError::Execution(format!(
            "a stored row of `{table}` no longer decodes (offset {}): {}",
            b.offset, b.reason
        )));
    }
    let n_old = old_rows.num_rows() as u32;
    let mut indices = Vec::with_capacity(olds.len() + applied.rows.num_rows());
    let mut origin = Vec::with_capacity(indices.capacity());
    let mut retract = Vec::with_capacity(indices.capacity());
    let mut keys = Vec::with_capacity(indices.capacity());
    let mut next_old = 0u32;
    for a in &applied.changes {
        if a.old.is_some() {
            indices.push(next_old);
            origin.push(a.input as u32);
            retract.push(true);
            keys.push(a.key.clone());
            next_old += 1;
        }
        if let Some(row) = a.new {
            indices.push(n_old + row as u32);
            origin.push(a.input as u32);
            retract.push(false);
            keys.push(a.key.clone());
        }
    }
    let all = concat_batches(decoder.schema(), [&old_rows, &applied.rows]).map_err(arrow)?;
    let batch = take_record_batch(&all, &UInt32Array::from(indices)).map_err(arrow)?;
    Ok(SignedRows {
        batch,
        origin,
        signs: Signs { retract, keys },
    })
}
