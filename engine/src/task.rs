//! A task: one partition of a sub-plan's co-partitioned inputs, its state stores, its clock,
//! and its commits.
//!
//! The loop is read → process → (every commit interval) commit. Under exactly-once the commit
//! is one log transaction of the task's own transactional producer (id `APP.TASK.PARTITION`):
//! the interval's outputs and dead letters, its stores' changelog records and the consumed
//! input offsets (as the group `APP`'s committed offsets, with the task's event time in their
//! metadata) commit together or not at all; only then are the stores' writes applied to
//! RocksDB. Starting a task fences any older instance of it (epoch bump) and aborts what that
//! instance left open, restores the stores' changelog tails, and resumes at the committed
//! offsets and event time — so the output is exactly that of a run without failures.
//! At-least-once skips the transaction: outputs and changelog first, then the offsets.
//!
//! Commits are in `commit.rs`; choosing and fetching input batches in `input.rs`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_coord::{GroupCoordinator, TransactionCoordinator, TransactionalProducer};
use weir_log::{Log, Offset, PartitionId, Producer, Timestamp};

use crate::error::{EngineError, Result};
use crate::input::{pick, Input};
use crate::metrics::{IntervalLatency, TaskMetrics, TaskMetricsSlot, TaskState};
use crate::output::Sinks;
use crate::plan::{InputKind, InputSpec, StoreSpec};
use crate::poison::{self, ErrorPolicy};
use crate::processor::{panic_message, Poison, Processor, RetryPolicy, TaskContext};
use crate::state::{ensure_changelog_of, KvStore};
use crate::time::{InputTime, TaskTime, TimeSource};

/// Default of [`TaskConfig::max_buffered_records`]: about 100 MB at 1 KB records.
pub const MAX_BUFFERED_RECORDS: usize = 100_000;

/// Default of [`TaskConfig::idle_timeout`]: an input silent this long stops holding the
/// watermark back.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a pipeline reads an input it has never committed an offset for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// The oldest record still in the log (the default).
    #[default]
    Earliest,
    /// Only records written from now on.
    Latest,
    /// The first record with a timestamp at or after this (ms since the epoch).
    Timestamp(i64),
}

/// Delivery guarantee of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarantee {
    /// Outputs, state and input offsets commit atomically (the default).
    ExactlyOnce,
    /// Outputs may repeat after a crash; nothing is lost.
    AtLeastOnce,
}

/// Settings of a task.
#[derive(Debug, Clone)]
pub struct TaskConfig {
    /// Application id: the consumer group and the first part of internal names.
    pub app: String,
    /// The sub-plan's name (part of the transactional id and the state directory).
    pub task: String,
    /// Its co-partitioned inputs (the first decides the partition count).
    pub inputs: Vec<InputSpec>,
    /// Input partition.
    pub partition: u32,
    /// The stores the processor uses.
    pub stores: Vec<StoreSpec>,
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
    /// Poison records: fail, skip or dead-letter.
    pub on_error: ErrorPolicy,
    /// Calls of a failing user function before its record is poison.
    pub retry: RetryPolicy,
    /// An input silent this long stops holding the watermark back.
    pub idle_timeout: Duration,
    /// The RocksDB memory the task's stores share with the rest of the process (`None`: each
    /// store sizes its own).
    pub state_memory: Option<crate::state::StateMemory>,
    /// The plan's internal topics this task writes (repartition topics): it sends its
    /// watermark to each of their partitions.
    pub internal_outputs: Vec<String>,
    /// For internal inputs (repartition topics): how many upstream tasks write each, when
    /// not as many as its partitions (a stream re-keyed to a table's or another stream's
    /// partition count). Its watermark is the minimum of theirs.
    pub internal_writers: Vec<(String, u32)>,
    /// Where to start reading an input without a committed offset (internal topics are read
    /// from their start).
    pub start_from: StartFrom,
    /// The process's queues, when an input is a queue.
    pub queues: Option<weir_queue::Queues>,
}

impl TaskConfig {
    /// A task of one stream input `topic` (named after it), exactly-once, 100 ms commits,
    /// failing on poison records.
    pub fn new(app: &str, topic: &str, partition: u32, state_dir: impl Into<PathBuf>) -> Self {
        TaskConfig {
            app: app.to_string(),
            task: crate::names::part_from(topic),
            inputs: vec![InputSpec::topic(topic, InputKind::Stream)],
            partition,
            stores: Vec::new(),
            commit_interval: Duration::from_millis(100),
            guarantee: Guarantee::ExactlyOnce,
            state_dir: state_dir.into(),
            max_batch_records: 1000,
            max_buffered_records: MAX_BUFFERED_RECORDS,
            on_error: ErrorPolicy::Fail,
            retry: RetryPolicy::default(),
            idle_timeout: IDLE_TIMEOUT,
            state_memory: None,
            internal_outputs: Vec::new(),
            internal_writers: Vec::new(),
            start_from: StartFrom::Earliest,
            queues: None,
        }
    }

