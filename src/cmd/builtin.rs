//! `weir pipeline run NAME`: the built-in pipelines (for demos, benchmarks and crash tests).
//! - `keyed-count`: records per key (RocksDB state), each new count to OUTPUT;
//! - `latest`: the latest value per key (a table in RocksDB), the value's length to OUTPUT;
//! - `window-count`: records per key and event-time window (`--window`), as JSON
//!   `{"window_start","window_end","count","max_ts"}` keyed by the input key and stamped
//!   `window_end - 1`; a session merged away under `--emit update` is retracted with the same
//!   value plus `"retracted": true`.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use weir_engine::{
    Emit, ErrorPolicy, Guarantee, Hopping, Json, LatePolicy, Pipeline, RunOptions, Session,
    StartFrom, Tumbling, Utf8, WindowSpec, Windowed,
};

use crate::cli::{PipelineCmd, WindowArgs};

/// Parses `10s`, `500ms`, `2m`, `1h` (or a bare number of milliseconds).
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .with_context(|| format!("`{s}` is not a duration (like 10s, 500ms, 2m)"))?;
    let unit_ms: u64 = match unit {
        "" | "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => bail!("`{s}`: unknown unit `{other}` (use ms, s, m or h)"),
    };
    let ms = n
        .checked_mul(unit_ms)
        .filter(|ms| *ms <= i64::MAX as u64)
        .with_context(|| format!("`{s}` is too long a duration"))?;
    Ok(Duration::from_millis(ms))
}

/// The windows of `--window` with `--grace`, `--emit` and `--late`.
fn window_spec(args: &WindowArgs) -> Result<WindowSpec> {
    let Some(w) = &args.window else {
        bail!("window-count needs --window tumbling:SIZE, hopping:SIZE:ADVANCE or session:GAP");
    };
    let parts: Vec<&str> = w.split(':').collect();
    let grace = parse_duration(&args.grace).context("--grace")?;
    let mut spec: WindowSpec = match parts.as_slice() {
        ["tumbling", size] => Tumbling::of(parse_duration(size)?).grace(grace).into(),
        ["hopping", size, advance] => Hopping::of(parse_duration(size)?, parse_duration(advance)?)
            .grace(grace)
            .into(),
        ["session", gap] => Session::with_gap(parse_duration(gap)?).grace(grace).into(),
        _ => bail!("--window `{w}`: expected tumbling:SIZE, hopping:SIZE:ADVANCE or session:GAP"),
    };
    spec.emit = match args.emit.as_str() {
        "update" => Emit::OnUpdate,
        "close" => Emit::OnWindowClose,
        other => bail!("--emit `{other}`: expected update or close"),
    };
    spec.late = match args.late.as_str() {
        "drop" => LatePolicy::Drop,
        "dead_letter" => LatePolicy::DeadLetter,
        other => bail!("--late `{other}`: expected drop or dead_letter"),
    };
    Ok(spec)
}

/// What `window-count` accumulates per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct CountMax {
    count: u64,
    max_ts: i64,
}

/// A window's result as `window-count` writes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WindowCountValue {
    window_start: i64,
    window_end: i64,
    count: u64,
    max_ts: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    retracted: bool,
}

/// What `window-count` reads of a value: a JSON object's `ts` field (other fields are skipped
/// unread).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Event {
    #[serde(default)]
    ts: Option<serde_json::Value>,
}

/// Event time of a `window-count` record: its integer `ts` field, else its timestamp.
fn event_time(v: &Event, record: weir_log::Timestamp) -> Result<i64, String> {
    match &v.ts {
        None => Ok(record.0),
        Some(t) => t
            .as_i64()
            .ok_or_else(|| format!("`ts` is {t}, not an integer")),
    }
}

/// Where a built-in pipeline reads: a topic, or a queue (`--queue`).
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub name: &'a str,
    pub queue: bool,
}

impl Source<'_> {
    /// The input as a typed stream: a topic's records (only those with keys when `keyed`),
    /// or a queue's messages.
    fn stream<V>(
        &self,
        p: &Pipeline,
        keyed: bool,
        value: impl weir_engine::Serde<V>,
    ) -> weir_engine::Stream<String, V>
    where
        V: Clone + Send + 'static,
    {
        match (self.queue, keyed) {
            (true, _) => p.queue(self.name, Utf8, value),
            (false, true) => p.keyed_stream(self.name, Utf8, value),
            (false, false) => p.stream(self.name, Utf8, value),
        }
    }
}

