//! `weir queue` as a user runs it, without a server (the CLI starts an SQS listener of its
//! own over the data directory) and beside a running `weir serve`: create with a dead-letter
//! queue, send from stdin, receive without acking until the lock runs out, describe, the
//! message dead-lettered after its receives, redrive, receive --ack.

use std::path::Path;
use std::time::Duration;

use crate::kafka_interop::Served;
use crate::util::{run, stderr, stdout};

fn ok(dir: &Path, args: &[&str], stdin: &str) -> String {
    let o = run(dir, args, stdin);
    assert!(o.status.success(), "weir {args:?}: {}", stderr(&o));
    stdout(&o)
}

fn bodies(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|m| m["body"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

fn walk_through(dir: &Path) {
    ok(dir, &["queue", "create", "jobs-dlq"], "");
    ok(
        dir,
        &[
            "queue",
            "create",
            "jobs",
            "--visibility",
            "1",
            "--dlq",
            "jobs-dlq",
            "--max-receives",
            "2",
        ],
        "",
    );
    assert_eq!(ok(dir, &["queue", "list"], ""), "jobs\njobs-dlq\n");
    let ids = ok(
        dir,
        &["queue", "send", "jobs", "--attr", "kind=test"],
        "bad\nfine\n",
    );
    assert_eq!(ids.lines().count(), 2, "{ids}");
    // "bad" is received and not acked: in flight; "fine" is received and acked.
    let got = ok(dir, &["queue", "receive", "jobs", "--max", "1"], "");
    assert_eq!(bodies(&got), ["bad"]);
    assert!(
        got.contains(r#""kind":{"DataType":"String","StringValue":"test"}"#),
        "{got}"
    );
    let d = ok(dir, &["queue", "describe", "jobs"], "");
    assert!(
        d.contains("in flight          1") && d.contains("visible            1"),
        "{d}"
    );
    assert!(d.contains("delivery counts    1×: 1"), "{d}");
    let got = ok(
        dir,
        &["queue", "receive", "jobs", "--max", "1", "--ack"],
        "",
    );
    assert_eq!(bodies(&got), ["fine"]);
    // Its lock runs out: "bad" comes back, and fails again.
    std::thread::sleep(Duration::from_millis(1_200));
    let got = ok(dir, &["queue", "receive", "jobs", "--wait", "2"], "");
    assert_eq!(bodies(&got), ["bad"]);
    assert!(got.contains(r#""deliveries":"2""#), "{got}");
    std::thread::sleep(Duration::from_millis(1_200));
    // Two receives were its lot: to the dead-letter queue instead of a third.
    let got = ok(dir, &["queue", "receive", "jobs", "--wait", "1"], "");
    assert_eq!(bodies(&got), Vec::<String>::new());
    let d = ok(dir, &["queue", "describe", "jobs"], "");
    assert!(
        d.contains("dead-letter queue  jobs-dlq after 2 receives: 1 message(s)"),
        "{d}"
    );
    assert!(ok(dir, &["queue", "redrive", "jobs-dlq"], "").contains("moved 1 message(s)"));
    let got = ok(
        dir,
        &["queue", "receive", "jobs", "--wait", "2", "--ack"],
        "",
    );
    assert_eq!(bodies(&got), ["bad"]);
    let d = ok(dir, &["queue", "describe", "jobs"], "");
    assert!(
        d.contains("visible            0") && d.contains("in flight          0"),
        "{d}"
    );
    // Fan-out: the queue takes the topic's error records, filtered by key pattern.
    ok(dir, &["topic", "create", "events"], "");
    ok(
        dir,
        &[
            "queue",
            "subscribe",
            "jobs",
            "events",
            "--key-pattern",
            "#.error",
        ],
        "",
    );
    ok(
        dir,
        &["produce", "events", "--key-separator", ":"],
        "billing.error:boom\nbilling.ok:fine\n",
    );
    let got = ok(
        dir,
        &["queue", "receive", "jobs", "--wait", "5", "--ack"],
        "",
    );
    assert_eq!(bodies(&got), ["boom"]);
    assert!(ok(dir, &["queue", "describe", "jobs"], "")
        .contains("subscribes to      events (key #.error)"));
    ok(dir, &["queue", "unsubscribe", "jobs", "events"], "");
    let o = run(dir, &["queue", "delete", "jobs-dlq"], "");
    assert!(
        !o.status.success() && stderr(&o).contains("dead-letter queue of `jobs`"),
        "{}",
        stderr(&o)
    );
    ok(dir, &["queue", "delete", "jobs"], "");
    ok(dir, &["queue", "delete", "jobs-dlq"], "");
    assert_eq!(ok(dir, &["queue", "list"], ""), "");
}

#[test]
fn queue_commands_on_the_data_directory() {
    let d = tempfile::tempdir().expect("tempdir");
    walk_through(d.path());
}

#[test]
fn queue_commands_beside_a_running_server() -> anyhow::Result<()> {
    let d = tempfile::tempdir()?;
    let server = Served::start(d.path())?;
    walk_through(d.path());
    server.stop()
}
