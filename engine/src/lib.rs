//! # weir-engine
//!
//! Weir's dataflow runtime:
//! - [`Plan`]: what a front end hands the runtime — its shape (sub-plans with co-partitioned
//!   inputs and stores, sinks, internal topics, operator names) and a per-task [`Processor`]
//!   factory. [`run`] runs any plan with group membership, restarts, time, the error policy
//!   (dead letters, skips, retries) and metrics.
//! - [`Pipeline`]: the typed DSL (`stream → filter/map → key_by/group_by_key → count/reduce/
//!   aggregate → to_topic`), built into a [`Topology`], which is a plan.
//! - [`KvStore`]: a task's key-value store in RocksDB, backed by a compacted changelog topic;
//!   writes are applied to RocksDB only after their commit, with the changelog offset they
//!   reach, so a restart restores just the changelog tail.
//! - [`Task`]: one partition of a sub-plan, processed batch by batch, committing outputs,
//!   changelogs and the input offsets (with its event time) in one transaction every commit
//!   interval.
//! - [`EngineError`]: errors sorted by whose fault they are.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use weir_engine::{Json, Pipeline, RunOptions, Utf8};
//! let log = weir_log::Log::open("./weir-data")?;
//! let p = Pipeline::builder("orders-per-customer");
//! p.stream::<String, u64>("orders", Utf8, Json)
//!     .group_by_key()
//!     .count()
//!     .to_topic("order-counts", Utf8, Json);
//! let (groups, txns) = weir_coord::start(&log)?;
//! let running = p.build()?.run(&log, &groups, &txns, RunOptions::new("./state"))?;
//! running.stop()?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod changes;
mod commit;
pub mod dsl;
mod error;
mod input;
pub mod join;
mod keys;
mod member;
pub mod metrics;
pub mod names;
mod output;
pub mod plan;
mod poison;
pub mod processor;
mod reset;
pub mod runtime;
pub mod serde;
pub mod state;
pub mod task;
pub mod time;
pub mod window;

pub use dsl::{
    Avg, Batch, DebeziumJson, Grouped, GroupedTable, Hopping, Item, JoinType, JoinWindow, Pipeline,
    Session, Signed, Stream, Table, Topology, Tumbling, Windowed, WindowedGrouped, WindowedTable,
};
pub use error::{EngineError, Result};
pub use metrics::{
    LatencySummary, Metrics, MetricsSnapshot, OperatorCounters, OperatorSnapshot, TaskMetrics,
    TaskSnapshot, TaskState,
};
pub use names::{changelog_topic, dead_letter_topic};
pub use plan::{
    GeneratedInput, InputKind, InputSpec, InternalTopic, Plan, PlanShape, StoreKind, StoreSpec,
    SubPlan, TaskSetup,
};
pub use poison::ErrorPolicy;
pub use processor::{InputRecord, Origin, Poison, Processor, RetryPolicy, TaskContext};
pub use reset::{reset, ResetReport};
pub use runtime::{run, RunOptions, RunningPipeline};
pub use serde::{Json, RawBytes, Serde, Utf8};
pub use state::{ensure_changelog, ensure_changelog_of, KvStore, Range, RestoreStats, StateMemory};
pub use task::{GroupMembership, Guarantee, StartFrom, Task, TaskConfig};
pub use time::{EventTime, TaskTime, TimeSource};
pub use window::{Emit, LatePolicy, WindowKind, WindowSpec};
