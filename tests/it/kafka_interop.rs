//! Real Kafka clients against a `weir serve` process on a free loopback port: kcat (Debian's,
//! librdkafka 2.0.2), confluent-kafka (PyPI, librdkafka inside), kafka-python (PyPI, pure
//! Python) and kafkajs (npm, pure JavaScript), plus the confluent-kafka snippets of the seed
//! texts run as written. `scripts/setup.sh` installs them; a missing client fails the test with
//! the command that installs it. The client scripts are in `tests/interop/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{run, weir};

/// A `weir serve` child process; SIGTERM and a wait on drop.
pub(crate) struct Served {
    child: Child,
    pub(crate) addr: String,
    http: String,
    /// The Postgres listener's address.
    pub(crate) pg: String,
    /// The SQS listener's address.
    pub(crate) sqs: String,
}

impl Served {
    pub(crate) fn start(dir: &Path) -> anyhow::Result<Served> {
        Served::start_with(dir, &[])
    }

    /// [`Served::start`] with more arguments for `weir serve`.
    pub(crate) fn start_with(dir: &Path, extra: &[&str]) -> anyhow::Result<Served> {
        let child = weir(dir)
            .args([
                "serve",
                "--kafka-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--pg-listen",
                "127.0.0.1:0",
                "--sqs-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let info = dir.join("serve.json");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(raw) = std::fs::read(&info) {
                let v: serde_json::Value = serde_json::from_slice(&raw)?;
                // A `serve.json` left by a killed server names another pid: wait for ours.
                let ours = v["pid"].as_u64() == Some(u64::from(child.id()));
                if let (true, Some(addr), Some(http), Some(pg), Some(sqs)) = (
                    ours,
                    v["kafka"].as_str(),
                    v["http"].as_str(),
                    v["pg"].as_str(),
                    v["sqs"].as_str(),
                ) {
                    return Ok(Served {
                        child,
                        addr: addr.to_string(),
                        http: http.to_string(),
                        pg: pg.to_string(),
                        sqs: sqs.to_string(),
                    });
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("weir serve did not write {} in 30 s", info.display())
    }

    /// `GET path` on the HTTP listener: (status line, body).
    pub(crate) fn http_get(&self, path: &str) -> anyhow::Result<(String, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.http)?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: weir\r\n\r\n")?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
        let status = head.lines().next().unwrap_or_default().to_string();
        Ok((status, body.to_string()))
    }

    /// SIGKILL, as a crash: nothing is flushed or closed.
    pub(crate) fn kill_9(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Graceful stop: SIGTERM, then wait; the exit status must be success.
    pub(crate) fn stop(mut self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        let exit = self.child.wait()?;
        anyhow::ensure!(exit.success(), "weir serve exited with {exit}");
        Ok(())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn tool(name: &str) -> anyhow::Result<PathBuf> {
    let found = std::env::var_os("PATH").map(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    });
    found
        .flatten()
        .ok_or_else(|| anyhow::anyhow!("`{name}` is not installed; run `bash scripts/setup.sh`"))
}

/// Where `scripts/setup.sh` puts the clients: `$WEIR_CACHE`, else `~/.cache/weir`.
fn weir_cache() -> anyhow::Result<PathBuf> {
    std::env::var_os("WEIR_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/weir")))
        .ok_or_else(|| anyhow::anyhow!("neither WEIR_CACHE nor HOME is set"))
}

pub(crate) fn venv_python() -> anyhow::Result<PathBuf> {
    let python = weir_cache()?.join("venv/bin/python");
    anyhow::ensure!(
        python.is_file(),
        "{} is missing; run `bash scripts/setup.sh`",
        python.display()
    );
    Ok(python)
}

/// The `node_modules` directory holding kafkajs, for `NODE_PATH`.
fn kafkajs_modules() -> anyhow::Result<PathBuf> {
    let modules = weir_cache()?.join("node/node_modules");
    let package = modules.join("kafkajs/package.json");
    anyhow::ensure!(
        package.is_file(),
        "{} is missing; run `bash scripts/setup.sh`",
        package.display()
    );
    Ok(modules)
}

/// A client script that has not finished by then is killed and the test fails.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `CLIENT tests/interop/SCRIPT BOOTSTRAP` against a fresh `weir serve`: the script must
/// exit 0 having printed the line `ok`, and the server must then stop cleanly. On failure the
/// error carries the script's stdout and stderr.
fn run_interop_script(client: Command, script: &str, ok: &str) -> anyhow::Result<()> {
    run_client_script(client, script, ok, |s| s.addr.clone())
}

/// [`run_interop_script`] with the script's argument chosen from the server (its Kafka or
/// its Postgres address).
pub(crate) fn run_client_script(
    client: Command,
    script: &str,
    ok: &str,
    endpoint: impl Fn(&Served) -> String,
) -> anyhow::Result<()> {
    run_client_script_with(client, &[], script, ok, endpoint)
}

/// [`run_client_script`] against a server started with more arguments.
pub(crate) fn run_client_script_with(
    mut client: Command,
    serve_args: &[&str],
    script: &str,
    ok: &str,
    endpoint: impl Fn(&Served) -> String,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let logs = tempfile::tempdir()?;
    let server = Served::start_with(dir.path(), serve_args)?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(script);
    let (stdout, stderr) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let mut child = client
        .arg(&script)
        .arg(endpoint(&server))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout)?)
        .stderr(std::fs::File::create(&stderr)?)
        .spawn()?;
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stopped = server.stop();
    let out = String::from_utf8_lossy(&std::fs::read(stdout)?).into_owned();
    let err = String::from_utf8_lossy(&std::fs::read(stderr)?).into_owned();
    let Some(status) = status else {
        anyhow::bail!(
            "{} did not finish in {SCRIPT_TIMEOUT:?}:\n{out}\n{err}",
            script.display()
        );
    };
    anyhow::ensure!(
        status.success() && out.lines().any(|l| l == ok),
        "{} failed ({status}):\n{out}\n{err}",
        script.display()
    );
    stopped
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.stderr(Stdio::piped()).output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn kcat_produces_keyed_lines_and_consumes_them_where_kafka_would_put_them() -> anyhow::Result<()> {
    let kcat = tool("kcat")?;
    let dir = tempfile::tempdir()?;
    let created = run(
        dir.path(),
        &["topic", "create", "keyed", "--partitions", "6"],
        "",
    );
    anyhow::ensure!(created.status.success(), "topic create failed");
    let server = Served::start(dir.path())?;
    let lines: String = (0..60).map(|i| format!("user-{i}:event-{i}\n")).collect();
    let mut produce = Command::new(&kcat)
        .args([
            "-P",
            "-b",
            &server.addr,
            "-t",
            "keyed",
            "-K:",
            "-X",
            "partitioner=murmur2_random",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(
        produce
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("stdin"))?,
        lines.as_bytes(),
    )?;
    drop(produce.stdin.take());
    anyhow::ensure!(produce.wait()?.success(), "kcat -P failed");
    // A topic that does not exist yet is created by producing to it.
    let mut fresh = Command::new(&kcat)
        .args(["-P", "-b", &server.addr, "-t", "made-by-kcat"])
        .stdin(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(
        fresh
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("stdin"))?,
        b"hello\n",
    )?;
    drop(fresh.stdin.take());
    anyhow::ensure!(fresh.wait()?.success(), "kcat -P to a new topic failed");
    let consumed = output(Command::new(&kcat).args([
        "-C",
        "-b",
        &server.addr,
        "-t",
        "keyed",
        "-e",
        "-o",
        "beginning",
        "-f",
        "%k %s %p %o\n",
    ]))?;
    let listing = output(Command::new(&kcat).args(["-L", "-b", &server.addr]))?;
    let (status, health) = server.http_get("/health")?;
    assert_eq!(
        (status.as_str(), health.as_str()),
        ("HTTP/1.1 200 OK", "ok\n")
    );
    let (_, metrics) = server.http_get("/metrics")?;
    server.stop()?;

    for needle in [
        "weir_kafka_requests_total{api=\"Produce\"}",
        "weir_log_end_offset{topic=\"keyed\",partition=\"0\"}",
        "weir_kafka_records_in_total{topic=\"made-by-kcat\",partition=\"0\"} 1",
        "weir_kafka_request_latency_seconds{api=\"Metadata\",quantile=\"0.99\"}",
        "weir_log_fsync_seconds_count",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing from /metrics:\n{metrics}"
        );
    }

    assert!(
        listing.contains("topic \"keyed\" with 6 partitions"),
        "{listing}"
    );
    assert!(listing.contains("topic \"made-by-kcat\""), "{listing}");
    let log = weir_log::Log::open(dir.path())?;
    let mut seen = 0;
    for line in consumed.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        anyhow::ensure!(parts.len() == 4, "unexpected kcat line {line:?}");
        let (key, value, partition) = (parts[0], parts[1], parts[2].parse::<u32>()?);
        assert_eq!(value, key.replace("user", "event"));
        // Where Kafka's Java partitioner (murmur2) puts the key, as `weir produce` does.
        assert_eq!(
            log.partition_for("keyed", key.as_bytes())?.0,
            partition,
            "{key}"
        );
        seen += 1;
    }
    assert_eq!(seen, 60);
    let fresh = log.read(
        "made-by-kcat",
        weir_log::PartitionId(0),
        weir_log::Offset(0),
        1 << 16,
    )?;
    let first = fresh
        .records()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no record"))??;
    assert_eq!(first.value, Some(&b"hello"[..]));
    Ok(())
}

