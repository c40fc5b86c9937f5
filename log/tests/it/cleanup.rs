//! Retention and compaction semantics, including crash-safety of the compaction swap.

use std::collections::HashMap;
use std::sync::Arc;

use weir_log::{Log, LogError, LogOptions, ManualClock, Offset, PartitionId, Record, Timestamp};

use crate::common::{assert_rows_eq, cfg, read_all, Row};

const T0: i64 = 1_700_000_000_000;

fn open_clocked(dir: &std::path::Path, clock: Arc<ManualClock>) -> Log {
    Log::open_with(
        dir,
        LogOptions {
            clock,
            cleaner_interval: None,
            ..LogOptions::default()
        },
    )
    .expect("open")
}

#[test]
fn retention_by_time_and_size_drops_whole_closed_segments() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let log = open_clocked(dir.path(), clock.clone());
    log.create_topic("t", 1, cfg(&["segment.bytes=1024", "retention.ms=60000"]))?;
    let p = PartitionId(0);
    for i in 0..40 {
        log.append("t", p, &[Record::value(format!("{i:080}"))])?;
    }
    assert_eq!(log.run_retention()?, 0, "nothing expired yet");
    clock.advance(120_000);
    for i in 40..45 {
        log.append("t", p, &[Record::value(format!("{i:080}"))])?;
    }
    let deleted = log.run_retention()?;
    assert!(deleted > 0);
    let start = log.earliest_offset("t", p)?;
    assert!(start > Offset(0));
    let e = log
        .read("t", p, Offset(0), 1024)
        .expect_err("below log start");
    match e {
        LogError::OffsetOutOfRange { log_start, .. } => assert_eq!(log_start, start),
        other => anyhow::bail!("expected OffsetOutOfRange, got {other}"),
    }
    // The newest records are all still there, from the new start.
    let left = read_all(&log, "t", 0)?;
    assert_eq!(left.first().map(|r| r.0), Some(start.0));
    assert_eq!(left.last().map(|r| r.0), Some(44));

    log.create_topic(
        "sized",
        1,
        cfg(&["segment.bytes=1024", "retention.bytes=3000"]),
    )?;
    for i in 0..100 {
        log.append("sized", p, &[Record::value(format!("{i:080}"))])?;
    }
    log.run_retention()?;
    let info = log.describe_topic("sized")?.partitions[0].clone();
    assert!(
        info.bytes <= 3000 + 1024,
        "size retention kept {} bytes",
        info.bytes
    );
    assert_eq!(info.high_watermark, Offset(100));
    // Restart: the log start offset is where retention left it.
    drop(log);
    let log = open_clocked(dir.path(), clock);
    assert_eq!(log.earliest_offset("t", p)?, start);
    Ok(())
}

fn key_value(r: &Row) -> (String, Option<String>) {
    let k = String::from_utf8(r.1.clone().unwrap_or_default()).expect("utf8");
    (k, r.2.clone().map(|v| String::from_utf8(v).expect("utf8")))
}

