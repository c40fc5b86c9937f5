//! `weir queue create|set|list|describe|delete|send|receive|redrive|subscribe|unsubscribe`:
//! queues from the shell. The
//! commands speak the SQS API — of the running `weir serve` (found in `serve.json`), or of
//! a listener this process starts on a loopback port over the data directory when no server
//! runs — so the CLI does exactly what an SQS client can.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;

use super::serve::{ServeInfo, SERVE_FILE};
use ops::{create, describe, receive, redrive, send, set, subscribe};
use weir_sqs::SqsClient;

mod ops;

/// How long `redrive` waits for its move task.
pub(super) const REDRIVE_WAIT: Duration = Duration::from_secs(600);

#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// Create a queue (or check that one exists with these settings).
    Create(CreateArgs),
    /// Change a queue's settings (SQS's SetQueueAttributes) and tags.
    Set(SetArgs),
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
    /// Copy a topic's records into a queue (fan-out), filtered by key pattern or headers.
    Subscribe(SubscribeArgs),
    /// End a queue's subscription to a topic.
    Unsubscribe {
        /// Queue name.
        name: String,
        /// Topic.
        topic: String,
    },
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
pub struct SetArgs {
    /// Queue name.
    name: String,
    /// Seconds a received message stays invisible to other consumers.
    #[arg(long)]
    visibility: Option<u32>,
    /// Seconds every message waits before it can be received.
    #[arg(long)]
    delay: Option<u32>,
    /// Seconds messages are kept.
    #[arg(long)]
    retention: Option<u32>,
    /// Dead-letter queue for messages received too often (needs --max-receives).
    #[arg(long, requires = "max_receives", conflicts_with = "no_dlq")]
    dlq: Option<String>,
    /// Receives after which a message goes to the dead-letter queue.
    #[arg(long, requires = "dlq")]
    max_receives: Option<u32>,
    /// Remove the dead-letter queue.
    #[arg(long)]
    no_dlq: bool,
    /// A tag, KEY=VALUE (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
    /// Remove a tag (repeatable).
    #[arg(long = "untag", value_name = "KEY")]
    untags: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// Queue name.
    name: String,
    /// The topic whose records the queue takes.
    topic: String,
    /// RabbitMQ topic-exchange pattern on the key: `*` one word, `#` any (`order.*.created`).
    #[arg(long)]
    key_pattern: Option<String>,
    /// SNS-style filter policy on the headers (JSON), e.g. '{"amount":[{"numeric":[">=",100]}]}'.
    #[arg(long)]
    filter_policy: Option<String>,
    /// Take the topic's records from its start, not only those published from now on.
    #[arg(long)]
    from_beginning: bool,
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
        QueueCmd::Set(a) => set(&mut c, a),
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
        QueueCmd::Subscribe(a) => subscribe(&mut c, a),
        QueueCmd::Unsubscribe { name, topic } => {
            let url = c.url(&name);
            c.call(
                "Weir.Unsubscribe",
                &json!({"QueueUrl": url, "Topic": topic}),
            )?;
            println!("queue {name} no longer subscribes to {topic}");
            Ok(())
        }
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
