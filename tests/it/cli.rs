//! The CLI surface as a user runs it: topics, produce/consume round trips, formats, and
//! errors that print one clear line and exit non-zero.

use crate::util::{run, stderr, stdout};

#[test]
fn topic_lifecycle_and_describe() {
    let d = tempfile::tempdir().expect("tempdir");
    let o = run(
        d.path(),
        &[
            "topic",
            "create",
            "events",
            "--partitions",
            "4",
            "--config",
            "retention.ms=60000",
        ],
        "",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(d.path(), &["topic", "list"], "");
    assert_eq!(stdout(&o), "events\t4 partition(s)\n");
    let o = run(d.path(), &["topic", "describe", "events"], "");
    let s = stdout(&o);
    assert!(s.contains("partitions 4"), "{s}");
    assert!(s.contains("retention.ms=60000\n"), "{s}");
    assert!(s.contains("cleanup.policy=delete  (default)"), "{s}");
    let o = run(d.path(), &["topic", "delete", "events"], "");
    assert!(o.status.success());
    assert_eq!(stdout(&run(d.path(), &["topic", "list"], "")), "");
}

#[test]
fn produce_consume_round_trip_with_keys_and_formats() {
    let d = tempfile::tempdir().expect("tempdir");
    run(
        d.path(),
        &["topic", "create", "kv", "--partitions", "3"],
        "",
    );
    let input: String = (0..300)
        .map(|i| format!("user-{}:event-{i}\n", i % 10))
        .collect();
    let o = run(d.path(), &["produce", "kv", "--key-separator", ":"], &input);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("produced 300 records"),
        "{}",
        stderr(&o)
    );
    let o = run(d.path(), &["consume", "kv", "-f", "%p|%o|%k|%s\\n"], "");
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<String> = stdout(&o).lines().map(String::from).collect();
    assert_eq!(lines.len(), 300);
    // Each key on exactly the partition Kafka's partitioner picks, in produce order.
    let mut last_event: std::collections::HashMap<String, i64> = Default::default();
    for l in &lines {
        let parts: Vec<&str> = l.split('|').collect();
        let (p, key, value) = (parts[0], parts[2], parts[3]);
        let want = weir_log::partitioner::partition_for_key(key.as_bytes(), 3);
        assert_eq!(p, want.to_string(), "{l}");
        let n: i64 = value.trim_start_matches("event-").parse().expect("n");
        let prev = last_event.insert(key.to_string(), n);
        assert!(prev.is_none_or(|p| p < n), "per-key order: {l}");
    }
    let o = run(
        d.path(),
        &[
            "consume",
            "kv",
            "--partition",
            "0",
            "--offset",
            "-2",
            "-f",
            "%o\\n",
        ],
        "",
    );
    assert_eq!(stdout(&o).lines().count(), 2);
    let o = run(d.path(), &["consume", "kv", "--max-messages", "5"], "");
    assert_eq!(stdout(&o).lines().count(), 5);
}

#[test]
fn errors_are_one_clear_line_and_exit_nonzero() {
    let d = tempfile::tempdir().expect("tempdir");
    run(d.path(), &["topic", "create", "t", "--partitions", "2"], "");
    let cases: [(&[&str], &str); 6] = [
        (&["consume", "nope"], "error: topic `nope` does not exist"),
        (&["produce", "nope"], "error: topic `nope` does not exist"),
        (
            &["consume", "t", "--partition", "5"],
            "error: topic `t` has 2 partitions; partition 5 does not exist",
        ),
        (&["topic", "create", "t"], "error: topic `t` already exists"),
        (
            &["topic", "create", "u", "--config", "retention.ms=soon"],
            "error: invalid config `retention.ms=soon`: expected an integer",
        ),
        (
            &["consume", "t", "-f", "%q"],
            "error: unknown placeholder `%q`",
        ),
    ];
    for (args, want) in cases {
        let o = run(d.path(), args, "");
        assert!(!o.status.success(), "{args:?} should fail");
        let err = stderr(&o);
        assert!(err.starts_with(want), "{args:?}: got {err:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line, got {err:?}");
    }
}

