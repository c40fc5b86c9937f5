//! `weir bench sql`: a persistent SQL query over a `datagen` stream into a `blackhole` sink,
//! exactly once — the engine alone, no log reads or writes but its commits. The default query
//! is Nexmark q1's shape (a projection with arithmetic); `--select` runs another over `gen`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use weir_log::{Log, LogOptions};
use weir_sql::{Engine, Session};

use crate::cli::BenchSqlArgs;

use super::{process_cpu_seconds, Scratch};

/// Nexmark q1: bids with their price converted to euros.
pub const Q1: &str = "SELECT auction, bidder, 0.908 * price AS price, ts FROM gen";

/// How long the benchmark waits for its query before it gives up.
const BENCH_TIMEOUT: Duration = Duration::from_secs(3600);

pub fn sql(data_dir: &Path, a: BenchSqlArgs) -> Result<()> {
    if a.rows == 0 || a.partitions == 0 {
        bail!("--rows and --partitions must be at least 1");
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
    let select = a.select.clone().unwrap_or_else(|| Q1.to_string());
    session
        .execute(&format!(
            "CREATE STREAM gen (id BIGINT, auction AS id % 1000, bidder AS (id * 7) % 100000,
                                price AS (id * 48271) % 100000 + 1, ts AS TO_TIMESTAMP_MILLIS(id),
                                WATERMARK FOR ts AS ts - INTERVAL '4' SECOND)
               WITH (connector = 'datagen', 'number-of-rows' = '{}', partitions = {},
                     'fields.id.kind' = 'sequence');",
            a.rows, a.partitions
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
        let done = session.query_metrics("bench").map_or(0, |m| m.records_in);
        if done >= a.rows {
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
