//! Moving messages out of a queue atomically: dead letters (a message delivered
//! `maxReceiveCount` times, or rejected) into the queue's dead-letter queue, and redrive
//! (SQS's StartMessageMoveTask) from a dead-letter queue back to where its messages came
//! from. Each move appends the messages to their new queue's topic and the journal record
//! that marks them done here in one log transaction, so after any crash a message is in
//! exactly one of the two queues.
//!
//! A dead letter keeps its key, body and headers and gains [`HEADER_DLQ_SOURCE_QUEUE`],
//! partition, offset, delivery count, last error and time; a redriven message loses them.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use weir_coord::TransactionalProducer;
use weir_log::{Header, PartitionId, Record, Timestamp};

use crate::catalog::QueueConfig;
use crate::error::{QueueError, Result};
use crate::journal;
use crate::partition::{Receipt, Verdict};
use crate::queue::{lock, Message, Part, Queue, HEADER_VISIBLE_AT};

/// Header: the queue a dead letter came from.
pub const HEADER_DLQ_SOURCE_QUEUE: &str = "weir.dlq.source-queue";
/// Header: its partition there.
pub const HEADER_DLQ_SOURCE_PARTITION: &str = "weir.dlq.source-partition";
/// Header: its offset there.
pub const HEADER_DLQ_SOURCE_OFFSET: &str = "weir.dlq.source-offset";
/// Header: how many times it was delivered there.
pub const HEADER_DLQ_DELIVERIES: &str = "weir.dlq.delivery-count";
/// Header: why it was given up on.
pub const HEADER_DLQ_ERROR: &str = "weir.dlq.error";
/// Header: when it was dead-lettered (epoch ms).
pub const HEADER_DLQ_TIME: &str = "weir.dlq.time";
/// How long a move's transaction may stay open before the coordinator aborts it.
const MOVE_TXN_TIMEOUT: Duration = Duration::from_secs(60);
/// Messages moved per transaction by a redrive.
pub const REDRIVE_BATCH: usize = 500;
/// How long a redrive locks the messages it is moving (released at once if the move fails).
const REDRIVE_LOCK_MS: i64 = 60_000;

/// A message on its way to another queue's topic.
#[derive(Debug)]
pub(crate) struct Move {
    topic: String,
    partition: u32,
    record: Record,
}

impl Move {
    /// `m`, given up on after `deliveries` deliveries, to `q`'s dead-letter queue.
    pub(crate) fn dead_letter(
        q: &Queue,
        config: &QueueConfig,
        m: Message,
        deliveries: u32,
        error: &str,
        now: i64,
    ) -> Result<Move> {
        let dlq = config
            .redrive
            .as_ref()
            .map(|r| r.dead_letter_queue.clone())
            .ok_or_else(|| {
                QueueError::InvalidSetting(format!("queue `{}` has no dead-letter queue", q.name))
            })?;
        let mut headers: Vec<Header> = m
            .headers
            .into_iter()
            .filter(|h| h.key != HEADER_VISIBLE_AT)
            .collect();
        let mut add = |k: &str, v: String| {
            headers.push(Header {
                key: k.into(),
                value: Some(Bytes::from(v)),
            })
        };
        add(HEADER_DLQ_SOURCE_QUEUE, q.name.clone());
        add(HEADER_DLQ_SOURCE_PARTITION, m.partition.to_string());
        add(HEADER_DLQ_SOURCE_OFFSET, m.offset.to_string());
        add(HEADER_DLQ_DELIVERIES, deliveries.to_string());
        add(HEADER_DLQ_ERROR, error.to_string());
        add(HEADER_DLQ_TIME, now.to_string());
        Move::to(q, &dlq, m.partition, m.key, m.body, headers, now)
    }

    fn to(
        q: &Queue,
        topic: &str,
        from_partition: u32,
        key: Option<Bytes>,
        body: Bytes,
        headers: Vec<Header>,
        now: i64,
    ) -> Result<Move> {
        let partition = match &key {
            Some(k) => q.log.partition_for(topic, k)?.0,
            None => from_partition % q.log.partition_count(topic)?,
        };
        Ok(Move {
            topic: topic.to_string(),
            partition,
            record: Record {
                key,
                value: Some(body),
                headers,
                timestamp: Some(Timestamp(now)),
            },
        })
    }
}

impl Queue {
    /// Writes `moves` and partition `p`'s journal in one transaction; on failure nothing of
    /// it happened and the partition is rebuilt from its journal before its next use.
    pub(crate) fn commit_moves(&self, p: u32, part: &mut Part, moves: Vec<Move>) -> Result<()> {
        let changes = part.share.take_journal();
        let mut mover = lock(&self.mover);
        let result = self.transact(&mut mover, p, &changes, moves);
        if result.is_err() {
            if let Some(producer) = mover.as_mut() {
                let _ = producer.abort();
            }
            // A fenced or confused producer is made anew next time.
            *mover = None;
            self.break_after_failure(part);
        }
        result
    }

    fn transact(
        &self,
        mover: &mut Option<TransactionalProducer>,
        p: u32,
        changes: &[crate::Change],
        moves: Vec<Move>,
    ) -> Result<()> {
        let producer = match mover {
            Some(producer) => producer,
            None => mover.insert(TransactionalProducer::new(
                &self.txns,
                &format!("weir-queue.{}", self.name),
                MOVE_TXN_TIMEOUT,
            )?),
        };
        producer.begin()?;
        let mut by_target: BTreeMap<(String, u32), Vec<Record>> = BTreeMap::new();
        for m in moves {
            by_target
                .entry((m.topic, m.partition))
                .or_default()
                .push(m.record);
        }
        for ((topic, partition), records) in &by_target {
            producer.submit(topic, PartitionId(*partition), records)?;
        }
        let journal = Record::value(journal::encode(changes));
        producer.submit(&self.state_topic, PartitionId(p), &[journal])?;
        producer.commit()?;
        Ok(())
    }

