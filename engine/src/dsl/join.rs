//! Stream–stream windowed joins: a record of one side meets the records of the other side with
//! the same key whose event time is within the join window (`before` and `after` it); inner,
//! left and full outer. Both sides' records wait in a store per task until the watermark is
//! past the last time a match could arrive (`ts + after + grace` on the left, `ts + before +
//! grace` on the right); then a left record (left and outer joins) or right record (outer)
//! that never matched is emitted with `None` for the other side. Late records (more than the
//! grace period behind the watermark) are dropped and counted.
//!
//! Store layout (an ordered store): per side `L`/`R` | key (length-prefixed) | time | offset →
//! matched flag + value (JSON), so one key's records of a time range are one scan; and per
//! side `l`/`r` | time | key | offset → empty, to expire records in time order. Both sides'
//! operators share one core per task.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use weir_log::Timestamp;

use crate::error::{EngineError, Result};
use crate::keys::{decode_i64, encode_i64, push_len_prefixed};
use crate::plan::{StoreKind, TaskSetup};
use crate::processor::{Origin, TaskContext};
use crate::serde::{Json, Serde};
use crate::window::{TimeFloor, CLOSE_BATCH_MAX};

use super::graph::{Children, Op, Outlet, PerTask};
use super::{slot_name, Batch, Item, NameSlot, Stream};

/// Which records a stream–stream join emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinType {
    /// Only matches.
    Inner,
    /// Matches, and left records that never matched (with `None`).
    Left,
    /// Matches, and records of either side that never matched.
    Outer,
}

/// How far apart in event time two records may be to match, and how long late records wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinWindow {
    /// A right record may be this much older than the left one.
    pub before: Duration,
    /// ... or this much newer.
    pub after: Duration,
    /// How long past that the join still takes records.
    pub grace: Duration,
}

impl JoinWindow {
    /// Records at most `d` apart, either way.
    pub fn within(d: Duration) -> JoinWindow {
        JoinWindow {
            before: d,
            after: d,
            grace: Duration::ZERO,
        }
    }

