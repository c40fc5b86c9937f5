//! Sending to a queue: [`Outgoing`] messages appended to the queue's topic — a message group
//! is the record key (its partition, so a group stays in order), a delay of its own a header
//! — and FIFO deduplication: a deduplication id (given, or the body's SHA-256) seen within
//! the queue's window answers with the first message's position and appends nothing.
//!
//! Deduplication ids live in the messages' own headers, so after a restart they are read
//! back from the last window's worth of the topic: nothing else to keep durable.
//! Invariant: at most [`DEDUP_IDS_MAX`] ids are remembered per queue (the oldest go first).

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use weir_log::{Header, Isolation, PartitionId, Record, Timestamp};

use crate::catalog::QueueConfig;
use crate::error::{QueueError, Result};
use crate::queue::{
    lock, Queue, HEADER_ATTRIBUTE_TYPES, HEADER_DEDUP_ID, HEADER_VISIBLE_AT, RESERVED_HEADER_PREFIX,
};

/// Largest message body (SQS's 1 MiB).
pub const MESSAGE_BYTES_MAX: usize = 1 << 20;
/// Deduplication ids remembered per queue: a five-minute window at 3,000 messages per
/// second (SQS FIFO's batched rate) is 900,000.
pub const DEDUP_IDS_MAX: usize = 1_000_000;
/// Longest deduplication id or message group (SQS's 128 characters).
pub const ID_BYTES_MAX: usize = 128;

/// A message to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outgoing {
    /// The body.
    pub body: Bytes,
    /// Attributes, as record headers (names may not start with `weir.`).
    pub headers: Vec<Header>,
    /// The message group (FIFO queues: required; messages of a group go in order).
    pub group: Option<Bytes>,
    /// The deduplication id (FIFO queues).
    pub dedup_id: Option<String>,
    /// A delay of its own, overriding the queue's (ms).
    pub delay_ms: Option<i64>,
}

impl Outgoing {
    /// A message with just a body.
    pub fn body(body: impl Into<Bytes>) -> Outgoing {
        Outgoing {
            body: body.into(),
            ..Outgoing::default()
        }
    }
}

/// Where a sent message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Its partition.
    pub partition: u32,
    /// Its offset there.
    pub offset: i64,
    /// A duplicate of a message sent within the deduplication window: nothing was appended,
    /// and this is the first one's position.
    pub duplicate: bool,
}

/// Deduplication ids seen within the window.
#[derive(Debug, Default)]
pub(crate) struct Dedup {
    ids: HashMap<String, (u32, i64)>,
    /// (time seen, id), oldest first.
    order: VecDeque<(i64, String)>,
}

impl Dedup {
    fn expire(&mut self, before: i64) {
        while let Some((at, _)) = self.order.front() {
            if *at >= before && self.order.len() <= DEDUP_IDS_MAX {
                return;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.ids.remove(&id);
            }
        }
    }

    fn insert(&mut self, id: String, at: i64, position: (u32, i64)) {
        if self.ids.insert(id.clone(), position).is_none() {
            self.order.push_back((at, id));
        }
    }
}

/// A send's records by partition and what each message became.
struct Plan {
    slots: Vec<Slot>,
    batches: BTreeMap<u32, Vec<Record>>,
    /// New deduplication ids, by the message that carries them.
    ids: HashMap<String, usize>,
}

impl Plan {
    /// Each message's position, given each partition's first offset.
    fn sent(&self, bases: &BTreeMap<u32, i64>) -> Vec<Sent> {
        let mut out: Vec<Sent> = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let sent = match *slot {
                Slot::Duplicate(s) => s,
                Slot::New(p, i) => Sent {
                    partition: p,
                    offset: bases.get(&p).copied().unwrap_or_default() + i as i64,
                    duplicate: false,
                },
                Slot::SameAs(first) => Sent {
                    duplicate: true,
                    ..out[first]
                },
            };
            out.push(sent);
        }
        out
    }
}

