//! [`JoinBuffer`]: the state of one task's stream–stream interval join, over opaque bytes, so
//! that every front end (the typed DSL, SQL) shares one implementation. A record of one side
//! meets the other side's records of the same key whose event times lie within the join
//! window; inner, left and full outer. Both sides' records wait in an ordered store until the
//! watermark is past the last time a match could arrive (`ts + after + grace` on the left,
//! `ts + before + grace` on the right); then a left record (left and outer joins) or right
//! record (outer) that never matched is handed back, to be emitted with nothing for the other
//! side. Records more than the grace period behind the watermark are late: the caller drops
//! and counts them ([`JoinBuffer::is_late`]).
//!
//! Store layout (an ordered store): per side `L`/`R` | key (length-prefixed) | time | seq →
//! matched flag + value, so one key's records of a time range are one scan; and per side
//! `l`/`r` | time | key | seq → empty, to expire records in time order.
//!
//! Invariant: every pair of records that meet is handed back exactly once — by the push of
//! whichever arrived second — and the store's changes commit with the task's transaction, so a
//! restart neither loses nor repeats a pair.

use std::time::Duration;

use bytes::Bytes;

use crate::error::{EngineError, Result};
use crate::keys::{decode_i64, encode_i64, push_len_prefixed, split_len_prefixed};
use crate::processor::TaskContext;
use crate::window::{TimeFloor, CLOSE_BATCH_MAX};

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

    /// How long the store keeps a record (its changelog's retention).
    pub fn retention(&self) -> Duration {
        self.before.max(self.after) + self.grace
    }
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// A join side: the left (0) or the right (1) input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The stream `join` is called on (the SQL join's left relation).
    Left,
    /// The other one.
    Right,
}

impl Side {
    fn index(self) -> usize {
        match self {
            Side::Left => 0,
            Side::Right => 1,
        }
    }

    fn other(self) -> Side {
        match self {
            Side::Left => Side::Right,
            Side::Right => Side::Left,
        }
    }
}

const DATA: [u8; 2] = [b'L', b'R'];
const EXPIRY: [u8; 2] = [b'l', b'r'];

/// A buffered record's identity among those of its key and time: the offset of the input
/// record it came from and its place among the items of that record (a `flat_map` or a
/// batch makes several), so none overwrites another.
pub type Seq = (i64, u32);

/// Length of the sequence at the end of a data or expiry key.
const SEQ_LEN: usize = 12;

fn push_seq(k: &mut Vec<u8>, (offset, n): Seq) {
    k.extend_from_slice(&encode_i64(offset));
    k.extend_from_slice(&n.to_be_bytes());
}

fn data_key(side: Side, key: &[u8], ts: i64, seq: Seq) -> Vec<u8> {
    let mut k = vec![DATA[side.index()]];
    push_len_prefixed(&mut k, key);
    k.extend_from_slice(&encode_i64(ts));
    push_seq(&mut k, seq);
    k
}

fn expiry_key(side: Side, ts: i64, key: &[u8], seq: Seq) -> Vec<u8> {
    let mut k = vec![EXPIRY[side.index()]];
    k.extend_from_slice(&encode_i64(ts));
    push_len_prefixed(&mut k, key);
    push_seq(&mut k, seq);
    k
}

/// A stored record: matched flag, then its value.
fn stored(matched: bool, value: &[u8]) -> Vec<u8> {
    [&[u8::from(matched)][..], value].concat()
}

/// A record of the other side that a pushed record met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Met {
    /// Its value, as pushed.
    pub value: Bytes,
    /// Its event time.
    pub ts: i64,
}

/// A record that expired without ever meeting one of the other side, under a join type that
/// emits those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmatched {
    /// Its side.
    pub side: Side,
    /// Its key, as pushed.
    pub key: Bytes,
    /// Its event time.
    pub ts: i64,
    /// Its value, as pushed.
    pub value: Bytes,
}

/// One task's interval-join state (see the module header).
#[derive(Debug)]
pub struct JoinBuffer {
    /// The task's store holding it (an ordered kind: [`crate::StoreKind::Window`]).
    store: usize,
    kind: JoinType,
    /// Per side: how far the other side's matches reach back and forward.
    reach: [(i64, i64); 2],
    /// Per side: a record expires once the watermark is past its time plus this.
    expire_after: [i64; 2],
    /// A record more than this behind the watermark is late.
    grace: i64,
    /// Per side, the earliest time its expiry index may still hold.
    floors: [TimeFloor; 2],
}

impl JoinBuffer {
    /// The join of `kind` within `window`, in the task's store `store`.
    pub fn new(store: usize, window: JoinWindow, kind: JoinType) -> JoinBuffer {
        let (before, after, grace) = (ms(window.before), ms(window.after), ms(window.grace));
        JoinBuffer {
            store,
            kind,
            // A left record at t meets right records in [t - before, t + after].
            reach: [(before, after), (after, before)],
            expire_after: [after.saturating_add(grace), before.saturating_add(grace)],
            grace,
            floors: [TimeFloor::default(); 2],
        }
    }

    /// Whether a record at `ts` comes too late: the watermark is more than the grace period
    /// past it, so the records it could meet may be gone.
    pub fn is_late(&self, watermark: Option<i64>, ts: i64) -> bool {
        watermark.is_some_and(|wm| ts.saturating_add(self.grace) < wm)
    }

    /// Whether records of `side` that never matched are handed back when they expire.
    fn keeps_unmatched(&self, side: Side) -> bool {
        matches!(
            (self.kind, side),
            (JoinType::Left, Side::Left) | (JoinType::Outer, _)
        )
    }

