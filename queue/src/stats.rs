//! A queue's depth and health: visible, in flight and delayed messages (those not yet read
//! into a window count as visible), the oldest message's time, delivery counts — what
//! GetQueueAttributes, `weir queue describe` and `/metrics` show.

use std::collections::BTreeMap;

use weir_log::{Isolation, LogError, Offset, PartitionId};

use crate::error::Result;
use crate::queue::Queue;
use crate::receive::FILL_READ_BYTES_MIN;

/// A queue's depth and health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages deliverable now (including those not yet read into a window).
    pub visible: u64,
    /// Messages locked by a consumer.
    pub in_flight: u64,
    /// Messages waiting for their delay (or a nack's).
    pub delayed: u64,
    /// When the oldest message not yet done was sent (epoch ms).
    pub oldest_timestamp: Option<i64>,
    /// Tracked messages by how often they were delivered.
    pub delivery_counts: BTreeMap<u32, u64>,
}

impl Queue {
    /// Depth, locks, delays, the oldest message's time and delivery counts.
    pub fn stats(&self) -> Result<QueueStats> {
        let mut s = QueueStats::default();
        for p in 0..self.parts.len() as u32 {
            let mut part = self.partition(p)?;
            self.fill(p, &mut part)?;
            let now = self.now();
            let (visible, locked, delayed) = part.share.counts(now);
            let (next, _) = part.share.wants();
            let end = self.log.last_stable_offset(&self.name, PartitionId(p))?.0;
            // Not yet read into the window: visible, but for those the window tracks ahead
            // of its read position (restored from the journal), which it counted already.
            let unread = (end - next).max(0) as u64;
            s.visible += visible as u64 + unread.saturating_sub(part.share.ahead() as u64);
            s.in_flight += locked as u64;
            s.delayed += delayed as u64;
            for (n, count) in part.share.delivery_counts() {
                *s.delivery_counts.entry(n).or_insert(0) += count as u64;
            }
            let start = part.share.start();
            if start < end {
                let oldest = match part.bodies.get(&start) {
                    Some(m) => Some(m.timestamp),
                    None => self.timestamp_at(p, start)?,
                };
                if let Some(t) = oldest {
                    s.oldest_timestamp = Some(s.oldest_timestamp.map_or(t, |o| o.min(t)));
                }
            }
        }
        Ok(s)
    }

    /// The time of the message at `offset`, read from the topic (`None`: not readable).
    fn timestamp_at(&self, p: u32, offset: i64) -> Result<Option<i64>> {
        let fetch = self.log.read_isolated(
            &self.name,
            PartitionId(p),
            Offset(offset),
            FILL_READ_BYTES_MIN,
            Isolation::ReadCommitted,
        )?;
        let first = fetch.records().next().transpose().map_err(LogError::from)?;
        Ok(first.map(|r| r.timestamp.0))
    }
}
