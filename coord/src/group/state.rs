//! One group's membership state machine (Kafka's classic protocol), pure: no locks, no I/O,
//! and time passed in from the log's clock. States: Empty → PreparingRebalance →
//! CompletingRebalance → Stable (Dead once deleted). A rebalance completes when every member
//! has rejoined or its deadline (the longest rebalance timeout) passes; stragglers are removed.

use std::collections::BTreeMap;

use weir_log::Timestamp;

use super::GroupState;

#[derive(Debug)]
pub(super) struct Member {
    pub(super) client_id: String,
    /// Where the member connects from (`/IP` as Kafka shows it; empty when embedded).
    pub(super) client_host: String,
    pub(super) session_timeout_ms: i64,
    pub(super) rebalance_timeout_ms: i64,
    /// (protocol name, metadata) as the member sent them, preferred first.
    pub(super) protocols: Vec<(String, Vec<u8>)>,
    pub(super) last_heartbeat: Timestamp,
    /// Joined the current rebalance round.
    pub(super) joined: bool,
    /// Waiting for its join response: its session clock is on hold, as in Kafka.
    pub(super) in_join: bool,
    /// Waiting for its sync response (the leader's assignment): its heartbeats queue behind
    /// that request on its connection, so its session clock is on hold too, as in Kafka.
    pub(super) in_sync: bool,
    /// The leader's assignment for this member in this generation, as sent.
    pub(super) assignment: Option<Vec<u8>>,
}

#[derive(Debug)]
pub(super) struct Group {
    pub(super) state: GroupState,
    pub(super) generation: i32,
    pub(super) protocol_type: Option<String>,
    pub(super) protocol: Option<String>,
    pub(super) leader: Option<String>,
    pub(super) members: BTreeMap<String, Member>,
    pub(super) rebalance_deadline: Option<Timestamp>,
}

impl Group {
    pub(super) fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            rebalance_deadline: None,
        }
    }

    pub(super) fn prepare_rebalance(&mut self, now: Timestamp) {
        let longest = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or_default();
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline = Some(Timestamp(now.0.saturating_add(longest)));
        for m in self.members.values_mut() {
            m.joined = m.in_join;
            m.assignment = None;
        }
    }

    /// Ends the join phase if everyone rejoined or the deadline passed; true if it ended.
    pub(super) fn try_complete_join(&mut self, now: Timestamp) -> bool {
        if self.state != GroupState::PreparingRebalance {
            return false;
        }
        let all_in = self.members.values().all(|m| m.joined);
        let overdue = self.rebalance_deadline.is_some_and(|d| now >= d);
        if !(all_in || overdue) {
            return false;
        }
        self.members.retain(|_, m| m.joined);
        self.generation += 1;
        self.rebalance_deadline = None;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.leader = None;
            self.protocol = None;
            return true;
        }
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.protocol = self.common_protocol();
        self.state = GroupState::CompletingRebalance;
        true
    }

    /// The leader's most preferred protocol that every member supports.
    fn common_protocol(&self) -> Option<String> {
        let leader = self.members.get(self.leader.as_ref()?)?;
        leader
            .protocols
            .iter()
            .map(|(p, _)| p)
            .find(|p| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(q, _)| q == *p))
            })
            .cloned()
    }

    pub(super) fn remove_member(&mut self, id: &str, now: Timestamp) {
        if self.members.remove(id).is_none() {
            return;
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if self.members.is_empty() {
                    self.state = GroupState::Empty;
                    self.generation += 1;
                    self.leader = None;
                } else {
                    self.prepare_rebalance(now);
                }
            }
            GroupState::PreparingRebalance => {
                self.try_complete_join(now);
            }
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Members whose session expired at `now` (those waiting for a join response excepted).
    pub(super) fn expired(&self, now: Timestamp) -> Vec<String> {
        self.members
            .iter()
            .filter(|(_, m)| {
                !m.in_join && !m.in_sync && now.0 - m.last_heartbeat.0 > m.session_timeout_ms
            })
            .map(|(id, _)| id.clone())
            .collect()
    }
}
