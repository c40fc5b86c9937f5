//! State stores: RocksDB for the data, a changelog topic in the log for durability.
//!
//! A store has a kind ([`StoreKind`]): key-value stores are read and written key by key;
//! window and session stores also scan ordered ranges ([`KvStore::range`]), so their pending
//! writes are kept ordered (`pending.rs`) and merged with RocksDB iterators (`range.rs`), and
//! their changelogs also expire by retention. All stores of a process share one block cache
//! and write-buffer manager under one cap (`memory.rs`).
//!
//! Writes of one commit interval are buffered in memory (`pending`), readable at once by the
//! task that made them. At commit the task writes them to the changelog (inside its
//! transaction under exactly-once); only after the commit succeeded are they applied to RocksDB
//! in one `WriteBatch`, together with the changelog offset they reach. So RocksDB never holds an
//! uncommitted write, a crash loses only what was not committed anyway, and a restart restores
//! just the changelog tail beyond the stored offset — no wiping of state, unlike Kafka Streams
//! under exactly-once. An empty or lost state directory is rebuilt from the whole changelog.
//!
//! Changelog records carry the RocksDB key itself (`USER_PREFIX` + the store key), so keys
//! starting with `0` are the store's own: the first record of every changelog is the store's
//! descriptor (what writes it, in which encoding). A store refuses a changelog whose
//! descriptor differs (or that has none) with [`EngineError::StateMismatch`], rather than
//! restoring another operator's state into itself; a local directory written under another
//! descriptor is discarded and rebuilt from the changelog.

use std::path::{Path, PathBuf};
use std::time::Instant;

mod cache;
mod memory;
mod pending;
mod range;

use bytes::Bytes;
use rocksdb::{WriteBatch, DB};
use weir_log::{Isolation, Log, Offset, PartitionId, Record, TopicConfig};

use crate::error::{EngineError, Result};
use crate::plan::{StoreKind, StoreSpec};

use cache::{CacheBudget, ReadCache};
pub use memory::{StateMemory, READ_CACHE_BYTES, STATE_MEMORY_BYTES};
use pending::Pending;
pub use range::Range;

/// RocksDB key holding the next changelog offset the store's data covers. It sorts before
/// every user key, which the store prefixes with `USER_PREFIX`.
const META_CHANGELOG_OFFSET: &[u8] = b"\x00changelog-offset";
/// RocksDB key (and changelog key) of the store's descriptor.
const META_DESCRIPTOR: &[u8] = b"\x00weir.store";
const USER_PREFIX: u8 = 1;
/// Bytes read to find a changelog's first record (its descriptor).
const DESCRIPTOR_READ_BYTES: usize = 64 * 1024;
/// Memtable size of a store opened without a shared [`StateMemory`]: fewer, larger flushes.
const STORE_WRITE_BUFFER_BYTES: usize = 64 * 1024 * 1024;
/// What a windowed changelog keeps beyond its windows' retention (Kafka Streams' default
/// `windowstore.changelog.additional.retention.ms`): a task restoring its state after being
/// down for less than this finds every open window in the changelog.
const CHANGELOG_EXTRA_RETENTION_MS: u128 = 24 * 3600 * 1000;

/// RocksDB writes skip its write-ahead log: the changelog topic is the log. A crash loses the
/// memtable and the covered-offset key in it together (they are written in one batch), and
/// the restore replays the changelog from the offset that did reach disk.
fn write_options() -> rocksdb::WriteOptions {
    let mut wo = rocksdb::WriteOptions::default();
    wo.disable_wal(true);
    wo
}

/// Point reads: block checksums are verified when files are written and compacted, so a
/// lookup skips them.
fn read_options() -> rocksdb::ReadOptions {
    let mut ro = rocksdb::ReadOptions::default();
    ro.set_verify_checksums(false);
    ro
}

/// Changelog records applied to RocksDB per write batch during a restore.
const RESTORE_BATCH_RECORDS: usize = 10_000;

/// How a restore went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestoreStats {
    /// Changelog offset the restore started from.
    pub from: Offset,
    /// Changelog offset it reached.
    pub to: Offset,
    /// Records applied.
    pub records: u64,
    /// Records per second.
    pub rate: f64,
}

