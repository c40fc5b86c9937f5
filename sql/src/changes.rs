//! A table's records read as changes: which key, and what happens to it — its row becomes
//! a new one (upsert), it goes (delete), or every row of the partition goes (truncate).
//!
//! - `json`, `csv`, `raw`: the record key is the key; a value is the key's row, an empty
//!   value (a tombstone) deletes it.
//! - `debezium_json`: each value is a Debezium change event ([`weir_engine::changes`]). `c`,
//!   `r` and `u` upsert `after`; `d` deletes the key of `before`; `t` truncates; a tombstone
//!   deletes its record key's row. Keys are made from the primary-key columns of the row
//!   (or of the tombstone's key), encoded as every Weir key is — a JSON object of the primary
//!   key's columns, as Arrow's JSON writer writes them — so a stream row looks its table row
//!   up whatever the change's shape. Each change carries its source position, so a replay
//!   (older than the position applied for its key) can be ignored.
//!
//! Invariant: every record comes out as one change or one bad record with its reason;
//! nothing is dropped unsaid.

use bytes::Bytes;
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use serde_json::{Map, Value};
use weir_engine::changes::{ChangeEvent, ChangeOp, SourcePosition};

use crate::catalog::Relation;
use crate::error::{Result, SqlError};
use crate::format::{encode_rows, BadRecord, Format, LogRecord, RowDecoder};

/// What a record does to its table.
#[derive(Debug, Clone)]
pub(crate) enum TableOp {
    /// The key's row is now this record's (read by [`TableChanges::row_decoder`]).
    Upsert(LogRecord),
    /// The key has no row.
    Delete,
    /// No row of the partition is left.
    Truncate,
}

/// One record as a change of its table.
#[derive(Debug, Clone)]
pub(crate) struct TableChange {
    /// The key (empty for a truncate).
    pub(crate) key: Bytes,
    pub(crate) op: TableOp,
    /// Where the change happened in its source, when the record says.
    pub(crate) position: Option<SourcePosition>,
    /// The record's offset.
    pub(crate) offset: i64,
}

/// Reads one table's records as changes.
#[derive(Debug, Clone)]
pub(crate) struct TableChanges {
    /// Change events (else records are rows keyed by their record key).
    debezium: bool,
    /// The stored columns, to decode the rows that keys are made from.
    stored: SchemaRef,
    /// The primary key's columns in `stored`.
    key_columns: Vec<usize>,
    /// Reads an upsert's row.
    rows: RowDecoder,
}

