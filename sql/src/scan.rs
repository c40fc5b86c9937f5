//! Batch scans of a relation's topic for DataFusion: one partition stream per log partition
//! (so DataFusion reads partitions in parallel), each reading `read_committed` from the start
//! of the partition to its last stable offset at the moment the query runs, decoding chunks
//! of records into Arrow batches on a blocking thread and handing them over through a bounded
//! channel. A table's scan keeps the latest row per key, reading its records as changes
//! ([`crate::changes`]): deletes and truncates remove rows, replays are ignored and counted.
//!
//! Records that do not decode are not dropped silently: they are collected (first few in full,
//! all counted) and the session reports them with the query's result.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use tokio::sync::mpsc;
use weir_log::{Isolation, Log, PartitionId};

use crate::changes::TableChanges;
use crate::datagen::Datagen;
use crate::format::{BadRecord, LogRecord, RowDecoder};

/// Records decoded per Arrow batch: large enough to amortise per-batch costs, small enough
/// that a partition's reader holds little (DataFusion's own default batch size).
pub const SCAN_BATCH_ROWS: usize = 8192;

/// Batches a partition's reader may run ahead of the query (the channel's bound).
const SCAN_QUEUE_BATCHES: usize = 2;

/// Bytes read from the log per fetch.
const SCAN_FETCH_BYTES: usize = 1 << 20;

/// Bad records kept in full per query (all are counted).
pub const BAD_RECORDS_KEPT: usize = 5;

/// The bad records one query met.
#[derive(Debug, Default)]
pub struct BadRecords {
    /// How many.
    pub count: u64,
    /// Changes of tables ignored as replays (older than the change applied to their key).
    pub replayed: u64,
    /// The first few, with their relation.
    pub first: Vec<(String, BadRecord)>,
}

/// Shared between a session and its scans.
pub type BadRecordLog = Arc<Mutex<BadRecords>>;

/// One partition of a relation, as DataFusion streams it.
#[derive(Debug, Clone)]
pub struct PartitionScan {
    pub(crate) log: Log,
    pub(crate) relation: String,
    pub(crate) topic: String,
    /// A table's reading of its records as changes (`None`: a stream's rows).
    pub(crate) table: Option<Arc<TableChanges>>,
    pub(crate) partition: u32,
    pub(crate) decoder: RowDecoder,
    pub(crate) bad: BadRecordLog,
    /// A `datagen` stream's generator (the topic is then not read).
    pub(crate) datagen: Option<Arc<Datagen>>,
}

/// Rows a batch query generates from an unbounded `datagen` stream before it fails: such a
/// query needs a `LIMIT` (or `number-of-rows`), and is told so rather than left running.
pub const DATAGEN_SCAN_ROWS_MAX: u64 = 100_000_000;

type Sender = mpsc::Sender<Result<RecordBatch, DataFusionError>>;

impl PartitionStream for PartitionScan {
    fn schema(&self) -> &SchemaRef {
        self.decoder.schema()
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (tx, rx) = mpsc::channel(SCAN_QUEUE_BATCHES);
        let scan = self.clone();
        let work = move || scan.run(&tx);
        // Reads are blocking disk I/O: the runtime's blocking pool when there is one.
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(work)),
            Err(_) => {
                if let Err(e) = std::thread::Builder::new()
                    .name("weir-sql-scan".into())
                    .spawn(work)
                {
                    tracing::error!(error = %e, "cannot start a scan thread");
                }
            }
        }
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Box::pin(RecordBatchStreamAdapter::new(
            self.decoder.schema().clone(),
            stream,
        ))
    }
}

