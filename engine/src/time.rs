//! Event time of one task: the largest event time seen per input, the watermark, idleness.
//!
//! The semantics every front end shares:
//! - an input's watermark is the largest event time it has delivered minus its allowed
//!   out-of-orderness; the task's watermark is the minimum over its stream inputs (tables do
//!   not hold time back);
//! - the watermark moves only with event time, never with the wall clock (replaying last
//!   month gives last month's windows), and never backwards;
//! - an input that has delivered nothing for the idle timeout (processing time) drops out of
//!   the minimum, and the watermark then follows the others; when every input is idle the
//!   watermark stays where it is;
//! - the watermark and each input's largest event time are committed with the input offsets
//!   (as offset metadata), so a restart resumes time where the last commit left it and never
//!   re-emits a window that had closed.

use std::time::Duration;

use weir_log::Timestamp;

/// Where an input's event time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    /// The record timestamp (the default).
    RecordTimestamp,
    /// The processor reports it (a field of the value), with
    /// [`crate::TaskContext::observe_event_time`].
    Extracted,
}

/// How an input's watermark is derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTime {
    /// Where event time comes from.
    pub source: TimeSource,
    /// How far behind the largest event time seen the watermark stays.
    pub out_of_orderness: Duration,
}

impl Default for EventTime {
    fn default() -> Self {
        EventTime {
            source: TimeSource::RecordTimestamp,
            out_of_orderness: Duration::ZERO,
        }
    }
}

/// The event-time state of one input of a task.
#[derive(Debug, Clone)]
struct InputClock {
    spec: EventTime,
    /// Tables do not hold the watermark back.
    holds_watermark: bool,
    max_event_ms: Option<i64>,
    /// Processing time (log clock) of the last record delivered, or of the task's start.
    last_record_ms: i64,
}

/// The event-time state of one task.
#[derive(Debug, Clone)]
pub struct TaskTime {
    inputs: Vec<InputClock>,
    watermark_ms: Option<i64>,
    idle_timeout_ms: i64,
}

/// Prefix of the offset metadata a task commits; other metadata is ignored on restore.
const METADATA_PREFIX: &str = "weir-time-v1";

impl TaskTime {
    /// A task's clock: one entry per input, `(event time spec, holds the watermark)`.
    pub fn new(inputs: &[(EventTime, bool)], idle_timeout: Duration, now: Timestamp) -> TaskTime {
        TaskTime {
            inputs: inputs
                .iter()
                .map(|(spec, holds)| InputClock {
                    spec: *spec,
                    holds_watermark: *holds,
                    max_event_ms: None,
                    last_record_ms: now.0,
                })
                .collect(),
            watermark_ms: None,
            idle_timeout_ms: idle_timeout.as_millis().min(i64::MAX as u128) as i64,
        }
    }

    /// Where input `i` takes its event time from.
    pub fn source(&self, i: usize) -> TimeSource {
        self.inputs
            .get(i)
            .map_or(TimeSource::RecordTimestamp, |c| c.spec.source)
    }

    /// Input `i` delivered a record with event time `ts`.
    pub fn observe(&mut self, i: usize, ts: Timestamp) {
        if let Some(c) = self.inputs.get_mut(i) {
            c.max_event_ms = Some(c.max_event_ms.map_or(ts.0, |m| m.max(ts.0)));
        }
    }

    /// Input `i` delivered records at processing time `now` (it is not idle).
    pub fn active(&mut self, i: usize, now: Timestamp) {
        if let Some(c) = self.inputs.get_mut(i) {
            c.last_record_ms = now.0;
        }
    }

    /// Recomputes the watermark as of processing time `now`; true when it moved forward.
    pub fn advance(&mut self, now: Timestamp) -> bool {
        let mut min: Option<i64> = None;
        for c in self.inputs.iter().filter(|c| c.holds_watermark) {
            let idle = now.0.saturating_sub(c.last_record_ms) >= self.idle_timeout_ms;
            let wm = c
                .max_event_ms
                .map(|m| m.saturating_sub(c.spec.out_of_orderness.as_millis() as i64));
            match wm {
                // Nothing seen yet and not idle: it holds time back until it speaks or idles.
                None if !idle => return false,
                None => {}
                Some(_) if idle => {}
                Some(w) => min = Some(min.map_or(w, |m: i64| m.min(w))),
            }
        }
        match min {
            Some(m) if self.watermark_ms.is_none_or(|w| m > w) => {
                self.watermark_ms = Some(m);
                true
            }
            _ => false,
        }
    }

