//! Encoding: [`BatchBuilder`] writes records straight into a finished RecordBatch v2, and
//! [`rebuild_with`] re-encodes the records compaction keeps, with their original offsets.

use super::varint::{be_i32, put_varint, varint_len};
use super::{
    attributes, compute_crc, BatchError, BatchView, HEADER_LEN, LOG_OVERHEAD, MAGIC_V2,
    POS_ATTRIBUTES, POS_BASE_SEQUENCE, POS_BASE_TIMESTAMP, POS_BATCH_LENGTH, POS_CRC,
    POS_LAST_OFFSET_DELTA, POS_LEADER_EPOCH, POS_MAGIC, POS_MAX_TIMESTAMP, POS_PRODUCER_EPOCH,
    POS_PRODUCER_ID, POS_RECORD_COUNT,
};
use crate::record::{Header, Record, RecordView};
use crate::types::Timestamp;

/// Producer identity fields of a batch (`-1` everywhere for a plain producer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerFields {
    /// Producer id.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// Sequence of the first record.
    pub base_sequence: i32,
}

impl Default for ProducerFields {
    fn default() -> Self {
        ProducerFields {
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }
}

/// Encodes records into one RecordBatch v2, straight into its final buffer.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer: ProducerFields,
    attributes: i16,
}

/// A finished batch, ready for `Log::append_batch`. Its base offset is assigned by the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    pub(crate) bytes: Vec<u8>,
    pub(crate) record_count: u32,
}

impl EncodedBatch {
    /// Wraps and validates an externally built batch (for example from a Kafka client).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<EncodedBatch, BatchError> {
        let view = BatchView::parse(&bytes)?;
        if view.bytes.len() != bytes.len() {
            return Err(BatchError::Malformed("bytes after the batch"));
        }
        let count = view.validate()?;
        Ok(EncodedBatch {
            record_count: count as u32,
            bytes,
        })
    }
    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// Number of records (and offsets) in the batch.
    pub fn record_count(&self) -> u32 {
        self.record_count
    }
    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    /// True if the batch has no records.
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }
    /// Offsets the batch spans (`lastOffsetDelta + 1`).
    pub(crate) fn offset_span(&self) -> i64 {
        i64::from(be_i32(&self.bytes, POS_LAST_OFFSET_DELTA)) + 1
    }
}

