//! The single writer of a partition: drains the append queue in groups, assigns offsets,
//! writes each group with one `write`, applies the flush policy once per group (group commit),
//! rolls segments, and only then publishes the bytes to readers and acknowledges.
//!
//! Under `flush=batch` the fsync is pipelined: the writer hands each written group to a
//! syncer thread and goes on writing the next one while the syncer runs one `fdatasync` for
//! every group written so far, then publishes and acknowledges them. The disk never idles
//! between a write and its fsync, and an ack still always follows the fsync that covers it.
//! The hand-off channel is bounded, so writes run at most `SYNC_JOBS_MAX` groups ahead of
//! the last fsync.
//!
//! Failure rules: a failed write is rolled back (`set_len` to the previous end) and its group
//! is failed with a typed error; nothing of it was acknowledged or made visible. A failed
//! `fdatasync` poisons the partition: the state of the file is unknown (the kernel may have
//! dropped the dirty pages), so every later append fails until the log is reopened and
//! recovery re-validates the tail.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::batch::{set_base_offset, set_log_append_time, BatchHeader, BatchView};
use crate::config::{FlushPolicy, TimestampType};
use crate::error::{LogError, Result};
use crate::partition::PartitionShared;
use crate::producer_state::{
    marker_type, write_snapshot, BatchMeta, ProducerStates, SeqCheck, StateDelta,
};
use crate::queue::{AppendOutcome, AppendRequest};
use crate::segment::Segment;
use crate::types::{Offset, Timestamp};

/// Bytes the writer takes from the queue per group: large enough that one fsync covers many
/// producers' batches, small enough that the first waiter's latency stays bounded.
const GROUP_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Written groups waiting for the syncer: bounds how far writes run ahead of the last fsync
/// (at most this many groups of up to `GROUP_BYTES_MAX`, plus the one being synced).
const SYNC_JOBS_MAX: usize = 4;

pub(crate) fn spawn(
    shared: Arc<PartitionShared>,
    producers: ProducerStates,
) -> Result<JoinHandle<()>> {
    let active = shared
        .snapshot()
        .last()
        .cloned()
        .ok_or_else(|| LogError::Internal("partition has no segment".into()))?;
    let next_offset = shared.log_end.load(Ordering::Acquire);
    let created = shared.clock.now();
    let syncer = if matches!(
        shared.config.flush,
        FlushPolicy::Batch | FlushPolicy::IntervalMs(_)
    ) {
        let (tx, rx) = mpsc::sync_channel::<SyncMsg>(SYNC_JOBS_MAX);
        let s = shared.clone();
        let handle = std::thread::Builder::new()
            .name(format!("weir-s-{}-{}", shared.topic, shared.id))
            .spawn(move || run_syncer(&s, &rx))
            .map_err(|e| LogError::io("spawn syncer thread", &shared.dir, e))?;
        Some((tx, handle))
    } else {
        None
    };
    let mut writer = Writer {
        producers,
        overlay: StateDelta::default(),
        shared: shared.clone(),
        active,
        active_created: created,
        next_offset,
        dirty: false,
        last_sync: Instant::now(),
        buf: Vec::new(),
        syncer,
    };
    std::thread::Builder::new()
        .name(format!("weir-w-{}-{}", shared.topic, shared.id))
        .spawn(move || writer.run())
        .map_err(|e| LogError::io("spawn writer thread", &shared.dir, e))
}

struct Pending {
    req: AppendRequest,
    outcome: AppendOutcome,
}

struct Writer {
    /// Idempotent-producer state as of what is written.
    producers: ProducerStates,
    /// Producer-state changes of the chunk being built; merged once it is written.
    overlay: StateDelta,
    shared: Arc<PartitionShared>,
    active: Arc<Segment>,
    active_created: Timestamp,
    next_offset: i64,
    dirty: bool,
    last_sync: Instant,
    buf: Vec<u8>,
    /// The syncer thread: pipelined group commit under `flush=batch`, background fsyncs under
    /// `flush.ms` (so an interval fsync never stalls appends).
    syncer: Option<(SyncSender<SyncMsg>, JoinHandle<()>)>,
}

