//! Exactly-once from a queue across `kill -9`: `weir pipeline run keyed-count --queue`
//! consumes a queue (its acks committed in the same transaction as its counts and state) and
//! is SIGKILLed at about 25%, 50% and 75% of its progress, restarted each time, then
//! drained. Every key's counts are 1, 2, …, n — no gap, no duplicate: each message counted
//! once however the crashes fell, the messages a killed run held coming back after their
//! locks — and the queue ends with nothing visible, in flight or delayed: every message
//! acked. Messages: `WEIR_QUEUE_EO_MESSAGES` (default 20,000).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use weir_log::{Isolation, Log, LogOptions, Offset, PartitionId};
use weir_queue::{Outgoing, QueueConfig, Queues};

use crate::util::{kill_9_at, weir, Rng};

const KEYS: usize = 50;
/// The queue's lock: what a killed run held comes back this long after it took it.
const VISIBILITY_MS: i64 = 1000;

fn messages() -> usize {
    std::env::var("WEIR_QUEUE_EO_MESSAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000)
}

/// The queue `jobs` (2 partitions) with `n` messages over `KEYS` keys, and the topic `out`.
fn seed(dir: &Path, n: usize) -> anyhow::Result<()> {
    let log = Log::open_with(dir, LogOptions::without_cleaner())?;
    let (_groups, txns) = weir_coord::start(&log)?;
    let queues = Queues::open(&log, &txns)?;
    let config = QueueConfig {
        partitions: 2,
        visibility_ms: VISIBILITY_MS,
        ..QueueConfig::default()
    };
    let queue = queues.create("jobs", config)?;
    let all: Vec<Outgoing> = (0..n)
        .map(|i| Outgoing {
            group: Some(format!("k{}", i % KEYS).into()),
            ..Outgoing::body(format!("m{i}"))
        })
        .collect();
    for chunk in all.chunks(1000) {
        queue.send(chunk)?;
    }
    log.create_topic("out", 2, Default::default())?;
    drop(queues);
    log.close();
    Ok(())
}

/// Per key, the counts in `out` in offset order.
fn outputs(dir: &Path, isolation: Isolation) -> anyhow::Result<BTreeMap<String, Vec<u64>>> {
    let log = Log::open_read_only(dir, LogOptions::default())?;
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for p in 0..2 {
        log.for_each_record::<anyhow::Error>("out", PartitionId(p), Offset(0), isolation, |r| {
            let k = String::from_utf8_lossy(r.key.unwrap_or_default()).into_owned();
            let v = String::from_utf8_lossy(r.value.unwrap_or_default()).parse()?;
            by_key.entry(k).or_default().push(v);
            Ok(())
        })?;
    }
    Ok(by_key)
}

fn run_pipeline(dir: &Path, until_idle: bool) -> std::process::Command {
    let mut c = weir(dir);
    c.args([
        "pipeline",
        "run",
        "keyed-count",
        "--app",
        "qc",
        "--input",
        "jobs",
        "--queue",
        "--output",
        "out",
        "--commit-ms",
        "50",
    ]);
    if until_idle {
        // Longer than the locks a killed run left.
        c.args(["--until-idle-ms", "2500"]);
    }
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

#[test]
fn a_pipeline_consuming_a_queue_counts_every_message_once_across_kill_9() -> anyhow::Result<()> {
    let n = messages();
    let d = tempfile::tempdir()?;
    seed(d.path(), n)?;
    let mut rng = Rng::from_env("queue_pipeline_kill_9");
    for target in [0.25, 0.5, 0.75] {
        let mut child = run_pipeline(d.path(), false).spawn()?;
        let produced = || -> anyhow::Result<usize> {
            let out = outputs(d.path(), Isolation::ReadUncommitted)?;
            Ok(out.values().map(Vec::len).sum())
        };
        let target = (target * n as f64) as usize;
        kill_9_at(&mut child, target, produced, |_| Ok(()), (20, 30), &mut rng)?;
    }
    let out = run_pipeline(d.path(), true).output()?;
    anyhow::ensure!(
        out.status.success(),
        "final run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = outputs(d.path(), Isolation::ReadCommitted)?;
    anyhow::ensure!(counts.len() == KEYS, "{} keys in the output", counts.len());
    let want: Vec<u64> = (1..=(n / KEYS) as u64).collect();
    for (k, got) in &counts {
        if got != &want {
            let dup = got.windows(2).find(|w| w[1] <= w[0]);
            anyhow::bail!(
                "key {k}: {} counts, expected {}; first out-of-sequence pair {dup:?}",
                got.len(),
                want.len()
            );
        }
    }
    // Every message acked: nothing left to deliver.
    let log = Log::open_with(d.path(), LogOptions::without_cleaner())?;
    let (_groups, txns) = weir_coord::start(&log)?;
    let stats = Queues::open(&log, &txns)?.get("jobs")?.stats()?;
    anyhow::ensure!(
        stats.visible == 0 && stats.in_flight == 0 && stats.delayed == 0,
        "the queue is not drained: {stats:?}"
    );
    Ok(())
}
