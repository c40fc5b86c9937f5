//! `CREATE SOURCE … WITH (connector = 'postgres-cdc', …)` against a real PostgreSQL: the
//! source runs with the session's queries, a table over its topic (`debezium_json`) follows
//! PostgreSQL's inserts, updates and deletes, a new session resumes it without a second
//! snapshot, and DROP SOURCE stops it.

use std::time::{Duration, Instant};

use crate::pg_sink::{psql, weir_rows};
use crate::streaming::open;

/// How long the test waits for the table to follow PostgreSQL.
const WAIT: Duration = Duration::from_secs(60);

const WEIR: &str = "SELECT id, v FROM items ORDER BY id";
const PG: &str = "SELECT id || '|' || v FROM items ORDER BY id";

fn wait_equal(url: &str, session: &mut weir_sql::Session) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let (want, got) = (psql(url, PG)?, weir_rows(session, WEIR)?);
        if want == got {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "Weir has:\n{got}\nPostgreSQL:\n{want}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_cdc_source_keeps_a_table_in_step_with_postgres() -> anyhow::Result<()> {
    let server = weir_cdc::local_server_url()?;
    let db = format!("weir_sql_cdc_{}", std::process::id());
    psql(
        &server,
        &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
    )?;
    psql(&server, &format!("CREATE DATABASE {db}"))?;
    let url = format!(
        "{}/{db}",
        server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b)
    );
    let result = run(&url, &format!("{db}_slot"));
    let _ = psql(
        &server,
        &format!("SELECT pg_drop_replication_slot('{db}_slot')"),
    );
    let _ = psql(
        &server,
        &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
    );
    result
}

fn run(url: &str, slot: &str) -> anyhow::Result<()> {
    psql(url, "CREATE TABLE items (id BIGINT PRIMARY KEY, v TEXT); INSERT INTO items VALUES (1, 'a'), (2, 'b')")?;
    let dir = tempfile::tempdir()?;
    {
        let (_log, mut session) = open(dir.path())?;
        session.execute(&format!(
            "CREATE SOURCE shop WITH (connector = 'postgres-cdc', url = '{url}', \
               publication = 'weir_pub', slot = '{slot}', 'topic.prefix' = 'dbserver');
             CREATE TABLE items (id BIGINT PRIMARY KEY, v TEXT) \
               WITH (topic = 'dbserver.public.items', format = 'debezium_json');"
        ))?;
        wait_equal(url, &mut session)?;
        psql(url, "INSERT INTO items VALUES (3, 'c'); UPDATE items SET v = 'a2' WHERE id = 1; DELETE FROM items WHERE id = 2")?;
        wait_equal(url, &mut session)?;
        let shown = weir_rows(&mut session, "SHOW QUERIES")?;
        anyhow::ensure!(
            shown.contains("shop|topics dbserver.schema.table (from PostgreSQL)|running"),
            "{shown}"
        );
    }
    psql(url, "INSERT INTO items VALUES (4, 'd')")?;
    let (_log, mut session) = open(dir.path())?;
    wait_equal(url, &mut session)?;
    session.execute(
        "CREATE STREAM item_rows (id BIGINT) \
           WITH (topic = 'dbserver.public.items', format = 'debezium_json')",
    )?;
    let rows = weir_rows(&mut session, "SELECT COUNT(*) FROM item_rows")?;
    // Two snapshot rows, then 3, 1 (update) and 4: no second snapshot after the restart.
    anyhow::ensure!(rows == "5", "rows written: {rows}");
    session.execute("DROP SOURCE shop")?;
    let shown = weir_rows(&mut session, "SHOW QUERIES")?;
    anyhow::ensure!(!shown.contains("shop"), "{shown}");
    Ok(())
}
