//! Idempotent-producer state of one partition: per producer id, its epoch and the metadata of
//! its last `BATCHES_PER_PRODUCER` batches, so a retried batch is answered with its original
//! offsets instead of being appended twice, a sequence gap is refused, and an older epoch is
//! fenced — Kafka's rules, enforced by the partition's single writer.
//!
//! Transactions: a producer's first transactional batch on the partition opens its
//! transaction here (`txn_first_offset`); a control batch (commit or abort marker) closes it.
//! The smallest open transaction's first offset bounds the last stable offset, and every
//! aborted transaction is remembered (`AbortedTxn`) so `read_committed` readers can drop it.
//!
//! Durability: the state is derived from the batches themselves (their producer id, epoch and
//! base sequence fields). Snapshots (`<offset>.snapshot`) are written at segment roll and clean
//! shutdown; recovery loads the newest snapshot not beyond the log end and replays the batch
//! headers after it, so deduplication survives restarts and `kill -9`.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use crate::batch::BatchHeader;
use crate::error::{LogError, Result};
use crate::storage::{read_all, write_atomic, Storage};
use crate::types::Offset;

/// Batches remembered per producer (Kafka's `max.in.flight.requests.per.connection` bound).
pub const BATCHES_PER_PRODUCER: usize = 5;
/// Snapshots kept per partition (the newest, and one before it).
const SNAPSHOTS_KEPT: usize = 2;
const SNAPSHOT_MAGIC: &[u8; 4] = b"WPST";
const SNAPSHOT_VERSION: u32 = 2;

/// Where one batch of a producer landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    /// Sequence of the first record.
    pub first_seq: i32,
    /// Sequence of the last record.
    pub last_seq: i32,
    /// Offset of the first record.
    pub base_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
}

/// One producer's state on this partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerEntry {
    /// Current epoch.
    pub epoch: i16,
    /// Newest last, at most `BATCHES_PER_PRODUCER`.
    pub batches: VecDeque<BatchMeta>,
    /// First offset of the producer's open transaction on this partition.
    pub txn_first_offset: Option<i64>,
}

/// A transaction that ended with an abort marker: its records in `first_offset..=last_offset`
/// (the marker's offset) from `producer_id` are not to be read by `read_committed` readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The producer.
    pub producer_id: i64,
    /// First offset of the transaction on this partition.
    pub first_offset: i64,
    /// Offset of the abort marker.
    pub last_offset: i64,
}

/// Changes of the chunk being written, applied by `commit` once the bytes are written.
#[derive(Debug, Clone, Default)]
pub struct StateDelta {
    producers: HashMap<i64, ProducerEntry>,
    aborted: Vec<AbortedTxn>,
}

impl StateDelta {
    /// Drops the changes (the write failed).
    pub fn clear(&mut self) {
        self.producers.clear();
        self.aborted.clear();
    }
}

/// The type of a transaction marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerType {
    /// The transaction aborted.
    Abort,
    /// The transaction committed.
    Commit,
}

/// The marker type of a control batch (its record key is `version: i16, type: i16`).
pub fn marker_type(batch: &crate::batch::BatchView<'_>) -> Option<MarkerType> {
    let rec = batch.records().next()?.ok()?;
    let key = rec.key?;
    match key.get(2..4)? {
        [0, 0] => Some(MarkerType::Abort),
        [0, 1] => Some(MarkerType::Commit),
        _ => None,
    }
}

/// What to do with an incoming producer batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqCheck {
    /// New: append it.
    Append,
    /// A retry of a batch already in the log: answer with these offsets.
    Duplicate(BatchMeta),
}

/// Producer states of a partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions as (first offset, producer id): the first bounds the stable offset.
    ongoing: std::collections::BTreeSet<(i64, i64)>,
    /// Aborted transactions, in marker order.
    aborted: Vec<AbortedTxn>,
}

/// `first` follows `last` (sequences wrap from `i32::MAX` to 0, as in Kafka).
fn follows(last: i32, first: i32) -> bool {
    if last == i32::MAX {
        first == 0
    } else {
        first == last + 1
    }
}

