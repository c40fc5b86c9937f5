//! The typed Rust DSL: `stream → filter/map → key_by/group_by_key → count/reduce/aggregate →
//! to_topic`, in the spirit of Kafka Streams, executed batch at a time.
//!
//! Building a pipeline builds a push graph of operators. Each operator takes a whole batch
//! (`Vec<Item<K, V>>`, one per input batch of the task) and hands its output batch to the
//! operators it feeds, so per-record costs are the user's functions and serdes, not dispatch.
//! A stream used twice (a fork) computes its upstream once and clones the batch per branch.
//! Every [`Item`] remembers the index of the input record it came from: errors name that
//! record (a poison record goes to the error policy, the rest of the batch goes on) and outputs
//! take its timestamp. Operators are numbered as they are added; each call counts records in
//! and out and its own time into the task's metrics.
//!
//! `key_by` writes to an internal repartition topic keyed by the new key and continues in a new
//! sub-topology that reads it, so records of one key meet in one task. Aggregations keep their
//! state in the task's RocksDB store (`<kind>-<n>`), backed by its changelog.
//! [`Pipeline::build`] yields a [`Topology`] that the runtime runs as tasks
//! (sub-topology × partition). The operator graph is fixed once built: adding operators to a
//! pipeline whose topology already runs is not supported.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use weir_log::{Record, Timestamp};

use crate::error::{EngineError, Result};
use crate::serde::{Json, Serde};
use crate::task::TaskContext;

/// A record between operators: its typed key and value, and the index (in the task's input
/// batch) of the input record it derives from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item<K, V> {
    /// Index of the originating input record in [`TaskContext::input`].
    pub at: u32,
    /// Key.
    pub key: K,
    /// Value.
    pub value: V,
}

/// The unit operators exchange.
pub type Batch<K, V> = Vec<Item<K, V>>;

