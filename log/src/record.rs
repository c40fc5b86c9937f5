//! Records as producers hand them to the log, and as readers see them.
//!
//! [`Record`] owns its bytes (cheaply, via `Bytes`); [`RecordView`] borrows from a fetched
//! batch so reading allocates nothing per record. A record without a value is a tombstone.

use bytes::Bytes;

use crate::types::{Offset, Timestamp};

/// One record header: a string key and an optional value, as in Kafka.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Header name.
    pub key: String,
    /// Header value; `None` is Kafka's null.
    pub value: Option<Bytes>,
}

/// A record to append. The log assigns the offset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Optional key; it picks the partition in `send` and identifies the record for compaction.
    pub key: Option<Bytes>,
    /// Optional value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// Create time; `None` means "now" from the log's clock.
    pub timestamp: Option<Timestamp>,
}

impl Record {
    /// A record with a value and no key.
    pub fn value(value: impl Into<Bytes>) -> Record {
        Record {
            value: Some(value.into()),
            ..Record::default()
        }
    }

    /// A keyed record.
    pub fn keyed(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Record {
        Record {
            key: Some(key.into()),
            value: Some(value.into()),
            ..Record::default()
        }
    }

    /// A tombstone for `key`.
    pub fn tombstone(key: impl Into<Bytes>) -> Record {
        Record {
            key: Some(key.into()),
            ..Record::default()
        }
    }

    /// Sets the create timestamp.
    pub fn at(mut self, timestamp: Timestamp) -> Record {
        self.timestamp = Some(timestamp);
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Record {
        self.headers.push(Header {
            key: key.into(),
            value: Some(value.into()),
        });
        self
    }
}

/// A record borrowed from a fetched batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Absolute offset.
    pub offset: Offset,
    /// Create time, or log-append time if the topic uses it.
    pub timestamp: Timestamp,
    /// Key bytes, if any.
    pub key: Option<&'a [u8]>,
    /// Value bytes; `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    /// Raw headers area; iterate with [`RecordView::headers`].
    pub(crate) headers_raw: &'a [u8],
    /// Number of headers.
    pub(crate) header_count: usize,
}

impl<'a> RecordView<'a> {
    /// The record's headers as (key, value) pairs.
    pub fn headers(&self) -> crate::batch::HeaderIter<'a> {
        crate::batch::HeaderIter::new(self.headers_raw, self.header_count)
    }

    /// Copies the view into an owned [`Record`].
    pub fn to_record(&self) -> Record {
        Record {
            key: self.key.map(Bytes::copy_from_slice),
            value: self.value.map(Bytes::copy_from_slice),
            headers: self
                .headers()
                .filter_map(|h| h.ok())
                .map(|(k, v)| Header {
                    key: String::from_utf8_lossy(k).into_owned(),
                    value: v.map(Bytes::copy_from_slice),
                })
                .collect(),
            timestamp: Some(self.timestamp),
        }
    }
}
