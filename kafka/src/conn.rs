//! One client connection: read request frames, dispatch them in order, and write responses
//! in request order (Kafka's per-connection ordering rule). Produce and Fetch requests
//! pipeline, up to [`IN_FLIGHT_REQUESTS_MAX`] waiting for their results; every other request
//! waits for the ones before it and holds back the ones after it, so its effects (a commit, a
//! join, a transaction marker) happen in request order, as in Kafka.
//!
//! Concurrency state, and why it exists:
//! - `in_flight` ([`FuturesOrdered`]): responses still being produced (an fsync, a long poll, a
//!   group join). Ordered, so a quick response never overtakes a slow earlier one. Bounded: at
//!   the cap the connection stops reading, which pushes back on the client through TCP.
//! - `shutdown` (a watch channel): on server shutdown the connection stops reading, finishes
//!   what is in flight, writes those responses, and closes.
//!
//! A frame that cannot be answered (bad length, unknown API key, undecodable body) closes this
//! connection only, after the responses to earlier requests were written.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesOrdered, StreamExt};
use kafka_protocol::messages::ApiKey;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::api::{dispatch, Reply};
use crate::broker::Broker;
use crate::error::ConnError;
use crate::frame::FrameReader;
use crate::limits::IN_FLIGHT_REQUESTS_MAX;

type Pending = BoxFuture<'static, Result<Option<Bytes>, ConnError>>;

/// Serves one connection until the client closes it, a frame cannot be answered, or the
/// server shuts down.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    let metrics = &broker.metrics;
    metrics
        .connections_open
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match run(stream, peer, &broker, &mut shutdown).await {
        Ok(()) => tracing::debug!(%peer, "connection closed"),
        Err(ConnError::Io(e)) => tracing::debug!(%peer, error = %e, "connection lost"),
        Err(e) => {
            metrics
                .connections_failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(%peer, error = %e, "closing connection");
        }
    }
    metrics
        .connections_open
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    broker: &Arc<Broker>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), ConnError> {
    let (mut rd, mut wr) = stream.into_split();
    let mut frames = FrameReader::default();
    let mut in_flight: FuturesOrdered<Pending> = FuturesOrdered::new();
    // A frame read but held back until the requests before it are done.
    let mut held: Option<Bytes> = None;
    // A request that must complete before the next one starts is in flight.
    let mut barrier = false;
    // The client closed its side; buffered frames are still answered.
    let mut eof = false;
    // Shutdown or an unanswerable frame: nothing more is dispatched.
    let mut stopped = *shutdown.borrow();
    // The first error that stopped dispatching; reported after in-flight responses are written.
    let mut failure: Option<ConnError> = None;
    loop {
        if in_flight.is_empty() {
            barrier = false;
        }
        while !stopped && !barrier && in_flight.len() < IN_FLIGHT_REQUESTS_MAX {
            let frame = match held.take() {
                Some(f) => f,
                None => match frames.try_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        failure = Some(e);
                        stopped = true;
                        break;
                    }
                },
            };
            // Frames are at least a header long (FrameReader checks), so the key is there.
            let api = ApiKey::try_from(i16::from_be_bytes([frame[0], frame[1]])).ok();
            let ordered = is_ordered(api);
            if ordered && !in_flight.is_empty() {
                held = Some(frame);
                break;
            }
            let started = Instant::now();
            let mut blocks = ordered;
            match dispatch(broker, frame, peer) {
                Ok(reply) => {
                    blocks |= matches!(reply, Reply::Barrier(_));
                    push(&mut in_flight, reply, broker, api, started)
                }
                Err(e) => {
                    if let Some(api) = api {
                        broker.metrics.error(api);
                    }
                    failure = Some(e);
                    stopped = true;
                }
            }
            barrier = blocks;
        }
        let pending_input = held.is_some() || (!eof && !stopped);
        if in_flight.is_empty() && (stopped || !pending_input) {
            break;
        }
        // While an ordered request is in flight nothing more is dispatched, so nothing more is
        // read either: the buffer never holds more than the frames already dispatched.
        let can_read = !eof
            && !stopped
            && !barrier
            && held.is_none()
            && in_flight.len() < IN_FLIGHT_REQUESTS_MAX;
        tokio::select! {
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                if let Some(frame) = done? {
                    wr.write_all(&frame).await?;
                }
            }
            more = frames.fill(&mut rd), if can_read => {
                if !more? {
                    if frames.has_partial() {
                        tracing::debug!("client closed the connection in the middle of a frame");
                    }
                    eof = true;
                }
            }
            _ = shutdown.changed(), if !stopped => {
                stopped = true;
            }
        }
    }
    wr.shutdown().await.ok();
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Whether a request must see every earlier request of its connection done, and be done
/// before any later one starts: Kafka applies a connection's requests strictly in order.
/// Produce and Fetch alone pipeline (appends are submitted in request order inside
/// `dispatch`, so an idempotent producer's batches keep their sequence).
fn is_ordered(api: Option<ApiKey>) -> bool {
    !matches!(api, Some(ApiKey::Produce | ApiKey::Fetch))
}

/// Queues a reply's frame in request order, timing the request until its response exists.
fn push(
    in_flight: &mut FuturesOrdered<Pending>,
    reply: Reply,
    broker: &Arc<Broker>,
    api: Option<ApiKey>,
    started: Instant,
) {
    let done = move |broker: &Broker, failed: bool| {
        if let Some(api) = api {
            broker.metrics.request(api, started.elapsed());
            if failed {
                broker.metrics.error(api);
            }
        }
    };
    match reply {
        Reply::Now(frame) => {
            done(broker, false);
            in_flight.push_back(Box::pin(async move { Ok(Some(frame)) }));
        }
        Reply::Later(fut) | Reply::Barrier(fut) => {
            let broker = broker.clone();
            in_flight.push_back(Box::pin(async move {
                let r = fut.await;
                done(&broker, r.is_err());
                r
            }));
        }
        Reply::Silent => done(broker, false),
    }
}
