//! [`Consumer`]: the embedded group consumer. It subscribes to topics under a group id, takes
//! part in rebalances (the leader runs the assignor), polls records from its partitions,
//! commits offsets (manually or on an interval), and supports seek, pause/resume, rebalance
//! callbacks, `auto.offset.reset` and both isolation levels.
//!
//! A background thread heartbeats, so a consumer busy between polls keeps its session; a
//! heartbeat that reports a rebalance makes the next `poll` rejoin. Revoked partitions get a
//! final auto-commit (when enabled) before they are given up.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_log::{Header, Isolation, Log, Offset, PartitionId, Timestamp};

use crate::assignor::{Assignor, Subscriptions};
use crate::error::{CoordError, Result};
use crate::group::{GroupCoordinator, JoinRequest};
use crate::protocol::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription,
};

/// What to do for a partition without a committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// Start at the log start.
    Earliest,
    /// Start at the end (only new records).
    Latest,
    /// Fail with `NoOffset`.
    None,
}

/// Consumer settings (Kafka's names in the docs).
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// `group.id`.
    pub group: String,
    /// `client.id`.
    pub client_id: String,
    /// `session.timeout.ms`.
    pub session_timeout: Duration,
    /// `max.poll.interval.ms` in its role as the rebalance timeout.
    pub rebalance_timeout: Duration,
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
    /// `enable.auto.commit` with `auto.commit.interval.ms`.
    pub auto_commit_interval: Option<Duration>,
    /// `auto.offset.reset`.
    pub auto_offset_reset: OffsetReset,
    /// `isolation.level`.
    pub isolation: Isolation,
    /// `partition.assignment.strategy`, preferred first.
    pub assignors: Vec<Assignor>,
    /// `max.poll.records`.
    pub max_poll_records: usize,
    /// Bytes fetched per partition read.
    pub fetch_max_bytes: usize,
}

impl ConsumerConfig {
    /// Defaults for a group (Kafka's, with a shorter heartbeat for a single process).
    pub fn new(group: impl Into<String>) -> ConsumerConfig {
        ConsumerConfig {
            group: group.into(),
            client_id: "weir-consumer".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_millis(300),
            auto_commit_interval: Some(Duration::from_secs(5)),
            auto_offset_reset: OffsetReset::Latest,
            isolation: Isolation::ReadUncommitted,
            assignors: vec![Assignor::Range, Assignor::RoundRobin],
            max_poll_records: 500,
            fetch_max_bytes: 1024 * 1024,
        }
    }
}

/// A record handed to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: Offset,
    /// Timestamp.
    pub timestamp: Timestamp,
    /// Key.
    pub key: Option<Bytes>,
    /// Value (`None`: tombstone).
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<Header>,
}

/// Told about partitions given up and received in a rebalance.
pub trait RebalanceListener: Send {
    /// Before partitions are given up (after the final auto-commit).
    fn on_revoked(&mut self, partitions: &[(String, u32)]);
    /// After partitions are received (positions are set).
    fn on_assigned(&mut self, partitions: &[(String, u32)]);
}

#[derive(Debug, Default)]
struct MemberState {
    member_id: Option<String>,
    generation: i32,
    needs_rejoin: bool,
}

/// An embedded group consumer.
pub struct Consumer {
    coord: GroupCoordinator,
    log: Log,
    config: ConsumerConfig,
    topics: Vec<String>,
    member: Arc<Mutex<MemberState>>,
    assignment: Vec<(String, u32)>,
    positions: HashMap<(String, u32), Offset>,
    paused: HashSet<(String, u32)>,
    next_partition: usize,
    last_commit: Instant,
    listener: Option<Box<dyn RebalanceListener>>,
    heartbeat: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group", &self.config.group)
            .field("topics", &self.topics)
            .field("assignment", &self.assignment)
            .finish()
    }
}

impl Consumer {
    /// A consumer in `config.group` (it joins on the first `poll`).
    pub fn new(coord: &GroupCoordinator, config: ConsumerConfig) -> Consumer {
        Consumer {
            coord: coord.clone(),
            log: coord.log().clone(),
            config,
            topics: Vec::new(),
            member: Arc::new(Mutex::new(MemberState::default())),
            assignment: Vec::new(),
            positions: HashMap::new(),
            paused: HashSet::new(),
            next_partition: 0,
            last_commit: Instant::now(),
            listener: None,
            heartbeat: None,
        }
    }

    /// Subscribes to topics (replacing the subscription); the next poll rebalances.
    pub fn subscribe(&mut self, topics: &[&str]) -> Result<()> {
        for t in topics {
            self.log.partition_count(t)?;
        }
        self.topics = topics.iter().map(|t| t.to_string()).collect();
        self.member().needs_rejoin = true;
        Ok(())
    }

    /// Sets the rebalance listener.
    pub fn set_rebalance_listener(&mut self, listener: Box<dyn RebalanceListener>) {
        self.listener = Some(listener);
    }

    fn member(&self) -> std::sync::MutexGuard<'_, MemberState> {
        self.member.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The partitions assigned now.
    pub fn assignment(&self) -> &[(String, u32)] {
        &self.assignment
    }

