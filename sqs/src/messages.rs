//! The message actions: SendMessage(Batch), ReceiveMessage (long polling), DeleteMessage(Batch),
//! ChangeMessageVisibility(Batch), with SQS's validation (batch ids, sizes, characters),
//! its partial batch failures, and its digests.
//!
//! A message id is derived from the message's position (partition and offset), so a
//! deduplicated send answers with the first message's id; a receipt handle names the
//! position and the lock (`partition-offset-lease`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use weir_queue::{Outgoing, Queue, QueueError, Receipt, Received, Sent};

use crate::api::{blocking, parse, Api};
use crate::attrs::{self, AttributeValue};
use crate::error::SqsError;

/// Most entries in a batch (SQS's 10).
pub const BATCH_ENTRIES_MAX: usize = 10;
/// Most bytes of all the bodies and attributes of one send (SQS's 1 MiB).
pub const SEND_BYTES_MAX: usize = 1 << 20;
/// Most messages one ReceiveMessage returns (SQS's 10).
pub const RECEIVE_MAX: i64 = 10;
/// Longest long poll (SQS's 20 s).
pub const WAIT_MAX_S: i64 = 20;

/// The message id of a position: UUID-shaped, as SQS's.
pub fn message_id(partition: u32, offset: i64) -> String {
    let o = offset as u64;
    format!(
        "{partition:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (o >> 60) & 0xf,
        (o >> 48) & 0xfff,
        0,
        o & 0xffff_ffff_ffff
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SendRequest {
    queue_url: Option<String>,
    #[serde(flatten)]
    entry: SendEntry,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SendEntry {
    #[serde(default)]
    id: String,
    message_body: Option<String>,
    delay_seconds: Option<i64>,
    #[serde(default)]
    message_attributes: BTreeMap<String, AttributeValue>,
    message_group_id: Option<String>,
    message_deduplication_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SendBatchRequest {
    queue_url: Option<String>,
    #[serde(default)]
    entries: Vec<SendEntry>,
}

/// SQS's allowed characters: #x9, #xA, #xD, #x20–#xD7FF, #xE000–#xFFFD, #x10000–#x10FFFF.
fn check_body(body: &str) -> Result<(), SqsError> {
    if body.is_empty() {
        return Err(SqsError::missing_parameter("MessageBody"));
    }
    let bad = body.chars().find(|&c| {
        !matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
    });
    match bad {
        Some(c) => Err(SqsError::invalid_contents(format!(
            "Invalid characters found. The message contains character U+{:04X}, which SQS does not allow.",
            c as u32
        ))),
        None => Ok(()),
    }
}

/// An entry as the queue's message, checked.
fn outgoing(q: &Queue, e: &SendEntry) -> Result<Outgoing, SqsError> {
    let body = e
        .message_body
        .as_deref()
        .ok_or_else(|| SqsError::missing_parameter("MessageBody"))?;
    check_body(body)?;
    let delay_ms = match e.delay_seconds {
        None => None,
        Some(_) if q.config().fifo => return Err(SqsError::invalid_parameter(
            "DelaySeconds is not valid for a FIFO queue's messages (set the queue's DelaySeconds)",
        )),
        Some(s) if (0..=900).contains(&s) => Some(s * 1000),
        Some(s) => {
            return Err(SqsError::invalid_parameter(format!(
            "Value {s} for parameter DelaySeconds is invalid. Reason: must be between 0 and 900."
        )))
        }
    };
    let out = Outgoing {
        body: Bytes::from(body.to_string()),
        headers: attrs::headers_from(&e.message_attributes)?,
        group: e.message_group_id.clone().map(Bytes::from),
        dedup_id: e.message_deduplication_id.clone(),
        delay_ms,
    };
    q.check(&out)?;
    Ok(out)
}

fn sent_json(q: &Queue, m: &Outgoing, sent: &Sent) -> Value {
    let mut v = json!({
        "MessageId": message_id(sent.partition, sent.offset),
        "MD5OfMessageBody": attrs::md5_hex(&m.body),
    });
    if !m.headers.is_empty() {
        v["MD5OfMessageAttributes"] =
            json!(attrs::attributes_md5(&attrs::attributes_of(&m.headers)));
    }
    if q.config().fifo {
        v["SequenceNumber"] = json!(sequence_number(sent.partition, sent.offset));
    }
    v
}

fn sequence_number(partition: u32, offset: i64) -> String {
    format!("{partition:04}{offset:016}")
}

/// Sends: a standard queue's without blocking a worker; a FIFO queue's (which hold its
/// deduplication window while they wait) on a blocking thread.
async fn send_messages(q: &Arc<Queue>, messages: Vec<Outgoing>) -> Result<Vec<Sent>, SqsError> {
    if q.config().fifo {
        let q = q.clone();
        return blocking(move || Ok(q.send(&messages)?)).await;
    }
    Ok(q.send_async(&messages).await?)
}

pub(crate) async fn send(api: &Arc<Api>, body: &[u8]) -> Result<Value, SqsError> {
    let req: SendRequest = parse(body)?;
    let q = api.queue(req.queue_url.as_deref())?;
    let m = outgoing(&q, &req.entry)?;
    let sent = send_messages(&q, vec![m.clone()]).await?;
    Ok(sent_json(&q, &m, &sent[0]))
}

/// Batch ids: 1 to 10 entries, each id distinct, of letters, digits, `-` and `_`.
fn check_batch<'a>(ids: impl Iterator<Item = &'a str>) -> Result<(), SqsError> {
    let mut seen = HashSet::new();
    for id in ids {
        if id.is_empty()
            || id.len() > 80
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(SqsError::batch(
                "InvalidBatchEntryId",
                "AWS.SimpleQueueService.InvalidBatchEntryId",
                format!("A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long: `{id}`"),
            ));
        }
        if !seen.insert(id) {
            return Err(SqsError::batch(
                "BatchEntryIdsNotDistinct",
                "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
                format!("Id {id} repeated."),
            ));
        }
    }
    match seen.len() {
        0 => Err(SqsError::batch(
            "EmptyBatchRequest",
            "AWS.SimpleQueueService.EmptyBatchRequest",
            "There should be at least one entry in the request.".into(),
        )),
        n if n > BATCH_ENTRIES_MAX => Err(SqsError::batch(
            "TooManyEntriesInBatchRequest",
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
            format!(
                "Maximum number of entries per request are {BATCH_ENTRIES_MAX}. You have sent {n}."
            ),
        )),
        _ => Ok(()),
    }
}

fn failed(id: &str, e: &SqsError) -> Value {
    json!({"Id": id, "SenderFault": e.sender_fault, "Code": e.code, "Message": e.message})
}

pub(crate) async fn send_batch(api: &Arc<Api>, body: &[u8]) -> Result<Value, SqsError> {
    let req: SendBatchRequest = parse(body)?;
    let q = api.queue(req.queue_url.as_deref())?;
    check_batch(req.entries.iter().map(|e| e.id.as_str()))?;
    let size: usize = req
        .entries
        .iter()
        .map(|e| e.message_body.as_ref().map_or(0, String::len))
        .sum();
    if size > SEND_BYTES_MAX {
        return Err(SqsError::batch(
            "BatchRequestTooLong",
            "AWS.SimpleQueueService.BatchRequestTooLong",
            format!("Batch requests cannot be longer than {SEND_BYTES_MAX} bytes. You have sent {size} bytes."),
        ));
    }
    let mut good = Vec::new();
    let mut failures = Vec::new();
    for e in &req.entries {
        match outgoing(&q, e) {
            Ok(m) => good.push((e, m)),
            Err(err) => failures.push(failed(&e.id, &err)),
        }
    }
    let messages: Vec<Outgoing> = good.iter().map(|(_, m)| m.clone()).collect();
    let sent = if messages.is_empty() {
        Vec::new()
    } else {
        send_messages(&q, messages).await?
    };
    let successes: Vec<Value> = good
        .iter()
        .zip(&sent)
        .map(|((e, m), s)| {
            let mut v = sent_json(&q, m, s);
            v["Id"] = json!(e.id);
            v
        })
        .collect();
    Ok(json!({ "Successful": successes, "Failed": failures }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ReceiveRequest {
    queue_url: Option<String>,
    max_number_of_messages: Option<i64>,
    visibility_timeout: Option<i64>,
    wait_time_seconds: Option<i64>,
    #[serde(default)]
    attribute_names: Vec<String>,
    #[serde(default)]
    message_system_attribute_names: Vec<String>,
    #[serde(default)]
    message_attribute_names: Vec<String>,
}

fn in_range(name: &str, v: i64, lo: i64, hi: i64) -> Result<i64, SqsError> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(SqsError::invalid_parameter(format!(
            "Value {v} for parameter {name} is invalid. Reason: must be between {lo} and {hi}."
        )))
    }
}

/// ReceiveMessage: looks now, and while nothing is there waits (asynchronously) for a send,
/// a release, or the clock, until the wait time is up.
pub(crate) async fn receive(api: &Arc<Api>, body: &[u8]) -> Result<Value, SqsError> {
    let req: ReceiveRequest = parse(body)?;
    let q = api.queue(req.queue_url.as_deref())?;
    let max = in_range(
        "MaxNumberOfMessages",
        req.max_number_of_messages.unwrap_or(1),
        1,
        RECEIVE_MAX,
    )? as usize;
    let visibility = match req.visibility_timeout {
        Some(v) => Some(in_range("VisibilityTimeout", v, 0, 43_200)? * 1000),
        None => None,
    };
    let wait_ms = match req.wait_time_seconds {
        Some(w) => in_range("WaitTimeSeconds", w, 0, WAIT_MAX_S)? * 1000,
        None => q.config().receive_wait_ms,
    };
    let deadline = Instant::now() + Duration::from_millis(wait_ms as u64);
    loop {
        let changed = q.changed()?;
        let (got, wake) = if q.config().redrive.is_some() {
            // Dead letters are written in a transaction, which blocks. (A redrive policy set
            // just after this look only makes one receive block its worker briefly.)
            let looked = q.clone();
            blocking(move || Ok(looked.try_receive(max, visibility)?)).await?
        } else {
            q.start_receive(max, visibility)?.durable().await?
        };
        let now = Instant::now();
        if !got.is_empty() || now >= deadline {
            return Ok(received_json(&q, &req, got));
        }
        let mut until = deadline;
        if let Some(w) = wake {
            let ms = (w - api.queues.log().now().0).max(0) as u64;
            until = until.min(now + Duration::from_millis(ms));
        }
        let _ = tokio::time::timeout_at(until.into(), changed).await;
    }
}

fn received_json(q: &Queue, req: &ReceiveRequest, got: Vec<Received>) -> Value {
    let system: Vec<String> = req
        .attribute_names
        .iter()
        .chain(&req.message_system_attribute_names)
        .cloned()
        .collect();
    let wants = |n: &str| system.iter().any(|s| s == "All" || s == n);
    let messages: Vec<Value> = got
        .into_iter()
        .map(|r| {
            let m = &r.message;
            let body = String::from_utf8_lossy(&m.body);
            let mut v = json!({
                "MessageId": message_id(m.partition, m.offset),
                "ReceiptHandle": r.receipt.to_string(),
                "MD5OfBody": attrs::md5_hex(&m.body),
                "Body": body,
            });
            let mut a = serde_json::Map::new();
            let mut put = |k: &str, val: String| {
                if wants(k) {
                    a.insert(k.to_string(), json!(val));
                }
            };
            put("ApproximateReceiveCount", r.deliveries.to_string());
            put("SentTimestamp", m.timestamp.to_string());
            put("SenderId", crate::attrs::ACCOUNT_ID.to_string());
            if q.config().fifo {
                if let Some(k) = &m.key {
                    put("MessageGroupId", String::from_utf8_lossy(k).into_owned());
                }
                if let Some(d) = m.header(weir_queue::HEADER_DEDUP_ID) {
                    put(
                        "MessageDeduplicationId",
                        String::from_utf8_lossy(d).into_owned(),
                    );
                }
                put("SequenceNumber", sequence_number(m.partition, m.offset));
            }
            if !a.is_empty() {
                v["Attributes"] = Value::Object(a);
            }
            let chosen: Vec<_> = attrs::attributes_of(&m.headers)
                .into_iter()
                .filter(|(name, _, _)| attrs::wanted(name, &req.message_attribute_names))
                .collect();
            if !chosen.is_empty() {
                v["MessageAttributes"] = attrs::attributes_json(&chosen);
                v["MD5OfMessageAttributes"] = json!(attrs::attributes_md5(&chosen));
            }
            v
        })
        .collect();
    if messages.is_empty() {
        json!({})
    } else {
        json!({ "Messages": messages })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SettleEntry {
    #[serde(default)]
    id: String,
    receipt_handle: Option<String>,
    visibility_timeout: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SettleRequest {
    queue_url: Option<String>,
    #[serde(flatten)]
    entry: SettleEntry,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SettleBatchRequest {
    queue_url: Option<String>,
    #[serde(default)]
    entries: Vec<SettleEntry>,
}

fn receipt(e: &SettleEntry) -> Result<Receipt, SqsError> {
    let handle = e
        .receipt_handle
        .as_deref()
        .ok_or_else(|| SqsError::missing_parameter("ReceiptHandle"))?;
    handle
        .parse()
        .map_err(|_| SqsError::invalid_receipt(handle))
}

/// Deleting with a receipt whose lock is over succeeds, as in SQS (the message may have been
/// delivered again; only the latest receipt deletes it).
fn delete_result(r: Result<(), QueueError>) -> Result<(), SqsError> {
    match r {
        Ok(()) | Err(QueueError::StaleReceipt(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn delete(api: &Arc<Api>, body: &[u8]) -> Result<Value, SqsError> {
    let req: SettleRequest = parse(body)?;
    let q = api.queue(req.queue_url.as_deref())?;
    let r = receipt(&req.entry)?;
    let mut out = q.start_ack(&[r])?.durable().await?;
    delete_result(out.pop().unwrap_or(Ok(())))?;
    Ok(json!({}))
}

pub(crate) async fn delete_batch(api: &Arc<Api>, body: &[u8]) -> Result<Value, SqsError> {
    let req: SettleBatchRequest = parse(body)?;
    let q = api.queue(req.queue_url.as_deref())?;
    check_batch(req.entries.iter().map(|e| e.id.as_str()))?;
    let (mut results, receipts, at) = parse_receipts(&req.entries);
    let acked = q.start_ack(&receipts)?.durable().await?;
    for (i, r) in at.into_iter().zip(acked) {
        results[i] = Some(delete_result(r));
    }
    Ok(batch_json(&req.entries, results))
}

fn visibility_of(e: &SettleEntry) -> Result<i64, SqsError> {
    let v = e
        .visibility_timeout
        .ok_or_else(|| SqsError::missing_parameter("VisibilityTimeout"))?;
    Ok(in_range("VisibilityTimeout", v, 0, 43_200)? * 1000)
}

pub(crate) async fn change_visibility(api: &Arc<Api>, body: &[u8]) -> Result<Value, SqsError> {
    let req: SettleRequest = parse(body)?;
    let q = api.queue(req.queue_url.as_deref())?;
    let r = receipt(&req.entry)?;
    let timeout = visibility_of(&req.entry)?;
    let mut out = q.start_change_visibility(&[r], timeout)?.durable().await?;
    out.pop().unwrap_or(Ok(()))?;
    Ok(json!({}))
}

pub(crate) async fn change_visibility_batch(
    api: &Arc<Api>,
    body: &[u8],
) -> Result<Value, SqsError> {
    let req: SettleBatchRequest = parse(body)?;
    let q = api.queue(req.queue_url.as_deref())?;
    check_batch(req.entries.iter().map(|e| e.id.as_str()))?;
    // Entries may ask for different timeouts: one call per timeout.
    let mut by_timeout: BTreeMap<i64, (Vec<usize>, Vec<Receipt>)> = BTreeMap::new();
    let mut results: Vec<Option<Result<(), SqsError>>> = req.entries.iter().map(|_| None).collect();
    for (i, e) in req.entries.iter().enumerate() {
        match (visibility_of(e), receipt(e)) {
            (Ok(t), Ok(r)) => {
                let (at, receipts) = by_timeout.entry(t).or_default();
                at.push(i);
                receipts.push(r);
            }
            (Err(err), _) | (_, Err(err)) => results[i] = Some(Err(err)),
        }
    }
    for (timeout, (indexes, receipts)) in by_timeout {
        let out = q
            .start_change_visibility(&receipts, timeout)?
            .durable()
            .await?;
        for (i, r) in indexes.into_iter().zip(out) {
            results[i] = Some(r.map_err(SqsError::from));
        }
    }
    Ok(batch_json(&req.entries, results))
}

/// The entries' receipts that parse (and where they are); the others fail alone.
#[allow(clippy::type_complexity)]
fn parse_receipts(
    entries: &[SettleEntry],
) -> (Vec<Option<Result<(), SqsError>>>, Vec<Receipt>, Vec<usize>) {
    let mut results: Vec<Option<Result<(), SqsError>>> = entries.iter().map(|_| None).collect();
    let mut receipts = Vec::new();
    let mut at = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        match receipt(e) {
            Ok(r) => {
                receipts.push(r);
                at.push(i);
            }
            Err(err) => results[i] = Some(Err(err)),
        }
    }
    (results, receipts, at)
}

fn batch_json(entries: &[SettleEntry], results: Vec<Option<Result<(), SqsError>>>) -> Value {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for (e, r) in entries.iter().zip(results) {
        match r.unwrap_or(Ok(())) {
            Ok(()) => ok.push(json!({ "Id": e.id })),
            Err(err) => bad.push(failed(&e.id, &err)),
        }
    }
    json!({ "Successful": ok, "Failed": bad })
}
