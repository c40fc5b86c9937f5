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
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use bytes::Bytes;
use event_listener::Event;

use std::sync::OnceLock;

use crate::batch::{BatchError, BatchIter, RecordIter, Records};
use crate::clock::Clock;
use crate::config::TopicConfig;
use crate::error::{LogError, Result};
use crate::producer_state::AbortedTxn;
use crate::queue::AppendQueue;
use crate::record::RecordView;
use crate::segment::{file_name, parse_base, Extended, IndexFiles, Segment};
use crate::storage::Storage;
use crate::types::{Offset, PartitionId, Timestamp};

mod recovery;

use recovery::*;
pub(crate) use recovery::{bump_layout_epoch, for_each_batch, write_clean_marker};

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
    /// The compressed batches' records by base offset, decompressed on the first `records()`
    /// call, so record views can borrow from the fetch.
    inflated: OnceLock<Vec<(Offset, Result<Records<'static>, BatchError>)>>,
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
    /// records of aborted transactions. Compressed batches are decompressed.
    pub fn records(
        &self,
    ) -> impl Iterator<Item = Result<RecordView<'_>, crate::batch::BatchError>> + '_ {
        let from = self.from;
        let inflated = self.inflated.get_or_init(|| self.inflate_compressed());
        BatchIter::new(&self.batches)
            .flat_map(move |b| -> Box<dyn Iterator<Item = _>> {
                let inflated = match &b {
                    Ok(b) if b.header.compression() != 0 => inflated
                        .binary_search_by_key(&b.header.base_offset, |(base, _)| *base)
                        .ok()
                        .map(|i| &inflated[i].1),
                    _ => None,
                };
                match (b, inflated) {
                    (Ok(b), _) if b.header.is_control() || self.is_aborted(&b.header) => {
                        Box::new(std::iter::empty())
                    }
                    (Ok(_), Some(Ok(records))) => Box::new(records.iter()),
                    (Ok(_), Some(Err(e))) => Box::new(std::iter::once(Err(e.clone()))),
                    (Ok(b), None) => Box::new(b.records() as RecordIter<'_>),
                    (Err(e), _) => Box::new(std::iter::once(Err(e))),
                }
            })
            .filter(move |r| r.as_ref().map_or(true, |r| r.offset >= from))
    }

    /// Decompresses every compressed batch, in order (none: no allocation).
    fn inflate_compressed(&self) -> Vec<(Offset, Result<Records<'static>, BatchError>)> {
        BatchIter::new(&self.batches)
            .filter_map(|b| b.ok())
            .filter(|b| b.header.compression() != 0)
            .map(|b| (b.header.base_offset, b.inflate().map(Records::into_owned)))
            .collect()
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
    /// The log's fsync latency counters (shared by all its partitions).
    pub(crate) fsync: Arc<crate::fsync_stats::FsyncStats>,
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
            inflated: OnceLock::new(),
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
                    inflated: OnceLock::new(),
                };
                for b in BatchIter::new(&fetch.batches) {
                    let b = b.map_err(|e| {
                        LogError::Internal(format!("validated batch failed to parse: {e}"))
                    })?;
                    if b.header.max_timestamp < ts || b.header.is_control() {
                        continue;
                    }
                    let corrupt = |e: BatchError| LogError::Corrupted {
                        segment: seg.path.clone(),
                        offset: b.header.base_offset,
                        reason: e.to_string(),
                    };
                    let records = b.inflate().map_err(corrupt)?;
                    for r in records.iter() {
                        let r = r.map_err(corrupt)?;
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
    pub fsync: Arc<crate::fsync_stats::FsyncStats>,
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
            fsync,
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
            fsync,
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
            fsync: env.fsync,
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