    /// `topic/partition` of the first input: how metrics and logs name the task.
    pub fn label(&self) -> String {
        let topic = self.inputs.first().map_or("", |i| i.topic.as_str());
        format!("{topic}/{}", self.partition)
    }
}

/// The queue a queue input consumes, from the process's queues.
fn queue_of(cfg: &TaskConfig, name: &str) -> Result<Arc<weir_queue::Queue>> {
    let queues = cfg.queues.as_ref().ok_or_else(|| {
        EngineError::Plan(format!(
            "input `{name}` is a queue: run the plan with the process's queues (RunOptions::queues)"
        ))
    })?;
    Ok(queues.get(name)?)
}

/// Where a new application starts reading partition `p` of `topic`.
fn start_position(log: &Log, topic: &str, p: PartitionId, from: StartFrom) -> Result<Offset> {
    Ok(match from {
        StartFrom::Earliest => log.earliest_offset(topic, p)?,
        StartFrom::Latest => log.latest_offset(topic, p)?,
        StartFrom::Timestamp(ms) => match log.offset_for_timestamp(topic, p, Timestamp(ms))? {
            Some(o) => o,
            None => log.latest_offset(topic, p)?,
        },
    })
}

pub(crate) enum Output {
    Transactional(TransactionalProducer),
    Idempotent(Producer),
}

/// What the task asks of its processor.
#[derive(Debug, Clone, Copy)]
enum Call {
    /// Process fetched records `from..to` of input `input`.
    Batch {
        input: usize,
        from: usize,
        to: usize,
    },
    /// Time moved (or a tick).
    Time,
    /// A commit is next.
    Flush,
}

/// Longest time between two publications of a task's metrics.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// How a task commits offsets under at-least-once: as a standalone commit, or as the
/// member of the application's consumer group.
pub type GroupMembership = Arc<std::sync::Mutex<Option<(String, i32)>>>;

/// A running task.
pub struct Task {
    pub(crate) cfg: TaskConfig,
    pub(crate) log: Log,
    pub(crate) groups: GroupCoordinator,
    pub(crate) output: Output,
    pub(crate) stores: Vec<KvStore>,
    pub(crate) inputs: Vec<Input>,
    /// Outputs of the open interval.
    pub(crate) sinks: Sinks,
    /// Input timestamps of the open interval (for end-to-end latency at commit), bounded.
    pub(crate) latency: IntervalLatency,
    pub(crate) interval_start: Instant,
    /// A batch or a commit failed: the task must be started again.
    pub(crate) failed: bool,
    poisoned: Vec<Poison>,
    pub(crate) metrics: TaskMetrics,
    published: TaskMetricsSlot,
    last_publish: Instant,
    /// Poison records of the open interval (counted in the metrics when it commits).
    pub(crate) interval_poisoned: u64,
    pub(crate) membership: Option<GroupMembership>,
    pub(crate) time: TaskTime,
    /// When the processor last had a processing-time tick.
    last_tick: Instant,
    /// The last watermark sent downstream (watermark, idle, when).
    pub(crate) watermark_sent: Option<(i64, bool, Instant)>,
    dlq: String,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("app", &self.cfg.app)
            .field("task", &self.cfg.task)
            .field("partition", &self.cfg.partition)
            .field("position", &self.position())
            .field("commits", &self.metrics.commits)
            .finish()
    }
}

