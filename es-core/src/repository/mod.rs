//! The repository: load aggregates (now or in the past) and execute commands against them.

use std::fmt;
use std::marker::PhantomData;
use std::ops::ControlFlow;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use uuid::Uuid;

mod cache;

use cache::{RecentStates, StateCache};

use crate::aggregate::Aggregate;
use crate::metadata::Metadata;
use crate::record::{decode_record, decode_replayed, encode_batch, DecodedEvent, RecordDecodeError, RecordEncodeError};
use crate::store::{
    ConcurrencyConflict, EventStore, ExpectedVersion, Snapshot, SnapshotStore, StoreError, StreamId, StreamSlice,
};

/// An aggregate's state together with the version of the last event folded into it.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<A> {
    /// The state.
    pub aggregate: A,
    /// The stream version the state reflects; 0 for an aggregate with no events.
    pub version: u64,
}

/// The result of a command that was accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Executed<A: Aggregate> {
    /// The state after the new events.
    pub aggregate: A,
    /// The stream version after the new events.
    pub version: u64,
    /// The events the command produced (possibly none).
    pub events: Vec<A::Event>,
    /// How many times the command was decided: 1 plus the number of concurrency retries.
    pub attempts: u32,
}

/// Why loading or saving an aggregate failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepositoryError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored event could not be decoded (boxed to keep `Result`s small on the happy path).
    #[error(transparent)]
    Decode(Box<RecordDecodeError>),
    /// An event could not be serialized.
    #[error(transparent)]
    Encode(#[from] RecordEncodeError),
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
    /// Other writers kept winning; the command was retried and gave up. Nothing was written.
    #[error("gave up after {attempts} attempts: {conflict}")]
    Conflict {
        /// How many times the command was decided.
        attempts: u32,
        /// The last conflict.
        conflict: ConcurrencyConflict,
    },
    /// Loading or saving failed.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
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

/// Where a command's first attempt gets its state.
#[derive(Debug, Clone, Copy)]
enum FirstAttempt {
    /// From the cache, else the store.
    Load,
    /// A new aggregate: `A::default()` at version 0, without reading.
    AssumeNew,
}

/// Which state to load.
#[derive(Debug, Clone, Copy)]
enum AsOf {
    Latest,
    Version(u64),
    Instant(DateTime<Utc>),
}

/// Loads and saves aggregates of type `A` in the store `S`.
///
/// ```
/// # use es_core::{event, Aggregate, Apply, InMemoryStore, Metadata, Repository};
/// # use serde::{Deserialize, Serialize};
/// # #[event] #[derive(Debug, Clone, PartialEq)] pub struct Deposited { pub cents: u64 }
/// # #[event] #[derive(Debug, Clone, PartialEq)] pub enum AccountEvent { Deposited(Deposited) }
/// # #[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
/// # #[aggregate(name = "account", event = AccountEvent)]
/// # pub struct Account { balance: u64 }
/// # impl Apply<Deposited> for Account { fn apply(&mut self, e: &Deposited) { self.balance += e.cents } }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let accounts = Repository::<Account, _>::new(InMemoryStore::new()).with_snapshot_every(100);
/// let id = "acc-1".to_string();
/// accounts
///     .execute(&id, Metadata::new(), |_account| {
///         Ok::<_, std::convert::Infallible>(vec![Deposited { cents: 500 }.into()])
///     })
///     .await?;
/// assert_eq!(accounts.load(&id).await?.aggregate.balance, 500);
/// # Ok(()) }
/// ```
pub struct Repository<A, S> {
    store: S,
    snapshots: Option<Snapshots>,
    max_attempts: u32,
    cache: Option<Arc<dyn StateCache<A>>>,
    aggregate: PhantomData<fn() -> A>,
}

impl<A, S: Clone> Clone for Repository<A, S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            snapshots: self.snapshots.clone(),
            max_attempts: self.max_attempts,
            cache: self.cache.clone(),
            aggregate: PhantomData,
        }
    }
}

impl<A, S: fmt::Debug> fmt::Debug for Repository<A, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repository")
            .field("aggregate", &std::any::type_name::<A>())
            .field("store", &self.store)
            .field(
                "snapshot_every",
                &self.snapshots.as_ref().map(|snapshots| snapshots.every),
            )
            .field("max_attempts", &self.max_attempts)
            .field("cache", &self.cache.is_some())
            .finish()
    }
}

/// Where and how often a repository takes snapshots.
#[derive(Clone)]
struct Snapshots {
    every: u64,
    store: Arc<dyn SnapshotStore>,
}

/// The default number of times a command is decided before a concurrency conflict is returned.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 4;

