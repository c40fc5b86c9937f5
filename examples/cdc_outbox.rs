//! The transactional outbox: an application writes its business row and an event row into
//! an `outbox` table in one PostgreSQL transaction (and deletes the event row in the same
//! transaction, as Debezium's outbox pattern recommends); Weir's PostgreSQL source captures
//! the outbox, and persistent queries route each event to a topic per aggregate type,
//! keyed by the aggregate's id so one order's events stay in order. An event is published
//! exactly when its transaction commits: a rolled-back transaction publishes nothing.
//!
//! Needs the local PostgreSQL (`scripts/postgres.sh`, run by the set-up; or `WEIR_PG_URL`):
//! the example makes a database of its own there and drops it after.
//!
//! Run: `cargo run --example cdc_outbox`

use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};
use weir_log::{Isolation, Log, Offset, PartitionId};
use weir_sql::{Engine, Session};

/// How long the example waits for the events to be routed.
const WAIT: Duration = Duration::from_secs(60);

/// A blocking PostgreSQL connection (the example's application).
struct App {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

impl App {
    fn connect(url: &str) -> anyhow::Result<App> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (client, connection) = runtime.block_on(tokio_postgres::connect(url, NoTls))?;
        runtime.spawn(connection);
        Ok(App { runtime, client })
    }

    fn execute(&self, sql: &str) -> anyhow::Result<()> {
        Ok(self.runtime.block_on(self.client.batch_execute(sql))?)
    }

    /// Waits until the CDC source's replication slot exists: from then on every change is
    /// captured. An outbox row written and deleted before it would never be seen (the
    /// snapshot finds the table empty), so the application starts writing only then.
    fn wait_for_slot(&self, slot: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        let sql = "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1";
        while self
            .runtime
            .block_on(self.client.query_one(sql, &[&slot]))?
            .get::<_, i64>(0)
            == 0
        {
            anyhow::ensure!(Instant::now() < deadline, "the slot {slot} was not created");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Places an order: the business row and its event, in one transaction.
    fn place_order(&self, id: i64, customer: &str, total: i64) -> anyhow::Result<()> {
        self.execute(&format!(
            "BEGIN;
             INSERT INTO orders VALUES ({id}, '{customer}', {total}, 'placed');
             INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES
               ('order', '{id}', 'OrderPlaced', '{{\"customer\": \"{customer}\", \"total\": {total}}}');
             DELETE FROM outbox;
             COMMIT;"
        ))
    }
}

/// The committed events of a topic: `key: value`, in order per partition.
fn events(log: &Log, topic: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let Ok(partitions) = log.partition_count(topic) else {
        return Ok(out);
    };
    for p in 0..partitions {
        log.for_each_record(
            topic,
            PartitionId(p),
            Offset(0),
            Isolation::ReadCommitted,
            |r| {
                let text =
                    |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
                out.push(format!("{}: {}", text(r.key), text(r.value)));
                Ok::<(), weir_log::LogError>(())
            },
        )?;
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let server = match weir_cdc::local_server_url() {
        Ok(url) => url,
        Err(e) => {
            println!("skipped: {e}");
            return Ok(());
        }
    };
    let db = format!("weir_example_outbox_{}", std::process::id());
    let admin = App::connect(&server)?;
    admin.execute(&format!("CREATE DATABASE {db}"))?;
    let url = format!(
        "{}/{db}",
        server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b)
    );
    let result = run(&url, &db);
    admin.execute(&format!(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
           WHERE database = '{db}'"
    ))?;
    admin.execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))?;
    result
}

fn run(url: &str, db: &str) -> anyhow::Result<()> {
    let app = App::connect(url)?;
    app.execute(
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer TEXT, total BIGINT, status TEXT);
         CREATE TABLE outbox (id BIGSERIAL PRIMARY KEY, aggregatetype TEXT NOT NULL,
                              aggregateid TEXT NOT NULL, type TEXT NOT NULL, payload TEXT);",
    )?;
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path().join("log"))?;
    let (groups, txns) = weir_coord::start(&log)?;
    let engine = Engine {
        groups,
        txns,
        state_dir: dir.path().join("state"),
    };
    let mut weir = Session::open_with_engine(&log, engine)?;
    weir.execute(&format!(
        "CREATE SOURCE app WITH (connector = 'postgres-cdc', url = '{url}',
           publication = 'outbox_pub', slot = '{db}_slot', 'topic.prefix' = 'app');
         -- The outbox's inserts, as a stream (its deletes carry no event).
         CREATE STREAM outbox (id BIGINT, aggregatetype TEXT, aggregateid TEXT, type TEXT,
                               payload TEXT)
           WITH (topic = 'app.public.outbox', format = 'debezium_json');
         -- One topic per aggregate type, keyed by the aggregate's id.
         CREATE SINK order_events AS
           SELECT aggregateid AS _key, type, payload FROM outbox WHERE aggregatetype = 'order'
           WITH (topic = 'outbox.event.order');
         CREATE SINK customer_events AS
           SELECT aggregateid AS _key, type, payload FROM outbox WHERE aggregatetype = 'customer'
           WITH (topic = 'outbox.event.customer');"
    ))?;
    app.wait_for_slot(&format!("{db}_slot"))?;
    app.place_order(1, "ada", 2500)?;
    app.place_order(2, "bo", 800)?;
    // A transaction that rolls back publishes nothing.
    app.execute(
        "BEGIN;
         INSERT INTO orders VALUES (3, 'cy', 100, 'placed');
         INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
           VALUES ('order', '3', 'OrderPlaced', '{}');
         ROLLBACK;",
    )?;
    app.execute(
        "BEGIN;
         UPDATE orders SET status = 'shipped' WHERE id = 1;
         INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
           VALUES ('order', '1', 'OrderShipped', '{\"carrier\": \"post\"}'),
                  ('customer', 'ada', 'LoyaltyPointsEarned', '{\"points\": 25}');
         DELETE FROM outbox;
         COMMIT;",
    )?;
    let deadline = Instant::now() + WAIT;
    loop {
        let (orders, customers) = (
            events(&log, "outbox.event.order")?,
            events(&log, "outbox.event.customer")?,
        );
        if orders.len() == 3 && customers.len() == 1 {
            println!("outbox.event.order:\n  {}", orders.join("\n  "));
            println!("outbox.event.customer:\n  {}", customers.join("\n  "));
            anyhow::ensure!(
                !orders.iter().any(|e| e.starts_with("3:")),
                "a rolled-back event was published"
            );
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "routed: {orders:?} {customers:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    weir.execute("DROP SOURCE app")?;
    Ok(())
}
