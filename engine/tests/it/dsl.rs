//! The DSL end to end: filter/map/key_by/count/reduce over the embedded log, exactly once across
//! a stop and restart, with clear errors for unknown topics.

use std::collections::BTreeMap;
use std::time::Duration;

use weir_engine::{Json, Pipeline, Plan, RunOptions, Utf8};
use weir_log::{Isolation, Log, Offset, PartitionId};

fn latest(log: &Log, topic: &str) -> BTreeMap<String, u64> {
    crate::common::committed_by_key(log, topic, |k, v| {
        (
            serde_json::from_slice(k).expect("key"),
            serde_json::from_slice::<u64>(v).expect("value"),
        )
    })
    .into_iter()
    .filter_map(|(k, vs)| vs.last().map(|v| (k, *v)))
    .collect()
}

fn word_count(app: &str) -> weir_engine::Topology {
    let p = Pipeline::builder(app);
    p.stream::<String, String>("lines", Utf8, Utf8)
        .flat_map(|_, line: String| {
            line.split_whitespace()
                .map(|w| (w.to_lowercase(), 1u64))
                .collect::<Vec<_>>()
        })
        .filter(|w, _| w.len() > 2)
        .key_by(|w, _| w.clone())
        .group_by_key()
        .count()
        .to_topic("word-counts", Json, Json);
    p.build().expect("topology")
}

#[test]
fn word_count_is_exact_across_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open_log(dir.path());
    log.create_topic("lines", 3, Default::default())?;
    log.create_topic("word-counts", 2, Default::default())?;
    let text = [
        "the quick brown fox",
        "jumps over the lazy dog",
        "The dog barks",
        "a fox and a dog",
    ];
    for (i, line) in text.iter().enumerate() {
        log.send(
            "lines",
            Some(format!("l{i}").as_bytes()),
            Some(line.as_bytes()),
        )?;
    }
    let (groups, txns) = weir_coord::start(&log)?;
    let mut opts = RunOptions::new(dir.path().join("state"));
    opts.commit_interval = Duration::from_millis(20);
    let topology = word_count("wc");
    assert_eq!(
        topology.shape().subplans.len(),
        2,
        "key_by splits the pipeline at a repartition topic"
    );
    topology
        .run(&log, &groups, &txns, opts.clone())?
        .stop_when_idle(Duration::from_millis(300), Duration::from_secs(20))?;
    let counts = latest(&log, "word-counts");
    assert_eq!(counts.get("the"), Some(&3));
    assert_eq!(counts.get("dog"), Some(&3));
    assert_eq!(counts.get("fox"), Some(&2));
    assert_eq!(counts.get("a"), None, "filtered out");
    // More input after a restart: counts continue from the committed state, nothing twice.
    log.send("lines", Some(b"l9"), Some(b"dog days"))?;
    word_count("wc")
        .run(&log, &groups, &txns, opts)?
        .stop_when_idle(Duration::from_millis(300), Duration::from_secs(20))?;
    let counts = latest(&log, "word-counts");
    assert_eq!(counts.get("dog"), Some(&4));
    assert_eq!(counts.get("days"), Some(&1));
    assert_eq!(counts.get("the"), Some(&3));
    Ok(())
}

#[test]
fn unknown_topics_and_poison_records_are_clear_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open_log(dir.path());
    let (groups, txns) = weir_coord::start(&log)?;
    let e = word_count("wc")
        .run(
            &log,
            &groups,
            &txns,
            RunOptions::new(dir.path().join("state")),
        )
        .expect_err("no topics");
    assert!(
        e.to_string().contains("`lines`, which does not exist"),
        "{e}"
    );
    // A value that is not the JSON the pipeline expects stops it with the record's position.
    log.create_topic("orders", 1, Default::default())?;
    log.create_topic("totals", 1, Default::default())?;
    log.send("orders", Some(b"\"alice\""), Some(b"not a number"))?;
    let p = Pipeline::builder("totals");
    p.stream::<String, u64>("orders", Json, Json)
        .group_by_key()
        .reduce(|a, b| a + b)
        .to_topic("totals", Json, Json);
    let mut opts = RunOptions::new(dir.path().join("state2"));
    opts.on_error = weir_engine::ErrorPolicy::Fail;
    let e = p
        .build()?
        .run(&log, &groups, &txns, opts)?
        .stop_when_idle(Duration::from_millis(200), Duration::from_secs(10))
        .expect_err("poison");
    assert!(e.to_string().contains("orders/0 offset 0"), "{e}");
    Ok(())
}

