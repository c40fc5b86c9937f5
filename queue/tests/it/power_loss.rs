//! Power loss under a queue, over the simulated file system (`weir_log::sim`): seeded rounds
//! of sends, receives, acks (plain, and inside committed or aborted transactions), nacks and
//! waits for locks to run out, each round ended by a power loss that keeps only what was
//! fsynced, sometimes with a torn or garbage tail. Whatever was answered survives: a sent
//! message is never lost, an acked one is never delivered again; at the end the messages not
//! acked are delivered and the queue drains. Snapshots are cut every 2 KiB of journal, so
//! losses fall between snapshots, their truncations and the records after them.
//! `WEIR_QUEUE_POWER_ROUNDS` runs more rounds (the seed is printed; `SEED` replays one).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use weir_coord::{TransactionCoordinator, TransactionalProducer};
use weir_log::sim::{SeededRng, SimStorage};
use weir_log::{Log, LogOptions};
use weir_queue::{Outgoing, Queue, QueueConfig, Queues, Receipt};

/// Rounds (each ends in a power loss) in CI.
const ROUNDS_DEFAULT: usize = 12;
/// A lock: short, so rounds also see locks run out (and locks from before a loss end soon).
const VISIBILITY_MS: i64 = 150;

fn rounds() -> usize {
    std::env::var("WEIR_QUEUE_POWER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS_DEFAULT)
}

struct Open {
    log: Log,
    txns: TransactionCoordinator,
    queues: Queues,
}

fn open(sim: &SimStorage) -> Result<Open> {
    let options = LogOptions {
        storage: Arc::new(sim.clone()),
        cleaner_interval: None,
        append_max_block: Duration::from_secs(10),
        ..LogOptions::default()
    };
    let log = Log::open_with("/power", options)?;
    let (_groups, txns) = weir_coord::start(&log)?;
    let queues = Queues::open(&log, &txns)?;
    Ok(Open { log, txns, queues })
}

/// What the test knows was answered.
#[derive(Default)]
struct Answered {
    sent: BTreeSet<String>,
    acked: BTreeSet<String>,
    /// Deliveries held now.
    held: Vec<(Receipt, String)>,
    next: usize,
}

impl Answered {
    fn received(&mut self, got: Vec<weir_queue::Received>) -> Result<()> {
        for r in got {
            let body = String::from_utf8_lossy(&r.message.body).into_owned();
            ensure!(
                !self.acked.contains(&body),
                "{body} delivered after its ack"
            );
            ensure!(self.sent.contains(&body), "{body} was never sent");
            self.held.push((r.receipt, body));
        }
        Ok(())
    }

    /// Up to `n` held receipts, taken out.
    fn take(&mut self, rng: &mut SeededRng, n: usize) -> Vec<(Receipt, String)> {
        let mut out = Vec::new();
        while out.len() < n && !self.held.is_empty() {
            let i = rng.below(self.held.len() as u64) as usize;
            out.push(self.held.swap_remove(i));
        }
        out
    }
}

/// Acks `taken` of one partition in a transaction, committed or aborted.
fn ack_in_transaction(
    queue: &Queue,
    producer: &mut TransactionalProducer,
    taken: &[(Receipt, String)],
    commit: bool,
    answered: &mut Answered,
) -> Result<()> {
    let Some(p) = taken.first().map(|(r, _)| r.partition) else {
        return Ok(());
    };
    let receipts: Vec<Receipt> = taken
        .iter()
        .filter(|(r, _)| r.partition == p)
        .map(|(r, _)| *r)
        .collect();
    // A lock that ran out refuses the whole ack: nothing happened.
    let Ok(ack) = queue.ack_in_transaction(p, &receipts) else {
        return Ok(());
    };
    producer.begin()?;
    producer.add_partitions(&[ack.partition()])?;
    ack.write(producer)?;
    if commit {
        producer.commit()?;
        ack.committed();
        for (r, body) in taken {
            if r.partition == p {
                answered.acked.insert(body.clone());
            }
        }
    } else {
        producer.abort()?;
    }
    Ok(())
}

fn step(
    rng: &mut SeededRng,
    queue: &Queue,
    producer: &mut TransactionalProducer,
    answered: &mut Answered,
) -> Result<()> {
    match rng.below(10) {
        0..=2 => {
            let n = 1 + rng.below(20) as usize;
            let bodies: Vec<String> = (answered.next..answered.next + n)
                .map(|i| format!("m{i}"))
                .collect();
            answered.next += n;
            let msgs: Vec<Outgoing> = bodies.iter().map(|b| Outgoing::body(b.clone())).collect();
            queue.send(&msgs)?;
            answered.sent.extend(bodies);
        }
        3..=4 => {
            let (got, _) = queue.try_receive(1 + rng.below(15) as usize, None)?;
            answered.received(got)?;
        }
        5..=6 => {
            let n = 1 + rng.below(8) as usize;
            let taken = answered.take(rng, n);
            let receipts: Vec<Receipt> = taken.iter().map(|(r, _)| *r).collect();
            for ((_, body), result) in taken.iter().zip(queue.ack(&receipts)?) {
                if result.is_ok() {
                    answered.acked.insert(body.clone());
                }
            }
        }
        7 => {
            let n = 1 + rng.below(8) as usize;
            let taken = answered.take(rng, n);
            let commit = rng.below(3) != 0;
            ack_in_transaction(queue, producer, &taken, commit, answered)?;
        }
        8 => {
            let n = 1 + rng.below(4) as usize;
            let taken = answered.take(rng, n);
            let receipts: Vec<Receipt> = taken.iter().map(|(r, _)| *r).collect();
            queue.nack(&receipts, 0)?;
        }
        _ => std::thread::sleep(Duration::from_millis(rng.below(200))),
    }
    Ok(())
}

/// Receives and acks until nothing is left; returns the bodies delivered.
fn drain(queue: &Queue, answered: &Answered) -> Result<BTreeSet<String>> {
    let mut delivered = BTreeSet::new();
    for _ in 0..200 {
        let got = queue.receive(100, Duration::from_millis(300), None)?;
        if got.is_empty() {
            let s = queue.stats()?;
            if s.visible + s.in_flight + s.delayed == 0 {
                return Ok(delivered);
            }
            continue;
        }
        let receipts: Vec<Receipt> = got.iter().map(|r| r.receipt).collect();
        for (r, result) in got.iter().zip(queue.ack(&receipts)?) {
            result?;
            let body = String::from_utf8_lossy(&r.message.body).into_owned();
            ensure!(
                !answered.acked.contains(&body),
                "{body} delivered after its ack"
            );
            ensure!(
                delivered.insert(body.clone()),
                "{body} delivered twice in the drain"
            );
        }
    }
    anyhow::bail!("the queue did not drain")
}

#[test]
fn answered_sends_and_acks_survive_power_loss() -> Result<()> {
    let mut rng = SeededRng::from_env("queue_power_loss");
    let mut sim = SimStorage::new();
    let mut answered = Answered::default();
    for round in 0..rounds() {
        let o = open(&sim)?;
        let config = QueueConfig {
            partitions: 2,
            visibility_ms: VISIBILITY_MS,
            ..QueueConfig::default()
        };
        let queue = match round {
            0 => o.queues.create("work", config)?,
            _ => o.queues.get("work")?,
        };
        queue.set_snapshot_after(2048);
        let mut producer =
            TransactionalProducer::new(&o.txns, "power-consumer", Duration::from_secs(60))?;
        // Receipts do not survive a restart: what was held comes back after its lock.
        answered.held.clear();
        for _ in 0..10 + rng.below(30) {
            step(&mut rng, &queue, &mut producer, &mut answered)?;
        }
        // Power loss: only what was fsynced, plus maybe a torn or garbage tail.
        let keep = match rng.below(3) {
            0 => 0,
            _ => rng.below(300) as usize,
        };
        let next = sim.crash(keep, rng.below(4) == 0);
        drop((queue, producer, o));
        sim = next;
    }
    let o = open(&sim)?;
    let queue = o.queues.get("work")?;
    let delivered = drain(&queue, &answered)?;
    let missing: Vec<_> = answered
        .sent
        .iter()
        .filter(|b| !answered.acked.contains(*b) && !delivered.contains(*b))
        .collect();
    ensure!(missing.is_empty(), "lost: {missing:?}");
    ensure!(
        delivered.iter().all(|b| answered.sent.contains(b)),
        "delivered what was never sent"
    );
    ensure!(
        answered.acked.len() > 10,
        "too few acks to mean much: {}",
        answered.acked.len()
    );
    drop(o.log);
    Ok(())
}
