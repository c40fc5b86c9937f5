//! ListOffsets: the earliest (-2) or latest (-1) offset of a partition — under
//! `read_committed` the last stable offset — or the first offset whose timestamp is at or
//! after a given time (Kafka's `offsetsForTimes`), with that record's timestamp.

use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;
use weir_log::{Log, LogError, Offset, PartitionId, Timestamp};

use super::{respond, Head, Reply};
use crate::broker::Broker;
use crate::error::{log_code, ConnError};

/// Kafka's special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

pub(crate) fn list_offsets(
    b: &Arc<Broker>,
    h: &Head,
    req: ListOffsetsRequest,
) -> Result<Reply, ConnError> {
    let committed = req.isolation_level == 1;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let r = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    match lookup(&b.log, &t.name, p.partition_index, p.timestamp, committed) {
                        Ok((offset, ts)) => r.with_offset(offset).with_timestamp(ts),
                        Err(code) => r
                            .with_error_code(code.code())
                            .with_offset(-1)
                            .with_timestamp(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    let body = ListOffsetsResponse::default().with_topics(topics);
    Ok(Reply::Now(respond(h, &body)?))
}

/// (offset, timestamp) for one partition; timestamp -1 for the special lookups.
fn lookup(
    log: &Log,
    topic: &str,
    partition: i32,
    timestamp: i64,
    committed: bool,
) -> Result<(i64, i64), ResponseError> {
    let p = u32::try_from(partition)
        .map(PartitionId)
        .map_err(|_| ResponseError::UnknownTopicOrPartition)?;
    let code = |e: LogError| log_code(&e);
    match timestamp {
        LATEST if committed => Ok((log.last_stable_offset(topic, p).map_err(code)?.0, -1)),
        LATEST => Ok((log.latest_offset(topic, p).map_err(code)?.0, -1)),
        EARLIEST => Ok((log.earliest_offset(topic, p).map_err(code)?.0, -1)),
        ts if ts >= 0 => match log
            .offset_for_timestamp(topic, p, Timestamp(ts))
            .map_err(code)?
        {
            Some(offset) => Ok((
                offset.0,
                record_timestamp(log, topic, p, offset).unwrap_or(ts),
            )),
            // No record that late: Kafka answers offset -1, timestamp -1.
            None => Ok((-1, -1)),
        },
        _ => Err(ResponseError::InvalidRequest),
    }
}

fn record_timestamp(log: &Log, topic: &str, p: PartitionId, offset: Offset) -> Option<i64> {
    let fetch = log.read(topic, p, offset, 1).ok()?;
    let ts = fetch.records().next()?.ok()?.timestamp.0;
    Some(ts)
}
