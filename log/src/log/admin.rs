//! Changing a live topic: its config overrides (Kafka's AlterConfigs) and its partition count
//! (CreatePartitions, growth only). Both write the new `config.json` atomically and reopen the
//! topic: the old partitions' writers stop first (appends already queued are written or
//! refused with `Closed`, which Kafka clients retry like a leader change), then the topic is
//! opened again under the new config. Readers holding the old topic keep reading its segments.

use std::collections::BTreeMap;

use super::Log;
use crate::config::{StoredTopicConfig, TopicConfig};
use crate::error::{LogError, Result};
use crate::storage::write_atomic;

/// Most partitions a topic may have: every partition holds a directory, open files and a
/// writer thread.
pub const PARTITIONS_MAX: u32 = 10_000;

impl Log {
    /// Replaces a topic's config overrides (keys not given return to their defaults).
    pub fn alter_topic_config(
        &self,
        name: &str,
        overrides: BTreeMap<String, String>,
    ) -> Result<()> {
        self.reopen_topic(name, |stored| {
            stored.overrides = overrides;
            Ok(())
        })
    }

    /// Grows a topic to `partitions` partitions. Existing keys may map to other partitions
    /// afterwards, as in Kafka.
    pub fn create_partitions(&self, name: &str, partitions: u32) -> Result<()> {
        self.reopen_topic(name, |stored| {
            if partitions <= stored.partitions || partitions > PARTITIONS_MAX {
                return Err(LogError::InvalidConfig {
                    key: "partitions".into(),
                    value: partitions.to_string(),
                    reason: format!(
                        "topic `{name}` has {} partitions; it can only grow, up to {PARTITIONS_MAX}",
                        stored.partitions
                    ),
                });
            }
            stored.partitions = partitions;
            Ok(())
        })
    }

    fn reopen_topic(
        &self,
        name: &str,
        change: impl FnOnce(&mut StoredTopicConfig) -> Result<()>,
    ) -> Result<()> {
        self.writable()?;
        let mut topics = self.topics_mut();
        let old = topics
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))?;
        let mut stored = old.stored.clone();
        change(&mut stored)?;
        TopicConfig::from_overrides(stored.partitions, &stored.overrides)?;
        for p in &old.partitions {
            p.shutdown();
        }
        let storage = self.inner.options.storage.clone();
        let path = self.inner.dir.join("topics").join(name).join("config.json");
        let json =
            serde_json::to_vec_pretty(&stored).map_err(|e| LogError::Internal(e.to_string()))?;
        write_atomic(storage.as_ref(), &path, &json)
            .map_err(|e| LogError::io("write topic config", &path, e))?;
        let topic = self.open_topic(name, stored)?;
        topics.insert(name.to_string(), topic);
        Ok(())
    }
}
