//! `weir bench cdc`: the PostgreSQL CDC source (`weir_cdc::PgSource`) against the local
//! PostgreSQL (`scripts/postgres.sh`), in a database made for the run.
//!
//! 1. Throughput: `--changes` rows inserted in transactions of [`TXN_ROWS`] while the source is
//!    stopped, then timed until the source has written them all (wal2json decoding through
//!    `pg_logical_slot_peek_changes`, Debezium envelopes, one log transaction per batch with
//!    the progress, the slot advanced after it).
//! 2. Delay: a writer commits `--rate` changes/s (transactions of [`PACED_TXN_ROWS`] rows, paced)
//!    for `--seconds`, through the whole read-model path a user runs — `CREATE SOURCE`, a table
//!    over its topic, an updating view, the PostgreSQL sink — into a table of the same
//!    database; a poller reads the read model's count of events every millisecond (ids are
//!    1, 2, …, so a count of `n` holds every transaction up to id `n`), and each transaction's
//!    delay is from its COMMIT returning to the read model holding it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use tokio_postgres::{Client, NoTls};
use weir_cdc::{PgSource, PgSourceConfig};
use weir_log::{Log, LogOptions};

use super::Scratch;
use crate::cli::BenchCdcArgs;

/// Rows per transaction of the throughput part.
const TXN_ROWS: u64 = 1_000;

/// Rows per transaction of the paced writer.
const PACED_TXN_ROWS: u64 = 50;

/// How often the poller reads the read model.
const POLL: Duration = Duration::from_millis(1);

/// How long the delay part waits for the read model to catch up after the writer stops.
const DRAIN: Duration = Duration::from_secs(60);

/// A blocking PostgreSQL connection.
struct Pg {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

impl Pg {
    fn connect(url: &str) -> Result<Pg> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (client, connection) = runtime
            .block_on(tokio_postgres::connect(url, NoTls))
            .with_context(|| format!("connecting to {url}"))?;
        runtime.spawn(connection);
        Ok(Pg { runtime, client })
    }

    fn execute(&self, sql: &str) -> Result<()> {
        Ok(self.runtime.block_on(self.client.batch_execute(sql))?)
    }

    /// The first column of the first row, as text (`None`: no row, or NULL).
    fn value(&self, sql: &str) -> Result<Option<String>> {
        let rows = self.runtime.block_on(self.client.simple_query(sql))?;
        Ok(rows.into_iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        }))
    }
}

pub fn cdc(data_dir: &Path, a: BenchCdcArgs) -> Result<()> {
    if a.changes == 0 || a.rate == 0 || a.seconds == 0 {
        bail!("--changes, --rate and --seconds must be at least 1");
    }
    let server = weir_cdc::local_server_url()?;
    let db = format!("weir_bench_cdc_{}", std::process::id());
    let admin = Pg::connect(&server)?;
    admin.execute(&format!("CREATE DATABASE {db}"))?;
    let url = format!(
        "{}/{db}",
        server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b)
    );
    let result =
        throughput(data_dir, &url, &db, a.changes).and_then(|()| delay(data_dir, &url, &db, &a));
    let _ = admin.execute(&format!(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '{db}'"
    ));
    let _ = admin.execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    result
}

