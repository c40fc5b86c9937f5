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
