//! Shared helpers of the engine tests.

use std::collections::BTreeMap;
use std::path::Path;

use weir_log::{Isolation, Log, LogOptions, Offset, PartitionId};

/// A log under `dir/log` without the background cleaner.
pub fn open_log(dir: &Path) -> Log {
    Log::open_with(dir.join("log"), LogOptions::without_cleaner()).expect("open log")
}

/// Every committed (key, value) of a topic, per key in offset order, decoded by `decode`.
pub fn committed_by_key<T>(
    log: &Log,
    topic: &str,
    decode: impl Fn(&[u8], &[u8]) -> (String, T),
) -> BTreeMap<String, Vec<T>> {
    let mut by_key: BTreeMap<String, Vec<T>> = BTreeMap::new();
    for p in 0..log.partition_count(topic).expect("topic") {
        log.for_each_record(
            topic,
            PartitionId(p),
            Offset(0),
            Isolation::ReadCommitted,
            |r| {
                let (k, v) = decode(r.key.unwrap_or_default(), r.value.unwrap_or_default());
                by_key.entry(k).or_default().push(v);
                Ok::<(), weir_log::LogError>(())
            },
        )
        .expect("read");
    }
    by_key
}
