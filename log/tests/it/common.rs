//! Shared helpers: temp logs, seeded randomness (print the seed; replay with `SEED=`), readers.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use weir_log::{Log, LogOptions, Offset, PartitionId, Storage};

pub use weir_log::sim::SeededRng as Rng;

pub fn cfg(pairs: &[&str]) -> BTreeMap<String, String> {
    weir_log::TopicConfig::parse_pairs(pairs).expect("test config")
}

pub fn opts_with(storage: Arc<dyn Storage>) -> LogOptions {
    LogOptions {
        storage,
        cleaner_interval: None,
        append_max_block: Duration::from_secs(10),
        ..LogOptions::default()
    }
}

pub fn open(dir: &Path) -> Log {
    Log::open_with(dir, LogOptions::without_cleaner()).expect("open log")
}

/// (offset, key, value) of one record.
pub type Row = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// Every record of a partition from the log start to the high watermark.
pub fn read_all(log: &Log, topic: &str, p: u32) -> anyhow::Result<Vec<Row>> {
    let mut out = Vec::new();
    let mut at = log.earliest_offset(topic, PartitionId(p))?;
    loop {
        let f = log.read(topic, PartitionId(p), at, 64 * 1024)?;
        if f.is_empty() {
            return Ok(out);
        }
        for r in f.records() {
            let r = r?;
            out.push((
                r.offset.0,
                r.key.map(<[u8]>::to_vec),
                r.value.map(<[u8]>::to_vec),
            ));
        }
        let next = f.next_offset();
        anyhow::ensure!(next > at, "read made no progress at {at}");
        at = next;
    }
}

pub fn values(log: &Log, topic: &str, p: u32) -> Vec<String> {
    read_all(log, topic, p)
        .expect("read")
        .into_iter()
        .map(|(_, _, v)| String::from_utf8(v.unwrap_or_default()).expect("utf8"))
        .collect()
}

#[allow(dead_code)]
pub fn offset(n: i64) -> Offset {
    Offset(n)
}

/// Compares two record lists, reporting sizes and the first difference instead of dumping both.
pub fn assert_rows_eq(got: &[Row], want: &[Row], what: &str) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: {} rows vs {} expected; first difference at index {first}: got offset {:?}, expected offset {:?}",
        got.len(),
        want.len(),
        got.get(first).map(|r| r.0),
        want.get(first).map(|r| r.0)
    );
}
