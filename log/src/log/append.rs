//! The log's append path: records encoded into batches no larger than the topic allows,
//! caller-built batches checked against the topic (size; keys when compacted), and appends
//! queued to the partition's writer, waiting for room (bounded by `append_max_block`) or, for
//! callers that must not block a thread, handed back at once when the queue is full.
//!
//! Invariant: one append is queued whole or not at all; its ticket resolves when the flush
//! policy covers it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Log, APPEND_REQUEST_BYTES_MAX};
use crate::batch::{BatchBuilder, EncodedBatch, HEADER_LEN};
use crate::error::{LogError, Result};
use crate::handles::AppendTicket;
use crate::partitioner::partition_for_key;
use crate::queue::{AppendOutcome, AppendRequest, PushError};
use crate::record::Record;
use crate::topic::Topic;
use crate::types::{Offset, PartitionId};

impl Log {
    /// Encodes records into batches no larger than the topic's `max.message.bytes`.
    fn encode(&self, topic: &Topic, records: &[Record]) -> Result<Vec<EncodedBatch>> {
        let max = topic.config.max_message_bytes;
        let now = self.inner.options.clock.now();
        let mut out = Vec::new();
        let mut b = BatchBuilder::with_capacity(HEADER_LEN + records.len() * 64);
        for r in records {
            if topic.config.cleanup_compact && r.key.is_none() {
                return Err(LogError::MissingKey(topic.name.clone()));
            }
            let ts = r.timestamp.unwrap_or(now);
            let size = b.record_size(r.key.as_deref(), r.value.as_deref(), &r.headers, ts);
            if HEADER_LEN + size > max {
                return Err(LogError::RecordTooLarge {
                    topic: topic.name.clone(),
                    size: HEADER_LEN + size,
                    max,
                });
            }
            if b.count() > 0 && b.size() + size > max {
                out.push(
                    std::mem::replace(
                        &mut b,
                        BatchBuilder::with_capacity(HEADER_LEN + records.len() * 64),
                    )
                    .finish(),
                );
            }
            b.push(r, now);
        }
        if b.count() > 0 {
            out.push(b.finish());
        }
        Ok(out)
    }

    /// Queues batches for the partition's writer, waiting up to `max_block` for room; a queue
    /// still full after that gives the batches back. `roll_first` (with no batches) seals the
    /// active segment.
    fn enqueue(
        &self,
        topic: &Topic,
        partition: PartitionId,
        batches: Vec<EncodedBatch>,
        roll_first: bool,
        max_block: Duration,
    ) -> Result<Result<AppendTicket, (Vec<EncodedBatch>, LogError)>> {
        self.writable()?;
        let p = topic.partition(partition)?;
        if let Some(cause) = p.poison_cause() {
            return Err(p.poisoned_error(cause));
        }
        let (tx, rx) = oneshot::channel();
        if batches.is_empty() && !roll_first {
            let end = Offset(p.log_end.load(Ordering::Acquire));
            let _ = tx.send(Ok(AppendOutcome {
                partition,
                base_offset: end,
                last_offset: end.plus(-1),
                log_append_time: None,
            }));
            return Ok(Ok(AppendTicket { rx }));
        }
        let bytes: usize = batches.iter().map(EncodedBatch::len).sum();
        if bytes > APPEND_REQUEST_BYTES_MAX {
            return Err(LogError::RecordTooLarge {
                topic: topic.name.clone(),
                size: bytes,
                max: APPEND_REQUEST_BYTES_MAX,
            });
        }
        let req = AppendRequest {
            batches,
            bytes,
            ack: tx,
            roll_first,
        };
        match p.queue.push(req, max_block) {
            Ok(()) => Ok(Ok(AppendTicket { rx })),
            Err((_, PushError::Closed)) => Err(LogError::Closed),
            Err((req, PushError::Full(waited))) => Ok(Err((
                req.batches,
                LogError::QueueFull {
                    topic: topic.name.clone(),
                    partition,
                    waited_ms: waited.as_millis() as u64,
                },
            ))),
        }
    }

