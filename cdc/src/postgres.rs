//! [`PgSource`]: PostgreSQL's changes into Debezium change events on the log, exactly once.
//!
//! The published tables (a publication names them; it is created `FOR ALL TABLES` when
//! absent) are read first as a snapshot (op `r`), then changes stream from a logical
//! replication slot (created when absent) through the wal2json plugin, peeked with
//! `pg_logical_slot_peek_changes`. Each table's events go to the topic
//! `PREFIX.schema.table`, keyed by a JSON object of the primary key, as Debezium's
//! PostgreSQL connector writes them.
//!
//! Exactly once: a batch of whole transactions is written in one log transaction with the
//! source's [`Progress`] (the end LSN of its last transaction); only then is the slot advanced
//! (`pg_replication_slot_advance`). A crash before the commit writes nothing and the slot
//! still holds the changes; a crash after it leaves transactions the slot returns again,
//! which the recorded LSN skips. The snapshot meets the stream by visibility
//! ([`crate::snapshot`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio_postgres::Client;
use weir_coord::{TransactionCoordinator, TransactionalProducer};
use weir_log::{Log, PartitionId, Record};

use crate::error::{CdcError, Result};
use crate::lsn::Lsn;
use crate::pg::ident;
use crate::progress::{Progress, CDC_STATE_TOPIC};
use crate::snapshot::Snapshot;
use crate::wal2json::{transactions, RowChange, RowOp, Transaction, WAL2JSON_OPTIONS};

/// Changes peeked at most per round (whole transactions: a larger one comes whole).
pub const PEEK_CHANGES_MAX: i32 = 10_000;

/// How long the log transaction of a round may stay open before the coordinator aborts it.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// The connector name in events' `source`.
const CONNECTOR: &str = "postgresql";

/// A source's settings.
#[derive(Debug, Clone)]
pub struct PgSourceConfig {
    /// The source's name: its progress and transactional id.
    pub name: String,
    /// `postgres://user@host:port/db`.
    pub url: String,
    /// The publication naming the tables.
    pub publication: String,
    /// The logical replication slot.
    pub slot: String,
    /// Topics are `PREFIX.schema.table`.
    pub topic_prefix: String,
    /// Partitions of the topics it creates.
    pub partitions: u32,
    /// How long to wait when the slot has nothing new.
    pub poll: Duration,
}

/// A published table.
#[derive(Debug, Clone)]
struct Table {
    schema: String,
    name: String,
    primary_key: Vec<String>,
}

/// A running connection from PostgreSQL to the log.
pub struct PgSource {
    config: PgSourceConfig,
    log: Log,
    runtime: tokio::runtime::Runtime,
    client: Client,
    producer: TransactionalProducer,
    progress: Progress,
    tables: Vec<Table>,
    database: String,
}

impl std::fmt::Debug for PgSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSource")
            .field("config", &self.config)
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

impl PgSource {
    /// Connects, makes the publication, the slot and the topics when absent, and loads the
    /// committed progress.
    pub fn connect(
        log: &Log,
        txns: &TransactionCoordinator,
        config: PgSourceConfig,
    ) -> Result<PgSource> {
        let (runtime, client) = crate::pg::connect(&config.url)?;
        let progress = Progress::load(log, &config.name)?;
        let producer =
            TransactionalProducer::new(txns, &format!("cdc-{}", config.name), TRANSACTION_TIMEOUT)?;
        let mut source = PgSource {
            config,
            log: log.clone(),
            runtime,
            client,
            producer,
            progress,
            tables: Vec::new(),
            database: String::new(),
        };
        source.prepare()?;
        Ok(source)
    }

    /// The committed progress.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Runs rounds until `stop` is set; an error ends it (the runner decides to retry).
    pub fn run(&mut self, stop: &AtomicBool) -> Result<()> {
        while !stop.load(Ordering::SeqCst) {
            if self.round()? == 0 {
                std::thread::sleep(self.config.poll);
            }
        }
        Ok(())
    }

    /// One round: the snapshot if it is not written yet, else the slot's next transactions.
    /// Returns the transactions (or snapshot rows) handled.
    pub fn round(&mut self) -> Result<usize> {
        match self.progress.snapshot.is_some() {
            false => self.snapshot(),
            true => self.stream(),
        }
    }

    fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        Ok(self.runtime.block_on(self.client.query(sql, params))?)
    }

    /// The publication, its tables and their keys, the slot, the topics.
    fn prepare(&mut self) -> Result<()> {
        let c = &self.config;
        self.database = self.query("SELECT current_database()", &[])?[0].get(0);
        let exists = !self
            .query(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[&c.publication],
            )?
            .is_empty();
        if !exists {
            let sql = format!(
                "CREATE PUBLICATION {} FOR ALL TABLES",
                ident(&c.publication)
            );
            self.runtime.block_on(self.client.batch_execute(&sql))?;
        }
        let rows = self.query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables \
             WHERE pubname = $1 ORDER BY 1, 2",
            &[&c.publication],
        )?;
        let mut tables = Vec::new();
        for r in rows {
            let (schema, name): (String, String) = (r.get(0), r.get(1));
            let primary_key = self.primary_key(&schema, &name)?;
            if primary_key.is_empty() {
                return Err(CdcError::Config(format!(
                    "table {schema}.{name} has no primary key: its events could not be keyed"
                )));
            }
            tables.push(Table {
                schema,
                name,
                primary_key,
            });
        }
        if tables.is_empty() {
            return Err(CdcError::Config(format!(
                "publication `{}` has no tables",
                c.publication
            )));
        }
        self.tables = tables;
        let slot = self.query(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&self.config.slot],
        )?;
        match (slot.first(), self.progress.snapshot.is_some()) {
            (Some(_), _) => {}
            (None, true) => {
                return Err(CdcError::Config(format!(
                    "replication slot `{}` is gone: the changes after LSN {} are lost to it; \
                     reset the source to take a new snapshot",
                    self.config.slot,
                    self.progress.lsn()
                )))
            }
            (None, false) => {
                self.query(
                    "SELECT pg_create_logical_replication_slot($1, 'wal2json')",
                    &[&self.config.slot],
                )?;
            }
        }
        for t in &self.tables {
            let topic = self.topic(t);
            if self.log.partition_count(&topic).is_err() {
                match self
                    .log
                    .create_topic(&topic, self.config.partitions, BTreeMap::new())
                {
                    Ok(()) | Err(weir_log::LogError::TopicExists(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    fn primary_key(&self, schema: &str, table: &str) -> Result<Vec<String>> {
        let rows = self.query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass \
               AND i.indisprimary \
             ORDER BY array_position(i.indkey::int2[], a.attnum)",
            &[&schema, &table],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn topic(&self, t: &Table) -> String {
        format!("{}.{}.{}", self.config.topic_prefix, t.schema, t.name)
    }

    /// Reads every published table in one repeatable-read transaction and writes its rows
    /// (op `r`) with the snapshot's visibility in one log transaction.
    fn snapshot(&mut self) -> Result<usize> {
        let start: String = self.query(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&self.config.slot],
        )?[0]
            .get(0);
        let start = Lsn::parse(&start)
            .ok_or_else(|| CdcError::Source(format!("the slot's LSN `{start}` does not parse")))?;
        self.runtime.block_on(
            self.client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
        )?;
        let read = self.read_tables();
        self.runtime.block_on(self.client.batch_execute("COMMIT"))?;
        let (snapshot, rows) = read?;
        let mut events = Vec::new();
        let last = rows.len().saturating_sub(1);
        for (i, (t, row)) in rows.into_iter().enumerate() {
            let change = RowChange {
                op: RowOp::Insert,
                schema: self.tables[t].schema.clone(),
                table: self.tables[t].name.clone(),
                lsn: start,
                columns: row,
                identity: Map::new(),
                primary_key: self.tables[t].primary_key.clone(),
            };
            let marker = if i == last { "last" } else { "true" };
            events.push(self.event(&change, None, Some(marker)));
        }
        let n = events.len();
        let mut progress = self.progress.clone();
        progress.snapshot = Some(snapshot);
        progress.start = start.0;
        progress.events += n as u64;
        self.commit(events, progress)?;
        tracing::info!(source = %self.config.name, rows = n, "snapshot written");
        Ok(n.max(1))
    }

    /// The snapshot's visibility and every published row, inside the open transaction.
    #[allow(clippy::type_complexity)]
    fn read_tables(&self) -> Result<(Snapshot, Vec<(usize, Map<String, Value>)>)> {
        let text: String = self.query("SELECT pg_current_snapshot()::text", &[])?[0].get(0);
        let mut snapshot = Snapshot::parse(&text)
            .ok_or_else(|| CdcError::Source(format!("snapshot `{text}` does not parse")))?;
        let wal: String = self.query("SELECT pg_current_wal_insert_lsn()::text", &[])?[0].get(0);
        snapshot.wal_end = Lsn::parse(&wal)
            .ok_or_else(|| CdcError::Source(format!("the WAL position `{wal}` does not parse")))?
            .0;
        let mut rows = Vec::new();
        for (i, t) in self.tables.iter().enumerate() {
            let sql = format!(
                "SELECT row_to_json(t)::text FROM {}.{} t",
                ident(&t.schema),
                ident(&t.name)
            );
            for r in self.query(&sql, &[])? {
                let json: String = r.get(0);
                match serde_json::from_str(&json) {
                    Ok(Value::Object(row)) => rows.push((i, row)),
                    _ => {
                        return Err(CdcError::Source(format!(
                            "a row of {}.{} is not a JSON object",
                            t.schema, t.name
                        )))
                    }
                }
            }
        }
        Ok((snapshot, rows))
    }

    /// Peeks the slot's next transactions, writes those the log lacks and the snapshot does
    /// not see, then advances the slot.
    fn stream(&mut self) -> Result<usize> {
        let tables: Vec<String> = self
            .tables
            .iter()
            .map(|t| format!("{}.{}", escape_table(&t.schema), escape_table(&t.name)))
            .collect();
        let mut sql = String::from(
            "SELECT lsn::text, xid::text, data FROM pg_logical_slot_peek_changes($1, NULL, $2",
        );
        for (k, v) in WAL2JSON_OPTIONS {
            sql.push_str(&format!(", '{k}', '{v}'"));
        }
        sql.push_str(", 'add-tables', $3)");
        let rows = self.query(
            &sql,
            &[&self.config.slot, &PEEK_CHANGES_MAX, &tables.join(",")],
        )?;
        let rows: Vec<(String, String, String)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let txns = transactions(&rows)?;
        let Some(end) = txns.last().map(|t| t.end) else {
            return Ok(0);
        };
        let mut progress = self.progress.clone();
        let mut events = Vec::new();
        for t in &txns {
            if t.end <= self.progress.lsn() {
                continue; // in the log already: the slot was not advanced before a crash
            }
            progress.transactions += 1;
            if self
                .progress
                .snapshot
                .as_ref()
                .is_some_and(|s| s.holds(t.xid, t.end.0))
            {
                continue; // its effects are in the snapshot
            }
            events.extend(self.events_of(t));
        }
        progress.events += events.len() as u64;
        progress.lsn = progress.lsn.max(end.0);
        if progress != self.progress {
            self.commit(events, progress)?;
        }
        self.query(
            "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
            &[&self.config.slot, &end.to_string()],
        )?;
        Ok(txns.len())
    }

    fn events_of(&self, t: &Transaction) -> Vec<(String, Option<Vec<u8>>, Vec<u8>)> {
        t.changes
            .iter()
            .map(|c| self.event(c, Some(t.xid), None))
            .collect()
    }

    /// A change as (topic, key, Debezium envelope); a truncate has no key.
    fn event(
        &self,
        c: &RowChange,
        xid: Option<u32>,
        snapshot: Option<&str>,
    ) -> (String, Option<Vec<u8>>, Vec<u8>) {
        let topic = format!("{}.{}.{}", self.config.topic_prefix, c.schema, c.table);
        let (op, before, after) = match (c.op, snapshot) {
            (RowOp::Insert, Some(_)) => ("r", Value::Null, Value::Object(c.columns.clone())),
            (RowOp::Insert, None) => ("c", Value::Null, Value::Object(c.columns.clone())),
            (RowOp::Update, _) => (
                "u",
                Value::Object(c.identity.clone()),
                Value::Object(c.columns.clone()),
            ),
            (RowOp::Delete, _) => ("d", Value::Object(c.identity.clone()), Value::Null),
            (RowOp::Truncate, _) => ("t", Value::Null, Value::Null),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let value = json!({
            "before": before,
            "after": after,
            "source": {
                "connector": CONNECTOR,
                "name": self.config.topic_prefix,
                "db": self.database,
                "schema": c.schema,
                "table": c.table,
                "txId": xid,
                "lsn": c.lsn.0,
                "snapshot": snapshot.unwrap_or("false"),
                "ts_ms": now,
            },
            "op": op,
            "ts_ms": now,
        });
        let key_row = match c.op {
            RowOp::Insert | RowOp::Update => Some(&c.columns),
            RowOp::Delete => Some(&c.identity),
            RowOp::Truncate => None,
        };
        let key = key_row.map(|row| {
            let mut key = String::from("{");
            for (i, k) in c.primary_key.iter().enumerate() {
                if i > 0 {
                    key.push(',');
                }
                key.push_str(&Value::from(k.as_str()).to_string());
                key.push(':');
                key.push_str(&row.get(k).cloned().unwrap_or(Value::Null).to_string());
            }
            key.push('}');
            key.into_bytes()
        });
        (topic, key, value.to_string().into_bytes())
    }

    /// Writes events and the progress in one log transaction.
    fn commit(
        &mut self,
        events: Vec<(String, Option<Vec<u8>>, Vec<u8>)>,
        progress: Progress,
    ) -> Result<()> {
        let mut by_partition: BTreeMap<(String, u32), Vec<Record>> = BTreeMap::new();
        for (topic, key, value) in events {
            match key {
                Some(key) => {
                    let p = self.log.partition_for(&topic, &key)?;
                    by_partition
                        .entry((topic, p.0))
                        .or_default()
                        .push(Record::keyed(key, value));
                }
                // A truncate concerns every partition of its table.
                None => {
                    for p in 0..self.log.partition_count(&topic)? {
                        by_partition
                            .entry((topic.clone(), p))
                            .or_default()
                            .push(Record::value(value.clone()));
                    }
                }
            }
        }
        self.producer.begin()?;
        let written = (|| {
            for ((topic, p), records) in &by_partition {
                for chunk in chunks(records, SEND_BATCH_BYTES) {
                    self.producer.send_to(topic, PartitionId(*p), chunk)?;
                }
            }
            let state = progress.record(&self.config.name)?;
            self.producer.send_to(
                CDC_STATE_TOPIC,
                PartitionId(0),
                std::slice::from_ref(&state),
            )?;
            Ok::<(), CdcError>(())
        })();
        match written {
            Ok(()) => self.producer.commit()?,
            Err(e) => {
                let _ = self.producer.abort();
                return Err(e);
            }
        }
        self.progress = progress;
        Ok(())
    }
}

/// Bytes of records sent as one record batch: half a topic's default `max.message.bytes`
/// (1 MiB), so a batch with its framing stays under it; a round of many changes (up to
/// [`PEEK_CHANGES_MAX`]) goes as several batches of one log transaction.
const SEND_BATCH_BYTES: usize = 512 * 1024;

/// Bytes a record costs in a batch beyond its key and value (framing, headers, varints).
const RECORD_OVERHEAD_BYTES: usize = 32;

/// `records` in runs of at most `bytes` (a record larger than that alone).
fn chunks(records: &[Record], bytes: usize) -> Vec<&[Record]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, r) in records.iter().enumerate() {
        let n = r.key.as_ref().map_or(0, |k| k.len())
            + r.value.as_ref().map_or(0, |v| v.len())
            + RECORD_OVERHEAD_BYTES;
        if i > start && size + n > bytes {
            out.push(&records[start..i]);
            (start, size) = (i, 0);
        }
        size += n;
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
}

/// A schema or table name as wal2json's `add-tables` reads it (`,` `.` `*` and spaces escaped).
fn escape_table(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, ',' | '.' | '*' | ' ' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The first wait after PostgreSQL failed or could not be reached.
const RETRY_FIRST: Duration = Duration::from_millis(100);

/// The longest wait between attempts.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Runs a source until `stop` is set, reconnecting with backoff while PostgreSQL is down or
/// fails; an error that retrying cannot mend (configuration, the log) ends it.
pub fn run_until_stopped(
    log: &Log,
    txns: &TransactionCoordinator,
    config: &PgSourceConfig,
    stop: &AtomicBool,
) -> Result<Progress> {
    let mut wait = RETRY_FIRST;
    let mut progress = Progress::load(log, &config.name)?;
    while !stop.load(Ordering::SeqCst) {
        let attempt = PgSource::connect(log, txns, config.clone()).and_then(|mut source| {
            wait = RETRY_FIRST;
            let ran = source.run(stop);
            progress = source.progress().clone();
            ran
        });
        match attempt {
            Ok(()) => break,
            Err(CdcError::Source(e)) => {
                tracing::warn!(source = %config.name, error = %e, retry_in = ?wait, "PostgreSQL failed; retrying");
                let until = std::time::Instant::now() + wait;
                while std::time::Instant::now() < until && !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                wait = (wait * 2).min(RETRY_MAX);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_go_in_runs_under_the_batch_size() {
        let records: Vec<Record> = (0..10)
            .map(|i| Record::keyed(vec![b'k'], vec![b'v'; 100 + i]))
            .collect();
        let runs = chunks(&records, 300);
        assert!(runs.iter().all(|r| r.len() <= 2));
        assert_eq!(runs.iter().map(|r| r.len()).sum::<usize>(), 10);
        assert_eq!(chunks(&records, 1).len(), 10);
        assert!(chunks(&[], 300).is_empty());
    }
}