/// One key-value store of one task.
pub struct KvStore {
    name: String,
    path: PathBuf,
    db: DB,
    changelog_topic: String,
    changelog_partition: PartitionId,
    pending: Pending,
    kind: StoreKind,
    read_options: rocksdb::ReadOptions,
    /// Writes of the interval being committed, sorted by key (see `stage`).
    staged: Vec<Record>,
    /// Committed entries read or written lately (`cache.rs`).
    cache: std::cell::RefCell<ReadCache>,
    covered: Offset,
    descriptor: String,
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore")
            .field("name", &self.name)
            .field("path", &self.path)
            .field(
                "changelog",
                &(&self.changelog_topic, self.changelog_partition),
            )
            .field("pending", &self.pending.len())
            .field("covered", &self.covered)
            .finish()
    }
}

/// The cache budget of a store opened without a process's [`StateMemory`] (a tool, a test).
const LONE_STORE_READ_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Keys up to this length are prefixed on the stack, not in a fresh allocation.
const INLINE_KEY: usize = 128;

fn prefixed(key: &[u8]) -> Bytes {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(USER_PREFIX);
    k.extend_from_slice(key);
    Bytes::from(k)
}

/// The largest record batch a changelog takes: a store's value is one record, and some are
/// large — an aggregate group over a table keeps its MIN/MAX/COUNT(DISTINCT) values with
/// their counts — so a changelog allows 16 MiB where a topic's default is 1 MiB.
pub const CHANGELOG_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Creates a key-value store's changelog topic (compacted, one partition per task) if it does
/// not exist.
pub fn ensure_changelog(log: &Log, topic: &str, partitions: u32) -> Result<()> {
    ensure_changelog_of(log, topic, partitions, StoreKind::KeyValue)
}

/// Creates the changelog topic of a store of `kind` if it does not exist: compacted; windowed
/// kinds also delete by retention (their windows' retention and a day more).
pub fn ensure_changelog_of(log: &Log, topic: &str, partitions: u32, kind: StoreKind) -> Result<()> {
    let max_bytes = format!("max.message.bytes={CHANGELOG_MAX_MESSAGE_BYTES}");
    let cfg = match kind.retention() {
        None => TopicConfig::parse_pairs(&["cleanup.policy=compact".to_string(), max_bytes])?,
        Some(r) => {
            let ms = r.as_millis().saturating_add(CHANGELOG_EXTRA_RETENTION_MS);
            TopicConfig::parse_pairs(&[
                "cleanup.policy=compact,delete".to_string(),
                format!("retention.ms={}", ms.min(i64::MAX as u128)),
                max_bytes,
            ])?
        }
    };
    log.ensure_topic(topic, partitions, cfg)
        .map_err(|e| match e {
            weir_log::LogError::InvalidConfig { reason, .. } => EngineError::Plan(format!(
                "changelog: {reason}; the pipeline needs {partitions}"
            )),
            other => other.into(),
        })
}

impl KvStore {
    /// Opens (or creates) a store for plain key-value use (descriptor `kv`) under `dir`,
    /// backed by `changelog_topic`/`partition`.
    pub fn open(
        name: &str,
        dir: &Path,
        changelog_topic: &str,
        partition: PartitionId,
    ) -> Result<KvStore> {
        let spec = StoreSpec::key_value(name, "bytes");
        KvStore::open_spec(&spec, dir, changelog_topic, partition, None)
    }

    /// Opens (or creates) the store `spec` under `dir`, backed by `changelog_topic`/
    /// `partition`. A local directory written under another descriptor is discarded (the
    /// changelog rebuilds it).
    pub fn open_spec(
        spec: &StoreSpec,
        dir: &Path,
        changelog_topic: &str,
        partition: PartitionId,
        memory: Option<&StateMemory>,
    ) -> Result<KvStore> {
        let mut store = KvStore::open_dir(&spec.name, dir, changelog_topic, partition, memory)?;
        store.descriptor = spec.full_descriptor();
        store.kind = spec.kind;
        store.pending = Pending::new(spec.kind.ordered());
        let local = store.rocks(store.db.get(META_DESCRIPTOR))?;
        match local {
            Some(d) if d == store.descriptor.as_bytes() => Ok(store),
            None if store.covered == Offset(0) => {
                store.rocks(store.db.put_opt(
                    META_DESCRIPTOR,
                    store.descriptor.as_bytes(),
                    &write_options(),
                ))?;
                Ok(store)
            }
            _ => {
                tracing::warn!(store = %spec.name, dir = %dir.display(),
                    "local state was written by another kind of store; rebuilding it from the changelog");
                drop(store);
                std::fs::remove_dir_all(dir).map_err(|e| EngineError::StateCorrupted {
                    store: spec.name.clone(),
                    reason: format!("cannot remove {}: {e}", dir.display()),
                })?;
                KvStore::open_spec(spec, dir, changelog_topic, partition, memory)
            }
        }
    }

