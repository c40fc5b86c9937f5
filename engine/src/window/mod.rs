//! Windowed aggregation over event time, for every front end: tumbling and hopping windows
//! (`sliced.rs`) and session windows (`session.rs`), each with a grace period, emitting on
//! update or on window close, with state in a RocksDB window or session store backed by its
//! changelog.
//!
//! The semantics (shared by the DSL and SQL):
//! - windows are `[start, end)`, aligned to the epoch; a session spans `[first, last + gap)`;
//! - a window closes when the task's watermark reaches `end + grace`; a record is late when
//!   every window it belongs to has closed — it is dropped or dead-lettered (`weir.late`), and
//!   counted either way;
//! - emit on update: every change of a window's result, coalesced per commit interval (a
//!   write-back cache in front of the store); a session merged into another is retracted;
//! - emit on close: one final result per window, once it closes; pending windows live in the
//!   store, not in memory;
//! - state is kept until its window closes (by the watermark) and is then deleted, with a
//!   tombstone in the changelog, in the transaction that emits the final result — so a
//!   restart never emits a closed window again.
//!
//! Aggregates are mergeable, serializable accumulators ([`WindowFunction`], DataFusion's
//! `Accumulator` shape): hopping windows are built from slices (each record updates exactly
//! one slice; a window's result merges its slices) and sessions merge when a record bridges
//! them.

mod session;
mod sliced;

use std::time::Duration;

use bytes::Bytes;

use crate::error::{EngineError, Result};
use crate::processor::{Origin, TaskContext};

pub use session::SessionWindows;
pub use sliced::SlicedWindows;

/// Most window entries a close handles in one time update; the rest follow on the next ones
/// (with a commit between when outputs pile up), so closing a million windows never holds a
/// million results in memory.
pub const CLOSE_BATCH_MAX: usize = 10_000;

/// Most accumulators the write-back cache holds before it writes them to the store early.
pub const WINDOW_CACHE_MAX: usize = 50_000;

/// The shape of a windowed aggregation's windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed, non-overlapping windows of `size`.
    Tumbling {
        /// Window length.
        size: Duration,
    },
    /// Windows of `size` starting every `advance` (`size` a multiple of `advance`).
    Hopping {
        /// Window length.
        size: Duration,
        /// Distance between window starts.
        advance: Duration,
    },
    /// Per key, records closer than `gap` to each other.
    Session {
        /// Largest silence inside a session.
        gap: Duration,
    },
}

/// When results are emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Emit {
    /// Every change, coalesced per commit interval (the default).
    #[default]
    OnUpdate,
    /// One final result per window once it closes.
    OnWindowClose,
}

/// What happens to a late record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LatePolicy {
    /// Counted and dropped (the default).
    #[default]
    Drop,
    /// Counted and written to the dead-letter topic with a `weir.late` header.
    DeadLetter,
}

/// A windowed aggregation's windows, grace, emit and late policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// The windows.
    pub kind: WindowKind,
    /// How long after its end (in event time) a window still accepts records.
    pub grace: Duration,
    /// When results are emitted.
    pub emit: Emit,
    /// Late records.
    pub late: LatePolicy,
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl WindowSpec {
    /// Windows of `kind`, no grace, emitting on update, dropping late records.
    pub fn new(kind: WindowKind) -> WindowSpec {
        WindowSpec {
            kind,
            grace: Duration::ZERO,
            emit: Emit::OnUpdate,
            late: LatePolicy::Drop,
        }
    }

    /// Checks sizes: positive, whole milliseconds, and a hopping size a multiple of its
    /// advance.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(EngineError::Plan(m));
        match self.kind {
            WindowKind::Tumbling { size } if ms(size) <= 0 => {
                bad("a tumbling window needs a size of at least 1 ms".into())
            }
            WindowKind::Hopping { size, advance } if ms(advance) <= 0 || ms(size) <= 0 => {
                bad("a hopping window needs a size and an advance of at least 1 ms".into())
            }
            WindowKind::Hopping { size, advance } if ms(size) % ms(advance) != 0 => bad(format!(
                "a hopping window's size ({} ms) must be a multiple of its advance ({} ms)",
                ms(size),
                ms(advance)
            )),
            WindowKind::Session { gap } if ms(gap) <= 0 => {
                bad("a session window needs a gap of at least 1 ms".into())
            }
            _ => Ok(()),
        }
    }

    /// How long state lives in event time: the longest a window stays open.
    pub fn retention(&self) -> Duration {
        match self.kind {
            WindowKind::Tumbling { size } | WindowKind::Hopping { size, .. } => size + self.grace,
            WindowKind::Session { gap } => gap + self.grace,
        }
    }

    /// (size, advance, slice) in ms for tumbling and hopping windows.
    pub(crate) fn slicing(&self) -> Option<(i64, i64, i64)> {
        match self.kind {
            WindowKind::Tumbling { size } => Some((ms(size), ms(size), ms(size))),
            WindowKind::Hopping { size, advance } => {
                let (s, a) = (ms(size), ms(advance));
                Some((s, a, gcd(s, a)))
            }
            WindowKind::Session { .. } => None,
        }
    }
}

