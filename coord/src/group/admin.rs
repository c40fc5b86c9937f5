//! What a group coordinator answers and does for administrators rather than members:
//! listing and describing groups, lag per partition, resetting and deleting a group's offsets (only while it has no live
//! members, under the group's lock so no member commit races them), and the reset targets
//! computed from the log alone (so a CLI beside a server can compute them read-only).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use weir_log::{Log, Offset, PartitionId, Timestamp};

use super::state::Group;
use super::{
    stored, GroupCoordinator, GroupDescription, GroupState, MemberDescription, PartitionLag, Slot,
};
use crate::error::{CoordError, Result};
use crate::offsets::{CommittedOffset, OffsetStore, TopicPartition, OFFSETS_TOPIC};

impl GroupCoordinator {
    /// Groups that have members or committed offsets.
    pub fn list_groups(&self) -> Vec<(String, GroupState)> {
        let mut out: BTreeMap<String, GroupState> = self
            .offsets()
            .groups()
            .map(|g| (g.clone(), GroupState::Empty))
            .collect();
        let slots: Vec<(String, Arc<Slot>)> = self
            .inner
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (id, slot) in slots {
            let state = slot.lock().state;
            if state != GroupState::Dead && (state != GroupState::Empty || out.contains_key(&id)) {
                out.insert(id, state);
            }
        }
        out.into_iter().collect()
    }

    /// State, generation and members of a group.
    pub fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let Ok(slot) = self.existing(group) else {
            return if self.offsets().group(group).is_some() {
                Ok(GroupDescription {
                    group: group.to_string(),
                    state: GroupState::Empty,
                    generation: 0,
                    protocol_type: None,
                    protocol: None,
                    members: Vec::new(),
                })
            } else {
                Err(CoordError::UnknownGroup(group.to_string()))
            };
        };
        let g = slot.lock();
        let protocol = g.protocol.clone();
        Ok(GroupDescription {
            group: group.to_string(),
            state: g.state,
            generation: g.generation,
            protocol_type: g.protocol_type.clone(),
            members: g
                .members
                .iter()
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(name, _)| Some(name) == protocol.as_ref())
                        .map(|(_, meta)| meta.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone().unwrap_or_default(),
                })
                .collect(),
            protocol,
        })
    }

    /// Per partition of the topics the group committed to (plus `topics`): committed offset,
    /// log end, lag, and the owning member (read from the consumer-protocol assignments; a
    /// member whose assignment does not decode owns nothing here, with a warning).
    pub fn lag(&self, group: &str, topics: &[String]) -> Result<Vec<PartitionLag>> {
        let committed = self.committed(group);
        let mut owners: HashMap<(String, u32), String> = HashMap::new();
        if let Ok(d) = self.describe_group(group) {
            for m in &d.members {
                match crate::protocol::decode_assignment(&m.assignment) {
                    Ok(tps) => owners.extend(tps.into_iter().map(|tp| (tp, m.member_id.clone()))),
                    Err(e) => {
                        tracing::warn!(group, member = %m.member_id, error = %e, "cannot read a member's assignment")
                    }
                }
            }
        }
        let mut names: Vec<String> = committed
            .keys()
            .map(|(t, _)| t.clone())
            .chain(topics.iter().cloned())
            .collect();
        names.sort();
        names.dedup();
        let log = &self.inner.log;
        let mut out = Vec::new();
        for topic in names {
            let Ok(n) = log.partition_count(&topic) else {
                continue;
            };
            for p in 0..n {
                let end = log.latest_offset(&topic, PartitionId(p))?;
                let c = committed.get(&(topic.clone(), p)).map(|c| c.offset);
                let from = match c {
                    Some(o) => o,
                    None => log.earliest_offset(&topic, PartitionId(p))?,
                };
                out.push(PartitionLag {
                    topic: topic.clone(),
                    partition: p,
                    committed: c,
                    log_end: end,
                    lag: (end.0 - from.0).max(0),
                    owner: owners.get(&(topic.clone(), p)).cloned(),
                });
            }
        }
        Ok(out)
    }

    /// Runs `f` holding the group's lock and its commit lock (if the group has state),
    /// refusing while it has live members: offsets an administrator changes must race neither
    /// a member's commits nor a standalone consumer's. The store of committed offsets, which
    /// every group reads, is locked only to plan and to apply, never across the append.
    fn while_empty<T>(
        &self,
        group: &str,
        f: impl FnOnce(Option<&mut Group>) -> Result<T>,
    ) -> Result<T> {
        let slot = self.existing(group).ok();
        let mut guard = slot.as_ref().map(|s| s.lock());
        if let Some(g) = guard.as_deref() {
            if !g.members.is_empty() {
                return Err(CoordError::GroupNotEmpty {
                    group: group.to_string(),
                    members: g.members.len(),
                });
            }
        }
        let _order = slot
            .as_ref()
            .map(|s| s.commits.lock().unwrap_or_else(|e| e.into_inner()));
        f(guard.as_deref_mut())
    }

    /// Deletes a group and its committed offsets; refused while it has live members.
    pub fn delete_group(&self, group: &str) -> Result<()> {
        let log = self.inner.log.clone();
        self.while_empty(group, |g| {
            // A group the coordinator knows with no offsets (members came and left without
            // committing) still has its membership record to delete.
            let known = g.as_deref().is_some_and(|g| g.state != GroupState::Dead);
            let mut records = match self.offsets().group_tombstones(group) {
                Err(CoordError::UnknownGroup(_)) if known => Vec::new(),
                r => r?,
            };
            // The membership record goes too (a tombstone, as Kafka writes).
            records.push(weir_log::Record::tombstone(stored::encode_key(group)));
            log.append(OFFSETS_TOPIC, OffsetStore::partition_of(group), &records)?;
            self.offsets().remove(group, None);
            if let Some(g) = g {
                g.state = GroupState::Dead;
            }
            Ok(())
        })
    }

    /// Deletes some committed offsets of a group (Kafka's OffsetDelete); refused while the
    /// group has live members, which may be consuming those partitions.
    pub fn delete_offsets(&self, group: &str, partitions: &[TopicPartition]) -> Result<()> {
        let log = self.inner.log.clone();
        self.while_empty(group, |_| {
            let records = self.offsets().tombstones(group, partitions)?;
            if records.is_empty() {
                return Ok(());
            }
            log.append(OFFSETS_TOPIC, OffsetStore::partition_of(group), &records)?;
            self.offsets().remove(group, Some(partitions));
            Ok(())
        })
    }

    /// Sets a group's committed offsets for a topic (every partition); refused while the group
    /// has live members. `to` is `earliest`, `latest`, `offset:N` or `timestamp:MS`.
    pub fn reset_offsets(&self, group: &str, topic: &str, to: &str) -> Result<Vec<(u32, Offset)>> {
        let log = self.inner.log.clone();
        let targets = reset_targets(&log, topic, to)?;
        let now = log.now();
        let entries: Vec<(TopicPartition, CommittedOffset)> = targets
            .iter()
            .map(|(p, o)| {
                (
                    (topic.to_string(), *p),
                    CommittedOffset {
                        offset: *o,
                        metadata: format!("reset to {to}"),
                        commit_time: now,
                    },
                )
            })
            .collect();
        self.while_empty(group, |_| {
            if entries.is_empty() {
                return Ok(());
            }
            let records = OffsetStore::records(group, &entries);
            log.append(OFFSETS_TOPIC, OffsetStore::partition_of(group), &records)?;
            self.offsets().apply_committed(group, &entries);
            Ok(())
        })?;
        Ok(targets)
    }
}

