//! Session windows: per key, records at most `gap` apart form one session
//! `[first, last + gap)`; a record that bridges two sessions merges them (their accumulators
//! merged). A session closes when the watermark reaches `last + gap + grace`.
//!
//! Store layout (a session store): `S | key (length-prefixed) | last | first` → accumulator,
//! so one key's sessions are contiguous and ordered by time; and a close index
//! `E | last + gap | key | first` → `last`, scanned in time order to close sessions. A key's
//! sessions stay decoded in a cache in front of the store (across commits, until the cache is
//! full); at each commit the changes go to the store — and, under emit on update, to the
//! output: the new or changed sessions, and a retraction for each session that was merged
//! away.

use std::sync::Arc;

use bytes::Bytes;
use rustc_hash::FxHashMap;

use crate::error::{EngineError, Result};
use crate::keys::{decode_i64, encode_i64, push_len_prefixed, split_len_prefixed};
use crate::processor::{Origin, TaskContext};

use super::{
    decode_acc, encode_acc, reject_late, Emit, LatePolicy, TimeFloor, WindowFunction, WindowResult,
    WindowSpec, CLOSE_BATCH_MAX, WINDOW_CACHE_MAX,
};

const DATA: u8 = b'S';
const CLOSE: u8 = b'E';

fn key_prefix(key: &[u8]) -> Vec<u8> {
    let mut k = vec![DATA];
    push_len_prefixed(&mut k, key);
    k
}

fn data_key(key: &[u8], first: i64, last: i64) -> Vec<u8> {
    let mut k = key_prefix(key);
    k.extend_from_slice(&encode_i64(last));
    k.extend_from_slice(&encode_i64(first));
    k
}

fn close_key(close_at: i64, key: &[u8], first: i64) -> Vec<u8> {
    let mut k = vec![CLOSE];
    k.extend_from_slice(&encode_i64(close_at));
    push_len_prefixed(&mut k, key);
    k.extend_from_slice(&encode_i64(first));
    k
}

/// `first` of a close entry's tail (after the key).
fn first_of(tail: &[u8]) -> i64 {
    decode_i64(tail).unwrap_or(i64::MIN)
}

/// `(first, last)` of a data key's tail.
fn parse_times(tail: &[u8]) -> Option<(i64, i64)> {
    Some((decode_i64(tail.get(8..16)?)?, decode_i64(tail.get(..8)?)?))
}

#[derive(Clone)]
struct Session<A> {
    first: i64,
    last: i64,
    acc: A,
}

/// A key's sessions: as the store has them, and as they are now.
struct KeySessions<A> {
    stored: Vec<Session<A>>,
    current: Vec<Session<A>>,
    /// Indexes into `current` of sessions this interval created or changed.
    touched: Vec<bool>,
}

/// One task's session-windowed aggregation.
pub struct SessionWindows<F: WindowFunction> {
    f: Arc<F>,
    emit: Emit,
    late: LatePolicy,
    gap: i64,
    grace: i64,
    op: usize,
    store: usize,
    cache: FxHashMap<Bytes, KeySessions<F::Acc>>,
    counted: bool,
    /// The earliest close time the close index may still hold.
    floor: TimeFloor,
    /// Where a close stopped by its batch limit goes on (see `sliced.rs`).
    resume: Option<Vec<u8>>,
}

impl<F: WindowFunction> std::fmt::Debug for SessionWindows<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionWindows")
            .field("gap", &self.gap)
            .field("cache", &self.cache.len())
            .finish()
    }
}

impl<F: WindowFunction> SessionWindows<F> {
    /// Session windows of `spec`, aggregated by `f` in the task's store number `store`,
    /// counted as operator `op`.
    pub fn new(f: Arc<F>, spec: &WindowSpec, store: usize, op: usize) -> Result<Self> {
        spec.validate()?;
        let super::WindowKind::Session { gap } = spec.kind else {
            return Err(EngineError::Internal("not a session window".into()));
        };
        Ok(SessionWindows {
            f,
            emit: spec.emit,
            late: spec.late,
            gap: super::ms(gap),
            grace: super::ms(spec.grace),
            op,
            store,
            cache: FxHashMap::default(),
            counted: false,
            floor: TimeFloor::default(),
            resume: None,
        })
    }

    /// Keys whose sessions are held decoded.
    pub fn buffered(&self) -> usize {
        self.cache.len()
    }

    fn decode(&self, b: &[u8]) -> Result<F::Acc> {
        decode_acc(self.f.as_ref(), &format!("session store {}", self.store), b)
    }

