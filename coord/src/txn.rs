//! [`TransactionCoordinator`]: Kafka-style transactions over the log.
//!
//! A `transactional.id` maps to a producer id; `init_transactions` finishes whatever the last
//! instance left (completes a decided transaction, aborts an undecided one) and bumps the
//! epoch, fencing any older instance. A transaction adds partitions (and a group's offsets
//! partition), is decided (`PrepareCommit` / `PrepareAbort`, persisted in the compacted
//! `__transaction_state` topic: the commit point), then markers are written to every partition
//! it touched — in parallel, so a commit costs one group-committed fsync per partition — and
//! the transaction is completed. Transactions older than their timeout are aborted (with an
//! epoch bump that fences their producer). On start, decided transactions are completed and
//! undecided ones aborted before anything else reads the log.
//!
//! Offsets sent with `send_offsets_to_transaction` are written to `__consumer_offsets` as
//! transactional records, so they commit or abort atomically with the outputs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_log::{
    BatchBuilder, Log, LogError, Offset, PartitionId, ProducerFields, Record, TopicConfig,
};

use crate::error::{CoordError, Result};
use crate::group::GroupCoordinator;
use crate::offsets::{
    encode_key, encode_value, CommittedOffset, OffsetStore, TopicPartition, OFFSETS_TOPIC,
};
use crate::ticker::Ticker;

/// The internal topic of transaction states.
pub const TXN_STATE_TOPIC: &str = "__transaction_state";
const TXN_STATE_PARTITIONS: u32 = 4;
/// Version 2 adds each offset's metadata; version 1 values (no metadata) are still read.
const FORMAT_VERSION: u16 = 2;
const FORMAT_VERSION_NO_METADATA: u16 = 1;
/// How often timed-out transactions are looked for.
const TIMEOUT_TICK: Duration = Duration::from_millis(50);
/// How long after a failed attempt the tick finishes a decided transaction again: the log
/// failed (a full disk, say), so retrying every tick would only fill the state topic.
const FINISH_RETRY: Duration = Duration::from_secs(1);

/// Where a transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    /// No transaction open.
    Empty,
    /// Open: partitions are being written.
    Ongoing,
    /// Decided to commit; markers being written.
    PrepareCommit,
    /// Decided to abort; markers being written.
    PrepareAbort,
    /// Committed on every partition.
    CompleteCommit,
    /// Aborted on every partition.
    CompleteAbort,
}

impl TxnState {
    fn code(self) -> u8 {
        self as u8
    }
    fn from_code(c: u8) -> Option<TxnState> {
        Some(match c {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            _ => return None,
        })
    }
}

/// A transactional id's state, as persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMeta {
    /// Producer id.
    pub producer_id: i64,
    /// Current epoch.
    pub epoch: i16,
    /// State.
    pub state: TxnState,
    /// Transaction timeout.
    pub timeout: Duration,
    /// Partitions the open transaction wrote.
    pub partitions: BTreeSet<TopicPartition>,
    /// Group offsets written inside the open transaction, with their metadata (applied when
    /// it commits).
    pub offsets: Vec<(String, TopicPartition, Offset, String)>,
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u16).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8], usize);
impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.0.get(self.1..self.1 + n)?;
        self.1 += n;
        Some(s)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        Some(std::str::from_utf8(self.take(n)?).ok()?.to_string())
    }
}

