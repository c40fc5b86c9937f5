//! Real Postgres clients against a `weir serve` process: psql (Debian's `postgresql-client`)
//! and psycopg 3 (PyPI), both installed by `scripts/setup.sh`. psql runs DDL, inserts, batch
//! queries and a located error, and `COPY (SUBSCRIBE TO …) TO STDOUT` streams rows inserted
//! after it started; the psycopg script (`tests/interop/pg_psycopg.py`) covers parameters,
//! prepared statements, binary values, errors, views and subscriptions.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::kafka_interop::{run_client_script, tool, venv_python, Served};

/// psql against `addr`, without the user's `.psqlrc`, unaligned and tuples only, stopping at
/// the first error.
fn psql(addr: &str) -> anyhow::Result<Command> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("bad address {addr}"))?;
    let mut c = Command::new(tool("psql")?);
    c.args([
        "-X",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        host,
        "-p",
        port,
    ])
    .args(["-U", "weir", "-d", "weir"])
    .env("PGCONNECT_TIMEOUT", "10")
    .stdin(Stdio::null());
    Ok(c)
}

/// Runs psql with one `-c` per statement; (success, stdout, stderr).
fn run_psql(addr: &str, statements: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let mut c = psql(addr)?;
    for s in statements {
        c.arg("-c").arg(s);
    }
    let out = c.output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn psql_runs_ddl_queries_and_errors_and_subscribe_streams_later_rows() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Served::start(dir.path())?;
    let pg = server.pg.clone();
    let (ok, out, err) = run_psql(
        &pg,
        &[
            "CREATE STREAM bids (auction BIGINT, price BIGINT, ts TIMESTAMP) WITH (partitions = 2)",
            "INSERT INTO bids VALUES (42, 12000, TIMESTAMP '2026-01-01 00:00:01'), \
             (43, 50, TIMESTAMP '2026-01-01 00:00:02'), (42, 7, TIMESTAMP '2026-01-01 00:00:03')",
            "SELECT auction, COUNT(*), MAX(price) FROM bids GROUP BY auction ORDER BY auction",
            "SHOW STREAMS",
        ],
    )?;
    anyhow::ensure!(ok, "psql failed:\n{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "CREATE STREAM",
            "INSERT 0 3",
            "42|2|12000",
            "43|1|50",
            "bids|bids|json|2|"
        ],
        "{out}"
    );

    // A located error: psql marks the position.
    let (ok, _, err) = run_psql(&pg, &["SELECT prise\nFROM bids"])?;
    assert!(!ok);
    assert!(
        err.contains("column 'prise' not found") && err.contains("did you mean `price`?"),
        "{err}"
    );
    assert!(err.contains("LINE 1: SELECT prise"), "{err}");

    // COPY (SUBSCRIBE …) TO STDOUT: psql prints rows as they arrive (stdbuf: unbuffered).
    let mut sub = Command::new(tool("stdbuf")?)
        .arg("-o0")
        .arg(psql(&pg)?.get_program())
        .args(psql(&pg)?.get_args())
        .args(["-c", "COPY (SUBSCRIBE TO bids) TO STDOUT"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = sub
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Inserted after the subscription started (retried until it has: psql may still be
    // connecting).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    let mut n = 0;
    while got.len() < 2 && Instant::now() < deadline {
        n += 1;
        let (ok, out, err) = run_psql(
            &pg,
            &[&format!(
                "INSERT INTO bids VALUES ({}, 1, TIMESTAMP '2026-01-01 00:01:00')",
                1000 + n
            )],
        )?;
        anyhow::ensure!(ok, "insert failed: {out}{err}");
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
            got.push(line);
        }
    }
    let _ = sub.kill();
    let _ = sub.wait();
    assert!(got.len() >= 2, "the subscription printed {got:?}");
    for line in &got {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), 4, "{line}");
        assert_eq!(fields[0], "insert", "{line}");
        let auction: i64 = fields[1].parse()?;
        assert!((1001..=1000 + n).contains(&auction), "{line}");
        assert_eq!(&fields[2..], ["1", "2026-01-01 00:01:00"], "{line}");
    }
    server.stop()
}

#[test]
fn psycopg_runs_parameters_views_errors_and_subscriptions() -> anyhow::Result<()> {
    run_client_script(Command::new(venv_python()?), "pg_psycopg.py", "ok", |s| {
        s.pg.clone()
    })
}

