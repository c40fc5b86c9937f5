//! The HTTP listener: HTTP/1.1 with keep-alive (hyper), one task per connection, at most
//! [`SQS_CONNECTIONS_MAX`] connections and [`SQS_REQUEST_BYTES_MAX`] per request; each
//! request's signature checked, its action answered, its error in SQS's JSON form.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use weir_queue::Queues;

use crate::api::{Api, Ctx};
use crate::auth::{self, Credentials, SignedRequest};
use crate::error::SqsError;

/// Concurrent connections; more wait in the kernel's accept queue.
pub const SQS_CONNECTIONS_MAX: usize = 1024;
/// Largest request body: a batch of ten messages of 1 MiB in all, JSON-escaped, fits.
pub const SQS_REQUEST_BYTES_MAX: usize = 4 << 20;
/// The listener's async workers (requests block on their own threads).
const SQS_RUNTIME_WORKERS: usize = 2;
/// Threads for the blocking part of requests (queue operations waiting for fsyncs).
const SQS_BLOCKING_THREADS_MAX: usize = 256;

/// Why the listener did not start.
#[derive(Debug, thiserror::Error)]
pub enum SqsServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// No credentials on a listener other hosts can reach.
    #[error("the SQS API on {0} is reachable from other hosts: configure credentials (--sqs-credentials ACCESS_KEY:SECRET) or listen on a loopback address")]
    Unprotected(SocketAddr),
    /// The runtime could not start.
    #[error("cannot start the SQS listener's runtime: {0}")]
    Runtime(std::io::Error),
}

/// The listener's settings.
#[derive(Debug, Clone)]
pub struct SqsConfig {
    /// `HOST:PORT` to bind.
    pub listen: String,
    /// Who may call; none (loopback only) accepts every request.
    pub credentials: Credentials,
}

struct State {
    api: Arc<Api>,
    credentials: Credentials,
}

/// The SQS listener on a runtime of its own; dropping it stops the listener.
#[derive(Debug)]
pub struct SqsServerHandle {
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: watch::Sender<bool>,
    addr: SocketAddr,
}

impl SqsServerHandle {
    /// Binds and serves `queues`.
    pub fn start(queues: Queues, config: SqsConfig) -> Result<SqsServerHandle, SqsServeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(SQS_RUNTIME_WORKERS)
            .max_blocking_threads(SQS_BLOCKING_THREADS_MAX)
            .thread_name("weir-sqs")
            .enable_all()
            .build()
            .map_err(SqsServeError::Runtime)?;
        let listener = runtime
            .block_on(TcpListener::bind(&config.listen))
            .map_err(|source| SqsServeError::Bind {
                addr: config.listen.clone(),
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| SqsServeError::Bind {
                addr: config.listen.clone(),
                source,
            })?;
        if config.credentials.is_empty() && !addr.ip().is_loopback() {
            return Err(SqsServeError::Unprotected(addr));
        }
        let state = Arc::new(State {
            api: Arc::new(Api::new(queues)),
            credentials: config.credentials,
        });
        let (tx, rx) = watch::channel(false);
        runtime.spawn(serve(listener, state, rx));
        Ok(SqsServerHandle {
            runtime: Some(runtime),
            shutdown: tx,
            addr,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and closes the connections.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
        }
    }
}

impl Drop for SqsServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(listener: TcpListener, state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(SQS_CONNECTIONS_MAX));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(state.clone(), req));
                    let conn = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service);
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "SQS connection ended with an error");
                    }
                    drop(slot);
                });
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn answer(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let result = respond(&state, req).await;
    let response = match result {
        Ok(body) => json_response(StatusCode::OK, &body, None),
        Err(e) => {
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
            json_response(status, &e.body(), Some(e.query_header()))
        }
    };
    Ok(response)
}

fn json_response(
    status: StatusCode,
    body: &serde_json::Value,
    query_error: Option<String>,
) -> Response<Full<Bytes>> {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0");
    if let Some(q) = query_error {
        builder = builder.header("x-amzn-query-error", q);
    }
    let bytes = Bytes::from(body.to_string());
    builder
        .body(Full::new(bytes.clone()))
        .unwrap_or_else(|_| Response::new(Full::new(bytes)))
}

async fn respond(
    state: &Arc<State>,
    req: Request<Incoming>,
) -> Result<serde_json::Value, SqsError> {
    let (parts, body) = req.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let Some(target) = header("x-amz-target") else {
        return Err(SqsError::unsupported(
            "A request without X-Amz-Target (the query protocol)",
        ));
    };
    // Weir's own actions (subscriptions, which SQS has not) are `Weir.<Action>`.
    let action = match (
        target.strip_prefix("AmazonSQS."),
        target.strip_prefix("Weir."),
    ) {
        (Some(a), _) => a.to_string(),
        (_, Some(a)) => format!("Weir.{a}"),
        _ => {
            return Err(SqsError::invalid_parameter(format!(
                "unknown target {target}"
            )))
        }
    };
    let body = Limited::new(body, SQS_REQUEST_BYTES_MAX)
        .collect()
        .await
        .map_err(|e| {
            SqsError::batch(
                "BatchRequestTooLong",
                "AWS.SimpleQueueService.BatchRequestTooLong",
                format!(
                    "the request body is unreadable or over {SQS_REQUEST_BYTES_MAX} bytes: {e}"
                ),
            )
        })?
        .to_bytes();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let signed = SignedRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or_default(),
        headers,
        body: &body,
    };
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let region = auth::verify(&state.credentials, &signed, now_s)?;
    let ctx = Ctx {
        host: header("host").unwrap_or_else(|| "localhost".into()),
        region,
    };
    state.api.dispatch(action, body, ctx).await
}
