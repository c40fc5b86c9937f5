//! `CREATE SOURCE … WITH (connector = 'postgres-cdc', …)` against a real PostgreSQL: the
//! source runs with the session's queries, a table over its topic (`debezium_json`) follows
//! PostgreSQL's inserts, updates and deletes, a new session resumes it without a second
//! snapshot, and DROP SOURCE stops it.

use crate::pg_sink::{psql, wait_same, weir_rows, with_database};
use crate::streaming::open;

const WEIR: &str = "SELECT id, v FROM items ORDER BY id";
const PG: &str = "SELECT id || '|' || v FROM items ORDER BY id";

fn wait_equal(url: &str, session: &mut weir_sql::Session) -> anyhow::Result<()> {
    wait_same(|| psql(url, PG), || weir_rows(session, WEIR)).map(|_| ())
}

#[test]
fn a_cdc_source_keeps_a_table_in_step_with_postgres() -> anyhow::Result<()> {
    with_database("weir_sql_cdc", |url| {
        run(url, &format!("weir_sql_cdc_slot_{}", std::process::id()))
    })
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
