//! The repository: load aggregates (now or in the past), execute commands against them, and
//! save aggregates changed in place.

use std::borrow::Borrow;
use std::fmt::{self, Display};
use std::marker::PhantomData;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use uuid::Uuid;

mod cache;
mod command;
mod error;
mod loaded;
mod retry;
mod state;

use cache::{RecentStates, StateCache};
pub use command::{AppendedEvent, DecideFuture, Decision, Executed};
use command::{Async, FirstAttempt, Sync};
pub use error::{CommandError, RepositoryError};
pub use loaded::{Loaded, Saved};
pub use retry::RetryPolicy;
use state::Source;

use crate::aggregate::Aggregate;
use crate::lifecycle::{StreamLifecycle, StreamStatus};
use crate::metadata::Metadata;
use crate::projection::UnknownEvents;
use crate::record::{decode_record_all, DecodedEvent};
use crate::store::{EventStore, SnapshotStore, StreamId, StreamSlice};

/// An aggregate's state together with the version of the last event folded into it.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<A> {
    /// The state.
    pub aggregate: A,
    /// The stream version the state reflects; 0 for an aggregate with no events.
    pub version: u64,
}

/// How the repository takes an aggregate's id: by reference to anything the id type borrows as
/// (`&str` for a `String` id, as well as `&String`), which must print as the id does: its
/// [`Display`] form names the stream.
pub trait IdRef<Id: ?Sized>: Display {}

impl<Q: Display + ?Sized, Id: Borrow<Q>> IdRef<Id> for Q {}

/// Which state of an aggregate to load (see [`Repository::load_stream`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// The current state.
    Latest,
    /// The state after the last event at or below this version.
    Version(u64),
    /// The state after the last event recorded at or before this instant: the longest
    /// prefix of the stream recorded by then. (The same thing on a stream the store stamped;
    /// on a history imported with timestamps that go back, the replay stops before the first
    /// event recorded after the instant. A snapshot is used when its last event was recorded
    /// by then.)
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
/// accounts
///     .execute("acc-1", Metadata::new(), |_account| vec![Deposited { cents: 500 }.into()])
///     .await?;
/// assert_eq!(accounts.load("acc-1").await?.aggregate.balance, 500);
/// # Ok(()) }
/// ```
///
/// Ids are taken by reference to anything the aggregate's id type borrows as (`&str` for a
/// `String` id): see [`IdRef`].
pub struct Repository<A, S> {
    store: S,
    snapshots: Option<Snapshots>,
    retry: RetryPolicy,
    cache: Option<Arc<dyn StateCache<A>>>,
    unknown_events: UnknownEvents,
    aggregate: PhantomData<fn() -> A>,
}

impl<A, S: Clone> Clone for Repository<A, S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            snapshots: self.snapshots.clone(),
            retry: self.retry,
            cache: self.cache.clone(),
            unknown_events: self.unknown_events,
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
            .field("retry", &self.retry)
            .field("cache", &self.cache.is_some())
            .field("unknown_events", &self.unknown_events)
            .finish()
    }
}

/// Where and how often a repository takes snapshots.
#[derive(Clone)]
struct Snapshots {
    every: u64,
    store: Arc<dyn SnapshotStore>,
}

