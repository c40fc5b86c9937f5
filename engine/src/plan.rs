//! What the runtime runs: a [`Plan`], the contract between a front end (the typed DSL, SQL)
//! and the runtime.
//!
//! A plan describes its shape as data — sub-plans with their co-partitioned inputs and their
//! stores, the topics it writes, its internal topics, its operators' names — and builds one
//! [`Processor`] per task (sub-plan × partition) on the worker thread that runs the task, so
//! operators keep per-task state (buffers, timers) without sharing it. The runtime supplies
//! everything else: group membership, tasks and their restarts, exactly-once commits, time,
//! the error policy (dead letters, skips, retries) and metrics.
//!
//! Inputs are log topics, generated rows, or queues (competing consumption, acks committed
//! with the task); the shape is made to grow connectors without changing the
//! runtime's contract: a generated source or a database change stream is another kind of
//! input whose position commits with the task's transaction like an offset, and a sink that
//! commits its own offsets elsewhere (a PostgreSQL table) is another kind of sink.

use std::sync::Arc;

use crate::error::{EngineError, Result};
use crate::processor::Processor;
use crate::time::EventTime;

/// How a task reads an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// A stream of events: it holds the watermark back.
    Stream,
    /// A table's changelog (latest value per key): it does not hold time back, and among
    /// records of equal timestamps it is read first, so a stream record meets the table as of
    /// everything before it.
    Table,
}

/// One input of a sub-plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    /// The topic.
    pub topic: String,
    /// Stream or table.
    pub kind: InputKind,
    /// Where its event time comes from and the watermark's bound.
    pub event_time: EventTime,
    /// An internal topic of this plan (a repartition topic): created by the runtime, and
    /// purged once its records are committed.
    pub internal: bool,
    /// Records the plan generates itself (`None`: read from the topic). The topic is then
    /// only the name its positions commit under.
    pub generated: Option<GeneratedInput>,
    /// A queue (weir-queue) named like the topic, consumed as one of its competing
    /// consumers: each task receives its partition's messages under a lock (the queue's
    /// visibility timeout) and acks what it processed in its commit — under exactly-once in
    /// the same transaction as its outputs, so each message is processed once. Needs the
    /// process's queues in [`crate::RunOptions::queues`].
    pub queue: bool,
}

impl InputSpec {
    /// A stream read from `topic`, with the record timestamps as event time.
    pub fn topic(topic: &str, kind: InputKind) -> InputSpec {
        InputSpec {
            topic: topic.to_string(),
            kind,
            event_time: Default::default(),
            internal: false,
            generated: None,
            queue: false,
        }
    }

    /// A stream consumed from the queue `queue` (see [`InputSpec::queue`]).
    pub fn queue(queue: &str) -> InputSpec {
        InputSpec {
            queue: true,
            ..InputSpec::topic(queue, InputKind::Stream)
        }
    }

    /// Its partition count: the topic's, or the generator's.
    pub fn partitions(&self, log: &weir_log::Log) -> Result<u32> {
        match &self.generated {
            Some(g) => Ok(g.partitions),
            None => Ok(log.partition_count(&self.topic)?),
        }
    }
}

/// An input whose records the plan's processor generates (a `datagen` source): the runtime
/// hands it empty records numbered like offsets, `0, 1, 2, …` per partition, at most
/// `rows_per_second`, and commits the position reached with the task's transaction like an
/// offset; the processor makes each row's values from its partition and offset alone, so a
/// restart regenerates exactly the rows after the committed position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeneratedInput {
    /// Partitions (tasks) generating in parallel.
    pub partitions: u32,
    /// Rows in all (`None`: unbounded); row `i` of the whole input is row `i / partitions` of
    /// partition `i % partitions`.
    pub rows: Option<u64>,
    /// Rows per second over all partitions (0: as fast as the processor takes them).
    pub rows_per_second: u64,
}

impl GeneratedInput {
    /// Rows partition `p` generates (`None`: unbounded).
    pub fn rows_of(&self, p: u32) -> Option<u64> {
        let n = u64::from(self.partitions.max(1));
        self.rows
            .map(|rows| (rows + n - 1 - u64::from(p).min(n - 1)) / n)
    }

    /// The rate of one partition (0: unbounded).
    pub fn rate_of_partition(&self) -> u64 {
        match self.rows_per_second {
            0 => 0,
            r => (r / u64::from(self.partitions.max(1))).max(1),
        }
    }
}

/// The kind of a store: how its keys are laid out, how its pending writes are kept, and how
/// its changelog is cleaned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// Point reads and writes of keys; changelog `compact`.
    KeyValue,
    /// Point reads and writes, and range scans in key order (an index: entries under a
    /// common prefix); changelog `compact`.
    Sorted,
    /// Entries per (window start, key), scanned in time order; changelog `compact,delete`
    /// keeping `retention` (the windows' size + grace) and a day more.
    Window {
        /// How long a window's entries live, in event time.
        retention: std::time::Duration,
    },
    /// Sessions per (key, end, start) plus a close index by end; changelog like windows.
    Session {
        /// How long a session's entries live after its end, in event time.
        retention: std::time::Duration,
    },
}

impl StoreKind {
    /// Whether pending writes are ordered (range scans) rather than hashed.
    pub fn ordered(self) -> bool {
        !matches!(self, StoreKind::KeyValue)
    }

