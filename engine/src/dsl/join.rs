//! Stream–stream windowed joins in the DSL: a record of one side meets the records of the
//! other side with the same key whose event time is within the join window (`before` and
//! `after` it); inner, left and full outer. The state — both sides' records until the
//! watermark passes the last time they could match — is the engine's [`JoinBuffer`], which
//! SQL's joins share; values are stored as JSON. Late records (more than the grace period
//! behind the watermark) are dropped and counted. Both sides' operators share one core per
//! task.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;
use weir_log::Timestamp;

use crate::error::{EngineError, Result};
use crate::join::{JoinBuffer, Side};
use crate::plan::{StoreKind, TaskSetup};
use crate::processor::{Origin, TaskContext};
use crate::serde::{Json, Serde};

use super::graph::{Children, Op, Outlet, PerTask};
use super::{slot_name, Batch, Item, NameSlot, Stream};

pub use crate::join::{JoinType, JoinWindow};

type Joiner<V1, V2, R> = Arc<dyn Fn(Option<&V1>, Option<&V2>) -> R + Send + Sync>;

/// One task's join: the shared buffer, the joiner and the result's children.
struct JoinCore<K, V1, V2, R> {
    id: usize,
    buffer: JoinBuffer,
    joiner: Joiner<V1, V2, R>,
    children: Children<K, R>,
}

impl<K, V1, V2, R> JoinCore<K, V1, V2, R>
where
    K: Clone + Send + Serialize + DeserializeOwned + 'static,
    V1: Clone + Send + Serialize + DeserializeOwned + 'static,
    V2: Clone + Send + Serialize + DeserializeOwned + 'static,
    R: Clone + Send + 'static,
{
    fn decode<T: DeserializeOwned>(&self, b: &[u8]) -> Result<T> {
        serde_json::from_slice(b).map_err(|e| EngineError::StateCorrupted {
            store: format!("join {}", self.id),
            reason: e.to_string(),
        })
    }

    fn result(&self, left: Option<&[u8]>, right: Option<&[u8]>) -> Result<R> {
        let l: Option<V1> = left.map(|b| self.decode(b)).transpose()?;
        let r: Option<V2> = right.map(|b| self.decode(b)).transpose()?;
        Ok((self.joiner)(l.as_ref(), r.as_ref()))
    }

    /// Records of `side`: stored, and joined with the other side's matches.
    fn push(
        &mut self,
        ctx: &mut TaskContext<'_>,
        side: Side,
        items: Vec<(Origin, Timestamp, K, Vec<u8>)>,
    ) -> Result<()> {
        let (n, started) = (items.len(), Instant::now());
        let wm = ctx.watermark().map(|t| t.0);
        let mut out = Vec::new();
        // Items of one input record, numbered (items without one share offset -1).
        let mut last_origin = None;
        let mut nth = 0u32;
        for (origin, ts, key, value) in items {
            nth = if last_origin == Some(origin) {
                nth + 1
            } else {
                0
            };
            last_origin = Some(origin);
            if self.buffer.is_late(wm, ts.0) {
                ctx.record_late(self.id, 1);
                continue;
            }
            let kb = match Json.serialize(&key) {
                Ok(kb) => kb,
                Err(e) => {
                    ctx.poison(origin, format!("join key: {e}"));
                    continue;
                }
            };
            let offset = origin
                .index()
                .and_then(|i| ctx.input().get(i))
                .map_or(-1, |r| r.offset.0);
            let met = self
                .buffer
                .push(ctx, side, &kb, ts.0, (offset, nth), &value)?;
            for m in met {
                let r = match side {
                    Side::Left => self.result(Some(&value), Some(&m.value))?,
                    Side::Right => self.result(Some(&m.value), Some(&value))?,
                };
                out.push(Item {
                    origin,
                    ts: Timestamp(ts.0.max(m.ts)),
                    key: key.clone(),
                    value: r,
                });
            }
        }
        ctx.record_operator(self.id, n, out.len(), started.elapsed());
        self.children.push(ctx, out)
    }

    /// Expires records no match can reach any more; emits the unmatched ones the join type
    /// keeps.
    fn on_time(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        let mut out = Vec::new();
        for u in self.buffer.expire(ctx)? {
            let r = match u.side {
                Side::Left => self.result(Some(&u.value), None)?,
                Side::Right => self.result(None, Some(&u.value))?,
            };
            out.push(Item {
                origin: Origin::NONE,
                ts: Timestamp(u.ts),
                key: self.decode(&u.key)?,
                value: r,
            });
        }
        self.children.push(ctx, out)?;
        self.children.on_time(ctx)
    }
}

