//! A task's inputs: where each stands, the records fetched but not yet processed, and which
//! input the next batch comes from.
//!
//! Every round the task fetches each input whose fetched records are used up (one read of up
//! to `FETCH_BYTES` feeds several batches) and takes the next batch from the input whose next
//! record is the oldest (tables before streams on equal timestamps), cut where another input
//! has an older record. So inputs interleave by time, as Kafka Streams does, and a busy table
//! cannot starve the stream that joins it.
//!
//! A queue input receives its partition's messages instead of reading offsets: each under a
//! lock (the queue's visibility timeout), its receipt kept with it; once processed the
//! receipt waits in `QueueInput::processed` for the commit, which acks it (see `commit.rs`).

use std::sync::Arc;
use std::time::Duration;

use weir_log::{Isolation, Log, Offset, PartitionId};

use crate::error::Result;
use crate::plan::{InputKind, InputSpec};
use crate::processor::InputRecord;

/// Bytes one fetch reads from an input partition.
pub(crate) const FETCH_BYTES: usize = 1 << 20;

/// Messages one receive of a queue input takes: about a batch, so no lock is held much
/// longer than its message takes to process and commit.
pub(crate) const QUEUE_FETCH_MESSAGES: usize = 1024;

/// A queue input's locks last at least this many commit intervals (or the queue's visibility
/// timeout when longer): a message is received, processed, then acked only at the next
/// commit, so a lock shorter than that (a queue's timeout of 0, say) would expire before
/// every commit and the task would fail it over and over.
pub(crate) const QUEUE_LOCK_COMMIT_INTERVALS: u32 = 10;

/// Rows one fetch of a generated input makes: as many records as a 1 MiB fetch of small
/// records, so a generator's batch costs about what a topic's does.
pub(crate) const GENERATED_FETCH_ROWS: u64 = 8192;

/// One input of a task.
#[derive(Debug)]
pub(crate) struct Input {
    pub(crate) spec: InputSpec,
    pub(crate) topic: Arc<str>,
    /// Next offset to process.
    pub(crate) position: Offset,
    /// Position at the last successful commit.
    pub(crate) committed: Offset,
    /// Fetched records from `fetched_at` on.
    pub(crate) fetched: Vec<InputRecord>,
    pub(crate) fetched_at: usize,
    /// Watermark records fetched from an internal input, in offset order: (offset, writer,
    /// watermark, idle). Each takes effect only once the input's position has passed it, so
    /// the records written before it are processed first (they are not late).
    pub(crate) watermarks: std::collections::VecDeque<(Offset, u32, i64, bool)>,
    /// A generated input's pace: when and at which position this task started it.
    paced_from: Option<(std::time::Instant, Offset)>,
    /// A queue input's queue and receipts.
    pub(crate) queue: Option<QueueInput>,
}

/// What a queue input holds: the receipts of its fetched messages (aligned with
/// `Input::fetched`; those from `unprocessed` on not yet processed) and of those processed
/// since the last commit.
#[derive(Debug)]
pub(crate) struct QueueInput {
    pub(crate) queue: Arc<weir_queue::Queue>,
    /// The least lock a receive takes (ms): [`QUEUE_LOCK_COMMIT_INTERVALS`] commit intervals.
    lock_min_ms: i64,
    pub(crate) fetched: Vec<weir_queue::Receipt>,
    pub(crate) unprocessed: usize,
    pub(crate) processed: Vec<weir_queue::Receipt>,
}

impl QueueInput {
    pub(crate) fn new(queue: Arc<weir_queue::Queue>, commit_interval: Duration) -> QueueInput {
        let lock = commit_interval.saturating_mul(QUEUE_LOCK_COMMIT_INTERVALS);
        QueueInput {
            queue,
            lock_min_ms: i64::try_from(lock.as_millis()).unwrap_or(i64::MAX),
            fetched: Vec::new(),
            unprocessed: 0,
            processed: Vec::new(),
        }
    }
}

