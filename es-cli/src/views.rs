//! The application's types behind object-safe views, so one command line serves every
//! registered aggregate and projection.

use std::marker::PhantomData;
use std::ops::ControlFlow;

use async_trait::async_trait;
use es_core::{
    decode_record_all, Aggregate, AsOf, CatchUp, CheckpointError, CheckpointStore, ClaimStatus, Decoded, EventSet,
    EventStore, GlobalLog, Lag, ParkedEvent, Projection, ProjectionError, ProjectionRunner, RebuildProgress,
    RecordDecodeError, RecordedEvent, Repository, RepositoryError, Snapshot, SnapshotStore, StreamId, StreamSlice,
};
use serde::Serialize;
use serde_json::Value;

/// One registered aggregate type: decodes its events and folds its states.
#[async_trait]
pub(crate) trait AggregateView<S>: Send + Sync {
    /// The payload of `record` decoded (upcast to the current schema) and shown as JSON.
    fn decode(&self, record: &RecordedEvent) -> Result<Value, String>;

    /// Whether a stored event (its name, schema version and payload) decodes with the current
    /// code, and why not.
    fn check(&self, event_name: &str, schema_version: u32, payload: &[u8]) -> Result<(), String>;

    /// The state of the aggregate of `stream` as of `as_of`, with its version.
    async fn state(&self, store: &S, stream: &StreamId, as_of: AsOf) -> Result<(u64, Value), RepositoryError>;

    /// The states after versions `version - 1` and `version` (at least 1), folding the stream
    /// once: what the event of `version` changed.
    async fn step(&self, store: &S, stream: &StreamId, version: u64) -> Result<(Value, Value), RepositoryError>;

    /// Whether a stored snapshot is one the current code uses.
    fn check_snapshot(&self, snapshot: &Snapshot) -> SnapshotCheck;

    /// The state after `events` (a stream's first events, in version order, as an archive
    /// holds them), with the version of the last.
    fn fold(&self, events: &mut dyn Iterator<Item = &RecordedEvent>) -> Result<(u64, Value), RepositoryError>;
}

/// What [`AggregateView::check_snapshot`] found.
pub(crate) enum SnapshotCheck {
    /// It decodes: loads start from it.
    Usable,
    /// Taken at another revision: loads ignore it and replay (not a problem).
    Stale,
    /// At the current revision but it does not decode: loads ignore it and replay.
    Broken(String),
}

/// The view of aggregate type `A`.
pub(crate) struct Typed<A>(PhantomData<fn() -> A>);

impl<A> Typed<A> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

#[async_trait]
impl<A, S> AggregateView<S> for Typed<A>
where
    A: Aggregate,
    S: EventStore + SnapshotStore + Clone + 'static,
{
    fn decode(&self, record: &RecordedEvent) -> Result<Value, String> {
        let decoded = decode_record_all::<A::Event>(record).map_err(|error| error.source.to_string())?;
        let as_json = |event: &A::Event| {
            let payload = event.encode_payload().map_err(|error| error.to_string())?;
            serde_json::from_slice(&payload).map_err(|error| error.to_string())
        };
        match decoded {
            Decoded::One(event) => as_json(&event),
            // A retired event a #[replaced] rule turns into events: what it stands for now.
            Decoded::Many(events) => events
                .iter()
                .map(as_json)
                .collect::<Result<Vec<Value>, String>>()
                .map(Value::Array),
        }
    }

    fn check(&self, event_name: &str, schema_version: u32, payload: &[u8]) -> Result<(), String> {
        A::Event::decode_all(event_name, schema_version, payload)
            .map(drop)
            .map_err(|error| error.to_string())
    }

    async fn state(&self, store: &S, stream: &StreamId, as_of: AsOf) -> Result<(u64, Value), RepositoryError> {
        let loaded = reader::<A, S>(store).load_stream(stream, as_of).await?;
        Ok((loaded.version, json(&loaded.aggregate)))
    }

    fn fold(&self, events: &mut dyn Iterator<Item = &RecordedEvent>) -> Result<(u64, Value), RepositoryError> {
        let mut state = A::default();
        let mut version = 0;
        for event in events {
            for decoded in decode_record_all::<A::Event>(event)? {
                state.apply_event(&decoded);
            }
            version = event.version;
        }
        Ok((version, json(&state)))
    }

    async fn step(&self, store: &S, stream: &StreamId, version: u64) -> Result<(Value, Value), RepositoryError> {
        let mut loaded = reader::<A, S>(store)
            .load_stream(stream, AsOf::Version(version.saturating_sub(1)))
            .await?;
        let before = json(&loaded.aggregate);
        // Replayed, as the repository folds: a replay reads no metadata, so an event whose
        // metadata cannot be read still folds into the state.
        let slice = StreamSlice::from_version(version).to_version(version);
        let mut undecoded = None;
        store
            .replay_stream(stream, slice, &mut |event| {
                match A::Event::decode_all(event.event_name, event.schema_version, event.payload) {
                    Ok(decoded) => decoded
                        .into_iter()
                        .for_each(|event| loaded.aggregate.apply_event(&event)),
                    Err(source) => {
                        undecoded = Some(RecordDecodeError {
                            stream: stream.clone(),
                            version: event.version,
                            event_name: event.event_name.to_owned(),
                            source: Box::new(source),
                        });
                    }
                }
                ControlFlow::Continue(())
            })
            .await?;
        if let Some(error) = undecoded {
            return Err(error.into());
        }
        Ok((before, json(&loaded.aggregate)))
    }

    fn check_snapshot(&self, snapshot: &Snapshot) -> SnapshotCheck {
        if snapshot.revision != A::SNAPSHOT_REVISION {
            return SnapshotCheck::Stale;
        }
        match A::decode_snapshot(snapshot.schema_version, &snapshot.state) {
            Ok(_) => SnapshotCheck::Usable,
            Err(error) => SnapshotCheck::Broken(error.to_string()),
        }
    }
}

