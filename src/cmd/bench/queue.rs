//! `weir bench queue`: a queue through the Rust API (`weir_queue`) on a scratch log —
//! messages/s sent in batches; messages/s received and acknowledged by competing consumers
//! (each receive and each ack journaled and fsynced before it returns: durable acks); an
//! exactly-once pipeline consuming a queue (outputs and acks in one transaction per commit);
//! and how late messages come back after their locks expire (the redelivery delay).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use weir_log::{Log, LogOptions};
use weir_queue::{Outgoing, Queue, QueueConfig, Queues};

use super::{payload, progress, Scratch};
use crate::cli::BenchQueueArgs;

/// Messages per send call while filling the queue.
const SEND_BATCH: usize = 1_000;
/// The share of `--messages` the exactly-once pipeline consumes.
const PIPELINE_SHARE: u64 = 4;
/// How long the pipeline may take before the bench gives up.
const PIPELINE_TIMEOUT: Duration = Duration::from_secs(600);
/// Messages whose redelivery is timed.
const REDELIVERY_MESSAGES: usize = 1_000;
/// Their lock.
const REDELIVERY_LOCK_MS: i64 = 500;

/// A scratch log with its queues.
pub(super) struct QueueBench {
    pub(super) log: Log,
    pub(super) queues: Queues,
    groups: weir_coord::GroupCoordinator,
    txns: weir_coord::TransactionCoordinator,
    scratch: Scratch,
}

impl QueueBench {
    pub(super) fn open(data_dir: &Path, what: &str) -> Result<QueueBench> {
        let scratch = Scratch::new(data_dir, what)?;
        let log = Log::open_with(scratch.0.join("log"), LogOptions::without_cleaner())?;
        let (groups, txns) = weir_coord::start(&log)?;
        let queues = Queues::open(&log, &txns)?;
        Ok(QueueBench {
            log,
            queues,
            groups,
            txns,
            scratch,
        })
    }
}

pub fn queue(data_dir: &Path, a: BenchQueueArgs) -> Result<()> {
    if a.messages == 0 || a.consumers == 0 || a.batch == 0 {
        bail!("--messages, --consumers and --batch must be at least 1");
    }
    let bench = QueueBench::open(data_dir, "queue")?;
    let config = QueueConfig {
        partitions: a.partitions,
        ..QueueConfig::default()
    };
    let q = bench.queues.create("bench", config)?;
    let body = Bytes::from(payload(a.bytes));
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < a.messages {
        let n = (a.messages - sent).min(SEND_BATCH as u64) as usize;
        q.send(&vec![Outgoing::body(body.clone()); n])?;
        sent += n as u64;
    }
    let send_s = start.elapsed().as_secs_f64();
    println!(
        "sent {} messages of {} bytes in batches of {SEND_BATCH}: {:.0} messages/s",
        a.messages,
        a.bytes,
        a.messages as f64 / send_s
    );
    let (consumed, consume_s) = consume(&q, &a)?;
    println!(
        "received + acknowledged {consumed} messages by {} consumers, batches of {}, durable acks: {:.0} messages/s ({:.1} s)",
        a.consumers,
        a.batch,
        consumed as f64 / consume_s,
        consume_s
    );
    pipeline(&bench, &a)?;
    redelivery(&bench)?;
    bench.log.close();
    Ok(())
}

