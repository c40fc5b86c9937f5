//! Persistent SQL queries are exactly once across real process kills: a windowed aggregate
//! (a sink into a plain topic, and the same query as a materialized view) runs in `weir serve`,
//! which is SIGKILLed at about 40% of the output (20%, 40% and 60% with more cycles) and started again each time (it
//! resumes every query of the catalog), then drained. Every (key, window) is emitted exactly
//! once with the counts a brute-force reference computes, and the view holds exactly those
//! rows. Records: `WEIR_SQL_CRASH_RECORDS` (default 40,000); one kill in CI,
//! `WEIR_SQL_CRASH_CYCLES=3` for three (each restart waits out the killed instance's group
//! session, 10 s, before its queries resume).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use weir_log::{Isolation, Log, LogOptions, Offset, PartitionId, Record, Timestamp};

use crate::kafka_interop::Served;
use crate::util::Rng;

const KEYS: u64 = 40;
/// Event time between consecutive records.
const STEP_MS: i64 = 10;
const WINDOW_MS: i64 = 10_000;

fn records() -> u64 {
    std::env::var("WEIR_SQL_CRASH_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40_000)
}

const QUERY: &str = "SELECT k, window_start, COUNT(*) AS n, SUM(v) AS total
    FROM TUMBLE(ev, ts, INTERVAL '10' SECOND) GROUP BY k, window_start EMIT ON WINDOW CLOSE";

/// Seeds the stream, the sink and the view; returns (count, sum) per (key, window start).
fn seed(dir: &Path, n: u64) -> anyhow::Result<BTreeMap<(i64, i64), (i64, i64)>> {
    let log = Log::open_with(dir, LogOptions::without_cleaner())?;
    let (groups, txns) = weir_coord::start(&log)?;
    let engine = weir_sql::Engine {
        groups,
        txns,
        state_dir: dir.join("state"),
    };
    let mut session = weir_sql::Session::open_with_engine(&log, engine)?;
    session.execute(
        "CREATE STREAM ev (k BIGINT, v BIGINT, ts TIMESTAMP,
                           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (partitions = 2)",
    )?;
    let mut want: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    let mut per_partition: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
    for i in 0..n {
        let (k, ts, v) = ((i % KEYS) as i64, i as i64 * STEP_MS, (i % 7) as i64);
        let w = want.entry((k, ts - ts % WINDOW_MS)).or_default();
        w.0 += 1;
        w.1 += v;
        per_partition
            .entry((i % 2) as u32)
            .or_default()
            .push(Record::value(format!(r#"{{"k":{k},"v":{v},"ts":{ts}}}"#)).at(Timestamp(ts)));
    }
    let end = n as i64 * STEP_MS + 1_000 * WINDOW_MS;
    for p in 0..2 {
        let records = per_partition.entry(p).or_default();
        records.push(Record::value(format!(r#"{{"k":-1,"v":0,"ts":{end}}}"#)).at(Timestamp(end)));
        for chunk in records.chunks(5000) {
            log.append("ev", PartitionId(p), chunk)?;
        }
    }
    // Created here (and stopped with this session at once); `weir serve` resumes them.
    session.execute(&format!(
        "CREATE SINK agg AS {QUERY} WITH (topic = 'out', partitions = 2);
         CREATE MATERIALIZED VIEW agg_view AS {QUERY};"
    ))?;
    Ok(want)
}

/// (key, window start) → the (count, sum) of every row emitted for it, in offset order.
type Emitted = BTreeMap<(i64, i64), Vec<(i64, i64)>>;

/// Every (key, window start) of `topic` with its (count, sum)s, in offset order.
fn outputs(dir: &Path, topic: &str, isolation: Isolation) -> anyhow::Result<Emitted> {
    let log = Log::open_read_only(dir, LogOptions::default())?;
    let mut out = Emitted::new();
    let Ok(partitions) = log.partition_count(topic) else {
        return Ok(out);
    };
    for p in 0..partitions {
        let mut at = Offset(0);
        loop {
            let f = log.read_isolated(topic, PartitionId(p), at, 1 << 20, isolation)?;
            if f.is_empty() {
                break;
            }
            for r in f.records() {
                let r = r?;
                let v: serde_json::Value = serde_json::from_slice(r.value.unwrap_or_default())?;
                let k = v["k"].as_i64().unwrap_or(-2);
                if k < 0 {
                    continue;
                }
                let start = v["window_start"].as_i64().unwrap_or(-1);
                let counts = (
                    v["n"].as_i64().unwrap_or(-1),
                    v["total"].as_i64().unwrap_or(-1),
                );
                out.entry((k, start)).or_default().push(counts);
            }
            at = f.next_offset();
        }
    }
    Ok(out)
}

#[test]
fn a_persistent_windowed_query_is_exactly_once_across_kill_9_of_weir_serve() -> anyhow::Result<()> {
    let n = records();
    let d = tempfile::tempdir()?;
    let seeded = Instant::now();
    let want = seed(d.path(), n)?;
    eprintln!("sql_crash: seeded in {:?}", seeded.elapsed());
    let mut rng = Rng::from_env("sql_kill_9");
    let total = want.len();
    let targets: &[f64] = match std::env::var("WEIR_SQL_CRASH_CYCLES").ok().as_deref() {
        Some("1") | None => &[0.4],
        _ => &[0.2, 0.4, 0.6],
    };
    for &target in targets {
        let started = Instant::now();
        let served = Served::start(d.path())?;
        eprintln!("sql_crash: served in {:?}", started.elapsed());
        let t0 = Instant::now();
        loop {
            let produced: usize = outputs(d.path(), "out", Isolation::ReadUncommitted)?
                .values()
                .map(Vec::len)
                .sum();
            if produced as f64 >= target * total as f64 {
                eprintln!(
                    "sql_crash: kill -9 at {produced} of {total} windows ({:?} after start)",
                    t0.elapsed()
                );
                break;
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(300),
                "no progress to {target}"
            );
            std::thread::sleep(Duration::from_millis(10 + rng.below(40)));
        }
        served.kill_9()?;
    }
    let served = Served::start(d.path())?;
    let t0 = Instant::now();
    loop {
        let done = outputs(d.path(), "out", Isolation::ReadCommitted)?.len() >= total
            && outputs(d.path(), "__weir_view.agg_view", Isolation::ReadCommitted)?.len() >= total;
        if done {
            break;
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(300),
            "the drain did not finish"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("sql_crash: drained in {:?}", t0.elapsed());
    served.stop()?;
    let got = outputs(d.path(), "out", Isolation::ReadCommitted)?;
    for (w, counts) in &got {
        anyhow::ensure!(
            counts.len() == 1,
            "{w:?} emitted {} times: {counts:?}",
            counts.len()
        );
    }
    let got: BTreeMap<(i64, i64), (i64, i64)> = got.into_iter().map(|(w, c)| (w, c[0])).collect();
    anyhow::ensure!(
        got == want,
        "{} windows emitted, {} expected; first difference {:?}",
        got.len(),
        want.len(),
        want.iter().find(|(w, c)| got.get(*w) != Some(c))
    );
    let view = outputs(d.path(), "__weir_view.agg_view", Isolation::ReadCommitted)?;
    let view: BTreeMap<(i64, i64), (i64, i64)> = view
        .into_iter()
        .filter_map(|(w, c)| c.last().map(|last| (w, *last)))
        .collect();
    anyhow::ensure!(
        view == want,
        "the view holds {} rows, {} expected",
        view.len(),
        want.len()
    );
    Ok(())
}
