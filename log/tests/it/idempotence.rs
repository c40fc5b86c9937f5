//! Idempotent producers: a retried batch is answered with its original offsets and never
//! appended twice — in one run, after a clean restart, and after a power loss that left no
//! snapshot — a sequence gap is refused, and an older epoch is fenced.

use std::sync::Arc;

use weir_log::sim::SimStorage;
use weir_log::{
    BatchBuilder, EncodedBatch, Log, LogError, PartitionId, Producer, ProducerFields, Record,
    Timestamp,
};

use crate::common::{cfg, opts_with, values};

fn batch(pid: i64, epoch: i16, seq: i32, values: &[&str]) -> EncodedBatch {
    let mut b = BatchBuilder::with_capacity(256).producer(ProducerFields {
        producer_id: pid,
        producer_epoch: epoch,
        base_sequence: seq,
    });
    for v in values {
        b.push_parts(None, Some(v.as_bytes()), &[], Timestamp(1_700_000_000_000));
    }
    b.finish()
}

#[test]
fn a_retried_batch_is_not_duplicated() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open(dir.path());
    log.create_topic("t", 1, Default::default())?;
    let (pid, epoch) = log.init_producer_id()?;
    let p = PartitionId(0);
    let first = log
        .submit_batch("t", p, batch(pid, epoch, 0, &["a", "b"]))?
        .wait()?;
    // The ack was "lost": the producer sends the same batch again.
    let retry = log
        .submit_batch("t", p, batch(pid, epoch, 0, &["a", "b"]))?
        .wait()?;
    assert_eq!(
        (retry.base_offset, retry.last_offset),
        (first.base_offset, first.last_offset)
    );
    log.submit_batch("t", p, batch(pid, epoch, 2, &["c"]))?
        .wait()?;
    // Retries of any of the last five batches are recognised, even queued back to back.
    let t1 = log.submit_batch("t", p, batch(pid, epoch, 2, &["c"]))?;
    let t2 = log.submit_batch("t", p, batch(pid, epoch, 0, &["a", "b"]))?;
    t1.wait()?;
    t2.wait()?;
    assert_eq!(values(&log, "t", 0), vec!["a", "b", "c"]);
    Ok(())
}

#[test]
fn gaps_are_refused_and_old_epochs_fenced() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open(dir.path());
    log.create_topic("t", 1, Default::default())?;
    let p = PartitionId(0);
    log.submit_batch("t", p, batch(42, 0, 0, &["a"]))?.wait()?;
    let e = log
        .submit_batch("t", p, batch(42, 0, 5, &["x"]))?
        .wait()
        .expect_err("gap");
    assert!(
        matches!(
            e,
            LogError::OutOfOrderSequence {
                expected: 1,
                got: 5,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("expected sequence 1, got 5"), "{e}");
    log.submit_batch("t", p, batch(42, 1, 0, &["new epoch"]))?
        .wait()?;
    let e = log
        .submit_batch("t", p, batch(42, 0, 1, &["zombie"]))?
        .wait()
        .expect_err("fenced");
    assert!(
        matches!(
            e,
            LogError::ProducerFenced {
                epoch: 0,
                current_epoch: 1,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(values(&log, "t", 0), vec!["a", "new epoch"]);
    Ok(())
}

#[test]
fn dedup_survives_clean_restart_and_power_loss() -> anyhow::Result<()> {
    let mut sim = SimStorage::new();
    let open =
        |sim: &SimStorage| Log::open_with("/i", opts_with(Arc::new(sim.clone()))).expect("open");
    let p = PartitionId(0);
    let pid;
    {
        let log = open(&sim);
        log.create_topic("t", 1, cfg(&["segment.bytes=1024"]))?;
        pid = log.init_producer_id()?.0;
        for seq in 0..30 {
            let v = format!("{seq:060}");
            log.submit_batch("t", p, batch(pid, 0, seq, &[v.as_str()]))?
                .wait()?;
        }
    }
    // Clean restart: the snapshot written at shutdown remembers the last batches.
    {
        let log = open(&sim);
        let v = format!("{:060}", 29);
        let ack = log
            .submit_batch("t", p, batch(pid, 0, 29, &[v.as_str()]))?
            .wait()?;
        assert_eq!(ack.base_offset.0, 29);
        for seq in 30..35 {
            let v = format!("{seq:060}");
            log.submit_batch("t", p, batch(pid, 0, seq, &[v.as_str()]))?
                .wait()?;
        }
        // Power loss while open: no snapshot covers seq 30..35; recovery replays the batches.
        sim = sim.crash(0, false);
    }
    let log = open(&sim);
    for seq in 31..35 {
        let v = format!("{seq:060}");
        let ack = log
            .submit_batch("t", p, batch(pid, 0, seq, &[v.as_str()]))?
            .wait()?;
        assert_eq!(
            ack.base_offset.0,
            i64::from(seq),
            "retry of seq {seq} after power loss"
        );
    }
    assert_eq!(values(&log, "t", 0).len(), 35);
    // Producer ids are never reused across restarts.
    assert!(log.init_producer_id()?.0 > pid);
    Ok(())
}

#[test]
fn the_producer_client_numbers_batches_and_splits_large_sends() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open(dir.path());
    log.create_topic("t", 2, cfg(&["max.message.bytes=300"]))?;
    let mut producer = Producer::new(&log)?;
    let records: Vec<Record> = (0..20)
        .map(|i| Record::keyed("k", format!("{i:020}")))
        .collect();
    let ack = producer.send_to("t", PartitionId(1), &records)?;
    assert_eq!((ack.base_offset.0, ack.last_offset.0), (0, 19));
    assert_eq!(producer.next_sequence("t", PartitionId(1)), 20);
    let ack = producer.send("t", Some(b"user-1"), Some(b"hello"))?;
    assert_eq!(ack.partition, log.partition_for("t", b"user-1")?);
    // A second producer gets its own id and its own sequences.
    let other = Producer::new(&log)?;
    assert_ne!(other.identity().0, producer.identity().0);
    assert_eq!(values(&log, "t", 1).len() + values(&log, "t", 0).len(), 21);
    Ok(())
}
