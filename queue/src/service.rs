//! [`Queues`]: the queues of one log — created, looked up, listed and deleted by name, each
//! opened (rebuilt from its journal) when the service opens.
//!
//! A queue named `orders` is the topic `orders` (its messages, readable by any Kafka client
//! and replayable after they were acknowledged) plus the topic `__weir_queue_state.orders`
//! (its journal), and a record in the catalog topic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use weir_coord::TransactionCoordinator;
use weir_log::{Log, LogError};

use crate::catalog::{self, check_name, QueueConfig, Subscription};
use crate::error::{QueueError, Result};
use crate::fanout::{self, Forwarder};
use crate::filter::Filter;
use crate::queue::{lock, state_topic, Queue, SNAPSHOT_AFTER_BYTES};

/// Largest record batch a queue's topic takes: a send of ten 1 MiB messages fits.
const QUEUE_TOPIC_MESSAGE_BYTES: usize = 16 << 20;

/// The queues of a log.
#[derive(Debug, Clone)]
pub struct Queues {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    log: Log,
    txns: TransactionCoordinator,
    queues: RwLock<BTreeMap<String, Arc<Queue>>>,
    /// Serialises creates, deletes and subscription changes.
    admin: Mutex<()>,
    /// The subscriptions' forwarders, by `queue/topic` (dropped: stopped).
    forwarders: Mutex<BTreeMap<String, (Subscription, Forwarder)>>,
}

impl Queues {
    /// Opens every queue in the catalog (each rebuilt from its journal).
    pub fn open(log: &Log, txns: &TransactionCoordinator) -> Result<Queues> {
        let mut queues = BTreeMap::new();
        for (name, config) in catalog::load(log)? {
            // The catalog is the truth: a retention change that reached the catalog but not
            // the topic (a crash between the two) is finished here.
            if log.topic_config(&name)?.retention_ms != Some(config.retention_ms) {
                log.alter_topic_config(&name, topic_overrides(&config))?;
            }
            let queue = Queue::open(log, txns, &name, config)?;
            queues.insert(name, Arc::new(queue));
        }
        let mut forwarders = BTreeMap::new();
        for (key, sub) in catalog::load_subscriptions(log)? {
            if queues.contains_key(&sub.queue) {
                let f = fanout::start(txns, &sub.queue, &sub)?;
                forwarders.insert(key, (sub, f));
            }
        }
        Ok(Queues {
            inner: Arc::new(Inner {
                log: log.clone(),
                txns: txns.clone(),
                queues: RwLock::new(queues),
                admin: Mutex::new(()),
                forwarders: Mutex::new(forwarders),
            }),
        })
    }

    /// Subscribes a queue to a topic: from now on (or from the topic's start) every record
    /// of the topic that passes the filters is copied into the queue, exactly once. Made again
    /// with other filters, the subscription takes them and keeps its position.
    pub fn subscribe(&self, sub: Subscription, from_beginning: bool) -> Result<()> {
        Filter::new(sub.key_pattern.as_deref(), sub.filter_policy.as_deref())?;
        let _admin = lock(&self.inner.admin);
        self.get(&sub.queue)?;
        self.inner.log.partition_count(&sub.topic)?;
        if sub.topic == sub.queue {
            return Err(QueueError::InvalidSetting(
                "a queue cannot subscribe to its own topic".into(),
            ));
        }
        let key = catalog::subscription_key(&sub.queue, &sub.topic);
        let mut forwarders = lock(&self.inner.forwarders);
        // Stop the old forwarder (if any) before the position is set or the filter changes.
        let existed = forwarders.remove(&key).is_some();
        if !existed {
            fanout::start_position(&self.inner.txns, &sub.queue, &sub.topic, from_beginning)?;
        }
        catalog::put_subscription(&self.inner.log, &sub)?;
        let f = fanout::start(&self.inner.txns, &sub.queue, &sub)?;
        forwarders.insert(key, (sub, f));
        Ok(())
    }

    /// Ends a queue's subscription to a topic.
    pub fn unsubscribe(&self, queue: &str, topic: &str) -> Result<()> {
        let _admin = lock(&self.inner.admin);
        let key = catalog::subscription_key(queue, topic);
        let removed = lock(&self.inner.forwarders).remove(&key);
        if removed.is_none() {
            return Err(QueueError::InvalidSetting(format!(
                "queue `{queue}` does not subscribe to `{topic}`"
            )));
        }
        catalog::remove_subscription(&self.inner.log, queue, topic)
    }

