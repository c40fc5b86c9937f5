//! `SUBSCRIBE TO name`: a relation's rows as they change, as change rows (`op` first, then the
//! relation's columns). A view or table first yields its current rows (`insert`), then every
//! committed change: `insert` for a key not seen before, `update_after` (the new row) for one
//! seen, `delete` (the key's columns, the rest NULL) for a tombstone. A stream yields the
//! records appended from now on, each an `insert`.
//!
//! A push query's subscription ([`crate::push`]) reads its transient sink's topic from the
//! start, each row with the `op` the query wrote.
//!
//! Reads are read_committed, so a subscriber never sees what a query's transaction aborted.
//! A subscription of a table or view holds its live keys (to tell inserts from updates),
//! never the rows.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use weir_engine::changes::SourcePosition;
use weir_log::{Isolation, Log, Offset, PartitionId};

use crate::catalog::Relation;
use crate::changes::{TableChange, TableChanges, TableOp};
use crate::error::{Result, SqlError};
use crate::format::{LogRecord, RowDecoder, META_COLUMNS};
use crate::parser::RelationKind;
use crate::push::TransientQuery;
use crate::session::Session;
use crate::stream::{OP_DELETE, OP_INSERT, OP_UPDATE_AFTER};

/// Bytes read per partition per poll.
const SUBSCRIBE_FETCH_BYTES: usize = 1 << 20;

/// Rows a subscription hands out at most per call.
pub const SUBSCRIBE_BATCH_ROWS: usize = 4096;

/// A running subscription.
#[derive(Debug)]
pub struct Subscription {
    log: Log,
    topic: String,
    changes: Changes,
    decoder: RowDecoder,
    /// `op` then the relation's columns.
    schema: SchemaRef,
    /// Next offset per partition.
    positions: Vec<Offset>,
    /// A push query's sink, dropped with the subscription.
    _query: Option<TransientQuery>,
}

/// How a record becomes a change row.
#[derive(Debug)]
enum Changes {
    /// A stream's records are inserts.
    Appends,
    /// A keyed relation's records are changes of its rows ([`crate::changes`]): the keys
    /// that have a row now tell inserts from updates; the source position applied per key
    /// (when changes carry one) tells replays, which are skipped.
    Upserts {
        table: Box<TableChanges>,
        keys: HashMap<Bytes, (bool, Option<SourcePosition>)>,
    },
    /// A push query's records carry their `op` (the column at this index of the decoded
    /// rows; NULL for an insert-only query's).
    Carried(usize),
}

impl Session {
    /// Subscribes to a stream, table or materialized view.
    pub fn subscribe(&mut self, name: &str) -> Result<Subscription> {
        self.catalog.refresh()?;
        let rel = self.relation(name, None)?.clone();
        if crate::push::is_transient(&rel) {
            return Err(SqlError::plan(
                format!("`{name}` is a push query's; subscribe to a relation"),
                None,
            ));
        }
        Subscription::open(&self.log, &rel)
    }
}

