//! [`QueueConfig`] and the catalog of queues: one record per queue in the compacted topic
//! [`CATALOG_TOPIC`] (key: the queue's name, value: its settings as JSON; a tombstone
//! deletes it), read back whole when the queues are opened; likewise one record per
//! [`Subscription`] in [`SUBSCRIPTIONS_TOPIC`].
//!
//! Invariant: a queue's topic exists before its catalog record is written, and its record is
//! deleted before its topics are, so a crash in between leaves a topic without a queue
//! (harmless, and reused by a create of the same name), never a queue without its topic.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weir_log::{Isolation, Log, PartitionId, Record};

use crate::error::{QueueError, Result};

/// The compacted topic of queue definitions.
pub const CATALOG_TOPIC: &str = "__weir_queues";
/// The compacted topic of queue subscriptions (key: `queue/topic`).
pub const SUBSCRIPTIONS_TOPIC: &str = "__weir_queue_subscriptions";
/// Longest queue name (SQS's limit).
pub const QUEUE_NAME_MAX: usize = 80;
/// Longest delay a message may get: SQS allows 15 minutes; Weir's delays live in the log,
/// so they may be longer — up to a week, beyond which a message belongs in a scheduler.
pub const DELAY_MAX_MS: i64 = 7 * 24 * 3600 * 1000;
/// Longest visibility timeout (SQS's 12 hours).
pub const VISIBILITY_MAX_MS: i64 = 12 * 3600 * 1000;
/// The default deduplication window (SQS's five minutes).
pub const DEDUP_WINDOW_MS: i64 = 5 * 60 * 1000;
/// Longest retention (SQS's 14 days).
pub const RETENTION_MAX_MS: i64 = 14 * 24 * 3600 * 1000;

/// Where a queue sends the messages it gives up on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redrive {
    /// The dead-letter queue.
    pub dead_letter_queue: String,
    /// Deliveries after which a message is dead-lettered instead of delivered again.
    pub max_receive_count: u32,
}

/// A topic a queue takes a copy of (SNS-style fan-out: one publish, every subscribed queue
/// gets it), optionally filtered. Kept in [`SUBSCRIPTIONS_TOPIC`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The queue.
    pub queue: String,
    /// The topic.
    pub topic: String,
    /// RabbitMQ topic-exchange pattern on the record key (`order.*.created`, `#.error`).
    #[serde(default)]
    pub key_pattern: Option<String>,
    /// SNS-style filter policy on the headers (JSON).
    #[serde(default)]
    pub filter_policy: Option<String>,
}

/// Most tags on a queue (SQS's limit).
pub const TAGS_MAX: usize = 50;
/// Longest tag key in characters (SQS's 128).
pub const TAG_KEY_CHARS_MAX: usize = 128;
/// Longest tag value in characters (SQS's 256).
pub const TAG_VALUE_CHARS_MAX: usize = 256;

/// A queue's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueConfig {
    /// Partitions of the queue's topic (more spread the load; consumers are independent of
    /// the count).
    pub partitions: u32,
    /// How long a received message stays invisible to other consumers (ms).
    pub visibility_ms: i64,
    /// Delay of every message sent without its own (ms).
    pub delay_ms: i64,
    /// How long messages are kept (the topic's `retention.ms`).
    pub retention_ms: i64,
    /// How long a receive waits for messages when the call does not say (ms).
    pub receive_wait_ms: i64,
    /// Dead-letter queue and the deliveries before it.
    pub redrive: Option<Redrive>,
    /// Messages of one group in order, one at a time; deduplication.
    pub fifo: bool,
    /// Deduplicate by the body's SHA-256 when a message has no deduplication id.
    pub content_dedup: bool,
    /// How long a deduplication id is remembered (ms).
    pub dedup_window_ms: i64,
    /// Free-form attributes the API keeps for its users (SQS tags, a policy).
    pub attributes: BTreeMap<String, String>,
    /// When the queue was created (epoch ms; set by [`crate::Queues::create`]).
    pub created_ms: i64,
    /// When its settings last changed (epoch ms; set by [`crate::Queues::update`]; 0: never).
    pub modified_ms: i64,
    /// Cost-allocation tags (SQS's TagQueue): kept, not acted on; at most [`TAGS_MAX`].
    pub tags: BTreeMap<String, String>,
}

impl Default for QueueConfig {
    fn default() -> QueueConfig {
        QueueConfig {
            partitions: 1,
            visibility_ms: 30_000,
            delay_ms: 0,
            retention_ms: 4 * 24 * 3600 * 1000,
            receive_wait_ms: 0,
            redrive: None,
            fifo: false,
            content_dedup: false,
            dedup_window_ms: DEDUP_WINDOW_MS,
            attributes: BTreeMap::new(),
            created_ms: 0,
            modified_ms: 0,
            tags: BTreeMap::new(),
        }
    }
}

