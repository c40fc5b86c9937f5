//! Opening a partition's directory: recovery (interrupted compactions finished or discarded,
//! sealed segments loaded, the active segment validated and its torn tail truncated), the
//! clean-shutdown marker and layout epoch, the segment listing of read-only views, and
//! rebuilding idempotent-producer state by replaying batches.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;

/// Recovery: finishes or discards interrupted compactions, loads sealed segments, validates
/// the active segment and truncates its torn tail. Creates segment 0 in an empty directory.
pub(super) fn recover(
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
pub(super) const READ_ONLY_REFRESH_ATTEMPTS: usize = 3;

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
pub(super) fn take_clean_marker(
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

pub(super) fn check_order(dir: &Path, base: Offset, prev_end: Option<i64>) -> Result<()> {
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
pub(super) fn read_only_layout(
    storage: &dyn Storage,
    dir: &Path,
) -> Result<Vec<(Offset, PathBuf)>> {
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
pub(super) fn rebuild_producer_states(
    p: &PartitionShared,
) -> Result<crate::producer_state::ProducerStates> {
    let end = Offset(p.log_end.load(Ordering::Acquire));
    let loaded = crate::producer_state::load_snapshot(p.storage.as_ref(), &p.dir, end)?;
    let (from, mut states) = loaded.unwrap_or_default();
    replay_into(p, from, &mut states)?;
    Ok(states)
}

/// Replays the producer fields of every batch at or after `from` into `states`; returns the
/// offset after the last batch replayed (`from` if none).
pub(super) fn replay_into(
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
