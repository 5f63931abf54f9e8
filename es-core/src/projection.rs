//! Projections: read models fed by the store's global, gap-free order of events.
//!
//! A [`Projection`] names the events it cares about with an `#[event]` enum that wraps just
//! those event structs; every other event is skipped by name, without decoding its payload. A
//! [`ProjectionRunner`] feeds it from [`EventStore::read_all`], batch by batch, and commits each
//! batch's read-model writes **together with the checkpoint** through a [`CheckpointStore`]:
//! after a crash the batch is either wholly applied with its checkpoint, or not at all, so no
//! event is lost or counted twice. A failing handler never skips its event: the batch rolls back
//! and is retried or the runner stops, by [`FailurePolicy`].
//!
//! Only one runner per projection is active at a time: each claims the projection first (see
//! [`CheckpointStore::claim`]); a second runner waits and takes over when the first stops.
//!
//! ```
//! use std::collections::BTreeMap;
//! use es_core::{event, Aggregate, Apply, DecodedEvent, InMemoryReadModel, InMemoryStore, Metadata,
//!     Projection, ProjectionRunner, Repository};
//! # use serde::{Deserialize, Serialize};
//!
//! #[event] #[derive(Debug, Clone)] pub struct Deposited { pub cents: u64 }
//! #[event] #[derive(Debug, Clone)] pub struct Audited;
//! #[event] #[derive(Debug, Clone)] pub enum AccountEvent { Deposited(Deposited), Audited(Audited) }
//! # #[derive(Default, Serialize, Deserialize, Aggregate)]
//! # #[aggregate(name = "account", event = AccountEvent)]
//! # pub struct Account;
//! # impl<E> Apply<E> for Account { fn apply(&mut self, _: &E) {} }
//!
//! /// The projection's view of the events: deposits only.
//! #[event] #[derive(Debug, Clone)] pub enum BalanceEvent { Deposited(Deposited) }
//!
//! struct Balances;
//!
//! #[async_trait::async_trait]
//! impl Projection for Balances {
//!     const NAME: &'static str = "balances";
//!     const AGGREGATE_TYPES: &'static [&'static str] = &["account"];
//!     type Event = BalanceEvent;
//!     type Context = BTreeMap<String, u64>;
//!
//!     async fn handle(&self, balances: &mut Self::Context, event: &DecodedEvent<BalanceEvent>)
//!         -> Result<(), es_core::HandlerError> {
//!         let BalanceEvent::Deposited(deposit) = &event.event;
//!         *balances.entry(event.envelope.stream.aggregate_id.clone()).or_default() += deposit.cents;
//!         Ok(())
//!     }
//!
//!     async fn reset(&self, balances: &mut Self::Context) -> Result<(), es_core::HandlerError> {
//!         balances.clear();
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = InMemoryStore::new();
//! let accounts = Repository::<Account, _>::new(store.clone());
//! let deposit = |_: &Account| Ok::<_, std::convert::Infallible>(vec![Deposited { cents: 5 }.into(), Audited.into()]);
//! accounts.execute(&"a-1".to_string(), Metadata::new(), deposit).await?;
//!
//! let model = InMemoryReadModel::new();
//! let runner = ProjectionRunner::new(Balances, store, model.clone());
//! runner.catch_up().await?;
//! assert_eq!(model.read(|balances| balances["a-1"]), 5);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::error::Error;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use uuid::Uuid;

use crate::event::EventSet;
use crate::repository::{decode_record, DecodedEvent, RepositoryError};
use crate::store::{EventStore, RecordedEvent, StoreError, StreamId};

/// What a handler returns when it fails: any error, boxed.
pub type HandlerError = Box<dyn Error + Send + Sync>;

/// A read model maintained from events.
#[async_trait]
pub trait Projection: Send + Sync {
    /// The stable name the checkpoint is stored under. A new name starts from the first event.
    const NAME: &'static str;
    /// Only events of these aggregate types are handled; empty means all types.
    const AGGREGATE_TYPES: &'static [&'static str] = &[];
    /// The events handled: an `#[event]` enum wrapping just those event structs.
    type Event: EventSet;
    /// Where the handlers write, within one unit of work: a database transaction, an in-memory
    /// model. Given by the [`CheckpointStore`].
    type Context: Send;

    /// Applies one event to the read model. The event id
    /// (`event.envelope.event_id`) is the idempotency key for effects outside the context,
    /// which are delivered at least once.
    async fn handle(&self, context: &mut Self::Context, event: &DecodedEvent<Self::Event>) -> Result<(), HandlerError>;

    /// Empties the read model, before a rebuild replays every event.
    async fn reset(&self, context: &mut Self::Context) -> Result<(), HandlerError>;
}

