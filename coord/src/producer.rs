//! [`TransactionalProducer`]: writes to several partitions (and a group's offsets) atomically.
//!
//! `begin`, then `send_to`/`send` (partitions are added to the transaction on first use), then
//! optionally `send_offsets_to_transaction`, then `commit` or `abort`. Batches carry the
//! producer id, epoch and per-partition sequences, so they are idempotent too. A newer
//! instance with the same transactional id fences this one: its next call fails with
//! `ProducerFenced`.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use weir_log::batch::HEADER_LEN;
use weir_log::{
    AppendOutcome, AppendTicket, BatchBuilder, EncodedBatch, Log, Offset, PartitionId,
    ProducerFields, Record,
};

use crate::error::{CoordError, Result};
use crate::offsets::{OffsetStore, TopicPartition, OFFSETS_TOPIC};
use crate::txn::TransactionCoordinator;

/// A transactional producer.
#[derive(Debug)]
pub struct TransactionalProducer {
    coord: TransactionCoordinator,
    log: Log,
    id: String,
    producer_id: i64,
    epoch: i16,
    sequences: HashMap<TopicPartition, i32>,
    added: BTreeSet<TopicPartition>,
    in_flight: Vec<AppendTicket>,
    open: bool,
}

impl TransactionalProducer {
    /// Registers `transactional_id` (fencing any older instance) with a transaction timeout.
    pub fn new(
        coord: &TransactionCoordinator,
        transactional_id: &str,
        timeout: Duration,
    ) -> Result<TransactionalProducer> {
        let (producer_id, epoch) = coord.init_transactions(transactional_id, timeout)?;
        Ok(TransactionalProducer {
            coord: coord.clone(),
            log: coord.log().clone(),
            id: transactional_id.to_string(),
            producer_id,
            epoch,
            sequences: HashMap::new(),
            added: BTreeSet::new(),
            in_flight: Vec::new(),
            open: false,
        })
    }

    /// (producer id, epoch).
    pub fn identity(&self) -> (i64, i16) {
        (self.producer_id, self.epoch)
    }

    /// Starts a transaction.
    pub fn begin(&mut self) -> Result<()> {
        if self.open {
            return Err(CoordError::Invalid(
                "a transaction is already open; commit or abort it first".into(),
            ));
        }
        self.open = true;
        self.added.clear();
        Ok(())
    }

    fn require_open(&self) -> Result<()> {
        if !self.open {
            return Err(CoordError::Invalid(
                "no open transaction; call begin first".into(),
            ));
        }
        Ok(())
    }

    /// Adds partitions to the open transaction in one durable step (instead of one per
    /// partition on first use).
    pub fn add_partitions(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.require_open()?;
        let new: Vec<TopicPartition> = partitions
            .iter()
            .filter(|tp| !self.added.contains(*tp))
            .cloned()
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        self.coord
            .add_partitions(&self.id, self.producer_id, self.epoch, &new)?;
        self.added.extend(new);
        Ok(())
    }

    fn add(&mut self, tp: &TopicPartition) -> Result<()> {
        if !self.added.contains(tp) {
            self.coord.add_partitions(
                &self.id,
                self.producer_id,
                self.epoch,
                std::slice::from_ref(tp),
            )?;
            self.added.insert(tp.clone());
        }
        Ok(())
    }

    fn batch(&self, tp: &TopicPartition, records: &[Record]) -> Result<EncodedBatch> {
        let now = self.log.now();
        let seq = self.sequences.get(tp).copied().unwrap_or(0);
        let mut b = BatchBuilder::with_capacity(HEADER_LEN + 1024)
            .producer(ProducerFields {
                producer_id: self.producer_id,
                producer_epoch: self.epoch,
                base_sequence: seq,
            })
            .transactional(true);
        for r in records {
            b.push(r, now);
        }
        let max = self.log.topic_config(&tp.0)?.max_message_bytes;
        if b.size() > max {
            return Err(CoordError::Log(weir_log::LogError::RecordTooLarge {
                topic: tp.0.clone(),
                size: b.size(),
                max,
            }));
        }
        Ok(b.finish())
    }

    /// Queues records for a partition inside the transaction (one batch) and returns at once;
    /// `commit` waits for everything queued.
    pub fn submit(
        &mut self,
        topic: &str,
        partition: PartitionId,
        records: &[Record],
    ) -> Result<()> {
        self.require_open()?;
        let tp = (topic.to_string(), partition.0);
        self.add(&tp)?;
        let batch = self.batch(&tp, records)?;
        let n = batch.record_count() as i32;
        self.in_flight
            .push(self.log.submit_batch(topic, partition, batch)?);
        let seq = self.sequences.entry(tp).or_insert(0);
        *seq = seq.wrapping_add(n) & i32::MAX;
        Ok(())
    }

