//! Receiving: a partition's window topped up from the queue's topic in bounded reads (bodies
//! cached up to [`WINDOW_BODY_BYTES_MAX`]), messages acquired under locks and journaled under
//! the partition's lock, answered once durable; long polling woken by sends and releases.
//!
//! Invariants: a window is read into only while it has room (or restored messages to read
//! past: [`crate::SharePartition::admits`] decides what it takes), at most [`FILL_READ_BYTES`] per
//! look; messages are read `read_committed`, so a dead letter of an aborted transaction is
//! never delivered; a receive that takes nothing may wait for the clock only when it came
//! up short.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use weir_log::{Isolation, LogError, Offset, PartitionId, RecordView};

use crate::error::{QueueError, Result};
use crate::partition::IN_FLIGHT_MAX;
use crate::pending::Pending;
use crate::queue::{
    JournalTicket, Message, Part, Queue, Received, HEADER_VISIBLE_AT, LOCK_MIN_MS, RECEIVE_MAX,
    WINDOW_BODY_BYTES_MAX,
};
use crate::wait::block_until;

/// Most bytes read from the topic per look when a window has room.
pub const FILL_READ_BYTES: usize = 1 << 20;
/// Least bytes read per look (a look costs a syscall and a batch parse: not for one record).
pub(crate) const FILL_READ_BYTES_MIN: usize = 64 << 10;
/// Bytes read per message of room (records are usually smaller; a short read only costs
/// another look).
const FILL_BYTES_PER_MESSAGE: usize = 512;
/// A window is topped up when this share of it is free, or when a receive finds too little.
const FILL_WHEN_FREE_DIVISOR: usize = 8;

