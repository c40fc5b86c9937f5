//! Windows over event time: tumbling, hopping and session results equal a brute-force
//! reference over out-of-order input (a property test over random arrival orders within the
//! allowed lateness, seeded); emit on close gives one result per (key, window), also across a
//! restart; a record bridging two sessions merges them (and retracts them under emit on
//! update); late records follow the policy and are counted; watermarks cross repartition
//! topics.

use std::collections::BTreeMap;
use std::time::Duration;

use weir_engine::{
    Emit, Hopping, Json, LatePolicy, Pipeline, RunOptions, Session, Tumbling, Utf8, WindowSpec,
    Windowed,
};
use weir_log::sim::SeededRng;
use weir_log::{Log, PartitionId, Record};

const KEYS: usize = 5;
const OOO_MS: i64 = 2_000;
/// Event time of the records that push every partition's watermark past all windows.
const END_TS: i64 = 10_000_000;

/// `n` records per key with event times in [0, 100 s), in an arrival order disordered by at
/// most `OOO_MS` (a random order inside blocks of event time): (key, ts).
fn events(rng: &mut SeededRng, n: usize) -> Vec<(String, i64)> {
    let mut all: Vec<(String, i64)> = Vec::new();
    for k in 0..KEYS {
        for _ in 0..n {
            all.push((format!("k{k}"), rng.below(100_000) as i64));
        }
    }
    all.sort_by_key(|(_, ts)| *ts);
    // Shuffle within blocks of OOO_MS of event time: never more than OOO_MS out of order.
    let mut out = Vec::with_capacity(all.len());
    for block in all.chunk_by(|a, b| a.1 / OOO_MS == b.1 / OOO_MS) {
        let mut b = block.to_vec();
        for i in (1..b.len()).rev() {
            b.swap(i, rng.below(i as u64 + 1) as usize);
        }
        out.extend(b);
    }
    out
}

fn json_ts(ts: i64) -> Vec<u8> {
    format!("{{\"ts\":{ts}}}").into_bytes()
}

/// Writes the events keyed into `in`, then one record at `END_TS` to every partition.
fn write(log: &Log, events: &[(String, i64)]) -> anyhow::Result<()> {
    for (k, ts) in events {
        log.send("in", Some(k.as_bytes()), Some(&json_ts(*ts)))?;
    }
    Ok(())
}

fn end_all_windows(log: &Log) -> anyhow::Result<()> {
    for p in 0..log.partition_count("in")? {
        log.append(
            "in",
            PartitionId(p),
            &[Record::keyed(format!("end-{p}"), json_ts(END_TS))],
        )?;
    }
    Ok(())
}

/// Per (key, start, end): the results written to `out`, in order (values as JSON text).
fn results(log: &Log) -> BTreeMap<(String, i64, i64), Vec<String>> {
    let by_key = crate::common::committed_by_key(log, "out", |k, v| {
        (
            String::from_utf8_lossy(k).into_owned(),
            String::from_utf8_lossy(v).into_owned(),
        )
    });
    let mut out = BTreeMap::new();
    for (k, values) in by_key {
        let w: Windowed<String> = serde_json::from_str(&k).expect("windowed key");
        let entry: &mut Vec<String> = out.entry((w.key, w.start, w.end)).or_default();
        for v in values {
            entry.push(if w.retracted {
                format!("retracted {v}")
            } else {
                v
            });
        }
        // A retraction's key differs from the result's (it says `retracted`): their relative
        // order is not kept here.
        entry.sort();
    }
    out
}

