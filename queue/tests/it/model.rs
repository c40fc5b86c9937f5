//! A model-based test of [`SharePartition`]: every operation — messages arriving (with delays
//! and FIFO groups), receives of random sizes and visibility timeouts, acks, nacks with
//! delays, rejects, visibility changes, stale receipts, time passing — is applied to the
//! partition and to a model that keeps every message in a list and decides by linear scans,
//! and both must answer the same. Now and then the partition crashes: it is restored from
//! the journal of changes written before each answer, in a new lease epoch, and its messages
//! are offered again from the log — and still answers as the model. The journal goes through
//! its binary form, and now and then a snapshot replaces it. Then a consumer acks everything: every message ends
//! acknowledged once or dead-lettered once. `WEIR_QUEUE_MODEL_SEED` repeats a run,
//! `WEIR_QUEUE_MODEL_RUNS` makes more.

use std::collections::HashSet;

use weir_log::sim::SeededRng;
use weir_queue::{
    journal, Acquired, Change, Delivery, Incoming, QueueSettings, Receipt, SharePartition, Verdict,
};

#[derive(Debug, Clone, PartialEq)]
enum St {
    Available(i64),
    Acquired(u64, i64),
    Done,
}

#[derive(Debug, Clone)]
struct Msg {
    offset: i64,
    st: St,
    deliveries: u32,
    group: Option<Vec<u8>>,
}

/// The model: all messages ever offered, in offset order.
struct Model {
    settings: QueueSettings,
    msgs: Vec<Msg>,
    leases: u64,
}

impl Model {
    fn acquire(
        &mut self,
        now: i64,
        max: usize,
        vis: Option<i64>,
    ) -> (Vec<Acquired>, Vec<Delivery>) {
        for m in &mut self.msgs {
            if let St::Acquired(_, d) = m.st {
                if d <= now {
                    m.st = St::Available(now);
                }
            }
        }
        let deadline = now + vis.unwrap_or(self.settings.visibility_ms);
        let (mut out, mut dead) = (Vec::new(), Vec::new());
        for i in 0..self.msgs.len() {
            if out.len() >= max {
                break;
            }
            let m = &self.msgs[i];
            let St::Available(at) = m.st else { continue };
            // FIFO: an earlier message of the group that is not done holds this one back.
            let held_back = self.settings.fifo
                && m.group.is_some()
                && self.msgs[..i]
                    .iter()
                    .any(|e| e.group == m.group && e.st != St::Done);
            if held_back || at > now {
                continue;
            }
            let m = &mut self.msgs[i];
            if self
                .settings
                .max_receive_count
                .is_some_and(|c| m.deliveries >= c)
            {
                m.st = St::Done;
                dead.push(Delivery {
                    offset: m.offset,
                    deliveries: m.deliveries,
                });
                continue;
            }
            self.leases += 1;
            m.deliveries += 1;
            m.st = St::Acquired(self.leases, deadline);
            out.push(Acquired {
                receipt: Receipt {
                    partition: 0,
                    offset: m.offset,
                    lease: self.leases,
                },
                deliveries: m.deliveries,
            });
        }
        (out, dead)
    }

    fn held(&mut self, r: &Receipt, now: i64) -> Option<&mut Msg> {
        self.msgs
            .iter_mut()
            .find(|m| m.offset == r.offset)
            .filter(|m| matches!(m.st, St::Acquired(l, d) if l == r.lease && d > now))
    }
}

/// Offers what `Queue::fill` would read of `again` (the log from the window's read position
/// on): messages restored from the journal take no room, new ones up to the room; returns
/// what is left to read later.
fn read_again(p: &mut SharePartition, again: Vec<Incoming>) -> Option<Vec<Incoming>> {
    let from = p.wants().0;
    let mut admission = p.admission();
    let mut taken = Vec::new();
    let mut next = again.last().map_or(from, |m| (m.offset + 1).max(from));
    for m in again.iter().filter(|m| m.offset >= from) {
        if !p.admits(&mut admission, m.offset) {
            next = m.offset;
            break;
        }
        taken.push(m.clone());
    }
    p.offer(taken, next);
    let from = p.wants().0;
    let rest: Vec<Incoming> = again.into_iter().filter(|m| m.offset >= from).collect();
    (!rest.is_empty()).then_some(rest)
}

