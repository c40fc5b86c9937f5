//! [`Queue`]: one queue over its topic — the topic's partitions shared by any number of
//! competing consumers, each partition's state a [`SharePartition`] journaled to the queue's
//! state topic before anything is answered.
//!
//! Durability: every operation takes the partition's changes ([`SharePartition::take_journal`])
//! and appends them as one record to the state topic's partition of the same number, under
//! the partition's lock (so the journal's order is the state's), then waits for the append's
//! fsync outside the lock (so concurrent consumers share one group commit). Every
//! [`SNAPSHOT_AFTER_BYTES`] of journal, the whole state is written instead and the records
//! before it are deleted, so recovery reads a snapshot and a short tail. A journal write that
//! fails leaves the partition marked broken: its next operation rebuilds it from the state
//! topic, forgetting whatever was not written.
//!
//! Dead letters and moves (redrive) write the moved messages and the journal record in one
//! log transaction ([`crate::moves`]): a message is in exactly one of the two queues.
//!
//! Invariants: a partition's window holds at most its bound of messages and
//! [`WINDOW_BODY_BYTES_MAX`] of their bodies; messages are read from the topic with
//! `read_committed`, so a dead letter of an aborted transaction is never delivered.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::Event;
use weir_coord::{TransactionCoordinator, TransactionalProducer};
use weir_log::{
    AppendTicket, Header, Isolation, Log, LogError, Offset, PartitionId, Record, RecordView,
};

use crate::catalog::QueueConfig;
use crate::error::{QueueError, Result};
use crate::journal;
use crate::partition::{QueueSettings, Receipt, SharePartition, IN_FLIGHT_MAX};
use crate::pending::Pending;
use crate::send::Dedup;
use crate::wait::{block_until, Changed};

/// Most bytes read from the topic per look when a window has room.
pub const FILL_READ_BYTES: usize = 1 << 20;
/// Least bytes read per look (a look costs a syscall and a batch parse: not for one record).
const FILL_READ_BYTES_MIN: usize = 64 << 10;
/// Bytes read per message of room (records are usually smaller; a short read only costs
/// another look).
const FILL_BYTES_PER_MESSAGE: usize = 512;
/// A window is topped up when this share of it is free, or when a receive finds too little.
const FILL_WHEN_FREE_DIVISOR: usize = 8;
/// Message bodies kept with a partition's window, so a receive does not read the log twice;
/// beyond it bodies are read again when delivered (the window's bound counts messages, this
/// bounds their bytes).
pub const WINDOW_BODY_BYTES_MAX: usize = 16 << 20;
/// Journal bytes after which a partition writes a snapshot and deletes what came before:
/// recovery then reads at most about this much per partition.
pub const SNAPSHOT_AFTER_BYTES: u64 = 4 << 20;
/// The shortest lock a receive takes: a visibility timeout of 0 (SQS: "visible to others at
/// once") locks for this long, so one receive never takes the same message twice (its
/// second look at a window happens within the same millisecond).
pub(crate) const LOCK_MIN_MS: i64 = 1;
/// Most messages one receive returns (a window's worth).
pub const RECEIVE_MAX: usize = IN_FLIGHT_MAX;
/// Header: when a message with a delay of its own becomes visible (epoch ms, decimal).
pub const HEADER_VISIBLE_AT: &str = "weir.visible-at";
/// Header: a message's deduplication id.
pub const HEADER_DEDUP_ID: &str = "weir.dedup-id";
/// The prefix of the headers Weir writes; a sender's own headers may not use it.
pub const RESERVED_HEADER_PREFIX: &str = "weir.";
/// Header: the data types of a message's attributes other than `String` (JSON, by name),
/// as the SQS API sends them; the one `weir.` header a sender may set.
pub const HEADER_ATTRIBUTE_TYPES: &str = "weir.attribute-types";

/// A message as a consumer gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The partition it is in.
    pub partition: u32,
    /// Its offset there.
    pub offset: i64,
    /// Its key (a FIFO queue's message group).
    pub key: Option<Bytes>,
    /// Its body.
    pub body: Bytes,
    /// Its headers (attributes), Weir's own included.
    pub headers: Vec<Header>,
    /// When it was sent (epoch ms).
    pub timestamp: i64,
}

