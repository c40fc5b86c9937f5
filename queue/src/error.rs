//! [`QueueError`]: why a queue operation was refused, sorted by whose fault it is.

use weir_coord::CoordError;
use weir_log::LogError;

/// A queue operation's error.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    // ----- the caller's fault -----
    /// The receipt names a delivery that is over: the lock timed out (the message may have
    /// gone to another consumer, whose receipt is the valid one), or it was settled already.
    #[error("receipt {0} is no longer valid: its lock expired or the message was settled")]
    StaleReceipt(String),
    /// The receipt is not one this queue hands out.
    #[error("`{0}` is not a receipt of this queue")]
    BadReceipt(String),
    /// A setting is out of its range.
    #[error("invalid queue setting: {0}")]
    InvalidSetting(String),
    /// No queue has this name.
    #[error("queue `{0}` does not exist")]
    UnknownQueue(String),
    /// A queue of this name exists with other settings.
    #[error("queue `{0}` already exists with different settings")]
    QueueExists(String),
    /// The name cannot be a queue's (or its topic is taken by something that is not a queue).
    #[error("invalid queue name `{name}`: {reason}")]
    InvalidName {
        /// The name asked for.
        name: String,
        /// Why not.
        reason: String,
    },
    /// A message the queue cannot take.
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// Another queue still names this one as its dead-letter queue.
    #[error("queue `{queue}` is the dead-letter queue of `{source_queue}`")]
    InUse {
        /// The queue to delete.
        queue: String,
        /// The queue that dead-letters into it.
        source_queue: String,
    },

    // ----- the system's fault -----
    /// The queue's state in the log cannot be read back.
    #[error("queue `{queue}`: corrupt state record at offset {offset}: {reason}")]
    CorruptState {
        /// The queue.
        queue: String,
        /// The record's offset in the state topic.
        offset: i64,
        /// What is wrong.
        reason: String,
    },
    /// A transaction that wrote a partition's journal (an engine task's acks, a dead letter)
    /// is not decided yet, so the partition cannot be rebuilt from its journal: the
    /// transaction ends when its producer starts again or times out. Try again.
    #[error("queue `{queue}` partition {partition}: a transaction on its journal is not decided yet; try again")]
    Undecided {
        /// The queue.
        queue: String,
        /// The partition.
        partition: u32,
    },
    /// The log failed (disk full, I/O error, …); nothing was answered as done.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A transaction (dead letters, moves) failed; nothing of it is visible.
    #[error(transparent)]
    Coord(#[from] CoordError),
}

/// A queue result.
pub type Result<T> = std::result::Result<T, QueueError>;