impl Task {
    /// Starts (or restarts) a task: fences an older instance, restores state, resumes at the
    /// committed offsets and event time.
    pub fn start(
        log: &Log,
        groups: &GroupCoordinator,
        txns: &TransactionCoordinator,
        cfg: TaskConfig,
    ) -> Result<Task> {
        let slot = Arc::new(std::sync::Mutex::new(TaskMetrics::new(&cfg.label())));
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
        let first = cfg
            .inputs
            .first()
            .ok_or_else(|| EngineError::Plan(format!("task `{}` reads nothing", cfg.task)))?;
        let partitions = first.partitions(log)?;
        if cfg.partition >= partitions {
            return Err(EngineError::Plan(format!(
                "topic `{}` has {partitions} partitions; task for partition {} cannot run",
                first.topic, cfg.partition
            )));
        }
        // Counters carry over from an earlier instance of this task (a restart); the restore
        // figures are this start's.
        let mut metrics = published.lock().unwrap_or_else(|e| e.into_inner()).clone();
        metrics.state = TaskState::Restoring;
        metrics.restored_records = 0;
        // Operators count their open windows again from their stores.
        metrics.open_windows = 0;
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
                let id = crate::names::transactional_id(&cfg.app, &cfg.task, cfg.partition);
                Output::Transactional(TransactionalProducer::new(
                    txns,
                    &id,
                    Duration::from_secs(60),
                )?)
            }
            Guarantee::AtLeastOnce => Output::Idempotent(Producer::new(log)?),
        };
        let mut stores = Vec::new();
        for spec in &cfg.stores {
            let topic = crate::names::changelog_topic(&cfg.app, &spec.name);
            ensure_changelog_of(log, &topic, partitions, spec.kind)?;
            let dir = cfg
                .state_dir
                .join(&cfg.app)
                .join(format!("{}.{}", cfg.task, cfg.partition))
                .join(&spec.name);
            let open = || {
                KvStore::open_spec(
                    spec,
                    &dir,
                    &topic,
                    PartitionId(cfg.partition),
                    cfg.state_memory.as_ref(),
                )
            };
            let mut store = open()?;
            if store.covered_offset() > log.latest_offset(&topic, PartitionId(cfg.partition))? {
                // Local state from past the changelog's end (the changelog was deleted and
                // made again, by a reset with another state directory, say): not ours.
                tracing::warn!(store = %spec.name, dir = %dir.display(),
                    "local state is ahead of its changelog; rebuilding it from the changelog");
                drop(store);
                std::fs::remove_dir_all(&dir).map_err(|e| EngineError::StateCorrupted {
                    store: spec.name.clone(),
                    reason: format!("cannot remove {}: {e}", dir.display()),
                })?;
                store = open()?;
            }
            store.check_changelog(log)?;
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
        let now = log.now();
        let mut clocks = Vec::with_capacity(cfg.inputs.len());
        for i in &cfg.inputs {
            clocks.push(InputTime {
                spec: i.event_time,
                holds_watermark: i.kind == InputKind::Stream,
                // One upstream task per partition of the topic it re-keys.
                writers: match (
                    i.internal,
                    cfg.internal_writers.iter().find(|w| w.0 == i.topic),
                ) {
                    (false, _) => None,
                    (true, Some((_, n))) => Some(*n),
                    (true, None) => Some(log.partition_count(&i.topic)?),
                },
            });
        }
        let mut time = TaskTime::new(&clocks, cfg.idle_timeout, now);
        let committed = groups.committed(&cfg.app);
        let mut inputs = Vec::new();
        for (n, spec) in cfg.inputs.iter().enumerate() {
            let t = &spec.topic;
            let count = spec.partitions(log)?;
            if count != partitions {
                return Err(EngineError::Plan(format!(
                    "`{t}` has {count} partitions and `{}` has {partitions}: inputs of one task must be co-partitioned",
                    first.topic
                )));
            }
            let earliest = match spec.generated {
                Some(_) => Offset(0),
                None => log.earliest_offset(t, PartitionId(cfg.partition))?,
            };
            let c = committed.get(&(t.to_string(), cfg.partition));
            if let Some(c) = c {
                time.restore(n, &c.metadata);
            }
            let position = match c {
                Some(c) if c.offset < earliest && !spec.queue => {
                    // Retention deleted records this application never processed (Kafka
                    // Streams' `auto.offset.reset=earliest`): go on from what is left.
                    tracing::warn!(topic = %t, partition = cfg.partition, committed = %c.offset, earliest = %earliest,
                        "the committed offset is below the log start; records were deleted before they were processed");
                    earliest
                }
                Some(c) => c.offset,
                None if spec.internal || spec.generated.is_some() || spec.queue => earliest,
                None => start_position(log, t, PartitionId(cfg.partition), cfg.start_from)?,
            };
            let mut input = Input::new(spec.clone(), position);
            if spec.queue {
                input.queue = Some(crate::input::QueueInput::new(
                    queue_of(&cfg, t)?,
                    cfg.commit_interval,
                ));
            }
            if c.is_none() {
                // Never committed: the first commit records where the application started, so
                // a restart resumes there (`--from latest` must not skip what came meanwhile).
                input.committed = Offset(-1);
            }
            inputs.push(input);
        }
        metrics.state = TaskState::Running;
        let mut task = Task {
            log: log.clone(),
            groups: groups.clone(),
            output,
            stores,
            inputs,
            sinks: Sinks::new(log),
            latency: IntervalLatency::new(now.0),
            interval_start: Instant::now(),
            failed: false,
            poisoned: Vec::new(),
            metrics,
            published,
            last_publish: Instant::now(),
            interval_poisoned: 0,
            membership,
            time,
            last_tick: Instant::now(),
            watermark_sent: None,
            dlq: crate::names::dead_letter_topic(&cfg.app),
            cfg,
        };
        task.publish();
        if task.inputs.iter().any(|i| i.committed == Offset(-1)) {
            // A new application: where it starts (`--from latest`, a timestamp) is committed
            // now, before anything could make a restart look for "latest" again.
            task.commit_flushed()?;
        }
        Ok(task)
    }

    /// The next offset to process of the first input.
    pub fn position(&self) -> Offset {
        self.inputs.first().map(|i| i.position).unwrap_or_default()
    }

    /// Commits so far.
    pub fn commits(&self) -> u64 {
        self.metrics.commits
    }

    /// This task's metrics as of now.
    pub fn metrics(&self) -> &TaskMetrics {
        &self.metrics
    }

    /// Copies the metrics into the shared slot (with the first input's lag as of now).
    pub(crate) fn publish(&mut self) {
        let p = PartitionId(self.cfg.partition);
        let position = self.position();
        if let Some(first) = self.inputs.first() {
            let end = match first.spec.generated {
                Some(g) => g.rows_of(p.0).map(|n| Offset(n as i64)),
                None => self.log.latest_offset(&first.topic, p).ok(),
            };
            if let Some(end) = end {
                self.metrics.lag = (end.0 - position.0).max(0);
            }
        }
        self.metrics.position = position.0;
        self.metrics.watermark = self.time.watermark().map(|t| t.0);
        self.metrics.stream_time = self.time.stream_time().map(|t| t.0);
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

    /// Reads and processes one batch (none when caught up), gives the processor its time
    /// updates, and commits when the interval is due. Returns the input records processed.
    pub fn run_once(&mut self, processor: &mut dyn Processor) -> Result<usize> {
        if self.failed {
            return Err(EngineError::Internal(
                "this task failed (a batch or a commit); start it again".into(),
            ));
        }
        let mut n = 0;
        let now = self.log.now();
        for i in 0..self.inputs.len() {
            if self.inputs[i].fetch(&self.log, self.cfg.partition)? {
                // Records waiting their turn: the input is not idle, however long the others'
                // backlog takes.
                self.time.active(i, now);
            }
            self.apply_watermarks(i);
        }
        if let Some(p) = pick(&self.inputs, self.cfg.max_batch_records) {
            n = self.process_batch(p.input, p.from, p.to, processor)?;
        }
        let now = self.log.now();
        let moved = self.time.advance(now);
        let tick = self.last_tick.elapsed() >= self.cfg.commit_interval;
        if moved || tick || self.time.take_again() {
            self.last_tick = Instant::now();
            self.on_time(processor)?;
        }
        // Outputs and state writes wait in memory for the commit: commit early rather than let
        // a fast input grow them without bound.
        let pending_state: usize = self.stores.iter().map(KvStore::pending_len).sum();
        let buffered = self.sinks.len + pending_state;
        self.metrics.buffered_max = self.metrics.buffered_max.max(buffered as u64);
        let full = buffered >= self.cfg.max_buffered_records;
        if full || self.interval_start.elapsed() >= self.cfg.commit_interval {
            self.commit(processor)?;
        }
        if self.last_publish.elapsed() >= PUBLISH_EVERY {
            // Also while nothing commits (an idle or stuck input), so lag stays current.
            self.publish();
        }
        Ok(n)
    }

    /// Commits the open interval: first the processor flushes (caches to stores, coalesced
    /// results out), then outputs, changelogs and the input offsets commit, atomically under
    /// exactly-once. After a failure the task must be started again.
    pub fn commit(&mut self, processor: &mut dyn Processor) -> Result<()> {
        if !self.failed {
            self.call(Call::Flush, processor)?;
        }
        self.commit_flushed()
    }

    /// Calls the processor with a batch of `input`'s fetched records, a time update or a
    /// flush, then applies the error policy to what it reported as poison. A failure (an error
    /// or a panic) leaves the interval unusable: the task must restart.
    fn call(&mut self, call: Call, processor: &mut dyn Processor) -> Result<()> {
        let (index, from, to) = match call {
            Call::Batch { input, from, to } => (input, from, to),
            Call::Time | Call::Flush => (0, 0, 0),
        };
        let batch_call = matches!(call, Call::Batch { .. });
        let fetched = match batch_call {
            true => std::mem::take(&mut self.inputs[index].fetched),
            false => Vec::new(),
        };
        let batch = &fetched[from..to];
        self.poisoned.clear();
        let mut ctx = TaskContext {
            stores: &mut self.stores,
            sinks: &mut self.sinks,
            input: batch,
            input_index: index,
            poisoned: &mut self.poisoned,
            metrics: &mut self.metrics,
            time: &mut self.time,
            retry: self.cfg.retry,
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match call {
            Call::Batch { .. } => processor.process(&mut ctx),
            Call::Time => processor.on_time(&mut ctx),
            Call::Flush => processor.flush(&mut ctx),
        }));
        let mut result = match outcome {
            Ok(r) => r,
            Err(panic) => Err(EngineError::UserPanic(panic_message(&panic))),
        };
        if result.is_ok() && !self.poisoned.is_empty() {
            result = self.handle_poison(batch);
        }
        if batch_call {
            self.inputs[index].fetched = fetched;
        }
        if result.is_err() {
            // The batch's partial outputs and state writes are in the open interval: nothing
            // of this interval may commit. Like a failed commit, the task must start again.
            self.failed = true;
        }
        result
    }

    /// Processes `input`'s fetched records `from..to`; returns how many.
    fn process_batch(
        &mut self,
        input: usize,
        from: usize,
        to: usize,
        processor: &mut dyn Processor,
    ) -> Result<usize> {
        let started = Instant::now();
        self.call(Call::Batch { input, from, to }, processor)?;
        let now = self.log.now();
        let i = &mut self.inputs[input];
        let batch = &i.fetched[from..to];
        if self.time.source(input) == TimeSource::RecordTimestamp && !self.time.has_writers(input) {
            if let Some(max) = batch.iter().map(|r| r.timestamp).max() {
                self.time.observe(input, max);
            }
        }
        self.time.active(input, now);
        for r in batch {
            self.latency.record(r.timestamp.0);
        }
        // A queue delivers offsets out of order (redeliveries): its position is the highest
        // processed, kept for the event time committed with it.
        if let Some(last) = batch.iter().map(|r| r.offset).max() {
            i.position = i.position.max(last.plus(1));
        }
        i.processed(from, to);
        i.fetched_at = to;
        self.apply_watermarks(input);
        let n = to - from;
        self.metrics.records_in += n as u64;
        self.metrics.batches += 1;
        self.metrics.busy_ns += started.elapsed().as_nanos() as u64;
        Ok(n)
    }

    /// Takes in the upstream watermarks that input `i`'s position has passed.
    fn apply_watermarks(&mut self, i: usize) {
        for (writer, wm, idle) in self.inputs[i].passed_watermarks() {
            self.time.observe_writer(i, writer, wm, idle);
        }
    }

    /// Gives the processor a time update (watermark moved, or a processing-time tick).
    fn on_time(&mut self, processor: &mut dyn Processor) -> Result<()> {
        let started = Instant::now();
        self.call(Call::Time, processor)?;
        self.metrics.busy_ns += started.elapsed().as_nanos() as u64;
        Ok(())
    }

    /// Applies the error policy to the batch's poison reports, inside the open interval.
    fn handle_poison(&mut self, batch: &[crate::processor::InputRecord]) -> Result<()> {
        let mut poisoned = std::mem::take(&mut self.poisoned);
        poison::dedup(&mut poisoned);
        let now = self.log.now();
        let mut result = Ok(());
        for p in &poisoned {
            let source = match p.origin.index() {
                Some(i) => Some(batch.get(i).ok_or_else(|| {
                    EngineError::Internal(format!("poison index {i} is outside the batch"))
                })?),
                None => None,
            };
            if p.late {
                let r = poison::dead_letter(source, p, &self.cfg.task, now);
                self.sinks.emit(&self.dlq, r)?;
                continue;
            }
            self.interval_poisoned += 1;
            match self.cfg.on_error {
                ErrorPolicy::Fail => {
                    result = Err(poison::failure(source, p, &self.cfg.task));
                    break;
                }
                ErrorPolicy::Skip => {}
                ErrorPolicy::DeadLetter => {
                    let r = poison::dead_letter(source, p, &self.cfg.task, now);
                    self.sinks.emit(&self.dlq, r)?;
                }
            }
        }
        poisoned.clear();
        self.poisoned = poisoned;
        result
    }
}
