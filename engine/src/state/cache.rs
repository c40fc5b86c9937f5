//! A store's cache of committed entries in front of RocksDB's point reads: most changes of a
//! table or a group touch keys read or written recently, and a hash lookup costs a fraction
//! of a memtable skip-list search (the largest cost of a keyed aggregate over a table).
//!
//! Two generations approximate LRU without per-read bookkeeping: reads and writes land in the
//! young one; a hit in the old one moves the entry to the young one; when the process-wide
//! budget ([`CacheBudget`]) runs out, the store's old generation is dropped and the young one
//! becomes old. Every store of a process charges its entries to that one budget.
//!
//! Invariant: the cache holds only committed entries, exactly as RocksDB has them (a write is
//! cached when its commit is applied to RocksDB, a read when RocksDB answers it), and `None`
//! means RocksDB has no such key; so a hit answers what RocksDB would.

use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rustc_hash::FxHashMap;

/// Bytes an entry costs beyond its key and value: two `Bytes` handles and the map's slot.
const ENTRY_OVERHEAD: usize = 48;

/// The bytes all stores of a process may keep in their caches, shared.
#[derive(Debug, Clone)]
pub struct CacheBudget(Arc<AtomicIsize>);

impl CacheBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> CacheBudget {
        CacheBudget(Arc::new(AtomicIsize::new(
            bytes.min(isize::MAX as usize) as isize
        )))
    }

    /// Takes `bytes`; false (and nothing taken) when fewer are left.
    fn take(&self, bytes: usize) -> bool {
        let bytes = bytes as isize;
        if self.0.fetch_sub(bytes, Ordering::Relaxed) >= bytes {
            return true;
        }
        self.0.fetch_add(bytes, Ordering::Relaxed);
        false
    }

    fn give_back(&self, bytes: usize) {
        self.0.fetch_add(bytes as isize, Ordering::Relaxed);
    }
}

type Generation = FxHashMap<Bytes, Option<Bytes>>;

/// One store's cache.
#[derive(Debug)]
pub(crate) struct ReadCache {
    young: Generation,
    old: Generation,
    /// Bytes charged for the young and the old generation.
    young_bytes: usize,
    old_bytes: usize,
    budget: CacheBudget,
}

fn cost(key: &[u8], value: &Option<Bytes>) -> usize {
    key.len() + value.as_ref().map_or(0, Bytes::len) + ENTRY_OVERHEAD
}

impl ReadCache {
    pub(crate) fn new(budget: CacheBudget) -> ReadCache {
        ReadCache {
            young: Generation::default(),
            old: Generation::default(),
            young_bytes: 0,
            old_bytes: 0,
            budget,
        }
    }

    /// The cached entry of `key`: `Some(None)` when RocksDB has no such key, `None` when the
    /// cache does not know.
    pub(crate) fn get(&mut self, key: &[u8]) -> Option<Option<Bytes>> {
        if let Some(v) = self.young.get(key) {
            return Some(v.clone());
        }
        let (k, v) = self.old.remove_entry(key)?;
        let c = cost(&k, &v);
        self.old_bytes -= c;
        // Moving between generations keeps the charge.
        self.young_bytes += c;
        self.young.insert(k, v.clone());
        Some(v)
    }

    /// Caches what RocksDB now has for `key`.
    pub(crate) fn put(&mut self, key: Bytes, value: Option<Bytes>) {
        // Whatever happens below, no older value of the key may stay behind.
        self.forget(&key);
        let c = cost(&key, &value);
        if !self.budget.take(c) {
            self.rotate();
            if !self.budget.take(c) {
                // Other stores hold the budget: this entry is not cached (RocksDB has it).
                return;
            }
        }
        self.young.insert(key, value);
        self.young_bytes += c;
    }

    /// Drops `key` from both generations, giving its charge back.
    fn forget(&mut self, key: &[u8]) {
        if let Some((k, v)) = self.young.remove_entry(key) {
            let freed = cost(&k, &v);
            self.young_bytes -= freed;
            self.budget.give_back(freed);
        }
        if let Some((k, v)) = self.old.remove_entry(key) {
            let freed = cost(&k, &v);
            self.old_bytes -= freed;
            self.budget.give_back(freed);
        }
    }

    /// Drops the old generation; the young one becomes old.
    fn rotate(&mut self) {
        self.budget.give_back(self.old_bytes);
        self.old = std::mem::take(&mut self.young);
        self.old_bytes = std::mem::replace(&mut self.young_bytes, 0);
    }

    /// Forgets everything (RocksDB changed under the cache: a restore).
    pub(crate) fn clear(&mut self) {
        self.budget.give_back(self.young_bytes + self.old_bytes);
        self.young.clear();
        self.old.clear();
        self.young_bytes = 0;
        self.old_bytes = 0;
    }
}

impl Drop for ReadCache {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_stay_within_the_shared_budget_and_hits_answer_what_was_put() {
        let budget = CacheBudget::new(10 * (ENTRY_OVERHEAD + 2));
        let mut a = ReadCache::new(budget.clone());
        let mut b = ReadCache::new(budget.clone());
        for i in 0..8u8 {
            a.put(Bytes::from(vec![i]), Some(Bytes::from_static(b"v")));
        }
        assert_eq!(a.get(&[3]), Some(Some(Bytes::from_static(b"v"))));
        // b fills the rest, then rotates its own generations; a keeps what it has.
        for i in 0..8u8 {
            b.put(Bytes::from(vec![i]), None);
        }
        assert_eq!(a.get(&[7]), Some(Some(Bytes::from_static(b"v"))));
        assert!(budget.0.load(Ordering::Relaxed) >= 0);
        // A key rewritten when the budget is spent is never answered with its old value.
        let mut c = ReadCache::new(CacheBudget::new(ENTRY_OVERHEAD + 2));
        c.put(Bytes::from_static(b"k"), Some(Bytes::from_static(b"1")));
        c.put(Bytes::from_static(b"k"), Some(Bytes::from_static(b"3")));
        assert_eq!(c.get(b"k"), Some(Some(Bytes::from_static(b"3"))));
        c.put(Bytes::from_static(b"x"), Some(Bytes::from_static(b"22")));
        assert_ne!(c.get(b"x"), Some(Some(Bytes::from_static(b"2"))));
        // A known absence is an answer too.
        let hits = (0..8u8).filter(|i| b.get(&[*i]) == Some(None)).count();
        assert!(hits > 0);
        drop(a);
        drop(b);
        assert_eq!(
            budget.0.load(Ordering::Relaxed),
            10 * (ENTRY_OVERHEAD as isize + 2)
        );
    }
}