    /// Sends messages to the dead-letter queue at once, with `error` as their last error.
    /// One result per receipt, in order.
    pub fn reject(&self, receipts: &[Receipt], error: &str) -> Result<Vec<Result<()>>> {
        if self.config().redrive.is_none() {
            return Err(QueueError::InvalidSetting(format!(
                "queue `{}` has no dead-letter queue to reject to",
                self.name
            )));
        }
        let mut out: Vec<Result<()>> = Vec::with_capacity(receipts.len());
        let mut by_partition: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, r) in receipts.iter().enumerate() {
            by_partition.entry(r.partition).or_default().push(i);
            out.push(Ok(()));
        }
        for (p, indexes) in by_partition {
            let mut part = match self.partition(p) {
                Ok(part) => part,
                Err(QueueError::BadReceipt(_)) => {
                    for i in indexes {
                        out[i] = Err(QueueError::BadReceipt(receipts[i].to_string()));
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            if part.config.redrive.is_none() {
                // Reconfigured since the check above.
                return Err(QueueError::InvalidSetting(format!(
                    "queue `{}` has no dead-letter queue to reject to",
                    self.name
                )));
            }
            let now = self.now();
            let mut dead = Vec::new();
            for i in indexes {
                match part.share.reject(&receipts[i], now) {
                    Ok(Verdict::DeadLetter(d)) => dead.push(d),
                    Ok(_) => {}
                    Err(e) => out[i] = Err(e),
                }
            }
            if let Err(e) = self.dead_letters(p, &mut part, dead, error, now) {
                // The rejected messages were marked done but not moved: forget that.
                self.break_after_failure(&mut part);
                return Err(e);
            }
        }
        Ok(out)
    }

    /// Writes `dead` (marked done in the partition) to the dead-letter queue the partition's
    /// settings name, with the journal, in one transaction.
    fn dead_letters(
        &self,
        p: u32,
        part: &mut Part,
        dead: Vec<crate::Delivery>,
        error: &str,
        now: i64,
    ) -> Result<()> {
        let offsets: Vec<i64> = dead.iter().map(|d| d.offset).collect();
        let mut bodies = self.bodies_of(p, part, &offsets)?;
        let config = part.config.clone();
        let moves = dead
            .iter()
            .filter_map(|d| {
                let m = bodies.remove(&d.offset)?;
                Some(Move::dead_letter(
                    self,
                    &config,
                    m,
                    d.deliveries,
                    error,
                    now,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        self.commit_moves(p, part, moves)
    }

    /// Moves up to `max` messages of this queue (a dead-letter queue) back to the queue each
    /// came from, or all to `to`; each batch in one transaction with its acknowledgement
    /// here. Returns how many moved.
    pub fn redrive(&self, to: Option<&str>, max: u64) -> Result<u64> {
        let mut moved = 0u64;
        while moved < max {
            let want = (max - moved).min(REDRIVE_BATCH as u64) as usize;
            let (got, _) = self.try_receive(want, Some(REDRIVE_LOCK_MS))?;
            if got.is_empty() {
                break;
            }
            let receipts: Vec<Receipt> = got.iter().map(|r| r.receipt).collect();
            match self.move_back(got, to) {
                Ok(n) => moved += n,
                Err(e) => {
                    let _ = self.nack(&receipts, 0);
                    return Err(e);
                }
            }
        }
        Ok(moved)
    }

    fn move_back(&self, got: Vec<crate::Received>, to: Option<&str>) -> Result<u64> {
        let now = self.now();
        let mut by_partition: BTreeMap<u32, Vec<Move>> = BTreeMap::new();
        let mut receipts: BTreeMap<u32, Vec<Receipt>> = BTreeMap::new();
        for r in got {
            let m = r.message;
            let source = m
                .header(crate::HEADER_DLQ_SOURCE_QUEUE)
                .map(|s| String::from_utf8_lossy(s).into_owned());
            let Some(target) = to.map(str::to_string).or(source) else {
                return Err(QueueError::InvalidMessage(format!(
                    "message {}-{} names no source queue; redrive it to a queue by name",
                    m.partition, m.offset
                )));
            };
            if self.log.partition_count(&target).is_err() {
                return Err(QueueError::UnknownQueue(target));
            }
            let headers = m
                .headers
                .into_iter()
                .filter(|h| !h.key.starts_with("weir.dlq.") && h.key != HEADER_VISIBLE_AT)
                .collect();
            let mv = Move::to(self, &target, m.partition, m.key, m.body, headers, now)?;
            by_partition
                .entry(r.receipt.partition)
                .or_default()
                .push(mv);
            receipts
                .entry(r.receipt.partition)
                .or_default()
                .push(r.receipt);
        }
        let mut moved = 0;
        for (p, moves) in by_partition {
            let mut part = self.partition(p)?;
            let now = self.now();
            for r in &receipts[&p] {
                if let Err(e) = part.share.ack(r, now) {
                    self.break_after_failure(&mut part);
                    return Err(e);
                }
            }
            moved += moves.len() as u64;
            self.commit_moves(p, &mut part, moves)?;
        }
        Ok(moved)
    }
}
