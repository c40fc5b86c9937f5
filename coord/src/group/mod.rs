//! [`GroupCoordinator`]: Kafka's classic consumer-group protocol over the embedded log.
//!
//! Per group: members with ids, a generation, a leader and a chosen assignment protocol, driven
//! through Kafka's states (`state.rs`). A join waits until the rebalance completes (every member
//! rejoined, or the rebalance timeout passed and stragglers were removed); the leader client
//! computes the assignment and hands it over in `sync_group`; `heartbeat` keeps a session alive
//! and tells members to rejoin. A reaper thread expires sessions and finishes overdue
//! rebalances. All time is the log's clock.
//!
//! Waiting is completion-based: each group has an [`Event`] notified on every change of that
//! group; `join_group_async`/`sync_group_async` register a listener, check, and await it, so a
//! network server waits for thousands of members without a thread each. `join_group` and
//! `sync_group` are the blocking façade over the same steps, for the engine's worker threads.
//!
//! Locking: one mutex per group (its state), a second per group serialising its offset commits
//! (append, then apply), and one for the in-memory committed offsets, held only to read or
//! apply. No lock is held across another group's work, and an offset commit's fsync holds no
//! lock any other group needs.
//!
//! Invariants: a request from another generation or an unknown member is refused with a typed
//! error, so a zombie can neither commit offsets nor act on an old assignment; every member of
//! one generation receives the leader's assignment for that generation, so no partition is
//! owned twice within a generation. Committed offsets go through [`OffsetStore`].

mod admin;
pub use admin::reset_targets;
mod state;
mod stored;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use event_listener::{Event, Listener};
use weir_log::{Log, Offset, Timestamp};

use crate::error::{CoordError, Result};
use crate::offsets::{CommittedOffset, OffsetStore, TopicPartition, OFFSETS_TOPIC};
use crate::ticker::Ticker;
use state::{Group, Member};

/// How often the reaper looks for expired sessions and overdue rebalances.
const REAPER_TICK: Duration = Duration::from_millis(20);
/// Session timeouts accepted (Kafka's broker defaults bound them the same way).
const SESSION_TIMEOUT_MIN: Duration = Duration::from_millis(100);
const SESSION_TIMEOUT_MAX: Duration = Duration::from_secs(1800);
/// A blocking waiter re-checks at least this often, bounding any missed wake-up.
const BLOCKING_RECHECK: Duration = Duration::from_millis(100);

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
    /// Where the member connects from (`/IP`, as Kafka shows it); empty for embedded members.
    pub client_host: String,
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
    /// The members' protocol type (`consumer` for consumers).
    pub protocol_type: Option<String>,
    /// Chosen protocol.
    pub protocol: Option<String>,
    /// Members in id order.
    pub members: Vec<MemberDescription>,
}

/// A member as `describe` shows it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// Client name.
    pub client_id: String,
    /// Where it connects from.
    pub client_host: String,
    /// Its metadata for the group's protocol (a subscription for consumers), as it sent it.
    pub metadata: Vec<u8>,
    /// Its assignment in this generation, as the leader sent it (empty before the sync).
    pub assignment: Vec<u8>,
}

