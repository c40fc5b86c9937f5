//! Topic configuration: Kafka's keys and defaults, validated with clear errors, persisted as
//! JSON in the topic directory.
//!
//! Only the keys a user set are stored (`overrides`); the effective values are the defaults
//! merged with them, so a later change of a default reaches topics that never set the key.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{LogError, Result};

/// When an append is acknowledged relative to `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Ack after the group-committed `fdatasync` that covers the batch. Nothing acknowledged is
    /// lost on power failure.
    Batch,
    /// Ack after `write`; `fdatasync` at most every N ms. Loss window on power failure: up to
    /// N ms of acknowledged appends (a process crash alone loses nothing: the page cache keeps it).
    IntervalMs(u64),
    /// Ack after `write`; the OS writes back when it likes (segment roll still syncs). Loss
    /// window on power failure: whatever the kernel had not written back (up to
    /// `vm.dirty_expire_centisecs`, 30 s by default).
    Os,
}

impl std::fmt::Display for FlushPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlushPolicy::Batch => write!(f, "batch"),
            FlushPolicy::IntervalMs(n) => write!(f, "ms:{n}"),
            FlushPolicy::Os => write!(f, "os"),
        }
    }
}

impl std::str::FromStr for FlushPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "batch" => Ok(FlushPolicy::Batch),
            "os" => Ok(FlushPolicy::Os),
            _ => match s.strip_prefix("ms:").map(str::parse::<u64>) {
                Some(Ok(n)) if n > 0 => Ok(FlushPolicy::IntervalMs(n)),
                _ => Err("expected batch, os or ms:N with N > 0".into()),
            },
        }
    }
}

/// Which timestamp a record keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// The producer's create time.
    CreateTime,
    /// The time the log appended the batch.
    LogAppendTime,
}

/// Effective configuration of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// Number of partitions (fixed at creation).
    pub partitions: u32,
    /// Delete closed segments older than this; `None` keeps forever (`-1`).
    pub retention_ms: Option<i64>,
    /// Delete oldest closed segments while the partition is larger; `None` = unlimited.
    pub retention_bytes: Option<u64>,
    /// `cleanup.policy` contains `delete`.
    pub cleanup_delete: bool,
    /// `cleanup.policy` contains `compact`.
    pub cleanup_compact: bool,
    /// Roll the active segment at this size.
    pub segment_bytes: u64,
    /// Roll the active segment when its first record is this old.
    pub segment_ms: i64,
    /// Largest batch accepted.
    pub max_message_bytes: usize,
    /// Tombstones older than this are removed by compaction.
    pub delete_retention_ms: i64,
    /// Records younger than this are never compacted.
    pub min_compaction_lag_ms: i64,
    /// Create time or log-append time.
    pub timestamp_type: TimestampType,
    /// Flush policy.
    pub flush: FlushPolicy,
    /// Bytes between sparse index entries.
    pub index_interval_bytes: u32,
}

/// Every key a topic accepts, with its default, in the order `describe` prints them.
pub const CONFIG_KEYS: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("delete.retention.ms", "86400000"),
    ("flush", "batch"),
    ("index.interval.bytes", "4096"),
    ("max.message.bytes", "1048588"),
    ("message.timestamp.type", "CreateTime"),
    ("min.compaction.lag.ms", "0"),
    ("retention.bytes", "-1"),
    ("retention.ms", "604800000"),
    ("segment.bytes", "1073741824"),
    ("segment.ms", "604800000"),
];

/// Bounds on `segment.bytes`: index positions are 32-bit, and tiny segments are for tests.
const SEGMENT_BYTES_MIN: u64 = 1024;
const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;

/// The persisted form: partitions plus the keys the user set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredTopicConfig {
    /// Number of partitions.
    pub partitions: u32,
    /// Keys set explicitly.
    pub overrides: BTreeMap<String, String>,
    /// The topic's id (Kafka's topic UUID, 32 lowercase hex digits), fixed at creation so a
    /// topic deleted and created again under the same name is a different topic to clients.
    /// Topics created before ids existed get one when a writer next opens the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