    /// With a grace period.
    pub fn grace(mut self, grace: Duration) -> JoinWindow {
        self.grace = grace;
        self
    }
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

const DATA: [u8; 2] = [b'L', b'R'];
const EXPIRY: [u8; 2] = [b'l', b'r'];

/// A buffered record's identity: the offset of the input record it came from, and its place
/// among the items of that record (a `flat_map` makes several), so none overwrites another.
type Seq = (i64, u32);

fn push_seq(k: &mut Vec<u8>, (offset, n): Seq) {
    k.extend_from_slice(&encode_i64(offset));
    k.extend_from_slice(&n.to_be_bytes());
}

fn data_key(side: usize, key: &[u8], ts: i64, seq: Seq) -> Vec<u8> {
    let mut k = vec![DATA[side]];
    push_len_prefixed(&mut k, key);
    k.extend_from_slice(&encode_i64(ts));
    push_seq(&mut k, seq);
    k
}

fn expiry_key(side: usize, ts: i64, key: &[u8], seq: Seq) -> Vec<u8> {
    let mut k = vec![EXPIRY[side]];
    k.extend_from_slice(&encode_i64(ts));
    push_len_prefixed(&mut k, key);
    push_seq(&mut k, seq);
    k
}

/// Length of the sequence at the end of a data or expiry key.
const SEQ_LEN: usize = 12;

type Joiner<V1, V2, R> = Arc<dyn Fn(Option<&V1>, Option<&V2>) -> R + Send + Sync>;

/// One task's join: both sides' settings and the result's children.
struct JoinCore<K, V1, V2, R> {
    id: usize,
    store: usize,
    kind: JoinType,
    /// Per side: how far the other side's matches reach back and forward, and when a record
    /// expires (its time plus this).
    reach: [(i64, i64); 2],
    expire_after: [i64; 2],
    /// A record more than this behind the watermark is late.
    grace: i64,
    /// Per side, the earliest time its expiry index may still hold.
    floors: [TimeFloor; 2],
    joiner: Joiner<V1, V2, R>,
    children: Children<K, R>,
}

/// A stored record: matched flag, then its value as JSON.
fn stored(matched: bool, value: &[u8]) -> Vec<u8> {
    [&[u8::from(matched)][..], value].concat()
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

    /// Whether records of `side` that never matched are emitted when they expire.
    fn keeps_unmatched(&self, side: usize) -> bool {
        matches!(
            (self.kind, side),
            (JoinType::Left, 0) | (JoinType::Outer, _)
        )
    }

    /// A record of `side`: stored, and joined with the other side's matches.
    fn push(
        &mut self,
        ctx: &mut TaskContext<'_>,
        side: usize,
        items: Vec<(Origin, Timestamp, K, Vec<u8>)>,
    ) -> Result<()> {
        let (n, started) = (items.len(), Instant::now());
        let wm = ctx.watermark().map(|t| t.0);
        let other = 1 - side;
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
            if wm.is_some_and(|wm| ts.0.saturating_add(self.grace) < wm) {
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
            let seq = (offset, nth);
            let (back, forward) = self.reach[side];
            let from = data_key(other, &kb, ts.0.saturating_sub(back), (i64::MIN, 0));
            let to = data_key(
                other,
                &kb,
                ts.0.saturating_add(forward),
                (i64::MAX, u32::MAX),
            );
            let store = ctx.store_at(self.store)?;
            let matches: Vec<_> = store.range(&from, &to)?.collect::<Result<_>>()?;
            for (k, v) in &matches {
                let theirs = v.get(1..).unwrap_or_default();
                let r = if side == 0 {
                    self.result(Some(&value), Some(theirs))?
                } else {
                    self.result(Some(theirs), Some(&value))?
                };
                let their_ts = k
                    .len()
                    .checked_sub(SEQ_LEN + 8)
                    .and_then(|at| decode_i64(&k[at..at + 8]))
                    .unwrap_or(ts.0);
                out.push(Item {
                    origin,
                    ts: Timestamp(ts.0.max(their_ts)),
                    key: key.clone(),
                    value: r,
                });
                // Only a side whose unmatched records are emitted needs to know it matched.
                if v.first() == Some(&0) && self.keeps_unmatched(other) {
                    store.put(k.clone(), stored(true, theirs));
                }
            }
            store.put(
                data_key(side, &kb, ts.0, seq),
                stored(!matches.is_empty(), &value),
            );
            store.put(expiry_key(side, ts.0, &kb, seq), Vec::new());
            self.floors[side].added(ts.0);
        }
        ctx.record_operator(self.id, n, out.len(), started.elapsed());
        self.children.push(ctx, out)
    }

    /// Expires records no match can reach any more; emits the unmatched ones the join type
    /// keeps.
    fn on_time(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        let Some(wm) = ctx.watermark().map(|t| t.0) else {
            return Ok(());
        };
        let mut out = Vec::new();
        for (side, &expiry) in EXPIRY.iter().enumerate() {
            let keep = self.keeps_unmatched(side);
            // Expired once `ts + expire_after < wm`: no record still accepted can match it.
            let bound = wm.saturating_sub(self.expire_after[side]);
            if !self.floors[side].due(bound) {
                continue;
            }
            let upto = [&[expiry][..], &encode_i64(bound)].concat();
            let from = [&[expiry][..], &encode_i64(self.floors[side].start())].concat();
            let store = ctx.store_at(self.store)?;
            let mut expired: Vec<Vec<u8>> = Vec::new();
            for e in store.range(&from, &upto)? {
                expired.push(e?.0.to_vec());
                if expired.len() == CLOSE_BATCH_MAX {
                    break;
                }
            }
            if expired.len() == CLOSE_BATCH_MAX {
                ctx.request_time_again();
                let last = expired.last().and_then(|k| decode_i64(&k[1..9]));
                self.floors[side].cleared_to(last.unwrap_or(i64::MIN));
            } else {
                self.floors[side].cleared_to(bound);
            }
            for ek in expired {
                let ts = decode_i64(&ek[1..9]).unwrap_or(wm);
                let (key, rest) = crate::keys::split_len_prefixed(&ek[9..]).ok_or_else(|| {
                    EngineError::StateCorrupted {
                        store: format!("join {}", self.id),
                        reason: "an expiry entry is malformed".into(),
                    }
                })?;
                let offset = rest.get(..8).and_then(decode_i64).unwrap_or(0);
                let n = rest
                    .get(8..SEQ_LEN)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u32::from_be_bytes);
                let dk = data_key(side, key, ts, (offset, n));
                let store = ctx.store_at(self.store)?;
                if let Some(v) = store.get(&dk)? {
                    if keep && v.first() == Some(&0) {
                        let value = v.get(1..).unwrap_or_default();
                        let r = if side == 0 {
                            self.result(Some(value), None)?
                        } else {
                            self.result(None, Some(value))?
                        };
                        out.push(Item {
                            origin: Origin::NONE,
                            ts: Timestamp(ts),
                            key: self.decode(key)?,
                            value: r,
                        });
                    }
                }
                let store = ctx.store_at(self.store)?;
                store.delete(dk);
                store.delete(ek);
            }
        }
        self.children.push(ctx, out)?;
        self.children.on_time(ctx)
    }
}

/// The shared core of one task's join, found by both sides' operators.
type Shared<K, V1, V2, R> = Arc<Mutex<JoinCore<K, V1, V2, R>>>;

/// One side's operator: encodes the value and hands it to the shared core.
struct JoinSide<K, V, V1, V2, R> {
    side: usize,
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
        let (before, after, grace) = (ms(window.before), ms(window.after), ms(window.grace));
        let slot: NameSlot = Arc::new(Mutex::new(name.clone()));
        let retention = window.before.max(window.after) + window.grace;
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
                        store: task.store_index(&slot_name(&slot))?,
                        kind,
                        // A left record at t meets right records in [t - before, t + after].
                        reach: [(before, after), (after, before)],
                        expire_after: [after + grace, before + grace],
                        grace,
                        floors: [TimeFloor::default(); 2],
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
                side: 0,
                core: c(task)?,
                _value: std::marker::PhantomData,
            });
            Ok(op)
        }));
        other.outlet.add(Arc::new(move |task: &TaskSetup<'_>| {
            let op: Box<dyn Op<K, V2>> = Box::new(JoinSide::<K, V2, V, V2, R> {
                side: 1,
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
