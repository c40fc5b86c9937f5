//! The HTTP listener: `GET /metrics` (Prometheus text format), `GET /health`, and whatever
//! the embedding application adds through a [`Control`] handler (`weir serve` hosts
//! pipelines there). A tiny HTTP/1.1 subset — one request per connection, the request capped
//! at [`HTTP_REQUEST_BYTES_MAX`] with its body — is all a scraper, a health check and Weir's
//! own CLI need, without an HTTP stack. [`request`] is the matching client.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::broker::Broker;

/// Longest request (head and body) accepted; scrapers send a few hundred bytes, the CLI's
/// control requests a few kilobytes.
pub const HTTP_REQUEST_BYTES_MAX: usize = 64 * 1024;
/// Concurrent HTTP connections; more are closed at once.
pub const HTTP_CONNECTIONS_MAX: usize = 64;
/// A client that has not sent its whole request by then is dropped.
const HTTP_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Extra endpoints on the HTTP listener, provided by the application that embeds the server.
/// Called off the async workers, so it may block.
pub trait Control: Send + Sync + std::fmt::Debug {
    /// Answers `method path` with `body`: `Some((status, body))`, or `None` for not found.
    fn handle(&self, method: &str, path: &str, body: &[u8]) -> Option<(u16, String)>;

    /// More of `GET /metrics` (Prometheus text), after the server's own.
    fn metrics(&self) -> String {
        String::new()
    }
}

/// Serves until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    control: Option<Arc<dyn Control>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(HTTP_CONNECTIONS_MAX));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
                let (broker, control) = (broker.clone(), control.clone());
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, &broker, control).await {
                        tracing::debug!(error = %e, "http request failed");
                    }
                    drop(slot);
                });
            }
            _ = shutdown.changed() => break,
        }
    }
}

/// The request's head and body, once whole (`Content-Length` bytes after the head).
fn complete(buf: &[u8]) -> Option<(String, &[u8])> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let body = buf.get(end + 4..end + 4 + length)?;
    Some((head, body))
}

async fn answer(
    mut stream: TcpStream,
    broker: &Arc<Broker>,
    control: Option<Arc<dyn Control>>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let read = async {
        while complete(&buf).is_none() && buf.len() < HTTP_REQUEST_BYTES_MAX {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(HTTP_READ_TIMEOUT, read).await.is_err() {
        return Ok(());
    }
    let Some((head, body)) = complete(&buf) else {
        return respond(&mut stream, 413, "request too large or incomplete\n".into()).await;
    };
    let line = head.lines().next().unwrap_or_default().to_string();
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let body = body.to_vec();
    let (status, text) = match (method.as_str(), path.as_str()) {
        ("GET", "/metrics") => {
            let (b, c) = (broker.clone(), control.clone());
            let text = tokio::task::spawn_blocking(move || {
                let mut text = crate::metrics::render(&b);
                if let Some(c) = c {
                    text.push_str(&c.metrics());
                }
                text
            })
            .await
            .unwrap_or_default();
            (200, text)
        }
        ("GET", "/health") => (200, "ok\n".to_string()),
        _ => {
            let handled = match control {
                Some(c) => tokio::task::spawn_blocking(move || c.handle(&method, &path, &body))
                    .await
                    .unwrap_or(Some((500, "control handler failed\n".into()))),
                None => None,
            };
            handled.unwrap_or((404, "try GET /metrics or /health\n".to_string()))
        }
    };
    respond(&mut stream, status, text).await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        413 => "Payload Too Large",
        _ => "Error",
    }
}

async fn respond(stream: &mut TcpStream, status: u16, body: String) -> std::io::Result<()> {
    let content_type = if body.starts_with('{') || body.starts_with('[') {
        "application/json"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    let response = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// A blocking HTTP request to a Weir HTTP listener: (status, body).
pub fn request(addr: &str, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(HTTP_READ_TIMEOUT * 3))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.take(HTTP_REQUEST_BYTES_MAX as u64 * 16)
        .read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response")
        })?;
    Ok((status, body.to_string()))
}
