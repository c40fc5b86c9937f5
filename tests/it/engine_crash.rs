//! C4 with real process kills: a stateful pipeline (`weir pipeline run keyed-count`) runs as a
//! child process over seeded per-key records and is SIGKILLed at about 20%, 40% and 60% of its
//! progress, restarted each time, then drained. Exactly-once: every key's output is 1, 2, …, n
//! (no gap, no duplicate) — the output of a run without failures. At-least-once: nothing is
//! lost. Records: `WEIR_C4_RECORDS` (default 100,000).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use weir_log::{Isolation, Log, LogOptions, Offset, PartitionId};

use crate::util::{weir, Rng};

const KEYS: u64 = 100;

fn records() -> u64 {
    std::env::var("WEIR_C4_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000)
}

fn seed(dir: &Path, n: u64) -> anyhow::Result<()> {
    let log = Log::open_with(dir, LogOptions::without_cleaner())?;
    log.create_topic("in", 4, Default::default())?;
    log.create_topic("out", 2, Default::default())?;
    let mut per_partition: BTreeMap<u32, Vec<weir_log::Record>> = BTreeMap::new();
    for i in 0..n {
        let key = format!("k{}", i % KEYS);
        let p = log.partition_for("in", key.as_bytes())?.0;
        per_partition
            .entry(p)
            .or_default()
            .push(weir_log::Record::keyed(key, format!("{}", i / KEYS + 1)));
    }
    for (p, recs) in per_partition {
        for chunk in recs.chunks(5000) {
            log.append("in", PartitionId(p), chunk)?;
        }
    }
    Ok(())
}

/// Per key, the values of `out` in offset order.
fn outputs(dir: &Path, isolation: Isolation) -> anyhow::Result<BTreeMap<String, Vec<u64>>> {
    let log = Log::open_read_only(dir, LogOptions::default())?;
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for p in 0..2 {
        let mut at = Offset(0);
        loop {
            let f = log.read_isolated("out", PartitionId(p), at, 1 << 20, isolation)?;
            if f.is_empty() {
                break;
            }
            for r in f.records() {
                let r = r?;
                let k = String::from_utf8_lossy(r.key.unwrap_or_default()).into_owned();
                by_key
                    .entry(k)
                    .or_default()
                    .push(String::from_utf8_lossy(r.value.unwrap_or_default()).parse()?);
            }
            at = f.next_offset();
        }
    }
    Ok(by_key)
}

fn run_pipeline(dir: &Path, at_least_once: bool, until_idle: bool) -> std::process::Command {
    let mut c = weir(dir);
    c.args([
        "pipeline",
        "run",
        "keyed-count",
        "--app",
        "c4",
        "--input",
        "in",
        "--output",
        "out",
        "--commit-ms",
        "50",
    ]);
    if at_least_once {
        c.arg("--at-least-once");
    }
    if until_idle {
        c.args(["--until-idle-ms", "1500"]);
    }
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

fn crash_three_times_then_drain(dir: &Path, at_least_once: bool, n: u64) -> anyhow::Result<()> {
    let mut rng = Rng::from_env("c4_kill_9");
    for target in [0.2, 0.4, 0.6] {
        let mut child = run_pipeline(dir, at_least_once, false).spawn()?;
        let t0 = Instant::now();
        loop {
            let produced: usize = outputs(dir, Isolation::ReadUncommitted)?
                .values()
                .map(Vec::len)
                .sum();
            if produced as f64 >= target * n as f64 {
                break;
            }
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("the pipeline exited early with {status}");
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(300),
                "no progress to {target}"
            );
            std::thread::sleep(Duration::from_millis(20 + rng.below(30)));
        }
        child.kill()?; // SIGKILL
        child.wait()?;
    }
    let out = run_pipeline(dir, at_least_once, true).output()?;
    anyhow::ensure!(
        out.status.success(),
        "final run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn exactly_once_pipeline_output_is_exact_across_kill_9() -> anyhow::Result<()> {
    let n = records();
    let d = tempfile::tempdir()?;
    seed(d.path(), n)?;
    crash_three_times_then_drain(d.path(), false, n)?;
    let out = outputs(d.path(), Isolation::ReadCommitted)?;
    anyhow::ensure!(out.len() as u64 == KEYS, "{} keys in the output", out.len());
    let want: Vec<u64> = (1..=n / KEYS).collect();
    for (k, counts) in &out {
        if counts != &want {
            let dup = counts.windows(2).find(|w| w[1] <= w[0]);
            anyhow::bail!(
                "key {k}: {} outputs, expected {}; first out-of-sequence pair {dup:?}",
                counts.len(),
                want.len()
            );
        }
    }
    Ok(())
}

#[test]
fn at_least_once_pipeline_loses_nothing_across_kill_9() -> anyhow::Result<()> {
    let n = records() / 4;
    let d = tempfile::tempdir()?;
    seed(d.path(), n)?;
    crash_three_times_then_drain(d.path(), true, n)?;
    let out = outputs(d.path(), Isolation::ReadCommitted)?;
    for (k, counts) in &out {
        let last = counts.last().copied().unwrap_or(0);
        anyhow::ensure!(
            last >= n / KEYS,
            "key {k}: final count {last} < {}",
            n / KEYS
        );
    }
    anyhow::ensure!(out.len() as u64 == KEYS);
    Ok(())
}
