//! A topic inside an open log: its partitions and config, and the naming rules for topics.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use event_listener::Event;

use crate::config::{StoredTopicConfig, TopicConfig};
use crate::error::{LogError, Result};
use crate::partition::{Partition, PartitionInfo, PartitionShared};
use crate::types::PartitionId;

/// Longest topic name (Kafka's limit).
const TOPIC_NAME_MAX: usize = 249;

/// A topic: its config and partitions.
#[derive(Debug)]
pub(crate) struct Topic {
    pub(crate) name: String,
    pub(crate) stored: StoredTopicConfig,
    pub(crate) config: Arc<TopicConfig>,
    pub(crate) partitions: Vec<Partition>,
    pub(crate) appended: Arc<Event>,
    pub(crate) round_robin: AtomicU64,
}

impl Topic {
    pub(crate) fn partition(&self, p: PartitionId) -> Result<&Arc<PartitionShared>> {
        self.partitions
            .get(p.0 as usize)
            .map(|x| &x.shared)
            .ok_or_else(|| LogError::UnknownPartition {
                topic: self.name.clone(),
                partition: p,
                partitions: self.partitions.len() as u32,
            })
    }
}

/// Describes a topic.
#[derive(Debug, Clone)]
pub struct TopicDescription {
    /// Name.
    pub name: String,
    /// (key, effective value, set explicitly).
    pub config: Vec<(String, String, bool)>,
    /// Per partition.
    pub partitions: Vec<PartitionInfo>,
}

/// Kafka's rules for topic names.
pub(crate) fn validate_topic_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(LogError::InvalidTopicName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > TOPIC_NAME_MAX {
        return bad("longer than 249 characters");
    }
    if name == "." || name == ".." {
        return bad("`.` and `..` are reserved");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("only ASCII letters, digits, `.`, `_` and `-` are allowed");
    }
    Ok(())
}

/// A fresh random topic id, as 32 hex digits with the bits of a version-4 UUID. The random
/// bits come from the standard library's per-process random hash keys (seeded by the OS), so
/// the log needs no random-number dependency.
pub(crate) fn new_topic_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut halves = [0u64; 2];
    for (i, half) in halves.iter_mut().enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_usize(i);
        *half = h.finish();
    }
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&halves[0].to_be_bytes());
    id[8..].copy_from_slice(&halves[1].to_be_bytes());
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 32 hex digits; `None` for anything else.
pub(crate) fn parse_topic_id(hex: &str) -> Option<[u8; 16]> {
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(id)
}

/// A stable id for a topic whose stored config has none (a read-only view of an old
/// directory): the same name gives the same id in every process.
pub(crate) fn derived_topic_id(name: &str) -> [u8; 16] {
    let a = crc32c::crc32c(name.as_bytes());
    let b = crc32c::crc32c_append(a, b"weir-topic-id");
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&a.to_be_bytes());
    id[4..8].copy_from_slice(&b.to_be_bytes());
    id[8..12].copy_from_slice(&(name.len() as u32).to_be_bytes());
    id[12..].copy_from_slice(&crc32c::crc32c_append(b, name.as_bytes()).to_be_bytes());
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_ids_are_version_4_and_round_trip() {
        let a = new_topic_id();
        let b = new_topic_id();
        assert_ne!(a, b);
        let id = parse_topic_id(&a).expect("32 hex digits");
        assert_eq!(id[6] >> 4, 4);
        assert_eq!(id[8] >> 6, 2);
        assert_eq!(parse_topic_id("xyz"), None);
        assert_eq!(derived_topic_id("orders"), derived_topic_id("orders"));
    }
}