impl QueueConfig {
    /// Refuses settings out of range, naming the setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(QueueError::InvalidSetting(what));
        if !(1..=1024).contains(&self.partitions) {
            return bad(format!("partitions {} (1 to 1024)", self.partitions));
        }
        if !(0..=VISIBILITY_MAX_MS).contains(&self.visibility_ms) {
            return bad(format!(
                "visibility timeout {} ms (0 to {VISIBILITY_MAX_MS})",
                self.visibility_ms
            ));
        }
        if !(0..=DELAY_MAX_MS).contains(&self.delay_ms) {
            return bad(format!("delay {} ms (0 to {DELAY_MAX_MS})", self.delay_ms));
        }
        if !(60_000..=RETENTION_MAX_MS).contains(&self.retention_ms) {
            return bad(format!(
                "retention {} ms (60000 to {RETENTION_MAX_MS})",
                self.retention_ms
            ));
        }
        if !(0..=20_000).contains(&self.receive_wait_ms) {
            return bad(format!(
                "receive wait {} ms (0 to 20000)",
                self.receive_wait_ms
            ));
        }
        if !(1_000..=DELAY_MAX_MS).contains(&self.dedup_window_ms) {
            return bad(format!(
                "deduplication window {} ms (1000 to {DELAY_MAX_MS})",
                self.dedup_window_ms
            ));
        }
        if self.tags.len() > TAGS_MAX {
            return bad(format!("{} tags (at most {TAGS_MAX})", self.tags.len()));
        }
        if let Some((k, v)) = self.tags.iter().find(|(k, v)| {
            k.is_empty()
                || k.chars().count() > TAG_KEY_CHARS_MAX
                || v.chars().count() > TAG_VALUE_CHARS_MAX
        }) {
            return bad(format!(
                "tag `{k}`=`{v}` (keys 1 to {TAG_KEY_CHARS_MAX} characters, values up to {TAG_VALUE_CHARS_MAX})"
            ));
        }
        if let Some(r) = &self.redrive {
            if !(1..=1000).contains(&r.max_receive_count) {
                return bad(format!(
                    "maxReceiveCount {} (1 to 1000)",
                    r.max_receive_count
                ));
            }
        }
        Ok(())
    }
}

/// Refuses names that cannot be a queue's: SQS's alphabet (letters, digits, `-`, `_`), up to
/// [`QUEUE_NAME_MAX`] characters; a FIFO queue's name ends in `.fifo`.
pub fn check_name(name: &str, fifo: bool) -> Result<()> {
    let bad = |reason: &str| {
        Err(QueueError::InvalidName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    let stem = name.strip_suffix(".fifo").unwrap_or(name);
    if name.is_empty() || name.len() > QUEUE_NAME_MAX {
        return bad("a name has 1 to 80 characters");
    }
    if !stem
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return bad("only letters, digits, `-` and `_` (and a `.fifo` suffix)");
    }
    if fifo != name.ends_with(".fifo") {
        return bad("a FIFO queue's name ends in `.fifo`, and only a FIFO queue's");
    }
    Ok(())
}

/// Every queue in the catalog.
pub fn load(log: &Log) -> Result<BTreeMap<String, QueueConfig>> {
    load_topic(log, CATALOG_TOPIC)
}

/// Every subscription, by `queue/topic`.
pub fn load_subscriptions(log: &Log) -> Result<BTreeMap<String, Subscription>> {
    load_topic(log, SUBSCRIPTIONS_TOPIC)
}

fn load_topic<T: serde::de::DeserializeOwned>(
    log: &Log,
    topic: &str,
) -> Result<BTreeMap<String, T>> {
    ensure_topic(log, topic)?;
    let mut out = BTreeMap::new();
    log.for_each_record::<QueueError>(
        topic,
        PartitionId(0),
        log.earliest_offset(topic, PartitionId(0))?,
        Isolation::ReadCommitted,
        |r| {
            let Some(key) = r.key else { return Ok(()) };
            let name = String::from_utf8_lossy(key).into_owned();
            match r.value {
                None => {
                    out.remove(&name);
                }
                Some(v) => {
                    let value =
                        serde_json::from_slice(v).map_err(|e| QueueError::CorruptState {
                            queue: name.clone(),
                            offset: r.offset.0,
                            reason: format!("{topic} record: {e}"),
                        })?;
                    out.insert(name, value);
                }
            }
            Ok(())
        },
    )?;
    Ok(out)
}

/// Writes (durably) a queue's settings.
pub fn put(log: &Log, name: &str, config: &QueueConfig) -> Result<()> {
    put_record(log, CATALOG_TOPIC, name, config)
}

/// Writes (durably) a subscription.
pub fn put_subscription(log: &Log, sub: &Subscription) -> Result<()> {
    put_record(
        log,
        SUBSCRIPTIONS_TOPIC,
        &subscription_key(&sub.queue, &sub.topic),
        sub,
    )
}

/// The key of a queue's subscription to a topic.
pub fn subscription_key(queue: &str, topic: &str) -> String {
    format!("{queue}/{topic}")
}

fn put_record<T: Serialize>(log: &Log, topic: &str, key: &str, value: &T) -> Result<()> {
    let value = serde_json::to_vec(value)
        .map_err(|e| QueueError::InvalidSetting(format!("cannot encode: {e}")))?;
    let record = Record::keyed(Bytes::copy_from_slice(key.as_bytes()), value);
    log.append(topic, PartitionId(0), &[record])?;
    Ok(())
}

/// Deletes (durably) a queue's record.
pub fn remove(log: &Log, name: &str) -> Result<()> {
    remove_record(log, CATALOG_TOPIC, name)
}

/// Deletes (durably) a subscription.
pub fn remove_subscription(log: &Log, queue: &str, topic: &str) -> Result<()> {
    remove_record(log, SUBSCRIPTIONS_TOPIC, &subscription_key(queue, topic))
}

fn remove_record(log: &Log, topic: &str, key: &str) -> Result<()> {
    let record = Record::tombstone(Bytes::copy_from_slice(key.as_bytes()));
    log.append(topic, PartitionId(0), &[record])?;
    Ok(())
}

fn ensure_topic(log: &Log, topic: &str) -> Result<()> {
    let overrides = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
    log.ensure_topic(topic, 1, overrides)?;
    Ok(())
}
