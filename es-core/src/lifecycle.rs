//! The lifecycle of a stream: open, then closed for good by a tombstone, moved out of the hot
//! table by an archive, or removed for legal reasons by a deletion that leaves an audit record.
//!
//! | status | appends | [`Repository::load`](crate::Repository::load) | events in the global log | stream reads |
//! |---|---|---|---|---|
//! | open | yes | the state | yes | [`EventStore::read_stream`] |
//! | [tombstoned](StreamLifecycle::tombstone) | refused | refused ([`RepositoryError::StreamClosed`](crate::RepositoryError::StreamClosed)); [`load_closed`](crate::Repository::load_closed) | yes | [`EventStore::read_stream`] |
//! | [archived](StreamLifecycle::archive) | refused | refused; [`load_closed`](crate::Repository::load_closed) | yes, at their positions | [`StreamLifecycle::read_archived`] |
//! | [deleted](StreamLifecycle::delete_stream) | refused | refused | no | none |
//!
//! Every change of status is recorded twice, in the same transaction as the change itself: as
//! the stream's [`StreamClosed`] record, which [`EventStore::stream_closure`] reads and which
//! refuses appends for good (a deleted stream's id is never reused), and as a [`StreamClosed`]
//! event in the global log, in the stream ([`STREAM_LIFECYCLE`], `"<type>/<id>"`), so that
//! projections are told: a projection that lists [`STREAM_LIFECYCLE`] among its aggregate types
//! and [`StreamLifecycleEvent`] among its events purges a deleted stream's rows.
//!
//! **Retries across a close.** A batch sent again whose events were stored before the stream
//! was tombstoned is answered as stored (`already_stored`), as on an open stream, so a client
//! retrying after a lost answer gets its original outcome; once the stream is archived or
//! deleted its events are no longer where appends look, and the batch is refused as closed.
//!
//! **Archived events and rebuilds.** Archiving moves a stream's events out of the table that
//! stream reads and appends use, and keeps their global positions: the global log
//! ([`GlobalLog`](crate::GlobalLog)) still lists them in order, so a projection rebuilt after an
//! archive sees exactly what it saw before. A deletion removes the events from the global log
//! too: a rebuild after it no longer sees them, which is the point; the [`StreamClosed`] event
//! with [`StreamStatus::Deleted`] is what a live projection sees instead.
//!
//! ```
//! use es_core::lifecycle::{StreamChange, StreamLifecycle, StreamStatus};
//! use es_core::{EventStore, ExpectedVersion, InMemoryStore, Metadata, NewEvent, StoreError, StreamId};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = InMemoryStore::new();
//! let ticket = StreamId::new("ticket", "T-1");
//! let opened = NewEvent {
//!     event_id: uuid::Uuid::now_v7(),
//!     event_name: "TicketOpened".into(),
//!     schema_version: 1,
//!     payload: br#"{"title":"Printer on fire"}"#.to_vec(),
//!     metadata: Metadata::new(),
//! };
//! store.append(&ticket, ExpectedVersion::NoStream, vec![opened.clone()]).await?;
//!
//! let closed = store.tombstone(&ticket, StreamChange::new("ops@example.com", "duplicate of T-2")).await?;
//! assert_eq!((closed.status, closed.version), (StreamStatus::Tombstoned, 1));
//! let again = NewEvent { event_id: uuid::Uuid::now_v7(), ..opened };
//! let refused = store.append(&ticket, ExpectedVersion::Any, vec![again]).await;
//! assert!(matches!(refused, Err(StoreError::StreamClosed(closure)) if closure.status == StreamStatus::Tombstoned));
//!
//! let deleted = store.delete_stream(&ticket, StreamChange::new("dpo@example.com", "erasure request #42")).await?;
//! assert_eq!((deleted.status, deleted.events), (StreamStatus::Deleted, 1));
//! assert_eq!(store.stream_version(&ticket).await?, 0);
//! # Ok(()) }
//! ```

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event;
use crate::metadata::Metadata;
use crate::store::{EventStore, EventStream, NewEvent, StoreResult, StreamId, StreamSlice};

/// The aggregate type of the streams of [`StreamClosed`] events: one stream,
/// `"<aggregate type>/<aggregate id>"`, per closed stream.
pub const STREAM_LIFECYCLE: &str = "es.stream";

/// Where a stream stands in its lifecycle. Each status but [`StreamStatus::Open`] is final
/// except for moving on: a tombstoned stream may be archived, and any closed stream deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StreamStatus {
    /// Appends are accepted (every stream starts so, including one that does not exist yet).
    Open,
    /// Closed for good: its events stay where they are, appends are refused.
    Tombstoned,
    /// Closed, and its events moved out of the hot table; read them with
    /// [`StreamLifecycle::read_archived`].
    Archived,
    /// Its events are removed; only the audit record ([`StreamClosed`]) is left.
    Deleted,
}