impl PartitionScan {
    fn run(&self, tx: &Sender) {
        if let Some(g) = &self.datagen {
            return self.generate(g, tx);
        }
        let result = match &self.table {
            None => self.scan_stream(tx),
            Some(table) => self.scan_table(table, tx),
        };
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(DataFusionError::External(Box::new(e))));
        }
    }

    /// Generates the partition's rows in batches until its end (or the cap of an unbounded
    /// generator, which is an error), or until the query stops listening.
    fn generate(&self, g: &Datagen, tx: &Sender) {
        let end = g.rows_of(self.partition).unwrap_or(u64::MAX);
        let now = self.log.now().0;
        let mut at = 0u64;
        while at < end {
            if at >= DATAGEN_SCAN_ROWS_MAX {
                let e = DataFusionError::Execution(format!(
                    "`{}` is a datagen stream without end: a batch query over it stopped after \
                     {DATAGEN_SCAN_ROWS_MAX} rows per partition; add a LIMIT, or set `number-of-rows`",
                    self.relation
                ));
                let _ = tx.blocking_send(Err(e));
                return;
            }
            let to = end.min(at + SCAN_BATCH_ROWS as u64);
            let batch = g
                .batch(
                    self.decoder.schema(),
                    self.partition,
                    at as i64..to as i64,
                    now,
                )
                .map_err(|e| DataFusionError::External(Box::new(e)));
            let failed = batch.is_err();
            if tx.blocking_send(batch).is_err() || failed {
                return;
            }
            at = to;
        }
    }

    /// Reads `[start, last stable offset)` and calls `f` with each record.
    fn read(
        &self,
        mut f: impl FnMut(LogRecord) -> Result<bool, weir_log::LogError>,
    ) -> Result<(), weir_log::LogError> {
        let p = PartitionId(self.partition);
        let end = self.log.last_stable_offset(&self.topic, p)?;
        let mut at = self.log.earliest_offset(&self.topic, p)?;
        while at < end {
            let fetch = self.log.read_isolated(
                &self.topic,
                p,
                at,
                SCAN_FETCH_BYTES,
                Isolation::ReadCommitted,
            )?;
            if fetch.is_empty() {
                break;
            }
            for r in fetch.records() {
                let r = r?;
                if r.offset >= end {
                    return Ok(());
                }
                let record = LogRecord {
                    key: r.key.map(Bytes::copy_from_slice),
                    value: r.value.map(Bytes::copy_from_slice).unwrap_or_default(),
                    timestamp: r.timestamp.0,
                    partition: self.partition as i32,
                    offset: r.offset.0,
                };
                // A tombstone (no value) carries no row of a stream.
                if r.value.is_none() && self.table.is_none() {
                    continue;
                }
                if !f(record)? {
                    return Ok(());
                }
            }
            let next = fetch.next_offset();
            if next <= at {
                break;
            }
            at = next;
        }
        Ok(())
    }

    fn scan_stream(&self, tx: &Sender) -> Result<(), weir_log::LogError> {
        let mut chunk = Vec::with_capacity(SCAN_BATCH_ROWS);
        let mut open = true;
        self.read(|r| {
            chunk.push(r);
            if chunk.len() == SCAN_BATCH_ROWS {
                open = self.send(tx, &std::mem::take(&mut chunk));
            }
            Ok(open)
        })?;
        if open && !chunk.is_empty() {
            self.send(tx, &chunk);
        }
        Ok(())
    }

    /// A table is its latest row per key: the whole partition is read as changes, then the
    /// rows left are decoded.
    fn scan_table(&self, table: &TableChanges, tx: &Sender) -> Result<(), weir_log::LogError> {
        let mut latest = HashMap::new();
        let mut replayed = 0;
        let mut chunk = Vec::with_capacity(SCAN_BATCH_ROWS);
        let mut apply = |chunk: &mut Vec<LogRecord>| {
            let (changes, bad) = table.read(&std::mem::take(chunk));
            self.report(bad.into_iter());
            replayed += crate::changes::apply(&mut latest, changes, |r| r);
        };
        self.read(|r| {
            chunk.push(r);
            if chunk.len() == SCAN_BATCH_ROWS {
                apply(&mut chunk);
            }
            Ok(true)
        })?;
        apply(&mut chunk);
        if replayed > 0 {
            self.bad.lock().unwrap_or_else(|e| e.into_inner()).replayed += replayed;
        }
        let mut rows: Vec<LogRecord> = latest.into_values().filter_map(|(r, _)| r).collect();
        rows.sort_by_key(|r| (r.partition, r.offset));
        for chunk in rows.chunks(SCAN_BATCH_ROWS) {
            let (batch, bad) = table.row_decoder().decode(chunk);
            self.report(bad.into_iter());
            if batch.num_rows() > 0 && tx.blocking_send(Ok(batch)).is_err() {
                break;
            }
        }
        Ok(())
    }

    /// Decodes a chunk and sends its rows; false once the query stopped listening.
    fn send(&self, tx: &Sender, chunk: &[LogRecord]) -> bool {
        let (batch, bad) = self.decoder.decode(chunk);
        self.report(bad.into_iter());
        batch.num_rows() == 0 || tx.blocking_send(Ok(batch)).is_ok()
    }

    fn report(&self, bad: impl Iterator<Item = BadRecord>) {
        let mut log = self.bad.lock().unwrap_or_else(|e| e.into_inner());
        for b in bad {
            log.count += 1;
            if log.first.len() < BAD_RECORDS_KEPT {
                log.first.push((self.relation.clone(), b));
            }
        }
    }
}
