//! A task: one partition of one input topic, its state stores, and its commits.
//!
//! The loop is read → process → (every commit interval) commit. Under exactly-once the commit
//! is one log transaction of the task's own transactional producer (id `<app>-<topic>-<p>`):
//! the interval's outputs, its stores' changelog records and the consumed input offset (as the
//! group `<app>`'s committed offset) commit together or not at all; only then are the stores'
//! writes applied to RocksDB. Starting a task fences any older instance of it (epoch bump) and
//! aborts what that instance left open, restores the stores' changelog tails, and resumes at
//! the committed offset — so the output is exactly that of a run without failures.
//! At-least-once skips the transaction: outputs and changelog first, then the offset.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_coord::{GroupCoordinator, TransactionCoordinator, TransactionalProducer};
use weir_log::{Isolation, Log, Offset, PartitionId, Producer, Record, Timestamp};

use crate::error::{EngineError, Result};
use crate::state::{ensure_changelog, KvStore};

/// Outputs plus state writes a task holds before it commits early: bounds a task's memory
/// between commits (about 100 MB at 1 KB records).
const PENDING_RECORDS_MAX: usize = 100_000;

/// Committed records of a repartition topic that trigger a purge.
const PURGE_MIN_RECORDS: i64 = 1000;

/// Delivery guarantee of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarantee {
    /// Outputs, state and input offsets commit atomically (the default).
    ExactlyOnce,
    /// Outputs may repeat after a crash; nothing is lost.
    AtLeastOnce,
}

/// One input record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRecord {
    /// Topic it came from.
    pub topic: std::sync::Arc<str>,
    /// Partition it came from.
    pub partition: u32,
    /// Its offset.
    pub offset: Offset,
    /// Its timestamp.
    pub timestamp: Timestamp,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
}

/// What a processor gets: the task's stores and a place for outputs.
#[derive(Debug)]
pub struct TaskContext<'a> {
    stores: &'a mut HashMap<String, KvStore>,
    outputs: &'a mut Vec<(String, Record)>,
}

impl TaskContext<'_> {
    /// A state store of this task, by name.
    pub fn store(&mut self, name: &str) -> Result<&mut KvStore> {
        self.stores
            .get_mut(name)
            .ok_or_else(|| EngineError::Plan(format!("the task has no store `{name}`")))
    }

    /// Emits a record to an output topic (partitioned by its key like Kafka's producer).
    pub fn emit(&mut self, topic: &str, record: Record) {
        self.outputs.push((topic.to_string(), record));
    }
}

/// Batch-at-a-time processing logic of a task.
pub trait Processor: Send {
    /// Processes a batch of input records in offset order.
    fn process(&mut self, ctx: &mut TaskContext<'_>, batch: &[InputRecord]) -> Result<()>;
}

/// Settings of a task.
#[derive(Debug, Clone)]
pub struct TaskConfig {
    /// Application id: the consumer group and the prefix of internal topics.
    pub app: String,
    /// Input topic.
    pub topic: String,
    /// Further inputs, co-partitioned with `topic` and read before it in every round (the
    /// tables a stream joins); their offsets commit with the rest.
    pub co_topics: Vec<String>,
    /// Input partition.
    pub partition: u32,
    /// Names of the key-value stores the processor uses.
    pub stores: Vec<String>,
    /// How often outputs, state and offsets are committed.
    pub commit_interval: Duration,
    /// Delivery guarantee.
    pub guarantee: Guarantee,
    /// Where RocksDB state lives.
    pub state_dir: PathBuf,
    /// Most input records per processed batch.
    pub max_batch_records: usize,
}

enum Output {
    Transactional(TransactionalProducer),
    Idempotent(Producer),
}

/// A running task.
pub struct Task {
    cfg: TaskConfig,
    log: Log,
    groups: GroupCoordinator,
    output: Output,
    stores: HashMap<String, KvStore>,
    /// Inputs in read order (co-topics first, `topic` last) and the next offset of each.
    inputs: Vec<std::sync::Arc<str>>,
    positions: Vec<Offset>,
    /// Outputs of the open interval.
    outputs: Vec<(String, Record)>,
    /// Positions at the last successful commit.
    committed_positions: Vec<Offset>,
    interval_start: Instant,
    /// A commit failed: its outcome is unknown until the task is started again.
    failed: bool,
    commits: u64,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("app", &self.cfg.app)
            .field("topic", &self.cfg.topic)
            .field("partition", &self.cfg.partition)
            .field("positions", &self.positions)
            .field("commits", &self.commits)
            .finish()
    }
}

