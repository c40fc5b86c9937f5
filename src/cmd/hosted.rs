//! Pipelines hosted by `weir serve`. While a server holds the data directory, `weir pipeline
//! run` hands its pipeline over (a `POST /pipelines` on the server's HTTP listener carrying the
//! command's arguments), and follows it until it stops; the server parses the arguments with
//! the same command-line definitions, runs the pipeline beside its Kafka clients, and stops
//! it when asked (`weir pipeline stop APP`), when it is idle (`--until-idle-ms`), when a task
//! fails for good, or when the server shuts down.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use weir_coord::{GroupCoordinator, TransactionCoordinator};
use weir_kafka::{http_request, Control};
use weir_log::Log;

use super::serve::{ServeInfo, SERVE_FILE};
use crate::cli::{Cli, Command, PipelineCmd};

/// How often a host thread checks its pipeline (stop requests, idleness, failed tasks), and
/// how often the CLI asks for the state of a pipeline it follows.
const POLL: Duration = Duration::from_millis(100);
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// The HTTP address of a `weir serve` running on `dir`, if one is.
pub fn server_http(dir: &Path) -> Result<Option<String>> {
    let Ok(raw) = std::fs::read(dir.join(SERVE_FILE)) else {
        return Ok(None);
    };
    let info: ServeInfo = serde_json::from_slice(&raw)?;
    if !Path::new("/proc").join(info.pid.to_string()).exists() {
        return Ok(None);
    }
    match info.http {
        Some(addr) => Ok(Some(addr)),
        None => bail!(
            "`weir serve` (pid {}) holds {} with its HTTP listener off, so it cannot take a pipeline; restart it with --http-listen",
            info.pid,
            dir.display()
        ),
    }
}

/// The `pipeline run` command as arguments (what the server parses back).
fn to_args(cmd: &PipelineCmd) -> Vec<String> {
    let PipelineCmd::Run {
        name,
        app,
        input,
        queue,
        output,
        at_least_once,
        commit_ms,
        until_idle_ms,
        state_dir,
        on_error,
        workers,
        from,
        window,
    } = cmd
    else {
        return Vec::new();
    };
    let mut a: Vec<String> = vec![
        name.clone(),
        "--app".into(),
        app.clone(),
        "--input".into(),
        input.clone(),
        "--output".into(),
        output.clone(),
    ];
    let mut opt = |k: &str, v: String| {
        a.push(k.into());
        a.push(v);
    };
    opt("--commit-ms", commit_ms.to_string());
    opt("--on-error", on_error.clone());
    opt("--from", from.clone());
    opt("--grace", window.grace.clone());
    opt("--out-of-orderness", window.out_of_orderness.clone());
    opt("--emit", window.emit.clone());
    opt("--late", window.late.clone());
    if let Some(ms) = until_idle_ms {
        opt("--until-idle-ms", ms.to_string());
    }
    if let Some(d) = state_dir {
        opt("--state-dir", d.display().to_string());
    }
    if let Some(w) = workers {
        opt("--workers", w.to_string());
    }
    if let Some(w) = &window.window {
        opt("--window", w.clone());
    }
    if *at_least_once {
        a.push("--at-least-once".into());
    }
    if *queue {
        a.push("--queue".into());
    }
    a
}

/// Hands a `pipeline run` to the server and follows it until it stops.
pub fn hand_over(dir: &Path, http: &str, cmd: &PipelineCmd) -> Result<()> {
    let PipelineCmd::Run { app, .. } = cmd else {
        bail!("not a run command");
    };
    let body = serde_json::to_string(&to_args(cmd))?;
    let (status, text) = http_request(http, "POST", "/pipelines", &body)
        .with_context(|| format!("cannot reach weir serve's HTTP listener at {http}"))?;
    if status != 201 {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        bail!(
            "weir serve refused the pipeline: {}",
            v["error"].as_str().unwrap_or(text.trim())
        );
    }
    eprintln!(
        "weir serve (data in {}) runs `{app}` now; following it (ctrl-c stops following, `weir pipeline stop {app}` stops the pipeline)",
        dir.display()
    );
    follow(http, app)
}

/// Waits until a hosted pipeline stops; its failure is this command's.
fn follow(http: &str, app: &str) -> Result<()> {
    loop {
        let (status, text) = http_request(http, "GET", &format!("/pipelines/{app}"), "")?;
        if status != 200 {
            bail!("weir serve no longer knows `{app}`: {}", text.trim());
        }
        let v: serde_json::Value = serde_json::from_str(&text)?;
        match v["state"].as_str() {
            Some("running") => std::thread::sleep(FOLLOW_POLL),
            Some("stopped") => {
                eprintln!("`{app}` stopped");
                return Ok(());
            }
            _ => bail!(
                "`{app}` failed: {}",
                v["error"].as_str().unwrap_or("unknown error")
            ),
        }
    }
}

/// `weir pipeline stop APP`: asks the server to stop a hosted pipeline and waits for it.
pub fn stop(dir: &Path, app: &str) -> Result<()> {
    let Some(http) = server_http(dir)? else {
        bail!(
            "no `weir serve` runs on {}; a pipeline run from the CLI stops with ctrl-c",
            dir.display()
        );
    };
    let (status, text) = http_request(&http, "DELETE", &format!("/pipelines/{app}"), "")?;
    if status != 200 {
        bail!("{}", text.trim());
    }
    follow(&http, app)
}

