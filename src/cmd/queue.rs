//! `weir queue create|list|describe|delete|send|receive|redrive`: queues from the shell. The
//! commands speak the SQS API — of the running `weir serve` (found in `serve.json`), or of
//! a listener this process starts on a loopback port over the data directory when no server
//! runs — so the CLI does exactly what an SQS client can.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::serve::{ServeInfo, SERVE_FILE};
use weir_sqs::SqsClient;

/// How long `redrive` waits for its move task.
const REDRIVE_WAIT: Duration = Duration::from_secs(600);

#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// Create a queue (or check that one exists with these settings).
    Create(CreateArgs),
    /// List queues.
    List,
    /// Depth (visible, in flight, delayed), oldest message's age, delivery counts, DLQ depth.
    Describe {
        /// Queue name.
        name: String,
    },
    /// Delete a queue and its messages.
    Delete {
        /// Queue name.
        name: String,
    },
    /// Send messages: the arguments, or one per stdin line.
    Send(SendArgs),
    /// Receive messages (printed as JSON lines), and acknowledge them with --ack.
    Receive(ReceiveArgs),
    /// Move a dead-letter queue's messages back to where they came from (or --to a queue).
    Redrive {
        /// The dead-letter queue.
        name: String,
        /// Move them all to this queue instead.
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Queue name (letters, digits, `-`, `_`; a FIFO queue's ends in `.fifo`).
    name: String,
    /// Partitions of its topic.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Seconds a received message stays invisible to other consumers.
    #[arg(long, default_value_t = 30)]
    visibility: u32,
    /// Seconds every message waits before it can be received.
    #[arg(long, default_value_t = 0)]
    delay: u32,
    /// Seconds messages are kept.
    #[arg(long, default_value_t = 345_600)]
    retention: u32,
    /// FIFO: messages of a group in order, one at a time; deduplication.
    #[arg(long)]
    fifo: bool,
    /// FIFO: deduplicate by the body's SHA-256 when a message has no deduplication id.
    #[arg(long)]
    content_dedup: bool,
    /// Dead-letter queue for messages received too often (needs --max-receives).
    #[arg(long, requires = "max_receives")]
    dlq: Option<String>,
    /// Receives after which a message goes to the dead-letter queue.
    #[arg(long, requires = "dlq")]
    max_receives: Option<u32>,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Queue name.
    name: String,
    /// Message bodies (none: one per stdin line).
    bodies: Vec<String>,
    /// Message group (FIFO queues).
    #[arg(long)]
    group: Option<String>,
    /// Deduplication id (FIFO queues).
    #[arg(long)]
    dedup_id: Option<String>,
    /// Seconds before the message can be received.
    #[arg(long)]
    delay: Option<u32>,
    /// A message attribute, NAME=VALUE (repeatable).
    #[arg(long = "attr", value_name = "NAME=VALUE")]
    attrs: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Queue name.
    name: String,
    /// Most messages (1 to 10).
    #[arg(long, default_value_t = 10)]
    max: u32,
    /// Seconds to wait for a message (long polling, up to 20).
    #[arg(long, default_value_t = 0)]
    wait: u32,
    /// Lock seconds for these deliveries (default: the queue's).
    #[arg(long)]
    visibility: Option<u32>,
    /// Acknowledge (delete) what was received.
    #[arg(long)]
    ack: bool,
}

pub fn run(dir: &Path, cmd: QueueCmd) -> Result<()> {
    let endpoint = Endpoint::for_dir(dir)?;
    let mut c = SqsClient::connect(&endpoint.addr)?;
    match cmd {
        QueueCmd::Create(a) => create(&mut c, a),
        QueueCmd::List => {
            let r = c.call("ListQueues", &json!({}))?;
            for url in r["QueueUrls"].as_array().into_iter().flatten() {
                println!(
                    "{}",
                    url.as_str()
                        .and_then(|u| u.rsplit('/').next())
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        QueueCmd::Describe { name } => describe(&mut c, &name),
        QueueCmd::Delete { name } => {
            let url = c.url(&name);
            c.call("DeleteQueue", &json!({ "QueueUrl": url }))?;
            println!("deleted queue {name}");
            Ok(())
        }
        QueueCmd::Send(a) => send(&mut c, a),
        QueueCmd::Receive(a) => receive(&mut c, a),
        QueueCmd::Redrive { name, to } => redrive(&mut c, &name, to.as_deref()),
    }
}

/// The SQS API to talk to, and what keeps it up.
struct Endpoint {
    addr: String,
    /// A listener of this process (no server runs on the directory).
    _own: Option<(weir_sqs::SqsServerHandle, weir_log::Log)>,
}

impl Endpoint {
    fn for_dir(dir: &Path) -> Result<Endpoint> {
        if let Some(addr) = served_sqs(dir)? {
            return Ok(Endpoint { addr, _own: None });
        }
        let log = super::open_log(dir, false)?;
        let (_groups, txns) = weir_coord::start(&log)?;
        let queues = weir_queue::Queues::open(&log, &txns)?;
        let config = weir_sqs::SqsConfig {
            listen: "127.0.0.1:0".into(),
            credentials: weir_sqs::Credentials::default(),
        };
        let server = weir_sqs::SqsServerHandle::start(queues, config)?;
        Ok(Endpoint {
            addr: server.local_addr().to_string(),
            _own: Some((server, log)),
        })
    }
}

/// The SQS address of a live `weir serve` on `dir`, if one runs.
fn served_sqs(dir: &Path) -> Result<Option<String>> {
    let Ok(raw) = std::fs::read(dir.join(SERVE_FILE)) else {
        return Ok(None);
    };
    let info: ServeInfo = serde_json::from_slice(&raw).context("a bad serve.json")?;
    if !Path::new("/proc").join(info.pid.to_string()).exists() {
        return Ok(None);
    }
    match info.sqs {
        Some(addr) => Ok(Some(addr)),
        None => bail!(
            "`weir serve` (pid {}) holds {} with its SQS listener off; start it with --sqs-listen",
            info.pid,
            dir.display()
        ),
    }
}

fn create(c: &mut SqsClient, a: CreateArgs) -> Result<()> {
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
        let arn = format!("arn:aws:sqs:us-east-1:000000000000:{dlq}");
        let policy = json!({"deadLetterTargetArn": arn, "maxReceiveCount": n});
        attrs.insert("RedrivePolicy", policy.to_string());
    }
    c.call(
        "CreateQueue",
        &json!({"QueueName": a.name, "Attributes": attrs}),
    )?;
    println!("created queue {}", a.name);
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

fn describe(c: &mut SqsClient, name: &str) -> Result<()> {
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
    Ok(())
}

fn send(c: &mut SqsClient, a: SendArgs) -> Result<()> {
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

fn receive(c: &mut SqsClient, a: ReceiveArgs) -> Result<()> {
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

fn redrive(c: &mut SqsClient, name: &str, to: Option<&str>) -> Result<()> {
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