impl Drop for QueueInput {
    /// A task that stops without committing releases what it held, so a restarted task
    /// (or another consumer) gets it at once rather than after the locks time out. After a
    /// failed commit the queue partition is rebuilt from its journal first, so a receipt
    /// whose ack did commit is refused (stale) rather than released; one whose ack's
    /// transaction is still undecided is refused too, and comes back after its lock.
    fn drop(&mut self) {
        let unprocessed = self.fetched.get(self.unprocessed..).unwrap_or_default();
        let held: Vec<_> = unprocessed.iter().chain(&self.processed).copied().collect();
        if !held.is_empty() {
            if let Err(e) = self.queue.nack(&held, 0) {
                tracing::debug!(queue = %self.queue.name(), error = %e,
                    "releasing a stopped task's messages failed; they come back after their locks");
            }
        }
    }
}

impl Input {
    pub(crate) fn new(spec: InputSpec, position: Offset) -> Input {
        Input {
            topic: Arc::from(spec.topic.as_str()),
            spec,
            position,
            committed: position,
            fetched: Vec::new(),
            fetched_at: 0,
            watermarks: std::collections::VecDeque::new(),
            paced_from: None,
            queue: None,
        }
    }

    fn head(&self) -> Option<&InputRecord> {
        self.fetched.get(self.fetched_at)
    }

    /// Refills the fetched records when they are used up; false when there is nothing new.
    pub(crate) fn fetch(&mut self, log: &Log, partition: u32) -> Result<bool> {
        if self.fetched_at < self.fetched.len() {
            return Ok(true);
        }
        self.fetched.clear();
        self.fetched_at = 0;
        if let Some(g) = self.spec.generated {
            return Ok(self.generate(g, log, partition));
        }
        if self.queue.is_some() {
            return self.receive(partition);
        }
        // Watermark records not yet passed lie at or after the position: read again below.
        self.watermarks.clear();
        let at = self.position;
        let f = log.read_isolated(
            &self.topic,
            PartitionId(partition),
            at,
            FETCH_BYTES,
            Isolation::ReadCommitted,
        )?;
        for r in f.records() {
            let r = r.map_err(weir_log::LogError::from)?;
            let mut headers = Vec::new();
            for h in r.headers() {
                let (k, v) = h.map_err(weir_log::LogError::from)?;
                headers.push(weir_log::Header {
                    key: String::from_utf8_lossy(k).into_owned(),
                    value: v.map(|v| f.batches.slice_ref(v)),
                });
            }
            if self.spec.internal {
                if let Some((writer, wm, idle)) = watermark_record(&headers) {
                    self.watermarks.push_back((r.offset, writer, wm, idle));
                    continue;
                }
            }
            // Zero-copy: keys and values are slices of the fetched bytes.
            self.fetched.push(InputRecord {
                topic: self.topic.clone(),
                partition,
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key.map(|k| f.batches.slice_ref(k)),
                value: r.value.map(|v| f.batches.slice_ref(v)),
                headers,
            });
        }
        if self.fetched.is_empty() && !f.batches.is_empty() {
            // Only control batches or aborted records: step over them.
            self.position = at.max(f.next_offset().min(f.last_stable));
        }
        Ok(!self.fetched.is_empty())
    }
}

impl Input {
    /// Receives the next messages of a queue input's partition, under their locks.
    fn receive(&mut self, partition: u32) -> Result<bool> {
        let Some(q) = self.queue.as_mut() else {
            return Ok(false);
        };
        q.fetched.clear();
        q.unprocessed = 0;
        let lock_ms = q.queue.config().visibility_ms.max(q.lock_min_ms);
        for r in q
            .queue
            .try_receive_partition(partition, QUEUE_FETCH_MESSAGES, Some(lock_ms))?
        {
            q.fetched.push(r.receipt);
            let m = r.message;
            self.fetched.push(InputRecord {
                topic: self.topic.clone(),
                partition,
                offset: Offset(m.offset),
                timestamp: weir_log::Timestamp(m.timestamp),
                key: m.key,
                value: Some(m.body),
                headers: m.headers,
            });
        }
        Ok(!self.fetched.is_empty())
    }

