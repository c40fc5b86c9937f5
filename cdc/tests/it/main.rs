//! The PostgreSQL source against a real PostgreSQL (Debian's, with wal2json, started by
//! `scripts/postgres.sh`, which the test command's set-up runs): each test gets a database of
//! its own. The snapshot and the stream meet exactly under concurrent writes (every row's
//! create once, the events' table equals PostgreSQL's), updates and deletes flow through, and
//! a restarted source resumes where its log transaction committed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_cdc::{PgSource, PgSourceConfig};
use weir_log::{Isolation, Log, LogOptions, Offset, PartitionId};

/// How long a test waits for the source to catch up.
const WAIT: Duration = Duration::from_secs(60);

fn server_url() -> anyhow::Result<String> {
    Ok(weir_cdc::local_server_url()?)
}

/// A connection on a runtime of its own.
struct Pg {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Pg {
    fn connect(url: &str) -> anyhow::Result<Pg> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            Ok::<_, anyhow::Error>(client)
        })?;
        Ok(Pg { runtime, client })
    }

    fn exec(&self, sql: &str) -> anyhow::Result<()> {
        Ok(self.runtime.block_on(self.client.batch_execute(sql))?)
    }

    fn rows(&self, sql: &str) -> anyhow::Result<Vec<String>> {
        let rows = self.runtime.block_on(self.client.query(sql, &[]))?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }
}

/// A database of the test's own, dropped (with the test's slots) at the end.
struct Database {
    admin: Pg,
    name: String,
    url: String,
}

