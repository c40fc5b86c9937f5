//! Consumer groups: assignment without overlap, failover on a dead member within the session
//! timeout, offsets that survive rebalances and restarts, stale generations refused, lag.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_coord::{Consumer, ConsumerConfig, CoordError, GroupCoordinator, OffsetReset};
use weir_log::{Log, LogOptions, Offset, PartitionId, Record};

fn open(dir: &std::path::Path) -> Log {
    Log::open_with(dir, LogOptions::without_cleaner()).expect("open log")
}

fn config(group: &str, client: &str) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(group);
    c.client_id = client.into();
    c.session_timeout = Duration::from_millis(600);
    c.heartbeat_interval = Duration::from_millis(50);
    c.rebalance_timeout = Duration::from_secs(5);
    c.auto_offset_reset = OffsetReset::Earliest;
    c.auto_commit_interval = None;
    c
}

fn produce(log: &Log, topic: &str, partitions: u32, per_partition: usize) {
    for p in 0..partitions {
        let recs: Vec<Record> = (0..per_partition)
            .map(|i| Record::value(format!("{p}-{i}")))
            .collect();
        log.append(topic, PartitionId(p), &recs).expect("append");
    }
}

/// (generation, member, assignment) as seen by each consumer after each poll.
type Seen = Arc<Mutex<Vec<(i32, String, Vec<(String, u32)>)>>>;

fn run_consumer(
    coord: GroupCoordinator,
    name: &str,
    stop: Arc<AtomicBool>,
    seen: Seen,
    abandon: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let name = name.to_string();
    std::thread::spawn(move || {
        let mut c = Consumer::new(&coord, config("g", &name));
        c.subscribe(&["t"]).expect("subscribe");
        while !stop.load(Ordering::Acquire) {
            if abandon.load(Ordering::Acquire) {
                c.abandon();
                return;
            }
            c.poll(Duration::from_millis(20)).expect("poll");
            let (id, generation) = c.membership();
            if let Some(id) = id {
                seen.lock().unwrap_or_else(|e| e.into_inner()).push((
                    generation,
                    id,
                    c.assignment().to_vec(),
                ));
            }
            let _ = c.commit();
        }
        c.close().expect("close");
    })
}

/// The latest assignment of every member per generation; panics if two members of one
/// generation own the same partition.
fn by_generation(seen: &Seen) -> BTreeMap<i32, HashMap<String, Vec<(String, u32)>>> {
    let mut out: BTreeMap<i32, HashMap<String, Vec<(String, u32)>>> = BTreeMap::new();
    for (g, m, a) in seen.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        out.entry(*g).or_default().insert(m.clone(), a.clone());
    }
    for (g, members) in &out {
        let mut owned: HashMap<&(String, u32), &String> = HashMap::new();
        for (m, tps) in members {
            for tp in tps {
                if let Some(other) = owned.insert(tp, m) {
                    panic!("generation {g}: {tp:?} owned by {m} and {other}");
                }
            }
        }
    }
    out
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn three_consumers_share_six_partitions_and_survive_a_dead_member() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    log.create_topic("t", 6, Default::default())?;
    produce(&log, "t", 6, 10);
    let coord = GroupCoordinator::start(&log)?;
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Seen = Arc::default();
    let flags: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::new(AtomicBool::new(false))).collect();
    let handles: Vec<_> = (0..3)
        .map(|i| {
            run_consumer(
                coord.clone(),
                &format!("c{i}"),
                stop.clone(),
                seen.clone(),
                flags[i].clone(),
            )
        })
        .collect();
    // All three end up in one generation with two partitions each.
    wait_for(
        "a stable generation of three",
        Duration::from_secs(10),
        || {
            by_generation(&seen)
                .values()
                .any(|m| m.len() == 3 && m.values().all(|a| a.len() == 2))
        },
    );
    // Everything gets consumed and committed.
    wait_for("all offsets committed", Duration::from_secs(10), || {
        let c = coord.committed("g");
        c.len() == 6 && c.values().all(|o| o.offset == Offset(10))
    });
    // c0 dies without leaving; after its session timeout the other two take over its partitions.
    let t0 = Instant::now();
    flags[0].store(true, Ordering::Release);
    wait_for(
        "a generation of two covering all six partitions",
        Duration::from_secs(10),
        || {
            by_generation(&seen)
                .values()
                .any(|m| m.len() == 2 && m.values().map(Vec::len).sum::<usize>() == 6)
        },
    );
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "failover took {:?}",
        t0.elapsed()
    );
    // The new owners start where the old one committed: new records only.
    produce(&log, "t", 6, 1);
    wait_for("the new records committed", Duration::from_secs(10), || {
        coord
            .committed("g")
            .values()
            .all(|o| o.offset == Offset(11))
    });
    stop.store(true, Ordering::Release);
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("consumer thread panicked"))?;
    }
    by_generation(&seen); // no partition owned twice within a generation, in any generation
    Ok(())
}

