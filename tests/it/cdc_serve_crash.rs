//! A CDC read model is exactly once across real kills of `weir serve`: the server runs a
//! PostgreSQL CDC source (`CREATE SOURCE`), a table over its topic, an updating view (COUNT,
//! SUM, MIN, MAX and COUNT(DISTINCT) per customer, by retraction) and a PostgreSQL sink of the
//! view, while psql commits a seeded random mix of inserts, updates (amounts, and orders moving
//! between customers) and deletes. The server is SIGKILLed and started again
//! `WEIR_CDC_SERVE_CRASH_CYCLES` times (default 2), then drained: the read model in PostgreSQL
//! equals the same aggregate PostgreSQL computes over its own table (a differential test), and
//! the sink's positions in `weir_sink_offsets` are the view topic's ends — every change of the
//! view applied once, none skipped.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weir_log::{Log, LogOptions, PartitionId};

use crate::cdc_crash::{psql, with_database};
use crate::kafka_interop::Served;
use crate::util::Rng;

/// Orders before the server first starts.
const SEED_ORDERS: u64 = 300;
/// Transactions the writer commits while the server is killed.
const WRITES: u64 = 600;
/// Customers (groups of the view).
const CUSTOMERS: u64 = 25;
/// How long draining may take (a restart waits out the killed server's group sessions).
const DRAIN: Duration = Duration::from_secs(120);

/// The aggregate, as PostgreSQL computes it over its table.
const PG_AGGREGATE: &str = "SELECT customer_id || '|' || COUNT(*) || '|' || SUM(amount) || '|'
    || MIN(amount) || '|' || MAX(amount) || '|' || COUNT(DISTINCT amount)
    FROM orders GROUP BY customer_id ORDER BY customer_id";

/// The read model Weir keeps in PostgreSQL.
const READ_MODEL: &str = "SELECT customer_id || '|' || orders || '|' || total || '|' || low
    || '|' || high || '|' || amounts FROM read_model ORDER BY customer_id";

fn cycles() -> u32 {
    std::env::var("WEIR_CDC_SERVE_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

#[test]
fn a_cdc_read_model_in_weir_serve_is_exact_across_kill_9() -> anyhow::Result<()> {
    with_database("weir_cdc_serve_kill", run)
}

/// The writer's transactions: each inserts an order, changes one (amount, or customer too)
/// and deletes one, seeded.
fn writes(rng: &mut Rng) -> String {
    let mut script = String::new();
    for n in 0..WRITES {
        let id = SEED_ORDERS + 1 + n;
        let (customer, amount) = (rng.below(CUSTOMERS), 1 + rng.below(100));
        let changed = 1 + rng.below(id - 1);
        let change = match rng.below(2) {
            0 => format!(
                "UPDATE orders SET amount = {} WHERE id = {changed}",
                1 + rng.below(100)
            ),
            _ => format!(
                "UPDATE orders SET customer_id = {}, amount = amount + 1 WHERE id = {changed}",
                rng.below(CUSTOMERS)
            ),
        };
        script.push_str(&format!(
            "BEGIN; INSERT INTO orders VALUES ({id}, {customer}, {amount}); {change}; \
             DELETE FROM orders WHERE id = {}; COMMIT;\nSELECT pg_sleep(0.005);\n",
            1 + rng.below(id - 1)
        ));
    }
    script
}

/// The catalog, made by an embedded session in the data directory: the server resumes it.
fn create_queries(data: &std::path::Path, url: &str, slot: &str) -> anyhow::Result<()> {
    let log = Log::open_with(data, LogOptions::without_cleaner())?;
    let (groups, txns) = weir_coord::start(&log)?;
    let engine = weir_sql::Engine {
        groups,
        txns,
        state_dir: data.join("state"),
    };
    let mut session = weir_sql::Session::open_with_engine(&log, engine)?;
    session.execute(&format!(
        "CREATE SOURCE shop WITH (connector = 'postgres-cdc', url = '{url}',
           publication = 'shop_pub', slot = '{slot}', 'topic.prefix' = 'shop', partitions = 2);
         CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id BIGINT, amount BIGINT)
           WITH (topic = 'shop.public.orders', format = 'debezium_json', partitions = 2);
         CREATE MATERIALIZED VIEW order_stats AS SELECT customer_id, COUNT(*) AS orders,
           SUM(amount) AS total, MIN(amount) AS low, MAX(amount) AS high,
           COUNT(DISTINCT amount) AS amounts FROM orders GROUP BY customer_id;
         CREATE SINK read_model_pg FROM order_stats
           WITH (connector = 'postgres', url = '{url}', table = 'read_model');"
    ))?;
    session.stop_queries();
    Ok(())
}

fn run(url: &str, slot: &str) -> anyhow::Result<()> {
    let seed = std::env::var("WEIR_CDC_SERVE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5E12E);
    eprintln!("cdc serve crash test: seed {seed}, {} kills", cycles());
    let mut rng = Rng::new(seed);
    psql(url, "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL, amount BIGINT NOT NULL)")?;
    psql(
        url,
        &format!(
            "INSERT INTO orders SELECT g, g % {CUSTOMERS}, 1 + (g * 37) % 100
               FROM generate_series(1, {SEED_ORDERS}) g"
        ),
    )?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    create_queries(&data, url, slot)?;
    let script_path = dir.path().join("writes.sql");
    std::fs::write(&script_path, writes(&mut rng))?;
    let mut writer = Command::new("psql")
        .args([url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(&script_path)
        .stdout(Stdio::null())
        .spawn()?;
    for _ in 0..cycles() {
        let served = Served::start(&data)?;
        std::thread::sleep(Duration::from_millis(1500 + rng.below(2500)));
        served.kill_9()?;
    }
    anyhow::ensure!(writer.wait()?.success(), "the writer failed");
    let served = Served::start(&data)?;
    let want = psql(url, PG_AGGREGATE)?;
    let deadline = Instant::now() + DRAIN;
    loop {
        let got = psql(url, READ_MODEL).unwrap_or_default();
        if got == want {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "read model:\n{got}\nPostgreSQL's aggregate:\n{want}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    served.stop()?;
    // Every change of the view applied once: the sink's positions are the topic's ends.
    let log = Log::open_read_only(&data, LogOptions::default())?;
    let topic = "__weir_view.order_stats";
    for p in 0..log.partition_count(topic)? {
        let end = log.latest_offset(topic, PartitionId(p))?;
        let at = psql(
            url,
            &format!("SELECT next_offset FROM weir_sink_offsets WHERE topic = '{topic}' AND partition = {p}"),
        )?;
        anyhow::ensure!(
            at == end.0.to_string() || (at.is_empty() && end.0 == 0),
            "partition {p}: the sink is at {at:?}, the view topic ends at {}",
            end.0
        );
    }
    Ok(())
}
