//! CreateTopics and DeleteTopics. Topic configs use Kafka's own keys (validated by the log);
//! a replication factor above 1 is refused as a one-broker Kafka refuses it, since Weir keeps
//! one copy. Creating and deleting fsync directories, so they run off the async workers.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::ResponseError;
use weir_log::TopicConfig;

use super::metadata::{topic_by_id, topic_uuid};
use super::{later, s, Head, Reply};
use crate::broker::Broker;
use crate::error::{log_code, ConnError};
use crate::limits::{AUTO_CREATE_PARTITIONS, CREATE_PARTITIONS_MAX};

pub(crate) fn create_topics(
    b: &Arc<Broker>,
    h: &Head,
    req: CreateTopicsRequest,
) -> Result<Reply, ConnError> {
    let (b, version) = (b.clone(), h.version);
    Ok(later(h, move || {
        let topics = req
            .topics
            .into_iter()
            .map(|t| {
                let name = t.name.to_string();
                let partitions = if t.num_partitions < 0 {
                    AUTO_CREATE_PARTITIONS as i32
                } else {
                    t.num_partitions
                };
                let configs: BTreeMap<String, String> = t
                    .configs
                    .iter()
                    .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                    .collect();
                let outcome = create_one(
                    &b,
                    &name,
                    partitions,
                    t.replication_factor,
                    configs,
                    req.validate_only,
                );
                let mut r = CreatableTopicResult::default().with_name(t.name);
                match outcome {
                    Ok(()) => {
                        if version >= 5 {
                            r = r.with_num_partitions(partitions).with_replication_factor(1);
                        }
                        if version >= 7 {
                            r = r.with_topic_id(topic_uuid(&b, &name).unwrap_or_default());
                        }
                    }
                    Err((code, message)) => {
                        r = r
                            .with_error_code(code.code())
                            .with_error_message(Some(s(message)));
                        if version >= 5 {
                            r = r.with_num_partitions(-1).with_replication_factor(-1);
                        }
                    }
                }
                r
            })
            .collect();
        CreateTopicsResponse::default().with_topics(topics)
    }))
}

fn create_one(
    b: &Broker,
    name: &str,
    partitions: i32,
    replication: i16,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    if partitions == 0 || partitions > CREATE_PARTITIONS_MAX {
        return Err((
            ResponseError::InvalidPartitions,
            format!("{partitions} partitions; between 1 and {CREATE_PARTITIONS_MAX} are allowed"),
        ));
    }
    if replication > 1 {
        return Err((
            ResponseError::InvalidReplicationFactor,
            format!("replication factor {replication}: Weir keeps one copy (use 1 or -1)"),
        ));
    }
    if validate_only {
        if b.log.partition_count(name).is_ok() {
            return Err((
                ResponseError::TopicAlreadyExists,
                format!("topic `{name}` exists"),
            ));
        }
        return TopicConfig::from_overrides(partitions as u32, &configs)
            .map(|_| ())
            .map_err(|e| (log_code(&e), e.to_string()));
    }
    b.log
        .create_topic(name, partitions as u32, configs)
        .map_err(|e| (log_code(&e), e.to_string()))
}

pub(crate) fn delete_topics(
    b: &Arc<Broker>,
    h: &Head,
    req: DeleteTopicsRequest,
) -> Result<Reply, ConnError> {
    let (b, version) = (b.clone(), h.version);
    Ok(later(h, move || {
        let names: Vec<Option<String>> = if version >= 6 {
            req.topics
                .iter()
                .map(|t| match &t.name {
                    Some(n) => Some(n.to_string()),
                    None => topic_by_id(&b, t.topic_id),
                })
                .collect()
        } else {
            req.topic_names
                .iter()
                .map(|n| Some(n.to_string()))
                .collect()
        };
        let responses = names
            .into_iter()
            .map(|name| {
                let r = DeletableTopicResult::default()
                    .with_name(name.clone().map(|n| TopicName(s(n))));
                let result = match &name {
                    Some(n) if crate::broker::is_internal(n) => {
                        Err(crate::broker::internal_refused(n))
                    }
                    Some(n) => b
                        .log
                        .delete_topic(n)
                        .map_err(|e| (log_code(&e), e.to_string())),
                    None => Err((
                        ResponseError::UnknownTopicId,
                        "unknown topic id".to_string(),
                    )),
                };
                match result {
                    Ok(()) => r,
                    Err((code, message)) => {
                        let r = r.with_error_code(code.code());
                        if version >= 5 {
                            r.with_error_message(Some(s(message)))
                        } else {
                            r
                        }
                    }
                }
            })
            .collect();
        DeleteTopicsResponse::default().with_responses(responses)
    }))
}