    /// The member id and generation (after the first poll).
    pub fn membership(&self) -> (Option<String>, i32) {
        let m = self.member();
        (m.member_id.clone(), m.generation)
    }

    /// The next offset this consumer will read from a partition.
    pub fn position(&self, topic: &str, partition: u32) -> Option<Offset> {
        self.positions.get(&(topic.to_string(), partition)).copied()
    }

    /// Moves the read position of an assigned partition.
    pub fn seek(&mut self, topic: &str, partition: u32, offset: Offset) -> Result<()> {
        let tp = (topic.to_string(), partition);
        if !self.assignment.contains(&tp) {
            return Err(CoordError::Invalid(format!(
                "{topic}/{partition} is not assigned to this consumer"
            )));
        }
        self.positions.insert(tp, offset);
        Ok(())
    }

    /// Stops fetching from partitions (they stay assigned).
    pub fn pause(&mut self, partitions: &[(String, u32)]) {
        self.paused.extend(partitions.iter().cloned());
    }

    /// Resumes fetching.
    pub fn resume(&mut self, partitions: &[(String, u32)]) {
        for p in partitions {
            self.paused.remove(p);
        }
    }

    /// Returns up to `max_poll_records` records, waiting up to `timeout` for some. Joins or
    /// rejoins the group first when needed, and auto-commits when due.
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.member().needs_rejoin || self.member().member_id.is_none() {
                self.rejoin()?;
            }
            self.maybe_auto_commit()?;
            let records = self.fetch()?;
            let now = Instant::now();
            if !records.is_empty() || now >= deadline {
                return Ok(records);
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(10)));
        }
    }

    fn fetch(&mut self) -> Result<Vec<ConsumerRecord>> {
        let mut out = Vec::new();
        let n = self.assignment.len();
        for i in 0..n {
            if out.len() >= self.config.max_poll_records {
                break;
            }
            let tp = self.assignment[(self.next_partition + i) % n].clone();
            if self.paused.contains(&tp) {
                continue;
            }
            let Some(&at) = self.positions.get(&tp) else {
                continue;
            };
            let fetch = self.log.read_isolated(
                &tp.0,
                PartitionId(tp.1),
                at,
                self.config.fetch_max_bytes,
                self.config.isolation,
            )?;
            let mut next = at;
            for r in fetch.records() {
                if out.len() >= self.config.max_poll_records {
                    break;
                }
                let r = r.map_err(weir_log::LogError::from)?;
                next = r.offset.plus(1);
                out.push(ConsumerRecord {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    offset: r.offset,
                    timestamp: r.timestamp,
                    key: r.key.map(Bytes::copy_from_slice),
                    value: r.value.map(Bytes::copy_from_slice),
                    headers: r.to_record().headers,
                });
            }
            // Past control batches and aborted records too, when the whole fetch was used.
            if out.len() < self.config.max_poll_records {
                next = next.max(fetch.next_offset());
                if self.config.isolation == Isolation::ReadCommitted {
                    next = next.min(fetch.last_stable.max(at));
                }
            }
            self.positions.insert(tp, next);
        }
        self.next_partition = self.next_partition.wrapping_add(1);
        Ok(out)
    }

    fn maybe_auto_commit(&mut self) -> Result<()> {
        if let Some(every) = self.config.auto_commit_interval {
            if self.last_commit.elapsed() >= every {
                match self.commit() {
                    Ok(()) | Err(CoordError::RebalanceInProgress(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Commits the current positions of every assigned partition.
    pub fn commit(&mut self) -> Result<()> {
        let (member_id, generation) = {
            let m = self.member();
            (m.member_id.clone().unwrap_or_default(), m.generation)
        };
        let offsets: Vec<((String, u32), Offset, String)> = self
            .assignment
            .iter()
            .filter_map(|tp| {
                self.positions
                    .get(tp)
                    .map(|o| (tp.clone(), *o, String::new()))
            })
            .collect();
        self.last_commit = Instant::now();
        self.coord
            .commit_offsets(&self.config.group, generation, &member_id, &offsets)
    }

    fn rejoin(&mut self) -> Result<()> {
        if !self.assignment.is_empty() {
            if self.config.auto_commit_interval.is_some() {
                // Best effort: a stale generation cannot commit, and that is the point.
                let _ = self.commit();
            }
            if let Some(l) = self.listener.as_mut() {
                l.on_revoked(&self.assignment);
            }
            self.assignment.clear();
            self.positions.clear();
        }
        self.ensure_heartbeat();
        let protocols: Vec<(String, Vec<u8>)> = self
            .config
            .assignors
            .iter()
            .map(|a| (a.name().to_string(), encode_subscription(&self.topics)))
            .collect();
        let mut member_id = self.member().member_id.clone();
        let joined = loop {
            let req = JoinRequest {
                group: self.config.group.clone(),
                member_id: member_id.clone(),
                client_id: self.config.client_id.clone(),
                client_host: String::new(),
                session_timeout: self.config.session_timeout,
                rebalance_timeout: self.config.rebalance_timeout,
                protocol_type: "consumer".into(),
                protocols: protocols.clone(),
            };
            match self.coord.join_group(req) {
                Err(CoordError::UnknownMember { .. }) if member_id.is_some() => member_id = None,
                other => break other?,
            }
        };
        {
            let mut m = self.member();
            m.member_id = Some(joined.member_id.clone());
            m.generation = joined.generation;
        }
        let assignments = if joined.leader_id == joined.member_id {
            Some(self.run_assignor(&joined.protocol, &joined.members)?)
        } else {
            None
        };
        let mine = match self.coord.sync_group(
            &self.config.group,
            joined.generation,
            &joined.member_id,
            assignments,
        ) {
            Ok(a) => a,
            Err(CoordError::RebalanceInProgress(_)) => {
                self.member().needs_rejoin = true;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.assignment = decode_assignment(&mine)?;
        let committed = self.coord.committed(&self.config.group);
        for tp in &self.assignment {
            let pid = PartitionId(tp.1);
            let start = match committed.get(tp) {
                Some(c) => c.offset.max(self.log.earliest_offset(&tp.0, pid)?),
                None => match self.config.auto_offset_reset {
                    OffsetReset::Earliest => self.log.earliest_offset(&tp.0, pid)?,
                    OffsetReset::Latest => self.log.latest_offset(&tp.0, pid)?,
                    OffsetReset::None => {
                        return Err(CoordError::NoOffset {
                            group: self.config.group.clone(),
                            topic: tp.0.clone(),
                            partition: tp.1,
                        })
                    }
                },
            };
            self.positions.insert(tp.clone(), start);
        }
        self.member().needs_rejoin = false;
        if let Some(l) = self.listener.as_mut() {
            l.on_assigned(&self.assignment);
        }
        Ok(())
    }

    fn run_assignor(
        &self,
        protocol: &str,
        members: &[(String, Vec<u8>)],
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let assignor = Assignor::from_name(protocol).ok_or_else(|| {
            CoordError::Invalid(format!("unknown assignment protocol `{protocol}`"))
        })?;
        let subs: Subscriptions = members
            .iter()
            .map(|(id, meta)| Ok((id.clone(), decode_subscription(meta)?)))
            .collect::<Result<_>>()?;
        let mut partitions = BTreeMap::new();
        for topics in subs.values() {
            for t in topics {
                if let Ok(n) = self.log.partition_count(t) {
                    partitions.insert(t.clone(), n);
                }
            }
        }
        Ok(assignor
            .assign(&subs, &partitions)
            .into_iter()
            .map(|(m, tps)| (m, encode_assignment(&tps)))
            .collect())
    }

    fn ensure_heartbeat(&mut self) {
        if self.heartbeat.is_some() {
            return;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (coord, member, group) = (
            self.coord.clone(),
            self.member.clone(),
            self.config.group.clone(),
        );
        let interval = self.config.heartbeat_interval;
        let stop2 = stop.clone();
        let handle = std::thread::spawn(move || {
            while !stop2.load(Ordering::Acquire) {
                std::thread::sleep(interval);
                let (id, generation, waiting) = {
                    let m = member.lock().unwrap_or_else(|e| e.into_inner());
                    (m.member_id.clone(), m.generation, m.needs_rejoin)
                };
                let Some(id) = id else { continue };
                if waiting {
                    continue;
                }
                match coord.heartbeat(&group, generation, &id) {
                    Ok(()) => {}
                    Err(CoordError::UnknownMember { .. }) => {
                        let mut m = member.lock().unwrap_or_else(|e| e.into_inner());
                        m.member_id = None;
                        m.needs_rejoin = true;
                    }
                    Err(_) => {
                        member
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .needs_rejoin = true
                    }
                }
            }
        });
        self.heartbeat = Some((stop, handle));
    }

    fn stop_heartbeat(&mut self) {
        if let Some((stop, handle)) = self.heartbeat.take() {
            stop.store(true, Ordering::Release);
            let _ = handle.join();
        }
    }

    /// Stops heartbeating without leaving, as a crashed process would: the group notices at
    /// the session timeout. (For failure tests and drills.)
    pub fn abandon(mut self) {
        self.stop_heartbeat();
        self.member().member_id = None;
    }

    /// Commits (with auto-commit on) and leaves the group at once.
    pub fn close(mut self) -> Result<()> {
        self.leave()
    }

    fn leave(&mut self) -> Result<()> {
        self.stop_heartbeat();
        if self.config.auto_commit_interval.is_some() && !self.assignment.is_empty() {
            let _ = self.commit();
        }
        let id = self.member().member_id.take();
        if let Some(id) = id {
            match self.coord.leave_group(&self.config.group, &id) {
                Ok(())
                | Err(CoordError::UnknownMember { .. })
                | Err(CoordError::UnknownGroup(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.assignment.clear();
        Ok(())
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Err(e) = self.leave() {
            tracing::warn!(group = %self.config.group, error = %e, "leaving the group on drop failed");
        }
    }
}
