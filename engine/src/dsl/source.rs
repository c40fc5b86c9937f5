//! The DSL's sources: [`Pipeline::stream`] decodes an input's records into items;
//! [`Pipeline::table`] keeps the latest value per key of an input in a store (tombstones
//! delete, keyless records are dropped and counted) and streams its changes.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Result;
use crate::plan::InputKind;
use crate::processor::{Origin, TaskContext};
use crate::serde::{Json, Serde};

use super::graph::{Children, Entry, Outlet};
use super::{slot_name, Item, NameSlot, Pipeline, Stream, Table};

/// Descriptor of the DSL's table stores.
const TABLE_STORE: &str = "table json";

/// Reads a stream input: decodes each record into an item (poison when it cannot).
struct SourceEntry<K, V> {
    id: usize,
    key: Arc<dyn Serde<K>>,
    value: Arc<dyn Serde<V>>,
    /// Records without a key are dropped and counted rather than decoded.
    keyed: bool,
    children: Children<K, V>,
}

impl<K: Clone + Send + 'static, V: Clone + Send + 'static> Entry for SourceEntry<K, V> {
    fn process(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        let started = Instant::now();
        let input = ctx.input();
        let mut out = Vec::with_capacity(input.len());
        let mut dropped = 0;
        for (i, r) in input.iter().enumerate() {
            if self.keyed && r.key.is_none() {
                dropped += 1;
                continue;
            }
            let k = match self.key.deserialize(r.key.as_deref().unwrap_or_default()) {
                Ok(k) => k,
                Err(e) => {
                    ctx.poison(Origin::input(i), format!("key: {e}"));
                    continue;
                }
            };
            match self
                .value
                .deserialize(r.value.as_deref().unwrap_or_default())
            {
                Ok(v) => out.push(Item {
                    origin: Origin::input(i),
                    ts: r.timestamp,
                    key: k,
                    value: v,
                }),
                Err(e) => ctx.poison(Origin::input(i), format!("value: {e}")),
            }
        }
        if dropped > 0 {
            ctx.record_dropped(self.id, dropped);
        }
        ctx.record_operator(self.id, input.len(), out.len(), started.elapsed());
        self.children.push(ctx, out)
    }

    fn on_time(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        self.children.on_time(ctx)
    }

    fn flush(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        self.children.flush(ctx)
    }
}

/// Reads a table input into its store: latest value per key, a tombstone deletes, a record
/// without a key is dropped and counted (as Kafka Streams does).
struct TableEntry<K, V> {
    id: usize,
    store: usize,
    key: Arc<dyn Serde<K>>,
    value: Arc<dyn Serde<V>>,
    children: Children<K, Option<V>>,
}

impl<K, V> Entry for TableEntry<K, V>
where
    K: Clone + Send + Serialize + DeserializeOwned + 'static,
    V: Clone + Send + Serialize + DeserializeOwned + 'static,
{
    fn process(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        let started = Instant::now();
        let input = ctx.input();
        let mut out = Vec::with_capacity(input.len());
        let mut dropped = 0;
        for (i, r) in input.iter().enumerate() {
            let origin = Origin::input(i);
            let Some(kb) = r.key.as_deref() else {
                dropped += 1;
                continue;
            };
            let k = match self.key.deserialize(kb) {
                Ok(k) => k,
                Err(e) => {
                    ctx.poison(origin, format!("key: {e}"));
                    continue;
                }
            };
            let v = match r.value.as_deref().map(|b| self.value.deserialize(b)) {
                None => None,
                Some(Ok(v)) => Some(v),
                Some(Err(e)) => {
                    ctx.poison(origin, format!("value: {e}"));
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
                    ctx.poison(origin, format!("state: {e}"));
                    continue;
                }
            };
            let s = ctx.store_at(self.store)?;
            match vb {
                Some(vb) => s.put(kb, vb),
                None => s.delete(kb),
            }
            out.push(Item {
                origin,
                ts: r.timestamp,
                key: k,
                value: v,
            });
        }
        if dropped > 0 {
            ctx.record_dropped(self.id, dropped);
        }
        ctx.record_operator(self.id, input.len(), out.len(), started.elapsed());
        self.children.push(ctx, out)
    }

    fn on_time(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        self.children.on_time(ctx)
    }

    fn flush(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        self.children.flush(ctx)
    }
}

