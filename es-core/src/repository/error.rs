//! Why loading, saving or commanding an aggregate failed.

use crate::record::{RecordDecodeError, RecordEncodeError};
use crate::store::{ConcurrencyConflict, StoreError, StreamId};

/// Why loading or saving an aggregate failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepositoryError {
    /// Optimistic concurrency: another writer saved the aggregate since it was loaded. Nothing
    /// was written; load it again and redo the change.
    #[error(transparent)]
    Conflict(ConcurrencyConflict),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// A stored event could not be decoded (boxed to keep `Result`s small on the happy path).
    #[error(transparent)]
    Decode(Box<RecordDecodeError>),
    /// An event could not be serialized.
    #[error(transparent)]
    Encode(#[from] RecordEncodeError),
    /// The aggregate's stream is closed (tombstoned, archived or deleted: see
    /// [`lifecycle`](crate::lifecycle)): it takes no commands. A tombstoned or archived
    /// aggregate still loads with [`Repository::load_closed`](crate::Repository::load_closed).
    #[error(
        "stream {}/{} is {} (by {} at {}: {}); load it with load_closed to read it",
        .0.aggregate_type, .0.aggregate_id, .0.status, .0.actor, .0.at, .0.reason
    )]
    StreamClosed(Box<crate::lifecycle::StreamClosed>),
    /// The stream's versions are not consecutive: the store returned a gap or a repeat.
    #[error("stream {stream} is not contiguous: expected version {expected}, found {found}")]
    NonContiguousStream {
        /// The stream read.
        stream: StreamId,
        /// The version that should have come next.
        expected: u64,
        /// The version that came.
        found: u64,
    },
}

/// Why a command was not carried out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError<E> {
    /// The aggregate refused the command: a business rule said no. Nothing was written.
    #[error("command rejected: {0}")]
    Rejected(E),
    /// Other writers kept winning, through every attempt the [`RetryPolicy`](crate::RetryPolicy)
    /// allows (one, with `with_max_attempts(1)`). Nothing was written.
    #[error("gave up after {attempts} attempt{}: {conflict}", if *attempts == 1 { "" } else { "s" })]
    Conflict {
        /// The attempts made (see [`Executed::attempts`](crate::Executed::attempts)).
        attempts: u32,
        /// The last conflict.
        conflict: ConcurrencyConflict,
    },
    /// Loading or saving failed.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

impl From<StoreError> for RepositoryError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(conflict) => Self::Conflict(conflict),
            StoreError::StreamClosed(closed) => Self::StreamClosed(closed),
            other => Self::Store(other),
        }
    }
}

impl From<RecordDecodeError> for RepositoryError {
    fn from(error: RecordDecodeError) -> Self {
        Self::Decode(Box::new(error))
    }
}

impl<E> From<StoreError> for CommandError<E> {
    fn from(error: StoreError) -> Self {
        Self::Repository(error.into())
    }
}