impl StreamStatus {
    /// The status's name as stored: `open`, `tombstoned`, `archived`, `deleted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Tombstoned => "tombstoned",
            Self::Archived => "archived",
            Self::Deleted => "deleted",
        }
    }

    /// The status named `name` ([`StreamStatus::as_str`]), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Open, Self::Tombstoned, Self::Archived, Self::Deleted]
            .into_iter()
            .find(|status| status.as_str() == name)
    }

    /// Whether a stream of this status may move to `next`: forward only (open, tombstoned,
    /// archived, deleted), never back and never to the same status.
    pub fn may_become(self, next: StreamStatus) -> bool {
        next > self && next != Self::Open
    }
}

impl fmt::Display for StreamStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who closes a stream and why: kept in the [`StreamClosed`] record, for the audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamChange {
    /// Who asked (a user, a service, a ticket in the legal team's tracker).
    pub actor: String,
    /// Why.
    pub reason: String,
}

impl StreamChange {
    /// A change asked by `actor` for `reason`.
    pub fn new(actor: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            actor: actor.into(),
            reason: reason.into(),
        }
    }
}

/// A stream was closed: tombstoned, archived or deleted. It is both the stream's lifecycle
/// record (what [`EventStore::stream_closure`] returns, and what a refused append carries in
/// [`StoreError::StreamClosed`](crate::StoreError::StreamClosed)) and an event in the global
/// log, in the stream ([`STREAM_LIFECYCLE`], `"<type>/<id>"`): for a deletion, the audit record
/// of who deleted how many events, when and why.
#[event(name = "es.stream-closed")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamClosed {
    /// The closed stream's aggregate type.
    pub aggregate_type: String,
    /// The closed stream's aggregate id.
    pub aggregate_id: String,
    /// What it became.
    pub status: StreamStatus,
    /// The stream's version when it was closed (0 for a stream that had no events).
    pub version: u64,
    /// How many events the change moved or removed: all of them for an archive or deletion of
    /// an open or tombstoned stream; 0 for a tombstone, which moves nothing.
    pub events: u64,
    /// Who closed it ([`StreamChange::actor`]).
    pub actor: String,
    /// Why ([`StreamChange::reason`]).
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

impl StreamClosed {
    /// The record of `stream` becoming `status` at `version` by `change`, now.
    pub fn new(stream: &StreamId, status: StreamStatus, version: u64, events: u64, change: StreamChange) -> Self {
        Self {
            aggregate_type: stream.aggregate_type.clone(),
            aggregate_id: stream.aggregate_id.clone(),
            status,
            version,
            events,
            actor: change.actor,
            reason: change.reason,
            // Microseconds, as every backend keeps time: the record read back equals this one.
            at: DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap_or_else(Utc::now),
        }
    }

    /// The closed stream.
    pub fn stream(&self) -> StreamId {
        StreamId::new(&self.aggregate_type, &self.aggregate_id)
    }

    /// The stream of lifecycle events this record goes to: ([`STREAM_LIFECYCLE`], `"<type>/<id>"`).
    pub fn lifecycle_stream(&self) -> StreamId {
        StreamId::new(STREAM_LIFECYCLE, self.stream().to_string())
    }

    /// This record as the event a backend appends, in the same transaction as the change, to
    /// [`StreamClosed::lifecycle_stream`].
    pub fn to_new_event(&self) -> StoreResult<NewEvent> {
        let payload = serde_json::to_vec(self).map_err(crate::StoreError::backend)?;
        Ok(NewEvent {
            event_id: Uuid::now_v7(),
            event_name: <Self as crate::EventType>::NAME.to_owned(),
            schema_version: <Self as crate::EventType>::VERSION,
            payload,
            metadata: Metadata::new().with_actor(&self.actor),
        })
    }

    /// The error for what this record forbids: an append, or a change backwards
    /// ([`StreamStatus::may_become`]).
    pub fn refuse(self) -> crate::StoreError {
        crate::StoreError::StreamClosed(Box::new(self))
    }
}

/// The events of the streams of [`STREAM_LIFECYCLE`]: what a projection lists among its events
/// to hear of closed streams.
#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamLifecycleEvent {
    /// See [`StreamClosed`].
    Closed(StreamClosed),
}

/// A closed stream, as its stream of lifecycle events ([`STREAM_LIFECYCLE`], `"<type>/<id>"`)
/// tells: what tools that read every stream register to know those events (es-cli's `Cli`
/// does).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize, crate::Aggregate)]
#[aggregate(name = "es.stream", event = StreamLifecycleEvent)]
pub struct ClosedStream {
    /// The latest status (open until a [`StreamClosed`] event is applied).
    pub status: Option<StreamStatus>,
}

impl crate::Apply<StreamClosed> for ClosedStream {
    fn apply(&mut self, closed: &StreamClosed) {
        self.status = Some(closed.status);
    }
}

