//! Tumbling and hopping windows, built from slices (Flink's approach): slice = gcd(size,
//! advance); each record updates exactly one slice's accumulator; a window's result merges its
//! `size / slice` slices. Tumbling windows are the case slice = size = advance.
//!
//! Store layout (a window store): `W | slice start (8 bytes, ordered) | key` → accumulator, so
//! a scan in key order is a scan in time order and closing windows reads the store from its
//! start; `M fired` → the end of the last hopping window fired on close. Accumulators stay
//! decoded in a cache in front of the store: changed ones are written to the store when the
//! task commits (write-back), and all stay cached across commits (a read cache), until their
//! window is deleted or the cache is full — so a key updated in every commit interval costs
//! one store write per interval and no store read.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::error::{EngineError, Result};
use crate::keys::{decode_i64, encode_i64};
use crate::processor::{Origin, TaskContext};

use super::{
    align, decode_acc, encode_acc, reject_late, Emit, LatePolicy, TimeFloor, WindowFunction,
    WindowResult, WindowSpec, CLOSE_BATCH_MAX, WINDOW_CACHE_MAX,
};

const DATA: u8 = b'W';
const META_FIRED: &[u8] = b"M fired";

fn data_key(slice: i64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + key.len());
    k.push(DATA);
    k.extend_from_slice(&encode_i64(slice));
    k.extend_from_slice(key);
    k
}

fn parse_data_key(k: &[u8]) -> Option<(i64, &[u8])> {
    if k.first() != Some(&DATA) {
        return None;
    }
    Some((decode_i64(k.get(1..9)?)?, &k[9..]))
}

/// Whether a window ending at `end` is closed at watermark `wm` (`end + grace <= wm`).
fn closed_at(end: i64, grace: i64, wm: Option<i64>) -> bool {
    wm.is_some_and(|wm| end.saturating_add(grace) <= wm)
}

struct Cached<A> {
    acc: A,
    dirty: bool,
}

/// One task's tumbling or hopping windowed aggregation.
pub struct SlicedWindows<F: WindowFunction> {
    f: Arc<F>,
    emit: Emit,
    late: LatePolicy,
    size: i64,
    advance: i64,
    slice: i64,
    grace: i64,
    /// The operator, for its metrics.
    op: usize,
    store: usize,
    cache: FxHashMap<(i64, Bytes), Cached<F::Acc>>,
    /// Emit on update: (slice, key) changed since the last flush.
    changed: FxHashSet<(i64, Bytes)>,
    /// Hopping, emit on close: the end of the last window fired.
    fired_end: Option<i64>,
    /// Entries in the store (slices × keys), once counted.
    entries: Option<i64>,
    /// The oldest slice start the store may still hold.
    floor: TimeFloor,
    /// Where a close stopped by its batch limit goes on (the key after the last one it
    /// deleted): a slice of a million keys is closed in one pass, not rescanned from its start
    /// over the tombstones of the keys already closed.
    resume: Option<Vec<u8>>,
    /// The watermark of the previous time update: the one records were added under.
    last_wm: Option<i64>,
}

impl<F: WindowFunction> std::fmt::Debug for SlicedWindows<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlicedWindows")
            .field("size", &self.size)
            .field("advance", &self.advance)
            .field("cache", &self.cache.len())
            .finish()
    }
}

impl<F: WindowFunction> SlicedWindows<F> {
    /// Tumbling or hopping windows of `spec`, aggregated by `f` in the task's store number
    /// `store`, counted as operator `op`.
    pub fn new(f: Arc<F>, spec: &WindowSpec, store: usize, op: usize) -> Result<Self> {
        spec.validate()?;
        let (size, advance, slice) = spec
            .slicing()
            .ok_or_else(|| EngineError::Internal("session windows are not sliced".into()))?;
        Ok(SlicedWindows {
            f,
            emit: spec.emit,
            late: spec.late,
            size,
            advance,
            slice,
            grace: super::ms(spec.grace),
            op,
            store,
            cache: FxHashMap::default(),
            changed: FxHashSet::default(),
            fired_end: None,
            entries: None,
            floor: TimeFloor::default(),
            resume: None,
            last_wm: None,
        })
    }

    /// Decoded accumulators held, for the task's memory bound.
    pub fn buffered(&self) -> usize {
        self.cache.len() + self.changed.len()
    }

    fn closed(&self, window_end: i64, wm: Option<i64>) -> bool {
        closed_at(window_end, self.grace, wm)
    }

