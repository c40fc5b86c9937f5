//! Stateful operators of the DSL: [`Grouped`] aggregations (`aggregate`, `count`, `reduce`)
//! whose state lives in a RocksDB store per task, the stream–table [`Stream::join`], and
//! [`Table`]s (the latest value per key, with their changes as a stream).

use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{EngineError, Result};
use crate::processor::TaskContext;
use crate::serde::{Json, Serde};

use super::{slot_name, Batch, Item, NameSlot, Stream};

impl<K, V> Stream<K, V>
where
    K: Clone + Send + Serialize + DeserializeOwned + 'static,
    V: Clone + Send + 'static,
{
    /// Joins each record with the current value of its key in a table read with `table()`
    /// (inner join: records whose key is not in the table are dropped). The stream and the
    /// table topic must be co-partitioned (same partition count, same keys); their task reads
    /// both, in timestamp order.
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
        let slot = table.store.clone();
        let joiner = Arc::new(joiner);
        self.derive("join".to_string(), move |task| {
            let name = slot_name(&slot);
            let store = task.store_index(&name)?;
            let joiner = joiner.clone();
            Ok(Box::new(move |ctx, batch: Batch<K, V>| {
                let mut out = Vec::with_capacity(batch.len());
                for it in batch {
                    let Some(kb) = state_key(ctx, &it) else {
                        continue;
                    };
                    if let Some(b) = ctx.store_at(store)?.get(&kb)? {
                        let t: T = decode_state(&name, &b)?;
                        out.push(Item {
                            origin: it.origin,
                            ts: it.ts,
                            key: it.key,
                            value: joiner(it.value, t),
                        });
                    }
                }
                Ok(out)
            }))
        })
    }
}

/// An item's key as stored (JSON); an item whose key cannot be encoded is poison.
fn state_key<K: Serialize + DeserializeOwned, V>(
    ctx: &mut TaskContext<'_>,
    it: &Item<K, V>,
) -> Option<Vec<u8>> {
    match Json.serialize(&it.key) {
        Ok(kb) => Some(kb),
        Err(e) => {
            ctx.poison(it.origin, format!("state key: {e}"));
            None
        }
    }
}

/// A stored value; one that does not decode is corrupted state, not a poison record.
pub(super) fn decode_state<T: Serialize + DeserializeOwned>(
    store: &str,
    bytes: &[u8],
) -> Result<T> {
    Json.deserialize(bytes)
        .map_err(|reason| EngineError::StateCorrupted {
            store: store.to_string(),
            reason,
        })
}

/// Descriptor of the DSL's aggregate stores (JSON keys and values).
const AGGREGATE_STORE: &str = "aggregate json";

/// A stream grouped by key, ready to aggregate.
pub struct Grouped<K, V> {
    pub(super) stream: Stream<K, V>,
    pub(super) name: Option<String>,
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
    /// Names the aggregation's store (letters, digits, `-`, `_`); by default it is
    /// `<source>-aggregate`.
    pub fn named(mut self, name: &str) -> Grouped<K, V> {
        self.name = Some(name.to_string());
        self
    }

    /// Folds every value of a key into an aggregate kept in RocksDB; emits the new aggregate
    /// for each record.
    pub fn aggregate<A>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        f: impl Fn(A, V) -> A + Send + Sync + 'static,
    ) -> Table<K, A>
    where
        A: Clone + Send + Serialize + DeserializeOwned + 'static,
    {
        let source = &self.stream.source;
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| self.stream.pipeline.default_name(source, "aggregate"));
        let label = format!("aggregate -> {name}");
        let slot: NameSlot = Arc::new(Mutex::new(name));
        self.stream.pipeline.add_store(
            source,
            slot.clone(),
            crate::plan::StoreKind::KeyValue,
            AGGREGATE_STORE,
        );
        let (s, init, f) = (slot.clone(), Arc::new(init), Arc::new(f));
        let changes = self.stream.derive(label, move |task| {
            let name = slot_name(&s);
            let store = task.store_index(&name)?;
            let (init, f) = (init.clone(), f.clone());
            Ok(Box::new(move |ctx, batch: Batch<K, V>| {
                let mut out = Vec::with_capacity(batch.len());
                for it in batch {
                    let Some(kb) = state_key(ctx, &it) else {
                        continue;
                    };
                    let st = ctx.store_at(store)?;
                    let old: A = match st.get(&kb)? {
                        Some(b) => decode_state(&name, &b)?,
                        None => init(),
                    };
                    let new = f(old, it.value);
                    match Json.serialize(&new) {
                        Ok(nb) => st.put(kb, nb),
                        Err(e) => {
                            ctx.poison(it.origin, format!("state value: {e}"));
                            continue;
                        }
                    }
                    out.push(Item {
                        origin: it.origin,
                        ts: it.ts,
                        key: it.key,
                        value: new,
                    });
                }
                Ok(out)
            }))
        });
        let op = self.stream.pipeline.state.borrow().operators.len() - 1;
        Table {
            changes,
            store: slot,
            op: Some(op),
            ttl_store: None,
        }
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
            op: t.op,
            ttl_store: t.ttl_store,
        }
    }
}

/// A table: the latest value per key, kept in a store; its changes form a stream.
pub struct Table<K, A> {
    pub(super) changes: Stream<K, A>,
    pub(super) store: NameSlot,
    /// The aggregate operator writing the store, whose name shows the store's.
    pub(super) op: Option<usize>,
    /// The store of the TTL's expiry index, if the table has a TTL (`ttl.rs`).
    pub(super) ttl_store: Option<NameSlot>,
}

impl<K, A> std::fmt::Debug for Table<K, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("store", &slot_name(&self.store))
            .finish()
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

    /// Renames the table's store (letters, digits, `-`, `_`), before the pipeline is built.
    pub fn named(self, name: &str) -> Table<K, A> {
        *self.store.lock().unwrap_or_else(|e| e.into_inner()) = name.to_string();
        if let Some(ttl) = &self.ttl_store {
            *ttl.lock().unwrap_or_else(|e| e.into_inner()) = format!("{name}-ttl");
        }
        if let Some(op) = self.op {
            if let Some(label) = self
                .changes
                .pipeline
                .state
                .borrow_mut()
                .operators
                .get_mut(op)
            {
                *label = format!("aggregate -> {name}");
            }
        }
        self
    }

    /// The name of the table's state store.
    pub fn store_name(&self) -> String {
        slot_name(&self.store)
    }
}
