//! A time to live for a table's state (`Table::ttl`): a key not updated for the TTL of event
//! time is deleted from the table's store once the watermark is that far past its last update,
//! so an updating aggregate or a joined table does not grow without bound over keys that come
//! and go. Expiry is silent (nothing is emitted) and counted as the operator's `dropped`.
//!
//! The expiry index is a store of its own (ordered): `L | key` → the key's last update time,
//! and `T | time | key` → empty, scanned in time order. Each update of the table moves its key
//! in the index; the expiry deletes the key from both stores in the same commit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Result;
use crate::keys::{decode_i64, encode_i64};
use crate::plan::{StoreKind, TaskSetup};
use crate::processor::TaskContext;
use crate::serde::{Json, Serde};
use crate::window::{TimeFloor, CLOSE_BATCH_MAX};

use super::graph::Op;
use super::{slot_name, Batch, NameSlot, Table};

const LAST: u8 = b'L';
const BY_TIME: u8 = b'T';

fn last_key(key: &[u8]) -> Vec<u8> {
    [&[LAST][..], key].concat()
}

fn time_key(ts: i64, key: &[u8]) -> Vec<u8> {
    [&[BY_TIME][..], &encode_i64(ts), key].concat()
}

/// One task's expiry of a table's keys.
struct TtlOp {
    id: usize,
    /// The table's store and the index store.
    table: usize,
    index: usize,
    ttl_ms: i64,
    floor: TimeFloor,
}

impl<K: Serialize + DeserializeOwned + Send, A: Send> Op<K, A> for TtlOp {
    fn push(&mut self, ctx: &mut TaskContext<'_>, batch: Batch<K, A>) -> Result<()> {
        for it in batch {
            // The table's own operator already refused keys that do not encode.
            let Ok(kb) = Json.serialize(&it.key) else {
                continue;
            };
            let index = ctx.store_at(self.index)?;
            if let Some(old) = index.get(&last_key(&kb))?.and_then(|b| decode_i64(&b)) {
                if old == it.ts.0 {
                    continue;
                }
                index.delete(time_key(old, &kb));
            }
            index.put(last_key(&kb), encode_i64(it.ts.0).to_vec());
            index.put(time_key(it.ts.0, &kb), Vec::new());
            self.floor.added(it.ts.0);
        }
        Ok(())
    }

    /// Deletes keys whose last update is more than the TTL behind the watermark.
    fn on_time(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        let Some(wm) = ctx.watermark() else {
            return Ok(());
        };
        let bound = wm.0.saturating_sub(self.ttl_ms);
        if !self.floor.due(bound) {
            return Ok(());
        }
        let index = ctx.store_at(self.index)?;
        let mut expired = Vec::new();
        let from = time_key(self.floor.start(), b"");
        for e in index.range(&from, &time_key(bound, b""))? {
            expired.push(e?.0);
            if expired.len() == CLOSE_BATCH_MAX {
                break;
            }
        }
        if expired.len() == CLOSE_BATCH_MAX {
            ctx.request_time_again();
            let last = expired.last().and_then(|k| decode_i64(k.get(1..9)?));
            self.floor.cleared_to(last.unwrap_or(i64::MIN));
        } else {
            self.floor.cleared_to(bound);
        }
        let mut gone = 0;
        for k in expired {
            let (Some(ts), Some(key)) = (k.get(1..9).and_then(decode_i64), k.get(9..)) else {
                continue;
            };
            let index = ctx.store_at(self.index)?;
            index.delete(k.clone());
            if index.get(&last_key(key))?.and_then(|b| decode_i64(&b)) == Some(ts) {
                index.delete(last_key(key));
                ctx.store_at(self.table)?.delete(key.to_vec());
                gone += 1;
            }
        }
        if gone > 0 {
            ctx.record_dropped(self.id, gone);
        }
        Ok(())
    }

    fn flush(&mut self, _ctx: &mut TaskContext<'_>) -> Result<()> {
        Ok(())
    }
}

impl<K, A> Table<K, A>
where
    K: Clone + Send + Serialize + DeserializeOwned + 'static,
    A: Clone + Send + 'static,
{
    /// Deletes a key's state once the watermark is `ttl` past its last update (in event time),
    /// so the store holds only keys seen within the TTL. Name the table (`named`) first.
    pub fn ttl(mut self, ttl: Duration) -> Table<K, A> {
        let pipeline = self.changes.pipeline.clone();
        let name = format!("{}-ttl", slot_name(&self.store));
        let slot: NameSlot = Arc::new(Mutex::new(name.clone()));
        pipeline.add_store(
            &self.changes.source,
            slot.clone(),
            StoreKind::Window { retention: ttl },
            "ttl json",
        );
        let id = pipeline.add_operator(format!("ttl -> {name}"));
        let ttl_ms = ttl.as_millis().min(i64::MAX as u128) as i64;
        if ttl_ms <= 0 {
            pipeline.plan_error("a table's TTL must be at least 1 ms".into());
        }
        let table = self.store.clone();
        let index = slot.clone();
        self.changes
            .outlet
            .add(Arc::new(move |task: &TaskSetup<'_>| {
                let op: Box<dyn Op<K, A>> = Box::new(TtlOp {
                    id,
                    table: task.store_index(&slot_name(&table))?,
                    index: task.store_index(&slot_name(&index))?,
                    ttl_ms: ttl_ms.max(1),
                    floor: TimeFloor::default(),
                });
                Ok(op)
            }));
        self.ttl_store = Some(slot);
        self
    }
}
