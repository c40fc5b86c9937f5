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

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_coord::{GroupCoordinator, TransactionCoordinator, TransactionalProducer};
use weir_log::{Isolation, Log, Offset, PartitionId, Producer, Record, Timestamp};

use crate::error::{EngineError, Result};
use crate::metrics::{TaskMetrics, TaskMetricsSlot, TaskState};
use crate::state::{ensure_changelog, KvStore};

/// Default of [`TaskConfig::max_buffered_records`]: about 100 MB at 1 KB records.
pub const MAX_BUFFERED_RECORDS: usize = 100_000;

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
    pub topic: Arc<str>,
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

/// Outputs of the open commit interval, already placed in their partitions (Kafka's murmur2
/// partitioner for keyed records; keyless records go to one partition per interval, rotating).
#[derive(Debug)]
pub(crate) struct Sinks {
    log: Log,
    topics: Vec<SinkBuffer>,
    len: usize,
    /// Partition for keyless records this interval.
    rotation: u32,
}

#[derive(Debug)]
struct SinkBuffer {
    topic: Arc<str>,
    partitions: Vec<Vec<Record>>,
}

impl Sinks {
    fn new(log: &Log) -> Sinks {
        Sinks {
            log: log.clone(),
            topics: Vec::new(),
            len: 0,
            rotation: 0,
        }
    }

    fn emit(&mut self, topic: &str, record: Record) -> Result<()> {
        // A task writes a handful of topics: a scan beats hashing the name.
        let i = match self.topics.iter().position(|s| &*s.topic == topic) {
            Some(i) => i,
            None => {
                let n = self.log.partition_count(topic)?;
                self.topics.push(SinkBuffer {
                    topic: Arc::from(topic),
                    partitions: (0..n).map(|_| Vec::new()).collect(),
                });
                self.topics.len() - 1
            }
        };
        let sink = &mut self.topics[i];
        let n = sink.partitions.len() as u32;
        let p = match &record.key {
            Some(k) => weir_log::partitioner::partition_for_key(k, n).0,
            None => self.rotation % n.max(1),
        };
        sink.partitions[p as usize].push(record);
        self.len += 1;
        Ok(())
    }

    /// Takes the buffered outputs: (topic, partition, records), non-empty only.
    fn take(&mut self) -> Vec<(Arc<str>, u32, Vec<Record>)> {
        self.len = 0;
        self.rotation = self.rotation.wrapping_add(1);
        let mut out = Vec::new();
        for s in &mut self.topics {
            for (p, records) in s.partitions.iter_mut().enumerate() {
                if !records.is_empty() {
                    out.push((s.topic.clone(), p as u32, std::mem::take(records)));
                }
            }
        }
        out
    }
}

/// What a processor gets for one input batch: the batch, the task's stores, a place for
/// outputs and for poison records, and the task's metrics.
#[derive(Debug)]
pub struct TaskContext<'a> {
    stores: &'a mut [KvStore],
    sinks: &'a mut Sinks,
    input: &'a [InputRecord],
    poisoned: &'a mut Vec<(usize, String)>,
    metrics: &'a mut TaskMetrics,
}

impl<'a> TaskContext<'a> {
    /// A state store of this task, by name.
    pub fn store(&mut self, name: &str) -> Result<&mut KvStore> {
        self.stores
            .iter_mut()
            .find(|s| s.name() == name)
            .ok_or_else(|| EngineError::Plan(format!("the task has no store `{name}`")))
    }

    /// Emits a record to an output topic (partitioned by its key like Kafka's producer). It
    /// becomes visible when the interval commits.
    pub fn emit(&mut self, topic: &str, record: Record) -> Result<()> {
        self.sinks.emit(topic, record)
    }

    /// Now, by the log's clock.
    pub fn now(&self) -> Timestamp {
        self.sinks.log.now()
    }