    /// The task's watermark: every event time at or below it has been seen (up to the allowed
    /// out-of-orderness). `None` before any input has spoken.
    pub fn watermark(&self) -> Option<Timestamp> {
        self.watermark_ms.map(Timestamp)
    }

    /// The largest event time any input has delivered.
    pub fn stream_time(&self) -> Option<Timestamp> {
        self.inputs
            .iter()
            .filter_map(|c| c.max_event_ms)
            .max()
            .map(Timestamp)
    }

    /// The offset metadata to commit with input `i`'s offset.
    pub fn metadata(&self, i: usize) -> String {
        let max = self.inputs.get(i).and_then(|c| c.max_event_ms);
        let f = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
        format!(
            "{METADATA_PREFIX} max={} wm={}",
            f(max),
            f(self.watermark_ms)
        )
    }

    /// Restores input `i`'s state (and the watermark, never moving it back) from the metadata
    /// committed with its offset; anything else (an empty string, another writer's text) is
    /// ignored.
    pub fn restore(&mut self, i: usize, metadata: &str) {
        let Some(rest) = metadata.strip_prefix(METADATA_PREFIX) else {
            return;
        };
        let field = |name: &str| {
            rest.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse::<i64>().ok())
        };
        if let (Some(max), Some(c)) = (field("max"), self.inputs.get_mut(i)) {
            c.max_event_ms = Some(c.max_event_ms.map_or(max, |m| m.max(max)));
        }
        if let Some(wm) = field("wm") {
            self.watermark_ms = Some(self.watermark_ms.map_or(wm, |w| w.max(wm)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(ooo_ms: u64) -> (EventTime, bool) {
        (
            EventTime {
                source: TimeSource::RecordTimestamp,
                out_of_orderness: Duration::from_millis(ooo_ms),
            },
            true,
        )
    }

    #[test]
    fn the_watermark_is_the_minimum_over_inputs_that_are_not_idle() {
        let mut t = TaskTime::new(
            &[stream(10), stream(0)],
            Duration::from_secs(5),
            Timestamp(0),
        );
        t.observe(0, Timestamp(100));
        assert!(!t.advance(Timestamp(1)), "input 1 has not spoken yet");
        t.observe(1, Timestamp(50));
        assert!(t.advance(Timestamp(2)));
        assert_eq!(t.watermark(), Some(Timestamp(50)));
        t.observe(0, Timestamp(200));
        t.active(0, Timestamp(6_000));
        // Input 1 has been quiet for 6 s: it no longer holds time back.
        assert!(t.advance(Timestamp(6_000)));
        assert_eq!(t.watermark(), Some(Timestamp(190)));
        // Everything idle: the wall clock alone never moves event time.
        assert!(!t.advance(Timestamp(60_000)));
        assert_eq!(t.watermark(), Some(Timestamp(190)));
    }

    #[test]
    fn metadata_round_trips_and_never_moves_time_back() {
        let mut t = TaskTime::new(&[stream(0)], Duration::from_secs(5), Timestamp(0));
        t.observe(0, Timestamp(70));
        t.advance(Timestamp(0));
        let m = t.metadata(0);
        let mut u = TaskTime::new(&[stream(0)], Duration::from_secs(5), Timestamp(0));
        u.restore(0, &m);
        assert_eq!(u.watermark(), Some(Timestamp(70)));
        assert_eq!(u.stream_time(), Some(Timestamp(70)));
        u.restore(0, "weir-time-v1 max=5 wm=5");
        assert_eq!(u.watermark(), Some(Timestamp(70)));
        u.restore(0, "someone else's metadata");
        assert_eq!(u.watermark(), Some(Timestamp(70)));
    }
}
