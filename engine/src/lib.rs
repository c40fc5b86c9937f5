//! # weir-engine
//!
//! Weir's dataflow runtime:
//! - [`Pipeline`]: the typed DSL (`stream → filter/map → key_by/group_by_key → count/reduce/
//!   aggregate → to_topic`), built into a [`Topology`] and run as tasks.
//! - [`KvStore`]: a task's key-value store in RocksDB, backed by a compacted changelog topic;
//!   writes are applied to RocksDB only after their commit, with the changelog offset they
//!   reach, so a restart restores just the changelog tail.
//! - [`Task`] / [`Processor`]: one input partition processed batch by batch, committing
//!   outputs, changelogs and the input offset in one transaction every commit interval.
//! - [`EngineError`]: errors sorted by whose fault they are.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dsl;
mod error;
pub mod metrics;
pub mod runtime;
pub mod serde;
pub mod state;
pub mod task;

pub use dsl::{Batch, Grouped, Item, Pipeline, Stream, Table, Topology};
pub use error::{EngineError, Result};
pub use metrics::{
    LatencySummary, Metrics, MetricsSnapshot, OperatorCounters, OperatorSnapshot, TaskMetrics,
    TaskSnapshot, TaskState,
};
pub use runtime::{dead_letter_topic, ErrorPolicy, RunOptions, RunningPipeline};
pub use serde::{Json, RawBytes, Serde, Utf8};
pub use state::{ensure_changelog, KvStore, RestoreStats};
pub use task::{
    changelog_topic, fail_on_poison, GroupMembership, Guarantee, InputRecord, Processor, Task,
    TaskConfig, TaskContext,
};
