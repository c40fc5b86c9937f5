//! Newtypes for the numbers that get mixed up: offsets, partition ids and timestamps.
//!
//! Invariant: an [`Offset`] is never negative once assigned by the log; `-1`-style sentinels
//! from the Kafka format never leave the codec as an `Offset`.

use std::fmt;

/// A record's position in its partition. Offsets only grow; compaction may leave gaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub i64);

impl Offset {
    /// The raw value, as stored in the Kafka format.
    pub fn value(self) -> i64 {
        self.0
    }
    /// The offset `n` records after this one.
    pub fn plus(self, n: i64) -> Offset {
        // Wrapping: offsets read from a corrupt file must not panic; checks catch the result.
        Offset(self.0.wrapping_add(n))
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A partition's index inside its topic, `0..partitions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PartitionId(pub u32);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Milliseconds since the Unix epoch (Kafka's timestamp unit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Kafka's "no timestamp" sentinel.
    pub const NONE: Timestamp = Timestamp(-1);
    /// Milliseconds since the epoch.
    pub fn millis(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
