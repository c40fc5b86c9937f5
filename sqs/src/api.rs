//! The actions: `X-Amz-Target: AmazonSQS.<Action>` with a JSON body, answered with JSON.
//! Queue-level actions are here (CreateQueue, GetQueueUrl, ListQueues, DeleteQueue,
//! GetQueueAttributes, PurgeQueue, ListDeadLetterSourceQueues, StartMessageMoveTask,
//! ListMessageMoveTasks); changes of a live queue's settings and tags in
//! [`crate::settings`]; message actions in [`crate::messages`].
//!
//! Every action but ReceiveMessage runs on a blocking thread (the queue library waits for
//! fsyncs); ReceiveMessage's long poll waits asynchronously between its looks.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use weir_queue::{Queue, Queues};

use crate::attrs::{self, arn, name_of_arn, ACCOUNT_ID};
use crate::error::SqsError;

/// Move tasks remembered per source queue for ListMessageMoveTasks.
const MOVE_TASKS_KEPT: usize = 10;
/// Most queues one ListQueues answers (SQS's 1,000).
const LIST_QUEUES_MAX: usize = 1000;

/// What a request carries besides its body.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    /// The `Host` the client connected to (queue URLs point back at it).
    pub host: String,
    /// The region the request was signed for.
    pub region: String,
}

impl Ctx {
    pub(crate) fn url(&self, name: &str) -> String {
        format!("http://{}/{ACCOUNT_ID}/{name}", self.host)
    }
}

#[derive(Debug, Clone)]
struct MoveTask {
    handle: String,
    source: String,
    destination: Option<String>,
    started_ms: i64,
    /// `None` while running; the count moved or the failure after.
    outcome: Option<Result<u64, String>>,
}

/// The API over the queues.
#[derive(Debug)]
pub(crate) struct Api {
    pub(crate) queues: Queues,
    tasks: Mutex<BTreeMap<String, VecDeque<MoveTask>>>,
    task_ids: std::sync::atomic::AtomicU64,
}

/// Runs `f` on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SqsError> + Send + 'static,
) -> Result<T, SqsError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SqsError::internal(format!("the request's task failed: {e}")))?
}

pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, SqsError> {
    let body = if body.is_empty() { &b"{}"[..] } else { body };
    serde_json::from_slice(body).map_err(|e| SqsError::malformed(format!("request body: {e}")))
}

