//! `weir bench pipeline`: throughput (and, with `--rate`, end-to-end latency) of engine
//! pipelines: a stateless filter + map, or a keyed count with RocksDB state.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use weir_log::{BatchBuilder, Log, LogOptions, PartitionId, Timestamp};

use crate::cli::BenchPipelineArgs;

use super::*;

/// An order as the pipeline benchmark's JSON values carry it (about 100 bytes encoded).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct BenchOrder {
    id: u64,
    amount: i64,
    note: String,
}

pub fn pipeline(data_dir: &Path, a: BenchPipelineArgs) -> Result<()> {
    use weir_engine::{Guarantee, RunOptions};
    let guarantees: Vec<Guarantee> = match a.guarantee.as_str() {
        "exactly_once" => vec![Guarantee::ExactlyOnce],
        "at_least_once" => vec![Guarantee::AtLeastOnce],
        "both" => vec![Guarantee::ExactlyOnce, Guarantee::AtLeastOnce],
        other => bail!("--guarantee `{other}`: expected exactly_once, at_least_once or both"),
    };
    if a.records == 0 || a.partitions == 0 {
        bail!("--records and --partitions must be at least 1");
    }
    if let Some(rate) = a.rate {
        return pipeline_latency(data_dir, &a, &guarantees, rate);
    }
    let scratch = Scratch::new(data_dir, "pipeline")?;
    let log = Log::open_with(scratch.0.join("log"), LogOptions::without_cleaner())?;
    log.create_topic(
        "in",
        a.partitions,
        weir_log::TopicConfig::parse_pairs(&["flush=os"])?,
    )?;
    eprintln!("  writing {} input records ...", a.records);
    let now = Timestamp(start_ms());
    let note = "x".repeat(60);
    let mut pending = VecDeque::new();
    let mut builders: Vec<BatchBuilder> = (0..a.partitions)
        .map(|_| BatchBuilder::with_capacity(300 * 1024))
        .collect();
    for i in 0..a.records {
        let key = format!("customer-{}", i % if a.keys > 0 { a.keys } else { 1000 });
        let value = serde_json::to_vec(&BenchOrder {
            id: i,
            amount: (i % 10) as i64 - 1,
            note: note.clone(),
        })?;
        let p = weir_log::partitioner::partition_for_key(key.as_bytes(), a.partitions).0 as usize;
        builders[p].push_parts(Some(key.as_bytes()), Some(&value), &[], now);
        if builders[p].size() >= 256 * 1024 {
            let full = std::mem::replace(&mut builders[p], BatchBuilder::with_capacity(300 * 1024));
            pending.push_back(log.submit_batch("in", PartitionId(p as u32), full.finish())?);
            while pending.len() > 8 {
                if let Some(t) = pending.pop_front() {
                    t.wait()?;
                }
            }
        }
    }
    for (p, b) in builders.into_iter().enumerate() {
        if b.count() > 0 {
            pending.push_back(log.submit_batch("in", PartitionId(p as u32), b.finish())?);
        }
    }
    for t in pending {
        t.wait()?;
    }
    let (groups, txns) = weir_coord::start(&log)?;
    let mut rates = Vec::new();
    for (round, guarantee) in guarantees.iter().enumerate() {
        let app = format!("bench-{round}");
        let out = format!("out-{round}");
        log.create_topic(
            &out,
            a.partitions,
            weir_log::TopicConfig::parse_pairs(&["flush=os"])?,
        )?;
        let mut opts = RunOptions::new(scratch.0.join("state"));
        opts.guarantee = *guarantee;
        opts.commit_interval = Duration::from_millis(a.commit_ms.max(1));
        let start = Instant::now();
        let cpu_start = process_cpu_seconds();
        let running = bench_topology(&app, "in", a.keys, &out)?.run(&log, &groups, &txns, opts)?;
        while running.metrics.records_in.load(Ordering::Relaxed) < a.records {
            std::thread::sleep(Duration::from_millis(5));
            if start.elapsed() > Duration::from_secs(3600) {
                bail!("the pipeline did not finish within an hour");
            }
        }
        running.stop()?;
        let secs = start.elapsed().as_secs_f64();
        let cpu = process_cpu_seconds()
            .zip(cpu_start)
            .map(|(end, start)| end - start);
        let rate = a.records as f64 / secs;
        rates.push(rate);
        println!(
            "bench pipeline: {} — {} records ({} B JSON values), {} partition(s)/task(s), {:?}, commit every {} ms: {:.0} records/s ({:.2} s, processed and committed)",
            if a.keys > 0 { format!("keyed count over {} keys (RocksDB state + changelog)", a.keys) } else { "stateless filter + map".to_string() },
            a.records,
            serde_json::to_vec(&BenchOrder { id: 1, amount: 1, note: note.clone() })?.len(),
            a.partitions,
            guarantee,
            a.commit_ms,
            rate,
            secs
        );
        if let Some(cpu) = cpu {
            println!(
                "  CPU: {cpu:.2} core-seconds for all threads (task, log writers, RocksDB) = {:.0} records per core-second",
                a.records as f64 / cpu.max(1e-3)
            );
        }
    }
    if rates.len() == 2 {
        println!(
            "  exactly-once / at-least-once throughput: {:.2}",
            rates[0] / rates[1]
        );
    }
    drop((groups, txns));
    drop(log);
    drop(scratch);
    Ok(())
}

