//! Attributes both ways: a queue's SQS attributes (`VisibilityTimeout`, `RedrivePolicy`, …)
//! to and from [`QueueConfig`]; a message's attributes to and from record headers, with
//! SQS's MD5 digests of bodies and attributes.
//!
//! Message attributes are record headers of the same names (what Kafka consumers and
//! filters see); data types other than `String` are kept in the header
//! [`weir_queue::HEADER_ATTRIBUTE_TYPES`] (JSON), so a `Number` or `Binary` comes back as it
//! was sent.

use std::collections::BTreeMap;

use base64::Engine;
use bytes::Bytes;
use md5::{Digest, Md5};
use serde::Deserialize;
use serde_json::{json, Value};
use weir_log::Header;
use weir_queue::{Queue, QueueConfig, QueueStats, Redrive, HEADER_ATTRIBUTE_TYPES};

use crate::auth::hex;
use crate::error::SqsError;

/// The account id in queue URLs and ARNs (ElasticMQ's too).
pub const ACCOUNT_ID: &str = "000000000000";
/// The region in ARNs when a request names none.
pub const DEFAULT_REGION: &str = "us-east-1";
/// Most message attributes per message (SQS's limit).
pub const MESSAGE_ATTRIBUTES_MAX: usize = 10;

/// A queue's ARN.
pub fn arn(region: &str, name: &str) -> String {
    let region = if region.is_empty() {
        DEFAULT_REGION
    } else {
        region
    };
    format!("arn:aws:sqs:{region}:{ACCOUNT_ID}:{name}")
}

/// The queue an ARN names.
pub fn name_of_arn(arn: &str) -> Result<&str, SqsError> {
    match arn.split(':').collect::<Vec<_>>()[..] {
        ["arn", _, "sqs", _, _, name] if !name.is_empty() => Ok(name),
        _ => Err(SqsError::invalid_parameter(format!(
            "`{arn}` is not a queue's ARN"
        ))),
    }
}

fn seconds(key: &str, value: &str, max: i64) -> Result<i64, SqsError> {
    match value.trim().parse::<i64>() {
        Ok(s) if (0..=max).contains(&s) => Ok(s * 1000),
        _ => Err(SqsError::invalid_attribute_value(format!(
            "Invalid value for the parameter {key}: `{value}` (0 to {max} seconds)"
        ))),
    }
}

fn boolean(key: &str, value: &str) -> Result<bool, SqsError> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(SqsError::invalid_attribute_value(format!(
            "Invalid value for the parameter {key}: `{value}` (true or false)"
        ))),
    }
}

/// Weir's attribute: partitions of the queue's topic (CreateQueue; GetQueueAttributes `All`).
pub const WEIR_PARTITIONS: &str = "WeirPartitions";
/// Weir's attribute: tracked messages by delivery count, as JSON (GetQueueAttributes, only
/// when named).
pub const WEIR_DELIVERY_COUNTS: &str = "WeirDeliveryCounts";

/// Attributes SQS knows that Weir keeps as given (no behaviour of their own here).
const KEPT_AS_GIVEN: &[&str] = &[
    "MaximumMessageSize",
    "Policy",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
    "DeduplicationScope",
    "FifoThroughputLimit",
    "RedriveAllowPolicy",
];

/// A queue's settings from CreateQueue's attributes.
pub fn config_from(
    name: &str,
    attributes: &BTreeMap<String, String>,
) -> Result<QueueConfig, SqsError> {
    let mut c = QueueConfig {
        fifo: name.ends_with(".fifo"),
        ..QueueConfig::default()
    };
    for (key, value) in attributes {
        match key.as_str() {
            "FifoQueue" => c.fifo = boolean(key, value)?,
            WEIR_PARTITIONS => {
                c.partitions = value.trim().parse().map_err(|_| {
                    SqsError::invalid_attribute_value(format!("{WEIR_PARTITIONS} `{value}`"))
                })?
            }
            _ => apply(&mut c, key, value)?,
        }
    }
    check_kind(name, &c)?;
    Ok(c)
}

