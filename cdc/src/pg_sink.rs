//! [`PgSink`]: a relation's rows and changes applied to a PostgreSQL table, exactly once.
//!
//! The sink reads its topic `read_committed` (a view's keyed rows and tombstones, keyed
//! change rows whose `op` says what happened — a sink's, or the DSL's `Table::to_table` —
//! or a stream's rows) and applies each batch in one PostgreSQL transaction: upserts
//! (`INSERT … ON CONFLICT (key) DO UPDATE`) and deletes, each one statement over a JSON array
//! of rows that PostgreSQL itself turns into the table's row type
//! (`json_populate_recordset`), together with the positions reached in the table
//! `weir_sink_offsets (sink, topic, partition, next_offset)`. A restart reads its positions
//! from there, so what PostgreSQL committed and where the sink resumes never disagree:
//! exactly once into PostgreSQL. Within a batch only the last change of a key is applied
//! (the same end state, fewer rows).
//!
//! The table is created when absent, typed from the relation's columns ([`pg_type`]). A
//! PostgreSQL that is down or refuses a batch is retried with backoff, reconnecting
//! ([`run_sink_until_stopped`]); after [`SINK_ATTEMPTS_MAX`] failures in a row the sink stops
//! with the error, and nothing past its last commit is lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio_postgres::Client;
use weir_log::{Isolation, Log, Offset, PartitionId};

use crate::error::{CdcError, Result};
use crate::pg::ident;

/// Bytes read per partition per round.
const SINK_FETCH_BYTES: usize = 4 << 20;

/// The field of a change row (a sink's changes, the DSL's `to_table`) that says what
/// happened to its key: `insert`, `update_before`, `update_after` or `delete`.
pub const CHANGE_OP_FIELD: &str = "op";

/// The operations a change row's `op` names.
const CHANGE_OPS: [&str; 4] = ["insert", "update_before", "update_after", "delete"];

/// Rows applied at most per PostgreSQL transaction.
pub const SINK_BATCH_ROWS: usize = 20_000;

/// Failures in a row (without a batch applied between them) before a sink stops.
pub const SINK_ATTEMPTS_MAX: u32 = 8;

/// The first wait after a failed attempt (doubling up to [`RETRY_MAX`]).
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The positions table.
pub const OFFSETS_TABLE: &str = "weir_sink_offsets";

/// A column of the sink's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkColumn {
    /// Its name.
    pub name: String,
    /// Its PostgreSQL type (see [`pg_type`]).
    pub pg_type: String,
    /// Values are epoch milliseconds to be written as a timestamp.
    pub millis: bool,
}

/// A sink's settings.
#[derive(Debug, Clone)]
pub struct PgSinkConfig {
    /// The sink's name (its rows in `weir_sink_offsets`).
    pub name: String,
    /// `postgres://…`.
    pub url: String,
    /// The table (`schema.table` or `table`).
    pub table: String,
    /// Its columns, in order.
    pub columns: Vec<SinkColumn>,
    /// Its primary key (empty: rows are appended).
    pub primary_key: Vec<String>,
    /// The topic read.
    pub topic: String,
    /// How long to wait when the topic has nothing new.
    pub poll: Duration,
}

/// The PostgreSQL type of a Weir SQL type (`BIGINT`, `TEXT`, `TIMESTAMP`, …).
pub fn pg_type(sql_type: &str) -> String {
    let t = sql_type.trim().to_ascii_uppercase();
    let base = t.split('(').next().unwrap_or_default().trim();
    match base {
        "BIGINT" | "INT8" => "bigint".into(),
        "INT" | "INTEGER" | "INT4" => "integer".into(),
        "SMALLINT" | "INT2" | "TINYINT" => "smallint".into(),
        "DOUBLE" | "DOUBLE PRECISION" | "FLOAT8" | "FLOAT" => "double precision".into(),
        "REAL" | "FLOAT4" => "real".into(),
        "BOOLEAN" | "BOOL" => "boolean".into(),
        "TIMESTAMP" => "timestamp".into(),
        "DATE" => "date".into(),
        "BYTEA" => "bytea".into(),
        "DECIMAL" | "NUMERIC" => t.to_ascii_lowercase(),
        _ => "text".into(),
    }
}

/// A running sink.
pub struct PgSink {
    config: PgSinkConfig,
    log: Log,
    runtime: tokio::runtime::Runtime,
    client: Client,
    /// Next offset per partition, as PostgreSQL committed it.
    positions: Vec<Offset>,
    /// Rows applied in this run.
    applied: u64,
}

