//! Administration: DescribeConfigs, AlterConfigs and IncrementalAlterConfigs (topic configs
//! with Kafka's keys; the broker's few settings read-only), CreatePartitions (growth only),
//! DeleteRecords (moves the log start offset), OffsetDelete and DescribeCluster. Changes
//! write files and reopen the topic, so they run on the blocking pool.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use weir_log::{LogError, Offset, PartitionId, TopicConfig};

use super::{later, respond, s, Head, Reply};
use crate::broker::{Broker, NODE_ID};
use crate::error::{coord_code, log_code, ConnError};
use crate::limits::AUTO_CREATE_PARTITIONS;

/// Kafka's config resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's config sources.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

type Outcome = Result<(), (ResponseError, String)>;

fn log_err(e: LogError) -> (ResponseError, String) {
    (log_code(&e), e.to_string())
}

/// The broker's settings, as DescribeConfigs reports them (read-only).
fn broker_configs(b: &Broker) -> Vec<(&'static str, String)> {
    vec![
        (
            "auto.create.topics.enable",
            b.auto_create_topics.to_string(),
        ),
        ("num.partitions", AUTO_CREATE_PARTITIONS.to_string()),
        ("default.replication.factor", "1".to_string()),
        ("broker.id", NODE_ID.to_string()),
    ]
}

pub(crate) fn describe_configs(
    b: &Arc<Broker>,
    h: &Head,
    req: DescribeConfigsRequest,
) -> Result<Reply, ConnError> {
    let results = req
        .resources
        .iter()
        .map(|r| {
            let wanted = |k: &str| {
                r.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|w| w.as_str() == k))
            };
            let entry = |name: &str, value: String, source: i8| {
                DescribeConfigsResourceResult::default()
                    .with_name(s(name))
                    .with_value(Some(s(value)))
                    .with_config_source(source)
                    .with_read_only(source == SOURCE_STATIC_BROKER)
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            match r.resource_type {
                RESOURCE_TOPIC => match b.log.describe_topic(&r.resource_name) {
                    Ok(d) => result.with_configs(
                        d.config
                            .into_iter()
                            .filter(|(k, _, _)| wanted(k))
                            .map(|(k, v, set)| {
                                entry(&k, v, if set { SOURCE_TOPIC } else { SOURCE_DEFAULT })
                            })
                            .collect(),
                    ),
                    Err(e) => result
                        .with_error_code(log_code(&e).code())
                        .with_error_message(Some(s(e.to_string()))),
                },
                RESOURCE_BROKER => result.with_configs(
                    broker_configs(b)
                        .into_iter()
                        .filter(|(k, _)| wanted(k))
                        .map(|(k, v)| entry(k, v, SOURCE_STATIC_BROKER))
                        .collect(),
                ),
                other => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(s(format!(
                        "config resource type {other} is not supported"
                    )))),
            }
        })
        .collect();
    let body = DescribeConfigsResponse::default().with_results(results);
    Ok(Reply::Now(respond(h, &body)?))
}

/// A topic's explicit overrides now.
fn overrides(b: &Broker, topic: &str) -> Result<BTreeMap<String, String>, (ResponseError, String)> {
    let d = b.log.describe_topic(topic).map_err(log_err)?;
    Ok(d.config
        .into_iter()
        .filter(|(_, _, set)| *set)
        .map(|(k, v, _)| (k, v))
        .collect())
}

/// Applies (or with `validate_only`, checks) new overrides for a config resource.
fn apply(
    b: &Broker,
    kind: i8,
    name: &str,
    new: BTreeMap<String, String>,
    validate_only: bool,
) -> Outcome {
    if kind == RESOURCE_TOPIC && crate::broker::is_internal(name) {
        return Err(crate::broker::internal_refused(name));
    }
    if kind != RESOURCE_TOPIC {
        return Err((
            ResponseError::InvalidRequest,
            "only topic configs can be changed; the broker's settings are flags of `weir serve`"
                .into(),
        ));
    }
    let partitions = b.log.partition_count(name).map_err(log_err)?;
    TopicConfig::from_overrides(partitions, &new).map_err(log_err)?;
    if validate_only {
        return Ok(());
    }
    b.log.alter_topic_config(name, new).map_err(log_err)
}

/// An outcome as (error code, message) for a response.
fn parts(outcome: Outcome) -> (i16, Option<kafka_protocol::protocol::StrBytes>) {
    match outcome {
        Ok(()) => (0, None),
        Err((code, message)) => (code.code(), Some(s(message))),
    }
}

pub(crate) fn alter_configs(
    b: &Arc<Broker>,
    h: &Head,
    req: AlterConfigsRequest,
) -> Result<Reply, ConnError> {
    let b = b.clone();
    Ok(later(h, move || {
        let responses = req
            .resources
            .into_iter()
            .map(|r| {
                // AlterConfigs replaces the whole set: keys not given return to defaults.
                let new = r
                    .configs
                    .iter()
                    .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                    .collect();
                let outcome = apply(
                    &b,
                    r.resource_type,
                    &r.resource_name,
                    new,
                    req.validate_only,
                );
                let (code, message) = parts(outcome);
                AlterConfigsResourceResponse::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name)
                    .with_error_code(code)
                    .with_error_message(message)
            })
            .collect();
        AlterConfigsResponse::default().with_responses(responses)
    }))
}

