//! Aggregates over tables update by retraction: seeded random creates, updates (which move
//! orders between customers and change amounts, NULLs included), deletes, tombstones and
//! replays of Debezium change events over two partitions; the view equals the same
//! aggregate computed by a batch query over the table, groups left without rows are
//! deleted, and a sink of the changes carries `delete` rows.

use std::collections::BTreeMap;

use weir_log::sim::SeededRng;
use weir_log::{Log, PartitionId, Record};
use weir_sql::Session;

use crate::pg_sink::{wait_same, weir_rows};
use crate::streaming::open;

const TOPIC: &str = "dbserver.public.orders";

/// The aggregates under test, as both the view and the batch query compute them.
const AGGREGATES: &str = "customer, COUNT(*) AS n, COUNT(amount) AS n_amount, \
    SUM(amount) AS total, AVG(amount) AS mean, MIN(amount) AS low, MAX(amount) AS high, \
    COUNT(DISTINCT amount) AS amounts";

/// An order as the source database has it.
#[derive(Clone)]
struct Order {
    customer: u64,
    amount: Option<u64>,
}

fn event(op: &str, id: u64, before: Option<&Order>, after: Option<&Order>, lsn: u64) -> String {
    let row = |o: Option<&Order>| match o {
        None => serde_json::Value::Null,
        Some(o) => serde_json::json!({"id": id, "customer": o.customer, "amount": o.amount}),
    };
    serde_json::json!({
        "op": op,
        "before": row(before),
        "after": row(after),
        "source": {"connector": "postgresql", "db": "shop", "schema": "public",
                   "table": "orders", "lsn": lsn},
        "ts_ms": 1_767_225_600_000u64 + lsn,
    })
    .to_string()
}

/// Appends `n` random changes; returns them too, to be replayed.
fn changes(
    log: &Log,
    rng: &mut SeededRng,
    orders: &mut BTreeMap<u64, Order>,
    lsn: &mut u64,
    n: usize,
) -> anyhow::Result<Vec<(u32, Record)>> {
    let mut written = Vec::new();
    for _ in 0..n {
        *lsn += 10;
        let id = rng.below(60);
        let key = serde_json::json!({ "id": id }).to_string();
        let order = Order {
            customer: rng.below(8),
            amount: (rng.below(10) != 0).then(|| 1 + rng.below(50)),
        };
        let records = match (orders.get(&id).cloned(), rng.below(4)) {
            (None, _) => {
                orders.insert(id, order.clone());
                vec![Record::keyed(key, event("c", id, None, Some(&order), *lsn))]
            }
            (Some(old), 0) => {
                orders.remove(&id);
                let delete = event("d", id, Some(&old), None, *lsn);
                vec![Record::keyed(key.clone(), delete), Record::tombstone(key)]
            }
            (Some(old), _) => {
                orders.insert(id, order.clone());
                let update = event("u", id, Some(&old), Some(&order), *lsn);
                vec![Record::keyed(key, update)]
            }
        };
        let partition = (id % 2) as u32;
        log.append(TOPIC, PartitionId(partition), &records)?;
        written.extend(records.into_iter().map(|r| (partition, r)));
    }
    Ok(written)
}

fn view_equals_batch(session: &mut Session) -> anyhow::Result<String> {
    // The batch query reads the table as it is now; the view catches up to it.
    let batch = format!("SELECT {AGGREGATES} FROM orders GROUP BY customer ORDER BY customer");
    let session = std::cell::RefCell::new(session);
    wait_same(
        || weir_rows(&mut session.borrow_mut(), &batch),
        || {
            weir_rows(
                &mut session.borrow_mut(),
                "SELECT * FROM summary ORDER BY customer",
            )
        },
    )
}

#[test]
fn aggregates_over_a_table_retract_updated_and_deleted_rows() -> anyhow::Result<()> {
    let seed = std::env::var("WEIR_RETRACT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xDE1E7E);
    eprintln!("retraction test: seed {seed}");
    let mut rng = SeededRng::new(seed);
    let dir = tempfile::tempdir()?;
    let (log, mut session) = open(dir.path())?;
    session.execute(&format!(
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer BIGINT, amount BIGINT) \
           WITH (topic = '{TOPIC}', format = 'debezium_json', partitions = 2);
         CREATE MATERIALIZED VIEW summary AS SELECT {AGGREGATES} FROM orders GROUP BY customer;
         CREATE SINK summary_changes AS SELECT customer, COUNT(*) AS n FROM orders \
           GROUP BY customer WITH (topic = 'summary_changes');
         CREATE STREAM summary_change_rows (customer BIGINT, n BIGINT, op TEXT) \
           WITH (topic = 'summary_changes');"
    ))?;
    let mut orders = BTreeMap::new();
    let mut lsn = 0;
    let first = changes(&log, &mut rng, &mut orders, &mut lsn, 400)?;
    view_equals_batch(&mut session)?;
    // Replays of old changes are ignored: the view does not move.
    for (partition, record) in first.iter().take(50) {
        log.append(TOPIC, PartitionId(*partition), std::slice::from_ref(record))?;
    }
    changes(&log, &mut rng, &mut orders, &mut lsn, 300)?;
    let shown = view_equals_batch(&mut session)?;
    anyhow::ensure!(shown.lines().count() >= 6, "too few groups:\n{shown}");
    eprintln!("{shown}");
    // Every order of customer 3 goes: its group is deleted from the view.
    let gone: Vec<(u64, Order)> = orders
        .iter()
        .filter(|(_, o)| o.customer == 3)
        .map(|(id, o)| (*id, o.clone()))
        .collect();
    for (id, old) in gone {
        lsn += 10;
        let key = serde_json::json!({ "id": id }).to_string();
        let delete = event("d", id, Some(&old), None, lsn);
        log.append(
            TOPIC,
            PartitionId((id % 2) as u32),
            &[Record::keyed(key, delete)],
        )?;
        orders.remove(&id);
    }
    let shown = view_equals_batch(&mut session)?;
    anyhow::ensure!(!shown.lines().any(|l| l.starts_with("3|")), "{shown}");
    let deletes = weir_rows(
        &mut session,
        "SELECT COUNT(*) FROM summary_change_rows WHERE op = 'delete' AND customer = 3",
    )?;
    anyhow::ensure!(deletes != "0", "no delete row for customer 3");
    Ok(())
}