    /// A key's sessions from the store.
    fn load(&self, ctx: &mut TaskContext<'_>, key: &[u8]) -> Result<Vec<Session<F::Acc>>> {
        let prefix = key_prefix(key);
        let mut end = prefix.clone();
        end.push(0xff);
        let mut out = Vec::new();
        for e in ctx.store_at(self.store)?.range(&prefix, &end)? {
            let (k, v) = e?;
            let (first, last) =
                parse_times(&k[prefix.len()..]).ok_or_else(|| EngineError::StateCorrupted {
                    store: format!("session store {}", self.store),
                    reason: "a session's key is malformed".into(),
                })?;
            out.push(Session {
                first,
                last,
                acc: self.decode(&v)?,
            });
        }
        Ok(out)
    }

    fn count_sessions(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        if self.counted {
            return Ok(());
        }
        let mut n = 0;
        for e in ctx.store_at(self.store)?.range(&[CLOSE], &[CLOSE + 1])? {
            e?;
            n += 1;
        }
        self.counted = true;
        ctx.add_open_windows(n);
        Ok(())
    }

    /// Adds a record at event time `ts` to its key's sessions, merging those it bridges; a
    /// late record (its session would already be closed) follows the late policy instead.
    /// True when it was added. When the cache is full it is flushed first (results of emit on
    /// update go to `out`).
    pub fn add(
        &mut self,
        ctx: &mut TaskContext<'_>,
        origin: Origin,
        key: Bytes,
        ts: i64,
        input: &F::In,
        out: &mut Vec<WindowResult<F::Acc>>,
    ) -> Result<bool> {
        self.count_sessions(ctx)?;
        if !self.cache.contains_key(&key) {
            if self.cache.len() >= WINDOW_CACHE_MAX {
                self.flush(ctx, out)?;
                self.cache.clear();
            }
            let stored = self.load(ctx, &key)?;
            self.cache.insert(
                key.clone(),
                KeySessions {
                    touched: vec![false; stored.len()],
                    current: stored.clone(),
                    stored,
                },
            );
        }
        let (gap, grace) = (self.gap, self.grace);
        let wm = ctx.watermark().map(|t| t.0);
        let Some(ks) = self.cache.get_mut(&key) else {
            return Ok(false);
        };
        let bridged: Vec<usize> = (0..ks.current.len())
            .filter(|&i| {
                let s = &ks.current[i];
                ts >= s.first.saturating_sub(gap) && ts <= s.last.saturating_add(gap)
            })
            .collect();
        let first = bridged
            .iter()
            .map(|&i| ks.current[i].first)
            .fold(ts, i64::min);
        let last = bridged
            .iter()
            .map(|&i| ks.current[i].last)
            .fold(ts, i64::max);
        if wm.is_some_and(|wm| last.saturating_add(gap).saturating_add(grace) <= wm) {
            reject_late(ctx, self.op, self.late, origin, || {
                format!("late: event time {ts} is behind the watermark beyond the grace period (its session would end at {})", last.saturating_add(gap))
            });
            return Ok(false);
        }
        let mut acc = self.f.init();
        for &i in &bridged {
            self.f.merge(&mut acc, &ks.current[i].acc);
        }
        self.f.add(&mut acc, ts, input);
        for &i in bridged.iter().rev() {
            ks.current.remove(i);
            ks.touched.remove(i);
        }
        let at = ks.current.partition_point(|s| s.last < last);
        ks.current.insert(at, Session { first, last, acc });
        ks.touched.insert(at, true);
        Ok(true)
    }

    /// Writes the cached changes to the store; under emit on update (`out` given), emits the
    /// changed sessions and retracts the merged-away ones.
    fn write_back(
        &mut self,
        ctx: &mut TaskContext<'_>,
        mut out: Option<&mut Vec<WindowResult<F::Acc>>>,
    ) -> Result<()> {
        let gap = self.gap;
        let mut delta = 0i64;
        for (key, ks) in self.cache.iter_mut() {
            if !ks.touched.iter().any(|t| *t) && ks.stored.len() == ks.current.len() {
                continue; // unchanged since the last write-back
            }
            let key = key.clone();
            let same =
                |a: &Session<F::Acc>, b: &Session<F::Acc>| a.first == b.first && a.last == b.last;
            let store = ctx.store_at(self.store)?;
            for old in &ks.stored {
                let kept = ks
                    .current
                    .iter()
                    .zip(&ks.touched)
                    .any(|(c, t)| !t && same(c, old));
                if kept {
                    continue;
                }
                store.delete(data_key(&key, old.first, old.last));
                store.delete(close_key(old.last + gap, &key, old.first));
                delta -= 1;
                let replaced = ks.current.iter().any(|c| same(c, old));
                if let (Some(out), false) = (out.as_deref_mut(), replaced) {
                    out.push(WindowResult {
                        origin: Origin::NONE,
                        key: key.clone(),
                        start: old.first,
                        end: old.last + gap,
                        acc: old.acc.clone(),
                        retracted: true,
                    });
                }
            }
            for (s, _) in ks.current.iter().zip(&ks.touched).filter(|(_, t)| **t) {
                let value = encode_acc(self.f.as_ref(), store.name(), &s.acc)?;
                store.put(data_key(&key, s.first, s.last), value);
                store.put(
                    close_key(s.last + gap, &key, s.first),
                    encode_i64(s.last).to_vec(),
                );
                self.floor.added(s.last + gap);
                delta += 1;
                if let Some(out) = out.as_deref_mut() {
                    out.push(WindowResult {
                        origin: Origin::NONE,
                        key: key.clone(),
                        start: s.first,
                        end: s.last + gap,
                        acc: s.acc.clone(),
                        retracted: false,
                    });
                }
            }
            // Written: the store now has what the cache has.
            ks.stored = ks.current.clone();
            ks.touched.iter_mut().for_each(|t| *t = false);
        }
        ctx.add_open_windows(delta);
        Ok(())
    }