#[test]
fn consume_follow_runs_alongside_a_producer_process() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let d = tempfile::tempdir().expect("tempdir");
    run(
        d.path(),
        &["topic", "create", "live", "--partitions", "2"],
        "",
    );
    // The follower starts first and must not block the producer that starts after it.
    let mut follower = crate::util::weir(d.path())
        .args([
            "consume",
            "live",
            "--follow",
            "--max-messages",
            "4",
            "-f",
            "%s\\n",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn follower");
    let mut producer = crate::util::weir(d.path())
        .args(["produce", "live", "--key-separator", ":"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn producer");
    let mut input = producer.stdin.take().expect("stdin");
    for i in 0..4 {
        writeln!(input, "k{i}:event-{i}").expect("write");
        input.flush().expect("flush");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(input);
    let out = producer.wait_with_output().expect("producer");
    assert!(
        out.status.success(),
        "producer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = follower.stdout.take().expect("stdout");
    let mut got: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .collect();
    let status = follower.wait().expect("follower");
    assert!(status.success());
    got.sort();
    assert_eq!(got, vec!["event-0", "event-1", "event-2", "event-3"]);
    // Describe works while nothing holds the lock, and while a writer does (read-only view).
    let o = run(d.path(), &["topic", "describe", "live"], "");
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_second_writer_gets_a_clear_error_naming_the_holder() {
    use std::process::Stdio;
    let d = tempfile::tempdir().expect("tempdir");
    run(d.path(), &["topic", "create", "t"], "");
    let mut holder = crate::util::weir(d.path())
        .args(["produce", "t"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn producer");
    // Wait until the holder has the lock (its pid is written into LOCK).
    let lock = d.path().join("LOCK");
    for _ in 0..200 {
        if std::fs::read_to_string(&lock).is_ok_and(|s| s.trim() == holder.id().to_string()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = run(d.path(), &["topic", "create", "u"], "");
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&format!("in use by another process (pid {})", holder.id())),
        "{err}"
    );
    drop(holder.stdin.take());
    holder.wait().expect("holder exits");
}

#[test]
fn consumer_groups_from_the_cli_commit_what_was_printed_and_show_lag() {
    let d = tempfile::tempdir().expect("tempdir");
    run(
        d.path(),
        &["topic", "create", "orders", "--partitions", "2"],
        "",
    );
    let input: String = (0..20).map(|i| format!("k{i}:v{i}\n")).collect();
    run(
        d.path(),
        &["produce", "orders", "--key-separator", ":"],
        &input,
    );
    let o = run(
        d.path(),
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--max-messages",
            "5",
        ],
        "",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 5);
    let o = run(d.path(), &["group", "describe", "billing"], "");
    assert!(o.status.success(), "{}", stderr(&o));
    let total_lag: i64 = stdout(&o)
        .lines()
        .filter(|l| l.starts_with("orders"))
        .map(|l| {
            l.split_whitespace()
                .last()
                .and_then(|x| x.parse::<i64>().ok())
                .expect("lag column")
        })
        .sum();
    assert_eq!(total_lag, 15, "{}", stdout(&o));
    // The next member of the group continues where the first one stopped.
    let o = run(d.path(), &["consume", "orders", "--group", "billing"], "");
    assert_eq!(stdout(&o).lines().count(), 15);
    let o = run(d.path(), &["group", "describe", "billing"], "");
    assert!(
        stdout(&o)
            .lines()
            .filter(|l| l.starts_with("orders"))
            .all(|l| l.ends_with(" 0")),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&run(d.path(), &["group", "list"], "")).contains("billing"));
    let o = run(
        d.path(),
        &[
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "orders",
            "--to",
            "earliest",
        ],
        "",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(
        d.path(),
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--isolation",
            "read_committed",
        ],
        "",
    );
    assert_eq!(stdout(&o).lines().count(), 20);
    assert!(run(d.path(), &["group", "delete", "billing"], "")
        .status
        .success());
    let o = run(d.path(), &["group", "describe", "billing"], "");
    assert_eq!(stderr(&o).trim(), "error: group `billing` does not exist");
}

#[test]
fn pipelines_run_list_and_describe_from_the_cli() {
    let d = tempfile::tempdir().expect("tempdir");
    run(
        d.path(),
        &["topic", "create", "clicks", "--partitions", "2"],
        "",
    );
    run(
        d.path(),
        &["topic", "create", "click-counts", "--partitions", "2"],
        "",
    );
    let input: String = (0..50).map(|i| format!("user-{}:click\n", i % 5)).collect();
    run(
        d.path(),
        &["produce", "clicks", "--key-separator", ":"],
        &input,
    );
    let o = run(
        d.path(),
        &[
            "pipeline",
            "run",
            "keyed-count",
            "--app",
            "clicker",
            "--input",
            "clicks",
            "--output",
            "click-counts",
            "--until-idle-ms",
            "500",
        ],
        "",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let list = stdout(&run(d.path(), &["pipeline", "list"], ""));
    let row: Vec<&str> = list
        .lines()
        .find(|l| l.starts_with("clicker "))
        .unwrap_or_else(|| panic!("no row for clicker: {list}"))
        .split_whitespace()
        .collect();
    assert_eq!(&row[1..3], ["stopped", "50"], "{list}");
    let o = run(d.path(), &["pipeline", "describe", "clicker"], "");
    let s = stdout(&o);
    assert!(s.contains("records in 50"), "{s}");
    assert!(s.contains("clicker.dlq: 0 record(s)"), "{s}");
    // One task per input partition, both stopped cleanly, 50 records between them.
    let tasks: Vec<Vec<&str>> = s
        .lines()
        .filter(|l| l.starts_with("clicks/"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(tasks.len(), 2, "{s}");
    assert!(tasks.iter().all(|t| t[1] == "stopped"), "{s}");
    let records: u64 = tasks.iter().map(|t| t[2].parse::<u64>().unwrap_or(0)).sum();
    assert_eq!(records, 50, "{s}");
    // Every operator saw all 50 records and passed them all on.
    for op in ["stream(clicks)", "to_topic(click-counts)"] {
        let line: Vec<&str> = s
            .lines()
            .find(|l| l.contains(op))
            .unwrap_or_else(|| panic!("no operator {op}: {s}"))
            .split_whitespace()
            .collect();
        assert_eq!(&line[2..4], ["50", "50"], "{op}: {s}");
    }
    assert!(
        s.lines()
            .filter(|l| l.starts_with("clicks "))
            .all(|l| l.ends_with(" 0")),
        "lag 0 after the run: {s}"
    );
    assert!(
        s.contains("state changelog clicker.clicks-aggregate.changelog"),
        "{s}"
    );
    // Latest count per user is 10, read exactly once.
    let o = run(
        d.path(),
        &[
            "consume",
            "click-counts",
            "--isolation",
            "read_committed",
            "-f",
            "%k=%s\\n",
        ],
        "",
    );
    let mut latest = std::collections::BTreeMap::new();
    for l in stdout(&o).lines() {
        let (k, v) = l.split_once('=').expect("k=v");
        latest.insert(k.to_string(), v.to_string());
    }
    assert_eq!(latest.len(), 5);
    assert!(latest.values().all(|v| v == "10"), "{latest:?}");
    let o = run(d.path(), &["pipeline", "describe", "nope"], "");
    assert!(stderr(&o).contains("no pipeline `nope`"), "{}", stderr(&o));
}

#[test]
fn the_latest_builtin_pipeline_keeps_the_latest_value_per_key() {
    let d = tempfile::tempdir().expect("tempdir");
    run(d.path(), &["topic", "create", "kv"], "");
    run(d.path(), &["topic", "create", "kv-len"], "");
    run(
        d.path(),
        &["produce", "kv", "--key-separator", ":"],
        "a:1\nb:22\na:333\n",
    );
    let o = run(
        d.path(),
        &[
            "pipeline",
            "run",
            "latest",
            "--app",
            "lengths",
            "--input",
            "kv",
            "--output",
            "kv-len",
            "--until-idle-ms",
            "300",
        ],
        "",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(
        d.path(),
        &[
            "consume",
            "kv-len",
            "--isolation",
            "read_committed",
            "-f",
            "%k=%s\\n",
        ],
        "",
    );
    assert_eq!(stdout(&o), "a=1\nb=2\na=3\n");
    let o = run(d.path(), &["pipeline", "describe", "lengths"], "");
    assert!(
        stdout(&o).contains("state changelog lengths.kv-aggregate.changelog"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_missing_data_directory_says_what_is_wrong_once() {
    let d = tempfile::tempdir().expect("tempdir");
    let missing = d.path().join("nowhere");
    let o = run(&missing, &["consume", "t"], "");
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.starts_with(&format!(
            "error: there is no Weir log in {}",
            missing.display()
        )),
        "{err}"
    );
    assert_eq!(err.matches("no Weir log").count(), 1, "said once: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn an_application_from_an_earlier_version_is_refused_until_reset() {
    let d = tempfile::tempdir().expect("tempdir");
    for t in [
        "clicks",
        "counts",
        "old-app-aggregate-0-changelog",
        "old-app-repartition-3",
    ] {
        run(d.path(), &["topic", "create", t], "");
    }
    run(
        d.path(),
        &["produce", "clicks", "--key-separator", ":"],
        "u1:a\nu2:b\nu1:c\n",
    );
    let pipeline = [
        "pipeline",
        "run",
        "keyed-count",
        "--app",
        "old-app",
        "--input",
        "clicks",
        "--output",
        "counts",
        "--until-idle-ms",
        "300",
    ];
    let o = run(d.path(), &pipeline, "");
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("old-app-aggregate-0-changelog")
            && err.contains("weir pipeline reset old-app"),
        "{err}"
    );
    let o = run(d.path(), &["pipeline", "reset", "old-app"], "");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("deleted topic old-app-repartition-3"),
        "{}",
        stdout(&o)
    );
    let o = run(d.path(), &pipeline, "");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(d.path(), &["topic", "list"], "");
    assert!(
        stdout(&o).contains("old-app.clicks-aggregate.changelog"),
        "{}",
        stdout(&o)
    );
    // A reset starts it over: the same three records counted again from the start.
    run(d.path(), &["pipeline", "reset", "old-app"], "");
    run(d.path(), &pipeline, "");
    let o = run(
        d.path(),
        &[
            "consume",
            "counts",
            "--isolation",
            "read_committed",
            "-f",
            "%k=%s\\n",
        ],
        "",
    );
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(
        lines.iter().filter(|l| **l == "u1=2").count(),
        2,
        "{lines:?}"
    );
}