/// The queue a `QueueUrl` names (its last path segment; a bare name works too).
pub(crate) fn name_of_url(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct QueueUrlOnly {
    queue_url: Option<String>,
}

impl Api {
    pub(crate) fn new(queues: Queues) -> Api {
        Api {
            queues,
            tasks: Mutex::new(BTreeMap::new()),
            task_ids: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The queue a request's `QueueUrl` names.
    pub(crate) fn queue(&self, url: Option<&str>) -> Result<Arc<Queue>, SqsError> {
        let url = url.ok_or_else(|| SqsError::missing_parameter("QueueUrl"))?;
        let name = name_of_url(url);
        self.queues.get(name).map_err(|_| SqsError::no_queue(name))
    }

    /// Answers one action: the message actions asynchronously (their waits are for fsyncs
    /// and long polls), the rest on a blocking thread.
    pub(crate) async fn dispatch(
        self: &Arc<Self>,
        action: String,
        body: bytes::Bytes,
        ctx: Ctx,
    ) -> Result<Value, SqsError> {
        use crate::messages as m;
        match action.as_str() {
            "ReceiveMessage" => m::receive(self, &body).await,
            "SendMessage" => m::send(self, &body).await,
            "SendMessageBatch" => m::send_batch(self, &body).await,
            "DeleteMessage" => m::delete(self, &body).await,
            "DeleteMessageBatch" => m::delete_batch(self, &body).await,
            "ChangeMessageVisibility" => m::change_visibility(self, &body).await,
            "ChangeMessageVisibilityBatch" => m::change_visibility_batch(self, &body).await,
            _ => {
                let api = self.clone();
                blocking(move || api.call(&action, &body, &ctx)).await
            }
        }
    }

    /// Answers one queue-level action (blocking).
    pub(crate) fn call(
        self: &Arc<Self>,
        action: &str,
        body: &[u8],
        ctx: &Ctx,
    ) -> Result<Value, SqsError> {
        match action {
            "CreateQueue" => self.create_queue(parse(body)?, ctx),
            "GetQueueUrl" => self.get_queue_url(parse(body)?, ctx),
            "ListQueues" => self.list_queues(parse(body)?, ctx),
            "DeleteQueue" => {
                let q = self.queue(parse::<QueueUrlOnly>(body)?.queue_url.as_deref())?;
                self.queues.delete(q.name())?;
                Ok(json!({}))
            }
            "GetQueueAttributes" => self.get_queue_attributes(parse(body)?, ctx),
            "PurgeQueue" => {
                self.queue(parse::<QueueUrlOnly>(body)?.queue_url.as_deref())?
                    .purge()?;
                Ok(json!({}))
            }
            "ListDeadLetterSourceQueues" => self.dead_letter_sources(parse(body)?, ctx),
            "StartMessageMoveTask" => self.start_move(parse(body)?),
            "ListMessageMoveTasks" => self.list_moves(parse(body)?, ctx),
            "Weir.Subscribe" => self.subscribe(parse(body)?),
            "Weir.Unsubscribe" => {
                let req: SubscribeRequest = parse(body)?;
                let q = self.queue(req.queue_url.as_deref())?;
                self.queues.unsubscribe(q.name(), &req.topic)?;
                Ok(json!({}))
            }
            "Weir.ListSubscriptions" => {
                let q = self.queue(parse::<QueueUrlOnly>(body)?.queue_url.as_deref())?;
                let subs: Vec<Value> = self
                    .queues
                    .subscriptions(q.name())
                    .into_iter()
                    .map(|s| json!({"Topic": s.topic, "KeyPattern": s.key_pattern, "FilterPolicy": s.filter_policy}))
                    .collect();
                Ok(json!({ "Subscriptions": subs }))
            }
            "SetQueueAttributes" => self.set_attributes(parse(body)?),
            "TagQueue" => self.tag(parse(body)?),
            "UntagQueue" => self.untag(parse(body)?),
            "ListQueueTags" => self.list_tags(parse(body)?),
            "AddPermission" | "RemovePermission" | "CancelMessageMoveTask" => {
                Err(SqsError::unsupported(action))
            }
            other => Err(SqsError::batch(
                "InvalidAction",
                "InvalidAction",
                format!("The action {other} is not valid for this endpoint."),
            )),
        }
    }

    /// Weir.Subscribe: the queue takes a copy of a topic's records that pass the filters.
    fn subscribe(&self, req: SubscribeRequest) -> Result<Value, SqsError> {
        let q = self.queue(req.queue_url.as_deref())?;
        let sub = weir_queue::Subscription {
            queue: q.name().to_string(),
            topic: req.topic,
            key_pattern: req.key_pattern,
            filter_policy: req.filter_policy,
        };
        self.queues.subscribe(sub, req.from_beginning)?;
        Ok(json!({}))
    }

    fn create_queue(&self, req: CreateQueue, ctx: &Ctx) -> Result<Value, SqsError> {
        let name = req
            .queue_name
            .ok_or_else(|| SqsError::missing_parameter("QueueName"))?;
        let config = weir_queue::QueueConfig {
            tags: req.tags,
            ..attrs::config_from(&name, &req.attributes)?
        };
        self.queues.create(&name, config)?;
        Ok(json!({ "QueueUrl": ctx.url(&name) }))
    }

    fn get_queue_url(&self, req: CreateQueue, ctx: &Ctx) -> Result<Value, SqsError> {
        let name = req
            .queue_name
            .ok_or_else(|| SqsError::missing_parameter("QueueName"))?;
        let q = self.queue(Some(&name))?;
        Ok(json!({ "QueueUrl": ctx.url(q.name()) }))
    }

    fn list_queues(&self, req: ListQueues, ctx: &Ctx) -> Result<Value, SqsError> {
        let max = match req.max_results {
            None => LIST_QUEUES_MAX,
            Some(n) if (1..=LIST_QUEUES_MAX as i64).contains(&n) => n as usize,
            Some(n) => {
                return Err(SqsError::invalid_parameter(format!(
                    "MaxResults {n} (1 to {LIST_QUEUES_MAX})"
                )))
            }
        };
        let prefix = req.queue_name_prefix.unwrap_or_default();
        let after = req.next_token.unwrap_or_default();
        let names: Vec<String> = self
            .queues
            .list()
            .iter()
            .map(|q| q.name().to_string())
            .filter(|n| n.starts_with(&prefix) && n.as_str() > after.as_str())
            .collect();
        let mut out = json!({});
        let page: Vec<String> = names.iter().take(max).map(|n| ctx.url(n)).collect();
        if !page.is_empty() {
            out["QueueUrls"] = json!(page);
        }
        if names.len() > max && req.max_results.is_some() {
            out["NextToken"] = json!(names[max - 1]);
        }
        Ok(out)
    }

    fn get_queue_attributes(&self, req: GetAttributes, ctx: &Ctx) -> Result<Value, SqsError> {
        let q = self.queue(req.queue_url.as_deref())?;
        let stats = q.stats()?;
        let now = self.queues.log().now().0;
        let attributes =
            attrs::queue_attributes(&q, &stats, now, &ctx.region, &req.attribute_names)?;
        Ok(json!({ "Attributes": attributes }))
    }

    fn dead_letter_sources(&self, req: QueueUrlOnly, ctx: &Ctx) -> Result<Value, SqsError> {
        let q = self.queue(req.queue_url.as_deref())?;
        let urls: Vec<String> = self
            .queues
            .list()
            .iter()
            .filter(|s| {
                s.config()
                    .redrive
                    .as_ref()
                    .is_some_and(|r| r.dead_letter_queue == q.name())
            })
            .map(|s| ctx.url(s.name()))
            .collect();
        Ok(json!({ "queueUrls": urls }))
    }

    fn start_move(self: &Arc<Self>, req: MoveTaskRequest) -> Result<Value, SqsError> {
        let source_arn = req
            .source_arn
            .ok_or_else(|| SqsError::missing_parameter("SourceArn"))?;
        let source = self.queue(Some(name_of_arn(&source_arn)?))?;
        let destination = match &req.destination_arn {
            Some(a) => Some(self.queue(Some(name_of_arn(a)?))?.name().to_string()),
            None => None,
        };
        let n = self
            .task_ids
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let handle = format!("{}-{}-{n}", source.name(), self.queues.log().now().0);
        let task = MoveTask {
            handle: handle.clone(),
            source: source.name().to_string(),
            destination: destination.clone(),
            started_ms: self.queues.log().now().0,
            outcome: None,
        };
        {
            let mut tasks = crate::lock(&self.tasks);
            let list = tasks.entry(task.source.clone()).or_default();
            if list.iter().any(|t| t.outcome.is_none()) {
                return Err(SqsError::invalid_parameter(format!(
                    "a message move task is already running for {}",
                    task.source
                )));
            }
            list.push_front(task);
            list.truncate(MOVE_TASKS_KEPT);
        }
        let api = self.clone();
        let h = handle.clone();
        std::thread::Builder::new()
            .name("weir-sqs-move".into())
            .spawn(move || {
                let outcome = source
                    .redrive(destination.as_deref(), u64::MAX)
                    .map_err(|e| e.to_string());
                let mut tasks = crate::lock(&api.tasks);
                if let Some(t) = tasks
                    .get_mut(source.name())
                    .and_then(|l| l.iter_mut().find(|t| t.handle == h))
                {
                    t.outcome = Some(outcome);
                }
            })
            .map_err(|e| SqsError::internal(format!("cannot start the move task: {e}")))?;
        Ok(json!({ "TaskHandle": handle }))
    }

    fn list_moves(&self, req: MoveTaskRequest, ctx: &Ctx) -> Result<Value, SqsError> {
        let source_arn = req
            .source_arn
            .ok_or_else(|| SqsError::missing_parameter("SourceArn"))?;
        let source = name_of_arn(&source_arn)?;
        let tasks = crate::lock(&self.tasks);
        let results: Vec<Value> = tasks
            .get(source)
            .into_iter()
            .flatten()
            .map(|t| {
                let mut v = json!({
                    "TaskHandle": t.handle,
                    "SourceArn": arn(&ctx.region, &t.source),
                    "StartedTimestamp": t.started_ms,
                });
                if let Some(d) = &t.destination {
                    v["DestinationArn"] = json!(arn(&ctx.region, d));
                }
                match &t.outcome {
                    None => v["Status"] = json!("RUNNING"),
                    Some(Ok(n)) => {
                        v["Status"] = json!("COMPLETED");
                        v["ApproximateNumberOfMessagesMoved"] = json!(n);
                    }
                    Some(Err(e)) => {
                        v["Status"] = json!("FAILED");
                        v["FailureReason"] = json!(e);
                    }
                }
                v
            })
            .collect();
        Ok(json!({ "Results": results }))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateQueue {
    queue_name: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    /// The JSON protocol spells this member in lower case.
    #[serde(default, rename = "tags")]
    tags: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListQueues {
    queue_name_prefix: Option<String>,
    max_results: Option<i64>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetAttributes {
    queue_url: Option<String>,
    #[serde(default)]
    attribute_names: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MoveTaskRequest {
    source_arn: Option<String>,
    destination_arn: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SubscribeRequest {
    queue_url: Option<String>,
    topic: String,
    key_pattern: Option<String>,
    filter_policy: Option<String>,
    #[serde(default)]
    from_beginning: bool,
}