/// The windows of `spec` and their counts, computed by brute force.
fn reference(spec: &WindowSpec, events: &[(String, i64)]) -> BTreeMap<(String, i64, i64), u64> {
    let mut out = BTreeMap::new();
    let mut per_key: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (k, ts) in events {
        per_key.entry(k).or_default().push(*ts);
    }
    for (k, mut times) in per_key {
        times.sort();
        match spec.kind {
            weir_engine::WindowKind::Tumbling { size } => {
                let size = size.as_millis() as i64;
                for ts in times {
                    let s = ts.div_euclid(size) * size;
                    *out.entry((k.to_string(), s, s + size)).or_default() += 1;
                }
            }
            weir_engine::WindowKind::Hopping { size, advance } => {
                let (size, adv) = (size.as_millis() as i64, advance.as_millis() as i64);
                for ts in times {
                    let mut s = ts.div_euclid(adv) * adv;
                    while s > ts - size {
                        *out.entry((k.to_string(), s, s + size)).or_default() += 1;
                        s -= adv;
                    }
                }
            }
            weir_engine::WindowKind::Session { gap } => {
                let gap = gap.as_millis() as i64;
                let mut start = times[0];
                let mut last = times[0];
                let mut n = 0;
                for ts in times {
                    if ts > last + gap {
                        out.insert((k.to_string(), start, last + gap), n);
                        start = ts;
                        n = 0;
                    }
                    last = ts;
                    n += 1;
                }
                out.insert((k.to_string(), start, last + gap), n);
            }
        }
    }
    out
}

/// Input `in` read as JSON values whose `ts` field is the event time, the watermark
/// `out_of_orderness` behind.
fn events_of(
    p: &Pipeline,
    out_of_orderness: Duration,
) -> weir_engine::Result<weir_engine::Stream<String, serde_json::Value>> {
    p.keyed_stream::<String, serde_json::Value>("in", Utf8, Json)
        .with_event_time(
            |v| v.get("ts").and_then(|t| t.as_i64()).unwrap_or(0),
            out_of_orderness,
        )
}

fn counting(app: &str, spec: WindowSpec) -> anyhow::Result<weir_engine::Topology> {
    let p = Pipeline::builder(app);
    events_of(&p, Duration::from_millis(OOO_MS as u64))?
        .group_by_key()
        .window(spec)
        .count()
        .to_topic("out", Json, Json);
    Ok(p.build()?)
}

fn options(dir: &std::path::Path) -> RunOptions {
    let mut opts = RunOptions::new(dir.join("state"));
    opts.commit_interval = Duration::from_millis(20);
    opts.idle_timeout = Duration::from_millis(300);
    opts.max_batch_records = 37;
    opts
}

fn setup() -> anyhow::Result<(tempfile::TempDir, Log)> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open_log(dir.path());
    log.create_topic("in", 2, Default::default())?;
    log.create_topic("out", 2, Default::default())?;
    Ok((dir, log))
}

/// Runs `spec` over `events` (emit on close) and checks the results against the reference.
fn check_on_close(spec: WindowSpec, events: &[(String, i64)]) -> anyhow::Result<()> {
    let (dir, log) = setup()?;
    write(&log, events)?;
    end_all_windows(&log)?;
    let (groups, txns) = weir_coord::start(&log)?;
    let mut spec = spec;
    spec.emit = Emit::OnWindowClose;
    counting("windows", spec)?
        .run(&log, &groups, &txns, options(dir.path()))?
        .stop_when_idle(Duration::from_millis(800), Duration::from_secs(60))?;
    let got = results(&log);
    let want = reference(&spec, events);
    for (w, values) in &got {
        anyhow::ensure!(
            values.len() == 1,
            "{w:?} emitted {} times: {values:?}",
            values.len()
        );
    }
    let got: BTreeMap<_, u64> = got
        .into_iter()
        .map(|(w, v)| (w, v[0].parse().unwrap_or(0)))
        .collect();
    anyhow::ensure!(
        got == want,
        "{:?} windows: {} results, {} expected; first difference {:?}",
        spec.kind,
        got.len(),
        want.len(),
        want.iter().find(|(w, n)| got.get(*w) != Some(n))
    );
    Ok(())
}