#[test]
fn compaction_keeps_latest_per_key_with_original_offsets_and_expires_tombstones(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let log = open_clocked(dir.path(), clock.clone());
    log.create_topic(
        "kv",
        1,
        cfg(&[
            "cleanup.policy=compact",
            "segment.bytes=1024",
            "delete.retention.ms=1000",
        ]),
    )?;
    let p = PartitionId(0);
    let mut latest: HashMap<String, (i64, Option<String>)> = HashMap::new();
    for i in 0..300i64 {
        let key = format!("key-{}", i % 10);
        let rec = if i % 37 == 0 {
            Record::tombstone(key.clone())
        } else {
            Record::keyed(key.clone(), format!("v{i}"))
        };
        let ack = log.append("kv", p, std::slice::from_ref(&rec))?;
        latest.insert(
            key,
            (
                ack.base_offset.0,
                rec.value.map(|v| String::from_utf8_lossy(&v).into_owned()),
            ),
        );
    }
    let before = read_all(&log, "kv", 0)?;
    let stats = log.compact_topic("kv")?;
    assert!(stats.records_out < stats.records_in, "{stats:?}");
    let after = read_all(&log, "kv", 0)?;
    // Every surviving record is byte-identical at its original offset.
    let by_offset: HashMap<i64, _> = before.iter().map(|r| (r.0, r.clone())).collect();
    for r in &after {
        assert_eq!(Some(r), by_offset.get(&r.0), "offset {} changed", r.0);
    }
    assert!(
        after.windows(2).all(|w| w[0].0 < w[1].0),
        "offsets increase"
    );
    // Per key, the latest value is what a reader of the whole log ends with.
    let mut seen: HashMap<String, Option<String>> = HashMap::new();
    for r in &after {
        let (k, v) = key_value(r);
        seen.insert(k, v);
    }
    for (k, (_, v)) in &latest {
        assert_eq!(seen.get(k).cloned().flatten(), v.clone(), "key {k}");
    }
    // Sealed segments hold at most one record per key.
    let active_base = *after.iter().map(|r| &r.0).max().unwrap_or(&0);
    let _ = active_base;
    assert!(after.len() < before.len() / 3);
    // Tombstones survive until delete.retention.ms, then go.
    let tombstones = |rs: &[Row]| rs.iter().filter(|r| r.2.is_none()).count();
    let t_before = tombstones(&after);
    clock.advance(5_000);
    log.append("kv", p, &[Record::keyed("roll", vec![b'x'; 1000])])?;
    log.append("kv", p, &[Record::keyed("roll", "again")])?;
    log.compact_topic("kv")?;
    let final_ = read_all(&log, "kv", 0)?;
    assert!(tombstones(&final_) <= t_before);
    // Compacted state survives restart, and the segments were merged.
    drop(log);
    let log = open_clocked(dir.path(), clock);
    assert_rows_eq(&read_all(&log, "kv", 0)?, &final_, "after restart");
    let segs = log.describe_topic("kv")?.partitions[0].segments;
    assert!(segs < 10, "compaction merged small segments ({segs})");
    Ok(())
}

#[test]
fn min_compaction_lag_protects_recent_records() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let log = open_clocked(dir.path(), clock.clone());
    log.create_topic(
        "kv",
        1,
        cfg(&[
            "cleanup.policy=compact",
            "segment.bytes=1024",
            "min.compaction.lag.ms=60000",
        ]),
    )?;
    for i in 0..100 {
        log.append(
            "kv",
            PartitionId(0),
            &[Record::keyed("same", format!("{i:050}"))],
        )?;
    }
    assert_eq!(
        log.compact_topic("kv")?.records_in,
        0,
        "everything is younger than the lag"
    );
    clock.advance(61_000);
    assert!(log.compact_topic("kv")?.records_in > 0);
    Ok(())
}

#[test]
fn interrupted_compaction_swap_is_finished_or_discarded_on_open() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pdir = dir.path().join("topics/kv/0");
    let expected;
    {
        let log = crate::common::open(dir.path());
        log.create_topic(
            "kv",
            1,
            cfg(&["cleanup.policy=compact", "segment.bytes=1024"]),
        )?;
        for i in 0..60 {
            log.append(
                "kv",
                PartitionId(0),
                &[Record::keyed(format!("k{}", i % 3), format!("{i:040}"))],
            )?;
        }
        expected = read_all(&log, "kv", 0)?;
    }
    // A crash after step 1 (cleaned file written, not yet renamed): discarded.
    let first = pdir.join("00000000000000000000.log");
    std::fs::write(
        pdir.join("00000000000000000000.log.cleaned"),
        b"half-written",
    )?;
    {
        let log = crate::common::open(dir.path());
        assert_rows_eq(
            &read_all(&log, "kv", 0)?,
            &expected,
            "cleaned file discarded",
        );
        assert!(!pdir.join("00000000000000000000.log.cleaned").exists());
    }
    // A crash after step 2 (swap committed, old files not yet removed): finished. Build the
    // swap by compacting a copy of the directory, then put the pre-compaction files back.
    let copy = tempfile::tempdir()?;
    copy_dir(dir.path(), copy.path())?;
    {
        let log = crate::common::open(copy.path());
        log.compact_topic("kv")?;
    }
    let compacted_first = std::fs::read(copy.path().join("topics/kv/0/00000000000000000000.log"))?;
    let names: Vec<String> = std::fs::read_dir(copy.path().join("topics/kv/0"))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".log"))
        .collect();
    let mut bases: Vec<String> = names
        .iter()
        .map(|n| n.trim_end_matches(".log").to_string())
        .collect();
    bases.sort();
    let end = bases
        .get(1)
        .cloned()
        .expect("a segment after the compacted group");
    std::fs::write(
        pdir.join(format!("00000000000000000000.{end}.swap")),
        &compacted_first,
    )?;
    {
        let log = crate::common::open(dir.path());
        let after = read_all(&log, "kv", 0)?;
        // Below `end`: the compacted group; from `end` on: the untouched original segments.
        let end: i64 = end.parse()?;
        let copy_log = crate::common::open(copy.path());
        let mut want: Vec<_> = read_all(&copy_log, "kv", 0)?
            .into_iter()
            .filter(|r| r.0 < end)
            .collect();
        want.extend(expected.iter().filter(|r| r.0 >= end).cloned());
        assert_rows_eq(&after, &want, "swap finished");
        assert!(std::fs::read(&first)? == compacted_first);
        let swaps = std::fs::read_dir(&pdir)?
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".swap"))
            })
            .count();
        assert_eq!(swaps, 0, "swap installed");
    }
    Ok(())
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_dir(&e.path(), &target)?;
        } else if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), target)?;
        }
    }
    Ok(())
}

