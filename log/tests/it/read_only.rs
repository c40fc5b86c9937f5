//! A read-only view of a log another process writes: it follows appends, rolls, retention and
//! compaction merges, never changes the files, and refuses writes with a typed error.

use std::sync::Arc;
use std::time::Duration;

use weir_log::{Log, LogError, LogOptions, ManualClock, Offset, PartitionId, Record, Timestamp};

use crate::common::{assert_rows_eq, cfg, read_all, values};

fn ro(dir: &std::path::Path) -> Log {
    Log::open_read_only(dir, LogOptions::default()).expect("read-only open")
}

#[test]
fn follows_appends_and_rolls_of_the_writer() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let writer = crate::common::open(dir.path());
    writer.create_topic("t", 2, cfg(&["segment.bytes=1024"]))?;
    writer.append("t", PartitionId(0), &[Record::value("first")])?;
    let reader = ro(dir.path());
    assert!(reader.is_read_only());
    assert_eq!(values(&reader, "t", 0), vec!["first"]);
    for i in 0..100 {
        writer.append("t", PartitionId(0), &[Record::value(format!("{i:040}"))])?;
    }
    assert_eq!(
        values(&reader, "t", 0).len(),
        1,
        "nothing new before a refresh"
    );
    reader.refresh("t")?;
    let got = values(&reader, "t", 0);
    assert_eq!(got.len(), 101);
    assert_eq!(got, values(&writer, "t", 0));
    // A long poll on the view sees an append made while it waits.
    let w = writer.clone();
    let h = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        w.append("t", PartitionId(1), &[Record::value("late")])
    });
    let f = reader.read_wait(
        "t",
        PartitionId(1),
        Offset(0),
        1024,
        Duration::from_secs(20),
    )?;
    assert_eq!(f.records().count(), 1);
    h.join()
        .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    Ok(())
}

#[test]
fn sees_retention_and_compaction_consistently() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::new(Timestamp(1_700_000_000_000)));
    let writer = Log::open_with(
        dir.path(),
        LogOptions {
            clock: clock.clone(),
            cleaner_interval: None,
            ..Default::default()
        },
    )?;
    writer.create_topic(
        "kv",
        1,
        cfg(&["cleanup.policy=compact", "segment.bytes=1024"]),
    )?;
    writer.create_topic("old", 1, cfg(&["segment.bytes=1024", "retention.ms=1000"]))?;
    for i in 0..120 {
        writer.append(
            "kv",
            PartitionId(0),
            &[Record::keyed(format!("k{}", i % 4), format!("{i:040}"))],
        )?;
        writer.append("old", PartitionId(0), &[Record::value(format!("{i:040}"))])?;
    }
    let reader = ro(dir.path());
    assert_rows_eq(
        &read_all(&reader, "kv", 0)?,
        &read_all(&writer, "kv", 0)?,
        "before compaction",
    );
    writer.compact_topic("kv")?;
    clock.advance(10_000);
    writer.append("old", PartitionId(0), &[Record::value("new")])?;
    assert!(writer.run_retention()? > 0);
    reader.refresh("kv")?;
    reader.refresh("old")?;
    assert_rows_eq(
        &read_all(&reader, "kv", 0)?,
        &read_all(&writer, "kv", 0)?,
        "compacted view",
    );
    assert_rows_eq(
        &read_all(&reader, "old", 0)?,
        &read_all(&writer, "old", 0)?,
        "after retention",
    );
    assert_eq!(
        reader.earliest_offset("old", PartitionId(0))?,
        writer.earliest_offset("old", PartitionId(0))?
    );
    Ok(())
}

#[test]
fn refuses_writes_and_changes_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let w = crate::common::open(dir.path());
        w.create_topic("t", 1, Default::default())?;
        w.append("t", PartitionId(0), &[Record::value("a")])?;
    }
    // A torn tail left by a crash: the view reads the valid prefix and does not truncate.
    let seg = dir.path().join("topics/t/0/00000000000000000000.log");
    let _ = std::fs::remove_file(dir.path().join("topics/t/0/clean-shutdown"));
    let mut bytes = std::fs::read(&seg)?;
    let len = bytes.len();
    bytes.extend_from_slice(&[0xA5; 50]);
    std::fs::write(&seg, &bytes)?;
    let r = ro(dir.path());
    assert_eq!(values(&r, "t", 0), vec!["a"]);
    assert_eq!(
        std::fs::read(&seg)?.len(),
        len + 50,
        "a read-only view never truncates"
    );
    let e = r
        .append("t", PartitionId(0), &[Record::value("b")])
        .expect_err("read-only");
    assert!(matches!(e, LogError::ReadOnly(_)), "{e}");
    assert!(matches!(
        r.create_topic("u", 1, Default::default()),
        Err(LogError::ReadOnly(_))
    ));
    assert!(Log::open_read_only(dir.path().join("nothing-here"), LogOptions::default()).is_err());
    Ok(())
}

#[test]
fn read_committed_through_a_view_hides_open_and_aborted_transactions() -> anyhow::Result<()> {
    use weir_log::{BatchBuilder, Isolation, ProducerFields, Timestamp};
    let txn = |pid: i64, v: &str| {
        let mut b = BatchBuilder::with_capacity(64)
            .producer(ProducerFields {
                producer_id: pid,
                producer_epoch: 0,
                base_sequence: 0,
            })
            .transactional(true);
        b.push_parts(None, Some(v.as_bytes()), &[], Timestamp(1));
        b.finish()
    };
    let dir = tempfile::tempdir()?;
    let writer = crate::common::open(dir.path());
    writer.create_topic("t", 1, Default::default())?;
    writer
        .submit_batch("t", PartitionId(0), txn(1, "aborted"))?
        .wait()?;
    writer.write_marker("t", PartitionId(0), 1, 0, false, 0)?;
    writer.append("t", PartitionId(0), &[Record::value("plain")])?;
    writer
        .submit_batch("t", PartitionId(0), txn(2, "open"))?
        .wait()?;
    let view = ro(dir.path());
    let read = |log: &Log| -> anyhow::Result<Vec<String>> {
        let f = log.read_isolated(
            "t",
            PartitionId(0),
            Offset(0),
            1 << 20,
            Isolation::ReadCommitted,
        )?;
        Ok(f.records()
            .map(|r| r.map(|r| String::from_utf8_lossy(r.value.unwrap_or_default()).into_owned()))
            .collect::<Result<_, _>>()?)
    };
    assert_eq!(read(&view)?, vec!["plain"]);
    writer.write_marker("t", PartitionId(0), 2, 0, true, 0)?;
    view.refresh("t")?;
    assert_eq!(read(&view)?, vec!["plain", "open"]);
    Ok(())
}