type Node<K, V> = Arc<dyn Fn(&mut TaskContext<'_>, Batch<K, V>) -> Result<()> + Send + Sync>;
/// The operators a stream feeds. The list is replaced (never edited in place) when the
/// pipeline is built, so running tasks take a snapshot under the lock and call the operators
/// without it: tasks of one sub-topology on different workers never wait for each other.
type Children<K, V> = Arc<Mutex<Arc<[Node<K, V>]>>>;
type Entry = Arc<dyn Fn(&mut TaskContext<'_>) -> Result<()> + Send + Sync>;
/// A branch predicate.
pub type Predicate<K, V> = Box<dyn Fn(&K, &V) -> bool + Send + Sync>;

/// One sub-topology: its input topics (a main source plus co-partitioned tables it joins),
/// their entry points, and the stores its operators use.
#[derive(Clone)]
pub struct SubTopology {
    /// The main topic (and partitions) it reads.
    pub source: String,
    /// State stores of its tasks.
    pub stores: Vec<String>,
    entries: BTreeMap<String, Vec<Entry>>,
}

impl std::fmt::Debug for SubTopology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubTopology")
            .field("source", &self.source)
            .field("stores", &self.stores)
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl SubTopology {
    /// Input topics other than the main one (tables joined by its streams).
    pub fn co_sources(&self) -> Vec<String> {
        self.entries
            .keys()
            .filter(|t| **t != self.source)
            .cloned()
            .collect()
    }

    /// Runs the context's input batch (records of one topic) through every operator fed by
    /// its topic.
    pub fn process(&self, ctx: &mut TaskContext<'_>) -> Result<()> {
        let Some(first) = ctx.input().first() else {
            return Ok(());
        };
        for e in self.entries.get(&*first.topic).into_iter().flatten() {
            e(ctx)?;
        }
        Ok(())
    }
}

/// A built pipeline: its sub-topologies and the topics it needs.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Application id.
    pub app: String,
    /// Sub-topologies, by source topic.
    pub subtopologies: Vec<SubTopology>,
    /// Internal repartition topics and the source topic whose partition count they copy.
    pub internal_topics: Vec<(String, String)>,
    /// Topics written by sinks (must exist).
    pub sinks: Vec<String>,
    /// Operator names, by operator id (for metrics).
    pub operators: Vec<String>,
}

#[derive(Default)]
struct PlanState {
    subs: BTreeMap<String, SubTopology>,
    /// A sub-topology merged into another (a joined table): its source → the host's.
    aliases: BTreeMap<String, String>,
    internal: Vec<(String, String)>,
    sinks: Vec<String>,
    operators: Vec<String>,
    next_id: usize,
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

fn new_children<K, V>() -> Children<K, V> {
    Arc::new(Mutex::new(Arc::from(Vec::new())))
}

/// Hands a batch to every child: clones for all but the last, which takes it.
fn emit_all<K: Clone, V: Clone>(
    children: &Children<K, V>,
    ctx: &mut TaskContext<'_>,
    batch: Batch<K, V>,
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let list = children.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match list.split_last() {
        None => Ok(()),
        Some((last, rest)) => {
            for c in rest {
                c(ctx, batch.clone())?;
            }
            last(ctx, batch)
        }
    }
}

/// The timestamp of the input record an item came from.
fn timestamp_of(ctx: &TaskContext<'_>, at: u32) -> Timestamp {
    ctx.input()
        .get(at as usize)
        .map_or(Timestamp(0), |r| r.timestamp)
}

impl Pipeline {
    /// A pipeline with an application id (its consumer group and internal-topic prefix).
    pub fn builder(app: &str) -> Pipeline {
        Pipeline {
            app: app.to_string(),
            state: Rc::default(),
        }
    }

    fn next_id(&self) -> usize {
        let mut s = self.state.borrow_mut();
        s.next_id += 1;
        s.next_id - 1
    }

    /// Numbers a new operator (its metrics slot).
    fn add_operator(&self, name: String) -> usize {
        let mut s = self.state.borrow_mut();
        s.operators.push(name);
        s.operators.len() - 1
    }

    fn host(s: &PlanState, topic: &str) -> String {
        let mut t = topic.to_string();
        while let Some(next) = s.aliases.get(&t) {
            t = next.clone();
        }
        t
    }

    fn add_entry(&self, topic: &str, entry: Entry) {
        let mut s = self.state.borrow_mut();
        let host = Self::host(&s, topic);
        s.subs
            .entry(host.clone())
            .or_insert_with(|| SubTopology {
                source: host,
                stores: Vec::new(),
                entries: BTreeMap::new(),
            })
            .entries
            .entry(topic.to_string())
            .or_default()
            .push(entry);
    }

    fn add_store(&self, topic: &str, store: &str) {
        let mut s = self.state.borrow_mut();
        let host = Self::host(&s, topic);
        if let Some(sub) = s.subs.get_mut(&host) {
            sub.stores.push(store.to_string());
        }
    }

    /// Runs the sub-topology reading `from` inside the one reading `into` (a join): one task
    /// per partition then reads both topics and owns both's stores.
    fn merge(&self, from: &str, into: &str) {
        let mut s = self.state.borrow_mut();
        let (from, into) = (Self::host(&s, from), Self::host(&s, into));
        if from == into {
            return;
        }
        let Some(moved) = s.subs.remove(&from) else {
            return;
        };
        if let Some(host) = s.subs.get_mut(&into) {
            for (topic, entries) in moved.entries {
                host.entries.entry(topic).or_default().extend(entries);
            }
            host.stores.extend(moved.stores);
        }
        s.aliases.insert(from, into);
    }

    /// Reads a topic as a stream of typed records. Records whose key or value cannot be
    /// decoded are poison.
    pub fn stream<K, V>(
        &self,
        topic: &str,
        key: impl Serde<K>,
        value: impl Serde<V>,
    ) -> Stream<K, V>
    where
        K: Clone + Send + 'static,
        V: Clone + Send + 'static,
    {
        let id = self.add_operator(format!("stream({topic})"));
        let children: Children<K, V> = new_children();
        let c = children.clone();
        let entry: Entry = Arc::new(move |ctx| {
            let started = Instant::now();
            let input = ctx.input();
            let mut out = Vec::with_capacity(input.len());
            for (i, r) in input.iter().enumerate() {
                let k = match key.deserialize(r.key.as_deref().unwrap_or_default()) {
                    Ok(k) => k,
                    Err(e) => {
                        ctx.poison(i, format!("key: {e}"));
                        continue;
                    }
                };
                match value.deserialize(r.value.as_deref().unwrap_or_default()) {
                    Ok(v) => out.push(Item {
                        at: i as u32,
                        key: k,
                        value: v,
                    }),
                    Err(e) => ctx.poison(i, format!("value: {e}")),
                }
            }
            ctx.record_operator(id, input.len(), out.len(), started.elapsed());
            emit_all(&c, ctx, out)
        });
        self.add_entry(topic, entry);
        Stream {
            pipeline: self.clone(),
            source: topic.to_string(),
            children,
        }
    }

    /// Reads a (compacted) topic as a table: the latest value per key is kept in a store
    /// (`table-<n>`, backed by its changelog), a tombstone deletes the key, and every change is
    /// available as a stream (`to_stream`). Records whose key cannot be decoded are poison.
    pub fn table<K, V>(
        &self,
        topic: &str,
        key: impl Serde<K>,
        value: impl Serde<V>,
    ) -> Table<K, Option<V>>
    where
        K: Clone + Send + Serialize + DeserializeOwned + 'static,
        V: Clone + Send + Serialize + DeserializeOwned + 'static,
    {
        let store = format!("table-{}", self.next_id());
        let id = self.add_operator(format!("table({topic}) -> {store}"));
        let children: Children<K, Option<V>> = new_children();
        let c = children.clone();
        let name = store.clone();
        let entry: Entry = Arc::new(move |ctx| {
            let started = Instant::now();
            let input = ctx.input();
            let mut out = Vec::with_capacity(input.len());
            for (i, r) in input.iter().enumerate() {
                let k = match key.deserialize(r.key.as_deref().unwrap_or_default()) {
                    Ok(k) => k,
                    Err(e) => {
                        ctx.poison(i, format!("key: {e}"));
                        continue;
                    }
                };
                let v = match r.value.as_deref().map(|b| value.deserialize(b)) {
                    None => None,
                    Some(Ok(v)) => Some(v),
                    Some(Err(e)) => {
                        ctx.poison(i, format!("value: {e}"));
                        continue;
                    }
                };
                let encoded = Json.serialize(&k).and_then(|kb| match &v {
                    Some(v) => Json.serialize(v).map(|vb| (kb, Some(vb))),
                    None => Ok((kb, None)),
                });
                let (kb, vb) = match encoded {
                    Ok(e) => e,
                    Err(e) => {
                        ctx.poison(i, format!("state: {e}"));
                        continue;
                    }
                };
                let s = ctx.store(&name)?;
                match vb {
                    Some(vb) => s.put(kb, vb),
                    None => s.delete(kb),
                }
                out.push(Item {
                    at: i as u32,
                    key: k,
                    value: v,
                });
            }
            ctx.record_operator(id, input.len(), out.len(), started.elapsed());
            emit_all(&c, ctx, out)
        });
        self.add_entry(topic, entry);
        self.add_store(topic, &store);
        Table {
            changes: Stream {
                pipeline: self.clone(),
                source: topic.to_string(),
                children,
            },
            store,
        }
    }

    /// The topology to run.
    pub fn build(&self) -> Result<Topology> {
        let s = self.state.borrow();
        if s.subs.is_empty() {
            return Err(EngineError::Plan(format!(
                "pipeline `{}` reads no topic",
                self.app
            )));
        }
        Ok(Topology {
            app: self.app.clone(),
            subtopologies: s.subs.values().cloned().collect(),
            internal_topics: s.internal.clone(),
            sinks: s.sinks.clone(),
            operators: s.operators.clone(),
        })
    }
}

/// A stream of typed key/value records.
pub struct Stream<K, V> {
    pipeline: Pipeline,
    source: String,
    children: Children<K, V>,
}

impl<K, V> std::fmt::Debug for Stream<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("source", &self.source)
            .finish()
    }
}

