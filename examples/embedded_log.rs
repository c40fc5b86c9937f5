//! The embedded log from Rust: keyed sends keep per-key order, a reader long-polls for new
//! records, and a compacted topic keeps the latest value per key.
//!
//! Run: `cargo run --example embedded_log`

use std::time::Duration;

use weir_log::{Log, Offset, PartitionId, Record, TopicConfig};

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path())?;

    // Keyed sends: Kafka's murmur2 partitioner puts one customer's events on one partition.
    log.create_topic("orders", 3, Default::default())?;
    for (customer, event) in [
        ("alice", "created"),
        ("bob", "created"),
        ("alice", "paid"),
        ("alice", "shipped"),
    ] {
        let ack = log.send("orders", Some(customer.as_bytes()), Some(event.as_bytes()))?;
        println!(
            "{customer:>5} {event:<8} -> partition {} offset {}",
            ack.partition, ack.base_offset
        );
    }
    let p = log.partition_for("orders", b"alice")?;
    let fetch = log.read("orders", p, Offset(0), 1 << 20)?;
    let alice: Vec<String> = fetch
        .records()
        .filter_map(|r| r.ok())
        .filter(|r| r.key == Some(&b"alice"[..]))
        .map(|r| String::from_utf8_lossy(r.value.unwrap_or_default()).into_owned())
        .collect();
    println!("alice's events, in order: {alice:?}");
    assert_eq!(alice, ["created", "paid", "shipped"]);

    // A reader waits for records that do not exist yet; a writer thread appends them.
    let writer = log.clone();
    let producer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        writer.append(
            "orders",
            PartitionId(0),
            &[Record::keyed("carol", "created")],
        )
    });
    let end = log.latest_offset("orders", PartitionId(0))?;
    let fetch = log.read_wait(
        "orders",
        PartitionId(0),
        end,
        1 << 20,
        Duration::from_secs(5),
    )?;
    println!(
        "long poll woke up with {} new record(s)",
        fetch.records().count()
    );
    producer
        .join()
        .map_err(|_| anyhow::anyhow!("producer panicked"))??;

    // A compacted topic: after compaction only the newest value per key remains in sealed
    // segments, at its original offset.
    let cfg = TopicConfig::parse_pairs(&["cleanup.policy=compact", "segment.bytes=1024"])?;
    log.create_topic("profiles", 1, cfg)?;
    for visit in 1..=100 {
        let user = format!("user-{}", visit % 3);
        log.append(
            "profiles",
            PartitionId(0),
            &[Record::keyed(user, format!("visits={visit}"))],
        )?;
    }
    let stats = log.compact_topic("profiles")?;
    println!(
        "compaction: {} records -> {} in {} sealed segment(s)",
        stats.records_in, stats.records_out, stats.segments_in
    );
    let mut at = log.earliest_offset("profiles", PartitionId(0))?;
    let mut kept = 0;
    loop {
        let f = log.read("profiles", PartitionId(0), at, 1 << 20)?;
        if f.is_empty() {
            break;
        }
        kept += f.records().count();
        at = f.next_offset();
    }
    println!("records readable after compaction: {kept} of 100");
    assert!(kept < 100);
    Ok(())
}
