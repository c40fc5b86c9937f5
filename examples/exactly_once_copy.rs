//! Consume → transform → produce, exactly once: a group consumer reads `orders`, a
//! transactional producer writes the transformed records to `totals` and commits the
//! consumer's offsets in the same transaction. A read_committed reader of `totals` sees each
//! input exactly once, even though the first attempt here is aborted midway.
//!
//! Run: `cargo run --example exactly_once_copy`

use std::time::Duration;

use weir_coord::{Consumer, ConsumerConfig, OffsetReset, TransactionalProducer};
use weir_log::{Isolation, Log, Offset, PartitionId, Record};

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path())?;
    log.create_topic("orders", 2, Default::default())?;
    log.create_topic("totals", 2, Default::default())?;
    for i in 0..10 {
        log.send(
            "orders",
            Some(format!("customer-{}", i % 3).as_bytes()),
            Some(format!("{}", i * 10).as_bytes()),
        )?;
    }
    let (groups, txns) = weir_coord::start(&log)?;
    let mut cfg = ConsumerConfig::new("copier");
    cfg.auto_commit_interval = None;
    cfg.auto_offset_reset = OffsetReset::Earliest;
    cfg.isolation = Isolation::ReadCommitted;

    for attempt in ["aborted", "committed"] {
        let mut consumer = Consumer::new(&groups, cfg.clone());
        consumer.subscribe(&["orders"])?;
        let mut producer = TransactionalProducer::new(&txns, "copier-1", Duration::from_secs(30))?;
        producer.begin()?;
        let records = consumer.poll(Duration::from_secs(2))?;
        let mut offsets = Vec::new();
        for r in &records {
            let cents: i64 =
                String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).parse()?;
            let out = Record::keyed(
                r.key.clone().unwrap_or_default(),
                format!("{} cents", cents * 100),
            );
            producer.send_to("totals", PartitionId(r.partition), &[out])?;
            offsets.push(((r.topic.clone(), r.partition), r.offset.plus(1)));
        }
        producer.send_offsets_to_transaction("copier", &offsets)?;
        if attempt == "aborted" {
            producer.abort()?; // as if the process failed before committing
        } else {
            producer.commit()?;
        }
        println!("{attempt}: {} records processed", records.len());
        consumer.close()?;
    }

    let mut seen = 0;
    for p in 0..2 {
        let f = log.read_isolated(
            "totals",
            PartitionId(p),
            Offset(0),
            1 << 20,
            Isolation::ReadCommitted,
        )?;
        for r in f.records() {
            let r = r?;
            println!(
                "totals/{p}: {} = {}",
                String::from_utf8_lossy(r.key.unwrap_or_default()),
                String::from_utf8_lossy(r.value.unwrap_or_default())
            );
            seen += 1;
        }
    }
    println!("read_committed sees {seen} outputs for 10 inputs");
    assert_eq!(seen, 10);
    Ok(())
}