/// Durable checkpoints, committed atomically with the read-model writes of the same batch.
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// What handlers write to within a unit of work.
    type Context: Send;
    /// One unit of work: the context plus whatever makes it atomic. Dropping it uncommitted
    /// discards every write made through it.
    type Unit: Send;
    /// Proof that this runner is the projection's only active one; released on drop.
    type Claim: Send;

    /// Waits until this runner is the only active one for `projection`.
    async fn claim(&self, projection: &str) -> Result<Self::Claim, ProjectionError>;

    /// Starts a unit of work and reads the checkpoint within it.
    async fn begin(&self, projection: &str) -> Result<(Self::Unit, u64), ProjectionError>;

    /// The context of a unit of work.
    fn context<'u>(&self, unit: &'u mut Self::Unit) -> &'u mut Self::Context;

    /// Commits the unit's writes together with the new checkpoint.
    async fn commit(&self, unit: Self::Unit, projection: &str, position: u64) -> Result<(), ProjectionError>;

    /// Discards the unit's writes. The default drops the unit; stores that can reuse its
    /// resources (a connection) return them here. A unit dropped without `commit` or
    /// `rollback` (a cancelled runner) must also discard its writes.
    async fn rollback(&self, unit: Self::Unit) {
        drop(unit);
    }

    /// The committed checkpoint, read outside any unit of work.
    async fn checkpoint(&self, projection: &str) -> Result<u64, ProjectionError>;
}

/// Resolves when new events may have been appended, so a caught-up runner need not poll
/// tightly. Spurious wake-ups are fine; missed ones are covered by the poll interval.
#[async_trait]
pub trait WakeUp: Send {
    /// Waits for the next append (or a spurious wake-up).
    async fn wait(&mut self);
}

/// No wake-ups: a runner using it relies on its poll interval alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct PollOnly;

#[async_trait]
impl WakeUp for PollOnly {
    async fn wait(&mut self) {
        std::future::pending::<()>().await;
    }
}

/// What to do when a handler (or decoding an event it handles) fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Stop the runner with the error. The checkpoint stays before the failing event.
    Stop,
    /// Roll the batch back and try it again, up to `attempts` times in all, waiting `backoff`
    /// between tries; then stop.
    Retry {
        /// Tries in all, at least 1.
        attempts: u32,
        /// The pause between tries.
        backoff: Duration,
    },
}

/// How a runner reads and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerOptions {
    /// Events read (and committed) per unit of work.
    pub batch_size: usize,
    /// How often a caught-up runner looks for new events when no wake-up comes.
    pub poll_interval: Duration,
    /// What to do on a failing handler.
    pub failure: FailurePolicy,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
            failure: FailurePolicy::Retry {
                attempts: 3,
                backoff: Duration::from_millis(200),
            },
        }
    }
}

/// Why a projection stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// Reading events failed.
    #[error("projection {projection}: reading events failed: {source}")]
    Store {
        /// The projection.
        projection: &'static str,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The checkpoint store failed.
    #[error("projection {projection}: checkpoint store failed: {source}")]
    Checkpoint {
        /// The projection.
        projection: String,
        /// The backend's error.
        #[source]
        source: HandlerError,
    },
    /// An event the projection handles does not decode.
    #[error("projection {projection}: event at position {position} does not decode: {source}")]
    Decode {
        /// The projection.
        projection: &'static str,
        /// The event's global position.
        position: u64,
        /// Why it does not decode (names stream, version and event).
        #[source]
        source: RepositoryError,
    },
    /// A handler failed; the checkpoint stays before this event.
    #[error(transparent)]
    Handler(Box<HandlerFailure>),
}

impl ProjectionError {
    /// Wraps a checkpoint-store backend error.
    pub fn checkpoint(projection: &str, source: impl Into<HandlerError>) -> Self {
        Self::Checkpoint {
            projection: projection.to_owned(),
            source: source.into(),
        }
    }

    fn set_attempts(mut self, tries: u32) -> Self {
        if let Self::Handler(failure) = &mut self {
            failure.attempts = tries;
        }
        self
    }
}