fn run(seed: u64, settings: QueueSettings) -> anyhow::Result<()> {
    let window = settings.in_flight_max;
    let mut rng = SeededRng::new(seed);
    let mut p = SharePartition::new(0, settings.clone(), 0)?;
    let mut model = Model {
        settings: settings.clone(),
        msgs: Vec::new(),
        leases: 0,
    };
    let mut now = 1_000i64;
    let mut offset = 0i64;
    let mut receipts: Vec<Receipt> = Vec::new();
    let mut dead_all: Vec<i64> = Vec::new();
    // What was written before each operation was answered, and every message offered.
    let mut journal: Vec<Change> = Vec::new();
    let mut offered_all: Vec<Incoming> = Vec::new();
    let mut restarts = 0;
    // Messages to read again after a restart, not yet read.
    let mut reread: Option<Vec<Incoming>> = None;
    for step in 0..3_000 {
        let ctx = |what: &str| format!("seed {seed}, step {step}: {what}");
        // Written in the journal's binary form, and read back.
        let written = journal::encode(&p.take_journal());
        journal.extend(journal::decode(&written).map_err(anyhow::Error::msg)?);
        if rng.below(150) == 0 {
            // A snapshot: the journal before it is deleted.
            journal =
                journal::decode(&journal::encode(&p.snapshot())).map_err(anyhow::Error::msg)?;
        }
        if rng.below(60) == 0 {
            // A crash (kill -9, power loss): the state is what the journal holds; messages are
            // read from the log again from the start.
            p = SharePartition::restore(0, settings.clone(), journal.clone())?;
            let epoch = p.take_journal();
            let Some(Change::Epoch(e)) = epoch.first().copied() else {
                anyhow::bail!(ctx("a restore's journal starts with its epoch"));
            };
            journal.extend(epoch);
            model.leases = e << 32;
            let start = p.start();
            let again: Vec<Incoming> = offered_all
                .iter()
                .filter(|m| m.offset >= start)
                .cloned()
                .collect();
            // The log is read again on the next receive: settlements with receipts from
            // before the restart may come first.
            reread = Some(again);
            restarts += 1;
        }
        let op = rng.below(10);
        if let Some(again) = reread.take() {
            reread = if op <= 3 || rng.below(4) == 0 {
                read_again(&mut p, again)
            } else {
                Some(again)
            };
        }
        match op {
            // The log is read in order: new messages come after those read again.
            0 | 1 if reread.is_none() => {
                let n = 1 + rng.below(5);
                let mut batch = Vec::new();
                for _ in 0..n {
                    offset += 1 + rng.below(2) as i64; // gaps: markers, compacted records
                    let delay = if rng.below(4) == 0 {
                        rng.below(3_000) as i64
                    } else {
                        0
                    };
                    let group = (rng.below(3) != 0).then(|| vec![b'g', rng.below(4) as u8]);
                    batch.push(Incoming {
                        offset,
                        visible_at: now + delay,
                        group,
                    });
                }
                // The window takes what it has room for, from where it wants; so does the
                // model (it mirrors the window's bound by only holding what was taken).
                let (from, room) = p.wants();
                let taken: Vec<Incoming> = batch
                    .iter()
                    .filter(|m| m.offset >= from)
                    .take(room)
                    .cloned()
                    .collect();
                let next = taken.last().map_or(from, |m| m.offset + 1);
                p.offer(taken.clone(), next);
                offered_all.extend(taken.iter().cloned());
                offset = next - 1;
                model.msgs.extend(taken.into_iter().map(|m| Msg {
                    offset: m.offset,
                    st: St::Available(m.visible_at),
                    deliveries: 0,
                    group: m.group,
                }));
            }
            2 | 3 => {
                let max = 1 + rng.below(6) as usize;
                let vis = (rng.below(3) == 0).then(|| 100 + rng.below(2_000) as i64);
                let got = p.acquire(now, max, vis);
                let want = model.acquire(now, max, vis);
                anyhow::ensure!(got == want, ctx(&format!("acquire: {got:?} vs {want:?}")));
                dead_all.extend(got.1.iter().map(|d| d.offset));
                receipts.extend(got.0.iter().map(|a| a.receipt));
            }
            4..=7 if !receipts.is_empty() => {
                // Mostly a recent receipt (likely still valid), sometimes any (likely stale).
                let from = match rng.below(4) {
                    0 => 0,
                    _ => receipts.len().saturating_sub(8),
                };
                let r = receipts[from + rng.below((receipts.len() - from) as u64) as usize];
                // What an ack inside a transaction checks first.
                let holds = p.holds(&r, now);
                anyhow::ensure!(
                    holds == model.held(&r, now).is_some(),
                    ctx(&format!("holds({r}) = {holds}"))
                );
                let (got, want) = match rng.below(4) {
                    0 => {
                        let want = model.held(&r, now).map(|m| {
                            m.st = St::Done;
                            Verdict::Acknowledged
                        });
                        (p.ack(&r, now).ok(), want)
                    }
                    1 => {
                        let delay = rng.below(1_500) as i64;
                        let want = model.held(&r, now).map(|m| {
                            m.st = St::Available(now + delay);
                            Verdict::Released
                        });
                        (p.nack(&r, now, delay).ok(), want)
                    }
                    2 => {
                        let want = model.held(&r, now).map(|m| {
                            m.st = St::Done;
                            Verdict::DeadLetter(Delivery {
                                offset: m.offset,
                                deliveries: m.deliveries,
                            })
                        });
                        (p.reject(&r, now).ok(), want)
                    }
                    _ => {
                        let t = rng.below(2_000) as i64;
                        let want = model.held(&r, now).map(|m| {
                            m.st = match t {
                                0 => St::Available(now),
                                t => St::Acquired(r.lease, now + t),
                            };
                            Verdict::Released
                        });
                        (
                            p.change_visibility(&r, now, t)
                                .ok()
                                .map(|()| Verdict::Released),
                            want,
                        )
                    }
                };
                anyhow::ensure!(
                    got == want,
                    ctx(&format!("settling {r}: {got:?} vs {want:?}"))
                );
                if let Some(Verdict::DeadLetter(d)) = got {
                    dead_all.push(d.offset);
                }
            }
            _ => now += rng.below(800) as i64,
        }
        let first_open = model
            .msgs
            .iter()
            .find(|m| m.st != St::Done)
            .map(|m| m.offset);
        if let (Some(first), None) = (first_open, &reread) {
            anyhow::ensure!(
                p.start() == first,
                ctx(&format!("start {} vs {first}", p.start()))
            );
        }
    }
    // Drain: a consumer acks all it gets until nothing is left, reading the log as the
    // window makes room.
    let mut acked: Vec<i64> = model
        .msgs
        .iter()
        .filter(|m| m.st == St::Done)
        .map(|m| m.offset)
        .filter(|o| !dead_all.contains(o))
        .collect();
    for _ in 0..10_000 {
        now += 5_000;
        if let Some(again) = reread.take() {
            reread = read_again(&mut p, again);
        }
        let (got, dead) = p.acquire(now, 100, None);
        dead_all.extend(dead.iter().map(|d| d.offset));
        if got.is_empty() && dead.is_empty() && p.counts(now) == (0, 0, 0) && reread.is_none() {
            break;
        }
        for a in got {
            p.ack(&a.receipt, now)?;
            acked.push(a.receipt.offset);
        }
    }
    let offered: HashSet<i64> = model.msgs.iter().map(|m| m.offset).collect();
    let mut settled: Vec<i64> = acked.iter().chain(&dead_all).copied().collect();
    settled.sort_unstable();
    let unique: HashSet<i64> = settled.iter().copied().collect();
    anyhow::ensure!(
        unique.len() == settled.len(),
        "seed {seed}: a message settled twice"
    );
    anyhow::ensure!(unique == offered, "seed {seed}: messages left unsettled");
    anyhow::ensure!(restarts > 0, "seed {seed}: no restart");
    anyhow::ensure!(
        offered.len() > window,
        "seed {seed}: only {} messages",
        offered.len()
    );
    Ok(())
}

