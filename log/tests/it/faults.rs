//! Simulated storage faults (reliability rows 2 and 5): power loss loses nothing acknowledged
//! under `flush=batch`; ENOSPC is a typed error with no ack and no corrupt tail; a failed fsync
//! poisons the partition until reopened.

use std::sync::Arc;

use weir_log::sim::{Faults, SimStorage};
use weir_log::{Log, LogError, Offset, PartitionId, Record};

use crate::common::{cfg, opts_with, values, Rng};

const DIR: &str = "/data";

fn open_sim(sim: &SimStorage) -> Log {
    Log::open_with(DIR, opts_with(Arc::new(sim.clone()))).expect("open sim log")
}

#[test]
fn power_loss_keeps_every_acknowledged_append() -> anyhow::Result<()> {
    let mut rng = Rng::from_env("power_loss_keeps_every_acknowledged_append");
    let mut sim = SimStorage::new();
    {
        let log = open_sim(&sim);
        log.create_topic("t", 2, cfg(&["segment.bytes=2048"]))?;
    }
    let mut acked: Vec<Vec<String>> = vec![Vec::new(), Vec::new()];
    for round in 0..8 {
        let log = open_sim(&sim);
        // Several producers at once; each records what was acknowledged.
        let mut handles = Vec::new();
        for producer in 0..4u32 {
            let log = log.clone();
            let n = 5 + rng.below(20);
            handles.push(std::thread::spawn(move || {
                let mut ok = Vec::new();
                for i in 0..n {
                    let v = format!("r{round}-p{producer}-{i}");
                    let p = PartitionId(producer % 2);
                    if log.append("t", p, &[Record::value(v.clone())]).is_ok() {
                        ok.push((p.0 as usize, v));
                    }
                }
                ok
            }));
        }
        for h in handles {
            for (p, v) in h.join().map_err(|_| anyhow::anyhow!("producer panicked"))? {
                acked[p].push(v);
            }
        }
        // Power loss with a torn prefix of whatever was not synced (nothing, under flush=batch).
        let keep = rng.below(200) as usize;
        sim = sim.crash(keep, rng.below(2) == 0);
        drop(log);
        let log = open_sim(&sim);
        for (p, want) in acked.iter().enumerate() {
            let got = values(&log, "t", p as u32);
            for v in want {
                assert!(
                    got.contains(v),
                    "round {round}: acknowledged {v} lost on partition {p}"
                );
            }
            assert_eq!(
                got.len(),
                want.len(),
                "no duplicates, nothing unacknowledged invented"
            );
        }
    }
    Ok(())
}

#[test]
fn unsynced_data_may_vanish_under_flush_os_but_the_log_stays_valid() -> anyhow::Result<()> {
    let sim = SimStorage::new();
    let log = open_sim(&sim);
    log.create_topic("t", 1, cfg(&["flush=os"]))?;
    for i in 0..10 {
        log.append("t", PartitionId(0), &[Record::value(format!("{i}"))])?;
    }
    let crashed = sim.crash(37, false);
    drop(log);
    let log = open_sim(&crashed);
    // Only a prefix can survive, and it is consistent; appends continue after it.
    let got = values(&log, "t", 0);
    assert!(got.len() < 10);
    let next = log.append("t", PartitionId(0), &[Record::value("after")])?;
    assert_eq!(next.base_offset, Offset(got.len() as i64));
    Ok(())
}

#[test]
fn enospc_is_typed_unacknowledged_and_leaves_no_corrupt_tail() -> anyhow::Result<()> {
    let sim = SimStorage::new();
    let log = open_sim(&sim);
    log.create_topic("t", 1, Default::default())?;
    for i in 0..5 {
        log.append("t", PartitionId(0), &[Record::value(format!("ok{i}"))])?;
    }
    for nth in 1..4 {
        sim.inject(Faults {
            enospc_on_write: Some(nth),
            partial_write_bytes: 17,
            ..Faults::default()
        });
        let mut failures = 0;
        for i in 0..nth {
            match log.append("t", PartitionId(0), &[Record::value(format!("x{nth}-{i}"))]) {
                Ok(_) => {}
                Err(LogError::DiskFull { .. }) => failures += 1,
                Err(e) => anyhow::bail!("expected DiskFull, got {e}"),
            }
        }
        assert_eq!(failures, 1);
        // Reads go on, and the failed record is not there.
        let got = values(&log, "t", 0);
        assert!(!got.contains(&format!("x{nth}-{}", nth - 1)));
    }
    // Space is back: appends continue at the next offset, and a reopen finds a clean log.
    let ack = log.append("t", PartitionId(0), &[Record::value("after")])?;
    let before = values(&log, "t", 0);
    drop(log);
    let log = open_sim(&sim);
    assert_eq!(values(&log, "t", 0), before);
    assert_eq!(ack.base_offset.0 as usize, before.len() - 1);
    Ok(())
}

