//! Request dispatch: decode the header, check the version against what this server
//! advertises, decode the body with `kafka-protocol`'s generated types, hand it to the API's
//! handler, and encode the response frame.
//!
//! Handlers run in request order on the connection's task. Work that completes at once
//! (metadata, a fetch with data) is a [`Reply::Now`]; work that waits (an append's fsync, a
//! long-poll fetch, a group join) is a [`Reply::Later`] future, so one connection can have
//! several requests in flight while its responses still leave in request order. Appends are
//! submitted to the log inside `dispatch`, in request order, which keeps an idempotent
//! producer's pipelined batches in sequence.

mod admin;
mod fetch;
mod groups;
mod metadata;
mod offsets;
mod produce;
mod topics;
mod txn;

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::error::ConnError;

/// The APIs this server answers and the versions it implements (see README's Kafka section
/// for why each maximum is where it is). Anything else is not advertised.
pub(crate) const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 13),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeCluster, 0, 1),
];

/// A decoded request header with what the response needs.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub(crate) api: ApiKey,
    pub(crate) version: i16,
    pub(crate) correlation_id: i32,
    pub(crate) client_id: String,
    /// The client's address as Kafka shows it (`/IP`).
    pub(crate) client_host: String,
}

/// A handler's outcome: a response frame now, one later, or none (`acks=0` produce).
pub(crate) enum Reply {
    Now(Bytes),
    Later(BoxFuture<'static, Result<Option<Bytes>, ConnError>>),
    /// Like `Later`, but the connection dispatches nothing more until it is done (a produce
    /// whose append waits for room in a full queue, which later appends must not overtake).
    Barrier(BoxFuture<'static, Result<Option<Bytes>, ConnError>>),
    Silent,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reply::Now(_) => "Reply::Now",
            Reply::Later(_) => "Reply::Later",
            Reply::Barrier(_) => "Reply::Barrier",
            Reply::Silent => "Reply::Silent",
        })
    }
}

/// The name of an API key for metrics and logs.
pub(crate) fn name_of(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::AddPartitionsToTxn => "AddPartitionsToTxn",
        ApiKey::AddOffsetsToTxn => "AddOffsetsToTxn",
        ApiKey::EndTxn => "EndTxn",
        ApiKey::TxnOffsetCommit => "TxnOffsetCommit",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::AlterConfigs => "AlterConfigs",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::DeleteRecords => "DeleteRecords",
        ApiKey::OffsetDelete => "OffsetDelete",
        ApiKey::DescribeCluster => "DescribeCluster",
        _ => "an unsupported API",
    }
}

fn supported(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == api)
        .map(|(_, lo, hi)| (*lo, *hi))
}

/// Decodes a request body of the given version.
pub(crate) fn decode<R: Decodable>(h: &Head, body: &mut Bytes) -> Result<R, ConnError> {
    R::decode(body, h.version).map_err(|e| ConnError::Malformed {
        api: name_of(h.api),
        version: h.version,
        reason: e.to_string(),
    })
}

/// Encodes a response frame: length, response header (v0, or v1 for flexible versions;
/// always v0 for ApiVersions, KIP-511), body.
pub(crate) fn respond<R: Encodable>(h: &Head, body: &R) -> Result<Bytes, ConnError> {
    let header_version = if h.api == ApiKey::ApiVersions {
        0
    } else {
        h.api.response_header_version(h.version)
    };
    let header = ResponseHeader::default().with_correlation_id(h.correlation_id);
    let fail = |e: anyhow::Error| ConnError::Encode {
        api: name_of(h.api),
        version: h.version,
        reason: e.to_string(),
    };
    let size = header.compute_size(header_version).map_err(&fail)?
        + body.compute_size(h.version).map_err(&fail)?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(size as i32);
    header.encode(&mut buf, header_version).map_err(&fail)?;
    body.encode(&mut buf, h.version).map_err(&fail)?;
    Ok(buf.freeze())
}

/// Handles one request frame.
pub(crate) fn dispatch(
    broker: &Arc<Broker>,
    mut frame: Bytes,
    peer: std::net::SocketAddr,
) -> Result<Reply, ConnError> {
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api = ApiKey::try_from(key).map_err(|_| ConnError::UnknownApiKey(key))?;
    let header =
        RequestHeader::decode(&mut frame, api.request_header_version(version)).map_err(|e| {
            ConnError::Malformed {
                api: name_of(api),
                version,
                reason: format!("header: {e}"),
            }
        })?;
    let h = Head {
        api,
        version,
        correlation_id: header.correlation_id,
        client_id: header.client_id.map(|c| c.to_string()).unwrap_or_default(),
        client_host: format!("/{}", peer.ip()),
    };
    let in_range = supported(api).is_some_and(|(lo, hi)| (lo..=hi).contains(&version));
    if !in_range {
        if api == ApiKey::ApiVersions {
            return api_versions_reply(&h, ResponseError::UnsupportedVersion.code());
        }
        return Err(ConnError::UnsupportedVersion {
            api: name_of(api),
            version,
        });
    }
    route(broker, &h, &mut frame)
}

