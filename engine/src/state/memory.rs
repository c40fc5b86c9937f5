//! The memory all stores of a process share: one RocksDB block cache and one write-buffer
//! manager charging memtables to it, under one cap — instead of every store (one per task and
//! operator) sizing its own memtables and cache.

use rocksdb::{Cache, WriteBufferManager};

/// Default of [`StateMemory::new`]'s cap when a pipeline sets none: block cache and memtables
/// of every store of the process together.
pub const STATE_MEMORY_BYTES: usize = 256 * 1024 * 1024;

/// Default of the bytes the stores of a process keep in their caches of committed entries
/// ([`super::cache`]), besides the cap above: a few million small rows, the working set of
/// a table or an aggregate whose keys change again and again.
pub const READ_CACHE_BYTES: usize = 256 * 1024 * 1024;

/// Most a single store's memtable grows before it is flushed: larger memtables mean fewer
/// flushes, but each counts against the shared cap.
const STORE_WRITE_BUFFER_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Shared RocksDB memory of a process.
#[derive(Clone)]
pub struct StateMemory {
    pub(crate) cache: Cache,
    pub(crate) write_buffers: WriteBufferManager,
    pub(crate) read_cache: super::cache::CacheBudget,
    bytes: usize,
}

impl std::fmt::Debug for StateMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMemory")
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl StateMemory {
    /// A cap of `bytes` on block cache plus memtables (half of it at most for memtables).
    pub fn new(bytes: usize) -> StateMemory {
        let bytes = bytes.max(8 * 1024 * 1024);
        let cache = Cache::new_lru_cache(bytes);
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
            bytes / 2,
            false,
            cache.clone(),
        );
        StateMemory {
            cache,
            write_buffers,
            read_cache: super::cache::CacheBudget::new(READ_CACHE_BYTES),
            bytes,
        }
    }

    /// The cap.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// One store's memtable size under this cap.
    pub(crate) fn store_write_buffer_bytes(&self) -> usize {
        (self.bytes / 8).clamp(1024 * 1024, STORE_WRITE_BUFFER_BYTES_MAX)
    }
}