/// SetQueueAttributes: `attributes` applied to a queue's settings (what only CreateQueue
/// sets — FIFO or not, partitions — refused).
pub fn update_config(
    name: &str,
    c: &mut QueueConfig,
    attributes: &BTreeMap<String, String>,
) -> Result<(), SqsError> {
    for (key, value) in attributes {
        match key.as_str() {
            "FifoQueue" | WEIR_PARTITIONS => return Err(SqsError::fixed_attribute(key)),
            // An empty policy removes it.
            "RedrivePolicy" if value.trim().is_empty() => c.redrive = None,
            _ => apply(c, key, value)?,
        }
    }
    check_kind(name, c)
}

/// One attribute both CreateQueue and SetQueueAttributes take.
fn apply(c: &mut QueueConfig, key: &str, value: &str) -> Result<(), SqsError> {
    match key {
        "VisibilityTimeout" => c.visibility_ms = seconds(key, value, 43_200)?,
        "DelaySeconds" => c.delay_ms = seconds(key, value, 900)?,
        "MessageRetentionPeriod" => c.retention_ms = seconds(key, value, 1_209_600)?.max(60_000),
        "ReceiveMessageWaitTimeSeconds" => c.receive_wait_ms = seconds(key, value, 20)?,
        "ContentBasedDeduplication" => c.content_dedup = boolean(key, value)?,
        "RedrivePolicy" => c.redrive = Some(redrive_policy(value)?),
        k if KEPT_AS_GIVEN.contains(&k) => {
            c.attributes.insert(key.to_string(), value.to_string());
        }
        _ => return Err(SqsError::invalid_attribute_name(key)),
    }
    Ok(())
}

/// FIFO settings only on FIFO queues, which are named so.
fn check_kind(name: &str, c: &QueueConfig) -> Result<(), SqsError> {
    if c.fifo && !name.ends_with(".fifo") {
        return Err(SqsError::invalid_parameter(
            "The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, must end with .fifo suffix",
        ));
    }
    if c.content_dedup && !c.fifo {
        return Err(SqsError::invalid_attribute_name(
            "ContentBasedDeduplication",
        ));
    }
    Ok(())
}

fn redrive_policy(value: &str) -> Result<Redrive, SqsError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Policy {
        dead_letter_target_arn: String,
        max_receive_count: Value,
    }
    let bad = |why: String| {
        SqsError::invalid_attribute_value(format!(
            "Invalid value for the parameter RedrivePolicy: {why}"
        ))
    };
    let p: Policy = serde_json::from_str(value).map_err(|e| bad(e.to_string()))?;
    let count = match &p.max_receive_count {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .and_then(|n| u32::try_from(n).ok())
    .ok_or_else(|| bad("maxReceiveCount must be a number from 1 to 1000".into()))?;
    Ok(Redrive {
        dead_letter_queue: name_of_arn(&p.dead_letter_target_arn)?.to_string(),
        max_receive_count: count,
    })
}

