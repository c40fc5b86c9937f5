//! Acks inside a caller's transaction ([`weir_queue::Queue::ack_in_transaction`]): an
//! aborted transaction leaves its messages locked until their deadline and then delivers them
//! again; a committed one stands across a restart; a lock that ran out refuses the ack before
//! anything is written.

use std::time::Duration;

use anyhow::{ensure, Result};
use weir_coord::{TransactionCoordinator, TransactionalProducer};
use weir_log::Log;
use weir_queue::{Outgoing, QueueConfig, QueueError, Queues, Received};

fn open(dir: &std::path::Path) -> Result<(Log, TransactionCoordinator, Queues)> {
    let log = Log::open(dir)?;
    let (_groups, txns) = weir_coord::start(&log)?;
    let queues = Queues::open(&log, &txns)?;
    Ok((log, txns, queues))
}

/// How a transaction of acks ends.
#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    Commit,
    Abort,
    /// Left open, as by a producer that stalled after writing.
    Undecided,
}

/// Acks `got` (all of partition `p`) in one transaction of `producer`.
fn ack_in(
    queue: &weir_queue::Queue,
    producer: &mut TransactionalProducer,
    p: u32,
    got: &[Received],
    outcome: Outcome,
) -> Result<()> {
    let receipts: Vec<_> = got.iter().map(|r| r.receipt).collect();
    producer.begin()?;
    producer.add_partitions(&[queue.state_partition(p)])?;
    let ack = queue.ack_in_transaction(p, &receipts)?;
    ack.write(producer)?;
    match outcome {
        Outcome::Commit => {
            producer.commit()?;
            ack.committed();
        }
        Outcome::Abort => {
            producer.abort()?;
            drop(ack);
        }
        Outcome::Undecided => drop(ack),
    }
    Ok(())
}

#[test]
fn acks_in_a_transaction_stand_only_when_it_commits() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (log, txns, queues) = open(dir.path())?;
    let config = QueueConfig {
        visibility_ms: 300,
        ..QueueConfig::default()
    };
    let queue = queues.create("work", config)?;
    let msgs: Vec<Outgoing> = (0..4).map(|i| Outgoing::body(format!("m{i}"))).collect();
    queue.send(&msgs)?;
    let mut producer = TransactionalProducer::new(&txns, "consumer-0", Duration::from_secs(60))?;

    // Aborted: the messages stay locked by their old receipts' deadline, then come back.
    let got = queue.try_receive_partition(0, 2, None)?;
    ensure!(got.len() == 2);
    ack_in(&queue, &mut producer, 0, &got, Outcome::Abort)?;
    ensure!(queue.stats()?.in_flight == 2, "{:?}", queue.stats()?);
    std::thread::sleep(Duration::from_millis(350));
    let again = queue.try_receive_partition(0, 10, None)?;
    ensure!(again.len() == 4, "{} redelivered", again.len());

    // A lock that ran out refuses the ack, and changes nothing.
    std::thread::sleep(Duration::from_millis(350));
    let stale = queue.ack_in_transaction(0, &[again[0].receipt]).err();
    ensure!(
        matches!(stale, Some(QueueError::StaleReceipt(_))),
        "{stale:?}"
    );

    // Committed: acked, across a restart.
    let got = queue.try_receive_partition(0, 10, None)?;
    ensure!(got.len() == 4);
    ack_in(&queue, &mut producer, 0, &got, Outcome::Commit)?;
    ensure!(queue.stats()?.visible == 0 && queue.stats()?.in_flight == 0);
    drop((queue, queues, producer, txns));
    log.close();
    let (_log, _txns, queues) = open(dir.path())?;
    let stats = queues.get("work")?.stats()?;
    ensure!(stats.visible == 0 && stats.in_flight == 0, "{stats:?}");
    Ok(())
}

#[test]
fn an_undecided_transaction_holds_up_only_its_own_partition() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (_log, txns, queues) = open(dir.path())?;
    let config = QueueConfig {
        partitions: 2,
        ..QueueConfig::default()
    };
    let queue = queues.create("work", config)?;
    // Keyless sends take turns: one batch per partition.
    let p = queue.send(&[Outgoing::body("a0"), Outgoing::body("a1")])?[0].partition;
    let other = queue.send(&[Outgoing::body("b0"), Outgoing::body("b1")])?[0].partition;
    ensure!(p != other, "both batches went to partition {p}");
    let got = queue.try_receive_partition(p, 10, None)?;
    ensure!(got.len() == 2, "{} received", got.len());

    // The acks are written (perhaps not landed yet), then the transaction is left open (its
    // producer stalled): the rebuild waits for the record and then for the outcome.
    let mut producer = TransactionalProducer::new(&txns, "consumer-0", Duration::from_secs(60))?;
    ack_in(&queue, &mut producer, p, &got, Outcome::Undecided)?;
    let undecided = queue.try_receive_partition(p, 10, None).err();
    ensure!(
        matches!(undecided, Some(QueueError::Undecided { .. })),
        "{undecided:?}"
    );
    // Receives across partitions go on with the others meanwhile.
    let (served, _) = queue.try_receive(10, None)?;
    ensure!(
        served.len() == 2 && served.iter().all(|r| r.receipt.partition == other),
        "{served:?}"
    );

    // Aborted: the partition is served again; its messages are still locked by the old
    // receipts (not acked), and come back after them.
    producer.abort()?;
    let stats = queue.stats()?;
    ensure!(stats.in_flight == 4 && stats.visible == 0, "{stats:?}");
    Ok(())
}
