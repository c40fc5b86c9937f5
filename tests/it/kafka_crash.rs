//! `kill -9` of a real `weir serve` under load from a real client (confluent-kafka, acks=all):
//! every record the client saw acknowledged is in the log after the crash, at the offset the
//! acknowledgement named (reliability matrix row 1, C1 and C2, over the wire).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use weir_log::{Log, PartitionId};

use crate::kafka_interop::{venv_python, Served};
use crate::util::{run, Rng};

/// Kill cycles in CI; `WEIR_KAFKA_CRASH_CYCLES` runs more.
const CYCLES_DEFAULT: u32 = 3;

fn cycles() -> u32 {
    std::env::var("WEIR_KAFKA_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CYCLES_DEFAULT)
}

/// (partition, offset) → value of every acknowledged record in `ack_log`.
fn acked(ack_log: &Path) -> anyhow::Result<HashMap<(u32, i64), String>> {
    let text = std::fs::read_to_string(ack_log).unwrap_or_default();
    let mut out = HashMap::new();
    // The last line may be cut by the kill; only whole lines count.
    for line in text.lines().filter(|l| l.split(' ').count() == 3) {
        let mut it = line.split(' ');
        let (p, o, v) = (it.next(), it.next(), it.next());
        if let (Some(p), Some(o), Some(v)) = (p, o, v) {
            out.insert((p.parse()?, o.parse()?), v.to_string());
        }
    }
    Ok(out)
}

/// (partition, offset) → value of every record of topic `crash`, read once per partition.
fn read_all(dir: &Path) -> anyhow::Result<HashMap<(u32, i64), String>> {
    let log = Log::open(dir)?;
    let mut out = HashMap::new();
    for p in 0..log.partition_count("crash")? {
        let mut at = log.earliest_offset("crash", PartitionId(p))?;
        loop {
            let fetch = log.read("crash", PartitionId(p), at, 1 << 20)?;
            if fetch.is_empty() {
                break;
            }
            for r in fetch.records() {
                let r = r?;
                let v = String::from_utf8_lossy(r.value.unwrap_or_default()).into_owned();
                out.insert((p, r.offset.0), v);
            }
            at = fetch.next_offset();
        }
    }
    Ok(out)
}

#[test]
fn kill_9_of_weir_serve_loses_no_acknowledged_write() -> anyhow::Result<()> {
    let python = venv_python()?;
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_u64);
    println!("seed {seed} (replay with SEED={seed})");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir()?;
    let created = run(
        dir.path(),
        &["topic", "create", "crash", "--partitions", "3"],
        "",
    );
    anyhow::ensure!(created.status.success(), "topic create failed");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/acked_writes.py");
    let mut all_acked = HashMap::new();
    for cycle in 0..cycles() {
        let server = Served::start(dir.path())?;
        let ack_log = dir.path().join(format!("acks-{cycle}.log"));
        let mut writer = Command::new(&python)
            .arg(&script)
            .arg(&server.addr)
            .arg("crash")
            .arg(&ack_log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        // Under load (tests run in parallel) the client may take a while to start: the kill
        // comes a random time after its first acknowledgement.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::fs::metadata(&ack_log).map_or(0, |m| m.len()) == 0 {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "cycle {cycle}: no acknowledgement in 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300 + rng.below(1200)));
        server.kill_9()?;
        let _ = writer.kill();
        let _ = writer.wait();
        let acked = acked(&ack_log)?;
        anyhow::ensure!(!acked.is_empty(), "cycle {cycle}: nothing was acknowledged");
        println!("cycle {cycle}: {} acknowledged", acked.len());
        all_acked.extend(acked);
        // Every acknowledged record of every cycle so far is where its ack said.
        let stored = read_all(dir.path())?;
        for ((p, o), v) in &all_acked {
            match stored.get(&(*p, *o)) {
                Some(got) => assert_eq!(got, v, "cycle {cycle}: {p}/{o}"),
                None => anyhow::bail!("cycle {cycle}: acknowledged {p}/{o} ({v}) is gone"),
            }
        }
    }
    Ok(())
}

/// Array lengths from the wire reach `kafka-protocol`'s decoders, which reserve capacity for
/// them before reading an element. In the `weir` binary (mimalloc reserves address space
/// without committing memory) a huge count costs nothing: the decode fails at the first
/// missing element and only that connection closes.
#[test]
fn huge_array_counts_close_one_connection_and_the_server_stays_up() -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir()?;
    let server = Served::start(dir.path())?;
    let frame = |body: Vec<u8>| {
        let mut f = (body.len() as i32).to_be_bytes().to_vec();
        f.extend(body);
        f
    };
    let mut metadata = vec![0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff];
    metadata.extend(0x7fff_ffffi32.to_be_bytes());
    // JoinGroup v6 (flexible): protocols as a compact array of 2^32 - 2 elements.
    let mut join = vec![0, 11, 0, 6, 0, 0, 0, 1, 0xff, 0xff, 0, 2, b'g'];
    join.extend(10_000i32.to_be_bytes());
    join.extend(10_000i32.to_be_bytes());
    join.extend([1, 0, 2, b'c', 0xff, 0xff, 0xff, 0xff, 0x0f]);
    for body in [metadata, join] {
        let mut s = std::net::TcpStream::connect(&server.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(&frame(body))?;
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    let created = run(
        dir.path(),
        &["topic", "create", "after", "--partitions", "1"],
        "",
    );
    server.stop()?;
    anyhow::ensure!(
        created.status.success(),
        "the server stopped answering: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    Ok(())
}
