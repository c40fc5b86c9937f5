//! A simulated file system for crash and fault tests (power loss, torn writes, ENOSPC, EIO).
//!
//! Each file keeps the bytes written (`data`) and the bytes made durable by the last
//! `sync_data` (`synced`). Creating, renaming and removing a file changes only the live
//! namespace until `sync_dir` of its parent makes it durable. [`SimStorage::crash`] returns
//! the file system a machine would see after power loss: the durable namespace with synced
//! contents, plus optionally a torn prefix of each file's unsynced appended tail.
//!
//! Simplification, stated: directories themselves (create, rename, remove) are durable at once.
//!
//! Also here, as test support: [`SeededRng`], the seeded random source randomized tests share.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::storage::{DirLock, FileRef, OpenMode, Storage, StorageFile};

#[derive(Debug, Clone)]
struct Inode {
    data: Vec<u8>,
    synced: Vec<u8>,
    /// Lowest byte changed since the last sync (`usize::MAX` when clean), so a sync copies
    /// only what changed.
    dirty_from: usize,
}

impl Default for Inode {
    fn default() -> Self {
        Inode {
            data: Vec::new(),
            synced: Vec::new(),
            dirty_from: usize::MAX,
        }
    }
}

type InodeRef = Arc<Mutex<Inode>>;

/// Faults to inject.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Fail the N-th `write_all_at` from now (1 = the next) with ENOSPC, after writing
    /// `partial_write_bytes` of it.
    pub enospc_on_write: Option<u64>,
    /// Bytes the failing write still puts down before failing (a short write).
    pub partial_write_bytes: usize,
    /// Keep failing every write after the first ENOSPC until cleared.
    pub sticky_enospc: bool,
    /// Fail the N-th `sync_data` from now with EIO.
    pub eio_on_sync: Option<u64>,
    /// Make every `sync_data` take this long (a slow disk, for backpressure tests).
    pub sync_delay: Option<std::time::Duration>,
    /// Writes to files whose path contains this are neither counted nor failed by
    /// `enospc_on_write` (a background writer whose timing a test does not control).
    pub spare_paths_containing: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    live: BTreeMap<PathBuf, InodeRef>,
    durable: BTreeMap<PathBuf, InodeRef>,
    dirs: BTreeSet<PathBuf>,
    faults: Faults,
    disk_full: bool,
    writes: u64,
    syncs: u64,
}

/// The simulated file system. Clones share state.
#[derive(Debug, Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct SimFile {
    inode: InodeRef,
    fs: Arc<Mutex<State>>,
    writable: bool,
    path: PathBuf,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock leaves consistent data behind; go on.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn not_found(p: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", p.display()),
    )
}

impl SimStorage {
    /// An empty file system.
    pub fn new() -> SimStorage {
        SimStorage::default()
    }

    /// Replaces the injected faults.
    pub fn inject(&self, faults: Faults) {
        let mut s = lock(&self.state);
        s.faults = faults;
        s.disk_full = false;
    }

    /// Number of `write_all_at` and `sync_data` calls so far.
    pub fn io_counts(&self) -> (u64, u64) {
        let s = lock(&self.state);
        (s.writes, s.syncs)
    }

    /// The file system after a power loss. `keep_unsynced` bytes of each file's unsynced
    /// appended tail survive (a torn write); `garbage` replaces them with 0xA5 bytes instead.
    pub fn crash(&self, keep_unsynced: usize, garbage: bool) -> SimStorage {
        let s = lock(&self.state);
        let mut next = State {
            dirs: s.dirs.clone(),
            ..State::default()
        };
        for (path, inode) in &s.durable {
            let i = lock(inode);
            let mut data = i.synced.clone();
            if i.data.len() > i.synced.len() && i.data.starts_with(&i.synced) {
                let extra = &i.data[i.synced.len()..];
                let keep = extra.len().min(keep_unsynced);
                if garbage {
                    data.extend(std::iter::repeat_n(0xA5u8, keep));
                } else {
                    data.extend_from_slice(&extra[..keep]);
                }
            }
            let fresh = Arc::new(Mutex::new(Inode {
                synced: data.clone(),
                data,
                dirty_from: usize::MAX,
            }));
            next.live.insert(path.clone(), fresh.clone());
            next.durable.insert(path.clone(), fresh);
        }
        SimStorage {
            state: Arc::new(Mutex::new(next)),
        }
    }

    /// The live bytes of a file (for tests that corrupt files on purpose).
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let s = lock(&self.state);
        s.live.get(path).map(|i| lock(i).data.clone())
    }

    /// Overwrites a file's live and synced bytes (as a bit flip on the medium would).
    pub fn set_file_bytes(&self, path: &Path, bytes: Vec<u8>) {
        let s = lock(&self.state);
        if let Some(i) = s.live.get(path) {
            let mut i = lock(i);
            i.synced = bytes.clone();
            i.data = bytes;
            i.dirty_from = usize::MAX;
        }
    }
}

