//! The typed Rust DSL: `stream → filter/map → key_by/group_by_key → count/reduce/aggregate →
//! to_topic`, in the spirit of Kafka Streams, executed batch at a time.
//!
//! Building a pipeline builds a graph of operator factories (`graph.rs`); [`Pipeline::build`]
//! freezes it into a [`Topology`], which is a [`Plan`]: the runtime asks it for one processor
//! per task, and each processor owns its own instances of the operators, so operators can keep
//! per-task state. Each operator takes a whole batch (`Vec<Item<K, V>>`) and hands its output
//! batch to the operators it feeds. Every [`Item`] carries its event time and the input record
//! it came from ([`Origin`]): errors name that record (a poison record goes to the runtime's
//! error policy, the rest of the batch goes on) and outputs take the item's time.
//!
//! `key_by` writes to an internal repartition topic keyed by the new key and continues in a new
//! sub-plan that reads it, so records of one key meet in one task. Aggregations and tables keep
//! their state in the task's RocksDB stores, backed by changelogs. Stores and repartition
//! topics are named by the user (`.named(…)`) or after the stream they come from (e.g.
//! `orders-aggregate`, `orders-rekey`), never by build order, so adding an operator does not
//! rename another's state. The operator graph is fixed once built.

mod changes;
mod dedup;
mod graph;
mod grouped;
mod join;
mod source;
mod stream;
mod table_join;
mod ttl;
mod window;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use weir_log::Timestamp;

use crate::error::{EngineError, Result};
use crate::plan::{
    InputKind, InputSpec, InternalTopic, Plan, PlanShape, StoreKind, StoreSpec, SubPlan, TaskSetup,
};
use crate::processor::{Origin, Processor, TaskContext};
use crate::runtime::{RunOptions, RunningPipeline};

pub use changes::{DebeziumJson, GroupedTable, Signed};
pub use grouped::{Grouped, Table};
pub use join::{JoinType, JoinWindow};
pub use stream::{Predicate, Stream};
pub use window::{Avg, Hopping, Session, Tumbling, Windowed, WindowedGrouped, WindowedTable};

use graph::{Entry, EntryFactory};

/// A record between operators: its typed key and value, its event time, and the input record
/// it derives from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item<K, V> {
    /// The input record it came from ([`Origin::NONE`] for a result emitted on a time update).
    pub origin: Origin,
    /// Its event time (the record timestamp unless the stream extracts one).
    pub ts: Timestamp,
    /// Key.
    pub key: K,
    /// Value.
    pub value: V,
}

/// The unit operators exchange.
pub type Batch<K, V> = Vec<Item<K, V>>;

/// A name decided when the pipeline is built (a default, or what `.named(…)` set later).
type NameSlot = Arc<Mutex<String>>;

fn slot_name(slot: &NameSlot) -> String {
    slot.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A sub-plan while the pipeline is built.
#[derive(Default)]
struct SubBuilder {
    inputs: Vec<InputSpec>,
    stores: Vec<(NameSlot, StoreKind, String)>,
    entries: BTreeMap<String, Vec<EntryFactory>>,
    /// Merged into another sub-plan (a joined table runs in its stream's tasks).
    merged: bool,
}

#[derive(Default)]
struct PlanState {
    subs: Vec<SubBuilder>,
    /// Input topic → its sub-plan.
    host: BTreeMap<String, usize>,
    /// Input topic → the name its stores and repartition topics are named after.
    logical: BTreeMap<String, String>,
    internal: Vec<InternalTopic>,
    sinks: Vec<String>,
    operators: Vec<String>,
    /// Mistakes found while building, reported by `build`.
    errors: Vec<String>,
    /// Input topic → how many of its reads are as a queue, of how many: a queue is read
    /// only as a queue (its messages are received under locks, not read by offset).
    reads: BTreeMap<String, (usize, usize)>,
}

/// Builds a pipeline.
#[derive(Clone)]
pub struct Pipeline {
    app: String,
    state: Rc<RefCell<PlanState>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("app", &self.app).finish()
    }
}

impl Pipeline {
    /// A pipeline with an application id (its consumer group and the first part of its
    /// internal names: letters, digits, `-` and `_`).
    pub fn builder(app: &str) -> Pipeline {
        Pipeline {
            app: app.to_string(),
            state: Rc::default(),
        }
    }

