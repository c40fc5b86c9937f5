//! Session windows: a user's clicks closer than 30 s to each other form one session. A late
//! click (within the 60 s grace period) that bridges two sessions merges them; under emit on
//! update the merged-away sessions are retracted, so a reader of the output always has the
//! current sessions.
//!
//! Run: `cargo run --example sessions`

use std::time::Duration;

use weir_engine::{Json, Pipeline, RunOptions, Session, Utf8, Windowed};
use weir_log::{Log, PartitionId};

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path().join("log"))?;
    log.create_topic("clicks", 1, Default::default())?;
    log.create_topic("sessions", 1, Default::default())?;
    let (groups, txns) = weir_coord::start(&log)?;
    let run = |clicks: &[(&str, i64)]| -> anyhow::Result<()> {
        for (user, at_s) in clicks {
            let record = weir_log::Record::keyed(user.to_string(), "click")
                .at(weir_log::Timestamp(at_s * 1000));
            log.append("clicks", PartitionId(0), &[record])?;
        }
        let p = Pipeline::builder("sessionizer");
        p.stream::<String, String>("clicks", Utf8, Utf8)
            .group_by_key()
            .window(Session::with_gap(Duration::from_secs(30)).grace(Duration::from_secs(60)))
            .count()
            .to_topic("sessions", Json, Json);
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
    // Two sessions of ann (0-20 s and 60-70 s), one of bob.
    run(&[
        ("ann", 0),
        ("ann", 20),
        ("bob", 25),
        ("ann", 60),
        ("ann", 70),
    ])?;
    // A click at 40 s, arriving late but within the grace period, is within 30 s of both of
    // ann's sessions: they merge into one.
    run(&[("ann", 40)])?;

    let from = log.earliest_offset("sessions", PartitionId(0))?;
    log.for_each_record(
        "sessions",
        PartitionId(0),
        from,
        weir_log::Isolation::ReadCommitted,
        |r| {
            let w: Windowed<String> = serde_json::from_slice(r.key.unwrap_or_default())?;
            let clicks: u64 = serde_json::from_slice(r.value.unwrap_or_default())?;
            let what = if w.retracted { "retracted" } else { "session" };
            println!(
                "{what:>9} {}: [{} s, {} s) {clicks} click(s)",
                w.key,
                w.start / 1000,
                w.end / 1000
            );
            Ok::<(), anyhow::Error>(())
        },
    )?;
    Ok(())
}
