//! Kafka RecordBatch v2: the on-disk and on-wire format of every batch in the log.
//!
//! Pure functions over bytes: [`BatchBuilder`] encodes records into one batch, [`BatchHeader`]
//! parses the fixed 61-byte header, [`BatchView`] walks records without allocating, and
//! [`BatchIter`] walks concatenated batches. Layout (big-endian, as Kafka defines it):
//!
//! | off | field | type |
//! |---|---|---|
//! | 0 | baseOffset | i64 |
//! | 8 | batchLength (bytes after this field) | i32 |
//! | 12 | partitionLeaderEpoch | i32 |
//! | 16 | magic (= 2) | i8 |
//! | 17 | crc (CRC-32C of bytes 21..end) | u32 |
//! | 21 | attributes | i16 |
//! | 23 | lastOffsetDelta | i32 |
//! | 27 | baseTimestamp | i64 |
//! | 35 | maxTimestamp | i64 |
//! | 43 | producerId | i64 |
//! | 51 | producerEpoch | i16 |
//! | 53 | baseSequence | i32 |
//! | 57 | recordCount | i32 |
//! | 61 | records (varint-encoded) | |
//!
//! Invariant: `baseOffset`, `batchLength` and `partitionLeaderEpoch` lie outside the CRC, so the
//! log can assign offsets to a producer-built batch by patching 8 bytes without re-checksumming.

pub mod codec;
mod encode;
mod varint;

pub use encode::{rebuild_with, BatchBuilder, EncodedBatch, ProducerFields};
pub use varint::{put_varint, varint_len};

use std::borrow::Cow;

use crate::record::RecordView;
use crate::types::{Offset, Timestamp};
use varint::{be_i16, be_i32, be_i64, get_bytes, get_varint, get_varint32};

/// Bytes before `batchLength`'s payload: baseOffset (8) + batchLength (4).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed batch header.
pub const HEADER_LEN: usize = 61;
/// The only magic value this log stores.
pub const MAGIC_V2: i8 = 2;
/// Upper bound on one batch, whatever a topic says: a corrupt length field must never make a
/// reader allocate gigabytes. Kafka's own ceiling for `max.message.bytes` is of this order.
pub const BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;

pub(crate) const POS_BATCH_LENGTH: usize = 8;
pub(crate) const POS_LEADER_EPOCH: usize = 12;
pub(crate) const POS_MAGIC: usize = 16;
pub(crate) const POS_CRC: usize = 17;
pub(crate) const POS_ATTRIBUTES: usize = 21;
pub(crate) const POS_LAST_OFFSET_DELTA: usize = 23;
pub(crate) const POS_BASE_TIMESTAMP: usize = 27;
pub(crate) const POS_MAX_TIMESTAMP: usize = 35;
pub(crate) const POS_PRODUCER_ID: usize = 43;
pub(crate) const POS_PRODUCER_EPOCH: usize = 51;
pub(crate) const POS_BASE_SEQUENCE: usize = 53;
pub(crate) const POS_RECORD_COUNT: usize = 57;

/// Attribute bits.
pub mod attributes {
    /// Bits 0-2: compression codec (0 = none).
    pub const COMPRESSION_MASK: i16 = 0x07;
    /// Bit 3: timestamps are log-append time.
    pub const LOG_APPEND_TIME: i16 = 0x08;
    /// Bit 4: part of a transaction.
    pub const TRANSACTIONAL: i16 = 0x10;
    /// Bit 5: a control batch (transaction marker).
    pub const CONTROL: i16 = 0x20;
    /// Bit 6: the batch carries a delete horizon.
    pub const DELETE_HORIZON: i16 = 0x40;
}

/// Why bytes are not a valid batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than the structure needs ("need more bytes" while scanning a file).
    #[error("truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// Not magic 2.
    #[error("unsupported magic {0} (only RecordBatch v2 is stored)")]
    BadMagic(i8),
    /// `batchLength` outside `[HEADER_LEN - LOG_OVERHEAD, BATCH_BYTES_MAX]`.
    #[error("batch length {0} out of range")]
    BadLength(i32),
    /// CRC-32C mismatch.
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// A compression codec Kafka does not define (attribute bits 0–2 above 4).
    #[error("unknown compression codec {0}")]
    Compressed(i16),
    /// A compressed records section does not decompress.
    #[error("compressed records (codec {codec}) do not decompress: {reason}")]
    Codec {
        /// The codec id.
        codec: i16,
        /// What went wrong.
        reason: String,
    },
    /// A record or header does not fit the declared sizes.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
}

// ---------------------------------------------------------------------------------------------
// header

