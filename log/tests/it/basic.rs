//! Round trips, restart persistence, partitioning, read semantics, lookups and clear errors.

use std::time::{Duration, Instant};

use weir_log::{LogError, Offset, PartitionId, Record, Timestamp};

use crate::common::{cfg, open, read_all, values};

#[test]
fn round_trip_and_restart_persistence() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let log = open(dir.path());
        log.create_topic("t", 2, cfg(&["segment.bytes=2048"]))?;
        for i in 0..200 {
            let ack = log.append(
                "t",
                PartitionId(i % 2),
                &[Record::keyed(format!("k{i}"), format!("v{i}"))],
            )?;
            assert_eq!(ack.base_offset, Offset(i64::from(i / 2)));
        }
        let d = log.describe_topic("t")?;
        assert!(d.partitions[0].segments > 1, "small segments rolled");
        log.close();
    }
    let log = open(dir.path());
    assert_eq!(log.list_topics(), vec!["t".to_string()]);
    let p0 = values(&log, "t", 0);
    assert_eq!(p0.len(), 100);
    assert_eq!(p0[0], "v0");
    assert_eq!(p0[99], "v198");
    assert_eq!(log.latest_offset("t", PartitionId(1))?, Offset(100));
    // Appends continue at the next offset after restart.
    let ack = log.append("t", PartitionId(1), &[Record::value("after")])?;
    assert_eq!(ack.base_offset, Offset(100));
    assert_eq!(
        log.topic_config("t")?.segment_bytes,
        2048,
        "config survives restart"
    );
    Ok(())
}

#[test]
fn keyed_send_uses_kafkas_partitioner_and_keeps_per_key_order() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    log.create_topic("orders", 6, Default::default())?;
    for i in 0..60 {
        let key = format!("customer-{}", i % 5);
        let ack = log.send(
            "orders",
            Some(key.as_bytes()),
            Some(format!("{key}:{i}").as_bytes()),
        )?;
        assert_eq!(
            ack.partition,
            weir_log::partitioner::partition_for_key(key.as_bytes(), 6)
        );
    }
    for p in 0..6 {
        let mut last: std::collections::HashMap<String, i32> = Default::default();
        for v in values(&log, "orders", p) {
            let (k, n) = v.split_once(':').expect("k:n");
            let n: i32 = n.parse()?;
            let prev = last.insert(k.to_string(), n);
            assert!(prev.is_none_or(|p| p < n), "per-key order kept");
        }
    }
    // Keyless records spread over every partition.
    for _ in 0..12 {
        log.send("orders", None, Some(b"x"))?;
    }
    let total: usize = (0..6).map(|p| values(&log, "orders", p).len()).sum();
    assert_eq!(total, 72);
    Ok(())
}

#[test]
fn read_semantics_and_errors_name_the_thing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    log.create_topic("t", 1, Default::default())?;
    let recs: Vec<Record> = (0..10).map(|i| Record::value(format!("{i}"))).collect();
    log.append("t", PartitionId(0), &recs)?;
    // A read from the middle of a batch skips earlier records.
    let f = log.read("t", PartitionId(0), Offset(4), 1 << 20)?;
    let first = f.records().next().expect("record")?;
    assert_eq!(first.offset, Offset(4));
    assert_eq!(f.next_offset(), Offset(10));
    // At the end: empty, not an error.
    assert!(log
        .read("t", PartitionId(0), Offset(10), 1 << 20)?
        .is_empty());
    let e = log
        .read("t", PartitionId(0), Offset(11), 1 << 20)
        .expect_err("past end");
    assert!(matches!(e, LogError::OffsetOutOfRange { .. }), "{e}");
    assert!(e.to_string().contains("0..=10"), "{e}");
    let e = log
        .read("t", PartitionId(3), Offset(0), 10)
        .expect_err("partition");
    assert_eq!(
        e.to_string(),
        "topic `t` has 1 partitions; partition 3 does not exist"
    );
    let e = log
        .read("nope", PartitionId(0), Offset(0), 10)
        .expect_err("topic");
    assert_eq!(e.to_string(), "topic `nope` does not exist");
    assert!(matches!(
        log.create_topic("t", 1, Default::default()),
        Err(LogError::TopicExists(_))
    ));
    assert!(matches!(
        log.create_topic("bad/name", 1, Default::default()),
        Err(LogError::InvalidTopicName { .. })
    ));
    let e = log
        .create_topic("x", 1, cfg(&["retention.ms=abc"]))
        .expect_err("config");
    assert!(e.to_string().contains("retention.ms=abc"), "{e}");
    Ok(())
}

