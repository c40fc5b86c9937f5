//! [`Queues`] over a real log and transaction coordinator: the SQS flows through the Rust
//! API (send, receive, ack; lock expiry and redelivery; maxReceiveCount to the dead-letter
//! queue and redrive back; delays; FIFO order and deduplication; long polling), and restarts:
//! the log closed and opened again, the queues rebuilt from their journals and snapshots.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use weir_log::Log;
use weir_queue::{Outgoing, QueueConfig, QueueError, Queues, Redrive};

struct Env {
    dir: tempfile::TempDir,
    log: Log,
    queues: Queues,
}

fn open(dir: tempfile::TempDir) -> Result<Env> {
    let log = Log::open(dir.path())?;
    let (_groups, txns) = weir_coord::start(&log)?;
    let queues = Queues::open(&log, &txns)?;
    Ok(Env { dir, log, queues })
}

fn fresh() -> Result<Env> {
    open(tempfile::tempdir()?)
}

/// Closes the log (as a restart) and opens everything again.
fn restart(env: Env) -> Result<Env> {
    let Env { dir, log, queues } = env;
    drop(queues);
    log.close();
    open(dir)
}

fn bodies(got: &[weir_queue::Received]) -> Vec<String> {
    got.iter()
        .map(|r| String::from_utf8_lossy(&r.message.body).into_owned())
        .collect()
}

fn send_all(q: &weir_queue::Queue, texts: &[&str]) -> Result<()> {
    let msgs: Vec<Outgoing> = texts
        .iter()
        .map(|t| Outgoing::body(t.to_string()))
        .collect();
    q.send(&msgs)?;
    Ok(())
}

#[test]
fn send_receive_ack_and_redelivery_after_the_lock() -> Result<()> {
    let env = fresh()?;
    let config = QueueConfig {
        partitions: 2,
        visibility_ms: 300,
        ..QueueConfig::default()
    };
    let q = env.queues.create("work", config.clone())?;
    ensure!(
        Arc::ptr_eq(&q, &env.queues.create("work", config)?),
        "create is idempotent"
    );
    ensure!(matches!(
        env.queues.create("work", QueueConfig::default()),
        Err(QueueError::QueueExists(_))
    ));
    send_all(&q, &["a", "b", "c", "d"])?;
    let first = q.receive(10, Duration::from_secs(2), None)?;
    ensure!(first.len() == 4, "all four, got {:?}", bodies(&first));
    ensure!(
        q.try_receive(10, None)?.0.is_empty(),
        "locked messages are invisible"
    );
    // Ack two; the other two come back when their locks run out.
    let acks: Vec<_> = first[..2].iter().map(|r| r.receipt).collect();
    ensure!(q.ack(&acks)?.iter().all(|r| r.is_ok()));
    let t = Instant::now();
    let again = q.receive(10, Duration::from_secs(5), None)?;
    ensure!(
        t.elapsed() < Duration::from_secs(2),
        "redelivered after the 300 ms lock"
    );
    let mut want = bodies(&first[2..]);
    let mut got = bodies(&again);
    want.sort();
    got.sort();
    ensure!(got == want, "the unacked ones come back: {got:?}");
    ensure!(again.iter().all(|r| r.deliveries == 2), "second delivery");
    // The first delivery's receipts are stale now.
    let stale = q.ack(&[first[2].receipt])?;
    ensure!(
        matches!(stale[0], Err(QueueError::StaleReceipt(_))),
        "{stale:?}"
    );
    let receipts: Vec<_> = again.iter().map(|r| r.receipt).collect();
    ensure!(q.ack(&receipts)?.iter().all(|r| r.is_ok()));
    let s = q.stats()?;
    ensure!(s.visible == 0 && s.in_flight == 0, "{s:?}");
    Ok(())
}

