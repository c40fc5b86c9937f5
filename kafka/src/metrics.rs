//! The server's metrics and their Prometheus text form: per-API request counts, errors and
//! latency (an HDR histogram per API, bounded by construction), connection counts, per
//! topic-partition bytes and records in and out plus the log's own offsets and sizes, and
//! per-group lag computed from committed offsets at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use kafka_protocol::messages::ApiKey;

use crate::api::{name_of, SUPPORTED};
use crate::broker::Broker;

/// Latencies above this are clamped into the top bucket: a request that took longer than
/// a minute is an outage, not a distribution.
const LATENCY_MAX_US: u64 = 60_000_000;

/// Quantiles each latency summary reports.
const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

#[derive(Debug)]
struct ApiMetrics {
    requests: AtomicU64,
    errors: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
}

/// Bytes and records through one partition.
#[derive(Debug, Default, Clone, Copy)]
struct Flow {
    bytes_in: u64,
    records_in: u64,
    bytes_out: u64,
    records_out: u64,
}

/// Counters shared by every connection of one server.
#[derive(Debug)]
pub(crate) struct Metrics {
    apis: Vec<ApiMetrics>,
    pub(crate) connections_open: AtomicI64,
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_rejected: AtomicU64,
    pub(crate) connections_failed: AtomicU64,
    /// One entry per partition that saw traffic: bounded by the partitions that exist.
    flows: Mutex<BTreeMap<(String, u32), Flow>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let apis = SUPPORTED
            .iter()
            .map(|_| ApiMetrics {
                requests: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                latency_us: Mutex::new(
                    Histogram::new_with_bounds(1, LATENCY_MAX_US, 2)
                        .unwrap_or_else(|e| panic!("static histogram bounds are valid: {e}")),
                ),
            })
            .collect();
        Metrics {
            apis,
            connections_open: AtomicI64::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_rejected: AtomicU64::new(0),
            connections_failed: AtomicU64::new(0),
            flows: Mutex::new(BTreeMap::new()),
        }
    }
}

fn index(api: ApiKey) -> Option<usize> {
    SUPPORTED.iter().position(|(k, _, _)| *k == api)
}

impl Metrics {
    /// A request answered (or failed) after `took`.
    pub(crate) fn request(&self, api: ApiKey, took: Duration) {
        if let Some(m) = index(api).and_then(|i| self.apis.get(i)) {
            m.requests.fetch_add(1, Ordering::Relaxed);
            let us = (took.as_micros() as u64).clamp(1, LATENCY_MAX_US);
            let mut h = m.latency_us.lock().unwrap_or_else(|e| e.into_inner());
            let _ = h.record(us);
        }
    }

