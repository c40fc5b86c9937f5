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
    /// An internal invariant broke. Please report it.
    #[error("internal error (please report): {0}")]
    Internal(String),
}

/// Result alias.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