#[test]
fn poison_records_go_to_the_dead_letter_topic_exactly_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open_log(dir.path());
    log.create_topic("amounts", 2, Default::default())?;
    log.create_topic("sums", 1, Default::default())?;
    let mut poison = 0;
    for i in 0..1000u64 {
        let key = format!("\"c{}\"", i % 7);
        let value = if i % 100 == 42 {
            poison += 1;
            b"{broken".to_vec()
        } else {
            b"1".to_vec()
        };
        log.send("amounts", Some(key.as_bytes()), Some(&value))?;
    }
    let (groups, txns) = weir_coord::start(&log)?;
    let build = || {
        let p = Pipeline::builder("summer");
        p.stream::<String, u64>("amounts", Json, Json)
            .group_by_key()
            .reduce(|a, b| a + b)
            .to_topic("sums", Json, Json);
        p.build().expect("topology")
    };
    let mut opts = RunOptions::new(dir.path().join("state"));
    opts.commit_interval = Duration::from_millis(10);
    // Two runs: the second must not dead-letter anything again.
    for run in 0..2 {
        let running = build().run(&log, &groups, &txns, opts.clone())?;
        running.wait_until_idle(Duration::from_millis(300), Duration::from_secs(20));
        let m = running.metrics();
        running.stop()?;
        let want = if run == 0 { poison } else { 0 };
        assert_eq!(m.dead_lettered, want, "run {run}: dead-letter metric");
        assert_eq!(m.skipped, 0);
    }
    let total: u64 = latest(&log, "sums").values().sum();
    assert_eq!(total, 1000 - poison, "output == input - poison");
    let f = log.read_isolated(
        "summer.dlq",
        PartitionId(0),
        Offset(0),
        1 << 20,
        Isolation::ReadCommitted,
    )?;
    let dead: Vec<_> = f.records().collect::<Result<_, _>>()?;
    assert_eq!(dead.len() as u64, poison, "DLQ == poison, exactly once");
    let headers = headers_of(&log, "summer.dlq")?.remove(0);
    assert_eq!(headers["weir.source.topic"], "amounts");
    assert!(headers["weir.error"].contains("value"), "{headers:?}");
    assert!(
        headers.contains_key("weir.source.offset") && headers.contains_key("weir.source.partition")
    );
    assert_eq!(dead[0].value, Some(&b"{broken"[..]));
    Ok(())
}

#[test]
fn a_table_keeps_the_latest_value_per_key_and_streams_its_changes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open_log(dir.path());
    log.create_topic(
        "profiles",
        2,
        weir_log::TopicConfig::parse_pairs(&["cleanup.policy=compact"])?,
    )?;
    log.create_topic("profile-changes", 2, Default::default())?;
    for (user, city) in [
        ("ann", Some("Oslo")),
        ("bob", Some("Rome")),
        ("ann", Some("Lima")),
        ("bob", None),
    ] {
        let key = serde_json::to_vec(user)?;
        let value = city.map(serde_json::to_vec).transpose()?;
        let p = log.partition_for("profiles", &key)?;
        log.append(
            "profiles",
            p,
            &[weir_log::Record {
                key: Some(key.into()),
                value: value.map(Into::into),
                ..Default::default()
            }],
        )?;
    }
    let (groups, txns) = weir_coord::start(&log)?;
    let p = Pipeline::builder("profiles-view");
    let table = p.table::<String, String>("profiles", Json, Json);
    assert_eq!(
        table.store_name(),
        "profiles-table",
        "named after its topic"
    );
    table
        .to_stream()
        .map_values(|city: Option<String>| city.unwrap_or_else(|| "(deleted)".into()))
        .to_topic("profile-changes", Json, Json);
    p.build()?
        .run(
            &log,
            &groups,
            &txns,
            RunOptions::new(dir.path().join("state")),
        )?
        .stop_when_idle(Duration::from_millis(300), Duration::from_secs(20))?;
    let changes = crate::common::committed_by_key(&log, "profile-changes", |k, v| {
        (
            serde_json::from_slice(k).expect("key"),
            serde_json::from_slice::<String>(v).expect("value"),
        )
    });
    assert_eq!(changes["ann"], vec!["Oslo", "Lima"]);
    assert_eq!(changes["bob"], vec!["Rome", "(deleted)"]);
    Ok(())
}