#[test]
fn windows_over_out_of_order_input_equal_a_brute_force_reference() -> anyhow::Result<()> {
    let mut rng = SeededRng::from_env("windows_reference");
    let events = events(&mut rng, 60);
    check_on_close(Tumbling::of(Duration::from_secs(10)).into(), &events)?;
    check_on_close(
        Hopping::of(Duration::from_secs(10), Duration::from_secs(2)).into(),
        &events,
    )?;
    check_on_close(Session::with_gap(Duration::from_secs(3)).into(), &events)?;
    Ok(())
}

#[test]
fn random_arrival_orders_within_the_allowed_lateness_give_the_same_windows() -> anyhow::Result<()> {
    let mut rng = SeededRng::from_env("windows_arrival_orders");
    for _ in 0..3 {
        let events = events(&mut rng, 15);
        check_on_close(
            Hopping::of(Duration::from_secs(6), Duration::from_secs(3)).into(),
            &events,
        )?;
    }
    Ok(())
}

#[test]
fn emit_on_close_emits_each_window_once_across_a_restart() -> anyhow::Result<()> {
    let (dir, log) = setup()?;
    let mut rng = SeededRng::from_env("windows_restart");
    let events = events(&mut rng, 40);
    let mut spec: WindowSpec = Tumbling::of(Duration::from_secs(5)).into();
    spec.emit = Emit::OnWindowClose;
    let (groups, txns) = weir_coord::start(&log)?;
    let (first, second) = events.split_at(events.len() / 2);
    write(&log, first)?;
    let run = || -> anyhow::Result<()> {
        let mut opts = options(dir.path());
        opts.commit_interval = Duration::from_millis(5);
        counting("restarted", spec)?
            .run(&log, &groups, &txns, opts)?
            .stop_when_idle(Duration::from_millis(500), Duration::from_secs(60))?;
        Ok(())
    };
    run()?;
    let half = results(&log);
    write(&log, second)?;
    end_all_windows(&log)?;
    run()?;
    let got = results(&log);
    anyhow::ensure!(!half.is_empty(), "windows closed before the restart");
    for (w, values) in &got {
        anyhow::ensure!(values.len() == 1, "{w:?} emitted {values:?}");
    }
    let want = reference(&spec, &events);
    let got: BTreeMap<_, u64> = got
        .into_iter()
        .map(|(w, v)| (w, v[0].parse().unwrap_or(0)))
        .collect();
    assert_eq!(got, want);
    Ok(())
}

#[test]
fn a_record_bridging_two_sessions_merges_them_and_retracts_both() -> anyhow::Result<()> {
    let (dir, log) = setup()?;
    let (groups, txns) = weir_coord::start(&log)?;
    let spec: WindowSpec = Session::with_gap(Duration::from_secs(5)).into();
    let step = |events: &[i64]| -> anyhow::Result<()> {
        for ts in events {
            log.send("in", Some(b"a"), Some(&json_ts(*ts)))?;
        }
        counting("sessions", spec)?
            .run(&log, &groups, &txns, options(dir.path()))?
            .stop_when_idle(Duration::from_millis(300), Duration::from_secs(30))?;
        Ok(())
    };
    // Two sessions (6 s apart, gap 5 s); the watermark (6 s - 2 s) keeps both open.
    step(&[0, 6_000])?;
    // 3 s is within 5 s of both: one session [0, 6 s + gap).
    step(&[3_000])?;
    let got = results(&log);
    let w = |s: i64, e: i64| ("a".to_string(), s, e);
    assert_eq!(got[&w(0, 5_000)], ["1", "retracted 1"]);
    assert_eq!(got[&w(6_000, 11_000)], ["1", "retracted 1"]);
    assert_eq!(got[&w(0, 11_000)], ["3"]);
    assert_eq!(got.len(), 3, "{got:?}");
    Ok(())
}