/// What happens to one message of a send.
enum Slot {
    Duplicate(Sent),
    /// The `i`th record of its partition's batch.
    New(u32, usize),
    /// The same as an earlier message of this send.
    SameAs(usize),
}

impl Queue {
    /// Refuses a message the queue cannot take, saying why.
    pub fn check(&self, m: &Outgoing) -> Result<()> {
        check(&self.config(), m)
    }

    /// Sends messages (each checked first: one bad message sends none) and waits until they
    /// are durable. One result per message, in order.
    pub fn send(&self, messages: &[Outgoing]) -> Result<Vec<Sent>> {
        // One version of the settings for the whole send (they may change meanwhile).
        let config = self.config();
        for m in messages {
            check(&config, m)?;
        }
        // FIFO sends hold the window's ids until their appends are durable, so a concurrent
        // duplicate cannot slip in between.
        let mut dedup = config.fifo.then(|| lock(&self.dedup));
        let now = self.now();
        if let Some(d) = dedup.as_mut() {
            d.expire(now - config.dedup_window_ms);
        }
        let plan = self.plan(&config, messages, dedup.as_deref(), now)?;
        let mut bases = BTreeMap::new();
        for (p, records) in &plan.batches {
            let t = self.log.submit(&self.name, PartitionId(*p), records)?;
            bases.insert(*p, t);
        }
        let mut offsets = BTreeMap::new();
        for (p, t) in bases {
            offsets.insert(p, t.wait()?.base_offset.0);
        }
        let out = plan.sent(&offsets);
        if let Some(d) = dedup.as_mut() {
            for (id, i) in plan.ids {
                d.insert(id, now, (out[i].partition, out[i].offset));
            }
        }
        Ok(out)
    }
}

/// Refuses a message a queue with `config` cannot take, saying why.
fn check(config: &QueueConfig, m: &Outgoing) -> Result<()> {
    let bad = |why: String| Err(QueueError::InvalidMessage(why));
    if m.body.len() > MESSAGE_BYTES_MAX {
        return bad(format!(
            "body of {} bytes (at most {MESSAGE_BYTES_MAX})",
            m.body.len()
        ));
    }
    if let Some(h) = m
        .headers
        .iter()
        .find(|h| h.key.starts_with(RESERVED_HEADER_PREFIX) && h.key != HEADER_ATTRIBUTE_TYPES)
    {
        return bad(format!(
            "attribute `{}`: names starting with `weir.` are Weir's",
            h.key
        ));
    }
    if let Some(d) = m.delay_ms {
        if !(0..=crate::catalog::DELAY_MAX_MS).contains(&d) {
            return bad(format!("delay of {d} ms"));
        }
    }
    if m.group.as_ref().is_some_and(|g| g.len() > ID_BYTES_MAX)
        || m.dedup_id.as_ref().is_some_and(|d| d.len() > ID_BYTES_MAX)
    {
        return bad(format!(
            "a group or deduplication id is over {ID_BYTES_MAX} bytes"
        ));
    }
    if config.fifo {
        if m.group.is_none() {
            return bad("a FIFO queue's messages need a message group id".into());
        }
        if m.dedup_id.is_none() && !config.content_dedup {
            return bad("a FIFO queue without content-based deduplication needs a deduplication id on every message".into());
        }
    } else if m.dedup_id.is_some() {
        return bad("deduplication ids are for FIFO queues".into());
    }
    Ok(())
}

impl Queue {
    /// [`Queue::send`] for async callers of a standard queue: appends, then awaits
    /// durability without blocking. (A FIFO queue's send holds its deduplication window while
    /// it waits: call [`Queue::send`] on a blocking thread.)
    pub async fn send_async(&self, messages: &[Outgoing]) -> Result<Vec<Sent>> {
        let config = self.config();
        if config.fifo {
            return Err(QueueError::InvalidMessage(
                "a FIFO queue's sends go through Queue::send".into(),
            ));
        }
        for m in messages {
            check(&config, m)?;
        }
        let plan = self.plan(&config, messages, None, self.now())?;
        let mut tickets = Vec::with_capacity(plan.batches.len());
        for (p, records) in &plan.batches {
            tickets.push((*p, self.log.submit(&self.name, PartitionId(*p), records)?));
        }
        let mut offsets = BTreeMap::new();
        for (p, t) in tickets {
            offsets.insert(p, t.await?.base_offset.0);
        }
        Ok(plan.sent(&offsets))
    }

