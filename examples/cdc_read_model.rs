//! A CQRS read model from change data capture: a shop's `customers` and `orders` tables in
//! PostgreSQL are captured by Weir's PostgreSQL source (snapshot, then logical decoding),
//! joined and aggregated into `customer_order_summary` (orders, total, last order per
//! customer) and kept in a PostgreSQL table of the read side — exactly once, updated as the
//! shop inserts, updates and deletes.
//!
//! Needs the local PostgreSQL (`scripts/postgres.sh`, run by the set-up; or `WEIR_PG_URL`):
//! the example makes a database of its own there and drops it after.
//!
//! Run: `cargo run --example cdc_read_model`

use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};
use weir_sql::{Engine, Session};

/// How long the example waits for the read model to catch up.
const WAIT: Duration = Duration::from_secs(60);

/// The read model, as PostgreSQL holds it.
const READ_MODEL: &str = "SELECT id, name, orders, total, last_order::text
    FROM customer_order_summary ORDER BY id";

/// A blocking PostgreSQL connection (the example's "application").
struct Shop {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

impl Shop {
    fn connect(url: &str) -> anyhow::Result<Shop> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (client, connection) = runtime.block_on(tokio_postgres::connect(url, NoTls))?;
        runtime.spawn(connection);
        Ok(Shop { runtime, client })
    }

    fn execute(&self, sql: &str) -> anyhow::Result<()> {
        Ok(self.runtime.block_on(self.client.batch_execute(sql))?)
    }

    /// Rows as `a|b|…` text (NULL as empty).
    fn rows(&self, sql: &str) -> anyhow::Result<Vec<String>> {
        let rows = self.runtime.block_on(self.client.simple_query(sql))?;
        Ok(rows
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or_default().to_string())
                        .collect::<Vec<_>>()
                        .join("|"),
                ),
                _ => None,
            })
            .collect())
    }

    /// Waits until the read model holds `want`.
    fn wait_for(&self, want: &[&str]) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.rows(READ_MODEL).unwrap_or_default();
            if got == want {
                println!("read model:\n  {}", got.join("\n  "));
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "read model: {got:?}, want {want:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn main() -> anyhow::Result<()> {
    let server = match weir_cdc::local_server_url() {
        Ok(url) => url,
        Err(e) => {
            println!("skipped: {e}");
            return Ok(());
        }
    };
    let db = format!("weir_example_shop_{}", std::process::id());
    let admin = Shop::connect(&server)?;
    admin.execute(&format!("CREATE DATABASE {db}"))?;
    let url = format!(
        "{}/{db}",
        server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b)
    );
    let result = run(&url, &db);
    // The slot holds WAL until it is dropped: drop it with the database.
    admin.execute(&format!(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
           WHERE database = '{db}'"
    ))?;
    admin.execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))?;
    result
}

fn run(url: &str, db: &str) -> anyhow::Result<()> {
    let shop = Shop::connect(url)?;
    shop.execute(
        "CREATE TABLE customers (id BIGINT PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL,
                              total BIGINT NOT NULL, placed_at TIMESTAMP NOT NULL);
         INSERT INTO customers VALUES (1, 'Ada'), (2, 'Bo'), (3, 'Cy');
         INSERT INTO orders VALUES (10, 1, 2500, '2026-12-01 10:00'), (11, 1, 1200, '2026-12-02 09:30'),
                                   (12, 2, 800, '2026-12-02 11:00');",
    )?;

    // Weir, embedded: its log and state in a directory of its own.
    let dir = tempfile::tempdir()?;
    let log = weir_log::Log::open(dir.path().join("log"))?;
    let (groups, txns) = weir_coord::start(&log)?;
    let engine = Engine {
        groups,
        txns,
        state_dir: dir.path().join("state"),
    };
    let mut weir = Session::open_with_engine(&log, engine)?;
    weir.execute(&format!(
        "CREATE SOURCE shop WITH (connector = 'postgres-cdc', url = '{url}',
           publication = 'shop_pub', slot = '{db}_slot', 'topic.prefix' = 'shop');
         CREATE TABLE customers (id BIGINT PRIMARY KEY, name TEXT)
           WITH (topic = 'shop.public.customers', format = 'debezium_json');
         CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id BIGINT, total BIGINT,
                              placed_at TIMESTAMP)
           WITH (topic = 'shop.public.orders', format = 'debezium_json');
         -- Per customer: how many orders, their total, the last one's time.
         CREATE MATERIALIZED VIEW order_stats AS
           SELECT customer_id, COUNT(*) AS orders, SUM(total) AS total,
                  MAX(placed_at) AS last_order
           FROM orders GROUP BY customer_id;
         -- Every customer, with their stats (NULLs before a first order).
         CREATE MATERIALIZED VIEW customer_order_summary AS
           SELECT c.id, c.name, s.orders, s.total, s.last_order
           FROM customers c LEFT JOIN order_stats s ON s.customer_id = c.id;
         CREATE SINK summary_to_pg FROM customer_order_summary
           WITH (connector = 'postgres', url = '{url}', table = 'customer_order_summary',
                 primary_key = 'id');"
    ))?;
    let shown = |weir: &mut Session| -> String {
        match weir.execute("SHOW QUERIES") {
            Ok(out) => format!("{out:?}"),
            Err(e) => e.to_string(),
        }
    };
    shop.wait_for(&[
        "1|Ada|2|3700|2026-12-02 09:30:00",
        "2|Bo|1|800|2026-12-02 11:00:00",
        "3|Cy|||",
    ])
    .map_err(|e| anyhow::anyhow!("{e}; queries: {}", shown(&mut weir)))?;

    println!("the shop: Cy orders, Ada's first order is cancelled, Bo is renamed");
    shop.execute(
        "BEGIN;
         INSERT INTO orders VALUES (13, 3, 4200, '2026-12-03 08:15');
         DELETE FROM orders WHERE id = 10;
         UPDATE customers SET name = 'Bob' WHERE id = 2;
         COMMIT;",
    )?;
    shop.wait_for(&[
        "1|Ada|1|1200|2026-12-02 09:30:00",
        "2|Bob|1|800|2026-12-02 11:00:00",
        "3|Cy|1|4200|2026-12-03 08:15:00",
    ])?;

    println!("an order moves from Bob to Ada");
    shop.execute("UPDATE orders SET customer_id = 1 WHERE id = 12")?;
    shop.wait_for(&[
        "1|Ada|2|2000|2026-12-02 11:00:00",
        "2|Bob|||",
        "3|Cy|1|4200|2026-12-03 08:15:00",
    ])?;
    // Exactly once: the positions the sink applied, in the same table space as the model.
    for row in shop.rows("SELECT topic, partition, next_offset FROM weir_sink_offsets")? {
        println!("sink position: {row}");
    }
    weir.execute("DROP SINK summary_to_pg; DROP SOURCE shop")?;
    Ok(())
}
