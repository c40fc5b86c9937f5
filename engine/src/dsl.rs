//! The typed Rust DSL: `stream → filter/map → key_by/group_by_key → count/reduce/aggregate →
//! to_topic`, in the spirit of Kafka Streams.
//!
//! Building a pipeline builds a push graph: every [`Stream`] keeps the operators fed by it, so a
//! stream used twice (a fork) computes its upstream once. `key_by` writes to an internal
//! repartition topic keyed by the new key and continues in a new sub-topology that reads it,
//! so records of one key meet in one task. Aggregations keep their state in the task's
//! RocksDB store (`<kind>-<n>`), backed by its changelog. [`Pipeline::build`] yields a
//! [`Topology`] that the runtime runs as tasks (sub-topology × partition).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use weir_log::Record;

use crate::error::{EngineError, Result};
use crate::serde::{Json, Serde};
use crate::task::{InputRecord, TaskContext};

/// Where the record being processed came from (for errors and output timestamps).
#[derive(Debug, Clone)]
pub struct Origin {
    /// Source topic of the sub-topology.
    pub topic: Arc<str>,
    /// The input record's partition, offset and timestamp.
    pub partition: u32,
    /// Offset.
    pub offset: weir_log::Offset,
    /// Timestamp.
    pub timestamp: weir_log::Timestamp,
}

