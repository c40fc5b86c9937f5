//! C4 with real process kills: a stateful pipeline (`weir pipeline run keyed-count`) runs as a
//! child process over seeded per-key records and is SIGKILLed at about 20%, 40% and 60% of its
//! progress, restarted each time, then drained; once it is also paused (SIGSTOP, SIGCONT) on
//! the way. Exactly-once: every key's output is 1, 2, …, n (no gap, no duplicate) — the output
//! of a run without failures — and the dead-letter topic holds each of the seeded poison
//! records (1 per 1,000) exactly once, with its origin. At-least-once: nothing is lost.
//! Records: `WEIR_C4_RECORDS` (default 100,000).
//!
//! Also: a crash while a task restores its state from the changelog, and a second process for
//! the same data directory refused while the first is paused.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use weir_log::{Isolation, Log, LogOptions, Offset, PartitionId};

use crate::util::{kill_9_at, weir, Rng};

const KEYS: u64 = 100;

fn records() -> u64 {
    std::env::var("WEIR_C4_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000)
}

/// Seeds `n` counted records over `KEYS` keys into `in` (4 partitions) plus one poison record
/// (a value that is not UTF-8) per 1,000; returns the poison records' (partition, offset).
fn seed(dir: &Path, n: u64) -> anyhow::Result<BTreeSet<(u32, i64)>> {
    let log = Log::open_with(dir, LogOptions::without_cleaner())?;
    log.create_topic("in", 4, Default::default())?;
    log.create_topic("out", 2, Default::default())?;
    let mut per_partition: BTreeMap<u32, Vec<weir_log::Record>> = BTreeMap::new();
    let mut poison = BTreeSet::new();
    for i in 0..n {
        let key = format!("k{}", i % KEYS);
        let p = log.partition_for("in", key.as_bytes())?.0;
        per_partition
            .entry(p)
            .or_default()
            .push(weir_log::Record::keyed(key, format!("{}", i / KEYS + 1)));
        if i % 1000 == 999 {
            let key = format!("poison-{i}");
            let p = log.partition_for("in", key.as_bytes())?.0;
            let records = per_partition.entry(p).or_default();
            poison.insert((p, records.len() as i64));
            records.push(weir_log::Record::keyed(key, vec![0xff, 0xfe, 0xfd]));
        }
    }
    for (p, recs) in per_partition {
        for chunk in recs.chunks(5000) {
            log.append("in", PartitionId(p), chunk)?;
        }
    }
    Ok(poison)
}

/// (source partition, source offset) of every committed record of the dead-letter topic.
fn dead_letters(dir: &Path) -> anyhow::Result<Vec<(u32, i64)>> {
    let log = Log::open_read_only(dir, LogOptions::default())?;
    let mut out = Vec::new();
    log.for_each_record(
        "c4.dlq",
        PartitionId(0),
        Offset(0),
        Isolation::ReadCommitted,
        |r| {
            let header = |name: &str| {
                r.headers()
                    .filter_map(Result::ok)
                    .find(|(k, _)| *k == name.as_bytes())
                    .and_then(|(_, v)| v)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default()
            };
            anyhow::ensure!(header("weir.error").contains("not valid UTF-8"));
            anyhow::ensure!(header("weir.source.topic") == "in");
            out.push((
                header("weir.source.partition").parse()?,
                header("weir.source.offset").parse()?,
            ));
            Ok(())
        },
    )?;
    Ok(out)
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

/// Sends a signal to a process with `kill(1)`.
fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let st = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()?;
    anyhow::ensure!(st.success(), "kill {sig} {pid} failed");
    Ok(())
}

fn crash_three_times_then_drain(dir: &Path, at_least_once: bool, n: u64) -> anyhow::Result<()> {
    let mut rng = Rng::from_env("c4_kill_9");
    for target in [0.2, 0.4, 0.6] {
        let mut child = run_pipeline(dir, at_least_once, false).spawn()?;
        let pid = child.id();
        // On the second run, a pause (SIGSTOP, then SIGCONT half a second later) at 30%.
        let mut pause_at = (target == 0.4).then_some((0.3 * n as f64) as usize);
        let pause = |produced: usize| -> anyhow::Result<()> {
            if pause_at.is_some_and(|p| produced >= p) {
                signal(pid, "-STOP")?;
                std::thread::sleep(Duration::from_millis(500));
                signal(pid, "-CONT")?;
                pause_at = None;
            }
            Ok(())
        };
        let produced = || -> anyhow::Result<usize> {
            let out = outputs(dir, Isolation::ReadUncommitted)?;
            Ok(out.values().map(Vec::len).sum())
        };
        let target = (target * n as f64) as usize;
        kill_9_at(&mut child, target, produced, pause, (20, 30), &mut rng)?;
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
    let poison = seed(d.path(), n)?;
    crash_three_times_then_drain(d.path(), false, n)?;
    let out = outputs(d.path(), Isolation::ReadCommitted)?;
    anyhow::ensure!(out.len() as u64 == KEYS, "{} keys in the output", out.len());
    // Row 10: every poison record is in the dead-letter topic exactly once.
    let mut dead = dead_letters(d.path())?;
    dead.sort();
    let want_dead: Vec<(u32, i64)> = poison.into_iter().collect();
    anyhow::ensure!(
        dead == want_dead,
        "dead letters {} (first {:?}), expected {} (first {:?})",
        dead.len(),
        dead.first(),
        want_dead.len(),
        want_dead.first()
    );
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
    let poison = seed(d.path(), n)?;
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
    // Dead letters may repeat under at-least-once, but none is missing.
    let dead: BTreeSet<(u32, i64)> = dead_letters(d.path())?.into_iter().collect();
    anyhow::ensure!(dead == poison, "dead letters {dead:?} != poison {poison:?}");
    Ok(())
}

/// `weir pipeline run keyed-count` as `app` from topic `one` into `one-out`.
fn count_one(dir: &Path, app: &str) -> std::process::Command {
    let mut c = weir(dir);
    c.args([
        "pipeline",
        "run",
        "keyed-count",
        "--app",
        app,
        "--input",
        "one",
        "--output",
        "one-out",
    ]);
    c
}

/// Runs keyed-count over a one-partition topic until idle.
fn drain(dir: &Path, app: &str) -> anyhow::Result<()> {
    let out = count_one(dir, app)
        .args(["--until-idle-ms", "1000"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "pipeline failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn append_one_per_key(dir: &Path, keys: u64, value: &str) -> anyhow::Result<()> {
    let log = Log::open_with(dir, LogOptions::without_cleaner())?;
    log.ensure_topic("one", 1, Default::default())?;
    log.ensure_topic("one-out", 1, Default::default())?;
    let records: Vec<weir_log::Record> = (0..keys)
        .map(|k| weir_log::Record::keyed(format!("k{k}"), value.to_string()))
        .collect();
    for chunk in records.chunks(5000) {
        log.append("one", PartitionId(0), chunk)?;
    }
    Ok(())
}

#[test]
fn a_crash_while_restoring_state_loses_and_repeats_nothing() -> anyhow::Result<()> {
    const KEYS: u64 = 50_000;
    let d = tempfile::tempdir()?;
    append_one_per_key(d.path(), KEYS, "a")?;
    drain(d.path(), "restorer")?;
    // The state directory is lost: the next start rebuilds it from the changelog (50,000
    // records), and is killed while doing so.
    std::fs::remove_dir_all(d.path().join("state"))?;
    append_one_per_key(d.path(), KEYS, "b")?;
    let mut child = count_one(d.path(), "restorer")
        .env("WEIR_LOG", "weir_engine=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let mut seen = Vec::new();
    loop {
        let Some(line) = lines.next().transpose()? else {
            anyhow::bail!("the pipeline ended before restoring: {seen:?}");
        };
        let restoring = line.contains("restoring from the changelog");
        seen.push(line);
        if restoring {
            child.kill()?; // SIGKILL, mid-restore
            break;
        }
    }
    child.wait()?;
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    anyhow::ensure!(
        !seen
            .iter()
            .chain(&rest)
            .any(|l| l.contains("restore complete")),
        "the restore finished before the kill: {seen:?} {rest:?}"
    );
    drain(d.path(), "restorer")?;
    // Per key: 1 from the first run, 2 from the run after the restore; nothing lost or twice.
    let log = Log::open_read_only(d.path(), LogOptions::default())?;
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    log.for_each_record(
        "one-out",
        PartitionId(0),
        Offset(0),
        Isolation::ReadCommitted,
        |r| {
            counts
                .entry(String::from_utf8_lossy(r.key.unwrap_or_default()).into_owned())
                .or_default()
                .push(String::from_utf8_lossy(r.value.unwrap_or_default()).parse()?);
            Ok::<(), anyhow::Error>(())
        },
    )?;
    anyhow::ensure!(counts.len() as u64 == KEYS, "{} keys", counts.len());
    for (k, c) in &counts {
        anyhow::ensure!(c == &[1, 2], "key {k}: {c:?}");
    }
    Ok(())
}

#[test]
fn a_second_process_is_refused_while_the_first_is_paused() -> anyhow::Result<()> {
    let d = tempfile::tempdir()?;
    append_one_per_key(d.path(), 1000, "a")?;
    let mut first = count_one(d.path(), "solo")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // Wait until it holds the directory and has committed something, then freeze it.
    let t0 = Instant::now();
    while !d.path().join("pipelines/solo.json").exists() {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(60),
            "the first never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(first.id(), "-STOP")?;
    let second = count_one(d.path(), "solo")
        .args(["--until-idle-ms", "200"])
        .output()?;
    signal(first.id(), "-CONT")?;
    first.kill()?;
    first.wait()?;
    let err = String::from_utf8_lossy(&second.stderr);
    anyhow::ensure!(!second.status.success(), "the second instance ran");
    anyhow::ensure!(
        err.contains(&format!("pid {}", first.id())),
        "the error should name the holder: {err}"
    );
    // The frozen instance is the only one that ever wrote: one output per key.
    drain(d.path(), "solo")?;
    let log = Log::open_read_only(d.path(), LogOptions::default())?;
    let mut n = 0;
    log.for_each_record(
        "one-out",
        PartitionId(0),
        Offset(0),
        Isolation::ReadCommitted,
        |_| {
            n += 1;
            Ok::<(), weir_log::LogError>(())
        },
    )?;
    anyhow::ensure!(n == 1000, "{n} outputs for 1000 records");
    Ok(())
}