/// GetQueueAttributes: the attributes asked for (`All` for every one).
pub fn queue_attributes(
    q: &Queue,
    stats: &QueueStats,
    now_ms: i64,
    region: &str,
    names: &[String],
) -> Result<BTreeMap<String, String>, SqsError> {
    let c = q.config();
    let mut all = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        all.insert(k.to_string(), v);
    };
    put("QueueArn", arn(region, q.name()));
    put("VisibilityTimeout", (c.visibility_ms / 1000).to_string());
    put("DelaySeconds", (c.delay_ms / 1000).to_string());
    put(
        "MessageRetentionPeriod",
        (c.retention_ms / 1000).to_string(),
    );
    put(
        "ReceiveMessageWaitTimeSeconds",
        (c.receive_wait_ms / 1000).to_string(),
    );
    put(
        "MaximumMessageSize",
        weir_queue::MESSAGE_BYTES_MAX.to_string(),
    );
    put("ApproximateNumberOfMessages", stats.visible.to_string());
    put(
        "ApproximateNumberOfMessagesNotVisible",
        stats.in_flight.to_string(),
    );
    put(
        "ApproximateNumberOfMessagesDelayed",
        stats.delayed.to_string(),
    );
    let age = stats
        .oldest_timestamp
        .map_or(0, |t| (now_ms - t).max(0) / 1000);
    put("ApproximateAgeOfOldestMessage", age.to_string());
    put("CreatedTimestamp", (q.created_ms() / 1000).to_string());
    let modified = match c.modified_ms {
        0 => c.created_ms,
        m => m,
    };
    put("LastModifiedTimestamp", (modified / 1000).to_string());
    if let Some(r) = &c.redrive {
        let policy = json!({
            "deadLetterTargetArn": arn(region, &r.dead_letter_queue),
            "maxReceiveCount": r.max_receive_count,
        });
        put("RedrivePolicy", policy.to_string());
    }
    if c.fifo {
        put("FifoQueue", "true".into());
        put("ContentBasedDeduplication", c.content_dedup.to_string());
    }
    put(WEIR_PARTITIONS, c.partitions.to_string());
    for (k, v) in &c.attributes {
        put(k, v.clone());
    }
    if names.iter().any(|n| n == "All") {
        return Ok(all);
    }
    all.insert(
        WEIR_DELIVERY_COUNTS.to_string(),
        json!(stats.delivery_counts).to_string(),
    );
    let mut out = BTreeMap::new();
    for n in names {
        match all.get(n) {
            Some(v) => {
                out.insert(n.clone(), v.clone());
            }
            None if is_known_queue_attribute(n) => {}
            None => return Err(SqsError::invalid_attribute_name(n)),
        }
    }
    Ok(out)
}

fn is_known_queue_attribute(n: &str) -> bool {
    KEPT_AS_GIVEN.contains(&n)
        || ["RedrivePolicy", "FifoQueue", "ContentBasedDeduplication"].contains(&n)
}

/// One message attribute as the JSON protocol carries it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttributeValue {
    /// `String`, `Number`, `Binary`, optionally with a `.custom` suffix.
    pub data_type: String,
    /// The value of string and number types.
    pub string_value: Option<String>,
    /// The value of binary types (base64 in JSON).
    pub binary_value: Option<String>,
}

fn is_binary(data_type: &str) -> bool {
    data_type == "Binary" || data_type.starts_with("Binary.")
}

/// Message attributes as record headers (and the header of their types).
pub fn headers_from(
    attributes: &BTreeMap<String, AttributeValue>,
) -> Result<Vec<Header>, SqsError> {
    if attributes.len() > MESSAGE_ATTRIBUTES_MAX {
        return Err(SqsError::invalid_parameter(format!(
            "Number of message attributes [{}] exceeds the allowed maximum [{MESSAGE_ATTRIBUTES_MAX}].",
            attributes.len()
        )));
    }
    let mut headers = Vec::with_capacity(attributes.len() + 1);
    let mut types = BTreeMap::new();
    for (name, a) in attributes {
        let base = a.data_type.split('.').next().unwrap_or_default();
        let value = match (base, &a.string_value, &a.binary_value) {
            ("String" | "Number", Some(s), _) => Bytes::from(s.clone()),
            ("Binary", _, Some(b)) => Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|e| SqsError::invalid_parameter(format!("attribute {name}: {e}")))?,
            ),
            _ => {
                return Err(SqsError::invalid_parameter(format!(
                    "Message attribute {name} of type `{}` needs a {} value",
                    a.data_type,
                    if base == "Binary" {
                        "BinaryValue"
                    } else {
                        "StringValue"
                    }
                )))
            }
        };
        if a.data_type != "String" {
            types.insert(name.clone(), a.data_type.clone());
        }
        headers.push(Header {
            key: name.clone(),
            value: Some(value),
        });
    }
    if !types.is_empty() {
        headers.push(Header {
            key: HEADER_ATTRIBUTE_TYPES.into(),
            value: Some(Bytes::from(json!(types).to_string())),
        });
    }
    Ok(headers)
}