fn bad(key: &str, value: &str, reason: impl Into<String>) -> LogError {
    LogError::InvalidConfig {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn parse_i64(key: &str, value: &str, min: i64) -> Result<i64> {
    let n: i64 = value
        .parse()
        .map_err(|_| bad(key, value, "expected an integer"))?;
    if n < min {
        return Err(bad(key, value, format!("must be >= {min}")));
    }
    Ok(n)
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig::from_overrides(1, &BTreeMap::new()).unwrap_or_else(|e| {
            // The defaults table is ours; failing to parse it is a bug caught by unit tests.
            panic!("built-in topic defaults are invalid: {e}")
        })
    }
}

impl TopicConfig {
    /// Builds the effective config from partitions and user-set keys, validating everything.
    pub fn from_overrides(
        partitions: u32,
        overrides: &BTreeMap<String, String>,
    ) -> Result<TopicConfig> {
        if partitions == 0 || partitions > 10_000 {
            return Err(bad(
                "partitions",
                &partitions.to_string(),
                "must be between 1 and 10000",
            ));
        }
        for key in overrides.keys() {
            if key != "flush.ms" && !CONFIG_KEYS.iter().any(|(k, _)| k == key) {
                let known: Vec<&str> = CONFIG_KEYS.iter().map(|(k, _)| *k).collect();
                return Err(bad(
                    key,
                    &overrides[key],
                    format!("unknown key; known keys: {}, flush.ms", known.join(", ")),
                ));
            }
        }
        let get = |key: &str| -> String {
            overrides.get(key).cloned().unwrap_or_else(|| {
                CONFIG_KEYS
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_default()
            })
        };
        let opt_neg = |key: &str| -> Result<Option<i64>> {
            let v = get(key);
            let n = parse_i64(key, &v, -1)?;
            Ok((n >= 0).then_some(n))
        };
        let policy = get("cleanup.policy");
        let parts: Vec<&str> = policy.split(',').map(str::trim).collect();
        if parts.is_empty() || parts.iter().any(|p| *p != "delete" && *p != "compact") {
            return Err(bad(
                "cleanup.policy",
                &policy,
                "expected delete, compact or compact,delete",
            ));
        }
        let segment_bytes = parse_i64(
            "segment.bytes",
            &get("segment.bytes"),
            SEGMENT_BYTES_MIN as i64,
        )? as u64;
        if segment_bytes > SEGMENT_BYTES_MAX {
            return Err(bad(
                "segment.bytes",
                &get("segment.bytes"),
                format!("must be <= {SEGMENT_BYTES_MAX}"),
            ));
        }
        let max_message_bytes = parse_i64("max.message.bytes", &get("max.message.bytes"), 128)?;
        if max_message_bytes as usize > crate::batch::BATCH_BYTES_MAX {
            return Err(bad(
                "max.message.bytes",
                &get("max.message.bytes"),
                format!("must be <= {}", crate::batch::BATCH_BYTES_MAX),
            ));
        }
        let ts_type = match get("message.timestamp.type").as_str() {
            "CreateTime" => TimestampType::CreateTime,
            "LogAppendTime" => TimestampType::LogAppendTime,
            other => {
                return Err(bad(
                    "message.timestamp.type",
                    other,
                    "expected CreateTime or LogAppendTime",
                ))
            }
        };
        let mut flush: FlushPolicy = get("flush")
            .parse()
            .map_err(|e: String| bad("flush", &get("flush"), e))?;
        if let Some(ms) = overrides.get("flush.ms") {
            let n = parse_i64("flush.ms", ms, 1)?;
            flush = FlushPolicy::IntervalMs(n as u64);
        }
        let index_interval = parse_i64("index.interval.bytes", &get("index.interval.bytes"), 0)?;
        Ok(TopicConfig {
            partitions,
            retention_ms: opt_neg("retention.ms")?,
            retention_bytes: opt_neg("retention.bytes")?.map(|n| n as u64),
            cleanup_delete: parts.contains(&"delete"),
            cleanup_compact: parts.contains(&"compact"),
            segment_bytes,
            segment_ms: parse_i64("segment.ms", &get("segment.ms"), 1)?,
            max_message_bytes: max_message_bytes as usize,
            delete_retention_ms: parse_i64("delete.retention.ms", &get("delete.retention.ms"), 0)?,
            min_compaction_lag_ms: parse_i64(
                "min.compaction.lag.ms",
                &get("min.compaction.lag.ms"),
                0,
            )?,
            timestamp_type: ts_type,
            flush,
            index_interval_bytes: index_interval.min(i64::from(u32::MAX)) as u32,
        })
    }

    /// Parses `KEY=VALUE` pairs as given on a command line.
    pub fn parse_pairs<S: AsRef<str>>(pairs: &[S]) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for p in pairs {
            let p = p.as_ref();
            let Some((k, v)) = p.split_once('=') else {
                return Err(bad(p, "", "expected KEY=VALUE"));
            };
            out.insert(k.trim().to_string(), v.trim().to_string());
        }
        Ok(out)
    }

    /// The flush interval, if the policy has one.
    pub fn flush_interval(&self) -> Option<Duration> {
        match self.flush {
            FlushPolicy::IntervalMs(n) => Some(Duration::from_millis(n)),
            _ => None,
        }
    }
}

