//! `weir pipeline run|list|describe`: built-in pipelines of the engine (for demos and crash
//! tests), and watching any pipeline that ran in a data directory.
//!
//! A running pipeline writes its metrics snapshot to `DATA_DIR/pipelines/APP.json` every
//! second (and at stop); `list` and `describe` read those files and the log (read-only), so
//! they work from another terminal while the pipeline runs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use weir_engine::MetricsSnapshot;

use crate::cli::PipelineCmd;

pub fn run(dir: &Path, cmd: PipelineCmd) -> Result<()> {
    match cmd {
        PipelineCmd::List => list(dir),
        PipelineCmd::Describe { app } => describe(dir, &app),
        PipelineCmd::Reset { app, state_dir } => reset(dir, &app, state_dir),
        run @ PipelineCmd::Run { .. } => super::builtin::run(dir, run),
        PipelineCmd::Stop { app } => super::hosted::stop(dir, &app),
    }
}

fn metrics_dir(dir: &Path) -> PathBuf {
    dir.join("pipelines")
}

pub(super) fn metrics_file(dir: &Path, app: &str) -> PathBuf {
    metrics_dir(dir).join(format!("{app}.json"))
}

fn read_snapshot(dir: &Path, app: &str) -> Result<Option<MetricsSnapshot>> {
    let path = metrics_file(dir, app);
    match std::fs::read(&path) {
        Ok(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| {
            format!("{} is not a pipeline metrics snapshot", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// `running (pid N)` when the snapshot is fresh and its process is alive, else `stopped`.
fn status(s: &MetricsSnapshot) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let alive = Path::new(&format!("/proc/{}", s.pid)).exists();
    if alive && now - s.at_ms < 5_000 {
        format!("running (pid {})", s.pid)
    } else {
        "stopped".to_string()
    }
}

fn reset(dir: &Path, app: &str, state_dir: Option<PathBuf>) -> Result<()> {
    let log = super::open_log(dir, false)?;
    // With transaction recovery first: offsets a killed commit left undecided are settled
    // before the group's offsets are deleted.
    let (groups, _txns) = weir_coord::start(&log)?;
    let state_dir = state_dir.unwrap_or_else(|| dir.join("state"));
    let report = weir_engine::reset(&log, &groups, app, &state_dir)
        .with_context(|| format!("cannot reset application `{app}`"))?;
    let metrics = metrics_file(dir, app);
    if metrics.exists() {
        std::fs::remove_file(&metrics)
            .with_context(|| format!("cannot remove {}", metrics.display()))?;
    }
    for t in &report.topics {
        println!("deleted topic {t}");
    }
    if report.offsets {
        println!("deleted the committed offsets of group {app}");
    }
    if report.state {
        println!("deleted state {}", state_dir.join(app).display());
    }
    println!("application {app} will start over from the beginning of its inputs");
    Ok(())
}

fn list(dir: &Path) -> Result<()> {
    let log = super::open_log_read_only(dir)?;
    let mut apps: std::collections::BTreeSet<String> = log
        .list_topics()
        .iter()
        .filter_map(|t| t.strip_suffix(".dlq").map(str::to_string))
        .collect();
    if let Ok(entries) = std::fs::read_dir(metrics_dir(dir)) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(app) = name.strip_suffix(".json") {
                apps.insert(app.to_string());
            }
        }
    }
    println!(
        "{:<32} {:<20} {:>14} {:>10}",
        "APP", "STATUS", "RECORDS-IN", "COMMITS"
    );
    for app in apps {
        match read_snapshot(dir, &app)? {
            Some(s) => println!(
                "{:<32} {:<20} {:>14} {:>10}",
                app,
                status(&s),
                s.records_in,
                s.commits
            ),
            None => println!("{app:<32} {:<20} {:>14} {:>10}", "stopped", "-", "-"),
        }
    }
    Ok(())
}

fn describe(dir: &Path, app: &str) -> Result<()> {
    let log = super::open_log_read_only(dir)?;
    let dlq = weir_engine::dead_letter_topic(app);
    let snapshot = read_snapshot(dir, app)?;
    if !log.list_topics().contains(&dlq) && snapshot.is_none() {
        bail!("no pipeline `{app}` has run in {}", dir.display());
    }
    // Committed records, not offsets: transaction markers take offsets too.
    let mut dlq_depth = 0u64;
    if log.list_topics().contains(&dlq) {
        for p in 0..log.partition_count(&dlq)? {
            let p = weir_log::PartitionId(p);
            let from = log.earliest_offset(&dlq, p)?;
            log.for_each_record(&dlq, p, from, weir_log::Isolation::ReadCommitted, |_| {
                dlq_depth += 1;
                Ok::<(), weir_log::LogError>(())
            })?;
        }
    }
    match &snapshot {
        None => println!("pipeline {app}  (no metrics: it has not run with this version)"),
        Some(s) => {
            println!(
                "pipeline {app}  {}  up {:.1} s  records in {}  commits {} ({:.1}/s)",
                status(s),
                s.uptime_secs,
                s.records_in,
                s.commits,
                s.commit_rate
            );
            println!(
                "  end-to-end latency ms: p50 {}  p99 {}  p99.9 {}  max {}   commit µs: p50 {}  p99 {}",
                s.end_to_end_ms.p50,
                s.end_to_end_ms.p99,
                s.end_to_end_ms.p999,
                s.end_to_end_ms.max,
                s.commit_us.p50,
                s.commit_us.p99
            );
            println!(
                "  poison records: {} dead-lettered, {} skipped   task restarts after transient errors: {}",
                s.dead_lettered, s.skipped, s.retries
            );
        }
    }
    println!("  dead-letter topic {dlq}: {dlq_depth} record(s)");
    if let Some(s) = &snapshot {
        println!(
            "\n{:<36} {:<10} {:>12} {:>10} {:>10} {:>8} {:>12} {:>10} {:>15} {:>12} {:>12} {:>8}",
            "TASK",
            "STATE",
            "RECORDS-IN",
            "POSITION",
            "LAG",
            "COMMITS",
            "COMMIT-P99µs",
            "RESTORED",
            "WATERMARK",
            "WM-LAG-MS",
            "OPEN-WINDOWS",
            "LATE"
        );
        for t in &s.tasks {
            let state = match &t.state {
                weir_engine::TaskState::Failed(e) => format!("failed: {e}"),
                weir_engine::TaskState::Restoring => format!(
                    "restoring ({} records so far, {:.0}/s)",
                    t.restored_records, t.restore_rate
                ),
                other => format!("{other:?}").to_lowercase(),
            };
            // Watermark lag: how far event time trails the wall clock, as of the snapshot.
            let (wm, wm_lag) = match t.watermark {
                Some(w) => (w.to_string(), (s.at_ms - w).max(0).to_string()),
                None => ("-".to_string(), "-".to_string()),
            };
            println!(
                "{:<36} {:<10} {:>12} {:>10} {:>10} {:>8} {:>12} {:>10} {:>15} {:>12} {:>12} {:>8}",
                t.task,
                state,
                t.records_in,
                t.position,
                t.lag,
                t.commits,
                t.commit_us.p99,
                t.restored_records,
                wm,
                wm_lag,
                t.open_windows,
                t.late_records
            );
        }
        println!(
            "\n{:>3} {:<44} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "OP",
            "OPERATOR",
            "RECORDS-IN",
            "RECORDS-OUT",
            "BATCHES",
            "BUSY-MS",
            "DROPPED",
            "LATE",
            "CLOSED"
        );
        for o in &s.operators {
            println!(
                "{:>3} {:<44} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10}",
                o.id,
                o.name,
                o.counters.records_in,
                o.counters.records_out,
                o.counters.batches,
                o.counters.busy_ns / 1_000_000,
                o.counters.dropped,
                o.counters.late,
                o.counters.closed
            );
        }
    }
    let groups = weir_coord::GroupCoordinator::start(&log)?;
    println!(
        "\n{:<32} {:>9} {:>12} {:>12} {:>10}",
        "INPUT", "PARTITION", "COMMITTED", "LOG-END", "LAG"
    );
    for l in groups.lag(app, &[])? {
        println!(
            "{:<32} {:>9} {:>12} {:>12} {:>10}",
            l.topic,
            l.partition,
            l.committed.map_or("-".to_string(), |o| o.to_string()),
            l.log_end,
            l.lag
        );
    }
    for t in weir_engine::names::internal_topics(&log, app) {
        if t.ends_with(".changelog") {
            let d = log.describe_topic(&t)?;
            let records: i64 = d
                .partitions
                .iter()
                .map(|p| p.high_watermark.0 - p.log_start.0)
                .sum();
            let bytes: u64 = d.partitions.iter().map(|p| p.bytes).sum();
            println!("state changelog {t}: {records} record(s), {bytes} bytes");
        }
    }
    Ok(())
}
