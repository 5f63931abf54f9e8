//! How the repository gets an aggregate's state: from a usable snapshot, then the events after
//! it; and the snapshots and cache entries it keeps after appends.

use std::ops::ControlFlow;

use tracing::Instrument;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;

use super::{AsOf, Repository, RepositoryError, Snapshots, Versioned};
use crate::aggregate::Aggregate;
use crate::event::EventSet;
use crate::lifecycle::StreamLifecycle;
use crate::projection::UnknownEvents;
use crate::record::decode_replayed;
use crate::store::{lend_each, EventStore, ReplayedEvent, Snapshot, StoreError, StreamId, StreamSlice};

/// Where the repository reads a stream's events from.
#[derive(Clone, Copy)]
pub(super) enum Source<'a> {
    /// The stream reads of the store, refusing a closed stream.
    Open,
    /// The stream reads of the store: open and tombstoned streams.
    Hot,
    /// The archive of a store with lifecycle.
    Archive(&'a dyn StreamLifecycle),
}

impl<A, S> Repository<A, S>
where
    A: Aggregate,
    S: EventStore,
{
    /// After a successful append: a snapshot if one is due, and the new state into the cache.
    pub(super) async fn after_append(&self, stream: &StreamId, aggregate: &A, previous: u64, current: u64) {
        self.snapshot_if_due(stream, aggregate, previous, current).await;
        if let Some(cache) = &self.cache {
            cache.put_copy(stream, aggregate, current);
        }
    }

    async fn snapshot_if_due(&self, stream: &StreamId, aggregate: &A, previous: u64, current: u64) {
        let Some(Snapshots { every, store }) = &self.snapshots else {
            return;
        };
        let every = *every;
        if previous / every == current / every {
            return;
        }
        // The events are committed whatever happens here: a failed snapshot only costs replay
        // time later, so it is logged rather than returned.
        let state = match serde_json::to_vec(aggregate) {
            Ok(state) => state,
            Err(error) => {
                tracing::warn!(stream = %stream, %error, "cannot serialize snapshot");
                return;
            }
        };
        let snapshot = Snapshot {
            stream: stream.clone(),
            version: current,
            revision: A::SNAPSHOT_REVISION,
            schema_version: A::SNAPSHOT_VERSION,
            state,
            taken_at: Utc::now(),
        };
        if let Err(error) = store.save_snapshot(snapshot).await {
            tracing::warn!(stream = %stream, %error, "cannot save snapshot");
        }
    }

    /// The latest snapshot usable for `as_of`, decoded (upcast from an older schema version if
    /// need be); `None` when there is none or it is stale (another revision) or does not decode.
    async fn usable_snapshot(&self, stream: &StreamId, as_of: AsOf) -> Result<Option<Versioned<A>>, RepositoryError> {
        let Some(snapshots) = &self.snapshots else {
            return Ok(None);
        };
        let snapshot = match snapshots.store.load_snapshot(stream).await {
            Ok(Some(snapshot)) => snapshot,
            Ok(None) => return Ok(None),
            // A snapshot is an optimisation: one the store cannot read is replayed over.
            Err(error @ StoreError::Corrupt { .. }) => {
                tracing::warn!(stream = %stream, %error, "snapshot cannot be read; replaying from events");
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        };
        if snapshot.revision != A::SNAPSHOT_REVISION {
            return Ok(None);
        }
        let in_range = match as_of {
            AsOf::Latest => true,
            AsOf::Version(version) => snapshot.version <= version,
            AsOf::Instant(instant) => self.recorded_by(stream, snapshot.version, instant).await?,
        };
        if !in_range {
            return Ok(None);
        }
        match A::decode_snapshot(snapshot.schema_version, &snapshot.state) {
            Ok(aggregate) => Ok(Some(Versioned {
                aggregate,
                version: snapshot.version,
            })),
            Err(error) => {
                tracing::warn!(stream = %stream, version = snapshot.version, %error,
                    "snapshot no longer decodes; replaying from events");
                Ok(None)
            }
        }
    }

    /// Whether the event at `version` of `stream` was recorded at or before `instant`, so that a
    /// snapshot taken at `version` shows the state at `instant`. The store is asked because its
    /// clock stamped the event: the snapshot's `taken_at` is the application's clock, and a
    /// clock behind the store's would pass a snapshot holding events from after `instant`.
    async fn recorded_by(
        &self,
        stream: &StreamId,
        version: u64,
        instant: DateTime<Utc>,
    ) -> Result<bool, RepositoryError> {
        let slice = StreamSlice::from_version(version)
            .to_version(version)
            .recorded_until(instant);
        Ok(self.store.read_stream(stream, slice).try_next().await?.is_some())
    }

    /// The state of an open stream as of `as_of`; a closed stream is refused with
    /// [`RepositoryError::StreamClosed`]. The store checks in the replay itself
    /// ([`EventStore::replay_if_open`]), so the check costs no round trip of its own on the
    /// SQL backends. What the public loads call.
    pub(super) async fn load_open(&self, stream: &StreamId, as_of: AsOf) -> Result<Versioned<A>, RepositoryError> {
        let span = tracing::debug_span!("load", %stream, ?as_of);
        self.replay(stream, as_of, Source::Open).instrument(span).await
    }

    /// The state as of `as_of`, whatever the stream's lifecycle: what commands call. They do not
    /// check before deciding, which saves a query on every command: a command that decides
    /// events for a closed stream is refused by the append itself
    /// ([`RepositoryError::StreamClosed`]), and one that decides none asks then.
    pub(super) async fn rehydrate(&self, stream: &StreamId, as_of: AsOf) -> Result<Versioned<A>, RepositoryError> {
        let span = tracing::debug_span!("load", %stream, ?as_of);
        self.replay(stream, as_of, Source::Hot).instrument(span).await
    }

    /// The state as of `as_of` from `source`, from a usable snapshot (of the hot stream only)
    /// and the events after it.
    pub(super) async fn replay(
        &self,
        stream: &StreamId,
        as_of: AsOf,
        source: Source<'_>,
    ) -> Result<Versioned<A>, RepositoryError> {
        let snapshot = match source {
            Source::Open | Source::Hot => self.usable_snapshot(stream, as_of).await?,
            Source::Archive(_) => None,
        };
        let from_snapshot = snapshot.as_ref().map(|snapshot| snapshot.version);
        match self.replay_from(stream, as_of, source, snapshot).await? {
            Replayed::State(state) => Ok(state),
            Replayed::SnapshotAhead => {
                tracing::warn!(stream = %stream, version = from_snapshot,
                    "snapshot is past the stream's events; replaying from the start");
                match self.replay_from(stream, as_of, source, None).await? {
                    Replayed::State(state) => Ok(state),
                    // Without a snapshot there is nothing to be ahead of.
                    Replayed::SnapshotAhead => Err(RepositoryError::NonContiguousStream {
                        stream: stream.clone(),
                        expected: 1,
                        found: 0,
                    }),
                }
            }
        }
    }

    /// [`Repository::replay`] from `snapshot` (or the start). The replay reads from the
    /// snapshot's own version, so the event it ends with proves the snapshot is not past the
    /// stream's end (one row more, in the same query): a snapshot whose event is not there is
    /// [`Replayed::SnapshotAhead`].
    async fn replay_from(
        &self,
        stream: &StreamId,
        as_of: AsOf,
        source: Source<'_>,
        snapshot: Option<Versioned<A>>,
    ) -> Result<Replayed<A>, RepositoryError> {
        let anchor = snapshot.as_ref().map(|snapshot| snapshot.version);
        let mut state = snapshot.unwrap_or_else(|| Versioned {
            aggregate: A::default(),
            version: 0,
        });
        let mut slice = StreamSlice::from_version(anchor.unwrap_or(1));
        match as_of {
            AsOf::Latest => {}
            AsOf::Version(version) => slice = slice.to_version(version),
            AsOf::Instant(instant) => slice = slice.recorded_until(instant),
        }
        let mut anchored = anchor.is_none();
        let mut failure = None;
        let mut skipped_to = None;
        let mut apply = |event: ReplayedEvent<'_>| {
            if !anchored {
                anchored = Some(event.version) == anchor;
                // The snapshot's own event: folded into the state already.
                return if anchored {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                };
            }
            let expected = state.version + 1;
            if event.version > expected && matches!(as_of, AsOf::Instant(_)) {
                // An event in between was recorded after the instant (imported timestamps that
                // go back), or is missing: told apart below, after the replay.
                skipped_to = Some((expected, event.version));
                return ControlFlow::Break(());
            }
            if event.version != expected {
                failure = Some(RepositoryError::NonContiguousStream {
                    stream: stream.clone(),
                    expected,
                    found: event.version,
                });
                return ControlFlow::Break(());
            }
            if self.unknown_events == UnknownEvents::Skip && !A::Event::handles(event.event_name) {
                metrics::counter!("es_aggregate_events_skipped_total", "aggregate_type" => A::TYPE).increment(1);
                tracing::warn!(%stream, version = event.version, event = event.event_name, "unknown event skipped");
                state.version = event.version;
                return ControlFlow::Continue(());
            }
            match decode_replayed::<A::Event>(stream, &event) {
                Ok(decoded) => {
                    // A retired event replaced by several applies them all at its version.
                    for decoded in decoded {
                        state.aggregate.apply_event(&decoded);
                    }
                    state.version = event.version;
                    ControlFlow::Continue(())
                }
                Err(error) => {
                    failure = Some(error.into());
                    ControlFlow::Break(())
                }
            }
        };
        match source {
            Source::Open => self.store.replay_if_open(stream, slice, &mut apply).await?,
            Source::Hot => self.store.replay_stream(stream, slice, &mut apply).await?,
            Source::Archive(archive) => lend_each(archive.read_archived(stream, slice), &mut apply).await?,
        }
        if !anchored {
            return Ok(Replayed::SnapshotAhead);
        }
        if let Some(error) = failure {
            return Err(error);
        }
        if let Some((expected, found)) = skipped_to {
            // The state at the instant is the prefix before the first event recorded after it,
            // if that event exists; a version that is not there at all is a gap.
            let missing = StreamSlice::from_version(expected).to_version(expected);
            let exists = match source {
                Source::Archive(archive) => archive.read_archived(stream, missing).try_next().await?,
                Source::Open | Source::Hot => self.store.read_stream(stream, missing).try_next().await?,
            };
            if exists.is_none() {
                return Err(RepositoryError::NonContiguousStream {
                    stream: stream.clone(),
                    expected,
                    found,
                });
            }
        }
        Ok(Replayed::State(state))
    }
}

/// What a replay from a snapshot found.
enum Replayed<A> {
    /// The state.
    State(Versioned<A>),
    /// The snapshot's last event is not in the stream: the snapshot is past its end.
    SnapshotAhead,
}
