//! Retention and compaction of sealed segments; the active segment is never touched.
//!
//! Retention drops whole sealed segments beyond `retention.ms` (by the segment's largest
//! timestamp) or `retention.bytes`, advancing the log start offset first so no reader is
//! handed a segment that is going away.
//!
//! Compaction (`cleanup.policy=compact`) keeps the latest record per key among the cleanable
//! sealed segments (those older than `min.compaction.lag.ms`), keeps original offsets (gaps are
//! fine) and drops tombstones older than `delete.retention.ms`. Adjacent segments are merged
//! while their input fits `segment.bytes`. Crash safety, per group of segments:
//! 1. write `<first>.log.cleaned`, fsync;
//! 2. rename it to `<first>.<end>.swap`, fsync the directory: the commit point;
//! 3. delete the group's old files, rename the swap to `<first>.log`, fsync the directory.
//!
//! Recovery deletes `.cleaned` files and finishes any `.swap` (see `partition::recover`).
//! Readers never see a half state: the in-memory segment map is swapped under its write lock,
//! and a reader already inside an old segment keeps reading the old file's bytes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::batch::{rebuild_with, BatchView};
use crate::error::{LogError, Result};
use crate::partition::{for_each_batch, PartitionShared};
use crate::segment::{file_name, parse_base, IndexFiles, Segment};
use crate::storage::{OpenMode, Storage};
use crate::types::Offset;

/// Most distinct keys held in one compaction pass: bounds the pass's memory (Kafka bounds its
/// dedupe buffer the same way); later segments are cleaned by the next pass.
const COMPACTION_KEYS_MAX: usize = 4_000_000;

/// What a compaction pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionStats {
    /// Segments read.
    pub segments_in: usize,
    /// Segments written.
    pub segments_out: usize,
    /// Records read.
    pub records_in: u64,
    /// Records kept.
    pub records_out: u64,
    /// Bytes before.
    pub bytes_in: u64,
    /// Bytes after.
    pub bytes_out: u64,
}

