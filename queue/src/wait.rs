//! [`Changed`]: the future a waiting receive sleeps on — something was appended to the
//! queue's topic, or a settlement made a message available — and [`block_until`], which
//! waits for it on a plain thread (the Rust API) with a deadline, so the same wake-ups serve
//! blocking callers and async servers alike.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use event_listener::EventListener;

/// Resolves when the queue may have something new for a receive.
pub struct Changed {
    pub(crate) appended: Pin<Box<dyn Future<Output = ()> + Send>>,
    pub(crate) settled: EventListener,
}

impl std::fmt::Debug for Changed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Changed")
    }
}

impl Future for Changed {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.appended.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        Pin::new(&mut self.settled).poll(cx)
    }
}

/// Wakes the thread that waits.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Waits on this thread until `changed` resolves or `until` passes.
pub fn block_until(changed: Changed, until: Instant) {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut changed = std::pin::pin!(changed);
    loop {
        if changed.as_mut().poll(&mut cx).is_ready() {
            return;
        }
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::park_timeout(until - now);
    }
}
