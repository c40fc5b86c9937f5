//! Runs a [`Plan`]: one task per (sub-plan, partition), dealt to a small pool of worker
//! threads; each task commits outputs, state and offsets every commit interval (in one
//! transaction under exactly-once). Internal topics are created with the partition count of
//! the topic they follow; unknown source or sink topics are a clear error before anything
//! runs, and so is an application whose internal topics still carry the names of an earlier
//! version.
//!
//! The running pipeline is a member of the consumer group named by its application id, owning
//! every input partition (`member.rs`). A task that fails with a transient error (a full
//! append queue, a full disk, a rebalance) is started again after a capped exponential
//! backoff — which aborts its open transaction, restores its stores and resumes at the
//! committed offsets — at most `MAX_TASK_RESTARTS` times in a row. Each (re)start builds the
//! task's processor afresh from the plan, on the task's worker thread.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weir_coord::{CoordError, GroupCoordinator, TransactionCoordinator};
use weir_log::{Log, LogError};

use crate::error::{EngineError, Result};
use crate::member::GroupMember;
use crate::metrics::{Metrics, MetricsSnapshot, TaskMetricsSlot, TaskState};
use crate::plan::{Plan, TaskSetup};
use crate::poison::ErrorPolicy;
use crate::processor::{Processor, RetryPolicy};
use crate::task::{GroupMembership, Guarantee, Task, TaskConfig};

/// How long an idle task sleeps before polling its partition again.
const IDLE_SLEEP: Duration = Duration::from_millis(5);

/// Settings for running a plan.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Poison records: fail, skip or dead-letter (default).
    pub on_error: ErrorPolicy,
    /// Calls of a failing user function (in a `try_` operator) before its record is poison.
    pub retry: RetryPolicy,
    /// `processing.guarantee`.
    pub guarantee: Guarantee,
    /// How often each task commits (and ticks its processor's processing-time timers).
    pub commit_interval: Duration,
    /// Where RocksDB state lives.
    pub state_dir: PathBuf,
    /// Most input records per processed batch.
    pub max_batch_records: usize,
    /// Outputs plus state writes a task buffers before committing early (bounds memory).
    pub max_buffered_records: usize,
    /// Worker threads the tasks share (default: the machine's cores).
    pub workers: usize,
    /// An input silent this long (processing time) stops holding the watermark back.
    pub idle_timeout: Duration,
    /// RocksDB block cache and memtables of every store, under one cap (shared by clones of
    /// these options: pipelines run with clones share it).
    pub state_memory: crate::state::StateMemory,
    /// Where a new application starts reading its inputs (earliest by default); an
    /// application that committed offsets resumes from them.
    pub start_from: crate::task::StartFrom,
    /// Where to write a [`MetricsSnapshot`] (JSON) every second and at stop, for
    /// `weir pipeline describe`; `None` writes nothing.
    pub metrics_file: Option<PathBuf>,
    /// The process's queues, for plans that consume queues ([`crate::InputSpec::queue`]):
    /// one `Queues` per log and process, shared with whatever else serves them.
    pub queues: Option<weir_queue::Queues>,
}

impl RunOptions {
    /// Exactly-once, 100 ms commits, dead letters, state under `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> RunOptions {
        RunOptions {
            on_error: ErrorPolicy::DeadLetter,
            retry: RetryPolicy::default(),
            guarantee: Guarantee::ExactlyOnce,
            commit_interval: Duration::from_millis(100),
            state_dir: state_dir.into(),
            max_batch_records: 1000,
            max_buffered_records: crate::task::MAX_BUFFERED_RECORDS,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            idle_timeout: crate::task::IDLE_TIMEOUT,
            state_memory: crate::state::StateMemory::new(crate::state::STATE_MEMORY_BYTES),
            start_from: crate::task::StartFrom::Earliest,
            metrics_file: None,
            queues: None,
        }
    }
}