/// Which event a handler failed on, and why. The checkpoint stays before this event.
#[derive(Debug, thiserror::Error)]
#[error(
    "projection {projection}: handler failed on event `{event_name}` ({event_id}) at position {position}, \
     stream {stream}, after {attempts} attempt(s): {source}"
)]
pub struct HandlerFailure {
    /// The projection.
    pub projection: &'static str,
    /// The failing event's global position.
    pub position: u64,
    /// The failing event's id.
    pub event_id: Uuid,
    /// The failing event's stored name.
    pub event_name: String,
    /// The failing event's stream.
    pub stream: StreamId,
    /// How many times the batch was tried.
    pub attempts: u32,
    /// The handler's error.
    #[source]
    pub source: HandlerError,
}

/// How far a projection is behind the head of the store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lag {
    /// The projection's checkpoint.
    pub checkpoint: u64,
    /// Events after the checkpoint.
    pub events_behind: u64,
    /// Age of the oldest unhandled event (0 when caught up).
    pub seconds_behind: f64,
}

/// Progress of a rebuild, reported after every batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RebuildProgress {
    /// Events read so far.
    pub done: u64,
    /// Events in the store when the rebuild started.
    pub total: u64,
    /// Events read per second so far.
    pub events_per_second: f64,
}

/// What a catch-up or rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CatchUp {
    /// Events read (handled or skipped).
    pub read: u64,
    /// Events handed to the projection.
    pub handled: u64,
    /// The checkpoint reached.
    pub position: u64,
}

/// Feeds one projection from an event store, committing read-model writes and checkpoints
/// together.
#[derive(Debug)]
pub struct ProjectionRunner<P, E, C> {
    projection: P,
    events: E,
    checkpoints: C,
    options: RunnerOptions,
}

