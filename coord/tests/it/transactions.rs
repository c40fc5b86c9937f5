//! Transactions end to end: outputs on several partitions and a group's offsets commit or
//! abort together; a second instance fences the first; a crash between markers is finished on
//! restart on every partition; a transaction past its timeout is aborted.

use std::time::Duration;

use weir_coord::{CoordError, TransactionalProducer, TxnState};
use weir_log::{Isolation, Log, LogError, LogOptions, Offset, PartitionId, Record};

fn open(dir: &std::path::Path) -> Log {
    Log::open_with(dir, LogOptions::without_cleaner()).expect("open log")
}

fn committed_values(log: &Log, topic: &str) -> Vec<String> {
    let mut out = Vec::new();
    for p in 0..log.partition_count(topic).expect("topic") {
        log.for_each_record(
            topic,
            PartitionId(p),
            Offset(0),
            Isolation::ReadCommitted,
            |r| {
                out.push(String::from_utf8_lossy(r.value.unwrap_or_default()).into_owned());
                Ok::<(), LogError>(())
            },
        )
        .expect("read");
    }
    out.sort();
    out
}

fn is_fenced(e: &CoordError) -> bool {
    matches!(e, CoordError::Log(LogError::ProducerFenced { .. }))
}

/// Writes `v0..v2` to partitions 0..2 of `out` in a transaction of `app` whose commit stops
/// after its decision and one marker (as a process killed between markers would).
fn commit_stopped_after_one_marker(
    txns: &weir_coord::TransactionCoordinator,
) -> anyhow::Result<()> {
    let mut p = TransactionalProducer::new(txns, "app", Duration::from_secs(60))?;
    p.begin()?;
    for i in 0..3 {
        p.send_to("out", PartitionId(i), &[Record::value(format!("v{i}"))])?;
    }
    txns.inject_crash_after_markers(1);
    assert!(p.commit().is_err(), "the commit stopped after one marker");
    Ok(())
}

#[test]
fn outputs_and_offsets_commit_or_abort_together() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    log.create_topic("in", 1, Default::default())?;
    log.create_topic("out", 3, Default::default())?;
    let (groups, txns) = weir_coord::start(&log)?;
    let mut p = TransactionalProducer::new(&txns, "app-1", Duration::from_secs(60))?;
    p.begin()?;
    for i in 0..6 {
        p.send_to(
            "out",
            PartitionId(i % 3),
            &[Record::value(format!("aborted-{i}"))],
        )?;
    }
    p.send_offsets_to_transaction("app", &[(("in".into(), 0), Offset(3))])?;
    p.abort()?;
    assert!(committed_values(&log, "out").is_empty());
    assert!(
        groups.committed("app").is_empty(),
        "aborted offsets are not committed"
    );
    p.begin()?;
    for i in 0..6 {
        p.submit(
            "out",
            PartitionId(i % 3),
            &[Record::value(format!("ok-{i}"))],
        )?;
    }
    p.send_offsets_to_transaction("app", &[(("in".into(), 0), Offset(6))])?;
    // Nothing is visible to read_committed readers before the commit.
    assert!(committed_values(&log, "out").is_empty());
    p.commit()?;
    assert_eq!(committed_values(&log, "out").len(), 6);
    assert_eq!(
        groups.committed("app")[&("in".to_string(), 0)].offset,
        Offset(6)
    );
    // After a restart the committed offsets are read back (and the aborted ones are not).
    drop((groups, txns, p));
    drop(log);
    let log = open(dir.path());
    let (groups, _txns) = weir_coord::start(&log)?;
    assert_eq!(
        groups.committed("app")[&("in".to_string(), 0)].offset,
        Offset(6)
    );
    Ok(())
}

#[test]
fn offset_metadata_commits_with_the_transaction() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    log.create_topic("in", 1, Default::default())?;
    let (groups, txns) = weir_coord::start(&log)?;
    let mut p = TransactionalProducer::new(&txns, "app-1", Duration::from_secs(60))?;
    let tp = ("in".to_string(), 0);
    p.begin()?;
    p.send_offsets_with_metadata("app", &[(tp.clone(), Offset(4), "wm=10".into())])?;
    p.abort()?;
    p.begin()?;
    p.send_offsets_with_metadata("app", &[(tp.clone(), Offset(7), "wm=20".into())])?;
    p.commit()?;
    assert_eq!(groups.committed("app")[&tp].metadata, "wm=20");
    drop((groups, txns, p));
    drop(log);
    let log = open(dir.path());
    let (groups, _txns) = weir_coord::start(&log)?;
    let c = &groups.committed("app")[&tp];
    assert_eq!((c.offset, c.metadata.as_str()), (Offset(7), "wm=20"));
    Ok(())
}