#[test]
fn long_poll_wakes_on_append_and_times_out_otherwise() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    log.create_topic("t", 1, Default::default())?;
    let t0 = Instant::now();
    let f = log.read_wait(
        "t",
        PartitionId(0),
        Offset(0),
        1024,
        Duration::from_millis(100),
    )?;
    assert!(f.is_empty());
    assert!(t0.elapsed() >= Duration::from_millis(100));
    let writer = log.clone();
    let h = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        writer.append("t", PartitionId(0), &[Record::value("hello")])
    });
    let f = log.read_wait(
        "t",
        PartitionId(0),
        Offset(0),
        1024,
        Duration::from_secs(20),
    )?;
    assert_eq!(f.records().count(), 1);
    h.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    Ok(())
}

#[test]
fn timestamp_lookup_and_log_append_time() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    log.create_topic(
        "t",
        1,
        cfg(&["segment.bytes=1024", "index.interval.bytes=100"]),
    )?;
    for i in 0..100i64 {
        log.append(
            "t",
            PartitionId(0),
            &[Record::value(format!("{i:040}")).at(Timestamp(10_000 + i * 10))],
        )?;
    }
    let p = PartitionId(0);
    assert_eq!(
        log.offset_for_timestamp("t", p, Timestamp(0))?,
        Some(Offset(0))
    );
    assert_eq!(
        log.offset_for_timestamp("t", p, Timestamp(10_500))?,
        Some(Offset(50))
    );
    assert_eq!(
        log.offset_for_timestamp("t", p, Timestamp(10_501))?,
        Some(Offset(51))
    );
    assert_eq!(log.offset_for_timestamp("t", p, Timestamp(99_999))?, None);

    log.create_topic("lat", 1, cfg(&["message.timestamp.type=LogAppendTime"]))?;
    let ack = log.append("lat", p, &[Record::value("x").at(Timestamp(5))])?;
    let stamped = ack.log_append_time.expect("log append time");
    let f = log.read("lat", p, Offset(0), 1024)?;
    let r = f.records().next().expect("record")?;
    assert_eq!(r.timestamp, stamped);
    assert!(stamped.0 > 1_600_000_000_000);
    Ok(())
}

#[test]
fn limits_and_policy_violations_are_typed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    log.create_topic("small", 1, cfg(&["max.message.bytes=200"]))?;
    let e = log
        .append("small", PartitionId(0), &[Record::value(vec![b'x'; 500])])
        .expect_err("too large");
    assert!(matches!(e, LogError::RecordTooLarge { .. }), "{e}");
    // Many small records are split into batches under the limit, appended atomically.
    let recs: Vec<Record> = (0..50).map(|i| Record::value(format!("{i:030}"))).collect();
    let ack = log.append("small", PartitionId(0), &recs)?;
    assert_eq!((ack.base_offset, ack.last_offset), (Offset(0), Offset(49)));
    assert_eq!(read_all(&log, "small", 0)?.len(), 50);

    log.create_topic("kv", 1, cfg(&["cleanup.policy=compact"]))?;
    let e = log
        .append("kv", PartitionId(0), &[Record::value("no key")])
        .expect_err("key needed");
    assert!(matches!(e, LogError::MissingKey(_)), "{e}");
    Ok(())
}

#[test]
fn delete_topic_removes_data_and_name_is_reusable() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    log.create_topic("t", 2, Default::default())?;
    log.append("t", PartitionId(1), &[Record::value("old")])?;
    log.delete_topic("t")?;
    assert!(log.list_topics().is_empty());
    assert!(!dir.path().join("topics/t").exists());
    log.create_topic("t", 1, Default::default())?;
    assert!(values(&log, "t", 0).is_empty());
    assert!(matches!(
        log.delete_topic("none"),
        Err(LogError::UnknownTopic(_))
    ));
    Ok(())
}

#[test]
fn second_process_cannot_open_the_same_directory() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let _log = open(dir.path());
    // A second open in this process holds another file description, so the lock refuses it.
    let e = weir_log::Log::open(dir.path()).expect_err("locked");
    assert!(matches!(e, LogError::Locked { .. }), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("(pid {})", std::process::id())),
        "{e}"
    );
    Ok(())
}

