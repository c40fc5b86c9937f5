//! A queue as a pipeline's input: messages received under locks and acked in the task's
//! commit. Exactly once: every message's output is committed once, alongside a competing
//! consumer of the same queue, and after a lock ran out before its commit (the interval is
//! redone); the queue ends with nothing visible and nothing in flight.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_engine::{Pipeline, RunOptions, Utf8};
use weir_queue::{Outgoing, QueueConfig, Queues};

/// Sends `n` messages `m0…` keyed `k0…k9` to a new queue `jobs`.
fn queue_with(
    log: &weir_log::Log,
    queues: &Queues,
    n: usize,
    visibility_ms: i64,
) -> anyhow::Result<()> {
    let config = QueueConfig {
        partitions: 2,
        visibility_ms,
        ..QueueConfig::default()
    };
    let queue = queues.create("jobs", config)?;
    let messages: Vec<Outgoing> = (0..n)
        .map(|i| Outgoing {
            group: Some(format!("k{}", i % 10).into()),
            ..Outgoing::body(format!("m{i}"))
        })
        .collect();
    queue.send(&messages)?;
    log.create_topic("done", 2, Default::default())?;
    Ok(())
}

/// How often each body is in the committed output `done`.
fn outputs(log: &weir_log::Log) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for values in crate::common::committed_by_key(log, "done", |k, v| {
        (
            String::from_utf8_lossy(k).into_owned(),
            String::from_utf8_lossy(v).into_owned(),
        )
    })
    .into_values()
    {
        for v in values {
            *seen.entry(v).or_insert(0) += 1;
        }
    }
    seen
}

fn assert_drained(queues: &Queues) -> anyhow::Result<()> {
    let stats = queues.get("jobs")?.stats()?;
    anyhow::ensure!(
        stats.visible == 0 && stats.in_flight == 0 && stats.delayed == 0,
        "queue not drained: {stats:?}"
    );
    Ok(())
}

#[test]
fn a_queue_is_consumed_exactly_once_beside_a_competing_consumer() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open_log(dir.path());
    let (groups, txns) = weir_coord::start(&log)?;
    let queues = Queues::open(&log, &txns)?;
    let n = 3000;
    queue_with(&log, &queues, n, 30_000)?;
    let p = Pipeline::builder("jobs-done");
    p.queue::<String, String>("jobs", Utf8, Utf8)
        .to_topic("done", Utf8, Utf8);
    let mut opts = RunOptions::new(dir.path().join("state"));
    opts.commit_interval = Duration::from_millis(20);
    opts.queues = Some(queues.clone());
    let running = p.build()?.run(&log, &groups, &txns, opts)?;
    // Another consumer of the same queue, receiving and acking as any worker does.
    let queue = queues.get("jobs")?;
    let mut theirs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let got = queue.receive(50, Duration::from_millis(200), None)?;
        if got.is_empty() && queue.stats()?.visible == 0 {
            break;
        }
        let receipts: Vec<_> = got.iter().map(|r| r.receipt).collect();
        for (r, ok) in got.iter().zip(queue.ack(&receipts)?) {
            if ok.is_ok() {
                theirs.push(String::from_utf8_lossy(&r.message.body).into_owned());
            }
        }
    }
    running.stop_when_idle(Duration::from_millis(300), Duration::from_secs(30))?;
    let mut seen = outputs(&log);
    let pipeline_took = seen.len();
    for body in theirs {
        *seen.entry(body).or_insert(0) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    anyhow::ensure!(twice.is_empty(), "processed twice: {twice:?}");
    anyhow::ensure!(seen.len() == n, "{} of {n} messages processed", seen.len());
    anyhow::ensure!(pipeline_took > 0, "the pipeline took nothing");
    assert_drained(&queues)
}

#[test]
fn a_lock_lost_before_the_commit_redoes_the_interval() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open_log(dir.path());
    let (groups, txns) = weir_coord::start(&log)?;
    let queues = Queues::open(&log, &txns)?;
    let n = 400;
    queue_with(&log, &queues, n, 300)?;
    let stalled = Arc::new(AtomicBool::new(false));
    let s = stalled.clone();
    let p = Pipeline::builder("jobs-slow");
    p.queue::<String, String>("jobs", Utf8, Utf8)
        .map(move |k: String, v: String| {
            // Once, a message takes longer than its lock: the commit must not ack it.
            if v == "m7" && !s.swap(true, Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(700));
            }
            (k, v)
        })
        .to_topic("done", Utf8, Utf8);
    let mut opts = RunOptions::new(dir.path().join("state"));
    opts.commit_interval = Duration::from_millis(20);
    opts.queues = Some(queues.clone());
    let running = p.build()?.run(&log, &groups, &txns, opts)?;
    running.stop_when_idle(Duration::from_millis(1000), Duration::from_secs(30))?;
    anyhow::ensure!(
        stalled.load(Ordering::SeqCst),
        "the slow message never came"
    );
    let seen = outputs(&log);
    let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    anyhow::ensure!(twice.is_empty(), "processed twice: {twice:?}");
    anyhow::ensure!(seen.len() == n, "{} of {n} messages processed", seen.len());
    assert_drained(&queues)
}

#[test]
fn a_queue_read_also_as_a_topic_is_refused() {
    let p = Pipeline::builder("mixed");
    p.queue::<String, String>("jobs", Utf8, Utf8)
        .to_topic("a", Utf8, Utf8);
    p.stream::<String, String>("jobs", Utf8, Utf8)
        .to_topic("b", Utf8, Utf8);
    let err = p.build().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("both as a queue and as a topic"), "{err}");
}