impl TxnMeta {
    /// Encodes the persisted value (see docs/format.md).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        b.extend_from_slice(&self.producer_id.to_be_bytes());
        b.extend_from_slice(&self.epoch.to_be_bytes());
        b.push(self.state.code());
        b.extend_from_slice(&(self.timeout.as_millis() as i64).to_be_bytes());
        b.extend_from_slice(&(self.partitions.len() as u32).to_be_bytes());
        for (t, p) in &self.partitions {
            put_str(&mut b, t);
            b.extend_from_slice(&p.to_be_bytes());
        }
        b.extend_from_slice(&(self.offsets.len() as u32).to_be_bytes());
        for (g, (t, p), o, m) in &self.offsets {
            put_str(&mut b, g);
            put_str(&mut b, t);
            b.extend_from_slice(&p.to_be_bytes());
            b.extend_from_slice(&o.0.to_be_bytes());
            put_str(&mut b, m);
        }
        b
    }

    /// Decodes a persisted value.
    pub fn decode(b: &[u8]) -> Option<TxnMeta> {
        let mut r = Reader(b, 0);
        let version = r.u16()?;
        if version != FORMAT_VERSION && version != FORMAT_VERSION_NO_METADATA {
            return None;
        }
        let producer_id = r.i64()?;
        let epoch = i16::from_be_bytes(r.take(2)?.try_into().ok()?);
        let state = TxnState::from_code(r.take(1)?[0])?;
        let timeout = Duration::from_millis(u64::try_from(r.i64()?).ok()?);
        let mut partitions = BTreeSet::new();
        for _ in 0..r.u32()? {
            partitions.insert((r.str()?, r.u32()?));
        }
        let mut offsets = Vec::new();
        for _ in 0..r.u32()? {
            let (g, tp, o) = (r.str()?, (r.str()?, r.u32()?), Offset(r.i64()?));
            let m = if version == FORMAT_VERSION {
                r.str()?
            } else {
                String::new()
            };
            offsets.push((g, tp, o, m));
        }
        (r.1 == b.len()).then_some(TxnMeta {
            producer_id,
            epoch,
            state,
            timeout,
            partitions,
            offsets,
        })
    }
}

#[derive(Debug, Clone)]
struct Txn {
    meta: TxnMeta,
    started: Option<Instant>,
    /// A decided transaction whose markers failed: when the timeout tick tries again.
    retry_at: Option<Instant>,
}

#[derive(Debug)]
struct Inner {
    log: Log,
    groups: GroupCoordinator,
    txns: Mutex<HashMap<String, Txn>>,
    /// Fault injection for crash tests: stop a commit after this many markers.
    crash_after_markers: AtomicUsize,
}

/// The transaction coordinator. Cheap to clone; the last clone dropped stops and joins its
/// timeout thread.
#[derive(Debug, Clone)]
pub struct TransactionCoordinator {
    inner: Arc<Inner>,
    /// Aborts timed-out transactions.
    _timeouts: Arc<Ticker>,
}

fn fenced(meta: &TxnMeta, epoch: i16) -> CoordError {
    CoordError::Log(LogError::ProducerFenced {
        producer_id: meta.producer_id,
        epoch,
        current_epoch: meta.epoch,
    })
}

/// Starts both coordinators in the order recovery needs: transactions left decided or open by
/// the last run are finished first, then committed offsets are loaded.
pub fn start(log: &Log) -> Result<(GroupCoordinator, TransactionCoordinator)> {
    let states = TransactionCoordinator::load_and_recover(log)?;
    let groups = GroupCoordinator::start(log)?;
    let txns = TransactionCoordinator::with_state(log, &groups, states)?;
    Ok((groups, txns))
}

impl TransactionCoordinator {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Txn>> {
        self.inner.txns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads `__transaction_state` and finishes every transaction the last run left decided
    /// (markers, then complete) or open (abort).
    fn load_and_recover(log: &Log) -> Result<HashMap<String, TxnMeta>> {
        let cfg = TopicConfig::parse_pairs(&["cleanup.policy=compact"])?;
        log.ensure_topic(TXN_STATE_TOPIC, TXN_STATE_PARTITIONS, cfg)?;
        let mut metas = HashMap::new();
        for p in 0..log.partition_count(TXN_STATE_TOPIC)? {
            let from = log.earliest_offset(TXN_STATE_TOPIC, PartitionId(p))?;
            log.for_each_record(
                TXN_STATE_TOPIC,
                PartitionId(p),
                from,
                weir_log::Isolation::ReadUncommitted,
                |r| {
                    let id = String::from_utf8_lossy(r.key.unwrap_or_default()).into_owned();
                    let meta = r.value.and_then(TxnMeta::decode).ok_or_else(|| {
                        CoordError::CorruptedOffsetRecord {
                            topic: TXN_STATE_TOPIC.into(),
                            partition: p,
                            offset: r.offset.0,
                            reason: "bad transaction state".into(),
                        }
                    })?;
                    metas.insert(id, meta);
                    Ok::<(), CoordError>(())
                },
            )?;
        }
        for (id, meta) in metas.iter_mut() {
            let commit = match meta.state {
                TxnState::PrepareCommit => true,
                TxnState::PrepareAbort | TxnState::Ongoing => false,
                _ => continue,
            };
            // A decided commit is normal after any stop (its `Complete` state is not written, to
            // save an fsync per commit); writing its markers again is harmless. An undecided
            // transaction means the last run stopped inside it.
            if commit {
                tracing::debug!(transactional_id = %id, "completing the last run's committed transaction");
            } else {
                tracing::warn!(transactional_id = %id, "aborting a transaction left open by the last run");
            }
            // No group coordinator yet: offsets committed here are read from the log when it
            // starts, after this.
            finish(log, None, id, meta, commit, None)?;
            // Persist the completion, so the next start need not write these markers again.
            persist(log, id, meta)?;
        }
        Ok(metas)
    }

