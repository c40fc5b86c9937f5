//! Request–reply over queues (RabbitMQ's RPC pattern, SQS's temporary-queue client): a
//! [`Requester`] sends each request with a [`HEADER_REPLY_TO`] header naming its reply queue
//! and a [`HEADER_CORRELATION_ID`], then waits for the reply that carries the same id; a
//! responder answers with [`Queues::reply`]. Replies that arrive for another waiting request
//! of the same requester are handed to it; replies to requests that gave up are dropped.
//!
//! Invariant: at most [`REPLIES_PENDING_MAX`] replies wait for their requester; a requester
//! never blocks longer than a request's timeout.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_log::Header;

use crate::catalog::QueueConfig;
use crate::error::{QueueError, Result};
use crate::queue::{lock, Message, Queue};
use crate::send::{Outgoing, Sent};
use crate::service::Queues;

/// Header: the queue a reply goes to.
pub const HEADER_REPLY_TO: &str = "reply-to";
/// Header: what ties a reply to its request.
pub const HEADER_CORRELATION_ID: &str = "correlation-id";
/// Replies held for other waiting requests of one requester.
pub const REPLIES_PENDING_MAX: usize = 10_000;
/// How long one look at the reply queue waits while other requests may be looking too.
const REPLY_POLL: Duration = Duration::from_millis(50);

/// Sends requests and waits for their replies on a reply queue of its own.
#[derive(Debug)]
pub struct Requester {
    replies: Arc<Queue>,
    /// Unique per requester, so ids never collide with another requester's.
    prefix: String,
    next: AtomicU64,
    /// Ids of requests waiting now.
    waiting: Mutex<HashSet<String>>,
    /// Replies received by one request's look but meant for another's.
    arrived: Mutex<HashMap<String, Message>>,
}

impl Requester {
    /// A requester whose replies come to the queue `reply_queue` (created if missing; use a
    /// name of its own per requester).
    pub fn new(queues: &Queues, reply_queue: &str) -> Result<Requester> {
        let replies = match queues.get(reply_queue) {
            Ok(q) => q,
            Err(QueueError::UnknownQueue(_)) => {
                queues.create(reply_queue, QueueConfig::default())?
            }
            Err(e) => return Err(e),
        };
        let prefix = format!("{reply_queue}-{}", queues.log().now().0);
        Ok(Requester {
            replies,
            prefix,
            next: AtomicU64::new(0),
            waiting: Mutex::new(HashSet::new()),
            arrived: Mutex::new(HashMap::new()),
        })
    }

    /// Sends `request` to `to` and waits up to `timeout` for its reply (`None`: none came).
    pub fn request(
        &self,
        to: &Queue,
        mut request: Outgoing,
        timeout: Duration,
    ) -> Result<Option<Message>> {
        let id = format!(
            "{}-{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        for (k, v) in [
            (HEADER_REPLY_TO, self.replies.name()),
            (HEADER_CORRELATION_ID, id.as_str()),
        ] {
            request.headers.push(Header {
                key: k.into(),
                value: Some(Bytes::from(v.to_string())),
            });
        }
        lock(&self.waiting).insert(id.clone());
        let result = to
            .send(&[request])
            .and_then(|_| self.await_reply(&id, timeout));
        lock(&self.waiting).remove(&id);
        lock(&self.arrived).remove(&id);
        result
    }

    fn await_reply(&self, id: &str, timeout: Duration) -> Result<Option<Message>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = lock(&self.arrived).remove(id) {
                return Ok(Some(m));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let got = self
                .replies
                .receive(100, (deadline - now).min(REPLY_POLL), None)?;
            let receipts: Vec<_> = got.iter().map(|r| r.receipt).collect();
            self.replies.ack(&receipts)?;
            let mut mine = None;
            for r in got {
                let corr = r
                    .message
                    .header(HEADER_CORRELATION_ID)
                    .map(|c| String::from_utf8_lossy(c).into_owned());
                match corr {
                    Some(c) if c == id => mine = Some(r.message),
                    Some(c) if lock(&self.waiting).contains(&c) => {
                        let mut arrived = lock(&self.arrived);
                        if arrived.len() < REPLIES_PENDING_MAX {
                            arrived.insert(c, r.message);
                        }
                    }
                    // A late reply to a request that gave up, or not a reply: dropped.
                    _ => {}
                }
            }
            if mine.is_some() {
                return Ok(mine);
            }
        }
    }
}

impl Queues {
    /// Answers a request: sends `reply` to the queue its [`HEADER_REPLY_TO`] names, with its
    /// [`HEADER_CORRELATION_ID`].
    pub fn reply(&self, request: &Message, mut reply: Outgoing) -> Result<Sent> {
        let text = |k: &str| {
            request
                .header(k)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let (Some(to), Some(id)) = (text(HEADER_REPLY_TO), text(HEADER_CORRELATION_ID)) else {
            return Err(QueueError::InvalidMessage(format!(
                "message {}-{} is not a request: no {HEADER_REPLY_TO} and {HEADER_CORRELATION_ID}",
                request.partition, request.offset
            )));
        };
        reply.headers.push(Header {
            key: HEADER_CORRELATION_ID.into(),
            value: Some(Bytes::from(id)),
        });
        let sent = self.get(&to)?.send(&[reply])?;
        Ok(sent[0])
    }
}
