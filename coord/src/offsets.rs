//! Committed offsets, stored in the compacted internal topic `__consumer_offsets`.
//!
//! Key: group/topic/partition; value: offset, metadata, commit time (both big-endian with a
//! version prefix, see docs/format.md). A group's offsets live in the partition murmur2 of
//! the group id picks, and one commit is one append (one batch): all of its offsets become
//! durable together, with one group-committed fsync. On start the coordinator reads the topic
//! once to rebuild its in-memory map; a tombstone removes a key (group deletion).

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use weir_log::{Log, Offset, PartitionId, Record, Timestamp, TopicConfig};

use crate::error::{CoordError, Result};

/// The internal topic of committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Partitions of the offsets topic (spreads groups over writers).
pub const OFFSETS_PARTITIONS: u32 = 8;
const FORMAT_VERSION: u16 = 1;

/// Longest metadata a committed offset may carry (Kafka's `offset.metadata.max.bytes`); the
/// stored format gives strings a 16-bit length, so anything longer must be refused up front.
pub const OFFSET_METADATA_MAX_BYTES: usize = 4096;
/// Longest group id (and topic name: the log refuses longer ones) in a stored key.
pub const GROUP_ID_MAX_BYTES: usize = 255;

/// Refuses offsets whose group id or metadata the stored format cannot hold.
pub fn check_storable(group: &str, offsets: &[(TopicPartition, Offset, String)]) -> Result<()> {
    if group.is_empty() || group.len() > GROUP_ID_MAX_BYTES {
        return Err(CoordError::InvalidGroupId {
            len: group.len(),
            max: GROUP_ID_MAX_BYTES,
        });
    }
    if let Some((_, _, m)) = offsets
        .iter()
        .find(|(_, _, m)| m.len() > OFFSET_METADATA_MAX_BYTES)
    {
        return Err(CoordError::MetadataTooLarge {
            len: m.len(),
            max: OFFSET_METADATA_MAX_BYTES,
        });
    }
    Ok(())
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset to consume.
    pub offset: Offset,
    /// Free-form metadata given with the commit.
    pub metadata: String,
    /// When it was committed.
    pub commit_time: Timestamp,
}

/// (topic, partition).
pub type TopicPartition = (String, u32);

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u16).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn get_str(b: &[u8], at: &mut usize) -> Option<String> {
    let len = u16::from_be_bytes(b.get(*at..*at + 2)?.try_into().ok()?) as usize;
    *at += 2;
    let s = std::str::from_utf8(b.get(*at..*at + len)?)
        .ok()?
        .to_string();
    *at += len;
    Some(s)
}

/// Encodes the record key for (group, topic, partition).
pub fn encode_key(group: &str, topic: &str, partition: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + group.len() + topic.len());
    b.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    put_str(&mut b, group);
    put_str(&mut b, topic);
    b.extend_from_slice(&partition.to_be_bytes());
    b
}

/// Decodes a record key.
pub fn decode_key(b: &[u8]) -> Option<(String, String, u32)> {
    if b.get(..2)? != FORMAT_VERSION.to_be_bytes() {
        return None;
    }
    let mut at = 2;
    let group = get_str(b, &mut at)?;
    let topic = get_str(b, &mut at)?;
    let partition = u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?);
    (at + 4 == b.len()).then_some((group, topic, partition))
}

/// Encodes a committed offset value.
pub fn encode_value(c: &CommittedOffset) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + c.metadata.len());
    b.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    b.extend_from_slice(&c.offset.0.to_be_bytes());
    b.extend_from_slice(&c.commit_time.0.to_be_bytes());
    put_str(&mut b, &c.metadata);
    b
}

/// Decodes a committed offset value.
pub fn decode_value(b: &[u8]) -> Option<CommittedOffset> {
    if b.get(..2)? != FORMAT_VERSION.to_be_bytes() {
        return None;
    }
    let offset = i64::from_be_bytes(b.get(2..10)?.try_into().ok()?);
    let commit_time = i64::from_be_bytes(b.get(10..18)?.try_into().ok()?);
    let mut at = 18;
    let metadata = get_str(b, &mut at)?;
    (at == b.len()).then_some(CommittedOffset {
        offset: Offset(offset),
        metadata,
        commit_time: Timestamp(commit_time),
    })
}

/// The offsets of every group, as stored.
#[derive(Debug, Default)]
pub struct OffsetStore {
    groups: HashMap<String, BTreeMap<TopicPartition, CommittedOffset>>,
    /// The latest persisted membership value of each group (see `group/stored.rs`), handed
    /// to the group coordinator once at start.
    group_metadata: HashMap<String, Vec<u8>>,
}

