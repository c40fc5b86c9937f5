//! Produce: each partition's RecordBatch is validated (CRC, records) and queued to the log as
//! the client sent it, in request order, so an idempotent producer's pipelined batches keep
//! their sequence; the response waits for every append's acknowledgement (the log's flush
//! policy: by default the group-committed fsync). `acks=0` gets no response; `acks=1` and
//! `acks=all` both wait for the fsync, since this node is every partition's only replica.

use std::sync::Arc;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;
use weir_log::{AppendTicket, EncodedBatch, LogError, PartitionId};

use super::{respond, Head, Reply};
use crate::broker::Broker;
use crate::error::{log_code, ConnError};

/// One partition's outcome so far: an error already, an append in flight, or an append
/// waiting for room in the partition's full queue.
enum Pending {
    Failed(ResponseError, String),
    /// An append in flight, with its batch's bytes and records (counted once acknowledged).
    Appending(AppendTicket, usize, u64),
    /// The partition's queue was full: submitted from the blocking pool, which may wait for
    /// room (the log's `append_max_block`) without holding an async worker.
    Deferred(PartitionId, EncodedBatch),
}

pub(crate) fn produce(b: &Arc<Broker>, h: &Head, req: ProduceRequest) -> Result<Reply, ConnError> {
    let acks = req.acks;
    let valid_acks = matches!(acks, -1..=1);
    let mut topics = Vec::with_capacity(req.topic_data.len());
    for t in req.topic_data {
        let name = t.name.to_string();
        let mut parts = Vec::with_capacity(t.partition_data.len());
        for p in t.partition_data {
            let pending = if valid_acks {
                submit(b, &name, p.index, p.records)
            } else {
                Pending::Failed(ResponseError::InvalidRequiredAcks, format!("acks={acks}"))
            };
            parts.push((p.index, pending));
        }
        topics.push((t.name, parts));
    }
    // A deferred append must reach its queue before any later request of this connection
    // appends (an idempotent producer's next batch carries the next sequence; any producer's
    // next batch must stay behind it): the reply holds the connection's later requests back
    // until it is queued.
    let deferred = topics.iter().any(|(_, parts)| {
        parts
            .iter()
            .any(|(_, p)| matches!(p, Pending::Deferred(..)))
    });
    if acks == 0 {
        if !deferred {
            tokio::spawn(log_failures(topics));
            return Ok(Reply::Silent);
        }
        let b = b.clone();
        return Ok(Reply::Barrier(Box::pin(async move {
            tokio::spawn(log_failures(submit_deferred(&b, topics).await));
            Ok(None)
        })));
    }
    let h = h.clone();
    let b = b.clone();
    let work = Box::pin(async move {
        let topics = if deferred {
            submit_deferred(&b, topics).await
        } else {
            topics
        };
        let mut responses = Vec::with_capacity(topics.len());
        for (name, parts) in topics {
            let mut out = Vec::with_capacity(parts.len());
            for (index, p) in parts {
                let r = finish(&b, &name, index, p, h.version).await;
                if r.error_code != 0 {
                    b.metrics.error(h.api);
                }
                out.push(r);
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(out),
            );
        }
        let body = ProduceResponse::default().with_responses(responses);
        respond(&h, &body).map(Some)
    });
    Ok(if deferred {
        Reply::Barrier(work)
    } else {
        Reply::Later(work)
    })
}

type TopicAppends = Vec<(kafka_protocol::messages::TopicName, Vec<(i32, Pending)>)>;

/// `acks=0`: nobody waits for these appends; failures are logged, as Kafka's broker does.
async fn log_failures(topics: TopicAppends) {
    for (_, parts) in topics {
        for (_, p) in parts {
            if let Pending::Appending(t, _, _) = p {
                if let Err(e) = t.await {
                    tracing::warn!(error = %e, "acks=0 append failed");
                }
            }
        }
    }
}