/// Closing streams: tombstones, archives, deletions with an audit record. Implemented by every
/// durable backend and [`InMemoryStore`](crate::InMemoryStore); checked by the conformance suite
/// (`lifecycle_conformance_tests!`, feature `conformance`).
///
/// Each change is atomic: the status, the moved or removed events, and the [`StreamClosed`]
/// event in the global log are written together or not at all, and no append can slip in
/// between: an append either lands before the change (and is counted in it) or is refused.
/// A change to the status a stream already has returns its existing record and writes nothing,
/// so retrying after a lost answer is safe; a change backwards (archived to tombstoned, say) is
/// refused with [`StoreError::StreamClosed`](crate::StoreError::StreamClosed).
#[async_trait]
pub trait StreamLifecycle: EventStore {
    /// Changes `stream` to `status` (tombstoned, archived or deleted), recording `change`: what
    /// [`tombstone`](StreamLifecycle::tombstone), [`archive`](StreamLifecycle::archive) and
    /// [`delete_stream`](StreamLifecycle::delete_stream) call. A change to
    /// [`StreamStatus::Open`] is refused ([`StoreError::InvalidBatch`](crate::StoreError::InvalidBatch)).
    async fn close(&self, stream: &StreamId, status: StreamStatus, change: StreamChange) -> StoreResult<StreamClosed>;

    /// Closes `stream` for good: appends are refused from now on, loads say so, and its events
    /// stay where they are, in the stream and in the global log.
    async fn tombstone(&self, stream: &StreamId, change: StreamChange) -> StoreResult<StreamClosed> {
        self.close(stream, StreamStatus::Tombstoned, change).await
    }

    /// Moves the events of `stream` out of the hot table, keeping their global positions, and
    /// closes it. Read them with [`StreamLifecycle::read_archived`], or load the aggregate with
    /// [`Repository::load_closed`](crate::Repository::load_closed). Its snapshot is dropped.
    async fn archive(&self, stream: &StreamId, change: StreamChange) -> StoreResult<StreamClosed> {
        self.close(stream, StreamStatus::Archived, change).await
    }

    /// Removes the events of `stream` (hot or archived) and its snapshot, for legal reasons,
    /// and keeps the audit record: the returned [`StreamClosed`], which also goes to the
    /// global log so that projections purge what they hold of the stream. The stream stays
    /// closed: its id is never reused.
    async fn delete_stream(&self, stream: &StreamId, change: StreamChange) -> StoreResult<StreamClosed> {
        self.close(stream, StreamStatus::Deleted, change).await
    }

    /// The events of an archived stream within `slice`, in version order (none for a stream
    /// that is not archived).
    fn read_archived<'a>(&'a self, stream: &'a StreamId, slice: StreamSlice) -> EventStream<'a>;

    /// The records of the streams closed with the query's status, in stream order (aggregate
    /// type, then id, bytewise), a page at a time: e.g. the audit of deletions.
    async fn closed_streams(&self, query: &ClosedQuery) -> StoreResult<Vec<StreamClosed>>;
}

/// Which records [`StreamLifecycle::closed_streams`] returns: those of one status, a page at a
/// time in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedQuery {
    /// Only streams closed with this status.
    pub status: StreamStatus,
    /// Only streams after this one (the last of the previous page).
    pub after: Option<StreamId>,
    /// At most this many.
    pub limit: usize,
}

impl ClosedQuery {
    /// The first 100 records of `status`.
    pub fn new(status: StreamStatus) -> Self {
        Self {
            status,
            after: None,
            limit: 100,
        }
    }

    /// The page after `stream`.
    pub fn after(mut self, stream: StreamId) -> Self {
        self.after = Some(stream);
        self
    }

    /// At most `limit` records.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Whether `record` is on the query's page, bounds aside from the limit.
    pub fn matches(&self, record: &StreamClosed) -> bool {
        record.status == self.status && self.after.as_ref().is_none_or(|after| record.stream() > *after)
    }
}

/// What a backend does before a change of `stream` to `next`, given the stream's record
/// (`None`: open): `Ok(Some(record))` when the stream already has that status (the change is
/// done, write nothing), `Ok(None)` to go ahead, or the refusal.
///
/// The streams of [`STREAM_LIFECYCLE`] are the record of changes: they cannot be changed
/// themselves ([`StoreError::InvalidBatch`](crate::StoreError::InvalidBatch)).
pub fn check_change(
    stream: &StreamId,
    current: Option<StreamClosed>,
    next: StreamStatus,
) -> StoreResult<Option<StreamClosed>> {
    let refused = |reason: String| crate::StoreError::InvalidBatch {
        stream: stream.clone(),
        reason,
    };
    if stream.aggregate_type == STREAM_LIFECYCLE {
        return Err(refused(format!(
            "the streams of {STREAM_LIFECYCLE} record lifecycle changes and cannot be closed"
        )));
    }
    if next == StreamStatus::Open {
        return Err(refused(
            "a closed stream never opens again, and an open one is open already".into(),
        ));
    }
    match current {
        None => Ok(None),
        Some(record) if record.status == next => Ok(Some(record)),
        Some(record) if record.status.may_become(next) => Ok(None),
        Some(record) => Err(record.refuse()),
    }
}
