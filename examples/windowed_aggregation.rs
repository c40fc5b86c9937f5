//! Windowed aggregation over event time: a generated bid stream (a little out of order) is
//! aggregated per auction in tumbling 10 s windows (bids and top price) and hopping 10 s
//! windows every 2 s (bids), each result emitted once, when its window closes.
//!
//! Run: `cargo run --example windowed_aggregation`

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_engine::{Emit, Hopping, Json, Pipeline, RunOptions, Tumbling, Windowed};
use weir_log::{Log, PartitionId, Record};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Bid {
    auction: u64,
    price: u64,
    ts: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Stats {
    bids: u64,
    top: u64,
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path().join("log"))?;
    for topic in ["bids", "auction-stats", "auction-trend"] {
        log.create_topic(topic, 2, Default::default())?;
    }
    // 1,200 bids on 3 auctions over 60 s of event time, up to 500 ms out of order.
    for i in 0..1200u64 {
        let ts = (i * 50) as i64 + ((i * 7919) % 1000) as i64 - 500;
        let bid = Bid {
            auction: i % 3,
            price: (i * 48271) % 1000,
            ts: ts.max(0),
        };
        log.send(
            "bids",
            Some(&serde_json::to_vec(&bid.auction)?),
            Some(&serde_json::to_vec(&bid)?),
        )?;
    }
    // A bid far in the future on each partition moves the watermark past every window.
    for p in 0..2 {
        let late = Bid {
            auction: 99,
            price: 0,
            ts: 3_600_000,
        };
        let r = Record::keyed(
            serde_json::to_vec(&late.auction)?,
            serde_json::to_vec(&late)?,
        );
        log.append("bids", PartitionId(p), &[r])?;
    }

    let p = Pipeline::builder("auctions");
    let bids = p
        .stream::<u64, Bid>("bids", Json, Json)
        .with_event_time(|b| b.ts, Duration::from_secs(1))?; // watermark: 1 s behind
    let per_auction = bids.group_by_key();
    per_auction
        .window(Tumbling::of(Duration::from_secs(10)).grace(Duration::from_secs(2)))
        .aggregate_with(
            Stats::default,
            |s, b: &Bid, _| {
                s.bids += 1;
                s.top = s.top.max(b.price);
            },
            |s, o| {
                s.bids += o.bids;
                s.top = s.top.max(o.top);
            },
        )
        .emit(Emit::OnWindowClose)
        .to_topic("auction-stats", Json, Json);
    per_auction
        .window(Hopping::of(Duration::from_secs(10), Duration::from_secs(2)))
        .named("trend")
        .count()
        .emit(Emit::OnWindowClose)
        .to_topic("auction-trend", Json, Json);
    let (groups, txns) = weir_coord::start(&log)?;
    p.build()?
        .run(
            &log,
            &groups,
            &txns,
            RunOptions::new(dir.path().join("state")),
        )?
        .stop_when_idle(Duration::from_millis(500), Duration::from_secs(60))?;

    let mut stats: Vec<(Windowed<u64>, Stats)> = Vec::new();
    read("auction-stats", &log, |k, v| {
        stats.push((serde_json::from_slice(k)?, serde_json::from_slice(v)?));
        Ok(())
    })?;
    stats.sort_by_key(|(w, _)| (w.key, w.start));
    println!("auction 0, tumbling 10 s windows:");
    for (w, s) in stats.iter().filter(|(w, _)| w.key == 0) {
        println!(
            "  [{:>5} ms, {:>5} ms)  {:>3} bids, top {}",
            w.start, w.end, s.bids, s.top
        );
    }
    let mut trend = 0;
    read("auction-trend", &log, |_, _| {
        trend += 1;
        Ok(())
    })?;
    println!("hopping 10 s windows every 2 s: {trend} results, one per auction and window");
    Ok(())
}

/// Calls `f` with every committed (key, value) of `topic`.
fn read(
    topic: &str,
    log: &Log,
    mut f: impl FnMut(&[u8], &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for p in 0..log.partition_count(topic)? {
        let from = log.earliest_offset(topic, PartitionId(p))?;
        log.for_each_record(
            topic,
            PartitionId(p),
            from,
            weir_log::Isolation::ReadCommitted,
            |r| f(r.key.unwrap_or_default(), r.value.unwrap_or_default()),
        )?;
    }
    Ok(())
}