#[test]
fn confluent_kafka_producer_group_and_transactions_work_unmodified() -> anyhow::Result<()> {
    let mut python = Command::new(venv_python()?);
    python.env("PYTHONUNBUFFERED", "1");
    run_interop_script(python, "confluent_clients.py", "confluent-kafka: ok")
}

#[test]
fn kafka_python_admin_producer_offsets_for_times_and_group_work() -> anyhow::Result<()> {
    let mut python = Command::new(venv_python()?);
    python.env("PYTHONUNBUFFERED", "1");
    run_interop_script(python, "kafka_python_clients.py", "kafka-python: ok")
}

#[test]
fn kafkajs_producer_and_consumer_group_work_unmodified() -> anyhow::Result<()> {
    let mut node = Command::new(tool("node")?);
    node.env("NODE_PATH", kafkajs_modules()?);
    run_interop_script(node, "kafkajs_clients.js", "kafkajs: ok")
}

#[test]
fn seed_texts_confluent_kafka_snippets_run_as_written() -> anyhow::Result<()> {
    let mut python = Command::new(venv_python()?);
    python.env("PYTHONUNBUFFERED", "1");
    run_interop_script(python, "seed_snippets.py", "seed snippets: ok")
}

#[test]
fn weir_group_describe_in_another_terminal_shows_a_live_kafka_member() -> anyhow::Result<()> {
    use std::io::BufRead;
    let python = venv_python()?;
    let dir = tempfile::tempdir()?;
    let created = run(
        dir.path(),
        &["topic", "create", "held", "--partitions", "2"],
        "",
    );
    anyhow::ensure!(created.status.success(), "topic create failed");
    let server = Served::start(dir.path())?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/hold_group.py");
    let mut holder = Command::new(python)
        .arg(&script)
        .args([server.addr.as_str(), "held", "live", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let out = holder
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("stdout"))?;
    let mut line = String::new();
    std::io::BufReader::new(out).read_line(&mut line)?;
    anyhow::ensure!(line.trim() == "assigned 2", "holder said {line:?}");
    // Another process, read-only beside the server: the persisted membership.
    let described = run(dir.path(), &["group", "describe", "live"], "");
    let text = String::from_utf8_lossy(&described.stdout).into_owned();
    let _ = holder.kill();
    let _ = holder.wait();
    server.stop()?;
    anyhow::ensure!(
        described.status.success(),
        "describe failed: {}",
        String::from_utf8_lossy(&described.stderr)
    );
    assert!(
        text.contains("state Stable") && text.contains("members 1"),
        "{text}"
    );
    assert!(
        text.contains("holder") && text.contains("/127.0.0.1"),
        "{text}"
    );
    // Both partitions are owned by the member (read from its Kafka-format assignment).
    let owned = text
        .lines()
        .filter(|l| l.split_whitespace().next() == Some("held") && l.contains("holder-"))
        .count();
    assert_eq!(owned, 2, "{text}");
    Ok(())
}

#[test]
fn the_cli_writes_through_a_running_server_and_reads_beside_it() -> anyhow::Result<()> {
    let kcat = tool("kcat")?;
    let dir = tempfile::tempdir()?;
    let server = Served::start(dir.path())?;
    let d = dir.path();
    let ok = |args: &[&str], stdin: &str| weir_ok(d, args, stdin);
    ok(
        &[
            "topic",
            "create",
            "cli",
            "--partitions",
            "3",
            "--config",
            "retention.ms=60000",
        ],
        "",
    )?;
    let again = run(d, &["topic", "create", "cli"], "");
    let err = String::from_utf8_lossy(&again.stderr).into_owned();
    assert!(
        !again.status.success() && err.contains("TOPIC_ALREADY_EXISTS"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let acks = ok(
        &["produce", "cli", "--key-separator", ":", "--print-acks"],
        "a:1\nb:2\nc:3\na:4\n",
    )?;
    assert!(
        acks.lines().all(|l| l.starts_with("ack p=")) && !acks.is_empty(),
        "{acks}"
    );
    // Written through the wire, read back by kcat and by `weir consume` beside the server.
    let by_kcat = output(Command::new(&kcat).args([
        "-C",
        "-b",
        &server.addr,
        "-t",
        "cli",
        "-e",
        "-f",
        "%k=%s\n",
    ]))?;
    let mut kv: Vec<&str> = by_kcat.lines().collect();
    kv.sort();
    assert_eq!(kv, ["a=1", "a=4", "b=2", "c=3"]);
    let by_weir = ok(&["consume", "cli", "-f", "%k=%s\n"], "")?;
    let mut kv2: Vec<&str> = by_weir.lines().collect();
    kv2.sort();
    assert_eq!(kv2, kv);
    // Keys land where Kafka's partitioner puts them, whichever side wrote.
    let mut kcat_p = Command::new(&kcat)
        .args([
            "-P",
            "-b",
            &server.addr,
            "-t",
            "cli",
            "-K:",
            "-X",
            "partitioner=murmur2_random",
        ])
        .stdin(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(
        kcat_p
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("stdin"))?,
        b"a:5\n",
    )?;
    drop(kcat_p.stdin.take());
    anyhow::ensure!(kcat_p.wait()?.success(), "kcat -P failed");
    let a_partitions: std::collections::BTreeSet<String> =
        ok(&["consume", "cli", "-f", "%k %p\n"], "")?
            .lines()
            .filter(|l| l.starts_with("a "))
            .map(String::from)
            .collect();
    assert_eq!(a_partitions.len(), 1, "{a_partitions:?}");
    ok(
        &[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "cli",
            "--to",
            "latest",
        ],
        "",
    )?;
    let described = ok(&["group", "describe", "g"], "")?;
    assert!(described.contains("cli"), "{described}");
    ok(&["group", "delete", "g"], "")?;
    ok(&["topic", "delete", "cli"], "")?;
    let gone = run(d, &["topic", "describe", "cli"], "");
    server.stop()?;
    assert!(!gone.status.success());
    Ok(())
}

#[test]
fn pipeline_run_beside_a_server_is_handed_over_and_followed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let server = Served::start(d)?;
    let ok = |args: &[&str], stdin: &str| weir_ok(d, args, stdin);
    ok(&["topic", "create", "words", "--partitions", "2"], "")?;
    ok(&["topic", "create", "counts", "--partitions", "2"], "")?;
    ok(&["topic", "create", "counts2", "--partitions", "2"], "")?;
    ok(
        &["produce", "words", "--key-separator", ":"],
        "a:1\nb:1\na:1\na:1\n",
    )?;
    // Runs inside the server; the CLI follows it until it is idle and stops.
    ok(
        &[
            "pipeline",
            "run",
            "keyed-count",
            "--app",
            "wc",
            "--input",
            "words",
            "--output",
            "counts",
            "--until-idle-ms",
            "500",
        ],
        "",
    )?;
    let counts = ok(&["consume", "counts", "-f", "%k=%s\n"], "")?;
    let last: std::collections::BTreeMap<&str, &str> =
        counts.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(last.get("a"), Some(&"3"), "{counts}");
    assert_eq!(last.get("b"), Some(&"1"), "{counts}");
    // One without an idle stop runs until `weir pipeline stop`; its follower then ends too.
    let mut follower = weir(d)
        .args([
            "pipeline",
            "run",
            "keyed-count",
            "--app",
            "wc2",
            "--input",
            "words",
            "--output",
            "counts2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = run(d, &["pipeline", "stop", "wc2"], "");
        if o.status.success() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "pipeline stop never succeeded: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = follower.wait()?;
    server.stop()?;
    assert!(
        status.success(),
        "the follower ends when the pipeline stops"
    );
    Ok(())
}

/// `weir ARGS` in `dir`, which must succeed; its stdout.
fn weir_ok(dir: &Path, args: &[&str], stdin: &str) -> anyhow::Result<String> {
    let o = run(dir, args, stdin);
    anyhow::ensure!(
        o.status.success(),
        "weir {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}
