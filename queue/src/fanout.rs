//! Fan-out: a queue's subscriptions to other topics. One forwarder thread per subscription
//! copies the records of the topic that pass its [`Filter`] into the queue's topic, exactly
//! once: the copies and the forwarder's position (the committed offsets of the consumer group
//! `weir-queue.QUEUE.TOPIC`, so `weir group describe` shows its lag) are written in one log
//! transaction. Copies keep key (a FIFO queue's group), body and headers, and add
//! [`HEADER_SOURCE_TOPIC`] / partition / offset.
//!
//! A forwarder that fails (the log full, say) starts again from its committed position after
//! [`FORWARD_RETRY`]; dropping it stops and joins its thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use weir_coord::{TransactionCoordinator, TransactionalProducer};
use weir_log::{Header, Isolation, Log, Offset, PartitionId, Record, Timestamp};

use crate::catalog::Subscription;
use crate::error::{QueueError, Result};
use crate::filter::Filter;

/// Header: the topic a forwarded record came from.
pub const HEADER_SOURCE_TOPIC: &str = "weir.source-topic";
/// Header: its partition there.
pub const HEADER_SOURCE_PARTITION: &str = "weir.source-partition";
/// Header: its offset there.
pub const HEADER_SOURCE_OFFSET: &str = "weir.source-offset";
/// Bytes read per partition per round.
const FORWARD_READ_BYTES: usize = 1 << 20;
/// How long a forwarder with nothing to copy waits for an append before looking again.
const FORWARD_IDLE_WAIT: Duration = Duration::from_millis(200);
/// How long a failed forwarder waits before starting again.
const FORWARD_RETRY: Duration = Duration::from_secs(1);
/// How long a forwarder's transaction may stay open.
const FORWARD_TXN_TIMEOUT: Duration = Duration::from_secs(60);

/// The consumer group holding a subscription's position.
pub fn subscription_group(queue: &str, topic: &str) -> String {
    format!("weir-queue.{queue}.{topic}")
}

/// A running forwarder; dropping it stops it.
#[derive(Debug)]
pub(crate) struct Forwarder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sets a new subscription's position: the topic's end (only what is published from now on),
/// or its start.
pub(crate) fn start_position(
    txns: &TransactionCoordinator,
    queue: &str,
    topic: &str,
    from_beginning: bool,
) -> Result<()> {
    let log = txns.log();
    let group = subscription_group(queue, topic);
    let mut offsets = Vec::new();
    for p in 0..log.partition_count(topic)? {
        let at = if from_beginning {
            log.earliest_offset(topic, PartitionId(p))?
        } else {
            log.last_stable_offset(topic, PartitionId(p))?
        };
        offsets.push(((topic.to_string(), p), at));
    }
    let mut producer =
        TransactionalProducer::new(txns, &format!("{group}.start"), FORWARD_TXN_TIMEOUT)?;
    producer.begin()?;
    producer.send_offsets_to_transaction(&group, &offsets)?;
    producer.commit()?;
    Ok(())
}

/// Starts copying `sub.topic` into `queue`'s topic.
pub(crate) fn start(
    txns: &TransactionCoordinator,
    queue: &str,
    sub: &Subscription,
) -> Result<Forwarder> {
    let filter = Filter::new(sub.key_pattern.as_deref(), sub.filter_policy.as_deref())?;
    let stop = Arc::new(AtomicBool::new(false));
    let job = Job {
        txns: txns.clone(),
        log: txns.log().clone(),
        queue: queue.to_string(),
        topic: sub.topic.clone(),
        filter,
        stop: stop.clone(),
    };
    let thread = std::thread::Builder::new()
        .name(format!("weir-fanout-{queue}"))
        .spawn(move || job.run())
        .map_err(|e| QueueError::InvalidSetting(format!("cannot start a forwarder: {e}")))?;
    Ok(Forwarder {
        stop,
        thread: Some(thread),
    })
}

struct Job {
    txns: TransactionCoordinator,
    log: Log,
    queue: String,
    topic: String,
    filter: Filter,
    stop: Arc<AtomicBool>,
}

impl Job {
    fn run(self) {
        while !self.stop.load(Ordering::Relaxed) {
            if let Err(e) = self.forward() {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                eprintln!(
                    "weir: queue {} cannot copy topic {}: {e}; retrying",
                    self.queue, self.topic
                );
                std::thread::sleep(FORWARD_RETRY);
            }
        }
    }

    /// Copies until stopped or failed.
    fn forward(&self) -> Result<()> {
        let group = subscription_group(&self.queue, &self.topic);
        let mut producer = TransactionalProducer::new(&self.txns, &group, FORWARD_TXN_TIMEOUT)?;
        let partitions = self.log.partition_count(&self.topic)?;
        let committed = self.txns.groups().committed(&group);
        let mut positions: Vec<Offset> = (0..partitions)
            .map(|p| {
                committed
                    .get(&(self.topic.clone(), p))
                    .map(|c| c.offset)
                    .unwrap_or(Offset(0))
            })
            .collect();
        let targets = self.log.partition_count(&self.queue)?;
        while !self.stop.load(Ordering::Relaxed) {
            let appended = self.log.listen(&self.topic)?;
            let mut copies: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
            let mut moved = Vec::new();
            for p in 0..partitions {
                let pid = PartitionId(p);
                let at = positions[p as usize].max(self.log.earliest_offset(&self.topic, pid)?);
                let fetch = self.log.read_isolated(
                    &self.topic,
                    pid,
                    at,
                    FORWARD_READ_BYTES,
                    Isolation::ReadCommitted,
                )?;
                let next = fetch.next_offset();
                if next <= at {
                    continue;
                }
                for r in fetch.records() {
                    let r = r.map_err(weir_log::LogError::from)?;
                    let header = |k: &str| {
                        r.headers()
                            .filter_map(|h| h.ok())
                            .find(|(name, _)| *name == k.as_bytes())
                            .and_then(|(_, v)| v)
                    };
                    if !self.filter.matches(r.key, header) {
                        continue;
                    }
                    let target = match r.key {
                        Some(k) => self.log.partition_for(&self.queue, k)?.0,
                        None => p % targets,
                    };
                    copies.entry(target).or_default().push(copy_of(
                        &self.topic,
                        p,
                        &r,
                        self.log.now(),
                    ));
                }
                moved.push(((self.topic.clone(), p), next));
                positions[p as usize] = next;
            }
            if moved.is_empty() {
                appended.wait_timeout(FORWARD_IDLE_WAIT);
                continue;
            }
            producer.begin()?;
            for (target, records) in &copies {
                producer.submit(&self.queue, PartitionId(*target), records)?;
            }
            producer.send_offsets_to_transaction(&group, &moved)?;
            producer.commit()?;
        }
        Ok(())
    }
}

fn copy_of(topic: &str, partition: u32, r: &weir_log::RecordView<'_>, now: Timestamp) -> Record {
    let mut rec = r.to_record();
    let mut add = |k: &str, v: String| {
        rec.headers.push(Header {
            key: k.into(),
            value: Some(Bytes::from(v)),
        })
    };
    add(HEADER_SOURCE_TOPIC, topic.to_string());
    add(HEADER_SOURCE_PARTITION, partition.to_string());
    add(HEADER_SOURCE_OFFSET, r.offset.0.to_string());
    rec.timestamp = Some(now);
    rec
}
