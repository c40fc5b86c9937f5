//! Push requests — `SUBSCRIBE [TO] name` and `SELECT … EMIT CHANGES`, alone or inside
//! `COPY (…) TO STDOUT` — streamed to the client as they are committed (see
//! [`weir_sql::Subscription`] for the rows, [`weir_sql::PushRequest`] for the requests).
//! Under COPY they travel as COPY text lines, which psql prints and psycopg's
//! `cursor.copy()` iterates; without COPY, as the rows of a query that does not end.
//!
//! Each subscription has a thread that polls the log and a bounded queue to the connection:
//! a slow client holds the thread back, never memory. A subscription ends when its client
//! goes (noticed at the next row sent), and at most [`SUBSCRIPTIONS_MAX`] run at once.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use futures::{Sink, SinkExt};
use pgwire::api::portal::Format;
use pgwire::api::results::Tag;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
use pgwire::messages::data::RowDescription;
use pgwire::messages::startup::ParameterStatus;
use pgwire::messages::PgWireBackendMessage;
use tokio::sync::{mpsc, Semaphore};
use weir_sql::datafusion::arrow::array::RecordBatch;
use weir_sql::datafusion::arrow::datatypes::SchemaRef;
use weir_sql::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use weir_sql::{Database, PushRequest, SqlError, Subscription};

use crate::encode;

/// Subscriptions that may run at once on a server (each holds a thread).
pub const SUBSCRIPTIONS_MAX: usize = 64;

/// Batches queued between a subscription's thread and its connection.
const SUBSCRIBE_QUEUE_BATCHES: usize = 4;

/// How long a subscription waits for changes before it checks that its client is still
/// listening.
const SUBSCRIBE_POLL: Duration = Duration::from_millis(250);

/// How long a subscription may send nothing before it checks that its client is there.
const SUBSCRIBE_IDLE_PROBE: Duration = Duration::from_secs(10);

/// The idle probe: a server parameter as the startup reported it (so nothing changes for
/// the client).
const PROBE_PARAMETER: (&str, &str) = ("integer_datetimes", "on");

/// The server's subscription slots.
pub(crate) type Subscriptions = Arc<Semaphore>;

/// What to push, and how the rows travel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    request: PushRequest,
    copy: bool,
}

impl Target {
    /// Whether the rows travel as COPY data.
    pub(crate) fn is_copy(&self) -> bool {
        self.copy
    }
}

/// A push request, alone or as `COPY (request) TO STDOUT`, else `None`.
pub(crate) fn parse(sql: &str) -> Option<Target> {
    let s = sql.trim().trim_end_matches(';').trim();
    let lower = s.to_ascii_lowercase();
    let (inner, copy) = match lower.strip_prefix("copy") {
        Some(rest) => {
            let rest = rest.trim_start().strip_prefix('(')?;
            let close = rest.rfind(')')?;
            let after = rest[close + 1..].split_whitespace().collect::<Vec<_>>();
            if after.len() < 2 || after[0] != "to" || after[1] != "stdout" {
                return None;
            }
            let start = s.len() - rest.len();
            (&s[start..start + close], true)
        }
        None => (s, false),
    };
    Some(Target {
        request: PushRequest::parse(inner)?,
        copy,
    })
}

/// A started subscription: its columns and the queue of its changes.
#[derive(Debug)]
pub(crate) struct Started {
    pub(crate) schema: SchemaRef,
    pub(crate) changes: mpsc::Receiver<PgWireResult<RecordBatch>>,
}

/// Opens the subscription and its thread (blocking: reads the catalog).
pub(crate) fn start(
    db: &Database,
    slots: &Subscriptions,
    target: &Target,
) -> Result<Started, SqlError> {
    let permit = slots.clone().try_acquire_owned().map_err(|_| {
        SqlError::Execution(format!(
            "too many subscriptions: {SUBSCRIPTIONS_MAX} run already; end one first"
        ))
    })?;
    let mut subscription = db.session()?.push(&target.request)?;
    let schema = subscription.schema().clone();
    let (tx, changes) = mpsc::channel::<PgWireResult<RecordBatch>>(SUBSCRIBE_QUEUE_BATCHES);
    std::thread::Builder::new()
        .name("weir-pg-subscribe".into())
        .spawn(move || {
            let _permit = permit;
            pump(&mut subscription, &tx);
        })
        .map_err(|e| SqlError::Execution(format!("cannot start the subscription: {e}")))?;
    Ok(Started { schema, changes })
}

