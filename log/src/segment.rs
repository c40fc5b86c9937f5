//! One segment: a file of whole RecordBatch v2 batches named by its base offset, with its
//! sparse indexes.
//!
//! Owns: scanning (recovery of the active segment truncates a torn tail; sealed segments are
//! only header-walked when their index must be rebuilt), validated reads (every batch handed
//! out passed its length, magic, offset-order and CRC checks), and index files.
//!
//! Concurrency: the partition writer is the only writer of the active segment; readers use
//! positional reads bounded by `readable`, which the writer raises only after the flush policy
//! for those bytes is met, so a reader never sees bytes that could vanish.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;

use crate::batch::{BatchError, BatchHeader, BatchView, HEADER_LEN};
use crate::error::{LogError, Result};
use crate::index::SegmentIndex;
use crate::storage::{write_atomic, FileRef, OpenMode, Storage};
use crate::types::Offset;

/// Bytes read per I/O while scanning a segment.
const SCAN_CHUNK_BYTES: usize = 1024 * 1024;
/// Bytes read per I/O while walking headers to find a read's start.
const SEEK_CHUNK_BYTES: usize = 16 * 1024;

/// File name of a segment with `base`.
pub fn file_name(base: Offset, ext: &str) -> String {
    format!("{:020}.{ext}", base.0)
}

/// Parses `00000000000000000042.log` into 42.
pub fn parse_base(name: &str, ext: &str) -> Option<Offset> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(Offset)
}

/// What a read-only view found when it looked at the active segment again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extended {
    /// Nothing new.
    Same,
    /// New batches are readable.
    Grew,
    /// The file no longer continues what the view saw: reopen it.
    Diverged,
}

/// What to do when a sealed segment's index files are missing or stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexFiles {
    /// Rebuild and write them, with a warning: they should have been there (recovery).
    RebuildLoudly,
    /// Rebuild and write them quietly: the segment is new (compaction output).
    BuildQuietly,
    /// Rebuild in memory only: a read-only view writes nothing.
    ReadOnly,
}

/// Why a scan stopped before the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanStop {
    /// Byte position of the first bad batch.
    pub position: u64,
    /// What was wrong.
    pub reason: String,
}

/// A segment of a partition.
#[derive(Debug)]
pub struct Segment {
    /// Offset of the first batch.
    pub base: Offset,
    /// The `.log` file path.
    pub path: PathBuf,
    /// The open file.
    pub file: FileRef,
    index: RwLock<SegmentIndex>,
    readable: AtomicU64,
}

