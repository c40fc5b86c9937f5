//! The log's error type, sorted by whose fault it is (user input, limits, environment, our bug).
//!
//! Every message names the thing and, where there is one, the fix. Expected conditions (end of
//! log, nothing new yet) are values elsewhere, never errors here.

use std::path::PathBuf;

use crate::types::{Offset, PartitionId};

/// Errors returned by `weir-log`.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    // ----- the caller's fault -----
    /// The topic does not exist.
    #[error("topic `{0}` does not exist")]
    UnknownTopic(String),
    /// A topic with this name already exists.
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    /// The topic name breaks Kafka's naming rules.
    #[error("invalid topic name `{name}`: {reason}")]
    InvalidTopicName {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The partition index is outside `0..partitions`.
    #[error("topic `{topic}` has {partitions} partitions; partition {partition} does not exist")]
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// The requested partition.
        partition: PartitionId,
        /// How many the topic has.
        partitions: u32,
    },
    /// A configuration key or value was rejected.
    #[error("invalid config `{key}={value}`: {reason}")]
    InvalidConfig {
        /// The key as given.
        key: String,
        /// The value as given.
        value: String,
        /// What is allowed.
        reason: String,
    },
    /// A read asked for an offset outside the partition's valid range.
    #[error("offset {requested} is out of range for {topic}/{partition}: valid offsets are {log_start}..={log_end} (log start..log end)")]
    OffsetOutOfRange {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: PartitionId,
        /// The offset asked for.
        requested: Offset,
        /// The first offset still in the log.
        log_start: Offset,
        /// The next offset to be written.
        log_end: Offset,
    },
    /// A record or batch exceeds the topic's `max.message.bytes`.
    #[error("record batch of {size} bytes exceeds max.message.bytes={max} of topic `{topic}`")]
    RecordTooLarge {
        /// Topic name.
        topic: String,
        /// Encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A compacted topic needs a key on every record.
    #[error("topic `{0}` has cleanup.policy=compact; every record needs a key")]
    MissingKey(String),
    /// An idempotent producer's batch does not follow its previous one on this partition.
    #[error("out-of-order sequence from producer {producer_id} on {topic}/{partition}: expected sequence {expected}, got {got}")]
    OutOfOrderSequence {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: PartitionId,
        /// The producer.
        producer_id: i64,
        /// The sequence the partition expected next.
        expected: i32,
        /// The sequence the batch carried.
        got: i32,
    },
    /// A newer instance of this producer (a higher epoch) has written here: this one is a zombie.
    #[error(
        "producer {producer_id} with epoch {epoch} is fenced: epoch {current_epoch} has taken over"
    )]
    ProducerFenced {
        /// The producer.
        producer_id: i64,
        /// The epoch the batch carried.
        epoch: i16,
        /// The current epoch.
        current_epoch: i16,
    },
    /// A batch handed to `append_batch` is not a valid RecordBatch v2.
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] crate::batch::BatchError),

    // ----- limits -----
    /// The partition's append queue stayed full for the whole max block time.
    #[error("append queue of {topic}/{partition} stayed full for {waited_ms} ms (append.max.block.ms); the disk is slower than the producers")]
    QueueFull {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: PartitionId,
        /// How long the caller waited.
        waited_ms: u64,
    },

    // ----- the environment -----
    /// The disk is full; the write was rolled back and nothing was acknowledged.
    #[error("disk full while writing {path}; nothing was acknowledged, free space and retry")]
    DiskFull {
        /// The file being written.
        path: PathBuf,
    },
    /// An I/O operation failed.
    #[error("I/O error during {op} on {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Stored data failed its checksum or structural checks.
    #[error("corrupted data in segment {segment} at offset {offset}: {reason}")]
    Corrupted {
        /// The segment file.
        segment: PathBuf,
        /// The batch base offset (or the segment base when unknown).
        offset: Offset,
        /// What check failed.
        reason: String,
    },
    /// A previous fsync or write failed; the partition refuses writes until the log is reopened.
    #[error("partition {topic}/{partition} is poisoned by an earlier I/O error ({cause}); reopen the log")]
    Poisoned {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: PartitionId,
        /// The original failure.
        cause: String,
    },
    /// Another process holds the data directory.
    #[error("data directory {dir} is in use by another process{holder}; stop it first (reading with `weir consume` or `weir topic describe` works alongside it)")]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// " (pid N)" when known.
        holder: String,
    },
    /// A read-only open found no log in the directory.
    #[error("there is no Weir log in {0} (no `topics` directory); check --data-dir (or WEIR_DATA_DIR), or create a topic there first with `weir topic create`")]
    NoLog(PathBuf),
    /// A write was attempted on a read-only view.
    #[error("the log at {0} is open read-only (another process writes it); this needs the writing process")]
    ReadOnly(PathBuf),
    /// The log (or this topic) was closed while the call was in flight.
    #[error("the log is closed")]
    Closed,

    // ----- our bug -----
    /// An internal invariant broke. Please report it.
    #[error("internal error (please report): {0}")]
    Internal(String),
}

/// Result alias for the log.
pub type Result<T, E = LogError> = std::result::Result<T, E>;

impl LogError {
    /// The environment was briefly unable (a full append queue, a full disk): the write was
    /// not done, and trying again later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, LogError::QueueFull { .. } | LogError::DiskFull { .. })
    }

    /// Wraps an I/O error, turning ENOSPC into [`LogError::DiskFull`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> LogError {
        const ENOSPC: i32 = 28;
        let path = path.into();
        if source.raw_os_error() == Some(ENOSPC) || source.kind() == std::io::ErrorKind::StorageFull
        {
            LogError::DiskFull { path }
        } else {
            LogError::Io { op, path, source }
        }
    }
}