#[test]
fn late_records_follow_the_policy_and_are_counted() -> anyhow::Result<()> {
    for late in [LatePolicy::Drop, LatePolicy::DeadLetter] {
        let (dir, log) = setup()?;
        let (groups, txns) = weir_coord::start(&log)?;
        for ts in [1_000, 15_000, 3_000, 16_000] {
            log.send("in", Some(b"a"), Some(&json_ts(ts)))?;
        }
        let p = Pipeline::builder("lateness");
        let mut spec: WindowSpec = Tumbling::of(Duration::from_secs(10)).into();
        spec.emit = Emit::OnWindowClose;
        events_of(&p, Duration::ZERO)?
            .group_by_key()
            .window(spec)
            .late(late)
            .count()
            .to_topic("out", Json, Json);
        let mut opts = options(dir.path());
        opts.max_batch_records = 1;
        let running = p.build()?.run(&log, &groups, &txns, opts)?;
        running.wait_until_idle(Duration::from_millis(400), Duration::from_secs(30));
        let m = running.metrics();
        running.stop()?;
        assert_eq!(
            m.tasks.iter().map(|t| t.late_records).sum::<u64>(),
            1,
            "{late:?}"
        );
        let window_op = m
            .operators
            .iter()
            .find(|o| o.name.starts_with("window"))
            .expect("op");
        assert_eq!(window_op.counters.late, 1);
        let got = results(&log);
        assert_eq!(
            got[&("a".to_string(), 0, 10_000)],
            ["1"],
            "the late record is not in it"
        );
        let dead = crate::common::committed_by_key(&log, "lateness.dlq", |k, v| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        });
        match late {
            LatePolicy::Drop => assert!(dead.is_empty()),
            LatePolicy::DeadLetter => assert_eq!(dead["a"], ["{\"ts\":3000}"]),
        }
    }
    Ok(())
}

#[test]
fn watermarks_cross_repartition_topics() -> anyhow::Result<()> {
    let (dir, log) = setup()?;
    let (groups, txns) = weir_coord::start(&log)?;
    // Keyed by user, windowed by region: every window needs records of both input partitions.
    let regions = ["north", "south"];
    let mut events = Vec::new();
    for i in 0..200i64 {
        let region = regions[(i % 2) as usize];
        let v = format!("{{\"ts\":{},\"region\":\"{region}\"}}", i * 100);
        log.send(
            "in",
            Some(format!("user-{}", i % 7).as_bytes()),
            Some(v.as_bytes()),
        )?;
        events.push((region.to_string(), i * 100));
    }
    for p in 0..2 {
        let v = format!("{{\"ts\":{END_TS},\"region\":\"end\"}}");
        log.append(
            "in",
            PartitionId(p),
            &[Record::keyed(format!("end-{p}"), v)],
        )?;
    }
    let p = Pipeline::builder("regions");
    let mut spec: WindowSpec = Tumbling::of(Duration::from_secs(5)).into();
    spec.emit = Emit::OnWindowClose;
    events_of(&p, Duration::ZERO)?
        .group_by(|_, v| {
            v.get("region")
                .and_then(|r| r.as_str())
                .unwrap_or("")
                .to_string()
        })
        .window(spec)
        .count()
        .to_topic("out", Json, Json);
    let mut opts = options(dir.path());
    opts.idle_timeout = Duration::from_secs(3600); // only watermarks may close the windows
    p.build()?
        .run(&log, &groups, &txns, opts)?
        .stop_when_idle(Duration::from_millis(800), Duration::from_secs(60))?;
    let got: BTreeMap<_, u64> = results(&log)
        .into_iter()
        .map(|(w, v)| (w, v[0].parse().unwrap_or(0)))
        .collect();
    assert_eq!(got, reference(&spec, &events));
    Ok(())
}

