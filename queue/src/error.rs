//! [`QueueError`]: why a queue operation was refused, sorted by whose fault it is.

/// A queue operation's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    // ----- the caller's fault -----
    /// The receipt names a delivery that is over: the lock timed out (the message may have
    /// gone to another consumer, whose receipt is the valid one), or it was settled already.
    #[error("receipt {0} is no longer valid: its lock expired or the message was settled")]
    StaleReceipt(String),
    /// The receipt is not one this queue hands out.
    #[error("`{0}` is not a receipt of this queue")]
    BadReceipt(String),
    /// A setting is out of its range.
    #[error("invalid queue setting: {0}")]
    InvalidSetting(String),
}

/// A queue result.
pub type Result<T> = std::result::Result<T, QueueError>;
