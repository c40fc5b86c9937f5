//! `weir cdc postgres` is exactly once across real process kills: while psql commits
//! transactions (an insert, an update with a value used once, a delete each), the source is
//! SIGKILLed and started again `WEIR_CDC_CRASH_CYCLES` times (default 3), then drained and
//! stopped with SIGTERM. The table the events make equals PostgreSQL's, every row was created
//! once and every update's value appears once — no transaction lost or written twice — and
//! `weir sql` reads the same table through `format = 'debezium_json'`.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_log::{Isolation, Log, LogOptions, Offset, PartitionId};

use crate::util::Rng;

/// Rows before the source starts.
const SEED_ROWS: u32 = 1000;
/// Transactions the writer commits while the source is killed.
const WRITES: u32 = 1500;
/// How long draining may take.
const DRAIN: Duration = Duration::from_secs(90);

fn cycles() -> u32 {
    std::env::var("WEIR_CDC_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

fn server_url() -> anyhow::Result<String> {
    Ok(weir_cdc::local_server_url()?)
}

pub(crate) fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .args([url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The committed events, read alongside a running source (read-only).
fn events(dir: &std::path::Path) -> anyhow::Result<Vec<Value>> {
    let log = Log::open_read_only(dir, LogOptions::default())?;
    let topic = "dbserver.public.items";
    let mut out = Vec::new();
    if log.partition_count(topic).is_err() {
        return Ok(out);
    }
    for p in 0..log.partition_count(topic)? {
        log.for_each_record(
            topic,
            PartitionId(p),
            Offset(0),
            Isolation::ReadCommitted,
            |r| {
                if let Some(v) = r.value {
                    out.push(serde_json::from_slice(v).unwrap_or(Value::Null));
                }
                Ok::<(), weir_log::LogError>(())
            },
        )?;
    }
    Ok(out)
}

/// The rows the events make (id → v), in LSN order.
fn table_of(events: &[Value]) -> BTreeMap<i64, String> {
    let mut sorted: Vec<&Value> = events.iter().collect();
    sorted.sort_by_key(|e| e["source"]["lsn"].as_u64());
    let mut rows = BTreeMap::new();
    for e in sorted {
        match e["op"].as_str() {
            Some("r" | "c" | "u") => {
                if let (Some(id), Some(v)) = (e["after"]["id"].as_i64(), e["after"]["v"].as_str()) {
                    rows.insert(id, v.to_string());
                }
            }
            Some("d") => {
                if let Some(id) = e["before"]["id"].as_i64() {
                    rows.remove(&id);
                }
            }
            _ => {}
        }
    }
    rows
}

fn pg_rows(url: &str) -> anyhow::Result<BTreeMap<i64, String>> {
    Ok(psql(url, "SELECT id || '|' || v FROM items")?
        .lines()
        .filter_map(|l| {
            let (id, v) = l.split_once('|')?;
            Some((id.parse().ok()?, v.to_string()))
        })
        .collect())
}

fn start_source(
    dir: &std::path::Path,
    url: &str,
    slot: &str,
) -> anyhow::Result<std::process::Child> {
    Ok(crate::util::weir(dir)
        .args([
            "cdc",
            "postgres",
            "--url",
            url,
            "--publication",
            "items_pub",
        ])
        .args([
            "--slot",
            slot,
            "--topic-prefix",
            "dbserver",
            "--partitions",
            "2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?)
}

/// Runs `test(url, slot)` against a database of its own on the local PostgreSQL, dropped
/// (with its slots) after.
pub(crate) fn with_database(
    name: &str,
    test: impl FnOnce(&str, &str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let server = server_url()?;
    let name = format!("{name}_{}", std::process::id());
    psql(
        &server,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    )?;
    psql(&server, &format!("CREATE DATABASE {name}"))?;
    let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
    let result = test(&format!("{base}/{name}"), &format!("{name}_slot"));
    let _ = psql(
        &server,
        &format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE database = '{name}'"
        ),
    );
    let _ = psql(
        &server,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
    result
}

#[test]
fn the_cdc_source_is_exactly_once_across_kill_9() -> anyhow::Result<()> {
    with_database("weir_cdc_kill", run)
}

fn run(url: &str, slot: &str) -> anyhow::Result<()> {
    psql(
        url,
        "CREATE TABLE items (id BIGINT PRIMARY KEY, v TEXT NOT NULL)",
    )?;
    psql(
        url,
        &format!("INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, {SEED_ROWS}) g"),
    )?;
    let mut script = String::new();
    for n in 0..WRITES {
        let id = SEED_ROWS + 1 + n;
        script.push_str(&format!(
            "BEGIN; INSERT INTO items VALUES ({id}, 'new{id}'); \
             UPDATE items SET v = 'u{n}' WHERE id = {}; DELETE FROM items WHERE id = {}; COMMIT;\n\
             SELECT pg_sleep(0.004);\n",
            1 + n % SEED_ROWS,
            id - SEED_ROWS / 2
        ));
    }
    let dir = tempfile::tempdir()?;
    let script_path = dir.path().join("writes.sql");
    std::fs::write(&script_path, script)?;
    let data = dir.path().join("data");
    let mut writer = Command::new("psql")
        .args([url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(&script_path)
        .stdout(Stdio::null())
        .spawn()?;
    let seed = std::env::var("WEIR_CDC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xCDC);
    eprintln!("cdc crash test: seed {seed}, {} kills", cycles());
    let mut rng = Rng::new(seed);
    for _ in 0..cycles() {
        let mut source = start_source(&data, url, slot)?;
        std::thread::sleep(Duration::from_millis(400 + rng.below(1200)));
        source.kill()?;
        source.wait()?;
    }
    anyhow::ensure!(writer.wait()?.success(), "the writer failed");
    let source = start_source(&data, url, slot)?;
    let expected = pg_rows(url)?;
    let deadline = Instant::now() + DRAIN;
    loop {
        // Read while it runs: committed events only.
        let rows = match events(&data) {
            Ok(e) => table_of(&e),
            Err(_) => BTreeMap::new(), // the source may not have made the log yet
        };
        if rows == expected {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not drained: {} rows of {}",
            rows.len(),
            expected.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = source.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status()?;
    let out = source.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = events(&data)?;
    let mut creates: BTreeMap<i64, u32> = BTreeMap::new();
    let mut updates: BTreeMap<String, u32> = BTreeMap::new();
    for e in &events {
        match e["op"].as_str() {
            Some("r" | "c") => {
                *creates
                    .entry(e["after"]["id"].as_i64().unwrap_or(-1))
                    .or_default() += 1
            }
            Some("u") => *updates.entry(e["after"]["v"].to_string()).or_default() += 1,
            _ => {}
        }
    }
    let twice: Vec<_> = creates.iter().filter(|(_, n)| **n > 1).collect();
    anyhow::ensure!(twice.is_empty(), "rows created twice: {twice:?}");
    let twice: Vec<_> = updates.iter().filter(|(_, n)| **n > 1).collect();
    anyhow::ensure!(twice.is_empty(), "updates written twice: {twice:?}");
    // Updates before the snapshot are in it; every later one is an event, once.
    anyhow::ensure!(!updates.is_empty() && updates.len() <= WRITES as usize);
    // The same table through SQL.
    let sql = crate::util::run(
        &data,
        &[
            "sql",
            "-c",
            "CREATE TABLE items (id BIGINT PRIMARY KEY, v TEXT) \
               WITH (topic = 'dbserver.public.items', format = 'debezium_json');
             SELECT COUNT(*) AS n, MAX(id) AS top FROM items;",
        ],
        "",
    );
    let shown = crate::util::stdout(&sql);
    let top = expected.keys().last().copied().unwrap_or_default();
    anyhow::ensure!(
        shown.contains(&format!("| {} ", expected.len())) && shown.contains(&format!(" {top} ")),
        "weir sql printed:\n{shown}{}",
        crate::util::stderr(&sql)
    );
    Ok(())
}
