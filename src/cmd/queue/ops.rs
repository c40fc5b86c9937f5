//! The `weir queue` commands' work, each a few SQS API calls.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use weir_sqs::SqsClient;

use super::{CreateArgs, ReceiveArgs, SendArgs, SetArgs, SubscribeArgs, REDRIVE_WAIT};

pub(super) fn create(c: &mut SqsClient, a: CreateArgs) -> Result<()> {
    let mut attrs = BTreeMap::from([
        ("VisibilityTimeout", a.visibility.to_string()),
        ("DelaySeconds", a.delay.to_string()),
        ("MessageRetentionPeriod", a.retention.to_string()),
        ("WeirPartitions", a.partitions.to_string()),
    ]);
    if a.fifo {
        attrs.insert("FifoQueue", "true".into());
        attrs.insert("ContentBasedDeduplication", a.content_dedup.to_string());
    }
    if let (Some(dlq), Some(n)) = (&a.dlq, a.max_receives) {
        attrs.insert("RedrivePolicy", redrive_policy(dlq, n));
    }
    c.call(
        "CreateQueue",
        &json!({"QueueName": a.name, "Attributes": attrs}),
    )?;
    println!("created queue {}", a.name);
    Ok(())
}

/// The redrive policy naming `dlq`.
fn redrive_policy(dlq: &str, max_receives: u32) -> String {
    let arn = format!("arn:aws:sqs:us-east-1:000000000000:{dlq}");
    json!({"deadLetterTargetArn": arn, "maxReceiveCount": max_receives}).to_string()
}

pub(super) fn set(c: &mut SqsClient, a: SetArgs) -> Result<()> {
    let url = c.url(&a.name);
    let mut attrs = BTreeMap::new();
    let mut put = |k: &'static str, v: Option<u32>| {
        if let Some(v) = v {
            attrs.insert(k, v.to_string());
        }
    };
    put("VisibilityTimeout", a.visibility);
    put("DelaySeconds", a.delay);
    put("MessageRetentionPeriod", a.retention);
    if let (Some(dlq), Some(n)) = (&a.dlq, a.max_receives) {
        attrs.insert("RedrivePolicy", redrive_policy(dlq, n));
    }
    if a.no_dlq {
        attrs.insert("RedrivePolicy", String::new());
    }
    let mut tags = BTreeMap::new();
    for kv in &a.tags {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--tag takes KEY=VALUE, not `{kv}`"))?;
        tags.insert(k.to_string(), v.to_string());
    }
    if attrs.is_empty() && tags.is_empty() && a.untags.is_empty() {
        anyhow::bail!("nothing to change: give a setting, --tag or --untag");
    }
    if !attrs.is_empty() {
        c.call(
            "SetQueueAttributes",
            &json!({"QueueUrl": url, "Attributes": attrs}),
        )?;
    }
    if !tags.is_empty() {
        c.call("TagQueue", &json!({"QueueUrl": url, "Tags": tags}))?;
    }
    if !a.untags.is_empty() {
        c.call("UntagQueue", &json!({"QueueUrl": url, "TagKeys": a.untags}))?;
    }
    println!("updated queue {}", a.name);
    Ok(())
}

fn attributes(c: &mut SqsClient, name: &str, names: &[&str]) -> Result<Value> {
    let url = c.url(name);
    let r = c.call(
        "GetQueueAttributes",
        &json!({"QueueUrl": url, "AttributeNames": names}),
    )?;
    Ok(r["Attributes"].clone())
}

pub(super) fn describe(c: &mut SqsClient, name: &str) -> Result<()> {
    let all = attributes(c, name, &["All"])?;
    let counts = attributes(c, name, &[weir_sqs::attrs::WEIR_DELIVERY_COUNTS])?;
    let get = |k: &str| all[k].as_str().unwrap_or("-").to_string();
    println!("queue {name}");
    println!(
        "  visible            {}",
        get("ApproximateNumberOfMessages")
    );
    println!(
        "  in flight          {}",
        get("ApproximateNumberOfMessagesNotVisible")
    );
    println!(
        "  delayed            {}",
        get("ApproximateNumberOfMessagesDelayed")
    );
    println!(
        "  oldest message     {} s",
        get("ApproximateAgeOfOldestMessage")
    );
    println!(
        "  settings           visibility {} s, delay {} s, retention {} s, {} partition(s){}",
        get("VisibilityTimeout"),
        get("DelaySeconds"),
        get("MessageRetentionPeriod"),
        get(weir_sqs::attrs::WEIR_PARTITIONS),
        if all["FifoQueue"].as_str() == Some("true") {
            ", FIFO"
        } else {
            ""
        }
    );
    let histogram: BTreeMap<String, u64> = counts[weir_sqs::attrs::WEIR_DELIVERY_COUNTS]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let shown: Vec<String> = histogram
        .iter()
        .map(|(n, count)| format!("{n}×: {count}"))
        .collect();
    println!(
        "  delivery counts    {}",
        if shown.is_empty() {
            "-".into()
        } else {
            shown.join(", ")
        }
    );
    let url = c.url(name);
    let subs = c.call("Weir.ListSubscriptions", &json!({ "QueueUrl": url }))?;
    for s in subs["Subscriptions"].as_array().into_iter().flatten() {
        let mut filters = Vec::new();
        if let Some(k) = s["KeyPattern"].as_str() {
            filters.push(format!("key {k}"));
        }
        if let Some(p) = s["FilterPolicy"].as_str() {
            filters.push(format!("policy {p}"));
        }
        println!(
            "  subscribes to      {}{}",
            s["Topic"].as_str().unwrap_or_default(),
            if filters.is_empty() {
                String::new()
            } else {
                format!(" ({})", filters.join(", "))
            }
        );
    }
    if let Some(policy) = all["RedrivePolicy"].as_str() {
        let p: Value = serde_json::from_str(policy)?;
        let arn = p["deadLetterTargetArn"].as_str().unwrap_or_default();
        let dlq = arn.rsplit(':').next().unwrap_or_default();
        let depth = attributes(c, dlq, &["ApproximateNumberOfMessages"])?;
        println!(
            "  dead-letter queue  {dlq} after {} receives: {} message(s)",
            p["maxReceiveCount"],
            depth["ApproximateNumberOfMessages"].as_str().unwrap_or("-")
        );
    }
    let tags = c.call("ListQueueTags", &json!({ "QueueUrl": url }))?;
    if let Some(tags) = tags["Tags"].as_object().filter(|t| !t.is_empty()) {
        let shown: Vec<String> = tags
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        println!("  tags               {}", shown.join(", "));
    }
    Ok(())
}

