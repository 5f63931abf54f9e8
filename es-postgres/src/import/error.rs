//! Why a bulk import stopped, naming the event of the source when one is to blame.

use std::fmt;

use es_core::{Limit, StoreError, StreamId};
use uuid::Uuid;

/// An event of an import's source, as errors name it: its stream, its index in the source
/// (from 0, counting the events an earlier run imported) and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventAt {
    /// The stream the event was to be stored in.
    pub stream: StreamId,
    /// Its index in the source, from 0.
    pub index: u64,
    /// Its id.
    pub event_id: Uuid,
}

impl EventAt {
    pub(crate) fn new(stream: StreamId, index: u64, event_id: Uuid) -> Self {
        Self {
            stream,
            index,
            event_id,
        }
    }
}

impl fmt::Display for EventAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the event at index {} of the source (id {}, stream {})",
            self.index, self.event_id, self.stream
        )
    }
}

/// How a rerun's source differs from the one an earlier run imported from
/// ([`ImportError::SourceChanged`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceChange {
    /// The source ended after `events` events, before the events already imported.
    Shorter {
        /// How many events the source gave.
        events: u64,
    },
    /// The last event imported is not at its place in the source.
    LastEventMoved {
        /// The id of the last event imported.
        imported: Uuid,
        /// The id the source has at its index.
        found: Uuid,
    },
    /// The events already imported come in another order, or with other streams or ids (their
    /// digest differs), though the last one is in its place.
    OrderDiffers,
}

impl fmt::Display for SourceChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shorter { events } => write!(f, "the source ended after {events} events"),
            Self::LastEventMoved { imported, found } => {
                write!(
                    f,
                    "the last event imported was {imported}, the source has {found} there"
                )
            }
            Self::OrderDiffers => f.write_str(
                "the events before it differ (other ids, streams or order), though the last one is in its place",
            ),
        }
    }
}

/// Why [`PostgresStore::import`](crate::PostgresStore::import) stopped.
///
/// Chunks committed before the error stay committed, and the import's resume record says how
/// far it got: once the cause is fixed, calling `import` again with the same name and the same
/// source (fixed) resumes after them. The chunk that failed is written not at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The chunk size is 0 or above [`ImportOptions::MAX_CHUNK_SIZE`](crate::ImportOptions::MAX_CHUNK_SIZE).
    #[error("invalid chunk size {chunk_size}: use 1 to {max} events (the most one transaction can number)")]
    InvalidChunkSize {
        /// The chunk size asked for.
        chunk_size: usize,
        /// The largest allowed.
        max: usize,
    },
    /// The source failed to give its next event.
    #[error("the source failed at index {index}: {source}")]
    Source {
        /// The index the source failed to give.
        index: u64,
        /// The source's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An event is over one of the store's [`Limits`](es_core::Limits)
    /// ([`PostgresStore::with_limits`](crate::PostgresStore::with_limits)).
    #[error(
        "{event} is over {limit}: {actual} > {max}; nothing of its chunk was written (shrink the event or raise \
         the limit)"
    )]
    LimitExceeded {
        /// The event.
        event: EventAt,
        /// Which limit.
        limit: Limit,
        /// The size found.
        actual: usize,
        /// The limit's value.
        max: usize,
    },
    /// An event's payload is not UTF-8, so it cannot be JSON.
    #[error("the payload of {event} is not UTF-8 JSON; nothing of its chunk was written")]
    PayloadNotUtf8 {
        /// The event.
        event: EventAt,
    },
    /// An event cannot be stored as it is: an empty event name, a NUL character in a name or
    /// id, a schema version above `i32::MAX`, a timestamp PostgreSQL cannot hold.
    #[error("{event} cannot be stored: {reason}; nothing of its chunk was written")]
    InvalidEvent {
        /// The event.
        event: EventAt,
        /// Why.
        reason: String,
    },
    /// PostgreSQL refused a value of the event: a payload or metadata that is not JSON or that
    /// `jsonb` cannot hold (a `\u0000` in a string), a NUL character in the actor. Its chunk
    /// was rolled back.
    #[error("PostgreSQL refused {event}: {message}; nothing of its chunk was written")]
    Refused {
        /// The event.
        event: EventAt,
        /// PostgreSQL's message.
        message: String,
    },
    /// PostgreSQL refused a value of a chunk but did not say which row (the chunk's events are
    /// at indexes `first..=last`). Its chunk was rolled back.
    #[error("PostgreSQL refused an event at index {first} to {last} of the source: {message}; nothing of that chunk was written")]
    RefusedChunk {
        /// The index of the chunk's first event.
        first: u64,
        /// The index of the chunk's last event.
        last: u64,
        /// PostgreSQL's message.
        message: String,
    },
    /// The event's stream already holds that version: the stream has events that this import
    /// did not write (stored before the import, or appended to it during the import). Its
    /// chunk was rolled back.
    #[error(
        "{event}: its stream already has events this import did not write (at version {version}); an import \
         writes new streams only. Nothing of its chunk was written"
    )]
    StreamHasEvents {
        /// The event, and so its stream.
        event: EventAt,
        /// The version the import gave the event, which the stream already has.
        version: u64,
    },
    /// The event's stream is closed (tombstoned, archived or deleted: `es_core::lifecycle`):
    /// it takes no more events, imported or appended. Its chunk was rolled back.
    #[error("{event}: its stream is closed (tombstoned, archived or deleted); nothing of its chunk was written")]
    StreamClosed {
        /// The event, and so its stream.
        event: EventAt,
    },
    /// The event's id is already stored (by another import or an append), or the source repeats
    /// it. Its chunk was rolled back.
    #[error("{event}: its id is already stored, or the source repeats it; nothing of its chunk was written")]
    DuplicateEventId {
        /// The event.
        event: EventAt,
    },
    /// The source does not replay the events an earlier run imported as they were: resuming
    /// from it could store events twice, or skip some. Nothing was written by this run.
    #[error(
        "import `{name}` has {events_done} events stored, but its source does not replay them as they were: \
         {change}. Give the source that import started from, or import under another name"
    )]
    SourceChanged {
        /// The import's name.
        name: String,
        /// How many events earlier runs imported.
        events_done: u64,
        /// How the source differs.
        change: SourceChange,
    },
    /// Another run of the same import moved its resume record on (or removed it) meanwhile:
    /// two runs must not share a name. Nothing of this run's chunk was written.
    #[error("another run of import `{name}` moved it on meanwhile: run one at a time (a rerun resumes)")]
    ConcurrentRun {
        /// The import's name.
        name: String,
    },
    /// The database failed: [`StoreError::Unavailable`] for an outage (rerun once it is over:
    /// the import resumes), [`StoreError::Backend`] otherwise.
    #[error("bulk import failed on the database: {0}")]
    Store(#[from] StoreError),
}
