//! The PostgreSQL sink against a real PostgreSQL: a view's keyed rows and tombstones become
//! upserts and deletes, with timestamps; a restarted sink resumes from `weir_sink_offsets`
//! without applying anything twice; an appending sink (no key) adds each row once.

use std::time::Duration;

use weir_cdc::{pg_type, PgSink, PgSinkConfig, SinkColumn};
use weir_log::{Log, LogOptions, Record};

use super::{Database, Pg};

fn column(name: &str, sql_type: &str) -> SinkColumn {
    SinkColumn {
        name: name.into(),
        pg_type: pg_type(sql_type),
        millis: sql_type == "TIMESTAMP",
    }
}

fn config(db: &Database, name: &str, table: &str, key: &[&str]) -> PgSinkConfig {
    PgSinkConfig {
        name: name.into(),
        url: db.url.clone(),
        table: table.into(),
        columns: vec![
            column("customer", "BIGINT"),
            column("orders", "BIGINT"),
            column("total", "DOUBLE"),
            column("last_order", "TIMESTAMP"),
        ],
        primary_key: key.iter().map(|k| k.to_string()).collect(),
        topic: "summary".into(),
        poll: Duration::from_millis(10),
    }
}

fn row(customer: i64, orders: i64, total: f64, last_ms: i64) -> Record {
    Record::keyed(
        format!(r#"{{"customer":{customer}}}"#),
        format!(
            r#"{{"customer":{customer},"orders":{orders},"total":{total},"last_order":{last_ms}}}"#
        ),
    )
}

fn drain(sink: &mut PgSink) -> anyhow::Result<()> {
    while sink.round()? > 0 {}
    Ok(())
}

#[test]
fn a_views_changes_are_upserted_and_deleted_once_across_restarts() -> anyhow::Result<()> {
    let db = Database::create("sink")?;
    let pg = Pg::connect(&db.url)?;
    let dir = tempfile::tempdir()?;
    let log = Log::open_with(dir.path(), LogOptions::without_cleaner())?;
    log.create_topic("summary", 2, Default::default())?;
    let append = |records: &[Record]| -> anyhow::Result<()> {
        for r in records {
            let p = log.partition_for("summary", r.key.as_deref().unwrap_or_default())?;
            log.append("summary", p, std::slice::from_ref(r))?;
        }
        Ok(())
    };
    append(&[
        row(1, 1, 10.5, 1_767_225_600_000),
        row(2, 1, 3.0, 1_767_225_601_000),
    ])?;
    append(&[row(1, 2, 20.0, 1_767_225_602_500)])?;
    {
        let mut sink =
            PgSink::connect(&log, config(&db, "summary_pg", "read_model", &["customer"]))?;
        drain(&mut sink)?;
    }
    let got = pg.rows(
        "SELECT customer || '|' || orders || '|' || total || '|' || last_order FROM read_model ORDER BY 1",
    )?;
    assert_eq!(
        got,
        ["1|2|20|2026-01-01 00:00:02.5", "2|1|3|2026-01-01 00:00:01"]
    );
    // Restarted: only what came after; a tombstone deletes its key.
    append(&[
        Record::tombstone(r#"{"customer":2}"#),
        row(3, 1, 1.0, 1_767_225_603_000),
    ])?;
    let mut sink = PgSink::connect(&log, config(&db, "summary_pg", "read_model", &["customer"]))?;
    drain(&mut sink)?;
    assert_eq!(sink.applied(), 2, "only the new changes were applied");
    let got = pg.rows("SELECT customer::text FROM read_model ORDER BY 1")?;
    assert_eq!(got, ["1", "3"]);
    let offsets = pg.rows(
        "SELECT partition || ':' || next_offset FROM weir_sink_offsets \
         WHERE sink = 'summary_pg' ORDER BY partition",
    )?;
    let total: i64 = offsets
        .iter()
        .filter_map(|o| o.split_once(':')?.1.parse::<i64>().ok())
        .sum();
    assert_eq!(total, 5, "{offsets:?}");
    // Without a key, every row is appended once.
    let mut appender = PgSink::connect(&log, config(&db, "summary_log", "history", &[]))?;
    drain(&mut appender)?;
    drain(&mut appender)?;
    assert_eq!(pg.rows("SELECT COUNT(*)::text FROM history")?, ["4"]);
    Ok(())
}

#[test]
fn a_dsl_tables_change_rows_are_applied_with_deletes() -> anyhow::Result<()> {
    use weir_engine::{DebeziumJson, Pipeline, RunOptions};

    #[derive(Clone, serde::Serialize, serde::Deserialize)]
    struct Key {
        id: i64,
    }
    #[derive(Clone, serde::Serialize, serde::Deserialize)]
    struct Order {
        id: i64,
        customer: i64,
        amount: i64,
    }
    #[derive(Clone, serde::Serialize, serde::Deserialize)]
    struct Summary {
        customer: i64,
        orders: i64,
        total: i64,
    }
    let db = Database::create("dsl_sink")?;
    let pg = Pg::connect(&db.url)?;
    let dir = tempfile::tempdir()?;
    let log = Log::open_with(dir.path(), LogOptions::without_cleaner())?;
    log.create_topic("orders", 1, Default::default())?;
    log.create_topic("summary", 1, Default::default())?;
    let (groups, txns) = weir_coord::start(&log)?;
    let event = |op: &str, before: Option<(i64, i64, i64)>, after: Option<(i64, i64, i64)>| {
        let row = |o: Option<(i64, i64, i64)>| {
            o.map(|(id, customer, amount)| serde_json::json!({"id": id, "customer": customer, "amount": amount}))
        };
        let id = after.or(before).map_or(0, |o| o.0);
        Record::keyed(
            format!(r#"{{"id":{id}}}"#),
            serde_json::json!({"op": op, "before": row(before), "after": row(after)}).to_string(),
        )
    };
    log.append(
        "orders",
        weir_log::PartitionId(0),
        &[
            event("c", None, Some((1, 7, 10))),
            event("c", None, Some((2, 7, 5))),
            event("c", None, Some((3, 8, 4))),
            event("u", Some((2, 7, 5)), Some((2, 8, 6))),
            event("d", Some((3, 8, 4)), None),
            event("d", Some((1, 7, 10)), None),
        ],
    )?;
    // Customer 7 ends with no orders: the DSL's aggregate says None, a delete row.
    let p = Pipeline::builder("dsl-summary");
    p.table_from_changes::<Key, Order>("orders", DebeziumJson)
        .group_by(|_, o| o.customer)
        .aggregate(
            || None::<Summary>,
            |s, o| {
                let (orders, total) = s.map_or((0, 0), |s| (s.orders, s.total));
                Some(Summary {
                    customer: o.customer,
                    orders: orders + 1,
                    total: total + o.amount,
                })
            },
            |s, o| {
                let (orders, total) = s.map_or((0, 0), |s| (s.orders, s.total));
                (orders > 1).then(|| Summary {
                    customer: o.customer,
                    orders: orders - 1,
                    total: total - o.amount,
                })
            },
        )
        .to_table("summary");
    p.build()?
        .run(
            &log,
            &groups,
            &txns,
            RunOptions::new(dir.path().join("state")),
        )?
        .stop_when_idle(Duration::from_millis(300), Duration::from_secs(30))?;
    let mut config = config(&db, "dsl", "dsl_model", &["customer"]);
    config.columns = vec![
        column("customer", "BIGINT"),
        column("orders", "BIGINT"),
        column("total", "BIGINT"),
    ];
    let mut sink = PgSink::connect(&log, config)?;
    drain(&mut sink)?;
    let rows = pg.rows(
        "SELECT customer || '|' || orders || '|' || total FROM dsl_model ORDER BY customer",
    )?;
    assert_eq!(rows, ["8|1|6"]);
    Ok(())
}
