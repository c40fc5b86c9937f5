//! Updating views over tables: seeded random creates, updates (which move orders between
//! customers and change amounts, NULLs included), deletes, tombstones and replays of
//! Debezium change events over two partitions. An aggregate over a table equals the same
//! aggregate computed by a batch query over it (groups left without rows are deleted, and a
//! sink of the changes carries `delete` rows); joins of tables (inner, and left over a view)
//! equal the batch join after changes on either side.

use std::collections::BTreeMap;

use weir_log::sim::SeededRng;
use weir_log::{Log, PartitionId, Record};
use weir_sql::Session;

use crate::pg_sink::{wait_same, weir_rows};
use crate::streaming::open;

const ORDERS: &str = "dbserver.public.orders";
const CUSTOMERS: &str = "dbserver.public.customers";

/// The aggregates under test, as both the view and the batch query compute them.
const AGGREGATES: &str = "customer, COUNT(*) AS n, COUNT(amount) AS n_amount, \
    SUM(amount) AS total, AVG(amount) AS mean, MIN(amount) AS low, MAX(amount) AS high, \
    COUNT(DISTINCT amount) AS amounts";

/// A source table as the database has it: its topic and its rows by id.
struct SourceTable {
    topic: &'static str,
    rows: BTreeMap<u64, serde_json::Value>,
}

fn event(
    op: &str,
    before: Option<&serde_json::Value>,
    after: Option<&serde_json::Value>,
    lsn: u64,
) -> String {
    serde_json::json!({
        "op": op,
        "before": before,
        "after": after,
        "source": {"connector": "postgresql", "db": "shop", "schema": "public", "lsn": lsn},
        "ts_ms": 1_767_225_600_000u64 + lsn,
    })
    .to_string()
}

impl SourceTable {
    fn new(topic: &'static str) -> SourceTable {
        SourceTable {
            topic,
            rows: BTreeMap::new(),
        }
    }

    /// Appends `n` random changes of rows with ids below `ids` (`row` makes a row's other
    /// columns); returns them too, to be replayed.
    fn change(
        &mut self,
        log: &Log,
        rng: &mut SeededRng,
        lsn: &mut u64,
        (n, ids): (usize, u64),
        row: &mut dyn FnMut(&mut SeededRng, u64) -> serde_json::Value,
    ) -> anyhow::Result<Vec<(u32, Record)>> {
        let mut written = Vec::new();
        for _ in 0..n {
            *lsn += 10;
            let id = rng.below(ids);
            let key = serde_json::json!({ "id": id }).to_string();
            let new = row(rng, id);
            let records = match (self.rows.get(&id).cloned(), rng.below(4)) {
                (None, _) => {
                    self.rows.insert(id, new.clone());
                    vec![Record::keyed(key, event("c", None, Some(&new), *lsn))]
                }
                (Some(old), 0) => {
                    self.rows.remove(&id);
                    let delete = event("d", Some(&old), None, *lsn);
                    vec![Record::keyed(key.clone(), delete), Record::tombstone(key)]
                }
                (Some(old), _) => {
                    self.rows.insert(id, new.clone());
                    vec![Record::keyed(key, event("u", Some(&old), Some(&new), *lsn))]
                }
            };
            let partition = (id % 2) as u32;
            log.append(self.topic, PartitionId(partition), &records)?;
            written.extend(records.into_iter().map(|r| (partition, r)));
        }
        Ok(written)
    }

