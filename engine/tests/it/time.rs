//! Time reaches processors: the watermark follows event time (never the wall clock), an idle
//! input stops holding it back, processing-time ticks arrive without input, the watermark is
//! committed with the offsets and restored by a restart; inputs interleave by timestamp, so a
//! busy table does not starve its stream.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_engine::{
    Guarantee, InputKind, InputSpec, Processor, Result, Task, TaskConfig, TaskContext,
};
use weir_log::{ManualClock, PartitionId, Record, Timestamp};

/// Records what it saw: per input, the records processed; every time update's watermark.
#[derive(Default, Clone)]
struct Seen {
    per_input: Arc<Mutex<Vec<usize>>>,
    watermarks: Arc<Mutex<Vec<Option<i64>>>>,
}

impl Processor for Seen {
    fn process(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        let mut p = self.per_input.lock().expect("lock");
        if p.len() <= ctx.input_index() {
            p.resize(ctx.input_index() + 1, 0);
        }
        p[ctx.input_index()] += ctx.input().len();
        Ok(())
    }

    fn on_time(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        self.watermarks
            .lock()
            .expect("lock")
            .push(ctx.watermark().map(|t| t.0));
        Ok(())
    }
}

fn input(topic: &str, kind: InputKind) -> InputSpec {
    InputSpec {
        event_time: weir_engine::EventTime {
            source: weir_engine::TimeSource::RecordTimestamp,
            out_of_orderness: Duration::from_millis(5),
        },
        ..InputSpec::topic(topic, kind)
    }
}

fn append_at(log: &weir_log::Log, topic: &str, ts: i64) -> anyhow::Result<()> {
    log.append(
        topic,
        PartitionId(0),
        &[Record::keyed("k", "v").at(Timestamp(ts))],
    )?;
    Ok(())
}

#[test]
fn watermarks_follow_event_time_idle_inputs_and_restarts() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::new(Timestamp(1_000_000)));
    let log = weir_log::Log::open_with(
        dir.path().join("log"),
        weir_log::LogOptions {
            clock: clock.clone(),
            ..weir_log::LogOptions::without_cleaner()
        },
    )?;
    log.create_topic("a", 1, Default::default())?;
    log.create_topic("b", 1, Default::default())?;
    let (groups, txns) = weir_coord::start(&log)?;
    let mut cfg = TaskConfig::new("clock", "a", 0, dir.path().join("state"));
    cfg.inputs = vec![input("a", InputKind::Stream), input("b", InputKind::Stream)];
    cfg.commit_interval = Duration::from_millis(1);
    cfg.idle_timeout = Duration::from_secs(10);
    let seen = Seen::default();
    let mut task = Task::start(&log, &groups, &txns, cfg.clone())?;
    append_at(&log, "a", 100)?;
    task.run_once(&mut seen.clone())?;
    assert_eq!(task.metrics().watermark, None, "input b has not spoken");
    append_at(&log, "b", 60)?;
    std::thread::sleep(Duration::from_millis(2));
    task.run_once(&mut seen.clone())?;
    assert_eq!(task.metrics().watermark, Some(55), "min(100, 60) - 5");
    // b falls silent; ten seconds of processing time later it no longer holds time back.
    append_at(&log, "a", 200)?;
    task.run_once(&mut seen.clone())?;
    clock.advance(11_000);
    append_at(&log, "a", 300)?;
    task.run_once(&mut seen.clone())?;
    std::thread::sleep(Duration::from_millis(2));
    task.run_once(&mut seen.clone())?;
    assert_eq!(task.metrics().watermark, Some(295));
    // With nothing arriving at all, ticks still reach the processor, and time stands still.
    let ticks = seen.watermarks.lock().expect("lock").len();
    clock.advance(3_600_000);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(2));
        task.run_once(&mut seen.clone())?;
    }
    assert!(seen.watermarks.lock().expect("lock").len() >= ticks + 3);
    assert_eq!(
        seen.watermarks.lock().expect("lock").last(),
        Some(&Some(295)),
        "the wall clock never moves event time"
    );
    task.commit(&mut seen.clone())?;
    drop(task);
    // A restart resumes time where the commit left it.
    let task = Task::start(&log, &groups, &txns, cfg)?;
    assert_eq!(task.metrics().watermark, Some(295));
    let meta = &groups.committed("clock")[&("a".to_string(), 0)].metadata;
    assert!(meta.contains("wm=295"), "{meta}");
    drop(task);
    Ok(())
}

