//! A partition: its segments, recovery on open, reads, offset lookups, and the handle to its
//! writer thread.
//!
//! Owns the segment map. The writer thread (see `writer`) is the only code that appends or
//! rolls; the cleaner (see `cleaner`) is the only code that removes or replaces sealed
//! segments, under `cleaner_lock`. Readers take a snapshot of `Arc<Segment>`s, so a segment
//! replaced or deleted under them keeps serving its old, consistent bytes.
//!
//! Published positions: `log_end` = next offset to assign (written, maybe not synced);
//! `high_watermark` = end of what readers may see (the flush policy for it was met).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use bytes::Bytes;
use event_listener::Event;

use crate::batch::{BatchIter, RecordIter};
use crate::clock::Clock;
use crate::config::TopicConfig;
use crate::error::{LogError, Result};
use crate::producer_state::AbortedTxn;
use crate::queue::AppendQueue;
use crate::record::RecordView;
use crate::segment::{file_name, parse_base, Extended, IndexFiles, Segment};
use crate::storage::Storage;
use crate::types::{Offset, PartitionId, Timestamp};

/// Whole batches returned by a read, starting with the batch that holds the requested offset.
#[derive(Debug, Clone)]
pub struct Fetch {
    /// The offset asked for; records before it in the first batch are skipped by `records()`.
    pub from: Offset,
    /// Concatenated RecordBatch v2 bytes, CRC-checked, exactly as stored.
    pub batches: Bytes,
    /// End of what readers may see.
    pub high_watermark: Offset,
    /// First offset still in the log.
    pub log_start: Offset,
    /// Which records `records()` yields.
    pub isolation: Isolation,
    /// The last stable offset at the time of the read.
    pub last_stable: Offset,
    /// Under `ReadCommitted`: the aborted transactions that overlap the returned batches.
    pub aborted: Vec<AbortedTxn>,
}

/// What a reader sees of transactions (Kafka's `isolation.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Everything up to the high watermark, including records of open and aborted transactions.
    #[default]
    ReadUncommitted,
    /// Only up to the last stable offset, without records of aborted transactions.
    ReadCommitted,
}

impl Fetch {
    /// Whether a batch's records belong to an aborted transaction (read_committed only).
    fn is_aborted(&self, h: &crate::batch::BatchHeader) -> bool {
        self.isolation == Isolation::ReadCommitted
            && h.is_transactional()
            && self.aborted.iter().any(|a| {
                a.producer_id == h.producer_id
                    && a.first_offset <= h.base_offset.0
                    && h.base_offset.0 <= a.last_offset
            })
    }

    /// True if no batch was returned.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// The offset to read next.
    pub fn next_offset(&self) -> Offset {
        BatchIter::new(&self.batches)
            .filter_map(|b| b.ok())
            .last()
            .map_or(self.from, |b| b.header.next_offset().max(self.from))
    }