fn list_op(current: Option<&String>, value: &str, op: i8) -> String {
    let mut items: Vec<String> = current
        .map(|c| {
            c.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    for v in value.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        if op == OP_APPEND && !items.iter().any(|i| i == v) {
            items.push(v.to_string());
        } else if op == OP_SUBTRACT {
            items.retain(|i| i != v);
        }
    }
    items.join(",")
}

pub(crate) fn incremental_alter_configs(
    b: &Arc<Broker>,
    h: &Head,
    req: IncrementalAlterConfigsRequest,
) -> Result<Reply, ConnError> {
    let b = b.clone();
    Ok(later(h, move || {
        let responses = req
            .resources
            .into_iter()
            .map(|r| {
                let outcome = (|| {
                    let mut new = if r.resource_type == RESOURCE_TOPIC {
                        overrides(&b, &r.resource_name)?
                    } else {
                        BTreeMap::new()
                    };
                    for c in &r.configs {
                        let key = c.name.to_string();
                        let value = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
                        match c.config_operation {
                            OP_SET => drop(new.insert(key, value)),
                            OP_DELETE => drop(new.remove(&key)),
                            op @ (OP_APPEND | OP_SUBTRACT) => {
                                let merged = list_op(new.get(&key), &value, op);
                                new.insert(key, merged);
                            }
                            op => return Err((ResponseError::InvalidRequest, format!("unknown config operation {op}"))),
                        }
                    }
                    apply(&b, r.resource_type, &r.resource_name, new, req.validate_only)
                })();
                let (code, message) = parts(outcome);
                kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name)
                    .with_error_code(code)
                    .with_error_message(message)
            })
            .collect();
        IncrementalAlterConfigsResponse::default().with_responses(responses)
    }))
}

pub(crate) fn create_partitions(
    b: &Arc<Broker>,
    h: &Head,
    req: CreatePartitionsRequest,
) -> Result<Reply, ConnError> {
    let b = b.clone();
    Ok(later(h, move || {
        let results = req
            .topics
            .into_iter()
            .map(|t| {
                let outcome = (|| {
                    let have = b.log.partition_count(&t.name).map_err(log_err)?;
                    if crate::broker::is_internal(&t.name) {
                        return Err(crate::broker::internal_refused(&t.name));
                    }
                    let want = u32::try_from(t.count).unwrap_or(0);
                    if want > crate::limits::CREATE_PARTITIONS_MAX as u32 {
                        return Err((
                            ResponseError::InvalidPartitions,
                            format!(
                                "{want} partitions; at most {} are allowed",
                                crate::limits::CREATE_PARTITIONS_MAX
                            ),
                        ));
                    }
                    if want <= have {
                        return Err((
                            ResponseError::InvalidPartitions,
                            format!(
                                "topic `{}` has {have} partitions; it can only grow",
                                t.name.0
                            ),
                        ));
                    }
                    if req.validate_only {
                        return Ok(());
                    }
                    b.log.create_partitions(&t.name, want).map_err(log_err)
                })();
                let r = CreatePartitionsTopicResult::default().with_name(t.name);
                match outcome {
                    Ok(()) => r,
                    Err((code, message)) => r
                        .with_error_code(code.code())
                        .with_error_message(Some(s(message))),
                }
            })
            .collect();
        CreatePartitionsResponse::default().with_results(results)
    }))
}

pub(crate) fn delete_records(
    b: &Arc<Broker>,
    h: &Head,
    req: DeleteRecordsRequest,
) -> Result<Reply, ConnError> {
    let b = b.clone();
    Ok(later(h, move || {
        let topics = req
            .topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let r = DeleteRecordsPartitionResult::default()
                            .with_partition_index(p.partition_index);
                        let Ok(part) = u32::try_from(p.partition_index).map(PartitionId) else {
                            return r
                                .with_low_watermark(-1)
                                .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                        };
                        if crate::broker::is_internal(&t.name) {
                            return r
                                .with_low_watermark(-1)
                                .with_error_code(ResponseError::InvalidTopicException.code());
                        }
                        // -1 means "up to the high watermark".
                        let before = if p.offset == -1 {
                            b.log.latest_offset(&t.name, part)
                        } else {
                            Ok(Offset(p.offset))
                        };
                        match before.and_then(|o| b.log.delete_records(&t.name, part, o)) {
                            Ok(start) => r.with_low_watermark(start.0),
                            Err(e) => r
                                .with_low_watermark(-1)
                                .with_error_code(log_code(&e).code()),
                        }
                    })
                    .collect();
                DeleteRecordsTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect();
        DeleteRecordsResponse::default().with_topics(topics)
    }))
}

pub(crate) fn offset_delete(
    b: &Arc<Broker>,
    h: &Head,
    req: OffsetDeleteRequest,
) -> Result<Reply, ConnError> {
    let b = b.clone();
    Ok(later(h, move || {
        let partitions: Vec<(String, u32)> = req
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().filter_map(|p| {
                    Some((t.name.to_string(), u32::try_from(p.partition_index).ok()?))
                })
            })
            .collect();
        let result = b.groups.delete_offsets(&req.group_id, &partitions);
        let (top, each) = match &result {
            Ok(()) => (0, 0),
            Err(weir_coord::CoordError::GroupNotEmpty { .. }) => {
                (0, ResponseError::GroupSubscribedToTopic.code())
            }
            Err(e) => (coord_code(e).code(), 0),
        };
        let topics = req
            .topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(each)
                    })
                    .collect();
                OffsetDeleteResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect();
        OffsetDeleteResponse::default()
            .with_error_code(top)
            .with_topics(topics)
    }))
}

pub(crate) fn describe_cluster(
    b: &Arc<Broker>,
    h: &Head,
    _req: DescribeClusterRequest,
) -> Result<Reply, ConnError> {
    let (host, port) = b.advertised();
    let body = DescribeClusterResponse::default()
        .with_cluster_id(s(b.cluster_id.clone()))
        .with_controller_id(BrokerId(NODE_ID))
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(NODE_ID))
            .with_host(s(host))
            .with_port(port)]);
    Ok(Reply::Now(respond(h, &body)?))
}
