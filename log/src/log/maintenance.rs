//! The log's maintenance: sealing active segments on request (`roll`), compaction,
//! retention and DeleteRecords on demand, and the background cleaner thread that runs
//! retention and compaction periodically. The cleaner works on sealed segments only, under
//! each partition's cleaner lock (see `cleaner.rs`); it holds only a weak reference to the
//! log, so dropping the last `Log` stops it at once.

use std::sync::{Arc, Weak};

use super::{Inner, Log};
use crate::cleaner::{self, CompactionStats};
use crate::error::{LogError, Result};
use crate::handles::AppendTicket;
use crate::topic::Topic;
use crate::types::{Offset, PartitionId};

impl Log {
    /// Seals the active segment of every partition of a topic that holds anything, so that
    /// the cleaner (compaction, retention) can reach every record written so far: they only
    /// ever work on sealed segments.
    pub fn roll(&self, topic: &str) -> Result<()> {
        let t = self.topic(topic)?;
        let tickets: Vec<AppendTicket> = (0..t.partitions.len() as u32)
            .map(|p| self.enqueue_blocking(&t, PartitionId(p), Vec::new(), true))
            .collect::<Result<_>>()?;
        for ticket in tickets {
            ticket.wait()?;
        }
        Ok(())
    }

    /// Runs compaction now on every partition of a topic.
    pub fn compact_topic(&self, topic: &str) -> Result<CompactionStats> {
        self.writable()?;
        let t = self.topic(topic)?;
        if !t.config.cleanup_compact {
            return Err(LogError::InvalidConfig {
                key: "cleanup.policy".into(),
                value: if t.config.cleanup_delete {
                    "delete".into()
                } else {
                    String::new()
                },
                reason: format!(
                    "topic `{topic}` is not compacted; create it with cleanup.policy=compact"
                ),
            });
        }
        let mut total = CompactionStats::default();
        for p in &t.partitions {
            let s = cleaner::compact(&p.shared)?;
            total.segments_in += s.segments_in;
            total.segments_out += s.segments_out;
            total.records_in += s.records_in;
            total.records_out += s.records_out;
            total.bytes_in += s.bytes_in;
            total.bytes_out += s.bytes_out;
        }
        Ok(total)
    }

    /// Makes every record below `before` (at most the end of the readable log) unreadable, like
    /// Kafka's DeleteRecords: the log start offset moves there (persisted), and whole segments
    /// below it are deleted. Returns the new log start offset.
    pub fn delete_records(
        &self,
        topic: &str,
        partition: PartitionId,
        before: Offset,
    ) -> Result<Offset> {
        self.writable()?;
        cleaner::delete_records_before(self.topic(topic)?.partition(partition)?, before)
    }

    /// Runs retention now on every partition; returns the number of segments deleted.
    pub fn run_retention(&self) -> Result<usize> {
        self.writable()?;
        let topics: Vec<Arc<Topic>> = self
            .inner
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut n = 0;
        for t in topics {
            for p in &t.partitions {
                n += cleaner::apply_retention(&p.shared)?;
            }
        }
        Ok(n)
    }

    pub(super) fn start_cleaner(&self) {
        let Some(interval) = self.inner.options.cleaner_interval else {
            return;
        };
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let stop_signal = self.inner.cleaner_stop.clone();
        let handle = std::thread::Builder::new()
            .name("weir-cleaner".into())
            .spawn(move || loop {
                {
                    // Sleep holding only the stop signal: dropping the last `Log` must shut
                    // the log down at once, not after this sleep.
                    let (stop, cv) = &*stop_signal;
                    let guard = stop.lock().unwrap_or_else(|e| e.into_inner());
                    let (guard, _) = cv
                        .wait_timeout_while(guard, interval, |stopped| !*stopped)
                        .unwrap_or_else(|e| e.into_inner());
                    if *guard {
                        return;
                    }
                }
                let Some(inner) = weak.upgrade() else { return };
                let log = Log { inner };
                if let Err(e) = log.run_retention() {
                    tracing::warn!(error = %e, "retention pass failed");
                }
                for name in log.list_topics() {
                    let compact = log
                        .topic_config(&name)
                        .map(|c| c.cleanup_compact)
                        .unwrap_or(false);
                    if compact {
                        if let Err(e) = log.compact_topic(&name) {
                            tracing::warn!(topic = %name, error = %e, "compaction pass failed");
                        }
                    }
                }
                // Dropping `log` here must not be the last reference while we hold the stop lock.
                drop(log);
            });
        match handle {
            Ok(h) => *self.inner.cleaner.lock().unwrap_or_else(|e| e.into_inner()) = Some(h),
            Err(e) => {
                tracing::error!(error = %e, "could not start the cleaner thread; retention and compaction run only on demand")
            }
        }
    }
}
