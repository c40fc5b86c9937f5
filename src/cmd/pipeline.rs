//! `weir pipeline run NAME`: built-in pipelines of the engine, for demos and crash tests.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use weir_engine::{Guarantee, Json, Pipeline, RunOptions, Utf8};

use crate::cli::PipelineCmd;

pub fn run(dir: &Path, cmd: PipelineCmd) -> Result<()> {
    let PipelineCmd::Run {
        name,
        app,
        input,
        output,
        at_least_once,
        commit_ms,
        until_idle_ms,
        state_dir,
    } = cmd;
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
