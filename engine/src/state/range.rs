//! An ordered scan of a store: the open interval's writes (the ordered overlay) merged with a
//! RocksDB iterator over the committed data, the overlay winning on equal keys and its deletes
//! hiding committed entries.

use bytes::Bytes;
use rocksdb::{DBRawIteratorWithThreadMode, DB};

use crate::error::{EngineError, Result};

type Overlay<'a> =
    std::iter::Peekable<std::collections::btree_map::Range<'a, Bytes, Option<Bytes>>>;

/// Entries with keys in `[from, to)` in key order: `(key, value)`.
pub struct Range<'a> {
    pub(crate) overlay: Overlay<'a>,
    pub(crate) rocks: DBRawIteratorWithThreadMode<'a, DB>,
    pub(crate) store: &'a str,
    pub(crate) failed: bool,
}

impl std::fmt::Debug for Range<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Range").field("store", &self.store).finish()
    }
}

impl Range<'_> {
    /// The RocksDB iterator's current key without the store's prefix byte, or its error.
    fn rocks_key(&mut self) -> Result<Option<&[u8]>> {
        if !self.rocks.valid() {
            return match self.rocks.status() {
                Ok(()) => Ok(None),
                Err(e) => Err(EngineError::StateCorrupted {
                    store: self.store.to_string(),
                    reason: format!("scanning RocksDB: {e}"),
                }),
            };
        }
        Ok(self.rocks.key().map(|k| &k[1..]))
    }
}

impl Iterator for Range<'_> {
    type Item = Result<(Bytes, Bytes)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            let rocks = match self.rocks_key() {
                Ok(k) => k.map(Bytes::copy_from_slice),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            };
            let take_overlay = match (self.overlay.peek(), &rocks) {
                (None, None) => return None,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((o, _)), Some(r)) => o.as_ref() <= r.as_ref(),
            };
            if take_overlay {
                let (k, v) = self.overlay.next()?;
                if rocks.as_deref() == Some(k.as_ref()) {
                    self.rocks.next(); // shadowed by the newer write
                }
                match v {
                    Some(v) => return Some(Ok((k.clone(), v.clone()))),
                    None => continue, // deleted in this interval
                }
            }
            let value = self
                .rocks
                .value()
                .map(Bytes::copy_from_slice)
                .unwrap_or_default();
            self.rocks.next();
            if let Some(k) = rocks {
                return Some(Ok((k, value)));
            }
        }
    }
}