    /// Records a mistake in the pipeline's definition, for `build` to report.
    fn plan_error(&self, message: String) {
        self.state.borrow_mut().errors.push(message);
    }

    /// Numbers a new operator (its metrics slot).
    fn add_operator(&self, name: String) -> usize {
        let mut s = self.state.borrow_mut();
        s.operators.push(name);
        s.operators.len() - 1
    }

    /// A default name `{logical name of topic}-{kind}`. Never numbered by build order (which
    /// would rename one operator's state when another is inserted before it): two unnamed
    /// stores or repartition topics of one kind on one stream are a build error asking for
    /// `.named(…)`.
    fn default_name(&self, topic: &str, kind: &str) -> String {
        let s = self.state.borrow();
        let base = s
            .logical
            .get(topic)
            .cloned()
            .unwrap_or_else(|| crate::names::part_from(topic));
        format!("{base}-{kind}")
    }

    /// The sub-plan reading `topic`, created with it as its first input.
    fn sub_for(s: &mut PlanState, topic: &str, kind: InputKind, internal: bool) -> usize {
        if let Some(&i) = s.host.get(topic) {
            return i;
        }
        s.subs.push(SubBuilder {
            inputs: vec![InputSpec {
                internal,
                ..InputSpec::topic(topic, kind)
            }],
            ..SubBuilder::default()
        });
        let i = s.subs.len() - 1;
        s.host.insert(topic.to_string(), i);
        i
    }

    fn add_entry(&self, topic: &str, kind: InputKind, internal: bool, entry: EntryFactory) {
        let mut s = self.state.borrow_mut();
        s.reads.entry(topic.to_string()).or_default().1 += 1;
        let i = Self::sub_for(&mut s, topic, kind, internal);
        s.subs[i]
            .entries
            .entry(topic.to_string())
            .or_default()
            .push(entry);
    }

    /// Marks the input `topic` a queue (it was just added as a stream).
    fn mark_queue(&self, topic: &str) {
        let mut s = self.state.borrow_mut();
        s.reads.entry(topic.to_string()).or_default().0 += 1;
        if let Some(&i) = s.host.get(topic) {
            for input in s.subs[i].inputs.iter_mut().filter(|i| i.topic == topic) {
                input.queue = true;
            }
        }
    }

    fn add_store(&self, topic: &str, name: NameSlot, kind: StoreKind, descriptor: &str) {
        let mut s = self.state.borrow_mut();
        if let Some(&i) = s.host.get(topic) {
            s.subs[i].stores.push((name, kind, descriptor.to_string()));
        }
    }

    /// Runs the sub-plan reading `from` inside the one reading `into` (a join): one task per
    /// partition then reads both topics and owns both's stores.
    fn merge(&self, from: &str, into: &str) {
        let mut s = self.state.borrow_mut();
        let (Some(&a), Some(&b)) = (s.host.get(from), s.host.get(into)) else {
            return;
        };
        if a == b {
            return;
        }
        let moved = std::mem::take(&mut s.subs[a]);
        s.subs[a].merged = true;
        for input in &moved.inputs {
            s.host.insert(input.topic.clone(), b);
        }
        let host = &mut s.subs[b];
        host.inputs.extend(moved.inputs);
        host.stores.extend(moved.stores);
        for (topic, entries) in moved.entries {
            host.entries.entry(topic).or_default().extend(entries);
        }
    }

    /// Sets how input `topic` derives its event time (once per input).
    fn set_event_time(&self, topic: &str, time: crate::time::EventTime) -> Result<()> {
        let mut s = self.state.borrow_mut();
        let i = *s.host.get(topic).ok_or_else(|| {
            EngineError::Plan(format!("`{topic}` is not an input of this pipeline"))
        })?;
        let input = s.subs[i]
            .inputs
            .iter_mut()
            .find(|x| x.topic == topic)
            .ok_or_else(|| EngineError::Internal(format!("input `{topic}` not in its sub-plan")))?;
        if input.internal {
            return Err(EngineError::Plan(
                "with_event_time must come before key_by: event time is set where records enter the pipeline, and travels with them".into(),
            ));
        }
        if input.event_time != crate::time::EventTime::default() {
            return Err(EngineError::Plan(format!(
                "event time of `{topic}` is set twice"
            )));
        }
        input.event_time = time;
        Ok(())
    }