    /// Adds a record with event time `ts` to its slice; a late record (every window it belongs
    /// to has closed) follows the late policy instead. True when it was added.
    pub fn add(
        &mut self,
        ctx: &mut TaskContext<'_>,
        origin: Origin,
        key: Bytes,
        ts: i64,
        input: &F::In,
    ) -> Result<bool> {
        let wm = ctx.watermark().map(|t| t.0);
        let last_end = align(ts, self.advance).saturating_add(self.size);
        if self.closed(last_end, wm) {
            reject_late(ctx, self.op, self.late, origin, || {
                format!("late: event time {ts} is behind the watermark beyond the grace period (its last window ended at {last_end})")
            });
            return Ok(false);
        }
        self.count_entries(ctx)?;
        let slice = align(ts, self.slice);
        let id = (slice, key);
        if let Some(c) = self.cache.get_mut(&id) {
            // The common case: an accumulator already cached.
            self.f.add(&mut c.acc, ts, input);
            c.dirty = true;
            if self.emit == Emit::OnUpdate {
                self.changed.insert(id);
            }
            return Ok(true);
        }
        if !self.cache.contains_key(&id) {
            if self.cache.len() >= WINDOW_CACHE_MAX {
                self.write_back(ctx)?;
                self.cache.clear();
            }
            let stored = ctx.store_at(self.store)?.get(&data_key(id.0, &id.1))?;
            let acc = match stored {
                Some(b) => self.decode(&b)?,
                None => {
                    self.entries = self.entries.map(|n| n + 1);
                    self.floor.added(id.0);
                    ctx.add_open_windows(1);
                    self.f.init()
                }
            };
            self.cache.insert(id.clone(), Cached { acc, dirty: false });
        }
        if let Some(c) = self.cache.get_mut(&id) {
            self.f.add(&mut c.acc, ts, input);
            c.dirty = true;
        }
        if self.emit == Emit::OnUpdate {
            self.changed.insert(id);
        }
        Ok(true)
    }

    fn decode(&self, b: &[u8]) -> Result<F::Acc> {
        decode_acc(self.f.as_ref(), &format!("window store {}", self.store), b)
    }

    /// Counts the store's entries once (for the open-windows gauge after a restart).
    fn count_entries(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        if self.entries.is_some() {
            return Ok(());
        }
        let mut n = 0i64;
        for e in ctx.store_at(self.store)?.range(&[DATA], &[DATA + 1])? {
            e?;
            n += 1;
        }
        self.entries = Some(n);
        ctx.add_open_windows(n);
        Ok(())
    }

    /// Writes the cache's changed accumulators to the store.
    fn write_back(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        let store = ctx.store_at(self.store)?;
        for ((slice, key), c) in self.cache.iter_mut().filter(|(_, c)| c.dirty) {
            let value = encode_acc(self.f.as_ref(), store.name(), &c.acc)?;
            store.put(data_key(*slice, key), value);
            c.dirty = false;
        }
        Ok(())
    }

    /// Before the task commits: under emit on update, the current result of every open window
    /// that changed this interval goes to `out`; then the cache is written to the store.
    pub fn flush(
        &mut self,
        ctx: &mut TaskContext<'_>,
        out: &mut Vec<WindowResult<F::Acc>>,
    ) -> Result<()> {
        if !self.changed.is_empty() {
            let wm = ctx.watermark().map(|t| t.0);
            let changed = std::mem::take(&mut self.changed);
            let grace = self.grace;
            let open = move |end: i64| !closed_at(end, grace, wm);
            self.emit_changed(ctx, &changed, open, out)?;
        }
        self.write_back(ctx)
    }

    /// The merge of window `[ws, ws + size)`'s slices for `key` (cache first, then store).
    fn window_result(
        &mut self,
        ctx: &mut TaskContext<'_>,
        key: &Bytes,
        ws: i64,
    ) -> Result<Option<F::Acc>> {
        let mut acc: Option<F::Acc> = None;
        let mut s = ws;
        while s < ws + self.size {
            let part = match self.cache.get(&(s, key.clone())) {
                Some(c) => Some(c.acc.clone()),
                None => match ctx.store_at(self.store)?.get(&data_key(s, key))? {
                    Some(b) => Some(self.decode(&b)?),
                    None => None,
                },
            };
            if let Some(p) = part {
                match &mut acc {
                    None => acc = Some(p),
                    Some(a) => self.f.merge(a, &p),
                }
            }
            s += self.slice;
        }
        Ok(acc)
    }

