//! Consuming a queue inside someone else's transaction: an engine task that reads a queue
//! receives from one partition ([`Queue::try_receive_partition`]) and commits its acks with
//! its outputs, state and offsets in one log transaction — exactly-once consumption, which
//! neither SQS nor Kafka's share groups offer.
//!
//! [`Queue::ack_in_transaction`] locks the partition, checks that every receipt still holds
//! its lock, applies the acks in memory and encodes them as one journal record, which the
//! caller writes with its transactional producer ([`TransactionalAck::write`]) before it
//! commits. The partition stays locked until the caller knows the outcome: nobody sees the
//! acks before they are decided, no lock of theirs can time out, and no snapshot can be cut
//! between the record and its transaction's marker. Told [`TransactionalAck::committed`], the
//! acks stand; dropped without it (aborted, failed, or the outcome unknown), the partition is
//! rebuilt from its state topic before its next use — read committed, once the transaction
//! is decided — so it holds the acks exactly when the transaction committed. Until then the
//! partition answers [`QueueError::Undecided`] (a receive across partitions skips it); the
//! rebuild first waits for a barrier record, so an ack record still in flight when the
//! partition broke is on the journal by then, and counts.

use std::sync::MutexGuard;

use weir_coord::TransactionalProducer;
use weir_log::{PartitionId, Record};

use crate::error::{QueueError, Result};
use crate::journal;
use crate::partition::Receipt;
use crate::pending::Pending;
use crate::queue::{Part, Queue, Received, LOCK_MIN_MS, RECEIVE_MAX};

impl Queue {
    /// Up to `max` messages of partition `p` only, without waiting; answered once their locks
    /// are durable. For a consumer that owns a partition, as an engine task does.
    pub fn try_receive_partition(
        &self,
        p: u32,
        max: usize,
        visibility_ms: Option<i64>,
    ) -> Result<Vec<Received>> {
        let visibility_ms = visibility_ms.map(|v| v.max(LOCK_MIN_MS));
        let (mut out, mut wake) = (Vec::new(), None);
        let ticket = self.receive_from(p, max.min(RECEIVE_MAX), visibility_ms, &mut out, &mut wake);
        Pending::new(self, out, vec![(p, ticket?)]).wait()
    }

    /// The state-topic partition that partition `p`'s acks go to (add it to the transaction
    /// before [`Queue::ack_in_transaction`], which locks `p`).
    pub fn state_partition(&self, p: u32) -> (String, u32) {
        (self.state_topic.clone(), p)
    }

    /// Acknowledges partition `p`'s `receipts` inside the caller's transaction: fails with
    /// [`QueueError::StaleReceipt`] (changing nothing) when a lock is no longer held, else
    /// returns the journal record to write, holding the partition until the outcome is known.
    pub fn ack_in_transaction(&self, p: u32, receipts: &[Receipt]) -> Result<TransactionalAck<'_>> {
        let part = self.partition(p)?;
        let now = self.now();
        if let Some(r) = receipts.iter().find(|r| !part.share.holds(r, now)) {
            return Err(QueueError::StaleReceipt(r.to_string()));
        }
        let mut ack = TransactionalAck {
            queue: self,
            partition: p,
            part,
            record: Record::default(),
            decided: false,
        };
        // From here on a failure leaves memory ahead of the log: the drop rebuilds it.
        for r in receipts {
            ack.part.share.ack(r, now)?;
            if !ack.part.share.tracks(r.offset) {
                ack.part.drop_body(r.offset);
            }
        }
        let changes = ack.part.share.take_journal();
        ack.record = Record::value(journal::encode(&changes));
        Ok(ack)
    }
}

/// Acks applied in memory, their journal record not yet decided: holds the partition.
#[derive(Debug)]
pub struct TransactionalAck<'q> {
    queue: &'q Queue,
    partition: u32,
    part: MutexGuard<'q, Part>,
    record: Record,
    decided: bool,
}

impl TransactionalAck<'_> {
    /// The state-topic partition the record goes to (add it to the transaction).
    pub fn partition(&self) -> (String, u32) {
        (self.queue.state_topic.clone(), self.partition)
    }

    /// Writes the journal record inside `producer`'s open transaction.
    pub fn write(&self, producer: &mut TransactionalProducer) -> Result<()> {
        producer.submit(
            &self.queue.state_topic,
            PartitionId(self.partition),
            std::slice::from_ref(&self.record),
        )?;
        Ok(())
    }

    /// The transaction committed: the acks stand, and the partition is free again.
    pub fn committed(mut self) {
        self.decided = true;
        let bytes = self.record.value.as_ref().map_or(0, |v| v.len() as u64);
        self.part.add_journal_bytes(bytes);
        self.queue.notify_settled();
    }
}

impl Drop for TransactionalAck<'_> {
    fn drop(&mut self) {
        if !self.decided {
            // Aborted, or the outcome is unknown: the state topic knows which.
            self.queue.break_after_failure(&mut self.part);
        }
    }
}