/// The group of a `__consumer_offsets` key that holds group metadata.
pub(crate) fn stored_group_key(key: &[u8]) -> Option<String> {
    stored::decode_key(key)
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

/// One group: its state, the event its waiters listen to, and its commit order.
#[derive(Debug)]
struct Slot {
    group: Mutex<Group>,
    /// Notified on every change of this group's state (joins, syncs, leaves, expiries).
    changed: Event,
    /// Serialises this group's offset commits, so they reach the log and the in-memory map
    /// in the same order; other groups commit in parallel.
    commits: Mutex<()>,
}

impl Slot {
    fn new(group: Group) -> Slot {
        Slot {
            group: Mutex::new(group),
            changed: Event::new(),
            commits: Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Group> {
        self.group.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
struct Inner {
    log: Log,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    offsets: Mutex<OffsetStore>,
    next_member: AtomicU64,
    /// When this coordinator started, by the log's clock: part of every new member id.
    started: Timestamp,
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

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Where a join stands after registering: what the wait needs to recognise its completion.
#[derive(Debug)]
struct PendingJoin {
    slot: Arc<Slot>,
    group: String,
    member_id: String,
    start_generation: i32,
}

/// Clears a waiting member's "in join" mark if its join is abandoned (a client that
/// disconnected): its session clock runs again and the reaper can expire it.
struct JoinGuard<'a> {
    pending: &'a PendingJoin,
    log: &'a Log,
    done: bool,
}

/// Gives a member waiting in SyncGroup its session clock back when the wait ends, answered
/// or abandoned.
struct SyncGuard<'a> {
    slot: &'a Slot,
    member_id: &'a str,
    log: &'a Log,
}

impl Drop for SyncGuard<'_> {
    fn drop(&mut self) {
        let mut g = self.slot.lock();
        if let Some(m) = g.members.get_mut(self.member_id) {
            m.in_sync = false;
            m.last_heartbeat = self.log.now();
        }
    }
}

impl Drop for JoinGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut g = self.pending.slot.lock();
        if let Some(m) = g.members.get_mut(&self.pending.member_id) {
            m.in_join = false;
            m.last_heartbeat = self.log.now();
        }
    }
}

impl GroupCoordinator {
    /// Starts a coordinator over `log`, loading committed offsets from `__consumer_offsets`.
    pub fn start(log: &Log) -> Result<GroupCoordinator> {
        let mut offsets = OffsetStore::open(log)?;
        let now = log.now();
        let mut slots = HashMap::new();
        for (name, value) in offsets.take_group_metadata() {
            match stored::decode_value(&value, now) {
                Some(g) if g.state != GroupState::Dead => {
                    slots.insert(name, Arc::new(Slot::new(g)));
                }
                Some(_) => {}
                None => {
                    tracing::warn!(group = %name, "ignoring unreadable persisted group metadata")
                }
            }
        }
        let inner = Arc::new(Inner {
            log: log.clone(),
            slots: Mutex::new(slots),
            offsets: Mutex::new(offsets),
            next_member: AtomicU64::new(0),
            started: now,
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

    /// The log this coordinator serves.
    pub fn log(&self) -> &Log {
        &self.inner.log
    }

    fn now(&self) -> Timestamp {
        self.inner.log.now()
    }

    fn offsets(&self) -> MutexGuard<'_, OffsetStore> {
        self.inner.offsets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A group's slot, created on first use.
    fn slot(&self, group: &str) -> Arc<Slot> {
        let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .entry(group.to_string())
            .or_insert_with(|| {
                Arc::new(Slot {
                    group: Mutex::new(Group::new()),
                    changed: Event::new(),
                    commits: Mutex::new(()),
                })
            })
            .clone()
    }

    /// A group's slot if it exists.
    fn existing(&self, group: &str) -> Result<Arc<Slot>> {
        self.inner
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(group)
            .cloned()
            .ok_or_else(|| CoordError::UnknownGroup(group.to_string()))
    }

    /// Joins (or rejoins) a group; blocks until the rebalance completes.
    pub fn join_group(&self, req: JoinRequest) -> Result<JoinResponse> {
        let pending = self.join_register(req)?;
        let mut guard = JoinGuard {
            pending: &pending,
            log: &self.inner.log,
            done: false,
        };
        loop {
            let listener = pending.slot.changed.listen();
            if let Some(r) = self.join_poll(&pending) {
                guard.done = true;
                return r;
            }
            listener.wait_timeout(BLOCKING_RECHECK);
        }
    }

    /// Joins (or rejoins) a group; resolves when the rebalance completes. Dropping the future
    /// abandons the join (the member's session clock runs again).
    pub async fn join_group_async(&self, req: JoinRequest) -> Result<JoinResponse> {
        let pending = self.join_register(req)?;
        let mut guard = JoinGuard {
            pending: &pending,
            log: &self.inner.log,
            done: false,
        };
        loop {
            let listener = pending.slot.changed.listen();
            if let Some(r) = self.join_poll(&pending) {
                guard.done = true;
                return r;
            }
            listener.await;
        }
    }

    /// Validates a join and records the member as joining; starts a rebalance if needed.
    fn join_register(&self, req: JoinRequest) -> Result<PendingJoin> {
        if !(SESSION_TIMEOUT_MIN..=SESSION_TIMEOUT_MAX).contains(&req.session_timeout) {
            return Err(CoordError::InvalidSessionTimeout {
                got: req.session_timeout,
                min: SESSION_TIMEOUT_MIN,
                max: SESSION_TIMEOUT_MAX,
            });
        }
        if req.group.is_empty() || req.group.len() > crate::offsets::GROUP_ID_MAX_BYTES {
            return Err(CoordError::InvalidGroupId {
                len: req.group.len(),
                max: crate::offsets::GROUP_ID_MAX_BYTES,
            });
        }
        if req.protocols.is_empty() {
            return Err(CoordError::Invalid(
                "a join needs at least one protocol".into(),
            ));
        }
        let now = self.now();
        let member_id = match &req.member_id {
            Some(id) => id.clone(),
            None => {
                // The coordinator's start time keeps ids unique across restarts (members of
                // restored groups keep theirs).
                let n = self.inner.next_member.fetch_add(1, Ordering::Relaxed) + 1;
                format!("{}-{}-{n}", req.client_id, self.inner.started.0)
            }
        };
        let slot = self.slot(&req.group);
        let mut g = slot.lock();
        if g.state == GroupState::Dead {
            *g = Group::new();
        }
        if req.member_id.is_some() && !g.members.contains_key(&member_id) {
            return Err(CoordError::UnknownMember {
                group: req.group.clone(),
                member: member_id,
            });
        }
        if !g.members.is_empty()
            && (g
                .protocol_type
                .as_ref()
                .is_some_and(|t| t != &req.protocol_type)
                || !g.members.values().any(|m| {
                    m.protocols
                        .iter()
                        .any(|(p, _)| req.protocols.iter().any(|(q, _)| q == p))
                }))
        {
            return Err(CoordError::InconsistentProtocol(req.group.clone()));
        }
        g.protocol_type = Some(req.protocol_type.clone());
        let member = g
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                session_timeout_ms: 0,
                rebalance_timeout_ms: 0,
                protocols: Vec::new(),
                last_heartbeat: now,
                joined: false,
                in_join: false,
                in_sync: false,
                assignment: None,
            });
        member.protocols = req.protocols;
        member.session_timeout_ms = ms(req.session_timeout);
        member.rebalance_timeout_ms = ms(req.rebalance_timeout);
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
        stored::persist(&self.inner.log, &req.group, &g);
        drop(g);
        slot.changed.notify(usize::MAX);
        Ok(PendingJoin {
            slot,
            group: req.group,
            member_id,
            start_generation,
        })
    }

    /// The join's response once its rebalance completed; `None` while it is still going.
    fn join_poll(&self, p: &PendingJoin) -> Option<Result<JoinResponse>> {
        let mut g = p.slot.lock();
        let generation = g.generation;
        let done = generation > p.start_generation && g.state != GroupState::PreparingRebalance;
        let leader_id = g.leader.clone().unwrap_or_default();
        let protocol = g.protocol.clone();
        let Some(m) = g.members.get_mut(&p.member_id) else {
            return Some(Err(CoordError::UnknownMember {
                group: p.group.clone(),
                member: p.member_id.clone(),
            }));
        };
        if !done {
            return None;
        }
        m.in_join = false;
        m.last_heartbeat = self.now();
        let Some(protocol) = protocol else {
            return Some(Err(CoordError::InconsistentProtocol(p.group.clone())));
        };
        let members = if leader_id == p.member_id {
            g.members
                .iter()
                .map(|(id, m)| {
                    let meta = m
                        .protocols
                        .iter()
                        .find(|(name, _)| *name == protocol)
                        .map(|(_, d)| d.clone())
                        .unwrap_or_default();
                    (id.clone(), meta)
                })
                .collect()
        } else {
            Vec::new()
        };
        Some(Ok(JoinResponse {
            generation,
            member_id: p.member_id.clone(),
            leader_id,
            protocol,
            members,
        }))
    }

    /// Completes a join: the leader passes every member's assignment; every member gets its
    /// own. Blocks (followers) until the leader's assignment arrives.
    pub fn sync_group(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        assignments: Option<Vec<(String, Vec<u8>)>>,
    ) -> Result<Vec<u8>> {
        let slot = self.sync_register(group, generation, member_id, assignments)?;
        let _waiting = SyncGuard {
            slot: &slot,
            member_id,
            log: &self.inner.log,
        };
        loop {
            let listener = slot.changed.listen();
            if let Some(r) = self.sync_poll(&slot, group, generation, member_id) {
                return r;
            }
            listener.wait_timeout(BLOCKING_RECHECK);
        }
    }

    /// [`GroupCoordinator::sync_group`], resolving when the assignment is there.
    pub async fn sync_group_async(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        assignments: Option<Vec<(String, Vec<u8>)>>,
    ) -> Result<Vec<u8>> {
        let slot = self.sync_register(group, generation, member_id, assignments)?;
        let _waiting = SyncGuard {
            slot: &slot,
            member_id,
            log: &self.inner.log,
        };
        loop {
            let listener = slot.changed.listen();
            if let Some(r) = self.sync_poll(&slot, group, generation, member_id) {
                return r;
            }
            listener.await;
        }
    }

    fn sync_register(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        assignments: Option<Vec<(String, Vec<u8>)>>,
    ) -> Result<Arc<Slot>> {
        let slot = self.existing(group)?;
        let now = self.now();
        let mut g = slot.lock();
        check_member(group, &mut g, member_id)?.last_heartbeat = now;
        check_generation(group, &g, generation)?;
        if g.state == GroupState::PreparingRebalance {
            return Err(CoordError::RebalanceInProgress(group.to_string()));
        }
        check_member(group, &mut g, member_id)?.in_sync = true;
        let is_leader = g.leader.as_deref() == Some(member_id);
        let mut assigned = false;
        if let (Some(list), true) = (assignments, is_leader) {
            if g.state == GroupState::CompletingRebalance {
                let mut by_member: HashMap<String, Vec<u8>> = list.into_iter().collect();
                for (id, m) in g.members.iter_mut() {
                    m.assignment = Some(by_member.remove(id).unwrap_or_default());
                }
                g.state = GroupState::Stable;
                assigned = true;
                stored::persist(&self.inner.log, group, &g);
            }
        }
        drop(g);
        if assigned {
            slot.changed.notify(usize::MAX);
        }
        Ok(slot)
    }

    fn sync_poll(
        &self,
        slot: &Slot,
        group: &str,
        generation: i32,
        member_id: &str,
    ) -> Option<Result<Vec<u8>>> {
        let now = self.now();
        let mut g = slot.lock();
        if g.generation != generation || g.state == GroupState::PreparingRebalance {
            return Some(Err(CoordError::RebalanceInProgress(group.to_string())));
        }
        let m = match check_member(group, &mut g, member_id) {
            Ok(m) => m,
            Err(e) => return Some(Err(e)),
        };
        m.last_heartbeat = now;
        m.assignment.clone().map(Ok)
    }

    /// Keeps a member's session alive; `RebalanceInProgress` tells it to rejoin.
    pub fn heartbeat(&self, group: &str, generation: i32, member_id: &str) -> Result<()> {
        let slot = self.existing(group)?;
        let now = self.now();
        let mut g = slot.lock();
        check_member(group, &mut g, member_id)?.last_heartbeat = now;
        if g.state == GroupState::PreparingRebalance {
            return Err(CoordError::RebalanceInProgress(group.to_string()));
        }
        check_generation(group, &g, generation)
    }

    /// Leaves a group at once (no session timeout to wait for).
    pub fn leave_group(&self, group: &str, member_id: &str) -> Result<()> {
        let slot = self.existing(group)?;
        let now = self.now();
        let mut g = slot.lock();
        check_member(group, &mut g, member_id)?;
        g.remove_member(member_id, now);
        stored::persist(&self.inner.log, group, &g);
        drop(g);
        slot.changed.notify(usize::MAX);
        Ok(())
    }

    /// Checks that `member_id` is in `group` at `generation` (KIP-447: transactional offset
    /// commits carry the consumer's generation, so a zombie's commit is refused). A negative
    /// generation (an older client that sends none) is not checked.
    pub fn check_member_generation(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
    ) -> Result<()> {
        if generation < 0 {
            return Ok(());
        }
        let slot = self.existing(group)?;
        let mut g = slot.lock();
        check_member(group, &mut g, member_id)?;
        check_generation(group, &g, generation)
    }

    /// Commits offsets (the next offset to read per partition). With `generation` < 0 the
    /// commit is a standalone one, allowed only while the group has no members. The append's
    /// fsync holds only this group's commit lock.
    pub fn commit_offsets(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        offsets: &[(TopicPartition, Offset, String)],
    ) -> Result<()> {
        crate::offsets::check_storable(group, offsets)?;
        let slot = self.slot(group);
        {
            let mut g = slot.lock();
            if generation >= 0 || !g.members.is_empty() {
                check_member(group, &mut g, member_id)?;
                // As in Kafka: a member of the current generation may commit while the group
                // prepares a rebalance (clients commit what they processed before rejoining);
                // between join and sync the generation's assignment is not known yet.
                if g.state == GroupState::CompletingRebalance {
                    return Err(CoordError::RebalanceInProgress(group.to_string()));
                }
                check_generation(group, &g, generation)?;
            }
        }
        let now = self.now();
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
        self.write_offsets(&slot, group, &entries)
    }

    /// Appends committed offsets (durably) and then makes them visible, in this group's
    /// commit order.
    fn write_offsets(
        &self,
        slot: &Slot,
        group: &str,
        entries: &[(TopicPartition, CommittedOffset)],
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let _order = slot.commits.lock().unwrap_or_else(|e| e.into_inner());
        let records = OffsetStore::records(group, entries);
        self.inner
            .log
            .append(OFFSETS_TOPIC, OffsetStore::partition_of(group), &records)?;
        self.offsets().apply_committed(group, entries);
        Ok(())
    }

    /// Makes offsets that a committed transaction wrote visible to the group.
    pub(crate) fn apply_transactional_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, CommittedOffset)],
    ) {
        self.offsets().apply_committed(group, offsets);
    }

    /// A group's committed offsets.
    pub fn committed(&self, group: &str) -> BTreeMap<TopicPartition, CommittedOffset> {
        self.offsets().group(group).cloned().unwrap_or_default()
    }
}

/// The reaper's tick: expires sessions and completes overdue rebalances, group by group.
fn reap(inner: &Inner) {
    let now = inner.log.now();
    let slots: Vec<(String, Arc<Slot>)> = inner
        .slots
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (id, slot) in slots {
        let mut g = slot.lock();
        let mut changed = false;
        for m in g.expired(now) {
            tracing::info!(group = %id, member = %m, "session expired; removing the member");
            g.remove_member(&m, now);
            changed = true;
        }
        changed |= g.try_complete_join(now);
        if changed {
            stored::persist(&inner.log, &id, &g);
        }
        drop(g);
        if changed {
            slot.changed.notify(usize::MAX);
        }
    }
}
