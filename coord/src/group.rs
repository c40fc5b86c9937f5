//! [`GroupCoordinator`]: Kafka's classic consumer-group protocol over the embedded log.
//!
//! Per group: members with ids, a generation, a leader and a chosen assignment protocol, driven
//! through Kafka's states (Empty → PreparingRebalance → CompletingRebalance → Stable, Dead).
//! `join_group` blocks until the rebalance completes (every member rejoined, or the rebalance
//! timeout passed and stragglers were removed); the leader computes the assignment and hands it
//! over in `sync_group`; `heartbeat` keeps a session alive and tells members to rejoin. A reaper
//! thread expires sessions and finishes timed-out rebalances.
//!
//! Invariants: a request from another generation or an unknown member is refused with a typed
//! error, so a zombie can neither commit offsets nor act on an old assignment; every member of
//! one generation receives the leader's assignment for that generation, so no partition is
//! owned twice within a generation. Committed offsets go through [`OffsetStore`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use weir_log::{Log, Offset, PartitionId, Timestamp};

use crate::error::{CoordError, Result};
use crate::offsets::{CommittedOffset, OffsetStore, TopicPartition};
use crate::ticker::Ticker;

/// How often the reaper looks for expired sessions and overdue rebalances.
const REAPER_TICK: Duration = Duration::from_millis(20);
/// Session timeouts accepted (Kafka's broker defaults bound them the same way).
const SESSION_TIMEOUT_MIN: Duration = Duration::from_millis(100);
const SESSION_TIMEOUT_MAX: Duration = Duration::from_secs(1800);

/// Kafka's group states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members.
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Assigned and running.
    Stable,
    /// Deleted.
    Dead,
}

/// A join request.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Group id.
    pub group: String,
    /// `None` for a new member; its id from an earlier join to rejoin.
    pub member_id: Option<String>,
    /// Free-form client name (shown by describe).
    pub client_id: String,
    /// A member that does not heartbeat for this long is removed.
    pub session_timeout: Duration,
    /// How long a rebalance waits for members to rejoin.
    pub rebalance_timeout: Duration,
    /// Kafka's protocol type (`consumer` for consumers).
    pub protocol_type: String,
    /// Supported assignment protocols, preferred first, with this member's metadata.
    pub protocols: Vec<(String, Vec<u8>)>,
}

/// The outcome of a join: the generation and, for the leader, every member's metadata.
#[derive(Debug, Clone)]
pub struct JoinResponse {
    /// New generation.
    pub generation: i32,
    /// This member's id.
    pub member_id: String,
    /// The leader's id.
    pub leader_id: String,
    /// The chosen protocol.
    pub protocol: String,
    /// (member id, metadata) for the leader; empty for others.
    pub members: Vec<(String, Vec<u8>)>,
}

/// A group as `describe` shows it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    /// Group id.
    pub group: String,
    /// State.
    pub state: GroupState,
    /// Generation.
    pub generation: i32,
    /// Chosen protocol.
    pub protocol: Option<String>,
    /// (member id, client id, assignment bytes).
    pub members: Vec<(String, String, Vec<u8>)>,
}

/// Lag of one partition for a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Committed offset, if any.
    pub committed: Option<Offset>,
    /// End of the partition.
    pub log_end: Offset,
    /// `log_end - committed` (or from the log start when nothing is committed).
    pub lag: i64,
    /// The member that owns the partition now, if known.
    pub owner: Option<String>,
}

#[derive(Debug)]
struct Member {
    client_id: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Vec<u8>)>,
    last_heartbeat: Instant,
    /// Joined the current rebalance round.
    joined: bool,
    /// Blocked in join_group: its session clock is on hold.
    in_join: bool,
    assignment: Option<Vec<u8>>,
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    rebalance_deadline: Option<Instant>,
}