/// A message's attributes back from its headers: `(name, data type, value)`.
pub fn attributes_of(headers: &[Header]) -> Vec<(String, String, Bytes)> {
    let types: BTreeMap<String, String> = headers
        .iter()
        .find(|h| h.key == HEADER_ATTRIBUTE_TYPES)
        .and_then(|h| serde_json::from_slice(h.value.as_deref()?).ok())
        .unwrap_or_default();
    headers
        .iter()
        // Weir's own headers stay hidden, but for why a message was dead-lettered.
        .filter(|h| {
            !h.key.starts_with(weir_queue::RESERVED_HEADER_PREFIX) || h.key.starts_with("weir.dlq.")
        })
        .map(|h| {
            let value = h.value.clone().unwrap_or_default();
            let data_type = types.get(&h.key).cloned().unwrap_or_else(|| {
                // Headers from Kafka producers: text when it is text.
                match std::str::from_utf8(&value) {
                    Ok(_) => "String".to_string(),
                    Err(_) => "Binary".to_string(),
                }
            });
            (h.key.clone(), data_type, value)
        })
        .collect()
}

/// The JSON form of attributes for ReceiveMessage.
pub fn attributes_json(attributes: &[(String, String, Bytes)]) -> Value {
    let mut out = serde_json::Map::new();
    for (name, data_type, value) in attributes {
        let v = if is_binary(data_type) {
            json!({"DataType": data_type, "BinaryValue": base64::engine::general_purpose::STANDARD.encode(value)})
        } else {
            json!({"DataType": data_type, "StringValue": String::from_utf8_lossy(value)})
        };
        out.insert(name.clone(), v);
    }
    Value::Object(out)
}

/// The MD5 of a body, hex.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex(&Md5::digest(bytes))
}

/// SQS's MD5 of message attributes: for each attribute by name, the name, the data type,
/// a transport byte (1 string, 2 binary) and the value, each length-prefixed (4 bytes,
/// big-endian).
pub fn attributes_md5(attributes: &[(String, String, Bytes)]) -> String {
    let mut sorted: Vec<&(String, String, Bytes)> = attributes.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut buf = Vec::new();
    let put = |bytes: &[u8], buf: &mut Vec<u8>| {
        buf.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        buf.extend_from_slice(bytes);
    };
    for (name, data_type, value) in sorted {
        put(name.as_bytes(), &mut buf);
        put(data_type.as_bytes(), &mut buf);
        buf.push(if is_binary(data_type) { 2 } else { 1 });
        put(value, &mut buf);
    }
    md5_hex(&buf)
}

/// Whether a name is chosen by a ReceiveMessage's `MessageAttributeNames` (`All`, `.*`,
/// a `prefix.*`, or the name itself).
pub fn wanted(name: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| {
        p == "All"
            || p == ".*"
            || p == name
            || p.strip_suffix(".*").is_some_and(|prefix| {
                name.starts_with(prefix) && name[prefix.len()..].starts_with('.')
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_of_a_body() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn arns_and_patterns() {
        assert_eq!(
            name_of_arn("arn:aws:sqs:us-east-1:000000000000:dlq"),
            Ok("dlq")
        );
        assert!(name_of_arn("dlq").is_err());
        assert!(wanted("a.b", &["a.*".to_string()]));
        assert!(!wanted("ab", &["a.*".to_string()]));
        assert!(wanted("x", &["All".to_string()]));
    }
}
