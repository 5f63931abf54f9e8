//! The storage contract every backend implements: streams of events, a global order, snapshots.

use std::fmt;
use std::ops::ControlFlow;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_core::stream::BoxStream;
use futures_util::TryStreamExt;
use uuid::Uuid;

use crate::metadata::Metadata;

mod catalog;
mod error;
mod exceeded;
mod filter;
mod global_log;
mod limits;
mod nul;
mod outcome;
mod replay;

pub use catalog::{StreamCatalog, StreamQuery, StreamSummary};
pub use error::{ConcurrencyConflict, StoreError, StoreResult};

/// The events of a stream as [`EventStore::read_stream`] hands them out, in version order: a
/// boxed `futures` stream, so that every backend returns the same type.
pub type EventStream<'a> = BoxStream<'a, StoreResult<RecordedEvent>>;
pub use exceeded::{Limit, LimitExceeded};
pub use filter::{LogFilter, LogPage};
pub use global_log::{GlobalLog, Tail};
pub use limits::Limits;
pub use outcome::{AppendOutcome, StoredEventPlace};
pub use replay::{LogReplay, LogReplayFn, LoggedEvent};

/// Identifies one stream: the events of one aggregate instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    /// The aggregate type, e.g. `"ticket"`.
    pub aggregate_type: String,
    /// The aggregate instance's id.
    pub aggregate_id: String,
}

impl StreamId {
    /// The stream of aggregate `aggregate_id` of type `aggregate_type`.
    pub fn new(aggregate_type: impl Into<String>, aggregate_id: impl Into<String>) -> Self {
        Self {
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.aggregate_type, self.aggregate_id)
    }
}

/// What the writer believes the stream's version to be; the store refuses the append otherwise.
///
/// A stream's version is the number of events in it: 0 for a stream that does not exist, `n`
/// after its `n`-th event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version (no concurrency check).
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must exist (have at least one event).
    StreamExists,
    /// The stream must be exactly at this version. `Exact(0)` means the same as `NoStream`.
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` satisfies this expectation.
    pub fn accepts(self, actual: u64) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => actual == 0,
            Self::StreamExists => actual > 0,
            Self::Exact(expected) => expected == actual,
        }
    }

    /// `Ok` when a stream at `actual` satisfies this expectation, else the conflict an append
    /// to `stream` is refused with: the one check every backend makes under its write lock.
    ///
    /// ```
    /// use es_core::{ExpectedVersion, StreamId};
    ///
    /// let stream = StreamId::new("ticket", "T-1");
    /// assert!(ExpectedVersion::Exact(2).check(&stream, 2).is_ok());
    /// let conflict = ExpectedVersion::NoStream.check(&stream, 2).unwrap_err();
    /// assert_eq!((conflict.expected, conflict.actual), (ExpectedVersion::NoStream, 2));
    /// ```
    pub fn check(self, stream: &StreamId, actual: u64) -> Result<(), ConcurrencyConflict> {
        if self.accepts(actual) {
            return Ok(());
        }
        Err(ConcurrencyConflict {
            stream: stream.clone(),
            expected: self,
            actual,
        })
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any version"),
            Self::NoStream => f.write_str("no stream"),
            Self::StreamExists => f.write_str("an existing stream"),
            Self::Exact(version) => write!(f, "version {version}"),
        }
    }
}

/// An event ready to be appended: already serialized, not yet placed in a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Unique id of the event (UUID v7 by default). Appending an id that is already stored fails
    /// with [`StoreError::DuplicateEventId`], which makes retried appends safe.
    pub event_id: Uuid,
    /// The stored event name.
    pub event_name: String,
    /// The payload's schema version.
    pub schema_version: u32,
    /// The payload, as JSON.
    pub payload: Vec<u8>,
    /// Metadata stored beside the payload.
    pub metadata: Metadata,
}

/// An event as stored: the envelope of ids, versions and timestamps around the payload.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// Unique id of the event.
    pub event_id: Uuid,
    /// The stream the event belongs to.
    pub stream: StreamId,
    /// The event's version within its stream, from 1.
    pub version: u64,
    /// The event's place in the store's global order, from 1. Positions only grow, but may have
    /// holes (appends that rolled back).
    pub position: u64,
    /// The stored event name.
    pub event_name: String,
    /// The payload's schema version.
    pub schema_version: u32,
    /// The payload, as JSON.
    pub payload: Vec<u8>,
    /// Metadata stored beside the payload.
    pub metadata: Metadata,
    /// When the store recorded the event.
    pub recorded_at: DateTime<Utc>,
}

/// Itself: so that what takes a stored event also takes a handler's
/// [`DecodedEvent`](crate::DecodedEvent), which is one too.
impl AsRef<RecordedEvent> for RecordedEvent {
    fn as_ref(&self) -> &RecordedEvent {
        self
    }
}