fn window_count(p: &Pipeline, input: Source<'_>, output: &str, args: &WindowArgs) -> Result<()> {
    let spec = window_spec(args)?;
    let ooo = parse_duration(&args.out_of_orderness).context("--out-of-orderness")?;
    input
        .stream::<Event>(p, true, Json)
        .try_with_event_time(event_time, ooo)?
        .group_by_key()
        .window(spec)
        .aggregate_with(
            || CountMax {
                count: 0,
                max_ts: i64::MIN,
            },
            |a, _, ts| {
                a.count += 1;
                a.max_ts = a.max_ts.max(ts.0);
            },
            |a, b| {
                a.count += b.count;
                a.max_ts = a.max_ts.max(b.max_ts);
            },
        )
        .to_stream()
        .map(|w: Windowed<String>, a: CountMax| {
            let value = WindowCountValue {
                window_start: w.start,
                window_end: w.end,
                count: a.count,
                max_ts: a.max_ts,
                retracted: w.retracted,
            };
            (w.key, value)
        })
        .to_topic(output, Utf8, Json);
    Ok(())
}

/// A built-in pipeline's topology.
pub fn builtin(
    name: &str,
    app: &str,
    input: Source<'_>,
    output: &str,
    window: &WindowArgs,
) -> Result<weir_engine::Topology> {
    let p = Pipeline::builder(app);
    match name {
        "keyed-count" => {
            input
                .stream::<String>(&p, false, Utf8)
                .group_by_key()
                .count()
                .to_topic(output, Utf8, Json);
        }
        "latest" => {
            input
                .stream::<String>(&p, false, Utf8)
                .group_by_key()
                .aggregate(String::new, |_, v| v)
                .to_stream()
                .map_values(|v: String| v.len() as u64)
                .to_topic(output, Utf8, Json);
        }
        "window-count" => window_count(&p, input, output, window)?,
        other => bail!(
            "unknown built-in pipeline `{other}`; available: keyed-count, latest, window-count"
        ),
    }
    Ok(p.build()?)
}

/// A built-in pipeline ready to run: its topology, options and stop rule.
pub struct Prepared {
    pub app: String,
    pub topology: weir_engine::Topology,
    pub opts: RunOptions,
    /// Stop after this long without input (`None`: run until stopped).
    pub until_idle: Option<Duration>,
    /// The input is a queue: the run needs the process's queues.
    pub queue: bool,
}

/// `weir pipeline run`: here, or handed to a running `weir serve`, which hosts it.
pub fn run(dir: &Path, cmd: PipelineCmd) -> Result<()> {
    if let Some(http) = super::hosted::server_http(dir)? {
        return super::hosted::hand_over(dir, &http, &cmd);
    }
    let mut p = prepare(dir, cmd)?;
    let log = super::open_log(dir, true)?;
    let (groups, txns) = weir_coord::start(&log)?;
    if p.queue {
        p.opts.queues = Some(weir_queue::Queues::open(&log, &txns)?);
    }
    let running = p.topology.run(&log, &groups, &txns, p.opts)?;
    match p.until_idle {
        Some(quiet) => running.stop_when_idle(quiet, Duration::from_secs(3600))?,
        // Runs until killed, or until a task fails for good.
        None => running.wait()?,
    }
    Ok(())
}

/// Validates a `pipeline run` command and builds its pipeline.
pub fn prepare(dir: &Path, cmd: PipelineCmd) -> Result<Prepared> {
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
        bail!("not a run command");
    };
    let on_error = match on_error.as_str() {
        "dead_letter" => ErrorPolicy::DeadLetter,
        "skip" => ErrorPolicy::Skip,
        "fail" => ErrorPolicy::Fail,
        other => bail!("--on-error `{other}`: expected dead_letter, skip or fail"),
    };
    let source = Source {
        name: &input,
        queue,
    };
    let topology = builtin(&name, &app, source, &output, &window)?;
    let mut opts = RunOptions::new(state_dir.unwrap_or_else(|| dir.join("state")));
    opts.commit_interval = Duration::from_millis(commit_ms.max(1));
    opts.on_error = on_error;
    opts.metrics_file = Some(super::pipeline::metrics_file(dir, &app));
    if let Some(w) = workers {
        opts.workers = w.max(1);
    }
    if at_least_once {
        opts.guarantee = Guarantee::AtLeastOnce;
    }
    opts.start_from = match from.as_str() {
        "earliest" => StartFrom::Earliest,
        "latest" => StartFrom::Latest,
        ms => StartFrom::Timestamp(ms.parse().with_context(|| {
            format!("--from `{ms}`: expected earliest, latest or a timestamp in ms")
        })?),
    };
    Ok(Prepared {
        app,
        topology,
        opts,
        until_idle: until_idle_ms.map(Duration::from_millis),
        queue,
    })
}