    fn open_dir(
        name: &str,
        dir: &Path,
        changelog_topic: &str,
        partition: PartitionId,
        memory: Option<&StateMemory>,
    ) -> Result<KvStore> {
        let path = dir.to_path_buf();
        std::fs::create_dir_all(&path).map_err(|e| EngineError::StateCorrupted {
            store: name.to_string(),
            reason: format!("cannot create {}: {e}", path.display()),
        })?;
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        match memory {
            Some(m) => {
                opts.set_write_buffer_size(m.store_write_buffer_bytes());
                opts.set_write_buffer_manager(&m.write_buffers);
            }
            None => opts.set_write_buffer_size(STORE_WRITE_BUFFER_BYTES),
        }
        // Most lookups of a growing key space miss: a bloom filter answers them from memory.
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        // A hash index inside each data block: a point lookup finds its key without a binary
        // search over the block's restart points.
        table.set_data_block_index_type(rocksdb::DataBlockIndexType::BinaryAndHash);
        table.set_data_block_hash_ratio(0.75);
        if let Some(m) = memory {
            table.set_block_cache(&m.cache);
        }
        opts.set_block_based_table_factory(&table);
        // ... and so does one in the memtable, where a miss would otherwise walk the skiplist.
        opts.set_memtable_prefix_bloom_ratio(0.1);
        opts.set_memtable_whole_key_filtering(true);
        let db = DB::open(&opts, &path).map_err(|source| EngineError::State {
            store: name.to_string(),
            path: path.clone(),
            source,
        })?;
        let covered = match db
            .get(META_CHANGELOG_OFFSET)
            .map_err(|source| EngineError::State {
                store: name.to_string(),
                path: path.clone(),
                source,
            })? {
            None => Offset(0),
            Some(v) => {
                let bytes: [u8; 8] =
                    v.as_slice()
                        .try_into()
                        .map_err(|_| EngineError::StateCorrupted {
                            store: name.to_string(),
                            reason: "changelog offset key is not 8 bytes".into(),
                        })?;
                Offset(i64::from_be_bytes(bytes))
            }
        };
        Ok(KvStore {
            name: name.to_string(),
            path,
            db,
            changelog_topic: changelog_topic.to_string(),
            changelog_partition: partition,
            pending: Pending::new(false),
            kind: StoreKind::KeyValue,
            read_options: read_options(),
            staged: Vec::new(),
            cache: std::cell::RefCell::new(ReadCache::new(match memory {
                Some(m) => m.read_cache.clone(),
                None => CacheBudget::new(LONE_STORE_READ_CACHE_BYTES),
            })),
            covered,
            descriptor: String::new(),
        })
    }

    /// Checks that the changelog was written by a store like this one: its first record is
    /// this store's descriptor. An empty changelog gets the descriptor now.
    pub fn check_changelog(&mut self, log: &Log) -> Result<()> {
        let (topic, p) = (self.changelog_topic.clone(), self.changelog_partition);
        let earliest = log.earliest_offset(&topic, p)?;
        if earliest == log.latest_offset(&topic, p)? {
            log.append(
                &topic,
                p,
                &[Record::keyed(
                    Bytes::from_static(META_DESCRIPTOR),
                    Bytes::from(self.descriptor.clone()),
                )],
            )?;
            return Ok(());
        }
        // The first data record: control batches (commit markers) may come before it.
        let mut at = earliest;
        let first = loop {
            let f = log.read_isolated(
                &topic,
                p,
                at,
                DESCRIPTOR_READ_BYTES,
                Isolation::ReadUncommitted,
            )?;
            if f.is_empty() {
                break None;
            }
            if let Some(r) = f.records().next() {
                let r = r.map_err(weir_log::LogError::from)?;
                break Some((r.key == Some(META_DESCRIPTOR), r.value.map(<[u8]>::to_vec)));
            }
            at = f.next_offset();
        };
        let found = match first {
            Some((true, value)) => String::from_utf8_lossy(&value.unwrap_or_default()).into_owned(),
            _ if self.kind.retention().is_some() => {
                // A windowed changelog also deletes by retention, which takes the descriptor
                // with the oldest segment: write it again.
                log.append(
                    &topic,
                    p,
                    &[Record::keyed(
                        Bytes::from_static(META_DESCRIPTOR),
                        Bytes::from(self.descriptor.clone()),
                    )],
                )?;
                return Ok(());
            }
            _ => "(none: not written by a Weir store of this version)".to_string(),
        };
        if found == self.descriptor {
            return Ok(());
        }
        Err(EngineError::StateMismatch {
            store: self.name.clone(),
            changelog: topic,
            expected: self.descriptor.clone(),
            found,
        })
    }

