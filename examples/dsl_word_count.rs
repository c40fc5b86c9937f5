//! A stateful pipeline with the Rust DSL over the embedded log: orders per customer, summed
//! exactly once with the state in RocksDB, plus a word count that re-keys through a
//! repartition topic.
//!
//! Run: `cargo run --example dsl_word_count`

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_engine::{Json, Pipeline, RunOptions, Utf8};
use weir_log::{Isolation, Log, Offset, PartitionId};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    customer: String,
    amount: i64,
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path().join("log"))?;
    for (topic, partitions) in [
        ("orders", 2),
        ("customer-totals", 2),
        ("lines", 2),
        ("word-counts", 2),
    ] {
        log.create_topic(topic, partitions, Default::default())?;
    }
    for (customer, amount) in [
        ("alice", 30),
        ("bob", 5),
        ("alice", -1),
        ("carol", 12),
        ("alice", 12),
        ("bob", 7),
    ] {
        let order = serde_json::to_vec(&Order {
            customer: customer.into(),
            amount,
        })?;
        log.send(
            "orders",
            Some(serde_json::to_vec(customer)?.as_slice()),
            Some(&order),
        )?;
    }
    log.send("lines", Some(b"1"), Some(b"to be or not to be"))?;
    log.send("lines", Some(b"2"), Some(b"that is the question"))?;

    let p = Pipeline::builder("example");
    p.stream::<String, Order>("orders", Json, Json)
        .filter(|_, o| o.amount > 0)
        .map_values(|o| o.amount)
        .group_by_key()
        .reduce(|a, b| a + b) // state in RocksDB + changelog
        .to_topic("customer-totals", Json, Json);
    p.stream::<String, String>("lines", Utf8, Utf8)
        .flat_map(|_, line: String| {
            line.split_whitespace()
                .map(|w| (w.to_string(), ()))
                .collect::<Vec<_>>()
        })
        .key_by(|w, _| w.clone()) // through a repartition topic
        .group_by_key()
        .count()
        .to_topic("word-counts", Utf8, Json);
    let topology = p.build()?;

    let (groups, txns) = weir_coord::start(&log)?;
    let running = topology.run(
        &log,
        &groups,
        &txns,
        RunOptions::new(dir.path().join("state")),
    )?;
    running.wait_until_idle(Duration::from_millis(300), Duration::from_secs(30));
    let metrics = running.metrics();
    running.stop()?;

    for topic in ["customer-totals", "word-counts"] {
        println!("{topic} (read_committed, latest per key):");
        let mut latest = std::collections::BTreeMap::new();
        for part in 0..2 {
            let f = log.read_isolated(
                topic,
                PartitionId(part),
                Offset(0),
                1 << 20,
                Isolation::ReadCommitted,
            )?;
            for r in f.records() {
                let r = r?;
                latest.insert(
                    String::from_utf8_lossy(r.key.unwrap_or_default()).into_owned(),
                    String::from_utf8_lossy(r.value.unwrap_or_default()).into_owned(),
                );
            }
        }
        for (k, v) in &latest {
            println!("  {k} = {v}");
        }
    }
    // What the runtime measured: per operator, then per task.
    println!("operators (records in -> out):");
    for o in &metrics.operators {
        println!(
            "  {:>2} {:<36} {:>3} -> {:<3}",
            o.id, o.name, o.counters.records_in, o.counters.records_out
        );
    }
    println!(
        "tasks: {}, commits: {}, end-to-end latency p50 {} ms / p99 {} ms",
        metrics.tasks.len(),
        metrics.commits,
        metrics.end_to_end_ms.p50,
        metrics.end_to_end_ms.p99
    );
    Ok(())
}
