//! The bounded append queue between producers and a partition's writer thread.
//!
//! Why it exists: it is where concurrent appends meet so the writer can take them all at once
//! (one write, one fsync for the group), and where backpressure happens. It is bounded in
//! bytes; a producer facing a full queue waits up to its max block time, then gets a typed
//! `QueueFull` error, so a slow disk never turns into unbounded memory.
//!
//! Invariant: a request larger than the whole capacity is still admitted when the queue is
//! empty, so one big batch can never deadlock.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::batch::EncodedBatch;
use crate::error::Result;
use crate::types::{Offset, PartitionId, Timestamp};

/// What an acknowledged append returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The partition written.
    pub partition: PartitionId,
    /// Offset of the first record.
    pub base_offset: Offset,
    /// Offset of the last record.
    pub last_offset: Offset,
    /// The timestamp the log stamped, for `LogAppendTime` topics.
    pub log_append_time: Option<Timestamp>,
}

/// One producer call: batches written together and acknowledged together.
#[derive(Debug)]
pub struct AppendRequest {
    pub(crate) batches: Vec<EncodedBatch>,
    pub(crate) bytes: usize,
    pub(crate) ack: oneshot::Sender<Result<AppendOutcome>>,
    /// Seal the active segment (when it holds anything) before writing these batches: an
    /// explicit request (`Log::roll`), e.g. so that compaction can reach every record.
    pub(crate) roll_first: bool,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<AppendRequest>,
    bytes: usize,
    closed: bool,
}

/// The queue.
#[derive(Debug)]
pub struct AppendQueue {
    state: Mutex<State>,
    not_empty: Condvar,
    not_full: Condvar,
    capacity_bytes: usize,
}

/// Why a push was refused.
#[derive(Debug)]
pub enum PushError {
    /// Still full after the max block time.
    Full(Duration),
    /// The partition is shutting down.
    Closed,
}

impl AppendQueue {
    /// A queue holding at most `capacity_bytes` of batches.
    pub fn new(capacity_bytes: usize) -> AppendQueue {
        AppendQueue {
            state: Mutex::new(State::default()),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            capacity_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enqueues, waiting up to `max_block` for room.
    pub fn push(
        &self,
        req: AppendRequest,
        max_block: Duration,
    ) -> Result<(), (AppendRequest, PushError)> {
        let start = Instant::now();
        let mut s = self.lock();
        loop {
            if s.closed {
                return Err((req, PushError::Closed));
            }
            if s.items.is_empty() || s.bytes + req.bytes <= self.capacity_bytes {
                s.bytes += req.bytes;
                s.items.push_back(req);
                drop(s);
                self.not_empty.notify_one();
                return Ok(());
            }
            let waited = start.elapsed();
            if waited >= max_block {
                return Err((req, PushError::Full(waited)));
            }
            s = self
                .not_full
                .wait_timeout(s, max_block - waited)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Takes queued requests up to `max_bytes` (at least one), waiting up to `timeout` (forever
    /// if `None`) for the first. Returns `(requests, closed)`.
    pub fn pop_group(
        &self,
        max_bytes: usize,
        timeout: Option<Duration>,
    ) -> (Vec<AppendRequest>, bool) {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut s = self.lock();
        while s.items.is_empty() && !s.closed {
            match deadline {
                None => s = self.not_empty.wait(s).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return (Vec::new(), false);
                    }
                    s = self
                        .not_empty
                        .wait_timeout(s, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        let mut out = Vec::new();
        let mut taken = 0usize;
        while let Some(front) = s.items.front() {
            if !out.is_empty() && taken + front.bytes > max_bytes {
                break;
            }
            taken += front.bytes;
            if let Some(r) = s.items.pop_front() {
                out.push(r);
            }
        }
        s.bytes -= taken;
        let closed = s.closed && s.items.is_empty();
        drop(s);
        self.not_full.notify_all();
        (out, closed)
    }

    /// Refuses new requests; queued ones are still drained by the writer.
    pub fn close(&self) {
        self.lock().closed = true;
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }
}
