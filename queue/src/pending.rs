//! [`Pending`]: an operation applied to a queue's memory whose journal records are on their
//! way to disk. Its answer may be given only once they are durable: [`Pending::wait`] blocks
//! for that, [`Pending::durable`] awaits it (an async server's workers never block on an
//! fsync). A failed journal write marks its partition for rebuilding and fails the answer.

use crate::error::Result;
use crate::queue::{JournalTicket, Queue};

/// An answer waiting for its journal.
#[must_use = "answer only once the journal is durable: wait or await it"]
#[derive(Debug)]
pub struct Pending<'q, T> {
    pub(crate) queue: &'q Queue,
    pub(crate) value: T,
    pub(crate) tickets: Vec<(u32, JournalTicket)>,
}

impl<'q, T> Pending<'q, T> {
    pub(crate) fn new(queue: &'q Queue, value: T, tickets: Vec<(u32, JournalTicket)>) -> Self {
        Pending {
            queue,
            value,
            tickets,
        }
    }

    /// Blocks until the journal is durable; then the answer.
    pub fn wait(self) -> Result<T> {
        self.queue.settle_tickets(self.tickets)?;
        Ok(self.value)
    }

    /// Awaits the journal; then the answer.
    pub async fn durable(self) -> Result<T> {
        let mut first_error = None;
        for (p, t) in self.tickets {
            if let Err(e) = t.durable(&self.queue.log).await {
                self.queue.break_partition(p);
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(self.value), Err)
    }
}