#[test]
fn failed_fsync_poisons_until_reopened() -> anyhow::Result<()> {
    let sim = SimStorage::new();
    let log = open_sim(&sim);
    log.create_topic("t", 1, Default::default())?;
    log.append("t", PartitionId(0), &[Record::value("a")])?;
    sim.inject(Faults {
        eio_on_sync: Some(1),
        ..Faults::default()
    });
    let e = log
        .append("t", PartitionId(0), &[Record::value("b")])
        .expect_err("fsync fails");
    assert!(matches!(e, LogError::Poisoned { .. }), "{e}");
    let e = log
        .append("t", PartitionId(0), &[Record::value("c")])
        .expect_err("still poisoned");
    assert!(e.to_string().contains("reopen"), "{e}");
    // Reads go on; the failed append was never made visible.
    assert_eq!(values(&log, "t", 0), vec!["a"]);
    drop(log);
    let log = open_sim(&sim);
    log.append("t", PartitionId(0), &[Record::value("d")])?;
    let got = values(&log, "t", 0);
    assert_eq!(got.first().map(String::as_str), Some("a"));
    assert_eq!(got.last().map(String::as_str), Some("d"));
    Ok(())
}

#[test]
fn group_commit_shares_fsyncs_between_concurrent_producers() -> anyhow::Result<()> {
    let sim = SimStorage::new();
    let log = open_sim(&sim);
    log.create_topic("t", 1, Default::default())?;
    sim.inject(Faults {
        sync_delay: Some(std::time::Duration::from_millis(5)),
        ..Faults::default()
    });
    let (_, syncs_before) = sim.io_counts();
    let mut hs = Vec::new();
    for p in 0..8 {
        let log = log.clone();
        hs.push(std::thread::spawn(move || -> weir_log::Result<()> {
            for i in 0..25 {
                log.append("t", PartitionId(0), &[Record::value(format!("{p}-{i}"))])?;
            }
            Ok(())
        }));
    }
    for h in hs {
        h.join().map_err(|_| anyhow::anyhow!("panicked"))??;
    }
    let (_, syncs_after) = sim.io_counts();
    let syncs = syncs_after - syncs_before;
    assert_eq!(values(&log, "t", 0).len(), 200);
    assert!(
        syncs < 120,
        "200 appends from 8 producers took {syncs} fsyncs; group commit should share them"
    );
    Ok(())
}

#[test]
fn flush_ms_syncs_in_the_background_and_a_failed_sync_poisons() -> anyhow::Result<()> {
    let sim = SimStorage::new();
    let log = open_sim(&sim);
    log.create_topic("t", 1, cfg(&["flush.ms=20"]))?;
    let (_, before) = sim.io_counts();
    log.append("t", PartitionId(0), &[Record::value("a")])?;
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (_, after) = sim.io_counts();
    assert!(
        after > before,
        "the interval fsync ran without further appends"
    );
    // What was synced survives power loss.
    assert_eq!(values(&open_sim(&sim.crash(0, false)), "t", 0), vec!["a"]);
    sim.inject(Faults {
        eio_on_sync: Some(1),
        ..Faults::default()
    });
    log.append("t", PartitionId(0), &[Record::value("b")])?; // acknowledged after the write
    let mut poisoned = false;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        match log.append("t", PartitionId(0), &[Record::value("c")]) {
            Err(LogError::Poisoned { .. }) => {
                poisoned = true;
                break;
            }
            Ok(_) => {}
            Err(e) => anyhow::bail!("expected Poisoned, got {e}"),
        }
    }
    assert!(poisoned, "a failed background fsync poisons the partition");
    Ok(())
}