#[test]
fn a_busy_table_does_not_starve_the_stream_that_joins_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open_log(dir.path());
    log.create_topic("events", 1, Default::default())?;
    log.create_topic("profiles", 1, Default::default())?;
    // A backlog of 20,000 table updates, all newer than the stream's 10 records.
    let updates: Vec<Record> = (0..20_000)
        .map(|i| Record::keyed("u", format!("{i}")).at(Timestamp(10_000 + i)))
        .collect();
    for chunk in updates.chunks(2000) {
        log.append("profiles", PartitionId(0), chunk)?;
    }
    for i in 0..10 {
        append_at(&log, "events", i)?;
    }
    let (groups, txns) = weir_coord::start(&log)?;
    let mut cfg = TaskConfig::new("joiner", "events", 0, dir.path().join("state"));
    cfg.inputs = vec![
        input("events", InputKind::Stream),
        input("profiles", InputKind::Table),
    ];
    cfg.guarantee = Guarantee::ExactlyOnce;
    cfg.max_batch_records = 100;
    let seen = Seen::default();
    let mut task = Task::start(&log, &groups, &txns, cfg)?;
    for _ in 0..3 {
        task.run_once(&mut seen.clone())?;
    }
    let per_input = seen.per_input.lock().expect("lock").clone();
    assert_eq!(
        per_input.first(),
        Some(&10),
        "the stream's older records go first: {per_input:?}"
    );
    Ok(())
}

/// Collects the offsets of the generated records it is given.
#[derive(Default, Clone)]
struct Offsets(Arc<Mutex<Vec<i64>>>);

impl Processor for Offsets {
    fn process(&mut self, ctx: &mut TaskContext<'_>) -> Result<()> {
        let mut seen = self.0.lock().expect("lock");
        seen.extend(ctx.input().iter().map(|r| r.offset.0));
        Ok(())
    }
}

#[test]
fn a_generated_input_counts_rows_like_offsets_and_resumes_after_its_commit() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open_log(dir.path());
    let (groups, txns) = weir_coord::start(&log)?;
    let mut cfg = TaskConfig::new("gen", "datagen.g", 1, dir.path().join("state"));
    // 25 rows over 2 partitions: partition 1 makes rows 1, 3, …, 23 — twelve of them.
    cfg.inputs = vec![InputSpec {
        generated: Some(weir_engine::GeneratedInput {
            partitions: 2,
            rows: Some(25),
            rows_per_second: 0,
        }),
        ..InputSpec::topic("datagen.g", InputKind::Stream)
    }];
    cfg.max_batch_records = 5;
    let seen = Offsets::default();
    let mut task = Task::start(&log, &groups, &txns, cfg.clone())?;
    task.run_once(&mut seen.clone())?;
    task.commit(&mut seen.clone())?;
    assert_eq!(*seen.0.lock().expect("lock"), vec![0, 1, 2, 3, 4]);
    // Processed but not committed: a restart makes these rows again.
    task.run_once(&mut seen.clone())?;
    drop(task);
    let again = Offsets::default();
    let mut task = Task::start(&log, &groups, &txns, cfg)?;
    for _ in 0..10 {
        task.run_once(&mut again.clone())?;
    }
    assert_eq!(
        *again.0.lock().expect("lock"),
        (5..12).collect::<Vec<i64>>()
    );
    task.commit(&mut again.clone())?;
    assert_eq!(task.metrics().lag, 0, "every row of the partition was made");
    Ok(())
}