/// A repository that loads from the latest usable snapshot, as the application's own does: a
/// state deep in a long stream costs the events after the snapshot, not the whole stream. It
/// runs no commands, so it never takes a snapshot itself.
fn reader<A: Aggregate, S: EventStore + SnapshotStore + Clone + 'static>(store: &S) -> Repository<A, S> {
    Repository::new(store.clone()).with_snapshot_every(u64::MAX)
}

/// `state` as JSON; a state that does not serialize is shown as its error rather than failing
/// the command.
fn json<A: Serialize>(state: &A) -> Value {
    serde_json::to_value(state)
        .unwrap_or_else(|error| Value::String(format!("<the state does not serialize: {error}>")))
}

/// One registered projection: its lag and claim, and a rebuild.
#[async_trait]
pub(crate) trait ProjectionView: Send + Sync {
    fn name(&self) -> &'static str;

    async fn lag(&self) -> Result<Lag, ProjectionError>;

    async fn checkpoint(&self) -> Result<u64, CheckpointError>;

    async fn claim_status(&self) -> Result<ClaimStatus, CheckpointError>;

    async fn rebuild(&self, progress: &mut (dyn FnMut(RebuildProgress) + Send)) -> Result<CatchUp, ProjectionError>;

    /// Claims the projection and lets it go: returns once no unit of work of an earlier holder
    /// (a rebuild dropped mid-commit) can still commit, since claiming waits for it or fences it
    /// out (see [`CheckpointStore`]'s claim).
    async fn fence(&self) -> Result<(), CheckpointError>;

    async fn parked(&self) -> Result<Vec<ParkedEvent>, ProjectionError>;

    async fn retry_parked(&self, position: u64) -> Result<bool, ProjectionError>;

    async fn drop_parked(&self, position: u64) -> Result<bool, ProjectionError>;
}

#[async_trait]
impl<P, E, C> ProjectionView for ProjectionRunner<P, E, C>
where
    P: Projection + 'static,
    E: GlobalLog + 'static,
    C: CheckpointStore<Context = P::Context> + 'static,
{
    fn name(&self) -> &'static str {
        ProjectionRunner::name(self)
    }

    async fn lag(&self) -> Result<Lag, ProjectionError> {
        ProjectionRunner::lag(self).await
    }

    async fn checkpoint(&self) -> Result<u64, CheckpointError> {
        self.checkpoints().checkpoint(ProjectionRunner::name(self)).await
    }

    async fn claim_status(&self) -> Result<ClaimStatus, CheckpointError> {
        self.checkpoints().claim_status(ProjectionRunner::name(self)).await
    }

    async fn rebuild(&self, progress: &mut (dyn FnMut(RebuildProgress) + Send)) -> Result<CatchUp, ProjectionError> {
        ProjectionRunner::rebuild(self, progress).await
    }

    async fn fence(&self) -> Result<(), CheckpointError> {
        let claim = self.checkpoints().claim(ProjectionRunner::name(self)).await?;
        drop(claim);
        Ok(())
    }

    async fn parked(&self) -> Result<Vec<ParkedEvent>, ProjectionError> {
        ProjectionRunner::parked(self).await
    }

    async fn retry_parked(&self, position: u64) -> Result<bool, ProjectionError> {
        ProjectionRunner::retry_parked(self, position).await
    }

    async fn drop_parked(&self, position: u64) -> Result<bool, ProjectionError> {
        ProjectionRunner::drop_parked(self, position).await
    }
}