impl<P, E, C> ProjectionRunner<P, E, C>
where
    P: Projection,
    E: EventStore,
    C: CheckpointStore<Context = P::Context>,
{
    /// A runner of `projection`, reading `events`, keeping checkpoints (and the read model) in
    /// `checkpoints`, with default [`RunnerOptions`].
    pub fn new(projection: P, events: E, checkpoints: C) -> Self {
        Self {
            projection,
            events,
            checkpoints,
            options: RunnerOptions::default(),
        }
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: RunnerOptions) -> Self {
        self.options = options;
        self
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// Claims the projection, then handles events until it has caught up with the head.
    pub async fn catch_up(&self) -> Result<CatchUp, ProjectionError> {
        let _claim = self.checkpoints.claim(P::NAME).await?;
        self.drain(|_| {}).await
    }

    /// Claims the projection (waiting while another runner holds it), catches up, then tails
    /// new events, woken by `wake_up` or every poll interval, until `shutdown` resolves.
    /// Stopping mid-batch is safe: the unfinished batch rolls back.
    pub async fn run<W: WakeUp>(
        &self,
        mut wake_up: W,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ProjectionError> {
        tokio::pin!(shutdown);
        let _claim = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            claim = self.checkpoints.claim(P::NAME) => claim?,
        };
        tracing::info!(projection = P::NAME, "projection runner active");
        let mut last_lag_report = Instant::now() - LAG_REPORT_INTERVAL;
        loop {
            let batch = tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                batch = self.step_with_policy() => batch?,
            };
            if last_lag_report.elapsed() >= LAG_REPORT_INTERVAL {
                last_lag_report = Instant::now();
                self.report_lag().await;
            }
            if batch.read < self.options.batch_size as u64 {
                tokio::select! {
                    biased;
                    () = &mut shutdown => return Ok(()),
                    () = wake_up.wait() => {}
                    () = tokio::time::sleep(self.options.poll_interval) => {}
                }
            }
        }
    }

    /// Empties the read model, resets the checkpoint, and replays every event, reporting
    /// progress after each batch. A projection added later catches up the same way (its
    /// checkpoint starts at 0), without the reset.
    pub async fn rebuild(
        &self,
        mut on_progress: impl FnMut(RebuildProgress) + Send,
    ) -> Result<CatchUp, ProjectionError> {
        let _claim = self.checkpoints.claim(P::NAME).await?;
        let (mut unit, _) = self.checkpoints.begin(P::NAME).await?;
        let context = self.checkpoints.context(&mut unit);
        self.projection
            .reset(context)
            .await
            .map_err(|source| ProjectionError::checkpoint(P::NAME, source))?;
        self.checkpoints.commit(unit, P::NAME, 0).await?;
        let total = self.store_result(self.events.tail(0).await)?.events;
        let started = Instant::now();
        tracing::info!(projection = P::NAME, total, "rebuilding projection");
        self.drain(|done| {
            let seconds = started.elapsed().as_secs_f64();
            on_progress(RebuildProgress {
                done,
                total,
                events_per_second: if seconds > 0.0 { done as f64 / seconds } else { 0.0 },
            });
        })
        .await
    }

    /// How far the projection is behind the head of the store.
    pub async fn lag(&self) -> Result<Lag, ProjectionError> {
        let checkpoint = self.checkpoints.checkpoint(P::NAME).await?;
        let tail = self.store_result(self.events.tail(checkpoint).await)?;
        let seconds_behind = if tail.events == 0 {
            0.0
        } else {
            let oldest = self.store_result(self.events.read_all(checkpoint, 1).await)?;
            oldest.first().map_or(0.0, |event| {
                (Utc::now() - event.recorded_at).num_milliseconds().max(0) as f64 / 1000.0
            })
        };
        Ok(Lag {
            checkpoint,
            events_behind: tail.events,
            seconds_behind,
        })
    }

    async fn report_lag(&self) {
        match self.lag().await {
            Ok(lag) => {
                metrics::gauge!("es_projection_lag_events", "projection" => P::NAME).set(lag.events_behind as f64);
                metrics::gauge!("es_projection_lag_seconds", "projection" => P::NAME).set(lag.seconds_behind);
                tracing::debug!(
                    projection = P::NAME,
                    events_behind = lag.events_behind,
                    seconds_behind = lag.seconds_behind,
                    "projection lag"
                );
            }
            Err(error) => tracing::warn!(projection = P::NAME, %error, "cannot measure projection lag"),
        }
    }

    async fn drain(&self, mut on_batch: impl FnMut(u64) + Send) -> Result<CatchUp, ProjectionError> {
        let mut total = CatchUp::default();
        loop {
            let batch = self.step_with_policy().await?;
            total.read += batch.read;
            total.handled += batch.handled;
            if batch.read > 0 {
                total.position = batch.position;
                on_batch(total.read);
            } else {
                total.position = self.checkpoints.checkpoint(P::NAME).await?;
            }
            if batch.read < self.options.batch_size as u64 {
                return Ok(total);
            }
        }
    }

    async fn step_with_policy(&self) -> Result<CatchUp, ProjectionError> {
        let (attempts, backoff) = match self.options.failure {
            FailurePolicy::Stop => (1, Duration::ZERO),
            FailurePolicy::Retry { attempts, backoff } => (attempts.max(1), backoff),
        };
        let mut attempt = 1;
        loop {
            match self.step().await {
                Ok(batch) => return Ok(batch),
                Err(error) if attempt < attempts => {
                    tracing::warn!(projection = P::NAME, attempt, %error, "projection batch failed; retrying");
                    attempt += 1;
                    tokio::time::sleep(backoff).await;
                }
                Err(error) => {
                    let error = error.set_attempts(attempt);
                    tracing::error!(projection = P::NAME, %error, "projection stopped");
                    return Err(error);
                }
            }
        }
    }

    /// One unit of work: read a batch after the checkpoint, handle what concerns the
    /// projection, commit the writes with the new checkpoint.
    async fn step(&self) -> Result<CatchUp, ProjectionError> {
        let (mut unit, checkpoint) = self.checkpoints.begin(P::NAME).await?;
        let batch = self.store_result(self.events.read_all(checkpoint, self.options.batch_size).await)?;
        let Some(last) = batch.last() else {
            self.checkpoints.rollback(unit).await;
            return Ok(CatchUp {
                position: checkpoint,
                ..CatchUp::default()
            });
        };
        let (position, read) = (last.position, batch.len());
        let handled = match self.handle_batch(&mut unit, batch).await {
            Ok(handled) => handled,
            Err(error) => {
                self.checkpoints.rollback(unit).await;
                return Err(error);
            }
        };
        self.checkpoints.commit(unit, P::NAME, position).await?;
        metrics::counter!("es_projection_events_handled_total", "projection" => P::NAME).increment(handled);
        tracing::trace!(projection = P::NAME, read, handled, position, "batch committed");
        Ok(CatchUp {
            read: read as u64,
            handled,
            position,
        })
    }

    /// Hands the batch's events that concern the projection to its handler, within `unit`. The
    /// records move into the handler's envelopes: no copy per event.
    async fn handle_batch(&self, unit: &mut C::Unit, batch: Vec<RecordedEvent>) -> Result<u64, ProjectionError> {
        let context = self.checkpoints.context(unit);
        let mut handled = 0;
        for envelope in batch.into_iter().filter(concerns::<P>) {
            let event = decode_record::<P::Event>(&envelope).map_err(|source| ProjectionError::Decode {
                projection: P::NAME,
                position: envelope.position,
                source,
            })?;
            let decoded = DecodedEvent { envelope, event };
            self.projection.handle(context, &decoded).await.map_err(|source| {
                let DecodedEvent { envelope, .. } = decoded;
                ProjectionError::Handler(Box::new(HandlerFailure {
                    projection: P::NAME,
                    position: envelope.position,
                    event_id: envelope.event_id,
                    event_name: envelope.event_name,
                    stream: envelope.stream,
                    attempts: 1,
                    source,
                }))
            })?;
            handled += 1;
        }
        Ok(handled)
    }

    fn store_result<T>(&self, result: Result<T, StoreError>) -> Result<T, ProjectionError> {
        result.map_err(|source| ProjectionError::Store {
            projection: P::NAME,
            source,
        })
    }
}

