//! Handles returned to callers: [`AppendTicket`] (a pending append, waited on or awaited) and
//! [`AppendListener`] (wakes a reader when a topic gets new records).

use std::time::{Duration, Instant};

use event_listener::{EventListener, Listener};
use tokio::sync::oneshot;

use crate::error::{LogError, Result};
use crate::log::Log;
use crate::queue::AppendOutcome;

/// A pending append; wait for it (blocking) or `.await` it.
#[derive(Debug)]
pub struct AppendTicket {
    pub(crate) rx: oneshot::Receiver<Result<AppendOutcome>>,
}

impl AppendTicket {
    /// Blocks until the append is acknowledged or failed. Not for use inside an async task.
    pub fn wait(self) -> Result<AppendOutcome> {
        self.rx.blocking_recv().unwrap_or(Err(LogError::Closed))
    }
}

impl std::future::Future for AppendTicket {
    type Output = Result<AppendOutcome>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(LogError::Closed)))
    }
}

/// How often a read-only view looks for data another process appended.
pub(crate) const READ_ONLY_POLL: Duration = Duration::from_millis(100);

/// Waits for appends to a topic (register before reading, then wait, so no append is missed).
#[derive(Debug)]
pub struct AppendListener(pub(crate) ListenerKind);

#[derive(Debug)]
pub(crate) enum ListenerKind {
    /// Woken by this process's writers.
    Event(EventListener),
    /// A read-only view: poll the files.
    Poll(Log, String),
}

impl AppendListener {
    /// Resolves when something is appended, for async callers (the Kafka server's long-poll
    /// fetch) that bound the wait with their own timer. A read-only view cannot be woken by
    /// another process, so its listener resolves at once and the caller's loop polls.
    pub async fn appended(self) {
        match self.0 {
            ListenerKind::Event(l) => l.await,
            ListenerKind::Poll(..) => {}
        }
    }

    /// Blocks until something is appended or `timeout` passes; true if something may be new.
    pub fn wait_timeout(self, timeout: Duration) -> bool {
        match self.0 {
            ListenerKind::Event(l) => l.wait_deadline(Instant::now() + timeout).is_some(),
            ListenerKind::Poll(log, topic) => {
                std::thread::sleep(timeout.min(READ_ONLY_POLL));
                log.refresh(&topic).is_ok()
            }
        }
    }
}