    /// A record of `side`: stored, and the other side's records it meets returned.
    pub fn push(
        &mut self,
        ctx: &mut TaskContext<'_>,
        side: Side,
        key: &[u8],
        ts: i64,
        seq: Seq,
        value: &[u8],
    ) -> Result<Vec<Met>> {
        let other = side.other();
        let (back, forward) = self.reach[side.index()];
        let from = data_key(other, key, ts.saturating_sub(back), (i64::MIN, 0));
        let to = data_key(other, key, ts.saturating_add(forward), (i64::MAX, u32::MAX));
        let mark_theirs = self.keeps_unmatched(other);
        let store = ctx.store_at(self.store)?;
        let matches: Vec<(Bytes, Bytes)> = store.range(&from, &to)?.collect::<Result<_>>()?;
        let mut met = Vec::with_capacity(matches.len());
        for (k, v) in &matches {
            let theirs = v.get(1..).unwrap_or_default();
            let their_ts = k
                .len()
                .checked_sub(SEQ_LEN + 8)
                .and_then(|at| decode_i64(&k[at..at + 8]))
                .unwrap_or(ts);
            met.push(Met {
                value: Bytes::copy_from_slice(theirs),
                ts: their_ts,
            });
            // Only a side whose unmatched records are emitted needs to know it matched.
            if v.first() == Some(&0) && mark_theirs {
                store.put(k.clone(), stored(true, theirs));
            }
        }
        store.put(data_key(side, key, ts, seq), stored(!met.is_empty(), value));
        store.put(expiry_key(side, ts, key, seq), Vec::new());
        self.floors[side.index()].added(ts);
        Ok(met)
    }

    /// Deletes the records no match can reach any more (at most [`CLOSE_BATCH_MAX`] per side
    /// per call; the task is asked for another turn when more are due) and returns those that
    /// never matched, under a join type that emits them.
    pub fn expire(&mut self, ctx: &mut TaskContext<'_>) -> Result<Vec<Unmatched>> {
        let Some(wm) = ctx.watermark().map(|t| t.0) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for side in [Side::Left, Side::Right] {
            self.expire_side(ctx, side, wm, &mut out)?;
        }
        Ok(out)
    }

    fn expire_side(
        &mut self,
        ctx: &mut TaskContext<'_>,
        side: Side,
        wm: i64,
        out: &mut Vec<Unmatched>,
    ) -> Result<()> {
        let i = side.index();
        // Expired once `ts + expire_after < wm`: no record still accepted can match it.
        let bound = wm.saturating_sub(self.expire_after[i]);
        if !self.floors[i].due(bound) {
            return Ok(());
        }
        let upto = [&[EXPIRY[i]][..], &encode_i64(bound)].concat();
        let from = [&[EXPIRY[i]][..], &encode_i64(self.floors[i].start())].concat();
        let keep = self.keeps_unmatched(side);
        let store = ctx.store_at(self.store)?;
        let mut expired: Vec<Bytes> = Vec::new();
        for e in store.range(&from, &upto)? {
            expired.push(e?.0);
            if expired.len() == CLOSE_BATCH_MAX {
                break;
            }
        }
        if expired.len() == CLOSE_BATCH_MAX {
            let last = expired.last().and_then(|k| decode_i64(&k[1..9]));
            self.floors[i].cleared_to(last.unwrap_or(i64::MIN));
            ctx.request_time_again();
        } else {
            self.floors[i].cleared_to(bound);
        }
        let store = ctx.store_at(self.store)?;
        for ek in expired {
            let (ts, key, seq) = parse_expiry(&ek).ok_or_else(|| EngineError::StateCorrupted {
                store: store.name().to_string(),
                reason: "a join's expiry entry is malformed".into(),
            })?;
            let dk = data_key(side, key, ts, seq);
            if let Some(v) = store.get(&dk)? {
                if keep && v.first() == Some(&0) {
                    out.push(Unmatched {
                        side,
                        key: Bytes::copy_from_slice(key),
                        ts,
                        value: v.slice(1..),
                    });
                }
            }
            store.delete(dk);
            store.delete(ek);
        }
        Ok(())
    }
}

/// An expiry key's time, key and sequence.
fn parse_expiry(ek: &[u8]) -> Option<(i64, &[u8], Seq)> {
    let ts = decode_i64(ek.get(1..9)?)?;
    let (key, rest) = split_len_prefixed(ek.get(9..)?)?;
    let offset = decode_i64(rest.get(..8)?)?;
    let n = u32::from_be_bytes(rest.get(8..SEQ_LEN)?.try_into().ok()?);
    Some((ts, key, (offset, n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_keys_parse_back() {
        let ek = expiry_key(Side::Right, -42, b"k\x00ey", (7, 3));
        assert_eq!(parse_expiry(&ek), Some((-42, &b"k\x00ey"[..], (7, 3))));
        assert_eq!(parse_expiry(&ek[..ek.len() - 1]), None);
    }

    #[test]
    fn a_data_key_range_covers_exactly_one_keys_times() {
        let from = data_key(Side::Left, b"a", 10, (i64::MIN, 0));
        let to = data_key(Side::Left, b"a", 20, (i64::MAX, u32::MAX));
        let inside = data_key(Side::Left, b"a", 20, (5, 0));
        let other_key = data_key(Side::Left, b"ab", 15, (5, 0));
        let later = data_key(Side::Left, b"a", 21, (i64::MIN, 0));
        assert!(from <= inside && inside < to);
        assert!(!(from <= other_key && other_key < to));
        assert!(later > to);
    }
}