#[test]
fn a_stream_joins_the_current_value_of_a_table() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open_log(dir.path());
    log.create_topic(
        "customers",
        3,
        weir_log::TopicConfig::parse_pairs(&["cleanup.policy=compact"])?,
    )?;
    log.create_topic("purchases", 3, Default::default())?;
    log.create_topic("enriched", 2, Default::default())?;
    log.create_topic("mismatched", 2, Default::default())?;
    let send = |topic: &str, key: &str, value: &str| -> anyhow::Result<()> {
        let k = serde_json::to_vec(key)?;
        log.send(topic, Some(&k), Some(&serde_json::to_vec(value)?))?;
        Ok(())
    };
    send("customers", "ann", "Oslo")?;
    send("customers", "bob", "Rome")?;
    send("purchases", "ann", "book")?;
    send("purchases", "bob", "lamp")?;
    send("purchases", "eve", "kite")?; // no customer: dropped by the inner join
    let (groups, txns) = weir_coord::start(&log)?;
    let p = Pipeline::builder("enricher");
    let customers = p.table::<String, String>("customers", Json, Json);
    p.stream::<String, String>("purchases", Json, Json)
        .join(&customers, |item, city| format!("{item} to {city}"))
        .to_topic("enriched", Json, Json);
    let topology = p.build()?;
    assert_eq!(
        topology.shape().subplans.len(),
        1,
        "the joined table runs in the stream's tasks"
    );
    let opts = RunOptions::new(dir.path().join("state"));
    topology
        .run(&log, &groups, &txns, opts.clone())?
        .stop_when_idle(Duration::from_millis(300), Duration::from_secs(20))?;
    let decode = |k: &[u8], v: &[u8]| -> (String, String) {
        (
            serde_json::from_slice(k).expect("key"),
            serde_json::from_slice(v).expect("value"),
        )
    };
    let out = crate::common::committed_by_key(&log, "enriched", decode);
    assert_eq!(out["ann"], vec!["book to Oslo"]);
    assert_eq!(out["bob"], vec!["lamp to Rome"]);
    assert!(!out.contains_key("eve"));
    // The table keeps up: ann moves, then buys again (after a restart, from restored state).
    send("customers", "ann", "Lima")?;
    send("purchases", "ann", "hat")?;
    let p = Pipeline::builder("enricher");
    let customers = p.table::<String, String>("customers", Json, Json);
    p.stream::<String, String>("purchases", Json, Json)
        .join(&customers, |item, city| format!("{item} to {city}"))
        .to_topic("enriched", Json, Json);
    p.build()?
        .run(&log, &groups, &txns, opts)?
        .stop_when_idle(Duration::from_millis(300), Duration::from_secs(20))?;
    let out = crate::common::committed_by_key(&log, "enriched", decode);
    assert_eq!(out["ann"], vec!["book to Oslo", "hat to Lima"]);
    // Joining topics that are not co-partitioned is refused with a clear error.
    let p = Pipeline::builder("bad-join");
    let customers = p.table::<String, String>("customers", Json, Json);
    p.stream::<String, String>("enriched", Json, Json)
        .join(&customers, |a, b| format!("{a}{b}"))
        .to_topic("mismatched", Json, Json);
    let e = p
        .build()?
        .run(
            &log,
            &groups,
            &txns,
            RunOptions::new(dir.path().join("state3")),
        )?
        .stop_when_idle(Duration::from_millis(200), Duration::from_secs(10))
        .expect_err("co-partitioning");
    assert!(e.to_string().contains("co-partitioned"), "{e}");
    Ok(())
}

#[test]
fn repartition_topics_are_purged_up_to_committed_offsets() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open_log(dir.path());
    log.create_topic("events", 2, Default::default())?;
    log.create_topic("per-type", 2, Default::default())?;
    for i in 0..5000 {
        let v = serde_json::to_vec(&format!("type-{}", i % 3))?;
        log.send("events", Some(format!("\"e{i}\"").as_bytes()), Some(&v))?;
    }
    let (groups, txns) = weir_coord::start(&log)?;
    let p = Pipeline::builder("typer");
    p.stream::<String, String>("events", Json, Json)
        .key_by(|_, t| t.clone())
        .group_by_key()
        .count()
        .to_topic("per-type", Json, Json);
    let mut opts = RunOptions::new(dir.path().join("state"));
    opts.commit_interval = Duration::from_millis(20);
    p.build()?
        .run(&log, &groups, &txns, opts)?
        .stop_when_idle(Duration::from_millis(400), Duration::from_secs(30))?;
    let counts = latest(&log, "per-type");
    assert_eq!(counts.values().sum::<u64>(), 5000);
    let purged: i64 = (0..2)
        .map(|p| {
            log.earliest_offset("typer.events-rekey.repartition", PartitionId(p))
                .map(|o| o.0)
        })
        .sum::<Result<i64, _>>()?;
    assert!(
        purged >= 1000,
        "committed repartition records were deleted (log start offsets sum to {purged})"
    );
    Ok(())
}