/// Work for the syncer.
enum SyncMsg {
    /// A written group: fsync, then publish up to `end_pos` / `next_offset` and ack.
    Job {
        segment: Arc<Segment>,
        end_pos: u64,
        next_offset: i64,
        /// First offset of the oldest open transaction as of this group (`i64::MAX`: none).
        first_unstable: i64,
        acks: Vec<Pending>,
    },
    /// `flush.ms`: fsync this segment in the background (appends were already acknowledged).
    Background(Arc<Segment>),
    /// Reply once everything before this is synced (used before a roll).
    Barrier(mpsc::Sender<()>),
}

/// The syncer loop: one `fdatasync` for every group queued since the last one.
fn run_syncer(shared: &PartitionShared, rx: &Receiver<SyncMsg>) {
    while let Ok(first) = rx.recv() {
        let mut msgs = vec![first];
        msgs.extend(rx.try_iter());
        let mut barriers = Vec::new();
        let mut jobs = Vec::new();
        let mut background: Vec<Arc<Segment>> = Vec::new();
        for m in msgs {
            match m {
                SyncMsg::Barrier(reply) => barriers.push(reply),
                SyncMsg::Background(seg) => {
                    if !background.iter().any(|b| Arc::ptr_eq(b, &seg)) {
                        background.push(seg);
                    }
                }
                SyncMsg::Job {
                    segment,
                    end_pos,
                    next_offset,
                    first_unstable,
                    acks,
                } => jobs.push((segment, end_pos, next_offset, first_unstable, acks)),
            }
        }
        if let Some((segment, end_pos, next_offset, first_unstable, _)) = jobs.last() {
            let (segment, end_pos, next_offset, first_unstable) =
                (segment.clone(), *end_pos, *next_offset, *first_unstable);
            let outcome = match shared.poison_cause() {
                Some(cause) => Err(cause),
                None => {
                    let started = std::time::Instant::now();
                    let synced = segment.file.sync_data();
                    shared.fsync.record(started.elapsed());
                    synced
                        .map_err(|e| format!("fdatasync of {} failed: {e}", segment.path.display()))
                }
            };
            match outcome {
                Ok(()) => {
                    segment.set_readable(end_pos);
                    // The stable bound first, then the high watermark: a reader that sees the
                    // new high watermark sees the open transactions that go with it.
                    shared
                        .first_unstable
                        .store(first_unstable, Ordering::Release);
                    shared.high_watermark.store(next_offset, Ordering::Release);
                    shared.appended.notify(usize::MAX);
                    for (_, _, _, _, acks) in jobs {
                        for p in acks {
                            let _ = p.req.ack.send(Ok(p.outcome));
                        }
                    }
                }
                Err(cause) => {
                    {
                        let mut p = shared.poisoned.lock().unwrap_or_else(|e| e.into_inner());
                        if p.is_none() {
                            tracing::error!(topic = %shared.topic, partition = %shared.id, %cause, "partition poisoned");
                            *p = Some(cause.clone());
                        }
                    }
                    for (_, _, _, _, acks) in jobs {
                        for p in acks {
                            let _ = p.req.ack.send(Err(shared.poisoned_error(cause.clone())));
                        }
                    }
                }
            }
        }
        for seg in background {
            if shared.poison_cause().is_some() {
                break;
            }
            if let Err(e) = seg.file.sync_data() {
                let cause = format!("fdatasync of {} failed: {e}", seg.path.display());
                let mut p = shared.poisoned.lock().unwrap_or_else(|e| e.into_inner());
                if p.is_none() {
                    tracing::error!(topic = %shared.topic, partition = %shared.id, %cause, "partition poisoned");
                    *p = Some(cause);
                }
            }
        }
        for b in barriers {
            let _ = b.send(());
        }
    }
}

