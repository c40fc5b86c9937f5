//! A task's commit: the interval's outputs, changelog records, input offsets (with the
//! task's event time as their metadata) and queue inputs' acks, atomically under
//! exactly-once; then the stores' writes are applied to RocksDB and the plan's own internal
//! inputs are purged.
//!
//! A failed commit leaves its outcome unknown (it may have been decided), and a store that
//! could not apply a committed write no longer matches its changelog: either way the task is
//! marked failed and must be started again, which finishes or aborts the transaction,
//! restores the stores and resumes at the committed offsets.

use std::time::{Duration, Instant};

use weir_log::{Offset, PartitionId};

use crate::error::{EngineError, Result};
use crate::metrics::TaskState;
use crate::output::{in_batches, write_changelogs};
use crate::task::{Output, Task};

/// Committed records of an internal repartition topic that trigger a purge.
const PURGE_MIN_RECORDS: i64 = 1000;

/// How often a task sends its watermark downstream even when it did not change, so that
/// readers never take a live upstream task for a silent one (half the default idle timeout).
const WATERMARK_RESEND: Duration = Duration::from_secs(5);

/// How long an at-least-once offset commit waits out a rebalance of the application's group.
const REBALANCE_WAIT: Duration = Duration::from_secs(30);

impl Task {
    /// Commits the open interval (the processor flushed): outputs, changelogs and the input
    /// offsets, atomically under exactly-once. After a failure the task must be started again.
    pub(crate) fn commit_flushed(&mut self) -> Result<()> {
        if self.failed {
            return Err(EngineError::Internal(
                "this task failed a batch or a commit; start it again".into(),
            ));
        }
        self.interval_start = Instant::now();
        self.send_watermark()?;
        let moved = self.inputs.iter().any(|i| {
            i.position != i.committed || i.queue.as_ref().is_some_and(|q| !q.processed.is_empty())
        });
        // Time updates write state without input (closing windows, expiring keys): those
        // writes commit too.
        let state = self.stores.iter().any(|s| s.pending_len() > 0);
        if !moved && self.sinks.len == 0 && !state {
            return Ok(());
        }
        let started = Instant::now();
        let applied = self.try_commit().and_then(|last_changelog| {
            for (store, last) in self.stores.iter_mut().zip(last_changelog) {
                store.committed(last)?;
            }
            Ok(())
        });
        if let Err(e) = applied {
            self.failed = true;
            self.metrics.state = TaskState::Failed(e.to_string());
            self.publish();
            return Err(e);
        }
        for i in &mut self.inputs {
            i.committed = i.position;
            if let Some(q) = i.queue.as_mut() {
                q.processed.clear();
            }
        }
        self.metrics.record_commit(started.elapsed());
        let now = self.log.now().0;
        self.latency
            .drain_into(now, &mut self.metrics.end_to_end_ms);
        self.metrics.poison_records += std::mem::take(&mut self.interval_poisoned);
        self.publish();
        self.purge_internal_inputs();
        Ok(())
    }

    /// Sends this task's watermark (and whether all its inputs are idle) to every partition of
    /// the repartition topics it writes, when it changed or every `WATERMARK_RESEND`, so the
    /// tasks reading them advance too (see `time.rs`).
    fn send_watermark(&mut self) -> Result<()> {
        if self.cfg.internal_outputs.is_empty() {
            return Ok(());
        }
        let now = self.log.now();
        let wm = self.time.watermark().map_or(i64::MIN, |t| t.0);
        let idle = self.time.all_idle(now);
        // Without a watermark of its own a task says only that it is idle (MIN then means
        // "none"); a busy one without a watermark yet says nothing and holds readers back.
        let due = match self.watermark_sent {
            _ if wm == i64::MIN && !idle => false,
            None => true,
            Some((w, i, at)) => w != wm || i != idle || at.elapsed() >= WATERMARK_RESEND,
        };
        if !due {
            return Ok(());
        }
        let header = |k: &str, v: String| weir_log::Header {
            key: k.to_string(),
            value: Some(bytes::Bytes::from(v)),
        };
        for topic in &self.cfg.internal_outputs {
            for p in 0..self.log.partition_count(topic)? {
                let record = weir_log::Record {
                    headers: vec![
                        header(crate::time::WATERMARK_HEADER, wm.to_string()),
                        header(crate::time::WRITER_HEADER, self.cfg.partition.to_string()),
                        header(
                            crate::time::IDLE_HEADER,
                            if idle { "1" } else { "0" }.into(),
                        ),
                    ],
                    timestamp: Some(now),
                    ..Default::default()
                };
                self.sinks.emit_to(topic, p, record)?;
            }
        }
        self.watermark_sent = Some((wm, idle, Instant::now()));
        Ok(())
    }

    /// The plan's own internal inputs (repartition topics) are read by this application only:
    /// once their records are committed they are deleted (Kafka's DeleteRecords), in steps of
    /// at least `PURGE_MIN_RECORDS` so a purge costs little. Nothing else is ever purged.
    fn purge_internal_inputs(&self) {
        let p = PartitionId(self.cfg.partition);
        for input in self.inputs.iter().filter(|i| i.spec.internal) {
            let pos = input.committed;
            let start = self.log.earliest_offset(&input.topic, p).unwrap_or(pos);
            if pos.0 - start.0 < PURGE_MIN_RECORDS {
                continue;
            }
            if let Err(e) = self.log.delete_records(&input.topic, p, pos) {
                tracing::warn!(topic = %input.topic, partition = %p, error = %e, "purging a repartition topic failed");
            }
        }
    }