/// The fixed fields of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: Offset,
    /// Bytes after the length field.
    pub batch_length: i32,
    /// Leader epoch (unused by the embedded log, kept for Kafka clients).
    pub partition_leader_epoch: i32,
    /// CRC-32C over bytes 21..end.
    pub crc: u32,
    /// Attribute bits, see [`attributes`].
    pub attributes: i16,
    /// `last offset - base offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: Timestamp,
    /// Largest record timestamp (or log-append time).
    pub max_timestamp: Timestamp,
    /// Producer id, `-1` if none.
    pub producer_id: i64,
    /// Producer epoch, `-1` if none.
    pub producer_epoch: i16,
    /// Sequence of the first record, `-1` if none.
    pub base_sequence: i32,
    /// Number of records.
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses and sanity-checks the header at the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < LOG_OVERHEAD {
            return Err(BatchError::Truncated {
                needed: LOG_OVERHEAD,
                available: buf.len(),
            });
        }
        let batch_length = be_i32(buf, POS_BATCH_LENGTH);
        if batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32
            || batch_length as usize > BATCH_BYTES_MAX
        {
            return Err(BatchError::BadLength(batch_length));
        }
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        let magic = buf[POS_MAGIC] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::BadMagic(magic));
        }
        Ok(BatchHeader {
            base_offset: Offset(be_i64(buf, 0)),
            batch_length,
            partition_leader_epoch: be_i32(buf, POS_LEADER_EPOCH),
            crc: be_i32(buf, POS_CRC) as u32,
            attributes: be_i16(buf, POS_ATTRIBUTES),
            last_offset_delta: be_i32(buf, POS_LAST_OFFSET_DELTA),
            base_timestamp: Timestamp(be_i64(buf, POS_BASE_TIMESTAMP)),
            max_timestamp: Timestamp(be_i64(buf, POS_MAX_TIMESTAMP)),
            producer_id: be_i64(buf, POS_PRODUCER_ID),
            producer_epoch: be_i16(buf, POS_PRODUCER_EPOCH),
            base_sequence: be_i32(buf, POS_BASE_SEQUENCE),
            record_count: be_i32(buf, POS_RECORD_COUNT),
        })
    }

    /// Whole size of the batch in bytes.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }
    /// Offset of the last record (kept even when compaction removed that record).
    pub fn last_offset(&self) -> Offset {
        self.base_offset.plus(i64::from(self.last_offset_delta))
    }
    /// Offset after the batch.
    pub fn next_offset(&self) -> Offset {
        self.last_offset().plus(1)
    }
    /// A transaction marker batch.
    pub fn is_control(&self) -> bool {
        self.attributes & attributes::CONTROL != 0
    }
    /// Part of a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & attributes::TRANSACTIONAL != 0
    }
    /// Timestamps are log-append time.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & attributes::LOG_APPEND_TIME != 0
    }
    /// Compression codec id (0 = none).
    pub fn compression(&self) -> i16 {
        self.attributes & attributes::COMPRESSION_MASK
    }
}

/// CRC-32C over the checksummed part of a whole batch.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[POS_ATTRIBUTES..])
}

/// Writes `base_offset` into an encoded batch (outside the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: Offset) {
    batch[0..8].copy_from_slice(&base_offset.0.to_be_bytes());
}

