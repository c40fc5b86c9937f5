//! `weir bench changes`: Debezium change events of two tables applied to updating views in
//! Weir's state — `order_lines`, a join of orders with their customers (a foreign-key join of
//! tables), and `region_totals`, an aggregate over it — exactly once. The events are written
//! to the log first (customers created, then orders created, updated — moving between
//! customers, amounts changing — and deleted, each with its old row), then the views are
//! created and timed until `region_totals` holds the totals the events add up to, which the
//! benchmark computes itself: the figure is for correct results, end to end.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use weir_log::sim::SeededRng;
use weir_log::{BatchBuilder, Log, LogOptions, PartitionId, Timestamp};
use weir_sql::{Engine, Output, Session};

use crate::cli::BenchChangesArgs;

use super::{process_cpu_seconds, Scratch};

/// The views timed: a join of the tables, and an aggregate over it.
const JOIN_AND_AGGREGATE: &str = "CREATE MATERIALIZED VIEW order_lines AS
      SELECT o.id, o.amount, c.region FROM orders o JOIN customers c ON o.customer = c.id;
    CREATE MATERIALIZED VIEW region_totals AS
      SELECT region, COUNT(*) AS n, SUM(amount) AS total FROM order_lines GROUP BY region;";

/// `--no-join`: the aggregate over the orders table alone (every order's customer exists, so
/// the totals are the same).
const AGGREGATE_ONLY: &str = "CREATE MATERIALIZED VIEW region_totals AS
    SELECT 'r' || CAST(customer % 50 AS TEXT) AS region, COUNT(*) AS n, SUM(amount) AS total
    FROM orders GROUP BY 'r' || CAST(customer % 50 AS TEXT);";

/// Regions customers are spread over (the aggregate's groups).
const REGIONS: u64 = 50;

/// Bytes of one appended batch while writing the events.
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// How long the benchmark waits for the views before it gives up.
const BENCH_TIMEOUT: Duration = Duration::from_secs(3600);

/// How often the views' totals are checked.
const POLL: Duration = Duration::from_millis(20);

/// The seed of the events (the same run twice is the same work).
const SEED: u64 = 0xC4A7;

/// Writes a table's events over its partitions (by `id % partitions`, as a connector's
/// partitioner would spread keys), in large batches.
struct Writer<'a> {
    log: &'a Log,
    topic: &'a str,
    builders: Vec<BatchBuilder>,
}