/// The changelog topic of a store.
pub fn changelog_topic(app: &str, store: &str) -> String {
    format!("{app}-{store}-changelog")
}

impl Task {
    /// Starts (or restarts) a task: fences an older instance, restores state, resumes at the
    /// committed offset.
    pub fn start(
        log: &Log,
        groups: &GroupCoordinator,
        txns: &TransactionCoordinator,
        cfg: TaskConfig,
    ) -> Result<Task> {
        let partitions = log.partition_count(&cfg.topic)?;
        if cfg.partition >= partitions {
            return Err(EngineError::Plan(format!(
                "topic `{}` has {partitions} partitions; task for partition {} cannot run",
                cfg.topic, cfg.partition
            )));
        }
        let output = match cfg.guarantee {
            Guarantee::ExactlyOnce => {
                let id = format!("{}-{}-{}", cfg.app, cfg.topic, cfg.partition);
                Output::Transactional(TransactionalProducer::new(
                    txns,
                    &id,
                    Duration::from_secs(60),
                )?)
            }
            Guarantee::AtLeastOnce => Output::Idempotent(Producer::new(log)?),
        };
        let mut stores = HashMap::new();
        for name in &cfg.stores {
            let topic = changelog_topic(&cfg.app, name);
            ensure_changelog(log, &topic, partitions)?;
            let dir = cfg
                .state_dir
                .join(&cfg.app)
                .join(format!("{}-{}", cfg.topic, cfg.partition))
                .join(name);
            let mut store = KvStore::open(name, &dir, &topic, PartitionId(cfg.partition))?;
            store.restore(log)?;
            stores.insert(name.clone(), store);
        }
        let inputs: Vec<std::sync::Arc<str>> = cfg
            .co_topics
            .iter()
            .chain(std::iter::once(&cfg.topic))
            .map(|t| std::sync::Arc::from(t.as_str()))
            .collect();
        let committed = groups.committed(&cfg.app);
        let mut positions = Vec::with_capacity(inputs.len());
        for t in &inputs {
            let n = log.partition_count(t)?;
            if n != partitions {
                return Err(EngineError::Plan(format!(
                    "`{t}` has {n} partitions and `{}` has {partitions}: inputs of one task must be co-partitioned",
                    cfg.topic
                )));
            }
            positions.push(match committed.get(&(t.to_string(), cfg.partition)) {
                Some(c) => c.offset,
                None => log.earliest_offset(t, PartitionId(cfg.partition))?,
            });
        }
        Ok(Task {
            log: log.clone(),
            groups: groups.clone(),
            output,
            stores,
            inputs,
            committed_positions: positions.clone(),
            positions,
            outputs: Vec::new(),
            interval_start: Instant::now(),
            failed: false,
            commits: 0,
            cfg,
        })
    }

    /// The next offset to process of the main input topic.
    pub fn position(&self) -> Offset {
        self.positions.last().copied().unwrap_or_default()
    }