#[test]
fn dedup_keeps_the_first_record_per_key_within_its_ttl_across_a_restart() -> anyhow::Result<()> {
    let (dir, log) = setup()?;
    let (groups, txns) = weir_coord::start(&log)?;
    let run = |payments: &[(&str, i64)]| -> anyhow::Result<()> {
        for (id, ts) in payments {
            let v = format!("{{\"id\":\"{id}\",\"ts\":{ts}}}");
            log.send("in", Some(id.as_bytes()), Some(v.as_bytes()))?;
        }
        let p = Pipeline::builder("dedup");
        events_of(&p, Duration::ZERO)?
            .dedup_by(|k, _| k.clone(), Duration::from_secs(60))
            .to_topic("out", Utf8, Json);
        p.build()?
            .run(&log, &groups, &txns, options(dir.path()))?
            .stop_when_idle(Duration::from_millis(300), Duration::from_secs(30))?;
        Ok(())
    };
    // A producer retried p1 and p2; p1 comes again after the TTL, a new payment.
    run(&[("p1", 1_000), ("p2", 2_000), ("p1", 5_000)])?;
    run(&[("p2", 30_000), ("p3", 40_000), ("p1", 100_000)])?;
    let out = crate::common::committed_by_key(&log, "out", |k, v| {
        (
            String::from_utf8_lossy(k).into_owned(),
            serde_json::from_slice::<serde_json::Value>(v).expect("json")["ts"]
                .as_i64()
                .unwrap_or(-1),
        )
    });
    assert_eq!(out["p1"], [1_000, 100_000]);
    assert_eq!(
        out["p2"],
        [2_000],
        "the retry after a restart is a duplicate too"
    );
    assert_eq!(out["p3"], [40_000]);
    Ok(())
}

#[test]
fn stream_stream_joins_match_within_the_window_and_emit_unmatched_records() -> anyhow::Result<()> {
    use weir_engine::{JoinType, JoinWindow};
    const WITHIN: i64 = 250;
    let mut rng = SeededRng::from_env("stream_stream_join");
    for kind in [JoinType::Inner, JoinType::Left, JoinType::Outer] {
        let (dir, log) = setup()?;
        log.create_topic("views", 2, Default::default())?;
        let (groups, txns) = weir_coord::start(&log)?;
        // (key, event time, id) per side, in event-time order.
        let mut sides: [Vec<(String, i64, String)>; 2] = [Vec::new(), Vec::new()];
        for i in 0..300i64 {
            let key = format!("u{}", rng.below(6));
            let side = rng.below(2) as usize;
            let (topic, id) = if side == 0 {
                ("in", format!("c{i}"))
            } else {
                ("views", format!("v{i}"))
            };
            let p = log.partition_for(topic, key.as_bytes())?;
            let r =
                Record::keyed(key.clone(), format!("\"{id}\"")).at(weir_log::Timestamp(i * 100));
            log.append(topic, p, &[r])?;
            sides[side].push((key, i * 100, id));
        }
        for (topic, p) in [("in", 0), ("in", 1), ("views", 0), ("views", 1)] {
            let end = Record::keyed(format!("end-{topic}-{p}"), "\"end\"")
                .at(weir_log::Timestamp(END_TS));
            log.append(topic, PartitionId(p), &[end])?;
        }
        let p = Pipeline::builder("joiner");
        let clicks = p.stream::<String, String>("in", Utf8, Json);
        let views = p.stream::<String, String>("views", Utf8, Json);
        clicks
            .join_stream(
                &views,
                JoinWindow::within(Duration::from_millis(WITHIN as u64)),
                kind,
                |c, v| {
                    format!(
                        "{}|{}",
                        c.map_or("-", |s| s.as_str()),
                        v.map_or("-", |s| s.as_str())
                    )
                },
            )
            .to_topic("out", Utf8, Json);
        p.build()?
            .run(&log, &groups, &txns, options(dir.path()))?
            .stop_when_idle(Duration::from_millis(800), Duration::from_secs(60))?;
        let mut got: Vec<(String, String)> =
            crate::common::committed_by_key(&log, "out", |k, v| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    serde_json::from_slice::<String>(v).expect("json"),
                )
            })
            .into_iter()
            .flat_map(|(k, vs)| vs.into_iter().map(move |v| (k.clone(), v)))
            .filter(|(k, _)| !k.starts_with("end"))
            .collect();
        got.sort();
        // Brute force: every pair of one key within WITHIN ms, plus the unmatched.
        let mut want = Vec::new();
        let mut matched = [vec![false; sides[0].len()], vec![false; sides[1].len()]];
        for (i, (k, t, c)) in sides[0].iter().enumerate() {
            for (j, (k2, t2, v)) in sides[1].iter().enumerate() {
                if k == k2 && (t - t2).abs() <= WITHIN {
                    want.push((k.clone(), format!("{c}|{v}")));
                    matched[0][i] = true;
                    matched[1][j] = true;
                }
            }
        }
        for side in 0..2 {
            let keep = matches!((kind, side), (JoinType::Left, 0) | (JoinType::Outer, _));
            for (i, (k, _, id)) in sides[side].iter().enumerate() {
                if keep && !matched[side][i] {
                    let v = if side == 0 {
                        format!("{id}|-")
                    } else {
                        format!("-|{id}")
                    };
                    want.push((k.clone(), v));
                }
            }
        }
        want.sort();
        assert_eq!(got, want, "{kind:?}");
    }
    Ok(())
}