#[test]
fn queue_full_is_a_typed_error_after_max_block() -> anyhow::Result<()> {
    let sim = weir_log::sim::SimStorage::new();
    let opts = weir_log::LogOptions {
        storage: std::sync::Arc::new(sim.clone()),
        cleaner_interval: None,
        append_queue_bytes: 1,
        append_max_block: Duration::from_millis(50),
        ..Default::default()
    };
    let log = weir_log::Log::open_with("/q", opts)?;
    log.create_topic("t", 1, Default::default())?;
    // A slow disk: each fsync takes 300 ms. The writer runs a few groups ahead of the syncer,
    // then stalls, and the queue (capacity: one request) fills behind it.
    sim.inject(weir_log::sim::Faults {
        sync_delay: Some(Duration::from_millis(300)),
        ..Default::default()
    });
    let mut saw_full = false;
    let mut tickets = Vec::new();
    for _ in 0..50 {
        match log.submit("t", PartitionId(0), &[Record::value(vec![0u8; 1000])]) {
            Ok(t) => tickets.push(t),
            Err(LogError::QueueFull { waited_ms, .. }) => {
                assert!(waited_ms >= 50);
                saw_full = true;
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    for t in tickets {
        t.wait()?;
    }
    assert!(saw_full, "a 1-byte queue must push back");
    Ok(())
}

#[test]
fn try_submit_hands_the_batch_back_when_the_queue_is_full() -> anyhow::Result<()> {
    let sim = weir_log::sim::SimStorage::new();
    let opts = weir_log::LogOptions {
        storage: std::sync::Arc::new(sim.clone()),
        cleaner_interval: None,
        append_queue_bytes: 1,
        ..Default::default()
    };
    let log = weir_log::Log::open_with("/q", opts)?;
    log.create_topic("t", 1, Default::default())?;
    sim.inject(weir_log::sim::Faults {
        sync_delay: Some(Duration::from_millis(300)),
        ..Default::default()
    });
    let batch = |i: usize| {
        let mut b = weir_log::BatchBuilder::with_capacity(1100);
        b.push(&Record::value(vec![i as u8; 1000]), Timestamp(0));
        b.finish()
    };
    let mut tickets = Vec::new();
    let mut handed_back = None;
    for i in 0..50 {
        let started = Instant::now();
        match log.try_submit_batch("t", PartitionId(0), batch(i))? {
            Ok(t) => tickets.push(t),
            Err(back) => {
                assert!(
                    started.elapsed() < Duration::from_millis(250),
                    "it must not wait"
                );
                handed_back = Some(back);
                break;
            }
        }
    }
    let back = handed_back.expect("a 1-byte queue must push back");
    assert_eq!(back.record_count(), 1, "the batch comes back whole");
    for t in tickets.drain(..) {
        t.wait()?;
    }
    // Submitted again once there is room, it is appended after the others.
    let end = log.latest_offset("t", PartitionId(0))?;
    let outcome = log.submit_batch("t", PartitionId(0), back)?.wait()?;
    assert_eq!(outcome.base_offset, end);
    Ok(())
}

#[test]
fn dropping_the_log_shuts_it_down_at_once_even_with_the_cleaner_running() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = || weir_log::LogOptions {
        cleaner_interval: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let log = weir_log::Log::open_with(dir.path(), opts())?;
    log.create_topic("t", 1, Default::default())?;
    log.append("t", PartitionId(0), &[Record::value("a")])?;
    let t0 = Instant::now();
    drop(log);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "shutdown waited for the cleaner's sleep"
    );
    // The lock is released and the shutdown was clean.
    assert!(dir.path().join("topics/t/0/clean-shutdown").exists());
    let log = weir_log::Log::open_with(dir.path(), opts())?;
    assert_eq!(values(&log, "t", 0), vec!["a"]);
    Ok(())
}

#[test]
fn a_live_topic_changes_config_and_grows_without_losing_records() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open(dir.path());
    log.create_topic("grow", 2, Default::default())?;
    log.append(
        "grow",
        weir_log::PartitionId(1),
        &[weir_log::Record::value("before")],
    )?;
    log.alter_topic_config("grow", crate::common::cfg(&["retention.ms=60000"]))?;
    let described = log.describe_topic("grow")?;
    assert!(described
        .config
        .iter()
        .any(|(k, v, set)| k == "retention.ms" && v == "60000" && *set));
    assert!(log
        .alter_topic_config("grow", crate::common::cfg(&["segment.bytes=1"]))
        .is_err());
    log.create_partitions("grow", 5)?;
    assert_eq!(log.partition_count("grow")?, 5);
    assert!(
        log.create_partitions("grow", 3).is_err(),
        "partitions only grow"
    );
    log.append(
        "grow",
        weir_log::PartitionId(4),
        &[weir_log::Record::value("new")],
    )?;
    log.append(
        "grow",
        weir_log::PartitionId(1),
        &[weir_log::Record::value("after")],
    )?;
    drop(log);
    let log = crate::common::open(dir.path());
    assert_eq!(log.partition_count("grow")?, 5);
    assert_eq!(log.latest_offset("grow", weir_log::PartitionId(1))?.0, 2);
    assert_eq!(log.latest_offset("grow", weir_log::PartitionId(4))?.0, 1);
    assert!(log
        .describe_topic("grow")?
        .config
        .iter()
        .any(|(k, v, _)| k == "retention.ms" && v == "60000"));
    Ok(())
}