/// Marks a batch as log-append time with timestamp `now` and re-computes its CRC.
pub fn set_log_append_time(batch: &mut [u8], now: Timestamp) {
    let attrs = be_i16(batch, POS_ATTRIBUTES) | attributes::LOG_APPEND_TIME;
    batch[POS_ATTRIBUTES..POS_ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
    batch[POS_MAX_TIMESTAMP..POS_MAX_TIMESTAMP + 8].copy_from_slice(&now.0.to_be_bytes());
    let crc = compute_crc(batch);
    batch[POS_CRC..POS_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

// ---------------------------------------------------------------------------------------------
// decoding

/// One whole batch, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    /// The parsed header.
    pub header: BatchHeader,
    /// The whole batch including header.
    pub bytes: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// Parses the batch at the start of `buf`; `Truncated` if `buf` holds only part of it.
    pub fn parse(buf: &'a [u8]) -> Result<BatchView<'a>, BatchError> {
        let header = BatchHeader::parse(buf)?;
        let len = header.total_len();
        if buf.len() < len {
            return Err(BatchError::Truncated {
                needed: len,
                available: buf.len(),
            });
        }
        Ok(BatchView {
            header,
            bytes: &buf[..len],
        })
    }

    /// Checks the CRC-32C.
    pub fn verify_crc(&self) -> Result<(), BatchError> {
        let computed = compute_crc(self.bytes);
        if computed != self.header.crc {
            return Err(BatchError::BadCrc {
                stored: self.header.crc,
                computed,
            });
        }
        Ok(())
    }

    /// Iterates the records of an uncompressed batch; a compressed one yields one error
    /// (use [`BatchView::inflate`], which handles both).
    pub fn records(&self) -> RecordIter<'a> {
        RecordIter {
            header: self.header,
            buf: &self.bytes[HEADER_LEN..],
            pos: 0,
            remaining: self.header.record_count.max(0) as usize,
            failed: self.header.compression() != codec::CODEC_NONE,
        }
    }

    /// The records section, decompressed if the batch is compressed (borrowed otherwise).
    pub fn inflate(&self) -> Result<Records<'a>, BatchError> {
        let section = &self.bytes[HEADER_LEN..];
        let data = match self.header.compression() {
            codec::CODEC_NONE => Cow::Borrowed(section),
            c => Cow::Owned(codec::decompress(c, section)?),
        };
        Ok(Records {
            header: self.header,
            data,
        })
    }

    /// Checks CRC, compression and that every record decodes and fits the header; returns the
    /// record count. Used on batches that come from outside the log.
    pub fn validate(&self) -> Result<usize, BatchError> {
        self.verify_crc()?;
        if self.header.record_count < 1 || self.header.last_offset_delta < 0 {
            return Err(BatchError::Malformed(
                "a batch needs at least one record and lastOffsetDelta >= 0",
            ));
        }
        let mut count = 0usize;
        let mut last_delta = -1i64;
        let records = self.inflate()?;
        let mut iter = records.iter();
        for rec in iter.by_ref() {
            let rec = rec?;
            if !self.header.is_log_append_time() && rec.timestamp > self.header.max_timestamp {
                return Err(BatchError::Malformed(
                    "a record timestamp exceeds the batch maxTimestamp",
                ));
            }
            let delta = rec.offset.0 - self.header.base_offset.0;
            if delta <= last_delta || delta > i64::from(self.header.last_offset_delta) {
                return Err(BatchError::Malformed(
                    "offset deltas not increasing within the batch",
                ));
            }
            last_delta = delta;
            count += 1;
        }
        if iter.pos != iter.buf.len() {
            return Err(BatchError::Malformed("bytes after the last record"));
        }
        Ok(count)
    }
}

/// A batch's records section, decompressed when the batch was compressed: iterate it with
/// [`Records::iter`]. Record views borrow from it.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    header: BatchHeader,
    data: Cow<'a, [u8]>,
}

impl Records<'_> {
    /// An owned copy (borrowed sections are copied; decompressed ones moved).
    pub fn into_owned(self) -> Records<'static> {
        Records {
            header: self.header,
            data: Cow::Owned(self.data.into_owned()),
        }
    }

    /// Iterates the records.
    pub fn iter(&self) -> RecordIter<'_> {
        RecordIter::over(self.header, &self.data)
    }
}

/// Iterator over a batch's records.
#[derive(Debug)]
pub struct RecordIter<'a> {
    header: BatchHeader,
    buf: &'a [u8],
    pos: usize,
    remaining: usize,
    failed: bool,
}

impl<'a> RecordIter<'a> {
    /// Records of `header`'s batch in an (uncompressed) records section.
    pub(crate) fn over(header: BatchHeader, buf: &'a [u8]) -> RecordIter<'a> {
        RecordIter {
            header,
            buf,
            pos: 0,
            remaining: header.record_count.max(0) as usize,
            failed: false,
        }
    }

    fn decode_one(&mut self) -> Result<RecordView<'a>, BatchError> {
        let len = get_varint32(self.buf, &mut self.pos)?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| self.pos.checked_add(l))
            .filter(|&e| e <= self.buf.len())
            .ok_or(BatchError::Malformed("record length runs past the batch"))?;
        let body = &self.buf[..end];
        let mut p = self.pos + 1; // attributes byte, unused in v2
        if p > end {
            return Err(BatchError::Malformed("empty record"));
        }
        let ts_delta = get_varint(body, &mut p, 10)?;
        let offset_delta = get_varint32(body, &mut p)?;
        let key = get_bytes(body, &mut p)?;
        let value = get_bytes(body, &mut p)?;
        let header_count = get_varint32(body, &mut p)?;
        if header_count < 0 {
            return Err(BatchError::Malformed("negative header count"));
        }
        let headers_raw = &body[p..end];
        // Validate the headers now so HeaderIter never meets garbage silently.
        let mut hp = 0;
        for _ in 0..header_count {
            let k = get_bytes(headers_raw, &mut hp)?;
            if k.is_none() {
                return Err(BatchError::Malformed("null header key"));
            }
            get_bytes(headers_raw, &mut hp)?;
        }
        if hp != headers_raw.len() {
            return Err(BatchError::Malformed(
                "record length disagrees with its fields",
            ));
        }
        self.pos = end;
        let timestamp = if self.header.is_log_append_time() {
            self.header.max_timestamp
        } else {
            Timestamp(self.header.base_timestamp.0.wrapping_add(ts_delta))
        };
        Ok(RecordView {
            offset: self.header.base_offset.plus(i64::from(offset_delta)),
            timestamp,
            key,
            value,
            headers_raw,
            header_count: header_count as usize,
        })
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordView<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            self.failed = false;
            self.remaining = 0;
            return Some(Err(BatchError::Compressed(self.header.compression())));
        }
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        match self.decode_one() {
            Ok(r) => Some(Ok(r)),
            Err(e) => {
                self.remaining = 0;
                Some(Err(e))
            }
        }
    }
}

