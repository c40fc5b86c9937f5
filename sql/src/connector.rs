//! [`RunningConnector`]: a connector to another system (the PostgreSQL sink, the CDC source)
//! running on a thread of its own beside the engine's queries, with a stop flag and the status
//! `SHOW QUERIES` reports.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A running connector.
#[derive(Debug)]
pub(crate) struct RunningConnector {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    status: Arc<Mutex<ConnectorStatus>>,
}

/// What `SHOW QUERIES` says of a connector.
#[derive(Debug, Default, Clone)]
pub(crate) struct ConnectorStatus {
    /// Rows applied since it started.
    pub(crate) applied: u64,
    /// Why it stopped, or is retrying.
    pub(crate) error: Option<String>,
}

impl RunningConnector {
    /// Runs `body` on a thread named `name`; it returns once the stop flag it is given is set
    /// (or it fails, saying why in the status it is given).
    pub(crate) fn spawn(
        name: &str,
        body: impl FnOnce(&AtomicBool, &Mutex<ConnectorStatus>) + Send + 'static,
    ) -> std::io::Result<RunningConnector> {
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Mutex::new(ConnectorStatus::default()));
        let (s, st) = (stop.clone(), status.clone());
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || body(&s, &st))?;
        Ok(RunningConnector {
            stop,
            thread: Some(thread),
            status,
        })
    }

    /// Stops it after its current batch.
    pub(crate) fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Its counts and last failure.
    pub(crate) fn status(&self) -> ConnectorStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
