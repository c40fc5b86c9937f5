//! Recovery on open (reliability rows 3 and 4): torn tails are truncated at the last valid
//! batch, corruption in sealed segments is a typed `Corrupted` error (never wrong data), and
//! damaged or missing indexes are rebuilt.

use std::path::{Path, PathBuf};

use weir_log::{LogError, Offset, PartitionId, Record};

use crate::common::{assert_rows_eq, cfg, open, read_all, values, Rng, Row};

fn segment_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("topics/t/0"))
        .expect("partition dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn torn_tail_is_truncated_at_every_byte_of_the_last_batch() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let log = open(dir.path());
        log.create_topic("t", 1, Default::default())?;
        for i in 0..4 {
            log.append(
                "t",
                PartitionId(0),
                &[Record::keyed(format!("k{i}"), format!("v{i}"))],
            )?;
        }
    }
    let seg = segment_files(dir.path(), "log").remove(0);
    let good_len = std::fs::metadata(&seg)?.len();
    {
        let log = open(dir.path());
        log.append(
            "t",
            PartitionId(0),
            &[Record::keyed("k4", "the last batch, torn")],
        )?;
    }
    let full = std::fs::read(&seg)?;
    for cut in good_len..full.len() as u64 {
        for fill in [None, Some(0u8), Some(0xA5u8)] {
            let mut bytes = full[..cut as usize].to_vec();
            if let Some(b) = fill {
                bytes.resize(full.len(), b); // torn write: the tail is zeros or garbage
            }
            if bytes == full {
                continue; // the fill byte equals what was there: nothing is torn
            }
            // A torn write means the process died: it left no clean-shutdown marker.
            let _ = std::fs::remove_file(dir.path().join("topics/t/0/clean-shutdown"));
            std::fs::write(&seg, &bytes)?;
            let log = open(dir.path());
            assert_eq!(
                values(&log, "t", 0),
                vec!["v0", "v1", "v2", "v3"],
                "cut at {cut}, fill {fill:?}"
            );
            let ack = log.append("t", PartitionId(0), &[Record::value("next")])?;
            assert_eq!(
                ack.base_offset,
                Offset(4),
                "next append gets the next offset (cut {cut})"
            );
            drop(log);
            // Back to the torn state for the next round.
            std::fs::write(&seg, &full)?;
        }
    }
    Ok(())
}

fn fill_sealed(dir: &Path) -> anyhow::Result<Vec<Row>> {
    let log = open(dir);
    log.create_topic(
        "t",
        1,
        cfg(&["segment.bytes=4096", "index.interval.bytes=256"]),
    )?;
    for i in 0..120 {
        let recs: Vec<Record> = (0..3)
            .map(|j| Record::keyed(format!("k{i}-{j}"), format!("value-{i}-{j}")))
            .collect();
        log.append("t", PartitionId(0), &recs)?;
    }
    assert!(log.describe_topic("t")?.partitions[0].segments >= 3);
    read_all(&log, "t", 0)
}

#[test]
fn bit_flip_in_sealed_segment_is_corrupted_never_wrong_data() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let original = fill_sealed(dir.path())?;
    let sealed = segment_files(dir.path(), "log").remove(0);
    let pristine = std::fs::read(&sealed)?;
    let mut rng = Rng::from_env("bit_flip_in_sealed_segment");
    let mut corrupted_seen = 0;
    for _ in 0..60 {
        let mut bytes = pristine.clone();
        let at = rng.below(bytes.len() as u64) as usize;
        bytes[at] ^= 1 << rng.below(8);
        std::fs::write(&sealed, &bytes)?;
        let log = open(dir.path());
        match read_all(&log, "t", 0) {
            Ok(got) => assert_rows_eq(&got, &original, &format!("a flip at byte {at}")),
            Err(e) => {
                let e = e.downcast::<LogError>()?;
                match &e {
                    LogError::Corrupted { segment, .. } => assert_eq!(segment, &sealed),
                    other => panic!("flip at {at}: expected Corrupted, got {other}"),
                }
                corrupted_seen += 1;
            }
        }
    }
    assert!(
        corrupted_seen > 50,
        "nearly every flip is in checksummed or checked bytes"
    );
    std::fs::write(&sealed, &pristine)?;
    assert_rows_eq(&read_all(&open(dir.path()), "t", 0)?, &original, "restored");
    Ok(())
}

#[test]
fn missing_or_damaged_index_is_rebuilt() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let original = fill_sealed(dir.path())?;
    let indexes = segment_files(dir.path(), "index");
    let times = segment_files(dir.path(), "timeindex");
    std::fs::remove_file(&indexes[0])?;
    let mut t = std::fs::read(&times[1])?;
    t[10] ^= 0x40;
    std::fs::write(&times[1], &t)?;
    std::fs::write(&indexes[2], b"garbage")?;
    let log = open(dir.path());
    assert_rows_eq(&read_all(&log, "t", 0)?, &original, "reopened");
    assert!(indexes[0].exists(), "index file rewritten");
    // Lookups through rebuilt indexes land on the right record.
    let f = log.read("t", PartitionId(0), Offset(200), 1)?;
    assert_eq!(f.records().next().expect("record")?.offset, Offset(200));
    Ok(())
}

#[test]
fn recovery_is_idempotent_and_keeps_offsets_stable() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let original = fill_sealed(dir.path())?;
    for _ in 0..3 {
        let log = open(dir.path());
        assert_rows_eq(&read_all(&log, "t", 0)?, &original, "reopened");
    }
    Ok(())
}

#[test]
fn clean_shutdown_marker_skips_the_scan_once_and_is_never_trusted_after_a_crash(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let marker = dir.path().join("topics/t/0/clean-shutdown");
    {
        let log = open(dir.path());
        log.create_topic("t", 1, Default::default())?;
        log.append(
            "t",
            PartitionId(0),
            &[Record::value("a"), Record::value("b")],
        )?;
    }
    assert!(marker.exists(), "a clean close leaves the marker");
    {
        let log = open(dir.path());
        assert!(
            !marker.exists(),
            "opening consumes the marker before any write"
        );
        assert_eq!(values(&log, "t", 0), vec!["a", "b"]);
        log.append("t", PartitionId(0), &[Record::value("c")])?;
    }
    // Garbage after a clean close (the marker's size no longer matches): the slow path runs
    // and truncates it.
    let seg = segment_files(dir.path(), "log").remove(0);
    let mut bytes = std::fs::read(&seg)?;
    bytes.extend_from_slice(&[0xA5; 100]);
    std::fs::write(&seg, &bytes)?;
    let log = open(dir.path());
    assert_eq!(values(&log, "t", 0), vec!["a", "b", "c"]);
    assert_eq!(
        log.append("t", PartitionId(0), &[Record::value("d")])?
            .base_offset,
        Offset(3)
    );
    Ok(())
}