    /// The watermark moved (or a tick): closes windows that reached `end + grace` — emitting
    /// their final results under emit on close — and deletes state no window needs any more,
    /// at most `CLOSE_BATCH_MAX` entries per call (asking to be called again for the rest).
    pub fn on_time(
        &mut self,
        ctx: &mut TaskContext<'_>,
        out: &mut Vec<WindowResult<F::Acc>>,
    ) -> Result<()> {
        let Some(wm) = ctx.watermark().map(|t| t.0) else {
            return Ok(());
        };
        self.count_entries(ctx)?;
        let before = self.last_wm.replace(wm);
        if self.emit == Emit::OnUpdate && !self.changed.is_empty() {
            self.emit_closing(ctx, before, wm, out)?;
        }
        if self.slice == self.size {
            return self.close_tumbling(ctx, wm, out);
        }
        if self.emit == Emit::OnWindowClose {
            self.fire_hopping(ctx, wm, out)?;
        }
        // Slices whose last window has closed: align(s, advance) + size + grace <= wm.
        let last_start = wm.saturating_sub(self.grace).saturating_sub(self.size);
        let bound = align(last_start, self.advance).saturating_add(self.advance);
        let bound = match (self.emit, self.fired_end) {
            // Never delete a slice a window not yet fired still needs.
            (Emit::OnWindowClose, Some(e)) => bound.min(e - self.size + self.advance),
            (Emit::OnWindowClose, None) => i64::MIN,
            _ => bound,
        };
        self.delete_slices_before(ctx, bound, None)
    }

    /// Emit on update: the windows closing now (open at the previous watermark `before`, closed
    /// at `wm`) with changes not yet emitted get their last result now, before their state
    /// goes; the other changes wait for the commit.
    fn emit_closing(
        &mut self,
        ctx: &mut TaskContext<'_>,
        before: Option<i64>,
        wm: i64,
        out: &mut Vec<WindowResult<F::Acc>>,
    ) -> Result<()> {
        let changed = std::mem::take(&mut self.changed);
        let grace = self.grace;
        let closing =
            move |end: i64| !closed_at(end, grace, before) && closed_at(end, grace, Some(wm));
        let result = self.emit_changed(ctx, &changed, closing, out);
        self.changed = changed;
        result
    }

    /// Emits the current result of every window (of the `changed` slices and keys) whose end
    /// `pick` selects.
    fn emit_changed(
        &mut self,
        ctx: &mut TaskContext<'_>,
        changed: &FxHashSet<(i64, Bytes)>,
        pick: impl Fn(i64) -> bool,
        out: &mut Vec<WindowResult<F::Acc>>,
    ) -> Result<()> {
        let mut windows: Vec<(i64, Bytes)> = Vec::new();
        for (slice, key) in changed {
            // The windows containing the slice: starts in (slice - size, slice].
            let mut ws = align(*slice, self.advance) - self.size + self.advance;
            while ws <= *slice {
                if pick(ws + self.size) {
                    windows.push((ws, key.clone()));
                }
                ws += self.advance;
            }
        }
        windows.sort();
        windows.dedup();
        for (ws, key) in windows {
            if let Some(acc) = self.window_result(ctx, &key, ws)? {
                out.push(WindowResult {
                    origin: Origin::NONE,
                    key,
                    start: ws,
                    end: ws + self.size,
                    acc,
                    retracted: false,
                });
            }
        }
        Ok(())
    }

    /// Tumbling: every entry with `start + size + grace <= wm` is a closed window.
    fn close_tumbling(
        &mut self,
        ctx: &mut TaskContext<'_>,
        wm: i64,
        out: &mut Vec<WindowResult<F::Acc>>,
    ) -> Result<()> {
        let bound = wm.saturating_sub(self.grace).saturating_sub(self.size);
        let emit = (self.emit == Emit::OnWindowClose).then_some(out);
        self.delete_slices_before(ctx, bound.saturating_add(1), emit)
    }

    /// Deletes entries of slices starting before `bound` (emitting each as a closed tumbling
    /// window into `emit`, if given), at most `CLOSE_BATCH_MAX`.
    fn delete_slices_before(
        &mut self,
        ctx: &mut TaskContext<'_>,
        bound: i64,
        emit: Option<&mut Vec<WindowResult<F::Acc>>>,
    ) -> Result<()> {
        if bound == i64::MIN || !self.floor.due(bound) {
            return Ok(());
        }
        self.write_back(ctx)?;
        let store = ctx.store_at(self.store)?;
        let mut batch = Vec::new();
        let from = match &self.resume {
            Some(k) => k.clone(),
            None => data_key(self.floor.start(), b""),
        };
        for e in store.range(&from, &data_key(bound, b""))? {
            batch.push(e?);
            if batch.len() == CLOSE_BATCH_MAX {
                break;
            }
        }
        let full = batch.len() == CLOSE_BATCH_MAX;
        let mut emit = emit;
        for (k, v) in &batch {
            let (slice, key) = parse_data_key(k).ok_or_else(|| EngineError::StateCorrupted {
                store: store.name().to_string(),
                reason: "a window entry's key is malformed".into(),
            })?;
            if let Some(out) = emit.as_deref_mut() {
                out.push(WindowResult {
                    origin: Origin::NONE,
                    key: Bytes::copy_from_slice(key),
                    start: slice,
                    end: slice + self.size,
                    acc: self.decode(v)?,
                    retracted: false,
                });
            }
            store.delete(k.clone());
        }
        // Cached accumulators of deleted slices go too.
        if !batch.is_empty() {
            self.cache.retain(|(slice, _), _| *slice >= bound || full);
            if full {
                let gone: Vec<(i64, Bytes)> = batch
                    .iter()
                    .filter_map(|(k, _)| parse_data_key(k))
                    .map(|(s, key)| (s, Bytes::copy_from_slice(key)))
                    .collect();
                for id in gone {
                    self.cache.remove(&id);
                }
            }
        }
        match batch.last() {
            Some((k, _)) if full => {
                if let Some((last, _)) = parse_data_key(k) {
                    self.floor.cleared_to(last);
                }
                self.resume = Some([&k[..], &[0]].concat());
            }
            _ => {
                self.floor.cleared_to(bound);
                self.resume = None;
            }
        }
        let n = batch.len() as i64;
        self.entries = self.entries.map(|e| e - n);
        ctx.add_open_windows(-n);
        if emit.is_some() {
            ctx.record_closed(self.op, n as u64);
        }
        if full {
            ctx.request_time_again();
        }
        Ok(())
    }