/// The last sequence of a batch starting at `first` with `count` records.
pub fn last_sequence(first: i32, count: i32) -> i32 {
    let last = i64::from(first) + i64::from(count) - 1;
    if last > i64::from(i32::MAX) {
        (last - i64::from(i32::MAX) - 1) as i32
    } else {
        last as i32
    }
}

/// A transactional batch without a sequence: written by a transaction coordinator on the
/// producer's behalf (offsets sent to a transaction), outside the producer's own sequence.
fn is_coordinator_write(h: &BatchHeader) -> bool {
    h.is_transactional() && h.base_sequence < 0
}

impl ProducerStates {
    /// The entry of a producer, looking at uncommitted changes in `overlay` first.
    fn entry<'a>(&'a self, overlay: &'a StateDelta, pid: i64) -> Option<&'a ProducerEntry> {
        overlay
            .producers
            .get(&pid)
            .or_else(|| self.producers.get(&pid))
    }

    /// Checks a batch from producer `pid`/`epoch` with sequences `first..=last` against the
    /// state (plus `overlay`, the changes of the group being written).
    pub fn check(
        &self,
        overlay: &StateDelta,
        topic: &str,
        partition: u32,
        h: &BatchHeader,
    ) -> Result<SeqCheck> {
        let pid = h.producer_id;
        let first = h.base_sequence;
        let last = last_sequence(first, h.record_count);
        let Some(e) = self.entry(overlay, pid) else {
            // A producer new to this partition (or whose state expired) may start anywhere.
            return Ok(SeqCheck::Append);
        };
        if h.producer_epoch < e.epoch {
            return Err(LogError::ProducerFenced {
                producer_id: pid,
                epoch: h.producer_epoch,
                current_epoch: e.epoch,
            });
        }
        if h.is_control() || is_coordinator_write(h) {
            // Markers carry no sequence; neither do the offsets a transaction coordinator
            // writes for a producer (Kafka's TxnOffsetCommit): only the epoch matters.
            return Ok(SeqCheck::Append);
        }
        if h.producer_epoch > e.epoch {
            // A new epoch starts its sequences again at 0.
            return if first == 0 {
                Ok(SeqCheck::Append)
            } else {
                Err(out_of_order(topic, partition, pid, 0, first))
            };
        }
        if let Some(m) = e
            .batches
            .iter()
            .find(|m| m.first_seq == first && m.last_seq == last)
        {
            return Ok(SeqCheck::Duplicate(*m));
        }
        match e.batches.back() {
            Some(m) if !follows(m.last_seq, first) => {
                let expected = if m.last_seq == i32::MAX {
                    0
                } else {
                    m.last_seq + 1
                };
                Err(out_of_order(topic, partition, pid, expected, first))
            }
            _ => Ok(SeqCheck::Append),
        }
    }

    /// Records an appended batch into `overlay` (merged by `commit` once it is written).
    /// `marker` is the type of a control batch.
    pub fn record(&self, overlay: &mut StateDelta, h: &BatchHeader, marker: Option<MarkerType>) {
        let pid = h.producer_id;
        let mut e = self.entry(overlay, pid).cloned().unwrap_or_default();
        if h.producer_epoch != e.epoch {
            e.batches.clear();
            e.epoch = h.producer_epoch;
        }
        if h.is_control() {
            let first = e.txn_first_offset.take();
            if let (Some(first_offset), Some(MarkerType::Abort)) = (first, marker) {
                overlay.aborted.push(AbortedTxn {
                    producer_id: pid,
                    first_offset,
                    last_offset: h.base_offset.0,
                });
            }
        } else {
            if h.is_transactional() && e.txn_first_offset.is_none() {
                e.txn_first_offset = Some(h.base_offset.0);
            }
            if is_coordinator_write(h) {
                overlay.producers.insert(pid, e);
                return;
            }
            e.batches.push_back(BatchMeta {
                first_seq: h.base_sequence,
                last_seq: last_sequence(h.base_sequence, h.record_count),
                base_offset: h.base_offset.0,
                last_offset: h.last_offset().0,
            });
            while e.batches.len() > BATCHES_PER_PRODUCER {
                e.batches.pop_front();
            }
        }
        overlay.producers.insert(pid, e);
    }

