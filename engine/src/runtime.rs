//! Runs a [`Topology`]: one task per (sub-topology, partition), each on its own thread, each
//! committing outputs, state and offsets every commit interval (in one transaction under
//! exactly-once). Internal repartition topics are created with the partition count of the
//! topic they re-key; unknown source or sink topics are a clear error before anything runs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weir_coord::{GroupCoordinator, TransactionCoordinator};
use weir_log::{Header, Log, Record};

use crate::dsl::{SubTopology, Topology};
use crate::error::{EngineError, Result};
use crate::task::{Guarantee, InputRecord, Processor, Task, TaskConfig, TaskContext};

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
    /// Worker threads the tasks share (default: the machine's cores).
    pub workers: usize,
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
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

struct SubProcessor {
    sub: SubTopology,
    policy: ErrorPolicy,
    dlq: String,
    metrics: Arc<Metrics>,
}

impl Processor for SubProcessor {
    fn process(&mut self, ctx: &mut TaskContext<'_>, batch: &[InputRecord]) -> Result<()> {
        for r in batch {
            match self.sub.process(ctx, r) {
                Ok(()) => {}
                Err(EngineError::Poison { reason, .. }) if self.policy != ErrorPolicy::Fail => {
                    if self.policy == ErrorPolicy::DeadLetter {
                        ctx.emit(&self.dlq, dead_letter(&self.sub.source, r, &reason));
                        self.metrics.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.metrics.skipped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The original record with the error and its origin in headers.
fn dead_letter(topic: &str, r: &InputRecord, reason: &str) -> Record {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let h = |k: &str, v: String| Header {
        key: k.to_string(),
        value: Some(bytes::Bytes::from(v)),
    };
    Record {
        key: r.key.clone(),
        value: r.value.clone(),
        headers: vec![
            h("weir.error", reason.to_string()),
            h("weir.source.topic", topic.to_string()),
            h("weir.source.partition", r.partition.to_string()),
            h("weir.source.offset", r.offset.to_string()),
            h("weir.attempts", "1".to_string()),
            h("weir.time", now.to_string()),
        ],
        timestamp: Some(r.timestamp),
    }
}

/// Counters of a running pipeline.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Input records processed (all tasks).
    pub records_in: AtomicU64,
    /// Commits (all tasks).
    pub commits: AtomicU64,
    /// Poison records written to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Poison records skipped.
    pub skipped: AtomicU64,
    /// When a task last processed a record.
    last_progress: Mutex<Option<Instant>>,
}

/// A running pipeline.
#[derive(Debug)]
pub struct RunningPipeline {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<Result<()>>>,
    /// Live counters.
    pub metrics: Arc<Metrics>,
}

impl RunningPipeline {
    /// Asks every task to commit and stop, and waits; returns the first task error.
    pub fn stop(self) -> Result<()> {
        self.stop.store(true, Ordering::Release);
        let mut first = Ok(());
        for h in self.handles {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(EngineError::Internal("a task thread panicked".into())));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    /// Waits until no task has processed anything for `quiet` (or `timeout` passes), then stops.
    pub fn stop_when_idle(self, quiet: Duration, timeout: Duration) -> Result<()> {
        let t0 = Instant::now();
        loop {
            let last = *self
                .metrics
                .last_progress
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let idle = last.map_or(t0.elapsed(), |l| l.elapsed());
            if idle >= quiet
                || t0.elapsed() >= timeout
                || self.handles.iter().any(|h| h.is_finished())
            {
                return self.stop();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The dead-letter topic of an application.
pub fn dead_letter_topic(app: &str) -> String {
    format!("{app}.dlq")
}

/// A worker: starts its tasks, then runs them in turn until stopped; on stop each commits.
fn run_worker(
    log: &Log,
    groups: &GroupCoordinator,
    txns: &TransactionCoordinator,
    work: Vec<(TaskConfig, SubProcessor)>,
    stop: &AtomicBool,
    metrics: &Metrics,
) -> Result<()> {
    let mut tasks = Vec::with_capacity(work.len());
    for (cfg, processor) in work {
        tasks.push((Task::start(log, groups, txns, cfg)?, processor));
    }
    while !stop.load(Ordering::Acquire) {
        let mut busy = false;
        for (task, processor) in tasks.iter_mut() {
            let n = task.run_once(processor)?;
            if n > 0 {
                busy = true;
                metrics.records_in.fetch_add(n as u64, Ordering::Relaxed);
                *metrics
                    .last_progress
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            }
        }
        if !busy {
            std::thread::sleep(IDLE_SLEEP);
        }
    }
    for (task, _) in tasks.iter_mut() {
        let before = task.commits();
        task.commit()?;
        metrics
            .commits
            .fetch_add(task.commits() - before, Ordering::Relaxed);
    }
    Ok(())
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
    /// Starts one task per (sub-topology, partition) and returns at once.
    pub fn run(
        &self,
        log: &Log,
        groups: &GroupCoordinator,
        txns: &TransactionCoordinator,
        options: RunOptions,
    ) -> Result<RunningPipeline> {
        ensure_topics(log, self)?;
        let stop = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(Metrics::default());
        // Tasks are dealt round-robin to a small pool of workers; a worker runs its tasks in
        // turn, so a task's state is only ever touched by one thread.
        let workers = options.workers.max(1);
        let mut assigned: Vec<Vec<(TaskConfig, SubProcessor)>> =
            (0..workers).map(|_| Vec::new()).collect();
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
                };
                let processor = SubProcessor {
                    sub: sub.clone(),
                    policy: options.on_error,
                    dlq: dead_letter_topic(&self.app),
                    metrics: metrics.clone(),
                };
                assigned[next % workers].push((cfg, processor));
                next += 1;
            }
        }
        let mut handles = Vec::new();
        for (w, work) in assigned
            .into_iter()
            .enumerate()
            .filter(|(_, t)| !t.is_empty())
        {
            let (log, groups, txns, stop, metrics) = (
                log.clone(),
                groups.clone(),
                txns.clone(),
                stop.clone(),
                metrics.clone(),
            );
            handles.push(
                std::thread::Builder::new()
                    .name(format!("weir-worker-{w}"))
                    .spawn(move || run_worker(&log, &groups, &txns, work, &stop, &metrics))
                    .map_err(|e| {
                        EngineError::Internal(format!("cannot start a worker thread: {e}"))
                    })?,
            );
        }
        Ok(RunningPipeline {
            stop,
            handles,
            metrics,
        })
    }
}