    /// [`Log::enqueue`] waiting the configured `append_max_block`; a full queue is an error.
    pub(super) fn enqueue_blocking(
        &self,
        topic: &Topic,
        partition: PartitionId,
        batches: Vec<EncodedBatch>,
        roll_first: bool,
    ) -> Result<AppendTicket> {
        let max_block = self.inner.options.append_max_block;
        self.enqueue(topic, partition, batches, roll_first, max_block)?
            .map_err(|(_, full)| full)
    }

    /// Queues records for a partition as one atomic append and returns at once; the ticket
    /// resolves when the flush policy is met. Lets one producer keep several appends in flight.
    pub fn submit(
        &self,
        topic: &str,
        partition: PartitionId,
        records: &[Record],
    ) -> Result<AppendTicket> {
        let t = self.topic(topic)?;
        t.partition(partition)?;
        let batches = self.encode(&t, records)?;
        self.enqueue_blocking(&t, partition, batches, false)
    }

    /// Queues a batch built by the caller (e.g. with [`BatchBuilder`] or from a Kafka client).
    pub fn submit_batch(
        &self,
        topic: &str,
        partition: PartitionId,
        batch: EncodedBatch,
    ) -> Result<AppendTicket> {
        let t = self.checked_batch(topic, &batch)?;
        self.enqueue_blocking(&t, partition, vec![batch], false)
    }

    /// [`Log::submit_batch`] for callers that must not block a thread (an async server): a
    /// full queue gives the batch back at once (`Ok(Err(batch))`) instead of waiting.
    pub fn try_submit_batch(
        &self,
        topic: &str,
        partition: PartitionId,
        batch: EncodedBatch,
    ) -> Result<Result<AppendTicket, EncodedBatch>> {
        let t = self.checked_batch(topic, &batch)?;
        Ok(self
            .enqueue(&t, partition, vec![batch], false, Duration::ZERO)?
            .map_err(|(mut batches, _)| batches.remove(0)))
    }

    /// The topic of a caller-built batch, once the batch fits it (size; keys when compacted).
    fn checked_batch(&self, topic: &str, batch: &EncodedBatch) -> Result<Arc<Topic>> {
        let t = self.topic(topic)?;
        if batch.len() > t.config.max_message_bytes {
            return Err(LogError::RecordTooLarge {
                topic: t.name.clone(),
                size: batch.len(),
                max: t.config.max_message_bytes,
            });
        }
        if t.config.cleanup_compact {
            let view = crate::batch::BatchView::parse(batch.as_bytes())?;
            for r in view.inflate()?.iter() {
                if r?.key.is_none() {
                    return Err(LogError::MissingKey(t.name.clone()));
                }
            }
        }
        Ok(t)
    }

    /// Appends records to a partition and waits for the acknowledgement; returns the offsets.
    pub fn append(
        &self,
        topic: &str,
        partition: PartitionId,
        records: &[Record],
    ) -> Result<AppendOutcome> {
        self.submit(topic, partition, records)?.wait()
    }

    /// Sends one record: a key picks its partition with murmur2 as Kafka does; keyless records
    /// go round-robin. Waits for the acknowledgement.
    pub fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<AppendOutcome> {
        let t = self.topic(topic)?;
        let n = t.partitions.len() as u32;
        let partition = match key {
            Some(k) => partition_for_key(k, n),
            None => {
                PartitionId((t.round_robin.fetch_add(1, Ordering::Relaxed) % u64::from(n)) as u32)
            }
        };
        let record = Record {
            key: key.map(bytes::Bytes::copy_from_slice),
            value: value.map(bytes::Bytes::copy_from_slice),
            ..Record::default()
        };
        let batches = self.encode(&t, std::slice::from_ref(&record))?;
        self.enqueue_blocking(&t, partition, batches, false)?.wait()
    }
}