#[test]
fn a_table_ttl_forgets_keys_not_updated_within_it() -> anyhow::Result<()> {
    let (dir, log) = setup()?;
    let (groups, txns) = weir_coord::start(&log)?;
    // One partition, so one task sees both keys (and one watermark).
    for (k, ts) in [("a", 0), ("b", 20_000), ("a", 21_000), ("b", 22_000)] {
        log.append("in", PartitionId(0), &[Record::keyed(k, json_ts(ts))])?;
    }
    let p = Pipeline::builder("ttl");
    events_of(&p, Duration::ZERO)?
        .group_by_key()
        .count()
        .named("visits")
        .ttl(Duration::from_secs(10))
        .to_topic("out", Utf8, Json);
    let mut opts = options(dir.path());
    opts.max_batch_records = 1;
    let running = p.build()?.run(&log, &groups, &txns, opts)?;
    running.wait_until_idle(Duration::from_millis(400), Duration::from_secs(30));
    let m = running.metrics();
    running.stop()?;
    let out = crate::common::committed_by_key(&log, "out", |k, v| {
        (
            String::from_utf8_lossy(k).into_owned(),
            String::from_utf8_lossy(v).into_owned(),
        )
    });
    // `a` was last seen at 0 s; at 20 s of event time it is 20 s old: forgotten.
    assert_eq!(out["a"], ["1", "1"]);
    assert_eq!(out["b"], ["1", "2"], "b was updated within its TTL");
    let ttl_op = m
        .operators
        .iter()
        .find(|o| o.name.starts_with("ttl"))
        .expect("ttl op");
    assert_eq!(ttl_op.counters.dropped, 1);
    assert!(log
        .list_topics()
        .contains(&"ttl.visits-ttl.changelog".to_string()));
    Ok(())
}

#[test]
fn emit_on_update_emits_the_last_changes_of_a_window_that_closes_within_an_interval(
) -> anyhow::Result<()> {
    let (dir, log) = setup()?;
    let (groups, txns) = weir_coord::start(&log)?;
    // Nine records of [0 s, 10 s), then one at 10 s closes it: all in one commit interval.
    for ts in (1..=9).map(|s| s * 1_000).chain([10_000]) {
        log.append("in", PartitionId(0), &[Record::keyed("a", json_ts(ts))])?;
    }
    let p = Pipeline::builder("updates");
    events_of(&p, Duration::ZERO)?
        .group_by_key()
        .window(Tumbling::of(Duration::from_secs(10)))
        .count()
        .to_topic("out", Json, Json);
    let mut opts = options(dir.path());
    opts.commit_interval = Duration::from_secs(5);
    p.build()?
        .run(&log, &groups, &txns, opts)?
        .stop_when_idle(Duration::from_millis(300), Duration::from_secs(30))?;
    let got = results(&log);
    assert_eq!(got[&("a".to_string(), 0, 10_000)], ["9"], "{got:?}");
    Ok(())
}

