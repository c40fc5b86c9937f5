//! `weir bench pull`: pull queries by key on a materialized view, through the Postgres
//! protocol. A `datagen` stream of `--keys` rows feeds a view grouped by its id (one row per
//! key); once every key is in the view, a client on another thread (tokio-postgres, one
//! connection, one prepared statement) asks for random keys one at a time, and the latency of
//! each round trip is recorded: parse-free execution, planning, the RocksDB lookup, encoding
//! and the loopback network.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use weir_log::{Log, LogOptions};
use weir_sql::{Database, Engine, Output};

use crate::cli::BenchPullArgs;

use super::Scratch;

/// How long the benchmark waits for the view to hold every key.
const FILL_TIMEOUT: Duration = Duration::from_secs(3600);

pub fn pull(data_dir: &Path, a: BenchPullArgs) -> Result<()> {
    if a.keys == 0 || a.queries == 0 || a.partitions == 0 {
        bail!("--keys, --queries and --partitions must be at least 1");
    }
    let scratch = Scratch::new(data_dir, "pull")?;
    let log = Log::open_with(scratch.0.join("log"), LogOptions::without_cleaner())?;
    let (groups, txns) = weir_coord::start(&log)?;
    let engine = Engine {
        groups,
        txns,
        state_dir: scratch.0.join("state"),
    };
    let db = Database::open(&log, Some(engine))?;
    let mut session = db.session()?;
    session
        .execute(&format!(
            "CREATE STREAM gen (id BIGINT, price AS (id * 48271) % 100000 + 1)
               WITH (connector = 'datagen', 'number-of-rows' = '{}', partitions = {},
                     'fields.id.kind' = 'sequence');
             CREATE MATERIALIZED VIEW v AS SELECT id, COUNT(*) AS n, MAX(price) AS hi
               FROM gen GROUP BY id WITH (partitions = {});",
            a.keys, a.partitions, a.partitions
        ))
        .context("creating the view")?;
    let started = Instant::now();
    wait_filled(&mut session, a.keys)?;
    eprintln!(
        "bench pull: the view holds {} keys after {:.1} s",
        a.keys,
        started.elapsed().as_secs_f64()
    );
    let server = weir_pg::PgServerHandle::start(db.clone(), "127.0.0.1:0")?;
    let addr = server.local_addr();
    let hist = measure(&addr.to_string(), &a)?;
    server.shutdown();
    db.stop_queries();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "pull query by key, {} keys, {} queries through pgwire (prepared, one connection): \
         p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms; {:.0} queries/s",
        a.keys,
        hist.len(),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        hist.max() as f64 / 1000.0,
        1e6 / hist.mean().max(1e-9)
    );
    Ok(())
}

/// Waits until the view has a row per key.
fn wait_filled(session: &mut weir_sql::Session, keys: u64) -> Result<()> {
    let deadline = Instant::now() + FILL_TIMEOUT;
    loop {
        let out = session.execute("SELECT COUNT(*) FROM v")?;
        if let Some(Output::Rows { batches, .. }) = out.into_iter().next().map(|o| o.output) {
            let n = batches
                .first()
                .and_then(|b| {
                    b.column(0)
                        .as_any()
                        .downcast_ref::<weir_sql::datafusion::arrow::array::Int64Array>()
                        .map(|a| a.value(0))
                })
                .unwrap_or(0);
            if n as u64 >= keys {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the view did not fill in {FILL_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Runs the queries on a client of its own; latencies in µs.
fn measure(addr: &str, a: &BenchPullArgs) -> Result<Histogram<u64>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (host, port) = addr.rsplit_once(':').context("bad address")?;
    let config = format!("host={host} port={port} user=weir dbname=weir");
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
            .await
            .context("connecting")?;
        tokio::spawn(connection);
        let statement = client
            .prepare("SELECT n, hi FROM v WHERE id = $1")
            .await
            .context("preparing")?;
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let mut rng = weir_log::sim::SeededRng::new(7);
        let warm = (a.queries / 10).max(1);
        for i in 0..warm + a.queries {
            let key = (rng.next_u64() % a.keys) as i64;
            let t = Instant::now();
            let rows = client.query(&statement, &[&key]).await?;
            let took = t.elapsed();
            let n: Option<i64> = rows.first().and_then(|r| r.try_get(0).ok());
            if rows.len() != 1 || n != Some(1) {
                bail!(
                    "key {key}: expected one row with n = 1, got {} rows",
                    rows.len()
                );
            }
            if i >= warm {
                hist.saturating_record(took.as_micros() as u64);
            }
        }
        Ok(hist)
    })
}
