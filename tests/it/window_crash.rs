//! Emit on close is exactly once across real process kills: `weir pipeline run window-count
//! --emit close` over seeded per-key events is SIGKILLed at about 20%, 40% and 60% of its
//! output, restarted each time, then drained. Every (key, window) is emitted exactly once,
//! with the count a brute-force reference computes. Records: `WEIR_WINDOW_RECORDS` (default
//! 40,000).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use weir_log::{Isolation, Log, LogOptions, Offset, PartitionId, Record};

use crate::util::{kill_9_at, weir, Rng};

const KEYS: u64 = 40;
/// Event time between consecutive records.
const STEP_MS: i64 = 10;
const WINDOW_MS: i64 = 10_000;

fn records() -> u64 {
    std::env::var("WEIR_WINDOW_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40_000)
}

/// Seeds `n` events (record i at event time i × STEP_MS, key i mod KEYS) into `in`, then one
/// record per partition far in the future so every window closes; returns the expected count
/// per (key, window start).
fn seed(dir: &Path, n: u64) -> anyhow::Result<BTreeMap<(String, i64), u64>> {
    let log = Log::open_with(dir, LogOptions::without_cleaner())?;
    log.create_topic("in", 2, Default::default())?;
    log.create_topic("out", 2, Default::default())?;
    let mut want = BTreeMap::new();
    let mut per_partition: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
    for i in 0..n {
        let key = format!("k{}", i % KEYS);
        let ts = i as i64 * STEP_MS;
        let p = log.partition_for("in", key.as_bytes())?.0;
        *want.entry((key.clone(), ts - ts % WINDOW_MS)).or_default() += 1;
        per_partition
            .entry(p)
            .or_default()
            .push(Record::keyed(key, format!("{{\"ts\":{ts}}}")));
    }
    let end = n as i64 * STEP_MS + 1_000 * WINDOW_MS;
    for p in 0..2 {
        let records = per_partition.entry(p).or_default();
        records.push(Record::keyed(
            format!("end-{p}"),
            format!("{{\"ts\":{end}}}"),
        ));
        for chunk in records.chunks(5000) {
            log.append("in", PartitionId(p), chunk)?;
        }
    }
    Ok(want)
}

/// Every (key, window start) of `out` with its counts, in offset order.
fn outputs(dir: &Path, isolation: Isolation) -> anyhow::Result<BTreeMap<(String, i64), Vec<u64>>> {
    let log = Log::open_read_only(dir, LogOptions::default())?;
    let mut out: BTreeMap<(String, i64), Vec<u64>> = BTreeMap::new();
    for p in 0..2 {
        let mut at = Offset(0);
        loop {
            let f = log.read_isolated("out", PartitionId(p), at, 1 << 20, isolation)?;
            if f.is_empty() {
                break;
            }
            for r in f.records() {
                let r = r?;
                let key = String::from_utf8_lossy(r.key.unwrap_or_default()).into_owned();
                let v: serde_json::Value = serde_json::from_slice(r.value.unwrap_or_default())?;
                let start = v["window_start"].as_i64().unwrap_or(-1);
                anyhow::ensure!(v["window_end"].as_i64() == Some(start + WINDOW_MS), "{v}");
                out.entry((key, start))
                    .or_default()
                    .push(v["count"].as_u64().unwrap_or(0));
            }
            at = f.next_offset();
        }
    }
    Ok(out)
}

fn run_pipeline(dir: &Path, until_idle: bool) -> std::process::Command {
    let mut c = weir(dir);
    c.args([
        "pipeline",
        "run",
        "window-count",
        "--app",
        "w",
        "--input",
        "in",
        "--output",
        "out",
        "--window",
        "tumbling:10s",
        "--out-of-orderness",
        "1s",
        "--emit",
        "close",
        "--commit-ms",
        "30",
    ]);
    if until_idle {
        c.args(["--until-idle-ms", "1500"]);
    }
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

#[test]
fn emit_on_close_is_exactly_once_across_kill_9() -> anyhow::Result<()> {
    let n = records();
    let d = tempfile::tempdir()?;
    let want = seed(d.path(), n)?;
    let mut rng = Rng::from_env("window_kill_9");
    let total = want.len();
    for target in [0.2, 0.4, 0.6] {
        let mut child = run_pipeline(d.path(), false).spawn()?;
        let produced = || -> anyhow::Result<usize> {
            let out = outputs(d.path(), Isolation::ReadUncommitted)?;
            Ok(out.values().map(Vec::len).sum())
        };
        let target = (target * total as f64) as usize;
        kill_9_at(&mut child, target, produced, |_| Ok(()), (10, 40), &mut rng)?;
    }
    let out = run_pipeline(d.path(), true).output()?;
    anyhow::ensure!(
        out.status.success(),
        "final run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = outputs(d.path(), Isolation::ReadCommitted)?;
    for (w, counts) in &got {
        anyhow::ensure!(
            counts.len() == 1,
            "{w:?} emitted {} times: {counts:?}",
            counts.len()
        );
    }
    let got: BTreeMap<(String, i64), u64> = got.into_iter().map(|(w, c)| (w, c[0])).collect();
    anyhow::ensure!(
        got == want,
        "{} windows emitted, {} expected; first difference {:?}",
        got.len(),
        want.len(),
        want.iter().find(|(w, c)| got.get(*w) != Some(c))
    );
    Ok(())
}