impl std::fmt::Debug for PgSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSink")
            .field("config", &self.config)
            .field("positions", &self.positions)
            .finish_non_exhaustive()
    }
}

/// One key's last change in a batch.
enum Change {
    Upsert(Map<String, Value>),
    Delete(Map<String, Value>),
}

impl PgSink {
    /// Connects, creates the table and the positions table when absent, reads the positions.
    pub fn connect(log: &Log, config: PgSinkConfig) -> Result<PgSink> {
        let (runtime, client) = crate::pg::connect(&config.url)?;
        let partitions = log.partition_count(&config.topic)?;
        let mut sink = PgSink {
            config,
            log: log.clone(),
            runtime,
            client,
            positions: vec![Offset(0); partitions as usize],
            applied: 0,
        };
        sink.prepare()?;
        Ok(sink)
    }

    /// Rows applied since it connected.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Next offset per partition, as PostgreSQL committed it.
    pub fn positions(&self) -> &[Offset] {
        &self.positions
    }

    fn prepare(&mut self) -> Result<()> {
        let c = &self.config;
        let mut columns: Vec<String> = c
            .columns
            .iter()
            .map(|col| format!("{} {}", ident(&col.name), col.pg_type))
            .collect();
        if !c.primary_key.is_empty() {
            let key: Vec<String> = c.primary_key.iter().map(|k| ident(k)).collect();
            columns.push(format!("PRIMARY KEY ({})", key.join(", ")));
        }
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} ({});
             CREATE TABLE IF NOT EXISTS {OFFSETS_TABLE} (sink text, topic text, partition int,
               next_offset bigint NOT NULL, PRIMARY KEY (sink, topic, partition));",
            table_ident(&c.table),
            columns.join(", ")
        );
        self.runtime.block_on(self.client.batch_execute(&sql))?;
        let rows = self.runtime.block_on(self.client.query(
            &format!(
                "SELECT partition, next_offset FROM {OFFSETS_TABLE} WHERE sink = $1 AND topic = $2"
            ),
            &[&c.name, &c.topic],
        ))?;
        for r in rows {
            let (p, next): (i32, i64) = (r.get(0), r.get(1));
            if let Some(at) = self.positions.get_mut(p as usize) {
                *at = Offset(next);
            }
        }
        Ok(())
    }

    /// Runs rounds until `stop` is set or one fails; `applied` hears the rows applied so far
    /// after each batch.
    pub fn run(&mut self, stop: &AtomicBool, applied: &dyn Fn(u64)) -> Result<()> {
        while !stop.load(Ordering::SeqCst) {
            if self.round()? == 0 {
                std::thread::sleep(self.config.poll);
            } else {
                applied(self.applied);
            }
        }
        Ok(())
    }

    /// Applies what the topic committed past the positions (up to a batch) in one
    /// PostgreSQL transaction; returns the records consumed.
    pub fn round(&mut self) -> Result<usize> {
        let mut changes: HashMap<Vec<u8>, Change> = HashMap::new();
        let mut appends: Vec<Map<String, Value>> = Vec::new();
        let mut next = self.positions.clone();
        let mut consumed = 0;
        for (p, at) in next.iter_mut().enumerate() {
            let end = self
                .log
                .last_stable_offset(&self.config.topic, PartitionId(p as u32))?;
            if *at >= end || consumed >= SINK_BATCH_ROWS {
                continue;
            }
            let fetch = self.log.read_isolated(
                &self.config.topic,
                PartitionId(p as u32),
                *at,
                SINK_FETCH_BYTES,
                Isolation::ReadCommitted,
            )?;
            for r in fetch.records() {
                let r = r.map_err(|e| CdcError::Log(e.into()))?;
                if r.offset >= end || consumed >= SINK_BATCH_ROWS {
                    break;
                }
                *at = Offset(r.offset.0 + 1);
                consumed += 1;
                self.collect(r.key, r.value, &mut changes, &mut appends)?;
            }
            if consumed < SINK_BATCH_ROWS {
                *at = (*at).max(fetch.next_offset().min(end));
            }
        }
        if next == self.positions {
            return Ok(0);
        }
        self.apply(changes, appends, &next)?;
        self.positions = next;
        Ok(consumed.max(1))
    }

    /// One record into the batch: the latest change per key, or an appended row.
    fn collect(
        &self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        changes: &mut HashMap<Vec<u8>, Change>,
        appends: &mut Vec<Map<String, Value>>,
    ) -> Result<()> {
        let keyed = !self.config.primary_key.is_empty();
        let row = |bytes: &[u8]| -> Result<Map<String, Value>> {
            match serde_json::from_slice::<Value>(bytes) {
                Ok(Value::Object(row)) => Ok(self.typed(row)),
                _ => Err(CdcError::Config(format!(
                    "sink `{}`: a record of `{}` is not a JSON object",
                    self.config.name, self.config.topic
                ))),
            }
        };
        match (keyed, key, value) {
            (false, _, Some(v)) => appends.push(row(v)?),
            (false, _, None) => {}
            (true, Some(k), Some(v)) => {
                let mut r = row(v)?;
                // Change rows (a sink's or the DSL's `to_table`): `op` says what happened.
                let op = match r.get(CHANGE_OP_FIELD) {
                    Some(Value::String(op)) if CHANGE_OPS.contains(&op.as_str()) => {
                        let op = op.clone();
                        r.remove(CHANGE_OP_FIELD);
                        op
                    }
                    // A column of the relation that happens to be called `op`.
                    _ => String::new(),
                };
                let k = self.key_of(&r).unwrap_or_else(|| k.to_vec());
                match op.as_str() {
                    "delete" => {
                        changes.insert(k, Change::Delete(r));
                    }
                    // The row an update replaces: its `update_after` follows.
                    "update_before" => {}
                    _ => {
                        changes.insert(k, Change::Upsert(r));
                    }
                }
            }
            // A tombstone: its key (a JSON object of the key's columns) is the row to delete,
            // merged with the key's other changes by the same key bytes as an upsert's.
            (true, Some(k), None) => {
                let r = row(k)?;
                let k = self.key_of(&r).unwrap_or_else(|| k.to_vec());
                changes.insert(k, Change::Delete(r));
            }
            (true, None, _) => {
                return Err(CdcError::Config(format!(
                    "sink `{}`: a record of `{}` has no key to upsert by",
                    self.config.name, self.config.topic
                )))
            }
        }
        Ok(())
    }

    /// The key bytes of a row (its primary-key values), to merge a key's changes.
    fn key_of(&self, row: &Map<String, Value>) -> Option<Vec<u8>> {
        let values: Vec<&Value> = self
            .config
            .primary_key
            .iter()
            .map(|k| row.get(k))
            .collect::<Option<_>>()?;
        serde_json::to_vec(&values).ok()
    }

    /// Epoch-millisecond columns as timestamps PostgreSQL reads.
    fn typed(&self, mut row: Map<String, Value>) -> Map<String, Value> {
        for c in self.config.columns.iter().filter(|c| c.millis) {
            if let Some(ms) = row.get(&c.name).and_then(Value::as_i64) {
                row.insert(c.name.clone(), Value::from(millis_to_text(ms)));
            }
        }
        row
    }

    /// Deletes, upserts (or appends) and the positions in one transaction.
    fn apply(
        &mut self,
        changes: HashMap<Vec<u8>, Change>,
        appends: Vec<Map<String, Value>>,
        next: &[Offset],
    ) -> Result<()> {
        let mut upserts = appends;
        let mut deletes = Vec::new();
        for (_, c) in changes {
            match c {
                Change::Upsert(r) => upserts.push(r),
                Change::Delete(r) => deletes.push(r),
            }
        }
        let c = &self.config;
        let table = table_ident(&c.table);
        let columns: Vec<String> = c.columns.iter().map(|col| ident(&col.name)).collect();
        let key: Vec<String> = c.primary_key.iter().map(|k| ident(k)).collect();
        let upsert = match key.is_empty() {
            true => format!(
                "INSERT INTO {table} ({cols}) SELECT {cols} FROM json_populate_recordset(NULL::{table}, $1::text::json)",
                cols = columns.join(", ")
            ),
            false => {
                let set: Vec<String> = columns
                    .iter()
                    .filter(|col| !key.contains(col))
                    .map(|col| format!("{col} = EXCLUDED.{col}"))
                    .collect();
                let action = match set.is_empty() {
                    true => "NOTHING".to_string(),
                    false => format!("UPDATE SET {}", set.join(", ")),
                };
                format!(
                    "INSERT INTO {table} ({cols}) SELECT {cols} FROM json_populate_recordset(NULL::{table}, $1::text::json) \
                     ON CONFLICT ({key}) DO {action}",
                    cols = columns.join(", "),
                    key = key.join(", ")
                )
            }
        };
        let delete = format!(
            "DELETE FROM {table} t USING json_populate_recordset(NULL::{table}, $1::text::json) d WHERE {}",
            key.iter()
                .map(|k| format!("t.{k} = d.{k}"))
                .collect::<Vec<_>>()
                .join(" AND ")
        );
        let offsets = format!(
            "INSERT INTO {OFFSETS_TABLE} (sink, topic, partition, next_offset) \
             SELECT $1, $2, p, o FROM unnest($3::int[], $4::bigint[]) AS x(p, o) \
             ON CONFLICT (sink, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset"
        );
        let parts: Vec<i32> = (0..next.len() as i32).collect();
        let offs: Vec<i64> = next.iter().map(|o| o.0).collect();
        let rows = upserts.len() + deletes.len();
        let upserts = Value::Array(upserts.into_iter().map(Value::Object).collect()).to_string();
        let deletes = Value::Array(deletes.into_iter().map(Value::Object).collect()).to_string();
        let client = &mut self.client;
        self.runtime.block_on(async {
            let tx = client.transaction().await?;
            if deletes != "[]" {
                tx.execute(&delete, &[&deletes]).await?;
            }
            if upserts != "[]" {
                tx.execute(&upsert, &[&upserts]).await?;
            }
            tx.execute(&offsets, &[&c.name, &c.topic, &parts, &offs])
                .await?;
            tx.commit().await?;
            Ok::<(), CdcError>(())
        })?;
        self.applied += rows as u64;
        Ok(())
    }
}

