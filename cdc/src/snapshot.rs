//! Where a snapshot and the change stream meet. The replication slot is made before the
//! snapshot is taken, so every transaction that commits after the slot's start is in the
//! stream, and every one that committed before it is in the snapshot. A streamed transaction
//! whose effects the snapshot already sees — by PostgreSQL's own visibility rule on the
//! snapshot's `xmin:xmax:xip` — is skipped; any other is applied. So no change is lost or
//! applied twice between the two, without the replication protocol's exported snapshot.

use serde::{Deserialize, Serialize};

/// A transaction snapshot as `pg_current_snapshot()` gives it (64-bit transaction ids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Every transaction before it is finished (committed or aborted).
    pub xmin: u64,
    /// Every transaction from it on had not started.
    pub xmax: u64,
    /// Transactions in between that were still running.
    pub xip: Vec<u64>,
    /// The WAL insert position read after the snapshot: a transaction ending past it
    /// committed after the snapshot was taken.
    #[serde(default)]
    pub wal_end: u64,
}

impl Snapshot {
    /// Parses `xmin:xmax:xip,xip,…`.
    pub fn parse(s: &str) -> Option<Snapshot> {
        let mut parts = s.trim().splitn(3, ':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let xip = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<Vec<u64>>>()?,
        };
        Some(Snapshot {
            xmin,
            xmax,
            xip,
            wal_end: 0,
        })
    }

    /// Whether the snapshot already holds the effects of the transaction `xid` ending at WAL
    /// position `end`.
    pub fn holds(&self, xid: u32, end: u64) -> bool {
        end <= self.wal_end && self.sees(xid)
    }

    /// Whether the snapshot sees the effects of transaction `xid`, a 32-bit id as logical
    /// decoding reports it (widened with the epoch of `xmax`).
    pub fn sees(&self, xid: u32) -> bool {
        // The 64-bit id nearest to `xmax` with these low 32 bits.
        const WRAP: u64 = 1 << 32;
        let mut full = (self.xmax & !(WRAP - 1)) | u64::from(xid);
        if full > self.xmax.saturating_add(WRAP / 2) && full >= WRAP {
            full -= WRAP;
        } else if full.saturating_add(WRAP / 2) < self.xmax {
            full += WRAP;
        }
        full < self.xmin || (full < self.xmax && !self.xip.contains(&full))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_sees_what_finished_before_it_and_not_what_ran_during_it() {
        let s = Snapshot::parse("100:105:101,103").expect("parses");
        assert!(s.sees(99) && s.sees(100) && s.sees(102) && s.sees(104));
        assert!(!s.sees(101) && !s.sees(103) && !s.sees(105) && !s.sees(200));
        assert_eq!(Snapshot::parse("7:7:").map(|s| s.xip.len()), Some(0));
        // Across an epoch: the ids wrap, their widened values do not.
        let e = Snapshot::parse("4294967290:4294967300:").expect("parses");
        assert!(e.sees(4294967291) && e.sees(3) && !e.sees(4) && !e.sees(800_000_000));
        let later = Snapshot::parse("5000000000:5000000010:").expect("parses");
        assert!(!later.sees(800_000_000) && later.sees(705_032_700));
        // Only a transaction that ended before the snapshot's WAL position can be held.
        let mut h = Snapshot::parse("100:105:").expect("parses");
        h.wal_end = 1000;
        assert!(h.holds(99, 900) && !h.holds(99, 1001));
    }
}
