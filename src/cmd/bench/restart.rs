//! `weir bench restart`: time from a task's restart to its first output with a large
//! committed state, after a clean stop and after `kill -9`.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use weir_log::{BatchBuilder, Log, LogOptions, PartitionId, Timestamp};

use crate::cli::BenchRestartArgs;

use super::*;

/// Bytes under `dir`, recursively.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// `weir pipeline run latest` over the bench's scratch directory, as a child process.
fn latest_child(scratch: &Path) -> Result<std::process::Child> {
    Ok(std::process::Command::new(std::env::current_exe()?)
        .arg("--data-dir")
        .arg(scratch.join("log"))
        .args([
            "pipeline", "run", "latest", "--app", "restart", "--input", "in", "--output", "out",
        ])
        .arg("--state-dir")
        .arg(scratch.join("state"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?)
}

/// The child's last metrics snapshot, if it wrote one.
fn child_metrics(scratch: &Path) -> Option<weir_engine::MetricsSnapshot> {
    let b = std::fs::read(scratch.join("log/pipelines/restart.json")).ok()?;
    serde_json::from_slice(&b).ok()
}

/// `bench restart --crash`: a child builds the state and is SIGKILLed right after processing
/// the last record; a new child is timed from its start to the output of a record appended
/// in between.
fn restart_after_kill(scratch: &Path, keys: u64) -> Result<()> {
    let log_dir = scratch.join("log");
    let start = Instant::now();
    let mut child = latest_child(scratch)?;
    loop {
        std::thread::sleep(Duration::from_millis(5));
        if child_metrics(scratch).is_some_and(|m| m.records_in >= keys) {
            break;
        }
        if let Some(status) = child.try_wait()? {
            bail!("the pipeline exited with {status} while building the state");
        }
        if start.elapsed() > Duration::from_secs(3600) {
            bail!("building the state did not finish within an hour");
        }
    }
    child.kill()?; // SIGKILL: unflushed memtables are lost
    child.wait()?;
    eprintln!(
        "  built the state in a child process and killed it with SIGKILL after {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let state_bytes = dir_bytes(&scratch.join("state"));
    let out_end = {
        let log = Log::open_with(&log_dir, LogOptions::without_cleaner())?;
        log.append(
            "in",
            PartitionId(0),
            &[weir_log::Record::keyed("k0", "after the crash")],
        )?;
        log.latest_offset("out", PartitionId(0))?
    };
    let _ = std::fs::remove_file(log_dir.join("pipelines/restart.json"));
    let view = Log::open_read_only(&log_dir, LogOptions::default())?;
    let t0 = Instant::now();
    let mut child = latest_child(scratch)?;
    let first = 'wait: loop {
        view.refresh("out")?;
        let f = view.read_isolated(
            "out",
            PartitionId(0),
            out_end,
            1 << 20,
            weir_log::Isolation::ReadCommitted,
        )?;
        for r in f.records() {
            if r?.key == Some(b"k0".as_slice()) {
                break 'wait t0.elapsed();
            }
        }
        if let Some(status) = child.try_wait()? {
            bail!("the restarted pipeline exited with {status}");
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("no output within 10 minutes of the restart");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    // Its metrics (written every second) tell how much of the changelog it restored: the
    // first snapshot written after the output appeared.
    let seen_ms = start_ms();
    let deadline = Instant::now() + Duration::from_secs(5);
    let restored = loop {
        if let Some(m) = child_metrics(scratch).filter(|m| m.at_ms >= seen_ms) {
            break Some(m.tasks.iter().map(|t| t.restored_records).sum::<u64>());
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill()?;
    child.wait()?;
    println!(
        "bench restart --crash: {:.0} MiB of committed state ({keys} keys), writer SIGKILLed — first output {:.0} ms after the new process started (process start, log recovery, RocksDB open, changelog tail restore, commit); changelog records restored: {}",
        state_bytes as f64 / (1024.0 * 1024.0),
        first.as_secs_f64() * 1000.0,
        restored.map_or("unknown".to_string(), |n| n.to_string()),
    );
    Ok(())
}

/// The pipeline of `bench restart`: the latest value per key (state), its length out.
fn latest_value_pipeline() -> Result<weir_engine::Topology> {
    super::super::builtin::builtin(
        "latest",
        "restart",
        super::super::builtin::Source {
            name: "in",
            queue: false,
        },
        "out",
        &crate::cli::WindowArgs::default(),
    )
}

pub fn restart(data_dir: &Path, a: BenchRestartArgs) -> Result<()> {
    use weir_engine::RunOptions;
    if a.value_bytes == 0 || a.state_mb == 0 {
        bail!("--state-mb and --value-bytes must be at least 1");
    }
    let scratch = Scratch::new(data_dir, "restart")?;
    let log_dir = scratch.0.join("log");
    let state_dir = scratch.0.join("state");
    let keys = a.state_mb * 1024 * 1024 / a.value_bytes as u64;
    let flush_os = || weir_log::TopicConfig::parse_pairs(&["flush=os"]);
    {
        let log = Log::open_with(&log_dir, LogOptions::without_cleaner())?;
        log.create_topic("in", 1, flush_os()?)?;
        log.create_topic("out", 1, flush_os()?)?;
        eprintln!(
            "  writing {keys} records of {} B under distinct keys ...",
            a.value_bytes
        );
        let mut rng = weir_log::sim::SeededRng::new(7);
        let mut b = BatchBuilder::with_capacity(1100 * 1024);
        let now = Timestamp(start_ms());
        let mut pending = VecDeque::new();
        for k in 0..keys {
            // Incompressible-ish values, so the state on disk is as large as it says.
            let value: String = (0..a.value_bytes)
                .map(|_| (b'a' + rng.below(26) as u8) as char)
                .collect();
            b.push_parts(
                Some(format!("k{k}").as_bytes()),
                Some(value.as_bytes()),
                &[],
                now,
            );
            if b.size() >= 900 * 1024 {
                let full = std::mem::replace(&mut b, BatchBuilder::with_capacity(1100 * 1024));
                pending.push_back(log.submit_batch("in", PartitionId(0), full.finish())?);
                while pending.len() > 8 {
                    if let Some(t) = pending.pop_front() {
                        t.wait()?;
                    }
                }
            }
        }
        if b.count() > 0 {
            pending.push_back(log.submit_batch("in", PartitionId(0), b.finish())?);
        }
        for t in pending {
            t.wait()?;
        }
    }
    if a.crash {
        return restart_after_kill(&scratch.0, keys);
    }
    {
        let log = Log::open_with(&log_dir, LogOptions::without_cleaner())?;
        let (groups, txns) = weir_coord::start(&log)?;
        let start = Instant::now();
        let running =
            latest_value_pipeline()?.run(&log, &groups, &txns, RunOptions::new(&state_dir))?;
        while running.metrics.records_in.load(Ordering::Relaxed) < keys {
            std::thread::sleep(Duration::from_millis(20));
            if start.elapsed() > Duration::from_secs(3600) {
                bail!("building the state did not finish within an hour");
            }
        }
        running.stop()?;
        eprintln!(
            "  built the state: {keys} keys in {:.1} s ({:.0} records/s)",
            start.elapsed().as_secs_f64(),
            keys as f64 / start.elapsed().as_secs_f64()
        );
    }
    let state_bytes = dir_bytes(&state_dir);
    let mut firsts = Vec::new();
    for round in 0..a.rounds.max(1) {
        // A new record for an existing key, written while the pipeline is down.
        let out_end = {
            let log = Log::open_with(&log_dir, LogOptions::without_cleaner())?;
            log.append(
                "in",
                PartitionId(0),
                &[weir_log::Record::keyed(format!("k{round}"), "restarted")],
            )?;
            log.latest_offset("out", PartitionId(0))?
        };
        let t0 = Instant::now();
        let log = Log::open_with(&log_dir, LogOptions::without_cleaner())?;
        let opened = t0.elapsed();
        let (groups, txns) = weir_coord::start(&log)?;
        let coordinators = t0.elapsed();
        let running =
            latest_value_pipeline()?.run(&log, &groups, &txns, RunOptions::new(&state_dir))?;
        let first = loop {
            let f = log.read_isolated(
                "out",
                PartitionId(0),
                out_end,
                1 << 16,
                weir_log::Isolation::ReadCommitted,
            )?;
            if f.records().next().is_some() {
                break t0.elapsed();
            }
            if t0.elapsed() > Duration::from_secs(600) {
                bail!("no output within 10 minutes of the restart");
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let restored: u64 = running
            .metrics()
            .tasks
            .iter()
            .map(|t| t.restored_records)
            .sum();
        running.stop()?;
        println!(
            "bench restart: round {round}: {:.0} MiB of committed state ({keys} keys) — first output {:.0} ms after the restart began (log open {:.0} ms, coordinators {:.0} ms); changelog records restored: {restored}",
            state_bytes as f64 / (1024.0 * 1024.0),
            first.as_secs_f64() * 1000.0,
            opened.as_secs_f64() * 1000.0,
            (coordinators - opened).as_secs_f64() * 1000.0,
        );
        firsts.push(first);
        drop((groups, txns));
        drop(log);
    }
    firsts.sort();
    println!(
        "  restart to first output: median {:.0} ms, max {:.0} ms over {} round(s)",
        firsts[firsts.len() / 2].as_secs_f64() * 1000.0,
        firsts[firsts.len() - 1].as_secs_f64() * 1000.0,
        firsts.len()
    );
    drop(scratch);
    Ok(())
}