    fn with_state(
        log: &Log,
        groups: &GroupCoordinator,
        metas: HashMap<String, TxnMeta>,
    ) -> Result<TransactionCoordinator> {
        let txns = metas
            .into_iter()
            .map(|(id, meta)| {
                (
                    id,
                    Txn {
                        meta,
                        started: None,
                        retry_at: None,
                    },
                )
            })
            .collect();
        let inner = Arc::new(Inner {
            log: log.clone(),
            groups: groups.clone(),
            txns: Mutex::new(txns),
            crash_after_markers: AtomicUsize::new(usize::MAX),
        });
        let ticker = Ticker::spawn(
            "weir-txn-timeouts",
            TIMEOUT_TICK,
            Arc::downgrade(&inner),
            abort_timed_out,
        )
        .map_err(|e| CoordError::Invalid(format!("cannot start the timeout thread: {e}")))?;
        Ok(TransactionCoordinator {
            inner,
            _timeouts: Arc::new(ticker),
        })
    }

    /// The log this coordinator serves.
    pub fn log(&self) -> &Log {
        &self.inner.log
    }

    /// The group coordinator whose offsets transactions commit.
    pub fn groups(&self) -> &GroupCoordinator {
        &self.inner.groups
    }

    /// Registers (or re-registers) a transactional id: finishes the last instance's
    /// transaction, bumps the epoch (fencing that instance) and returns (producer id, epoch).
    pub fn init_transactions(
        &self,
        transactional_id: &str,
        timeout: Duration,
    ) -> Result<(i64, i16)> {
        if transactional_id.is_empty() {
            return Err(CoordError::Invalid(
                "a transactional id must not be empty".into(),
            ));
        }
        let log = &self.inner.log;
        let mut txns = self.lock();
        // Work on a copy: if finishing the old transaction or persisting fails, the entry stays
        // as it was (still decided, still to be finished by the next attempt or by recovery).
        let txn = match txns.get(transactional_id).cloned() {
            Some(mut t) => {
                t.meta.epoch = t
                    .meta
                    .epoch
                    .checked_add(1)
                    .ok_or_else(|| CoordError::Invalid("epoch exhausted".into()))?;
                if matches!(
                    t.meta.state,
                    TxnState::Ongoing | TxnState::PrepareAbort | TxnState::PrepareCommit
                ) {
                    // The old instance's transaction ends under the new epoch, which fences it
                    // on every partition it wrote; its calls here are fenced by the epoch too.
                    let commit = t.meta.state == TxnState::PrepareCommit;
                    finish(
                        log,
                        Some(&self.inner.groups),
                        transactional_id,
                        &mut t.meta,
                        commit,
                        None,
                    )?;
                }
                t.meta.timeout = timeout;
                t.started = None;
                t
            }
            None => {
                let (producer_id, _) = log.init_producer_id()?;
                Txn {
                    meta: TxnMeta {
                        producer_id,
                        epoch: 0,
                        state: TxnState::Empty,
                        timeout,
                        partitions: BTreeSet::new(),
                        offsets: Vec::new(),
                    },
                    started: None,
                    retry_at: None,
                }
            }
        };
        persist(log, transactional_id, &txn.meta)?;
        let ids = (txn.meta.producer_id, txn.meta.epoch);
        txns.insert(transactional_id.to_string(), txn);
        Ok(ids)
    }