#[test]
fn weir_sql_beside_a_running_server_runs_statements_through_its_postgres_listener(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Served::start(dir.path())?;
    let sql = |s: &str| crate::util::run(dir.path(), &["sql", "-c", s], "");
    let out = sql(
        "CREATE STREAM bids (auction BIGINT, price BIGINT) WITH (partitions = 2);
         INSERT INTO bids VALUES (1, 10), (1, 30), (2, 5);
         SELECT auction, COUNT(*) AS n, MAX(price) AS hi FROM bids GROUP BY auction ORDER BY auction;",
    );
    let stdout = crate::util::stdout(&out);
    assert!(
        out.status.success(),
        "{stdout}{}",
        crate::util::stderr(&out)
    );
    assert_eq!(
        stdout,
        "CREATE STREAM\nINSERT 0 3\n\
         +---------+---+----+\n\
         | auction | n | hi |\n\
         +---------+---+----+\n\
         | 1       | 2 | 30 |\n\
         | 2       | 1 | 5  |\n\
         +---------+---+----+\n\
         (2 rows)\n"
    );
    // A psql client sees what `weir sql` created, and the other way round.
    let (ok, out, err) = run_psql(&server.pg, &["INSERT INTO bids VALUES (3, 1)"])?;
    anyhow::ensure!(ok, "{out}{err}");
    let out = sql("SELECT COUNT(*) AS n FROM bids");
    assert!(crate::util::stdout(&out).contains("| 4 |"), "{out:?}");
    // Errors are located as embedded, and fail the command.
    let out = sql("SELECT prise\nFROM bids");
    assert!(!out.status.success());
    let err = crate::util::stderr(&out);
    assert!(
        err.contains("column 'prise' not found") && err.contains("  SELECT prise\n         ^"),
        "{err}"
    );
    // A server-side error after a statement that ran: the first one's output, then the error.
    let out = sql("INSERT INTO bids VALUES (5, 5); SELECT * FROM nope");
    assert!(!out.status.success());
    assert_eq!(crate::util::stdout(&out), "INSERT 0 1\n");
    assert!(crate::util::stderr(&out).contains("relation `nope` does not exist"));
    server.stop()
}

#[test]
fn psql_lists_and_describes_relations_through_pg_catalog() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Served::start(dir.path())?;
    let (ok, _, err) = run_psql(
        &server.pg,
        &[
            "CREATE STREAM bids (auction BIGINT, double_price AS price * 2, price BIGINT)",
            "CREATE TABLE customers (id BIGINT PRIMARY KEY, name TEXT)",
            "CREATE MATERIALIZED VIEW v AS SELECT auction, COUNT(*) AS n FROM bids GROUP BY auction",
        ],
    )?;
    anyhow::ensure!(ok, "{err}");
    let (ok, out, err) = run_psql(
        &server.pg,
        &["\\d", "\\dt", "\\dm", "\\d customers", "\\d bids", "\\d v"],
    )?;
    anyhow::ensure!(ok && err.is_empty(), "{out}\n{err}");
    // Unaligned, tuples only: \d (3 relations), \dt (2), \dm (1), then the columns.
    let expected = "public|bids|table|weir\n\
                    public|customers|table|weir\n\
                    public|v|materialized view|weir\n\
                    public|bids|table|weir\n\
                    public|customers|table|weir\n\
                    public|v|materialized view|weir\n\
                    id|bigint||not null|\n\
                    name|text|||\n\
                    auction|bigint|||\n\
                    double_price|bigint|||generated always as (price * 2) stored\n\
                    price|bigint|||\n\
                    auction|bigint|||\n\
                    n|bigint|||\n";
    anyhow::ensure!(out == expected, "psql printed:\n{out}");
    // Drivers' connect-time probes.
    let (ok, out, err) = run_psql(
        &server.pg,
        &[
            "SELECT pg_catalog.version()",
            "SHOW transaction isolation level",
            "SELECT current_schema()",
            "SELECT typname FROM pg_type WHERE oid = to_regtype('int8')",
        ],
    )?;
    anyhow::ensure!(ok, "{err}");
    for expected in ["PostgreSQL 16.6", "read committed", "public", "int8"] {
        anyhow::ensure!(out.contains(expected), "no `{expected}` in:\n{out}");
    }
    server.stop()
}