const LAG_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// Whether the projection handles `record`: decided by aggregate type and stored name alone.
fn concerns<P: Projection>(record: &RecordedEvent) -> bool {
    (P::AGGREGATE_TYPES.is_empty() || P::AGGREGATE_TYPES.contains(&record.stream.aggregate_type.as_str()))
        && P::Event::handles(&record.event_name)
}

/// A read model kept in memory, with its checkpoints: the embedded default for projections.
///
/// Each unit of work edits a copy of the model that replaces the original only on commit, so a
/// failed batch leaves no trace. That copy costs time in proportion to the model's size: fine for
/// tests, examples and small models. Use one `InMemoryReadModel` per projection.
#[derive(Debug)]
pub struct InMemoryReadModel<M> {
    shared: Arc<Shared<M>>,
}

#[derive(Debug)]
struct Shared<M> {
    committed: Mutex<Committed<M>>,
    /// One lock per projection: the claim of its single active runner.
    claims: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Serializes units of work, as a row lock on the checkpoint would.
    units: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug, Default)]
struct Committed<M> {
    model: M,
    checkpoints: HashMap<String, u64>,
}

impl<M> Clone for InMemoryReadModel<M> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<M: Default> Default for InMemoryReadModel<M> {
    fn default() -> Self {
        Self {
            shared: Arc::new(Shared {
                committed: Mutex::new(Committed::default()),
                claims: Mutex::default(),
                units: Arc::default(),
            }),
        }
    }
}

impl<M: Default> InMemoryReadModel<M> {
    /// An empty model with no checkpoints.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<M> InMemoryReadModel<M> {
    /// Queries the committed model.
    pub fn read<T>(&self, query: impl FnOnce(&M) -> T) -> T {
        let committed = self.shared.committed.lock().unwrap_or_else(PoisonError::into_inner);
        query(&committed.model)
    }
}

/// A unit of work on an [`InMemoryReadModel`]: a working copy of the model.
#[derive(Debug)]
pub struct InMemoryUnit<M> {
    model: M,
    _exclusive: tokio::sync::OwnedMutexGuard<()>,
}

#[async_trait]
impl<M: Clone + Send + Sync + 'static> CheckpointStore for InMemoryReadModel<M> {
    type Context = M;
    type Unit = InMemoryUnit<M>;
    type Claim = tokio::sync::OwnedMutexGuard<()>;

    async fn claim(&self, projection: &str) -> Result<Self::Claim, ProjectionError> {
        let lock = {
            let mut claims = self.shared.claims.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(claims.entry(projection.to_owned()).or_default())
        };
        Ok(lock.lock_owned().await)
    }

    async fn begin(&self, projection: &str) -> Result<(Self::Unit, u64), ProjectionError> {
        let exclusive = Arc::clone(&self.shared.units).lock_owned().await;
        let committed = self.shared.committed.lock().unwrap_or_else(PoisonError::into_inner);
        let checkpoint = committed.checkpoints.get(projection).copied().unwrap_or(0);
        let unit = InMemoryUnit {
            model: committed.model.clone(),
            _exclusive: exclusive,
        };
        Ok((unit, checkpoint))
    }

    fn context<'u>(&self, unit: &'u mut Self::Unit) -> &'u mut M {
        &mut unit.model
    }

    async fn commit(&self, unit: Self::Unit, projection: &str, position: u64) -> Result<(), ProjectionError> {
        let mut committed = self.shared.committed.lock().unwrap_or_else(PoisonError::into_inner);
        committed.model = unit.model;
        committed.checkpoints.insert(projection.to_owned(), position);
        Ok(())
    }

    async fn checkpoint(&self, projection: &str) -> Result<u64, ProjectionError> {
        let committed = self.shared.committed.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(committed.checkpoints.get(projection).copied().unwrap_or(0))
    }
}
