//! `weir bench sql`: a persistent SQL query over a `datagen` stream into a `blackhole` sink,
//! exactly once — the engine alone, no log reads or writes but its commits. The default query
//! is Nexmark q1's shape (a projection with arithmetic); `--select` runs another over `gen`,
//! whose event time advances by `--events-per-second`; `--windowed` runs a 10 s tumbling
//! COUNT + MAX per key over 10,000 keys, emitted on window close.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use weir_log::{Log, LogOptions};
use weir_sql::{Engine, Session};

use crate::cli::BenchSqlArgs;

use super::{process_cpu_seconds, Scratch};

/// Nexmark q1: bids with their price converted to euros.
pub const Q1: &str = "SELECT auction, bidder, 0.908 * price AS price, ts FROM gen";

/// A tumbling count and max per key over 10,000 keys.
pub const WINDOWED: &str =
    "SELECT id % 10000 AS k, window_start, COUNT(*) AS n, MAX(price) AS top \
     FROM TUMBLE(gen, ts, INTERVAL '10' SECOND) GROUP BY id % 10000, window_start \
     EMIT ON WINDOW CLOSE";

/// How long the benchmark waits for its query before it gives up.
const BENCH_TIMEOUT: Duration = Duration::from_secs(3600);

pub fn sql(data_dir: &Path, a: BenchSqlArgs) -> Result<()> {
    if a.rows == 0 || a.partitions == 0 {
        bail!("--rows and --partitions must be at least 1");
    }
    if a.batch {
        return batch(data_dir, &a);
    }
    let scratch = Scratch::new(data_dir, "sql")?;
    let log = Log::open_with(scratch.0.join("log"), LogOptions::without_cleaner())?;
    let (groups, txns) = weir_coord::start(&log)?;
    let engine = Engine {
        groups,
        txns,
        state_dir: scratch.0.join("state"),
    };
    let mut session = Session::open_with_engine(&log, engine)?;
    let select = match (&a.select, a.windowed) {
        (Some(s), _) => s.clone(),
        (None, true) => WINDOWED.to_string(),
        (None, false) => Q1.to_string(),
    };
    session
        .execute(&format!(
            "CREATE STREAM gen (id BIGINT, auction AS id % 1000, bidder AS (id * 7) % 100000,
                                price AS (id * 48271) % 100000 + 1,
                                ts AS TO_TIMESTAMP_MILLIS(id * 1000 / {}),
                                WATERMARK FOR ts AS ts - INTERVAL '4' SECOND)
               WITH (connector = 'datagen', 'number-of-rows' = '{}', partitions = {},
                     'fields.id.kind' = 'sequence');",
            a.events_per_second.max(1),
            a.rows,
            a.partitions
        ))
        .context("creating the datagen stream")?;
    let start = Instant::now();
    let cpu_start = process_cpu_seconds();
    session
        .execute(&format!(
            "CREATE SINK bench AS {select} WITH (connector = 'blackhole')"
        ))
        .context("creating the query")?;
    loop {
        // Every part of the plan (a repartitioned aggregate has two) reads every row once.
        let (done, parts) = session.query_metrics("bench").map_or((0, 1), |m| {
            let parts = (m.tasks.len() as u64 / u64::from(a.partitions)).max(1);
            (m.records_in, parts)
        });
        if done >= a.rows * parts {
            break;
        }
        if start.elapsed() > BENCH_TIMEOUT {
            bail!(
                "the query did not finish within an hour ({done} of {} rows)",
                a.rows
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds().zip(cpu_start).map(|(e, s)| e - s);
    let metrics = session.query_metrics("bench");
    session.stop_queries();
    println!(
        "bench sql: `{select}` over {} generated rows, {} task(s), exactly-once, into a blackhole: {:.0} rows/s ({secs:.2} s)",
        a.rows,
        a.partitions,
        a.rows as f64 / secs
    );
    if let Some(cpu) = cpu {
        println!(
            "  CPU: {cpu:.2} core-seconds for all threads = {:.0} rows per core-second",
            a.rows as f64 / cpu.max(1e-3)
        );
    }
    if let Some(m) = metrics {
        println!("  {} commits; commit p99 {} µs", m.commits, m.commit_us.p99);
    }
    drop(session);
    drop(log);
    drop(scratch);
    Ok(())
}

/// The batch query of `--batch`: a GROUP BY over the JSON records of a topic.
pub const BATCH: &str =
    "SELECT auction, COUNT(*) AS n, MAX(price) AS top FROM bids GROUP BY auction";

/// Bytes of one appended batch while writing the input.
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// `--batch`: writes `rows` JSON bids over `partitions` partitions, then times a batch GROUP BY
/// over all of them (read_committed scans of every partition in parallel, JSON decoding,
/// DataFusion's hash aggregate).
fn batch(data_dir: &Path, a: &BenchSqlArgs) -> Result<()> {
    let scratch = Scratch::new(data_dir, "sql-batch")?;
    let log = Log::open_with(scratch.0.join("log"), LogOptions::without_cleaner())?;
    let mut session = Session::open(&log)?;
    session.execute(&format!(
        "CREATE STREAM bids (auction BIGINT, bidder BIGINT, price BIGINT, ts TIMESTAMP)
           WITH (partitions = {})",
        a.partitions
    ))?;
    eprintln!("  writing {} JSON records ...", a.rows);
    let mut builders: Vec<weir_log::BatchBuilder> = (0..a.partitions)
        .map(|_| weir_log::BatchBuilder::with_capacity(WRITE_BATCH_BYTES + 1024))
        .collect();
    let base = 1_767_225_600_000u64;
    for i in 0..a.rows {
        let p = (i % u64::from(a.partitions)) as usize;
        let value = format!(
            r#"{{"auction":{},"bidder":{},"price":{},"ts":{}}}"#,
            i % 10_000,
            (i * 7) % 100_000,
            (i * 48_271) % 100_000 + 1,
            base + i
        );
        builders[p].push_parts(None, Some(value.as_bytes()), &[], weir_log::Timestamp(0));
        if builders[p].size() >= WRITE_BATCH_BYTES {
            let full = std::mem::replace(
                &mut builders[p],
                weir_log::BatchBuilder::with_capacity(WRITE_BATCH_BYTES + 1024),
            );
            log.submit_batch("bids", weir_log::PartitionId(p as u32), full.finish())?
                .wait()?;
        }
    }
    for (p, b) in builders.into_iter().enumerate() {
        if b.count() > 0 {
            log.submit_batch("bids", weir_log::PartitionId(p as u32), b.finish())?
                .wait()?;
        }
    }
    let mut best = f64::MAX;
    for run in 1..=3 {
        let start = Instant::now();
        let cpu_start = process_cpu_seconds();
        let out = session.execute(BATCH)?;
        let secs = start.elapsed().as_secs_f64();
        let cpu = process_cpu_seconds().zip(cpu_start).map(|(e, s)| e - s);
        let groups: usize = match out.last().map(|o| &o.output) {
            Some(weir_sql::Output::Rows { batches, .. }) => {
                batches.iter().map(|b| b.num_rows()).sum()
            }
            _ => 0,
        };
        best = best.min(secs);
        println!(
            "bench sql --batch run {run}: `{BATCH}` over {} JSON records in {} partition(s): {:.0} records/s ({secs:.2} s, {groups} groups){}",
            a.rows,
            a.partitions,
            a.rows as f64 / secs,
            cpu.map_or(String::new(), |c| format!("; {c:.2} core-seconds"))
        );
    }
    println!("  best: {:.0} records/s", a.rows as f64 / best);
    drop(session);
    drop(log);
    drop(scratch);
    Ok(())
}