impl Subscription {
    /// A push query's subscription: its sink's records from the start, with their `op`.
    pub(crate) fn open_transient(
        log: &Log,
        rel: &Relation,
        query: TransientQuery,
    ) -> Result<Subscription> {
        let mut s = Subscription::open(log, rel)?;
        for (p, at) in s.positions.iter_mut().enumerate() {
            *at = log.earliest_offset(&rel.topic, PartitionId(p as u32))?;
        }
        let op = s.decoder.schema().index_of("op").map_err(|_| {
            SqlError::Execution(format!("push query `{}` has no `op` column", rel.name))
        })?;
        s.changes = Changes::Carried(op);
        let fields: Vec<Field> = s
            .schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(i, f)| *i == 0 || f.name() != "op")
            .map(|(_, f)| (**f).clone())
            .collect();
        s.schema = Arc::new(Schema::new(fields));
        s._query = Some(query);
        Ok(s)
    }

    fn open(log: &Log, rel: &Relation) -> Result<Subscription> {
        if rel.topic.is_empty() {
            return Err(SqlError::unsupported(
                format!("SUBSCRIBE to `{}`, a sink without a topic", rel.name),
                None,
            ));
        }
        if rel.datagen()?.is_some() {
            return Err(SqlError::unsupported(
                format!(
                    "SUBSCRIBE to `{}`, a datagen stream (it has no topic)",
                    rel.name
                ),
                None,
            ));
        }
        let keyed = rel.kind == RelationKind::Table || rel.options.contains_key("keyed");
        let table = match keyed {
            true => Some(TableChanges::new(rel)?),
            false => None,
        };
        let decoder = match &table {
            Some(t) => t.row_decoder().clone(),
            None => RowDecoder::new(rel.format, rel.stored_schema()?),
        };
        let mut fields = vec![Field::new("op", DataType::Utf8, false)];
        fields.extend(
            decoder
                .schema()
                .fields()
                .iter()
                .filter(|f| !META_COLUMNS.contains(&f.name().as_str()))
                .map(|f| (**f).clone()),
        );
        let partitions = log.partition_count(&rel.topic)?;
        let mut positions = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let p = PartitionId(p);
            positions.push(match keyed {
                // A table's or view's current rows first: from the start.
                true => log.earliest_offset(&rel.topic, p)?,
                false => log.last_stable_offset(&rel.topic, p)?,
            });
        }
        Ok(Subscription {
            log: log.clone(),
            topic: rel.topic.clone(),
            changes: match table {
                Some(table) => Changes::Upserts {
                    table: Box::new(table),
                    keys: HashMap::new(),
                },
                None => Changes::Appends,
            },
            decoder,
            schema: Arc::new(Schema::new(fields)),
            positions,
            _query: None,
        })
    }

    /// The columns of the rows: `op`, then the relation's.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The next changes, waiting up to `wait` for some; an empty batch when none came.
    pub fn next_batch(&mut self, wait: Duration) -> Result<RecordBatch> {
        let deadline = Instant::now() + wait;
        loop {
            let listener = self.log.listen(&self.topic)?;
            let records = self.poll()?;
            if !records.is_empty() {
                return self.rows(&records);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(RecordBatch::new_empty(self.schema.clone()));
            }
            listener.wait_timeout(deadline - now);
        }
    }

    /// Committed records past the positions, up to a batch.
    fn poll(&mut self) -> Result<Vec<LogRecord>> {
        let mut out = Vec::new();
        for (p, at) in self.positions.iter_mut().enumerate() {
            let partition = PartitionId(p as u32);
            let end = self.log.last_stable_offset(&self.topic, partition)?;
            if *at >= end {
                continue;
            }
            let fetch = self.log.read_isolated(
                &self.topic,
                partition,
                *at,
                SUBSCRIBE_FETCH_BYTES,
                Isolation::ReadCommitted,
            )?;
            for r in fetch.records() {
                let r = r.map_err(|e| SqlError::Log(e.into()))?;
                if r.offset >= end || out.len() >= SUBSCRIBE_BATCH_ROWS {
                    break;
                }
                *at = Offset(r.offset.0 + 1);
                out.push(LogRecord {
                    key: r.key.map(Bytes::copy_from_slice),
                    value: r.value.map(Bytes::copy_from_slice).unwrap_or_default(),
                    timestamp: r.timestamp.0,
                    partition: p as i32,
                    offset: r.offset.0,
                });
            }
            // Past what the fetch held (aborted or control records at its end).
            if out.len() < SUBSCRIBE_BATCH_ROWS {
                *at = (*at).max(fetch.next_offset().min(end));
            }
            if out.len() >= SUBSCRIBE_BATCH_ROWS {
                break;
            }
        }
        Ok(out)
    }

    /// Records as change rows.
    fn rows(&mut self, records: &[LogRecord]) -> Result<RecordBatch> {
        let (ops, rows): (Vec<&'static str>, Vec<LogRecord>) =
            self.changes.of(records).into_iter().unzip();
        let (batch, bad) = self.decoder.decode(&rows);
        // Rows that do not decode are skipped (a batch query over the relation reports them);
        // the good rows keep their order, so their ops are the others'.
        let bad: HashSet<(i32, i64)> = bad.iter().map(|b| (b.partition, b.offset)).collect();
        let carried;
        let mut ops: Vec<&str> = ops
            .into_iter()
            .zip(&rows)
            .filter(|(_, r)| !bad.contains(&(r.partition, r.offset)))
            .map(|(op, _)| op)
            .collect();
        if let Changes::Carried(c) = self.changes {
            carried = batch
                .column(c)
                .as_string_opt::<i32>()
                .cloned()
                .ok_or_else(|| {
                    SqlError::Execution("a push query's `op` column is not text".into())
                })?;
            for (i, op) in ops.iter_mut().enumerate() {
                if carried.is_valid(i) {
                    *op = carried.value(i);
                }
            }
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(ops))];
        for f in self.schema.fields().iter().skip(1) {
            let c = batch.column_by_name(f.name()).ok_or_else(|| {
                SqlError::Execution(format!("decoded rows lack column `{}`", f.name()))
            })?;
            columns.push(c.clone());
        }
        RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| SqlError::Execution(format!("subscription rows: {e}")))
    }
}

impl Changes {
    /// Records as change rows (`op`, the record whose value is the row); records that change
    /// nothing a subscriber sees, or that are no change (a batch query reports those), give
    /// none.
    fn of(&mut self, records: &[LogRecord]) -> Vec<(&'static str, LogRecord)> {
        match self {
            Changes::Appends | Changes::Carried(_) => records
                .iter()
                .filter(|r| !r.value.is_empty())
                .map(|r| (OP_INSERT, r.clone()))
                .collect(),
            Changes::Upserts { table, keys } => {
                let (changes, _bad) = table.read(records);
                let mut out = Vec::with_capacity(changes.len());
                for c in changes {
                    upsert_rows(keys, c, &mut out);
                }
                out
            }
        }
    }
}

/// A table change as change rows: an insert or `update_after` of the new row, a delete of
/// the key's columns (from the key, a JSON object of them), deletes of every live key for a
/// truncate; nothing for a replay.
fn upsert_rows(
    keys: &mut HashMap<Bytes, (bool, Option<SourcePosition>)>,
    c: TableChange,
    out: &mut Vec<(&'static str, LogRecord)>,
) {
    let deleted = |key: Bytes| LogRecord {
        key: Some(key.clone()),
        value: key,
        timestamp: 0,
        partition: 0,
        offset: c.offset,
    };
    if let TableOp::Truncate = c.op {
        for (k, (live, _)) in keys.iter_mut() {
            if std::mem::take(live) {
                out.push((OP_DELETE, deleted(k.clone())));
            }
        }
        return;
    }
    let (was_live, applied) = keys.get(&c.key).copied().unwrap_or((false, None));
    if let (Some(at), Some(applied)) = (c.position, applied) {
        if at < applied {
            return;
        }
    }
    match c.op {
        TableOp::Upsert(row) => {
            out.push((if was_live { OP_UPDATE_AFTER } else { OP_INSERT }, row));
            keys.insert(c.key, (true, c.position));
        }
        _ => {
            if was_live {
                out.push((OP_DELETE, deleted(c.key.clone())));
            }
            match c.position {
                Some(_) => {
                    keys.insert(c.key, (false, c.position));
                }
                None => {
                    keys.remove(&c.key);
                }
            }
        }
    }
}
