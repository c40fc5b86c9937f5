//! The engine's error type, sorted by whose fault it is: the pipeline's definition or data
//! (user), the environment (log, RocksDB), or our bug.

/// Errors returned by `weir-engine`.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The pipeline definition is invalid (unknown topic, mismatched partitions, ...).
    #[error("invalid pipeline: {0}")]
    Plan(String),
    /// A record could not be decoded or processed (a poison record). The pipeline stops here,
    /// before committing past it.
    #[error("cannot process {topic}/{partition} offset {offset}: {reason}")]
    Poison {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// Offset.
        offset: weir_log::Offset,
        /// What went wrong.
        reason: String,
    },
    /// A result emitted on a time update (no input record) could not be handled.
    #[error("task `{task}` cannot handle a result: {reason}")]
    PoisonResult {
        /// The task (its sub-plan).
        task: String,
        /// What went wrong.
        reason: String,
    },
    /// A user function panicked while processing a batch (use a `try_` operator to have
    /// failures follow the error policy instead).
    #[error("a user function panicked: {0}")]
    UserPanic(String),
    /// A store's changelog was written by another kind of store (an operator was inserted,
    /// renamed or changed): reusing it would restore someone else's state.
    #[error("state store `{store}`: its changelog `{changelog}` holds `{found}`, not `{expected}`; name the store with `.named(…)` to keep each operator's state apart, or reset the application (`weir pipeline reset APP`) to start over")]
    StateMismatch {
        /// Store name.
        store: String,
        /// Its changelog topic.
        changelog: String,
        /// The descriptor this store writes.
        expected: String,
        /// The descriptor the changelog holds.
        found: String,
    },
    /// A state store's RocksDB failed.
    #[error("state store `{store}` at {path}: {source}")]
    State {
        /// Store name.
        store: String,
        /// Its directory.
        path: std::path::PathBuf,
        /// The RocksDB error.
        #[source]
        source: rocksdb::Error,
    },
    /// Stored state is inconsistent with its changelog.
    #[error("state store `{store}`: {reason}")]
    StateCorrupted {
        /// Store name.
        store: String,
        /// What is wrong.
        reason: String,
    },
    /// The log failed.
    #[error(transparent)]
    Log(#[from] weir_log::LogError),
    /// A coordinator failed.
    #[error(transparent)]
    Coord(#[from] weir_coord::CoordError),
    /// A queue input failed: a lock ran out before its message's commit (the message may
    /// have gone to another consumer, and this interval is redone), or the queue's log did.
    #[error(transparent)]
    Queue(#[from] weir_queue::QueueError),
    /// An internal invariant broke. Please report it.
    #[error("internal error (please report): {0}")]
    Internal(String),
}

/// Result alias.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