#[test]
fn max_receive_count_dead_letters_with_headers_and_redrive_brings_them_back() -> Result<()> {
    let env = fresh()?;
    let dlq = env.queues.create("work-dlq", QueueConfig::default())?;
    let q = env.queues.create(
        "work",
        QueueConfig {
            visibility_ms: 60_000,
            redrive: Some(Redrive {
                dead_letter_queue: "work-dlq".into(),
                max_receive_count: 2,
            }),
            ..QueueConfig::default()
        },
    )?;
    ensure!(matches!(
        env.queues.delete("work-dlq"),
        Err(QueueError::InUse { .. })
    ));
    send_all(&q, &["poison", "fine"])?;
    for _ in 0..2 {
        let got = q.receive(10, Duration::from_secs(1), None)?;
        let poison: Vec<_> = got
            .iter()
            .filter(|r| &r.message.body[..] == b"poison")
            .map(|r| r.receipt)
            .collect();
        let fine: Vec<_> = got
            .iter()
            .filter(|r| &r.message.body[..] != b"poison")
            .map(|r| r.receipt)
            .collect();
        q.nack(&poison, 0)?;
        q.ack(&fine)?;
    }
    // The third receive gives up on it: to the dead-letter queue, nothing delivered here.
    ensure!(q.try_receive(10, None)?.0.is_empty());
    let dead = dlq.receive(10, Duration::from_secs(2), None)?;
    ensure!(bodies(&dead) == ["poison"], "{:?}", bodies(&dead));
    let m = &dead[0].message;
    ensure!(m.header(weir_queue::HEADER_DLQ_SOURCE_QUEUE) == Some(&b"work"[..]));
    ensure!(m.header(weir_queue::HEADER_DLQ_DELIVERIES) == Some(&b"2"[..]));
    ensure!(m.header(weir_queue::HEADER_DLQ_SOURCE_OFFSET) == Some(&b"0"[..]));
    ensure!(m.header(weir_queue::HEADER_DLQ_ERROR).is_some());
    dlq.nack(&[dead[0].receipt], 0)?;
    // Redrive: back to `work`, without the dead-letter headers, gone from the DLQ.
    ensure!(dlq.redrive(None, 100)? == 1);
    ensure!(dlq.try_receive(10, None)?.0.is_empty());
    let back = q.receive(10, Duration::from_secs(2), None)?;
    ensure!(bodies(&back) == ["poison"]);
    ensure!(back[0]
        .message
        .header(weir_queue::HEADER_DLQ_SOURCE_QUEUE)
        .is_none());
    ensure!(back[0].deliveries == 1, "a redriven message starts over");
    // Reject: to the DLQ at once, with the reason.
    q.reject(&[back[0].receipt], "cannot parse")?;
    let dead = dlq.receive(10, Duration::from_secs(2), None)?;
    ensure!(dead[0].message.header(weir_queue::HEADER_DLQ_ERROR) == Some(&b"cannot parse"[..]));
    Ok(())
}

#[test]
fn delays_long_polling_and_visibility_changes() -> Result<()> {
    let env = fresh()?;
    let q = env.queues.create("later", QueueConfig::default())?;
    q.send(&[Outgoing {
        delay_ms: Some(400),
        ..Outgoing::body("delayed")
    }])?;
    ensure!(
        q.try_receive(10, None)?.0.is_empty(),
        "not before its delay"
    );
    ensure!(q.stats()?.delayed == 1);
    let t = Instant::now();
    let got = q.receive(10, Duration::from_secs(5), None)?;
    ensure!(bodies(&got) == ["delayed"]);
    ensure!(
        t.elapsed() >= Duration::from_millis(300),
        "waited for the delay"
    );
    // Visibility 0: visible again at once.
    q.change_visibility(&[got[0].receipt], 0)?;
    let again = q.try_receive(10, None)?.0;
    ensure!(again.len() == 1 && again[0].deliveries == 2);
    q.ack(&[again[0].receipt])?;
    // Long polling returns as soon as another thread sends.
    let sender = {
        let q = q.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            send_all(&q, &["now"])
        })
    };
    let t = Instant::now();
    let got = q.receive(10, Duration::from_secs(10), None)?;
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    ensure!(bodies(&got) == ["now"]);
    ensure!(
        t.elapsed() < Duration::from_secs(5),
        "woken by the send, not the timeout"
    );
    Ok(())
}

#[test]
fn fifo_groups_in_order_with_deduplication_across_a_restart() -> Result<()> {
    let env = fresh()?;
    let config = QueueConfig {
        partitions: 2,
        fifo: true,
        content_dedup: true,
        ..QueueConfig::default()
    };
    ensure!(
        env.queues.create("orders", config.clone()).is_err(),
        "FIFO names end in .fifo"
    );
    let q = env.queues.create("orders.fifo", config)?;
    let msg = |group: &str, body: &str| Outgoing {
        group: Some(Bytes::from(group.to_string())),
        ..Outgoing::body(body.to_string())
    };
    let sent = q.send(&[
        msg("a", "a1"),
        msg("b", "b1"),
        msg("a", "a2"),
        msg("a", "a1"),
    ])?;
    ensure!(
        sent[3].duplicate && sent[3].offset == sent[0].offset,
        "{sent:?}"
    );
    ensure!(q.check(&Outgoing::body("no group")).is_err());
    // One in flight per group: a1 and b1, not a2.
    let got = q.try_receive(10, None)?.0;
    let mut firsts = bodies(&got);
    firsts.sort();
    ensure!(firsts == ["a1", "b1"], "{firsts:?}");
    drop(q);
    let env = restart(env)?;
    let q = env.queues.get("orders.fifo")?;
    // The duplicate is still recognised after the restart.
    ensure!(q.send(&[msg("b", "b1")])?[0].duplicate);
    // The locks from before the restart still hold; a2 waits behind a1.
    ensure!(q.try_receive(10, None)?.0.is_empty());
    Ok(())
}