/// The headers of a topic's committed records, in order.
fn headers_of(log: &Log, topic: &str) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
    let f = log.read_isolated(
        topic,
        PartitionId(0),
        Offset(0),
        1 << 20,
        Isolation::ReadCommitted,
    )?;
    let mut out = Vec::new();
    for r in f.records() {
        let r = r?;
        let h: BTreeMap<String, String> = r
            .headers()
            .map(|h| {
                h.map(|(k, v)| {
                    (
                        String::from_utf8_lossy(k).into_owned(),
                        String::from_utf8_lossy(v.unwrap_or_default()).into_owned(),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        out.push(h);
    }
    Ok(out)
}

#[test]
fn a_failing_function_is_retried_before_its_record_is_dead_lettered() -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicU32, Ordering};
    let dir = tempfile::tempdir()?;
    let log = crate::common::open_log(dir.path());
    log.create_topic("calls", 1, Default::default())?;
    log.create_topic("answers", 1, Default::default())?;
    for v in ["ok", "flaky", "bad", "ok"] {
        log.send("calls", Some(b"k"), Some(v.as_bytes()))?;
    }
    let (groups, txns) = weir_coord::start(&log)?;
    let flaky_calls = std::sync::Arc::new(AtomicU32::new(0));
    let calls = flaky_calls.clone();
    let p = Pipeline::builder("caller");
    p.stream::<String, String>("calls", Utf8, Utf8)
        .try_map_values(move |v: &String| match v.as_str() {
            // Fails twice, then answers: a transient outage of a service it calls.
            "flaky" if calls.fetch_add(1, Ordering::SeqCst) < 2 => Err("timed out".to_string()),
            "bad" => Err("rejected".to_string()),
            other => Ok(other.to_uppercase()),
        })
        .to_topic("answers", Utf8, Utf8);
    let mut opts = RunOptions::new(dir.path().join("state"));
    opts.retry = weir_engine::RetryPolicy {
        attempts: 3,
        backoff: Duration::from_millis(1),
    };
    p.build()?
        .run(&log, &groups, &txns, opts)?
        .stop_when_idle(Duration::from_millis(300), Duration::from_secs(20))?;
    let answers: Vec<String> = crate::common::committed_by_key(&log, "answers", |k, v| {
        (
            String::from_utf8_lossy(k).into_owned(),
            String::from_utf8_lossy(v).into_owned(),
        )
    })
    .remove("k")
    .unwrap_or_default();
    assert_eq!(answers, ["OK", "FLAKY", "OK"]);
    let dead = headers_of(&log, "caller.dlq")?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["weir.attempts"], "3");
    assert_eq!(dead[0]["weir.error"], "rejected");
    assert_eq!(dead[0]["weir.source.offset"], "2");
    Ok(())
}

#[test]
fn a_user_topic_named_like_a_repartition_topic_is_never_purged() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open_log(dir.path());
    // Earlier versions purged every input named `{app}-repartition-…`.
    log.create_topic("orders-repartition-audit", 1, Default::default())?;
    log.create_topic("audit-copy", 1, Default::default())?;
    for i in 0..1500 {
        log.send(
            "orders-repartition-audit",
            Some(b"k"),
            Some(format!("{i}").as_bytes()),
        )?;
    }
    let (groups, txns) = weir_coord::start(&log)?;
    let p = Pipeline::builder("orders");
    p.stream::<String, String>("orders-repartition-audit", Utf8, Utf8)
        .to_topic("audit-copy", Utf8, Utf8);
    let mut opts = RunOptions::new(dir.path().join("state"));
    opts.commit_interval = Duration::from_millis(10);
    p.build()?
        .run(&log, &groups, &txns, opts)?
        .stop_when_idle(Duration::from_millis(300), Duration::from_secs(20))?;
    assert_eq!(
        log.earliest_offset("orders-repartition-audit", PartitionId(0))?,
        Offset(0),
        "the user's records are all still there"
    );
    Ok(())
}