    /// Before the task commits: the cached changes go to the store (and, under emit on update,
    /// to `out`).
    pub fn flush(
        &mut self,
        ctx: &mut TaskContext<'_>,
        out: &mut Vec<WindowResult<F::Acc>>,
    ) -> Result<()> {
        let emit = (self.emit == Emit::OnUpdate).then_some(out);
        self.write_back(ctx, emit)
    }

    /// Closes sessions with `last + gap + grace <= watermark` (emitting their final results
    /// under emit on close) and deletes them, at most `CLOSE_BATCH_MAX` per call. Keys with
    /// changes not yet flushed wait for the next call after the commit.
    pub fn on_time(
        &mut self,
        ctx: &mut TaskContext<'_>,
        out: &mut Vec<WindowResult<F::Acc>>,
    ) -> Result<()> {
        let Some(wm) = ctx.watermark().map(|t| t.0) else {
            return Ok(());
        };
        self.count_sessions(ctx)?;
        let bound = wm.saturating_sub(self.grace).saturating_add(1);
        if !self.floor.due(bound) {
            return Ok(());
        }
        let mut due = Vec::new();
        let mut more = false;
        let from = match &self.resume {
            Some(k) => k.clone(),
            None => [&[CLOSE][..], &encode_i64(self.floor.start())].concat(),
        };
        for e in ctx
            .store_at(self.store)?
            .range(&from, &[&[CLOSE][..], &encode_i64(bound)].concat())?
        {
            let (k, v) = e?;
            if due.len() == CLOSE_BATCH_MAX {
                more = true;
                break;
            }
            due.push((k, v));
        }
        let mut closed = 0u64;
        // Everything before this is gone after the loop: the bound, or where a full batch
        // stopped, or the first entry left for after the next write-back.
        let mut cleared = if more {
            due.last()
                .and_then(|(k, _)| decode_i64(&k[1..9]))
                .unwrap_or(i64::MIN)
        } else {
            bound
        };
        self.resume = match (more, due.last()) {
            (true, Some((k, _))) => Some([&k[..], &[0]].concat()),
            _ => None,
        };
        let mut skipped = false;
        for (k, v) in due {
            let malformed = || EngineError::StateCorrupted {
                store: format!("session store {}", self.store),
                reason: "a session's close entry is malformed".into(),
            };
            let (key, tail) =
                split_len_prefixed(k.get(9..).ok_or_else(malformed)?).ok_or_else(malformed)?;
            if let Some(ks) = self.cache.get_mut(key) {
                if ks.touched.iter().any(|t| *t) || ks.stored.len() != ks.current.len() {
                    // Changed since the last write-back: closed after the next one. The next
                    // scans must start no later than this entry.
                    cleared = cleared.min(decode_i64(&k[1..9]).unwrap_or(i64::MIN));
                    skipped = true;
                    continue;
                }
                // Closed: it leaves the cache with the store.
                let keep = |s: &Session<F::Acc>| {
                    !(s.first == first_of(tail) && s.last == decode_i64(&v).unwrap_or(i64::MIN))
                };
                ks.current.retain(keep);
                ks.stored.retain(keep);
                ks.touched.truncate(ks.current.len());
            }
            let first = decode_i64(tail).ok_or_else(malformed)?;
            let last = decode_i64(&v).ok_or_else(malformed)?;
            let data = data_key(key, first, last);
            let store = ctx.store_at(self.store)?;
            if self.emit == Emit::OnWindowClose {
                if let Some(b) = store.get(&data)? {
                    let acc = self.decode(&b)?;
                    out.push(WindowResult {
                        origin: Origin::NONE,
                        key: Bytes::copy_from_slice(key),
                        start: first,
                        end: last + self.gap,
                        acc,
                        retracted: false,
                    });
                }
            }
            let store = ctx.store_at(self.store)?;
            store.delete(data);
            store.delete(k.clone());
            closed += 1;
        }
        if skipped {
            self.resume = None;
        }
        self.floor.cleared_to(cleared);
        ctx.add_open_windows(-(closed as i64));
        if self.emit == Emit::OnWindowClose {
            ctx.record_closed(self.op, closed);
        }
        if more {
            ctx.request_time_again();
        }
        Ok(())
    }
}
