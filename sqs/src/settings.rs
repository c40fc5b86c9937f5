//! Changing a live queue: SetQueueAttributes, and its tags (TagQueue, UntagQueue,
//! ListQueueTags; CreateQueue's `tags`). Each change goes through
//! [`weir_queue::Queues::update`]: checked, written to the catalog, taken by the queue.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::Api;
use crate::attrs;
use crate::error::SqsError;

impl Api {
    /// SetQueueAttributes.
    pub(crate) fn set_attributes(&self, req: SetAttributes) -> Result<Value, SqsError> {
        let q = self.queue(req.queue_url.as_deref())?;
        let mut refused = None;
        let updated = self.queues.update(q.name(), |c| {
            attrs::update_config(q.name(), c, &req.attributes).map_err(|e| {
                let invalid = weir_queue::QueueError::InvalidSetting(e.message.clone());
                refused = Some(e);
                invalid
            })
        });
        match (updated, refused) {
            (Ok(_), _) => Ok(json!({})),
            // The attributes' own error, with its SQS code.
            (Err(_), Some(e)) => Err(e),
            (Err(e), None) => Err(e.into()),
        }
    }

    /// TagQueue.
    pub(crate) fn tag(&self, req: Tags) -> Result<Value, SqsError> {
        let q = self.queue(req.queue_url.as_deref())?;
        self.queues.update(q.name(), |c| {
            c.tags.extend(req.tags);
            Ok(())
        })?;
        Ok(json!({}))
    }

    /// UntagQueue.
    pub(crate) fn untag(&self, req: Untag) -> Result<Value, SqsError> {
        let q = self.queue(req.queue_url.as_deref())?;
        self.queues.update(q.name(), |c| {
            for k in &req.tag_keys {
                c.tags.remove(k);
            }
            Ok(())
        })?;
        Ok(json!({}))
    }

    /// ListQueueTags.
    pub(crate) fn list_tags(&self, req: Tags) -> Result<Value, SqsError> {
        let q = self.queue(req.queue_url.as_deref())?;
        Ok(json!({ "Tags": q.config().tags }))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SetAttributes {
    queue_url: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Tags {
    queue_url: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Untag {
    queue_url: Option<String>,
    #[serde(default)]
    tag_keys: Vec<String>,
}
