//! [`SharePartition`]: one partition of a queue's topic as competing consumers share it.
//!
//! Below the start offset every message is done (acknowledged or dead-lettered); above it, a
//! window of at most [`QueueSettings::in_flight_max`] messages read from the log is tracked,
//! each available (visible from a time: its delay, or a nack's), acquired (under a lease
//! until a deadline: the visibility timeout) or done. A lock that times out makes its message
//! available again; a message delivered `max_receive_count` times is dead-lettered instead of
//! being delivered again (SQS's redrive policy). In a FIFO queue the messages of one group
//! are delivered in order, one at a time: a message waits while an earlier one of its group
//! is not done.
//!
//! Invariants: a message has at most one valid receipt at a time (each acquisition takes a
//! new lease number, and a settled or timed-out lease is refused); the window never holds more
//! than its bound (one more, after a restart with a smaller bound), so a million
//! unacknowledged messages are not in memory; restored messages ahead of the read position
//! take no new room, so a window restored full still reads on past them; the start offset
//! only moves forward, past done messages only.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::error::{QueueError, Result};

/// Default bound of a partition's window of tracked messages: the in-flight messages a queue
/// partition keeps in memory (Kafka's `group.share.partition.max.record.locks` is 2,000 per
/// partition; larger here because delayed messages also wait in the window).
pub const IN_FLIGHT_MAX: usize = 10_000;

/// How a queue treats its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    /// How long a received message stays invisible to other consumers (ms).
    pub visibility_ms: i64,
    /// Deliveries after which a message is dead-lettered instead (`None`: never).
    pub max_receive_count: Option<u32>,
    /// Messages of one group in order, one at a time.
    pub fifo: bool,
    /// Messages tracked above the start offset (the window).
    pub in_flight_max: usize,
}

impl Default for QueueSettings {
    fn default() -> QueueSettings {
        QueueSettings {
            visibility_ms: 30_000,
            max_receive_count: None,
            fifo: false,
            in_flight_max: IN_FLIGHT_MAX,
        }
    }
}

/// What a read of the log may still add to a window ([`SharePartition::admits`]).
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    room: usize,
    took_new: bool,
}

/// A message read from the log, offered to the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// Its offset.
    pub offset: i64,
    /// When it may first be delivered (its send time plus its delay), epoch ms.
    pub visible_at: i64,
    /// Its FIFO message group (the record key), if any.
    pub group: Option<Vec<u8>>,
}

/// What names one delivery of one message: settling it needs the latest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// The partition.
    pub partition: u32,
    /// The message's offset.
    pub offset: i64,
    /// The acquisition it names.
    pub lease: u64,
}

impl std::fmt::Display for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.partition, self.offset, self.lease)
    }
}

impl std::str::FromStr for Receipt {
    type Err = QueueError;

    fn from_str(s: &str) -> Result<Receipt> {
        let bad = || QueueError::BadReceipt(s.to_string());
        let mut parts = s.splitn(3, '-');
        let mut next = || parts.next().ok_or_else(bad);
        let partition = next()?.parse().map_err(|_| bad())?;
        let offset = next()?.parse().map_err(|_| bad())?;
        let lease = next()?.parse().map_err(|_| bad())?;
        Ok(Receipt {
            partition,
            offset,
            lease,
        })
    }
}

/// A message handed to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquired {
    /// What settles it.
    pub receipt: Receipt,
    /// This delivery's number (1 for the first).
    pub deliveries: u32,
}

/// A message and how often it was delivered (a dead letter's count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Its offset.
    pub offset: i64,
    /// How many times it was delivered.
    pub deliveries: u32,
}

/// What a settlement did to its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Done.
    Acknowledged,
    /// Available again (from a time).
    Released,
    /// To be written to the dead-letter queue.
    DeadLetter(Delivery),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Available { visible_at: i64 },
    Acquired { lease: u64, deadline: i64 },
    Done,
}

#[derive(Debug, Clone)]
struct Entry {
    state: State,
    deliveries: u32,
    group: Option<Vec<u8>>,
}

impl Entry {
    /// The state as the journal keeps it.
    fn persisted(&self) -> Persisted {
        match self.state {
            State::Done => Persisted::Done,
            State::Available { visible_at } => Persisted::Available {
                visible_at,
                deliveries: self.deliveries,
            },
            State::Acquired { lease, deadline } => Persisted::Acquired {
                lease,
                deadline,
                deliveries: self.deliveries,
            },
        }
    }
}