    /// The input batch being processed.
    pub fn input(&self) -> &'a [InputRecord] {
        self.input
    }

    /// Marks input record `index` (of [`TaskContext::input`]) as poison: it is handled by the
    /// pipeline's error policy (dead letter, skip or fail) once the batch is processed.
    pub fn poison(&mut self, index: usize, reason: String) {
        self.poisoned.push((index, reason));
    }

    /// Counts one call of operator `id`.
    pub fn record_operator(
        &mut self,
        id: usize,
        records_in: usize,
        records_out: usize,
        busy: Duration,
    ) {
        self.metrics
            .record_operator(id, records_in, records_out, busy);
    }
}

/// Batch-at-a-time processing logic of a task.
pub trait Processor: Send {
    /// Processes a batch of input records of one topic, in offset order. Records it cannot
    /// process are reported with [`TaskContext::poison`]; an `Err` fails the task.
    fn process(&mut self, ctx: &mut TaskContext<'_>) -> Result<()>;

    /// Called with the records the batch reported as poison (index into the batch, reason),
    /// still inside the interval: a processor may write them to a dead-letter topic.
    fn poisoned(&mut self, ctx: &mut TaskContext<'_>, poisoned: &[(usize, String)]) -> Result<()> {
        fail_on_poison(ctx, poisoned)
    }
}

/// The error for the first poison record of a batch: topic, partition, offset and reason.
pub fn fail_on_poison(ctx: &TaskContext<'_>, poisoned: &[(usize, String)]) -> Result<()> {
    match poisoned.first() {
        None => Ok(()),
        Some((i, reason)) => {
            let r = ctx.input.get(*i).ok_or_else(|| {
                EngineError::Internal(format!("poison index {i} is outside the batch"))
            })?;
            Err(EngineError::Poison {
                topic: r.topic.to_string(),
                partition: r.partition,
                offset: r.offset,
                reason: reason.clone(),
            })
        }
    }
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
    /// Outputs plus state writes the task holds before it commits early: with the fetch
    /// buffer (1 MiB) and one batch, this bounds the task's memory whatever the input rate.
    pub max_buffered_records: usize,
}

enum Output {
    Transactional(TransactionalProducer),
    Idempotent(Producer),
}

/// One input of a task: where it is, and records fetched but not yet processed.
struct Input {
    topic: Arc<str>,
    /// Next offset to process.
    position: Offset,
    /// Position at the last successful commit.
    committed: Offset,
    /// Fetched records from `fetched_at` on; one fetch (up to 1 MiB) feeds several batches.
    fetched: Vec<InputRecord>,
    fetched_at: usize,
}

/// How long an at-least-once offset commit waits out a rebalance of the application's group.
const REBALANCE_WAIT: Duration = Duration::from_secs(30);

/// Longest time between two publications of a task's metrics.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Bytes one fetch reads from an input partition.
const FETCH_BYTES: usize = 1 << 20;

/// How a task commits offsets under at-least-once: as a standalone commit, or as the
/// member of the application's consumer group.
pub type GroupMembership = Arc<std::sync::Mutex<Option<(String, i32)>>>;

/// A running task.
pub struct Task {
    cfg: TaskConfig,
    log: Log,
    groups: GroupCoordinator,
    output: Output,
    stores: Vec<KvStore>,
    /// Inputs in read order (co-topics first, `topic` last).
    inputs: Vec<Input>,
    /// Outputs of the open interval.
    sinks: Sinks,
    /// Input timestamps of the open interval (for end-to-end latency at commit).
    interval_timestamps: Vec<i64>,
    interval_start: Instant,
    /// A commit failed: its outcome is unknown until the task is started again.
    failed: bool,
    poisoned: Vec<(usize, String)>,
    metrics: TaskMetrics,
    published: TaskMetricsSlot,
    last_publish: Instant,
    /// Poison records of the open interval (counted in the metrics when it commits).
    interval_poisoned: u64,
    membership: Option<GroupMembership>,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("app", &self.cfg.app)
            .field("topic", &self.cfg.topic)
            .field("partition", &self.cfg.partition)
            .field("position", &self.position())
            .field("commits", &self.metrics.commits)
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
        let slot = Arc::new(std::sync::Mutex::new(TaskMetrics::new(
            &cfg.topic,
            cfg.partition,
        )));
        Task::start_observed(log, groups, txns, cfg, slot, None)
    }