impl StorageFile for SimFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let i = lock(&self.inode);
        let pos = pos as usize;
        if pos >= i.data.len() {
            return Ok(0);
        }
        let n = buf.len().min(i.data.len() - pos);
        buf[..n].copy_from_slice(&i.data[pos..pos + n]);
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only"));
        }
        let mut partial = buf.len();
        let mut fail = false;
        {
            let mut s = lock(&self.fs);
            s.writes += 1;
            let spared = s
                .faults
                .spare_paths_containing
                .as_deref()
                .is_some_and(|p| self.path.to_string_lossy().contains(p));
            if spared {
                // Neither counted nor failed.
            } else if s.disk_full {
                partial = 0;
                fail = true;
            } else if let Some(n) = s.faults.enospc_on_write {
                if n <= 1 {
                    s.faults.enospc_on_write = None;
                    partial = s.faults.partial_write_bytes.min(buf.len());
                    fail = true;
                    s.disk_full = s.faults.sticky_enospc;
                } else {
                    s.faults.enospc_on_write = Some(n - 1);
                }
            }
        }
        let mut i = lock(&self.inode);
        let pos = pos as usize;
        let end = pos + partial;
        if i.data.len() < end {
            i.data.resize(end, 0);
        }
        i.data[pos..end].copy_from_slice(&buf[..partial]);
        i.dirty_from = i.dirty_from.min(pos);
        if fail {
            return Err(io::Error::from_raw_os_error(28));
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let delay = lock(&self.fs).faults.sync_delay;
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        {
            let mut s = lock(&self.fs);
            s.syncs += 1;
            if let Some(n) = s.faults.eio_on_sync {
                if n <= 1 {
                    s.faults.eio_on_sync = None;
                    return Err(io::Error::from_raw_os_error(5));
                }
                s.faults.eio_on_sync = Some(n - 1);
            }
        }
        let mut guard = lock(&self.inode);
        let i = &mut *guard;
        let keep = i.dirty_from.min(i.data.len()).min(i.synced.len());
        i.synced.truncate(keep);
        i.synced.extend_from_slice(&i.data[keep..]);
        i.dirty_from = usize::MAX;
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut i = lock(&self.inode);
        i.data.resize(len as usize, 0);
        i.dirty_from = i.dirty_from.min(len as usize);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.inode).data.len() as u64)
    }
}

#[derive(Debug)]
struct SimLock;
impl DirLock for SimLock {}

impl Storage for SimStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        for a in path.ancestors() {
            s.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<FileRef> {
        let mut s = lock(&self.state);
        let parent_ok = path.parent().is_none_or(|p| s.dirs.contains(p));
        let existing = s.live.get(path).cloned();
        let inode = match (mode, existing) {
            (OpenMode::CreateNew, Some(_)) => {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists"));
            }
            (OpenMode::CreateNew | OpenMode::CreateTruncate, None) => {
                if !parent_ok {
                    return Err(not_found(path));
                }
                let i: InodeRef = Arc::default();
                s.live.insert(path.to_path_buf(), i.clone());
                i
            }
            (OpenMode::CreateTruncate, Some(i)) => {
                let mut g = lock(&i);
                g.data.clear();
                g.dirty_from = 0;
                drop(g);
                i
            }
            (_, Some(i)) => i,
            (_, None) => return Err(not_found(path)),
        };
        Ok(Arc::new(SimFile {
            inode,
            fs: self.state.clone(),
            writable: mode != OpenMode::ReadOnly,
            path: path.to_path_buf(),
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.live
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.live.retain(|p, _| !p.starts_with(path));
        s.durable.retain(|p, _| !p.starts_with(path));
        s.dirs.retain(|p| !p.starts_with(path));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        if let Some(i) = s.live.remove(from) {
            s.live.insert(to.to_path_buf(), i);
            return Ok(());
        }
        if !s.dirs.contains(from) {
            return Err(not_found(from));
        }
        // Directory rename: durable at once (see module docs).
        let moved = |m: &mut BTreeMap<PathBuf, InodeRef>| {
            let keys: Vec<PathBuf> = m.keys().filter(|p| p.starts_with(from)).cloned().collect();
            for k in keys {
                if let (Some(i), Ok(rest)) = (m.remove(&k), k.strip_prefix(from)) {
                    m.insert(to.join(rest), i);
                }
            }
        };
        moved(&mut s.live);
        moved(&mut s.durable);
        let dirs: Vec<PathBuf> = s
            .dirs
            .iter()
            .filter(|p| p.starts_with(from))
            .cloned()
            .collect();
        for d in dirs {
            s.dirs.remove(&d);
            if let Ok(rest) = d.strip_prefix(from) {
                s.dirs.insert(to.join(rest));
            }
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let s = lock(&self.state);
        if !s.dirs.contains(path) {
            return Err(not_found(path));
        }
        let mut out: BTreeSet<String> = BTreeSet::new();
        let files = s.live.keys();
        let dirs = s.dirs.iter();
        for p in files.chain(dirs) {
            if p.parent() == Some(path) {
                if let Some(n) = p.file_name() {
                    out.insert(n.to_string_lossy().into_owned());
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        let live: Vec<(PathBuf, InodeRef)> = s
            .live
            .iter()
            .filter(|(p, _)| p.parent() == Some(path))
            .map(|(p, i)| (p.clone(), i.clone()))
            .collect();
        s.durable.retain(|p, _| p.parent() != Some(path));
        s.durable.extend(live);
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let s = lock(&self.state);
        s.live.contains_key(path) || s.dirs.contains(path)
    }

    fn lock_dir(&self, _path: &Path) -> io::Result<Option<Box<dyn DirLock>>> {
        Ok(Some(Box::new(SimLock)))
    }
}

/// A small deterministic random source for randomized tests (SplitMix64). Seeded from the
/// `SEED` environment variable, or the clock; the seed is printed so a failure replays.
#[derive(Debug, Clone)]
pub struct SeededRng(u64);

impl SeededRng {
    /// Seeds from `SEED` or the clock and prints `<test>: SEED=<n>` to stderr.
    pub fn from_env(test: &str) -> SeededRng {
        let seed = std::env::var("SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(42)
            });
        eprintln!("{test}: SEED={seed}");
        SeededRng(seed)
    }

    /// A fixed seed.
    pub fn new(seed: u64) -> SeededRng {
        SeededRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}