    fn rocks<T>(&self, r: std::result::Result<T, rocksdb::Error>) -> Result<T> {
        r.map_err(|source| EngineError::State {
            store: self.name.clone(),
            path: self.path.clone(),
            source,
        })
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next changelog offset the RocksDB data covers.
    pub fn covered_offset(&self) -> Offset {
        self.covered
    }

    /// Reads a key: this interval's writes first, then RocksDB.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        if !self.staged.is_empty() {
            if let Ok(i) = self
                .staged
                .binary_search_by(|r| r.key.as_deref().unwrap_or_default()[1..].cmp(key))
            {
                return Ok(self.staged[i].value.clone());
            }
        }
        if let Some(v) = self.cache.borrow_mut().get(key) {
            return Ok(v);
        }
        let v = if key.len() < INLINE_KEY {
            let mut buf = [0u8; INLINE_KEY];
            buf[0] = USER_PREFIX;
            buf[1..=key.len()].copy_from_slice(key);
            self.rocks(
                self.db
                    .get_pinned_opt(&buf[..=key.len()], &self.read_options),
            )?
        } else {
            self.rocks(self.db.get_pinned_opt(prefixed(key), &self.read_options))?
        };
        let v = v.map(|v| Bytes::copy_from_slice(&v));
        self.cache
            .borrow_mut()
            .put(Bytes::copy_from_slice(key), v.clone());
        Ok(v)
    }

    /// Writes a key (buffered until the commit).
    pub fn put(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.pending.insert(key.into(), Some(value.into()));
    }

    /// Deletes a key (buffered until the commit).
    pub fn delete(&mut self, key: impl Into<Bytes>) {
        self.pending.insert(key.into(), None);
    }

    /// Writes waiting for the commit.
    pub fn pending_len(&self) -> usize {
        self.pending.len() + self.staged.len()
    }

    /// The store's kind.
    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    /// Entries with keys in `[from, to)`, in key order: this interval's writes merged with
    /// RocksDB's. Only for ordered kinds (window, session), and not while a commit is staged.
    pub fn range(&self, from: &[u8], to: &[u8]) -> Result<Range<'_>> {
        let overlay = self.pending.range(from, to).ok_or_else(|| {
            EngineError::Internal(format!(
                "store `{}` is a key-value store: it has no ordered ranges",
                self.name
            ))
        })?;
        if !self.staged.is_empty() {
            return Err(EngineError::Internal(format!(
                "store `{}` was scanned while a commit is staged",
                self.name
            )));
        }
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_upper_bound(prefixed(to).to_vec());
        let mut rocks = self.db.raw_iterator_opt(ro);
        rocks.seek(prefixed(from));
        Ok(Range {
            overlay: overlay.peekable(),
            rocks,
            store: &self.name,
            failed: false,
        })
    }

    /// Moves this interval's writes into the changelog records to commit (a tombstone for a
    /// delete), sorted by key, and returns them. The records are kept (moved, not copied)
    /// until [`KvStore::committed`] applies them to RocksDB — in key order, which RocksDB's
    /// memtable inserts much faster than random order.
    pub fn stage(&mut self) -> &[Record] {
        if !self.pending.is_empty() {
            let restaged = !self.staged.is_empty();
            let (writes, sorted) = self.pending.drain();
            self.staged.extend(writes.into_iter().map(|(k, v)| Record {
                key: Some(prefixed(&k)),
                value: v,
                ..Record::default()
            }));
            if sorted && !restaged {
                // An ordered overlay drains in key order already.
            } else if !restaged {
                // Keys of one map: all distinct, so the order of equal keys is moot.
                self.staged.sort_unstable_by(|a, b| a.key.cmp(&b.key));
            } else {
                // Staged again before a commit: a key may be there twice, older first. A stable
                // sort keeps that order and the dedup keeps the newer value.
                self.staged.sort_by(|a, b| a.key.cmp(&b.key));
                self.staged.dedup_by(|later, earlier| {
                    if later.key == earlier.key {
                        std::mem::swap(later, earlier);
                        true
                    } else {
                        false
                    }
                });
            }
        }
        &self.staged
    }

    /// The records [`KvStore::stage`] moved out, until the commit.
    pub fn staged(&self) -> &[Record] {
        &self.staged
    }

    /// Where this store's changelog lives.
    pub fn changelog(&self) -> (&str, PartitionId) {
        (&self.changelog_topic, self.changelog_partition)
    }

    /// After the commit that wrote the [`KvStore::stage`]d records succeeded with its last
    /// record at `last_offset` (or with none, `None`): applies the writes to RocksDB in one
    /// batch with the new covered offset. The covered offset moves only once RocksDB took the
    /// batch; after an error the store no longer matches its changelog and its task must start
    /// again (which restores from the offset RocksDB does have).
    pub fn committed(&mut self, last_offset: Option<Offset>) -> Result<()> {
        self.stage();
        let mut batch = WriteBatch::default();
        let mut written = Vec::with_capacity(self.staged.len());
        for r in self.staged.drain(..) {
            let key = r.key.unwrap_or_default();
            match &r.value {
                Some(v) => batch.put(&key, v),
                None => batch.delete(&key),
            }
            // The store's key, without the user prefix.
            written.push((key.slice(1.min(key.len())..), r.value));
        }
        let next = last_offset.map(|last| last.plus(1).max(self.covered));
        if let Some(next) = next {
            batch.put(META_CHANGELOG_OFFSET, next.0.to_be_bytes());
        }
        self.rocks(self.db.write_opt(batch, &write_options()))?;
        let cache = self.cache.get_mut();
        for (key, value) in written {
            cache.put(key, value);
        }
        if let Some(next) = next {
            self.covered = next;
        }
        Ok(())
    }

    /// Drops this interval's writes (the transaction aborted).
    pub fn aborted(&mut self) {
        self.pending.clear();
        self.staged.clear();
    }

    /// Brings RocksDB up to the changelog's committed end, reading only what lies beyond the
    /// covered offset (all of it for a new or lost state directory).
    pub fn restore(&mut self, log: &Log) -> Result<RestoreStats> {
        self.restore_with_progress(log, |_| {})
    }

    /// [`KvStore::restore`], calling `progress` every `RESTORE_BATCH_RECORDS` records.
    pub fn restore_with_progress(
        &mut self,
        log: &Log,
        mut progress: impl FnMut(&RestoreStats),
    ) -> Result<RestoreStats> {
        let start = Instant::now();
        // RocksDB changes under the cache.
        self.cache.get_mut().clear();
        let (topic, p) = (self.changelog_topic.clone(), self.changelog_partition);
        let from = self.covered.max(log.earliest_offset(&topic, p)?);
        let mut records = 0u64;
        let mut batch = WriteBatch::default();
        let (name, path, db) = (&self.name, &self.path, &self.db);
        let at = log.for_each_record(&topic, p, from, Isolation::ReadCommitted, |r| {
            let key = r.key.unwrap_or_default();
            if key.first() != Some(&USER_PREFIX) {
                // The descriptor (checked at open) or another record of the store's own.
                return Ok(());
            }
            match r.value {
                Some(v) => batch.put(key, v),
                None => batch.delete(key),
            }
            records += 1;
            if records.is_multiple_of(RESTORE_BATCH_RECORDS as u64) {
                // Everything up to this record is in the batch: a restart may resume after it.
                let next = r.offset.plus(1);
                batch.put(META_CHANGELOG_OFFSET, next.0.to_be_bytes());
                db.write_opt(std::mem::take(&mut batch), &write_options())
                    .map_err(|source| EngineError::State {
                        store: name.clone(),
                        path: path.clone(),
                        source,
                    })?;
                let rate = records as f64 / start.elapsed().as_secs_f64().max(1e-9);
                tracing::info!(store = %name, restored = records, at = %next, rate, "restoring from the changelog");
                progress(&RestoreStats {
                    from,
                    to: next,
                    records,
                    rate,
                });
            }
            Ok::<(), EngineError>(())
        })?;
        batch.put(META_CHANGELOG_OFFSET, at.0.to_be_bytes());
        self.rocks(self.db.write_opt(batch, &write_options()))?;
        self.covered = at;
        let secs = start.elapsed().as_secs_f64();
        let stats = RestoreStats {
            from,
            to: at,
            records,
            rate: records as f64 / secs.max(1e-9),
        };
        if records > 0 {
            tracing::info!(store = %self.name, records, from = %from, to = %at, rate = stats.rate, "restore complete");
        }
        Ok(stats)
    }
}