    /// Commits so far.
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// Reads and processes one batch (empty when caught up); commits when the interval is due.
    /// Returns the number of input records processed.
    pub fn run_once(&mut self, processor: &mut dyn Processor) -> Result<usize> {
        if self.failed {
            return Err(EngineError::Internal(
                "this task failed a commit; start it again".into(),
            ));
        }
        let mut n = 0;
        // Co-inputs (tables) first: a stream record meets the table as of everything before it.
        for i in 0..self.inputs.len() {
            n = self.process_input(i, processor)?;
            if n > 0 {
                break;
            }
        }
        // Outputs and state writes wait in memory for the commit: commit early rather than let
        // a fast input grow them without bound.
        let pending_state: usize = self.stores.values().map(KvStore::pending_len).sum();
        let full = self.outputs.len() + pending_state >= PENDING_RECORDS_MAX;
        if full || self.interval_start.elapsed() >= self.cfg.commit_interval {
            self.commit()?;
        }
        Ok(n)
    }

    /// Reads and processes one batch of input `i`; returns the records processed.
    fn process_input(&mut self, i: usize, processor: &mut dyn Processor) -> Result<usize> {
        let topic = self.inputs[i].clone();
        let at = self.positions[i];
        let f = self.log.read_isolated(
            &topic,
            PartitionId(self.cfg.partition),
            at,
            1 << 20,
            Isolation::ReadCommitted,
        )?;
        let mut batch = Vec::new();
        for r in f.records() {
            if batch.len() >= self.cfg.max_batch_records {
                break;
            }
            let r = r.map_err(weir_log::LogError::from)?;
            // Zero-copy: keys and values are slices of the fetched bytes.
            batch.push(InputRecord {
                topic: topic.clone(),
                partition: self.cfg.partition,
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key.map(|k| f.batches.slice_ref(k)),
                value: r.value.map(|v| f.batches.slice_ref(v)),
            });
        }
        if let Some(last) = batch.last() {
            let next = last.offset.plus(1);
            let mut ctx = TaskContext {
                stores: &mut self.stores,
                outputs: &mut self.outputs,
            };
            processor.process(&mut ctx, &batch)?;
            self.positions[i] = next;
        } else if !f.batches.is_empty() {
            // Only control batches or aborted records: step over them.
            self.positions[i] = at.max(f.next_offset().min(f.last_stable));
        }
        Ok(batch.len())
    }