fn corrupted(path: &Path, offset: Offset, reason: impl Into<String>) -> LogError {
    LogError::Corrupted {
        segment: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

impl Segment {
    /// Creates an empty segment file and fsyncs it (the caller fsyncs the directory).
    pub fn create(storage: &dyn Storage, dir: &Path, base: Offset) -> Result<Segment> {
        let path = dir.join(file_name(base, "log"));
        let file = storage
            .open(&path, OpenMode::CreateTruncate)
            .map_err(|e| LogError::io("create segment", &path, e))?;
        file.sync_data()
            .map_err(|e| LogError::io("fsync new segment", &path, e))?;
        Ok(Segment {
            base,
            path,
            file,
            index: RwLock::new(SegmentIndex::new(base)),
            readable: AtomicU64::new(0),
        })
    }

    /// Opens a sealed segment, loading its index files or rebuilding them from the data.
    pub fn open_sealed(
        storage: &dyn Storage,
        dir: &Path,
        base: Offset,
        interval: u32,
    ) -> Result<Segment> {
        Segment::open_sealed_file(
            storage,
            dir,
            &dir.join(file_name(base, "log")),
            base,
            interval,
            IndexFiles::RebuildLoudly,
        )
    }

    /// Opens a sealed segment stored at `path` (a `.log`, or a `.swap` for a read-only view).
    /// Sealed segments are never written again, so the file is opened read-only. A rebuilt
    /// index is written back unless `index_files` is `ReadOnly`.
    pub fn open_sealed_file(
        storage: &dyn Storage,
        dir: &Path,
        path: &Path,
        base: Offset,
        interval: u32,
        index_files: IndexFiles,
    ) -> Result<Segment> {
        let (file, len) = open_with_len(storage, path, OpenMode::ReadOnly)?;
        // A `.swap` stands in for its segment in a read-only view; the `.index` files beside
        // it still belong to the old segment.
        let own_index = path == dir.join(file_name(base, "log"));
        let loaded = own_index
            .then(|| load_index_files(storage, dir, base, len))
            .flatten();
        let index = match loaded {
            Some(i) => i,
            None => {
                if index_files == IndexFiles::RebuildLoudly {
                    tracing::warn!(segment = %path.display(), "index missing or damaged; rebuilding from the segment");
                }
                let (index, stop) = scan(&file, path, base, len, interval, false)?;
                if let Some(stop) = stop {
                    // Sealed data is never truncated; reads past this point report Corrupted.
                    tracing::warn!(segment = %path.display(), position = stop.position, reason = %stop.reason,
                        "sealed segment has an invalid batch; reads reaching it will fail with Corrupted");
                } else if index_files != IndexFiles::ReadOnly {
                    write_index_files(storage, dir, base, &index)?;
                }
                index
            }
        };
        Ok(Segment {
            base,
            path: path.to_path_buf(),
            file,
            index: RwLock::new(index),
            readable: AtomicU64::new(len),
        })
    }

    /// Opens the active segment of a log another process writes: validates what is there
    /// (strictly, like recovery) but never truncates; readers see the valid prefix.
    pub fn open_active_read_only(
        storage: &dyn Storage,
        path: &Path,
        base: Offset,
        interval: u32,
    ) -> Result<Segment> {
        let (file, len) = open_with_len(storage, path, OpenMode::ReadOnly)?;
        let (index, _stop) = scan(&file, path, base, len, interval, true)?;
        Ok(Segment {
            base,
            path: path.to_path_buf(),
            file,
            readable: AtomicU64::new(index.size),
            index: RwLock::new(index),
        })
    }

    /// Read-only view: takes in whatever valid batches another process appended since the
    /// last look.
    pub fn extend_read_only(&self, interval: u32) -> Result<Extended> {
        let len = self
            .file
            .len()
            .map_err(|e| LogError::io("stat segment", &self.path, e))?;
        let start = self.index().clone();
        if len < start.size {
            return Ok(Extended::Diverged);
        }
        if len == start.size {
            return Ok(Extended::Same);
        }
        let old = start.size;
        let (index, stop) = scan_from(
            &self.file, &self.path, self.base, start, len, interval, true,
        )?;
        if index.size <= old {
            // Stuck where we left off on something that is not a batch still being written:
            // the writer rewrote this region after a failed write.
            let incomplete = stop
                .as_ref()
                .is_some_and(|s| s.reason.starts_with("incomplete batch"));
            return Ok(if incomplete {
                Extended::Same
            } else {
                Extended::Diverged
            });
        }
        let size = index.size;
        *self.index_mut() = index;
        self.set_readable(size);
        Ok(Extended::Grew)
    }

    /// Opens the active segment after a clean shutdown without scanning it: trusts its index
    /// files if they are intact and describe exactly `size` bytes; `None` otherwise (then the
    /// caller recovers it the slow way).
    pub fn open_clean_active(
        storage: &dyn Storage,
        dir: &Path,
        base: Offset,
        size: u64,
    ) -> Result<Option<Segment>> {
        let path = dir.join(file_name(base, "log"));
        let (file, len) = open_with_len(storage, &path, OpenMode::ReadWrite)?;
        if len != size {
            return Ok(None);
        }
        let index = load_index_files(storage, dir, base, len);
        Ok(index.map(|index| Segment {
            base,
            path,
            file,
            readable: AtomicU64::new(index.size),
            index: RwLock::new(index),
        }))
    }

    /// Recovers the active segment: validates every batch (length, magic, offsets, CRC) and
    /// truncates a torn tail. Returns the segment and the number of bytes truncated.
    pub fn recover_active(
        storage: &dyn Storage,
        dir: &Path,
        base: Offset,
        interval: u32,
    ) -> Result<(Segment, u64)> {
        let path = dir.join(file_name(base, "log"));
        let (file, len) = open_with_len(storage, &path, OpenMode::ReadWrite)?;
        let (index, stop) = scan(&file, &path, base, len, interval, true)?;
        let mut truncated = 0;
        if let Some(stop) = stop {
            truncated = len - stop.position;
            tracing::warn!(segment = %path.display(), position = stop.position, bytes = truncated,
                reason = %stop.reason, "truncating torn tail of the active segment");
            file.set_len(stop.position)
                .map_err(|e| LogError::io("truncate torn tail", &path, e))?;
            file.sync_data()
                .map_err(|e| LogError::io("fsync after truncate", &path, e))?;
        }
        let size = index.size;
        Ok((
            Segment {
                base,
                path,
                file,
                index: RwLock::new(index),
                readable: AtomicU64::new(size),
            },
            truncated,
        ))
    }

    /// Read access to the index.
    pub fn index(&self) -> RwLockReadGuard<'_, SegmentIndex> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Write access to the index (writer only).
    pub fn index_mut(&self) -> RwLockWriteGuard<'_, SegmentIndex> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes readers may see.
    pub fn readable(&self) -> u64 {
        self.readable.load(Ordering::Acquire)
    }

    /// Publishes bytes to readers (writer only, after the flush policy is met).
    pub fn set_readable(&self, bytes: u64) {
        self.readable.store(bytes, Ordering::Release);
    }

    /// Writes this segment's index files (at seal time, after compaction, after rebuild).
    pub fn write_index(&self, storage: &dyn Storage, dir: &Path) -> Result<()> {
        let index = self.index().clone();
        write_index_files(storage, dir, self.base, &index)
    }

    /// Position of the first batch containing an offset >= `offset`, or `None` if the
    /// segment's readable part has none. Walks headers from the sparse index entry.
    fn seek(&self, offset: Offset, limit: u64) -> Result<Option<(u64, BatchHeader)>> {
        let (mut pos, mut prev_next) = self.index().position_for(self.base, offset);
        let contiguous = self.index().contiguous;
        let mut buf = vec![0u8; SEEK_CHUNK_BYTES];
        while pos < limit {
            let want = ((limit - pos) as usize).min(buf.len());
            let n = self
                .file
                .read_full_at(&mut buf[..want], pos)
                .map_err(|e| LogError::io("read segment", &self.path, e))?;
            let mut at = 0usize;
            while at + HEADER_LEN <= n {
                let h = self.checked_header(
                    &buf[at..n],
                    prev_next,
                    contiguous,
                    pos + at as u64,
                    limit,
                )?;
                if h.next_offset() > offset {
                    return Ok(Some((pos + at as u64, h)));
                }
                prev_next = Some(h.next_offset());
                at += h.total_len();
            }
            if at == 0 && n < HEADER_LEN {
                return Err(corrupted(
                    &self.path,
                    prev_next.unwrap_or(self.base),
                    "partial batch header inside the readable range",
                ));
            }
            pos += at as u64;
        }
        Ok(None)
    }

    /// Parses a header and checks it against where it sits: inside the readable range, and at
    /// the offset the previous batch (or index entry) says. `baseOffset` is outside the CRC, so
    /// this check is what catches a flipped bit there.
    fn checked_header(
        &self,
        buf: &[u8],
        prev_next: Option<Offset>,
        contiguous: bool,
        pos: u64,
        limit: u64,
    ) -> Result<BatchHeader> {
        let at = prev_next.unwrap_or(self.base);
        let h = BatchHeader::parse(buf)
            .map_err(|e| corrupted(&self.path, at, format!("at byte {pos}: {e}")))?;
        if pos + h.total_len() as u64 > limit {
            return Err(corrupted(
                &self.path,
                at,
                format!("batch at byte {pos} runs past the segment's valid end"),
            ));
        }
        let misplaced = if contiguous && prev_next.is_some() {
            h.base_offset != at
        } else {
            h.base_offset < at
        };
        if misplaced || h.last_offset() < h.base_offset {
            return Err(corrupted(
                &self.path,
                at,
                format!(
                    "batch at byte {pos} has offset {} where {at} was expected",
                    h.base_offset
                ),
            ));
        }
        Ok(h)
    }

    /// Reads whole, CRC-checked batches starting with the one containing `offset`, up to
    /// `max_bytes` (at least one batch, so a large batch never stalls a reader).
    pub fn read(&self, offset: Offset, max_bytes: usize) -> Result<Option<Bytes>> {
        let limit = self.readable();
        let Some((start, first)) = self.seek(offset, limit)? else {
            return Ok(None);
        };
        let len = (max_bytes.max(first.total_len()) as u64).min(limit - start) as usize;
        let mut buf = vec![0u8; len];
        let n = self
            .file
            .read_full_at(&mut buf, start)
            .map_err(|e| LogError::io("read segment", &self.path, e))?;
        buf.truncate(n);
        let mut at = 0usize;
        let mut prev_next: Option<Offset> = None;
        let contiguous = self.index().contiguous;
        while at < buf.len() {
            let view = match BatchView::parse(&buf[at..]) {
                Ok(v) => v,
                Err(BatchError::Truncated { .. }) if at > 0 => break,
                Err(e) => {
                    return Err(corrupted(
                        &self.path,
                        prev_next.unwrap_or(first.base_offset),
                        e.to_string(),
                    ))
                }
            };
            if let Some(p) = prev_next {
                let b = view.header.base_offset;
                if b < p || (contiguous && b != p) {
                    return Err(corrupted(
                        &self.path,
                        p,
                        format!("batch has offset {b} where {p} was expected"),
                    ));
                }
            }
            view.verify_crc()
                .map_err(|e| corrupted(&self.path, view.header.base_offset, e.to_string()))?;
            prev_next = Some(view.header.next_offset());
            at += view.bytes.len();
        }
        buf.truncate(at);
        Ok(Some(Bytes::from(buf)))
    }
}

/// Writes `.index` and `.timeindex` crash-safely.
pub fn write_index_files(
    storage: &dyn Storage,
    dir: &Path,
    base: Offset,
    index: &SegmentIndex,
) -> Result<()> {
    let op = dir.join(file_name(base, "index"));
    write_atomic(storage, &op, &index.encode_offset_file())
        .map_err(|e| LogError::io("write index", &op, e))?;
    let tp = dir.join(file_name(base, "timeindex"));
    write_atomic(storage, &tp, &index.encode_time_file())
        .map_err(|e| LogError::io("write time index", &tp, e))?;
    Ok(())
}

/// Walks the batches of a segment file, building its index. Stops at the first batch that is
/// incomplete or invalid and says where and why. `strict` (the active segment) also checks
/// CRCs and that batches are contiguous, since recovery must trust what it keeps.
pub fn scan(
    file: &FileRef,
    path: &Path,
    base: Offset,
    len: u64,
    interval: u32,
    strict: bool,
) -> Result<(SegmentIndex, Option<ScanStop>)> {
    scan_from(
        file,
        path,
        base,
        SegmentIndex::new(base),
        len,
        interval,
        strict,
    )
}

/// Like [`scan`], continuing from an index that already covers the start of the file.
pub fn scan_from(
    file: &FileRef,
    path: &Path,
    base: Offset,
    start: SegmentIndex,
    len: u64,
    interval: u32,
    strict: bool,
) -> Result<(SegmentIndex, Option<ScanStop>)> {
    let mut pos = start.size;
    let mut expected = Offset(start.next_offset);
    let mut index = start;
    let mut buf: Vec<u8> = Vec::new();
    while pos < len {
        let want = ((len - pos) as usize).min(SCAN_CHUNK_BYTES.max(buf.capacity()));
        buf.resize(want, 0);
        let n = file
            .read_full_at(&mut buf, pos)
            .map_err(|e| LogError::io("scan segment", path, e))?;
        buf.truncate(n);
        let mut at = 0usize;
        loop {
            let rest = &buf[at..];
            if rest.is_empty() {
                break;
            }
            let stop = |reason: String| {
                Ok((
                    index.clone(),
                    Some(ScanStop {
                        position: pos + at as u64,
                        reason,
                    }),
                ))
            };
            let view = match BatchView::parse(rest) {
                Ok(v) => v,
                Err(BatchError::Truncated { needed, .. }) => {
                    if pos + at as u64 + needed as u64 > len {
                        return stop(format!(
                            "incomplete batch: needs {needed} bytes, file ends first"
                        ));
                    }
                    if at == 0 {
                        // A batch larger than the chunk: read it whole next round.
                        buf.reserve(needed);
                    }
                    break;
                }
                Err(e) => return stop(e.to_string()),
            };
            let h = view.header;
            let misplaced = if strict {
                h.base_offset != expected
            } else {
                h.base_offset < expected
            };
            if misplaced || h.last_offset() < h.base_offset {
                return stop(format!(
                    "batch offset {} where >= {} was expected",
                    h.base_offset, expected
                ));
            }
            if strict {
                if let Err(e) = view.verify_crc() {
                    return stop(e.to_string());
                }
            }
            index.on_batch(base, &h, pos + at as u64, interval);
            expected = h.next_offset();
            at += view.bytes.len();
        }
        pos += at as u64;
    }
    Ok((index, None))
}

/// Opens a segment file and reads its length.
fn open_with_len(storage: &dyn Storage, path: &Path, mode: OpenMode) -> Result<(FileRef, u64)> {
    let file = storage
        .open(path, mode)
        .map_err(|e| LogError::io("open segment", path, e))?;
    let len = file
        .len()
        .map_err(|e| LogError::io("stat segment", path, e))?;
    Ok((file, len))
}

/// Loads a segment's `.index` and `.timeindex`; `None` if either is missing, damaged or does
/// not describe a segment of `len` bytes.
fn load_index_files(
    storage: &dyn Storage,
    dir: &Path,
    base: Offset,
    len: u64,
) -> Option<SegmentIndex> {
    let read = |ext: &str| crate::storage::read_all(storage, &dir.join(file_name(base, ext))).ok();
    SegmentIndex::decode_files(&read("index")?, &read("timeindex")?, len)
}