/// One partition's shared state.
#[derive(Debug)]
pub struct SharePartition {
    partition: u32,
    settings: QueueSettings,
    /// Every offset below is done.
    start: i64,
    /// The next offset to read from the log.
    next: i64,
    window: BTreeMap<i64, Entry>,
    /// The last lease number handed out (its high 32 bits are the epoch: one per restore).
    leases: u64,
    /// Offsets whose state changed since the journal was last taken.
    dirty: BTreeSet<i64>,
    /// The start as last journaled.
    journaled_start: i64,
    /// Changes the journal owes beyond `dirty` (a restore's new epoch).
    pending: Vec<Change>,
    /// No lock in the window ends before this (a lower bound): expiring locks scans the
    /// window only once one may have ended.
    earliest_deadline: i64,
    /// Entries at or beyond `next` (restored from the journal, not yet read again from the
    /// log): reading the log past them adds nothing to the window.
    ahead: usize,
}

/// A message's state as the journal keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persisted {
    /// Deliverable from a time.
    Available {
        /// From when (epoch ms).
        visible_at: i64,
        /// Deliveries so far.
        deliveries: u32,
    },
    /// Locked by a lease until a deadline.
    Acquired {
        /// The lease.
        lease: u64,
        /// Until when (epoch ms).
        deadline: i64,
        /// Deliveries so far (this one included).
        deliveries: u32,
    },
    /// Acknowledged or dead-lettered.
    Done,
}

/// One change of a partition's state, to be written to the log before the operation that
/// made it is answered; replayed in order, the changes rebuild the state
/// ([`SharePartition::restore`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Every offset below is done.
    Start(i64),
    /// A message's new state.
    Entry(i64, Persisted),
    /// Leases from here on are numbered in this epoch (a restore's, so a receipt handed out
    /// but never journaled before a crash is never handed out again).
    Epoch(u64),
}

impl SharePartition {
    /// A partition whose messages from `start` on are not done yet.
    pub fn new(partition: u32, settings: QueueSettings, start: i64) -> Result<SharePartition> {
        if settings.visibility_ms < 0 || settings.in_flight_max == 0 {
            return Err(QueueError::InvalidSetting(format!(
                "visibility {} ms and a window of {} messages",
                settings.visibility_ms, settings.in_flight_max
            )));
        }
        Ok(SharePartition {
            partition,
            settings,
            start,
            next: start,
            window: BTreeMap::new(),
            leases: 0,
            dirty: BTreeSet::new(),
            journaled_start: start,
            pending: Vec::new(),
            earliest_deadline: i64::MAX,
            ahead: 0,
        })
    }

    /// The partition the journal's changes describe, in a new epoch: messages from its start
    /// on are then offered again from the log (they keep their journaled states). The new
    /// epoch is the journal's first change: write it before answering anyone.
    pub fn restore(
        partition: u32,
        settings: QueueSettings,
        changes: impl IntoIterator<Item = Change>,
    ) -> Result<SharePartition> {
        let (mut start, mut epoch) = (0i64, 0u64);
        let mut states: BTreeMap<i64, Persisted> = BTreeMap::new();
        for c in changes {
            match c {
                Change::Start(s) => start = start.max(s),
                Change::Entry(o, p) => {
                    states.insert(o, p);
                }
                Change::Epoch(e) => epoch = epoch.max(e),
            }
        }
        let mut p = SharePartition::new(partition, settings, start)?;
        for (offset, state) in states.range(start..) {
            let (state, deliveries) = match *state {
                Persisted::Done => (State::Done, 0),
                Persisted::Available {
                    visible_at,
                    deliveries,
                } => (State::Available { visible_at }, deliveries),
                Persisted::Acquired {
                    lease,
                    deadline,
                    deliveries,
                } => {
                    epoch = epoch.max(lease >> 32);
                    p.earliest_deadline = p.earliest_deadline.min(deadline);
                    (State::Acquired { lease, deadline }, deliveries)
                }
            };
            p.window.insert(
                *offset,
                Entry {
                    state,
                    deliveries,
                    group: None,
                },
            );
        }
        p.ahead = p.window.len();
        let epoch = epoch + 1;
        p.leases = epoch << 32;
        p.pending.push(Change::Epoch(epoch));
        Ok(p)
    }