    /// Hopping, emit on close: fires, in order, every window whose `end + grace <= wm` and
    /// that was not fired yet, merging its slices per key; remembers the last end fired in
    /// the store (with the results, in the same commit).
    fn fire_hopping(
        &mut self,
        ctx: &mut TaskContext<'_>,
        wm: i64,
        out: &mut Vec<WindowResult<F::Acc>>,
    ) -> Result<()> {
        self.write_back(ctx)?;
        if self.fired_end.is_none() {
            let store = ctx.store_at(self.store)?;
            // Nothing fired yet: start before the first window containing the oldest slice, or
            // before the first window still open, whichever is earlier (a window that closes
            // later may still receive records).
            let open = align(wm.saturating_sub(self.grace), self.advance);
            self.fired_end = match store.get(META_FIRED)? {
                Some(b) => decode_i64(&b),
                None => match store.range(&[DATA], &[DATA + 1])?.next() {
                    Some(e) => parse_data_key(&e?.0).map(|(s, _)| align(s, self.advance).min(open)),
                    None => return Ok(()),
                },
            };
        }
        let mut fired = 0usize;
        while let Some(last) = self.fired_end {
            let end = last + self.advance;
            if !self.closed(end, Some(wm)) || fired >= CLOSE_BATCH_MAX {
                if fired >= CLOSE_BATCH_MAX {
                    ctx.request_time_again();
                }
                break;
            }
            let n = self.fire_window(ctx, end - self.size, out)?;
            fired += n.max(1);
            self.fired_end = Some(end);
            if n == 0 {
                // An empty window: skip to just before the first window with a slice, rather
                // than stepping through a gap in the data one advance at a time.
                let from = data_key(end - self.size + self.advance, b"");
                let next = ctx.store_at(self.store)?.range(&from, &[DATA + 1])?.next();
                let skip_to = match next {
                    Some(e) => parse_data_key(&e?.0).map(|(s, _)| align(s, self.advance)),
                    None => Some(align(wm.saturating_sub(self.grace), self.advance)),
                };
                if let Some(t) = skip_to.filter(|t| *t > end) {
                    self.fired_end = Some(t);
                }
            }
            ctx.store_at(self.store)?
                .put(Bytes::from_static(META_FIRED), encode_i64(end).to_vec());
        }
        Ok(())
    }

    /// Emits window `[ws, ws + size)` for every key in its slices; returns how many.
    fn fire_window(
        &mut self,
        ctx: &mut TaskContext<'_>,
        ws: i64,
        out: &mut Vec<WindowResult<F::Acc>>,
    ) -> Result<usize> {
        let mut merged: BTreeMap<Bytes, F::Acc> = BTreeMap::new();
        let store = ctx.store_at(self.store)?;
        for e in store.range(&data_key(ws, b""), &data_key(ws + self.size, b""))? {
            let (k, v) = e?;
            let Some((_, key)) = parse_data_key(&k) else {
                continue;
            };
            let part = self.decode(&v)?;
            match merged.get_mut(key) {
                Some(acc) => self.f.merge(acc, &part),
                None => {
                    merged.insert(Bytes::copy_from_slice(key), part);
                }
            }
        }
        let n = merged.len();
        for (key, acc) in merged {
            out.push(WindowResult {
                origin: Origin::NONE,
                key,
                start: ws,
                end: ws + self.size,
                acc,
                retracted: false,
            });
        }
        ctx.record_closed(self.op, n as u64);
        Ok(n)
    }
}
