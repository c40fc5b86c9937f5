//! Metrics of a running pipeline: per operator, per task, and end to end.
//!
//! Nothing on the hot path is shared between threads. A task counts into its own
//! [`TaskMetrics`] (operators count into the task's slots through the `TaskContext`) and
//! publishes a copy into its shared slot once per commit and during a restore; the pipeline's
//! [`Metrics`] adds the published copies up when asked for a [`MetricsSnapshot`]. The only
//! per-record shared counter is `records_in`, an atomic bumped once per processed batch.
//!
//! Latencies are hdrhistograms: end to end is commit time minus the input record's timestamp
//! (when the output became visible to `read_committed` readers), in milliseconds; commit
//! duration is in microseconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest end-to-end latency tracked (one day, in ms); larger values count as this.
const E2E_MAX_MS: u64 = 86_400_000;
/// Largest commit duration tracked (ten minutes, in µs).
const COMMIT_MAX_US: u64 = 600_000_000;

fn histogram(max: u64) -> Histogram<u64> {
    // Bounds are constants within hdrhistogram's limits (low ≥ 1, high ≥ 2 × low, 3 digits).
    match Histogram::new_with_bounds(1, max, 3) {
        Ok(h) => h,
        Err(_) => Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits")),
    }
}

/// Counters of one operator in one task (or summed over tasks in a snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorCounters {
    /// Records the operator received.
    pub records_in: u64,
    /// Records it passed on (emitted to its children, or written by a sink).
    pub records_out: u64,
    /// Non-empty batches it processed.
    pub batches: u64,
    /// Time spent in the operator itself (not in its children), in nanoseconds.
    pub busy_ns: u64,
    /// Records it dropped by its own rule (a null key read into a table).
    #[serde(default)]
    pub dropped: u64,
    /// Late records (behind the watermark beyond the grace period), dropped or dead-lettered.
    #[serde(default)]
    pub late: u64,
    /// Windows it closed and emitted.
    #[serde(default)]
    pub closed: u64,
}

impl OperatorCounters {
    fn add(&mut self, o: &OperatorCounters) {
        self.records_in += o.records_in;
        self.records_out += o.records_out;
        self.batches += o.batches;
        self.busy_ns += o.busy_ns;
        self.dropped += o.dropped;
        self.late += o.late;
        self.closed += o.closed;
    }
}

/// What a task is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    /// Restoring its stores from their changelogs.
    Restoring,
    /// Processing.
    Running,
    /// Stopped after a final commit.
    Stopped,
    /// Stopped by an error (its text).
    Failed(String),
}

/// Live metrics of one task; the task owns one and publishes copies.
#[derive(Debug, Clone)]
pub struct TaskMetrics {
    /// `topic/partition` of the task's main input.
    pub task: String,
    /// What it is doing.
    pub state: TaskState,
    /// Input records processed.
    pub records_in: u64,
    /// Input batches processed.
    pub batches: u64,
    /// Time spent processing (reading excluded), in nanoseconds.
    pub busy_ns: u64,
    /// Successful commits.
    pub commits: u64,
    /// Commit durations, in microseconds.
    pub commit_us: Histogram<u64>,
    /// Next offset of the main input to process.
    pub position: i64,
    /// Records of the main input not yet processed, as of the last publish.
    pub lag: i64,
    /// Changelog records restored when the task started (so far, while restoring).
    pub restored_records: u64,
    /// Restore rate in records per second.
    pub restore_rate: f64,
    /// Commit time minus input timestamp, per input record, in milliseconds.
    pub end_to_end_ms: Histogram<u64>,
    /// Per-operator counters, indexed by operator id.
    pub operators: Vec<OperatorCounters>,
    /// Most outputs plus state writes held at once waiting for a commit.
    pub buffered_max: u64,
    /// Poison records of committed intervals (dead-lettered or skipped, by the policy).
    pub poison_records: u64,
    /// The task's watermark (ms), once its inputs have spoken.
    pub watermark: Option<i64>,
    /// The largest event time it has seen (ms).
    pub stream_time: Option<i64>,
    /// Window (or session) entries in its stores, open until the watermark closes them.
    pub open_windows: i64,
    /// Late records of its operators.
    pub late_records: u64,
}