impl Writer {
    fn run(&mut self) {
        loop {
            let timeout = self.sync_due_in();
            let (group, closed) = self.shared.queue.pop_group(GROUP_BYTES_MAX, timeout);
            if group.is_empty() {
                if self.dirty && self.sync_due_in().is_some_and(|d| d.is_zero()) {
                    self.interval_sync();
                }
                if closed {
                    if self.dirty {
                        self.sync_or_poison();
                    }
                    if let Some((tx, handle)) = self.syncer.take() {
                        drop(tx);
                        let _ = handle.join();
                    }
                    self.mark_clean();
                    return;
                }
                continue;
            }
            self.process(group);
        }
    }

    /// Time until the interval policy wants an fsync, if data is dirty.
    fn sync_due_in(&self) -> Option<Duration> {
        let interval = self.shared.config.flush_interval()?;
        if !self.dirty {
            return None;
        }
        Some(interval.saturating_sub(self.last_sync.elapsed()))
    }

    /// `flush.ms`: hands the fsync to the syncer so appends go on meanwhile; inline if the
    /// syncer is gone. A sync still running keeps `dirty` set, so the next tick asks again.
    fn interval_sync(&mut self) {
        let sent = match &self.syncer {
            Some((tx, _)) => match tx.try_send(SyncMsg::Background(self.active.clone())) {
                Ok(()) => true,
                Err(mpsc::TrySendError::Full(_)) => return,
                Err(mpsc::TrySendError::Disconnected(_)) => false,
            },
            None => false,
        };
        if sent {
            self.dirty = false;
            self.last_sync = Instant::now();
        } else {
            self.sync_or_poison();
        }
    }

    fn sync_or_poison(&mut self) -> bool {
        match self.active.file.sync_data() {
            Ok(()) => {
                self.dirty = false;
                self.last_sync = Instant::now();
                true
            }
            Err(e) => {
                self.poison(format!(
                    "fdatasync of {} failed: {e}",
                    self.active.path.display()
                ));
                false
            }
        }
    }

    fn poison(&self, cause: String) {
        tracing::error!(topic = %self.shared.topic, partition = %self.shared.id, %cause, "partition poisoned");
        let mut p = self
            .shared
            .poisoned
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if p.is_none() {
            *p = Some(cause);
        }
    }

    fn fail_all(reqs: impl IntoIterator<Item = AppendRequest>, err: impl Fn() -> LogError) {
        for r in reqs {
            let _ = r.ack.send(Err(err()));
        }
    }

    fn needs_roll(&self, incoming_bytes: usize, span: i64) -> bool {
        let cfg = &self.shared.config;
        let size = self.active.index().size + self.buf.len() as u64;
        if size == 0 {
            return false;
        }
        let too_big = size + incoming_bytes as u64 > cfg.segment_bytes;
        let too_old = self.shared.clock.now().0 - self.active_created.0 >= cfg.segment_ms;
        let rel_overflow = self.next_offset + span - self.active.base.0 > i64::from(u32::MAX);
        too_big || too_old || rel_overflow
    }