    /// Commits the open interval: outputs, changelogs and the input offset, atomically under
    /// exactly-once. A failed commit leaves its outcome unknown (it may have been decided), so
    /// the task stops: drop it and start it again, which finishes or aborts that transaction,
    /// restores the stores and resumes at the committed offset.
    pub fn commit(&mut self) -> Result<()> {
        if self.failed {
            return Err(EngineError::Internal(
                "this task failed a commit; start it again".into(),
            ));
        }
        self.interval_start = Instant::now();
        if self.positions == self.committed_positions && self.outputs.is_empty() {
            return Ok(());
        }
        match self.try_commit() {
            Ok(last_changelog) => {
                for (name, store) in self.stores.iter_mut() {
                    store.committed(last_changelog.get(name).copied())?;
                }
                self.committed_positions = self.positions.clone();
                self.commits += 1;
                self.purge_repartition_inputs();
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// Internal repartition topics are read by this application only: once their records are
    /// committed they are deleted (Kafka's DeleteRecords), in steps of at least
    /// `PURGE_MIN_RECORDS` so a purge costs little.
    fn purge_repartition_inputs(&self) {
        let prefix = format!("{}-repartition-", self.cfg.app);
        let p = PartitionId(self.cfg.partition);
        for (topic, pos) in self.inputs.iter().zip(&self.committed_positions) {
            if !topic.starts_with(&prefix) {
                continue;
            }
            let start = self.log.earliest_offset(topic, p).unwrap_or(*pos);
            if pos.0 - start.0 < PURGE_MIN_RECORDS {
                continue;
            }
            if let Err(e) = self.log.delete_records(topic, p, *pos) {
                tracing::warn!(topic = %topic, partition = %p, error = %e, "purging a repartition topic failed");
            }
        }
    }

    fn try_commit(&mut self) -> Result<HashMap<String, Offset>> {
        let offsets: Vec<((String, u32), Offset)> = self
            .inputs
            .iter()
            .zip(&self.positions)
            .map(|(t, o)| ((t.to_string(), self.cfg.partition), *o))
            .collect();
        let mut last_changelog = HashMap::new();
        let outputs = std::mem::take(&mut self.outputs);
        match &mut self.output {
            Output::Transactional(p) => {
                p.begin()?;
                let grouped = group_outputs(&self.log, outputs)?;
                // Every partition of this transaction, added in one durable step.
                let mut all: Vec<(String, u32)> = grouped.keys().cloned().collect();
                for store in self.stores.values().filter(|s| s.pending_len() > 0) {
                    let (t, p) = store.changelog();
                    all.push((t.to_string(), p.0));
                }
                let offsets_partition =
                    weir_coord::offsets::OffsetStore::partition_of(&self.cfg.app).0;
                all.push((
                    weir_coord::offsets::OFFSETS_TOPIC.to_string(),
                    offsets_partition,
                ));
                p.add_partitions(&all)?;
                for ((topic, partition), records) in grouped {
                    for chunk in chunks(&records) {
                        p.submit(&topic, PartitionId(partition), chunk)?;
                    }
                }
                for (name, store) in &self.stores {
                    let records = store.changelog_records();
                    if records.is_empty() {
                        continue;
                    }
                    let (topic, partition) = store.changelog();
                    let ack = p.send_to(topic, partition, &records)?;
                    last_changelog.insert(name.clone(), ack.last_offset);
                }
                p.send_offsets_to_transaction(&self.cfg.app, &offsets)?;
                p.commit()?;
            }
            Output::Idempotent(p) => {
                for ((topic, partition), records) in group_outputs(&self.log, outputs)? {
                    p.send_to(&topic, PartitionId(partition), &records)?;
                }
                for (name, store) in &self.stores {
                    let records = store.changelog_records();
                    if records.is_empty() {
                        continue;
                    }
                    let (topic, partition) = store.changelog();
                    let ack = p.send_to(topic, partition, &records)?;
                    last_changelog.insert(name.clone(), ack.last_offset);
                }
                let entries: Vec<((String, u32), Offset, String)> = offsets
                    .iter()
                    .map(|(tp, o)| (tp.clone(), *o, String::new()))
                    .collect();
                self.groups
                    .commit_offsets(&self.cfg.app, -1, "", &entries)?;
            }
        }
        Ok(last_changelog)
    }
}

/// Outputs by (topic, partition), keyed records placed by Kafka's partitioner, in emit order.
fn group_outputs(
    log: &Log,
    outputs: Vec<(String, Record)>,
) -> Result<std::collections::BTreeMap<(String, u32), Vec<Record>>> {
    let mut by_partition: std::collections::BTreeMap<(String, u32), Vec<Record>> =
        std::collections::BTreeMap::new();
    // Partition counts looked up once per topic, not once per record.
    let mut counts: HashMap<String, u32> = HashMap::new();
    for (topic, record) in outputs {
        let n = match counts.get(&topic) {
            Some(n) => *n,
            None => {
                let n = log.partition_count(&topic)?;
                counts.insert(topic.clone(), n);
                n
            }
        };
        let partition = match &record.key {
            Some(k) => weir_log::partitioner::partition_for_key(k, n).0,
            None => 0,
        };
        by_partition
            .entry((topic, partition))
            .or_default()
            .push(record);
    }
    Ok(by_partition)
}

/// Bytes of records per transactional batch: well under the default `max.message.bytes`.
const OUTPUT_BATCH_BYTES: usize = 512 * 1024;

/// Splits records into runs that fit one batch.
fn chunks(records: &[Record]) -> Vec<&[Record]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0usize, 0usize);
    for (i, r) in records.iter().enumerate() {
        let size =
            32 + r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len());
        if i > start && bytes + size > OUTPUT_BATCH_BYTES {
            out.push(&records[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
}