    fn current<'a>(
        txns: &'a mut HashMap<String, Txn>,
        id: &str,
        producer_id: i64,
        epoch: i16,
    ) -> Result<&'a mut Txn> {
        let t = txns
            .get_mut(id)
            .ok_or_else(|| CoordError::UnknownTransactionalId(id.to_string()))?;
        if t.meta.producer_id != producer_id || t.meta.epoch != epoch {
            return Err(fenced(&t.meta, epoch));
        }
        Ok(t)
    }

    /// Adds partitions to the open transaction (opening it if needed); durable before return.
    pub fn add_partitions(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[TopicPartition],
    ) -> Result<()> {
        let mut txns = self.lock();
        let t = Self::current(&mut txns, id, producer_id, epoch)?;
        if matches!(
            t.meta.state,
            TxnState::PrepareCommit | TxnState::PrepareAbort
        ) {
            return Err(CoordError::TransactionCompleting(id.to_string()));
        }
        let new: Vec<&TopicPartition> = partitions
            .iter()
            .filter(|tp| !t.meta.partitions.contains(*tp))
            .collect();
        if new.is_empty() && t.meta.state == TxnState::Ongoing {
            return Ok(());
        }
        if t.meta.state != TxnState::Ongoing {
            t.meta.state = TxnState::Ongoing;
            t.meta.partitions.clear();
            t.meta.offsets.clear();
            t.started = Some(Instant::now());
        }
        t.meta.partitions.extend(new.into_iter().cloned());
        persist(&self.inner.log, id, &t.meta)
    }

    /// Writes a group's offsets inside the open transaction: they become the group's committed
    /// offsets only if the transaction commits. Uses the producer's sequence for that partition.
    pub fn send_offsets(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        sequence: i32,
        group: &str,
        offsets: &[(TopicPartition, Offset, String)],
    ) -> Result<i32> {
        crate::offsets::check_storable(group, offsets)?;
        let part = OffsetStore::partition_of(group);
        self.add_partitions(
            id,
            producer_id,
            epoch,
            &[(OFFSETS_TOPIC.to_string(), part.0)],
        )?;
        let now = self.inner.log.now();
        let mut b = BatchBuilder::with_capacity(256)
            .producer(ProducerFields {
                producer_id,
                producer_epoch: epoch,
                base_sequence: sequence,
            })
            .transactional(true);
        for (tp, o, m) in offsets {
            let c = CommittedOffset {
                offset: *o,
                metadata: m.clone(),
                commit_time: now,
            };
            let r = Record::keyed(
                Bytes::from(encode_key(group, &tp.0, tp.1)),
                Bytes::from(encode_value(&c)),
            );
            b.push(&r, now);
        }
        let n = b.count() as i32;
        if n == 0 {
            return Ok(0);
        }
        self.inner
            .log
            .submit_batch(OFFSETS_TOPIC, part, b.finish())?
            .wait()?;
        let mut txns = self.lock();
        let t = Self::current(&mut txns, id, producer_id, epoch)?;
        t.meta.offsets.extend(
            offsets
                .iter()
                .map(|(tp, o, m)| (group.to_string(), tp.clone(), *o, m.clone())),
        );
        Ok(n)
    }

    /// Commits or aborts the open transaction: persists the decision, writes a marker to every
    /// partition in parallel, then completes it.
    ///
    /// A retry is answered by the state the first attempt left: a decided transaction whose
    /// markers were not all written (the log failed part-way) is finished again with the
    /// outcome already decided, a completed one is a no-op, and a request for the other
    /// outcome is refused (`InvalidTxnState`), as Kafka does.
    pub fn end_transaction(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<()> {
        let mut txns = self.lock();
        let t = Self::current(&mut txns, id, producer_id, epoch)?;
        let outcome = |commit: bool| if commit { "commit" } else { "abort" };
        let decided = match t.meta.state {
            TxnState::Ongoing => commit,
            // Nothing written since the last end: a no-op.
            TxnState::Empty => return Ok(()),
            TxnState::CompleteCommit | TxnState::CompleteAbort => {
                let committed = t.meta.state == TxnState::CompleteCommit;
                if committed == commit {
                    return Ok(()); // a retry of the end that completed
                }
                return Err(CoordError::InvalidTxnState {
                    id: id.to_string(),
                    reason: format!(
                        "cannot {} a transaction that was just {}ed",
                        outcome(commit),
                        outcome(committed)
                    ),
                });
            }
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                let decided = t.meta.state == TxnState::PrepareCommit;
                if decided != commit {
                    return Err(CoordError::InvalidTxnState {
                        id: id.to_string(),
                        reason: format!(
                            "cannot {}: the transaction is decided to {}",
                            outcome(commit),
                            outcome(decided)
                        ),
                    });
                }
                decided
            }
        };
        let crash_after = self.inner.crash_after_markers.load(Ordering::Acquire);
        let crash = (crash_after != usize::MAX).then_some(crash_after);
        let finished = finish(
            &self.inner.log,
            Some(&self.inner.groups),
            id,
            &mut t.meta,
            decided,
            crash,
        );
        if finished.is_err() {
            t.retry_at = Some(Instant::now() + FINISH_RETRY);
        }
        finished?;
        t.started = None;
        Ok(())
    }

    /// The state of a transactional id.
    pub fn describe(&self, id: &str) -> Option<TxnMeta> {
        self.lock().get(id).map(|t| t.meta.clone())
    }

    /// The partitions of `group` with offsets written by a transaction that is not complete
    /// yet: their committed offset may still change (Kafka's UNSTABLE_OFFSET_COMMIT, for
    /// consumers that ask for stable offsets).
    pub fn pending_offsets(&self, group: &str) -> BTreeSet<TopicPartition> {
        self.lock()
            .values()
            .filter(|t| {
                matches!(
                    t.meta.state,
                    TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort
                )
            })
            .flat_map(|t| t.meta.offsets.iter())
            .filter(|(g, ..)| g == group)
            .map(|(_, tp, ..)| tp.clone())
            .collect()
    }

    /// Crash tests: the next commit stops after writing `n` markers, as a process killed
    /// between markers would (the decision is already durable).
    #[doc(hidden)]
    pub fn inject_crash_after_markers(&self, n: usize) {
        self.inner.crash_after_markers.store(n, Ordering::Release);
    }
}