    /// Marks fetched records `from..to` processed: a queue input's receipts then wait for
    /// the commit.
    pub(crate) fn processed(&mut self, from: usize, to: usize) {
        if let Some(q) = self.queue.as_mut() {
            q.processed.extend_from_slice(&q.fetched[from..to]);
            q.unprocessed = to;
        }
    }

    /// Makes the next records of a generated input: empty records numbered by offset, as many
    /// as its rate allows by now (and at most `GENERATED_FETCH_ROWS`), none past its end.
    fn generate(&mut self, g: crate::plan::GeneratedInput, log: &Log, partition: u32) -> bool {
        let at = self.position;
        let (since, from) = *self
            .paced_from
            .get_or_insert((std::time::Instant::now(), at));
        let mut until = at.0.saturating_add(GENERATED_FETCH_ROWS as i64);
        if let Some(end) = g.rows_of(partition) {
            until = until.min(i64::try_from(end).unwrap_or(i64::MAX));
        }
        let rate = g.rate_of_partition();
        if rate > 0 {
            let due = (since.elapsed().as_secs_f64() * rate as f64) as i64;
            until = until.min(from.0.saturating_add(due));
        }
        let now = log.now();
        for offset in at.0..until {
            self.fetched.push(InputRecord {
                topic: self.topic.clone(),
                partition,
                offset: Offset(offset),
                timestamp: now,
                key: None,
                value: None,
                headers: Vec::new(),
            });
        }
        !self.fetched.is_empty()
    }

    /// The watermark records the input's position has passed: (writer, watermark, idle).
    pub(crate) fn passed_watermarks(&mut self) -> Vec<(u32, i64, bool)> {
        let mut out = Vec::new();
        while let Some(&(offset, writer, wm, idle)) = self.watermarks.front() {
            if offset >= self.position {
                break;
            }
            self.watermarks.pop_front();
            out.push((writer, wm, idle));
        }
        out
    }
}

/// (writer, watermark, idle) of a watermark record sent by an upstream task.
fn watermark_record(headers: &[weir_log::Header]) -> Option<(u32, i64, bool)> {
    let get = |k: &str| {
        headers
            .iter()
            .find(|h| h.key == k)
            .and_then(|h| h.value.as_deref())
            .and_then(|v| std::str::from_utf8(v).ok())
    };
    let wm = get(crate::time::WATERMARK_HEADER)?.parse().ok()?;
    let writer = get(crate::time::WRITER_HEADER)?.parse().ok()?;
    Some((writer, wm, get(crate::time::IDLE_HEADER) == Some("1")))
}

/// The next batch to process: input `input`, fetched records `from..to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pick {
    pub(crate) input: usize,
    pub(crate) from: usize,
    pub(crate) to: usize,
}

/// Chooses the next batch among inputs that have fetched records: the input with the oldest
/// next record (a table first on a tie), at most `max_records`, cut before the first record
/// newer than another input's next one (at least one record).
pub(crate) fn pick(inputs: &[Input], max_records: usize) -> Option<Pick> {
    let rank = |i: &Input| {
        i.head()
            .map(|r| (r.timestamp.0, i.spec.kind == InputKind::Stream))
    };
    let (input, _) = inputs
        .iter()
        .enumerate()
        .filter_map(|(n, i)| rank(i).map(|r| (n, r)))
        .min_by_key(|(_, r)| *r)?;
    let chosen = &inputs[input];
    let from = chosen.fetched_at;
    let mut to = chosen.fetched.len().min(from + max_records.max(1));
    let others = inputs
        .iter()
        .enumerate()
        .filter(|(n, _)| *n != input)
        .filter_map(|(_, i)| i.head().map(|r| r.timestamp.0))
        .min();
    if let Some(limit) = others {
        if let Some(cut) = chosen.fetched[from + 1..to]
            .iter()
            .position(|r| r.timestamp.0 > limit)
        {
            to = from + 1 + cut;
        }
    }
    Some(Pick { input, from, to })
}
