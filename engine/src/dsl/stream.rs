//! [`Stream`] and its stateless operators (`filter`, `map`, `try_map_values`,
//! `with_event_time`, `branch`, `to_topic`, …) and `key_by`. Each method adds an operator
//! factory to the graph (see `graph.rs`); nothing runs until the built topology does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use weir_log::{Record, Timestamp};

use crate::error::Result;
use crate::plan::{InternalTopic, TaskSetup};
use crate::processor::TaskContext;
use crate::serde::{Json, Serde};
use crate::time::{EventTime, TimeSource};

use super::graph::{Children, Op, Outlet, SinkFn, Stage, StageFn, Terminal};
use super::{Batch, Grouped, Item, Pipeline};

/// A branch predicate.
pub type Predicate<K, V> = Box<dyn Fn(&K, &V) -> bool + Send + Sync>;

/// A stream of typed key/value records.
pub struct Stream<K, V> {
    pub(super) pipeline: Pipeline,
    pub(super) source: String,
    pub(super) outlet: Outlet<K, V>,
    /// The name `.named(…)` gave the next stateful operator or repartition topic.
    pub(super) name: Option<String>,
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
    /// A new operator fed by this stream, built per task by `make`.
    pub(super) fn derive<K2: Clone + Send + 'static, V2: Clone + Send + 'static>(
        &self,
        name: String,
        make: impl Fn(&TaskSetup<'_>) -> Result<StageFn<K, V, K2, V2>> + Send + Sync + 'static,
    ) -> Stream<K2, V2> {
        let id = self.pipeline.add_operator(name);
        let outlet: Outlet<K2, V2> = Outlet::new();
        let o = outlet.clone();
        self.outlet.add(Arc::new(move |task| {
            let op: Box<dyn Op<K, V>> = Box::new(Stage {
                id,
                f: make(task)?,
                children: o.build(task)?,
            });
            Ok(op)
        }));
        Stream {
            pipeline: self.pipeline.clone(),
            source: self.source.clone(),
            outlet,
            name: None,
        }
    }

    /// A stateless operator: the same function for every task.
    pub(super) fn derive_stateless<K2: Clone + Send + 'static, V2: Clone + Send + 'static>(
        &self,
        name: &str,
        f: impl Fn(&mut TaskContext<'_>, Batch<K, V>) -> Result<Batch<K2, V2>> + Send + Sync + 'static,
    ) -> Stream<K2, V2> {
        let f = Arc::new(f);
        self.derive(name.to_string(), move |_| {
            let f = f.clone();
            Ok(Box::new(move |ctx, batch| f(ctx, batch)))
        })
    }

    /// A terminal operator, built per task by `make`.
    pub(super) fn sink(
        &self,
        name: String,
        make: impl Fn(&TaskSetup<'_>) -> Result<SinkFn<K, V>> + Send + Sync + 'static,
    ) {
        let id = self.pipeline.add_operator(name);
        self.outlet.add(Arc::new(move |task| {
            let op: Box<dyn Op<K, V>> = Box::new(Terminal { id, f: make(task)? });
            Ok(op)
        }));
    }

    /// Names the next stateful operator (its store) or repartition topic made from this stream
    /// (letters, digits, `-`, `_`). Unnamed ones are named after the stream's source.
    pub fn named(mut self, name: &str) -> Stream<K, V> {
        self.name = Some(name.to_string());
        self
    }

    /// Takes event time from the value (`f`) instead of the record timestamp; the watermark
    /// of this input stays `out_of_orderness` behind the largest event time seen. Set it where
    /// records enter the pipeline (before `key_by`); outputs and repartitioned records carry
    /// the event time as their timestamp.
    pub fn with_event_time(
        &self,
        f: impl Fn(&V) -> i64 + Send + Sync + 'static,
        out_of_orderness: Duration,
    ) -> Result<Stream<K, V>> {
        self.try_with_event_time(move |v, _| Ok(f(v)), out_of_orderness)
    }

    /// Keeps records for which `f` is true.
    pub fn filter(&self, f: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> Stream<K, V> {
        self.derive_stateless("filter", move |_, mut batch| {
            batch.retain(|it| f(&it.key, &it.value));
            Ok(batch)
        })
    }

    /// Transforms values.
    pub fn map_values<V2: Clone + Send + 'static>(
        &self,
        f: impl Fn(V) -> V2 + Send + Sync + 'static,
    ) -> Stream<K, V2> {
        self.derive_stateless("map_values", move |_, batch| {
            Ok(batch
                .into_iter()
                .map(|it| Item {
                    origin: it.origin,
                    ts: it.ts,
                    key: it.key,
                    value: f(it.value),
                })
                .collect())
        })
    }

    /// Transforms values with a function that can fail: a failing call (an error or a panic)
    /// is retried under the pipeline's retry policy, then its record is poison (dead-lettered
    /// with `weir.attempts`, skipped, or failing the pipeline, by the error policy).
    pub fn try_map_values<V2, E>(
        &self,
        f: impl Fn(&V) -> std::result::Result<V2, E> + Send + Sync + 'static,
    ) -> Stream<K, V2>
    where
        V2: Clone + Send + 'static,
        E: std::fmt::Display,
    {
        self.derive_stateless("try_map_values", move |ctx, batch| {
            let mut out = Vec::with_capacity(batch.len());
            for it in batch {
                match ctx.retrying(|| f(&it.value)) {
                    Ok(value) => out.push(Item {
                        origin: it.origin,
                        ts: it.ts,
                        key: it.key,
                        value,
                    }),
                    Err((reason, attempts)) => ctx.poison_after(it.origin, reason, attempts),
                }
            }
            Ok(out)
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
        self.derive_stateless("map", move |_, batch| {
            Ok(batch
                .into_iter()
                .map(|it| {
                    let (key, value) = f(it.key, it.value);
                    Item {
                        origin: it.origin,
                        ts: it.ts,
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
        self.derive_stateless("flat_map", move |_, batch| {
            let mut out = Vec::with_capacity(batch.len());
            for it in batch {
                let (origin, ts) = (it.origin, it.ts);
                out.extend(f(it.key, it.value).into_iter().map(|(key, value)| Item {
                    origin,
                    ts,
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
        let f = Arc::new(f);
        self.sink("for_each".into(), move |_| {
            let f = f.clone();
            Ok(Box::new(move |_, batch: Batch<K, V>| {
                for it in &batch {
                    f(&it.key, &it.value);
                }
                Ok(batch.len())
            }))
        });
    }

    /// Calls a side effect that can fail for every record, under the retry policy; a record
    /// whose call still fails is poison (see [`Stream::try_map_values`]).
    pub fn try_for_each<E: std::fmt::Display>(
        &self,
        f: impl Fn(&K, &V) -> std::result::Result<(), E> + Send + Sync + 'static,
    ) {
        let f = Arc::new(f);
        self.sink("try_for_each".into(), move |_| {
            let f = f.clone();
            Ok(Box::new(move |ctx, batch: Batch<K, V>| {
                let mut done = 0;
                for it in &batch {
                    match ctx.retrying(|| f(&it.key, &it.value)) {
                        Ok(()) => done += 1,
                        Err((reason, attempts)) => ctx.poison_after(it.origin, reason, attempts),
                    }
                }
                Ok(done)
            }))
        });
    }

    /// Splits the stream: each record goes to the first branch whose predicate holds (records
    /// no predicate holds for are dropped).
    pub fn branch(&self, predicates: Vec<Predicate<K, V>>) -> Vec<Stream<K, V>> {
        let id = self
            .pipeline
            .add_operator(format!("branch({})", predicates.len()));
        let outs: Vec<Outlet<K, V>> = predicates.iter().map(|_| Outlet::new()).collect();
        let (targets, predicates) = (outs.clone(), Arc::new(predicates));
        self.outlet.add(Arc::new(move |task| {
            let mut children = Vec::with_capacity(targets.len());
            for t in &targets {
                children.push(t.build(task)?);
            }
            let op: Box<dyn Op<K, V>> = Box::new(BranchOp {
                id,
                predicates: predicates.clone(),
                children,
            });
            Ok(op)
        }));
        outs.into_iter()
            .map(|outlet| Stream {
                pipeline: self.pipeline.clone(),
                source: self.source.clone(),
                outlet,
                name: None,
            })
            .collect()
    }

    /// Writes the stream to a topic (partitioned by the serialized key, like Kafka), each
    /// record stamped with its item's time. A record whose key or value cannot be encoded is
    /// poison.
    pub fn to_topic(&self, topic: &str, key: impl Serde<K>, value: impl Serde<V>) {
        let t = topic.to_string();
        self.pipeline.state.borrow_mut().sinks.push(t.clone());
        let (key, value) = (Arc::new(key), Arc::new(value));
        self.sink(format!("to_topic({topic})"), move |_| {
            let (t, key, value) = (t.clone(), key.clone(), value.clone());
            Ok(Box::new(move |ctx, batch: Batch<K, V>| {
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
                            ctx.emit(
                                &t,
                                Record::keyed(Bytes::from(kb), Bytes::from(vb)).at(it.ts),
                            )?;
                            written += 1;
                        }
                        Err(reason) => ctx.poison(it.origin, reason),
                    }
                }
                Ok(written)
            }))
        });
    }

    /// Takes event time from the value or the record timestamp with `f(value, record
    /// timestamp)`; a record for which it fails is poison. The watermark of this input stays
    /// `out_of_orderness` behind the largest event time seen (see [`Stream::with_event_time`]).
    pub fn try_with_event_time(
        &self,
        f: impl Fn(&V, Timestamp) -> std::result::Result<i64, String> + Send + Sync + 'static,
        out_of_orderness: Duration,
    ) -> Result<Stream<K, V>> {
        self.pipeline.set_event_time(
            &self.source,
            EventTime {
                source: TimeSource::Extracted,
                out_of_orderness,
            },
        )?;
        Ok(self.derive_stateless("with_event_time", move |ctx, batch| {
            let mut out = Vec::with_capacity(batch.len());
            for mut it in batch {
                match f(&it.value, it.ts) {
                    Ok(ts) => {
                        it.ts = Timestamp(ts);
                        ctx.observe_event_time(it.ts);
                        out.push(it);
                    }
                    Err(reason) => ctx.poison(it.origin, format!("event time: {reason}")),
                }
            }
            Ok(out)
        }))
    }

    /// Groups by the current key, which must already decide the partition (records written
    /// with that key). Use `key_by` to group by something else.
    pub fn group_by_key(&self) -> Grouped<K, V> {
        Grouped {
            stream: self.clone_handle(),
            name: self.name.clone(),
        }
    }

    pub(super) fn clone_handle(&self) -> Stream<K, V> {
        Stream {
            pipeline: self.pipeline.clone(),
            source: self.source.clone(),
            outlet: self.outlet.clone(),
            name: self.name.clone(),
        }
    }
}

/// Splits a batch among branches by the first predicate that holds.
struct BranchOp<K, V> {
    id: usize,
    predicates: Arc<Vec<Predicate<K, V>>>,
    children: Vec<Children<K, V>>,
}

impl<K: Clone + Send, V: Clone + Send> Op<K, V> for BranchOp<K, V> {
    fn push(&mut self, ctx: &mut TaskContext<'_>, batch: Batch<K, V>) -> Result<()> {
        let (n, started) = (batch.len(), Instant::now());
        let mut split: Vec<Batch<K, V>> = self.children.iter().map(|_| Vec::new()).collect();
        for it in batch {
            if let Some(b) = self.predicates.iter().position(|p| p(&it.key, &it.value)) {
                split[b].push(it);
            }
        }
        let out = split.iter().map(Vec::len).sum();
        ctx.record_operator(self.id, n, out, started.elapsed());
        for (c, b) in self.children.iter_mut().zip(split) {
            c.push(ctx, b)?;
        }
        Ok(())
    }

    fn on_time(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        for c in &mut self.children {
            c.on_time(ctx)?;
        }
        Ok(())
    }

    fn flush(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        for c in &mut self.children {
            c.flush(ctx)?;
        }
        Ok(())
    }
}

impl<K, V> Stream<K, V>
where
    K: Clone + Send + 'static,
    V: Clone + Send + Serialize + DeserializeOwned + 'static,
{
    /// Groups by a new key: [`Stream::key_by`] then [`Stream::group_by_key`].
    pub fn group_by<K2>(&self, f: impl Fn(&K, &V) -> K2 + Send + Sync + 'static) -> Grouped<K2, V>
    where
        K2: Clone + Send + Serialize + DeserializeOwned + 'static,
    {
        self.key_by(f).group_by_key()
    }

    /// Re-keys the stream through an internal repartition topic (`APP.NAME.repartition`, NAME
    /// from `.named(…)` or `<source>-rekey`), so that records with the same new key meet in one
    /// task.
    pub fn key_by<K2>(&self, f: impl Fn(&K, &V) -> K2 + Send + Sync + 'static) -> Stream<K2, V>
    where
        K2: Clone + Send + Serialize + DeserializeOwned + 'static,
    {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| self.pipeline.default_name(&self.source, "rekey"));
        let topic = crate::names::repartition_topic(&self.pipeline.app, &name);
        {
            let mut s = self.pipeline.state.borrow_mut();
            s.internal.push(InternalTopic {
                name: topic.clone(),
                partitions: None,
                partitions_like: self.source.clone(),
            });
            s.logical.insert(topic.clone(), name);
        }
        let f = Arc::new(f);
        let t = topic.clone();
        self.sink(format!("key_by -> {topic}"), move |_| {
            let (f, t) = (f.clone(), t.clone());
            Ok(Box::new(move |ctx, batch: Batch<K, V>| {
                let mut written = 0;
                for it in batch {
                    let k2 = f(&it.key, &it.value);
                    let encoded = Json
                        .serialize(&k2)
                        .and_then(|kb| Json.serialize(&it.value).map(|vb| (kb, vb)));
                    match encoded {
                        Ok((kb, vb)) => {
                            ctx.emit(&t, Record::keyed(kb, vb).at(it.ts))?;
                            written += 1;
                        }
                        Err(e) => ctx.poison(it.origin, format!("repartition: {e}")),
                    }
                }
                Ok(written)
            }))
        });
        self.pipeline
            .stream_input::<K2, V>(&topic, true, false, Arc::new(Json), Arc::new(Json))
    }
}
