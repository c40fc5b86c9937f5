//! Errors of the Kafka server, sorted by whose fault they are, and the mapping of the log's
//! and coordinators' errors onto Kafka's own error codes, so that clients retry or fail exactly
//! as they would against Kafka.

use std::net::SocketAddr;

use kafka_protocol::ResponseError;
use weir_coord::CoordError;
use weir_log::{batch::BatchError, LogError};

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The user asked for an address that cannot be bound (busy, or not ours).
    #[error("{flag} {addr}: cannot listen: {source}")]
    Bind {
        /// The command-line flag that set the address, so the message says what to change.
        flag: &'static str,
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// An address does not parse.
    #[error("{flag} {value}: not an address (expected HOST:PORT or `off`)")]
    BadAddress {
        /// The flag.
        flag: &'static str,
        /// What was given.
        value: String,
    },
    /// The environment failed (runtime threads, `serve.json`).
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The log failed to open or close.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A coordinator failed to start.
    #[error(transparent)]
    Coord(#[from] CoordError),
}

/// Why a connection is closed without a response (the frame cannot be answered).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    FrameTooLarge { len: i64, max: usize },
    #[error("frame of {0} bytes is too short for a request header")]
    FrameTooShort(i32),
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("API {api} version {version} is not supported and cannot be answered")]
    UnsupportedVersion { api: &'static str, version: i16 },
    #[error("malformed {api} v{version} request: {reason}")]
    Malformed {
        api: &'static str,
        version: i16,
        reason: String,
    },
    #[error("cannot encode a {api} v{version} response: {reason}")]
    Encode {
        api: &'static str,
        version: i16,
        reason: String,
    },
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

/// Kafka's error for a log error.
pub(crate) fn log_code(e: &LogError) -> ResponseError {
    use ResponseError as K;
    match e {
        LogError::UnknownTopic(_) | LogError::UnknownPartition { .. } => K::UnknownTopicOrPartition,
        LogError::TopicExists(_) => K::TopicAlreadyExists,
        LogError::InvalidTopicName { .. } => K::InvalidTopicException,
        LogError::InvalidConfig { .. } => K::InvalidConfig,
        LogError::OffsetOutOfRange { .. } => K::OffsetOutOfRange,
        LogError::RecordTooLarge { .. } => K::MessageTooLarge,
        LogError::MissingKey(_) => K::InvalidRecord,
        LogError::OutOfOrderSequence { .. } => K::OutOfOrderSequenceNumber,
        LogError::ProducerFenced { .. } => K::InvalidProducerEpoch,
        LogError::InvalidBatch(BatchError::Compressed(_)) => K::UnsupportedCompressionType,
        LogError::InvalidBatch(BatchError::BadCrc { .. } | BatchError::Codec { .. }) => {
            K::CorruptMessage
        }
        LogError::InvalidBatch(_) => K::InvalidRecord,
        LogError::QueueFull { .. } => K::RequestTimedOut,
        LogError::DiskFull { .. } => K::KafkaStorageError,
        LogError::Io { .. } | LogError::Corrupted { .. } | LogError::Poisoned { .. } => {
            K::KafkaStorageError
        }
        LogError::Closed => K::NotLeaderOrFollower,
        _ => K::UnknownServerError,
    }
}

/// Kafka's error for a coordinator error.
pub(crate) fn coord_code(e: &CoordError) -> ResponseError {
    use ResponseError as K;
    match e {
        CoordError::RebalanceInProgress(_) => K::RebalanceInProgress,
        CoordError::UnknownMember { .. } => K::UnknownMemberId,
        CoordError::IllegalGeneration { .. } => K::IllegalGeneration,
        CoordError::InconsistentProtocol(_) => K::InconsistentGroupProtocol,
        CoordError::UnknownGroup(_) => K::GroupIdNotFound,
        CoordError::GroupNotEmpty { .. } => K::NonEmptyGroup,
        CoordError::Invalid(_) => K::InvalidRequest,
        CoordError::InvalidSessionTimeout { .. } => K::InvalidSessionTimeout,
        CoordError::UnknownTransactionalId(_) => K::InvalidProducerIdMapping,
        CoordError::TransactionCompleting(_) => K::ConcurrentTransactions,
        CoordError::InvalidTxnState { .. } => K::InvalidTxnState,
        CoordError::MetadataTooLarge { .. } => K::OffsetMetadataTooLarge,
        CoordError::InvalidGroupId { .. } => K::InvalidGroupId,
        CoordError::Closed => K::CoordinatorNotAvailable,
        CoordError::Log(LogError::ProducerFenced { .. }) => K::ProducerFenced,
        CoordError::Log(l) => log_code(l),
        _ => K::UnknownServerError,
    }
}

/// The address a listener bound, for `serve.json` and the advertised address.
pub(crate) fn bound(
    listener: &tokio::net::TcpListener,
    flag: &'static str,
) -> Result<SocketAddr, ServeError> {
    listener.local_addr().map_err(|source| ServeError::Io {
        op: format!("{flag}: read the bound address"),
        source,
    })
}
