//! Table–table joins on the key: the result is a table too. A change on either side looks the
//! key up in the other side's store: an update with the other side present gives the joined
//! value, a delete with the other side present removes the result (`None`; `to_topic` writes
//! it as the value serde encodes `None`), and with the other side absent there is no result to
//! change. Both
//! tables' topics must be co-partitioned; one task per partition reads both.

use std::sync::{Arc, Mutex};

use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{EngineError, Result};
use crate::plan::TaskSetup;
use crate::processor::TaskContext;
use crate::serde::{Json, Serde};

use super::graph::{Children, Op, Outlet, PerTask};
use super::{slot_name, Batch, Item, Stream, Table};

type Joiner<V, W, R> = Arc<dyn Fn(&V, &W) -> R + Send + Sync>;

/// One task's join: the other sides' stores and the result's children.
struct TableJoinCore<K, V, W, R> {
    id: usize,
    /// The stores of the left and right tables.
    stores: [usize; 2],
    joiner: Joiner<V, W, R>,
    children: Children<K, Option<R>>,
}

impl<K, V, W, R> TableJoinCore<K, V, W, R>
where
    K: Clone + Send + Serialize + DeserializeOwned + 'static,
    V: Clone + Send + Serialize + DeserializeOwned + 'static,
    W: Clone + Send + Serialize + DeserializeOwned + 'static,
    R: Clone + Send + 'static,
{
    fn other<T: DeserializeOwned>(
        &self,
        ctx: &mut TaskContext<'_>,
        side: usize,
        key: &[u8],
    ) -> Result<Option<T>> {
        match ctx.store_at(self.stores[1 - side])?.get(key)? {
            None => Ok(None),
            Some(b) => {
                serde_json::from_slice(&b)
                    .map(Some)
                    .map_err(|e| EngineError::StateCorrupted {
                        store: format!("table join {}", self.id),
                        reason: e.to_string(),
                    })
            }
        }
    }
}

struct TableJoinSide<K, T, V, W, R> {
    side: usize,
    core: Arc<Mutex<TableJoinCore<K, V, W, R>>>,
    _value: std::marker::PhantomData<fn(T)>,
}

impl<K, T, V, W, R> Op<K, Option<T>> for TableJoinSide<K, T, V, W, R>
where
    K: Clone + Send + Serialize + DeserializeOwned + 'static,
    T: Clone + Send + Serialize + DeserializeOwned + 'static,
    V: Clone + Send + Serialize + DeserializeOwned + 'static,
    W: Clone + Send + Serialize + DeserializeOwned + 'static,
    R: Clone + Send + 'static,
{
    fn push(&mut self, ctx: &mut TaskContext<'_>, batch: Batch<K, Option<T>>) -> Result<()> {
        let (n, started) = (batch.len(), Instant::now());
        let mut core = self.core.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::with_capacity(batch.len());
        for it in batch {
            let kb = match Json.serialize(&it.key) {
                Ok(kb) => kb,
                Err(e) => {
                    ctx.poison(it.origin, format!("join key: {e}"));
                    continue;
                }
            };
            // This side's value as the other side's type sees it: re-read through JSON, so one
            // joiner serves changes from either side.
            let mine = it.value.as_ref().map(serde_json::to_vec).transpose();
            let mine = match mine {
                Ok(m) => m,
                Err(e) => {
                    ctx.poison(it.origin, format!("join value: {e}"));
                    continue;
                }
            };
            let value = match (self.side, mine) {
                // Deleted here: a result existed if the other side has the key.
                (0, None) => match core.other::<W>(ctx, 0, &kb)? {
                    None => continue,
                    Some(_) => None,
                },
                (_, None) => match core.other::<V>(ctx, 1, &kb)? {
                    None => continue,
                    Some(_) => None,
                },
                // Updated here: a result only if the other side has the key too.
                (0, Some(b)) => match core.other::<W>(ctx, 0, &kb)? {
                    None => continue,
                    Some(w) => Some((decode::<V>(&b)?, w)),
                },
                (_, Some(b)) => match core.other::<V>(ctx, 1, &kb)? {
                    None => continue,
                    Some(v) => Some((v, decode::<W>(&b)?)),
                },
            };
            let result = value.map(|(v, w)| (core.joiner)(&v, &w));
            out.push(Item {
                origin: it.origin,
                ts: it.ts,
                key: it.key,
                value: result,
            });
        }
        ctx.record_operator(core.id, n, out.len(), started.elapsed());
        core.children.push(ctx, out)
    }

    fn on_time(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        self.core
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .children
            .on_time(ctx)
    }

    fn flush(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        self.core
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .children
            .flush(ctx)
    }
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    serde_json::from_slice(b)
        .map_err(|e| EngineError::Internal(format!("a table value does not read back: {e}")))
}

impl<K, V> Table<K, Option<V>>
where
    K: Clone + Send + Serialize + DeserializeOwned + 'static,
    V: Clone + Send + Serialize + DeserializeOwned + 'static,
{
    /// Joins two tables read with `table()` on their key: every change of either side emits
    /// the key's joined value, or `None` when either side has no value (deleted or absent).
    /// The topics must be co-partitioned.
    pub fn join_table<W, R>(
        &self,
        other: &Table<K, Option<W>>,
        joiner: impl Fn(&V, &W) -> R + Send + Sync + 'static,
    ) -> Stream<K, Option<R>>
    where
        W: Clone + Send + Serialize + DeserializeOwned + 'static,
        R: Clone + Send + 'static,
    {
        let pipeline = &self.changes.pipeline;
        pipeline.merge(&other.changes.source, &self.changes.source);
        let id = pipeline.add_operator("join_table".to_string());
        let outlet: Outlet<K, Option<R>> = Outlet::new();
        let cores: PerTask<TableJoinCore<K, V, W, R>> = PerTask::new();
        let joiner: Joiner<V, W, R> = Arc::new(joiner);
        let (mine, theirs) = (self.store.clone(), other.store.clone());
        let core_for = {
            let outlet = outlet.clone();
            Arc::new(move |task: &TaskSetup<'_>| {
                cores.get_or_build(task, || {
                    Ok(TableJoinCore {
                        id,
                        stores: [
                            task.store_index(&slot_name(&mine))?,
                            task.store_index(&slot_name(&theirs))?,
                        ],
                        joiner: joiner.clone(),
                        children: outlet.build(task)?,
                    })
                })
            })
        };
        let c = core_for.clone();
        self.changes
            .outlet
            .add(Arc::new(move |task: &TaskSetup<'_>| {
                let op: Box<dyn Op<K, Option<V>>> = Box::new(TableJoinSide::<K, V, V, W, R> {
                    side: 0,
                    core: c(task)?,
                    _value: std::marker::PhantomData,
                });
                Ok(op)
            }));
        other
            .changes
            .outlet
            .add(Arc::new(move |task: &TaskSetup<'_>| {
                let op: Box<dyn Op<K, Option<W>>> = Box::new(TableJoinSide::<K, W, V, W, R> {
                    side: 1,
                    core: core_for(task)?,
                    _value: std::marker::PhantomData,
                });
                Ok(op)
            }));
        Stream {
            pipeline: pipeline.clone(),
            source: self.changes.source.clone(),
            outlet,
            name: None,
        }
    }
}
