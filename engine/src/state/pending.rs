//! The writes of a store's open interval, readable at once by the task that made them: key →
//! `Some(value)`, or `None` for a delete.
//!
//! Key-value stores only read and write single keys, so their overlay is a hash map (the
//! fastest for a keyed count over a million keys). Window and session stores scan ranges of
//! keys (a window's entries, a key's sessions), so theirs is ordered, and a scan merges it
//! with a RocksDB iterator (`range.rs`). Either way the commit takes the writes out in key
//! order.

use std::collections::BTreeMap;

use bytes::Bytes;
use rustc_hash::FxHashMap;

/// One interval's writes.
#[derive(Debug)]
pub(crate) enum Pending {
    /// Point access only.
    Hashed(FxHashMap<Bytes, Option<Bytes>>),
    /// Point access and ordered ranges.
    Ordered(BTreeMap<Bytes, Option<Bytes>>),
}

impl Pending {
    pub(crate) fn new(ordered: bool) -> Pending {
        if ordered {
            Pending::Ordered(BTreeMap::new())
        } else {
            Pending::Hashed(FxHashMap::default())
        }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<&Option<Bytes>> {
        match self {
            Pending::Hashed(m) => m.get(key),
            Pending::Ordered(m) => m.get(key),
        }
    }

    pub(crate) fn insert(&mut self, key: Bytes, value: Option<Bytes>) {
        match self {
            Pending::Hashed(m) => {
                m.insert(key, value);
            }
            Pending::Ordered(m) => {
                m.insert(key, value);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Pending::Hashed(m) => m.len(),
            Pending::Ordered(m) => m.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn clear(&mut self) {
        match self {
            Pending::Hashed(m) => m.clear(),
            Pending::Ordered(m) => m.clear(),
        }
    }

    /// Takes every write out; true when they come out in key order already.
    pub(crate) fn drain(&mut self) -> (Vec<(Bytes, Option<Bytes>)>, bool) {
        match self {
            Pending::Hashed(m) => (m.drain().collect(), false),
            Pending::Ordered(m) => (std::mem::take(m).into_iter().collect(), true),
        }
    }

    /// The writes with keys in `[from, to)`, in order; `None` for a hashed overlay.
    pub(crate) fn range<'a>(
        &'a self,
        from: &[u8],
        to: &[u8],
    ) -> Option<std::collections::btree_map::Range<'a, Bytes, Option<Bytes>>> {
        match self {
            Pending::Hashed(_) => None,
            Pending::Ordered(m) => {
                if from >= to {
                    // Empty (a start past the end would panic).
                    return Some(m.range(Bytes::new()..Bytes::new()));
                }
                Some(m.range(Bytes::copy_from_slice(from)..Bytes::copy_from_slice(to)))
            }
        }
    }
}
