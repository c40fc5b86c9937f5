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
//!   watermark stays where it is; a repartition input follows the upstream tasks writing it
//!   (the minimum of their watermarks), each dropping out only when it says it is idle;
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

/// What a task's clock knows of one input when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputTime {
    /// Where its event time comes from.
    pub spec: EventTime,
    /// Streams hold the watermark back; tables do not.
    pub holds_watermark: bool,
    /// For an internal repartition input: how many upstream tasks write it. Its watermark is
    /// then the minimum of theirs, which they send along as watermark records.
    pub writers: Option<u32>,
}

/// What a task knows of one upstream writer of a repartition input.
#[derive(Debug, Clone, Copy)]
struct WriterClock {
    watermark_ms: Option<i64>,
    /// The writer said all its inputs are idle.
    idle: bool,
}

/// The event-time state of one input of a task.
#[derive(Debug, Clone)]
struct InputClock {
    spec: EventTime,
    holds_watermark: bool,
    max_event_ms: Option<i64>,
    /// Processing time (log clock) of the last record delivered, or of the task's start.
    last_record_ms: i64,
    writers: Option<Vec<WriterClock>>,
}

/// An input's say in the task's watermark.
enum Say {
    /// Idle: it does not count.
    Idle,
    /// Not spoken yet: it holds time back.
    Holds,
    /// Its watermark.
    At(i64),
}

impl InputClock {
    fn say(&self, now: i64, idle_timeout_ms: i64) -> Say {
        let silent = |last: i64| now.saturating_sub(last) >= idle_timeout_ms;
        let Some(writers) = &self.writers else {
            let wm = self
                .max_event_ms
                .map(|m| m.saturating_sub(self.spec.out_of_orderness.as_millis() as i64));
            return match (wm, silent(self.last_record_ms)) {
                (_, true) => Say::Idle,
                (None, false) => Say::Holds,
                (Some(w), false) => Say::At(w),
            };
        };
        // A writer drops out only when it says all its inputs are idle: one that is merely
        // quiet (restoring its state after a restart, say) still holds time back.
        let mut min: Option<i64> = None;
        for w in writers.iter().filter(|w| !w.idle) {
            match w.watermark_ms {
                None => return Say::Holds,
                Some(x) => min = Some(min.map_or(x, |m| m.min(x))),
            }
        }
        min.map_or(Say::Idle, Say::At)
    }
}

/// The event-time state of one task.
#[derive(Debug, Clone)]
pub struct TaskTime {
    inputs: Vec<InputClock>,
    watermark_ms: Option<i64>,
    idle_timeout_ms: i64,
    /// A processor asked for another time update (its work did not fit one call).
    again: bool,
}

/// Header of a watermark record: an upstream task's watermark (decimal ms), sent to every
/// partition of the repartition topics it writes. Such records carry no key or value and are
/// read only from the plan's own internal topics.
pub const WATERMARK_HEADER: &str = "weir.watermark";
/// Header of a watermark record: the upstream task's partition.
pub const WRITER_HEADER: &str = "weir.writer";
/// Header of a watermark record: `1` when every input of the upstream task is idle.
pub const IDLE_HEADER: &str = "weir.idle";

/// Most bytes of offset metadata a task commits: offsets store it with a 16-bit length.
const METADATA_BYTES_MAX: usize = 16 * 1024;

/// Prefix of the offset metadata a task commits; other metadata is ignored on restore.
const METADATA_PREFIX: &str = "weir-time-v1";

impl TaskTime {
    /// A task's clock, one entry per input.
    pub fn new(inputs: &[InputTime], idle_timeout: Duration, now: Timestamp) -> TaskTime {
        TaskTime {
            inputs: inputs
                .iter()
                .map(|i| InputClock {
                    spec: i.spec,
                    holds_watermark: i.holds_watermark,
                    max_event_ms: None,
                    last_record_ms: now.0,
                    writers: i.writers.map(|n| {
                        (0..n)
                            .map(|_| WriterClock {
                                watermark_ms: None,
                                idle: false,
                            })
                            .collect()
                    }),
                })
                .collect(),
            watermark_ms: None,
            idle_timeout_ms: idle_timeout.as_millis().min(i64::MAX as u128) as i64,
            again: false,
        }
    }

    /// Asks for another time update.
    pub fn request_again(&mut self) {
        self.again = true;
    }

    /// Whether a time update was asked for; clears the request.
    pub fn take_again(&mut self) -> bool {
        std::mem::take(&mut self.again)
    }

    /// Where input `i` takes its event time from.
    pub fn source(&self, i: usize) -> TimeSource {
        self.inputs
            .get(i)
            .map_or(TimeSource::RecordTimestamp, |c| c.spec.source)
    }

    /// Whether input `i` takes its watermark from upstream writers.
    pub fn has_writers(&self, i: usize) -> bool {
        self.inputs.get(i).is_some_and(|c| c.writers.is_some())
    }

