//! Why the NATS store fails, and how its failures map onto es-core's typed errors.

use async_nats::jetstream::ErrorCode;
use es_core::{CheckpointError, StoreError};

/// Why a NATS store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// The server could not be reached when connecting.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The server address tried.
        url: String,
        /// What the client said.
        reason: String,
    },
    /// An option of [`NatsOptions`](crate::NatsOptions) is unusable (a prefix that is not a
    /// subject token, no partitions, too many replicas).
    #[error("invalid NATS store option: {0}")]
    InvalidOption(String),
    /// A JetStream stream the store needs could not be created or is configured otherwise. (No
    /// answer at all, as while a cluster elects a leader, is a transient
    /// [`NatsError::Request`] instead: connecting again may work.)
    #[error("cannot set up JetStream stream {stream}: {reason}")]
    Setup {
        /// The JetStream stream.
        stream: String,
        /// What went wrong.
        reason: String,
    },
    /// A request to JetStream failed: timed out, no responder (a stream without a leader, e.g.
    /// during an election), a connection cut (`transient`), or refused by the server.
    #[error("JetStream {operation} failed: {reason}")]
    Request {
        /// What the store was doing.
        operation: &'static str,
        /// What the client or server said.
        reason: String,
        /// Whether trying again later may work.
        transient: bool,
    },
    /// A snapshot's state is not JSON: refused, nothing saved.
    #[error("the snapshot state of {stream} at version {version} is not JSON: {reason}")]
    SnapshotNotJson {
        /// The snapshot's stream.
        stream: es_core::StreamId,
        /// The snapshot's version.
        version: u64,
        /// What the JSON parser said.
        reason: String,
    },
    /// A stored message could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl NatsError {
    /// A failed request during `operation`; `transient` when trying again may work.
    pub(crate) fn request(operation: &'static str, error: impl std::fmt::Display, transient: bool) -> Self {
        Self::Request {
            operation,
            reason: error.to_string(),
            transient,
        }
    }

    /// Whether trying again later may work.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Request { transient: true, .. })
    }
}

impl From<NatsError> for StoreError {
    fn from(error: NatsError) -> Self {
        let transient = error.is_transient();
        StoreError::from_backend(error, transient)
    }
}

impl From<NatsError> for CheckpointError {
    fn from(error: NatsError) -> Self {
        let transient = error.is_transient();
        CheckpointError::from_backend(error, transient)
    }
}

/// Whether a JetStream API error is an outage (no quorum, no leader yet) rather than a refusal.
pub(crate) fn transient_code(code: ErrorCode) -> bool {
    [
        ErrorCode::CLUSTER_NOT_AVAILABLE,
        ErrorCode::CLUSTER_INCOMPLETE,
        ErrorCode::CLUSTER_NO_PEERS,
    ]
    .contains(&code)
}