impl TableChanges {
    /// For a table (or a view read as one).
    pub(crate) fn new(rel: &Relation) -> Result<TableChanges> {
        let stored = rel.stored_schema()?;
        let debezium = rel.format == Format::DebeziumJson;
        let key_columns = match debezium {
            true => rel
                .primary_key
                .iter()
                .map(|k| {
                    stored.index_of(k).map_err(|_| {
                        SqlError::Execution(format!(
                            "primary-key column `{k}` of `{}` is not stored",
                            rel.name
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            false => Vec::new(),
        };
        let rows = match debezium {
            true => RowDecoder::new(Format::Json, stored.clone()),
            false => RowDecoder::new(rel.format, stored.clone()),
        };
        Ok(TableChanges {
            debezium,
            stored,
            key_columns,
            rows,
        })
    }

    /// Whether its changes carry source positions (change events do).
    pub(crate) fn positioned(&self) -> bool {
        self.debezium
    }

    /// Decodes the records of upserts.
    pub(crate) fn row_decoder(&self) -> &RowDecoder {
        &self.rows
    }

    /// The records as changes, in order, and the records that are none.
    pub(crate) fn read(&self, records: &[LogRecord]) -> (Vec<TableChange>, Vec<BadRecord>) {
        match self.debezium {
            true => self.read_events(records),
            false => read_rows(records),
        }
    }

    fn read_events(&self, records: &[LogRecord]) -> (Vec<TableChange>, Vec<BadRecord>) {
        let mut bad = Vec::new();
        let mut pending: Vec<Pending<'_>> = Vec::with_capacity(records.len());
        for r in records {
            let fail = |reason: String| BadRecord {
                partition: r.partition,
                offset: r.offset,
                reason,
            };
            match ChangeEvent::parse(&r.value) {
                Err(e) => bad.push(fail(e.to_string())),
                Ok(None) => match r.key.as_deref().map(key_object) {
                    Some(Ok(key)) => {
                        pending.push(Pending::new(r, TableOp::Delete, None, Some(key)))
                    }
                    Some(Err(e)) => bad.push(fail(format!("a tombstone's key: {e}"))),
                    None => bad.push(fail("a tombstone without a key".into())),
                },
                Ok(Some(e)) => {
                    let position = e.position;
                    match (e.op, e.after, e.before) {
                        (ChangeOp::Truncate, _, _) => {
                            pending.push(Pending::new(r, TableOp::Truncate, position, None))
                        }
                        (ChangeOp::Delete, _, Some(before)) => {
                            pending.push(Pending::new(r, TableOp::Delete, position, Some(before)))
                        }
                        (_, Some(after), _) => {
                            let value = match serde_json::to_vec(&after) {
                                Ok(v) => Bytes::from(v),
                                Err(e) => {
                                    bad.push(fail(format!("the row: {e}")));
                                    continue;
                                }
                            };
                            let row = LogRecord { value, ..r.clone() };
                            pending.push(Pending::new(
                                r,
                                TableOp::Upsert(row),
                                position,
                                Some(after),
                            ));
                        }
                        // `parse` guarantees a row for every other op.
                        (op, _, _) => bad.push(fail(format!("op `{}` without its row", op.code()))),
                    }
                }
            }
        }
        let key_rows: Vec<&Map<String, Value>> =
            pending.iter().filter_map(|p| p.key_row.as_ref()).collect();
        let mut keys = self.keys_of(&key_rows).into_iter();
        let mut out = Vec::with_capacity(pending.len());
        for Pending {
            record: r,
            mut change,
            key_row,
        } in pending
        {
            if key_row.is_some() {
                match keys.next() {
                    Some(Ok(key)) => change.key = key,
                    Some(Err(reason)) => {
                        bad.push(BadRecord {
                            partition: r.partition,
                            offset: r.offset,
                            reason,
                        });
                        continue;
                    }
                    None => continue,
                }
                if let TableOp::Upsert(record) = &mut change.op {
                    record.key = Some(change.key.clone());
                }
            }
            out.push(change);
        }
        (out, bad)
    }

    /// The keys of rows: their primary-key columns, decoded as the table's types and encoded
    /// as Weir encodes keys. One decoder pass, or row by row when one does not fit, so each
    /// bad row gets its own reason.
    fn keys_of(&self, rows: &[&Map<String, Value>]) -> Vec<std::result::Result<Bytes, String>> {
        if let Ok(keys) = self.encode_keys(rows) {
            return keys;
        }
        rows.iter()
            .map(|r| {
                self.encode_keys(std::slice::from_ref(r))
                    .and_then(|mut k| k.pop().unwrap_or_else(|| Err("no key".into())))
            })
            .collect()
    }

    fn encode_keys(
        &self,
        rows: &[&Map<String, Value>],
    ) -> std::result::Result<Vec<std::result::Result<Bytes, String>>, String> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut decoder = datafusion::arrow::json::ReaderBuilder::new(self.stored.clone())
            .with_batch_size(rows.len())
            .build_decoder()
            .map_err(|e| e.to_string())?;
        decoder
            .serialize(rows)
            .map_err(|e| format!("the row does not fit the table's columns: {e}"))?;
        let batch = decoder
            .flush()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "no row".to_string())?;
        let keys: RecordBatch = batch
            .project(&self.key_columns)
            .map_err(|e| e.to_string())?;
        let encoded = encode_rows(Format::Json, &keys).map_err(|e| e.to_string())?;
        Ok(encoded
            .into_iter()
            .enumerate()
            .map(
                |(i, key)| match keys.columns().iter().position(|c| c.is_null(i)) {
                    Some(c) => Err(format!(
                        "primary-key column `{}` is missing or NULL",
                        keys.schema().field(c).name()
                    )),
                    None => Ok(key),
                },
            )
            .collect())
    }
}

/// A record's change whose key is still to be made from `key_row`.
struct Pending<'a> {
    record: &'a LogRecord,
    change: TableChange,
    key_row: Option<Map<String, Value>>,
}

impl<'a> Pending<'a> {
    fn new(
        record: &'a LogRecord,
        op: TableOp,
        position: Option<SourcePosition>,
        key_row: Option<Map<String, Value>>,
    ) -> Pending<'a> {
        Pending {
            record,
            change: TableChange {
                key: Bytes::new(),
                op,
                position,
                offset: record.offset,
            },
            key_row,
        }
    }
}

/// A tombstone's record key as an object: Debezium's key (the primary key's columns), bare
/// or inside Kafka Connect's schema wrapper.
fn key_object(key: &[u8]) -> std::result::Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(key).map_err(|e| e.to_string())? {
        Value::Object(mut o) => match (o.contains_key("schema"), o.remove("payload")) {
            (true, Some(Value::Object(p))) => Ok(p),
            (_, Some(other)) => {
                o.insert("payload".into(), other);
                Ok(o)
            }
            (_, None) => Ok(o),
        },
        _ => Err("not a JSON object".into()),
    }
}

/// Rows keyed by their record key: a value upserts, a tombstone deletes.
fn read_rows(records: &[LogRecord]) -> (Vec<TableChange>, Vec<BadRecord>) {
    let mut out = Vec::with_capacity(records.len());
    let mut bad = Vec::new();
    for r in records {
        let Some(key) = r.key.clone() else {
            bad.push(BadRecord {
                partition: r.partition,
                offset: r.offset,
                reason: "a table's records need a key".into(),
            });
            continue;
        };
        let op = match r.value.is_empty() {
            true => TableOp::Delete,
            false => TableOp::Upsert(r.clone()),
        };
        out.push(TableChange {
            key,
            op,
            position: None,
            offset: r.offset,
        });
    }
    (out, bad)
}

/// Applies changes in order to a map of the latest row per key, ignoring replays (a change
/// older than the position applied for its key); returns how many were ignored. Truncate
/// empties it.
pub(crate) fn apply<R>(
    latest: &mut std::collections::HashMap<Bytes, (Option<R>, Option<SourcePosition>)>,
    changes: Vec<TableChange>,
    row: impl Fn(LogRecord) -> R,
) -> u64 {
    let mut replays = 0;
    for c in changes {
        if let TableOp::Truncate = c.op {
            latest.clear();
            continue;
        }
        let applied = latest.get(&c.key).and_then(|(_, p)| *p);
        if let (Some(at), Some(applied)) = (c.position, applied) {
            if at < applied {
                replays += 1;
                continue;
            }
        }
        let value = match c.op {
            TableOp::Upsert(r) => Some(row(r)),
            _ => None,
        };
        match (&value, c.position) {
            // Nothing to remember for a deleted key without a position.
            (None, None) => {
                latest.remove(&c.key);
            }
            _ => {
                latest.insert(c.key, (value, c.position));
            }
        }
    }
    replays
}
