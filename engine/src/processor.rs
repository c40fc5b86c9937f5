//! What the runtime knows of a front end: a [`Processor`] per task, called with a batch of
//! input records of one input, and again when time moves, through a [`TaskContext`].
//!
//! The context is everything a processor may touch: the batch, the task's stores (by index,
//! resolved once when the processor is built), outputs, the task's clock (event time,
//! watermark, processing time), poison reports and per-operator metrics. What happens to a
//! poison record — dead letter, skip or fail, after how many attempts — is the runtime's
//! policy, not the processor's, so every front end (the DSL, SQL) gets it the same way.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use weir_log::{Header, Offset, Record, Timestamp};

use crate::error::{EngineError, Result};
use crate::metrics::TaskMetrics;
use crate::output::Sinks;
use crate::state::KvStore;
use crate::time::TaskTime;

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
    /// Headers (empty, without an allocation, when it has none).
    pub headers: Vec<Header>,
}

/// Where a result came from: an input record of the batch being processed, or none (a result
/// emitted when time moved, such as a window closing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin(u32);

impl Origin {
    /// No input record: emitted on a time update.
    pub const NONE: Origin = Origin(u32::MAX);

    /// Input record `i` of the batch.
    pub fn input(i: usize) -> Origin {
        Origin(u32::try_from(i).unwrap_or(u32::MAX))
    }

    /// The index of the input record, if any.
    pub fn index(self) -> Option<usize> {
        (self != Origin::NONE).then_some(self.0 as usize)
    }
}

/// A record (or result) the processor could not handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    /// Which input record it came from.
    pub origin: Origin,
    /// What went wrong.
    pub reason: String,
    /// Attempts made (1 unless a user function was retried).
    pub attempts: u32,
    /// A late record (behind the watermark beyond the grace period), dead-lettered by policy.
    pub late: bool,
}

/// How often a failing user function is called again before its record is poison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Calls in all (1: no retry).
    pub attempts: u32,
    /// Wait before the second call; doubles per call up to `RETRY_BACKOFF_MAX`.
    pub backoff: Duration,
}

/// Longest wait between two calls of a failing user function: the worker thread waits, and
/// other tasks on it with it.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 1,
            backoff: Duration::from_millis(100),
        }
    }
}

/// What a processor gets for one input batch (or a time update): the batch, the task's stores,
/// a place for outputs and for poison records, the task's clock and metrics.
#[derive(Debug)]
pub struct TaskContext<'a> {
    pub(crate) stores: &'a mut [KvStore],
    pub(crate) sinks: &'a mut Sinks,
    pub(crate) input: &'a [InputRecord],
    pub(crate) input_index: usize,
    pub(crate) poisoned: &'a mut Vec<Poison>,
    pub(crate) metrics: &'a mut TaskMetrics,
    pub(crate) time: &'a mut TaskTime,
    pub(crate) retry: RetryPolicy,
}

impl<'a> TaskContext<'a> {
    /// A state store of this task, by name (a processor built per task resolves the index
    /// once with [`crate::TaskSetup::store_index`] and uses [`TaskContext::store_at`]).
    pub fn store(&mut self, name: &str) -> Result<&mut KvStore> {
        self.stores
            .iter_mut()
            .find(|s| s.name() == name)
            .ok_or_else(|| EngineError::Plan(format!("the task has no store `{name}`")))
    }

    /// The task's store number `i` (in the order of its plan's store specs).
    pub fn store_at(&mut self, i: usize) -> Result<&mut KvStore> {
        let n = self.stores.len();
        self.stores
            .get_mut(i)
            .ok_or_else(|| EngineError::Internal(format!("store {i} of a task with {n}")))
    }

    /// Emits a record to an output topic (partitioned by its key like Kafka's producer). It
    /// becomes visible when the interval commits.
    pub fn emit(&mut self, topic: &str, record: Record) -> Result<()> {
        self.sinks.emit(topic, record)
    }

    /// Now, by the log's clock (processing time).
    pub fn now(&self) -> Timestamp {
        self.sinks.log.now()
    }

