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
//! Receiving is in [`crate::receive`], settling in [`crate::settle`], depth in
//! [`crate::stats`].
//!
//! Invariants: a partition's window holds at most its bound of messages and
//! [`WINDOW_BODY_BYTES_MAX`] of their bodies; messages are read from the topic with
//! `read_committed`, so a dead letter of an aborted transaction is never delivered.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;
use event_listener::Event;
use weir_coord::{TransactionCoordinator, TransactionalProducer};
use weir_log::{AppendTicket, Header, Isolation, Log, PartitionId, Record, RecordView};

use crate::catalog::QueueConfig;
use crate::error::{QueueError, Result};
use crate::journal;
use crate::partition::{QueueSettings, Receipt, SharePartition, IN_FLIGHT_MAX};
use crate::send::Dedup;
use crate::wait::Changed;

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
    pub(crate) fn from_view(partition: u32, r: &RecordView<'_>) -> Message {
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

    pub(crate) fn size(&self) -> usize {
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

/// One partition's state with its cached bodies.
#[derive(Debug)]
pub(crate) struct Part {
    pub(crate) share: SharePartition,
    /// The queue's settings as this partition works under them: replaced under the
    /// partition's lock together with `share`'s, so one operation sees one version (its
    /// redrive policy's count and dead-letter queue together).
    pub(crate) config: Arc<QueueConfig>,
    pub(crate) bodies: BTreeMap<i64, Message>,
    pub(crate) body_bytes: usize,
    journal_bytes: u64,
    /// Whether memory matches the journal.
    health: Health,
}

/// Whether a partition's memory matches its journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Sound,
    /// A write failed or memory ran ahead of the journal: rebuild before the next operation.
    Broken,
    /// Broken, and the barrier record that makes a rebuild see every earlier journal record
    /// is durable (a rebuild refused as [`QueueError::Undecided`] writes no other).
    Fenced,
}

/// One queue.
#[derive(Debug)]
pub struct Queue {
    pub(crate) name: String,
    /// Its settings: replaced whole by [`crate::Queues::update`].
    config: RwLock<Arc<QueueConfig>>,
    pub(crate) log: Log,
    pub(crate) txns: TransactionCoordinator,
    pub(crate) state_topic: String,
    pub(crate) parts: Vec<Mutex<Part>>,
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
        let config = Arc::new(config);
        let mut parts = Vec::with_capacity(config.partitions as usize);
        for p in 0..config.partitions {
            let share = restore(log, name, &state_topic, p, settings(&config))?;
            parts.push(Mutex::new(Part {
                share,
                config: config.clone(),
                bodies: BTreeMap::new(),
                body_bytes: 0,
                journal_bytes: 0,
                health: Health::Sound,
            }));
        }
        let queue = Queue {
            name: name.to_string(),
            config: RwLock::new(config),
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
    pub fn config(&self) -> Arc<QueueConfig> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes new settings (checked by the caller): receives from now on lock for the new
    /// visibility timeout, count deliveries against the new redrive policy, and so on.
    pub(crate) fn reconfigure(&self, config: QueueConfig) {
        let settings = settings(&config);
        let config = Arc::new(config);
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config.clone();
        for part in &self.parts {
            let mut part = lock(part);
            part.share.set_settings(settings.clone());
            part.config = config.clone();
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
        if part.health != Health::Sound {
            self.rebuild(p, &mut part)?;
        }
        Ok(part)
    }

    /// Rebuilds a broken partition from its journal, in a new lease epoch.
    fn rebuild(&self, p: u32, part: &mut Part) -> Result<()> {
        if part.health == Health::Broken {
            // Journal records of operations before the failure may still be on their way to
            // the disk: once an empty one appended after them is durable (a partition's
            // appends land in order), the journal read back holds every one that landed.
            let barrier = Record::value(journal::encode(&[]));
            let state = PartitionId(p);
            self.log
                .append(&self.state_topic, state, std::slice::from_ref(&barrier))?;
            part.health = Health::Fenced;
        }
        let settings = settings(&part.config);
        part.share = restore(&self.log, &self.name, &self.state_topic, p, settings)?;
        part.bodies.clear();
        part.body_bytes = 0;
        part.health = Health::Sound;
        // The new epoch goes first; the answer that follows waits for its own journal record,
        // which the log makes durable after this one.
        let changes = part.share.take_journal();
        drop(self.journal(p, part, changes)?);
        Ok(())
    }

    /// Marks a locked partition for rebuilding after a failed write.
    pub(crate) fn break_after_failure(&self, part: &mut Part) {
        part.health = Health::Broken;
    }

    /// A number that turns for every call (spreads receives and keyless sends).
    pub(crate) fn next_rotation(&self) -> usize {
        self.rotate.fetch_add(1, Ordering::Relaxed)
    }

    /// Marks a partition for rebuilding after a failed journal write.
    pub(crate) fn break_partition(&self, p: u32) {
        if let Some(m) = self.parts.get(p as usize) {
            lock(m).health = Health::Broken;
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
                part.health = Health::Broken;
                Err(e.into())
            }
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