fn consume(q: &Arc<Queue>, a: &BenchQueueArgs) -> Result<(u64, f64)> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reporter = progress("consumed", done.clone(), a.messages, stop.clone());
    let start = Instant::now();
    let workers: Vec<_> = (0..a.consumers)
        .map(|_| {
            let (q, done, total, batch) = (q.clone(), done.clone(), a.messages, a.batch);
            std::thread::spawn(move || -> Result<()> {
                while done.load(Ordering::Relaxed) < total {
                    let got = q.receive(batch, Duration::from_millis(100), None)?;
                    if got.is_empty() {
                        continue;
                    }
                    let receipts: Vec<_> = got.iter().map(|r| r.receipt).collect();
                    for r in q.ack(&receipts)? {
                        r?;
                    }
                    done.fetch_add(receipts.len() as u64, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a consumer panicked"))??;
    }
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = reporter.join();
    Ok((done.load(Ordering::Relaxed), secs))
}

/// An exactly-once pipeline (the queue's messages to a topic, each commit's outputs and acks
/// in one transaction) drains a queue; timed until every message is acked.
fn pipeline(bench: &QueueBench, a: &BenchQueueArgs) -> Result<()> {
    use weir_engine::{Pipeline, RawBytes, RunOptions};
    let n = (a.messages / PIPELINE_SHARE).max(1);
    let config = QueueConfig {
        partitions: a.partitions,
        ..QueueConfig::default()
    };
    let q = bench.queues.create("pipeline", config)?;
    let body = Bytes::from(payload(a.bytes));
    let mut sent = 0u64;
    while sent < n {
        let k = (n - sent).min(SEND_BATCH as u64) as usize;
        q.send(&vec![Outgoing::body(body.clone()); k])?;
        sent += k as u64;
    }
    bench
        .log
        .create_topic("pipeline-out", a.partitions, Default::default())?;
    let p = Pipeline::builder("bench-queue-pipeline");
    p.queue::<Bytes, Bytes>("pipeline", RawBytes, RawBytes)
        .to_topic("pipeline-out", RawBytes, RawBytes);
    let mut opts = RunOptions::new(bench.scratch.0.join("state"));
    opts.queues = Some(bench.queues.clone());
    let start = Instant::now();
    let running = p
        .build()?
        .run(&bench.log, &bench.groups, &bench.txns, opts)?;
    loop {
        let s = q.stats()?;
        if s.visible == 0 && s.in_flight == 0 {
            break;
        }
        if start.elapsed() > PIPELINE_TIMEOUT {
            bail!(
                "the pipeline left {} messages after {PIPELINE_TIMEOUT:?}",
                s.visible + s.in_flight
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let secs = start.elapsed().as_secs_f64();
    running.stop()?;
    println!(
        "exactly-once pipeline from the queue ({} tasks; outputs and acks in one transaction per 100 ms commit): {n} messages in {secs:.1} s, {:.0} messages/s",
        a.partitions,
        n as f64 / secs
    );
    Ok(())
}

/// Receives messages under a short lock, lets the locks run out, and times how long after
/// each deadline a waiting consumer gets the message again.
fn redelivery(bench: &QueueBench) -> Result<()> {
    let q = bench.queues.create("redelivery", QueueConfig::default())?;
    q.send(&vec![Outgoing::body("x"); REDELIVERY_MESSAGES])?;
    let mut deadlines = std::collections::HashMap::new();
    while deadlines.len() < REDELIVERY_MESSAGES {
        let before = Instant::now();
        let got = q
            .try_receive(REDELIVERY_MESSAGES, Some(REDELIVERY_LOCK_MS))?
            .0;
        if got.is_empty() {
            bail!("the redelivery queue ran dry");
        }
        for r in got {
            let deadline = before + Duration::from_millis(REDELIVERY_LOCK_MS as u64);
            deadlines.insert((r.receipt.partition, r.receipt.offset), deadline);
        }
    }
    let mut late = Histogram::<u64>::new(3)?;
    let mut back = 0;
    let until = Instant::now() + Duration::from_secs(10);
    while back < REDELIVERY_MESSAGES && Instant::now() < until {
        let got = q.receive(REDELIVERY_MESSAGES, Duration::from_secs(2), None)?;
        let now = Instant::now();
        for r in &got {
            let deadline = deadlines
                .get(&(r.receipt.partition, r.receipt.offset))
                .context("a message that was not locked came back")?;
            late.record(now.saturating_duration_since(*deadline).as_micros() as u64)?;
            back += 1;
        }
    }
    if back < REDELIVERY_MESSAGES {
        bail!("only {back} of {REDELIVERY_MESSAGES} messages came back after their locks");
    }
    println!(
        "redelivery after a {REDELIVERY_LOCK_MS} ms lock expired ({back} messages): after the deadline p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        late.value_at_quantile(0.5) as f64 / 1000.0,
        late.value_at_quantile(0.99) as f64 / 1000.0,
        late.max() as f64 / 1000.0
    );
    Ok(())
}
