//! Exactly-once tasks (C4, in process): a keyed count runs with commits at random points and is
//! crashed at random points — between commits (the open interval is lost) and inside a commit
//! after its decision (the commit is finished by the restart). The output equals a run without
//! failures: per key the counts are 1, 2, 3, … with no gap and no duplicate.

use std::collections::BTreeMap;
use std::time::Duration;

use weir_engine::{Guarantee, Processor, Result, Task, TaskConfig, TaskContext};
use weir_log::sim::SeededRng;
use weir_log::{Log, PartitionId, Record};

struct KeyedCount;

impl Processor for KeyedCount {
    fn process(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        for r in ctx.input() {
            let key = r.key.clone().unwrap_or_default();
            let store = ctx.store("counts")?;
            let n: u64 = store
                .get(&key)?
                .and_then(|v| String::from_utf8_lossy(&v).parse().ok())
                .unwrap_or(0)
                + 1;
            store.put(key.clone(), n.to_string());
            ctx.emit("counts-out", Record::keyed(key, n.to_string()))?;
        }
        Ok(())
    }
}

fn config(dir: &std::path::Path, partition: u32, guarantee: Guarantee) -> TaskConfig {
    let mut cfg = TaskConfig::new("counter", "in", partition, dir.join("state"));
    cfg.stores = vec![weir_engine::StoreSpec::key_value("counts", "test counts")];
    cfg.commit_interval = Duration::from_secs(3600); // commits are driven by the test
    cfg.guarantee = guarantee;
    cfg.max_batch_records = 17;
    cfg
}

fn outputs(log: &Log) -> BTreeMap<String, Vec<u64>> {
    crate::common::committed_by_key(log, "counts-out", |k, v| {
        (
            String::from_utf8_lossy(k).into_owned(),
            String::from_utf8_lossy(v).parse().expect("count"),
        )
    })
}

#[test]
fn exactly_once_keyed_count_survives_crashes_between_and_inside_commits() -> anyhow::Result<()> {
    let mut rng = SeededRng::from_env("exactly_once_keyed_count");
    let dir = tempfile::tempdir()?;
    let log = crate::common::open_log(dir.path());
    log.create_topic("in", 2, Default::default())?;
    log.create_topic("counts-out", 3, Default::default())?;
    let keys = 20;
    let total = 1500;
    for i in 0..total {
        log.send("in", Some(format!("k{}", i % keys).as_bytes()), Some(b"x"))?;
    }
    let (groups, txns) = weir_coord::start(&log)?;
    let mut processor = KeyedCount;
    for round in 0..12 {
        for p in 0..2 {
            let mut task = Task::start(
                &log,
                &groups,
                &txns,
                config(dir.path(), p, Guarantee::ExactlyOnce),
            )?;
            for _ in 0..(1 + rng.below(6)) {
                task.run_once(&mut processor)?;
                if rng.below(3) == 0 {
                    task.commit(&mut processor)?;
                }
            }
            match rng.below(3) {
                0 => {} // crash between commits: the open interval is lost
                1 => {
                    // crash inside a commit, after its decision and one marker
                    txns.inject_crash_after_markers(1);
                    let _ = task.commit(&mut processor);
                    txns.inject_crash_after_markers(usize::MAX);
                }
                _ => task.commit(&mut processor)?,
            }
            drop(task);
            let _ = round;
        }
    }
    // Finish without failures.
    for p in 0..2 {
        let mut task = Task::start(
            &log,
            &groups,
            &txns,
            config(dir.path(), p, Guarantee::ExactlyOnce),
        )?;
        while task.run_once(&mut processor)? > 0 {}
        task.commit(&mut processor)?;
    }
    let out = outputs(&log);
    assert_eq!(out.len(), keys as usize);
    for (k, counts) in &out {
        let want: Vec<u64> = (1..=(total / keys) as u64).collect();
        assert_eq!(
            counts, &want,
            "key {k}: counts must be 1..=n, contiguous, no duplicates"
        );
    }
    // The committed input offsets are the end of both partitions.
    let committed = groups.committed("counter");
    for p in 0..2 {
        assert_eq!(
            committed[&("in".to_string(), p)].offset,
            log.latest_offset("in", PartitionId(p))?
        );
    }
    Ok(())
}