impl Group {
    fn new() -> Group {
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

    fn prepare_rebalance(&mut self, now: Instant) {
        let longest = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline = Some(now + longest);
        for m in self.members.values_mut() {
            m.joined = m.in_join;
            m.assignment = None;
        }
    }

    /// Ends the join phase if everyone rejoined or the deadline passed.
    fn try_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_in = self.members.values().all(|m| m.joined);
        let overdue = self.rebalance_deadline.is_some_and(|d| now >= d);
        if !(all_in || overdue) {
            return;
        }
        self.members.retain(|_, m| m.joined);
        self.generation += 1;
        self.rebalance_deadline = None;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.leader = None;
            self.protocol = None;
            return;
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

    fn remove_member(&mut self, id: &str, now: Instant) {
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
            GroupState::PreparingRebalance => self.try_complete_join(now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }
}

#[derive(Debug)]
struct State {
    groups: HashMap<String, Group>,
    offsets: OffsetStore,
    next_member: u64,
}

#[derive(Debug)]
struct Inner {
    log: Log,
    state: Mutex<State>,
    changed: Condvar,
}

/// The group coordinator. Cheap to clone; the last clone dropped stops and joins its reaper
/// thread, so that everything it holds (the log included) is released when the drop returns.
#[derive(Debug, Clone)]
pub struct GroupCoordinator {
    inner: Arc<Inner>,
    /// Expires sessions and finishes overdue rebalances.
    _reaper: Arc<Ticker>,
}

fn check_member<'a>(group_id: &str, g: &'a mut Group, member: &str) -> Result<&'a mut Member> {
    g.members
        .get_mut(member)
        .ok_or_else(|| CoordError::UnknownMember {
            group: group_id.to_string(),
            member: member.to_string(),
        })
}

fn check_generation(group_id: &str, g: &Group, generation: i32) -> Result<()> {
    if generation != g.generation {
        return Err(CoordError::IllegalGeneration {
            group: group_id.to_string(),
            got: generation,
            current: g.generation,
        });
    }
    Ok(())
}

