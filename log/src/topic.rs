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