#[test]
fn a_second_instance_fences_the_first() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    log.create_topic("out", 2, Default::default())?;
    let (_groups, txns) = weir_coord::start(&log)?;
    let mut first = TransactionalProducer::new(&txns, "app", Duration::from_secs(60))?;
    first.begin()?;
    first.send_to("out", PartitionId(0), &[Record::value("zombie-1")])?;
    let mut second = TransactionalProducer::new(&txns, "app", Duration::from_secs(60))?;
    assert!(second.identity().1 > first.identity().1);
    // The first's next write fails on a partition it used and on a new one, and so does commit.
    let e = first
        .send_to("out", PartitionId(0), &[Record::value("zombie-2")])
        .expect_err("fenced");
    assert!(is_fenced(&e), "{e}");
    let e = first
        .send_to("out", PartitionId(1), &[Record::value("zombie-3")])
        .expect_err("fenced");
    assert!(is_fenced(&e), "{e}");
    assert!(first.commit().is_err());
    second.begin()?;
    second.send_to("out", PartitionId(0), &[Record::value("live")])?;
    second.commit()?;
    assert_eq!(
        committed_values(&log, "out"),
        vec!["live"],
        "the zombie's open transaction was aborted"
    );
    Ok(())
}

#[test]
fn a_crash_between_markers_is_finished_on_restart_on_every_partition() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let log = open(dir.path());
        log.create_topic("out", 3, Default::default())?;
        let (_groups, txns) = weir_coord::start(&log)?;
        commit_stopped_after_one_marker(&txns)?;
        // Partition 0 is committed, partitions 1 and 2 are not yet.
        assert_eq!(committed_values(&log, "out"), vec!["v0"]);
    }
    let log = open(dir.path());
    let (_groups, txns) = weir_coord::start(&log)?;
    assert_eq!(
        committed_values(&log, "out"),
        vec!["v0", "v1", "v2"],
        "the decided commit was finished"
    );
    assert_eq!(
        txns.describe("app").map(|m| m.state),
        Some(TxnState::CompleteCommit)
    );
    // An undecided transaction is aborted on restart instead.
    let mut p = TransactionalProducer::new(&txns, "app", Duration::from_secs(60))?;
    p.begin()?;
    p.send_to("out", PartitionId(1), &[Record::value("never")])?;
    drop((p, txns, _groups));
    drop(log);
    let log = open(dir.path());
    let (_groups, txns) = weir_coord::start(&log)?;
    assert_eq!(committed_values(&log, "out"), vec!["v0", "v1", "v2"]);
    assert_eq!(
        log.last_stable_offset("out", PartitionId(1))?,
        log.latest_offset("out", PartitionId(1))?
    );
    assert_eq!(
        txns.describe("app").map(|m| m.state),
        Some(TxnState::CompleteAbort)
    );
    Ok(())
}

#[test]
fn a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    log.create_topic("out", 1, Default::default())?;
    let (_groups, txns) = weir_coord::start(&log)?;
    let mut p = TransactionalProducer::new(&txns, "slow", Duration::from_millis(200))?;
    p.begin()?;
    p.send_to("out", PartitionId(0), &[Record::value("late")])?;
    assert!(
        log.last_stable_offset("out", PartitionId(0))?
            < log.latest_offset("out", PartitionId(0))?
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        log.last_stable_offset("out", PartitionId(0))?,
        log.latest_offset("out", PartitionId(0))?
    );
    assert!(committed_values(&log, "out").is_empty());
    let e = p.commit().expect_err("fenced");
    assert!(is_fenced(&e), "{e}");
    Ok(())
}

