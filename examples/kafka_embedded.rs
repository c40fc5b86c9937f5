//! A Rust application that embeds the log, runs a DSL pipeline, and starts the Kafka listener
//! in its own process, so Kafka clients feed its pipeline: here Weir's own small Kafka client
//! produces clicks over the wire (any Kafka producer would do), and the pipeline counts them
//! per user, exactly once.
//!
//! Run: `cargo run --example kafka_embedded`

use std::time::Duration;

use bytes::Bytes;
use weir_engine::{Json, Pipeline, RunOptions, Utf8};
use weir_kafka::{Broker, Client, ServerConfig, ServerHandle};
use weir_log::{partitioner, BatchBuilder, Isolation, Log, Offset, PartitionId, Record, Timestamp};

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path().join("log"))?;
    log.create_topic("clicks", 2, Default::default())?;
    log.create_topic("clicks-per-user", 2, Default::default())?;
    let (groups, txns) = weir_coord::start(&log)?;

    // The Kafka listener, in this process, on a free loopback port.
    let broker = Broker::new(log.clone(), groups.clone(), txns.clone(), false);
    let config = ServerConfig {
        kafka_listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    let server = ServerHandle::start(broker, &config)?;
    let addr = server
        .kafka_addr()
        .ok_or_else(|| anyhow::anyhow!("no Kafka listener"))?
        .to_string();
    println!("Kafka clients can connect to {addr} (e.g. kcat -b {addr} -L)");

    // The pipeline reads what Kafka clients write.
    let p = Pipeline::builder("clicks-app");
    p.stream::<String, String>("clicks", Utf8, Utf8)
        .group_by_key()
        .count()
        .to_topic("clicks-per-user", Utf8, Json);
    let running = p.build()?.run(
        &log,
        &groups,
        &txns,
        RunOptions::new(dir.path().join("state")),
    )?;

    // A Kafka producer over the wire: one batch per partition, keys placed as Kafka does.
    let mut client = Client::connect(&addr)?;
    let (producer_id, epoch) = client.init_producer_id()?;
    let clicks = ["ann", "bob", "ann", "cy", "ann", "bob"];
    let mut by_partition: Vec<Vec<Record>> = vec![Vec::new(), Vec::new()];
    for user in clicks {
        let p = partitioner::partition_for_key(user.as_bytes(), 2).0 as usize;
        by_partition[p].push(Record::keyed(user, "/home"));
    }
    let mut batches = Vec::new();
    for (p, records) in by_partition
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.is_empty())
    {
        let mut b = BatchBuilder::with_capacity(256).producer(weir_log::ProducerFields {
            producer_id,
            producer_epoch: epoch,
            base_sequence: 0,
        });
        for r in records {
            b.push(r, Timestamp(1_700_000_000_000));
        }
        batches.push((p as u32, Bytes::from(b.finish().as_bytes().to_vec())));
    }
    client.produce("clicks", batches)?;

    running.wait_until_idle(Duration::from_millis(300), Duration::from_secs(30));
    running.stop()?;
    server.shutdown();

    println!("clicks-per-user (read_committed, latest per user):");
    let mut latest = std::collections::BTreeMap::new();
    for part in 0..2 {
        let f = log.read_isolated(
            "clicks-per-user",
            PartitionId(part),
            Offset(0),
            1 << 20,
            Isolation::ReadCommitted,
        )?;
        for r in f.records() {
            let r = r?;
            let user = String::from_utf8_lossy(r.key.unwrap_or_default()).into_owned();
            latest.insert(
                user,
                String::from_utf8_lossy(r.value.unwrap_or_default()).into_owned(),
            );
        }
    }
    for (user, count) in &latest {
        println!("  {user} = {count}");
    }
    anyhow::ensure!(
        latest.get("ann").map(String::as_str) == Some("3"),
        "ann clicked 3 times: {latest:?}"
    );
    Ok(())
}
