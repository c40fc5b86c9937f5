//! [`Producer`]: the embedded idempotent producer. Every batch carries the producer id, epoch
//! and per-partition sequence, so a retry after a lost acknowledgement or a transient error is
//! recognised by the partition and never appended twice.
//!
//! One `Producer` is used from one thread (`&mut self`); open several for parallel producers.
//! Sequences advance only when a batch is accepted into a partition's queue, and a batch is
//! retried with the same bytes (same sequences) until it is acknowledged or the error is fatal.

use std::collections::HashMap;
use std::time::Duration;

use crate::batch::{BatchBuilder, EncodedBatch, ProducerFields, HEADER_LEN};
use crate::error::{LogError, Result};
use crate::handles::AppendTicket;
use crate::log::Log;
use crate::queue::AppendOutcome;
use crate::record::Record;
use crate::types::PartitionId;

/// Options of a [`Producer`].
#[derive(Debug, Clone)]
pub struct ProducerOptions {
    /// Attempts after the first for transient errors (full queue, full disk).
    pub retries: u32,
    /// Pause before a retry, doubled each time.
    pub retry_backoff: Duration,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        ProducerOptions {
            retries: 5,
            retry_backoff: Duration::from_millis(100),
        }
    }
}

/// One queued batch of a [`Producer::submit`].
#[derive(Debug)]
pub struct Submitted {
    /// Resolves when the batch is acknowledged.
    pub ticket: AppendTicket,
    /// Sequence of its first record.
    pub first_sequence: i32,
    /// Number of records.
    pub records: u32,
}

/// An idempotent producer bound to a log.
#[derive(Debug)]
pub struct Producer {
    log: Log,
    producer_id: i64,
    epoch: i16,
    next_sequence: HashMap<(String, u32), i32>,
    options: ProducerOptions,
}

impl Producer {
    /// A producer with a fresh producer id.
    pub fn new(log: &Log) -> Result<Producer> {
        Producer::with_options(log, ProducerOptions::default())
    }

    /// A producer with a fresh producer id and explicit options.
    pub fn with_options(log: &Log, options: ProducerOptions) -> Result<Producer> {
        let (producer_id, epoch) = log.init_producer_id()?;
        Ok(Producer {
            log: log.clone(),
            producer_id,
            epoch,
            next_sequence: HashMap::new(),
            options,
        })
    }

    /// The producer id and epoch stamped on every batch.
    pub fn identity(&self) -> (i64, i16) {
        (self.producer_id, self.epoch)
    }