/// Streams a started subscription to the client, flushing every batch, until the client
/// goes (a failed write) or the subscription fails; returns the rows sent.
pub(crate) async fn stream_to<C>(
    client: &mut C,
    target: &Target,
    mut started: Started,
) -> PgWireResult<usize>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let columns = started.schema.fields().len();
    let fields = encode::fields(&started.schema, &Format::UnifiedText);
    match target.copy {
        true => {
            let formats = vec![0i16; columns];
            client
                .send(PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(
                    0,
                    columns as i16,
                    formats,
                )))
                .await?;
        }
        false => {
            let description = RowDescription::new(fields.iter().map(Into::into).collect());
            client
                .send(PgWireBackendMessage::RowDescription(description))
                .await?;
        }
    }
    let mut sent = 0;
    loop {
        let batch = match tokio::time::timeout(SUBSCRIBE_IDLE_PROBE, started.changes.recv()).await {
            Ok(Some(b)) => b?,
            Ok(None) => break,
            Err(_) => {
                // Nothing changed for a while: a message the protocol allows at any time
                // (and drivers apply silently) finds out whether the client is still there;
                // a failed write ends the subscription and frees its slot.
                let probe =
                    ParameterStatus::new(PROBE_PARAMETER.0.into(), PROBE_PARAMETER.1.into());
                client
                    .send(PgWireBackendMessage::ParameterStatus(probe))
                    .await?;
                continue;
            }
        };
        sent += batch.num_rows();
        match target.copy {
            true => {
                for line in copy_text(&batch)? {
                    client.feed(PgWireBackendMessage::CopyData(line)).await?;
                }
            }
            false => {
                for row in encode::rows(&[batch], &fields)? {
                    client.feed(PgWireBackendMessage::DataRow(row)).await?;
                }
            }
        }
        client.flush().await?;
    }
    if target.copy {
        client
            .send(PgWireBackendMessage::CopyDone(CopyDone::new()))
            .await?;
    }
    Ok(sent)
}

/// The tag that ends a subscription's response.
pub(crate) fn tag(target: &Target, rows: usize) -> Tag {
    match (target.copy, &target.request) {
        (true, _) => Tag::new("COPY").with_rows(rows),
        (false, PushRequest::Subscribe(_)) => Tag::new("SUBSCRIBE").with_rows(rows),
        (false, PushRequest::Query(_)) => Tag::new("SELECT").with_rows(rows),
    }
}

/// Moves changes to the connection until it stops listening or the log fails.
fn pump(subscription: &mut Subscription, tx: &mpsc::Sender<PgWireResult<RecordBatch>>) {
    loop {
        if tx.is_closed() {
            return;
        }
        match subscription.next_batch(SUBSCRIBE_POLL) {
            Ok(b) if b.num_rows() == 0 => continue,
            Ok(b) => {
                if tx.blocking_send(Ok(b)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(PgWireError::ApiError(Box::new(e))));
                return;
            }
        }
    }
}

/// Rows as COPY text, one message per row as Postgres sends them (drivers such as psycopg
/// parse one row per message): tab-separated, `\N` for NULL, backslash escapes.
fn copy_text(batch: &RecordBatch) -> PgWireResult<Vec<CopyData>> {
    let options = FormatOptions::default().with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.f"));
    let formatters: Vec<ArrayFormatter<'_>> = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<_, _>>()
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let mut lines = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut out = BytesMut::new();
        for (c, f) in formatters.iter().enumerate() {
            if c > 0 {
                out.put_u8(b'\t');
            }
            if batch.column(c).is_null(row) || batch.column(c).data_type().is_null() {
                out.put_slice(b"\\N");
                continue;
            }
            for ch in f.value(row).to_string().chars() {
                match ch {
                    '\\' => out.put_slice(b"\\\\"),
                    '\t' => out.put_slice(b"\\t"),
                    '\n' => out.put_slice(b"\\n"),
                    '\r' => out.put_slice(b"\\r"),
                    c => {
                        let mut buf = [0u8; 4];
                        out.put_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
        }
        out.put_u8(b'\n');
        lines.push(CopyData::new(out.freeze()));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_requests_parse_alone_and_under_copy() {
        let t = |name: &str, copy| {
            Some(Target {
                request: PushRequest::Subscribe(name.into()),
                copy,
            })
        };
        assert_eq!(parse("SUBSCRIBE TO Stats;"), t("stats", false));
        assert_eq!(parse("subscribe \"Stats\""), t("Stats", false));
        assert_eq!(parse("COPY (SUBSCRIBE TO v) TO STDOUT"), t("v", true));
        assert_eq!(parse("copy ( subscribe v ) to stdout;"), t("v", true));
        assert_eq!(parse("COPY (SELECT 1) TO STDOUT"), None);
        assert_eq!(parse("SUBSCRIBE TO a b"), None);
        assert_eq!(parse("SELECT 1"), None);
        let q = "SELECT a, COUNT(*) FROM s GROUP BY a EMIT CHANGES";
        assert_eq!(
            parse(&format!("COPY ({q}) TO STDOUT;")),
            Some(Target {
                request: PushRequest::Query(q.into()),
                copy: true
            })
        );
    }
}