impl TaskMetrics {
    /// Empty metrics of a task named `label` (`topic/partition` of its first input).
    pub fn new(label: &str) -> TaskMetrics {
        TaskMetrics {
            task: label.to_string(),
            state: TaskState::Restoring,
            records_in: 0,
            batches: 0,
            busy_ns: 0,
            commits: 0,
            commit_us: histogram(COMMIT_MAX_US),
            position: 0,
            lag: 0,
            restored_records: 0,
            restore_rate: 0.0,
            end_to_end_ms: histogram(E2E_MAX_MS),
            operators: Vec::new(),
            buffered_max: 0,
            poison_records: 0,
            watermark: None,
            stream_time: None,
            open_windows: 0,
            late_records: 0,
        }
    }

    /// Adds one operator call's counts.
    pub fn record_operator(
        &mut self,
        id: usize,
        records_in: usize,
        records_out: usize,
        busy: Duration,
    ) {
        if self.operators.len() <= id {
            self.operators.resize(id + 1, OperatorCounters::default());
        }
        let o = &mut self.operators[id];
        o.records_in += records_in as u64;
        o.records_out += records_out as u64;
        o.batches += 1;
        o.busy_ns += busy.as_nanos() as u64;
    }

    fn operator(&mut self, id: usize) -> &mut OperatorCounters {
        if self.operators.len() <= id {
            self.operators.resize(id + 1, OperatorCounters::default());
        }
        &mut self.operators[id]
    }

    /// Counts records operator `id` dropped by its own rule.
    pub fn record_dropped(&mut self, id: usize, n: u64) {
        self.operator(id).dropped += n;
    }

    /// Counts late records of operator `id`.
    pub fn record_late(&mut self, id: usize, n: u64) {
        self.operator(id).late += n;
        self.late_records += n;
    }

    /// Counts windows operator `id` closed.
    pub fn record_closed(&mut self, id: usize, n: u64) {
        self.operator(id).closed += n;
    }

    pub(crate) fn record_commit(&mut self, took: Duration) {
        self.commits += 1;
        self.commit_us
            .saturating_record((took.as_micros() as u64).max(1));
    }
}

/// The input timestamps of a task's open commit interval, kept as two histograms around the
/// interval's start (`base`) so that memory stays bounded whatever the interval's size: one of
/// `ts - base` for records stamped after the start, one of `base - ts` for older ones. At the
/// commit each recorded value becomes an end-to-end latency, commit time minus timestamp.
#[derive(Debug, Clone)]
pub(crate) struct IntervalLatency {
    base_ms: i64,
    after: Histogram<u64>,
    before: Histogram<u64>,
}

impl IntervalLatency {
    pub(crate) fn new(base_ms: i64) -> IntervalLatency {
        IntervalLatency {
            base_ms,
            after: histogram(E2E_MAX_MS),
            before: histogram(E2E_MAX_MS),
        }
    }

    /// One input record's timestamp (ms).
    pub(crate) fn record(&mut self, ts_ms: i64) {
        let d = ts_ms.saturating_sub(self.base_ms);
        if d >= 0 {
            self.after.saturating_record(d as u64);
        } else {
            self.before.saturating_record(d.unsigned_abs());
        }
    }

    /// Records every latency as of commit time `now_ms` into `into`, then starts an interval
    /// at `now_ms`.
    pub(crate) fn drain_into(&mut self, now_ms: i64, into: &mut Histogram<u64>) {
        let since_base = now_ms.saturating_sub(self.base_ms);
        for v in self.after.iter_recorded() {
            let ms = since_base
                .saturating_sub(v.value_iterated_to() as i64)
                .max(0);
            let _ = into.record_n(ms as u64, v.count_at_value());
        }
        for v in self.before.iter_recorded() {
            let ms = since_base
                .saturating_add(v.value_iterated_to() as i64)
                .max(0);
            let _ = into.record_n((ms as u64).min(E2E_MAX_MS), v.count_at_value());
        }
        self.after.reset();
        self.before.reset();
        self.base_ms = now_ms;
    }
}