#[test]
fn delete_records_moves_the_log_start_durably_and_drops_whole_segments() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let p = PartitionId(0);
    {
        let log = crate::common::open(dir.path());
        log.create_topic("t", 1, cfg(&["segment.bytes=1024"]))?;
        for i in 0..100 {
            log.append("t", p, &[Record::value(format!("{i:060}"))])?;
        }
        let segments_before = log.describe_topic("t")?.partitions[0].segments;
        assert_eq!(log.delete_records("t", p, Offset(57))?, Offset(57));
        assert!(
            log.describe_topic("t")?.partitions[0].segments < segments_before,
            "whole segments below were deleted"
        );
        assert!(matches!(
            log.read("t", p, Offset(56), 1024),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        let first = read_all(&log, "t", 0)?;
        assert_eq!(
            first.first().map(|r| r.0),
            Some(57),
            "reading starts exactly at the new start"
        );
        // Never past the end, never backwards.
        assert_eq!(log.delete_records("t", p, Offset(10_000))?, Offset(100));
        assert_eq!(log.delete_records("t", p, Offset(3))?, Offset(100));
    }
    let log = crate::common::open(dir.path());
    assert_eq!(
        log.earliest_offset("t", p)?,
        Offset(100),
        "the start survives a restart"
    );
    assert_eq!(
        log.append("t", p, &[Record::value("next")])?.base_offset,
        Offset(100)
    );
    Ok(())
}

#[test]
fn an_explicit_roll_lets_compaction_reach_the_active_segment() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open(dir.path());
    log.create_topic(
        "kv",
        1,
        cfg(&["cleanup.policy=compact", "segment.bytes=1024"]),
    )?;
    // 200 updates of 4 keys in one append: one batch, all in the active segment.
    let updates: Vec<Record> = (0..200)
        .map(|i| Record::keyed(format!("user-{}", i % 4), format!("{i}")))
        .collect();
    log.append("kv", PartitionId(0), &updates)?;
    assert_eq!(
        log.compact_topic("kv")?.segments_in,
        0,
        "the active segment is never compacted"
    );
    log.roll("kv")?;
    log.roll("kv")?; // an empty active segment is not rolled again
    assert_eq!(log.describe_topic("kv")?.partitions[0].segments, 2);
    let s = log.compact_topic("kv")?;
    assert_eq!((s.records_in, s.records_out), (200, 4));
    let rows = read_all(&log, "kv", 0)?;
    assert_eq!(rows.len(), 4);
    assert_eq!(
        log.append("kv", PartitionId(0), &[Record::keyed("user-0", "x")])?
            .base_offset,
        Offset(200),
        "offsets go on after the roll"
    );
    Ok(())
}

#[test]
fn a_garbled_log_start_file_is_an_error_not_a_missing_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let p = PartitionId(0);
    {
        let log = crate::common::open(dir.path());
        log.create_topic("t", 1, cfg(&[]))?;
        for i in 0..10 {
            log.append("t", p, &[Record::value(format!("{i}"))])?;
        }
        log.delete_records("t", p, Offset(5))?;
    }
    let file = std::fs::read_dir(dir.path().join("topics"))?
        .flatten()
        .map(|e| e.path().join("0").join("log-start-offset"))
        .find(|f| f.exists())
        .expect("the persisted log start");
    std::fs::write(&file, b"garbage")?;
    // Taken for a missing file, it would bring back the five deleted records.
    match Log::open_with(dir.path(), LogOptions::without_cleaner()) {
        Err(LogError::Corrupted { segment, .. }) => assert_eq!(segment, file),
        Ok(log) => panic!("opened with log start {:?}", log.earliest_offset("t", p)),
        Err(e) => panic!("expected Corrupted, got {e}"),
    }
    Ok(())
}