    /// The offsets to commit, each with the task's event time as metadata.
    fn offsets_to_commit(&self) -> Vec<((String, u32), Offset, String)> {
        self.inputs
            .iter()
            .enumerate()
            .map(|(n, i)| {
                (
                    (i.topic.to_string(), self.cfg.partition),
                    i.position,
                    self.time.metadata(n),
                )
            })
            .collect()
    }

    /// Writes the interval; returns, per store (in order), the offset of its last changelog
    /// record written (`None` when it wrote none).
    fn try_commit(&mut self) -> Result<Vec<Option<Offset>>> {
        let offsets = self.offsets_to_commit();
        let last_changelog;
        let outputs = self.sinks.take();
        let acks = self.queue_acks();
        match &mut self.output {
            Output::Transactional(p) => {
                let partition = self.cfg.partition;
                let stores = &mut self.stores;
                let log = &self.log;
                let app = &self.cfg.app;
                // Acks applied, their queue partitions locked until the outcome is known.
                let mut held = Vec::with_capacity(acks.len());
                let written = (|| -> Result<Vec<Option<Offset>>> {
                    p.begin()?;
                    // Every partition of this transaction, added in one durable step.
                    let mut all: Vec<(String, u32)> = outputs
                        .iter()
                        .map(|(t, p, _)| (t.to_string(), *p))
                        .collect();
                    for store in stores.iter_mut() {
                        if !store.stage().is_empty() {
                            let (t, p) = store.changelog();
                            all.push((t.to_string(), p.0));
                        }
                    }
                    let offsets_partition = weir_coord::offsets::OffsetStore::partition_of(app).0;
                    all.push((
                        weir_coord::offsets::OFFSETS_TOPIC.to_string(),
                        offsets_partition,
                    ));
                    all.extend(acks.iter().map(|(q, _)| q.state_partition(partition)));
                    p.add_partitions(&all)?;
                    for (topic, partition, records) in &outputs {
                        in_batches(log, topic, records, |chunk| {
                            Ok(p.submit(topic, PartitionId(*partition), chunk)?)
                        })?;
                    }
                    let last = write_changelogs(log, stores, |t, part, r| {
                        Ok(p.send_to(t, part, r)?.last_offset)
                    })?;
                    // Queue partitions are locked only for the end of the transaction, in
                    // the queues' order (another application may read the same queues).
                    for (queue, receipts) in &acks {
                        held.push(queue.ack_in_transaction(partition, receipts)?);
                        if let Some(ack) = held.last() {
                            ack.write(p)?;
                        }
                    }
                    p.send_offsets_with_metadata(app, &offsets)?;
                    p.commit()?;
                    Ok(last)
                })();
                match written {
                    Ok(last) => {
                        last_changelog = last;
                        held.into_iter()
                            .for_each(weir_queue::TransactionalAck::committed);
                    }
                    Err(e) => {
                        // Decide the transaction now when it is still open, so the queue
                        // partitions (rebuilt as `held` drops) need not wait for the
                        // coordinator's timeout to read past it; best effort: after a failed
                        // commit its outcome may already be fixed.
                        let _ = p.abort();
                        drop(held);
                        return Err(e);
                    }
                }
            }
            Output::Idempotent(p) => {
                for (topic, partition, records) in &outputs {
                    in_batches(&self.log, topic, records, |chunk| {
                        p.send_to(topic, PartitionId(*partition), chunk)?;
                        Ok(())
                    })?;
                }
                last_changelog = write_changelogs(&self.log, &mut self.stores, |t, part, r| {
                    Ok(p.send_to(t, part, r)?.last_offset)
                })?;
                self.commit_offsets_as_member(&offsets)?;
                // At least once: acked after the outputs, so a crash between repeats them.
                for (queue, receipts) in &acks {
                    for (receipt, r) in receipts.iter().zip(queue.ack(receipts)?) {
                        match r {
                            Ok(()) => {}
                            // Its lock ran out: it comes back and is processed again, which
                            // at-least-once allows; the task goes on.
                            Err(weir_queue::QueueError::StaleReceipt(_)) => {
                                tracing::warn!(queue = %queue.name(), %receipt,
                                    "a message's lock ran out before its ack; it will be processed again");
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            }
        }
        Ok(last_changelog)
    }

    /// The queue inputs' processed receipts, to ack with this commit, by queue name (the
    /// order their partitions are locked in).
    fn queue_acks(&self) -> Vec<(std::sync::Arc<weir_queue::Queue>, Vec<weir_queue::Receipt>)> {
        let mut acks: Vec<_> = self
            .inputs
            .iter()
            .filter_map(|i| i.queue.as_ref())
            .filter(|q| !q.processed.is_empty())
            .map(|q| (q.queue.clone(), q.processed.clone()))
            .collect();
        acks.sort_by(|a, b| a.0.name().cmp(b.0.name()));
        acks
    }

    /// At-least-once: outputs and changelog are written, only the offsets remain. A rebalance
    /// of the application's group (someone joined it) is waited out and the commit retried
    /// with the new generation, rather than failing the task — which would replay the interval
    /// into its state a second time.
    fn commit_offsets_as_member(&self, entries: &[((String, u32), Offset, String)]) -> Result<()> {
        let deadline = Instant::now() + REBALANCE_WAIT;
        loop {
            let (member, generation) = self
                .membership
                .as_ref()
                .and_then(|m| m.lock().unwrap_or_else(|e| e.into_inner()).clone())
                .unwrap_or_else(|| (String::new(), -1));
            match self
                .groups
                .commit_offsets(&self.cfg.app, generation, &member, entries)
            {
                Ok(()) => return Ok(()),
                Err(
                    weir_coord::CoordError::RebalanceInProgress(_)
                    | weir_coord::CoordError::IllegalGeneration { .. }
                    | weir_coord::CoordError::UnknownMember { .. },
                ) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