#[test]
fn at_least_once_never_loses_but_may_repeat() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open_log(dir.path());
    log.create_topic("in", 1, Default::default())?;
    log.create_topic("counts-out", 1, Default::default())?;
    for i in 0..100 {
        log.send("in", Some(format!("k{}", i % 5).as_bytes()), Some(b"x"))?;
    }
    let (groups, txns) = weir_coord::start(&log)?;
    let mut processor = KeyedCount;
    for _ in 0..3 {
        let mut task = Task::start(
            &log,
            &groups,
            &txns,
            config(dir.path(), 0, Guarantee::AtLeastOnce),
        )?;
        task.run_once(&mut processor)?;
        task.commit(&mut processor)?;
        task.run_once(&mut processor)?; // lost interval: reprocessed after the restart
    }
    let mut task = Task::start(
        &log,
        &groups,
        &txns,
        config(dir.path(), 0, Guarantee::AtLeastOnce),
    )?;
    while task.run_once(&mut processor)? > 0 {}
    task.commit(&mut processor)?;
    let out = outputs(&log);
    for counts in out.values() {
        assert_eq!(counts.last(), Some(&20), "every input counted");
    }
    Ok(())
}

#[test]
fn a_second_instance_of_a_task_fences_the_first() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open_log(dir.path());
    log.create_topic("in", 1, Default::default())?;
    log.create_topic("counts-out", 1, Default::default())?;
    for i in 0..50 {
        log.send("in", Some(format!("k{}", i % 5).as_bytes()), Some(b"x"))?;
    }
    let (groups, txns) = weir_coord::start(&log)?;
    let mut processor = KeyedCount;
    let mut zombie = Task::start(
        &log,
        &groups,
        &txns,
        config(dir.path(), 0, Guarantee::ExactlyOnce),
    )?;
    zombie.run_once(&mut processor)?;
    // A second instance (on another machine: its own state directory) takes over.
    let mut live = Task::start(
        &log,
        &groups,
        &txns,
        config(&dir.path().join("elsewhere"), 0, Guarantee::ExactlyOnce),
    )?;
    let e = zombie
        .commit(&mut processor)
        .expect_err("the zombie is fenced");
    assert!(e.to_string().contains("fenced"), "{e}");
    assert!(
        zombie.run_once(&mut processor).is_err(),
        "a fenced task stops"
    );
    while live.run_once(&mut processor)? > 0 {}
    live.commit(&mut processor)?;
    let out = outputs(&log);
    for counts in out.values() {
        assert_eq!(
            counts,
            &(1..=10).collect::<Vec<u64>>(),
            "only the live instance's output counts"
        );
    }
    Ok(())
}

/// Fails every batch that holds a record with value `boom`, after emitting the batch's other
/// records (partial effects of a failed batch).
struct FailsOnBoom;

impl Processor for FailsOnBoom {
    fn process(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        for r in ctx.input() {
            if r.value.as_deref() == Some(b"boom") {
                return Err(weir_engine::EngineError::Internal("boom".into()));
            }
            ctx.emit("counts-out", Record::keyed("k", "partial"))?;
        }
        Ok(())
    }
}

#[test]
fn a_failed_batch_fails_the_task_and_nothing_of_its_interval_commits() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open_log(dir.path());
    log.create_topic("in", 1, Default::default())?;
    log.create_topic("counts-out", 1, Default::default())?;
    for v in ["a", "b", "boom", "c"] {
        log.send("in", Some(b"k"), Some(v.as_bytes()))?;
    }
    let (groups, txns) = weir_coord::start(&log)?;
    let mut task = Task::start(
        &log,
        &groups,
        &txns,
        config(dir.path(), 0, Guarantee::ExactlyOnce),
    )?;
    assert!(task.run_once(&mut FailsOnBoom).is_err());
    // The task refuses to go on (it would skip the batch) and to commit (partial effects).
    assert!(task.run_once(&mut FailsOnBoom).is_err());
    assert!(task.commit(&mut FailsOnBoom).is_err());
    drop(task);
    assert!(
        outputs_raw(&log).is_empty(),
        "nothing of the failed interval"
    );
    assert_eq!(
        task_position(&groups),
        Some(0),
        "only where the task started is committed, nothing of the failed interval"
    );
    Ok(())
}

fn outputs_raw(log: &Log) -> Vec<String> {
    crate::common::committed_by_key(log, "counts-out", |k, v| {
        (
            String::from_utf8_lossy(k).into_owned(),
            String::from_utf8_lossy(v).into_owned(),
        )
    })
    .into_values()
    .flatten()
    .collect()
}

fn task_position(groups: &weir_coord::GroupCoordinator) -> Option<i64> {
    groups
        .committed("counter")
        .get(&("in".to_string(), 0))
        .map(|c| c.offset.0)
}
