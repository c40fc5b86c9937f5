//! The runtime around the DSL: metrics (per operator, per task, end to end), the pipeline as a
//! live member of its application's consumer group, and backpressure from a slow sink.

use std::sync::Arc;
use std::time::Duration;

use weir_coord::GroupState;
use weir_engine::{Guarantee, Json, Pipeline, Plan, RunOptions, TaskState, Utf8};
use weir_log::sim::{Faults, SimStorage};
use weir_log::{Log, LogOptions, Record, TopicConfig};

fn seed(log: &Log, topic: &str, n: u64) -> anyhow::Result<()> {
    let records: Vec<Record> = (0..n)
        .map(|i| Record::keyed(format!("k{}", i % 10), format!("{i}")))
        .collect();
    for chunk in records.chunks(1000) {
        for r in chunk {
            log.send(topic, r.key.as_deref(), r.value.as_deref())?;
        }
    }
    Ok(())
}

#[test]
fn metrics_count_every_operator_and_the_pipeline_is_a_group_member() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open_log(dir.path());
    log.create_topic("numbers", 2, Default::default())?;
    log.create_topic("even", 2, Default::default())?;
    log.create_topic("counts", 2, Default::default())?;
    seed(&log, "numbers", 200)?;
    let p = Pipeline::builder("metered");
    let numbers = p.stream::<String, String>("numbers", Utf8, Utf8);
    numbers
        .filter(|_, v| v.parse::<u64>().is_ok_and(|n| n % 2 == 0))
        .map_values(|v| v.len() as u64)
        .to_topic("even", Utf8, Json);
    numbers
        .group_by_key()
        .count()
        .to_topic("counts", Utf8, Json);
    let topology = p.build()?;
    assert_eq!(
        topology.shape().operators,
        [
            "stream(numbers)",
            "filter",
            "map_values",
            "to_topic(even)",
            "aggregate -> numbers-aggregate",
            "to_topic(counts)"
        ]
    );
    let (groups, txns) = weir_coord::start(&log)?;
    let mut opts = RunOptions::new(dir.path().join("state"));
    opts.commit_interval = Duration::from_millis(20);
    let running = topology.run(&log, &groups, &txns, opts)?;
    // While it runs, the pipeline is the one member of group `metered`, owning every input
    // partition.
    let d = groups.describe_group("metered")?;
    assert_eq!(d.state, GroupState::Stable);
    assert_eq!(d.members.len(), 1);
    let mut owned = weir_coord::decode_assignment(&d.members[0].assignment)?;
    owned.sort();
    assert_eq!(
        owned,
        [("numbers".to_string(), 0), ("numbers".to_string(), 1)]
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    // Every record committed: each has its end-to-end latency recorded at its commit.
    while running.metrics().end_to_end_ms.count < 200 {
        anyhow::ensure!(std::time::Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    let snapshot = running.metrics();
    running.stop()?;
    let op = |name: &str| {
        snapshot
            .operators
            .iter()
            .find(|o| o.name == name)
            .map(|o| (o.counters.records_in, o.counters.records_out))
    };
    assert_eq!(op("stream(numbers)"), Some((200, 200)));
    assert_eq!(op("filter"), Some((200, 100)));
    assert_eq!(op("map_values"), Some((100, 100)));
    assert_eq!(op("to_topic(even)"), Some((100, 100)));
    assert_eq!(op("aggregate -> numbers-aggregate"), Some((200, 200)));
    assert_eq!(snapshot.tasks.len(), 2);
    assert!(snapshot.tasks.iter().all(|t| t.state == TaskState::Running));
    assert!(snapshot.tasks.iter().all(|t| t.lag == 0 && t.commits >= 1));
    assert_eq!(
        snapshot.end_to_end_ms.count, 200,
        "one latency per committed input record"
    );
    assert!(snapshot.commit_us.count >= 2 && snapshot.commit_us.p50 > 0);
    // Stopped: the group is empty again, its offsets are what lag is measured against.
    let d = groups.describe_group("metered")?;
    assert_eq!(d.members.len(), 0);
    let lag = groups.lag("metered", &[])?;
    assert!(lag.iter().all(|l| l.lag == 0), "{lag:?}");
    Ok(())
}

#[test]
fn a_slow_sink_throttles_the_source_and_buffers_stay_bounded() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Every fsync takes 20 ms: the output topic (flush per batch) and the commit markers are
    // slow, the input (flush=os) is not.
    let sim = SimStorage::new();
    sim.inject(Faults {
        sync_delay: Some(Duration::from_millis(20)),
        ..Faults::default()
    });
    let log = Log::open_with(
        dir.path().join("log"),
        LogOptions {
            storage: Arc::new(sim),
            append_queue_bytes: 256 * 1024,
            ..LogOptions::without_cleaner()
        },
    )?;
    log.create_topic("fast", 1, TopicConfig::parse_pairs(&["flush=os"])?)?;
    log.create_topic("slow", 1, TopicConfig::parse_pairs(&["flush=batch"])?)?;
    let n = 30_000u64;
    let records: Vec<Record> = (0..n)
        .map(|i| Record::keyed(format!("k{}", i % 100), "x".repeat(100)))
        .collect();
    for chunk in records.chunks(5000) {
        log.append("fast", weir_log::PartitionId(0), chunk)?;
    }
    let p = Pipeline::builder("throttled");
    p.stream::<String, String>("fast", Utf8, Utf8)
        .map_values(|v| format!("{v}!"))
        .to_topic("slow", Utf8, Utf8);
    let (groups, txns) = weir_coord::start(&log)?;
    let mut opts = RunOptions::new(dir.path().join("state"));
    opts.commit_interval = Duration::from_millis(1000);
    opts.max_buffered_records = 2_000;
    opts.max_batch_records = 500;
    opts.guarantee = Guarantee::ExactlyOnce;
    let running = p.build()?.run(&log, &groups, &txns, opts)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let committed = groups
            .committed("throttled")
            .values()
            .map(|c| c.offset.0)
            .sum::<i64>();
        if committed >= n as i64 {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no progress: {:?}",
            running.metrics().tasks
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let s = running.metrics();
    running.stop()?;
    let t = &s.tasks[0];
    assert!(
        t.buffered_max <= 2_000 + 500,
        "buffered {} records, more than the bound plus one batch",
        t.buffered_max
    );
    assert!(
        t.commits >= n / 2_500,
        "{} commits: buffers full commit early, not once a second",
        t.commits
    );
    assert!(
        t.commit_us.p50 >= 20_000,
        "the sink is slow: commit p50 {} µs",
        t.commit_us.p50
    );
    let out = crate::common::committed_by_key(&log, "slow", |k, v| {
        (String::from_utf8_lossy(k).into_owned(), v.len())
    });
    assert_eq!(out.values().map(Vec::len).sum::<usize>(), n as usize);
    Ok(())
}

#[test]
fn a_task_restarts_after_a_transient_sink_error_and_stays_exact() -> anyhow::Result<()> {
    // The disk is full for one write somewhere in the task's start or its commits (the
    // changelog topic, the transaction state, an output batch, a changelog batch or a
    // marker): the task fails, backs off, starts again — aborting or finishing its open
    // transaction — and the output is still exactly one count per record. (Writes to the
    // offsets topic are spared: the group's membership is written there in the background,
    // at a moment the test does not control.)
    for nth_write in [1, 3, 6, 10] {
        let dir = tempfile::tempdir()?;
        let sim = SimStorage::new();
        let log = Log::open_with(
            dir.path().join("log"),
            LogOptions {
                storage: Arc::new(sim.clone()),
                ..LogOptions::without_cleaner()
            },
        )?;
        log.create_topic("events", 1, Default::default())?;
        log.create_topic("totals", 1, Default::default())?;
        // Enough input for many commits (each is several writes) after the fault is armed.
        let records: Vec<Record> = (0..20_000)
            .map(|i| Record::keyed(format!("k{}", i % 7), "e"))
            .collect();
        for chunk in records.chunks(5000) {
            log.append("events", weir_log::PartitionId(0), chunk)?;
        }
        let (groups, txns) = weir_coord::start(&log)?;
        let p = Pipeline::builder("retrying");
        p.stream::<String, String>("events", Utf8, Utf8)
            .group_by_key()
            .count()
            .to_topic("totals", Utf8, Json);
        let mut opts = RunOptions::new(dir.path().join("state"));
        opts.commit_interval = Duration::from_millis(10);
        opts.max_batch_records = 100;
        let running = p.build()?.run(&log, &groups, &txns, opts)?;
        // From here on, tasks are starting (changelog topic, producer id, RocksDB) or running.
        sim.inject(Faults {
            enospc_on_write: Some(nth_write),
            // The group's membership is persisted in the background (advisory, see the
            // coordinator): the fault is for a task's write, not for that one.
            spare_paths_containing: Some(weir_coord::offsets::OFFSETS_TOPIC.to_string()),
            ..Faults::default()
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while groups
            .committed("retrying")
            .values()
            .map(|c| c.offset.0)
            .sum::<i64>()
            < 20_000
        {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "write {nth_write}: no progress: {:?}",
                running.metrics()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let s = running.metrics();
        running.stop()?;
        assert_eq!(s.retries, 1, "write {nth_write}: one restart");
        let counts = crate::common::committed_by_key(&log, "totals", |k, v| {
            (
                String::from_utf8_lossy(k).into_owned(),
                serde_json::from_slice::<u64>(v).unwrap_or(0),
            )
        });
        for (k, c) in &counts {
            let want: Vec<u64> = (1..=c.len() as u64).collect();
            assert_eq!(c, &want, "write {nth_write}, key {k}");
        }
        assert_eq!(counts.values().map(Vec::len).sum::<usize>(), 20_000);
    }
    Ok(())
}