/// The shared core of one task's join, found by both sides' operators.
type Shared<K, V1, V2, R> = Arc<Mutex<JoinCore<K, V1, V2, R>>>;

/// One side's operator: encodes the value and hands it to the shared core.
struct JoinSide<K, V, V1, V2, R> {
    side: Side,
    core: Shared<K, V1, V2, R>,
    _value: std::marker::PhantomData<fn(V)>,
}

impl<K, V, V1, V2, R> Op<K, V> for JoinSide<K, V, V1, V2, R>
where
    K: Clone + Send + Serialize + DeserializeOwned + 'static,
    V: Clone + Send + Serialize + 'static,
    V1: Clone + Send + Serialize + DeserializeOwned + 'static,
    V2: Clone + Send + Serialize + DeserializeOwned + 'static,
    R: Clone + Send + 'static,
{
    fn push(&mut self, ctx: &mut TaskContext<'_>, batch: Batch<K, V>) -> Result<()> {
        let mut items = Vec::with_capacity(batch.len());
        for it in batch {
            match serde_json::to_vec(&it.value) {
                Ok(v) => items.push((it.origin, it.ts, it.key, v)),
                Err(e) => ctx.poison(it.origin, format!("join value: {e}")),
            }
        }
        self.core
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ctx, self.side, items)
    }

    fn on_time(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        // Both sides call it; the second call finds nothing more to expire.
        self.core
            .lock()
            .unwrap_or_else(|p| p.into_inner())
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

impl<K, V> Stream<K, V>
where
    K: Clone + Send + Serialize + DeserializeOwned + 'static,
    V: Clone + Send + Serialize + DeserializeOwned + 'static,
{
    /// Joins this stream with `other` (co-partitioned, same keys): records whose event times
    /// are within `window` of each other meet; `joiner` gets both values (or, for records that
    /// never matched, one `None` under a left or outer join). Results are stamped with the
    /// later record's time.
    pub fn join_stream<V2, R>(
        &self,
        other: &Stream<K, V2>,
        window: JoinWindow,
        kind: JoinType,
        joiner: impl Fn(Option<&V>, Option<&V2>) -> R + Send + Sync + 'static,
    ) -> Stream<K, R>
    where
        V2: Clone + Send + Serialize + DeserializeOwned + 'static,
        R: Clone + Send + 'static,
    {
        let pipeline = &self.pipeline;
        pipeline.merge(&other.source, &self.source);
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| pipeline.default_name(&self.source, "join"));
        let slot: NameSlot = Arc::new(Mutex::new(name.clone()));
        let retention = window.retention();
        pipeline.add_store(
            &self.source,
            slot.clone(),
            StoreKind::Window { retention },
            "join json",
        );
        let id = pipeline.add_operator(format!("join_stream -> {name}"));
        let outlet: Outlet<K, R> = Outlet::new();
        let cores: PerTask<JoinCore<K, V, V2, R>> = PerTask::new();
        let joiner: Joiner<V, V2, R> = Arc::new(joiner);
        let core_for = {
            let (outlet, slot) = (outlet.clone(), slot.clone());
            move |task: &TaskSetup<'_>| -> Result<Shared<K, V, V2, R>> {
                cores.get_or_build(task, || {
                    Ok(JoinCore {
                        id,
                        buffer: JoinBuffer::new(task.store_index(&slot_name(&slot))?, window, kind),
                        joiner: joiner.clone(),
                        children: outlet.build(task)?,
                    })
                })
            }
        };
        let core_for = Arc::new(core_for);
        let c = core_for.clone();
        self.outlet.add(Arc::new(move |task: &TaskSetup<'_>| {
            let op: Box<dyn Op<K, V>> = Box::new(JoinSide::<K, V, V, V2, R> {
                side: Side::Left,
                core: c(task)?,
                _value: std::marker::PhantomData,
            });
            Ok(op)
        }));
        other.outlet.add(Arc::new(move |task: &TaskSetup<'_>| {
            let op: Box<dyn Op<K, V2>> = Box::new(JoinSide::<K, V2, V, V2, R> {
                side: Side::Right,
                core: core_for(task)?,
                _value: std::marker::PhantomData,
            });
            Ok(op)
        }));
        Stream {
            pipeline: pipeline.clone(),
            source: self.source.clone(),
            outlet,
            name: None,
        }
    }
}
