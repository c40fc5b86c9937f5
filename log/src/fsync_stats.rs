//! [`FsyncStats`]: how long the log's `fdatasync` calls take, in lock-free power-of-two
//! buckets (1 µs to about 17 s), shared by every partition of one log. The writers' syncer
//! threads record; `Log::fsync_latency` reads a consistent-enough copy for metrics (each
//! counter is exact; a snapshot taken during a sync may miss that one sync).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets: bucket i holds syncs of at most 2^i µs; the last one everything longer.
const BUCKETS: usize = 25;

/// The log's fsync latency counters.
#[derive(Debug)]
pub struct FsyncStats {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Default for FsyncStats {
    fn default() -> Self {
        FsyncStats {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// A copy of the counters, as a Prometheus histogram wants them.
#[derive(Debug, Clone, PartialEq)]
pub struct FsyncLatency {
    /// (upper bound in seconds, syncs at most that long): cumulative, ascending.
    pub buckets: Vec<(f64, u64)>,
    /// Syncs recorded.
    pub count: u64,
    /// Their total duration in seconds.
    pub sum_seconds: f64,
}

impl FsyncStats {
    /// Records one `fdatasync` that took `took`.
    pub(crate) fn record(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let bucket = (64 - (us - 1).leading_zeros() as usize).min(BUCKETS - 1);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> FsyncLatency {
        let mut running = 0;
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                running += b.load(Ordering::Relaxed);
                ((1u64 << i) as f64 / 1e6, running)
            })
            .collect();
        FsyncLatency {
            buckets,
            count: self.count.load(Ordering::Relaxed),
            sum_seconds: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_land_in_their_power_of_two_bucket() {
        let s = FsyncStats::default();
        s.record(Duration::from_micros(1));
        s.record(Duration::from_micros(3));
        s.record(Duration::from_millis(5));
        let snap = s.snapshot();
        assert_eq!(snap.count, 3);
        assert_eq!(snap.buckets[0], (1e-6, 1));
        assert_eq!(snap.buckets[2], (4e-6, 2));
        // 5 ms = 5000 µs falls in the 8192 µs bucket (2^13).
        assert_eq!(snap.buckets[12].1, 2);
        assert_eq!(snap.buckets[13].1, 3);
        assert_eq!(snap.buckets.last().map(|b| b.1), Some(3));
    }
}
