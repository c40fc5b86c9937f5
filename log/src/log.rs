//! [`Log`]: a data directory of topics, each a fixed number of partitions. Entry point of the
//! crate: topic lifecycle, appends (blocking or pipelined), keyed sends with Kafka's
//! partitioner, reads and long-polls, offset lookups, and the background cleaner.
//!
//! Layout: `<dir>/LOCK`, `<dir>/topics/<topic>/config.json`, `<dir>/topics/<topic>/<p>/`
//! holding segments. Topic creation and deletion go through a rename of the whole topic
//! directory, so a crash leaves either the old or the new state (leftovers are removed on open).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_listener::{Event, Listener};

pub use crate::handles::{AppendListener, AppendTicket};
use crate::handles::{ListenerKind, READ_ONLY_POLL};
pub use crate::topic::TopicDescription;
use crate::topic::{validate_topic_name, Topic};

use crate::batch::BatchBuilder;
use crate::clock::{Clock, SystemClock};
use crate::config::{effective_pairs, StoredTopicConfig, TopicConfig};
use crate::error::{LogError, Result};
use crate::partition::{Fetch, Isolation, Partition, PartitionEnv};
use crate::partitioner::partition_for_key;
use crate::queue::AppendOutcome;
use crate::storage::{read_all, write_atomic, DirLock, FsStorage, Storage};
use crate::types::{Offset, PartitionId, Timestamp};

mod admin;
mod append;
mod lookups;
mod maintenance;

/// Producer ids reserved per write of `producer-ids`: one fsync per this many producers.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// Largest single append (all its batches): one append is written as a unit into one
/// segment, whose positions are 32-bit; callers with more data split it into several appends.
const APPEND_REQUEST_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Options for opening a log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The file system (real by default; `SimStorage` in fault tests).
    pub storage: Arc<dyn Storage>,
    /// The wall clock.
    pub clock: Arc<dyn Clock>,
    /// Bytes of batches queued per partition before producers block (backpressure).
    pub append_queue_bytes: usize,
    /// How long a producer blocks on a full queue before `QueueFull` (Kafka's `max.block.ms`).
    pub append_max_block: Duration,
    /// How often the background cleaner runs retention and compaction; `None` disables it.
    pub cleaner_interval: Option<Duration>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            storage: Arc::new(FsStorage),
            clock: Arc::new(SystemClock),
            append_queue_bytes: 64 * 1024 * 1024,
            append_max_block: Duration::from_secs(60),
            cleaner_interval: Some(Duration::from_secs(30)),
        }
    }
}

impl LogOptions {
    /// Defaults without the background cleaner (short-lived tools and tests; retention and
    /// compaction then run only when asked).
    pub fn without_cleaner() -> LogOptions {
        LogOptions {
            cleaner_interval: None,
            ..LogOptions::default()
        }
    }
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    options: LogOptions,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Shared with the cleaner thread, which must not keep `Inner` alive while it sleeps.
    cleaner_stop: Arc<(Mutex<bool>, Condvar)>,
    cleaner: Mutex<Option<JoinHandle<()>>>,
    /// `None` for a read-only view, which takes no lock.
    _lock: Option<Box<dyn DirLock>>,
    read_only: bool,
    /// Producer ids handed out from a block persisted ahead of use (`producer-ids`).
    producer_ids: Mutex<(i64, i64)>,
    /// Latency of the writers' acknowledging fsyncs, for metrics.
    fsync: Arc<crate::fsync_stats::FsyncStats>,
}

/// The log. Cheap to clone; the last clone dropped shuts it down (writers drain and sync).
#[derive(Debug, Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

