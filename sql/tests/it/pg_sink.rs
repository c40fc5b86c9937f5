//! `CREATE SINK … FROM view WITH (connector = 'postgres', …)` against a real PostgreSQL: a
//! view's updating aggregate kept in a PostgreSQL table equals the same aggregate computed by
//! a batch query, after seeded random orders (the seed is printed); the sink shows in SHOW
//! QUERIES; a restarted session resumes it without applying anything twice; DROP SINK deletes
//! its positions.

use std::time::{Duration, Instant};

use weir_log::sim::SeededRng;

use crate::streaming::open;

/// How long the test waits for PostgreSQL to hold the view's rows.
const WAIT: Duration = Duration::from_secs(60);

/// psql's answer (unaligned, tuples only).
pub(crate) fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new("psql")
        .args([url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A query's rows, a line each (`a|b|…`).
pub(crate) fn weir_rows(session: &mut weir_sql::Session, sql: &str) -> anyhow::Result<String> {
    Ok(crate::streaming::text_rows(session, sql)?.0.join("\n"))
}

/// Waits until `got` answers what `want` does; returns it.
pub(crate) fn wait_same(
    mut want: impl FnMut() -> anyhow::Result<String>,
    mut got: impl FnMut() -> anyhow::Result<String>,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let (w, g) = (want()?, got().unwrap_or_default());
        if w == g {
            return Ok(g);
        }
        anyhow::ensure!(Instant::now() < deadline, "got:\n{g}\nexpected:\n{w}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `test` with the URL of a database of its own on the local PostgreSQL, dropped after.
pub(crate) fn with_database(
    name: &str,
    test: impl FnOnce(&str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    with_database_on(&weir_cdc::local_server_url()?, name, test)
}

/// [`with_database`] on the server at `server`.
fn with_database_on(
    server: &str,
    name: &str,
    test: impl FnOnce(&str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let server = server.to_string();
    let db = format!("{name}_{}", std::process::id());
    psql(
        &server,
        &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
    )?;
    psql(&server, &format!("CREATE DATABASE {db}"))?;
    let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
    let result = test(&format!("{base}/{db}"));
    let _ = psql(
        &server,
        &format!("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '{db}'"),
    );
    let _ = psql(
        &server,
        &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
    );
    result
}

const SUMMARY: &str =
    "SELECT customer || '|' || orders || '|' || total FROM read_model ORDER BY customer";
const BATCH: &str = "SELECT customer, COUNT(*) AS orders, SUM(amount) AS total FROM orders \
                     GROUP BY customer ORDER BY customer";

fn wait_equal(url: &str, session: &mut weir_sql::Session) -> anyhow::Result<String> {
    let expected = weir_rows(session, BATCH)?;
    wait_same(|| Ok(expected.clone()), || psql(url, SUMMARY))
}

#[test]
fn a_views_read_model_in_postgres_equals_the_batch_aggregate() -> anyhow::Result<()> {
    with_database("weir_sql_sink", run)
}

fn insert_orders(
    session: &mut weir_sql::Session,
    rng: &mut SeededRng,
    n: usize,
) -> anyhow::Result<()> {
    let rows: Vec<String> = (0..n)
        .map(|_| format!("({}, {})", rng.below(20), 1 + rng.below(1000)))
        .collect();
    session.execute(&format!("INSERT INTO orders VALUES {}", rows.join(", ")))?;
    Ok(())
}

/// The view of orders per customer and its sink into the table `read_model` at `url`.
fn create_summary(session: &mut weir_sql::Session, url: &str) -> anyhow::Result<()> {
    session.execute(&format!(
        "CREATE STREAM orders (customer BIGINT, amount BIGINT) WITH (partitions = 2);
         CREATE MATERIALIZED VIEW summary AS SELECT customer, COUNT(*) AS orders, \
           SUM(amount) AS total FROM orders GROUP BY customer;
         CREATE SINK summary_pg FROM summary \
           WITH (connector = 'postgres', url = '{url}', table = 'read_model');"
    ))?;
    Ok(())
}

fn run(url: &str) -> anyhow::Result<()> {
    let seed = std::env::var("WEIR_PG_SINK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED);
    eprintln!("pg sink test: seed {seed}");
    let mut rng = SeededRng::new(seed);
    let dir = tempfile::tempdir()?;
    {
        let (_log, mut session) = open(dir.path())?;
        create_summary(&mut session, url)?;
        insert_orders(&mut session, &mut rng, 300)?;
        wait_equal(url, &mut session)?;
        let shown = weir_rows(&mut session, "SHOW QUERIES")?;
        anyhow::ensure!(
            shown.contains("summary_pg|postgres table read_model|running"),
            "{shown}"
        );
        insert_orders(&mut session, &mut rng, 200)?;
    }
    // A new session resumes the view and the sink where they committed.
    let (_log, mut session) = open(dir.path())?;
    insert_orders(&mut session, &mut rng, 100)?;
    wait_equal(url, &mut session)?;
    let key = psql(
        url,
        "SELECT string_agg(a.attname, ',') FROM pg_index i JOIN pg_attribute a \
         ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
         WHERE i.indrelid = 'read_model'::regclass AND i.indisprimary",
    )?;
    anyhow::ensure!(key == "customer", "the table's key: {key}");
    session.execute("DROP SINK summary_pg")?;
    let left = psql(
        url,
        "SELECT COUNT(*) FROM weir_sink_offsets WHERE sink = 'summary_pg'",
    )?;
    anyhow::ensure!(left == "0", "positions left after DROP: {left}");
    Ok(())
}

/// The cluster only the restart test uses (`scripts/postgres.sh` makes it): its URL, and its
/// version and name for `pg_ctlcluster`.
fn restart_cluster() -> anyhow::Result<(String, Vec<String>)> {
    let cache = std::env::var("WEIR_CACHE")
        .unwrap_or_else(|_| format!("{}/.cache/weir", std::env::var("HOME").unwrap_or_default()));
    let url = std::fs::read_to_string(format!("{cache}/postgres-restart.url"))?;
    let cluster = std::fs::read_to_string(format!("{cache}/postgres-restart.cluster"))?;
    Ok((
        url.trim().to_string(),
        cluster.split_whitespace().map(str::to_string).collect(),
    ))
}

/// `pg_ctlcluster VERSION CLUSTER action`, as root (or through sudo).
fn pg_ctlcluster(cluster: &[String], action: &str) -> anyhow::Result<()> {
    let root = std::process::Command::new("id").arg("-u").output()?.stdout == b"0\n";
    let mut cmd = match root {
        true => std::process::Command::new("pg_ctlcluster"),
        false => {
            let mut c = std::process::Command::new("sudo");
            c.args(["-n", "pg_ctlcluster"]);
            c
        }
    };
    let status = cmd.args(cluster).arg(action).status()?;
    anyhow::ensure!(status.success(), "pg_ctlcluster {action}: {status}");
    Ok(())
}

#[test]
fn a_postgres_restart_during_the_sinks_run_is_retried_then_exact() -> anyhow::Result<()> {
    let (server, cluster) = restart_cluster()?;
    with_database_on(&server, "weir_sink_restart", |url| {
        let result = restart_run(url, &cluster);
        // Whatever happened, the server is left running (to drop the database, and for the
        // next run); starting a running one fails harmlessly.
        let _ = pg_ctlcluster(&cluster, "start");
        result
    })
}

fn restart_run(url: &str, cluster: &[String]) -> anyhow::Result<()> {
    let mut rng = SeededRng::new(0x2E57A27);
    let dir = tempfile::tempdir()?;
    let (_log, mut session) = open(dir.path())?;
    create_summary(&mut session, url)?;
    insert_orders(&mut session, &mut rng, 200)?;
    wait_equal(url, &mut session)?;
    // PostgreSQL goes away for a few seconds while orders keep coming.
    pg_ctlcluster(cluster, "stop")?;
    for _ in 0..5 {
        insert_orders(&mut session, &mut rng, 40)?;
        std::thread::sleep(Duration::from_millis(500));
    }
    pg_ctlcluster(cluster, "start")?;
    insert_orders(&mut session, &mut rng, 40)?;
    wait_equal(url, &mut session)?;
    let shown = weir_rows(&mut session, "SHOW QUERIES")?;
    anyhow::ensure!(
        shown.contains("summary_pg|postgres table read_model|running"),
        "{shown}"
    );
    Ok(())
}
