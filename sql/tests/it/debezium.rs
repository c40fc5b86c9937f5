//! Debezium change events (`format = 'debezium_json'`) from a fixture set — snapshot reads,
//! creates, updates, deletes, tombstones (bare keys and keys in Kafka Connect's schema
//! wrapper), a replay, malformed events — read as a table (upsert by primary key, delete,
//! replays ignored and counted, bad events reported), as a stream (the rows written), joined
//! by a stream in a persistent query (bad events dead-lettered with the reason), and
//! subscribed to.

use std::time::Duration;

use datafusion::arrow::array::AsArray;
use weir_log::{Log, PartitionId, Record};
use weir_sql::{PushRequest, Session};

use crate::streaming::{open, single_i64, text_rows, wait_for, wait_for_dead_letters};

const FIXTURE: &str = include_str!("../fixtures/debezium_customers.jsonl");

const TOPIC: &str = "dbserver.public.customers";

/// The fixture's records: key, then the event (a JSON value, raw text, or none for a
/// tombstone).
fn fixture() -> anyhow::Result<Vec<Record>> {
    let mut out = Vec::new();
    for line in FIXTURE.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let key = v["key"].to_string();
        out.push(match (&v["value"], v["text"].as_str()) {
            (_, Some(text)) => Record::keyed(key, text.to_string()),
            (serde_json::Value::Null, None) => Record::tombstone(key),
            (value, None) => Record::keyed(key, value.to_string()),
        });
    }
    Ok(out)
}

fn customers(log: &Log, session: &mut Session) -> anyhow::Result<()> {
    session.execute(&format!(
        "CREATE TABLE customers (id BIGINT PRIMARY KEY, name TEXT, city TEXT) \
           WITH (topic = '{TOPIC}', format = 'debezium_json');
         CREATE STREAM customer_rows (id BIGINT, name TEXT, city TEXT) \
           WITH (topic = '{TOPIC}', format = 'debezium_json');"
    ))?;
    log.append(TOPIC, PartitionId(0), &fixture()?)?;
    Ok(())
}

#[test]
fn change_events_read_as_a_table_and_as_a_stream() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (log, mut session) = open(dir.path())?;
    customers(&log, &mut session)?;
    let (rows, notices) = text_rows(
        &mut session,
        "SELECT id, name, city FROM customers ORDER BY id",
    )?;
    assert_eq!(rows, ["1|Ann|Bergen", "3|Cid|Lima", "5|Eve|Kyiv"]);
    let notices = notices.join("\n");
    assert!(notices.contains("skipped 2 record(s)"), "{notices}");
    assert!(
        notices.contains("offset 7: not a Debezium envelope: unknown op `x`"),
        "{notices}"
    );
    assert!(notices.contains("offset 11: not JSON"), "{notices}");
    assert!(
        notices.contains("ignored 1 replayed change(s)"),
        "{notices}"
    );
    // As a stream: the rows written (creates, snapshot reads, updates; the replay too).
    let (rows, _) = text_rows(
        &mut session,
        "SELECT id, city FROM customer_rows ORDER BY _offset",
    )?;
    assert_eq!(
        rows,
        ["1|Oslo", "2|Rome", "3|Lima", "1|Bergen", "3|Old", "4|Nice", "5|Kyiv"]
    );
    // A truncate empties the table; what follows it counts.
    log.append(
        TOPIC,
        PartitionId(0),
        &[
            // (keyed, as a compacted topic needs: the key of a truncate is not read)
            Record::keyed(
                "truncate",
                r#"{"op":"t","before":null,"after":null,"source":{"lsn":700}}"#,
            ),
            Record::keyed(
                r#"{"id":7}"#,
                r#"{"op":"c","after":{"id":7,"name":"Gus","city":"Riga"},"source":{"lsn":800}}"#,
            ),
        ],
    )?;
    let (rows, _) = text_rows(&mut session, "SELECT id, city FROM customers ORDER BY id")?;
    assert_eq!(rows, ["7|Riga"]);
    Ok(())
}

#[test]
fn a_stream_joins_a_table_of_change_events_and_bad_events_are_dead_lettered() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let (log, mut session) = open(dir.path())?;
    customers(&log, &mut session)?;
    session.execute(
        "CREATE STREAM orders (order_id BIGINT, customer BIGINT, amount BIGINT);
         CREATE STREAM enriched (order_id BIGINT, name TEXT, city TEXT);
         INSERT INTO enriched SELECT o.order_id, c.name, c.city \
           FROM orders o LEFT JOIN customers c ON o.customer = c.id;",
    )?;
    // The table's input is read first at equal times: give it a moment, then the orders.
    std::thread::sleep(Duration::from_millis(500));
    session.execute("INSERT INTO orders VALUES (10, 1, 5), (11, 2, 6), (12, 3, 7), (13, 4, 8)")?;
    wait_for("four enriched orders", || {
        Ok(single_i64(&mut session, "SELECT COUNT(*) FROM enriched")? == 4)
    })?;
    let (rows, _) = text_rows(
        &mut session,
        "SELECT order_id, name, city FROM enriched ORDER BY order_id",
    )?;
    // 2 was deleted, 4 deleted by a tombstone keyed in the schema wrapper; 3's replay ignored.
    assert_eq!(rows, ["10|Ann|Bergen", "11||", "12|Cid|Lima", "13||"]);
    let all = wait_for_dead_letters(&log, "insert_into_enriched", 2)?.join("\n");
    assert!(
        all.contains("unknown op `x`") && all.contains("not JSON"),
        "{all}"
    );
    Ok(())
}

#[test]
fn a_subscription_to_a_table_of_change_events_sees_its_rows_change() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (log, mut session) = open(dir.path())?;
    customers(&log, &mut session)?;
    let request = PushRequest::parse("SUBSCRIBE TO customers")
        .ok_or_else(|| anyhow::anyhow!("not a push request"))?;
    let mut sub = session.push(&request)?;
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // The replay of 3 and the malformed events change nothing: 8 rows, then none.
    while seen.len() < 8 && std::time::Instant::now() < deadline {
        seen.extend(rows_of(&sub.next_batch(Duration::from_millis(100))?));
    }
    seen.extend(rows_of(&sub.next_batch(Duration::from_millis(300))?));
    assert_eq!(
        seen,
        [
            "insert 1",
            "insert 2",
            "insert 3",
            "update_after 1",
            "delete 2",
            "insert 4",
            "delete 4",
            "insert 5",
        ]
    );
    Ok(())
}

fn rows_of(b: &datafusion::arrow::array::RecordBatch) -> Vec<String> {
    let ops = b.column(0).as_string::<i32>();
    let ids = b
        .column(1)
        .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    (0..b.num_rows())
        .map(|r| format!("{} {}", ops.value(r), ids.value(r)))
        .collect()
}