    /// Makes the overlay's changes part of the state; true if aborted transactions were added.
    pub fn commit(&mut self, overlay: &mut StateDelta) -> bool {
        for (pid, new) in overlay.producers.drain() {
            let old_first = self.producers.get(&pid).and_then(|e| e.txn_first_offset);
            if old_first != new.txn_first_offset {
                if let Some(f) = old_first {
                    self.ongoing.remove(&(f, pid));
                }
                if let Some(f) = new.txn_first_offset {
                    self.ongoing.insert((f, pid));
                }
            }
            self.producers.insert(pid, new);
        }
        let added = !overlay.aborted.is_empty();
        self.aborted.append(&mut overlay.aborted);
        added
    }

    /// Applies a batch read back from the log (recovery replay).
    pub fn replay(&mut self, batch: &crate::batch::BatchView<'_>) {
        let h = &batch.header;
        if h.producer_id < 0 || h.record_count < 1 {
            return;
        }
        let marker = if h.is_control() {
            marker_type(batch)
        } else {
            None
        };
        let mut overlay = StateDelta::default();
        self.record(&mut overlay, h, marker);
        self.commit(&mut overlay);
    }

    /// First offset of the oldest open transaction, if any.
    pub fn first_unstable(&self) -> Option<i64> {
        self.ongoing.first().map(|&(o, _)| o)
    }

    /// Aborted transactions, in marker order.
    pub fn aborted(&self) -> &[AbortedTxn] {
        &self.aborted
    }

    /// Number of producers known.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is known.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The state of one producer.
    pub fn get(&self, pid: i64) -> Option<&ProducerEntry> {
        self.producers.get(&pid)
    }