#[test]
fn stale_generations_and_unknown_members_are_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    log.create_topic("t", 2, Default::default())?;
    let coord = GroupCoordinator::start(&log)?;
    let mut a = Consumer::new(&coord, config("g", "a"));
    a.subscribe(&["t"])?;
    a.poll(Duration::from_millis(10))?;
    let (id, generation) = a.membership();
    let id = id.expect("joined");
    let e = coord
        .commit_offsets(
            "g",
            generation - 1,
            &id,
            &[(("t".into(), 0), Offset(1), String::new())],
        )
        .expect_err("stale");
    assert!(matches!(e, CoordError::IllegalGeneration { .. }), "{e}");
    let e = coord
        .commit_offsets(
            "g",
            generation,
            "nobody",
            &[(("t".into(), 0), Offset(1), String::new())],
        )
        .expect_err("unknown");
    assert!(matches!(e, CoordError::UnknownMember { .. }), "{e}");
    assert!(matches!(
        coord.delete_group("g"),
        Err(CoordError::GroupNotEmpty { .. })
    ));
    assert!(matches!(
        coord.reset_offsets("g", "t", "earliest"),
        Err(CoordError::GroupNotEmpty { .. })
    ));
    a.close()?;
    coord.reset_offsets("g", "t", "latest")?;
    coord.delete_group("g")?;
    assert!(coord.committed("g").is_empty());
    Ok(())
}

#[test]
fn offsets_and_lag_survive_a_restart_and_reset_policies_apply() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let log = open(dir.path());
        log.create_topic("t", 2, Default::default())?;
        produce(&log, "t", 2, 5);
        let coord = GroupCoordinator::start(&log)?;
        let mut c = Consumer::new(&coord, config("g", "a"));
        c.subscribe(&["t"])?;
        let mut got = 0;
        while got < 10 {
            got += c.poll(Duration::from_millis(50))?.len();
        }
        c.seek("t", 1, Offset(3))?;
        c.commit()?;
        c.close()?;
        let lag = coord.lag("g", &[])?;
        let by_p: HashMap<u32, i64> = lag.iter().map(|l| (l.partition, l.lag)).collect();
        assert_eq!(by_p, HashMap::from([(0, 0), (1, 2)]));
    }
    let log = open(dir.path());
    let coord = GroupCoordinator::start(&log)?;
    let committed = coord.committed("g");
    assert_eq!(
        committed[&("t".to_string(), 1)].offset,
        Offset(3),
        "committed offsets survive restart"
    );
    // Resuming the group reads exactly what was not committed.
    let mut c = Consumer::new(&coord, config("g", "b"));
    c.subscribe(&["t"])?;
    let recs = c.poll(Duration::from_secs(2))?;
    let vals: Vec<String> = recs
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(vals, vec!["1-3", "1-4"]);
    c.close()?;
    // auto.offset.reset=none fails clearly for a group without offsets; latest skips history.
    let mut cfg = config("fresh", "x");
    cfg.auto_offset_reset = OffsetReset::None;
    let mut c = Consumer::new(&coord, cfg);
    c.subscribe(&["t"])?;
    let e = c.poll(Duration::from_millis(10)).expect_err("no offset");
    assert!(matches!(e, CoordError::NoOffset { .. }), "{e}");
    drop(c);
    let mut cfg = config("late", "y");
    cfg.auto_offset_reset = OffsetReset::Latest;
    let mut c = Consumer::new(&coord, cfg);
    c.subscribe(&["t"])?;
    assert!(c.poll(Duration::from_millis(50))?.is_empty());
    log.append("t", PartitionId(0), &[Record::value("new")])?;
    let recs = c.poll(Duration::from_secs(2))?;
    assert_eq!(recs.len(), 1);
    // Pause stops fetching from a partition; resume brings it back.
    c.pause(&[("t".into(), 0)]);
    log.append("t", PartitionId(0), &[Record::value("while paused")])?;
    assert!(c.poll(Duration::from_millis(50))?.is_empty());
    c.resume(&[("t".into(), 0)]);
    assert_eq!(c.poll(Duration::from_secs(2))?.len(), 1);
    Ok(())
}