impl BatchBuilder {
    /// An empty builder with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> BatchBuilder {
        let mut buf = Vec::with_capacity(capacity.max(HEADER_LEN));
        buf.resize(HEADER_LEN, 0);
        BatchBuilder {
            buf,
            count: 0,
            base_timestamp: -1,
            max_timestamp: -1,
            producer: ProducerFields::default(),
            attributes: 0,
        }
    }

    /// Sets the producer identity fields.
    pub fn producer(mut self, fields: ProducerFields) -> BatchBuilder {
        self.producer = fields;
        self
    }

    /// Marks the batch transactional.
    pub fn transactional(mut self, yes: bool) -> BatchBuilder {
        if yes {
            self.attributes |= attributes::TRANSACTIONAL;
        } else {
            self.attributes &= !attributes::TRANSACTIONAL;
        }
        self
    }

    /// A transaction marker from `producer_id`/`producer_epoch`: a control batch with one
    /// record whose key is (version 0, type: 0 abort, 1 commit) and whose value is
    /// (version 0, coordinator epoch), as Kafka writes them.
    pub fn marker(
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        ts: Timestamp,
    ) -> EncodedBatch {
        let mut b = BatchBuilder::with_capacity(HEADER_LEN + 32).producer(ProducerFields {
            producer_id,
            producer_epoch,
            base_sequence: -1,
        });
        b.attributes |= attributes::CONTROL | attributes::TRANSACTIONAL;
        let key = [0u8, 0, 0, u8::from(commit)];
        let mut value = vec![0u8, 0];
        value.extend_from_slice(&coordinator_epoch.to_be_bytes());
        b.push_parts(Some(&key), Some(&value), &[], ts);
        b.finish()
    }

    /// Number of records so far.
    pub fn count(&self) -> usize {
        self.count as usize
    }

    /// Encoded size so far.
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// Bytes `push_parts` would add for this record.
    pub fn record_size(
        &self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
        ts: Timestamp,
    ) -> usize {
        let body = self.body_len(key, value, headers, ts);
        varint_len(body as i64) + body
    }

    fn body_len(
        &self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
        ts: Timestamp,
    ) -> usize {
        let base = if self.count == 0 {
            ts.0
        } else {
            self.base_timestamp
        };
        let field = |f: Option<&[u8]>| f.map_or(1, |b| varint_len(b.len() as i64) + b.len());
        let mut n = 1 + varint_len(ts.0.wrapping_sub(base)) + varint_len(i64::from(self.count));
        n += field(key) + field(value) + varint_len(headers.len() as i64);
        for h in headers {
            n += field(Some(h.key.as_bytes())) + field(h.value.as_deref());
        }
        n
    }

    /// Appends a record given by parts.
    pub fn push_parts(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
        ts: Timestamp,
    ) {
        if self.count == 0 {
            self.base_timestamp = ts.0;
        }
        let body = self.body_len(key, value, headers, ts);
        let out = &mut self.buf;
        out.reserve(body + 5);
        put_varint(out, body as i64);
        out.push(0);
        put_varint(out, ts.0.wrapping_sub(self.base_timestamp));
        put_varint(out, i64::from(self.count));
        put_field(out, key);
        put_field(out, value);
        put_varint(out, headers.len() as i64);
        for h in headers {
            put_field(out, Some(h.key.as_bytes()));
            put_field(out, h.value.as_deref());
        }
        self.max_timestamp = self.max_timestamp.max(ts.0);
        self.count += 1;
    }

    /// Appends a record; `default_ts` is used when the record has no timestamp.
    pub fn push(&mut self, record: &Record, default_ts: Timestamp) {
        self.push_parts(
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
            record.timestamp.unwrap_or(default_ts),
        );
    }

    /// Writes the header and CRC. The base offset is 0 until the log assigns it.
    pub fn finish(mut self) -> EncodedBatch {
        let len = self.buf.len();
        let b = &mut self.buf;
        b[0..8].copy_from_slice(&0i64.to_be_bytes());
        b[POS_BATCH_LENGTH..POS_BATCH_LENGTH + 4]
            .copy_from_slice(&((len - LOG_OVERHEAD) as i32).to_be_bytes());
        b[POS_LEADER_EPOCH..POS_LEADER_EPOCH + 4].copy_from_slice(&(-1i32).to_be_bytes());
        b[POS_MAGIC] = MAGIC_V2 as u8;
        b[POS_ATTRIBUTES..POS_ATTRIBUTES + 2].copy_from_slice(&self.attributes.to_be_bytes());
        let last_delta = (self.count - 1).max(0);
        b[POS_LAST_OFFSET_DELTA..POS_LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&last_delta.to_be_bytes());
        b[POS_BASE_TIMESTAMP..POS_BASE_TIMESTAMP + 8]
            .copy_from_slice(&self.base_timestamp.to_be_bytes());
        b[POS_MAX_TIMESTAMP..POS_MAX_TIMESTAMP + 8]
            .copy_from_slice(&self.max_timestamp.to_be_bytes());
        b[POS_PRODUCER_ID..POS_PRODUCER_ID + 8]
            .copy_from_slice(&self.producer.producer_id.to_be_bytes());
        b[POS_PRODUCER_EPOCH..POS_PRODUCER_EPOCH + 2]
            .copy_from_slice(&self.producer.producer_epoch.to_be_bytes());
        b[POS_BASE_SEQUENCE..POS_BASE_SEQUENCE + 4]
            .copy_from_slice(&self.producer.base_sequence.to_be_bytes());
        b[POS_RECORD_COUNT..POS_RECORD_COUNT + 4].copy_from_slice(&self.count.to_be_bytes());
        let crc = compute_crc(b);
        b[POS_CRC..POS_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        EncodedBatch {
            record_count: self.count as u32,
            bytes: self.buf,
        }
    }
}

fn put_field(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// Re-encodes the kept records of `batch` as a new batch with the same base offset, producer
/// fields, attributes and `lastOffsetDelta` (compaction keeps offsets; gaps are fine).
pub fn rebuild_with(batch: &BatchView<'_>, keep: &[RecordView<'_>]) -> Vec<u8> {
    let h = batch.header;
    let mut out = Vec::with_capacity(batch.bytes.len());
    out.extend_from_slice(&batch.bytes[..HEADER_LEN]);
    for r in keep {
        let delta = r.offset.0 - h.base_offset.0;
        let ts_delta = if h.is_log_append_time() {
            0
        } else {
            r.timestamp.0 - h.base_timestamp.0
        };
        let field = |f: Option<&[u8]>| f.map_or(1, |b| varint_len(b.len() as i64) + b.len());
        let body = 1
            + varint_len(ts_delta)
            + varint_len(delta)
            + field(r.key)
            + field(r.value)
            + varint_len(r.header_count as i64)
            + r.headers_raw.len();
        put_varint(&mut out, body as i64);
        out.push(0);
        put_varint(&mut out, ts_delta);
        put_varint(&mut out, delta);
        put_field(&mut out, r.key);
        put_field(&mut out, r.value);
        put_varint(&mut out, r.header_count as i64);
        out.extend_from_slice(r.headers_raw);
    }
    let len = out.len();
    out[POS_BATCH_LENGTH..POS_BATCH_LENGTH + 4]
        .copy_from_slice(&((len - LOG_OVERHEAD) as i32).to_be_bytes());
    out[POS_RECORD_COUNT..POS_RECORD_COUNT + 4].copy_from_slice(&(keep.len() as i32).to_be_bytes());
    // The kept records are written uncompressed, whatever the original batch used.
    let attributes = i16::from_be_bytes([out[POS_ATTRIBUTES], out[POS_ATTRIBUTES + 1]]) & !0x07;
    out[POS_ATTRIBUTES..POS_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = compute_crc(&out);
    out[POS_CRC..POS_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    out
}
