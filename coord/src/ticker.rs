//! [`Ticker`]: a periodic background thread of a coordinator. It holds only a weak reference
//! to its owner's state. The owner's handles share the `Ticker` (not the state), so the last
//! handle dropped stops and joins the thread: a tick in progress finishes first, and the state
//! is released before that drop returns (a reopen of the same log right after cannot find it
//! still locked).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// A running background tick; stopped and joined on drop.
#[derive(Debug)]
pub(crate) struct Ticker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Calls `tick` with the owner every `every`, while the owner lives.
    pub(crate) fn spawn<T: Send + Sync + 'static>(
        name: &str,
        every: Duration,
        owner: Weak<T>,
        tick: impl Fn(&T) + Send + 'static,
    ) -> std::io::Result<Ticker> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || loop {
                std::thread::sleep(every);
                if stopped.load(Ordering::Acquire) {
                    return;
                }
                let Some(owner) = owner.upgrade() else { return };
                tick(&owner);
            })?;
        Ok(Ticker {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}