/// Persists a transactional id's state (one append to `__transaction_state`).
fn persist(log: &Log, id: &str, meta: &TxnMeta) -> Result<()> {
    let p = weir_log::partitioner::partition_for_key(id.as_bytes(), TXN_STATE_PARTITIONS);
    log.append(
        TXN_STATE_TOPIC,
        p,
        &[Record::keyed(id.to_string(), meta.encode())],
    )?;
    Ok(())
}

/// Writes commit or abort markers to every partition of the transaction, in parallel; with
/// `crash_after`, stops after that many (fault injection).
fn write_markers(
    log: &Log,
    meta: &TxnMeta,
    commit: bool,
    crash_after: Option<usize>,
) -> Result<()> {
    let mut tickets = Vec::with_capacity(meta.partitions.len());
    for (i, (topic, p)) in meta.partitions.iter().enumerate() {
        if crash_after.is_some_and(|n| i >= n) {
            for t in tickets {
                weir_log::AppendTicket::wait(t)?;
            }
            return Err(CoordError::Closed);
        }
        let batch = BatchBuilder::marker(meta.producer_id, meta.epoch, commit, 0, log.now());
        match log.submit_batch(topic, PartitionId(*p), batch) {
            Ok(t) => tickets.push(t),
            // A topic deleted (or deleted and re-created smaller) since the transaction wrote
            // to it holds nothing left to mark.
            Err(LogError::UnknownTopic(_) | LogError::UnknownPartition { .. }) => {
                tracing::debug!(topic = %topic, "skipping the marker of a deleted topic");
            }
            Err(e) => return Err(e.into()),
        }
    }
    for t in tickets {
        t.wait()?;
    }
    Ok(())
}