    /// A queue's subscriptions.
    pub fn subscriptions(&self, queue: &str) -> Vec<Subscription> {
        lock(&self.inner.forwarders)
            .values()
            .filter(|(s, _)| s.queue == queue)
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// Creates a queue, or returns the one of that name if its settings are the same.
    pub fn create(&self, name: &str, config: QueueConfig) -> Result<Arc<Queue>> {
        check_name(name, config.fifo)?;
        config.validate()?;
        let _admin = lock(&self.inner.admin);
        if let Some(q) = self.find(name) {
            // Settings must match; tags are not settings (SQS ignores them here too).
            let have = q.config();
            let same = QueueConfig {
                created_ms: have.created_ms,
                modified_ms: have.modified_ms,
                tags: have.tags.clone(),
                ..config
            };
            return match *have == same {
                true => Ok(q),
                false => Err(QueueError::QueueExists(name.to_string())),
            };
        }
        self.check_redrive(&config)?;
        let config = QueueConfig {
            created_ms: self.inner.log.now().0,
            ..config
        };
        self.create_topics(name, &config)?;
        catalog::put(&self.inner.log, name, &config)?;
        let queue = Arc::new(Queue::open(
            &self.inner.log,
            &self.inner.txns,
            name,
            config,
        )?);
        self.write().insert(name.to_string(), queue.clone());
        Ok(queue)
    }

    /// Changes a queue's settings (SQS's SetQueueAttributes, TagQueue, UntagQueue): `change`
    /// edits a copy; its partitions, kind (FIFO or not) and deduplication window cannot
    /// change. The new settings are checked, written to the catalog, taken by the live queue,
    /// and a new retention given to the topic.
    pub fn update(
        &self,
        name: &str,
        change: impl FnOnce(&mut QueueConfig) -> Result<()>,
    ) -> Result<Arc<Queue>> {
        let _admin = lock(&self.inner.admin);
        let queue = self.get(name)?;
        let old = queue.config();
        let mut config = (*old).clone();
        change(&mut config)?;
        let fixed = |what: &str| Err(QueueError::InvalidSetting(format!("{what} cannot change")));
        if config.partitions != old.partitions {
            return fixed("a queue's partition count");
        }
        if config.fifo != old.fifo {
            return fixed("whether a queue is FIFO");
        }
        if config.dedup_window_ms != old.dedup_window_ms {
            return fixed("a queue's deduplication window");
        }
        config.validate()?;
        self.check_redrive(&config)?;
        if config
            .redrive
            .as_ref()
            .is_some_and(|r| r.dead_letter_queue == name)
        {
            return Err(QueueError::InvalidSetting(
                "a queue cannot be its own dead-letter queue".into(),
            ));
        }
        let log = &self.inner.log;
        config.created_ms = old.created_ms;
        config.modified_ms = log.now().0;
        // The catalog first, the live queue with it; a retention the topic failed to take
        // is taken when the queues are opened next.
        catalog::put(log, name, &config)?;
        let overrides = (config.retention_ms != old.retention_ms).then(|| topic_overrides(&config));
        queue.reconfigure(config);
        if let Some(overrides) = overrides {
            log.alter_topic_config(name, overrides)?;
        }
        Ok(queue)
    }

    /// A redrive policy's dead-letter queue exists and is of the same kind.
    fn check_redrive(&self, config: &QueueConfig) -> Result<()> {
        if let Some(r) = &config.redrive {
            let dlq = self.get(&r.dead_letter_queue)?;
            if dlq.config().fifo != config.fifo {
                return Err(QueueError::InvalidSetting(format!(
                    "the dead-letter queue of a {} queue must be one too",
                    if config.fifo { "FIFO" } else { "standard" }
                )));
            }
        }
        Ok(())
    }

    fn create_topics(&self, name: &str, config: &QueueConfig) -> Result<()> {
        let log = &self.inner.log;
        let state = state_topic(name);
        // A topic of this name that is not a queue's (no journal) is someone else's.
        if log.partition_count(name).is_ok() && log.partition_count(&state).is_err() {
            return Err(QueueError::InvalidName {
                name: name.to_string(),
                reason: "a topic of this name exists and is not a queue".into(),
            });
        }
        let topic = topic_overrides(config);
        let journal = BTreeMap::from([
            ("retention.ms".to_string(), "-1".to_string()),
            (
                "segment.bytes".to_string(),
                (2 * SNAPSHOT_AFTER_BYTES).to_string(),
            ),
            (
                "max.message.bytes".to_string(),
                QUEUE_TOPIC_MESSAGE_BYTES.to_string(),
            ),
        ]);
        log.ensure_topic(&state, config.partitions, journal)?;
        log.ensure_topic(name, config.partitions, topic)?;
        Ok(())
    }

    /// The queue of this name.
    pub fn get(&self, name: &str) -> Result<Arc<Queue>> {
        self.find(name)
            .ok_or_else(|| QueueError::UnknownQueue(name.to_string()))
    }

    fn find(&self, name: &str) -> Option<Arc<Queue>> {
        self.inner
            .queues
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Queue>>> {
        self.inner.queues.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Every queue, by name.
    pub fn list(&self) -> Vec<Arc<Queue>> {
        self.inner
            .queues
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Deletes a queue, its messages and its state. Refused while another queue names it as
    /// its dead-letter queue.
    pub fn delete(&self, name: &str) -> Result<()> {
        let _admin = lock(&self.inner.admin);
        self.get(name)?;
        if let Some(source) = self.list().into_iter().find(|q| {
            q.config()
                .redrive
                .as_ref()
                .is_some_and(|r| r.dead_letter_queue == name)
        }) {
            return Err(QueueError::InUse {
                queue: name.to_string(),
                source_queue: source.name().to_string(),
            });
        }
        for sub in self.subscriptions(name) {
            lock(&self.inner.forwarders).remove(&catalog::subscription_key(name, &sub.topic));
            catalog::remove_subscription(&self.inner.log, name, &sub.topic)?;
        }
        catalog::remove(&self.inner.log, name)?;
        self.write().remove(name);
        for topic in [name.to_string(), state_topic(name)] {
            match self.inner.log.delete_topic(&topic) {
                Ok(()) | Err(LogError::UnknownTopic(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The log the queues live in.
    pub fn log(&self) -> &Log {
        &self.inner.log
    }
}

/// The config of a queue's topic.
fn topic_overrides(config: &QueueConfig) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("retention.ms".to_string(), config.retention_ms.to_string()),
        (
            "max.message.bytes".to_string(),
            QUEUE_TOPIC_MESSAGE_BYTES.to_string(),
        ),
    ])
}
