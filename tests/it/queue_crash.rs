//! `kill -9` of `weir serve` under competing consumers of its SQS API: a standard queue and
//! a FIFO queue, filled before the first kill, drained by consumers that reconnect after each
//! crash. Every message is acknowledged at least once — or its acknowledgement was in flight
//! when the server died, and the queues end empty, so it was done (none is lost: messages
//! locked when the server died come back after their locks, and are drained too); no message
//! is delivered again after a successful delete, and no FIFO group is ever received out of
//! order. `WEIR_QUEUE_CRASH_CYCLES` runs more kills.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use weir_sqs::SqsClient;

use crate::kafka_interop::Served;

const MESSAGES: usize = 1_200;
const GROUPS: usize = 4;
const PER_GROUP: usize = 50;
const CONSUMERS: usize = 4;
/// Kills in CI.
const CYCLES_DEFAULT: usize = 2;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

fn cycles() -> usize {
    std::env::var("WEIR_QUEUE_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CYCLES_DEFAULT)
}

#[derive(Default)]
struct Seen {
    acked: BTreeSet<String>,
    /// Bodies whose delete was sent when the server died: done or not, the client cannot
    /// know (the server must then either redeliver them or have them done).
    unanswered: BTreeSet<String>,
    /// Per FIFO group, the sequence numbers in the order they were received.
    received: BTreeMap<String, Vec<usize>>,
    /// Bodies received again after their delete succeeded: an acknowledged ack was lost.
    after_ack: BTreeSet<String>,
}

struct Shared {
    addr: Mutex<String>,
    seen: Mutex<Seen>,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Receives and deletes until stopped, reconnecting whenever the server goes away.
fn consume(shared: &Shared, queue: &str) {
    while !shared.stop.load(Ordering::Relaxed) {
        let addr = lock(&shared.addr).clone();
        let Ok(mut c) = SqsClient::connect(&addr) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let url = c.url(queue);
        while !shared.stop.load(Ordering::Relaxed) {
            let req = json!({"QueueUrl": url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 1,
                             "VisibilityTimeout": 2});
            let Ok(r) = c.call("ReceiveMessage", &req) else {
                break;
            };
            let messages = r["Messages"].as_array().cloned().unwrap_or_default();
            let bodies: Vec<String> = messages
                .iter()
                .map(|m| m["Body"].as_str().unwrap_or_default().to_string())
                .collect();
            {
                let mut seen = lock(&shared.seen);
                for b in &bodies {
                    if seen.acked.contains(b) {
                        seen.after_ack.insert(b.clone());
                    }
                    if let Some((g, seq)) = b.split_once(':') {
                        let seq = seq.parse().unwrap_or(usize::MAX);
                        seen.received.entry(g.to_string()).or_default().push(seq);
                    }
                }
            }
            let entries: Vec<_> = messages
                .iter()
                .enumerate()
                .map(|(i, m)| json!({"Id": format!("m{i}"), "ReceiptHandle": m["ReceiptHandle"]}))
                .collect();
            if entries.is_empty() {
                continue;
            }
            let Ok(d) = c.call(
                "DeleteMessageBatch",
                &json!({"QueueUrl": url, "Entries": entries}),
            ) else {
                lock(&shared.seen).unanswered.extend(bodies);
                break;
            };
            let mut seen = lock(&shared.seen);
            for ok in d["Successful"].as_array().into_iter().flatten() {
                let i: usize = ok["Id"].as_str().unwrap_or("m0")[1..].parse().unwrap_or(0);
                seen.acked.insert(bodies[i].clone());
            }
        }
    }
}

/// Whether both queues hold nothing, visible or locked.
fn drained(addr: &str) -> anyhow::Result<bool> {
    let mut c = SqsClient::connect(addr)?;
    for queue in ["work", "orders.fifo"] {
        let url = c.url(queue);
        let names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
        ];
        let a = c.call(
            "GetQueueAttributes",
            &json!({"QueueUrl": url, "AttributeNames": names}),
        )?;
        if !names.iter().all(|n| a["Attributes"][n] == "0") {
            return Ok(false);
        }
    }
    Ok(true)
}

fn fill(addr: &str) -> anyhow::Result<()> {
    let mut c = SqsClient::connect(addr)?;
    c.call(
        "CreateQueue",
        &json!({"QueueName": "work", "Attributes": {"WeirPartitions": "2"}}),
    )?;
    c.call(
        "CreateQueue",
        &json!({"QueueName": "orders.fifo", "Attributes": {"FifoQueue": "true"}}),
    )?;
    let (work, fifo) = (c.url("work"), c.url("orders.fifo"));
    for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(10) {
        let entries: Vec<_> = chunk
            .iter()
            .map(|i| json!({"Id": format!("e{i}"), "MessageBody": format!("m{i}")}))
            .collect();
        c.call(
            "SendMessageBatch",
            &json!({"QueueUrl": work, "Entries": entries}),
        )?;
    }
    for seq in 0..PER_GROUP {
        let entries: Vec<_> = (0..GROUPS)
            .map(|g| {
                json!({"Id": format!("g{g}"), "MessageBody": format!("g{g}:{seq}"),
                       "MessageGroupId": format!("g{g}"), "MessageDeduplicationId": format!("g{g}-{seq}")})
            })
            .collect();
        c.call(
            "SendMessageBatch",
            &json!({"QueueUrl": fifo, "Entries": entries}),
        )?;
    }
    Ok(())
}

#[test]
fn kill_9_under_competing_consumers_loses_nothing_and_keeps_fifo_order() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = Served::start(dir.path())?;
    fill(&server.sqs)?;
    let shared = Arc::new(Shared {
        addr: Mutex::new(server.sqs.clone()),
        seen: Mutex::new(Seen::default()),
        stop: AtomicBool::new(false),
    });
    let workers: Vec<_> = (0..CONSUMERS)
        .map(|i| {
            let shared = shared.clone();
            let queue = if i % 2 == 0 { "work" } else { "orders.fifo" };
            std::thread::spawn(move || consume(&shared, queue))
        })
        .collect();
    let total = MESSAGES + GROUPS * PER_GROUP;
    let acked = || {
        let seen = lock(&shared.seen);
        seen.acked.union(&seen.unanswered).count()
    };
    for cycle in 1..=cycles() {
        let target = total * cycle / (cycles() + 1);
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while acked() < target && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        server.kill_9()?;
        server = Served::start(dir.path())?;
        *lock(&shared.addr) = server.sqs.clone();
    }
    // Until every message was acknowledged and the queues are empty: a message whose delete
    // died with the server and was not done comes back after its lock, to be taken again.
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while (acked() < total || !drained(&server.sqs)?) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    shared.stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a consumer panicked"))?;
    }
    let addr = server.sqs.clone();
    let seen = lock(&shared.seen);
    let want: BTreeSet<String> = (0..MESSAGES)
        .map(|i| format!("m{i}"))
        .chain((0..GROUPS).flat_map(|g| (0..PER_GROUP).map(move |s| format!("g{g}:{s}"))))
        .collect();
    anyhow::ensure!(
        seen.after_ack.is_empty(),
        "delivered again after a successful delete: {:?}",
        seen.after_ack
    );
    // Every message acknowledged, or its acknowledgement lost with a crash and the queue
    // empty (so it was not lost either: it was done).
    let missing: Vec<_> = want
        .difference(&seen.acked)
        .filter(|m| !seen.unanswered.contains(*m))
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "{} never acknowledged, first 10: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    anyhow::ensure!(drained(&addr)?, "the queues are not empty");
    for (group, seqs) in &seen.received {
        let out_of_order = seqs.windows(2).find(|w| w[1] < w[0]);
        anyhow::ensure!(
            out_of_order.is_none(),
            "group {group} received out of order at {out_of_order:?}: {seqs:?}"
        );
    }
    drop(seen);
    let (_, metrics) = server.http_get("/metrics")?;
    for line in [
        r#"weir_queue_messages_visible{queue="work"} 0"#,
        r#"weir_queue_messages_in_flight{queue="orders.fifo"} 0"#,
    ] {
        anyhow::ensure!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in /metrics:\n{metrics}"
        );
    }
    server.stop()
}
