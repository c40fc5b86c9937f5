//! Shared helpers of the engine tests.

use std::collections::BTreeMap;
use std::path::Path;

use weir_log::{Isolation, Log, LogOptions, Offset, PartitionId};

/// A log under `dir/log` without the background cleaner.
pub fn open_log(dir: &Path) -> Log {
    Log::open_with(
        dir.join("log"),
        LogOptions {
            cleaner_interval: None,
            ..LogOptions::default()
        },
    )
    .expect("open log")
}

/// Every committed (key, value) of a topic, per key in offset order, decoded by `decode`.
pub fn committed_by_key<T>(
    log: &Log,
    topic: &str,
    decode: impl Fn(&[u8], &[u8]) -> (String, T),
) -> BTreeMap<String, Vec<T>> {
    let mut by_key: BTreeMap<String, Vec<T>> = BTreeMap::new();
    for p in 0..log.partition_count(topic).expect("topic") {
        let mut at = Offset(0);
        loop {
            let f = log
                .read_isolated(topic, PartitionId(p), at, 1 << 20, Isolation::ReadCommitted)
                .expect("read");
            if f.is_empty() {
                break;
            }
            for r in f.records() {
                let r = r.expect("record");
                let (k, v) = decode(r.key.unwrap_or_default(), r.value.unwrap_or_default());
                by_key.entry(k).or_default().push(v);
            }
            at = f.next_offset();
        }
    }
    by_key
}