#[derive(Debug, Clone)]
enum State {
    Running,
    Stopped,
    Failed(String),
}

#[derive(Debug)]
struct Hosted {
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<State>>,
    thread: Option<JoinHandle<()>>,
}

/// The pipelines a server runs.
#[derive(Debug)]
pub struct PipelineHost {
    dir: PathBuf,
    log: Log,
    groups: GroupCoordinator,
    txns: TransactionCoordinator,
    /// The server's queues, for pipelines that consume one.
    queues: weir_queue::Queues,
    pipelines: Mutex<HashMap<String, Hosted>>,
}

fn json(v: serde_json::Value) -> String {
    v.to_string()
}

impl PipelineHost {
    pub fn new(
        dir: &Path,
        log: Log,
        groups: GroupCoordinator,
        txns: TransactionCoordinator,
        queues: weir_queue::Queues,
    ) -> PipelineHost {
        PipelineHost {
            dir: dir.to_path_buf(),
            log,
            groups,
            txns,
            queues,
            pipelines: Mutex::new(HashMap::new()),
        }
    }

    fn start(&self, body: &[u8]) -> Result<(u16, String)> {
        let args: Vec<String> =
            serde_json::from_slice(body).context("expected a JSON array of arguments")?;
        let argv = ["weir", "pipeline", "run"]
            .into_iter()
            .map(String::from)
            .chain(args);
        let cli =
            Cli::try_parse_from(argv).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim()))?;
        let Command::Pipeline(cmd @ PipelineCmd::Run { .. }) = cli.command else {
            bail!("not a pipeline run");
        };
        let mut p = super::builtin::prepare(&self.dir, cmd)?;
        p.opts.queues = Some(self.queues.clone());
        let mut pipelines = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = pipelines.get(&p.app) {
            if matches!(
                *h.state.lock().unwrap_or_else(|e| e.into_inner()),
                State::Running
            ) {
                return Ok((
                    409,
                    json(
                        serde_json::json!({"error": format!("`{}` is already running here", p.app)}),
                    ),
                ));
            }
        }
        let running = p
            .topology
            .run(&self.log, &self.groups, &self.txns, p.opts)?;
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(State::Running));
        let (stop2, state2, app, until_idle) =
            (stop.clone(), state.clone(), p.app.clone(), p.until_idle);
        let thread = std::thread::Builder::new()
            .name(format!("weir-host-{app}"))
            .spawn(move || {
                // Quiet counts from when every task has started (restored its state).
                let mut started: Option<std::time::Instant> = None;
                loop {
                    if started.is_none() && running.metrics.all_started() {
                        started = Some(std::time::Instant::now());
                    }
                    let idle = match (until_idle, started) {
                        (Some(quiet), Some(since)) => running.quiet_since(since) >= quiet,
                        _ => false,
                    };
                    if stop2.load(Ordering::Acquire) || idle || running.is_finished() {
                        break;
                    }
                    std::thread::sleep(POLL);
                }
                let end = match running.stop() {
                    Ok(()) => State::Stopped,
                    Err(e) => State::Failed(e.to_string()),
                };
                tracing::info!(app = %app, state = ?end, "hosted pipeline ended");
                *state2.lock().unwrap_or_else(|e| e.into_inner()) = end;
            })?;
        pipelines.insert(
            p.app.clone(),
            Hosted {
                stop,
                state,
                thread: Some(thread),
            },
        );
        Ok((201, json(serde_json::json!({"app": p.app}))))
    }

    fn status(&self, app: &str) -> Option<(u16, String)> {
        let pipelines = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        let h = pipelines.get(app)?;
        let state = h.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let v = match state {
            State::Running => serde_json::json!({"app": app, "state": "running"}),
            State::Stopped => serde_json::json!({"app": app, "state": "stopped"}),
            State::Failed(e) => serde_json::json!({"app": app, "state": "failed", "error": e}),
        };
        Some((200, json(v)))
    }

    /// Stops every hosted pipeline and waits for them (server shutdown).
    pub fn stop_all(&self) {
        let mut pipelines = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        for h in pipelines.values() {
            h.stop.store(true, Ordering::Release);
        }
        for h in pipelines.values_mut() {
            if let Some(t) = h.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Control for PipelineHost {
    fn handle(&self, method: &str, path: &str, body: &[u8]) -> Option<(u16, String)> {
        let app = path.strip_prefix("/pipelines/");
        match (method, path, app) {
            ("POST", "/pipelines", _) => {
                Some(self.start(body).unwrap_or_else(|e| {
                    (400, json(serde_json::json!({"error": format!("{e:#}")})))
                }))
            }
            ("GET", _, Some(app)) => self.status(app),
            ("DELETE", _, Some(app)) => {
                let pipelines = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
                let h = pipelines.get(app)?;
                h.stop.store(true, Ordering::Release);
                Some((200, json(serde_json::json!({"app": app, "stopping": true}))))
            }
            _ => None,
        }
    }
}