pub(super) fn send(c: &mut SqsClient, a: SendArgs) -> Result<()> {
    let url = c.url(&a.name);
    let mut attributes = serde_json::Map::new();
    for kv in &a.attrs {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--attr takes NAME=VALUE, not `{kv}`"))?;
        attributes.insert(k.into(), json!({"DataType": "String", "StringValue": v}));
    }
    let mut one = |body: String| -> Result<()> {
        let mut req =
            json!({"QueueUrl": url, "MessageBody": body, "MessageAttributes": attributes});
        if let Some(g) = &a.group {
            req["MessageGroupId"] = json!(g);
        }
        if let Some(d) = &a.dedup_id {
            req["MessageDeduplicationId"] = json!(d);
        }
        if let Some(d) = a.delay {
            req["DelaySeconds"] = json!(d);
        }
        let r = c.call("SendMessage", &req)?;
        println!("{}", r["MessageId"].as_str().unwrap_or_default());
        Ok(())
    };
    if a.bodies.is_empty() {
        for line in std::io::stdin().lock().lines() {
            one(line?)?;
        }
    } else {
        for b in a.bodies.clone() {
            one(b)?;
        }
    }
    Ok(())
}

pub(super) fn receive(c: &mut SqsClient, a: ReceiveArgs) -> Result<()> {
    let url = c.url(&a.name);
    let mut req = json!({
        "QueueUrl": url,
        "MaxNumberOfMessages": a.max,
        "WaitTimeSeconds": a.wait,
        "AttributeNames": ["All"],
        "MessageAttributeNames": ["All"],
    });
    if let Some(v) = a.visibility {
        req["VisibilityTimeout"] = json!(v);
    }
    let r = c.call("ReceiveMessage", &req)?;
    let messages = r["Messages"].as_array().cloned().unwrap_or_default();
    for m in &messages {
        let line = json!({
            "id": m["MessageId"],
            "receipt": m["ReceiptHandle"],
            "deliveries": m["Attributes"]["ApproximateReceiveCount"],
            "body": m["Body"],
            "attributes": m["MessageAttributes"],
        });
        println!("{line}");
    }
    if a.ack && !messages.is_empty() {
        let entries: Vec<Value> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| json!({"Id": format!("m{i}"), "ReceiptHandle": m["ReceiptHandle"]}))
            .collect();
        let d = c.call(
            "DeleteMessageBatch",
            &json!({"QueueUrl": url, "Entries": entries}),
        )?;
        if let Some(failed) = d["Failed"].as_array().filter(|f| !f.is_empty()) {
            bail!("{} message(s) not acknowledged: {failed:?}", failed.len());
        }
    }
    Ok(())
}

pub(super) fn redrive(c: &mut SqsClient, name: &str, to: Option<&str>) -> Result<()> {
    let arn = |q: &str| format!("arn:aws:sqs:us-east-1:000000000000:{q}");
    let mut req = json!({ "SourceArn": arn(name) });
    if let Some(t) = to {
        req["DestinationArn"] = json!(arn(t));
    }
    let handle = c.call("StartMessageMoveTask", &req)?["TaskHandle"].clone();
    let deadline = Instant::now() + REDRIVE_WAIT;
    while Instant::now() < deadline {
        let r = c.call("ListMessageMoveTasks", &json!({ "SourceArn": arn(name) }))?;
        let task = r["Results"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["TaskHandle"] == handle)
            .cloned()
            .context("the move task disappeared")?;
        match task["Status"].as_str() {
            Some("COMPLETED") => {
                println!(
                    "moved {} message(s) out of {name}",
                    task["ApproximateNumberOfMessagesMoved"]
                );
                return Ok(());
            }
            Some("FAILED") => bail!("the redrive failed: {}", task["FailureReason"]),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    bail!("the redrive did not finish in {REDRIVE_WAIT:?}")
}

pub(super) fn subscribe(c: &mut SqsClient, a: SubscribeArgs) -> Result<()> {
    let url = c.url(&a.name);
    let req = json!({"QueueUrl": url, "Topic": a.topic, "KeyPattern": a.key_pattern,
                     "FilterPolicy": a.filter_policy, "FromBeginning": a.from_beginning});
    c.call("Weir.Subscribe", &req)?;
    println!("queue {} subscribes to {}", a.name, a.topic);
    Ok(())
}