/// What a sink run by [`run_sink_until_stopped`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkStatus {
    /// Rows applied since it started.
    pub applied: u64,
    /// The last failure, while retrying or once it stopped.
    pub error: Option<String>,
}

/// Runs a sink until `stop` is set: connecting again with backoff while PostgreSQL is down
/// or a batch fails; after [`SINK_ATTEMPTS_MAX`] failures in a row without progress it stops
/// with the error (nothing past its last commit is lost: a restart resumes there).
pub fn run_sink_until_stopped(
    log: &Log,
    config: &PgSinkConfig,
    stop: &AtomicBool,
    report: &dyn Fn(SinkStatus),
) -> Result<()> {
    let mut status = SinkStatus::default();
    let mut failures = 0;
    let mut wait = RETRY_FIRST;
    let base = std::cell::Cell::new(0u64);
    while !stop.load(Ordering::SeqCst) {
        let before = base.get();
        let ran = PgSink::connect(log, config.clone()).and_then(|mut sink| {
            sink.run(stop, &|n| {
                let total = before + n;
                base.set(total);
                report(SinkStatus {
                    applied: total,
                    error: None,
                });
            })
        });
        let Err(e) = ran else { return Ok(()) };
        if base.get() > before {
            failures = 0;
            wait = RETRY_FIRST;
        }
        failures += 1;
        status.applied = base.get();
        status.error = Some(e.to_string());
        report(status.clone());
        if failures >= SINK_ATTEMPTS_MAX {
            return Err(e);
        }
        tracing::warn!(sink = %config.name, error = %e, failures, "retrying");
        let until = std::time::Instant::now() + wait;
        while std::time::Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
    Ok(())
}

/// Deletes a sink's positions (its `DROP`), when the positions table exists.
pub fn forget(url: &str, sink: &str) -> Result<()> {
    let (runtime, client) = crate::pg::connect(url)?;
    runtime.block_on(async {
        client
            .execute(
                &format!("DELETE FROM {OFFSETS_TABLE} WHERE sink = $1"),
                &[&sink],
            )
            .await
            .map(|_| ())
            .or_else(|e| match e.as_db_error().map(|d| d.code().code()) {
                Some("42P01") => Ok(()), // no positions table: nothing to forget
                _ => Err(e.into()),
            })
    })
}

/// Epoch milliseconds as `YYYY-MM-DD HH:MM:SS.mmm` (UTC), which PostgreSQL reads as a
/// timestamp.
fn millis_to_text(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{milli:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `schema.table` or `table`, each part quoted.
fn table_ident(name: &str) -> String {
    name.split('.').map(ident).collect::<Vec<_>>().join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_print_as_postgres_timestamps() {
        assert_eq!(millis_to_text(0), "1970-01-01 00:00:00.000");
        assert_eq!(millis_to_text(1_767_225_601_234), "2026-01-01 00:00:01.234");
        assert_eq!(millis_to_text(-1), "1969-12-31 23:59:59.999");
    }

    #[test]
    fn weir_types_map_to_postgres_types() {
        assert_eq!(pg_type("BIGINT"), "bigint");
        assert_eq!(pg_type("timestamp"), "timestamp");
        assert_eq!(pg_type("DECIMAL(10,2)"), "decimal(10,2)");
        assert_eq!(pg_type("VARCHAR"), "text");
    }
}