    /// Snapshot bytes (little-endian, CRC-32C trailer); see docs/format.md.
    pub fn encode(&self, covers: Offset) -> Vec<u8> {
        let mut b = Vec::with_capacity(24 + self.producers.len() * 64);
        b.extend_from_slice(SNAPSHOT_MAGIC);
        b.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        b.extend_from_slice(&covers.0.to_le_bytes());
        b.extend_from_slice(&(self.producers.len() as u32).to_le_bytes());
        let mut pids: Vec<&i64> = self.producers.keys().collect();
        pids.sort();
        for pid in pids {
            let e = &self.producers[pid];
            b.extend_from_slice(&pid.to_le_bytes());
            b.extend_from_slice(&e.epoch.to_le_bytes());
            b.extend_from_slice(&e.txn_first_offset.unwrap_or(-1).to_le_bytes());
            b.push(e.batches.len() as u8);
            for m in &e.batches {
                b.extend_from_slice(&m.first_seq.to_le_bytes());
                b.extend_from_slice(&m.last_seq.to_le_bytes());
                b.extend_from_slice(&m.base_offset.to_le_bytes());
                b.extend_from_slice(&m.last_offset.to_le_bytes());
            }
        }
        b.extend_from_slice(&(self.aborted.len() as u32).to_le_bytes());
        for a in &self.aborted {
            b.extend_from_slice(&a.producer_id.to_le_bytes());
            b.extend_from_slice(&a.first_offset.to_le_bytes());
            b.extend_from_slice(&a.last_offset.to_le_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses a snapshot; `None` if it is damaged.
    pub fn decode(bytes: &[u8]) -> Option<(Offset, ProducerStates)> {
        if bytes.len() < 24 || &bytes[..4] != SNAPSHOT_MAGIC {
            return None;
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut r = Reader { b: body, at: 4 };
        if r.u32()? != SNAPSHOT_VERSION {
            return None;
        }
        let covers = Offset(r.i64()?);
        let count = r.u32()?;
        let mut states = ProducerStates::default();
        for _ in 0..count {
            let pid = r.i64()?;
            let epoch = r.i16()?;
            let txn_first = r.i64()?;
            let n = r.u8()?;
            let mut batches = VecDeque::new();
            for _ in 0..n {
                batches.push_back(BatchMeta {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    base_offset: r.i64()?,
                    last_offset: r.i64()?,
                });
            }
            let txn_first_offset = (txn_first >= 0).then_some(txn_first);
            if let Some(f) = txn_first_offset {
                states.ongoing.insert((f, pid));
            }
            states.producers.insert(
                pid,
                ProducerEntry {
                    epoch,
                    batches,
                    txn_first_offset,
                },
            );
        }
        let aborted = r.u32()?;
        for _ in 0..aborted {
            states.aborted.push(AbortedTxn {
                producer_id: r.i64()?,
                first_offset: r.i64()?,
                last_offset: r.i64()?,
            });
        }
        (r.at == body.len()).then_some((covers, states))
    }
}

fn out_of_order(topic: &str, partition: u32, pid: i64, expected: i32, got: i32) -> LogError {
    LogError::OutOfOrderSequence {
        topic: topic.to_string(),
        partition: crate::types::PartitionId(partition),
        producer_id: pid,
        expected,
        got,
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let s = self.b.get(self.at..self.at + N)?;
        self.at += N;
        s.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|a| a[0])
    }
    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_le_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_le_bytes)
    }
}

fn snapshot_path(dir: &Path, covers: Offset) -> PathBuf {
    dir.join(format!("{:020}.snapshot", covers.0))
}

/// Writes a snapshot covering the log up to `covers` and prunes older ones.
pub fn write_snapshot(
    storage: &dyn Storage,
    dir: &Path,
    covers: Offset,
    states: &ProducerStates,
) -> Result<()> {
    let path = snapshot_path(dir, covers);
    write_atomic(storage, &path, &states.encode(covers))
        .map_err(|e| LogError::io("write producer snapshot", &path, e))?;
    let mut all = list_snapshots(storage, dir)?;
    all.sort();
    let excess = all.len().saturating_sub(SNAPSHOTS_KEPT);
    for old in all.into_iter().take(excess) {
        let p = snapshot_path(dir, old);
        storage
            .remove_file(&p)
            .map_err(|e| LogError::io("remove old producer snapshot", &p, e))?;
    }
    Ok(())
}

fn list_snapshots(storage: &dyn Storage, dir: &Path) -> Result<Vec<Offset>> {
    let names = storage
        .list_dir(dir)
        .map_err(|e| LogError::io("list partition dir", dir, e))?;
    Ok(names
        .iter()
        .filter_map(|n| crate::segment::parse_base(n, "snapshot"))
        .collect())
}

/// The newest intact snapshot covering at most `log_end`; `(Offset(0)…, empty)` if none.
pub fn load_snapshot(
    storage: &dyn Storage,
    dir: &Path,
    log_end: Offset,
) -> Result<Option<(Offset, ProducerStates)>> {
    let mut all = list_snapshots(storage, dir)?;
    all.sort();
    for covers in all.into_iter().rev().filter(|c| *c <= log_end) {
        let bytes = read_all(storage, &snapshot_path(dir, covers)).unwrap_or_default();
        match ProducerStates::decode(&bytes) {
            Some((c, states)) if c == covers => return Ok(Some((covers, states))),
            _ => {
                tracing::warn!(dir = %dir.display(), offset = covers.0, "ignoring a damaged producer snapshot")
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchBuilder, ProducerFields};
    use crate::types::Timestamp;

    fn header(pid: i64, epoch: i16, seq: i32, n: usize, base: i64) -> BatchHeader {
        let mut b = BatchBuilder::with_capacity(256).producer(ProducerFields {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
        });
        for _ in 0..n {
            b.push_parts(None, Some(b"v"), &[], Timestamp(1));
        }
        let mut e = b.finish();
        crate::batch::set_base_offset(&mut e.bytes, Offset(base));
        BatchHeader::parse(&e.bytes).expect("header")
    }

    fn apply(s: &mut ProducerStates, h: &BatchHeader) -> Result<SeqCheck> {
        let mut overlay = StateDelta::default();
        let c = s.check(&overlay, "t", 0, h)?;
        if c == SeqCheck::Append {
            s.record(&mut overlay, h, None);
            s.commit(&mut overlay);
        }
        Ok(c)
    }

    fn transactional(pid: i64, epoch: i16, seq: i32, base: i64) -> BatchHeader {
        let mut b = BatchBuilder::with_capacity(256)
            .producer(ProducerFields {
                producer_id: pid,
                producer_epoch: epoch,
                base_sequence: seq,
            })
            .transactional(true);
        b.push_parts(None, Some(b"v"), &[], Timestamp(1));
        let mut e = b.finish();
        crate::batch::set_base_offset(&mut e.bytes, Offset(base));
        BatchHeader::parse(&e.bytes).expect("header")
    }

    #[test]
    fn coordinator_writes_check_the_epoch_but_not_the_sequence() {
        let mut s = ProducerStates::default();
        assert_eq!(
            apply(&mut s, &transactional(3, 1, 0, 0)).ok(),
            Some(SeqCheck::Append)
        );
        // Offsets a coordinator writes for the producer carry no sequence, any number of times.
        assert_eq!(
            apply(&mut s, &transactional(3, 1, -1, 1)).ok(),
            Some(SeqCheck::Append)
        );
        assert_eq!(
            apply(&mut s, &transactional(3, 1, -1, 2)).ok(),
            Some(SeqCheck::Append)
        );
        // They leave the producer's own sequence where it was.
        assert_eq!(
            apply(&mut s, &transactional(3, 1, 1, 3)).ok(),
            Some(SeqCheck::Append)
        );
        // An older epoch is fenced, with or without a sequence.
        assert!(apply(&mut s, &transactional(3, 0, -1, 4)).is_err());
    }

    #[test]
    fn kafka_sequence_rules() {
        let mut s = ProducerStates::default();
        assert_eq!(
            apply(&mut s, &header(7, 0, 0, 3, 0)).ok(),
            Some(SeqCheck::Append)
        );
        assert_eq!(
            apply(&mut s, &header(7, 0, 3, 2, 3)).ok(),
            Some(SeqCheck::Append)
        );
        // A retry of either batch is a duplicate with its original offsets.
        match apply(&mut s, &header(7, 0, 0, 3, 99)) {
            Ok(SeqCheck::Duplicate(m)) => assert_eq!((m.base_offset, m.last_offset), (0, 2)),
            other => panic!("expected duplicate, got {other:?}"),
        }
        // A gap is refused with the expected sequence.
        let e = apply(&mut s, &header(7, 0, 9, 1, 5)).expect_err("gap");
        assert!(
            matches!(
                e,
                LogError::OutOfOrderSequence {
                    expected: 5,
                    got: 9,
                    ..
                }
            ),
            "{e}"
        );
        // A new epoch restarts at 0; the old epoch is fenced from then on.
        assert!(apply(&mut s, &header(7, 1, 4, 1, 5)).is_err());
        assert_eq!(
            apply(&mut s, &header(7, 1, 0, 1, 5)).ok(),
            Some(SeqCheck::Append)
        );
        let e = apply(&mut s, &header(7, 0, 5, 1, 6)).expect_err("fenced");
        assert!(
            matches!(
                e,
                LogError::ProducerFenced {
                    current_epoch: 1,
                    ..
                }
            ),
            "{e}"
        );
        // Only the last five batches are remembered.
        for i in 1..=6 {
            apply(&mut s, &header(7, 1, i, 1, 5 + i64::from(i))).expect("append");
        }
        assert_eq!(
            s.get(7).map(|e| e.batches.len()),
            Some(BATCHES_PER_PRODUCER)
        );
        // Sequences wrap at i32::MAX.
        assert_eq!(last_sequence(i32::MAX, 2), 0);
    }

    #[test]
    fn snapshot_round_trip_and_damage() {
        let mut s = ProducerStates::default();
        apply(&mut s, &header(1, 0, 0, 2, 0)).expect("append");
        apply(&mut s, &header(2, 3, 0, 1, 2)).expect("append");
        let bytes = s.encode(Offset(3));
        let (covers, back) = ProducerStates::decode(&bytes).expect("decodes");
        assert_eq!(covers, Offset(3));
        assert_eq!(back, s);
        let mut bad = bytes.clone();
        bad[10] ^= 1;
        assert!(ProducerStates::decode(&bad).is_none());
    }
}