impl GroupCoordinator {
    /// Starts a coordinator over `log`, loading committed offsets from `__consumer_offsets`.
    pub fn start(log: &Log) -> Result<GroupCoordinator> {
        let offsets = OffsetStore::open(log)?;
        let inner = Arc::new(Inner {
            log: log.clone(),
            state: Mutex::new(State {
                groups: HashMap::new(),
                offsets,
                next_member: 0,
            }),
            changed: Condvar::new(),
        });
        let ticker = Ticker::spawn(
            "weir-group-reaper",
            REAPER_TICK,
            Arc::downgrade(&inner),
            reap,
        )
        .map_err(|e| CoordError::Invalid(format!("cannot start the reaper thread: {e}")))?;
        Ok(GroupCoordinator {
            inner,
            _reaper: Arc::new(ticker),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a change of any group (or a tick, which bounds a missed wake-up).
    fn wait_change<'a>(&self, st: MutexGuard<'a, State>) -> Result<MutexGuard<'a, State>> {
        Ok(self
            .inner
            .changed
            .wait_timeout(st, REAPER_TICK * 5)
            .unwrap_or_else(|e| e.into_inner())
            .0)
    }

    /// The log this coordinator serves.
    pub fn log(&self) -> &Log {
        &self.inner.log
    }

    /// Joins (or rejoins) a group; blocks until the rebalance completes.
    pub fn join_group(&self, req: JoinRequest) -> Result<JoinResponse> {
        if !(SESSION_TIMEOUT_MIN..=SESSION_TIMEOUT_MAX).contains(&req.session_timeout) {
            return Err(CoordError::Invalid(format!(
                "session timeout {:?} is outside {SESSION_TIMEOUT_MIN:?}..={SESSION_TIMEOUT_MAX:?}",
                req.session_timeout
            )));
        }
        if req.protocols.is_empty() {
            return Err(CoordError::Invalid(
                "a join needs at least one protocol".into(),
            ));
        }
        let mut st = self.lock();
        let now = Instant::now();
        let member_id = match &req.member_id {
            Some(id) => id.clone(),
            None => {
                st.next_member += 1;
                format!("{}-{}", req.client_id, st.next_member)
            }
        };
        let g = st
            .groups
            .entry(req.group.clone())
            .or_insert_with(Group::new);
        if g.state == GroupState::Dead {
            *g = Group::new();
        }
        if req.member_id.is_some() && !g.members.contains_key(&member_id) {
            return Err(CoordError::UnknownMember {
                group: req.group.clone(),
                member: member_id,
            });
        }
        if g.protocol_type
            .as_ref()
            .is_some_and(|t| t != &req.protocol_type)
            && !g.members.is_empty()
        {
            return Err(CoordError::InconsistentProtocol(req.group.clone()));
        }
        if !g.members.is_empty()
            && !g.members.values().any(|m| {
                m.protocols
                    .iter()
                    .any(|(p, _)| req.protocols.iter().any(|(q, _)| q == p))
            })
        {
            return Err(CoordError::InconsistentProtocol(req.group.clone()));
        }
        g.protocol_type = Some(req.protocol_type.clone());
        let member = g
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                client_id: req.client_id.clone(),
                session_timeout: req.session_timeout,
                rebalance_timeout: req.rebalance_timeout,
                protocols: Vec::new(),
                last_heartbeat: now,
                joined: false,
                in_join: false,
                assignment: None,
            });
        member.protocols = req.protocols.clone();
        member.session_timeout = req.session_timeout;
        member.rebalance_timeout = req.rebalance_timeout;
        member.last_heartbeat = now;
        member.joined = true;
        member.in_join = true;
        if g.state != GroupState::PreparingRebalance {
            g.prepare_rebalance(now);
            if let Some(m) = g.members.get_mut(&member_id) {
                m.joined = true;
            }
        }
        let start_generation = g.generation;
        g.try_complete_join(now);
        self.inner.changed.notify_all();
        loop {
            let g = st
                .groups
                .get_mut(&req.group)
                .ok_or_else(|| CoordError::UnknownGroup(req.group.clone()))?;
            let Some(m) = g.members.get_mut(&member_id) else {
                return Err(CoordError::UnknownMember {
                    group: req.group.clone(),
                    member: member_id,
                });
            };
            if g.generation > start_generation && g.state != GroupState::PreparingRebalance {
                m.in_join = false;
                m.last_heartbeat = Instant::now();
                let leader_id = g.leader.clone().unwrap_or_default();
                let protocol = g
                    .protocol
                    .clone()
                    .ok_or_else(|| CoordError::InconsistentProtocol(req.group.clone()))?;
                let members = if leader_id == member_id {
                    g.members
                        .iter()
                        .map(|(id, m)| {
                            let meta = m
                                .protocols
                                .iter()
                                .find(|(p, _)| *p == protocol)
                                .map(|(_, d)| d.clone())
                                .unwrap_or_default();
                            (id.clone(), meta)
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                return Ok(JoinResponse {
                    generation: g.generation,
                    member_id,
                    leader_id,
                    protocol,
                    members,
                });
            }
            st = self.wait_change(st)?;
        }
    }

    /// Completes a join: the leader passes every member's assignment; every member gets its own.
    /// Blocks (followers) until the leader's assignment arrives.
    pub fn sync_group(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        assignments: Option<Vec<(String, Vec<u8>)>>,
    ) -> Result<Vec<u8>> {
        let mut st = self.lock();
        {
            let g = st
                .groups
                .get_mut(group)
                .ok_or_else(|| CoordError::UnknownGroup(group.to_string()))?;
            check_member(group, g, member_id)?.last_heartbeat = Instant::now();
            check_generation(group, g, generation)?;
            if g.state == GroupState::PreparingRebalance {
                return Err(CoordError::RebalanceInProgress(group.to_string()));
            }
            if let (Some(list), true) = (assignments, g.leader.as_deref() == Some(member_id)) {
                if g.state == GroupState::CompletingRebalance {
                    let mut by_member: HashMap<String, Vec<u8>> = list.into_iter().collect();
                    for (id, m) in g.members.iter_mut() {
                        m.assignment = Some(by_member.remove(id).unwrap_or_default());
                    }
                    g.state = GroupState::Stable;
                    self.inner.changed.notify_all();
                }
            }
        }
        loop {
            let g = st
                .groups
                .get_mut(group)
                .ok_or_else(|| CoordError::UnknownGroup(group.to_string()))?;
            if g.generation != generation || g.state == GroupState::PreparingRebalance {
                return Err(CoordError::RebalanceInProgress(group.to_string()));
            }
            let m = check_member(group, g, member_id)?;
            m.last_heartbeat = Instant::now();
            if let Some(a) = &m.assignment {
                return Ok(a.clone());
            }
            st = self.wait_change(st)?;
        }
    }

    /// Keeps a member's session alive; `RebalanceInProgress` tells it to rejoin.
    pub fn heartbeat(&self, group: &str, generation: i32, member_id: &str) -> Result<()> {
        let mut st = self.lock();
        let g = st
            .groups
            .get_mut(group)
            .ok_or_else(|| CoordError::UnknownGroup(group.to_string()))?;
        check_member(group, g, member_id)?.last_heartbeat = Instant::now();
        if g.state == GroupState::PreparingRebalance {
            return Err(CoordError::RebalanceInProgress(group.to_string()));
        }
        check_generation(group, g, generation)
    }

    /// Leaves a group at once (no session timeout to wait for).
    pub fn leave_group(&self, group: &str, member_id: &str) -> Result<()> {
        let mut st = self.lock();
        let g = st
            .groups
            .get_mut(group)
            .ok_or_else(|| CoordError::UnknownGroup(group.to_string()))?;
        check_member(group, g, member_id)?;
        g.remove_member(member_id, Instant::now());
        self.inner.changed.notify_all();
        Ok(())
    }

    /// Commits offsets (the next offset to read per partition). With `generation` < 0 the
    /// commit is a standalone one, allowed only while the group has no members.
    pub fn commit_offsets(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        offsets: &[(TopicPartition, Offset, String)],
    ) -> Result<()> {
        let mut st = self.lock();
        let g = st
            .groups
            .entry(group.to_string())
            .or_insert_with(Group::new);
        if generation >= 0 || !g.members.is_empty() {
            check_member(group, g, member_id)?;
            if g.state == GroupState::PreparingRebalance {
                return Err(CoordError::RebalanceInProgress(group.to_string()));
            }
            check_generation(group, g, generation)?;
        }
        let now = self.inner.log.now();
        let entries: Vec<(TopicPartition, CommittedOffset)> = offsets
            .iter()
            .map(|(tp, o, meta)| {
                (
                    tp.clone(),
                    CommittedOffset {
                        offset: *o,
                        metadata: meta.clone(),
                        commit_time: now,
                    },
                )
            })
            .collect();
        let log = self.inner.log.clone();
        st.offsets.commit(&log, group, &entries)
    }

    /// Makes offsets that a committed transaction wrote visible to the group.
    pub(crate) fn apply_transactional_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, CommittedOffset)],
    ) {
        self.lock().offsets.apply_committed(group, offsets);
    }

    /// A group's committed offsets.
    pub fn committed(&self, group: &str) -> BTreeMap<TopicPartition, CommittedOffset> {
        self.lock()
            .offsets
            .group(group)
            .cloned()
            .unwrap_or_default()
    }

    /// Groups that have members or committed offsets.
    pub fn list_groups(&self) -> Vec<(String, GroupState)> {
        let st = self.lock();
        let mut out: BTreeMap<String, GroupState> = st
            .offsets
            .groups()
            .map(|g| (g.clone(), GroupState::Empty))
            .collect();
        for (id, g) in &st.groups {
            if g.state != GroupState::Dead && (g.state != GroupState::Empty || out.contains_key(id))
            {
                out.insert(id.clone(), g.state);
            }
        }
        out.into_iter().collect()
    }

    /// State, generation and members of a group.
    pub fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let st = self.lock();
        let Some(g) = st.groups.get(group) else {
            return if st.offsets.group(group).is_some() {
                Ok(GroupDescription {
                    group: group.to_string(),
                    state: GroupState::Empty,
                    generation: 0,
                    protocol: None,
                    members: Vec::new(),
                })
            } else {
                Err(CoordError::UnknownGroup(group.to_string()))
            };
        };
        Ok(GroupDescription {
            group: group.to_string(),
            state: g.state,
            generation: g.generation,
            protocol: g.protocol.clone(),
            members: g
                .members
                .iter()
                .map(|(id, m)| {
                    (
                        id.clone(),
                        m.client_id.clone(),
                        m.assignment.clone().unwrap_or_default(),
                    )
                })
                .collect(),
        })
    }

    /// Per partition of the topics the group committed to (plus `topics`): committed offset,
    /// log end, lag, and the owning member (read from the consumer-protocol assignments; a
    /// member whose assignment does not decode owns nothing here, with a warning).
    pub fn lag(&self, group: &str, topics: &[String]) -> Result<Vec<PartitionLag>> {
        let committed = self.committed(group);
        let mut owners: HashMap<(String, u32), String> = HashMap::new();
        if let Ok(d) = self.describe_group(group) {
            for (id, _, a) in &d.members {
                match crate::protocol::decode_assignment(a) {
                    Ok(tps) => owners.extend(tps.into_iter().map(|tp| (tp, id.clone()))),
                    Err(e) => {
                        tracing::warn!(group, member = %id, error = %e, "cannot read a member's assignment")
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

    fn require_empty(&self, st: &State, group: &str) -> Result<()> {
        if let Some(g) = st.groups.get(group) {
            if !g.members.is_empty() {
                return Err(CoordError::GroupNotEmpty {
                    group: group.to_string(),
                    members: g.members.len(),
                });
            }
        }
        Ok(())
    }

    /// Deletes a group and its committed offsets; refused while it has live members.
    pub fn delete_group(&self, group: &str) -> Result<()> {
        let mut st = self.lock();
        self.require_empty(&st, group)?;
        let log = self.inner.log.clone();
        st.offsets.delete_group(&log, group)?;
        if let Some(g) = st.groups.get_mut(group) {
            g.state = GroupState::Dead;
        }
        Ok(())
    }

    /// Deletes some committed offsets of a group (Kafka's OffsetDelete); refused while the
    /// group has live members, which may be consuming those partitions.
    pub fn delete_offsets(&self, group: &str, partitions: &[TopicPartition]) -> Result<()> {
        let mut st = self.lock();
        self.require_empty(&st, group)?;
        let log = self.inner.log.clone();
        st.offsets.delete_offsets(&log, group, partitions)
    }

    /// Sets a group's committed offsets for a topic (every partition); refused while the group
    /// has live members. `to` is `earliest`, `latest`, `offset:N` or `timestamp:MS`.
    pub fn reset_offsets(&self, group: &str, topic: &str, to: &str) -> Result<Vec<(u32, Offset)>> {
        let log = self.inner.log.clone();
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
                    let v: i64 = s[10..].parse().map_err(|_| {
                        CoordError::Invalid(format!("`{s}`: expected timestamp:MS"))
                    })?;
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
        let mut st = self.lock();
        self.require_empty(&st, group)?;
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
        st.offsets.commit(&log, group, &entries)?;
        Ok(targets)
    }
}

/// The reaper's tick: expires sessions and completes overdue rebalances.
fn reap(inner: &Inner) {
    let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let mut changed = false;
    for (id, g) in st.groups.iter_mut() {
        let expired: Vec<String> = g
            .members
            .iter()
            .filter(|(_, m)| !m.in_join && now.duration_since(m.last_heartbeat) > m.session_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for m in expired {
            tracing::info!(group = %id, member = %m, "session expired; removing the member");
            g.remove_member(&m, now);
            changed = true;
        }
        let before = (g.state, g.generation);
        g.try_complete_join(now);
        changed |= before != (g.state, g.generation);
    }
    drop(st);
    if changed {
        inner.changed.notify_all();
    }
}