#[test]
fn acks_survive_a_restart_and_locks_run_out_after_it() -> Result<()> {
    let env = fresh()?;
    let q = env.queues.create(
        "jobs",
        QueueConfig {
            visibility_ms: 500,
            ..QueueConfig::default()
        },
    )?;
    let texts: Vec<String> = (0..100).map(|i| format!("job-{i}")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    send_all(&q, &refs)?;
    let got = q.try_receive(60, None)?.0;
    ensure!(got.len() == 60);
    let acked: Vec<_> = got[..40].iter().map(|r| r.receipt).collect();
    q.ack(&acked)?;
    drop(q);
    let env = restart(env)?;
    let q = env.queues.get("jobs")?;
    // The 40 unacknowledged never come back… the 20 locked ones after their lock.
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 60 && Instant::now() < deadline {
        let got = q.receive(100, Duration::from_secs(1), None)?;
        q.ack(&got.iter().map(|r| r.receipt).collect::<Vec<_>>())?;
        seen.extend(bodies(&got));
    }
    seen.sort();
    let mut want: Vec<String> = texts[40..].to_vec();
    want.sort();
    ensure!(
        seen == want,
        "exactly the unacknowledged ones: {} of {}",
        seen.len(),
        want.len()
    );
    Ok(())
}

#[test]
fn a_window_full_of_locks_reads_on_after_a_restart() -> Result<()> {
    let env = fresh()?;
    let config = QueueConfig {
        visibility_ms: 600_000,
        ..QueueConfig::default()
    };
    let q = env.queues.create("full", config)?;
    let (window, extra) = (weir_queue::IN_FLIGHT_MAX, 500);
    let texts: Vec<String> = (0..window + extra).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    send_all(&q, &refs)?;
    // As many messages as the window holds are received and left locked.
    let mut receipts = Vec::new();
    while receipts.len() < window {
        let got = q.try_receive(window - receipts.len(), None)?.0;
        ensure!(!got.is_empty(), "only {} received", receipts.len());
        receipts.extend(got.iter().map(|r| r.receipt));
    }
    ensure!(
        q.try_receive(extra, None)?.0.is_empty(),
        "the window is full"
    );
    drop(q);
    let env = restart(env)?;
    let q = env.queues.get("full")?;
    // The window comes back full of locks, which still hold (their receipts too)…
    ensure!(
        q.try_receive(extra, None)?.0.is_empty(),
        "the window is full"
    );
    // …and once they are released it reads on: every message comes, once.
    for chunk in receipts.chunks(1_000) {
        for r in q.nack(chunk, 0)? {
            r?;
        }
    }
    let mut seen = Vec::new();
    for _ in 0..100 {
        let got = q.try_receive(window, None)?.0;
        if got.is_empty() {
            break;
        }
        q.ack(&got.iter().map(|r| r.receipt).collect::<Vec<_>>())?;
        seen.extend(bodies(&got));
    }
    seen.sort();
    let mut want = texts.clone();
    want.sort();
    ensure!(seen == want, "{} of {} delivered", seen.len(), want.len());
    let s = q.stats()?;
    ensure!(s.visible == 0 && s.in_flight == 0, "{s:?}");
    Ok(())
}

#[test]
fn snapshots_bound_the_journal_and_restore_the_same_state() -> Result<()> {
    let env = fresh()?;
    let q = env.queues.create("many", QueueConfig::default())?;
    q.set_snapshot_after(2_000);
    let texts: Vec<String> = (0..3_000).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    send_all(&q, &refs)?;
    let mut acked = 0;
    let mut kept = Vec::new();
    while acked + kept.len() < 3_000 {
        let got = q.try_receive(7, None)?.0;
        ensure!(!got.is_empty());
        // Every seventh message stays locked; the rest are acked one call each.
        for (i, r) in got.iter().enumerate() {
            if i == 3 {
                kept.push(r.message.body.clone());
            } else {
                q.ack(&[r.receipt])?;
                acked += 1;
            }
        }
    }
    let state = weir_queue::state_topic("many");
    let start = env.log.earliest_offset(&state, weir_log::PartitionId(0))?;
    ensure!(start.0 > 0, "snapshots deleted the journal before them");
    drop(q);
    let env = restart(env)?;
    let q = env.queues.get("many")?;
    let s = q.stats()?;
    ensure!(s.in_flight == kept.len() as u64 && s.visible == 0, "{s:?}");
    q.change_visibility(&[], 0).context("an empty batch")?;
    Ok(())
}

/// Receives until `n` messages came or 5 s passed; acks them; their bodies, sorted.
fn drain(q: &weir_queue::Queue, n: usize) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while out.len() < n && Instant::now() < deadline {
        let got = q.receive(100, Duration::from_millis(200), None)?;
        q.ack(&got.iter().map(|r| r.receipt).collect::<Vec<_>>())?;
        out.extend(bodies(&got));
    }
    out.sort();
    Ok(out)
}