/// The benchmark pipeline: a keyed count over `keys` keys, or (0) a stateless filter + map.
fn bench_topology(app: &str, input: &str, keys: u64, out: &str) -> Result<weir_engine::Topology> {
    use weir_engine::{Json, Pipeline, Utf8};
    let p = Pipeline::builder(app);
    let orders = p.stream::<String, BenchOrder>(input, Utf8, Json);
    if keys > 0 {
        orders.group_by_key().count().to_topic(out, Utf8, Json);
    } else {
        orders
            .filter(|_, o| o.amount > 0)
            .map_values(|o| o.amount)
            .to_topic(out, Utf8, Json);
    }
    Ok(p.build()?)
}

/// `bench pipeline --rate R`: records produced at a steady rate while the pipeline runs;
/// end-to-end latency is the commit time minus each input record's timestamp.
fn pipeline_latency(
    data_dir: &Path,
    a: &BenchPipelineArgs,
    guarantees: &[weir_engine::Guarantee],
    rate: u64,
) -> Result<()> {
    use weir_engine::RunOptions;
    if rate == 0 {
        bail!("--rate must be at least 1");
    }
    let scratch = Scratch::new(data_dir, "latency")?;
    let log = Log::open_with(scratch.0.join("log"), LogOptions::without_cleaner())?;
    let (groups, txns) = weir_coord::start(&log)?;
    let note = "x".repeat(60);
    for (round, guarantee) in guarantees.iter().enumerate() {
        let (input, out) = (format!("in-{round}"), format!("out-{round}"));
        for t in [&input, &out] {
            log.create_topic(
                t,
                a.partitions,
                weir_log::TopicConfig::parse_pairs(&["flush=os"])?,
            )?;
        }
        let topology = bench_topology(&format!("latency-{round}"), &input, a.keys, &out)?;
        let mut opts = RunOptions::new(scratch.0.join("state"));
        opts.guarantee = *guarantee;
        opts.commit_interval = Duration::from_millis(a.commit_ms.max(1));
        let running = topology.run(&log, &groups, &txns, opts)?;
        let start = Instant::now();
        let mut sent = 0u64;
        while sent < a.records {
            let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(a.records);
            let mut builders: Vec<BatchBuilder> = (0..a.partitions)
                .map(|_| BatchBuilder::with_capacity(64 * 1024))
                .collect();
            let now = Timestamp(start_ms());
            while sent < due {
                let key = format!("customer-{}", sent % if a.keys > 0 { a.keys } else { 1000 });
                let value = serde_json::to_vec(&BenchOrder {
                    id: sent,
                    amount: (sent % 10) as i64 - 1,
                    note: note.clone(),
                })?;
                let p = weir_log::partitioner::partition_for_key(key.as_bytes(), a.partitions).0;
                let b = &mut builders[p as usize];
                b.push_parts(Some(key.as_bytes()), Some(&value), &[], now);
                if b.size() >= 900 * 1024 {
                    let full = std::mem::replace(b, BatchBuilder::with_capacity(64 * 1024));
                    log.submit_batch(&input, PartitionId(p), full.finish())?;
                }
                sent += 1;
            }
            for (p, b) in builders.into_iter().enumerate() {
                if b.count() > 0 {
                    log.submit_batch(&input, PartitionId(p as u32), b.finish())?;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        while running.metrics.records_in.load(Ordering::Relaxed) < a.records {
            std::thread::sleep(Duration::from_millis(5));
            if start.elapsed() > Duration::from_secs(3600) {
                bail!("the pipeline did not keep up within an hour");
            }
        }
        // Let the last interval commit on its own schedule before stopping.
        std::thread::sleep(Duration::from_millis(a.commit_ms.max(1) * 2));
        let m = running.metrics();
        running.stop()?;
        println!(
            "bench pipeline latency: {} — {} records at {rate} records/s, {} partition(s), {:?}, commit every {} ms: end-to-end p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms; commit p50 {:.1} ms, p99 {:.1} ms",
            if a.keys > 0 { format!("keyed count over {} keys", a.keys) } else { "stateless filter + map".to_string() },
            a.records,
            a.partitions,
            guarantee,
            a.commit_ms,
            m.end_to_end_ms.p50,
            m.end_to_end_ms.p99,
            m.end_to_end_ms.p999,
            m.end_to_end_ms.max,
            m.commit_us.p50 as f64 / 1000.0,
            m.commit_us.p99 as f64 / 1000.0,
        );
    }
    drop((groups, txns));
    drop(log);
    drop(scratch);
    Ok(())
}
