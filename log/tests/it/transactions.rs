//! Transactions at the partition level: transactional batches open a transaction, markers end
//! it, the last stable offset holds `read_committed` readers back while one is open, and
//! aborted records are never handed to them — also across restarts and power loss (C3).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use weir_log::sim::SimStorage;
use weir_log::{
    BatchBuilder, EncodedBatch, Isolation, Log, LogError, Offset, PartitionId, ProducerFields,
    Timestamp,
};

use crate::common::{cfg, opts_with, Rng};

const P: PartitionId = PartitionId(0);

fn txn_batch(pid: i64, epoch: i16, seq: i32, values: &[String]) -> EncodedBatch {
    let mut b = BatchBuilder::with_capacity(256)
        .producer(ProducerFields {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
        })
        .transactional(true);
    for v in values {
        b.push_parts(None, Some(v.as_bytes()), &[], Timestamp(1_700_000_000_000));
    }
    b.finish()
}

fn plain(v: &str) -> EncodedBatch {
    let mut b = BatchBuilder::with_capacity(64);
    b.push_parts(None, Some(v.as_bytes()), &[], Timestamp(1_700_000_000_000));
    b.finish()
}

/// Everything a reader at `isolation` sees, from offset 0 to the end it may read.
fn read(log: &Log, isolation: Isolation) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut at = Offset(0);
    loop {
        let f = log.read_isolated("t", P, at, 4096, isolation)?;
        if f.is_empty() {
            return Ok(out);
        }
        for r in f.records() {
            out.push(String::from_utf8_lossy(r?.value.unwrap_or_default()).into_owned());
        }
        at = f.next_offset();
    }
}

#[test]
fn read_committed_stops_at_open_transactions_and_drops_aborted_ones() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open(dir.path());
    log.create_topic("t", 1, Default::default())?;
    let s = |v: &str| vec![v.to_string()];
    log.submit_batch("t", P, plain("p0"))?.wait()?;
    log.submit_batch("t", P, txn_batch(1, 0, 0, &s("a0")))?
        .wait()?; // txn A opens at 1
    log.submit_batch("t", P, txn_batch(2, 0, 0, &s("b0")))?
        .wait()?; // txn B opens at 2
    log.submit_batch("t", P, plain("p1"))?.wait()?;
    assert_eq!(log.last_stable_offset("t", P)?, Offset(1));
    assert_eq!(read(&log, Isolation::ReadCommitted)?, vec!["p0"]);
    log.submit_batch("t", P, txn_batch(1, 0, 1, &s("a1")))?
        .wait()?;
    log.write_marker("t", P, 2, 0, false, 0)?; // B aborts
    assert_eq!(
        log.last_stable_offset("t", P)?,
        Offset(1),
        "A is still open"
    );
    log.write_marker("t", P, 1, 0, true, 0)?; // A commits
    let end = log.latest_offset("t", P)?;
    assert_eq!(log.last_stable_offset("t", P)?, end);
    assert_eq!(
        read(&log, Isolation::ReadCommitted)?,
        vec!["p0", "a0", "p1", "a1"]
    );
    assert_eq!(
        read(&log, Isolation::ReadUncommitted)?,
        vec!["p0", "a0", "b0", "p1", "a1"]
    );
    // A marker from an older epoch is fenced.
    log.submit_batch("t", P, txn_batch(1, 3, 0, &s("a-new-epoch")))?
        .wait()?;
    let e = log
        .write_marker("t", P, 1, 2, false, 0)
        .expect_err("zombie marker");
    assert!(matches!(e, LogError::ProducerFenced { .. }), "{e}");
    Ok(())
}