/// Iterator over a record's headers.
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    buf: &'a [u8],
    pos: usize,
    remaining: usize,
}

impl<'a> HeaderIter<'a> {
    pub(crate) fn new(buf: &'a [u8], count: usize) -> HeaderIter<'a> {
        HeaderIter {
            buf,
            pos: 0,
            remaining: count,
        }
    }
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = Result<(&'a [u8], Option<&'a [u8]>), BatchError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let r = (|| {
            let k = get_bytes(self.buf, &mut self.pos)?.unwrap_or_default();
            let v = get_bytes(self.buf, &mut self.pos)?;
            Ok((k, v))
        })();
        if r.is_err() {
            self.remaining = 0;
        }
        Some(r)
    }
}

/// Iterator over concatenated whole batches (the shape of a fetch response).
#[derive(Debug, Clone)]
pub struct BatchIter<'a> {
    buf: &'a [u8],
}

impl<'a> BatchIter<'a> {
    /// Walks `buf`; a trailing partial batch ends the iteration with `Truncated`.
    pub fn new(buf: &'a [u8]) -> BatchIter<'a> {
        BatchIter { buf }
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<BatchView<'a>, BatchError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        match BatchView::parse(self.buf) {
            Ok(b) => {
                self.buf = &self.buf[b.bytes.len()..];
                Some(Ok(b))
            }
            Err(e) => {
                self.buf = &[];
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::varint::get_varint;
    use super::*;

    #[test]
    fn varint_round_trip_edges() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            i32::MAX as i64,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "len of {v}");
            let mut p = 0;
            assert_eq!(get_varint(&out, &mut p, 10).ok(), Some(v));
            assert_eq!(p, out.len());
        }
        // Known zigzag bytes: 1 -> 0x02, -1 -> 0x01, 300 -> 0xd8 0x04.
        let mut out = Vec::new();
        put_varint(&mut out, 300);
        assert_eq!(out, vec![0xd8, 0x04]);
    }

    #[test]
    fn known_single_record_batch_bytes() {
        // Hand-derived from the Kafka spec: one record, key "k", value "v", ts 1000, no headers.
        let mut b = BatchBuilder::with_capacity(128);
        b.push_parts(Some(b"k"), Some(b"v"), &[], Timestamp(1000));
        let batch = b.finish();
        let bytes = batch.as_bytes();
        // record: len=8 -> 0x10, attrs 0, tsDelta 0, offDelta 0, keyLen 1 -> 0x02 'k', valLen 0x02 'v', headers 0
        assert_eq!(
            &bytes[HEADER_LEN..],
            &[0x10, 0, 0, 0, 0x02, b'k', 0x02, b'v', 0]
        );
        assert_eq!(bytes.len(), HEADER_LEN + 9);
        let h = BatchHeader::parse(bytes).expect("header");
        assert_eq!(h.batch_length as usize, bytes.len() - LOG_OVERHEAD);
        assert_eq!(h.record_count, 1);
        assert_eq!(h.producer_id, -1);
        assert_eq!(h.base_timestamp, Timestamp(1000));
        BatchView::parse(bytes)
            .expect("view")
            .verify_crc()
            .expect("crc");
    }

    #[test]
    fn crc_detects_every_single_bit_flip_in_checksummed_part() {
        let mut b = BatchBuilder::with_capacity(128);
        b.push_parts(Some(b"key"), Some(b"value"), &[], Timestamp(5));
        let bytes = b.finish().bytes;
        for i in POS_ATTRIBUTES..bytes.len() {
            for bit in 0..8 {
                let mut c = bytes.clone();
                c[i] ^= 1 << bit;
                let v = BatchView::parse(&c).expect("structure intact");
                assert!(
                    v.verify_crc().is_err(),
                    "flip at byte {i} bit {bit} undetected"
                );
            }
        }
    }
}