/// Decide, mark, complete.
fn finish(
    log: &Log,
    groups: Option<&GroupCoordinator>,
    id: &str,
    meta: &mut TxnMeta,
    commit: bool,
    crash_after: Option<usize>,
) -> Result<()> {
    meta.state = if commit {
        TxnState::PrepareCommit
    } else {
        TxnState::PrepareAbort
    };
    persist(log, id, meta)?; // the commit point
    write_markers(log, meta, commit, crash_after)?;
    if commit {
        let now = log.now();
        let mut by_group: BTreeMap<String, Vec<(TopicPartition, CommittedOffset)>> =
            BTreeMap::new();
        for (g, tp, o, m) in &meta.offsets {
            by_group.entry(g.clone()).or_default().push((
                tp.clone(),
                CommittedOffset {
                    offset: *o,
                    metadata: m.clone(),
                    commit_time: now,
                },
            ));
        }
        for (g, offsets) in by_group {
            if let Some(groups) = groups {
                groups.apply_transactional_offsets(&g, &offsets);
            }
        }
    }
    meta.state = if commit {
        TxnState::CompleteCommit
    } else {
        TxnState::CompleteAbort
    };
    meta.partitions.clear();
    meta.offsets.clear();
    // `Complete*` is not persisted: the durable `Prepare*` already decides the outcome, and a
    // recovery that finds it writes the (idempotent) markers again. This saves an fsync per
    // commit; the next transaction's `Ongoing` record supersedes it.
    Ok(())
}

/// The timeout tick: aborts transactions open longer than their timeout, bumping the epoch
/// so their producer is fenced, and finishes decided transactions whose markers a failed
/// attempt left unwritten (so read_committed readers are not held back until the producer
/// retries).
fn abort_timed_out(inner: &Inner) {
    let mut txns = inner.txns.lock().unwrap_or_else(|e| e.into_inner());
    for (id, t) in txns.iter_mut() {
        if matches!(
            t.meta.state,
            TxnState::PrepareCommit | TxnState::PrepareAbort
        ) {
            // With a crash injected the coordinator stands for a dead process: it does nothing
            // on its own until the test "restarts" it.
            let simulating_crash = inner.crash_after_markers.load(Ordering::Acquire) != usize::MAX;
            let due = t.retry_at.is_none_or(|at| Instant::now() >= at);
            if simulating_crash || !due {
                continue;
            }
            let commit = t.meta.state == TxnState::PrepareCommit;
            match finish(
                &inner.log,
                Some(&inner.groups),
                id,
                &mut t.meta,
                commit,
                None,
            ) {
                Ok(()) => t.retry_at = None,
                Err(e) => {
                    tracing::warn!(transactional_id = %id, error = %e, "finishing a decided transaction failed; retrying");
                    t.retry_at = Some(Instant::now() + FINISH_RETRY);
                }
            }
            continue;
        }
        let overdue = t.meta.state == TxnState::Ongoing
            && t.started.is_some_and(|s| s.elapsed() > t.meta.timeout);
        if !overdue {
            continue;
        }
        tracing::warn!(transactional_id = %id, "transaction timed out; aborting it and fencing its producer");
        let Some(epoch) = t.meta.epoch.checked_add(1) else {
            continue;
        };
        t.meta.epoch = epoch;
        if let Err(e) = finish(
            &inner.log,
            Some(&inner.groups),
            id,
            &mut t.meta,
            false,
            None,
        ) {
            tracing::error!(transactional_id = %id, error = %e, "aborting a timed-out transaction failed");
        }
        t.started = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trip() {
        let m = TxnMeta {
            producer_id: 5,
            epoch: 3,
            state: TxnState::PrepareCommit,
            timeout: Duration::from_secs(60),
            partitions: BTreeSet::from([("a".to_string(), 1), ("b".to_string(), 0)]),
            offsets: vec![("g".into(), ("a".into(), 1), Offset(9), "wm=5".into())],
        };
        assert_eq!(TxnMeta::decode(&m.encode()), Some(m));
    }
}
