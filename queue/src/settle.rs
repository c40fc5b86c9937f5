//! Settling deliveries: ack (delete), nack (release, now or after a delay), change
//! visibility, purge — each applied partition by partition under its lock, journaled, and
//! answered once the journal is durable. The `start_` forms return the [`Pending`] answer
//! for async callers; the plain forms wait.

use std::collections::BTreeMap;

use weir_log::PartitionId;

use crate::error::{QueueError, Result};
use crate::partition::{Receipt, SharePartition};
use crate::pending::Pending;
use crate::queue::Queue;

/// One result per receipt, in order.
pub type Settled = Vec<Result<()>>;

impl Queue {
    /// Acknowledges (deletes) messages; one result per receipt, in order.
    pub fn ack(&self, receipts: &[Receipt]) -> Result<Settled> {
        self.start_ack(receipts)?.wait()
    }

    /// [`Queue::ack`], answered once durable ([`Pending`]).
    pub fn start_ack(&self, receipts: &[Receipt]) -> Result<Pending<'_, Settled>> {
        self.start_settle(receipts, |share, r, now| share.ack(r, now).map(|_| ()))
    }

    /// Releases messages: visible again after `delay_ms`.
    pub fn nack(&self, receipts: &[Receipt], delay_ms: i64) -> Result<Settled> {
        self.start_nack(receipts, delay_ms)?.wait()
    }

    /// [`Queue::nack`], answered once durable ([`Pending`]).
    pub fn start_nack(&self, receipts: &[Receipt], delay_ms: i64) -> Result<Pending<'_, Settled>> {
        let pending = self.start_settle(receipts, |share, r, now| {
            share.nack(r, now, delay_ms).map(|_| ())
        })?;
        self.notify_settled();
        Ok(pending)
    }

    /// Moves locks' deadlines to now + `timeout_ms` (0 makes the messages visible at once).
    pub fn change_visibility(&self, receipts: &[Receipt], timeout_ms: i64) -> Result<Settled> {
        self.start_change_visibility(receipts, timeout_ms)?.wait()
    }

    /// [`Queue::change_visibility`], answered once durable ([`Pending`]).
    pub fn start_change_visibility(
        &self,
        receipts: &[Receipt],
        timeout_ms: i64,
    ) -> Result<Pending<'_, Settled>> {
        if !(0..=crate::catalog::VISIBILITY_MAX_MS).contains(&timeout_ms) {
            return Err(QueueError::InvalidSetting(format!(
                "visibility timeout {timeout_ms} ms"
            )));
        }
        let pending = self.start_settle(receipts, |share, r, now| {
            share.change_visibility(r, now, timeout_ms)
        })?;
        if timeout_ms == 0 {
            self.notify_settled();
        }
        Ok(pending)
    }

    /// Applies `op` to each receipt, partition by partition, and journals.
    fn start_settle(
        &self,
        receipts: &[Receipt],
        op: impl Fn(&mut SharePartition, &Receipt, i64) -> Result<()>,
    ) -> Result<Pending<'_, Settled>> {
        let mut out: Vec<Option<Result<()>>> = receipts.iter().map(|_| None).collect();
        let mut by_partition: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, r) in receipts.iter().enumerate() {
            by_partition.entry(r.partition).or_default().push(i);
        }
        let mut tickets = Vec::new();
        for (p, indexes) in by_partition {
            let mut part = match self.partition(p) {
                Ok(part) => part,
                Err(QueueError::BadReceipt(_)) => {
                    for i in indexes {
                        out[i] = Some(Err(QueueError::BadReceipt(receipts[i].to_string())));
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            let now = self.now();
            for i in indexes {
                let r = op(&mut part.share, &receipts[i], now);
                if r.is_ok() && !part.share.tracks(receipts[i].offset) {
                    part.drop_body(receipts[i].offset);
                }
                out[i] = Some(r);
            }
            let changes = part.share.take_journal();
            tickets.push((p, self.journal(p, &mut part, changes)?));
        }
        let out = out.into_iter().map(|r| r.unwrap_or(Ok(()))).collect();
        Ok(Pending::new(self, out, tickets))
    }

    /// Marks every message sent so far done (SQS's PurgeQueue); they stay in the topic for
    /// replay until retention deletes them.
    pub fn purge(&self) -> Result<()> {
        let mut tickets = Vec::new();
        for p in 0..self.config().partitions {
            let mut part = self.partition(p)?;
            let end = self.log.last_stable_offset(&self.name, PartitionId(p))?;
            part.share.skip_to(end.0);
            part.drop_bodies_below(end.0);
            let changes = part.share.take_journal();
            tickets.push((p, self.journal(p, &mut part, changes)?));
        }
        self.settle_tickets(tickets)
    }
}
