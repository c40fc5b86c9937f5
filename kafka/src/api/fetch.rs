//! Fetch: stored RecordBatch bytes are served exactly as they are on disk (no decoding), with
//! the high watermark, last stable offset and log start of each partition, and under
//! `read_committed` the aborted transactions that overlap what is returned (the client drops
//! their records with the help of the control batches). A fetch that finds fewer than
//! `min_bytes` waits up to `max_wait_ms` for appends to any of its topics without holding a
//! thread: it registers append listeners before reading, so no append is missed between the
//! read and the wait.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::select_all;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId, TopicName};
use kafka_protocol::ResponseError;
use tokio::time::Instant;
use uuid::Uuid;
use weir_log::{Isolation, Log, LogError, Offset, PartitionId};

use super::metadata::topic_by_id;
use super::{respond, s, Head, Reply};
use crate::broker::Broker;
use crate::error::{log_code, ConnError};
use crate::limits::{FETCH_RESPONSE_BYTES_MAX, FETCH_WAIT_MAX};

/// One partition a fetch asks for.
#[derive(Debug, Clone)]
struct Want {
    /// `None` when the request named an unknown topic id.
    topic: Option<String>,
    partition: i32,
    offset: i64,
    max_bytes: usize,
}

/// What the request asks for, owned so a long poll can re-read it.
#[derive(Debug, Clone)]
struct Plan {
    /// The request's topics as (name, id), in request order.
    topics: Vec<(Option<String>, Uuid)>,
    /// Each partition with the index of its topic in `topics`.
    wants: Vec<(usize, Want)>,
    isolation: Isolation,
    min_bytes: usize,
    max_bytes: usize,
}

pub(crate) fn fetch(b: &Arc<Broker>, h: &Head, req: FetchRequest) -> Result<Reply, ConnError> {
    let plan = plan(b, h, &req);
    let (body, bytes) = read_all(b, h, &plan);
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MAX);
    if bytes >= plan.min_bytes || wait.is_zero() {
        return Ok(Reply::Now(respond(h, &body)?));
    }
    let deadline = Instant::now() + wait;
    let (b, h) = (b.clone(), h.clone());
    Ok(Reply::Later(Box::pin(async move {
        loop {
            let listeners: Vec<_> = plan
                .wants
                .iter()
                .filter_map(|(_, w)| w.topic.as_deref())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .filter_map(|t| b.log.listen(t).ok())
                .map(|l| Box::pin(l.appended()))
                .collect();
            let (body, bytes) = read_all(&b, &h, &plan);
            if bytes >= plan.min_bytes || Instant::now() >= deadline || listeners.is_empty() {
                return respond(&h, &body).map(Some);
            }
            tokio::select! {
                _ = select_all(listeners) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    })))
}

fn plan(b: &Broker, h: &Head, req: &FetchRequest) -> Plan {
    let mut wants = Vec::new();
    let mut topics = Vec::new();
    for t in &req.topics {
        let (topic, topic_id) = if h.version >= 13 {
            (topic_by_id(b, t.topic_id), t.topic_id)
        } else {
            (Some(t.topic.to_string()), Uuid::nil())
        };
        topics.push((topic.clone(), topic_id));
        for p in &t.partitions {
            wants.push((
                topics.len() - 1,
                Want {
                    topic: topic.clone(),
                    partition: p.partition,
                    offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes.max(0) as usize,
                },
            ));
        }
    }
    Plan {
        topics,
        wants,
        isolation: if req.isolation_level == 1 {
            Isolation::ReadCommitted
        } else {
            Isolation::ReadUncommitted
        },
        min_bytes: req.min_bytes.max(0) as usize,
        max_bytes: (req.max_bytes.max(0) as usize).min(FETCH_RESPONSE_BYTES_MAX),
    }
}

/// Reads every wanted partition within the response's byte budget; returns the response
/// and the bytes of records it carries.
fn read_all(b: &Broker, h: &Head, plan: &Plan) -> (FetchResponse, usize) {
    let mut budget = plan.max_bytes;
    let mut total = 0usize;
    let mut topics: Vec<FetchableTopicResponse> = plan
        .topics
        .iter()
        .map(|(name, id)| {
            if h.version >= 13 {
                FetchableTopicResponse::default().with_topic_id(*id)
            } else {
                FetchableTopicResponse::default()
                    .with_topic(TopicName(s(name.clone().unwrap_or_default())))
            }
        })
        .collect();
    for (i, w) in &plan.wants {
        let data = match &w.topic {
            Some(topic) => read_one(b, topic, w, plan.isolation, &mut budget, &mut total),
            None => error_data(w.partition, ResponseError::UnknownTopicId),
        };
        if let Some(t) = topics.get_mut(*i) {
            t.partitions.push(data);
        }
    }
    (FetchResponse::default().with_responses(topics), total)
}

fn read_one(
    b: &Broker,
    topic: &str,
    w: &Want,
    isolation: Isolation,
    budget: &mut usize,
    total: &mut usize,
) -> PartitionData {
    let (log, metrics) = (&b.log, &b.metrics);
    let Ok(partition) = u32::try_from(w.partition).map(PartitionId) else {
        return error_data(w.partition, ResponseError::UnknownTopicOrPartition);
    };
    let max = w.max_bytes.min(*budget);
    let read = if max == 0 {
        // The response is full: report the partition's offsets without records.
        log.read_isolated(topic, partition, Offset(w.offset), 0, isolation)
            .map(|mut f| {
                f.batches = Bytes::new();
                f
            })
    } else {
        log.read_isolated(topic, partition, Offset(w.offset), max, isolation)
    };
    let fetch = match read {
        Ok(f) => f,
        Err(e) => return read_error(log, topic, partition, w.partition, &e),
    };
    let n = fetch.batches.len();
    *budget = budget.saturating_sub(n);
    *total += n;
    let records: u64 = weir_log::BatchIter::new(&fetch.batches)
        .filter_map(|b| b.ok())
        .map(|b| b.header.record_count.max(0) as u64)
        .sum();
    metrics.fetched(topic, partition.0, n, records);
    let last_stable = match isolation {
        Isolation::ReadCommitted => fetch.last_stable,
        Isolation::ReadUncommitted => log
            .last_stable_offset(topic, partition)
            .unwrap_or(fetch.high_watermark),
    };
    let aborted = (isolation == Isolation::ReadCommitted).then(|| {
        fetch
            .aborted
            .iter()
            .map(|a| {
                AbortedTransaction::default()
                    .with_producer_id(ProducerId(a.producer_id))
                    .with_first_offset(a.first_offset)
            })
            .collect()
    });
    PartitionData::default()
        .with_partition_index(w.partition)
        .with_high_watermark(fetch.high_watermark.0)
        .with_last_stable_offset(last_stable.0)
        .with_log_start_offset(fetch.log_start.0)
        .with_aborted_transactions(aborted)
        .with_records(Some(fetch.batches))
}

fn read_error(log: &Log, topic: &str, p: PartitionId, index: i32, e: &LogError) -> PartitionData {
    let data = error_data(index, log_code(e));
    if matches!(e, LogError::OffsetOutOfRange { .. }) {
        return data
            .with_high_watermark(log.latest_offset(topic, p).map_or(-1, |o| o.0))
            .with_log_start_offset(log.earliest_offset(topic, p).map_or(-1, |o| o.0));
    }
    data
}

fn error_data(index: i32, code: ResponseError) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(code.code())
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_records(Some(Bytes::new()))
}