    /// A request whose response carries an error code (or could not be answered).
    pub(crate) fn error(&self, api: ApiKey) {
        if let Some(m) = index(api).and_then(|i| self.apis.get(i)) {
            m.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flow(&self, topic: &str, partition: u32, f: impl FnOnce(&mut Flow)) {
        let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        match flows.get_mut(&(topic.to_string(), partition)) {
            Some(flow) => f(flow),
            None => f(flows.entry((topic.to_string(), partition)).or_default()),
        }
    }

    /// Records appended through Produce.
    pub(crate) fn produced(&self, topic: &str, partition: u32, bytes: usize, records: u64) {
        self.flow(topic, partition, |f| {
            f.bytes_in += bytes as u64;
            f.records_in += records;
        });
    }

    /// Records served through Fetch.
    pub(crate) fn fetched(&self, topic: &str, partition: u32, bytes: usize, records: u64) {
        if bytes > 0 {
            self.flow(topic, partition, |f| {
                f.bytes_out += bytes as u64;
                f.records_out += records;
            });
        }
    }
}

/// Writes one metric family's header.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Label values are topic, group and API names; escape what the text format reserves.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition of everything above plus the log and the groups.
pub(crate) fn render(b: &Broker) -> String {
    let m = &b.metrics;
    let mut out = String::with_capacity(16 * 1024);
    render_apis(m, &mut out);
    family(
        &mut out,
        "weir_kafka_connections",
        "gauge",
        "Open Kafka connections.",
    );
    let _ = writeln!(
        out,
        "weir_kafka_connections {}",
        m.connections_open.load(Ordering::Relaxed)
    );
    for (name, v, help) in [
        (
            "weir_kafka_connections_accepted_total",
            &m.connections_accepted,
            "Kafka connections accepted.",
        ),
        (
            "weir_kafka_connections_rejected_total",
            &m.connections_rejected,
            "Connections closed at once because the connection limit was reached.",
        ),
        (
            "weir_kafka_connections_failed_total",
            &m.connections_failed,
            "Connections closed because a frame could not be answered.",
        ),
    ] {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
    }
    render_fsync(b, &mut out);
    render_partitions(b, &mut out);
    render_groups(b, &mut out);
    out
}

fn render_apis(m: &Metrics, out: &mut String) {
    family(
        out,
        "weir_kafka_requests_total",
        "counter",
        "Kafka requests handled, by API.",
    );
    for (i, (k, _, _)) in SUPPORTED.iter().enumerate() {
        let _ = writeln!(
            out,
            "weir_kafka_requests_total{{api=\"{}\"}} {}",
            name_of(*k),
            m.apis[i].requests.load(Ordering::Relaxed)
        );
    }
    family(
        out,
        "weir_kafka_request_errors_total",
        "counter",
        "Kafka requests answered with an error code or not answered, by API.",
    );
    for (i, (k, _, _)) in SUPPORTED.iter().enumerate() {
        let _ = writeln!(
            out,
            "weir_kafka_request_errors_total{{api=\"{}\"}} {}",
            name_of(*k),
            m.apis[i].errors.load(Ordering::Relaxed)
        );
    }
    family(
        out,
        "weir_kafka_request_latency_seconds",
        "summary",
        "Time from reading a request to having its response, by API.",
    );
    for (i, (k, _, _)) in SUPPORTED.iter().enumerate() {
        let h = m.apis[i]
            .latency_us
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if h.is_empty() {
            continue;
        }
        let api = name_of(*k);
        for q in QUANTILES {
            let _ = writeln!(
                out,
                "weir_kafka_request_latency_seconds{{api=\"{api}\",quantile=\"{q}\"}} {}",
                h.value_at_quantile(q) as f64 / 1e6
            );
        }
        let sum: f64 = h
            .iter_recorded()
            .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
            .sum();
        let _ = writeln!(
            out,
            "weir_kafka_request_latency_seconds_sum{{api=\"{api}\"}} {}",
            sum / 1e6
        );
        let _ = writeln!(
            out,
            "weir_kafka_request_latency_seconds_count{{api=\"{api}\"}} {}",
            h.len()
        );
    }
}

fn render_fsync(b: &Broker, out: &mut String) {
    let f = b.log.fsync_latency();
    family(
        out,
        "weir_log_fsync_seconds",
        "histogram",
        "Duration of the fdatasync calls that acknowledge appends.",
    );
    for (le, n) in &f.buckets {
        let _ = writeln!(out, "weir_log_fsync_seconds_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "weir_log_fsync_seconds_bucket{{le=\"+Inf\"}} {}",
        f.count
    );
    let _ = writeln!(out, "weir_log_fsync_seconds_sum {}", f.sum_seconds);
    let _ = writeln!(out, "weir_log_fsync_seconds_count {}", f.count);
}

fn render_partitions(b: &Broker, out: &mut String) {
    let mut offsets = String::new();
    for topic in b.log.list_topics() {
        let Ok(d) = b.log.describe_topic(&topic) else {
            continue;
        };
        for p in &d.partitions {
            let labels = format!("topic=\"{}\",partition=\"{}\"", esc(&topic), p.id.0);
            let _ = writeln!(
                offsets,
                "weir_log_end_offset{{{labels}}} {}",
                p.high_watermark.0
            );
            let _ = writeln!(
                offsets,
                "weir_log_start_offset{{{labels}}} {}",
                p.log_start.0
            );
            let _ = writeln!(offsets, "weir_log_size_bytes{{{labels}}} {}", p.bytes);
        }
    }
    family(
        out,
        "weir_log_end_offset",
        "gauge",
        "High watermark per partition.",
    );
    family(
        out,
        "weir_log_start_offset",
        "gauge",
        "First offset still in the log, per partition.",
    );
    family(
        out,
        "weir_log_size_bytes",
        "gauge",
        "Bytes in a partition's segments.",
    );
    out.push_str(&offsets);
    let flows = b
        .metrics
        .flows
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for (name, help, get) in [
        (
            "weir_kafka_bytes_in_total",
            "Record batch bytes appended through Produce.",
            (|f: &Flow| f.bytes_in) as fn(&Flow) -> u64,
        ),
        (
            "weir_kafka_records_in_total",
            "Records appended through Produce.",
            |f: &Flow| f.records_in,
        ),
        (
            "weir_kafka_bytes_out_total",
            "Record batch bytes served through Fetch.",
            |f: &Flow| f.bytes_out,
        ),
        (
            "weir_kafka_records_out_total",
            "Records served through Fetch (whole batches).",
            |f: &Flow| f.records_out,
        ),
    ] {
        family(out, name, "counter", help);
        for ((topic, p), f) in &flows {
            let _ = writeln!(
                out,
                "{name}{{topic=\"{}\",partition=\"{p}\"}} {}",
                esc(topic),
                get(f)
            );
        }
    }
}

fn render_groups(b: &Broker, out: &mut String) {
    family(
        out,
        "weir_group_lag",
        "gauge",
        "Records between a group's committed offset and the end of the partition.",
    );
    for (group, _) in b.groups.list_groups() {
        let Ok(lags) = b.groups.lag(&group, &[]) else {
            continue;
        };
        for l in lags {
            let _ = writeln!(
                out,
                "weir_group_lag{{group=\"{}\",topic=\"{}\",partition=\"{}\"}} {}",
                esc(&group),
                esc(&l.topic),
                l.partition,
                l.lag
            );
        }
    }
}
