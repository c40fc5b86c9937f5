//! Runs a [`Topology`]: one task per (sub-topology, partition), dealt to a small pool of worker
//! threads; each task commits outputs, state and offsets every commit interval (in one
//! transaction under exactly-once). Internal repartition topics are created with the partition
//! count of the topic they re-key; unknown source or sink topics are a clear error before
//! anything runs.
//!
//! The running pipeline is a member of the consumer group named by its application id, owning
//! every input partition, so `weir group describe APP` shows it with its lag. A task that
//! fails with a transient error (a full append queue, a full disk, a rebalance) is started
//! again after a capped exponential backoff — which aborts its open transaction, restores its
//! stores and resumes at the committed offsets — at most `MAX_TASK_RESTARTS` times in a row.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weir_coord::{CoordError, GroupCoordinator, JoinRequest, TransactionCoordinator};
use weir_log::{Header, Log, LogError, Record};

use crate::dsl::{SubTopology, Topology};
use crate::error::{EngineError, Result};
use crate::metrics::{Metrics, MetricsSnapshot, TaskMetricsSlot, TaskState};
use crate::task::{
    fail_on_poison, GroupMembership, Guarantee, InputRecord, Processor, Task, TaskConfig,
    TaskContext,
};

/// How long an idle task sleeps before polling its partition again.
const IDLE_SLEEP: Duration = Duration::from_millis(5);

/// What to do with a record that cannot be processed (a poison record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorPolicy {
    /// Stop the pipeline with an error naming the topic, partition and offset.
    Fail,
    /// Count it and go on.
    Skip,
    /// Write the original record to `<app>.dlq` with the error and its origin in headers, in
    /// the same transaction as the outputs (so the dead-letter topic is exact under replay).
    DeadLetter,
}

/// Settings for running a topology.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Poison records: fail, skip or dead-letter (default).
    pub on_error: ErrorPolicy,
    /// `processing.guarantee`.
    pub guarantee: Guarantee,
    /// How often each task commits.
    pub commit_interval: Duration,
    /// Where RocksDB state lives.
    pub state_dir: PathBuf,
    /// Most input records per processed batch.
    pub max_batch_records: usize,
    /// Outputs plus state writes a task buffers before committing early (bounds memory).
    pub max_buffered_records: usize,
    /// Worker threads the tasks share (default: the machine's cores).
    pub workers: usize,
    /// Where to write a [`MetricsSnapshot`] (JSON) every second and at stop, for
    /// `weir pipeline describe`; `None` writes nothing.
    pub metrics_file: Option<PathBuf>,
}