impl<A, S> Repository<A, S>
where
    A: Aggregate,
    S: EventStore,
{
    /// A repository over `store`, without snapshots or cache, retrying commands by the
    /// default [`RetryPolicy`].
    pub fn new(store: S) -> Self {
        Self {
            store,
            snapshots: None,
            retry: RetryPolicy::default(),
            cache: None,
            unknown_events: UnknownEvents::Fail,
            aggregate: PhantomData,
        }
    }

    /// Keeps the state of up to `aggregates` recently commanded aggregates in memory, so a
    /// command on one of them appends without loading it first: one round trip instead of
    /// two or three. This is safe with other writers (other processes included): the cached
    /// version is the expected version, so a stale state only costs a conflict, after which the
    /// aggregate is reloaded and the command decided again, at once and without using up an
    /// attempt of the [`RetryPolicy`]. Only commands use the cache;
    /// [`Repository::load`] always reads the store.
    pub fn with_cache(mut self, aggregates: usize) -> Self
    where
        A: Clone,
    {
        self.cache = (aggregates > 0).then(|| Arc::new(RecentStates::<A>::new(aggregates)) as Arc<dyn StateCache<A>>);
        self
    }

    /// Takes a snapshot whenever a command ([`Repository::execute`] and its kin, or
    /// [`Repository::save`]) carries the stream past a multiple of `events`. `0` turns
    /// snapshots off.
    ///
    /// A snapshot is an optimisation: one that cannot be taken (a state serde_json cannot
    /// write, such as a map with non-string keys, or a failed save) is logged as a warning and
    /// skipped, and the command succeeds all the same.
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

    /// What loading does with a stored event whose name the aggregate does not know (one
    /// written by a newer version of the program). By default loading fails with a decode
    /// error; [`UnknownEvents::Skip`] leaves the event out of the state (counted in
    /// `es_aggregate_events_skipped_total` and logged) and still counts its version, so the
    /// next append checks against the real stream. Commands then decide without the skipped
    /// events: skip only events that cannot change a decision.
    pub fn with_unknown_events(mut self, policy: UnknownEvents) -> Self {
        self.unknown_events = policy;
        self
    }

    /// How commands are retried after a concurrency conflict or an outage of the store.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How many times a command is decided in all before a concurrency conflict is returned
    /// (at least 1); the rest of the [`RetryPolicy`] is unchanged.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.retry = self.retry.with_max_attempts(attempts);
        self
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The stream that holds the events of aggregate `id`.
    pub fn stream_id<Q: IdRef<A::Id> + ?Sized>(id: &Q) -> StreamId {
        StreamId::new(A::TYPE, id.to_string())
    }

    /// Loads the current state of aggregate `id` (from the latest usable snapshot and the events
    /// after it). An aggregate with no events loads as `A::default()` at version 0.
    pub async fn load<Q: IdRef<A::Id> + ?Sized>(&self, id: &Q) -> Result<Versioned<A>, RepositoryError> {
        self.load_open(&Self::stream_id(id), AsOf::Latest).await
    }

    /// Time travel: the state after the last event at or below `version`.
    pub async fn load_at_version<Q: IdRef<A::Id> + ?Sized>(
        &self,
        id: &Q,
        version: u64,
    ) -> Result<Versioned<A>, RepositoryError> {
        self.load_open(&Self::stream_id(id), AsOf::Version(version)).await
    }

    /// Time travel: the state after the last event recorded at or before `instant`.
    pub async fn load_at_instant<Q: IdRef<A::Id> + ?Sized>(
        &self,
        id: &Q,
        instant: DateTime<Utc>,
    ) -> Result<Versioned<A>, RepositoryError> {
        self.load_open(&Self::stream_id(id), AsOf::Instant(instant)).await
    }

    /// The state of the aggregate whose events are in `stream`, as of `as_of`: for tools that
    /// know streams rather than typed ids (the `es-cli` command line). Applications use
    /// [`Repository::load`] and its time-travel siblings.
    ///
    /// Tools look at closed streams too, so this does not refuse them: a tombstoned stream
    /// loads from its events, an archived or deleted one has none in the stream reads and
    /// loads as `A::default()` at version 0 ([`EventStore::stream_closure`] tells why;
    /// [`Repository::load_closed`] reads the archive).
    pub async fn load_stream(&self, stream: &StreamId, as_of: AsOf) -> Result<Versioned<A>, RepositoryError> {
        self.rehydrate(stream, as_of).await
    }

    /// The events of aggregate `id` within `slice`, decoded, with their envelopes. A retired
    /// event that a `#[replaced]` rule turns into several events is listed once per event, each
    /// with the stored event's envelope; one it turns into none is not listed. A listing, it
    /// lists what is stored as it is: a stream with a gap in its versions (which
    /// [`Repository::load`] refuses as [`RepositoryError::NonContiguousStream`]) is listed with
    /// the gap.
    pub async fn events<Q: IdRef<A::Id> + ?Sized>(
        &self,
        id: &Q,
        slice: StreamSlice,
    ) -> Result<Vec<DecodedEvent<A::Event>>, RepositoryError> {
        let stream = Self::stream_id(id);
        let mut decoded = Vec::new();
        let mut records = self.store.read_stream(&stream, slice);
        while let Some(envelope) = records.try_next().await? {
            let events = decode_record_all::<A::Event>(&envelope)?;
            decoded.extend(DecodedEvent::each(envelope, events));
        }
        Ok(decoded)
    }

    /// Executes a command: loads the aggregate, lets `decide` turn the state into new events (or
    /// refuse), and appends them with the loaded version as the expected version.
    ///
    /// `decide` returns the events (`Vec<A::Event>`), or a `Result` when the command can be
    /// refused: the refusal comes back as [`CommandError::Rejected`] and nothing is written.
    ///
    /// - **Retries.** When another writer appended in between, or the store had an outage, the
    ///   aggregate is reloaded and `decide` runs again, with backoff, within the repository's
    ///   [`RetryPolicy`]. A command that still loses comes back as [`CommandError::Conflict`].
    /// - **Metadata.** Every event carries `metadata`, with what it leaves empty filled in: a
    ///   new command id, used as the causation and correlation id too.
    /// - **Idempotency.** The events' ids are derived from the command id
    ///   ([`command_event_id`](crate::command_event_id)). Give the command id the client sent
    ///   ([`Metadata::with_command_id`]) and a request sent again after a lost answer is
    ///   recognised: its events are not appended twice, and the original outcome comes back
    ///   with [`Executed::already_stored`] set, even when `decide` would now refuse.
    ///
    /// ```
    /// # use es_core::{event, Aggregate, Apply, InMemoryStore, Metadata, Repository};
    /// # use serde::{Deserialize, Serialize};
    /// # #[event] #[derive(Debug, Clone, PartialEq)] pub struct SeatReserved { pub seat: u32 }
    /// # #[event] #[derive(Debug, Clone, PartialEq)] pub enum ShowEvent { SeatReserved(SeatReserved) }
    /// # #[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
    /// # #[aggregate(name = "show", event = ShowEvent)]
    /// # pub struct Show { reserved: Vec<u32> }
    /// # impl Apply<SeatReserved> for Show { fn apply(&mut self, e: &SeatReserved) { self.reserved.push(e.seat) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let shows = Repository::<Show, _>::new(InMemoryStore::new());
    /// let reserve = |show: &Show| match show.reserved.contains(&7) {
    ///     true => Err("seat 7 is taken"),
    ///     false => Ok(vec![SeatReserved { seat: 7 }.into()]),
    /// };
    /// let request = uuid::Uuid::now_v7(); // sent by the client with its request
    /// let first = shows.execute("S-1", Metadata::new().with_command_id(request), reserve).await?;
    /// // The answer was lost; the client sends the same request again:
    /// let again = shows.execute("S-1", Metadata::new().with_command_id(request), reserve).await?;
    /// assert!(again.already_stored);
    /// assert_eq!(again.appended, first.appended);
    /// assert_eq!(shows.load("S-1").await?.aggregate.reserved, vec![7]);
    /// # Ok(()) }
    /// ```
    pub async fn execute<Q: IdRef<A::Id> + ?Sized, D, F>(
        &self,
        id: &Q,
        metadata: Metadata,
        decide: F,
    ) -> Result<Executed<A>, CommandError<D::Error>>
    where
        F: FnMut(&A) -> D,
        D: Decision<A::Event>,
    {
        self.run_command(Self::stream_id(id), metadata, Sync(decide), FirstAttempt::Load)
            .await
    }

    /// [`Repository::execute`] for a decision that must `await` something first: a price, a
    /// uniqueness check, another aggregate. `decide` returns its future boxed (with
    /// `Box::pin(async move { ... })`), so that the future may borrow the state and still be
    /// `Send`.
    ///
    /// ```
    /// # use es_core::{event, Aggregate, Apply, InMemoryStore, Metadata, Repository};
    /// # use serde::{Deserialize, Serialize};
    /// # #[event] #[derive(Debug, Clone, PartialEq)] pub struct Priced { pub cents: u64 }
    /// # #[event] #[derive(Debug, Clone, PartialEq)] pub enum QuoteEvent { Priced(Priced) }
    /// # #[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
    /// # #[aggregate(name = "quote", event = QuoteEvent)]
    /// # pub struct Quote { cents: Option<u64> }
    /// # impl Apply<Priced> for Quote { fn apply(&mut self, e: &Priced) { self.cents = Some(e.cents) } }
    /// async fn list_price(product: &str) -> Result<u64, String> {
    ///     Ok(if product == "widget" { 1_250 } else { 990 })
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let quotes = Repository::<Quote, _>::new(InMemoryStore::new());
    /// quotes
    ///     .execute_async("Q-1", Metadata::new(), |quote| Box::pin(async move {
    ///         if quote.cents.is_some() {
    ///             return Err("already priced".to_string());
    ///         }
    ///         let cents = list_price("widget").await?;
    ///         Ok(vec![Priced { cents }.into()])
    ///     }))
    ///     .await?;
    /// assert_eq!(quotes.load("Q-1").await?.aggregate.cents, Some(1_250));
    /// # Ok(()) }
    /// ```
    pub async fn execute_async<Q: IdRef<A::Id> + ?Sized, D, F>(
        &self,
        id: &Q,
        metadata: Metadata,
        decide: F,
    ) -> Result<Executed<A>, CommandError<D::Error>>
    where
        F: for<'a> FnMut(&'a A) -> DecideFuture<'a, D>,
        D: Decision<A::Event>,
    {
        self.run_command(Self::stream_id(id), metadata, Async(decide), FirstAttempt::Load)
            .await
    }

    /// Executes a command that starts a new aggregate, in one round trip: `decide` first runs on
    /// `A::default()` and the events are appended expecting no stream, without loading
    /// anything. If the stream exists after all, that append is refused and the command
    /// continues exactly like [`Repository::execute`]: the aggregate is loaded and `decide`
    /// runs again on its real state (where a rule such as "already opened" can refuse it), at
    /// once and without using up an attempt of the [`RetryPolicy`].
    pub async fn create<Q: IdRef<A::Id> + ?Sized, D, F>(
        &self,
        id: &Q,
        metadata: Metadata,
        decide: F,
    ) -> Result<Executed<A>, CommandError<D::Error>>
    where
        F: FnMut(&A) -> D,
        D: Decision<A::Event>,
    {
        self.run_command(Self::stream_id(id), metadata, Sync(decide), FirstAttempt::AssumeNew)
            .await
    }

    /// The outcome of command `command_id` on aggregate `id`, if its events are stored: for a
    /// handler that must answer a request sent again before deciding anything (with
    /// [`Repository::load_for_update`] and [`Repository::save`], say). `None` when the command
    /// was never carried out, or appended no event.
    pub async fn find_command<Q: IdRef<A::Id> + ?Sized>(
        &self,
        id: &Q,
        command_id: Uuid,
    ) -> Result<Option<Executed<A>>, RepositoryError> {
        self.stored_command(&Self::stream_id(id), command_id, 0).await
    }
}