/// Which events of a stream to read: a version range, optionally cut off at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamSlice {
    /// The first version to read (inclusive); 0 and 1 both mean "from the start".
    pub from_version: u64,
    /// The last version to read (inclusive); `None` reads to the end.
    pub to_version: Option<u64>,
    /// Only events recorded at or before this instant; `None` for no cut-off.
    pub recorded_until: Option<DateTime<Utc>>,
}

impl StreamSlice {
    /// The whole stream.
    pub fn all() -> Self {
        Self::default()
    }

    /// From `version` (inclusive) to the end.
    pub fn from_version(version: u64) -> Self {
        Self {
            from_version: version,
            ..Self::default()
        }
    }

    /// Stops at `version` (inclusive).
    pub fn to_version(mut self, version: u64) -> Self {
        self.to_version = Some(version);
        self
    }

    /// Leaves out the events recorded after `instant`. Stores stamp events in stream order,
    /// so this is where the stream stood at `instant`; a history imported with its original
    /// timestamps may go back in time along a stream, and then the events kept need not be a
    /// prefix of it (time travel by instant, [`AsOf::Instant`](crate::AsOf::Instant), takes
    /// the prefix).
    pub fn recorded_until(mut self, instant: DateTime<Utc>) -> Self {
        self.recorded_until = Some(instant);
        self
    }

    /// Whether `event` falls within the slice.
    pub fn contains(&self, event: &RecordedEvent) -> bool {
        event.version >= self.from_version
            && self.to_version.is_none_or(|to| event.version <= to)
            && self.recorded_until.is_none_or(|until| event.recorded_at <= until)
    }
}

/// One event as [`EventStore::replay_stream`] lends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayedEvent<'e> {
    /// The event's version within its stream.
    pub version: u64,
    /// The stored event name.
    pub event_name: &'e str,
    /// The payload's schema version.
    pub schema_version: u32,
    /// The payload, as JSON.
    pub payload: &'e [u8],
}

/// What [`EventStore::replay_stream`] calls for each event: it folds the event into the state
/// and says whether to go on.
pub type ReplayFn<'a> = dyn for<'e> FnMut(ReplayedEvent<'e>) -> ControlFlow<()> + Send + 'a;

/// A saved aggregate state, so loading need not replay the whole stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The stream the state belongs to.
    pub stream: StreamId,
    /// The version of the last event folded into the state.
    pub version: u64,
    /// The aggregate's snapshot revision when the state was taken.
    pub revision: u32,
    /// The schema version of `state` ([`Aggregate::SNAPSHOT_VERSION`](crate::Aggregate::SNAPSHOT_VERSION)
    /// when it was taken); older ones are upcast on load.
    pub schema_version: u32,
    /// The state, as JSON.
    pub state: Vec<u8>,
    /// When the snapshot was taken, by the application's clock. For people and tools: time
    /// travel by instant goes by the store's `recorded_at` of the event at `version` instead.
    pub taken_at: DateTime<Utc>,
}

/// Lends each event of `events` to `apply`, until it breaks: `replay_stream` over a stream of
/// owned envelopes.
pub(crate) async fn lend_each(mut events: EventStream<'_>, apply: &mut ReplayFn<'_>) -> StoreResult<()> {
    while let Some(event) = events.try_next().await? {
        let replayed = ReplayedEvent {
            version: event.version,
            event_name: &event.event_name,
            schema_version: event.schema_version,
            payload: &event.payload,
        };
        if apply(replayed).is_break() {
            break;
        }
    }
    Ok(())
}