impl Log {
    /// Opens (recovering) or creates a log in `dir` with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<Log> {
        Log::open_with(dir, LogOptions::default())
    }

    /// Opens with explicit options.
    pub fn open_with(dir: impl AsRef<Path>, options: LogOptions) -> Result<Log> {
        Log::open_mode(dir.as_ref(), options, false)
    }

    /// Opens a read-only view that works while another process has the log open for writing:
    /// it takes no lock, changes nothing on disk (no recovery, no index rebuild written), and
    /// sees new data through [`Log::refresh`] (which [`Log::listen`] waits call for it).
    /// Records become visible once written by the other process, which under `flush=batch`
    /// can be just before its fsync. Appends and topic changes fail with `ReadOnly`.
    pub fn open_read_only(dir: impl AsRef<Path>, options: LogOptions) -> Result<Log> {
        Log::open_mode(
            dir.as_ref(),
            LogOptions {
                cleaner_interval: None,
                ..options
            },
            true,
        )
    }

    /// Whether this is a read-only view.
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    fn writable(&self) -> Result<()> {
        if self.inner.read_only {
            return Err(LogError::ReadOnly(self.inner.dir.clone()));
        }
        Ok(())
    }

    fn open_mode(dir: &Path, options: LogOptions, read_only: bool) -> Result<Log> {
        let dir = dir.to_path_buf();
        let storage = options.storage.clone();
        let topics_dir = dir.join("topics");
        if read_only && !storage.exists(&topics_dir) {
            return Err(LogError::NoLog(dir));
        }
        storage
            .create_dir_all(&topics_dir)
            .map_err(|e| LogError::io("create data dir", &topics_dir, e))?;
        if !read_only {
            for d in [&dir, &topics_dir] {
                storage
                    .sync_dir(d)
                    .map_err(|e| LogError::io("fsync data dir", d, e))?;
            }
        }
        let lock = if read_only {
            None
        } else {
            let lock = storage
                .lock_dir(&dir)
                .map_err(|e| LogError::io("lock data dir", &dir, e))?;
            let Some(lock) = lock else {
                let pid = read_all(storage.as_ref(), &dir.join("LOCK")).unwrap_or_default();
                let pid = String::from_utf8_lossy(&pid).trim().to_string();
                let holder = if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                };
                return Err(LogError::Locked { dir, holder });
            };
            Some(lock)
        };
        let inner = Arc::new(Inner {
            dir,
            options,
            topics: RwLock::new(BTreeMap::new()),
            cleaner_stop: Arc::new((Mutex::new(false), Condvar::new())),
            cleaner: Mutex::new(None),
            _lock: lock,
            read_only,
            producer_ids: Mutex::new((0, 0)),
            fsync: Arc::new(crate::fsync_stats::FsyncStats::default()),
        });
        let log = Log { inner };
        for name in storage
            .list_dir(&topics_dir)
            .map_err(|e| LogError::io("list topics", &topics_dir, e))?
        {
            let path = topics_dir.join(&name);
            if name.starts_with(".deleting-") || name.starts_with(".creating-") {
                if !read_only {
                    storage
                        .remove_dir_all(&path)
                        .map_err(|e| LogError::io("remove leftover topic dir", &path, e))?;
                }
                continue;
            }
            let cfg_path = path.join("config.json");
            let raw = read_all(storage.as_ref(), &cfg_path)
                .map_err(|e| LogError::io("read topic config", &cfg_path, e))?;
            let mut stored: StoredTopicConfig =
                serde_json::from_slice(&raw).map_err(|e| LogError::Corrupted {
                    segment: cfg_path.clone(),
                    offset: Offset(0),
                    reason: format!("topic config is not valid JSON: {e}"),
                })?;
            if stored.id.is_none() && !read_only {
                stored.id = Some(crate::topic::new_topic_id());
                let json = serde_json::to_vec_pretty(&stored)
                    .map_err(|e| LogError::Internal(e.to_string()))?;
                write_atomic(storage.as_ref(), &cfg_path, &json)
                    .map_err(|e| LogError::io("write topic config", &cfg_path, e))?;
            }
            let topic = log.open_topic(&name, stored)?;
            log.topics_mut().insert(name, topic);
        }
        log.start_cleaner();
        Ok(log)
    }

    fn topics_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Topic>>> {
        self.inner.topics.write().unwrap_or_else(|e| e.into_inner())
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.inner
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))
    }

    fn open_topic(&self, name: &str, stored: StoredTopicConfig) -> Result<Arc<Topic>> {
        let config = Arc::new(TopicConfig::from_overrides(
            stored.partitions,
            &stored.overrides,
        )?);
        let appended = Arc::new(Event::new());
        let opts = &self.inner.options;
        let mut partitions = Vec::with_capacity(stored.partitions as usize);
        for p in 0..stored.partitions {
            let env = PartitionEnv {
                storage: opts.storage.clone(),
                clock: opts.clock.clone(),
                config: config.clone(),
                queue_bytes: opts.append_queue_bytes,
                appended: appended.clone(),
                fsync: self.inner.fsync.clone(),
            };
            let dir = self.inner.dir.join("topics").join(name).join(p.to_string());
            partitions.push(if self.inner.read_only {
                Partition::open_read_only(name, PartitionId(p), dir, env)?
            } else {
                Partition::open(name, PartitionId(p), dir, env)?
            });
        }
        Ok(Arc::new(Topic {
            name: name.to_string(),
            stored,
            config,
            partitions,
            appended,
            round_robin: AtomicU64::new(0),
        }))
    }

    /// Creates a topic with `partitions` and config overrides (`KEY=VALUE` keys of Kafka).
    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        overrides: BTreeMap<String, String>,
    ) -> Result<()> {
        self.writable()?;
        validate_topic_name(name)?;
        TopicConfig::from_overrides(partitions, &overrides)?;
        let storage = self.inner.options.storage.clone();
        let mut topics = self.topics_mut();
        if topics.contains_key(name) {
            return Err(LogError::TopicExists(name.to_string()));
        }
        let topics_dir = self.inner.dir.join("topics");
        let staging = topics_dir.join(format!(".creating-{name}"));
        let stored = StoredTopicConfig {
            partitions,
            overrides,
            id: Some(crate::topic::new_topic_id()),
        };
        let json =
            serde_json::to_vec_pretty(&stored).map_err(|e| LogError::Internal(e.to_string()))?;
        storage
            .create_dir_all(&staging)
            .map_err(|e| LogError::io("create topic dir", &staging, e))?;
        write_atomic(storage.as_ref(), &staging.join("config.json"), &json)
            .map_err(|e| LogError::io("write topic config", &staging, e))?;
        let final_dir = topics_dir.join(name);
        storage
            .rename(&staging, &final_dir)
            .map_err(|e| LogError::io("create topic", &final_dir, e))?;
        storage
            .sync_dir(&topics_dir)
            .map_err(|e| LogError::io("fsync topics dir", &topics_dir, e))?;
        let topic = self.open_topic(name, stored)?;
        topics.insert(name.to_string(), topic);
        Ok(())
    }

    /// Creates a topic unless it exists (also when another caller creates it at the same
    /// moment). An existing topic must have `partitions` partitions.
    pub fn ensure_topic(
        &self,
        name: &str,
        partitions: u32,
        overrides: BTreeMap<String, String>,
    ) -> Result<()> {
        if let Ok(have) = self.partition_count(name) {
            if have != partitions {
                return Err(LogError::InvalidConfig {
                    key: "partitions".into(),
                    value: partitions.to_string(),
                    reason: format!("topic `{name}` exists with {have} partitions"),
                });
            }
            return Ok(());
        }
        match self.create_topic(name, partitions, overrides) {
            Ok(()) | Err(LogError::TopicExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes a topic and its data.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        self.writable()?;
        let topic = self
            .topics_mut()
            .remove(name)
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))?;
        for p in &topic.partitions {
            p.shutdown();
            // Wait out a cleaner pass on this partition, and stop any later one.
            let _cleaning = p
                .shared
                .cleaner_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            p.shared.deleted.store(true, Ordering::Release);
        }
        let storage = self.inner.options.storage.clone();
        let topics_dir = self.inner.dir.join("topics");
        let doomed = topics_dir.join(format!(".deleting-{name}"));
        let dir = topics_dir.join(name);
        storage
            .rename(&dir, &doomed)
            .map_err(|e| LogError::io("delete topic", &dir, e))?;
        storage
            .sync_dir(&topics_dir)
            .map_err(|e| LogError::io("fsync topics dir", &topics_dir, e))?;
        storage
            .remove_dir_all(&doomed)
            .map_err(|e| LogError::io("remove topic data", &doomed, e))?;
        Ok(())
    }

    /// Topic names, sorted.
    pub fn list_topics(&self) -> Vec<String> {
        self.inner
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Partitions, offsets, sizes and effective config of a topic.
    pub fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let t = self.topic(name)?;
        Ok(TopicDescription {
            name: t.name.clone(),
            config: effective_pairs(&t.stored.overrides),
            partitions: t.partitions.iter().map(|p| p.shared.info()).collect(),
        })
    }

    /// A topic's id: 16 bytes (Kafka's topic UUID), fixed when the topic was created. A
    /// read-only view of a directory no writer has upgraded derives one from the name.
    pub fn topic_id(&self, name: &str) -> Result<[u8; 16]> {
        let t = self.topic(name)?;
        Ok(
            match t
                .stored
                .id
                .as_deref()
                .and_then(crate::topic::parse_topic_id)
            {
                Some(id) => id,
                None => crate::topic::derived_topic_id(name),
            },
        )
    }

    /// The effective config of a topic.
    pub fn topic_config(&self, name: &str) -> Result<Arc<TopicConfig>> {
        Ok(self.topic(name)?.config.clone())
    }

    /// Number of partitions of a topic.
    pub fn partition_count(&self, name: &str) -> Result<u32> {
        Ok(self.topic(name)?.partitions.len() as u32)
    }

    /// A new producer id (with epoch 0) for an idempotent producer. Ids are unique for the
    /// life of the data directory: they come from blocks whose end is persisted before use.
    pub fn init_producer_id(&self) -> Result<(i64, i16)> {
        self.writable()?;
        let mut ids = self
            .inner
            .producer_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if ids.0 >= ids.1 {
            let storage = self.inner.options.storage.as_ref();
            let path = self.inner.dir.join("producer-ids");
            let persisted: i64 = read_all(storage, &path)
                .ok()
                .and_then(|b| String::from_utf8_lossy(&b).trim().parse().ok())
                .unwrap_or(0);
            let start = persisted.max(ids.1);
            let end = start + PRODUCER_ID_BLOCK;
            write_atomic(storage, &path, format!("{end}\n").as_bytes())
                .map_err(|e| LogError::io("persist producer id block", &path, e))?;
            *ids = (start, end);
        }
        let id = ids.0;
        ids.0 += 1;
        Ok((id, 0))
    }

    /// Now, by the log's clock.
    pub fn now(&self) -> Timestamp {
        self.inner.options.clock.now()
    }

    /// The log's clock, for components that keep time without holding the log open.
    pub fn clock(&self) -> Arc<dyn crate::Clock> {
        self.inner.options.clock.clone()
    }

    /// The partition Kafka's default partitioner picks for `key`.
    pub fn partition_for(&self, topic: &str, key: &[u8]) -> Result<PartitionId> {
        Ok(partition_for_key(key, self.partition_count(topic)?))
    }

    /// Reads whole batches from `offset` (at least one batch if any is readable).
    pub fn read(
        &self,
        topic: &str,
        partition: PartitionId,
        offset: Offset,
        max_bytes: usize,
    ) -> Result<Fetch> {
        self.topic(topic)?
            .partition(partition)?
            .read(offset, max_bytes)
    }

    /// Calls `f` for every record of a partition from `from` to the end readable now (the
    /// high watermark, or the last stable offset under `ReadCommitted`), fetch by fetch.
    /// Returns the offset after the last batch read.
    pub fn for_each_record<E: From<LogError>>(
        &self,
        topic: &str,
        partition: PartitionId,
        from: Offset,
        isolation: Isolation,
        mut f: impl FnMut(&crate::RecordView<'_>) -> std::result::Result<(), E>,
    ) -> std::result::Result<Offset, E> {
        let mut at = from;
        loop {
            let fetch = self.read_isolated(topic, partition, at, 1 << 20, isolation)?;
            if fetch.is_empty() {
                return Ok(at);
            }
            for r in fetch.records() {
                f(&r.map_err(LogError::from)?)?;
            }
            let next = fetch.next_offset();
            if next <= at {
                return Ok(at);
            }
            at = next;
        }
    }

    /// Reads with an isolation level: `ReadCommitted` stops at the last stable offset and
    /// drops records of aborted transactions (see [`Fetch::records`]).
    pub fn read_isolated(
        &self,
        topic: &str,
        partition: PartitionId,
        offset: Offset,
        max_bytes: usize,
        isolation: Isolation,
    ) -> Result<Fetch> {
        self.topic(topic)?
            .partition(partition)?
            .read_isolated(offset, max_bytes, isolation)
    }

    /// Writes a transaction marker (commit or abort) for `producer_id` to a partition: it ends
    /// the producer's open transaction there. Markers from an older epoch are fenced.
    pub fn write_marker(
        &self,
        topic: &str,
        partition: PartitionId,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<AppendOutcome> {
        let batch = BatchBuilder::marker(
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch,
            self.now(),
        );
        self.submit_batch(topic, partition, batch)?.wait()
    }

    /// Like `read`, but waits up to `max_wait` for data if there is none yet (long poll).
    pub fn read_wait(
        &self,
        topic: &str,
        partition: PartitionId,
        offset: Offset,
        max_bytes: usize,
        max_wait: Duration,
    ) -> Result<Fetch> {
        let t = self.topic(topic)?;
        let p = t.partition(partition)?;
        let deadline = Instant::now() + max_wait;
        loop {
            let listener = p.appended.listen();
            let fetch = p.read(offset, max_bytes)?;
            let now = Instant::now();
            if !fetch.is_empty() || now >= deadline {
                return Ok(fetch);
            }
            if self.inner.read_only {
                std::thread::sleep((deadline - now).min(READ_ONLY_POLL));
                p.refresh()?;
            } else {
                listener.wait_deadline(deadline);
            }
        }
    }

    /// A listener woken by the next append to any partition of `topic`.
    pub fn listen(&self, topic: &str) -> Result<AppendListener> {
        let t = self.topic(topic)?;
        if self.inner.read_only {
            return Ok(AppendListener(ListenerKind::Poll(
                self.clone(),
                topic.to_string(),
            )));
        }
        Ok(AppendListener(ListenerKind::Event(t.appended.listen())))
    }

    /// Read-only views: take in what the writing process did since the last look (a no-op on
    /// a writable log, which always sees its own appends).
    pub fn refresh(&self, topic: &str) -> Result<()> {
        for p in &self.topic(topic)?.partitions {
            p.shared.refresh()?;
        }
        Ok(())
    }

    /// Stops writers (each drains its queue and syncs) and the cleaner.
    pub fn close(self) {
        drop(self);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        {
            let (stop, cv) = &*self.cleaner_stop;
            *stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
            cv.notify_all();
        }
        if let Some(h) = self
            .cleaner
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            // The cleaner may itself hold the last reference and be running this drop.
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
        let topics = std::mem::take(self.topics.get_mut().unwrap_or_else(|e| e.into_inner()));
        for t in topics.values() {
            for p in &t.partitions {
                p.shutdown();
            }
        }
    }
}
