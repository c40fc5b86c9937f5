//! `weir pipeline run NAME`: built-in pipelines of the engine, for demos and crash tests.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use weir_engine::{Guarantee, Json, Pipeline, RunOptions, Utf8};

use crate::cli::PipelineCmd;

pub fn run(dir: &Path, cmd: PipelineCmd) -> Result<()> {
    match cmd {
        PipelineCmd::List => list(dir),
        PipelineCmd::Describe { app } => describe(dir, &app),
        run @ PipelineCmd::Run { .. } => run_builtin(dir, run),
    }
}

fn list(dir: &Path) -> Result<()> {
    let log = super::open_log_read_only(dir)?;
    for t in log.list_topics() {
        if let Some(app) = t.strip_suffix(".dlq") {
            println!("{app}");
        }
    }
    Ok(())
}

fn describe(dir: &Path, app: &str) -> Result<()> {
    let log = super::open_log_read_only(dir)?;
    let dlq = weir_engine::dead_letter_topic(app);
    if !log.list_topics().contains(&dlq) {
        bail!("no pipeline `{app}` has run in {}", dir.display());
    }
    let dlq_depth: i64 = (0..log.partition_count(&dlq)?)
        .map(|p| {
            let p = weir_log::PartitionId(p);
            Ok(log.latest_offset(&dlq, p)?.0 - log.earliest_offset(&dlq, p)?.0)
        })
        .sum::<Result<i64>>()?;
    println!("pipeline {app}  dead-letter topic {dlq}: {dlq_depth} record(s)");
    let groups = weir_coord::GroupCoordinator::start(&log)?;
    println!(
        "{:<32} {:>9} {:>12} {:>12} {:>10}",
        "INPUT", "PARTITION", "COMMITTED", "LOG-END", "LAG"
    );
    for l in groups.lag(app, &[], weir_coord::decode_assignment)? {
        println!(
            "{:<32} {:>9} {:>12} {:>12} {:>10}",
            l.topic,
            l.partition,
            l.committed.map_or("-".to_string(), |o| o.to_string()),
            l.log_end,
            l.lag
        );
    }
    let prefix = format!("{app}-");
    for t in log.list_topics() {
        if t.starts_with(&prefix) && t.ends_with("-changelog") {
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

fn run_builtin(dir: &Path, cmd: PipelineCmd) -> Result<()> {
    let PipelineCmd::Run {
        name,
        app,
        input,
        output,
        at_least_once,
        commit_ms,
        until_idle_ms,
        state_dir,
    } = cmd
    else {
        bail!("not a run command");
    };
    let p = Pipeline::builder(&app);
    match name.as_str() {
        "keyed-count" => {
            p.stream::<String, String>(&input, Utf8, Utf8)
                .group_by_key()
                .count()
                .to_topic(&output, Utf8, Json);
        }
        other => bail!("unknown built-in pipeline `{other}`; available: keyed-count"),
    }
    let topology = p.build()?;
    let log = super::open_log(dir, true)?;
    let (groups, txns) = weir_coord::start(&log)?;
    let mut opts = RunOptions::new(state_dir.unwrap_or_else(|| dir.join("state")));
    opts.commit_interval = Duration::from_millis(commit_ms.max(1));
    if at_least_once {
        opts.guarantee = Guarantee::AtLeastOnce;
    }
    let running = topology.run(&log, &groups, &txns, opts)?;
    match until_idle_ms {
        Some(ms) => running.stop_when_idle(Duration::from_millis(ms), Duration::from_secs(3600))?,
        None => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
    }
    Ok(())
}