/// `<first>.<end>.swap` → (first, end).
pub(crate) fn parse_swap_name(name: &str) -> Option<(i64, i64)> {
    let stem = name.strip_suffix(".swap")?;
    let (a, b) = stem.split_once('.')?;
    if a.len() != 20 || b.len() != 20 {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn swap_name(first: Offset, end: Offset) -> String {
    format!("{:020}.{:020}.swap", first.0, end.0)
}

fn remove_if_exists(storage: &dyn Storage, path: &Path) -> Result<()> {
    if storage.exists(path) {
        storage
            .remove_file(path)
            .map_err(|e| LogError::io("remove segment file", path, e))?;
    }
    Ok(())
}

fn remove_segment_files(storage: &dyn Storage, dir: &Path, base: Offset) -> Result<()> {
    // The data file goes first: an index without data is removed at recovery.
    for ext in ["log", "index", "timeindex"] {
        remove_if_exists(storage, &dir.join(file_name(base, ext)))?;
    }
    Ok(())
}

/// Step 3 of a compaction swap; idempotent, so recovery can repeat it.
pub(crate) fn finish_swap(
    storage: &dyn Storage,
    dir: &Path,
    first: Offset,
    end: Offset,
) -> Result<()> {
    let names = storage
        .list_dir(dir)
        .map_err(|e| LogError::io("list partition dir", dir, e))?;
    for n in &names {
        if let Some(b) = parse_base(n, "log") {
            if b > first && b < end {
                remove_segment_files(storage, dir, b)?;
            }
        }
    }
    remove_if_exists(storage, &dir.join(file_name(first, "index")))?;
    remove_if_exists(storage, &dir.join(file_name(first, "timeindex")))?;
    // The unlinks must be durable before the rename that removes the `.swap` recovery redoes.
    storage
        .sync_dir(dir)
        .map_err(|e| LogError::io("fsync partition dir", dir, e))?;
    let swap = dir.join(swap_name(first, end));
    storage
        .rename(&swap, &dir.join(file_name(first, "log")))
        .map_err(|e| LogError::io("install compacted segment", &swap, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| LogError::io("fsync partition dir", dir, e))
}

/// Applies `retention.ms` / `retention.bytes`; returns the number of segments deleted.
pub(crate) fn apply_retention(p: &PartitionShared) -> Result<usize> {
    let cfg = &p.config;
    if !cfg.cleanup_delete || (cfg.retention_ms.is_none() && cfg.retention_bytes.is_none()) {
        return Ok(0);
    }
    let _guard = p.cleaner_lock.lock().unwrap_or_else(|e| e.into_inner());
    if p.deleted.load(Ordering::Acquire) {
        return Ok(0);
    }
    let segs = p.snapshot();
    let Some((active, sealed)) = segs.split_last() else {
        return Ok(0);
    };
    let now = p.clock.now().0;
    let mut total: u64 = segs.iter().map(|s| s.readable()).sum();
    let mut doomed = Vec::new();
    for seg in sealed {
        let size = seg.readable();
        let expired = cfg
            .retention_ms
            .is_some_and(|ms| seg.index().max_timestamp < now - ms);
        let oversize = cfg.retention_bytes.is_some_and(|max| total - size >= max);
        if !(expired || oversize) {
            break;
        }
        total -= size;
        doomed.push(seg.clone());
    }
    if doomed.is_empty() {
        return Ok(0);
    }
    // Never below a start set by `delete_records_before`.
    let new_start = segs
        .get(doomed.len())
        .map_or(active.base, |s| s.base)
        .max(Offset(p.log_start.load(Ordering::Acquire)));
    {
        let mut map = p.segments.write().unwrap_or_else(|e| e.into_inner());
        p.log_start.store(new_start.0, Ordering::Release);
        for s in &doomed {
            map.remove(&s.base.0);
        }
    }
    for s in &doomed {
        remove_segment_files(p.storage.as_ref(), &p.dir, s.base)?;
        tracing::info!(topic = %p.topic, partition = %p.id, base = %s.base, "retention deleted segment");
    }
    p.storage
        .sync_dir(&p.dir)
        .map_err(|e| LogError::io("fsync partition dir", &p.dir, e))?;
    crate::partition::bump_layout_epoch(p.storage.as_ref(), &p.dir)?;
    Ok(doomed.len())
}

/// The file holding a log start offset set above the first segment's base.
pub(crate) const LOG_START_FILE: &str = "log-start-offset";

/// Reads the persisted log start offset of a partition: `None` when DeleteRecords never ran.
/// An unreadable or garbled file is an error, never taken for a missing one: that would
/// silently bring back records a DeleteRecords removed.
pub(crate) fn read_log_start(storage: &dyn Storage, dir: &Path) -> Result<Option<i64>> {
    let path = dir.join(LOG_START_FILE);
    let b = match crate::storage::read_all(storage, &path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io("read log start offset", &path, e)),
    };
    let text = String::from_utf8_lossy(&b);
    match text.trim().parse::<i64>() {
        Ok(o) if o >= 0 => Ok(Some(o)),
        _ => Err(LogError::Corrupted {
            segment: path,
            offset: Offset(0),
            reason: format!(
                "the log start offset file holds {:?}, not an offset; restore it from a backup or delete it to keep every record",
                text.chars().take(40).collect::<String>()
            ),
        }),
    }
}

/// Kafka's DeleteRecords: makes everything below `before` (at most the high watermark)
/// unreadable. The new start is persisted before it takes effect; whole segments below it are
/// deleted. Returns the log start offset after the call.
pub(crate) fn delete_records_before(p: &PartitionShared, before: Offset) -> Result<Offset> {
    let _guard = p.cleaner_lock.lock().unwrap_or_else(|e| e.into_inner());
    let current = Offset(p.log_start.load(Ordering::Acquire));
    if p.deleted.load(Ordering::Acquire) {
        return Ok(current);
    }
    let before = before.min(Offset(p.high_watermark.load(Ordering::Acquire)));
    if before <= current {
        return Ok(current);
    }
    let path = p.dir.join(LOG_START_FILE);
    crate::storage::write_atomic(
        p.storage.as_ref(),
        &path,
        format!("{}\n", before.0).as_bytes(),
    )
    .map_err(|e| LogError::io("persist log start offset", &path, e))?;
    let segs = p.snapshot();
    let sealed = segs.split_last().map_or(&[][..], |(_, s)| s);
    let doomed: Vec<Arc<Segment>> = sealed
        .iter()
        .take_while(|s| s.index().next_offset <= before.0)
        .cloned()
        .collect();
    {
        let mut map = p.segments.write().unwrap_or_else(|e| e.into_inner());
        p.log_start.store(before.0, Ordering::Release);
        for s in &doomed {
            map.remove(&s.base.0);
        }
    }
    for s in &doomed {
        remove_segment_files(p.storage.as_ref(), &p.dir, s.base)?;
    }
    if !doomed.is_empty() {
        p.storage
            .sync_dir(&p.dir)
            .map_err(|e| LogError::io("fsync partition dir", &p.dir, e))?;
        crate::partition::bump_layout_epoch(p.storage.as_ref(), &p.dir)?;
    }
    Ok(before)
}

/// One compaction pass over the cleanable sealed segments.
pub(crate) fn compact(p: &PartitionShared) -> Result<CompactionStats> {
    let cfg = p.config.clone();
    let mut stats = CompactionStats::default();
    if !cfg.cleanup_compact {
        return Ok(stats);
    }
    let _guard = p.cleaner_lock.lock().unwrap_or_else(|e| e.into_inner());
    if p.deleted.load(Ordering::Acquire) {
        return Ok(stats);
    }
    let segs = p.snapshot();
    let now = p.clock.now().0;
    let Some((_, sealed)) = segs.split_last() else {
        return Ok(stats);
    };
    // Never past the last stable offset: an open transaction may still abort, and its records
    // must not displace the committed values they would supersede.
    let lso = p.last_stable_offset().0;
    let cleanable: Vec<Arc<Segment>> = sealed
        .iter()
        .take_while(|s| {
            let idx = s.index();
            idx.max_timestamp <= now - cfg.min_compaction_lag_ms && idx.next_offset <= lso
        })
        .cloned()
        .collect();
    // Records of aborted transactions never count, and are dropped.
    let aborted = p.aborted.read().unwrap_or_else(|e| e.into_inner()).clone();
    let is_aborted = |h: &crate::batch::BatchHeader| {
        h.is_transactional()
            && !h.is_control()
            && aborted.iter().any(|a| {
                a.producer_id == h.producer_id
                    && a.first_offset <= h.base_offset.0
                    && h.base_offset.0 <= a.last_offset
            })
    };
    // Latest offset per key over the cleanable range.
    let mut latest: HashMap<Vec<u8>, i64> = HashMap::new();
    let mut in_pass = 0usize;
    for seg in &cleanable {
        if latest.len() >= COMPACTION_KEYS_MAX {
            break;
        }
        for_each_batch(seg, |b| {
            if b.header.is_control() || is_aborted(&b.header) {
                return Ok(());
            }
            let records = b.inflate().map_err(|e| corrupt(seg, &b, e))?;
            for r in records.iter() {
                let r = r.map_err(|e| corrupt(seg, &b, e))?;
                if let Some(k) = r.key {
                    latest.insert(k.to_vec(), r.offset.0);
                }
            }
            Ok(())
        })?;
        in_pass += 1;
    }
    let cleanable = &cleanable[..in_pass];
    if cleanable.is_empty() {
        return Ok(stats);
    }
    // Group adjacent segments whose input fits one segment.
    let mut groups: Vec<Vec<Arc<Segment>>> = Vec::new();
    let mut group_bytes = 0u64;
    for seg in cleanable {
        let size = seg.readable();
        // Index entries hold offsets relative to the group's base as u32: bound the span too.
        let fits_offsets =
            |g: &Vec<Arc<Segment>>| seg.index().next_offset - g[0].base.0 <= i64::from(u32::MAX);
        match groups.last_mut() {
            Some(g) if group_bytes + size <= cfg.segment_bytes && fits_offsets(g) => {
                g.push(seg.clone());
                group_bytes += size;
            }
            _ => {
                groups.push(vec![seg.clone()]);
                group_bytes = size;
            }
        }
    }
    let tombstone_horizon = now - cfg.delete_retention_ms;
    for group in groups {
        let mut out = Vec::new();
        for seg in &group {
            stats.segments_in += 1;
            stats.bytes_in += seg.readable();
            for_each_batch(seg, |b| {
                if b.header.is_control() {
                    out.extend_from_slice(b.bytes);
                    return Ok(());
                }
                if is_aborted(&b.header) {
                    let n = u64::try_from(b.header.record_count).unwrap_or(0);
                    stats.records_in += n;
                    return Ok(());
                }
                let mut keep = Vec::new();
                let mut total = 0u64;
                let records = b.inflate().map_err(|e| corrupt(seg, &b, e))?;
                for r in records.iter() {
                    let r = r.map_err(|e| corrupt(seg, &b, e))?;
                    total += 1;
                    let newest = r.key.is_none_or(|k| latest.get(k) == Some(&r.offset.0));
                    let expired_tombstone = r.value.is_none() && r.timestamp.0 < tombstone_horizon;
                    if newest && !expired_tombstone {
                        keep.push(r);
                    }
                }
                stats.records_in += total;
                stats.records_out += keep.len() as u64;
                if keep.len() as u64 == total {
                    out.extend_from_slice(b.bytes);
                } else if !keep.is_empty() {
                    out.extend_from_slice(&rebuild_with(&b, &keep));
                }
                Ok(())
            })?;
        }
        stats.bytes_out += out.len() as u64;
        if replace_group(p, &segs, &group, &out)? {
            stats.segments_out += 1;
        }
    }
    if stats.segments_out > 0 {
        crate::partition::bump_layout_epoch(p.storage.as_ref(), &p.dir)?;
    }
    Ok(stats)
}

fn corrupt(seg: &Segment, b: &BatchView<'_>, e: crate::batch::BatchError) -> LogError {
    LogError::Corrupted {
        segment: seg.path.clone(),
        offset: b.header.base_offset,
        reason: e.to_string(),
    }
}

/// Installs `out` in place of `group`, crash-safely; returns whether a segment was written.
/// An empty `out` still becomes an (empty) segment, so the log start offset stays put.
fn replace_group(
    p: &PartitionShared,
    all: &[Arc<Segment>],
    group: &[Arc<Segment>],
    out: &[u8],
) -> Result<bool> {
    let storage = p.storage.as_ref();
    let dir = &p.dir;
    let first = group[0].base;
    let last = group[group.len() - 1].base;
    let end = all
        .iter()
        .find(|s| s.base > last)
        .map(|s| s.base)
        .ok_or_else(|| LogError::Internal("compacted group has no following segment".into()))?;
    let unchanged = group.len() == 1 && out.len() as u64 == group[0].readable();
    if unchanged {
        return Ok(false);
    }
    let cleaned = dir.join(format!("{}.cleaned", file_name(first, "log")));
    let f = storage
        .open(&cleaned, OpenMode::CreateTruncate)
        .map_err(|e| LogError::io("create cleaned segment", &cleaned, e))?;
    f.write_all_at(out, 0)
        .map_err(|e| LogError::io("write cleaned segment", &cleaned, e))?;
    f.sync_data()
        .map_err(|e| LogError::io("fsync cleaned segment", &cleaned, e))?;
    drop(f);
    let swap = dir.join(swap_name(first, end));
    storage
        .rename(&cleaned, &swap)
        .map_err(|e| LogError::io("rename to swap", &swap, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| LogError::io("fsync partition dir", dir, e))?;
    finish_swap(storage, dir, first, end)?;
    let log_path = dir.join(file_name(first, "log"));
    let seg = Arc::new(Segment::open_sealed_file(
        storage,
        dir,
        &log_path,
        first,
        p.config.index_interval_bytes,
        IndexFiles::BuildQuietly,
    )?);
    let mut map = p.segments.write().unwrap_or_else(|e| e.into_inner());
    for s in group {
        map.remove(&s.base.0);
    }
    map.insert(first.0, seg);
    Ok(true)
}