impl<A, S> Repository<A, S>
where
    A: Aggregate,
    S: EventStore,
{
    /// A repository over `store`, without snapshots, retrying conflicting commands up to
    /// [`DEFAULT_MAX_ATTEMPTS`] times in all.
    pub fn new(store: S) -> Self {
        Self {
            store,
            snapshots: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            cache: None,
            aggregate: PhantomData,
        }
    }

    /// Keeps the state of up to `aggregates` recently commanded aggregates in memory, so a
    /// command on one of them appends without loading it first: one round trip instead of
    /// two or three. This is safe with other writers (other processes included): the cached
    /// version is the expected version, so a stale state only costs a conflict, after which the
    /// aggregate is reloaded and the command decided again. Only commands use the cache;
    /// [`Repository::load`] always reads the store.
    pub fn with_cache(mut self, aggregates: usize) -> Self
    where
        A: Clone,
    {
        self.cache = (aggregates > 0).then(|| Arc::new(RecentStates::<A>::new(aggregates)) as Arc<dyn StateCache<A>>);
        self
    }

    /// Takes a snapshot whenever a command carries the stream past a multiple of `events`.
    /// `0` turns snapshots off.
    ///
    /// The snapshots go to the same store, which must also be a [`SnapshotStore`]; without
    /// this call the repository never touches snapshots and needs no `SnapshotStore`.
    pub fn with_snapshot_every(mut self, events: u64) -> Self
    where
        S: SnapshotStore + Clone + 'static,
    {
        self.snapshots = (events > 0).then(|| Snapshots {
            every: events,
            store: Arc::new(self.store.clone()),
        });
        self
    }

    /// How many times a command is decided in all before a concurrency conflict is returned
    /// (at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The stream that holds the events of aggregate `id`.
    pub fn stream_id(id: &A::Id) -> StreamId {
        StreamId::new(A::TYPE, id.to_string())
    }

    /// Loads the current state of aggregate `id` (from the latest usable snapshot and the events
    /// after it). An aggregate with no events loads as `A::default()` at version 0.
    pub async fn load(&self, id: &A::Id) -> Result<Versioned<A>, RepositoryError> {
        self.rehydrate(&Self::stream_id(id), AsOf::Latest).await
    }

    /// Time travel: the state after the last event at or below `version`.
    pub async fn load_at_version(&self, id: &A::Id, version: u64) -> Result<Versioned<A>, RepositoryError> {
        self.rehydrate(&Self::stream_id(id), AsOf::Version(version)).await
    }

    /// Time travel: the state after the last event recorded at or before `instant`.
    pub async fn load_at_instant(&self, id: &A::Id, instant: DateTime<Utc>) -> Result<Versioned<A>, RepositoryError> {
        self.rehydrate(&Self::stream_id(id), AsOf::Instant(instant)).await
    }

    /// The events of aggregate `id` within `slice`, decoded, with their envelopes.
    pub async fn events(&self, id: &A::Id, slice: StreamSlice) -> Result<Vec<DecodedEvent<A::Event>>, RepositoryError> {
        let stream = Self::stream_id(id);
        let mut decoded = Vec::new();
        let mut records = self.store.read_stream(&stream, slice);
        while let Some(envelope) = records.try_next().await? {
            let event = decode_record::<A::Event>(&envelope)?;
            decoded.push(DecodedEvent { envelope, event });
        }
        Ok(decoded)
    }

    /// Executes a command: loads the aggregate, lets `decide` turn the state into new events (or
    /// refuse), and appends them with the loaded version as the expected version.
    ///
    /// When another writer appended in between, the aggregate is reloaded and `decide` runs
    /// again, up to the configured number of attempts. Every event gets a fresh UUID v7 id and
    /// `metadata`; when `metadata` has no correlation id, the events of one command share a new
    /// one.
    pub async fn execute<E, F>(&self, id: &A::Id, metadata: Metadata, decide: F) -> Result<Executed<A>, CommandError<E>>
    where
        F: Fn(&A) -> Result<Vec<A::Event>, E>,
    {
        self.run_command(id, metadata, decide, FirstAttempt::Load).await
    }

    /// Executes a command that starts a new aggregate, in one round trip: `decide` first runs on
    /// `A::default()` and the events are appended expecting no stream, without loading
    /// anything. If the stream exists after all, that append is refused and the command
    /// continues exactly like [`Repository::execute`]: the aggregate is loaded and `decide`
    /// runs again on its real state (where a rule such as "already opened" can refuse it).
    pub async fn create<E, F>(&self, id: &A::Id, metadata: Metadata, decide: F) -> Result<Executed<A>, CommandError<E>>
    where
        F: Fn(&A) -> Result<Vec<A::Event>, E>,
    {
        self.run_command(id, metadata, decide, FirstAttempt::AssumeNew).await
    }

    async fn run_command<E, F>(
        &self,
        id: &A::Id,
        metadata: Metadata,
        decide: F,
        first: FirstAttempt,
    ) -> Result<Executed<A>, CommandError<E>>
    where
        F: Fn(&A) -> Result<Vec<A::Event>, E>,
    {
        let stream = Self::stream_id(id);
        let mut metadata = metadata;
        metadata.correlation_id.get_or_insert_with(Uuid::now_v7);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let current = match (attempts, first) {
                (1, FirstAttempt::AssumeNew) => Versioned {
                    aggregate: A::default(),
                    version: 0,
                },
                (1, FirstAttempt::Load) => match self.cache.as_ref().and_then(|cache| cache.take(&stream)) {
                    Some(cached) => cached,
                    None => self.rehydrate(&stream, AsOf::Latest).await?,
                },
                _ => self.rehydrate(&stream, AsOf::Latest).await?,
            };
            let events = match decide(&current.aggregate) {
                Ok(events) if !events.is_empty() => events,
                decided => {
                    // Refused or nothing to do: the state is unchanged and stays good to cache.
                    let Versioned { aggregate, version } = current;
                    let cache = self.cache.as_ref().filter(|_| version > 0);
                    return match decided {
                        Err(error) => {
                            if let Some(cache) = cache {
                                cache.put(&stream, Versioned { aggregate, version });
                            }
                            Err(CommandError::Rejected(error))
                        }
                        Ok(events) => {
                            if let Some(cache) = cache {
                                cache.put_copy(&stream, &aggregate, version);
                            }
                            Ok(Executed {
                                aggregate,
                                version,
                                events,
                                attempts,
                            })
                        }
                    };
                }
            };
            let Versioned { mut aggregate, version } = current;
            let batch = encode_batch(&stream, &events, &metadata).map_err(RepositoryError::from)?;
            match self.store.append(&stream, ExpectedVersion::Exact(version), batch).await {
                Ok(outcome) => {
                    for event in &events {
                        aggregate.apply_event(event);
                    }
                    self.snapshot_if_due(&stream, &aggregate, outcome.previous_version, outcome.new_version)
                        .await;
                    if let Some(cache) = &self.cache {
                        cache.put_copy(&stream, &aggregate, outcome.new_version);
                    }
                    return Ok(Executed {
                        aggregate,
                        version: outcome.new_version,
                        events,
                        attempts,
                    });
                }
                Err(StoreError::Conflict(conflict)) => {
                    if attempts >= self.max_attempts {
                        return Err(CommandError::Conflict { attempts, conflict });
                    }
                    tracing::debug!(stream = %stream, attempts, "concurrency conflict; deciding again");
                }
                Err(other) => return Err(other.into()),
            }
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
            state,
            taken_at: Utc::now(),
        };
        if let Err(error) = store.save_snapshot(snapshot).await {
            tracing::warn!(stream = %stream, %error, "cannot save snapshot");
        }
    }

    /// The latest snapshot usable for `as_of`, decoded; `None` when there is none or it is
    /// stale (another revision) or no longer decodes.
    async fn usable_snapshot(&self, stream: &StreamId, as_of: AsOf) -> Result<Option<Versioned<A>>, RepositoryError> {
        let Some(snapshots) = &self.snapshots else {
            return Ok(None);
        };
        let Some(snapshot) = snapshots.store.load_snapshot(stream).await? else {
            return Ok(None);
        };
        let in_range = match as_of {
            AsOf::Latest => true,
            AsOf::Version(version) => snapshot.version <= version,
            AsOf::Instant(instant) => snapshot.taken_at <= instant,
        };
        if !in_range || snapshot.revision != A::SNAPSHOT_REVISION {
            return Ok(None);
        }
        match serde_json::from_slice(&snapshot.state) {
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

    async fn rehydrate(&self, stream: &StreamId, as_of: AsOf) -> Result<Versioned<A>, RepositoryError> {
        let mut state = match self.usable_snapshot(stream, as_of).await? {
            Some(snapshot) => snapshot,
            None => Versioned {
                aggregate: A::default(),
                version: 0,
            },
        };
        let mut slice = StreamSlice::from_version(state.version + 1);
        match as_of {
            AsOf::Latest => {}
            AsOf::Version(version) => slice = slice.to_version(version),
            AsOf::Instant(instant) => slice = slice.recorded_until(instant),
        }
        let mut failure = None;
        self.store
            .replay_stream(stream, slice, &mut |event| {
                let expected = state.version + 1;
                if event.version != expected {
                    failure = Some(RepositoryError::NonContiguousStream {
                        stream: stream.clone(),
                        expected,
                        found: event.version,
                    });
                    return ControlFlow::Break(());
                }
                match decode_replayed::<A::Event>(stream, &event) {
                    Ok(decoded) => {
                        state.aggregate.apply_event(&decoded);
                        state.version = event.version;
                        ControlFlow::Continue(())
                    }
                    Err(error) => {
                        failure = Some(error.into());
                        ControlFlow::Break(())
                    }
                }
            })
            .await?;
        match failure {
            Some(error) => Err(error),
            None => Ok(state),
        }
    }
}
