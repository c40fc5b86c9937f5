//! `weir bench sqs`: the SQS API over HTTP, driven by a Rust load generator (boto3 manages a
//! few thousand calls per second per process): `--connections` keep-alive connections, one
//! thread each, send the messages with SendMessageBatch (10 per call), then receive them with
//! ReceiveMessage (10 per call) and delete them with DeleteMessageBatch. The server runs in
//! this process on a loopback port over a scratch log, as `weir serve` runs it.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{bail, Result};
use serde_json::{json, Value};
use weir_queue::QueueConfig;
use weir_sqs::{Credentials, SqsConfig, SqsServerHandle};

use super::queue::QueueBench;
use crate::cli::BenchSqsArgs;
use weir_sqs::SqsClient as Connection;

/// Messages per batch call (SQS's maximum).
const BATCH: usize = 10;

pub fn sqs(data_dir: &Path, a: BenchSqsArgs) -> Result<()> {
    if a.messages == 0 || a.connections == 0 {
        bail!("--messages and --connections must be at least 1");
    }
    let bench = QueueBench::open(data_dir, "sqs")?;
    let config = QueueConfig {
        partitions: a.partitions,
        ..QueueConfig::default()
    };
    bench.queues.create("bench", config)?;
    let server = SqsServerHandle::start(
        bench.queues.clone(),
        SqsConfig {
            listen: "127.0.0.1:0".into(),
            credentials: Credentials::default(),
        },
    )?;
    let addr = server.local_addr().to_string();
    let url = format!("http://{addr}/000000000000/bench");
    let body = "x".repeat(100);
    let calls = a.messages.div_ceil(BATCH as u64);
    let sent = run(&addr, a.connections, calls, |c, n| {
        let entries: Vec<Value> = (0..BATCH)
            .map(|i| json!({"Id": format!("m{i}"), "MessageBody": body}))
            .collect();
        let r = c.call(
            "SendMessageBatch",
            &json!({"QueueUrl": url, "Entries": entries}),
        )?;
        let ok = r["Successful"].as_array().map_or(0, Vec::len) as u64;
        n.fetch_add(ok, Ordering::Relaxed);
        Ok(true)
    })?;
    println!(
        "SendMessageBatch (10 × 100 B) over {} connections: {:.0} messages/s ({} messages in {:.1} s)",
        a.connections,
        sent.0 as f64 / sent.1,
        sent.0,
        sent.1
    );
    let target = sent.0;
    let received = AtomicU64::new(0);
    let done = run(&addr, a.connections, u64::MAX, |c, n| {
        if received.load(Ordering::Relaxed) >= target {
            return Ok(false);
        }
        let r = c.call(
            "ReceiveMessage",
            &json!({"QueueUrl": url, "MaxNumberOfMessages": BATCH, "WaitTimeSeconds": 1}),
        )?;
        let Some(messages) = r["Messages"].as_array().filter(|m| !m.is_empty()) else {
            return Ok(true);
        };
        received.fetch_add(messages.len() as u64, Ordering::Relaxed);
        let entries: Vec<Value> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| json!({"Id": format!("d{i}"), "ReceiptHandle": m["ReceiptHandle"]}))
            .collect();
        let d = c.call(
            "DeleteMessageBatch",
            &json!({"QueueUrl": url, "Entries": entries}),
        )?;
        let ok = d["Successful"].as_array().map_or(0, Vec::len) as u64;
        n.fetch_add(ok, Ordering::Relaxed);
        Ok(true)
    })?;
    println!(
        "ReceiveMessage + DeleteMessageBatch (10 per call) over {} connections: {:.0} messages/s ({} messages in {:.1} s)",
        a.connections,
        done.0 as f64 / done.1,
        done.0,
        done.1
    );
    server.shutdown();
    bench.log.close();
    Ok(())
}

/// Runs `step` on `connections` threads until `calls` steps ran (or a step answers false);
/// returns the count the steps added and the seconds it took.
fn run(
    addr: &str,
    connections: usize,
    calls: u64,
    step: impl Fn(&mut Connection, &AtomicU64) -> Result<bool> + Sync,
) -> Result<(u64, f64)> {
    let next = AtomicU64::new(0);
    let count = AtomicU64::new(0);
    let start = Instant::now();
    let errors: Vec<anyhow::Error> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..connections)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    let mut c = Connection::connect(addr)?;
                    while next.fetch_add(1, Ordering::Relaxed) < calls {
                        if !step(&mut c, &count)? {
                            return Ok(());
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| match h.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some(anyhow::anyhow!("a connection thread panicked")),
            })
            .collect()
    });
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    Ok((count.load(Ordering::Relaxed), start.elapsed().as_secs_f64()))
}