impl<K, V> Stream<K, V>
where
    K: Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    fn add_child(&self, node: Node<K, V>) {
        let mut list = self.children.lock().unwrap_or_else(|e| e.into_inner());
        let mut nodes: Vec<Node<K, V>> = list.iter().cloned().collect();
        nodes.push(node);
        *list = Arc::from(nodes);
    }

    /// A new operator fed by this stream: `op` maps a batch to a batch.
    fn derive<K2: Clone + Send + 'static, V2: Clone + Send + 'static>(
        &self,
        name: String,
        op: impl Fn(&mut TaskContext<'_>, Batch<K, V>) -> Result<Batch<K2, V2>> + Send + Sync + 'static,
    ) -> Stream<K2, V2> {
        let id = self.pipeline.add_operator(name);
        let children: Children<K2, V2> = new_children();
        let c = children.clone();
        self.add_child(Arc::new(move |ctx, batch| {
            let (n, started) = (batch.len(), Instant::now());
            let out = op(ctx, batch)?;
            ctx.record_operator(id, n, out.len(), started.elapsed());
            emit_all(&c, ctx, out)
        }));
        Stream {
            pipeline: self.pipeline.clone(),
            source: self.source.clone(),
            children,
        }
    }

    /// A terminal operator: `op` consumes a batch and returns how many records it wrote.
    fn sink(
        &self,
        name: String,
        op: impl Fn(&mut TaskContext<'_>, Batch<K, V>) -> Result<usize> + Send + Sync + 'static,
    ) {
        let id = self.pipeline.add_operator(name);
        self.add_child(Arc::new(move |ctx, batch| {
            let (n, started) = (batch.len(), Instant::now());
            let out = op(ctx, batch)?;
            ctx.record_operator(id, n, out, started.elapsed());
            Ok(())
        }));
    }

    /// Keeps records for which `f` is true.
    pub fn filter(&self, f: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> Stream<K, V> {
        self.derive("filter".into(), move |_, mut batch| {
            batch.retain(|it| f(&it.key, &it.value));
            Ok(batch)
        })
    }

    /// Transforms values.
    pub fn map_values<V2: Clone + Send + 'static>(
        &self,
        f: impl Fn(V) -> V2 + Send + Sync + 'static,
    ) -> Stream<K, V2> {
        self.derive("map_values".into(), move |_, batch| {
            Ok(batch
                .into_iter()
                .map(|it| Item {
                    at: it.at,
                    key: it.key,
                    value: f(it.value),
                })
                .collect())
        })
    }

    /// Transforms keys and values. A changed key does not move records between tasks; use
    /// `key_by` before grouping on a new key.
    pub fn map<K2, V2>(
        &self,
        f: impl Fn(K, V) -> (K2, V2) + Send + Sync + 'static,
    ) -> Stream<K2, V2>
    where
        K2: Clone + Send + 'static,
        V2: Clone + Send + 'static,
    {
        self.derive("map".into(), move |_, batch| {
            Ok(batch
                .into_iter()
                .map(|it| {
                    let (key, value) = f(it.key, it.value);
                    Item {
                        at: it.at,
                        key,
                        value,
                    }
                })
                .collect())
        })
    }

    /// Zero or more records per record.
    pub fn flat_map<K2, V2, I>(
        &self,
        f: impl Fn(K, V) -> I + Send + Sync + 'static,
    ) -> Stream<K2, V2>
    where
        K2: Clone + Send + 'static,
        V2: Clone + Send + 'static,
        I: IntoIterator<Item = (K2, V2)>,
    {
        self.derive("flat_map".into(), move |_, batch| {
            let mut out = Vec::with_capacity(batch.len());
            for it in batch {
                let at = it.at;
                out.extend(f(it.key, it.value).into_iter().map(|(key, value)| Item {
                    at,
                    key,
                    value,
                }));
            }
            Ok(out)
        })
    }

    /// Calls `f` for every record (a side effect; it runs again for records reprocessed after
    /// a crash).
    pub fn for_each(&self, f: impl Fn(&K, &V) + Send + Sync + 'static) {
        self.sink("for_each".into(), move |_, batch| {
            for it in &batch {
                f(&it.key, &it.value);
            }
            Ok(batch.len())
        });
    }

    /// Splits the stream: each record goes to the first branch whose predicate holds (records
    /// no predicate holds for are dropped).
    pub fn branch(&self, predicates: Vec<Predicate<K, V>>) -> Vec<Stream<K, V>> {
        let id = self
            .pipeline
            .add_operator(format!("branch({})", predicates.len()));
        let outs: Vec<Children<K, V>> = predicates.iter().map(|_| new_children()).collect();
        let targets = outs.clone();
        self.add_child(Arc::new(move |ctx, batch| {
            let (n, started) = (batch.len(), Instant::now());
            let mut split: Vec<Batch<K, V>> = targets.iter().map(|_| Vec::new()).collect();
            for it in batch {
                if let Some(b) = predicates.iter().position(|p| p(&it.key, &it.value)) {
                    split[b].push(it);
                }
            }
            let out = split.iter().map(Vec::len).sum();
            ctx.record_operator(id, n, out, started.elapsed());
            for (c, b) in targets.iter().zip(split) {
                emit_all(c, ctx, b)?;
            }
            Ok(())
        }));
        outs.into_iter()
            .map(|children| Stream {
                pipeline: self.pipeline.clone(),
                source: self.source.clone(),
                children,
            })
            .collect()
    }

    /// Writes the stream to a topic (partitioned by the serialized key, like Kafka). A record
    /// whose key or value cannot be encoded is poison.
    pub fn to_topic(&self, topic: &str, key: impl Serde<K>, value: impl Serde<V>) {
        let t = topic.to_string();
        self.pipeline.state.borrow_mut().sinks.push(t.clone());
        self.sink(format!("to_topic({topic})"), move |ctx, batch| {
            let mut written = 0;
            for it in batch {
                let encoded = key
                    .serialize(&it.key)
                    .map_err(|e| format!("output key: {e}"))
                    .and_then(|kb| {
                        value
                            .serialize(&it.value)
                            .map(|vb| (kb, vb))
                            .map_err(|e| format!("output value: {e}"))
                    });
                match encoded {
                    Ok((kb, vb)) => {
                        let timestamp = timestamp_of(ctx, it.at);
                        ctx.emit(
                            &t,
                            Record {
                                key: Some(Bytes::from(kb)),
                                value: Some(Bytes::from(vb)),
                                headers: Vec::new(),
                                timestamp: Some(timestamp),
                            },
                        )?;
                        written += 1;
                    }
                    Err(reason) => ctx.poison(it.at as usize, reason),
                }
            }
            Ok(written)
        });
    }

    /// Groups by the current key, which must already decide the partition (records written
    /// with that key). Use `key_by` to group by something else.
    pub fn group_by_key(&self) -> Grouped<K, V> {
        Grouped {
            stream: self.clone_handle(),
        }
    }

    fn clone_handle(&self) -> Stream<K, V> {
        Stream {
            pipeline: self.pipeline.clone(),
            source: self.source.clone(),
            children: self.children.clone(),
        }
    }
}

impl<K, V> Stream<K, V>
where
    K: Clone + Send + 'static,
    V: Clone + Send + Serialize + DeserializeOwned + 'static,
{
    /// Re-keys the stream through an internal repartition topic (`<app>-repartition-<n>`), so
    /// that records with the same new key meet in one task.
    pub fn key_by<K2>(&self, f: impl Fn(&K, &V) -> K2 + Send + Sync + 'static) -> Stream<K2, V>
    where
        K2: Clone + Send + Serialize + DeserializeOwned + 'static,
    {
        let id = self.pipeline.next_id();
        let topic = format!("{}-repartition-{id}", self.pipeline.app);
        {
            let mut s = self.pipeline.state.borrow_mut();
            s.internal.push((topic.clone(), self.source.clone()));
        }
        let t = topic.clone();
        self.sink(format!("key_by -> {topic}"), move |ctx, batch| {
            let mut written = 0;
            for it in batch {
                let k2 = f(&it.key, &it.value);
                let encoded = Json
                    .serialize(&k2)
                    .and_then(|kb| Json.serialize(&it.value).map(|vb| (kb, vb)));
                match encoded {
                    Ok((kb, vb)) => {
                        let timestamp = timestamp_of(ctx, it.at);
                        ctx.emit(&t, Record::keyed(kb, vb).at(timestamp))?;
                        written += 1;
                    }
                    Err(e) => ctx.poison(it.at as usize, format!("repartition: {e}")),
                }
            }
            Ok(written)
        });
        self.pipeline.stream::<K2, V>(&topic, Json, Json)
    }
}

impl<K, V> Stream<K, V>
where
    K: Clone + Send + Serialize + DeserializeOwned + 'static,
    V: Clone + Send + 'static,
{
    /// Joins each record with the current value of its key in a table read with `table()`
    /// (inner join: records whose key is not in the table are dropped). The stream and the
    /// table topic must be co-partitioned (same partition count, same keys); their task reads
    /// the table ahead of the stream.
    pub fn join<T, R>(
        &self,
        table: &Table<K, Option<T>>,
        joiner: impl Fn(V, T) -> R + Send + Sync + 'static,
    ) -> Stream<K, R>
    where
        T: Clone + Send + Serialize + DeserializeOwned + 'static,
        R: Clone + Send + 'static,
    {
        self.pipeline.merge(&table.changes.source, &self.source);
        let store = table.store.clone();
        self.derive(format!("join({store})"), move |ctx, batch| {
            let mut out = Vec::with_capacity(batch.len());
            for it in batch {
                let kb = match Json.serialize(&it.key) {
                    Ok(kb) => kb,
                    Err(e) => {
                        ctx.poison(it.at as usize, format!("join key: {e}"));
                        continue;
                    }
                };
                if let Some(b) = ctx.store(&store)?.get(&kb)? {
                    let t: T = Json
                        .deserialize(&b)
                        .map_err(|e| EngineError::StateCorrupted {
                            store: store.clone(),
                            reason: e,
                        })?;
                    out.push(Item {
                        at: it.at,
                        key: it.key,
                        value: joiner(it.value, t),
                    });
                }
            }
            Ok(out)
        })
    }
}

/// A stream grouped by key, ready to aggregate.
pub struct Grouped<K, V> {
    stream: Stream<K, V>,
}

impl<K, V> std::fmt::Debug for Grouped<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grouped")
            .field("source", &self.stream.source)
            .finish()
    }
}