    /// The changes since the last call, to be written (in order) before the operations that
    /// made them are answered.
    pub fn take_journal(&mut self) -> Vec<Change> {
        let mut out = std::mem::take(&mut self.pending);
        for offset in std::mem::take(&mut self.dirty) {
            let persisted = self
                .window
                .get(&offset)
                .map_or(Persisted::Done, Entry::persisted);
            out.push(Change::Entry(offset, persisted));
        }
        if self.start != self.journaled_start {
            self.journaled_start = self.start;
            out.push(Change::Start(self.start));
        }
        out
    }

    /// Every offset below it is done.
    pub fn start(&self) -> i64 {
        self.start
    }

    /// Where to read the log next, and how many new messages the window takes (0: it is
    /// full). Restored entries ahead of the read position are in the window already: reading
    /// the log past them needs no room, only tells their FIFO groups.
    pub fn wants(&self) -> (i64, usize) {
        let room = self
            .settings
            .in_flight_max
            .saturating_sub(self.window.len());
        (self.next, room)
    }

    /// What one read of the log from [`SharePartition::wants`]' offset may add: ask
    /// [`SharePartition::admits`] for each message read, in order.
    pub fn admission(&self) -> Admission {
        Admission {
            room: self.wants().1,
            took_new: false,
        }
    }

    /// Whether the window takes the message at `offset` (read in order from the read
    /// position): a restored one always (it is tracked already); a new one while there is
    /// room — or, when restored entries wait beyond it and nothing is before it (the bound
    /// shrank across a restart), the first one, so the partition still moves.
    pub fn admits(&self, a: &mut Admission, offset: i64) -> bool {
        if self.ahead > 0 && offset >= self.next && self.window.contains_key(&offset) {
            return true;
        }
        let beyond_room =
            !a.took_new && self.ahead > 0 && self.window.range(..offset).next().is_none();
        if a.room == 0 && !beyond_room {
            return false;
        }
        a.room = a.room.saturating_sub(1);
        a.took_new = true;
        true
    }

    /// Tracked entries ahead of the read position (restored, not yet read from the log).
    pub fn ahead(&self) -> usize {
        self.ahead
    }

    /// Recounts the entries ahead of the read position after it moved.
    fn recount_ahead(&mut self) {
        if self.ahead > 0 {
            self.ahead = self.window.range(self.next..).count();
        }
    }

    /// Messages read from the log at [`SharePartition::wants`]' offset, in order, and the
    /// offset after the read (offsets between them hold no message: markers, compacted).
    /// Messages beyond the window's room are not taken (read them again later).
    pub fn offer(&mut self, messages: impl IntoIterator<Item = Incoming>, next: i64) {
        let mut admission = self.admission();
        let mut full = false;
        for m in messages {
            if m.offset < self.next {
                continue;
            }
            if let Some(e) = self.window.get_mut(&m.offset) {
                // Restored from the journal: its state stands; its group comes from the log.
                e.group = m.group;
                self.next = m.offset + 1;
                self.ahead -= 1;
                continue;
            }
            if !self.admits(&mut admission, m.offset) {
                full = true;
                break;
            }
            self.window.insert(
                m.offset,
                Entry {
                    state: State::Available {
                        visible_at: m.visible_at,
                    },
                    deliveries: 0,
                    group: m.group,
                },
            );
            self.next = m.offset + 1;
        }
        if !full {
            self.next = self.next.max(next);
        }
        self.recount_ahead();
        self.advance();
    }