impl Pipeline {
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
        self.stream_input(topic, false, false, Arc::new(key), Arc::new(value))
    }

    /// Consumes a queue (weir-queue) as a stream, as one of its competing consumers: each
    /// task receives its partition's messages under a lock and acks them in its commit —
    /// under exactly-once in the same transaction as its outputs and state, so every message
    /// is processed once however the pipeline crashes. A message whose lock runs out before
    /// the commit redoes the interval. Run with [`crate::RunOptions::queues`].
    pub fn queue<K, V>(&self, queue: &str, key: impl Serde<K>, value: impl Serde<V>) -> Stream<K, V>
    where
        K: Clone + Send + 'static,
        V: Clone + Send + 'static,
    {
        let stream = self.stream_input(queue, false, false, Arc::new(key), Arc::new(value));
        self.mark_queue(queue);
        stream
    }

    /// [`Pipeline::stream`] for a topic whose records should have keys: a record without one
    /// is dropped and counted (the operator's `dropped`), not decoded.
    pub fn keyed_stream<K, V>(
        &self,
        topic: &str,
        key: impl Serde<K>,
        value: impl Serde<V>,
    ) -> Stream<K, V>
    where
        K: Clone + Send + 'static,
        V: Clone + Send + 'static,
    {
        self.stream_input(topic, false, true, Arc::new(key), Arc::new(value))
    }

    pub(super) fn stream_input<K, V>(
        &self,
        topic: &str,
        internal: bool,
        keyed: bool,
        key: Arc<dyn Serde<K>>,
        value: Arc<dyn Serde<V>>,
    ) -> Stream<K, V>
    where
        K: Clone + Send + 'static,
        V: Clone + Send + 'static,
    {
        let id = self.add_operator(format!("stream({topic})"));
        let outlet: Outlet<K, V> = Outlet::new();
        let o = outlet.clone();
        self.add_entry(
            topic,
            InputKind::Stream,
            internal,
            Arc::new(move |task| {
                Ok(Box::new(SourceEntry {
                    id,
                    key: key.clone(),
                    value: value.clone(),
                    keyed,
                    children: o.build(task)?,
                }))
            }),
        );
        Stream {
            pipeline: self.clone(),
            source: topic.to_string(),
            outlet,
            name: None,
        }
    }

    /// Reads a (compacted) topic as a table: the latest value per key is kept in a store
    /// (named `<topic>-table` unless [`Table::named`]), a tombstone deletes the key, a record
    /// without a key is dropped (and counted), and every change is available as a stream
    /// (`to_stream`). Records whose key cannot be decoded are poison.
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
        let slot: NameSlot = Arc::new(Mutex::new(self.default_name(topic, "table")));
        let id = self.add_operator(format!("table({topic})"));
        let outlet: Outlet<K, Option<V>> = Outlet::new();
        let (o, s) = (outlet.clone(), slot.clone());
        let (key, value): (Arc<dyn Serde<K>>, Arc<dyn Serde<V>>) = (Arc::new(key), Arc::new(value));
        self.add_entry(
            topic,
            InputKind::Table,
            false,
            Arc::new(move |task| {
                Ok(Box::new(TableEntry {
                    id,
                    store: task.store_index(&slot_name(&s))?,
                    key: key.clone(),
                    value: value.clone(),
                    children: o.build(task)?,
                }))
            }),
        );
        self.add_store(
            topic,
            slot.clone(),
            crate::plan::StoreKind::KeyValue,
            TABLE_STORE,
        );
        Table {
            changes: Stream {
                pipeline: self.clone(),
                source: topic.to_string(),
                outlet,
                name: None,
            },
            store: slot,
            op: None,
            ttl_store: None,
        }
    }
}