/// An append-only store of event streams: what the [`Repository`](crate::Repository) needs.
///
/// The contract, checked by the conformance suite (module `es_core::conformance`, feature
/// `conformance`): an append writes its whole batch or nothing, and only if the stream is at the
/// expected version; versions within a stream are gap-free from 1. The global order of all
/// events is a trait of its own, [`GlobalLog`].
///
/// Repositories and runners take their store by value: make stores cheap to clone, their clones
/// sharing one connection pool or one set of data (as [`InMemoryStore`](crate::InMemoryStore)
/// and the PostgreSQL store do).
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends `events` to `stream` atomically if the stream is at `expected`.
    ///
    /// An empty batch writes nothing but still checks `expected`.
    ///
    /// **Appends are idempotent by event id.** When every event of the batch is already stored
    /// in `stream`, at consecutive versions in batch order (the batch was appended before, and
    /// this is a retry whose first answer was lost), nothing is written and the original
    /// outcome is returned, with [`AppendOutcome::already_stored`] set, whatever `expected` says:
    /// the retry may come from a writer that has since reloaded the stream. Otherwise a stream
    /// not at `expected` is a [`StoreError::Conflict`], and a batch with an id stored anywhere
    /// else (or twice in the batch) is a [`StoreError::DuplicateEventId`]; either way nothing
    /// is written.
    ///
    /// **The batch is checked first**, before anything else, against the store's
    /// [`limits`](EventStore::limits) ([`Limits::check_append`]): one over a limit is a
    /// [`StoreError::LimitExceeded`], an empty or NUL-holding name or id a
    /// [`StoreError::InvalidBatch`], as is a payload that is not JSON.
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendOutcome>;

    /// What the store accepts: appends over these limits are refused with
    /// [`StoreError::LimitExceeded`] before anything is written.
    ///
    /// The default says [`Limits::DEFAULT`]: a store that keeps the default limits need not
    /// override it, and one that is given other limits must. The conformance suite checks that
    /// a store refuses what is over the limits it states, and accepts what is at them.
    fn limits(&self) -> Limits {
        Limits::DEFAULT
    }

    /// Reads the events of `stream` within `slice`, in version order.
    ///
    /// The stream is a `futures` stream: consume it with `futures_util::TryStreamExt` (e.g.
    /// `try_collect`, `try_next`), or let [`EventStore::replay_stream`] or
    /// [`Repository::events`](crate::Repository::events) do it.
    fn read_stream<'a>(&'a self, stream: &'a StreamId, slice: StreamSlice) -> EventStream<'a>;

    /// The stored event with id `event_id`, wherever it is; `None` when no event has that id.
    /// Tools look events up by id with it, and the repository uses it to recognise a command
    /// that was already carried out.
    async fn read_event(&self, event_id: Uuid) -> StoreResult<Option<RecordedEvent>>;

    /// The stream's current version: the number of events in it, 0 if it does not exist. The
    /// repository does not need it (loads and appends tell it the version); tools and
    /// applications do.
    async fn stream_version(&self, stream: &StreamId) -> StoreResult<u64>;

    /// The lifecycle record of `stream` when it is closed (tombstoned, archived or deleted: see
    /// [`StreamLifecycle`](crate::lifecycle::StreamLifecycle)), `None` while it is open. The
    /// [`Repository`](crate::Repository) refuses to load closed streams through
    /// [`EventStore::replay_if_open`], whose default asks this. The default, for a store
    /// without lifecycle, says every stream is open.
    async fn stream_closure(&self, stream: &StreamId) -> StoreResult<Option<crate::lifecycle::StreamClosed>> {
        let _ = stream;
        Ok(None)
    }

    /// Folds the events of `stream` within `slice`, in version order, through `apply`, lending
    /// each one's fields instead of building an envelope: what loading an aggregate needs, and
    /// no more. Stops early when `apply` breaks.
    ///
    /// The default goes through [`EventStore::read_stream`]; backends override it to read only
    /// these columns and to hand out their rows' bytes without copying.
    async fn replay_stream(&self, stream: &StreamId, slice: StreamSlice, apply: &mut ReplayFn<'_>) -> StoreResult<()> {
        lend_each(self.read_stream(stream, slice), apply).await
    }

    /// [`EventStore::replay_stream`] for a stream that must be open: what
    /// [`Repository::load`](crate::Repository::load) calls, which refuses closed streams.
    ///
    /// When the stream is closed (tombstoned, archived or deleted) the replay fails with
    /// [`StoreError::StreamClosed`], carrying the stream's record, and the caller must discard
    /// what `apply` folded: a store may lend some events of a tombstoned stream before it
    /// tells. When `apply` breaks, the replay ends there, and the store need not check.
    ///
    /// The default replays, then asks [`EventStore::stream_closure`]. That order is what makes
    /// two reads answer as one: a stream never reopens and an archive needs the stream closed
    /// first, so a stream still open after the replay was open, with these events, during it.
    /// Backends override it to ask in the replay's own query, which saves the round trip.
    async fn replay_if_open(&self, stream: &StreamId, slice: StreamSlice, apply: &mut ReplayFn<'_>) -> StoreResult<()> {
        self.replay_stream(stream, slice, apply).await?;
        refuse_closed(self.stream_closure(stream).await?)
    }
}

/// `Ok` for an open stream (`None`), [`StoreError::StreamClosed`] with the record of a closed
/// one: how a read that must find the stream open refuses one that is not.
pub(crate) fn refuse_closed(closure: Option<crate::lifecycle::StreamClosed>) -> StoreResult<()> {
    match closure {
        None => Ok(()),
        Some(closed) => Err(StoreError::StreamClosed(Box::new(closed))),
    }
}

/// Stores the latest snapshot of each stream.
#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// Saves `snapshot`, replacing the stream's previous one unless that one is newer.
    ///
    /// The state is JSON ([`Repository`](crate::Repository) writes it with serde_json); the
    /// durable stores refuse one that is not, as a typed error of their own inside
    /// [`StoreError::Backend`] (`PostgresError::SnapshotNotJson`, `SqliteError::SnapshotNotJson`,
    /// `NatsError::SnapshotNotJson`), and save nothing. The in-memory store keeps any bytes.
    async fn save_snapshot(&self, snapshot: Snapshot) -> StoreResult<()>;

    /// The stream's latest snapshot, if any.
    async fn load_snapshot(&self, stream: &StreamId) -> StoreResult<Option<Snapshot>>;
}