    /// Sends one record; a key picks the partition with Kafka's murmur2 partitioner, keyless
    /// records go to partition 0. Waits for the acknowledgement.
    pub fn send(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<AppendOutcome> {
        let partition = match key {
            Some(k) => self.log.partition_for(topic, k)?,
            None => PartitionId(0),
        };
        let record = Record {
            key: key.map(bytes::Bytes::copy_from_slice),
            value: value.map(bytes::Bytes::copy_from_slice),
            ..Record::default()
        };
        self.send_to(topic, partition, std::slice::from_ref(&record))
    }

    /// Sends records to one partition and waits for all of them; returns the offsets of the
    /// whole range (records beyond `max.message.bytes` go in several batches, in order).
    pub fn send_to(
        &mut self,
        topic: &str,
        partition: PartitionId,
        records: &[Record],
    ) -> Result<AppendOutcome> {
        let batches = self.encode(topic, partition, records)?;
        let mut first: Option<AppendOutcome> = None;
        let mut last = None;
        for batch in batches {
            let ack = self.append_with_retries(topic, partition, batch)?;
            first.get_or_insert(ack);
            last = Some(ack);
        }
        match (first, last) {
            (Some(f), Some(l)) => Ok(AppendOutcome {
                last_offset: l.last_offset,
                ..f
            }),
            _ => Err(LogError::Internal("send_to with no records".into())),
        }
    }

    /// Queues records for a partition and returns at once (pipelining): one append per batch
    /// under `max.message.bytes`, each with its sequences. Sequences are consumed when a batch
    /// is queued; if a ticket then fails, later batches to that partition fail with
    /// `OutOfOrderSequence`, and the producer should be recreated.
    pub fn submit(
        &mut self,
        topic: &str,
        partition: PartitionId,
        records: &[Record],
    ) -> Result<Vec<Submitted>> {
        let batches = self.encode(topic, partition, records)?;
        let mut out = Vec::with_capacity(batches.len());
        for batch in batches {
            let n = batch.record_count() as i32;
            let first_sequence = self.next_sequence(topic, partition);
            let ticket = self.log.submit_batch(topic, partition, batch)?;
            self.advance(topic, partition, n);
            out.push(Submitted {
                ticket,
                first_sequence,
                records: n as u32,
            });
        }
        Ok(out)
    }

    /// The next sequence for a partition.
    pub fn next_sequence(&self, topic: &str, partition: PartitionId) -> i32 {
        self.next_sequence
            .get(&(topic.to_string(), partition.0))
            .copied()
            .unwrap_or(0)
    }

    fn advance(&mut self, topic: &str, partition: PartitionId, n: i32) {
        let seq = self
            .next_sequence
            .entry((topic.to_string(), partition.0))
            .or_insert(0);
        *seq = seq.wrapping_add(n) & i32::MAX;
    }

    /// Encodes records into batches under `max.message.bytes`, numbering their sequences from
    /// the partition's next one (without consuming them).
    fn encode(
        &self,
        topic: &str,
        partition: PartitionId,
        records: &[Record],
    ) -> Result<Vec<EncodedBatch>> {
        let cfg = self.log.topic_config(topic)?;
        let now = self.log.now();
        let mut seq = self.next_sequence(topic, partition);
        let new_builder = |seq: i32| {
            BatchBuilder::with_capacity(HEADER_LEN + 1024).producer(ProducerFields {
                producer_id: self.producer_id,
                producer_epoch: self.epoch,
                base_sequence: seq,
            })
        };
        let mut out = Vec::new();
        let mut b = new_builder(seq);
        for r in records {
            let ts = r.timestamp.unwrap_or(now);
            let size = b.record_size(r.key.as_deref(), r.value.as_deref(), &r.headers, ts);
            if HEADER_LEN + size > cfg.max_message_bytes {
                return Err(LogError::RecordTooLarge {
                    topic: topic.to_string(),
                    size: HEADER_LEN + size,
                    max: cfg.max_message_bytes,
                });
            }
            if b.count() > 0 && b.size() + size > cfg.max_message_bytes {
                seq = seq.wrapping_add(b.count() as i32) & i32::MAX;
                out.push(std::mem::replace(&mut b, new_builder(seq)).finish());
            }
            b.push(r, now);
        }
        if b.count() > 0 {
            out.push(b.finish());
        }
        Ok(out)
    }

    fn append_with_retries(
        &mut self,
        topic: &str,
        partition: PartitionId,
        batch: EncodedBatch,
    ) -> Result<AppendOutcome> {
        let n = batch.record_count() as i32;
        let mut backoff = self.options.retry_backoff;
        let mut attempt = 0;
        loop {
            let result = self
                .log
                .submit_batch(topic, partition, batch.clone())
                .and_then(AppendTicket::wait);
            match result {
                Ok(ack) => {
                    self.advance(topic, partition, n);
                    return Ok(ack);
                }
                // Transient errors are retried with the same batch: the outcome was "not written"
                // or "unknown", and the partition's deduplication makes a retry safe either way.
                Err(e) if e.is_transient() && attempt < self.options.retries => {
                    attempt += 1;
                    tracing::debug!(topic, partition = %partition, attempt, error = %e, "retrying the same batch");
                    std::thread::sleep(backoff);
                    backoff = backoff.saturating_mul(2);
                }
                Err(e) => return Err(e),
            }
        }
    }
}