    /// Where each message goes: duplicates answered from the window, the rest as records
    /// per partition.
    fn plan(
        &self,
        config: &QueueConfig,
        messages: &[Outgoing],
        dedup: Option<&Dedup>,
        now: i64,
    ) -> Result<Plan> {
        let n = config.partitions;
        let rotate = self.next_rotation() as u32;
        let mut plan = Plan {
            slots: Vec::with_capacity(messages.len()),
            batches: BTreeMap::new(),
            ids: HashMap::new(),
        };
        for (i, m) in messages.iter().enumerate() {
            let id = Self::dedup_id(config, m);
            if let (Some(id), Some(d)) = (&id, dedup) {
                if let Some(&(partition, offset)) = d.ids.get(id) {
                    plan.slots.push(Slot::Duplicate(Sent {
                        partition,
                        offset,
                        duplicate: true,
                    }));
                    continue;
                }
                if let Some(&first) = plan.ids.get(id) {
                    plan.slots.push(Slot::SameAs(first));
                    continue;
                }
                plan.ids.insert(id.clone(), i);
            }
            let partition = match &m.group {
                Some(g) => self.log.partition_for(&self.name, g)?.0,
                None => rotate % n,
            };
            let batch = plan.batches.entry(partition).or_default();
            plan.slots.push(Slot::New(partition, batch.len()));
            batch.push(self.record(m, id, now));
        }
        Ok(plan)
    }

    /// A FIFO message's deduplication id: its own, else its body's hash when the queue
    /// deduplicates by content.
    fn dedup_id(config: &QueueConfig, m: &Outgoing) -> Option<String> {
        if !config.fifo {
            return None;
        }
        m.dedup_id.clone().or_else(|| {
            config.content_dedup.then(|| {
                Sha256::digest(&m.body)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            })
        })
    }

    fn record(&self, m: &Outgoing, dedup_id: Option<String>, now: i64) -> Record {
        let mut headers = m.headers.clone();
        if let Some(d) = m.delay_ms {
            headers.push(Header {
                key: HEADER_VISIBLE_AT.into(),
                value: Some(Bytes::from(now.saturating_add(d).to_string())),
            });
        }
        if let Some(id) = dedup_id {
            headers.push(Header {
                key: HEADER_DEDUP_ID.into(),
                value: Some(Bytes::from(id)),
            });
        }
        Record {
            key: m.group.clone(),
            value: Some(m.body.clone()),
            headers,
            timestamp: Some(Timestamp(now)),
        }
    }

    /// Reads the deduplication ids of the last window's messages back from the topic.
    pub(crate) fn rebuild_dedup(&self) -> Result<()> {
        if !self.config().fifo {
            return Ok(());
        }
        let since = self.now() - self.config().dedup_window_ms;
        let mut dedup = lock(&self.dedup);
        for p in 0..self.config().partitions {
            let pid = PartitionId(p);
            let Some(from) = self
                .log
                .offset_for_timestamp(&self.name, pid, Timestamp(since))?
            else {
                continue;
            };
            self.log.for_each_record::<QueueError>(
                &self.name,
                pid,
                from,
                Isolation::ReadCommitted,
                |r| {
                    let id = r
                        .headers()
                        .filter_map(|h| h.ok())
                        .find(|(k, _)| *k == HEADER_DEDUP_ID.as_bytes())
                        .and_then(|(_, v)| std::str::from_utf8(v?).ok());
                    if let Some(id) = id {
                        dedup.insert(id.to_string(), r.timestamp.0, (p, r.offset.0));
                    }
                    Ok(())
                },
            )?;
        }
        Ok(())
    }
}