#[test]
fn applications_whose_names_share_dashes_do_not_fence_each_other() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open_log(dir.path());
    // App `a` reading `b-1` and app `a-b` reading `1`: once both `a-b-1-0` as transactional id.
    for t in ["b-1", "1", "out-a", "out-ab"] {
        log.create_topic(t, 1, Default::default())?;
    }
    for i in 0..2000 {
        log.send("b-1", Some(b"k"), Some(format!("{i}").as_bytes()))?;
        log.send("1", Some(b"k"), Some(format!("{i}").as_bytes()))?;
    }
    let (groups, txns) = weir_coord::start(&log)?;
    let copy = |app: &str, from: &str, to: &str| -> anyhow::Result<weir_engine::Topology> {
        let p = Pipeline::builder(app);
        p.stream::<String, String>(from, Utf8, Utf8)
            .group_by_key()
            .count()
            .to_topic(to, Json, Json);
        Ok(p.build()?)
    };
    let mut opts = RunOptions::new(dir.path().join("state"));
    opts.commit_interval = Duration::from_millis(5);
    opts.max_batch_records = 10;
    let a = copy("a", "b-1", "out-a")?.run(&log, &groups, &txns, opts.clone())?;
    let ab = copy("a-b", "1", "out-ab")?.run(&log, &groups, &txns, opts)?;
    a.stop_when_idle(Duration::from_millis(300), Duration::from_secs(30))?;
    ab.stop_when_idle(Duration::from_millis(300), Duration::from_secs(30))?;
    for out in ["out-a", "out-ab"] {
        let counts = latest(&log, out);
        assert_eq!(counts.get("k"), Some(&2000), "{out}");
    }
    Ok(())
}

#[test]
fn table_records_without_a_key_are_dropped_and_counted() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open_log(dir.path());
    log.create_topic("names", 1, Default::default())?;
    log.create_topic("visits", 1, Default::default())?;
    log.create_topic("greetings", 1, Default::default())?;
    log.append(
        "names",
        PartitionId(0),
        &[weir_log::Record::value("nobody")],
    )?;
    log.send("names", Some(b"u1"), Some(b"\"Ann\""))?;
    log.send("visits", Some(b""), Some(b"\"hi\""))?;
    log.send("visits", Some(b"u1"), Some(b"\"hello\""))?;
    let (groups, txns) = weir_coord::start(&log)?;
    let p = Pipeline::builder("greeter");
    let names = p.table::<String, String>("names", Utf8, Json);
    p.stream::<String, String>("visits", Utf8, Json)
        .join(&names, |greeting, name| format!("{greeting} {name}"))
        .to_topic("greetings", Utf8, Json);
    let running = p.build()?.run(
        &log,
        &groups,
        &txns,
        RunOptions::new(dir.path().join("state")),
    )?;
    running.wait_until_idle(Duration::from_millis(300), Duration::from_secs(20));
    let m = running.metrics();
    running.stop()?;
    let table_op = m
        .operators
        .iter()
        .find(|o| o.name == "table(names)")
        .expect("table operator");
    assert_eq!(
        table_op.counters.dropped, 1,
        "the keyless record is counted"
    );
    assert_eq!(m.dead_lettered, 0);
    let out = crate::common::committed_by_key(&log, "greetings", |k, v| {
        (
            String::from_utf8_lossy(k).into_owned(),
            String::from_utf8_lossy(v).into_owned(),
        )
    });
    assert!(
        !out.contains_key(""),
        "nothing was stored under the empty key: {out:?}"
    );
    assert_eq!(out["u1"], ["\"hello Ann\""]);
    Ok(())
}