    /// The name in descriptors.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::KeyValue => "kv",
            StoreKind::Sorted => "sorted",
            StoreKind::Window { .. } => "window",
            StoreKind::Session { .. } => "session",
        }
    }

    /// Event-time retention of windowed kinds.
    pub fn retention(self) -> Option<std::time::Duration> {
        match self {
            StoreKind::KeyValue | StoreKind::Sorted => None,
            StoreKind::Window { retention } | StoreKind::Session { retention } => Some(retention),
        }
    }
}

/// What a store holds, checked against its changelog before it is reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSpec {
    /// Its name, unique in the application (letters, digits, `-`, `_`).
    pub name: String,
    /// Its kind.
    pub kind: StoreKind,
    /// What writes it and in which encoding, e.g. `aggregate json`; a changelog written
    /// under another descriptor (or kind) is refused, never restored into this store.
    pub descriptor: String,
}

impl StoreSpec {
    /// A key-value store.
    pub fn key_value(name: &str, descriptor: &str) -> StoreSpec {
        StoreSpec {
            name: name.to_string(),
            kind: StoreKind::KeyValue,
            descriptor: descriptor.to_string(),
        }
    }

    /// The descriptor as written in the changelog: kind and descriptor.
    pub fn full_descriptor(&self) -> String {
        format!("{} {}", self.kind.name(), self.descriptor)
    }
}

/// One sub-plan: a set of co-partitioned inputs read by one task per partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubPlan {
    /// Its name, unique in the application: part of its tasks' transactional ids and state
    /// directories.
    pub name: String,
    /// Its inputs; the first decides the partition count. All must have as many partitions.
    pub inputs: Vec<InputSpec>,
    /// Its stores.
    pub stores: Vec<StoreSpec>,
}

/// An internal topic the runtime creates, with as many partitions as `partitions_like`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalTopic {
    /// The topic.
    pub name: String,
    /// The input (a topic, or a generated input's name) whose partition count it copies, and
    /// whose tasks write it (they send their watermark to each of its partitions).
    pub partitions_like: String,
    /// Its partition count, when not `partitions_like`'s (a stream repartitioned to meet a
    /// table's partitions).
    pub partitions: Option<u32>,
}

/// The shape of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanShape {
    /// Application id: the consumer group and the first part of every internal name.
    pub app: String,
    /// Its sub-plans.
    pub subplans: Vec<SubPlan>,
    /// Topics it writes that must exist (internal ones excluded).
    pub sinks: Vec<String>,
    /// Internal topics.
    pub internal_topics: Vec<InternalTopic>,
    /// Operator names, by operator id (for metrics).
    pub operators: Vec<String>,
}

impl PlanShape {
    /// Checks names: the application id, sub-plan and store names valid and unique.
    pub fn validate(&self) -> Result<()> {
        crate::names::validate_app(&self.app)?;
        let mut subs = std::collections::BTreeSet::new();
        let mut stores = std::collections::BTreeSet::new();
        let mut internal = std::collections::BTreeSet::new();
        for t in &self.internal_topics {
            if !internal.insert(t.name.as_str()) {
                return Err(EngineError::Plan(format!(
                    "two repartition topics of pipeline `{}` are named `{}`: name one with `.named(…)` before `key_by`",
                    self.app, t.name
                )));
            }
        }
        for sub in &self.subplans {
            crate::names::validate_name("task name", &sub.name)?;
            if !subs.insert(sub.name.as_str()) {
                return Err(EngineError::Plan(format!(
                    "two parts of pipeline `{}` are named `{}`",
                    self.app, sub.name
                )));
            }
            if sub.inputs.is_empty() {
                return Err(EngineError::Plan(format!(
                    "part `{}` of pipeline `{}` reads nothing",
                    sub.name, self.app
                )));
            }
            for s in &sub.stores {
                crate::names::validate_name("store name", &s.name)?;
                if !stores.insert(s.name.as_str()) {
                    return Err(EngineError::Plan(format!(
                        "two stores of pipeline `{}` are named `{}`: name one with `.named(…)`",
                        self.app, s.name
                    )));
                }
            }
        }
        Ok(())
    }
}

/// What a plan knows when it builds the processor of one task.
#[derive(Debug, Clone, Copy)]
pub struct TaskSetup<'a> {
    /// Index of the sub-plan.
    pub subplan: usize,
    /// The partition.
    pub partition: u32,
    /// The sub-plan.
    pub spec: &'a SubPlan,
}

impl TaskSetup<'_> {
    /// The position of store `name` among the task's stores (for [`crate::TaskContext::store_at`]).
    pub fn store_index(&self, name: &str) -> Result<usize> {
        self.spec
            .stores
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| {
                EngineError::Internal(format!("part `{}` has no store `{name}`", self.spec.name))
            })
    }

    /// The position of input `topic` among the task's inputs.
    pub fn input_index(&self, topic: &str) -> Option<usize> {
        self.spec.inputs.iter().position(|i| i.topic == topic)
    }
}

/// A plan the runtime can run.
pub trait Plan: Send + Sync + std::fmt::Debug {
    /// Its shape.
    fn shape(&self) -> &PlanShape;

    /// Builds the processor of one task; called on the worker thread that runs the task, at
    /// every (re)start of the task.
    fn processor(&self, task: TaskSetup<'_>) -> Result<Box<dyn Processor>>;
}

impl<P: Plan + ?Sized> Plan for Arc<P> {
    fn shape(&self) -> &PlanShape {
        (**self).shape()
    }
    fn processor(&self, task: TaskSetup<'_>) -> Result<Box<dyn Processor>> {
        (**self).processor(task)
    }
}