/// A task's published metrics, shared with the pipeline.
pub type TaskMetricsSlot = Arc<Mutex<TaskMetrics>>;

/// Percentiles of a latency histogram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl LatencySummary {
    /// Summarizes a histogram.
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// One task in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSnapshot {
    /// `topic/partition`.
    pub task: String,
    /// What it is doing.
    pub state: TaskState,
    /// Input records processed.
    pub records_in: u64,
    /// Input batches processed.
    pub batches: u64,
    /// Processing time, in milliseconds.
    pub busy_ms: u64,
    /// Successful commits.
    pub commits: u64,
    /// Commit durations, in microseconds.
    pub commit_us: LatencySummary,
    /// Next offset of the main input to process.
    pub position: i64,
    /// Records of the main input not yet processed.
    pub lag: i64,
    /// Changelog records restored at start.
    pub restored_records: u64,
    /// Restore rate, records per second.
    pub restore_rate: f64,
    /// End-to-end latency of this task's records, in milliseconds.
    pub end_to_end_ms: LatencySummary,
    /// Most outputs plus state writes held at once waiting for a commit.
    pub buffered_max: u64,
    /// The task's watermark (ms since the epoch), once its inputs have spoken.
    #[serde(default)]
    pub watermark: Option<i64>,
    /// The largest event time it has seen (ms).
    #[serde(default)]
    pub stream_time: Option<i64>,
    /// Window (or session) entries open in its stores.
    #[serde(default)]
    pub open_windows: i64,
    /// Late records of its operators.
    #[serde(default)]
    pub late_records: u64,
}

/// One operator in a snapshot, summed over the tasks that run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorSnapshot {
    /// Operator id (its position in the pipeline's plan).
    pub id: usize,
    /// What it is, e.g. `filter` or `to_topic(totals)`.
    pub name: String,
    /// Its counters.
    #[serde(flatten)]
    pub counters: OperatorCounters,
}

/// Everything measured about a running pipeline, at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// Application id.
    pub app: String,
    /// Process running the pipeline.
    pub pid: u32,
    /// Wall-clock time of the snapshot, ms since the epoch.
    pub at_ms: i64,
    /// Seconds since the pipeline started.
    pub uptime_secs: f64,
    /// Input records processed.
    pub records_in: u64,
    /// Successful commits.
    pub commits: u64,
    /// Commits per second since start.
    pub commit_rate: f64,
    /// Poison records written to the dead-letter topic (committed intervals only, so a
    /// replay after a crash does not count them twice).
    pub dead_lettered: u64,
    /// Poison records skipped (committed intervals only).
    pub skipped: u64,
    /// Transient sink errors retried.
    pub retries: u64,
    /// End-to-end latency over all tasks, in milliseconds.
    pub end_to_end_ms: LatencySummary,
    /// Commit durations over all tasks, in microseconds.
    pub commit_us: LatencySummary,
    /// Per task.
    pub tasks: Vec<TaskSnapshot>,
    /// Per operator.
    pub operators: Vec<OperatorSnapshot>,
}

/// Metrics of a running pipeline.
#[derive(Debug)]
pub struct Metrics {
    app: String,
    clock: Arc<dyn weir_log::Clock>,
    started: Instant,
    operator_names: Vec<String>,
    /// Input records processed (all tasks); bumped once per batch.
    pub records_in: AtomicU64,
    /// Commits (all tasks).
    pub commits: AtomicU64,
    /// Poison records go to the dead-letter topic (else they are skipped or fail the task).
    dead_letter: bool,
    /// Transient sink errors retried.
    pub retries: AtomicU64,
    /// When a task last processed a record.
    pub(crate) last_progress: Mutex<Option<Instant>>,
    tasks: Mutex<Vec<TaskMetricsSlot>>,
}