    /// Up to `max` messages for a consumer, each locked until `now + visibility` (ms; the
    /// queue's when `None`); and the messages dead-lettered instead, having been delivered
    /// `max_receive_count` times already. Timed-out locks are released first.
    pub fn acquire(
        &mut self,
        now: i64,
        max: usize,
        visibility: Option<i64>,
    ) -> (Vec<Acquired>, Vec<Delivery>) {
        self.expire(now);
        let deadline = now.saturating_add(visibility.unwrap_or(self.settings.visibility_ms));
        let mut out = Vec::new();
        let mut dead = Vec::new();
        // FIFO: a group waits behind its earliest message that is not done.
        let mut blocked: HashSet<Vec<u8>> = HashSet::new();
        for (&offset, e) in self.window.iter_mut() {
            // Restored states ahead of the log's read position wait until it is read past
            // them: until then their FIFO groups are unknown.
            if out.len() >= max || offset >= self.next {
                break;
            }
            let group_waits = |blocked: &mut HashSet<Vec<u8>>, e: &Entry| match &e.group {
                Some(g) if self.settings.fifo => !blocked.insert(g.clone()),
                _ => false,
            };
            match e.state {
                State::Done => continue,
                State::Acquired { .. } => {
                    group_waits(&mut blocked, e);
                    continue;
                }
                State::Available { visible_at } => {
                    if group_waits(&mut blocked, e) || visible_at > now {
                        continue;
                    }
                }
            }
            if self
                .settings
                .max_receive_count
                .is_some_and(|m| e.deliveries >= m)
            {
                e.state = State::Done;
                self.dirty.insert(offset);
                dead.push(Delivery {
                    offset,
                    deliveries: e.deliveries,
                });
                // The group's next message may go now.
                if let Some(g) = &e.group {
                    blocked.remove(g);
                }
                continue;
            }
            self.leases += 1;
            self.dirty.insert(offset);
            e.deliveries += 1;
            e.state = State::Acquired {
                lease: self.leases,
                deadline,
            };
            self.earliest_deadline = self.earliest_deadline.min(deadline);
            out.push(Acquired {
                receipt: Receipt {
                    partition: self.partition,
                    offset,
                    lease: self.leases,
                },
                deliveries: e.deliveries,
            });
        }
        self.advance();
        (out, dead)
    }

    /// Locks whose deadline passed make their messages available again.
    fn expire(&mut self, now: i64) {
        if now < self.earliest_deadline {
            return;
        }
        let mut earliest = i64::MAX;
        for e in self.window.values_mut() {
            if let State::Acquired { deadline, .. } = e.state {
                if deadline <= now {
                    e.state = State::Available { visible_at: now };
                } else {
                    earliest = earliest.min(deadline);
                }
            }
        }
        self.earliest_deadline = earliest;
    }

    /// The entry a receipt names, if the receipt is its valid lock at `now`.
    fn held(&mut self, receipt: &Receipt, now: i64) -> Result<&mut Entry> {
        let stale = || QueueError::StaleReceipt(receipt.to_string());
        if receipt.partition != self.partition {
            return Err(QueueError::BadReceipt(receipt.to_string()));
        }
        let e = self.window.get_mut(&receipt.offset).ok_or_else(stale)?;
        match e.state {
            State::Acquired { lease, deadline } if lease == receipt.lease && deadline > now => {
                Ok(e)
            }
            _ => Err(stale()),
        }
    }

    /// Acknowledges (deletes) a message.
    pub fn ack(&mut self, receipt: &Receipt, now: i64) -> Result<Verdict> {
        self.held(receipt, now)?.state = State::Done;
        self.dirty.insert(receipt.offset);
        self.advance();
        Ok(Verdict::Acknowledged)
    }

    /// Releases a message, visible again after `delay_ms`.
    pub fn nack(&mut self, receipt: &Receipt, now: i64, delay_ms: i64) -> Result<Verdict> {
        self.held(receipt, now)?.state = State::Available {
            visible_at: now.saturating_add(delay_ms.max(0)),
        };
        self.dirty.insert(receipt.offset);
        Ok(Verdict::Released)
    }

    /// Sends a message to the dead-letter queue at once.
    pub fn reject(&mut self, receipt: &Receipt, now: i64) -> Result<Verdict> {
        let e = self.held(receipt, now)?;
        e.state = State::Done;
        let dead = Delivery {
            offset: receipt.offset,
            deliveries: e.deliveries,
        };
        self.dirty.insert(receipt.offset);
        self.advance();
        Ok(Verdict::DeadLetter(dead))
    }

    /// Moves a lock's deadline to `now + timeout_ms` (0 releases it now).
    pub fn change_visibility(
        &mut self,
        receipt: &Receipt,
        now: i64,
        timeout_ms: i64,
    ) -> Result<()> {
        let state = match timeout_ms {
            t if t <= 0 => State::Available { visible_at: now },
            t => State::Acquired {
                lease: receipt.lease,
                deadline: now.saturating_add(t),
            },
        };
        if let State::Acquired { deadline, .. } = state {
            self.earliest_deadline = self.earliest_deadline.min(deadline);
        }
        self.held(receipt, now)?.state = state;
        self.dirty.insert(receipt.offset);
        Ok(())
    }

