//! State stores: writes reach RocksDB only after their commit, a restart restores only the
//! changelog tail beyond the stored offset, a lost state directory is rebuilt from the whole
//! changelog, and aborted changelog records are never restored.

use weir_engine::{ensure_changelog, KvStore};
use weir_log::{BatchBuilder, Log, LogOptions, Offset, PartitionId, ProducerFields, Timestamp};

const CL: &str = "app-counts-changelog";
const P: PartitionId = PartitionId(0);

fn open_log(dir: &std::path::Path) -> Log {
    Log::open_with(dir.join("log"), LogOptions::without_cleaner()).expect("log")
}

/// Commits a store's interval the way a task does: changelog records first, then RocksDB.
fn commit(log: &Log, store: &mut KvStore) -> anyhow::Result<()> {
    let records = store.stage().to_vec();
    let last = if records.is_empty() {
        None
    } else {
        Some(log.append(CL, P, &records)?.last_offset)
    };
    store.committed(last)?;
    Ok(())
}

fn get(store: &KvStore, key: &str) -> Option<String> {
    store
        .get(key.as_bytes())
        .expect("get")
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

#[test]
fn writes_reach_rocksdb_only_after_the_commit() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = open_log(dir.path());
    ensure_changelog(&log, CL, 1)?;
    let state = dir.path().join("state");
    {
        let mut s = KvStore::open("counts", &state, CL, P)?;
        s.put("a", "1");
        assert_eq!(
            get(&s, "a").as_deref(),
            Some("1"),
            "a task reads its own writes at once"
        );
        commit(&log, &mut s)?;
        s.put("b", "2"); // never committed: the process dies here
        s.delete("a");
    }
    let s = KvStore::open("counts", &state, CL, P)?;
    assert_eq!(get(&s, "a").as_deref(), Some("1"));
    assert_eq!(get(&s, "b"), None, "uncommitted writes never reach RocksDB");
    assert_eq!(s.covered_offset(), Offset(1));
    Ok(())
}

#[test]
fn restart_restores_only_the_changelog_tail() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = open_log(dir.path());
    ensure_changelog(&log, CL, 1)?;
    let state = dir.path().join("state");
    {
        let mut s = KvStore::open("counts", &state, CL, P)?;
        for i in 0..100 {
            s.put(format!("k{i}"), format!("{i}"));
        }
        commit(&log, &mut s)?;
        // The next commit reached the changelog, then the process died before RocksDB.
        s.put("k0", "updated");
        s.put("late", "x");
        log.append(CL, P, s.stage())?;
    }
    let mut s = KvStore::open("counts", &state, CL, P)?;
    assert_eq!(get(&s, "late"), None);
    let stats = s.restore(&log)?;
    assert_eq!(
        stats.records, 2,
        "only the tail beyond the stored offset is replayed"
    );
    assert_eq!((stats.from, stats.to), (Offset(100), Offset(102)));
    assert_eq!(get(&s, "k0").as_deref(), Some("updated"));
    assert_eq!(get(&s, "late").as_deref(), Some("x"));
    // Losing the state directory rebuilds everything from the changelog.
    drop(s);
    std::fs::remove_dir_all(&state)?;
    let mut s = KvStore::open("counts", &state, CL, P)?;
    let stats = s.restore(&log)?;
    assert_eq!(stats.records, 102);
    assert_eq!(get(&s, "k99").as_deref(), Some("99"));
    assert_eq!(get(&s, "k0").as_deref(), Some("updated"));
    Ok(())
}

#[test]
fn aborted_changelog_records_are_never_restored() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = open_log(dir.path());
    ensure_changelog(&log, CL, 1)?;
    let mut b = BatchBuilder::with_capacity(128)
        .producer(ProducerFields {
            producer_id: 9,
            producer_epoch: 0,
            base_sequence: 0,
        })
        .transactional(true);
    // Changelog keys are the RocksDB keys: 1 then the store key.
    b.push_parts(Some(b"\x01k"), Some(b"aborted"), &[], Timestamp(1));
    log.submit_batch(CL, P, b.finish())?.wait()?;
    log.write_marker(CL, P, 9, 0, false, 0)?;
    let mut s = KvStore::open("counts", &dir.path().join("state"), CL, P)?;
    s.restore(&log)?;
    assert_eq!(get(&s, "k"), None);
    assert!(
        ensure_changelog(&log, CL, 3).is_err(),
        "a changelog with the wrong partition count is refused"
    );
    Ok(())
}

#[test]
fn a_changelog_written_by_another_kind_of_store_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = open_log(dir.path());
    ensure_changelog(&log, CL, 1)?;
    let spec = |d: &str| weir_engine::StoreSpec::key_value("counts", d);
    let state = dir.path().join("state");
    let mut s = KvStore::open_spec(&spec("aggregate json"), &state, CL, P, None)?;
    s.check_changelog(&log)?;
    s.put("a", "1");
    commit(&log, &mut s)?;
    drop(s);
    // The same store again: its descriptor is the changelog's first record.
    let mut s = KvStore::open_spec(&spec("aggregate json"), &state, CL, P, None)?;
    s.check_changelog(&log)?;
    assert_eq!(s.restore(&log)?.records, 0);
    drop(s);
    // Another operator under the same name: refused, never restored into.
    let mut other =
        KvStore::open_spec(&spec("table json"), &dir.path().join("other"), CL, P, None)?;
    match other.check_changelog(&log) {
        Err(weir_engine::EngineError::StateMismatch {
            expected, found, ..
        }) => assert_eq!(
            (expected.as_str(), found.as_str()),
            ("kv table json", "kv aggregate json")
        ),
        other => panic!("expected StateMismatch, got {other:?}"),
    }
    drop(other);
    // A local directory written under another descriptor is rebuilt from the changelog.
    let mut s = KvStore::open_spec(
        &spec("aggregate json"),
        &dir.path().join("other"),
        CL,
        P,
        None,
    )?;
    s.check_changelog(&log)?;
    s.restore(&log)?;
    assert_eq!(get(&s, "a").as_deref(), Some("1"));
    Ok(())
}