/// The offset each partition of `topic` gets when a group is reset `to` `earliest`,
/// `latest`, `offset:N` (clamped to the log) or `timestamp:MS`. Reads only, so a read-only
/// view beside a server can compute what the CLI then commits through it.
pub fn reset_targets(log: &Log, topic: &str, to: &str) -> Result<Vec<(u32, Offset)>> {
    let n = log.partition_count(topic)?;
    let mut targets = Vec::new();
    for p in 0..n {
        let pid = PartitionId(p);
        let o = match to {
            "earliest" => log.earliest_offset(topic, pid)?,
            "latest" => log.latest_offset(topic, pid)?,
            s if s.starts_with("offset:") => {
                let v: i64 = s[7..]
                    .parse()
                    .map_err(|_| CoordError::Invalid(format!("`{s}`: expected offset:N")))?;
                Offset(v.clamp(
                    log.earliest_offset(topic, pid)?.0,
                    log.latest_offset(topic, pid)?.0,
                ))
            }
            s if s.starts_with("timestamp:") => {
                let v: i64 = s[10..]
                    .parse()
                    .map_err(|_| CoordError::Invalid(format!("`{s}`: expected timestamp:MS")))?;
                match log.offset_for_timestamp(topic, pid, Timestamp(v))? {
                    Some(o) => o,
                    None => log.latest_offset(topic, pid)?,
                }
            }
            s => {
                return Err(CoordError::Invalid(format!(
                    "`{s}`: expected earliest, latest, offset:N or timestamp:MS"
                )))
            }
        };
        targets.push((p, o));
    }
    Ok(targets)
}