type Emit<K, V> = Arc<dyn Fn(&mut TaskContext<'_>, &Origin, K, V) -> Result<()> + Send + Sync>;
type Children<K, V> = Arc<Mutex<Vec<Emit<K, V>>>>;
type Entry = Arc<dyn Fn(&mut TaskContext<'_>, &Origin, &InputRecord) -> Result<()> + Send + Sync>;
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

    /// Runs one input record through every operator fed by its topic.
    pub fn process(&self, ctx: &mut TaskContext<'_>, record: &InputRecord) -> Result<()> {
        let origin = Origin {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            timestamp: record.timestamp,
        };
        for e in self.entries.get(&*record.topic).into_iter().flatten() {
            e(ctx, &origin, record)?;
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
}

#[derive(Default)]
struct PlanState {
    subs: BTreeMap<String, SubTopology>,
    /// A sub-topology merged into another (a joined table): its source → the host's.
    aliases: BTreeMap<String, String>,
    internal: Vec<(String, String)>,
    sinks: Vec<String>,
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
    Arc::new(Mutex::new(Vec::new()))
}

fn emit_all<K: Clone, V: Clone>(
    children: &Children<K, V>,
    ctx: &mut TaskContext<'_>,
    o: &Origin,
    k: K,
    v: V,
) -> Result<()> {
    // Children are only added while the pipeline is built, never while it runs, and the graph
    // has no cycles, so holding the lock across the calls cannot deadlock.
    let list = children.lock().unwrap_or_else(|e| e.into_inner());
    match list.split_last() {
        None => Ok(()),
        Some((last, rest)) => {
            for c in rest {
                c(ctx, o, k.clone(), v.clone())?;
            }
            last(ctx, o, k, v)
        }
    }
}

fn poison(o: &Origin, what: &str, e: String) -> EngineError {
    EngineError::Poison {
        topic: o.topic.to_string(),
        partition: o.partition,
        offset: o.offset,
        reason: format!("{what}: {e}"),
    }
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

    /// Reads a topic as a stream of typed records.
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
        let children: Children<K, V> = new_children();
        let c = children.clone();
        let entry: Entry = Arc::new(move |ctx, o, r| {
            let k = key
                .deserialize(r.key.as_deref().unwrap_or_default())
                .map_err(|e| poison(o, "key", e))?;
            let v = value
                .deserialize(r.value.as_deref().unwrap_or_default())
                .map_err(|e| poison(o, "value", e))?;
            emit_all(&c, ctx, o, k, v)
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
        let children: Children<K, Option<V>> = new_children();
        let c = children.clone();
        let name = store.clone();
        let entry: Entry = Arc::new(move |ctx, o, r| {
            let k = key
                .deserialize(r.key.as_deref().unwrap_or_default())
                .map_err(|e| poison(o, "key", e))?;
            let v = match r.value.as_deref() {
                None => None,
                Some(b) => Some(value.deserialize(b).map_err(|e| poison(o, "value", e))?),
            };
            let kb = Json.serialize(&k).map_err(|e| poison(o, "state key", e))?;
            let s = ctx.store(&name)?;
            match &v {
                Some(v) => s.put(
                    kb,
                    Json.serialize(v).map_err(|e| poison(o, "state value", e))?,
                ),
                None => s.delete(kb),
            }
            emit_all(&c, ctx, o, k, v)
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
    fn derive<K2: Clone + Send + 'static, V2: Clone + Send + 'static>(
        &self,
        op: impl Fn(&mut TaskContext<'_>, &Origin, K, V, &Children<K2, V2>) -> Result<()>
            + Send
            + Sync
            + 'static,
    ) -> Stream<K2, V2> {
        let children: Children<K2, V2> = new_children();
        let c = children.clone();
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(move |ctx, o, k, v| op(ctx, o, k, v, &c)));
        Stream {
            pipeline: self.pipeline.clone(),
            source: self.source.clone(),
            children,
        }
    }

    /// Keeps records for which `f` is true.
    pub fn filter(&self, f: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> Stream<K, V> {
        self.derive(move |ctx, o, k, v, c| {
            if f(&k, &v) {
                emit_all(c, ctx, o, k, v)
            } else {
                Ok(())
            }
        })
    }

    /// Transforms values.
    pub fn map_values<V2: Clone + Send + 'static>(
        &self,
        f: impl Fn(V) -> V2 + Send + Sync + 'static,
    ) -> Stream<K, V2> {
        self.derive(move |ctx, o, k, v, c| emit_all(c, ctx, o, k, f(v)))
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
        self.derive(move |ctx, o, k, v, c| {
            let (k2, v2) = f(k, v);
            emit_all(c, ctx, o, k2, v2)
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
        self.derive(move |ctx, o, k, v, c| {
            for (k2, v2) in f(k, v) {
                emit_all(c, ctx, o, k2, v2)?;
            }
            Ok(())
        })
    }

    /// Calls `f` for every record (a side effect; it runs again for records reprocessed after
    /// a crash).
    pub fn for_each(&self, f: impl Fn(&K, &V) + Send + Sync + 'static) {
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(move |_, _, k, v| {
                f(&k, &v);
                Ok(())
            }));
    }

    /// Splits the stream: each record goes to the first branch whose predicate holds.
    pub fn branch(&self, predicates: Vec<Predicate<K, V>>) -> Vec<Stream<K, V>> {
        let outs: Vec<Children<K, V>> = predicates.iter().map(|_| new_children()).collect();
        let targets = outs.clone();
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(move |ctx, o, k, v| {
                for (p, c) in predicates.iter().zip(&targets) {
                    if p(&k, &v) {
                        return emit_all(c, ctx, o, k, v);
                    }
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

    /// Writes the stream to a topic (partitioned by the serialized key, like Kafka).
    pub fn to_topic(&self, topic: &str, key: impl Serde<K>, value: impl Serde<V>) {
        let t = topic.to_string();
        self.pipeline.state.borrow_mut().sinks.push(t.clone());
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(move |ctx, o, k, v| {
                let kb = key.serialize(&k).map_err(|e| poison(o, "output key", e))?;
                let vb = value
                    .serialize(&v)
                    .map_err(|e| poison(o, "output value", e))?;
                ctx.emit(
                    &t,
                    Record {
                        key: Some(Bytes::from(kb)),
                        value: Some(Bytes::from(vb)),
                        headers: Vec::new(),
                        timestamp: Some(o.timestamp),
                    },
                );
                Ok(())
            }));
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
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(move |ctx, o, k, v| {
                let k2 = f(&k, &v);
                let kb = Json
                    .serialize(&k2)
                    .map_err(|e| poison(o, "repartition key", e))?;
                let vb = Json
                    .serialize(&v)
                    .map_err(|e| poison(o, "repartition value", e))?;
                ctx.emit(&t, Record::keyed(kb, vb).at(o.timestamp));
                Ok(())
            }));
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
        self.derive(move |ctx, o, k, v, c| {
            let kb = Json.serialize(&k).map_err(|e| poison(o, "join key", e))?;
            let found = ctx.store(&store)?.get(&kb)?;
            match found {
                None => Ok(()),
                Some(b) => {
                    let t: T = Json
                        .deserialize(&b)
                        .map_err(|e| EngineError::StateCorrupted {
                            store: store.clone(),
                            reason: e,
                        })?;
                    emit_all(c, ctx, o, k, joiner(v, t))
                }
            }
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
        let changes = self.stream.derive(move |ctx, o, k: K, v: V, c| {
            let kb = Json.serialize(&k).map_err(|e| poison(o, "state key", e))?;
            let s = ctx.store(&name)?;
            let old: A = match s.get(&kb)? {
                Some(b) => Json
                    .deserialize(&b)
                    .map_err(|e| EngineError::StateCorrupted {
                        store: name.clone(),
                        reason: e,
                    })?,
                None => init(),
            };
            let new = f(old, v);
            let nb = Json
                .serialize(&new)
                .map_err(|e| poison(o, "state value", e))?;
            s.put(kb, nb);
            emit_all(c, ctx, o, k, new)
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
