//! `weir bench join`: throughput (input records per core-second) of a stream–stream windowed
//! inner join, exactly once: two topics whose records share keys round-robin, event time
//! advancing at a fixed rate on both, matched within `--within-ms`.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use weir_engine::{JoinType, JoinWindow, Json, Pipeline, RunOptions, Utf8};
use weir_log::{BatchBuilder, Log, LogOptions, PartitionId, Timestamp};

use crate::cli::BenchJoinArgs;

use super::{process_cpu_seconds, Scratch};

/// Writes `records` to `topic`: record i keyed `key-{i mod keys}`, value its id, stamped with
/// event time i / rate.
fn write_side(log: &Log, topic: &str, a: &BenchJoinArgs, offset_ms: i64) -> Result<()> {
    let rate = a.events_per_second.max(1) as i64;
    let mut builders: Vec<BatchBuilder> = (0..a.partitions)
        .map(|_| BatchBuilder::with_capacity(300 * 1024))
        .collect();
    for i in 0..a.records {
        let key = format!("key-{}", i % a.keys.max(1));
        let ts = Timestamp(i as i64 * 1000 / rate + offset_ms);
        let p = weir_log::partitioner::partition_for_key(key.as_bytes(), a.partitions).0 as usize;
        builders[p].push_parts(
            Some(key.as_bytes()),
            Some(i.to_string().as_bytes()),
            &[],
            ts,
        );
        if builders[p].size() >= 256 * 1024 {
            let full = std::mem::replace(&mut builders[p], BatchBuilder::with_capacity(300 * 1024));
            log.submit_batch(topic, PartitionId(p as u32), full.finish())?
                .wait()?;
        }
    }
    for (p, b) in builders.into_iter().enumerate() {
        if b.count() > 0 {
            log.submit_batch(topic, PartitionId(p as u32), b.finish())?
                .wait()?;
        }
    }
    Ok(())
}

pub fn join(data_dir: &Path, a: BenchJoinArgs) -> Result<()> {
    if a.records == 0 || a.partitions == 0 || a.keys == 0 {
        bail!("--records, --keys and --partitions must be at least 1");
    }
    let scratch = Scratch::new(data_dir, "join")?;
    let log = Log::open_with(scratch.0.join("log"), LogOptions::without_cleaner())?;
    let flush_os = weir_log::TopicConfig::parse_pairs(&["flush=os"])?;
    for t in ["left", "right", "out"] {
        log.create_topic(t, a.partitions, flush_os.clone())?;
    }
    eprintln!("  writing {} records per side ...", a.records);
    write_side(&log, "left", &a, 0)?;
    write_side(&log, "right", &a, 100)?;
    let p = Pipeline::builder("bench-join");
    let left = p.stream::<String, u64>("left", Utf8, Json);
    let right = p.stream::<String, u64>("right", Utf8, Json);
    left.join_stream(
        &right,
        JoinWindow::within(Duration::from_millis(a.within_ms)),
        JoinType::Inner,
        |l, r| (l.copied().unwrap_or(0), r.copied().unwrap_or(0)),
    )
    .to_topic("out", Utf8, Json);
    let (groups, txns) = weir_coord::start(&log)?;
    let opts = RunOptions::new(scratch.0.join("state"));
    let start = Instant::now();
    let cpu_start = process_cpu_seconds();
    let running = p.build()?.run(&log, &groups, &txns, opts)?;
    let total = 2 * a.records;
    while running.metrics.records_in.load(Ordering::Relaxed) < total {
        std::thread::sleep(Duration::from_millis(5));
        if start.elapsed() > Duration::from_secs(3600) {
            bail!("the join did not finish within an hour");
        }
    }
    let snapshot = running.metrics();
    running.stop()?;
    let secs = start.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds().zip(cpu_start).map(|(e, s)| e - s);
    let joined = snapshot
        .operators
        .iter()
        .find(|o| o.name.starts_with("join_stream"))
        .map_or(0, |o| o.counters.records_out);
    println!(
        "bench join: inner join within {} ms — {} records per side over {} keys, {} task(s), exactly-once: {:.0} input records/s ({:.2} s); {joined} joined results",
        a.within_ms,
        a.records,
        a.keys,
        a.partitions,
        total as f64 / secs,
        secs
    );
    if let Some(cpu) = cpu {
        println!(
            "  CPU: {cpu:.2} core-seconds for all threads = {:.0} input records per core-second",
            total as f64 / cpu.max(1e-3)
        );
    }
    drop((groups, txns));
    drop(log);
    drop(scratch);
    Ok(())
}