    /// Records at or after `from`, skipping control batches and, under `ReadCommitted`, the
    /// records of aborted transactions.
    pub fn records(
        &self,
    ) -> impl Iterator<Item = Result<RecordView<'_>, crate::batch::BatchError>> + '_ {
        let from = self.from;
        BatchIter::new(&self.batches)
            .flat_map(|b| -> Box<dyn Iterator<Item = _>> {
                match b {
                    Ok(b) if b.header.is_control() || self.is_aborted(&b.header) => {
                        Box::new(std::iter::empty())
                    }
                    Ok(b) => Box::new(b.records() as RecordIter<'_>),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                }
            })
            .filter(move |r| r.as_ref().map_or(true, |r| r.offset >= from))
    }
}

/// Summary of a partition for `describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition id.
    pub id: PartitionId,
    /// First offset still in the log.
    pub log_start: Offset,
    /// End of the readable log.
    pub high_watermark: Offset,
    /// Bytes in all segments.
    pub bytes: u64,
    /// Number of segments.
    pub segments: usize,
}

/// State shared between a partition's writer, readers and the cleaner.
#[derive(Debug)]
pub struct PartitionShared {
    pub(crate) topic: String,
    pub(crate) id: PartitionId,
    pub(crate) dir: PathBuf,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: Arc<TopicConfig>,
    pub(crate) segments: RwLock<BTreeMap<i64, Arc<Segment>>>,
    pub(crate) log_start: AtomicI64,
    pub(crate) log_end: AtomicI64,
    pub(crate) high_watermark: AtomicI64,
    /// First offset of the oldest open transaction (`i64::MAX`: none). The last stable offset
    /// is `min(high_watermark, first_unstable)`; stored before the high watermark moves.
    pub(crate) first_unstable: AtomicI64,
    /// Aborted transactions, for `read_committed` readers (replaced, never mutated in place).
    pub(crate) aborted: RwLock<Arc<Vec<AbortedTxn>>>,
    pub(crate) poisoned: Mutex<Option<String>>,
    pub(crate) queue: AppendQueue,
    pub(crate) appended: Arc<Event>,
    /// Serialises retention and compaction on this partition (and refreshes of a read-only
    /// view).
    pub(crate) cleaner_lock: Mutex<()>,
    /// A view of a partition another process writes: no writer, refreshed from the files.
    pub(crate) read_only: bool,
    /// Read-only views: the writer's layout epoch last seen (see `bump_layout_epoch`).
    pub(crate) seen_layout_epoch: Mutex<Vec<u8>>,
    /// Read-only views: producer and transaction state replayed so far (and up to where).
    pub(crate) ro_states: Mutex<Option<(Offset, crate::producer_state::ProducerStates)>>,
    /// Set (under `cleaner_lock`) when the topic is deleted: a cleaner pass that still holds
    /// this partition must not touch a directory a new topic of the same name may own.
    pub(crate) deleted: std::sync::atomic::AtomicBool,
}

/// A partition and its writer thread.
#[derive(Debug)]
pub struct Partition {
    pub(crate) shared: Arc<PartitionShared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl PartitionShared {
    pub(crate) fn snapshot(&self) -> Vec<Arc<Segment>> {
        self.segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub(crate) fn poison_cause(&self) -> Option<String> {
        self.poisoned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn poisoned_error(&self, cause: String) -> LogError {
        LogError::Poisoned {
            topic: self.topic.clone(),
            partition: self.id,
            cause,
        }
    }

    fn out_of_range(&self, requested: Offset) -> LogError {
        LogError::OffsetOutOfRange {
            topic: self.topic.clone(),
            partition: self.id,
            requested,
            log_start: Offset(self.log_start.load(Ordering::Acquire)),
            log_end: Offset(self.high_watermark.load(Ordering::Acquire)),
        }
    }

    /// Reads whole batches from `offset`, up to `max_bytes` (at least one batch).
    pub fn read(&self, offset: Offset, max_bytes: usize) -> Result<Fetch> {
        let hw = Offset(self.high_watermark.load(Ordering::Acquire));
        let start = Offset(self.log_start.load(Ordering::Acquire));
        let end = Offset(self.log_end.load(Ordering::Acquire));
        if offset < start || offset > end {
            return Err(self.out_of_range(offset));
        }
        let mut fetch = Fetch {
            from: offset,
            batches: Bytes::new(),
            high_watermark: hw,
            log_start: start,
            isolation: Isolation::ReadUncommitted,
            last_stable: hw,
            aborted: Vec::new(),
        };
        if offset >= hw {
            return Ok(fetch);
        }
        let segs: Vec<Arc<Segment>> = {
            let map = self.segments.read().unwrap_or_else(|e| e.into_inner());
            let first = map
                .range(..=offset.0)
                .next_back()
                .map_or(i64::MIN, |(b, _)| *b);
            map.range(first..).map(|(_, s)| s.clone()).collect()
        };
        for seg in segs {
            if let Some(bytes) = seg.read(offset, max_bytes)? {
                fetch.batches = bytes;
                return Ok(fetch);
            }
        }
        Ok(fetch)
    }

    /// The last stable offset: no open transaction starts below it.
    pub fn last_stable_offset(&self) -> Offset {
        // High watermark first: the stable bound that goes with it was stored before it.
        let hw = self.high_watermark.load(Ordering::Acquire);
        let fu = self.first_unstable.load(Ordering::Acquire);
        Offset(hw.min(fu))
    }

    /// Reads with an isolation level. `ReadCommitted` stops at the last stable offset and
    /// hands out the aborted transactions that `Fetch::records` must drop.
    pub fn read_isolated(
        &self,
        offset: Offset,
        max_bytes: usize,
        isolation: Isolation,
    ) -> Result<Fetch> {
        if isolation == Isolation::ReadUncommitted {
            return self.read(offset, max_bytes);
        }
        let lso = self.last_stable_offset();
        let mut fetch = self.read(offset, max_bytes)?;
        fetch.isolation = Isolation::ReadCommitted;
        fetch.last_stable = lso;
        if offset >= lso {
            fetch.batches = Bytes::new();
            return Ok(fetch);
        }
        // Cut at the first batch at or past the stable offset (a transaction boundary).
        let mut keep = 0usize;
        let mut last = offset.0;
        for b in BatchIter::new(&fetch.batches) {
            let b =
                b.map_err(|e| LogError::Internal(format!("validated batch failed to parse: {e}")))?;
            if b.header.base_offset >= lso {
                break;
            }
            keep += b.bytes.len();
            last = b.header.last_offset().0;
        }
        fetch.batches = fetch.batches.slice(..keep);
        let aborted = self
            .aborted
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        fetch.aborted = aborted
            .iter()
            .filter(|a| a.last_offset >= offset.0 && a.first_offset <= last)
            .copied()
            .collect();
        Ok(fetch)
    }

    /// The first offset whose record timestamp is >= `ts`, if any.
    pub fn offset_for_timestamp(&self, ts: Timestamp) -> Result<Option<Offset>> {
        let hw = Offset(self.high_watermark.load(Ordering::Acquire));
        for seg in self.snapshot() {
            if seg.index().max_timestamp < ts.0 {
                continue;
            }
            let mut at = seg
                .index()
                .offset_for_time(seg.base, ts)
                .max(Offset(self.log_start.load(Ordering::Acquire)));
            while at < hw {
                let Some(bytes) = seg.read(at, 256 * 1024)? else {
                    break;
                };
                let fetch = Fetch {
                    from: at,
                    batches: bytes,
                    high_watermark: hw,
                    log_start: at,
                    isolation: Isolation::ReadUncommitted,
                    last_stable: hw,
                    aborted: Vec::new(),
                };
                for b in BatchIter::new(&fetch.batches) {
                    let b = b.map_err(|e| {
                        LogError::Internal(format!("validated batch failed to parse: {e}"))
                    })?;
                    if b.header.max_timestamp < ts || b.header.is_control() {
                        continue;
                    }
                    for r in b.records() {
                        let r = r.map_err(|e| LogError::Corrupted {
                            segment: seg.path.clone(),
                            offset: b.header.base_offset,
                            reason: e.to_string(),
                        })?;
                        if r.offset >= at && r.timestamp >= ts {
                            return Ok(Some(r.offset));
                        }
                    }
                }
                let next = fetch.next_offset();
                if next <= at {
                    break;
                }
                at = next;
            }
        }
        Ok(None)
    }

    /// Read-only views only: re-reads the directory and takes in what the writing process
    /// appended, rolled, deleted (retention) or merged (compaction) since the last look.
    /// A segment compacted in place under the same name keeps serving its old bytes
    /// (consistent, just not compacted) until the view is reopened.
    pub(crate) fn refresh(&self) -> Result<()> {
        if !self.read_only {
            return Ok(());
        }
        let _guard = self.cleaner_lock.lock().unwrap_or_else(|e| e.into_inner());
        // The writer may finish a compaction swap between our listing and our open: list again.
        for _ in 0..READ_ONLY_REFRESH_ATTEMPTS {
            if self.try_refresh()? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// One refresh attempt; `Ok(false)` if the directory changed under it (try again).
    fn try_refresh(&self) -> Result<bool> {
        let storage = self.storage.as_ref();
        let interval = self.config.index_interval_bytes;
        // Read the epoch before listing: a change after this point shows up next time.
        let epoch = crate::storage::read_all(storage, &self.dir.join(LAYOUT_EPOCH_FILE))
            .unwrap_or_default();
        let epoch_changed = *self
            .seen_layout_epoch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            != epoch;
        let layout = read_only_layout(storage, &self.dir)?;
        let current: BTreeMap<i64, Arc<Segment>> = self
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let prev_active = current.keys().next_back().copied();
        // Incremental when the sealed set only lost a prefix (retention) or gained a suffix
        // (roll); anything else (a compaction merge) reloads every sealed segment.
        let kept: Vec<i64> = current
            .keys()
            .copied()
            .filter(|b| layout.iter().any(|(l, _)| l.0 == *b))
            .collect();
        let removed = current.len() - kept.len();
        let removed_prefix = current.keys().take(removed).all(|b| !kept.contains(b));
        let incremental = !epoch_changed
            && removed_prefix
            && kept.iter().zip(layout.iter()).all(|(a, (b, _))| *a == b.0);
        let mut next = BTreeMap::new();
        for (i, (base, path)) in layout.iter().enumerate() {
            let is_active = i + 1 == layout.len();
            let existing = current
                .get(&base.0)
                .filter(|s| &s.path == path && incremental);
            let opened = match existing {
                Some(seg) if is_active => match seg.extend_read_only(interval)? {
                    // The writer rolled back bytes we had seen (a failed write): start over.
                    Extended::Diverged => {
                        Segment::open_active_read_only(storage, path, *base, interval).map(Arc::new)
                    }
                    Extended::Same | Extended::Grew => Ok(seg.clone()),
                },
                Some(seg) if Some(base.0) != prev_active => Ok(seg.clone()),
                _ if is_active => {
                    Segment::open_active_read_only(storage, path, *base, interval).map(Arc::new)
                }
                _ => Segment::open_sealed_file(
                    storage,
                    &self.dir,
                    path,
                    *base,
                    interval,
                    IndexFiles::ReadOnly,
                )
                .map(Arc::new),
            };
            match opened {
                Ok(seg) => {
                    next.insert(base.0, seg);
                }
                Err(LogError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    if path.extension().is_some_and(|e| e == "swap") {
                        return Ok(false); // the swap was just installed: list again
                    }
                    // A segment deleted by retention between the listing and the open.
                }
                Err(e) => return Err(e),
            }
        }
        *self
            .seen_layout_epoch
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = epoch;
        let (Some(&start), Some(last)) = (next.keys().next(), next.values().next_back()) else {
            return Ok(true);
        };
        let end = last.index().next_offset;
        let persisted = crate::cleaner::read_log_start(storage, &self.dir)?.filter(|&o| o <= end);
        let start = start.max(persisted.unwrap_or(0));
        *self.segments.write().unwrap_or_else(|e| e.into_inner()) = next;
        self.log_start.store(start, Ordering::Release);
        self.log_end.store(end, Ordering::Release);
        // Transactions as of the new end, published before the high watermark moves so a
        // read_committed reader of this view never runs past an open transaction.
        self.refresh_transactions()?;
        let before = self.high_watermark.swap(end, Ordering::AcqRel);
        if end > before {
            self.appended.notify(usize::MAX);
        }
        Ok(true)
    }

    /// Read-only views: replays the producer fields of what was appended since the last look,
    /// and publishes the open transactions and aborted ones for read_committed reads.
    fn refresh_transactions(&self) -> Result<()> {
        let mut guard = self.ro_states.lock().unwrap_or_else(|e| e.into_inner());
        let first_look = guard.is_none();
        let (from, mut states) = match guard.take() {
            Some(x) => x,
            None => {
                let end = Offset(self.log_end.load(Ordering::Acquire));
                crate::producer_state::load_snapshot(self.storage.as_ref(), &self.dir, end)?
                    .unwrap_or_default()
            }
        };
        let aborted_before = states.aborted().len();
        let end = replay_into(self, from, &mut states)?;
        self.first_unstable.store(
            states.first_unstable().unwrap_or(i64::MAX),
            Ordering::Release,
        );
        if first_look || states.aborted().len() != aborted_before {
            *self.aborted.write().unwrap_or_else(|e| e.into_inner()) =
                Arc::new(states.aborted().to_vec());
        }
        *guard = Some((end, states));
        Ok(())
    }

    /// Summary for `describe`.
    pub fn info(&self) -> PartitionInfo {
        let segs = self.snapshot();
        PartitionInfo {
            id: self.id,
            log_start: Offset(self.log_start.load(Ordering::Acquire)),
            high_watermark: Offset(self.high_watermark.load(Ordering::Acquire)),
            bytes: segs.iter().map(|s| s.readable()).sum(),
            segments: segs.len(),
        }
    }
}

/// What a partition shares with its topic and log.
#[derive(Debug, Clone)]
pub(crate) struct PartitionEnv {
    pub storage: Arc<dyn Storage>,
    pub clock: Arc<dyn Clock>,
    pub config: Arc<TopicConfig>,
    pub queue_bytes: usize,
    pub appended: Arc<Event>,
}

impl Partition {
    /// Opens (recovering) or creates the partition directory and starts its writer.
    pub(crate) fn open(
        topic: &str,
        id: PartitionId,
        dir: PathBuf,
        env: PartitionEnv,
    ) -> Result<Partition> {
        let PartitionEnv {
            storage,
            clock,
            config,
            queue_bytes,
            appended,
        } = env;
        storage
            .create_dir_all(&dir)
            .map_err(|e| LogError::io("create partition dir", &dir, e))?;
        // The partition directory's own entry must be durable before anything in it is acked.
        if let Some(topic_dir) = dir.parent() {
            storage
                .sync_dir(topic_dir)
                .map_err(|e| LogError::io("fsync topic dir", topic_dir, e))?;
        }
        let segments = recover(storage.as_ref(), &dir, config.index_interval_bytes)?;
        let end = segments
            .values()
            .last()
            .map_or(0, |s| s.index().next_offset);
        // A start set by DeleteRecords may lie inside the first segment.
        let persisted =
            crate::cleaner::read_log_start(storage.as_ref(), &dir)?.filter(|&o| o <= end);
        let first = segments
            .keys()
            .next()
            .copied()
            .unwrap_or(0)
            .max(persisted.unwrap_or(0));
        let shared = Arc::new(PartitionShared {
            topic: topic.to_string(),
            id,
            dir,
            storage,
            clock,
            config,
            segments: RwLock::new(segments),
            log_start: AtomicI64::new(first),
            log_end: AtomicI64::new(end),
            high_watermark: AtomicI64::new(end),
            first_unstable: AtomicI64::new(i64::MAX),
            aborted: RwLock::new(Arc::new(Vec::new())),
            poisoned: Mutex::new(None),
            queue: AppendQueue::new(queue_bytes),
            appended,
            cleaner_lock: Mutex::new(()),
            read_only: false,
            seen_layout_epoch: Mutex::new(Vec::new()),
            deleted: std::sync::atomic::AtomicBool::new(false),
            ro_states: Mutex::new(None),
        });
        let producers = rebuild_producer_states(&shared)?;
        shared.first_unstable.store(
            producers.first_unstable().unwrap_or(i64::MAX),
            Ordering::Release,
        );
        *shared.aborted.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(producers.aborted().to_vec());
        let writer = crate::writer::spawn(shared.clone(), producers)?;
        Ok(Partition {
            shared,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Opens a read-only view of a partition that another process may be writing: no lock,
    /// no recovery writes, no writer thread. `PartitionShared::refresh` picks up new data.
    pub(crate) fn open_read_only(
        topic: &str,
        id: PartitionId,
        dir: PathBuf,
        env: PartitionEnv,
    ) -> Result<Partition> {
        let shared = Arc::new(PartitionShared {
            topic: topic.to_string(),
            id,
            dir,
            storage: env.storage,
            clock: env.clock,
            config: env.config,
            segments: RwLock::new(BTreeMap::new()),
            log_start: AtomicI64::new(0),
            log_end: AtomicI64::new(0),
            high_watermark: AtomicI64::new(0),
            first_unstable: AtomicI64::new(i64::MAX),
            aborted: RwLock::new(Arc::new(Vec::new())),
            poisoned: Mutex::new(None),
            queue: AppendQueue::new(0),
            appended: env.appended,
            cleaner_lock: Mutex::new(()),
            read_only: true,
            seen_layout_epoch: Mutex::new(Vec::new()),
            deleted: std::sync::atomic::AtomicBool::new(false),
            ro_states: Mutex::new(None),
        });
        shared.refresh()?;
        Ok(Partition {
            shared,
            writer: Mutex::new(None),
        })
    }

    /// Stops accepting appends, lets the writer drain and sync, and waits for it.
    pub(crate) fn shutdown(&self) {
        self.shared.queue.close();
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            if h.join().is_err() {
                tracing::error!(topic = %self.shared.topic, partition = %self.shared.id, "writer thread panicked");
            }
        }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Recovery: finishes or discards interrupted compactions, loads sealed segments, validates
/// the active segment and truncates its torn tail. Creates segment 0 in an empty directory.
fn recover(
    storage: &dyn Storage,
    dir: &Path,
    interval: u32,
) -> Result<BTreeMap<i64, Arc<Segment>>> {
    let list = |d: &Path| {
        storage
            .list_dir(d)
            .map_err(|e| LogError::io("list partition dir", d, e))
    };
    for name in list(dir)? {
        if name.ends_with(".cleaned") || name.ends_with(".tmp") {
            let p = dir.join(&name);
            storage
                .remove_file(&p)
                .map_err(|e| LogError::io("remove leftover", &p, e))?;
        } else if let Some((first, end)) = crate::cleaner::parse_swap_name(&name) {
            tracing::warn!(dir = %dir.display(), first, end, "finishing an interrupted compaction swap");
            crate::cleaner::finish_swap(storage, dir, Offset(first), Offset(end))?;
        }
    }
    let names = list(dir)?;
    let bases: Vec<Offset> = names.iter().filter_map(|n| parse_base(n, "log")).collect();
    // Index files whose segment is gone (a crash during retention) are removed.
    for n in &names {
        let base = parse_base(n, "index").or_else(|| parse_base(n, "timeindex"));
        if let Some(b) = base {
            if !bases.contains(&b) {
                let p = dir.join(n);
                storage
                    .remove_file(&p)
                    .map_err(|e| LogError::io("remove orphan index", &p, e))?;
            }
        }
    }
    let mut map = BTreeMap::new();
    if bases.is_empty() {
        let seg = Segment::create(storage, dir, Offset(0))?;
        storage
            .sync_dir(dir)
            .map_err(|e| LogError::io("fsync partition dir", dir, e))?;
        map.insert(0, Arc::new(seg));
        return Ok(map);
    }
    let (active_base, sealed) = bases
        .split_last()
        .ok_or_else(|| LogError::Internal("no segments".into()))?;
    let clean = take_clean_marker(storage, dir, *active_base)?;
    let mut prev_end: Option<i64> = None;
    for &base in sealed {
        let seg = Segment::open_sealed(storage, dir, base, interval)?;
        check_order(dir, base, prev_end)?;
        prev_end = Some(seg.index().next_offset);
        map.insert(base.0, Arc::new(seg));
    }
    check_order(dir, *active_base, prev_end)?;
    let active = match clean {
        Some(size) => Segment::open_clean_active(storage, dir, *active_base, size)?,
        None => None,
    };
    let active = match active {
        Some(seg) => seg,
        None => Segment::recover_active(storage, dir, *active_base, interval)?.0,
    };
    map.insert(active_base.0, Arc::new(active));
    Ok(map)
}

/// Listings a read-only refresh retries when the writer changes the directory under it.
const READ_ONLY_REFRESH_ATTEMPTS: usize = 3;

/// A counter the writing process bumps after retention or compaction changed sealed
/// segments, so read-only views in other processes know to reload them.
pub(crate) const LAYOUT_EPOCH_FILE: &str = "layout-epoch";

/// Bumps the layout epoch (crash-safe write). Called by the cleaner after it changed segments.
pub(crate) fn bump_layout_epoch(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let path = dir.join(LAYOUT_EPOCH_FILE);
    let current: u64 = crate::storage::read_all(storage, &path)
        .ok()
        .and_then(|b| String::from_utf8_lossy(&b).trim().parse().ok())
        .unwrap_or(0);
    crate::storage::write_atomic(storage, &path, format!("{}\n", current + 1).as_bytes())
        .map_err(|e| LogError::io("write layout epoch", &path, e))
}

/// Name of the marker a clean shutdown leaves in a partition directory.
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";

/// Reads and removes the clean-shutdown marker: `Some(active segment size)` if the last close
/// was clean and the marker names `active_base`. Removed before anything is written, so a crash
/// after this open never trusts it.
fn take_clean_marker(
    storage: &dyn Storage,
    dir: &Path,
    active_base: Offset,
) -> Result<Option<u64>> {
    let path = dir.join(CLEAN_SHUTDOWN_FILE);
    if !storage.exists(&path) {
        return Ok(None);
    }
    let raw = crate::storage::read_all(storage, &path).unwrap_or_default();
    storage
        .remove_file(&path)
        .map_err(|e| LogError::io("remove clean-shutdown marker", &path, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| LogError::io("fsync partition dir", dir, e))?;
    let text = String::from_utf8_lossy(&raw);
    let mut parts = text.split_whitespace().map(str::parse::<i64>);
    match (parts.next(), parts.next()) {
        (Some(Ok(base)), Some(Ok(size))) if base == active_base.0 && size >= 0 => {
            Ok(Some(size as u64))
        }
        _ => Ok(None),
    }
}

/// Writes the clean-shutdown marker for the active segment (after its index files).
pub(crate) fn write_clean_marker(
    storage: &dyn Storage,
    dir: &Path,
    active: &Segment,
) -> Result<()> {
    active.write_index(storage, dir)?;
    let path = dir.join(CLEAN_SHUTDOWN_FILE);
    let body = format!("{} {}\n", active.base.0, active.index().size);
    crate::storage::write_atomic(storage, &path, body.as_bytes())
        .map_err(|e| LogError::io("write clean-shutdown marker", &path, e))
}

fn check_order(dir: &Path, base: Offset, prev_end: Option<i64>) -> Result<()> {
    match prev_end {
        Some(end) if base.0 < end => Err(LogError::Corrupted {
            segment: dir.join(file_name(base, "log")),
            offset: base,
            reason: format!("segment starts at {base} but the previous segment ends at {end}"),
        }),
        _ => Ok(()),
    }
}

/// Used by the cleaner and tests: every batch of a segment, in order.
pub(crate) fn for_each_batch(
    seg: &Segment,
    mut f: impl FnMut(crate::batch::BatchView<'_>) -> Result<()>,
) -> Result<()> {
    let mut at = seg.base;
    loop {
        let Some(bytes) = seg.read(at, 1024 * 1024)? else {
            return Ok(());
        };
        let mut next = at;
        for b in BatchIter::new(&bytes) {
            let b =
                b.map_err(|e| LogError::Internal(format!("validated batch failed to parse: {e}")))?;
            if b.header.next_offset() <= at {
                continue;
            }
            next = b.header.next_offset();
            f(b)?;
        }
        if next <= at {
            return Ok(());
        }
        at = next;
    }
}

/// The segments of a partition as a reader not allowed to change anything must see them: every
/// `.log`, except that an unfinished compaction swap stands in for the segments it replaces.
fn read_only_layout(storage: &dyn Storage, dir: &Path) -> Result<Vec<(Offset, PathBuf)>> {
    let names = match storage.list_dir(dir) {
        Ok(n) => n,
        // The writer is creating this topic right now: nothing to read yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LogError::io("list partition dir", dir, e)),
    };
    let swaps: Vec<(i64, i64, &String)> = names
        .iter()
        .filter_map(|n| crate::cleaner::parse_swap_name(n).map(|(f, e)| (f, e, n)))
        .collect();
    let mut out: BTreeMap<i64, PathBuf> = BTreeMap::new();
    for n in &names {
        if let Some(b) = parse_base(n, "log") {
            if !swaps.iter().any(|(f, e, _)| b.0 > *f && b.0 < *e) {
                out.insert(b.0, dir.join(n));
            }
        }
    }
    for (f, _, n) in swaps {
        out.insert(f, dir.join(n));
    }
    Ok(out.into_iter().map(|(b, p)| (Offset(b), p)).collect())
}

/// Idempotent-producer state at open: the newest snapshot not beyond the log end, plus the
/// producer batches written after it, read back from the segments.
fn rebuild_producer_states(p: &PartitionShared) -> Result<crate::producer_state::ProducerStates> {
    let end = Offset(p.log_end.load(Ordering::Acquire));
    let loaded = crate::producer_state::load_snapshot(p.storage.as_ref(), &p.dir, end)?;
    let (from, mut states) = loaded.unwrap_or_default();
    replay_into(p, from, &mut states)?;
    Ok(states)
}

/// Replays the producer fields of every batch at or after `from` into `states`; returns the
/// offset after the last batch replayed (`from` if none).
fn replay_into(
    p: &PartitionShared,
    from: Offset,
    states: &mut crate::producer_state::ProducerStates,
) -> Result<Offset> {
    let mut end = from;
    for seg in p.snapshot() {
        if seg.index().next_offset <= from.0 {
            continue;
        }
        for_each_batch(&seg, |b| {
            if b.header.base_offset >= from {
                states.replay(&b);
                end = end.max(b.header.next_offset());
            }
            Ok(())
        })?;
    }
    Ok(end)
}