impl<A, S> Repository<A, S>
where
    A: Aggregate,
    S: StreamLifecycle,
{
    /// Loads aggregate `id` as of `as_of` whatever its stream's lifecycle: the explicit call
    /// for a tombstoned stream (read where it is) or an archived one (read from the archive,
    /// without snapshots). A deleted stream has nothing left to load: it is refused with
    /// [`RepositoryError::StreamClosed`]. An open stream loads as [`Repository::load_stream`]
    /// would.
    ///
    /// ```
    /// # use es_core::{event, Aggregate, Apply, AsOf, InMemoryStore, Metadata, Repository, RepositoryError};
    /// # use es_core::lifecycle::{StreamChange, StreamLifecycle};
    /// # use serde::{Deserialize, Serialize};
    /// # #[event] #[derive(Debug, Clone, PartialEq)] pub struct Deposited { pub cents: u64 }
    /// # #[event] #[derive(Debug, Clone, PartialEq)] pub enum AccountEvent { Deposited(Deposited) }
    /// # #[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
    /// # #[aggregate(name = "account", event = AccountEvent)]
    /// # pub struct Account { balance: u64 }
    /// # impl Apply<Deposited> for Account { fn apply(&mut self, e: &Deposited) { self.balance += e.cents } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let accounts = Repository::<Account, _>::new(InMemoryStore::new());
    /// accounts.execute("acc-1", Metadata::new(), |_| vec![Deposited { cents: 500 }.into()]).await?;
    /// accounts.execute("acc-1", Metadata::new(), |_| vec![Deposited { cents: 250 }.into()]).await?;
    /// let stream = Repository::<Account, InMemoryStore>::stream_id("acc-1");
    /// accounts.store().archive(&stream, StreamChange::new("ops", "closed in 2019")).await?;
    ///
    /// assert!(matches!(accounts.load("acc-1").await, Err(RepositoryError::StreamClosed(_))));
    /// assert_eq!(accounts.load_closed("acc-1", AsOf::Latest).await?.aggregate.balance, 750);
    /// assert_eq!(accounts.load_closed("acc-1", AsOf::Version(1)).await?.aggregate.balance, 500);
    /// # Ok(()) }
    /// ```
    pub async fn load_closed<Q: IdRef<A::Id> + ?Sized>(
        &self,
        id: &Q,
        as_of: AsOf,
    ) -> Result<Versioned<A>, RepositoryError> {
        let stream = Self::stream_id(id);
        match self.store.stream_closure(&stream).await? {
            Some(closed) => match closed.status {
                StreamStatus::Archived => self.replay(&stream, as_of, Source::Archive(&self.store)).await,
                StreamStatus::Deleted => Err(RepositoryError::StreamClosed(Box::new(closed))),
                _ => self.replay(&stream, as_of, Source::Hot).await,
            },
            None => self.replay(&stream, as_of, Source::Hot).await,
        }
    }
}