impl Queue {
    /// Reads from the topic into a partition's window while it has room.
    pub(crate) fn fill(&self, p: u32, part: &mut Part) -> Result<()> {
        let (next, room) = part.share.wants();
        if room == 0 && part.share.ahead() == 0 {
            return Ok(());
        }
        // About what the room takes (records of a few hundred bytes), within bounds.
        let bytes = room
            .max(part.share.ahead())
            .saturating_mul(FILL_BYTES_PER_MESSAGE)
            .clamp(FILL_READ_BYTES_MIN, FILL_READ_BYTES);
        let fetch = match self.log.read_isolated(
            &self.name,
            PartitionId(p),
            Offset(next),
            bytes,
            Isolation::ReadCommitted,
        ) {
            Ok(f) => f,
            Err(LogError::OffsetOutOfRange { .. }) => {
                // Retention deleted messages nobody consumed: they are gone.
                let start = self.log.earliest_offset(&self.name, PartitionId(p))?;
                if start.0 > next {
                    part.share.skip_to(start.0);
                    part.drop_bodies_below(start.0);
                }
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if fetch.is_empty() {
            return Ok(());
        }
        let (delay_ms, fifo) = (part.config.delay_ms, part.config.fifo);
        let mut incoming = Vec::new();
        let mut read_to = fetch.next_offset().0;
        let mut admission = part.share.admission();
        for r in fetch.records() {
            let r = r.map_err(LogError::from)?;
            if !part.share.admits(&mut admission, r.offset.0) {
                // The rest waits for room: read it again later.
                read_to = r.offset.0;
                break;
            }
            let visible_at = visible_at(&r, delay_ms);
            let group = if fifo {
                r.key.map(<[u8]>::to_vec)
            } else {
                None
            };
            if part.body_bytes < WINDOW_BODY_BYTES_MAX {
                let m = Message::from_view(p, &r);
                part.body_bytes += m.size();
                part.bodies.insert(m.offset, m);
            }
            incoming.push(crate::Incoming {
                offset: r.offset.0,
                visible_at,
                group,
            });
        }
        part.share.offer(incoming, read_to);
        Ok(())
    }

    /// Up to `max` messages now, without waiting; and the earliest time (epoch ms) at which
    /// one may become deliverable by the clock alone.
    pub fn try_receive(
        &self,
        max: usize,
        visibility_ms: Option<i64>,
    ) -> Result<(Vec<Received>, Option<i64>)> {
        self.start_receive(max, visibility_ms)?.wait()
    }

    /// [`Queue::try_receive`] whose answer waits for its journal ([`Pending`]). It blocks
    /// only to write dead letters (a queue with a redrive policy: call it where blocking is
    /// allowed) or when the log's append queue is full.
    pub fn start_receive(
        &self,
        max: usize,
        visibility_ms: Option<i64>,
    ) -> Result<Pending<'_, (Vec<Received>, Option<i64>)>> {
        let max = max.min(RECEIVE_MAX);
        let visibility_ms = visibility_ms.map(|v| v.max(LOCK_MIN_MS));
        let n = self.parts.len();
        let first = self.next_rotation();
        let mut out = Vec::new();
        let mut wake: Option<i64> = None;
        let mut tickets = Vec::new();
        let mut undecided = None;
        for i in 0..n {
            if out.len() >= max {
                break;
            }
            let p = ((first + i) % n) as u32;
            let ticket = self.receive_from(p, max - out.len(), visibility_ms, &mut out, &mut wake);
            match ticket {
                Ok(t) => tickets.push((p, t)),
                // A partition waiting for a transaction's outcome (an engine's acks) does
                // not hold up the others.
                Err(e @ QueueError::Undecided { .. }) => {
                    undecided.get_or_insert(e);
                }
                Err(e) => {
                    // What was taken from other partitions comes back after its lock.
                    drop(tickets);
                    return Err(e);
                }
            }
        }
        match undecided {
            Some(e) if out.is_empty() && tickets.is_empty() => Err(e),
            _ => Ok(Pending::new(self, (out, wake), tickets)),
        }
    }

    pub(crate) fn receive_from(
        &self,
        p: u32,
        max: usize,
        visibility_ms: Option<i64>,
        out: &mut Vec<Received>,
        wake: &mut Option<i64>,
    ) -> Result<JournalTicket> {
        let mut part = self.partition(p)?;
        if part.share.wants().1 >= IN_FLIGHT_MAX / FILL_WHEN_FREE_DIVISOR || part.share.ahead() > 0
        {
            self.fill(p, &mut part)?;
        }
        let now = self.now();
        let (mut acquired, mut dead) = part.share.acquire(now, max, visibility_ms);
        if acquired.len() < max && (part.share.wants().1 > 0 || part.share.ahead() > 0) {
            // A failed read changes nothing: answer with what was acquired already.
            match self.fill(p, &mut part) {
                Ok(()) => {
                    let (more, more_dead) =
                        part.share.acquire(now, max - acquired.len(), visibility_ms);
                    acquired.extend(more);
                    dead.extend(more_dead);
                }
                Err(e) if !acquired.is_empty() || !dead.is_empty() => {
                    tracing::warn!(queue = %self.name, partition = p, error = %e,
                        "reading the queue's topic failed; answering with what was taken");
                }
                Err(e) => return Err(e),
            }
        }
        let short = acquired.len() < max;
        let answered = out.len();
        let result = self.deliver(p, &mut part, now, acquired, dead, out);
        if result.is_err() {
            // Acquisitions and dead letters that were not written are forgotten with the
            // partition's memory; nothing of them was answered.
            out.truncate(answered);
            self.break_after_failure(&mut part);
            return result;
        }
        // Only a receive that came up short may wait for the clock.
        if short {
            if let Some(w) = part.share.next_wake(now) {
                *wake = Some(wake.map_or(w, |have| have.min(w)));
            }
        }
        result
    }

    /// The acquired messages' bodies into `out`, and the dead ones moved to the dead-letter
    /// queue; the journal's ticket for the acquisitions (dead letters are written before
    /// this returns). On error the partition must be rebuilt.
    fn deliver(
        &self,
        p: u32,
        part: &mut Part,
        now: i64,
        acquired: Vec<crate::Acquired>,
        dead: Vec<crate::Delivery>,
        out: &mut Vec<Received>,
    ) -> Result<JournalTicket> {
        let offsets: Vec<i64> = acquired
            .iter()
            .map(|a| a.receipt.offset)
            .chain(dead.iter().map(|d| d.offset))
            .collect();
        let mut bodies = self.bodies_of(p, part, &offsets)?;
        for a in acquired {
            match bodies.remove(&a.receipt.offset) {
                Some(message) => out.push(Received {
                    receipt: a.receipt,
                    deliveries: a.deliveries,
                    message,
                }),
                // Retention deleted it after it was read into the window: it is gone.
                None => {
                    let _ = part.share.ack(&a.receipt, now);
                }
            }
        }
        if dead.is_empty() {
            let changes = part.share.take_journal();
            return self.journal(p, part, changes);
        }
        let config = part.config.clone();
        let dead: Vec<crate::moves::Move> = dead
            .into_iter()
            .filter_map(|d| {
                let m = bodies.remove(&d.offset)?;
                Some(crate::moves::Move::dead_letter(
                    self,
                    &config,
                    m,
                    d.deliveries,
                    "maxReceiveCount exceeded",
                    now,
                ))
            })
            .collect::<Result<_>>()?;
        self.commit_moves(p, part, dead)?;
        Ok(JournalTicket::default())
    }

    /// The messages at `offsets` (all in the window), from the cache or the log.
    pub(crate) fn bodies_of(
        &self,
        p: u32,
        part: &mut Part,
        offsets: &[i64],
    ) -> Result<BTreeMap<i64, Message>> {
        let mut found = BTreeMap::new();
        let mut missing = Vec::new();
        for &o in offsets {
            match part.bodies.remove(&o) {
                Some(m) => {
                    part.body_bytes -= m.size();
                    found.insert(o, m);
                }
                None => missing.push(o),
            }
        }
        missing.sort_unstable();
        let mut i = 0;
        while i < missing.len() {
            let fetch = self.log.read_isolated(
                &self.name,
                PartitionId(p),
                Offset(missing[i]),
                FILL_READ_BYTES,
                Isolation::ReadCommitted,
            )?;
            let before = i;
            for r in fetch.records() {
                let r = r.map_err(LogError::from)?;
                while i < missing.len() && missing[i] < r.offset.0 {
                    i += 1;
                }
                if i < missing.len() && missing[i] == r.offset.0 {
                    found.insert(r.offset.0, Message::from_view(p, &r));
                    i += 1;
                }
            }
            if i == before {
                // Not readable (deleted by retention): skip it.
                i += 1;
            }
        }
        Ok(found)
    }

    /// Up to `max` messages, waiting up to `wait` for the first (long polling): returns as
    /// soon as a message is sent, released, or its delay or lock runs out.
    pub fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility_ms: Option<i64>,
    ) -> Result<Vec<Received>> {
        let deadline = Instant::now() + wait;
        loop {
            let changed = self.changed()?;
            let (got, wake) = self.try_receive(max, visibility_ms)?;
            let now = Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            let mut until = deadline;
            if let Some(w) = wake {
                let ms = (w - self.now()).max(0) as u64;
                until = until.min(now + Duration::from_millis(ms));
            }
            block_until(changed, until);
        }
    }
}

/// When a record becomes deliverable: its own delay's header, else its time plus the
/// queue's delay.
fn visible_at(r: &RecordView<'_>, queue_delay_ms: i64) -> i64 {
    r.headers()
        .filter_map(|h| h.ok())
        .find(|(k, _)| *k == HEADER_VISIBLE_AT.as_bytes())
        .and_then(|(_, v)| std::str::from_utf8(v?).ok()?.parse().ok())
        .unwrap_or_else(|| r.timestamp.0.saturating_add(queue_delay_ms))
}