#[test]
fn fan_out_with_key_patterns_and_filter_policies_exactly_once_across_a_restart() -> Result<()> {
    use weir_log::Record;
    use weir_queue::Subscription;
    let env = fresh()?;
    env.log.create_topic("events", 2, Default::default())?;
    let publish = |log: &Log, key: &str, amount: u32, body: &str| -> Result<()> {
        let p = log.partition_for("events", key.as_bytes())?;
        let r = Record::keyed(key.to_string(), body.to_string())
            .with_header("amount", amount.to_string());
        log.append("events", p, &[r])?;
        Ok(())
    };
    publish(&env.log, "order.eu.created", 5, "before")?;
    for (queue, pattern, policy) in [
        ("eu-orders", Some("order.eu.*"), None),
        ("errors", Some("#.error"), None),
        (
            "big",
            None,
            Some(r#"{"amount": [{"numeric": [">=", 100]}]}"#),
        ),
    ] {
        env.queues.create(queue, QueueConfig::default())?;
        let sub = Subscription {
            queue: queue.into(),
            topic: "events".into(),
            key_pattern: pattern.map(str::to_string),
            filter_policy: policy.map(str::to_string),
        };
        env.queues.subscribe(sub, false)?;
    }
    let bad = Subscription {
        queue: "big".into(),
        topic: "events".into(),
        key_pattern: None,
        filter_policy: Some(r#"{"amount": [{"numeric": ["~", 1]}]}"#.into()),
    };
    ensure!(
        env.queues.subscribe(bad, false).is_err(),
        "a bad policy is refused"
    );
    publish(&env.log, "order.eu.created", 5, "eu-small")?;
    publish(&env.log, "order.us.created", 500, "us-big")?;
    publish(&env.log, "billing.payment.error", 150, "error-big")?;
    publish(&env.log, "order.eu.shipped", 100, "eu-big")?;
    let eu = env.queues.get("eu-orders")?;
    ensure!(
        drain(&eu, 2)? == ["eu-big", "eu-small"],
        "only what came after the subscription"
    );
    let errors = env.queues.get("errors")?;
    let got = errors.receive(10, Duration::from_secs(5), None)?;
    ensure!(bodies(&got) == ["error-big"]);
    let m = &got[0].message;
    ensure!(m.header(weir_queue::HEADER_SOURCE_TOPIC) == Some(&b"events"[..]));
    ensure!(
        m.key.as_deref() == Some(&b"billing.payment.error"[..]),
        "the key is kept"
    );
    errors.ack(&[got[0].receipt])?;
    let big = env.queues.get("big")?;
    ensure!(drain(&big, 3)? == ["error-big", "eu-big", "us-big"]);
    drop((eu, errors, big));
    let env = restart(env)?;
    publish(&env.log, "order.eu.created", 1, "after-restart")?;
    let eu = env.queues.get("eu-orders")?;
    ensure!(drain(&eu, 1)? == ["after-restart"]);
    std::thread::sleep(Duration::from_millis(300));
    ensure!(
        eu.try_receive(10, None)?.0.is_empty(),
        "nothing copied twice across the restart"
    );
    ensure!(env.queues.subscriptions("big").len() == 1);
    env.queues.unsubscribe("big", "events")?;
    ensure!(env.queues.subscriptions("big").is_empty());
    Ok(())
}

#[test]
fn request_reply_with_concurrent_requests_and_a_timeout() -> Result<()> {
    use weir_queue::Requester;
    let env = fresh()?;
    let rpc = env.queues.create("rpc", QueueConfig::default())?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let responder = {
        let (queues, rpc, stop) = (env.queues.clone(), rpc.clone(), stop.clone());
        std::thread::spawn(move || -> Result<()> {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for r in rpc.receive(10, Duration::from_millis(100), None)? {
                    let upper = String::from_utf8_lossy(&r.message.body).to_uppercase();
                    queues.reply(&r.message, Outgoing::body(upper))?;
                    rpc.ack(&[r.receipt])?;
                }
            }
            Ok(())
        })
    };
    let requester = Arc::new(Requester::new(&env.queues, "replies-1")?);
    let callers: Vec<_> = (0..4)
        .map(|t| {
            let (requester, rpc) = (requester.clone(), rpc.clone());
            std::thread::spawn(move || -> Result<()> {
                for i in 0..5 {
                    let ask = format!("caller {t} request {i}");
                    let reply = requester
                        .request(&rpc, Outgoing::body(ask.clone()), Duration::from_secs(5))?
                        .context("no reply")?;
                    ensure!(reply.body == ask.to_uppercase().as_bytes(), "{reply:?}");
                }
                Ok(())
            })
        })
        .collect();
    for c in callers {
        c.join()
            .map_err(|_| anyhow::anyhow!("a caller panicked"))??;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    responder
        .join()
        .map_err(|_| anyhow::anyhow!("the responder panicked"))??;
    // Nobody answers: the request times out.
    let silent = env.queues.create("silent", QueueConfig::default())?;
    let t = Instant::now();
    ensure!(requester
        .request(&silent, Outgoing::body("?"), Duration::from_millis(300))?
        .is_none());
    ensure!(t.elapsed() < Duration::from_secs(2));
    ensure!(env
        .queues
        .reply(
            &silent.try_receive(1, None)?.0[0].message,
            Outgoing::body("late")
        )
        .is_ok());
    ensure!(env
        .queues
        .reply(&rpc_message_without_headers(&env)?, Outgoing::body("x"))
        .is_err());
    Ok(())
}

fn rpc_message_without_headers(env: &Env) -> Result<weir_queue::Message> {
    let q = env.queues.create("plain", QueueConfig::default())?;
    send_all(&q, &["not a request"])?;
    Ok(q.try_receive(1, None)?.0.remove(0).message)
}

#[test]
fn settings_change_on_the_live_queue_and_survive_a_restart() -> Result<()> {
    let env = fresh()?;
    let q = env.queues.create("tuned", QueueConfig::default())?;
    send_all(&q, &["a"])?;
    env.queues.update("tuned", |c| {
        c.visibility_ms = 200;
        c.retention_ms = 3_600_000;
        c.tags.insert("team".into(), "ops".into());
        Ok(())
    })?;
    let retention =
        |log: &Log| -> Result<Option<i64>> { Ok(log.topic_config("tuned")?.retention_ms) };
    ensure!(retention(&env.log)? == Some(3_600_000));
    // A crash between the catalog and the topic: the topic keeps its old retention…
    let old =
        std::collections::BTreeMap::from([("retention.ms".to_string(), "86400000".to_string())]);
    env.log.alter_topic_config("tuned", old)?;
    // The next receive locks for the new visibility timeout.
    let got = q.receive(1, Duration::from_secs(1), None)?;
    ensure!(bodies(&got) == ["a"]);
    std::thread::sleep(Duration::from_millis(250));
    ensure!(bodies(&q.receive(1, Duration::from_secs(1), None)?) == ["a"]);
    for (what, change) in [
        (
            "partitions",
            Box::new(|c: &mut QueueConfig| c.partitions = 2) as Box<dyn Fn(&mut QueueConfig)>,
        ),
        ("fifo", Box::new(|c: &mut QueueConfig| c.fifo = true)),
        ("range", Box::new(|c: &mut QueueConfig| c.delay_ms = -1)),
    ] {
        let refused = env.queues.update("tuned", |c| {
            change(c);
            Ok(())
        });
        ensure!(
            matches!(refused, Err(QueueError::InvalidSetting(_))),
            "{what}: {refused:?}"
        );
    }
    drop(q);
    let env = restart(env)?;
    let c = env.queues.get("tuned")?.config();
    ensure!(c.visibility_ms == 200 && c.tags.get("team").map(String::as_str) == Some("ops"));
    // …until the queues are opened again: the catalog's stands.
    ensure!(
        retention(&env.log)? == Some(3_600_000),
        "{:?}",
        retention(&env.log)?
    );
    ensure!(c.modified_ms >= c.created_ms && c.modified_ms > 0, "{c:?}");
    Ok(())
}