    /// Deletes the rows `which` picks.
    fn delete_where(
        &mut self,
        log: &Log,
        lsn: &mut u64,
        which: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<()> {
        let gone: Vec<(u64, serde_json::Value)> = self
            .rows
            .iter()
            .filter(|(_, r)| which(r))
            .map(|(id, r)| (*id, r.clone()))
            .collect();
        for (id, old) in gone {
            *lsn += 10;
            let key = serde_json::json!({ "id": id }).to_string();
            let delete = event("d", Some(&old), None, *lsn);
            let partition = PartitionId((id % 2) as u32);
            log.append(self.topic, partition, &[Record::keyed(key, delete)])?;
            self.rows.remove(&id);
        }
        Ok(())
    }
}

/// An order: a customer (some of which do not exist) and an amount (sometimes NULL).
fn order(rng: &mut SeededRng, id: u64) -> serde_json::Value {
    let amount = (rng.below(10) != 0).then(|| 1 + rng.below(50));
    serde_json::json!({"id": id, "customer": rng.below(8), "amount": amount})
}

fn seeded(name: &str, default: u64) -> SeededRng {
    let var = format!("WEIR_{}_SEED", name.to_uppercase());
    let seed = std::env::var(&var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("{name} test: seed {seed} (set {var} to repeat another)");
    SeededRng::new(seed)
}

/// Waits until the view's rows equal the batch query's over the tables as they are now.
fn same_rows(session: &mut Session, view: &str, batch: &str) -> anyhow::Result<String> {
    let session = std::cell::RefCell::new(session);
    wait_same(
        || weir_rows(&mut session.borrow_mut(), batch),
        || weir_rows(&mut session.borrow_mut(), view),
    )
}

fn view_equals_batch(session: &mut Session) -> anyhow::Result<String> {
    let batch = format!("SELECT {AGGREGATES} FROM orders GROUP BY customer ORDER BY customer");
    same_rows(session, "SELECT * FROM summary ORDER BY customer", &batch)
}

#[test]
fn aggregates_over_a_table_retract_updated_and_deleted_rows() -> anyhow::Result<()> {
    let mut rng = seeded("retract", 0xDE1E7E);
    let dir = tempfile::tempdir()?;
    let (log, mut session) = open(dir.path())?;
    session.execute(&format!(
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer BIGINT, amount BIGINT) \
           WITH (topic = '{ORDERS}', format = 'debezium_json', partitions = 2);
         CREATE MATERIALIZED VIEW summary AS SELECT {AGGREGATES} FROM orders GROUP BY customer;
         CREATE SINK summary_changes AS SELECT customer, COUNT(*) AS n FROM orders \
           GROUP BY customer WITH (topic = 'summary_changes');
         CREATE STREAM summary_change_rows (customer BIGINT, n BIGINT, op TEXT) \
           WITH (topic = 'summary_changes');"
    ))?;
    let mut orders = SourceTable::new(ORDERS);
    let mut lsn = 0;
    let first = orders.change(&log, &mut rng, &mut lsn, (400, 60), &mut order)?;
    view_equals_batch(&mut session)?;
    // Replays of old changes are ignored: the view does not move.
    for (partition, record) in first.iter().take(50) {
        log.append(
            ORDERS,
            PartitionId(*partition),
            std::slice::from_ref(record),
        )?;
    }
    orders.change(&log, &mut rng, &mut lsn, (300, 60), &mut order)?;
    let shown = view_equals_batch(&mut session)?;
    anyhow::ensure!(shown.lines().count() >= 6, "too few groups:\n{shown}");
    // Every order of customer 3 goes: its group is deleted from the view.
    orders.delete_where(&log, &mut lsn, |o| o["customer"] == 3)?;
    let shown = view_equals_batch(&mut session)?;
    anyhow::ensure!(!shown.lines().any(|l| l.starts_with("3|")), "{shown}");
    // The sink is a pipeline of its own: its delete row may come after the view's change.
    let deleted =
        "SELECT DISTINCT customer FROM summary_change_rows WHERE op = 'delete' AND customer = 3";
    wait_same(|| Ok("3".to_string()), || weir_rows(&mut session, deleted))
        .map_err(|e| e.context("no delete row for customer 3"))?;
    Ok(())
}

#[test]
fn joins_of_tables_update_when_either_side_changes() -> anyhow::Result<()> {
    let mut rng = seeded("table_join", 0x7AB1E);
    let dir = tempfile::tempdir()?;
    let (log, mut session) = open(dir.path())?;
    session.execute(&format!(
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer BIGINT, amount BIGINT) \
           WITH (topic = '{ORDERS}', format = 'debezium_json', partitions = 2);
         CREATE TABLE customers (id BIGINT PRIMARY KEY, name TEXT) \
           WITH (topic = '{CUSTOMERS}', format = 'debezium_json', partitions = 2);
         CREATE MATERIALIZED VIEW order_lines AS SELECT o.id, o.customer, o.amount, c.name \
           FROM orders o JOIN customers c ON o.customer = c.id;
         CREATE MATERIALIZED VIEW order_stats AS SELECT customer, COUNT(*) AS n, \
           SUM(amount) AS total FROM orders GROUP BY customer;
         CREATE MATERIALIZED VIEW customer_summary AS SELECT c.id, c.name, s.n, s.total \
           FROM customers c LEFT JOIN order_stats s ON s.customer = c.id;"
    ))?;
    let mut orders = SourceTable::new(ORDERS);
    let mut customers = SourceTable::new(CUSTOMERS);
    let mut customer = |rng: &mut SeededRng, id: u64| serde_json::json!({"id": id, "name": format!("c{id}-{}", rng.below(100))});
    let lines = "SELECT o.id, o.customer, o.amount, c.name FROM orders o \
        JOIN customers c ON o.customer = c.id ORDER BY o.id";
    let summary = "SELECT c.id, c.name, s.n, s.total FROM customers c LEFT JOIN \
        (SELECT customer, COUNT(*) AS n, SUM(amount) AS total FROM orders GROUP BY customer) s \
        ON s.customer = c.id ORDER BY c.id";
    let mut lsn = 0;
    for round in 0..3 {
        customers.change(&log, &mut rng, &mut lsn, (12, 7), &mut customer)?;
        orders.change(&log, &mut rng, &mut lsn, (150, 40), &mut order)?;
        customers.change(&log, &mut rng, &mut lsn, (12, 7), &mut customer)?;
        let shown = same_rows(&mut session, "SELECT * FROM order_lines ORDER BY id", lines)?;
        anyhow::ensure!(
            shown.lines().count() >= 5,
            "round {round}: too few rows:\n{shown}"
        );
        same_rows(
            &mut session,
            "SELECT * FROM customer_summary ORDER BY id",
            summary,
        )?;
    }
    // A customer's deletion takes its order lines out, and its summary row.
    customers.delete_where(&log, &mut lsn, |c| c["id"] == 2)?;
    let shown = same_rows(&mut session, "SELECT * FROM order_lines ORDER BY id", lines)?;
    anyhow::ensure!(
        !shown.lines().any(|l| l.split('|').nth(1) == Some("2")),
        "{shown}"
    );
    same_rows(
        &mut session,
        "SELECT * FROM customer_summary ORDER BY id",
        summary,
    )?;
    Ok(())
}