    fn process(&mut self, group: Vec<AppendRequest>) {
        if let Some(cause) = self.shared.poison_cause() {
            let s = self.shared.clone();
            return Self::fail_all(group, || s.poisoned_error(cause.clone()));
        }
        let mut pending: Vec<Pending> = Vec::with_capacity(group.len());
        let mut headers: Vec<(BatchHeader, u64)> = Vec::new();
        let mut group = group.into_iter();
        while let Some(mut req) = group.next() {
            match self.check_idempotence(&req) {
                Err(e) => {
                    let _ = req.ack.send(Err(e));
                    continue;
                }
                Ok(Some(original)) => {
                    // A retry of a batch already written: answer with its offsets, after the
                    // flush policy for them is met (the ack rides with this chunk).
                    let outcome = AppendOutcome {
                        partition: self.shared.id,
                        base_offset: Offset(original.base_offset),
                        last_offset: Offset(original.last_offset),
                        log_append_time: None,
                    };
                    pending.push(Pending { req, outcome });
                    continue;
                }
                Ok(None) => {}
            }
            let span: i64 = req.batches.iter().map(|b| b.offset_span()).sum();
            let roll_asked = req.roll_first && self.active.index().size + self.buf.len() as u64 > 0;
            if roll_asked || self.needs_roll(req.bytes, span) {
                let committed =
                    self.commit(std::mem::take(&mut pending), std::mem::take(&mut headers));
                // A failed commit (say ENOSPC) already failed its requests and rolled back;
                // only a failed roll leaves the partition in an unknown state.
                let rolled = committed.and_then(|()| {
                    self.roll()
                        .inspect_err(|e| self.poison(format!("segment roll failed: {e}")))
                });
                if let Err(e) = rolled {
                    let msg = e.to_string();
                    let mut rest = vec![req];
                    rest.extend(group);
                    return Self::fail_all(rest, || LogError::Io {
                        op: "segment roll",
                        path: self.active.path.clone(),
                        source: std::io::Error::other(msg.clone()),
                    });
                }
            }
            let now = self.shared.clock.now();
            let log_append = self.shared.config.timestamp_type == TimestampType::LogAppendTime;
            let base = self.next_offset;
            let seg_size = self.active.index().size;
            for batch in &mut req.batches {
                set_base_offset(&mut batch.bytes, Offset(self.next_offset));
                if log_append {
                    set_log_append_time(&mut batch.bytes, now);
                }
                let pos = seg_size + self.buf.len() as u64;
                match BatchHeader::parse(&batch.bytes) {
                    Ok(h) => {
                        if h.producer_id >= 0 {
                            let marker = if h.is_control() {
                                BatchView::parse(&batch.bytes)
                                    .ok()
                                    .and_then(|v| marker_type(&v))
                            } else {
                                None
                            };
                            self.producers.record(&mut self.overlay, &h, marker);
                        }
                        headers.push((h, pos));
                    }
                    Err(e) => {
                        // Batches are validated before they are queued; this is our bug.
                        // Nothing of this group is written: undo and fail all of it.
                        let msg = format!("encoded batch unreadable: {e}");
                        self.buf.clear();
                        self.overlay.clear();
                        // The first batch written in this chunk (retries wrote nothing).
                        self.next_offset = headers.first().map_or(base, |(h, _)| h.base_offset.0);
                        let mut rest: Vec<AppendRequest> =
                            pending.into_iter().map(|p| p.req).collect();
                        rest.push(req);
                        rest.extend(group);
                        return Self::fail_all(rest, || LogError::Internal(msg.clone()));
                    }
                }
                self.buf.extend_from_slice(&batch.bytes);
                self.next_offset += batch.offset_span();
            }
            let outcome = AppendOutcome {
                partition: self.shared.id,
                base_offset: Offset(base),
                last_offset: Offset(self.next_offset - 1),
                log_append_time: log_append.then_some(now),
            };
            pending.push(Pending { req, outcome });
        }
        if let Err(e) = self.commit(pending, headers) {
            tracing::debug!(error = %e, "group failed");
        }
    }

    /// After the last sync of a clean shutdown: leave the active segment's index and a marker
    /// so the next open need not re-validate the whole active segment. Skipped when poisoned.
    fn mark_clean(&mut self) {
        if self.shared.poison_cause().is_some() || self.dirty {
            return;
        }
        if let Err(e) = self.active.file.sync_data() {
            self.poison(format!("fdatasync at shutdown failed: {e}"));
            return;
        }
        let shared = self.shared.clone();
        let covers = Offset(self.next_offset);
        if let Err(e) = write_snapshot(
            shared.storage.as_ref(),
            &shared.dir,
            covers,
            &self.producers,
        ) {
            tracing::warn!(error = %e, "could not snapshot producer state at shutdown; the next open replays it");
        }
        if let Err(e) =
            crate::partition::write_clean_marker(shared.storage.as_ref(), &shared.dir, &self.active)
        {
            tracing::warn!(topic = %shared.topic, partition = %shared.id, error = %e, "could not mark a clean shutdown; the next open re-validates the active segment");
        }
    }

