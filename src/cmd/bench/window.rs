//! `weir bench window`: throughput (records per core-second) and peak memory of the
//! `window-count` built-in pipeline (count + max event time per key and window), exactly once,
//! over records whose event time advances at a fixed rate; by default a last record per
//! partition far past every window closes them all, so emitting is measured too.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use weir_log::{BatchBuilder, Log, LogOptions, PartitionId, Timestamp};

use crate::cli::{BenchWindowArgs, WindowArgs};

use super::{process_cpu_seconds, Scratch};

/// Peak resident set size of this process so far (VmHWM), in bytes.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Writes the input: record i keyed `key-{i mod keys}` with `{"ts": i * 1000 / rate}`.
fn write_input(log: &Log, a: &BenchWindowArgs) -> Result<i64> {
    let mut pending = VecDeque::new();
    let mut builders: Vec<BatchBuilder> = (0..a.partitions)
        .map(|_| BatchBuilder::with_capacity(300 * 1024))
        .collect();
    let rate = a.events_per_second.max(1) as i64;
    let mut last_ts = 0;
    for i in 0..a.records {
        let key = format!("key-{}", i % a.keys.max(1));
        let ts = i as i64 * 1000 / rate;
        last_ts = ts;
        let value = format!("{{\"ts\":{ts}}}");
        let p = weir_log::partitioner::partition_for_key(key.as_bytes(), a.partitions).0 as usize;
        builders[p].push_parts(
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            &[],
            Timestamp(ts),
        );
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
    for (p, mut b) in builders.into_iter().enumerate() {
        if !a.keep_open {
            // Far past every window: closes them all.
            let end = last_ts + 3_600_000;
            let v = format!("{{\"ts\":{end}}}");
            b.push_parts(Some(b"end"), Some(v.as_bytes()), &[], Timestamp(end));
        }
        if b.count() > 0 {
            pending.push_back(log.submit_batch("in", PartitionId(p as u32), b.finish())?);
        }
    }
    for t in pending {
        t.wait()?;
    }
    Ok(last_ts)
}

pub fn window(data_dir: &Path, a: BenchWindowArgs) -> Result<()> {
    if a.records == 0 || a.partitions == 0 || a.keys == 0 {
        bail!("--records, --keys and --partitions must be at least 1");
    }
    let scratch = Scratch::new(data_dir, "window")?;
    let log = Log::open_with(scratch.0.join("log"), LogOptions::without_cleaner())?;
    let flush_os = weir_log::TopicConfig::parse_pairs(&["flush=os"])?;
    log.create_topic("in", a.partitions, flush_os.clone())?;
    log.create_topic("out", a.partitions, flush_os)?;
    eprintln!("  writing {} input records ...", a.records);
    let last_ts = write_input(&log, &a)?;
    let extra = if a.keep_open { 0 } else { a.partitions as u64 };
    let (groups, txns) = weir_coord::start(&log)?;
    let window = WindowArgs {
        window: Some(a.window.clone()),
        emit: a.emit.clone(),
        ..WindowArgs::default()
    };
    let topology = super::super::builtin::builtin(
        "window-count",
        "bench-window",
        super::super::builtin::Source {
            name: "in",
            queue: false,
        },
        "out",
        &window,
    )?;
    let mut opts = weir_engine::RunOptions::new(scratch.0.join("state"));
    opts.commit_interval = Duration::from_millis(a.commit_ms.max(1));
    let rss_before = peak_rss_bytes();
    let start = Instant::now();
    let cpu_start = process_cpu_seconds();
    let running = topology.run(&log, &groups, &txns, opts)?;
    while running.metrics.records_in.load(Ordering::Relaxed) < a.records + extra {
        std::thread::sleep(Duration::from_millis(5));
        if start.elapsed() > Duration::from_secs(3600) {
            bail!("the pipeline did not finish within an hour");
        }
    }
    // Closing windows takes a few time updates after the last record.
    let closed_target = if a.keep_open { 0 } else { 1 };
    while closed_target > 0
        && running
            .metrics()
            .tasks
            .iter()
            .map(|t| t.open_windows)
            .sum::<i64>()
            > extra as i64
    {
        std::thread::sleep(Duration::from_millis(5));
        if start.elapsed() > Duration::from_secs(3600) {
            bail!("the windows did not close within an hour");
        }
    }
    let snapshot = running.metrics();
    running.stop()?;
    let secs = start.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds().zip(cpu_start).map(|(e, s)| e - s);
    let open: i64 = snapshot.tasks.iter().map(|t| t.open_windows).sum();
    let closed: u64 = snapshot.operators.iter().map(|o| o.counters.closed).sum();
    println!(
        "bench window: window-count {} emit {} — {} records over {} keys, {} ms of event time, {} task(s), exactly-once, commit every {} ms: {:.0} records/s ({:.2} s); windows closed {closed}, open at the end {open}",
        a.window,
        a.emit,
        a.records,
        a.keys,
        last_ts,
        a.partitions,
        a.commit_ms,
        a.records as f64 / secs,
        secs
    );
    if let Some(cpu) = cpu {
        println!(
            "  CPU: {cpu:.2} core-seconds for all threads = {:.0} records per core-second",
            a.records as f64 / cpu.max(1e-3)
        );
    }
    if let Some(peak) = peak_rss_bytes() {
        println!(
            "  peak RSS of the process: {:.0} MiB (before the pipeline started: {:.0} MiB)",
            peak as f64 / (1 << 20) as f64,
            rss_before.unwrap_or(0) as f64 / (1 << 20) as f64
        );
    }
    drop((groups, txns));
    drop(log);
    drop(scratch);
    Ok(())
}