    /// The input batch being processed (empty on a time update).
    pub fn input(&self) -> &'a [InputRecord] {
        self.input
    }

    /// Which of the task's inputs the batch comes from (its position in the plan's inputs).
    pub fn input_index(&self) -> usize {
        self.input_index
    }

    /// The task's watermark: no event at or before it is expected any more (beyond the
    /// inputs' allowed out-of-orderness). `None` until every input has spoken or idled.
    pub fn watermark(&self) -> Option<Timestamp> {
        self.time.watermark()
    }

    /// The largest event time the task has seen.
    pub fn stream_time(&self) -> Option<Timestamp> {
        self.time.stream_time()
    }

    /// Reports the event time of a record of the current batch, for an input whose event time
    /// the processor extracts ([`crate::TimeSource::Extracted`]).
    pub fn observe_event_time(&mut self, ts: Timestamp) {
        self.time.observe(self.input_index, ts);
    }

    /// Marks the record at `origin` as poison: once the batch is processed the runtime's
    /// error policy handles it (dead letter, skip or fail).
    pub fn poison(&mut self, origin: Origin, reason: String) {
        self.poisoned.push(Poison {
            origin,
            reason,
            attempts: 1,
            late: false,
        });
    }

    /// A late record, for the dead-letter policy of late records (it is marked `weir.late`).
    pub fn dead_letter_late(&mut self, origin: Origin, reason: String) {
        self.poisoned.push(Poison {
            origin,
            reason,
            attempts: 1,
            late: true,
        });
    }

    /// Calls a fallible user function under the pipeline's retry policy: again after a
    /// backoff while it fails (an error or a panic), up to the policy's attempts. On the last
    /// failure, returns its reason and the attempts made, for [`TaskContext::poison_after`].
    pub fn retrying<T, E: std::fmt::Display>(
        &self,
        mut f: impl FnMut() -> std::result::Result<T, E>,
    ) -> std::result::Result<T, (String, u32)> {
        let mut backoff = self.retry.backoff;
        let attempts = self.retry.attempts.max(1);
        for attempt in 1..=attempts {
            let reason = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut f)) {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => e.to_string(),
                Err(panic) => format!("panicked: {}", panic_message(&panic)),
            };
            if attempt == attempts {
                return Err((reason, attempt));
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
        Err(("no attempt was made".into(), 0))
    }

    /// [`TaskContext::poison`] after `attempts` calls of a failing user function.
    pub fn poison_after(&mut self, origin: Origin, reason: String, attempts: u32) {
        self.poisoned.push(Poison {
            origin,
            reason,
            attempts,
            late: false,
        });
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

    /// Counts records operator `id` dropped by its own rule (a null key read into a table).
    pub fn record_dropped(&mut self, id: usize, n: u64) {
        self.metrics.record_dropped(id, n);
    }

    /// Counts late records of operator `id` (dropped or dead-lettered).
    pub fn record_late(&mut self, id: usize, n: u64) {
        self.metrics.record_late(id, n);
    }

    /// Counts windows operator `id` closed and emitted.
    pub fn record_closed(&mut self, id: usize, n: u64) {
        self.metrics.record_closed(id, n);
    }

    /// Windows opened (positive) or closed (negative) in the task's stores.
    pub fn add_open_windows(&mut self, delta: i64) {
        self.metrics.open_windows += delta;
    }

    /// Asks for another time update soon even if the watermark stays (a close that did not
    /// finish within its batch).
    pub fn request_time_again(&mut self) {
        self.time.request_again();
    }
}

/// The text of a panic's payload.
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Batch-at-a-time processing logic of one task, built per task by its plan.
pub trait Processor: Send {
    /// Processes a batch of input records of one input (`ctx.input_index()`), in offset order.
    /// Records it cannot process are reported with [`TaskContext::poison`]; an `Err` fails the
    /// task (it is started again, from its last commit, if the error is transient).
    fn process(&mut self, ctx: &mut TaskContext<'_>) -> Result<()>;

    /// Called with an empty batch when the watermark has moved forward, and on a
    /// processing-time tick (every commit interval) even when no input has anything: windows
    /// close and state expires on an idle partition too.
    fn on_time(&mut self, _ctx: &mut TaskContext<'_>) -> Result<()> {
        Ok(())
    }

    /// Called with an empty batch right before every commit: caches in front of the stores
    /// are written to them (and results coalesced over the interval emitted), so that the
    /// commit carries every effect of the input it commits.
    fn flush(&mut self, _ctx: &mut TaskContext<'_>) -> Result<()> {
        Ok(())
    }
}
