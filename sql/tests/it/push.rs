//! Push queries (`SELECT … EMIT CHANGES`): the result over what the log holds, then its
//! changes, from a transient query that goes with its subscription — and one a crash left
//! behind is dropped, not resumed, when the data directory's queries next start.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use weir_sql::{Output, PushRequest, Session, Subscription};

use crate::streaming::open;

/// How long a test waits for a push query's rows.
const WAIT: Duration = Duration::from_secs(30);

/// The rows of a batch as (op, values as text).
fn rows(batch: &RecordBatch) -> Vec<(String, Vec<String>)> {
    let ops = batch.column(0).as_string::<i32>();
    (0..batch.num_rows())
        .map(|r| {
            let values = (1..batch.num_columns())
                .map(|c| {
                    let a = batch.column(c);
                    match a.is_null(r) {
                        true => "NULL".to_string(),
                        false => a.as_primitive::<Int64Type>().value(r).to_string(),
                    }
                })
                .collect();
            (ops.value(r).to_string(), values)
        })
        .collect()
}

/// Reads change rows into `seen` until `done` holds.
fn read_until(
    sub: &mut Subscription,
    seen: &mut Vec<(String, Vec<String>)>,
    done: impl Fn(&[(String, Vec<String>)]) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while !done(seen) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out; rows so far: {seen:?}"
        );
        seen.extend(rows(&sub.next_batch(Duration::from_millis(100))?));
    }
    Ok(())
}

/// The latest row per first value, after applying the changes.
fn latest(changes: &[(String, Vec<String>)]) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for (op, v) in changes {
        match op.as_str() {
            "insert" | "update_after" => {
                out.insert(v[0].clone(), v.clone());
            }
            _ => {
                out.remove(&v[0]);
            }
        }
    }
    out
}

fn push_queries(session: &mut Session) -> anyhow::Result<Vec<String>> {
    let outcomes = session.execute("SHOW QUERIES")?;
    let Output::Rows { batches, .. } = &outcomes[0].output else {
        anyhow::bail!("SHOW QUERIES has no rows");
    };
    let mut names = Vec::new();
    for b in batches {
        let n = b.column(0).as_string::<i32>();
        names.extend((0..b.num_rows()).map(|r| n.value(r).to_string()));
    }
    Ok(names
        .into_iter()
        .filter(|n| n.starts_with("_push_"))
        .collect())
}

fn request(sql: &str) -> anyhow::Result<PushRequest> {
    PushRequest::parse(sql).ok_or_else(|| anyhow::anyhow!("not a push request: {sql}"))
}

#[test]
fn a_push_query_streams_its_result_then_its_changes_and_ends_with_its_subscription(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (log, mut session) = open(dir.path())?;
    session.execute(
        "CREATE STREAM bids (auction BIGINT, price BIGINT) WITH (partitions = 2);
         INSERT INTO bids VALUES (1, 10), (1, 30), (2, 5);",
    )?;
    // An updating aggregate: its result so far, then retractions and new rows.
    let mut counts = session.push(&request(
        "SELECT auction, COUNT(*) AS n, MAX(price) AS hi FROM bids GROUP BY auction EMIT CHANGES",
    )?)?;
    let names: Vec<&str> = counts
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["op", "auction", "n", "hi"]);
    let mut seen = Vec::new();
    let row = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    read_until(&mut counts, &mut seen, |s| {
        latest(s).into_values().collect::<Vec<_>>()
            == [row(&["1", "2", "30"]), row(&["2", "1", "5"])]
    })?;
    session.execute("INSERT INTO bids VALUES (2, 7)")?;
    read_until(&mut counts, &mut seen, |s| {
        latest(s).get("2") == Some(&row(&["2", "2", "7"]))
    })?;
    assert!(
        seen.contains(&("update_before".into(), row(&["2", "1", "5"]))),
        "{seen:?}"
    );
    // A stateless query: every row an insert.
    let mut doubled = session.push(&request(
        "SELECT price * 2 AS p2 FROM bids WHERE auction = 1 EMIT CHANGES",
    )?)?;
    let mut seen = Vec::new();
    read_until(&mut doubled, &mut seen, |s| s.len() >= 2)?;
    seen.sort();
    assert_eq!(
        seen,
        [
            ("insert".into(), row(&["20"])),
            ("insert".into(), row(&["60"]))
        ]
    );
    assert_eq!(push_queries(&mut session)?, ["_push_1", "_push_2"]);
    // In a script it is refused: its rows would never end.
    let e = session
        .execute("SELECT 1; SELECT auction FROM bids EMIT CHANGES")
        .expect_err("a push query in a script");
    assert!(e.to_string().contains("send it on its own"), "{e}");

    drop(counts);
    drop(doubled);
    assert!(push_queries(&mut session)?.is_empty());
    assert!(log.partition_count("__weir_push._push_1").is_err());

    // One a crash left behind (its catalog entry, no subscription) is dropped at the next start.
    let mut leftover = session.push(&request("SELECT auction FROM bids EMIT CHANGES")?)?;
    let mut seen = Vec::new();
    read_until(&mut leftover, &mut seen, |s| s.len() >= 4)?;
    let mut catalog = weir_sql::catalog::Catalog::open(&log)?;
    let mut orphan = catalog
        .get("_push_1")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no _push_1"))?;
    orphan.name = "_push_9".into();
    orphan.topic = "__weir_push._push_9".into();
    log.create_topic(&orphan.topic, 1, Default::default())?;
    catalog.put(orphan)?;
    drop(leftover);
    drop(catalog);
    drop(session);
    drop(log);
    let (log, mut session) = open(dir.path())?;
    assert!(push_queries(&mut session)?.is_empty());
    assert!(log.partition_count("__weir_push._push_9").is_err());
    Ok(())
}