    /// Idempotence rules for a request from a producer with an id: `Ok(Some(meta))` for a
    /// retry of a batch already in the log, `Ok(None)` to append.
    fn check_idempotence(&self, req: &AppendRequest) -> Result<Option<BatchMeta>> {
        let Some(first) = req.batches.first() else {
            return Ok(None);
        };
        let h = BatchHeader::parse(&first.bytes).map_err(LogError::InvalidBatch)?;
        if h.producer_id < 0 {
            return Ok(None);
        }
        if req.batches.len() != 1 {
            return Err(LogError::InvalidBatch(crate::batch::BatchError::Malformed(
                "an append from an idempotent producer carries exactly one batch",
            )));
        }
        let topic = &self.shared.topic;
        match self
            .producers
            .check(&self.overlay, topic, self.shared.id.0, &h)?
        {
            SeqCheck::Append => Ok(None),
            SeqCheck::Duplicate(m) => Ok(Some(m)),
        }
    }

    /// Acknowledges a chunk that wrote nothing (only retries of batches already written),
    /// once everything before it met the flush policy.
    fn ack_without_write(&mut self, pending: Vec<Pending>) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        if let (Some((tx, _)), FlushPolicy::Batch) = (&self.syncer, self.shared.config.flush) {
            let job = SyncMsg::Job {
                segment: self.active.clone(),
                end_pos: self.active.index().size,
                next_offset: self.next_offset,
                first_unstable: first_unstable_now(&self.producers),
                acks: pending,
            };
            if let Err(mpsc::SendError(SyncMsg::Job { acks, .. })) = tx.send(job) {
                Self::fail_all(acks.into_iter().map(|p| p.req), || LogError::Closed);
            }
            return Ok(());
        }
        for p in pending {
            let _ = p.req.ack.send(Ok(p.outcome));
        }
        Ok(())
    }

    /// Applies the producer-state changes of the chunk just written; publishes new aborted
    /// transactions to readers; returns the first unstable offset (`i64::MAX`: none).
    fn commit_producer_state(&mut self) -> i64 {
        if self.producers.commit(&mut self.overlay) {
            let list = Arc::new(self.producers.aborted().to_vec());
            *self
                .shared
                .aborted
                .write()
                .unwrap_or_else(|e| e.into_inner()) = list;
        }
        first_unstable_now(&self.producers)
    }

    /// Adds the index entries of batches just written; returns the segment's new size.
    fn index_written(&self, seg: &Segment, headers: &[(BatchHeader, u64)]) -> u64 {
        let interval = self.shared.config.index_interval_bytes;
        let mut idx = seg.index_mut();
        for (h, pos) in headers {
            idx.on_batch(seg.base, h, *pos, interval);
        }
        idx.size
    }

    /// Writes the buffered chunk, applies the flush policy, publishes, acknowledges.
    fn commit(&mut self, pending: Vec<Pending>, headers: Vec<(BatchHeader, u64)>) -> Result<()> {
        if self.buf.is_empty() {
            return self.ack_without_write(pending);
        }
        let seg = self.active.clone();
        let start_pos = seg.index().size;
        // The first batch written in this chunk (retries in `pending` wrote nothing).
        let chunk_first = headers
            .first()
            .map_or(self.next_offset, |(h, _)| h.base_offset.0);
        if let Err(e) = seg.file.write_all_at(&self.buf, start_pos) {
            let err_text = e.to_string();
            let typed = LogError::io("append", &seg.path, e);
            let is_full = matches!(typed, LogError::DiskFull { .. });
            self.buf.clear();
            self.overlay.clear();
            self.next_offset = chunk_first;
            // The rollback is made durable, so a failed append cannot reappear after a crash.
            if let Err(te) = seg
                .file
                .set_len(start_pos)
                .and_then(|()| seg.file.sync_data())
            {
                self.poison(format!(
                    "rolling back a failed write ({err_text}) failed: {te}"
                ));
            }
            let path = seg.path.clone();
            Self::fail_all(pending.into_iter().map(|p| p.req), || {
                if is_full {
                    LogError::DiskFull { path: path.clone() }
                } else {
                    LogError::Io {
                        op: "append",
                        path: path.clone(),
                        source: std::io::Error::other(err_text.clone()),
                    }
                }
            });
            return Err(typed);
        }
        let first_unstable = self.commit_producer_state();
        if let (Some((tx, _)), FlushPolicy::Batch) = (&self.syncer, self.shared.config.flush) {
            let end_pos = self.index_written(&seg, &headers);
            self.buf.clear();
            self.shared
                .log_end
                .store(self.next_offset, Ordering::Release);
            let job = SyncMsg::Job {
                segment: seg,
                end_pos,
                next_offset: self.next_offset,
                first_unstable,
                acks: pending,
            };
            if let Err(mpsc::SendError(SyncMsg::Job { acks, .. })) = tx.send(job) {
                Self::fail_all(acks.into_iter().map(|p| p.req), || LogError::Closed);
            }
            return Ok(());
        }
        self.dirty = true;
        let sync_now = match self.shared.config.flush {
            FlushPolicy::Batch => true,
            FlushPolicy::IntervalMs(_) => {
                if self.sync_due_in().is_some_and(|d| d.is_zero()) {
                    self.interval_sync();
                }
                false
            }
            FlushPolicy::Os => false,
        };
        if sync_now && !self.sync_or_poison() {
            self.buf.clear();
            let s = self.shared.clone();
            let cause = s.poison_cause().unwrap_or_default();
            Self::fail_all(pending.into_iter().map(|p| p.req), || {
                s.poisoned_error(cause.clone())
            });
            return Err(LogError::Internal(
                "fsync failed; partition poisoned".into(),
            ));
        }
        let new_size = self.index_written(&seg, &headers);
        self.buf.clear();
        seg.set_readable(new_size);
        self.shared
            .log_end
            .store(self.next_offset, Ordering::Release);
        self.shared
            .first_unstable
            .store(first_unstable, Ordering::Release);
        self.shared
            .high_watermark
            .store(self.next_offset, Ordering::Release);
        self.shared.appended.notify(usize::MAX);
        for p in pending {
            let _ = p.req.ack.send(Ok(p.outcome));
        }
        Ok(())
    }

    /// Seals the active segment (fsync, index files) and starts a new one (create, fsync file,
    /// fsync directory) before anything is written to it.
    fn roll(&mut self) -> Result<()> {
        let shared = self.shared.clone();
        let storage = shared.storage.as_ref();
        if let Some((tx, _)) = &self.syncer {
            // Everything written to the old segment is synced and acknowledged before it seals.
            let (reply_tx, reply_rx) = mpsc::channel();
            if tx.send(SyncMsg::Barrier(reply_tx)).is_ok() {
                let _ = reply_rx.recv();
            }
            if let Some(cause) = shared.poison_cause() {
                return Err(shared.poisoned_error(cause));
            }
        }
        self.active
            .file
            .sync_data()
            .map_err(|e| LogError::io("fsync sealed segment", &self.active.path, e))?;
        self.dirty = false;
        self.active.write_index(storage, &shared.dir)?;
        let seg = Arc::new(Segment::create(
            storage,
            &shared.dir,
            Offset(self.next_offset),
        )?);
        storage
            .sync_dir(&shared.dir)
            .map_err(|e| LogError::io("fsync partition dir", &shared.dir, e))?;
        shared
            .segments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.next_offset, seg.clone());
        tracing::debug!(topic = %shared.topic, partition = %shared.id, base = self.next_offset, "rolled segment");
        // Producer state as of the new segment's base: recovery replays only from here.
        write_snapshot(
            storage,
            &shared.dir,
            Offset(self.next_offset),
            &self.producers,
        )?;
        self.active = seg;
        self.active_created = shared.clock.now();
        Ok(())
    }
}

fn first_unstable_now(p: &ProducerStates) -> i64 {
    p.first_unstable().unwrap_or(i64::MAX)
}