#[test]
fn a_table_table_join_follows_changes_and_deletes_on_both_sides() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open_log(dir.path());
    for t in ["names", "cities", "people"] {
        log.create_topic(t, 2, Default::default())?;
    }
    let (groups, txns) = weir_coord::start(&log)?;
    let put = |topic: &str, key: &str, value: Option<&str>| -> anyhow::Result<()> {
        let p = log.partition_for(topic, key.as_bytes())?;
        let r = weir_log::Record {
            key: Some(key.to_string().into()),
            value: value.map(|v| serde_json::to_vec(v).expect("json").into()),
            ..Default::default()
        };
        log.append(topic, p, &[r])?;
        Ok(())
    };
    let run = || -> anyhow::Result<()> {
        let p = Pipeline::builder("people");
        let names = p.table::<String, String>("names", Utf8, Json);
        let cities = p.table::<String, String>("cities", Utf8, Json);
        names
            .join_table(&cities, |n, c| format!("{n} in {c}"))
            .to_topic("people", Utf8, Json);
        p.build()?
            .run(
                &log,
                &groups,
                &txns,
                RunOptions::new(dir.path().join("state")),
            )?
            .stop_when_idle(Duration::from_millis(300), Duration::from_secs(30))?;
        Ok(())
    };
    put("names", "u1", Some("Ann"))?; // no city yet: no result
    run()?;
    put("cities", "u1", Some("Oslo"))?;
    run()?;
    put("names", "u1", Some("Anna"))?;
    put("cities", "u1", None)?; // deleted: the result goes
    put("names", "u2", Some("Bo"))?;
    run()?;
    put("cities", "u2", Some("Rome"))?;
    run()?;
    let out = crate::common::committed_by_key(&log, "people", |k, v| {
        (
            String::from_utf8_lossy(k).into_owned(),
            serde_json::from_slice::<Option<String>>(v).expect("json"),
        )
    });
    assert_eq!(
        out["u1"],
        [
            Some("Ann in Oslo".to_string()),
            Some("Anna in Oslo".to_string()),
            None
        ]
    );
    assert_eq!(out["u2"], [Some("Bo in Rome".to_string())]);
    Ok(())
}

#[test]
fn a_new_application_starts_where_it_is_told() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open_log(dir.path());
    log.create_topic("events", 1, Default::default())?;
    log.create_topic("copies", 1, Default::default())?;
    for ts in [1_000, 2_000, 3_000] {
        let r = weir_log::Record::keyed("k", format!("{ts}")).at(weir_log::Timestamp(ts));
        log.append("events", PartitionId(0), &[r])?;
    }
    let (groups, txns) = weir_coord::start(&log)?;
    let copy = |app: &str, from: weir_engine::StartFrom| -> anyhow::Result<Vec<String>> {
        let p = Pipeline::builder(app);
        p.stream::<String, String>("events", Utf8, Utf8)
            .map_values(move |v| v)
            .to_topic("copies", Utf8, Utf8);
        let mut opts = RunOptions::new(dir.path().join("state"));
        opts.start_from = from;
        let before = crate::common::committed_by_key(&log, "copies", |k, v| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .remove("k")
        .unwrap_or_default()
        .len();
        p.build()?
            .run(&log, &groups, &txns, opts)?
            .stop_when_idle(Duration::from_millis(300), Duration::from_secs(20))?;
        let all = crate::common::committed_by_key(&log, "copies", |k, v| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .remove("k")
        .unwrap_or_default();
        Ok(all[before..].to_vec())
    };
    assert_eq!(
        copy("from-ts", weir_engine::StartFrom::Timestamp(2_000))?,
        ["2000", "3000"]
    );
    assert!(copy("from-latest", weir_engine::StartFrom::Latest)?.is_empty());
    assert_eq!(
        copy("from-start", weir_engine::StartFrom::Earliest)?.len(),
        3
    );
    // An application that committed offsets resumes from them, wherever it was told to start.
    log.append(
        "events",
        PartitionId(0),
        &[weir_log::Record::keyed("k", "4000")],
    )?;
    assert_eq!(
        copy("from-latest", weir_engine::StartFrom::Latest)?,
        ["4000"]
    );
    Ok(())
}

#[test]
fn two_unnamed_stores_of_one_stream_must_be_named() -> anyhow::Result<()> {
    let p = Pipeline::builder("twice");
    let orders = p.stream::<String, u64>("orders", Json, Json).group_by_key();
    orders.count().to_topic("a", Json, Json);
    orders.reduce(|a, b| a + b).to_topic("b", Json, Json);
    let e = p.build().expect_err("ambiguous default names");
    assert!(e.to_string().contains("name one with `.named(…)`"), "{e}");
    // Named, each keeps its own state whatever is added before it later.
    let p = Pipeline::builder("twice");
    let orders = p.stream::<String, u64>("orders", Json, Json).group_by_key();
    orders
        .count()
        .named("order-count")
        .to_topic("a", Json, Json);
    orders
        .reduce(|a, b| a + b)
        .named("order-sum")
        .to_topic("b", Json, Json);
    let t = p.build()?;
    let stores: Vec<&str> = t.shape().subplans[0]
        .stores
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(stores, ["order-count", "order-sum"]);
    Ok(())
}