impl OffsetStore {
    /// Creates the offsets topic if needed and loads every committed offset.
    pub fn open(log: &Log) -> Result<OffsetStore> {
        let cfg = TopicConfig::parse_pairs(&["cleanup.policy=compact", "segment.bytes=104857600"])?;
        log.ensure_topic(OFFSETS_TOPIC, OFFSETS_PARTITIONS, cfg)?;
        let mut store = OffsetStore::default();
        for p in 0..log.partition_count(OFFSETS_TOPIC)? {
            let from = log.earliest_offset(OFFSETS_TOPIC, PartitionId(p))?;
            // Offsets committed inside a transaction count only once it committed.
            log.for_each_record(
                OFFSETS_TOPIC,
                PartitionId(p),
                from,
                weir_log::Isolation::ReadCommitted,
                |r| {
                    let bad = |reason: &str| CoordError::CorruptedOffsetRecord {
                        topic: OFFSETS_TOPIC.into(),
                        partition: p,
                        offset: r.offset.0,
                        reason: reason.into(),
                    };
                    let key = r.key.unwrap_or_default();
                    if let Some(group) = crate::group::stored_group_key(key) {
                        match r.value {
                            Some(v) => drop(store.group_metadata.insert(group, v.to_vec())),
                            None => drop(store.group_metadata.remove(&group)),
                        }
                        return Ok(());
                    }
                    let (group, topic, partition) =
                        decode_key(key).ok_or_else(|| bad("bad key"))?;
                    match r.value {
                        None => {
                            if let Some(g) = store.groups.get_mut(&group) {
                                g.remove(&(topic, partition));
                            }
                        }
                        Some(v) => {
                            let c = decode_value(v).ok_or_else(|| bad("bad value"))?;
                            store
                                .groups
                                .entry(group)
                                .or_default()
                                .insert((topic, partition), c);
                        }
                    }
                    Ok::<(), CoordError>(())
                },
            )?;
        }
        store.groups.retain(|_, g| !g.is_empty());
        Ok(store)
    }

    /// The partition of the offsets topic a group's commits go to.
    pub fn partition_of(group: &str) -> PartitionId {
        weir_log::partitioner::partition_for_key(group.as_bytes(), OFFSETS_PARTITIONS)
    }

    /// The persisted membership values read at open (each group's latest), once.
    pub(crate) fn take_group_metadata(&mut self) -> HashMap<String, Vec<u8>> {
        std::mem::take(&mut self.group_metadata)
    }

    /// The records that commit `offsets` for `group`.
    pub fn records(group: &str, offsets: &[(TopicPartition, CommittedOffset)]) -> Vec<Record> {
        offsets
            .iter()
            .map(|((t, p), c)| {
                Record::keyed(
                    Bytes::from(encode_key(group, t, *p)),
                    Bytes::from(encode_value(c)),
                )
            })
            .collect()
    }

    /// Records offsets already written to the log (a commit's append, or a committed
    /// transaction's).
    pub fn apply_committed(&mut self, group: &str, offsets: &[(TopicPartition, CommittedOffset)]) {
        let g = self.groups.entry(group.to_string()).or_default();
        for (tp, c) in offsets {
            g.insert(tp.clone(), c.clone());
        }
    }

    /// The tombstones that delete every offset of a group (appended by the caller, outside
    /// this store's lock, then [`OffsetStore::remove`]d).
    pub fn group_tombstones(&self, group: &str) -> Result<Vec<Record>> {
        let Some(g) = self.groups.get(group) else {
            return Err(CoordError::UnknownGroup(group.to_string()));
        };
        Ok(g.keys()
            .map(|(t, p)| Record::tombstone(Bytes::from(encode_key(group, t, *p))))
            .collect())
    }

    /// The tombstones that delete some of a group's offsets; unknown ones are skipped.
    pub fn tombstones(&self, group: &str, partitions: &[TopicPartition]) -> Result<Vec<Record>> {
        let Some(g) = self.groups.get(group) else {
            return Err(CoordError::UnknownGroup(group.to_string()));
        };
        Ok(partitions
            .iter()
            .filter(|tp| g.contains_key(*tp))
            .map(|(t, p)| Record::tombstone(Bytes::from(encode_key(group, t, *p))))
            .collect())
    }

    /// Forgets offsets whose tombstones were written: `None` forgets the whole group.
    pub fn remove(&mut self, group: &str, partitions: Option<&[TopicPartition]>) {
        match partitions {
            None => {
                self.groups.remove(group);
            }
            Some(partitions) => {
                if let Some(g) = self.groups.get_mut(group) {
                    for tp in partitions {
                        g.remove(tp);
                    }
                }
            }
        }
    }

    /// A group's committed offsets.
    pub fn group(&self, group: &str) -> Option<&BTreeMap<TopicPartition, CommittedOffset>> {
        self.groups.get(group)
    }

    /// Groups with committed offsets.
    pub fn groups(&self) -> impl Iterator<Item = &String> {
        self.groups.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_value_round_trip() {
        let k = encode_key("g", "orders", 7);
        assert_eq!(decode_key(&k), Some(("g".into(), "orders".into(), 7)));
        let c = CommittedOffset {
            offset: Offset(42),
            metadata: "m".into(),
            commit_time: Timestamp(5),
        };
        assert_eq!(decode_value(&encode_value(&c)), Some(c));
        assert!(decode_key(b"\x00\x09junk").is_none());
    }
}
