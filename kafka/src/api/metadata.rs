//! Metadata: topics with their partitions (all led by this node), this node as the only
//! broker and controller, topic ids (v10+), and topic auto-creation as in Kafka
//! (`auto.create.topics.enable`, true by default): librdkafka-based tools produce to a topic
//! that does not exist yet by asking for its metadata.

use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::{later, respond, s, Head, Reply};
use crate::broker::{Broker, NODE_ID};
use crate::error::{log_code, ConnError};
use crate::limits::AUTO_CREATE_PARTITIONS;

pub(crate) fn metadata(
    b: &Arc<Broker>,
    h: &Head,
    req: MetadataRequest,
) -> Result<Reply, ConnError> {
    // Before v4 the request has no flag and creation follows the broker's setting.
    let may_create = b.auto_create_topics && (h.version < 4 || req.allow_auto_topic_creation);
    let creates = may_create
        && req.topics.iter().flatten().any(|t| {
            t.name
                .as_ref()
                .is_some_and(|n| b.log.partition_count(n).is_err())
        });
    if creates {
        // Creating a topic writes and fsyncs its directory: off the async workers.
        let (b, version) = (b.clone(), h.version);
        return Ok(later(h, move || response(&b, version, req, may_create)));
    }
    Ok(Reply::Now(respond(h, &response(b, h.version, req, false))?))
}

fn response(b: &Broker, version: i16, req: MetadataRequest, may_create: bool) -> MetadataResponse {
    // v0 lists all topics with an empty list; v1+ with a null list.
    let all = match &req.topics {
        None => true,
        Some(t) => t.is_empty() && version == 0,
    };
    let topics = if all {
        b.log
            .list_topics()
            .into_iter()
            .map(|name| describe(b, &name))
            .collect()
    } else {
        req.topics
            .unwrap_or_default()
            .into_iter()
            .map(|t| match t.name {
                Some(name) => requested(b, &name, may_create),
                None => by_id(b, t.topic_id),
            })
            .collect()
    };
    let (host, port) = b.advertised();
    let broker = MetadataResponseBroker::default()
        .with_node_id(BrokerId(NODE_ID))
        .with_host(s(host))
        .with_port(port);
    MetadataResponse::default()
        .with_brokers(vec![broker])
        .with_cluster_id(Some(s(b.cluster_id.clone())))
        .with_controller_id(BrokerId(NODE_ID))
        .with_topics(topics)
}

/// A requested topic: described, created if allowed, or an error entry.
fn requested(b: &Broker, name: &str, may_create: bool) -> MetadataResponseTopic {
    if b.log.partition_count(name).is_err() && may_create {
        match b
            .log
            .ensure_topic(name, AUTO_CREATE_PARTITIONS, Default::default())
        {
            Ok(()) => tracing::info!(topic = name, "created topic on a metadata request"),
            Err(e) => return error_topic(name, log_code(&e)),
        }
    }
    describe(b, name)
}

fn by_id(b: &Broker, id: Uuid) -> MetadataResponseTopic {
    match topic_by_id(b, id) {
        Some(name) => describe(b, &name),
        None => MetadataResponseTopic::default()
            .with_error_code(ResponseError::UnknownTopicId.code())
            .with_topic_id(id),
    }
}

/// A topic's UUID as clients see it.
pub(crate) fn topic_uuid(b: &Broker, name: &str) -> Option<Uuid> {
    b.log.topic_id(name).ok().map(Uuid::from_bytes)
}

/// The topic whose UUID is `id`.
pub(crate) fn topic_by_id(b: &Broker, id: Uuid) -> Option<String> {
    b.log
        .list_topics()
        .into_iter()
        .find(|t| topic_uuid(b, t) == Some(id))
}

fn describe(b: &Broker, name: &str) -> MetadataResponseTopic {
    let count = match b.log.partition_count(name) {
        Ok(n) => n,
        Err(e) => return error_topic(name, log_code(&e)),
    };
    let partitions = (0..count as i32)
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(BrokerId(NODE_ID))
                .with_leader_epoch(0)
                .with_replica_nodes(vec![BrokerId(NODE_ID)])
                .with_isr_nodes(vec![BrokerId(NODE_ID)])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(s(name))))
        .with_topic_id(topic_uuid(b, name).unwrap_or_default())
        .with_is_internal(name.starts_with("__"))
        .with_partitions(partitions)
}

fn error_topic(name: &str, code: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(code.code())
        .with_name(Some(TopicName(s(name))))
}