impl Message {
    fn from_view(partition: u32, r: &RecordView<'_>) -> Message {
        let rec = r.to_record();
        Message {
            partition,
            offset: r.offset.0,
            key: rec.key,
            body: rec.value.unwrap_or_default(),
            headers: rec.headers,
            timestamp: r.timestamp.0,
        }
    }

    /// A header's value, if the message has it.
    pub fn header(&self, key: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.key == key)
            .and_then(|h| h.value.as_deref())
    }

    fn size(&self) -> usize {
        self.body.len()
            + self.key.as_ref().map_or(0, |k| k.len())
            + self
                .headers
                .iter()
                .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
                .sum::<usize>()
    }
}

/// A delivered message and what settles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Settles this delivery (ack, nack, reject, change visibility).
    pub receipt: Receipt,
    /// This delivery's number (1 for the first).
    pub deliveries: u32,
    /// The message.
    pub message: Message,
}

/// A queue's depth and health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages deliverable now (including those not yet read into a window).
    pub visible: u64,
    /// Messages locked by a consumer.
    pub in_flight: u64,
    /// Messages waiting for their delay (or a nack's).
    pub delayed: u64,
    /// When the oldest message not yet done was sent (epoch ms).
    pub oldest_timestamp: Option<i64>,
    /// Tracked messages by how often they were delivered.
    pub delivery_counts: BTreeMap<u32, u64>,
}

/// One partition's state with its cached bodies.
#[derive(Debug)]
pub(crate) struct Part {
    pub(crate) share: SharePartition,
    bodies: BTreeMap<i64, Message>,
    body_bytes: usize,
    journal_bytes: u64,
    /// A journal write failed: rebuild from the state topic before the next operation.
    broken: bool,
}

/// One queue.
#[derive(Debug)]
pub struct Queue {
    pub(crate) name: String,
    /// Its settings: replaced whole by [`crate::Queues::update`].
    config: std::sync::RwLock<std::sync::Arc<QueueConfig>>,
    pub(crate) log: Log,
    pub(crate) txns: TransactionCoordinator,
    pub(crate) state_topic: String,
    parts: Vec<Mutex<Part>>,
    /// Notified when a settlement makes a message available now.
    settled: Event,
    rotate: AtomicUsize,
    pub(crate) dedup: Mutex<Dedup>,
    /// The transactional producer of dead letters and moves (made on first use).
    pub(crate) mover: Mutex<Option<TransactionalProducer>>,
    /// Journal bytes between snapshots ([`SNAPSHOT_AFTER_BYTES`]; tests make it small).
    snapshot_after: AtomicU64,
}