#[test]
fn a_failed_reinit_keeps_the_decided_transaction_for_the_next_attempt() -> anyhow::Result<()> {
    // A commit stops after one marker (decided, unfinished). The next instance's
    // `init_transactions` hits a full disk while finishing it: the decision must survive that
    // failure, so that the attempt after finishes the commit on every partition.
    let dir = tempfile::tempdir()?;
    let sim = weir_log::sim::SimStorage::new();
    let log = Log::open_with(
        dir.path(),
        LogOptions {
            storage: std::sync::Arc::new(sim.clone()),
            ..LogOptions::without_cleaner()
        },
    )?;
    log.create_topic("out", 3, Default::default())?;
    let (_groups, txns) = weir_coord::start(&log)?;
    commit_stopped_after_one_marker(&txns)?;
    sim.inject(weir_log::sim::Faults {
        enospc_on_write: Some(1),
        sticky_enospc: true,
        ..Default::default()
    });
    let failed = TransactionalProducer::new(&txns, "app", Duration::from_secs(60));
    assert!(
        matches!(failed, Err(CoordError::Log(LogError::DiskFull { .. }))),
        "{failed:?}"
    );
    sim.inject(weir_log::sim::Faults::default());
    let _p = TransactionalProducer::new(&txns, "app", Duration::from_secs(60))?;
    assert_eq!(
        committed_values(&log, "out"),
        vec!["v0", "v1", "v2"],
        "the decided commit was finished by the next attempt"
    );
    for i in 0..3 {
        assert_eq!(
            log.last_stable_offset("out", PartitionId(i))?,
            log.latest_offset("out", PartitionId(i))?,
            "no transaction left open on partition {i}"
        );
    }
    Ok(())
}

#[test]
fn a_topic_deleted_after_a_transaction_does_not_block_its_id() -> anyhow::Result<()> {
    // The last transaction of an id wrote to a topic that is deleted afterwards (a pipeline's
    // changelog, say). Finishing that transaction again at the next start must skip the gone
    // topic, not fail the coordinator or the id forever.
    let dir = tempfile::tempdir()?;
    {
        let log = open(dir.path());
        log.create_topic("out", 1, Default::default())?;
        log.create_topic("gone", 1, Default::default())?;
        let (_groups, txns) = weir_coord::start(&log)?;
        let mut p = TransactionalProducer::new(&txns, "app", Duration::from_secs(60))?;
        p.begin()?;
        p.send_to("out", PartitionId(0), &[Record::value("kept")])?;
        p.send_to("gone", PartitionId(0), &[Record::value("deleted")])?;
        p.commit()?;
        drop((p, txns, _groups));
        log.delete_topic("gone")?;
    }
    let log = open(dir.path());
    let (_groups, txns) = weir_coord::start(&log)?;
    let mut p = TransactionalProducer::new(&txns, "app", Duration::from_secs(60))?;
    p.begin()?;
    p.send_to("out", PartitionId(0), &[Record::value("next")])?;
    p.commit()?;
    assert_eq!(committed_values(&log, "out"), vec!["kept", "next"]);
    Ok(())
}

#[test]
fn a_commit_retried_after_a_failure_between_markers_finishes_it() -> anyhow::Result<()> {
    // The log fails after one marker (the decision is durable): the producer's retry of the
    // same commit writes the rest; a request for the other outcome is refused.
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    log.create_topic("out", 3, Default::default())?;
    let (_groups, txns) = weir_coord::start(&log)?;
    commit_stopped_after_one_marker(&txns)?;
    txns.inject_crash_after_markers(usize::MAX);
    let meta = txns.describe("app").expect("registered");
    let abort = txns.end_transaction("app", meta.producer_id, meta.epoch, false);
    assert!(
        matches!(abort, Err(CoordError::InvalidTxnState { .. })),
        "{abort:?}"
    );
    txns.end_transaction("app", meta.producer_id, meta.epoch, true)?;
    assert_eq!(committed_values(&log, "out"), vec!["v0", "v1", "v2"]);
    assert_eq!(
        txns.describe("app").map(|m| m.state),
        Some(TxnState::CompleteCommit)
    );
    // A second retry is answered by the completed state.
    txns.end_transaction("app", meta.producer_id, meta.epoch, true)?;
    let unknown = txns.end_transaction("nobody", 1, 0, true);
    assert!(
        matches!(unknown, Err(CoordError::UnknownTransactionalId(_))),
        "{unknown:?}"
    );
    Ok(())
}

#[test]
fn offsets_in_an_open_transaction_are_pending_until_it_ends() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    log.create_topic("in", 1, Default::default())?;
    let (groups, txns) = weir_coord::start(&log)?;
    let mut p = TransactionalProducer::new(&txns, "app", Duration::from_secs(60))?;
    p.begin()?;
    p.send_offsets_to_transaction("g", &[(("in".to_string(), 0), Offset(7))])?;
    let tp = ("in".to_string(), 0);
    assert!(txns.pending_offsets("g").contains(&tp));
    assert!(txns.pending_offsets("other").is_empty());
    p.commit()?;
    assert!(txns.pending_offsets("g").is_empty());
    assert_eq!(
        groups.committed("g").get(&tp).map(|c| c.offset),
        Some(Offset(7))
    );
    Ok(())
}