    /// Input `i` delivered a record with event time `ts`.
    pub fn observe(&mut self, i: usize, ts: Timestamp) {
        if let Some(c) = self.inputs.get_mut(i) {
            c.max_event_ms = Some(c.max_event_ms.map_or(ts.0, |m| m.max(ts.0)));
        }
    }

    /// Upstream writer `writer` of input `i` sent its watermark (and whether it is idle).
    pub fn observe_writer(&mut self, i: usize, writer: u32, wm: i64, idle: bool) {
        let Some(w) = self
            .inputs
            .get_mut(i)
            .and_then(|c| c.writers.as_mut())
            .and_then(|ws| ws.get_mut(writer as usize))
        else {
            return;
        };
        // `i64::MIN` is "no watermark yet" (sent only with idle set).
        if wm != i64::MIN {
            w.watermark_ms = Some(w.watermark_ms.map_or(wm, |m| m.max(wm)));
        }
        w.idle = idle;
    }

    /// Input `i` delivered records at processing time `now` (it is not idle).
    pub fn active(&mut self, i: usize, now: Timestamp) {
        if let Some(c) = self.inputs.get_mut(i) {
            c.last_record_ms = now.0;
        }
    }

    /// Whether every input that holds the watermark is idle as of `now` (what this task tells
    /// the tasks downstream of its repartition topics).
    pub fn all_idle(&self, now: Timestamp) -> bool {
        self.inputs
            .iter()
            .filter(|c| c.holds_watermark)
            .all(|c| matches!(c.say(now.0, self.idle_timeout_ms), Say::Idle))
    }

    /// Recomputes the watermark as of processing time `now`; true when it moved forward.
    pub fn advance(&mut self, now: Timestamp) -> bool {
        let mut min: Option<i64> = None;
        for c in self.inputs.iter().filter(|c| c.holds_watermark) {
            match c.say(now.0, self.idle_timeout_ms) {
                Say::Holds => return false,
                Say::Idle => {}
                Say::At(w) => min = Some(min.map_or(w, |m: i64| m.min(w))),
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
        let input = self.inputs.get(i);
        let f = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
        let mut m = format!(
            "{METADATA_PREFIX} max={} wm={}",
            f(input.and_then(|c| c.max_event_ms)),
            f(self.watermark_ms)
        );
        if let Some(ws) = input.and_then(|c| c.writers.as_ref()) {
            let known: Vec<String> = ws
                .iter()
                .enumerate()
                .filter_map(|(j, w)| w.watermark_ms.map(|x| format!("{j}:{x}")))
                .collect();
            let writers = format!(" writers={}", known.join(","));
            // Past the cap the writers' watermarks are left out (they come again with the next
            // watermark records); the task's own watermark is always kept.
            if m.len() + writers.len() <= METADATA_BYTES_MAX {
                m.push_str(&writers);
            }
        }
        m
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
        };
        let num = |name: &str| field(name).and_then(|v| v.parse::<i64>().ok());
        if let (Some(max), Some(c)) = (num("max"), self.inputs.get_mut(i)) {
            c.max_event_ms = Some(c.max_event_ms.map_or(max, |m| m.max(max)));
        }
        if let Some(wm) = num("wm") {
            self.watermark_ms = Some(self.watermark_ms.map_or(wm, |w| w.max(wm)));
        }
        let writers = field("writers").unwrap_or_default();
        for (j, x) in writers.split(',').filter_map(|p| p.split_once(':')) {
            let (Ok(j), Ok(x)) = (j.parse::<usize>(), x.parse::<i64>()) else {
                continue;
            };
            if let Some(w) = self
                .inputs
                .get_mut(i)
                .and_then(|c| c.writers.as_mut())
                .and_then(|ws| ws.get_mut(j))
            {
                w.watermark_ms = Some(w.watermark_ms.map_or(x, |m| m.max(x)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(ooo_ms: u64) -> InputTime {
        InputTime {
            spec: EventTime {
                source: TimeSource::RecordTimestamp,
                out_of_orderness: Duration::from_millis(ooo_ms),
            },
            holds_watermark: true,
            writers: None,
        }
    }

    #[test]
    fn a_repartition_input_follows_the_slowest_writer_that_is_not_idle() {
        let mut input = stream(0);
        input.writers = Some(2);
        let mut t = TaskTime::new(&[input], Duration::from_secs(5), Timestamp(0));
        t.observe_writer(0, 0, 100, false);
        assert!(!t.advance(Timestamp(1)), "writer 1 has not spoken");
        t.observe_writer(0, 1, 40, false);
        assert!(t.advance(Timestamp(2)));
        assert_eq!(t.watermark(), Some(Timestamp(40)));
        t.observe_writer(0, 1, 40, true);
        assert!(
            t.advance(Timestamp(3)),
            "an idle writer does not hold time back"
        );
        assert_eq!(t.watermark(), Some(Timestamp(100)));
        let m = t.metadata(0);
        let mut u = TaskTime::new(&[input], Duration::from_secs(5), Timestamp(0));
        u.restore(0, &m);
        assert_eq!(u.watermark(), Some(Timestamp(100)));
        assert!(m.contains("writers=0:100,1:40"), "{m}");
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