impl<'a> Writer<'a> {
    fn new(log: &'a Log, topic: &'a str, partitions: u32) -> Writer<'a> {
        Writer {
            log,
            topic,
            builders: (0..partitions)
                .map(|_| BatchBuilder::with_capacity(WRITE_BATCH_BYTES + 1024))
                .collect(),
        }
    }

    fn push(&mut self, id: u64, value: &str) -> Result<()> {
        let p = (id % self.builders.len() as u64) as usize;
        let key = format!(r#"{{"id":{id}}}"#);
        self.builders[p].push_parts(
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            &[],
            Timestamp(0),
        );
        if self.builders[p].size() >= WRITE_BATCH_BYTES {
            self.flush(p)?;
        }
        Ok(())
    }

    fn flush(&mut self, p: usize) -> Result<()> {
        let full = std::mem::replace(
            &mut self.builders[p],
            BatchBuilder::with_capacity(WRITE_BATCH_BYTES + 1024),
        );
        if full.count() > 0 {
            self.log
                .submit_batch(self.topic, PartitionId(p as u32), full.finish())?
                .wait()?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        for p in 0..self.builders.len() {
            self.flush(p)?;
        }
        Ok(())
    }
}

fn event(op: char, before: Option<&str>, after: Option<&str>, lsn: u64) -> String {
    format!(
        r#"{{"op":"{op}","before":{},"after":{},"source":{{"connector":"postgresql","db":"shop","schema":"public","lsn":{lsn}}},"ts_ms":{lsn}}}"#,
        before.unwrap_or("null"),
        after.unwrap_or("null")
    )
}

fn order_row(id: u64, (customer, amount): (u64, u64)) -> String {
    format!(r#"{{"id":{id},"customer":{customer},"amount":{amount}}}"#)
}

/// What the events add up to: per region, live orders and their total.
type Totals = Vec<(u64, u64)>;

/// Writes the events; returns the totals they add up to.
fn write_events(log: &Log, a: &BenchChangesArgs) -> Result<Totals> {
    let mut lsn = 0;
    let mut customers = Writer::new(log, "dbserver.public.customers", a.partitions);
    for id in 0..a.customers {
        lsn += 1;
        let row = format!(r#"{{"id":{id},"region":"r{}"}}"#, id % REGIONS);
        customers.push(id, &event('c', None, Some(&row), lsn))?;
    }
    customers.finish()?;
    let mut rng = SeededRng::new(SEED);
    let mut orders: Vec<Option<(u64, u64)>> = vec![None; a.orders as usize];
    let mut writer = Writer::new(log, "dbserver.public.orders", a.partitions);
    for _ in 0..a.events {
        lsn += 1;
        let id = rng.below(a.orders);
        let new = (rng.below(a.customers), 1 + rng.below(1000));
        let slot = &mut orders[id as usize];
        let value = match *slot {
            None => {
                *slot = Some(new);
                event('c', None, Some(&order_row(id, new)), lsn)
            }
            Some(old) if rng.below(8) == 0 => {
                *slot = None;
                event('d', Some(&order_row(id, old)), None, lsn)
            }
            Some(old) => {
                *slot = Some(new);
                event(
                    'u',
                    Some(&order_row(id, old)),
                    Some(&order_row(id, new)),
                    lsn,
                )
            }
        };
        writer.push(id, &value)?;
    }
    writer.finish()?;
    let mut totals = vec![(0, 0); REGIONS as usize];
    for (customer, amount) in orders.into_iter().flatten() {
        let t = &mut totals[(customer % REGIONS) as usize];
        t.0 += 1;
        t.1 += amount;
    }
    Ok(totals)
}

/// The view's totals, as the benchmark's are laid out.
fn view_totals(session: &mut Session) -> Result<Totals> {
    let out = session.execute("SELECT region, n, total FROM region_totals")?;
    let mut totals = vec![(0, 0); REGIONS as usize];
    let Some(Output::Rows { batches, .. }) = out.last().map(|o| &o.output) else {
        return Ok(totals);
    };
    for b in batches {
        for r in 0..b.num_rows() {
            let cell = |c: usize| {
                weir_sql::datafusion::arrow::util::display::array_value_to_string(b.column(c), r)
                    .unwrap_or_default()
            };
            let region: usize = cell(0).trim_start_matches('r').parse()?;
            if let Some(t) = totals.get_mut(region) {
                *t = (cell(1).parse()?, cell(2).parse()?);
            }
        }
    }
    Ok(totals)
}

pub fn changes(data_dir: &Path, a: BenchChangesArgs) -> Result<()> {
    if a.events == 0 || a.orders == 0 || a.customers == 0 || a.partitions == 0 {
        bail!("--events, --orders, --customers and --partitions must be at least 1");
    }
    let scratch = Scratch::new(data_dir, "changes")?;
    let log = Log::open_with(scratch.0.join("log"), LogOptions::without_cleaner())?;
    let (groups, txns) = weir_coord::start(&log)?;
    let engine = Engine {
        groups,
        txns,
        state_dir: scratch.0.join("state"),
    };
    let mut session = Session::open_with_engine(&log, engine)?;
    session.execute(&format!(
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer BIGINT, amount BIGINT)
           WITH (topic = 'dbserver.public.orders', format = 'debezium_json', partitions = {p});
         CREATE TABLE customers (id BIGINT PRIMARY KEY, region TEXT)
           WITH (topic = 'dbserver.public.customers', format = 'debezium_json', partitions = {p});",
        p = a.partitions
    ))?;
    eprintln!(
        "  writing {} customer creates and {} order change events ...",
        a.customers, a.events
    );
    let expected = write_events(&log, &a).context("writing the events")?;
    let events = a.events + a.customers;
    let start = Instant::now();
    let cpu_start = process_cpu_seconds();
    session.execute(match a.no_join {
        false => JOIN_AND_AGGREGATE,
        true => AGGREGATE_ONLY,
    })?;
    while view_totals(&mut session)? != expected {
        if start.elapsed() > BENCH_TIMEOUT {
            bail!("the views did not reach the events' totals within an hour");
        }
        std::thread::sleep(POLL);
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds().zip(cpu_start).map(|(e, s)| e - s);
    session.stop_queries();
    println!(
        "bench changes: {events} change events ({} orders, {} customers, {} partition(s)) through {}, exactly-once: {:.0} events/s ({secs:.2} s)",
        a.orders,
        a.customers,
        a.partitions,
        match a.no_join {
            false => "a join of tables and an aggregate over it",
            true => "an aggregate over the orders table",
        },
        events as f64 / secs
    );
    if let Some(cpu) = cpu {
        println!(
            "  CPU: {cpu:.2} core-seconds for all threads = {:.0} events per core-second",
            events as f64 / cpu.max(1e-3)
        );
    }
    drop(session);
    drop(log);
    drop(scratch);
    Ok(())
}