    /// The topology to run; checks names (application id, stores) first.
    pub fn build(&self) -> Result<Topology> {
        let s = self.state.borrow();
        if let Some(e) = s.errors.first() {
            return Err(EngineError::Plan(format!("pipeline `{}`: {e}", self.app)));
        }
        if let Some((topic, _)) = s.reads.iter().find(|(_, (q, all))| *q > 0 && q != all) {
            return Err(EngineError::Plan(format!(
                "pipeline `{}`: `{topic}` is read both as a queue and as a topic; read a \
                 queue only with `queue`",
                self.app
            )));
        }
        let live: Vec<&SubBuilder> = s.subs.iter().filter(|b| !b.merged).collect();
        if live.is_empty() {
            return Err(EngineError::Plan(format!(
                "pipeline `{}` reads no topic",
                self.app
            )));
        }
        let mut subplans = Vec::new();
        let mut entries = Vec::new();
        for b in live {
            let first = &b.inputs[0].topic;
            let name = s
                .logical
                .get(first)
                .cloned()
                .unwrap_or_else(|| crate::names::part_from(first));
            subplans.push(SubPlan {
                name,
                inputs: b.inputs.clone(),
                stores: b
                    .stores
                    .iter()
                    .map(|(slot, kind, descriptor)| StoreSpec {
                        name: slot_name(slot),
                        kind: *kind,
                        descriptor: descriptor.clone(),
                    })
                    .collect(),
            });
            entries.push(b.entries.clone());
        }
        let shape = PlanShape {
            app: self.app.clone(),
            subplans,
            sinks: s.sinks.clone(),
            internal_topics: s.internal.clone(),
            operators: s.operators.clone(),
        };
        shape.validate()?;
        Ok(Topology {
            shape,
            entries: Arc::new(entries),
        })
    }
}

/// A built pipeline: a [`Plan`] the runtime runs.
#[derive(Clone)]
pub struct Topology {
    shape: PlanShape,
    /// Per sub-plan: input topic → the factories of the operators reading it.
    entries: Arc<Vec<BTreeMap<String, Vec<EntryFactory>>>>,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology")
            .field("shape", &self.shape)
            .finish()
    }
}

impl Topology {
    /// Runs the topology (see [`crate::runtime::run`]).
    pub fn run(
        &self,
        log: &weir_log::Log,
        groups: &weir_coord::GroupCoordinator,
        txns: &weir_coord::TransactionCoordinator,
        options: RunOptions,
    ) -> Result<RunningPipeline> {
        crate::runtime::run(Arc::new(self.clone()), log, groups, txns, options)
    }
}

impl Plan for Topology {
    fn shape(&self) -> &PlanShape {
        &self.shape
    }

    fn processor(&self, task: TaskSetup<'_>) -> Result<Box<dyn Processor>> {
        let by_topic = self
            .entries
            .get(task.subplan)
            .ok_or_else(|| EngineError::Internal(format!("no sub-plan {}", task.subplan)))?;
        let mut entries = Vec::with_capacity(task.spec.inputs.len());
        for input in &task.spec.inputs {
            let mut ops = Vec::new();
            for f in by_topic.get(&input.topic).into_iter().flatten() {
                ops.push(f(&task)?);
            }
            entries.push(ops);
        }
        Ok(Box::new(DslProcessor { entries }))
    }
}

/// One task's operators, by input.
struct DslProcessor {
    entries: Vec<Vec<Box<dyn Entry>>>,
}

impl Processor for DslProcessor {
    fn process(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        if let Some(ops) = self.entries.get_mut(ctx.input_index()) {
            for e in ops {
                e.process(ctx)?;
            }
        }
        Ok(())
    }

    fn on_time(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        for e in self.entries.iter_mut().flatten() {
            e.on_time(ctx)?;
        }
        Ok(())
    }

    fn flush(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        for e in self.entries.iter_mut().flatten() {
            e.flush(ctx)?;
        }
        Ok(())
    }
}