#[test]
fn the_share_partition_answers_as_the_model_does() -> anyhow::Result<()> {
    let first = std::env::var("WEIR_QUEUE_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0E0E);
    let runs: u64 = std::env::var("WEIR_QUEUE_MODEL_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    eprintln!("queue model test: seeds {first}..{}", first + runs);
    for seed in first..first + runs {
        let settings = QueueSettings {
            visibility_ms: 1_000,
            max_receive_count: (seed % 3 != 0).then_some(1 + (seed % 4) as u32),
            fifo: seed % 2 == 0,
            in_flight_max: 8 + (seed % 5) as usize * 8,
        };
        run(seed, settings)?;
    }
    Ok(())
}

#[test]
fn receipts_round_trip_and_bad_ones_are_refused() {
    let r = Receipt {
        partition: 3,
        offset: 42,
        lease: 7,
    };
    assert_eq!(r.to_string().parse::<Receipt>().ok(), Some(r));
    assert!("3-x-7".parse::<Receipt>().is_err());
    assert!("nonsense".parse::<Receipt>().is_err());
}

#[test]
fn a_window_restored_under_a_smaller_bound_still_moves() -> anyhow::Result<()> {
    let at = |offset: i64, visible_at: i64| Incoming {
        offset,
        visible_at,
        group: None,
    };
    let before = QueueSettings {
        in_flight_max: 4,
        ..QueueSettings::default()
    };
    let mut p = SharePartition::new(0, before, 0)?;
    // Offset 0 waits for its delay; 1 to 3 are delivered and journaled.
    p.offer([at(0, 10_000), at(1, 0), at(2, 0), at(3, 0)], 4);
    let (got, _) = p.acquire(1_000, 4, None);
    anyhow::ensure!(got.len() == 3, "{got:?}");
    let journal = p.take_journal();
    // Restored with room for only three: the three journaled fill it, ahead of offset 0.
    let after = QueueSettings {
        in_flight_max: 3,
        ..QueueSettings::default()
    };
    let mut p = SharePartition::restore(0, after, journal)?;
    anyhow::ensure!(p.wants() == (0, 0), "{:?}", p.wants());
    // Offset 0 goes in beyond the bound (nothing is before it); a second new one would not.
    let mut admission = p.admission();
    anyhow::ensure!(p.admits(&mut admission, 0) && p.admits(&mut admission, 1));
    anyhow::ensure!(!p.admits(&mut admission, 7));
    p.offer([at(0, 10_000), at(1, 0), at(2, 0), at(3, 0)], 4);
    anyhow::ensure!(p.wants().0 == 4, "read past them: {:?}", p.wants());
    // Offset 0 once its delay is over, then the others once their locks ran out.
    let (got, _) = p.acquire(10_000, 4, None);
    anyhow::ensure!(
        got.iter().map(|a| a.receipt.offset).collect::<Vec<_>>() == [0],
        "{got:?}"
    );
    let (got, _) = p.acquire(1_000 + 31_000, 4, None);
    anyhow::ensure!(got.len() == 3, "{got:?}");
    Ok(())
}
