//! # weir-engine
//!
//! Weir's dataflow runtime. This first part is the state layer:
//! - [`KvStore`]: a task's key-value store in RocksDB, backed by a compacted changelog topic;
//!   writes are applied to RocksDB only after their commit, with the changelog offset they
//!   reach, so a restart restores just the changelog tail.
//! - [`Task`] / [`Processor`]: one input partition processed batch by batch, committing
//!   outputs, changelogs and the input offset in one transaction every commit interval.
//! - [`EngineError`]: errors sorted by whose fault they are.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
pub mod state;
pub mod task;

pub use error::{EngineError, Result};
pub use state::{ensure_changelog, KvStore, RestoreStats};
pub use task::{changelog_topic, Guarantee, InputRecord, Processor, Task, TaskConfig, TaskContext};