    /// Moves the start past the done messages at the front of the window — only those
    /// already read from the log: after a restore the window holds journaled states ahead of
    /// the read position, and the messages between are not done (never delivered) until the
    /// log is read past them.
    fn advance(&mut self) {
        while let Some(entry) = self.window.first_entry() {
            let offset = *entry.key();
            if entry.get().state != State::Done || offset >= self.next {
                self.start = offset.min(self.next);
                return;
            }
            entry.remove();
        }
        self.start = self.next;
    }

    /// Marks every message below `offset` done (a purge, or messages retention deleted
    /// before they were consumed) and reads on from there.
    pub fn skip_to(&mut self, offset: i64) {
        let below: Vec<i64> = self.window.range(..offset).map(|(o, _)| *o).collect();
        for o in below {
            self.window.remove(&o);
            self.dirty.insert(o);
        }
        self.next = self.next.max(offset);
        self.recount_ahead();
        self.advance();
    }

    /// The whole state as changes (a snapshot): replayed alone, or after any prefix of the
    /// journal that led here, they rebuild this state.
    pub fn snapshot(&mut self) -> Vec<Change> {
        let mut out = self.take_journal();
        out.push(Change::Epoch(self.leases >> 32));
        out.push(Change::Start(self.start));
        for (&offset, e) in &self.window {
            // Never delivered: the log says all there is to say about it.
            if matches!(e.state, State::Available { .. }) && e.deliveries == 0 {
                continue;
            }
            out.push(Change::Entry(offset, e.persisted()));
        }
        out
    }

    /// The earliest time after `now` at which a message becomes deliverable by the clock
    /// alone (a delay ends, a lock times out); `None` if nothing waits for a time.
    pub fn next_wake(&self, now: i64) -> Option<i64> {
        self.window
            .values()
            .filter_map(|e| match e.state {
                State::Available { visible_at } if visible_at > now => Some(visible_at),
                State::Acquired { deadline, .. } if deadline > now => Some(deadline),
                _ => None,
            })
            .min()
    }

    /// How many tracked messages (not done, delivered at least once) have been delivered
    /// n times, by n.
    pub fn delivery_counts(&self) -> BTreeMap<u32, usize> {
        let mut out = BTreeMap::new();
        for e in self
            .window
            .values()
            .filter(|e| e.state != State::Done && e.deliveries > 0)
        {
            *out.entry(e.deliveries).or_insert(0) += 1;
        }
        out
    }

    /// New settings (the window's bound and FIFO stay): later acquisitions use them.
    pub fn set_settings(&mut self, settings: QueueSettings) {
        self.settings = QueueSettings {
            fifo: self.settings.fifo,
            in_flight_max: self.settings.in_flight_max,
            ..settings
        };
    }

    /// Whether `receipt` is its message's valid lock at `now` (what settling it checks).
    pub fn holds(&self, receipt: &Receipt, now: i64) -> bool {
        receipt.partition == self.partition
            && self.window.get(&receipt.offset).is_some_and(|e| {
                matches!(e.state, State::Acquired { lease, deadline }
                    if lease == receipt.lease && deadline > now)
            })
    }

    /// Whether the window holds `offset` (not yet settled or skipped).
    pub fn tracks(&self, offset: i64) -> bool {
        self.window
            .get(&offset)
            .is_some_and(|e| e.state != State::Done)
    }

    /// Messages deliverable at `now`, locked, and waiting for their time (delays, nacks).
    pub fn counts(&self, now: i64) -> (usize, usize, usize) {
        let (mut visible, mut locked, mut delayed) = (0, 0, 0);
        for e in self.window.values() {
            match e.state {
                State::Available { visible_at } if visible_at > now => delayed += 1,
                State::Available { .. } => visible += 1,
                State::Acquired { deadline, .. } if deadline > now => locked += 1,
                State::Acquired { .. } => visible += 1,
                State::Done => {}
            }
        }
        (visible, locked, delayed)
    }
}