fn route(broker: &Arc<Broker>, h: &Head, body: &mut Bytes) -> Result<Reply, ConnError> {
    let b = broker;
    match h.api {
        ApiKey::ApiVersions => api_versions_reply(h, 0),
        ApiKey::Metadata => metadata::metadata(b, h, decode(h, body)?),
        ApiKey::Produce => produce::produce(b, h, decode(h, body)?),
        ApiKey::Fetch => fetch::fetch(b, h, decode(h, body)?),
        ApiKey::ListOffsets => offsets::list_offsets(b, h, decode(h, body)?),
        ApiKey::CreateTopics => topics::create_topics(b, h, decode(h, body)?),
        ApiKey::DeleteTopics => topics::delete_topics(b, h, decode(h, body)?),
        ApiKey::FindCoordinator => groups::find_coordinator(b, h, decode(h, body)?),
        ApiKey::JoinGroup => groups::join_group(b, h, decode(h, body)?),
        ApiKey::SyncGroup => groups::sync_group(b, h, decode(h, body)?),
        ApiKey::Heartbeat => groups::heartbeat(b, h, decode(h, body)?),
        ApiKey::LeaveGroup => groups::leave_group(b, h, decode(h, body)?),
        ApiKey::OffsetCommit => groups::offset_commit(b, h, decode(h, body)?),
        ApiKey::OffsetFetch => groups::offset_fetch(b, h, decode(h, body)?),
        ApiKey::ListGroups => groups::list_groups(b, h, decode(h, body)?),
        ApiKey::DescribeGroups => groups::describe_groups(b, h, decode(h, body)?),
        ApiKey::DeleteGroups => groups::delete_groups(b, h, decode(h, body)?),
        ApiKey::InitProducerId => txn::init_producer_id(b, h, decode(h, body)?),
        ApiKey::AddPartitionsToTxn => txn::add_partitions(b, h, decode(h, body)?),
        ApiKey::AddOffsetsToTxn => txn::add_offsets(b, h, decode(h, body)?),
        ApiKey::TxnOffsetCommit => txn::txn_offset_commit(b, h, decode(h, body)?),
        ApiKey::EndTxn => txn::end_txn(b, h, decode(h, body)?),
        ApiKey::DescribeConfigs => admin::describe_configs(b, h, decode(h, body)?),
        ApiKey::AlterConfigs => admin::alter_configs(b, h, decode(h, body)?),
        ApiKey::IncrementalAlterConfigs => admin::incremental_alter_configs(b, h, decode(h, body)?),
        ApiKey::CreatePartitions => admin::create_partitions(b, h, decode(h, body)?),
        ApiKey::DeleteRecords => admin::delete_records(b, h, decode(h, body)?),
        ApiKey::OffsetDelete => admin::offset_delete(b, h, decode(h, body)?),
        ApiKey::DescribeCluster => admin::describe_cluster(b, h, decode(h, body)?),
        _ => Err(ConnError::UnsupportedVersion {
            api: name_of(h.api),
            version: h.version,
        }),
    }
}

/// ApiVersions: every API this server answers with its version range. A version this
/// server does not know is answered in v0 form with UNSUPPORTED_VERSION and the same list, so
/// the client retries with a version both sides have (KIP-511).
fn api_versions_reply(h: &Head, error_code: i16) -> Result<Reply, ConnError> {
    let keys = SUPPORTED
        .iter()
        .map(|(k, lo, hi)| {
            ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(*lo)
                .with_max_version(*hi)
        })
        .collect();
    let body = ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(keys);
    let h = if error_code != 0 {
        Head {
            version: 0,
            ..h.clone()
        }
    } else {
        h.clone()
    };
    Ok(Reply::Now(respond(&h, &body)?))
}

/// One committed offset of an OffsetCommit or TxnOffsetCommit request, as the coordinators
/// take it. A negative partition index names no partition: it maps to `u32::MAX`, which no
/// topic has, never to partition 0.
pub(crate) fn offset_entry(
    topic: &kafka_protocol::messages::TopicName,
    partition: i32,
    offset: i64,
    metadata: Option<&StrBytes>,
) -> ((String, u32), weir_log::Offset, String) {
    (
        (
            topic.to_string(),
            u32::try_from(partition).unwrap_or(u32::MAX),
        ),
        weir_log::Offset(offset),
        metadata.map(|m| m.to_string()).unwrap_or_default(),
    )
}

/// A string field for a response.
pub(crate) fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// Awaits a handler's future (a coordinator wait that needs no thread), then encodes its
/// response.
pub(crate) fn awaited<R, F>(h: &Head, work: F) -> Reply
where
    R: Encodable + Send + 'static,
    F: std::future::Future<Output = R> + Send + 'static,
{
    let h = h.clone();
    Reply::Later(Box::pin(async move {
        let body = work.await;
        respond(&h, &body).map(Some)
    }))
}

/// Runs blocking coordinator or disk work off the async workers, then encodes its response.
pub(crate) fn later<R, F>(h: &Head, work: F) -> Reply
where
    R: Encodable + Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    let h = h.clone();
    Reply::Later(Box::pin(async move {
        let body = tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| ConnError::Encode {
                api: name_of(h.api),
                version: h.version,
                reason: format!("handler failed: {e}"),
            })?;
        respond(&h, &body).map(Some)
    }))
}
