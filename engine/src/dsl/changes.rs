//! Change data in the DSL: [`Pipeline::table_from_changes`] reads a topic of Debezium change
//! events as a table (upsert by key, delete on `d` and tombstones, replays older than the
//! key's applied source position ignored and counted); [`Table::group_by`] regroups a table
//! by a new key into a [`GroupedTable`] whose aggregates take an update's old value back out
//! (Kafka Streams' adder and subtractor); [`Table::to_table`] writes a table's changes as
//! change rows (`op`: `insert`, `update_before` + `update_after`, `delete`) as SQL's updating
//! queries write them.
//!
//! Invariants: a key's stored value is always its latest row; its position (under
//! [`POSITION_PREFIX`] + key, a byte no JSON key starts with) is the newest applied to it;
//! a regrouping's own store holds each key's value as last sent, so the retraction it sends
//! is exactly what was added before.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use weir_log::Record;

use crate::changes::{ChangeEvent, ChangeOp, SourcePosition};
use crate::error::Result;
use crate::plan::{InputKind, StoreKind};
use crate::processor::{Origin, TaskContext};
use crate::serde::{Json, Serde};

use super::graph::{Children, Entry, Outlet};
use super::{slot_name, Batch, Item, NameSlot, Pipeline, Stream, Table};

/// The Debezium JSON envelope (with or without Kafka Connect's schema wrapper), the format
/// [`Pipeline::table_from_changes`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebeziumJson;

/// The first byte of a key's position entry in a change table's store.
const POSITION_PREFIX: u8 = 0xFF;

/// Descriptor of a change table's store (JSON values, positions beside them).
const CHANGE_TABLE_STORE: &str = "change table json";

/// Descriptor of a regrouping's store (each key's value as last sent).
const REGROUP_STORE: &str = "regroup json";

/// Descriptor of `to_table`'s store (each key's value as last written).
const EMITTED_STORE: &str = "emitted json";

fn position_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(POSITION_PREFIX);
    k.extend_from_slice(key);
    k
}

/// A Debezium key (a JSON object of the primary key's columns), bare or in Kafka Connect's
/// schema wrapper, as JSON.
fn unwrap_key(key: &[u8]) -> std::result::Result<serde_json::Value, String> {
    let v: serde_json::Value = serde_json::from_slice(key).map_err(|e| e.to_string())?;
    match v {
        serde_json::Value::Object(mut o)
            if o.contains_key("schema") && o.contains_key("payload") =>
        {
            Ok(o.remove("payload").unwrap_or_default())
        }
        other => Ok(other),
    }
}

/// Reads a change-event input into its store.
struct ChangesEntry<K, V> {
    id: usize,
    store: usize,
    children: Children<K, Option<V>>,
}

/// What one record does to its key.
enum Change<V> {
    Upsert(V, Option<SourcePosition>),
    Delete(Option<SourcePosition>),
}