    /// [`Task::start`], publishing metrics (restore progress included) into `published`; under
    /// at-least-once, offsets commit as the group member in `membership` when there is one.
    pub fn start_observed(
        log: &Log,
        groups: &GroupCoordinator,
        txns: &TransactionCoordinator,
        cfg: TaskConfig,
        published: TaskMetricsSlot,
        membership: Option<GroupMembership>,
    ) -> Result<Task> {
        let partitions = log.partition_count(&cfg.topic)?;
        if cfg.partition >= partitions {
            return Err(EngineError::Plan(format!(
                "topic `{}` has {partitions} partitions; task for partition {} cannot run",
                cfg.topic, cfg.partition
            )));
        }
        // Counters carry over from an earlier instance of this task (a restart); the restore
        // figures are this start's.
        let mut metrics = published.lock().unwrap_or_else(|e| e.into_inner()).clone();
        metrics.state = TaskState::Restoring;
        metrics.restored_records = 0;
        metrics.restore_rate = 0.0;
        let publish = |m: &TaskMetrics| {
            published
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone_from(m);
        };
        publish(&metrics);
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
        let mut stores = Vec::new();
        for name in &cfg.stores {
            let topic = changelog_topic(&cfg.app, name);
            ensure_changelog(log, &topic, partitions)?;
            let dir = cfg
                .state_dir
                .join(&cfg.app)
                .join(format!("{}-{}", cfg.topic, cfg.partition))
                .join(name);
            let mut store = KvStore::open(name, &dir, &topic, PartitionId(cfg.partition))?;
            let before = metrics.restored_records;
            let stats = store.restore_with_progress(log, |s| {
                metrics.restored_records = before + s.records;
                metrics.restore_rate = s.rate;
                publish(&metrics);
            })?;
            metrics.restored_records = before + stats.records;
            metrics.restore_rate = stats.rate;
            stores.push(store);
        }
        let committed = groups.committed(&cfg.app);
        let mut inputs = Vec::new();
        for t in cfg.co_topics.iter().chain(std::iter::once(&cfg.topic)) {
            let n = log.partition_count(t)?;
            if n != partitions {
                return Err(EngineError::Plan(format!(
                    "`{t}` has {n} partitions and `{}` has {partitions}: inputs of one task must be co-partitioned",
                    cfg.topic
                )));
            }
            let earliest = log.earliest_offset(t, PartitionId(cfg.partition))?;
            let position = match committed.get(&(t.to_string(), cfg.partition)) {
                Some(c) if c.offset < earliest => {
                    // Retention deleted records this application never processed (Kafka
                    // Streams' `auto.offset.reset=earliest`): go on from what is left.
                    tracing::warn!(topic = %t, partition = cfg.partition, committed = %c.offset, earliest = %earliest,
                        "the committed offset is below the log start; records were deleted before they were processed");
                    earliest
                }
                Some(c) => c.offset,
                None => earliest,
            };
            inputs.push(Input {
                topic: Arc::from(t.as_str()),
                position,
                committed: position,
                fetched: Vec::new(),
                fetched_at: 0,
            });
        }
        metrics.state = TaskState::Running;
        let mut task = Task {
            log: log.clone(),
            groups: groups.clone(),
            output,
            stores,
            inputs,
            sinks: Sinks::new(log),
            interval_timestamps: Vec::new(),
            interval_start: Instant::now(),
            failed: false,
            poisoned: Vec::new(),
            metrics,
            published,
            last_publish: Instant::now(),
            interval_poisoned: 0,
            membership,
            cfg,
        };
        task.publish();
        Ok(task)
    }

    /// The next offset to process of the main input topic.
    pub fn position(&self) -> Offset {
        self.inputs.last().map(|i| i.position).unwrap_or_default()
    }