/// Submits the appends whose queue was full, in request order, from the blocking pool.
async fn submit_deferred(b: &Arc<Broker>, topics: TopicAppends) -> TopicAppends {
    let b = b.clone();
    let submitted = tokio::task::spawn_blocking(move || {
        topics
            .into_iter()
            .map(|(name, parts)| {
                let parts = parts
                    .into_iter()
                    .map(|(index, p)| match p {
                        Pending::Deferred(partition, batch) => {
                            (index, queue(&b, &name, partition, batch))
                        }
                        p => (index, p),
                    })
                    .collect();
                (name, parts)
            })
            .collect()
    })
    .await;
    // The blocking task cannot panic (no unwraps); if the pool is gone the server is
    // shutting down and the connection closes with it.
    submitted.unwrap_or_default()
}

/// Validates a partition's batch and queues it without waiting for room: a full queue
/// defers it to the blocking pool.
fn submit(b: &Broker, topic: &str, index: i32, records: Option<bytes::Bytes>) -> Pending {
    let Some(bytes) = records else {
        return Pending::Failed(ResponseError::InvalidRecord, "no records".into());
    };
    if crate::broker::is_internal(topic) {
        let (code, message) = crate::broker::internal_refused(topic);
        return Pending::Failed(code, message);
    }
    let batch = match EncodedBatch::from_bytes(bytes.to_vec()) {
        Ok(batch) => batch,
        Err(e) => {
            let e = LogError::InvalidBatch(e);
            return Pending::Failed(log_code(&e), e.to_string());
        }
    };
    let Ok(partition) = u32::try_from(index) else {
        return Pending::Failed(
            ResponseError::UnknownTopicOrPartition,
            format!("partition {index}"),
        );
    };
    // Markers are the transaction coordinator's alone (Kafka refuses them from clients too).
    if weir_log::BatchHeader::parse(batch.as_bytes()).is_ok_and(|h| h.is_control()) {
        return Pending::Failed(
            ResponseError::InvalidRecord,
            "control batches are written by the transaction coordinator only".into(),
        );
    }
    let (bytes, records) = (batch.len(), batch.record_count() as u64);
    match b.log.try_submit_batch(topic, PartitionId(partition), batch) {
        Ok(Ok(ticket)) => Pending::Appending(ticket, bytes, records),
        Ok(Err(batch)) => Pending::Deferred(PartitionId(partition), batch),
        Err(e) => Pending::Failed(log_code(&e), e.to_string()),
    }
}

/// Queues one validated batch, waiting for room in its partition's queue (the log's
/// `append_max_block`): on the blocking pool only.
fn queue(b: &Broker, topic: &str, partition: PartitionId, batch: EncodedBatch) -> Pending {
    let (bytes, records) = (batch.len(), batch.record_count() as u64);
    match b.log.submit_batch(topic, partition, batch) {
        Ok(ticket) => Pending::Appending(ticket, bytes, records),
        Err(e) => Pending::Failed(log_code(&e), e.to_string()),
    }
}

async fn finish(
    b: &Broker,
    topic: &kafka_protocol::messages::TopicName,
    index: i32,
    p: Pending,
    version: i16,
) -> PartitionProduceResponse {
    let r = PartitionProduceResponse::default()
        .with_index(index)
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1);
    let (code, message) = match p {
        Pending::Failed(code, message) => (code, message),
        // `submit_deferred` submitted every deferred batch before this.
        Pending::Deferred(..) => (
            ResponseError::UnknownServerError,
            "append was not submitted".into(),
        ),
        Pending::Appending(ticket, bytes, records) => match ticket.await {
            Ok(outcome) => {
                b.metrics.produced(topic, index as u32, bytes, records);
                let start = b
                    .log
                    .earliest_offset(topic, PartitionId(index as u32))
                    .map_or(-1, |o| o.0);
                return r
                    .with_base_offset(outcome.base_offset.0)
                    .with_log_append_time_ms(outcome.log_append_time.map_or(-1, |t| t.0))
                    .with_log_start_offset(start);
            }
            Err(e) => (log_code(&e), e.to_string()),
        },
    };
    tracing::debug!(topic = %topic.0, partition = index, error = %message, "produce refused");
    let r = r.with_error_code(code.code());
    // Error messages exist from v8 on; setting one earlier cannot be encoded.
    if version >= 8 {
        r.with_error_message(Some(super::s(message)))
    } else {
        r
    }
}