    /// Writes records to a partition inside the transaction and waits for the append.
    pub fn send_to(
        &mut self,
        topic: &str,
        partition: PartitionId,
        records: &[Record],
    ) -> Result<AppendOutcome> {
        self.require_open()?;
        let tp = (topic.to_string(), partition.0);
        self.add(&tp)?;
        let batch = self.batch(&tp, records)?;
        let n = batch.record_count() as i32;
        let ack = self.log.submit_batch(topic, partition, batch)?.wait()?;
        let seq = self.sequences.entry(tp).or_insert(0);
        *seq = seq.wrapping_add(n) & i32::MAX;
        Ok(ack)
    }

    /// One keyed record (murmur2 partitioner), inside the transaction.
    pub fn send(&mut self, topic: &str, key: &[u8], value: &[u8]) -> Result<AppendOutcome> {
        let p = self.log.partition_for(topic, key)?;
        self.send_to(topic, p, &[Record::keyed(key.to_vec(), value.to_vec())])
    }

    /// Commits a consumer group's offsets atomically with this transaction's outputs.
    pub fn send_offsets_to_transaction(
        &mut self,
        group: &str,
        offsets: &[(TopicPartition, Offset)],
    ) -> Result<()> {
        let with: Vec<(TopicPartition, Offset, String)> = offsets
            .iter()
            .map(|(tp, o)| (tp.clone(), *o, String::new()))
            .collect();
        self.send_offsets_with_metadata(group, &with)
    }

    /// [`TransactionalProducer::send_offsets_to_transaction`] with each offset's metadata
    /// (Kafka's TxnOffsetCommit carries it too): it is committed, and read back with the
    /// offset, only if the transaction commits.
    pub fn send_offsets_with_metadata(
        &mut self,
        group: &str,
        offsets: &[(TopicPartition, Offset, String)],
    ) -> Result<()> {
        self.require_open()?;
        let tp = (
            OFFSETS_TOPIC.to_string(),
            OffsetStore::partition_of(group).0,
        );
        let seq = self.sequences.get(&tp).copied().unwrap_or(0);
        let n =
            self.coord
                .send_offsets(&self.id, self.producer_id, self.epoch, seq, group, offsets)?;
        self.added.insert(tp.clone());
        let s = self.sequences.entry(tp).or_insert(0);
        *s = s.wrapping_add(n) & i32::MAX;
        Ok(())
    }

    /// Queues one batch built by `fill` (records pushed straight into the batch, for callers
    /// that produce at high rates) inside the transaction.
    pub fn submit_with(
        &mut self,
        topic: &str,
        partition: PartitionId,
        fill: impl FnOnce(&mut BatchBuilder),
    ) -> Result<u32> {
        self.require_open()?;
        let tp = (topic.to_string(), partition.0);
        self.add(&tp)?;
        let seq = self.sequences.get(&tp).copied().unwrap_or(0);
        let mut b = BatchBuilder::with_capacity(HEADER_LEN + 64 * 1024)
            .producer(ProducerFields {
                producer_id: self.producer_id,
                producer_epoch: self.epoch,
                base_sequence: seq,
            })
            .transactional(true);
        fill(&mut b);
        let batch = b.finish();
        let n = batch.record_count();
        self.in_flight
            .push(self.log.submit_batch(topic, partition, batch)?);
        let s = self.sequences.entry(tp).or_insert(0);
        *s = s.wrapping_add(n as i32) & i32::MAX;
        Ok(n)
    }

    /// Waits until everything queued in the transaction is acknowledged.
    pub fn flush(&mut self) -> Result<()> {
        self.settle()
    }

    fn settle(&mut self) -> Result<()> {
        for t in std::mem::take(&mut self.in_flight) {
            t.wait()?;
        }
        Ok(())
    }

    /// Commits: everything written in the transaction becomes visible to `read_committed`
    /// readers at once, on every partition.
    pub fn commit(&mut self) -> Result<()> {
        self.require_open()?;
        self.settle()?;
        self.coord
            .end_transaction(&self.id, self.producer_id, self.epoch, true)?;
        self.open = false;
        Ok(())
    }

    /// Aborts: nothing written in the transaction is ever seen by `read_committed` readers.
    pub fn abort(&mut self) -> Result<()> {
        self.require_open()?;
        let settled = self.settle();
        self.coord
            .end_transaction(&self.id, self.producer_id, self.epoch, false)?;
        self.open = false;
        settled
    }
}
