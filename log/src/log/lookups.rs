//! The log's offset lookups: a partition's earliest, latest and last stable offsets, the
//! first offset at or after a time (Kafka's ListOffsets), and the fsync latency counters.

use std::sync::atomic::Ordering;

use super::Log;
use crate::error::Result;
use crate::types::{Offset, PartitionId, Timestamp};

impl Log {
    /// The last stable offset: the end of what `ReadCommitted` readers may see.
    pub fn last_stable_offset(&self, topic: &str, partition: PartitionId) -> Result<Offset> {
        Ok(self
            .topic(topic)?
            .partition(partition)?
            .last_stable_offset())
    }

    /// First offset still in the partition.
    pub fn earliest_offset(&self, topic: &str, partition: PartitionId) -> Result<Offset> {
        Ok(Offset(
            self.topic(topic)?
                .partition(partition)?
                .log_start
                .load(Ordering::Acquire),
        ))
    }

    /// End of the readable partition (the next offset a reader waits for).
    pub fn latest_offset(&self, topic: &str, partition: PartitionId) -> Result<Offset> {
        Ok(Offset(
            self.topic(topic)?
                .partition(partition)?
                .high_watermark
                .load(Ordering::Acquire),
        ))
    }

    /// The first offset whose timestamp is >= `ts`; `None` if every record is older.
    pub fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: PartitionId,
        ts: Timestamp,
    ) -> Result<Option<Offset>> {
        self.topic(topic)?
            .partition(partition)?
            .offset_for_timestamp(ts)
    }

    /// How long the log's acknowledging `fdatasync` calls have taken so far.
    pub fn fsync_latency(&self) -> crate::fsync_stats::FsyncLatency {
        self.inner.fsync.snapshot()
    }
}
