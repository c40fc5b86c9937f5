//! `weir bench pg-sink`: rows upserted into PostgreSQL per second by the sink
//! (`weir_cdc::PgSink`) — a keyed topic of `--rows` distinct keys (a view's rows) applied to
//! a table of the local PostgreSQL (`scripts/postgres.sh`), in a database made for the run.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use weir_cdc::{pg_type, PgSink, PgSinkConfig, SinkColumn};
use weir_log::{Log, LogOptions, PartitionId, Record};

use super::Scratch;
use crate::cli::BenchPgSinkArgs;

/// Records appended to the log per call while the topic is filled.
const FILL_CHUNK: usize = 10_000;

pub fn pg_sink(data_dir: &Path, a: BenchPgSinkArgs) -> Result<()> {
    if a.rows == 0 {
        bail!("--rows must be at least 1");
    }
    let server = weir_cdc::local_server_url()?;
    let db = format!("weir_bench_sink_{}", std::process::id());
    psql(&server, &format!("CREATE DATABASE {db}"))?;
    let url = format!(
        "{}/{db}",
        server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b)
    );
    let result = run(data_dir, &url, a.rows);
    let _ = psql(
        &server,
        &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
    );
    result
}

fn run(data_dir: &Path, url: &str, rows: u64) -> Result<()> {
    let scratch = Scratch::new(data_dir, "pg-sink")?;
    let log = Log::open_with(scratch.0.join("log"), LogOptions::without_cleaner())?;
    log.create_topic("summary", 1, Default::default())?;
    let mut chunk = Vec::with_capacity(FILL_CHUNK);
    for id in 0..rows {
        chunk.push(Record::keyed(
            format!(r#"{{"customer":{id}}}"#),
            format!(
                r#"{{"customer":{id},"orders":{},"total":{}.5,"last_order":{}}}"#,
                id % 17,
                id * 3,
                1_767_225_600_000 + id as i64
            ),
        ));
        if chunk.len() == FILL_CHUNK {
            log.append("summary", PartitionId(0), &std::mem::take(&mut chunk))?;
        }
    }
    log.append("summary", PartitionId(0), &chunk)?;
    let column = |name: &str, t: &str| SinkColumn {
        name: name.into(),
        pg_type: pg_type(t),
        millis: t == "TIMESTAMP",
    };
    let config = PgSinkConfig {
        name: "bench".into(),
        url: url.into(),
        table: "read_model".into(),
        columns: vec![
            column("customer", "BIGINT"),
            column("orders", "BIGINT"),
            column("total", "DOUBLE"),
            column("last_order", "TIMESTAMP"),
        ],
        primary_key: vec!["customer".into()],
        topic: "summary".into(),
        poll: std::time::Duration::from_millis(10),
    };
    let mut sink = PgSink::connect(&log, config).context("connecting the sink")?;
    let started = Instant::now();
    let mut batches = 0;
    while sink.round()? > 0 {
        batches += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    let held = psql(url, "SELECT COUNT(*) FROM read_model")?;
    if held != rows.to_string() {
        bail!("PostgreSQL holds {held} rows, not {rows}");
    }
    println!(
        "pg-sink: {rows} rows upserted in {secs:.2} s ({batches} transactions): {:.0} rows/s",
        rows as f64 / secs
    );
    Ok(())
}

fn psql(url: &str, sql: &str) -> Result<String> {
    let out = std::process::Command::new("psql")
        .args([url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .context("running psql")?;
    if !out.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
