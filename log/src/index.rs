//! Per-segment sparse indexes: offset → file position, and timestamp → offset.
//!
//! The active segment keeps its index in memory only (recovery rebuilds it from the data); a
//! sealed segment's index is written to `.index` / `.timeindex` files with a CRC-32C trailer, so
//! a missing, stale or bit-flipped index is detected and rebuilt, never trusted.
//!
//! Invariants: entries are strictly increasing in offset (and in timestamp for the time index);
//! a time entry `(T, O)` means every record up to and including the batch at `O` has a
//! timestamp <= `T`, so a search for the first record with timestamp >= `X` may start at the
//! last entry with `T < X`.

use crate::batch::BatchHeader;
use crate::types::{Offset, Timestamp};

const OFFSET_MAGIC: &[u8; 4] = b"WIDX";
const TIME_MAGIC: &[u8; 4] = b"WTIX";
const FORMAT_VERSION: u32 = 1;

/// The in-memory index and summary of one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentIndex {
    /// (offset - base, byte position of the batch).
    pub offsets: Vec<(u32, u32)>,
    /// (max timestamp through this batch, offset - base of the batch).
    pub times: Vec<(i64, u32)>,
    /// Offset after the last batch (base when empty).
    pub next_offset: i64,
    /// Largest timestamp in the segment, -1 when empty.
    pub max_timestamp: i64,
    /// Bytes covered.
    pub size: u64,
    /// Every batch starts where the previous one ended (true for segments the writer wrote;
    /// compaction output has gaps). Lets readers check each batch's uncovered `baseOffset`.
    pub contiguous: bool,
    bytes_since_entry: u64,
}

impl SegmentIndex {
    /// An empty index for a segment starting at `base`.
    pub fn new(base: Offset) -> SegmentIndex {
        SegmentIndex {
            next_offset: base.0,
            max_timestamp: -1,
            contiguous: true,
            ..SegmentIndex::default()
        }
    }

    /// Records a batch at `pos`. Batches must come in file order.
    pub fn on_batch(&mut self, base: Offset, h: &BatchHeader, pos: u64, interval: u32) {
        let rel = (h.base_offset.0 - base.0) as u32;
        let ts = h.max_timestamp.0;
        if h.base_offset.0 != self.next_offset {
            self.contiguous = false;
        }
        if self.offsets.is_empty() || self.bytes_since_entry >= u64::from(interval) {
            self.offsets.push((rel, pos as u32));
            self.bytes_since_entry = 0;
            let through = self.max_timestamp.max(ts);
            if self.times.last().is_none_or(|&(t, _)| through > t) {
                self.times.push((through, rel));
            }
        }
        self.bytes_since_entry += h.total_len() as u64;
        self.max_timestamp = self.max_timestamp.max(ts);
        self.next_offset = h.next_offset().0;
        self.size = pos + h.total_len() as u64;
    }

    /// Byte position from which to scan for `offset`, and the base offset of the batch there
    /// (`None` at position 0 of a non-contiguous segment, where the first batch may start later).
    pub fn position_for(&self, base: Offset, offset: Offset) -> (u64, Option<Offset>) {
        let rel = (offset.0 - base.0).clamp(0, i64::from(u32::MAX)) as u32;
        let i = self.offsets.partition_point(|&(o, _)| o <= rel);
        if i == 0 {
            (0, self.contiguous.then_some(base))
        } else {
            let (o, p) = self.offsets[i - 1];
            (u64::from(p), Some(base.plus(i64::from(o))))
        }
    }

    /// Offset from which to scan for the first record with timestamp >= `ts`.
    pub fn offset_for_time(&self, base: Offset, ts: Timestamp) -> Offset {
        let i = self.times.partition_point(|&(t, _)| t < ts.0);
        if i == 0 {
            base
        } else {
            base.plus(i64::from(self.times[i - 1].1))
        }
    }