/// Consecutive restarts of a failing task before the pipeline gives up.
const MAX_TASK_RESTARTS: u32 = 6;
/// First backoff before restarting a task; doubles up to `RESTART_BACKOFF_MAX`.
const RESTART_BACKOFF: Duration = Duration::from_millis(50);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A restarted task that has run this long without failing starts a fresh count of restarts.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// How often the metrics snapshot file is rewritten.
const METRICS_FILE_EVERY: Duration = Duration::from_secs(1);

/// Errors after which starting the task again can succeed: the environment was briefly
/// unable (queue full, disk full, I/O) or the group is rebalancing.
fn transient(e: &EngineError) -> bool {
    // An I/O error is worth a restart too: the restart redoes the whole interval.
    let log = |e: &LogError| e.is_transient() || matches!(e, LogError::Io { .. });
    match e {
        EngineError::Log(e) => log(e),
        EngineError::Coord(CoordError::Log(e)) => log(e),
        EngineError::Queue(
            weir_queue::QueueError::StaleReceipt(_) | weir_queue::QueueError::Undecided { .. },
        ) => true,
        EngineError::Queue(weir_queue::QueueError::Log(e)) => log(e),
        EngineError::Coord(
            CoordError::RebalanceInProgress(_)
            | CoordError::IllegalGeneration { .. }
            | CoordError::UnknownMember { .. },
        ) => true,
        _ => false,
    }
}

/// A running pipeline.
#[derive(Debug)]
pub struct RunningPipeline {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<Result<()>>>,
    member: Option<GroupMember>,
    reporter: Option<JoinHandle<()>>,
    metrics_file: Option<PathBuf>,
    /// Live counters; [`RunningPipeline::metrics`] for everything.
    pub metrics: Arc<Metrics>,
}

impl RunningPipeline {
    /// Everything measured so far: per task, per operator, latencies.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Asks every task to commit and stop, and waits; returns the first task error.
    pub fn stop(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Release);
        let mut first = Ok(());
        for h in std::mem::take(&mut self.handles) {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(EngineError::Internal("a task thread panicked".into())));
            if first.is_ok() {
                first = r;
            }
        }
        if let Some(r) = self.reporter.take() {
            let _ = r.join();
        }
        if let Some(path) = &self.metrics_file {
            write_metrics(path, &self.metrics.snapshot());
        }
        if let Some(m) = self.member.take() {
            m.leave();
        }
        first
    }

    /// Waits until no task has processed anything for `quiet`; false if `timeout` passed first
    /// or a task stopped with an error (which `stop` returns).
    pub fn wait_until_idle(&self, quiet: Duration, timeout: Duration) -> bool {
        let t0 = Instant::now();
        // Quiet counts from when every task has started (restored its state): a slow start
        // is not idleness.
        let mut started: Option<Instant> = None;
        loop {
            if started.is_none() && self.metrics.all_started() {
                started = Some(Instant::now());
            }
            let idle = started.map_or(Duration::ZERO, |s| self.quiet_since(s));
            if idle >= quiet {
                return true;
            }
            if t0.elapsed() >= timeout || self.handles.iter().any(|h| h.is_finished()) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until no task has processed anything for `quiet` (or `timeout` passes), then stops.
    pub fn stop_when_idle(self, quiet: Duration, timeout: Duration) -> Result<()> {
        self.wait_until_idle(quiet, timeout);
        self.stop()
    }

    /// How long nothing has been processed, counting from no earlier than `since` (when the
    /// caller first saw every task started: a slow start is not idleness).
    pub fn quiet_since(&self, since: Instant) -> Duration {
        let last = *self
            .metrics
            .last_progress
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        last.map_or(since.elapsed(), |l| l.elapsed().min(since.elapsed()))
    }

    /// True once any task has stopped (it failed for good, or the pipeline was stopped):
    /// `stop` then returns promptly with the first error.
    pub fn is_finished(&self) -> bool {
        self.handles.iter().any(|h| h.is_finished())
    }

    /// Waits until a task fails (or `stop` is called elsewhere); returns the first error.
    pub fn wait(self) -> Result<()> {
        while !self.handles.iter().any(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop()
    }
}

impl Drop for RunningPipeline {
    /// Dropped without `stop` (or after an error while starting): stop the workers without a
    /// final commit being awaited by anyone, join every thread, leave the group.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
        if let Some(r) = self.reporter.take() {
            let _ = r.join();
        }
        if let Some(m) = self.member.take() {
            m.leave();
        }
    }
}

/// Writes a snapshot atomically (temporary file, then rename); errors are logged, not fatal.
fn write_metrics(path: &std::path::Path, snapshot: &MetricsSnapshot) {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(snapshot).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::warn!(path = %path.display(), error = %e, "cannot write pipeline metrics");
    }
}

