//! The queues' metrics in Prometheus text format, for `weir serve`'s `GET /metrics`: each
//! queue's depth (visible, in flight, delayed), its oldest message's age, its tracked messages
//! by delivery count, and the depth of its dead-letter queue — the alerts the texts ask for
//! are `weir_queue_oldest_message_age_seconds` growing and `weir_queue_dead_letter_messages`
//! above zero.

use std::fmt::Write;

use weir_queue::Queues;

/// A gauge's name, help and value.
type Gauge = (
    &'static str,
    &'static str,
    fn(&weir_queue::QueueStats) -> u64,
);

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Label values are queue names (letters, digits, `-`, `_`, `.`): nothing to escape.
pub fn render(queues: &Queues, now_ms: i64) -> String {
    let mut rows: Vec<(String, weir_queue::QueueStats, Option<String>)> = Vec::new();
    for q in queues.list() {
        let Ok(stats) = q.stats() else { continue };
        let dlq = q
            .config()
            .redrive
            .as_ref()
            .map(|r| r.dead_letter_queue.clone());
        rows.push((q.name().to_string(), stats, dlq));
    }
    let mut out = String::new();
    let gauges: [Gauge; 3] = [
        (
            "weir_queue_messages_visible",
            "Messages a receive can get now (SQS's ApproximateNumberOfMessages).",
            |s| s.visible,
        ),
        (
            "weir_queue_messages_in_flight",
            "Messages locked by a consumer (…NotVisible).",
            |s| s.in_flight,
        ),
        (
            "weir_queue_messages_delayed",
            "Messages waiting for their delay (…Delayed).",
            |s| s.delayed,
        ),
    ];
    for (name, help, get) in gauges {
        family(&mut out, name, "gauge", help);
        for (q, s, _) in &rows {
            let _ = writeln!(out, "{name}{{queue=\"{q}\"}} {}", get(s));
        }
    }
    family(
        &mut out,
        "weir_queue_oldest_message_age_seconds",
        "gauge",
        "Age of the oldest message not yet done.",
    );
    for (q, s, _) in &rows {
        let age = s.oldest_timestamp.map_or(0, |t| (now_ms - t).max(0)) as f64 / 1000.0;
        let _ = writeln!(
            out,
            "weir_queue_oldest_message_age_seconds{{queue=\"{q}\"}} {age}"
        );
    }
    family(
        &mut out,
        "weir_queue_messages_by_deliveries",
        "gauge",
        "Tracked messages delivered `deliveries` times.",
    );
    for (q, s, _) in &rows {
        for (n, count) in &s.delivery_counts {
            let _ = writeln!(
                out,
                "weir_queue_messages_by_deliveries{{queue=\"{q}\",deliveries=\"{n}\"}} {count}"
            );
        }
    }
    family(
        &mut out,
        "weir_queue_dead_letter_messages",
        "gauge",
        "Messages in the queue's dead-letter queue (alert when above 0).",
    );
    for (q, _, dlq) in &rows {
        let Some(dlq) = dlq else { continue };
        if let Some((_, d, _)) = rows.iter().find(|(n, _, _)| n == dlq) {
            let depth = d.visible + d.in_flight + d.delayed;
            let _ = writeln!(out, "weir_queue_dead_letter_messages{{queue=\"{q}\",dead_letter_queue=\"{dlq}\"}} {depth}");
        }
    }
    out
}