    /// Commits so far.
    pub fn commits(&self) -> u64 {
        self.metrics.commits
    }

    /// This task's metrics as of now.
    pub fn metrics(&self) -> &TaskMetrics {
        &self.metrics
    }

    /// Copies the metrics into the shared slot (with the main input's lag as of now).
    fn publish(&mut self) {
        let p = PartitionId(self.cfg.partition);
        let position = self.position();
        if let Ok(end) = self.log.latest_offset(&self.cfg.topic, p) {
            self.metrics.lag = (end.0 - position.0).max(0);
        }
        self.metrics.position = position.0;
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone_from(&self.metrics);
        self.last_publish = Instant::now();
    }

    /// Marks the task stopped (or failed) in its published metrics.
    pub fn set_state(&mut self, state: TaskState) {
        self.metrics.state = state;
        self.publish();
    }

    /// Reads and processes one batch (empty when caught up); commits when the interval is due.
    /// Returns the number of input records processed.
    pub fn run_once(&mut self, processor: &mut dyn Processor) -> Result<usize> {
        if self.failed {
            return Err(EngineError::Internal(
                "this task failed (a batch or a commit); start it again".into(),
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
        let pending_state: usize = self.stores.iter().map(KvStore::pending_len).sum();
        let buffered = self.sinks.len + pending_state;
        self.metrics.buffered_max = self.metrics.buffered_max.max(buffered as u64);
        let full = buffered >= self.cfg.max_buffered_records;
        if full || self.interval_start.elapsed() >= self.cfg.commit_interval {
            self.commit()?;
        }
        if self.last_publish.elapsed() >= PUBLISH_EVERY {
            // Also while nothing commits (an idle or stuck input), so lag stays current.
            self.publish();
        }
        Ok(n)
    }

    /// Refills input `i`'s fetched records when they are used up; false when there is nothing
    /// new to read.
    fn fetch(&mut self, i: usize) -> Result<bool> {
        let input = &mut self.inputs[i];
        if input.fetched_at < input.fetched.len() {
            return Ok(true);
        }
        input.fetched.clear();
        input.fetched_at = 0;
        let at = input.position;
        let f = self.log.read_isolated(
            &input.topic,
            PartitionId(self.cfg.partition),
            at,
            FETCH_BYTES,
            Isolation::ReadCommitted,
        )?;
        for r in f.records() {
            let r = r.map_err(weir_log::LogError::from)?;
            // Zero-copy: keys and values are slices of the fetched bytes.
            input.fetched.push(InputRecord {
                topic: input.topic.clone(),
                partition: self.cfg.partition,
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key.map(|k| f.batches.slice_ref(k)),
                value: r.value.map(|v| f.batches.slice_ref(v)),
            });
        }
        if input.fetched.is_empty() && !f.batches.is_empty() {
            // Only control batches or aborted records: step over them.
            input.position = at.max(f.next_offset().min(f.last_stable));
        }
        Ok(!input.fetched.is_empty())
    }

    /// Processes the next batch of input `i`; returns the records processed.
    fn process_input(&mut self, i: usize, processor: &mut dyn Processor) -> Result<usize> {
        if !self.fetch(i)? {
            return Ok(0);
        }
        let started = Instant::now();
        let fetched = std::mem::take(&mut self.inputs[i].fetched);
        let from = self.inputs[i].fetched_at;
        let to = fetched.len().min(from + self.cfg.max_batch_records.max(1));
        let batch = &fetched[from..to];
        self.poisoned.clear();
        let mut ctx = TaskContext {
            stores: &mut self.stores,
            sinks: &mut self.sinks,
            input: batch,
            poisoned: &mut self.poisoned,
            metrics: &mut self.metrics,
        };
        let mut result = processor.process(&mut ctx);
        if result.is_ok() && !ctx.poisoned.is_empty() {
            let mut poisoned = std::mem::take(ctx.poisoned);
            // A record is poison once, whichever operators failed on it.
            poisoned.sort_by_key(|(i, _)| *i);
            poisoned.dedup_by_key(|(i, _)| *i);
            result = processor.poisoned(&mut ctx, &poisoned);
            self.interval_poisoned += poisoned.len() as u64;
        }
        let next = batch.last().map(|r| r.offset.plus(1));
        let n = batch.len();
        if let Err(e) = result {
            // The batch's partial outputs and state writes are in the open interval: nothing of
            // this interval may commit. Like a failed commit, the task must be started again.
            self.failed = true;
            self.inputs[i].fetched = fetched;
            return Err(e);
        }
        self.interval_timestamps
            .extend(batch.iter().map(|r| r.timestamp.0));
        let input = &mut self.inputs[i];
        input.fetched = fetched;
        input.fetched_at = to;
        if let Some(next) = next {
            input.position = next;
        }
        self.metrics.records_in += n as u64;
        self.metrics.batches += 1;
        self.metrics.busy_ns += started.elapsed().as_nanos() as u64;
        Ok(n)
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
        let moved = self.inputs.iter().any(|i| i.position != i.committed);
        if !moved && self.sinks.len == 0 {
            return Ok(());
        }
        let started = Instant::now();
        match self.try_commit() {
            Ok(last_changelog) => {
                for (store, last) in self.stores.iter_mut().zip(last_changelog) {
                    store.committed(last)?;
                }
                for i in &mut self.inputs {
                    i.committed = i.position;
                }
                self.metrics.record_commit(started.elapsed());
                let now = self.log.now().0;
                self.metrics
                    .record_end_to_end(now, &self.interval_timestamps);
                self.metrics.poison_records += std::mem::take(&mut self.interval_poisoned);
                self.interval_timestamps.clear();
                self.publish();
                self.purge_repartition_inputs();
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                self.metrics.state = TaskState::Failed(e.to_string());
                self.publish();
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
        for input in &self.inputs {
            if !input.topic.starts_with(&prefix) {
                continue;
            }
            let pos = input.committed;
            let start = self.log.earliest_offset(&input.topic, p).unwrap_or(pos);
            if pos.0 - start.0 < PURGE_MIN_RECORDS {
                continue;
            }
            if let Err(e) = self.log.delete_records(&input.topic, p, pos) {
                tracing::warn!(topic = %input.topic, partition = %p, error = %e, "purging a repartition topic failed");
            }
        }
    }

    /// Writes the interval; returns, per store (in order), the offset of its last changelog
    /// record written (`None` when it wrote none).
    fn try_commit(&mut self) -> Result<Vec<Option<Offset>>> {
        let offsets: Vec<((String, u32), Offset)> = self
            .inputs
            .iter()
            .map(|i| ((i.topic.to_string(), self.cfg.partition), i.position))
            .collect();
        let last_changelog;
        let outputs = self.sinks.take();
        match &mut self.output {
            Output::Transactional(p) => {
                p.begin()?;
                // Every partition of this transaction, added in one durable step.
                let mut all: Vec<(String, u32)> = outputs
                    .iter()
                    .map(|(t, p, _)| (t.to_string(), *p))
                    .collect();
                for store in self.stores.iter_mut() {
                    if !store.stage().is_empty() {
                        let (t, p) = store.changelog();
                        all.push((t.to_string(), p.0));
                    }
                }
                let offsets_partition =
                    weir_coord::offsets::OffsetStore::partition_of(&self.cfg.app).0;
                all.push((
                    weir_coord::offsets::OFFSETS_TOPIC.to_string(),
                    offsets_partition,
                ));
                p.add_partitions(&all)?;
                for (topic, partition, records) in &outputs {
                    in_batches(&self.log, topic, records, |chunk| {
                        Ok(p.submit(topic, PartitionId(*partition), chunk)?)
                    })?;
                }
                last_changelog = write_changelogs(&self.log, &mut self.stores, |t, part, r| {
                    Ok(p.send_to(t, part, r)?.last_offset)
                })?;
                p.send_offsets_to_transaction(&self.cfg.app, &offsets)?;
                p.commit()?;
            }
            Output::Idempotent(p) => {
                for (topic, partition, records) in &outputs {
                    in_batches(&self.log, topic, records, |chunk| {
                        p.send_to(topic, PartitionId(*partition), chunk)?;
                        Ok(())
                    })?;
                }
                last_changelog = write_changelogs(&self.log, &mut self.stores, |t, part, r| {
                    Ok(p.send_to(t, part, r)?.last_offset)
                })?;
                let entries: Vec<((String, u32), Offset, String)> = offsets
                    .iter()
                    .map(|(tp, o)| (tp.clone(), *o, String::new()))
                    .collect();
                // Outputs and changelog are written: only the offsets remain. A rebalance of
                // the application's group (someone joined it) is waited out and the commit
                // retried with the new generation, rather than failing the task — which
                // would replay the interval into its state a second time.
                let deadline = Instant::now() + REBALANCE_WAIT;
                loop {
                    let (member, generation) = self
                        .membership
                        .as_ref()
                        .and_then(|m| m.lock().unwrap_or_else(|e| e.into_inner()).clone())
                        .unwrap_or_else(|| (String::new(), -1));
                    match self
                        .groups
                        .commit_offsets(&self.cfg.app, generation, &member, &entries)
                    {
                        Ok(()) => break,
                        Err(
                            weir_coord::CoordError::RebalanceInProgress(_)
                            | weir_coord::CoordError::IllegalGeneration { .. }
                            | weir_coord::CoordError::UnknownMember { .. },
                        ) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(last_changelog)
    }
}

/// Bytes of records per transactional batch: well under the default `max.message.bytes`.
const OUTPUT_BATCH_BYTES: usize = 512 * 1024;

/// Hands `records` for `topic` to `write` in runs that fit one batch of that topic.
fn in_batches(
    log: &Log,
    topic: &str,
    records: &[Record],
    mut write: impl FnMut(&[Record]) -> Result<()>,
) -> Result<()> {
    for chunk in chunks(records, batch_limit(log, topic)?) {
        write(chunk)?;
    }
    Ok(())
}

/// Writes every store's staged changelog records with `send` (which returns the offset of the
/// last record it wrote); returns, per store, the last offset written (`None`: nothing staged).
fn write_changelogs(
    log: &Log,
    stores: &mut [KvStore],
    mut send: impl FnMut(&str, PartitionId, &[Record]) -> Result<Offset>,
) -> Result<Vec<Option<Offset>>> {
    let mut last_changelog = vec![None; stores.len()];
    for (i, store) in stores.iter_mut().enumerate() {
        if store.stage().is_empty() {
            continue;
        }
        let (topic, partition) = store.changelog();
        in_batches(log, topic, store.staged(), |chunk| {
            last_changelog[i] = Some(send(topic, partition, chunk)?);
            Ok(())
        })?;
    }
    Ok(last_changelog)
}

/// Bytes of records one output batch may carry on `topic`: `OUTPUT_BATCH_BYTES`, or less when
/// the topic's `max.message.bytes` is smaller (less the batch header and some slack).
fn batch_limit(log: &Log, topic: &str) -> Result<usize> {
    let max = log.topic_config(topic)?.max_message_bytes;
    Ok(OUTPUT_BATCH_BYTES.min(max.saturating_sub(1024)).max(1))
}

/// An upper bound of a record's encoded size in a batch: its key, value and headers plus the
/// varint framing (at most 5 bytes per length or delta, a few of them).
fn encoded_size(r: &Record) -> usize {
    let headers: usize = r
        .headers
        .iter()
        .map(|h| 10 + h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
        .sum();
    32 + r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len()) + headers
}

/// Splits records into runs whose encoded size stays under `limit` bytes (a record larger than
/// that goes alone, and the log rejects it with `RecordTooLarge`, naming the topic).
fn chunks(records: &[Record], limit: usize) -> Vec<&[Record]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0usize, 0usize);
    for (i, r) in records.iter().enumerate() {
        let size = encoded_size(r);
        if i > start && bytes + size > limit {
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