/// One task of a worker: its settings, its plan, and, while it runs, the task and its
/// processor.
struct TaskSlot {
    cfg: TaskConfig,
    plan: Arc<dyn Plan>,
    subplan: usize,
    running: Option<(Task, Box<dyn Processor>)>,
    published: TaskMetricsSlot,
    span: tracing::Span,
    /// Failures in a row (reset by a commit or a healthy stretch), and when to start again.
    failures: u32,
    restart_at: Instant,
    started_at: Instant,
}

/// What a worker shares with the pipeline.
struct WorkerEnv {
    log: Log,
    groups: GroupCoordinator,
    txns: TransactionCoordinator,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    membership: Option<GroupMembership>,
}

impl TaskSlot {
    /// Starts the task and builds its processor.
    fn start(&self, env: &WorkerEnv) -> Result<(Task, Box<dyn Processor>)> {
        let spec = self
            .plan
            .shape()
            .subplans
            .get(self.subplan)
            .ok_or_else(|| EngineError::Internal(format!("no sub-plan {}", self.subplan)))?;
        let processor = self.plan.processor(TaskSetup {
            subplan: self.subplan,
            partition: self.cfg.partition,
            spec,
        })?;
        let task = Task::start_observed(
            &env.log,
            &env.groups,
            &env.txns,
            self.cfg.clone(),
            self.published.clone(),
            env.membership.clone(),
        )?;
        Ok((task, processor))
    }

    /// Runs the task once (starting it first if needed); returns the records processed. A
    /// transient failure drops the task and schedules a restart.
    fn run_once(&mut self, env: &WorkerEnv) -> Result<usize> {
        let span = self.span.clone();
        let _entered = span.enter();
        if self.running.is_none() {
            if Instant::now() < self.restart_at {
                return Ok(0);
            }
            match self.start(env) {
                Ok(r) => {
                    self.running = Some(r);
                    self.started_at = Instant::now();
                }
                Err(e) => return self.failed(e, env).map(|()| 0),
            }
        }
        let Some((task, processor)) = self.running.as_mut() else {
            return Ok(0);
        };
        let commits = task.commits();
        match task.run_once(processor.as_mut()) {
            Ok(n) => {
                if task.commits() > commits {
                    env.metrics
                        .commits
                        .fetch_add(task.commits() - commits, Ordering::Relaxed);
                    self.failures = 0;
                } else if self.failures > 0 && self.started_at.elapsed() >= HEALTHY_AFTER {
                    // Running fine for a while without anything to commit (an idle input).
                    self.failures = 0;
                }
                Ok(n)
            }
            Err(e) => self.failed(e, env).map(|()| 0),
        }
    }

    fn failed(&mut self, e: EngineError, env: &WorkerEnv) -> Result<()> {
        self.running = None;
        if transient(&e) && self.failures < MAX_TASK_RESTARTS {
            let backoff = RESTART_BACKOFF
                .saturating_mul(1 << self.failures.min(16))
                .min(RESTART_BACKOFF_MAX);
            self.failures += 1;
            env.metrics.retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, attempt = self.failures, ?backoff, "task failed; restarting it");
            self.restart_at = Instant::now() + backoff;
            return Ok(());
        }
        tracing::error!(error = %e, "task failed");
        self.published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .state = TaskState::Failed(e.to_string());
        Err(e)
    }

    fn stop(&mut self, env: &WorkerEnv) -> Result<()> {
        let span = self.span.clone();
        let _entered = span.enter();
        let Some((task, processor)) = self.running.as_mut() else {
            return Ok(());
        };
        let before = task.commits();
        task.commit(processor.as_mut())?;
        env.metrics
            .commits
            .fetch_add(task.commits() - before, Ordering::Relaxed);
        task.set_state(TaskState::Stopped);
        Ok(())
    }
}