impl Metrics {
    /// Metrics of pipeline `app` whose operators are named `operator_names` (by id); poison
    /// records count as dead-lettered when `dead_letter`, else as skipped. Snapshots are
    /// stamped by `clock` (the log's).
    pub fn new(
        app: &str,
        operator_names: Vec<String>,
        dead_letter: bool,
        clock: Arc<dyn weir_log::Clock>,
    ) -> Metrics {
        Metrics {
            app: app.to_string(),
            clock,
            started: Instant::now(),
            operator_names,
            dead_letter,
            records_in: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            last_progress: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// A slot for a new task's metrics.
    pub fn register_task(&self, label: &str) -> TaskMetricsSlot {
        let slot = Arc::new(Mutex::new(TaskMetrics::new(label)));
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(slot.clone());
        slot
    }

    /// Whether every task has started (none is still restoring).
    pub fn all_started(&self) -> bool {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .all(|t| t.lock().unwrap_or_else(|e| e.into_inner()).state != TaskState::Restoring)
    }

    /// Adds up the tasks' last published metrics.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let slots = self.tasks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut e2e = histogram(E2E_MAX_MS);
        let mut commit = histogram(COMMIT_MAX_US);
        let mut ops = vec![OperatorCounters::default(); self.operator_names.len()];
        let mut tasks = Vec::with_capacity(slots.len());
        let mut poison = 0u64;
        for slot in slots {
            let t = slot.lock().unwrap_or_else(|e| e.into_inner());
            // Same bounds on both sides, so adding cannot fail.
            let _ = e2e.add(&t.end_to_end_ms);
            let _ = commit.add(&t.commit_us);
            poison += t.poison_records;
            for (i, o) in t.operators.iter().enumerate() {
                if i >= ops.len() {
                    ops.resize(i + 1, OperatorCounters::default());
                }
                ops[i].add(o);
            }
            tasks.push(TaskSnapshot {
                task: t.task.clone(),
                state: t.state.clone(),
                records_in: t.records_in,
                batches: t.batches,
                busy_ms: t.busy_ns / 1_000_000,
                commits: t.commits,
                commit_us: LatencySummary::of(&t.commit_us),
                position: t.position,
                lag: t.lag,
                restored_records: t.restored_records,
                restore_rate: t.restore_rate,
                end_to_end_ms: LatencySummary::of(&t.end_to_end_ms),
                buffered_max: t.buffered_max,
                watermark: t.watermark,
                stream_time: t.stream_time,
                open_windows: t.open_windows,
                late_records: t.late_records,
            });
        }
        let uptime = self.started.elapsed().as_secs_f64();
        let commits = self.commits.load(Ordering::Relaxed);
        MetricsSnapshot {
            app: self.app.clone(),
            pid: std::process::id(),
            at_ms: self.clock.now().0,
            uptime_secs: uptime,
            records_in: self.records_in.load(Ordering::Relaxed),
            commits,
            commit_rate: commits as f64 / uptime.max(1e-3),
            dead_lettered: if self.dead_letter { poison } else { 0 },
            skipped: if self.dead_letter { 0 } else { poison },
            retries: self.retries.load(Ordering::Relaxed),
            end_to_end_ms: LatencySummary::of(&e2e),
            commit_us: LatencySummary::of(&commit),
            tasks,
            operators: ops
                .into_iter()
                .enumerate()
                .map(|(id, counters)| OperatorSnapshot {
                    id,
                    name: self
                        .operator_names
                        .get(id)
                        .cloned()
                        .unwrap_or_else(|| format!("operator-{id}")),
                    counters,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_latencies_are_commit_time_minus_timestamps_in_bounded_memory() {
        let mut l = IntervalLatency::new(1_000);
        // A backlog record stamped before the interval, and a million stamped during it.
        l.record(400);
        for i in 0..1_000_000 {
            l.record(1_000 + i % 100);
        }
        let mut h = histogram(E2E_MAX_MS);
        l.drain_into(1_200, &mut h);
        assert_eq!(h.len(), 1_000_001);
        assert_eq!(h.max(), 800, "1,200 - 400");
        assert_eq!(h.min(), 101, "1,200 - 1,099");
        // Drained: the next interval starts empty, at the commit time.
        let mut h2 = histogram(E2E_MAX_MS);
        l.record(1_250);
        l.drain_into(1_300, &mut h2);
        assert_eq!((h2.len(), h2.max()), (1, 50));
    }
}