impl<K, V> Grouped<K, V>
where
    K: Clone + Send + Serialize + DeserializeOwned + 'static,
    V: Clone + Send + 'static,
{
    /// Folds every value of a key into an aggregate kept in RocksDB (store `aggregate-<n>`);
    /// emits the new aggregate for each record.
    pub fn aggregate<A>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        f: impl Fn(A, V) -> A + Send + Sync + 'static,
    ) -> Table<K, A>
    where
        A: Clone + Send + Serialize + DeserializeOwned + 'static,
    {
        let store = format!("aggregate-{}", self.stream.pipeline.next_id());
        self.stream.pipeline.add_store(&self.stream.source, &store);
        let name = store.clone();
        let changes = self
            .stream
            .derive(format!("aggregate -> {store}"), move |ctx, batch| {
                let mut out = Vec::with_capacity(batch.len());
                for it in batch {
                    let kb = match Json.serialize(&it.key) {
                        Ok(kb) => kb,
                        Err(e) => {
                            ctx.poison(it.at as usize, format!("state key: {e}"));
                            continue;
                        }
                    };
                    let s = ctx.store(&name)?;
                    let old: A = match s.get(&kb)? {
                        Some(b) => {
                            Json.deserialize(&b)
                                .map_err(|e| EngineError::StateCorrupted {
                                    store: name.clone(),
                                    reason: e,
                                })?
                        }
                        None => init(),
                    };
                    let new = f(old, it.value);
                    match Json.serialize(&new) {
                        Ok(nb) => s.put(kb, nb),
                        Err(e) => {
                            ctx.poison(it.at as usize, format!("state value: {e}"));
                            continue;
                        }
                    }
                    out.push(Item {
                        at: it.at,
                        key: it.key,
                        value: new,
                    });
                }
                Ok(out)
            });
        Table { changes, store }
    }

    /// Counts records per key.
    pub fn count(&self) -> Table<K, u64> {
        self.aggregate(|| 0u64, |n, _| n + 1)
    }

    /// Combines the values of a key with `f`.
    pub fn reduce(&self, f: impl Fn(V, V) -> V + Send + Sync + 'static) -> Table<K, V>
    where
        V: Serialize + DeserializeOwned,
    {
        let t = self.aggregate(
            || None::<V>,
            move |acc, v| {
                Some(match acc {
                    Some(a) => f(a, v),
                    None => v,
                })
            },
        );
        Table {
            changes: t.changes.flat_map(|k, v: Option<V>| v.map(|v| (k, v))),
            store: t.store,
        }
    }
}

/// A table: the latest value per key, kept in a store; its changes form a stream.
pub struct Table<K, A> {
    changes: Stream<K, A>,
    store: String,
}

impl<K, A> std::fmt::Debug for Table<K, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("store", &self.store).finish()
    }
}

impl<K, A> Table<K, A>
where
    K: Clone + Send + 'static,
    A: Clone + Send + 'static,
{
    /// Every update of the table, as a stream.
    pub fn to_stream(&self) -> Stream<K, A> {
        self.changes.clone_handle()
    }

    /// Writes every update to a topic.
    pub fn to_topic(&self, topic: &str, key: impl Serde<K>, value: impl Serde<A>) {
        self.changes.to_topic(topic, key, value);
    }

    /// The name of the table's state store.
    pub fn store_name(&self) -> &str {
        &self.store
    }
}