/// A worker: runs its tasks in turn until stopped (starting each on its first turn); on stop
/// each commits.
fn run_worker(env: WorkerEnv, mut slots: Vec<TaskSlot>) -> Result<()> {
    while !env.stop.load(Ordering::Acquire) {
        let mut busy = false;
        for slot in slots.iter_mut() {
            let n = slot.run_once(&env)?;
            if n > 0 {
                busy = true;
                env.metrics
                    .records_in
                    .fetch_add(n as u64, Ordering::Relaxed);
                *env.metrics
                    .last_progress
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            }
        }
        if !busy {
            std::thread::sleep(IDLE_SLEEP);
        }
    }
    let mut first = Ok(());
    for slot in slots.iter_mut() {
        if let Err(e) = slot.stop(&env) {
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first
}

/// Checks the plan against the log: its sources and sinks exist, its internal topics do not
/// carry an earlier version's names; creates its internal topics and dead-letter topic.
fn ensure_topics(log: &Log, plan: &dyn Plan) -> Result<()> {
    let shape = plan.shape();
    let app = &shape.app;
    let legacy = crate::names::legacy_topics(log, app);
    if !legacy.is_empty() {
        return Err(EngineError::Plan(format!(
            "application `{app}` has state from an earlier version of Weir ({}), whose names this version no longer uses; start it over from its input with `weir pipeline reset {app}` (this deletes its offsets, state and internal topics), or run under a new application id",
            legacy.join(", ")
        )));
    }
    for sub in &shape.subplans {
        for input in sub
            .inputs
            .iter()
            .filter(|i| !i.internal && i.generated.is_none())
        {
            log.partition_count(&input.topic).map_err(|_| {
                EngineError::Plan(format!(
                    "pipeline `{app}` reads topic `{}`, which does not exist",
                    input.topic
                ))
            })?;
        }
    }
    for sink in &shape.sinks {
        log.partition_count(sink).map_err(|_| {
            EngineError::Plan(format!(
                "pipeline `{app}` writes topic `{sink}`, which does not exist; create it first"
            ))
        })?;
    }
    log.ensure_topic(&crate::names::dead_letter_topic(app), 1, Default::default())?;
    for t in &shape.internal_topics {
        // The input it copies may be generated (no topic): its spec knows the count.
        let like = shape
            .subplans
            .iter()
            .flat_map(|s| s.inputs.iter())
            .find(|i| i.topic == t.partitions_like);
        let partitions = match (t.partitions, like) {
            (Some(n), _) => n,
            (None, Some(input)) => input.partitions(log)?,
            (None, None) => log.partition_count(&t.partitions_like)?,
        };
        log.ensure_topic(&t.name, partitions, Default::default())?;
    }
    Ok(())
}

/// Runs `plan`: joins the application's group, deals one task per (sub-plan, partition) to the
/// worker pool, and returns at once; tasks restore their state on their worker.
pub fn run(
    plan: Arc<dyn Plan>,
    log: &Log,
    groups: &GroupCoordinator,
    txns: &TransactionCoordinator,
    options: RunOptions,
) -> Result<RunningPipeline> {
    let shape = plan.shape();
    shape.validate()?;
    ensure_topics(log, plan.as_ref())?;
    let app = shape.app.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let metrics = Arc::new(Metrics::new(
        &app,
        shape.operators.clone(),
        options.on_error == ErrorPolicy::DeadLetter,
        log.clock(),
    ));
    let mut partitions = Vec::new();
    for sub in &shape.subplans {
        // Generated inputs are no topic's partitions: the group does not list them.
        for input in sub.inputs.iter().filter(|i| i.generated.is_none()) {
            for p in 0..log.partition_count(&input.topic)? {
                partitions.push((input.topic.clone(), p));
            }
        }
    }
    let member = GroupMember::join(groups, &app, partitions)?;
    // Tasks are dealt round-robin to a small pool of workers; a worker runs its tasks in
    // turn, so a task's state is only ever touched by one thread.
    let workers = options.workers.max(1);
    let mut assigned: Vec<Vec<TaskSlot>> = (0..workers).map(|_| Vec::new()).collect();
    let mut next = 0usize;
    let internal_writers = writers_of_internal_topics(shape, log)?;
    for (index, sub) in shape.subplans.iter().enumerate() {
        for partition in 0..sub.inputs[0].partitions(log)? {
            let cfg = TaskConfig {
                app: app.clone(),
                task: sub.name.clone(),
                inputs: sub.inputs.clone(),
                partition,
                stores: sub.stores.clone(),
                commit_interval: options.commit_interval,
                guarantee: options.guarantee,
                state_dir: options.state_dir.clone(),
                max_batch_records: options.max_batch_records,
                max_buffered_records: options.max_buffered_records.max(1),
                on_error: options.on_error,
                retry: options.retry,
                idle_timeout: options.idle_timeout,
                state_memory: Some(options.state_memory.clone()),
                start_from: options.start_from,
                internal_outputs: shape
                    .internal_topics
                    .iter()
                    .filter(|t| sub.inputs.iter().any(|i| i.topic == t.partitions_like))
                    .map(|t| t.name.clone())
                    .collect(),
                internal_writers: internal_writers.clone(),
                queues: options.queues.clone(),
            };
            assigned[next % workers].push(TaskSlot {
                published: metrics.register_task(&cfg.label()),
                span: tracing::info_span!("task", app = %app, task = %sub.name, partition),
                cfg,
                plan: plan.clone(),
                subplan: index,
                running: None,
                failures: 0,
                restart_at: Instant::now(),
                started_at: Instant::now(),
            });
            next += 1;
        }
    }
    // Built before any thread starts: an error below drops it, which stops and joins
    // whatever did start and leaves the group.
    let mut running = RunningPipeline {
        stop: stop.clone(),
        handles: Vec::new(),
        member: None,
        reporter: None,
        metrics_file: options.metrics_file.clone(),
        metrics: metrics.clone(),
    };
    let membership = member.state.clone();
    running.member = Some(member);
    for (w, slots) in assigned
        .into_iter()
        .enumerate()
        .filter(|(_, t)| !t.is_empty())
    {
        let env = WorkerEnv {
            log: log.clone(),
            groups: groups.clone(),
            txns: txns.clone(),
            stop: stop.clone(),
            metrics: metrics.clone(),
            membership: Some(membership.clone()),
        };
        running.handles.push(
            std::thread::Builder::new()
                .name(format!("weir-worker-{w}"))
                .spawn(move || run_worker(env, slots))
                .map_err(|e| EngineError::Internal(format!("cannot start a worker thread: {e}")))?,
        );
    }
    running.reporter = match &options.metrics_file {
        None => None,
        Some(path) => Some(start_reporter(path.clone(), metrics, stop)?),
    };
    Ok(running)
}

/// A thread that rewrites the metrics snapshot file every `METRICS_FILE_EVERY` until stopped.
fn start_reporter(
    path: PathBuf,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("weir-metrics".into())
        .spawn(move || {
            let mut last: Option<Instant> = None;
            while !stop.load(Ordering::Acquire) {
                if last.is_none_or(|l| l.elapsed() >= METRICS_FILE_EVERY) {
                    write_metrics(&path, &metrics.snapshot());
                    last = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .map_err(|e| EngineError::Internal(format!("cannot start a thread: {e}")))
}

/// Per internal topic, how many tasks write it: one per partition of the input it re-keys
/// (the tasks of the sub-plan reading that input).
fn writers_of_internal_topics(
    shape: &crate::plan::PlanShape,
    log: &Log,
) -> Result<Vec<(String, u32)>> {
    let mut writers = Vec::new();
    for t in &shape.internal_topics {
        let input = shape
            .subplans
            .iter()
            .flat_map(|s| s.inputs.iter())
            .find(|i| i.topic == t.partitions_like);
        if let Some(input) = input {
            writers.push((t.name.clone(), input.partitions(log)?));
        }
    }
    Ok(writers)
}