impl RunOptions {
    /// Exactly-once, 100 ms commits, state under `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> RunOptions {
        RunOptions {
            on_error: ErrorPolicy::DeadLetter,
            guarantee: Guarantee::ExactlyOnce,
            commit_interval: Duration::from_millis(100),
            state_dir: state_dir.into(),
            max_batch_records: 1000,
            max_buffered_records: crate::task::MAX_BUFFERED_RECORDS,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            metrics_file: None,
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
/// Session timeout of the pipeline's group membership; it heartbeats every third of it.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

struct SubProcessor {
    sub: SubTopology,
    policy: ErrorPolicy,
    dlq: String,
}

impl Processor for SubProcessor {
    fn process(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        self.sub.process(ctx)
    }

    fn poisoned(&mut self, ctx: &mut TaskContext<'_>, poisoned: &[(usize, String)]) -> Result<()> {
        match self.policy {
            ErrorPolicy::Fail => fail_on_poison(ctx, poisoned),
            ErrorPolicy::Skip => Ok(()),
            ErrorPolicy::DeadLetter => {
                let (input, now) = (ctx.input(), ctx.now());
                for (i, reason) in poisoned {
                    if let Some(r) = input.get(*i) {
                        ctx.emit(&self.dlq, dead_letter(r, reason, now))?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// The original record with the error and its origin in headers.
fn dead_letter(r: &InputRecord, reason: &str, now: weir_log::Timestamp) -> Record {
    let h = |k: &str, v: String| Header {
        key: k.to_string(),
        value: Some(bytes::Bytes::from(v)),
    };
    Record {
        key: r.key.clone(),
        value: r.value.clone(),
        headers: vec![
            h("weir.error", reason.to_string()),
            h("weir.source.topic", r.topic.to_string()),
            h("weir.source.partition", r.partition.to_string()),
            h("weir.source.offset", r.offset.to_string()),
            h("weir.attempts", "1".to_string()),
            h("weir.time", now.0.to_string()),
        ],
        timestamp: Some(r.timestamp),
    }
}

/// Errors after which starting the task again can succeed: the environment was briefly
/// unable (queue full, disk full, I/O) or the group is rebalancing.
fn transient(e: &EngineError) -> bool {
    // An I/O error is worth a restart too: the restart redoes the whole interval.
    let log = |e: &LogError| e.is_transient() || matches!(e, LogError::Io { .. });
    match e {
        EngineError::Log(e) => log(e),
        EngineError::Coord(CoordError::Log(e)) => log(e),
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
        loop {
            let last = *self
                .metrics
                .last_progress
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let idle = last.map_or(t0.elapsed(), |l| l.elapsed());
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

/// The dead-letter topic of an application.
pub fn dead_letter_topic(app: &str) -> String {
    format!("{app}.dlq")
}

/// The pipeline's membership in its application's consumer group: it joins as the leader,
/// assigns itself every input partition, and heartbeats (rejoining after a rebalance) until
/// it leaves.
#[derive(Debug)]
struct GroupMember {
    groups: GroupCoordinator,
    app: String,
    state: GroupMembership,
    stop: Arc<AtomicBool>,
    heartbeat: Option<JoinHandle<()>>,
}

fn join_as_owner(
    groups: &GroupCoordinator,
    app: &str,
    partitions: &[(String, u32)],
    member_id: Option<String>,
) -> Result<(String, i32)> {
    let topics: Vec<String> = {
        let mut t: Vec<String> = partitions.iter().map(|(t, _)| t.clone()).collect();
        t.dedup();
        t
    };
    let mut member_id = member_id;
    loop {
        let joined = match groups.join_group(JoinRequest {
            group: app.to_string(),
            member_id: member_id.clone(),
            client_id: format!("weir-pipeline pid {}", std::process::id()),
            session_timeout: SESSION_TIMEOUT,
            rebalance_timeout: SESSION_TIMEOUT,
            protocol_type: "consumer".into(),
            protocols: vec![(
                "weir-pipeline".into(),
                weir_coord::encode_subscription(&topics),
            )],
        }) {
            Ok(j) => j,
            Err(CoordError::UnknownMember { .. }) if member_id.is_some() => {
                member_id = None;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        // The pipeline owns every partition of its inputs; other members get none.
        let assignments = (joined.leader_id == joined.member_id).then(|| {
            joined
                .members
                .iter()
                .map(|(id, _)| {
                    let mine = *id == joined.member_id;
                    let a: &[(String, u32)] = if mine { partitions } else { &[] };
                    (id.clone(), weir_coord::encode_assignment(a))
                })
                .collect()
        });
        match groups.sync_group(app, joined.generation, &joined.member_id, assignments) {
            Ok(_) => return Ok((joined.member_id, joined.generation)),
            Err(CoordError::RebalanceInProgress(_)) => {
                member_id = Some(joined.member_id);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl GroupMember {
    fn join(groups: &GroupCoordinator, app: &str, partitions: Vec<(String, u32)>) -> Result<Self> {
        let first = join_as_owner(groups, app, &partitions, None)?;
        let state: GroupMembership = Arc::new(Mutex::new(Some(first)));
        let stop = Arc::new(AtomicBool::new(false));
        let heartbeat = {
            let (groups, app, state, stop) =
                (groups.clone(), app.to_string(), state.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("weir-member-{app}"))
                .spawn(move || {
                    let mut last = Instant::now();
                    while !stop.load(Ordering::Acquire) {
                        // Short sleeps, so that leaving does not wait for a heartbeat period.
                        std::thread::sleep(Duration::from_millis(20));
                        if last.elapsed() < SESSION_TIMEOUT / 10 {
                            continue;
                        }
                        last = Instant::now();
                        let Some((id, generation)) =
                            state.lock().unwrap_or_else(|e| e.into_inner()).clone()
                        else {
                            continue;
                        };
                        if groups.heartbeat(&app, generation, &id).is_ok() {
                            continue;
                        }
                        match join_as_owner(&groups, &app, &partitions, Some(id)) {
                            Ok(m) => *state.lock().unwrap_or_else(|e| e.into_inner()) = Some(m),
                            Err(e) => {
                                tracing::warn!(app = %app, error = %e, "rejoining the pipeline's group failed; retrying")
                            }
                        }
                    }
                })
                .map_err(|e| EngineError::Internal(format!("cannot start a thread: {e}")))?
        };
        Ok(GroupMember {
            groups: groups.clone(),
            app: app.to_string(),
            state,
            stop,
            heartbeat: Some(heartbeat),
        })
    }

    /// Stops heartbeating and leaves the group (also what dropping it does).
    fn leave(self) {}
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        if let Some((id, _)) = self.state.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = self.groups.leave_group(&self.app, &id);
        }
    }
}

/// One task of a worker: its settings, its processor and, while it runs, the task itself.
struct TaskSlot {
    cfg: TaskConfig,
    processor: SubProcessor,
    task: Option<Task>,
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
    /// Runs the task once (starting it first if needed); returns the records processed. A
    /// transient failure drops the task and schedules a restart.
    fn run_once(&mut self, env: &WorkerEnv) -> Result<usize> {
        let span = self.span.clone();
        let _entered = span.enter();
        if self.task.is_none() {
            if Instant::now() < self.restart_at {
                return Ok(0);
            }
            let started = Task::start_observed(
                &env.log,
                &env.groups,
                &env.txns,
                self.cfg.clone(),
                self.published.clone(),
                env.membership.clone(),
            );
            match started {
                Ok(t) => {
                    self.task = Some(t);
                    self.started_at = Instant::now();
                }
                Err(e) => return self.failed(e, env).map(|()| 0),
            }
        }
        let Some(task) = self.task.as_mut() else {
            return Ok(0);
        };
        let commits = task.commits();
        match task.run_once(&mut self.processor) {
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
        self.task = None;
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
        let Some(task) = self.task.as_mut() else {
            return Ok(());
        };
        let before = task.commits();
        task.commit()?;
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

fn ensure_topics(log: &Log, topology: &Topology) -> Result<()> {
    let internal = |t: &str| topology.internal_topics.iter().any(|(i, _)| i == t);
    for sub in &topology.subtopologies {
        let inputs = std::iter::once(sub.source.clone()).chain(sub.co_sources());
        for topic in inputs.filter(|t| !internal(t)) {
            log.partition_count(&topic).map_err(|_| {
                EngineError::Plan(format!(
                    "pipeline `{}` reads topic `{topic}`, which does not exist",
                    topology.app
                ))
            })?;
        }
    }
    for sink in topology.sinks.iter().filter(|t| !internal(t)) {
        log.partition_count(sink).map_err(|_| {
            EngineError::Plan(format!(
                "pipeline `{}` writes topic `{sink}`, which does not exist; create it first",
                topology.app
            ))
        })?;
    }
    log.ensure_topic(&dead_letter_topic(&topology.app), 1, Default::default())?;
    for (topic, like) in &topology.internal_topics {
        log.ensure_topic(topic, log.partition_count(like)?, Default::default())?;
    }
    Ok(())
}

impl Topology {
    /// Joins the application's group, deals one task per (sub-topology, partition) to the
    /// worker pool, and returns at once; tasks restore their state on their worker.
    pub fn run(
        &self,
        log: &Log,
        groups: &GroupCoordinator,
        txns: &TransactionCoordinator,
        options: RunOptions,
    ) -> Result<RunningPipeline> {
        ensure_topics(log, self)?;
        let stop = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(Metrics::new(
            &self.app,
            self.operators.clone(),
            options.on_error == ErrorPolicy::DeadLetter,
            log.clock(),
        ));
        let mut partitions = Vec::new();
        for sub in &self.subtopologies {
            for topic in std::iter::once(sub.source.clone()).chain(sub.co_sources()) {
                for p in 0..log.partition_count(&topic)? {
                    partitions.push((topic.clone(), p));
                }
            }
        }
        let member = GroupMember::join(groups, &self.app, partitions)?;
        // Tasks are dealt round-robin to a small pool of workers; a worker runs its tasks in
        // turn, so a task's state is only ever touched by one thread.
        let workers = options.workers.max(1);
        let mut assigned: Vec<Vec<TaskSlot>> = (0..workers).map(|_| Vec::new()).collect();
        let mut next = 0usize;
        for sub in &self.subtopologies {
            for partition in 0..log.partition_count(&sub.source)? {
                let cfg = TaskConfig {
                    app: self.app.clone(),
                    topic: sub.source.clone(),
                    co_topics: sub.co_sources(),
                    partition,
                    stores: sub.stores.clone(),
                    commit_interval: options.commit_interval,
                    guarantee: options.guarantee,
                    state_dir: options.state_dir.clone(),
                    max_batch_records: options.max_batch_records,
                    max_buffered_records: options.max_buffered_records.max(1),
                };
                let processor = SubProcessor {
                    sub: sub.clone(),
                    policy: options.on_error,
                    dlq: dead_letter_topic(&self.app),
                };
                assigned[next % workers].push(TaskSlot {
                    published: metrics.register_task(&cfg.topic, partition),
                    span: tracing::info_span!("task", app = %self.app, topic = %cfg.topic, partition),
                    cfg,
                    processor,
                    task: None,
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
                    .map_err(|e| {
                        EngineError::Internal(format!("cannot start a worker thread: {e}"))
                    })?,
            );
        }
        running.reporter = match &options.metrics_file {
            None => None,
            Some(path) => {
                let (path, metrics, stop) = (path.clone(), metrics.clone(), stop.clone());
                Some(
                    std::thread::Builder::new()
                        .name("weir-metrics".into())
                        .spawn(move || {
                            let mut last = Instant::now() - Duration::from_secs(1);
                            while !stop.load(Ordering::Acquire) {
                                if last.elapsed() >= Duration::from_secs(1) {
                                    write_metrics(&path, &metrics.snapshot());
                                    last = Instant::now();
                                }
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        })
                        .map_err(|e| {
                            EngineError::Internal(format!("cannot start a thread: {e}"))
                        })?,
                )
            }
        };
        Ok(running)
    }
}
