//! Why store operations fail: typed conflicts, duplicates, bad batches, corrupt rows, outages.

use uuid::Uuid;

use super::{ExpectedVersion, LimitExceeded, StreamId};

/// An append was refused because the stream is not at the expected version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "concurrency conflict on stream {stream}: expected {expected}, but it is at version {actual}; \
     reload the aggregate and decide again"
)]
pub struct ConcurrencyConflict {
    /// The stream appended to.
    pub stream: StreamId,
    /// What the writer expected.
    pub expected: ExpectedVersion,
    /// The stream's actual version when the append was refused.
    pub actual: u64,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Optimistic concurrency: another writer got there first. Nothing was written.
    #[error(transparent)]
    Conflict(#[from] ConcurrencyConflict),
    /// An event with this id is already stored. Nothing of the batch was written.
    #[error("event {event_id} is already stored; nothing of the batch to {stream} was written")]
    DuplicateEventId {
        /// The stream appended to.
        stream: StreamId,
        /// The duplicate id.
        event_id: Uuid,
    },
    /// The batch itself is unacceptable (a payload that is not JSON, an empty event name, a NUL
    /// character in a name or id, a schema version above `i32::MAX`, JSON the backend cannot
    /// hold). Nothing was written; retrying will not help. A batch over the store's limits is a
    /// [`StoreError::LimitExceeded`] instead.
    #[error("invalid batch for {stream}; nothing was written: {reason}")]
    InvalidBatch {
        /// The stream appended to.
        stream: StreamId,
        /// What is wrong with the batch.
        reason: String,
    },
    /// The batch is over one of the store's [`Limits`](crate::Limits) (a payload, metadata,
    /// name or stream id too long, too many events or bytes in one append), or over a limit of
    /// the backend itself ([`Limit::TransactionEvents`](crate::Limit::TransactionEvents)). The
    /// error names the limit, the value found and the event. Nothing was written; retrying will
    /// not help: split the batch or shrink the event.
    #[error(transparent)]
    LimitExceeded(#[from] LimitExceeded),
    /// A stored row cannot be turned into an event (e.g. a negative version).
    #[error("stored data of stream {stream} at version {version} is corrupt: {reason}")]
    Corrupt {
        /// The stream read.
        stream: StreamId,
        /// The version read.
        version: u64,
        /// What is wrong.
        reason: String,
    },
    /// The backend cannot be reached or its connection failed (refused, cut, a server
    /// restarting); trying again later may work. An append that fails this way either
    /// committed whole or not at all; reading the stream tells which.
    #[error("the event store is unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The backend itself failed in a way that trying again will not fix (a missing table, a
    /// permission, an unexpected answer). An append that fails this way either committed whole
    /// or not at all; reading the stream tells which.
    #[error("the event store backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The stream is closed (tombstoned, archived or deleted: see
    /// [`lifecycle`](crate::lifecycle)): appends are refused for good. Nothing was written; the
    /// record says who closed it, when and why.
    #[error(
        "stream {}/{} is {} (by {} at {}: {}); it takes no more events",
        .0.aggregate_type, .0.aggregate_id, .0.status, .0.actor, .0.at, .0.reason
    )]
    StreamClosed(Box<crate::lifecycle::StreamClosed>),
    /// Personal data could not be sealed or its keys read ([`PiiStore`](crate::pii::PiiStore)):
    /// a subject forgotten already, a missing subject field, an unavailable key store. Nothing
    /// was written.
    #[error("personal data: {0}")]
    Pii(#[source] Box<crate::pii::PiiError>),
}

/// The result of a store operation: `Result<T, StoreError>`, as [`std::io::Result`] is for I/O.
///
/// The storage traits return it ([`EventStore`](crate::EventStore),
/// [`GlobalLog`](crate::GlobalLog), [`SnapshotStore`](crate::SnapshotStore),
/// [`StreamCatalog`](crate::StreamCatalog)), and so do their implementations.
pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// Wraps a backend error that trying again will not fix.
    pub fn backend(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(error))
    }

    /// Wraps a backend error that says the backend is unreachable for now.
    pub fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Unavailable(Box::new(error))
    }

    /// Wraps a backend error as [`StoreError::Unavailable`] when `transient` (the backend says
    /// it is an outage), else as [`StoreError::Backend`].
    pub fn from_backend(error: impl std::error::Error + Send + Sync + 'static, transient: bool) -> Self {
        let error = Box::new(error);
        match transient {
            true => Self::Unavailable(error),
            false => Self::Backend(error),
        }
    }

    /// Whether the failure is an outage that trying again later may overcome.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}