fn throughput(data_dir: &Path, url: &str, db: &str, changes: u64) -> Result<()> {
    let pg = Pg::connect(url)?;
    pg.execute("CREATE TABLE items (id BIGINT PRIMARY KEY, v TEXT NOT NULL, n BIGINT NOT NULL)")?;
    let scratch = Scratch::new(data_dir, "cdc")?;
    let log = Log::open_with(scratch.0.join("log"), LogOptions::without_cleaner())?;
    let (_groups, txns) = weir_coord::start(&log)?;
    let config = PgSourceConfig {
        name: "bench".into(),
        url: url.into(),
        publication: "bench_pub".into(),
        slot: format!("{db}_throughput"),
        topic_prefix: "bench".into(),
        partitions: 1,
        poll: Duration::from_millis(10),
    };
    let mut source = PgSource::connect(&log, &txns, config).context("connecting the source")?;
    // The (empty) snapshot, so what follows is streamed.
    while source.round()? > 0 {}
    eprintln!("  inserting {changes} rows in transactions of {TXN_ROWS} ...");
    let mut id = 0;
    while id < changes {
        let end = (id + TXN_ROWS).min(changes);
        pg.execute(&format!(
            "INSERT INTO items SELECT g, 'value ' || g, g * 7 FROM generate_series({}, {end}) g",
            id + 1
        ))?;
        id = end;
    }
    let started = Instant::now();
    let mut txns_read = 0;
    loop {
        match source.round()? {
            0 => break,
            n => txns_read += n,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "bench cdc: {changes} changes ({txns_read} transactions of {TXN_ROWS}) read from PostgreSQL and written exactly once: {:.0} changes/s ({secs:.2} s)",
        changes as f64 / secs
    );
    drop(source);
    pg.execute(&format!("DROP TABLE items; DROP PUBLICATION IF EXISTS bench_pub; SELECT pg_drop_replication_slot('{db}_throughput')"))?;
    Ok(())
}

/// Commit instants of the writer's transactions, by their highest id.
type Commits = Arc<Mutex<Vec<(u64, Instant)>>>;

fn delay(data_dir: &Path, url: &str, db: &str, a: &BenchCdcArgs) -> Result<()> {
    let pg = Pg::connect(url)?;
    pg.execute("CREATE TABLE events (id BIGINT PRIMARY KEY, bucket BIGINT NOT NULL, v TEXT)")?;
    let scratch = Scratch::new(data_dir, "cdc-delay")?;
    let log = Log::open_with(scratch.0.join("log"), LogOptions::without_cleaner())?;
    let (groups, txns) = weir_coord::start(&log)?;
    let engine = weir_sql::Engine {
        groups,
        txns,
        state_dir: scratch.0.join("state"),
    };
    let mut session = weir_sql::Session::open_with_engine(&log, engine)?;
    session.execute(&format!(
        "CREATE SOURCE shop WITH (connector = 'postgres-cdc', url = '{url}',
           publication = 'delay_pub', slot = '{db}_delay', 'topic.prefix' = 'shop');
         CREATE TABLE events (id BIGINT PRIMARY KEY, bucket BIGINT, v TEXT)
           WITH (topic = 'shop.public.events', format = 'debezium_json');
         CREATE MATERIALIZED VIEW progress AS
           SELECT bucket, COUNT(*) AS n FROM events GROUP BY bucket;
         CREATE SINK progress_pg FROM progress
           WITH (connector = 'postgres', url = '{url}', table = 'read_model');"
    ))?;
    let commits: Commits = Arc::default();
    let seen: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (url, seen, stop) = (url.to_string(), seen.clone(), stop.clone());
        std::thread::spawn(move || -> Result<()> {
            let pg = Pg::connect(&url)?;
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = pg
                    .value("SELECT n FROM read_model")
                    .ok()
                    .flatten()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if id > last {
                    last = id;
                    if let Ok(mut s) = seen.lock() {
                        s.push((id, Instant::now()));
                    }
                }
                std::thread::sleep(POLL);
            }
            Ok(())
        })
    };
    let total = a.rate * a.seconds;
    eprintln!(
        "  committing {} changes/s for {} s (transactions of {PACED_TXN_ROWS}) ...",
        a.rate, a.seconds
    );
    let every = Duration::from_secs_f64(PACED_TXN_ROWS as f64 / a.rate as f64);
    let started = Instant::now();
    let mut id = 0;
    let mut n = 0u32;
    while id < total {
        let end = (id + PACED_TXN_ROWS).min(total);
        pg.execute(&format!(
            "INSERT INTO events SELECT g, 0, 'event ' || g FROM generate_series({}, {end}) g",
            id + 1
        ))?;
        if let Ok(mut c) = commits.lock() {
            c.push((end, Instant::now()));
        }
        id = end;
        n += 1;
        let next = started + every * n;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let wrote = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + DRAIN;
    while seen
        .lock()
        .map(|s| s.last().map_or(0, |l| l.0))
        .unwrap_or(0)
        < total
    {
        if Instant::now() > deadline {
            bail!("the read model did not reach id {total} within a minute");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    poller
        .join()
        .map_err(|_| anyhow::anyhow!("the poller panicked"))??;
    session.stop_queries();
    let (commits, seen) = (
        commits.lock().map(|c| c.clone()).unwrap_or_default(),
        seen.lock().map(|s| s.clone()).unwrap_or_default(),
    );
    let mut hist = Histogram::<u64>::new(3)?;
    let mut s = 0;
    for (last_id, committed) in &commits {
        while s < seen.len() && seen[s].0 < *last_id {
            s += 1;
        }
        if let Some((_, at)) = seen.get(s) {
            hist.record(at.saturating_duration_since(*committed).as_micros() as u64)?;
        }
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "bench cdc: {total} changes committed at {:.0} changes/s ({} transactions) -> source -> table -> view -> postgres sink: commit -> read model p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        total as f64 / wrote,
        commits.len(),
        ms(0.5),
        ms(0.99),
        hist.max() as f64 / 1000.0
    );
    Ok(())
}
