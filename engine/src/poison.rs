//! The runtime's error policy for records a processor could not handle: fail the task, skip
//! them, or write them to the application's dead-letter topic — inside the same transaction as
//! the outputs, so the dead-letter topic is exact under replay.
//!
//! A dead letter is the original record with headers saying what went wrong and where it came
//! from: `weir.error`, `weir.source.topic`, `weir.source.partition`, `weir.source.offset`,
//! `weir.attempts` (calls of the failing user function under the retry policy), `weir.time`,
//! and `weir.late` for a late record dead-lettered by the late-record policy.

use bytes::Bytes;
use weir_log::{Header, Record, Timestamp};

use crate::error::EngineError;
use crate::processor::{InputRecord, Poison};

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

/// The dead letter of `poison`, whose input record is `source` (none for a result emitted on
/// a time update).
pub(crate) fn dead_letter(
    source: Option<&InputRecord>,
    poison: &Poison,
    task: &str,
    now: Timestamp,
) -> Record {
    let h = |k: &str, v: String| Header {
        key: k.to_string(),
        value: Some(Bytes::from(v)),
    };
    let mut headers = vec![h("weir.error", poison.reason.clone())];
    match source {
        Some(r) => headers.extend([
            h("weir.source.topic", r.topic.to_string()),
            h("weir.source.partition", r.partition.to_string()),
            h("weir.source.offset", r.offset.to_string()),
        ]),
        None => headers.push(h("weir.source.task", task.to_string())),
    }
    headers.push(h("weir.attempts", poison.attempts.to_string()));
    headers.push(h("weir.time", now.0.to_string()));
    if poison.late {
        headers.push(h("weir.late", "true".to_string()));
    }
    Record {
        key: source.and_then(|r| r.key.clone()),
        value: source.and_then(|r| r.value.clone()),
        headers,
        timestamp: Some(source.map_or(now, |r| r.timestamp)),
    }
}

/// The error that stops a task under [`ErrorPolicy::Fail`].
pub(crate) fn failure(source: Option<&InputRecord>, poison: &Poison, task: &str) -> EngineError {
    match source {
        Some(r) => EngineError::Poison {
            topic: r.topic.to_string(),
            partition: r.partition,
            offset: r.offset,
            reason: poison.reason.clone(),
        },
        None => EngineError::PoisonResult {
            task: task.to_string(),
            reason: poison.reason.clone(),
        },
    }
}

/// Sorts a batch's poison reports and keeps one per input record (a record is poison once,
/// whichever operators failed on it); reports without an origin are all kept.
pub(crate) fn dedup(poisoned: &mut Vec<Poison>) {
    // A failure outranks lateness: on a tie the non-late report comes first and stays.
    poisoned.sort_by_key(|p| (p.origin.index().unwrap_or(usize::MAX), p.late));
    poisoned.dedup_by(|later, earlier| {
        later.origin.index().is_some() && later.origin == earlier.origin
    });
}
