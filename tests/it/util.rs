//! Helpers: run the `weir` binary against a data directory; seeded randomness.

use std::path::Path;
use std::process::{Command, Output, Stdio};

pub fn weir(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    c.arg("--data-dir").arg(dir).env_remove("WEIR_DATA_DIR");
    c
}

/// Runs `weir ARGS` with `stdin`, returning the output.
pub fn run(dir: &Path, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = weir(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weir");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait weir")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub use weir_log::sim::SeededRng as Rng;

/// Longest a crash test waits for a pipeline to make its next step of progress.
pub const PROGRESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Lets `child` run until `produced()` reaches `target`, calling `on_progress` with each
/// count it sees (a test may pause the child there), then kills it with SIGKILL. Looks every
/// `pause_ms` plus up to `jitter_ms` (from `rng`), so kills land at varied points; fails if
/// the child exits on its own or stalls for [`PROGRESS_TIMEOUT`].
pub fn kill_9_at(
    child: &mut std::process::Child,
    target: usize,
    mut produced: impl FnMut() -> anyhow::Result<usize>,
    mut on_progress: impl FnMut(usize) -> anyhow::Result<()>,
    (pause_ms, jitter_ms): (u64, u64),
    rng: &mut Rng,
) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    loop {
        let n = produced()?;
        on_progress(n)?;
        if n >= target {
            break;
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the pipeline exited early with {status}");
        }
        anyhow::ensure!(t0.elapsed() < PROGRESS_TIMEOUT, "no progress to {target}");
        std::thread::sleep(std::time::Duration::from_millis(
            pause_ms + rng.below(jitter_ms),
        ));
    }
    child.kill()?; // SIGKILL
    child.wait()?;
    Ok(())
}