fn read_change<K: DeserializeOwned, V: DeserializeOwned>(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> std::result::Result<(K, Change<V>), String> {
    let key = key.ok_or("a change event without a key")?;
    let k: K = serde_json::from_value(unwrap_key(key).map_err(|e| format!("key: {e}"))?)
        .map_err(|e| format!("key: {e}"))?;
    let event = ChangeEvent::parse(value.unwrap_or_default()).map_err(|e| e.to_string())?;
    let Some(event) = event else {
        return Ok((k, Change::Delete(None)));
    };
    let change = match (event.op, event.after) {
        (ChangeOp::Truncate, _) => {
            return Err("a truncate: a table's store has no ranges to clear".into())
        }
        (ChangeOp::Delete, _) => Change::Delete(event.position),
        (_, Some(after)) => {
            let v = serde_json::from_value(serde_json::Value::Object(after))
                .map_err(|e| format!("the row: {e}"))?;
            Change::Upsert(v, event.position)
        }
        (op, None) => return Err(format!("op `{}` without its row", op.code())),
    };
    Ok((k, change))
}

impl<K, V> Entry for ChangesEntry<K, V>
where
    K: Clone + Send + Serialize + DeserializeOwned + 'static,
    V: Clone + Send + Serialize + DeserializeOwned + 'static,
{
    fn process(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        let started = Instant::now();
        let input = ctx.input();
        let mut out = Vec::with_capacity(input.len());
        let mut replays = 0;
        let mut decoded = Vec::with_capacity(input.len());
        for (i, r) in input.iter().enumerate() {
            let origin = Origin::input(i);
            match read_change::<K, V>(r.key.as_deref(), r.value.as_deref()) {
                Ok((k, change)) => decoded.push((origin, r.timestamp, k, change)),
                Err(e) => ctx.poison(origin, e),
            }
        }
        for (origin, ts, k, change) in decoded {
            let kb = match Json.serialize(&k) {
                Ok(kb) => kb,
                Err(e) => {
                    ctx.poison(origin, format!("state key: {e}"));
                    continue;
                }
            };
            let (value, at) = match change {
                Change::Upsert(v, at) => (Some(v), at),
                Change::Delete(at) => (None, at),
            };
            let store = ctx.store_at(self.store)?;
            let pk = position_key(&kb);
            let applied = store.get(&pk)?.and_then(|p| SourcePosition::from_bytes(&p));
            let stale = match (at, applied) {
                (Some(at), Some(applied)) => at < applied,
                // A tombstone after its (applied or refused) delete event: on its own it could
                // undo a newer change.
                (None, Some(_)) => value.is_none(),
                _ => false,
            };
            if stale {
                replays += 1;
                continue;
            }
            if let Some(at) = at {
                store.put(pk, Bytes::copy_from_slice(&at.to_bytes()));
            }
            match &value {
                Some(v) => match Json.serialize(v) {
                    Ok(vb) => store.put(kb, vb),
                    Err(e) => {
                        ctx.poison(origin, format!("state value: {e}"));
                        continue;
                    }
                },
                None => store.delete(kb),
            }
            out.push(Item {
                origin,
                ts,
                key: k,
                value,
            });
        }
        if replays > 0 {
            ctx.record_dropped(self.id, replays);
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
    /// Reads a topic of change events as a table: `c`, `r` and `u` upsert `after` (decoded as
    /// `V`) under the record key (decoded as `K`, unwrapped from Kafka Connect's schema
    /// wrapper), `d` and tombstones delete, a change older than the source position applied
    /// to its key (a replay) is ignored and counted as dropped; malformed events and
    /// truncates are poison. The store is named `<topic>-table` unless [`Table::named`].
    pub fn table_from_changes<K, V>(
        &self,
        topic: &str,
        _format: DebeziumJson,
    ) -> Table<K, Option<V>>
    where
        K: Clone + Send + Serialize + DeserializeOwned + 'static,
        V: Clone + Send + Serialize + DeserializeOwned + 'static,
    {
        let slot: NameSlot = Arc::new(Mutex::new(self.default_name(topic, "table")));
        let id = self.add_operator(format!("table_from_changes({topic})"));
        let outlet: Outlet<K, Option<V>> = Outlet::new();
        let (o, s) = (outlet.clone(), slot.clone());
        self.add_entry(
            topic,
            InputKind::Table,
            false,
            Arc::new(move |task| {
                Ok(Box::new(ChangesEntry {
                    id,
                    store: task.store_index(&slot_name(&s))?,
                    children: o.build(task)?,
                }))
            }),
        );
        self.add_store(topic, slot.clone(), StoreKind::KeyValue, CHANGE_TABLE_STORE);
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

/// A value on its way to a grouped table: added, or taken back out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Signed<V> {
    /// The value.
    pub value: V,
    /// Taken out (the key's old value), not added.
    pub retract: bool,
}

/// A table regrouped by a new key ([`Table::group_by`]), ready to aggregate.
pub struct GroupedTable<K, V> {
    stream: Stream<K, Signed<V>>,
    name: Option<String>,
}

impl<K, V> std::fmt::Debug for GroupedTable<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupedTable")
            .field("source", &self.stream.source)
            .finish()
    }
}

impl<K, V> Table<K, Option<V>>
where
    K: Clone + Send + Serialize + DeserializeOwned + 'static,
    V: Clone + Send + Serialize + DeserializeOwned + 'static,
{
    /// Regroups the table's rows by `f` (repartitioned by the new key): each change sends the
    /// key's old value, to be taken out of its group, and its new one, to be added. Its store
    /// (the values as last sent) is `<source>-regroup`.
    pub fn group_by<K2>(
        &self,
        f: impl Fn(&K, &V) -> K2 + Send + Sync + 'static,
    ) -> GroupedTable<K2, V>
    where
        K2: Clone + Send + Serialize + DeserializeOwned + 'static,
    {
        let source = &self.changes.source;
        let name = self.changes.pipeline.default_name(source, "regroup");
        let slot: NameSlot = Arc::new(Mutex::new(name.clone()));
        self.changes
            .pipeline
            .add_store(source, slot.clone(), StoreKind::KeyValue, REGROUP_STORE);
        let f = Arc::new(f);
        let signed = self
            .changes
            .derive(format!("group_by -> {name}"), move |task| {
                let store_name = slot_name(&slot);
                let store = task.store_index(&store_name)?;
                let f = f.clone();
                Ok(Box::new(move |ctx, batch: Batch<K, Option<V>>| {
                    let mut out = Vec::with_capacity(batch.len() * 2);
                    for it in batch {
                        let Ok(kb) = Json.serialize(&it.key) else {
                            ctx.poison(it.origin, "state key: not JSON".to_string());
                            continue;
                        };
                        let st = ctx.store_at(store)?;
                        let old: Option<V> = match st.get(&kb)? {
                            Some(b) => Some(super::grouped::decode_state(&store_name, &b)?),
                            None => None,
                        };
                        match &it.value {
                            Some(v) => match Json.serialize(v) {
                                Ok(vb) => st.put(kb, vb),
                                Err(e) => {
                                    ctx.poison(it.origin, format!("state value: {e}"));
                                    continue;
                                }
                            },
                            None => st.delete(kb),
                        }
                        for (value, retract) in [(old, true), (it.value, false)] {
                            let Some(value) = value else { continue };
                            out.push(Item {
                                origin: it.origin,
                                ts: it.ts,
                                key: f(&it.key, &value),
                                value: Signed { value, retract },
                            });
                        }
                    }
                    Ok(out)
                }))
            });
        GroupedTable {
            stream: signed.key_by(|k, _| k.clone()),
            name: None,
        }
    }
}

impl<K, V> GroupedTable<K, V>
where
    K: Clone + Send + Serialize + DeserializeOwned + 'static,
    V: Clone + Send + Serialize + DeserializeOwned + 'static,
{
    /// Names the aggregate's store (by default `<source>-aggregate`).
    pub fn named(mut self, name: &str) -> GroupedTable<K, V> {
        self.name = Some(name.to_string());
        self
    }

    /// Folds each group's rows into an aggregate: `adder` for a row added, `subtractor` for a
    /// row taken out (an update's old value, a deleted row); emits the new aggregate for each.
    pub fn aggregate<A>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        adder: impl Fn(A, &V) -> A + Send + Sync + 'static,
        subtractor: impl Fn(A, &V) -> A + Send + Sync + 'static,
    ) -> Table<K, A>
    where
        A: Clone + Send + Serialize + DeserializeOwned + 'static,
    {
        let grouped = super::Grouped {
            stream: self.stream.clone_handle(),
            name: self.name.clone(),
        };
        grouped.aggregate(init, move |acc, s: Signed<V>| match s.retract {
            false => adder(acc, &s.value),
            true => subtractor(acc, &s.value),
        })
    }

    /// Rows per group.
    pub fn count(&self) -> Table<K, i64> {
        self.aggregate(|| 0i64, |n, _| n + 1, |n, _| n - 1)
    }
}

/// A change row: the value's fields (or `value`, when it is not a JSON object) and `op`.
fn change_row<A: Serialize>(value: &A, op: &str) -> std::result::Result<Vec<u8>, String> {
    let mut row = match serde_json::to_value(value).map_err(|e| e.to_string())? {
        serde_json::Value::Object(o) => o,
        other => {
            let mut o = serde_json::Map::new();
            o.insert("value".into(), other);
            o
        }
    };
    row.insert("op".into(), serde_json::Value::String(op.into()));
    serde_json::to_vec(&row).map_err(|e| e.to_string())
}

impl<K, A> Table<K, A>
where
    K: Clone + Send + Serialize + DeserializeOwned + 'static,
    A: Clone + Send + Serialize + DeserializeOwned + 'static,
{
    /// Writes the table's changes to `topic` as change rows keyed by the key (JSON): `insert`
    /// for a new key, `update_before` (the row written last) and `update_after` for a changed
    /// one, `delete` for a key whose value is gone (`None` of an optional value). Its store
    /// (the rows as last written) is `<table store>-emitted`.
    pub fn to_table(&self, topic: &str) {
        let t = topic.to_string();
        let pipeline = &self.changes.pipeline;
        pipeline.state.borrow_mut().sinks.push(t.clone());
        let slot: NameSlot = Arc::new(Mutex::new(format!("{}-emitted", self.store_name())));
        pipeline.add_store(
            &self.changes.source,
            slot.clone(),
            StoreKind::KeyValue,
            EMITTED_STORE,
        );
        self.changes
            .sink(format!("to_table({topic})"), move |task| {
                let store_name = slot_name(&slot);
                let store = task.store_index(&store_name)?;
                let t = t.clone();
                Ok(Box::new(move |ctx, batch: Batch<K, A>| {
                    let mut written = 0;
                    for it in batch {
                        let now = match serde_json::to_value(&it.value) {
                            Ok(v) => (!v.is_null()).then_some(v),
                            Err(e) => {
                                ctx.poison(it.origin, format!("output value: {e}"));
                                continue;
                            }
                        };
                        let Ok(kb) = Json.serialize(&it.key) else {
                            ctx.poison(it.origin, "output key: not JSON".to_string());
                            continue;
                        };
                        let st = ctx.store_at(store)?;
                        let before: Option<serde_json::Value> = match st.get(&kb)? {
                            Some(b) => Some(super::grouped::decode_state(&store_name, &b)?),
                            None => None,
                        };
                        let rows = match (&before, &now) {
                            (None, None) => Vec::new(),
                            (None, Some(n)) => vec![(n, "insert")],
                            (Some(b), None) => vec![(b, "delete")],
                            (Some(b), Some(n)) if b == n => Vec::new(),
                            (Some(b), Some(n)) => vec![(b, "update_before"), (n, "update_after")],
                        };
                        match now.as_ref().map(serde_json::to_vec) {
                            Some(Ok(nb)) => st.put(kb.clone(), nb),
                            None => st.delete(kb.clone()),
                            Some(Err(e)) => {
                                ctx.poison(it.origin, format!("output value: {e}"));
                                continue;
                            }
                        }
                        for (row, op) in rows {
                            match change_row(row, op) {
                                Ok(vb) => {
                                    let record =
                                        Record::keyed(Bytes::from(kb.clone()), Bytes::from(vb));
                                    ctx.emit(&t, record.at(it.ts))?;
                                    written += 1;
                                }
                                Err(e) => ctx.poison(it.origin, format!("output value: {e}")),
                            }
                        }
                    }
                    Ok(written)
                }))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_rows_carry_the_values_fields_and_op() -> std::result::Result<(), String> {
        #[derive(Serialize)]
        struct Summary {
            orders: i64,
        }
        let row = change_row(&Summary { orders: 3 }, "insert")?;
        assert_eq!(row, br#"{"op":"insert","orders":3}"#);
        assert_eq!(change_row(&7, "delete")?, br#"{"op":"delete","value":7}"#);
        assert_eq!(
            unwrap_key(br#"{"schema":{},"payload":{"id":1}}"#)?,
            serde_json::json!({"id": 1})
        );
        Ok(())
    }
}
