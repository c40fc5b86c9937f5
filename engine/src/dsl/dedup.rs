//! `dedup_by(key, ttl)`: keeps the first record per idempotency key within a TTL of event time
//! — the built-in answer to at-least-once producers upstream. State in a RocksDB store per
//! task (an ordered store: `D | key` → first event time, and `T | time | key` to expire
//! entries in time order once the watermark is `ttl` past them), backed by its changelog, so
//! duplicates are caught across restarts too.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use crate::error::Result;
use crate::keys::{decode_i64, encode_i64};
use crate::plan::{StoreKind, TaskSetup};
use crate::processor::TaskContext;
use crate::window::{TimeFloor, CLOSE_BATCH_MAX};

use super::graph::{Children, Op, Outlet};
use super::{slot_name, Batch, NameSlot, Stream};

const FIRST: u8 = b'D';
const EXPIRY: u8 = b'T';

fn first_key(key: &[u8]) -> Vec<u8> {
    [&[FIRST][..], key].concat()
}

fn expiry_key(ts: i64, key: &[u8]) -> Vec<u8> {
    [&[EXPIRY][..], &encode_i64(ts), key].concat()
}

type KeyFn<K, V> = Arc<dyn Fn(&K, &V) -> std::result::Result<Vec<u8>, String> + Send + Sync>;

/// One task's deduplication.
struct DedupOp<K, V> {
    id: usize,
    store: usize,
    ttl_ms: i64,
    key: KeyFn<K, V>,
    children: Children<K, V>,
    /// The earliest time the expiry index may still hold.
    floor: TimeFloor,
}

impl<K: Clone + Send, V: Clone + Send> Op<K, V> for DedupOp<K, V> {
    fn push(&mut self, ctx: &mut TaskContext<'_>, batch: Batch<K, V>) -> Result<()> {
        let (n, started) = (batch.len(), Instant::now());
        let mut out = Vec::with_capacity(batch.len());
        let mut dropped = 0;
        for it in batch {
            let k = match (self.key)(&it.key, &it.value) {
                Ok(k) => k,
                Err(e) => {
                    ctx.poison(it.origin, format!("idempotency key: {e}"));
                    continue;
                }
            };
            let store = ctx.store_at(self.store)?;
            let seen = store.get(&first_key(&k))?.and_then(|b| decode_i64(&b));
            match seen {
                Some(first) if it.ts.0 >= first && it.ts.0 < first.saturating_add(self.ttl_ms) => {
                    dropped += 1;
                    continue;
                }
                // A duplicate older than the first one seen, within the TTL: still a duplicate.
                Some(first) if it.ts.0 < first && first.saturating_sub(it.ts.0) < self.ttl_ms => {
                    dropped += 1;
                    continue;
                }
                // Older than the first one by more than the TTL: passed on, but the first one
                // stays the reference.
                Some(first) if it.ts.0 < first => {
                    out.push(it);
                    continue;
                }
                Some(first) => store.delete(expiry_key(first, &k)),
                None => {}
            }
            store.put(first_key(&k), encode_i64(it.ts.0).to_vec());
            store.put(expiry_key(it.ts.0, &k), Bytes::new());
            self.floor.added(it.ts.0);
            out.push(it);
        }
        if dropped > 0 {
            ctx.record_dropped(self.id, dropped);
        }
        ctx.record_operator(self.id, n, out.len(), started.elapsed());
        self.children.push(ctx, out)
    }

    /// Forgets keys first seen more than `ttl` before the watermark.
    fn on_time(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        if let Some(wm) = ctx.watermark() {
            let bound = wm.0.saturating_sub(self.ttl_ms);
            if !self.floor.due(bound) {
                return self.children.on_time(ctx);
            }
            let store = ctx.store_at(self.store)?;
            let mut expired = Vec::new();
            let from = expiry_key(self.floor.start(), b"");
            for e in store.range(&from, &expiry_key(bound, b""))? {
                expired.push(e?.0);
                if expired.len() == CLOSE_BATCH_MAX {
                    break;
                }
            }
            if expired.len() == CLOSE_BATCH_MAX {
                ctx.request_time_again();
                let last = expired.last().and_then(|k| decode_i64(&k[1..9]));
                self.floor.cleared_to(last.unwrap_or(i64::MIN));
            } else {
                self.floor.cleared_to(bound);
            }
            let store = ctx.store_at(self.store)?;
            for k in expired {
                let (ts, key) = (decode_i64(&k[1..9]), &k[9..]);
                let first = store.get(&first_key(key))?.and_then(|b| decode_i64(&b));
                if first.is_some() && first == ts {
                    store.delete(first_key(key));
                }
                store.delete(k);
            }
        }
        self.children.on_time(ctx)
    }

    fn flush(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        self.children.flush(ctx)
    }
}

impl<K, V> Stream<K, V>
where
    K: Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    /// Keeps the first record per idempotency key (`key`) within `ttl` of event time and drops
    /// (and counts) the others. Records with the same idempotency key must be in the same
    /// partition: key the stream by it first (`key_by`) unless its key already decides it.
    pub fn dedup_by<I: Serialize>(
        &self,
        key: impl Fn(&K, &V) -> I + Send + Sync + 'static,
        ttl: Duration,
    ) -> Stream<K, V> {
        let pipeline = &self.pipeline;
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| pipeline.default_name(&self.source, "dedup"));
        let slot: NameSlot = Arc::new(Mutex::new(name.clone()));
        pipeline.add_store(
            &self.source,
            slot.clone(),
            StoreKind::Window { retention: ttl },
            "dedup json",
        );
        let id = pipeline.add_operator(format!("dedup -> {name}"));
        let key: KeyFn<K, V> =
            Arc::new(move |k, v| serde_json::to_vec(&key(k, v)).map_err(|e| e.to_string()));
        let ttl_ms = ttl.as_millis().min(i64::MAX as u128) as i64;
        let outlet: Outlet<K, V> = Outlet::new();
        let o = outlet.clone();
        self.outlet.add(Arc::new(move |task: &TaskSetup<'_>| {
            let op: Box<dyn Op<K, V>> = Box::new(DedupOp {
                id,
                store: task.store_index(&slot_name(&slot))?,
                ttl_ms: ttl_ms.max(1),
                key: key.clone(),
                children: o.build(task)?,
                floor: TimeFloor::default(),
            });
            Ok(op)
        }));
        if ttl_ms <= 0 {
            pipeline.plan_error("dedup_by needs a TTL of at least 1 ms".into());
        }
        Stream {
            pipeline: pipeline.clone(),
            source: self.source.clone(),
            outlet,
            name: None,
        }
    }
}