#[test]
fn open_and_aborted_transactions_survive_restart_and_power_loss() -> anyhow::Result<()> {
    let mut sim = SimStorage::new();
    let open =
        |sim: &SimStorage| Log::open_with("/x", opts_with(Arc::new(sim.clone()))).expect("open");
    let s = |v: &str| vec![v.to_string()];
    {
        let log = open(&sim);
        log.create_topic("t", 1, cfg(&["segment.bytes=1024"]))?;
        log.submit_batch("t", P, txn_batch(7, 0, 0, &s("aborted")))?
            .wait()?;
        log.write_marker("t", P, 7, 0, false, 0)?;
        for i in 0..20 {
            log.submit_batch("t", P, plain(&format!("{i:060}")))?
                .wait()?; // rolls segments
        }
        log.submit_batch("t", P, txn_batch(8, 0, 0, &s("open")))?
            .wait()?;
    }
    {
        let log = open(&sim); // clean restart: snapshot
        let lso = log.last_stable_offset("t", P)?;
        assert!(
            lso < log.latest_offset("t", P)?,
            "the open transaction still holds the LSO"
        );
        let seen = read(&log, Isolation::ReadCommitted)?;
        assert!(!seen.contains(&"aborted".to_string()) && !seen.contains(&"open".to_string()));
        assert_eq!(seen.len(), 20);
        log.submit_batch("t", P, txn_batch(9, 0, 0, &s("aborted-later")))?
            .wait()?;
        log.write_marker("t", P, 9, 0, false, 0)?;
        sim = sim.crash(0, false); // power loss: replay, no snapshot covers the last abort
    }
    let log = open(&sim);
    let seen = read(&log, Isolation::ReadCommitted)?;
    assert_eq!(
        seen.len(),
        20,
        "aborted and open records stay hidden after power loss"
    );
    log.write_marker("t", P, 8, 0, true, 0)?;
    let seen = read(&log, Isolation::ReadCommitted)?;
    assert_eq!(
        seen.last().map(String::as_str),
        Some("open"),
        "committed after restart"
    );
    assert_eq!(log.last_stable_offset("t", P)?, log.latest_offset("t", P)?);
    Ok(())
}

/// C3 against a model: random transactional and plain producers, commits, aborts, clean
/// restarts and power losses. A read_committed reader never sees a record of an aborted or
/// unfinished transaction, and sees every committed one in offset order.
#[test]
fn read_committed_matches_the_model_under_random_interleavings() -> anyhow::Result<()> {
    let mut rng = Rng::from_env("read_committed_model");
    let mut sim = SimStorage::new();
    let open =
        |sim: &SimStorage| Log::open_with("/c3", opts_with(Arc::new(sim.clone()))).expect("open");
    let mut log = open(&sim);
    log.create_topic("t", 1, cfg(&["segment.bytes=2048"]))?;
    // Per producer: next sequence, records of its open transaction.
    let mut seqs: BTreeMap<i64, i32> = BTreeMap::new();
    let mut open_txn: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let mut committed: Vec<String> = Vec::new(); // values a read_committed reader must see, in order
    let mut hidden: HashSet<String> = HashSet::new(); // values it must never see
    for step in 0..400 {
        let pid = 1 + rng.below(4) as i64;
        match rng.below(100) {
            0..=29 => {
                let v = format!("plain-{step}");
                log.submit_batch("t", P, plain(&v))?.wait()?;
                committed.push(v);
            }
            30..=69 => {
                let v = format!("txn{pid}-{step}");
                let seq = seqs.entry(pid).or_insert(0);
                log.submit_batch("t", P, txn_batch(pid, 0, *seq, std::slice::from_ref(&v)))?
                    .wait()?;
                *seq += 1;
                open_txn.entry(pid).or_default().push(v);
            }
            70..=84 => {
                if let Some(vals) = open_txn.remove(&pid) {
                    log.write_marker("t", P, pid, 0, true, 0)?;
                    committed.extend(vals);
                }
            }
            85..=94 => {
                if let Some(vals) = open_txn.remove(&pid) {
                    log.write_marker("t", P, pid, 0, false, 0)?;
                    hidden.extend(vals);
                }
            }
            95..=97 => {
                drop(log);
                log = open(&sim);
            }
            _ => {
                sim = sim.crash(rng.below(100) as usize, false);
                drop(log);
                log = open(&sim);
            }
        }
        let seen = read(&log, Isolation::ReadCommitted)?;
        for v in &seen {
            assert!(!hidden.contains(v), "step {step}: saw aborted {v}");
            assert!(
                !open_txn.values().any(|vals| vals.contains(v)),
                "step {step}: saw unfinished {v}"
            );
        }
        // Committed records are seen in order; the ones after the oldest open transaction's
        // start wait for it (the LSO), so `seen` is a prefix of a committed order.
        let committed_set: HashSet<&String> = committed.iter().collect();
        assert!(
            seen.iter().all(|v| committed_set.contains(v)),
            "step {step}"
        );
        if open_txn.is_empty() {
            let mut a = seen.clone();
            let mut b = committed.clone();
            a.sort();
            b.sort();
            assert_eq!(
                a, b,
                "step {step}: with no open transaction every committed record is visible"
            );
        }
    }
    Ok(())
}