    /// Serialises the offset index file (little-endian, CRC-32C trailer).
    pub fn encode_offset_file(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(8 + self.offsets.len() * 8 + 36);
        b.extend_from_slice(OFFSET_MAGIC);
        b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        for &(o, p) in &self.offsets {
            b.extend_from_slice(&o.to_le_bytes());
            b.extend_from_slice(&p.to_le_bytes());
        }
        b.extend_from_slice(&self.size.to_le_bytes());
        b.extend_from_slice(&self.next_offset.to_le_bytes());
        b.extend_from_slice(&self.max_timestamp.to_le_bytes());
        b.extend_from_slice(&(self.offsets.len() as u32).to_le_bytes());
        b.extend_from_slice(&u32::from(self.contiguous).to_le_bytes());
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Serialises the time index file.
    pub fn encode_time_file(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(8 + self.times.len() * 12 + 16);
        b.extend_from_slice(TIME_MAGIC);
        b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        for &(t, o) in &self.times {
            b.extend_from_slice(&t.to_le_bytes());
            b.extend_from_slice(&o.to_le_bytes());
        }
        b.extend_from_slice(&self.size.to_le_bytes());
        b.extend_from_slice(&(self.times.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Loads both index files; `None` if either is damaged or does not describe a segment of
    /// `segment_len` bytes (then the caller rebuilds from the data).
    pub fn decode_files(
        offset_file: &[u8],
        time_file: &[u8],
        segment_len: u64,
    ) -> Option<SegmentIndex> {
        let body = checked_body(offset_file, OFFSET_MAGIC, 36)?;
        let (entries, trailer) = body.split_at(body.len() - 32);
        let size = le_u64(trailer, 0);
        let next_offset = le_u64(trailer, 8) as i64;
        let max_timestamp = le_u64(trailer, 16) as i64;
        let count = le_u32(trailer, 24) as usize;
        let contiguous = le_u32(trailer, 28) == 1;
        if size != segment_len || entries.len() != count * 8 {
            return None;
        }
        let offsets: Vec<(u32, u32)> = entries
            .chunks_exact(8)
            .map(|c| (le_u32(c, 0), le_u32(c, 4)))
            .collect();
        if offsets
            .windows(2)
            .any(|w| w[0].0 >= w[1].0 || w[0].1 >= w[1].1)
            || offsets.last().is_some_and(|&(_, p)| u64::from(p) >= size)
        {
            return None;
        }
        let tbody = checked_body(time_file, TIME_MAGIC, 16)?;
        let (tentries, ttrailer) = tbody.split_at(tbody.len() - 12);
        if le_u64(ttrailer, 0) != size || tentries.len() != le_u32(ttrailer, 8) as usize * 12 {
            return None;
        }
        let times: Vec<(i64, u32)> = tentries
            .chunks_exact(12)
            .map(|c| (le_u64(c, 0) as i64, le_u32(c, 8)))
            .collect();
        if times
            .windows(2)
            .any(|w| w[0].0 >= w[1].0 || w[0].1 >= w[1].1)
        {
            return None;
        }
        Some(SegmentIndex {
            offsets,
            times,
            next_offset,
            max_timestamp,
            size,
            contiguous,
            bytes_since_entry: 0,
        })
    }
}

/// Checks magic, version and CRC; returns the bytes between the 8-byte header and the CRC.
fn checked_body<'a>(file: &'a [u8], magic: &[u8; 4], trailer_min: usize) -> Option<&'a [u8]> {
    if file.len() < 8 + trailer_min || &file[..4] != magic || le_u32(file, 4) != FORMAT_VERSION {
        return None;
    }
    let (data, crc) = file.split_at(file.len() - 4);
    if crc32c::crc32c(data) != le_u32(crc, 0) {
        return None;
    }
    Some(&data[8..])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::BatchBuilder;

    fn header(base: i64, count: usize, ts: i64) -> BatchHeader {
        let mut b = BatchBuilder::with_capacity(256);
        for i in 0..count {
            b.push_parts(None, Some(b"v"), &[], Timestamp(ts + i as i64));
        }
        let mut e = b.finish();
        crate::batch::set_base_offset(&mut e.bytes, Offset(base));
        BatchHeader::parse(&e.bytes).expect("header")
    }

    #[test]
    fn file_round_trip_and_damage_detection() {
        let mut idx = SegmentIndex::new(Offset(100));
        let mut pos = 0;
        for i in 0..50 {
            let h = header(100 + i * 3, 3, 1000 + i * 10);
            idx.on_batch(Offset(100), &h, pos, 64);
            pos += h.total_len() as u64;
        }
        let of = idx.encode_offset_file();
        let tf = idx.encode_time_file();
        let back = SegmentIndex::decode_files(&of, &tf, pos).expect("decodes");
        assert_eq!(back.offsets, idx.offsets);
        assert_eq!(back.times, idx.times);
        assert_eq!(back.next_offset, 250);
        assert!(
            SegmentIndex::decode_files(&of, &tf, pos + 1).is_none(),
            "stale size"
        );
        for i in 0..of.len() {
            let mut bad = of.clone();
            bad[i] ^= 0x10;
            assert!(
                SegmentIndex::decode_files(&bad, &tf, pos).is_none(),
                "flip at {i}"
            );
        }
        assert_eq!(
            idx.position_for(Offset(100), Offset(100)),
            (0, Some(Offset(100)))
        );
        assert!(idx.contiguous);
        assert!(idx.offset_for_time(Offset(100), Timestamp(1200)) <= Offset(160));
    }
}