#[test]
fn a_hopping_window_that_gets_a_record_late_within_grace_is_still_emitted() -> anyhow::Result<()> {
    let (dir, log) = setup()?;
    let (groups, txns) = weir_coord::start(&log)?;
    for ts in [100_000, 92_000, END_TS] {
        log.append("in", PartitionId(0), &[Record::keyed("a", json_ts(ts))])?;
    }
    let p = Pipeline::builder("hops");
    let mut spec: WindowSpec = Hopping::of(Duration::from_secs(10), Duration::from_secs(5))
        .grace(Duration::from_secs(20))
        .into();
    spec.emit = Emit::OnWindowClose;
    events_of(&p, Duration::ZERO)?
        .group_by_key()
        .window(spec)
        .count()
        .to_topic("out", Json, Json);
    let mut opts = options(dir.path());
    opts.max_batch_records = 1;
    p.build()?
        .run(&log, &groups, &txns, opts)?
        .stop_when_idle(Duration::from_millis(300), Duration::from_secs(30))?;
    let got = results(&log);
    let events = [("a".to_string(), 100_000), ("a".to_string(), 92_000)];
    let want: BTreeMap<_, u64> = reference(&spec, &events);
    let got: BTreeMap<_, u64> = got
        .into_iter()
        .filter(|(w, _)| w.1 < END_TS - 10_000)
        .map(|(w, v)| (w, v[0].parse().unwrap_or(0)))
        .collect();
    assert_eq!(got, want);
    Ok(())
}

#[test]
fn a_join_keeps_every_item_of_one_input_record() -> anyhow::Result<()> {
    use weir_engine::{JoinType, JoinWindow};
    let (dir, log) = setup()?;
    log.create_topic("views", 2, Default::default())?;
    let (groups, txns) = weir_coord::start(&log)?;
    let at = |ts| weir_log::Timestamp(ts);
    let p0 = log.partition_for("in", b"u")?;
    log.append("in", p0, &[Record::keyed("u", "\"a b\"").at(at(1_000))])?;
    log.append("views", p0, &[Record::keyed("u", "\"v\"").at(at(1_100))])?;
    for (topic, p) in [("in", 0), ("in", 1), ("views", 0), ("views", 1)] {
        let end = Record::keyed(format!("end-{p}"), "\"end\"").at(at(END_TS));
        log.append(topic, PartitionId(p), &[end])?;
    }
    let p = Pipeline::builder("words");
    let words = p
        .stream::<String, String>("in", Utf8, Json)
        .flat_map(|k, line: String| {
            line.split(' ')
                .map(|w| (k.clone(), w.to_string()))
                .collect::<Vec<_>>()
        });
    let views = p.stream::<String, String>("views", Utf8, Json);
    words
        .join_stream(
            &views,
            JoinWindow::within(Duration::from_secs(1)),
            JoinType::Outer,
            |w, v| {
                format!(
                    "{}|{}",
                    w.map_or("-", |s| s.as_str()),
                    v.map_or("-", |s| s.as_str())
                )
            },
        )
        .to_topic("out", Utf8, Json);
    p.build()?
        .run(&log, &groups, &txns, options(dir.path()))?
        .stop_when_idle(Duration::from_millis(500), Duration::from_secs(30))?;
    let mut got = crate::common::committed_by_key(&log, "out", |k, v| {
        (
            String::from_utf8_lossy(k).into_owned(),
            serde_json::from_slice::<String>(v).expect("json"),
        )
    })
    .remove("u")
    .unwrap_or_default();
    got.sort();
    assert_eq!(got, ["a|v", "b|v"], "both words of the line met the view");
    Ok(())
}
