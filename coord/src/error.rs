//! Errors of the coordinators, sorted by whose fault they are. Group protocol outcomes that a
//! well-behaved member handles by rejoining (`RebalanceInProgress`, `UnknownMember`,
//! `IllegalGeneration`) are errors here, as in Kafka, so a stale member can never act.

use weir_log::LogError;

/// Errors returned by `weir-coord`.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// The group is rebalancing; rejoin to get the new generation.
    #[error("group `{0}` is rebalancing; rejoin the group")]
    RebalanceInProgress(String),
    /// The member is not (or no longer) in the group, e.g. after its session expired.
    #[error("member `{member}` is not in group `{group}` (its session may have expired); rejoin")]
    UnknownMember {
        /// Group id.
        group: String,
        /// Member id.
        member: String,
    },
    /// A request from an older generation (a zombie member after a rebalance).
    #[error("generation {got} of group `{group}` is stale; the group is at generation {current}")]
    IllegalGeneration {
        /// Group id.
        group: String,
        /// Generation the request carried.
        got: i32,
        /// Current generation.
        current: i32,
    },
    /// The members share no assignment protocol.
    #[error("group `{0}`: members share no assignment protocol")]
    InconsistentProtocol(String),
    /// The group does not exist.
    #[error("group `{0}` does not exist")]
    UnknownGroup(String),
    /// The operation needs a group without live members.
    #[error("group `{group}` has {members} live member(s); stop them first")]
    GroupNotEmpty {
        /// Group id.
        group: String,
        /// Live members.
        members: usize,
    },
    /// `auto.offset.reset=none` and no committed offset.
    #[error(
        "no committed offset for {topic}/{partition} in group `{group}` and auto.offset.reset=none"
    )]
    NoOffset {
        /// Group id.
        group: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
    },
    /// Consumer-protocol bytes (a subscription or an assignment) that do not decode.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An argument is invalid.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A session timeout outside the coordinator's bounds.
    #[error("session timeout {got:?} is outside {min:?}..={max:?}")]
    InvalidSessionTimeout {
        /// What the member asked for.
        got: std::time::Duration,
        /// The shortest allowed.
        min: std::time::Duration,
        /// The longest allowed.
        max: std::time::Duration,
    },
    /// A transactional id that was never initialised (`init_transactions` first).
    #[error("transactional id `{0}` is not initialised; call init_transactions first")]
    UnknownTransactionalId(String),
    /// The transaction is being completed (markers are being written); retry shortly.
    #[error("the transaction of `{0}` is completing; retry")]
    TransactionCompleting(String),
    /// The request does not fit the transaction's state (commit after a decided abort, say).
    #[error("transaction of `{id}`: {reason}")]
    InvalidTxnState {
        /// Transactional id.
        id: String,
        /// What does not fit.
        reason: String,
    },
    /// A committed offset's metadata is longer than the limit.
    #[error("offset metadata of {len} bytes is over the {max}-byte limit")]
    MetadataTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A group id is empty or too long to store.
    #[error("group id of {len} bytes: group ids are 1 to {max} bytes")]
    InvalidGroupId {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A stored offset record could not be decoded.
    #[error("corrupted offset record in {topic}/{partition} at offset {offset}: {reason}")]
    CorruptedOffsetRecord {
        /// The offsets topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// Offset of the record.
        offset: i64,
        /// What is wrong.
        reason: String,
    },
    /// The coordinator has shut down.
    #[error("the coordinator is closed")]
    Closed,
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Result alias.
pub type Result<T, E = CoordError> = std::result::Result<T, E>;