impl Database {
    fn create(test: &str) -> anyhow::Result<Database> {
        let server = server_url()?;
        let admin = Pg::connect(&server)?;
        let name = format!("weir_{test}_{}", std::process::id());
        admin.exec(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
        admin.exec(&format!("CREATE DATABASE {name}"))?;
        let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
        Ok(Database {
            url: format!("{base}/{name}"),
            admin,
            name,
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = self.admin.exec(&format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE database = '{}'",
            self.name
        ));
        let _ = self.admin.exec(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

fn config(db: &Database) -> PgSourceConfig {
    PgSourceConfig {
        name: "shop".into(),
        url: db.url.clone(),
        publication: "weir_pub".into(),
        slot: format!("{}_slot", db.name),
        topic_prefix: "dbserver".into(),
        partitions: 2,
        poll: Duration::from_millis(20),
    }
}

fn open_log(dir: &std::path::Path) -> anyhow::Result<(Log, weir_coord::TransactionCoordinator)> {
    let log = Log::open_with(dir, LogOptions::without_cleaner())?;
    let (_, txns) = weir_coord::start(&log)?;
    Ok((log, txns))
}

/// Every committed event of a topic (all partitions), parsed.
fn events(log: &Log, topic: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
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

/// The table the events make (id → row as text), and how many times each id was created.
fn materialize(events: &[Value]) -> (BTreeMap<i64, String>, BTreeMap<i64, u32>) {
    let mut rows = BTreeMap::new();
    let mut creates = BTreeMap::new();
    let mut by_lsn: Vec<&Value> = events.iter().collect();
    by_lsn.sort_by_key(|e| e["source"]["lsn"].as_u64());
    for e in by_lsn {
        let op = e["op"].as_str().unwrap_or_default();
        let row = if op == "d" { &e["before"] } else { &e["after"] };
        let Some(id) = row["id"].as_i64() else {
            continue;
        };
        match op {
            "c" | "r" => {
                *creates.entry(id).or_insert(0) += 1;
                rows.insert(id, row["v"].to_string());
            }
            "u" => {
                rows.insert(id, row["v"].to_string());
            }
            "d" => {
                rows.remove(&id);
            }
            _ => {}
        }
    }
    (rows, creates)
}

fn pg_table(pg: &Pg) -> anyhow::Result<BTreeMap<i64, String>> {
    Ok(pg
        .rows("SELECT id::text || '|' || to_json(v)::text FROM items")?
        .into_iter()
        .filter_map(|r| {
            let (id, v) = r.split_once('|')?;
            Some((id.parse().ok()?, v.to_string()))
        })
        .collect())
}

/// Runs rounds until the slot has nothing more (the test's writes are done by then).
fn catch_up(source: &mut PgSource) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while source.round()? > 0 || source.progress().snapshot.is_none() {
        anyhow::ensure!(Instant::now() < deadline, "the source did not catch up");
    }
    Ok(())
}

#[test]
fn the_snapshot_and_the_stream_meet_exactly_under_concurrent_writes() -> anyhow::Result<()> {
    let db = Database::create("meet")?;
    let pg = Pg::connect(&db.url)?;
    pg.exec("CREATE TABLE items (id BIGINT PRIMARY KEY, v TEXT)")?;
    pg.exec("INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 2000) g")?;
    // A writer inserts, updates and deletes while the source snapshots and streams.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, url) = (stop.clone(), db.url.clone());
        std::thread::spawn(move || -> anyhow::Result<u32> {
            let pg = Pg::connect(&url)?;
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && n < 3000 {
                let id = 2001 + i64::from(n);
                pg.exec(&format!(
                    "BEGIN; INSERT INTO items VALUES ({id}, 'new'); \
                     UPDATE items SET v = 'u{n}' WHERE id = {}; \
                     DELETE FROM items WHERE id = {}; COMMIT;",
                    1 + i64::from(n) % 2000,
                    id - 1000
                ))?;
                n += 1;
            }
            Ok(n)
        })
    };
    let dir = tempfile::tempdir()?;
    let (log, txns) = open_log(dir.path())?;
    let mut source = PgSource::connect(&log, &txns, config(&db))?;
    let deadline = Instant::now() + WAIT;
    while !writer.is_finished() {
        anyhow::ensure!(Instant::now() < deadline, "the writer did not finish");
        source.round()?;
    }
    stop.store(true, Ordering::SeqCst);
    let written = writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    catch_up(&mut source)?;
    let events = events(&log, "dbserver.public.items")?;
    let (rows, creates) = materialize(&events);
    assert_eq!(
        rows,
        pg_table(&pg)?,
        "the events' table differs from PostgreSQL's"
    );
    let twice: Vec<_> = creates.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "created more than once: {twice:?}");
    // Rows created and deleted before the snapshot have no events at all; every other row's
    // create came once.
    assert!(creates.len() >= rows.len() && creates.len() <= 2000 + written as usize);
    assert!(events.iter().any(|e| e["op"] == "r") && events.iter().any(|e| e["op"] == "d"));
    Ok(())
}

#[test]
fn a_restarted_source_resumes_where_its_log_transaction_committed() -> anyhow::Result<()> {
    let db = Database::create("resume")?;
    let pg = Pg::connect(&db.url)?;
    pg.exec(
        "CREATE TABLE items (id BIGINT PRIMARY KEY, v TEXT); INSERT INTO items VALUES (1, 'a')",
    )?;
    let dir = tempfile::tempdir()?;
    {
        let (log, txns) = open_log(dir.path())?;
        let mut source = PgSource::connect(&log, &txns, config(&db))?;
        catch_up(&mut source)?;
    }
    pg.exec("INSERT INTO items VALUES (2, 'b'); UPDATE items SET v = 'a2' WHERE id = 1")?;
    pg.exec("TRUNCATE items; INSERT INTO items VALUES (3, 'c')")?;
    let (log, txns) = open_log(dir.path())?;
    let mut source = PgSource::connect(&log, &txns, config(&db))?;
    assert!(
        source.progress().snapshot.is_some(),
        "the snapshot is not taken twice"
    );
    catch_up(&mut source)?;
    let events = events(&log, "dbserver.public.items")?;
    let ops: Vec<&str> = events.iter().filter_map(|e| e["op"].as_str()).collect();
    assert_eq!(ops.iter().filter(|o| **o == "r").count(), 1, "{ops:?}");
    assert_eq!(ops.iter().filter(|o| **o == "c").count(), 2, "{ops:?}");
    // The truncate reaches both partitions of the topic.
    assert_eq!(ops.iter().filter(|o| **o == "t").count(), 2, "{ops:?}");
    let last = events
        .iter()
        .find(|e| e["after"]["id"] == 3)
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["source"]["table"], "items");
    assert_eq!(last["source"]["snapshot"], "false");
    Ok(())
}

#[test]
fn a_transaction_larger_than_a_record_batch_is_written_whole() -> anyhow::Result<()> {
    let db = Database::create("large")?;
    let pg = Pg::connect(&db.url)?;
    pg.exec("CREATE TABLE items (id BIGINT PRIMARY KEY, v TEXT)")?;
    let dir = tempfile::tempdir()?;
    let (log, txns) = open_log(dir.path())?;
    let mut source = PgSource::connect(&log, &txns, config(&db))?;
    catch_up(&mut source)?;
    // About 4 MB of events in one transaction: several record batches of one log transaction.
    pg.exec("INSERT INTO items SELECT g, repeat('x', 400) FROM generate_series(1, 8000) g")?;
    catch_up(&mut source)?;
    let events = events(&log, "dbserver.public.items")?;
    assert_eq!(events.len(), 8000);
    let (rows, _) = materialize(&events);
    assert_eq!(rows.len(), 8000);
    Ok(())
}

mod sink;