/// A mergeable, serializable aggregate: what a window accumulates.
pub trait WindowFunction: Send + Sync + 'static {
    /// What each record contributes.
    type In;
    /// The accumulator.
    type Acc: Clone + Send + 'static;
    /// An empty accumulator.
    fn init(&self) -> Self::Acc;
    /// Adds one record with event time `ts` (ms).
    fn add(&self, acc: &mut Self::Acc, ts: i64, input: &Self::In);
    /// Merges `other` into `acc` (slices of a hopping window, sessions a record bridges).
    fn merge(&self, acc: &mut Self::Acc, other: &Self::Acc);
    /// Encodes an accumulator for the store.
    fn encode(&self, acc: &Self::Acc) -> std::result::Result<Vec<u8>, String>;
    /// Decodes a stored accumulator.
    fn decode(&self, bytes: &[u8]) -> std::result::Result<Self::Acc, String>;
}

/// One result of a windowed aggregation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowResult<A> {
    /// The input record that caused it ([`Origin::NONE`] when a window closed).
    pub origin: Origin,
    /// The grouping key, as encoded.
    pub key: Bytes,
    /// Window start (ms, inclusive).
    pub start: i64,
    /// Window end (ms, exclusive).
    pub end: i64,
    /// The window's aggregate.
    pub acc: A,
    /// A session merged into another: this earlier result no longer holds.
    pub retracted: bool,
}

/// Counters of a windowed aggregation in one task (also in its operator's metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowCounters {
    /// Late records (dropped or dead-lettered).
    pub late: u64,
    /// Windows closed.
    pub closed: u64,
}

/// Decodes a stored accumulator; one that does not decode is corrupted state.
pub(crate) fn decode_acc<F: WindowFunction>(f: &F, store: &str, bytes: &[u8]) -> Result<F::Acc> {
    f.decode(bytes)
        .map_err(|reason| EngineError::StateCorrupted {
            store: store.to_string(),
            reason,
        })
}

/// Encodes an accumulator for the store.
pub(crate) fn encode_acc<F: WindowFunction>(f: &F, store: &str, acc: &F::Acc) -> Result<Vec<u8>> {
    f.encode(acc).map_err(|reason| EngineError::StateCorrupted {
        store: store.to_string(),
        reason: format!("cannot encode an accumulator: {reason}"),
    })
}

/// A late record: counted as operator `op`'s, and dead-lettered (with `why`) when the policy
/// says so.
pub(crate) fn reject_late(
    ctx: &mut TaskContext<'_>,
    op: usize,
    policy: LatePolicy,
    origin: Origin,
    why: impl FnOnce() -> String,
) {
    ctx.record_late(op, 1);
    if policy == LatePolicy::DeadLetter {
        ctx.dead_letter_late(origin, why());
    }
}

/// Floor division (towards negative infinity), for aligning times to the epoch.
pub(crate) fn align(ts: i64, unit: i64) -> i64 {
    ts.saturating_sub(ts.rem_euclid(unit))
}

/// A lower bound of the times a time-ordered family of a store still holds (slice starts,
/// close times, expiry times): closing scans start there, and are skipped when nothing can be
/// due. A scan from the family's start would step over the tombstones of every entry deleted
/// before (RocksDB keeps them until compaction), which costs more than everything else.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TimeFloor(Option<i64>);

impl TimeFloor {
    /// Whether entries before `bound` may exist.
    pub(crate) fn due(&self, bound: i64) -> bool {
        self.0.is_none_or(|f| f < bound)
    }

    /// Where a scan starts.
    pub(crate) fn start(&self) -> i64 {
        self.0.unwrap_or(i64::MIN)
    }

    /// An entry at `t` was added (an unknown floor stays unknown: older entries may exist).
    pub(crate) fn added(&mut self, t: i64) {
        if let Some(f) = &mut self.0 {
            *f = (*f).min(t);
        }
    }

    /// Everything before `t` is gone.
    pub(crate) fn cleared_to(&mut self, t: i64) {
        self.0 = Some(self.0.map_or(t, |f| f.max(t)));
    }
}
