//! The HTTP listener: `GET /metrics` (Prometheus text format) and `GET /health`. A tiny
//! HTTP/1.1 subset — one request per connection, headers capped at [`HTTP_REQUEST_BYTES_MAX`]
//! — is all a scraper and a load balancer's health check need, without an HTTP stack.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::broker::Broker;

/// Longest request head accepted; scrapers send a few hundred bytes.
pub const HTTP_REQUEST_BYTES_MAX: usize = 8 * 1024;
/// Concurrent HTTP connections; more are closed at once.
pub const HTTP_CONNECTIONS_MAX: usize = 64;
/// A client that has not sent its request head by then is dropped.
const HTTP_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(HTTP_CONNECTIONS_MAX));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
                let broker = broker.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, &broker).await {
                        tracing::debug!(error = %e, "http request failed");
                    }
                    drop(slot);
                });
            }
            _ = shutdown.changed() => break,
        }
    }
}

async fn answer(mut stream: TcpStream, broker: &Arc<Broker>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < HTTP_REQUEST_BYTES_MAX {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(HTTP_READ_TIMEOUT, read).await.is_err() {
        return Ok(());
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => {
            let b = broker.clone();
            let text = tokio::task::spawn_blocking(move || crate::metrics::render(&b))
                .await
                .unwrap_or_default();
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", text)
        }
        ("GET", "/health") => ("200 OK", "text/plain; charset=utf-8", "ok\n".to_string()),
        ("GET", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "try /metrics or /health\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "GET only\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