/// The state topic of a queue.
pub fn state_topic(queue: &str) -> String {
    format!("__weir_queue_state.{queue}")
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Queue {
    /// Opens a queue whose topics exist: each partition rebuilt from its journal in a new
    /// lease epoch (written before this returns), deduplication ids from the topic's recent
    /// messages.
    pub(crate) fn open(
        log: &Log,
        txns: &TransactionCoordinator,
        name: &str,
        config: QueueConfig,
    ) -> Result<Queue> {
        let state_topic = state_topic(name);
        let mut parts = Vec::with_capacity(config.partitions as usize);
        for p in 0..config.partitions {
            let share = restore(log, name, &state_topic, p, settings(&config))?;
            parts.push(Mutex::new(Part {
                share,
                bodies: BTreeMap::new(),
                body_bytes: 0,
                journal_bytes: 0,
                broken: false,
            }));
        }
        let queue = Queue {
            name: name.to_string(),
            config: std::sync::RwLock::new(std::sync::Arc::new(config)),
            log: log.clone(),
            txns: txns.clone(),
            state_topic,
            parts,
            settled: Event::new(),
            rotate: AtomicUsize::new(0),
            dedup: Mutex::new(Dedup::default()),
            mover: Mutex::new(None),
            snapshot_after: AtomicU64::new(SNAPSHOT_AFTER_BYTES),
        };
        for p in 0..queue.parts.len() {
            let mut part = lock(&queue.parts[p]);
            let changes = part.share.take_journal();
            queue.journal(p as u32, &mut part, changes)?.wait(log)?;
        }
        queue.rebuild_dedup()?;
        Ok(queue)
    }

    /// The queue's name (also its topic's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Writes a snapshot after this many journal bytes instead of [`SNAPSHOT_AFTER_BYTES`]
    /// (tests use it to exercise snapshots).
    #[doc(hidden)]
    pub fn set_snapshot_after(&self, bytes: u64) {
        self.snapshot_after.store(bytes, Ordering::Relaxed);
    }

    /// When the queue was created (epoch ms).
    pub fn created_ms(&self) -> i64 {
        self.config().created_ms
    }

    /// The queue's settings as of now.
    pub fn config(&self) -> std::sync::Arc<QueueConfig> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes new settings (checked by the caller): receives from now on lock for the new
    /// visibility timeout, count deliveries against the new redrive policy, and so on.
    pub(crate) fn reconfigure(&self, config: QueueConfig) {
        let settings = settings(&config);
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(config);
        for part in &self.parts {
            lock(part).share.set_settings(settings.clone());
        }
        self.notify_settled();
    }

    pub(crate) fn now(&self) -> i64 {
        self.log.now().0
    }

    pub(crate) fn partition(&self, p: u32) -> Result<MutexGuard<'_, Part>> {
        let m = self
            .parts
            .get(p as usize)
            .ok_or_else(|| QueueError::BadReceipt(format!("partition {p}")))?;
        let mut part = lock(m);
        if part.broken {
            part.share = restore(
                &self.log,
                &self.name,
                &self.state_topic,
                p,
                settings(&self.config()),
            )?;
            part.bodies.clear();
            part.body_bytes = 0;
            part.broken = false;
            // The new epoch goes first; the answer that follows waits for its own journal
            // record, which the log makes durable after this one.
            let changes = part.share.take_journal();
            drop(self.journal(p, &mut part, changes)?);
        }
        Ok(part)
    }

    /// Marks a locked partition for rebuilding after a failed write.
    pub(crate) fn break_after_failure(&self, part: &mut Part) {
        part.broken = true;
    }

    /// A number that turns for every call (spreads receives and keyless sends).
    pub(crate) fn next_rotation(&self) -> usize {
        self.rotate.fetch_add(1, Ordering::Relaxed)
    }

    /// Marks a partition for rebuilding after a failed journal write.
    pub(crate) fn break_partition(&self, p: u32) {
        if let Some(m) = self.parts.get(p as usize) {
            lock(m).broken = true;
        }
    }

    /// Appends changes to the partition's journal (a snapshot instead, now and then); the
    /// ticket resolves when they are durable. Call with the partition locked.
    pub(crate) fn journal(
        &self,
        p: u32,
        part: &mut Part,
        changes: Vec<crate::Change>,
    ) -> Result<JournalTicket> {
        let snapshot = part.journal_bytes > self.snapshot_after.load(Ordering::Relaxed);
        if changes.is_empty() && !snapshot {
            return Ok(JournalTicket::default());
        }
        let changes = if snapshot {
            let mut all = changes;
            all.extend(part.share.snapshot());
            all
        } else {
            changes
        };
        let value = journal::encode(&changes);
        part.journal_bytes = if snapshot {
            0
        } else {
            part.journal_bytes + value.len() as u64
        };
        let record = Record::value(value);
        let ticket = self.log.submit(
            &self.state_topic,
            PartitionId(p),
            std::slice::from_ref(&record),
        );
        match ticket {
            Ok(t) => Ok(JournalTicket {
                ticket: Some(t),
                snapshot_of: snapshot.then(|| (self.state_topic.clone(), p)),
            }),
            Err(e) => {
                part.broken = true;
                Err(e.into())
            }
        }
    }

    /// Reads from the topic into a partition's window while it has room.
    fn fill(&self, p: u32, part: &mut Part) -> Result<()> {
        let (next, room) = part.share.wants();
        if room == 0 {
            return Ok(());
        }
        // About what the room takes (records of a few hundred bytes), within bounds.
        let bytes = room
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
        let config = self.config();
        let mut incoming = Vec::new();
        let mut read_to = fetch.next_offset().0;
        for r in fetch.records() {
            if incoming.len() >= room {
                // The rest waits for room: read it again later.
                read_to = incoming
                    .last()
                    .map_or(next, |m: &crate::Incoming| m.offset + 1);
                break;
            }
            let r = r.map_err(LogError::from)?;
            let visible_at = visible_at(&r, config.delay_ms);
            let group = if config.fifo {
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
        for i in 0..n {
            if out.len() >= max {
                break;
            }
            let p = ((first + i) % n) as u32;
            let ticket = self.receive_from(p, max - out.len(), visibility_ms, &mut out, &mut wake);
            match ticket {
                Ok(t) => tickets.push((p, t)),
                Err(e) => {
                    // What was taken from other partitions comes back after its lock.
                    drop(tickets);
                    return Err(e);
                }
            }
        }
        Ok(Pending::new(self, (out, wake), tickets))
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
        if part.share.wants().1 >= IN_FLIGHT_MAX / FILL_WHEN_FREE_DIVISOR {
            self.fill(p, &mut part)?;
        }
        let now = self.now();
        let (mut acquired, mut dead) = part.share.acquire(now, max, visibility_ms);
        if acquired.len() < max && part.share.wants().1 > 0 {
            self.fill(p, &mut part)?;
            let (more, more_dead) = part.share.acquire(now, max - acquired.len(), visibility_ms);
            acquired.extend(more);
            dead.extend(more_dead);
        }
        let short = acquired.len() < max;
        let offsets: Vec<i64> = acquired
            .iter()
            .map(|a| a.receipt.offset)
            .chain(dead.iter().map(|d| d.offset))
            .collect();
        let mut bodies = self.bodies_of(p, &mut part, &offsets)?;
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
        // Only a receive that came up short may wait for the clock.
        if short {
            if let Some(w) = part.share.next_wake(now) {
                *wake = Some(wake.map_or(w, |have| have.min(w)));
            }
        }
        if dead.is_empty() {
            let changes = part.share.take_journal();
            return self.journal(p, &mut part, changes);
        }
        let dead: Vec<crate::moves::Move> = dead
            .into_iter()
            .filter_map(|d| {
                let m = bodies.remove(&d.offset)?;
                Some(crate::moves::Move::dead_letter(
                    self,
                    m,
                    d.deliveries,
                    "maxReceiveCount exceeded",
                    now,
                ))
            })
            .collect::<Result<_>>()?;
        self.commit_moves(p, &mut part, dead)?;
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

    /// Resolves when a receive may find something new: a message appended to the topic, or
    /// one made available by a settlement. Take it before looking, then wait on it.
    pub fn changed(&self) -> Result<Changed> {
        let appended = self.log.listen(&self.name)?;
        Ok(Changed {
            appended: Box::pin(appended.appended()),
            settled: self.settled.listen(),
        })
    }

    pub(crate) fn notify_settled(&self) {
        self.settled.notify(usize::MAX);
    }

    /// Waits for the journal appends of an operation; a failed one breaks its partition.
    pub(crate) fn settle_tickets(&self, tickets: Vec<(u32, JournalTicket)>) -> Result<()> {
        let mut first_error = None;
        for (p, t) in tickets {
            if let Err(e) = t.wait(&self.log) {
                self.break_partition(p);
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Depth, locks, delays, the oldest message's time and delivery counts.
    pub fn stats(&self) -> Result<QueueStats> {
        let mut s = QueueStats::default();
        for p in 0..self.parts.len() as u32 {
            let mut part = self.partition(p)?;
            self.fill(p, &mut part)?;
            let now = self.now();
            let (visible, locked, delayed) = part.share.counts(now);
            let (next, _) = part.share.wants();
            let end = self.log.last_stable_offset(&self.name, PartitionId(p))?.0;
            s.visible += visible as u64 + (end - next).max(0) as u64;
            s.in_flight += locked as u64;
            s.delayed += delayed as u64;
            for (n, count) in part.share.delivery_counts() {
                *s.delivery_counts.entry(n).or_insert(0) += count as u64;
            }
            let start = part.share.start();
            if start < end {
                let oldest = match part.bodies.get(&start) {
                    Some(m) => Some(m.timestamp),
                    None => self.timestamp_at(p, start)?,
                };
                if let Some(t) = oldest {
                    s.oldest_timestamp = Some(s.oldest_timestamp.map_or(t, |o| o.min(t)));
                }
            }
        }
        Ok(s)
    }
}

impl Queue {
    /// The time of the message at `offset`, read from the topic (`None`: not readable).
    fn timestamp_at(&self, p: u32, offset: i64) -> Result<Option<i64>> {
        let fetch = self.log.read_isolated(
            &self.name,
            PartitionId(p),
            Offset(offset),
            FILL_READ_BYTES_MIN,
            Isolation::ReadCommitted,
        )?;
        let first = fetch.records().next().transpose().map_err(LogError::from)?;
        Ok(first.map(|r| r.timestamp.0))
    }
}

impl Part {
    /// Counts journal bytes written by someone else's transaction (towards the next snapshot).
    pub(crate) fn add_journal_bytes(&mut self, bytes: u64) {
        self.journal_bytes += bytes;
    }

    pub(crate) fn drop_body(&mut self, offset: i64) {
        if let Some(m) = self.bodies.remove(&offset) {
            self.body_bytes -= m.size();
        }
    }

    pub(crate) fn drop_bodies_below(&mut self, offset: i64) {
        let keep = self.bodies.split_off(&offset);
        for m in std::mem::replace(&mut self.bodies, keep).into_values() {
            self.body_bytes -= m.size();
        }
    }
}

/// A journal append in flight.
#[derive(Debug, Default)]
pub(crate) struct JournalTicket {
    pub(crate) ticket: Option<AppendTicket>,
    /// A snapshot: once durable, what came before it in this state partition is deleted.
    pub(crate) snapshot_of: Option<(String, u32)>,
}

impl JournalTicket {
    /// Blocks until durable.
    pub(crate) fn wait(mut self, log: &Log) -> Result<()> {
        match self.ticket.take() {
            Some(t) => self.finish(log, t.wait()?),
            None => Ok(()),
        }
    }

    /// Awaits durability.
    pub(crate) async fn durable(mut self, log: &Log) -> Result<()> {
        match self.ticket.take() {
            Some(t) => self.finish(log, t.await?),
            None => Ok(()),
        }
    }

    /// Once durable, a snapshot makes what came before it deletable.
    fn finish(self, log: &Log, outcome: weir_log::AppendOutcome) -> Result<()> {
        if let Some((topic, p)) = self.snapshot_of {
            log.delete_records(&topic, PartitionId(p), outcome.base_offset)?;
        }
        Ok(())
    }
}

fn settings(config: &QueueConfig) -> QueueSettings {
    QueueSettings {
        visibility_ms: config.visibility_ms.max(LOCK_MIN_MS),
        max_receive_count: config.redrive.as_ref().map(|r| r.max_receive_count),
        fifo: config.fifo,
        in_flight_max: IN_FLIGHT_MAX,
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

/// A partition's state rebuilt from its journal (read committed: a dead letter's aborted
/// transaction never happened).
fn restore(
    log: &Log,
    queue: &str,
    state_topic: &str,
    p: u32,
    settings: QueueSettings,
) -> Result<SharePartition> {
    // Read committed stops at the first undecided transaction: what follows it would be
    // missed, so rebuild only once every transaction on the journal is decided.
    let end = log.latest_offset(state_topic, PartitionId(p))?;
    if log.last_stable_offset(state_topic, PartitionId(p))? < end {
        return Err(QueueError::Undecided {
            queue: queue.to_string(),
            partition: p,
        });
    }
    let mut changes = Vec::new();
    let from = log.earliest_offset(state_topic, PartitionId(p))?;
    log.for_each_record::<QueueError>(
        state_topic,
        PartitionId(p),
        from,
        Isolation::ReadCommitted,
        |r| {
            let value = r.value.unwrap_or_default();
            let decoded = journal::decode(value).map_err(|reason| QueueError::CorruptState {
                queue: queue.to_string(),
                offset: r.offset.0,
                reason,
            })?;
            changes.extend(decoded);
            Ok(())
        },
    )?;
    SharePartition::restore(p, settings, changes)
}