/// Effective key/value pairs for display: defaults merged with overrides.
pub fn effective_pairs(overrides: &BTreeMap<String, String>) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for (k, default) in CONFIG_KEYS {
        match overrides.get(*k) {
            Some(v) => out.push((k.to_string(), v.clone(), true)),
            None if *k == "flush" && overrides.contains_key("flush.ms") => {
                out.push((k.to_string(), format!("ms:{}", overrides["flush.ms"]), true))
            }
            None => out.push((k.to_string(), default.to_string(), false)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[&str]) -> Result<TopicConfig> {
        TopicConfig::from_overrides(3, &TopicConfig::parse_pairs(pairs)?)
    }

    #[test]
    fn defaults_are_kafkas() {
        let c = TopicConfig::default();
        assert_eq!(c.retention_ms, Some(604_800_000));
        assert_eq!(c.retention_bytes, None);
        assert!(c.cleanup_delete && !c.cleanup_compact);
        assert_eq!(c.flush, FlushPolicy::Batch);
        assert_eq!(c.max_message_bytes, 1_048_588);
    }

    #[test]
    fn parses_and_rejects_with_clear_errors() {
        let c = cfg(&[
            "cleanup.policy=compact,delete",
            "flush.ms=50",
            "retention.ms=-1",
        ])
        .expect("valid");
        assert!(c.cleanup_compact && c.cleanup_delete);
        assert_eq!(c.flush, FlushPolicy::IntervalMs(50));
        assert_eq!(c.retention_ms, None);
        let e = cfg(&["retention.ms=soon"]).expect_err("bad").to_string();
        assert!(
            e.contains("retention.ms=soon") && e.contains("integer"),
            "{e}"
        );
        let e = cfg(&["nope=1"]).expect_err("unknown").to_string();
        assert!(e.contains("unknown key"), "{e}");
        let e = cfg(&["flush=sometimes"]).expect_err("flush").to_string();
        assert!(e.contains("batch, os or ms:N"), "{e}");
        assert!(cfg(&["segment.bytes=10"]).is_err());
        assert!(cfg(&["cleanup.policy=forever"]).is_err());
        assert!(TopicConfig::from_overrides(0, &BTreeMap::new()).is_err());
    }
}
