//! Projections: read models fed by the store's global, gap-free order of events.

mod batch;
mod checkpoint;
mod error;
mod lag;
mod options;
mod parking;
mod progress;
mod runner;
mod switch;

use async_trait::async_trait;

use crate::event::{EventDescriptor, EventSet};
use crate::record::DecodedEvent;

pub use checkpoint::{CheckpointError, CheckpointStore, ClaimStatus};
pub use error::{HandlerFailure, ProjectionError};
pub use lag::Lag;
pub use options::{Backoff, FailurePolicy, RunnerOptions, UnknownEvents};
pub use parking::ParkedEvent;
pub use progress::{wait_for_checkpoint, ProjectionProgress, WaitError};
pub use runner::{CatchUp, ProjectionRunner, RebuildProgress};
pub use switch::SwitchFuture;

/// What a handler returns when it fails: any error, boxed.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// A read model maintained from events: fed by the store's global, gap-free order.
///
/// A projection names the events it cares about with an `#[event]` enum that wraps just those
/// event structs, and the events it leaves out on purpose with
/// [`SOURCE_EVENTS`](Projection::SOURCE_EVENTS); those are skipped by name, without decoding
/// anything of them. A
/// [`ProjectionRunner`] feeds it from [`GlobalLog::read_all`](crate::GlobalLog::read_all),
/// batch by batch, and commits each batch's read-model writes **together with the checkpoint**
/// through a [`CheckpointStore`]:
/// after a crash the batch is either wholly applied with its checkpoint, or not at all, so no
/// event is lost or counted twice. A failing handler rolls its batch back; the runner then
/// retries, stops, skips the event or parks it for an operator, by [`FailurePolicy`]. Wait for a
/// runner to reach what a command wrote with [`ProjectionProgress`]; rebuild without readers
/// seeing an empty model with
/// [`ProjectionRunner::rebuild_beside`].
///
/// ```
/// use std::collections::BTreeMap;
/// use es_core::{event, Aggregate, Apply, DecodedEvent, EventDescriptor, EventSet, InMemoryReadModel,
///     InMemoryStore, Metadata, Projection, ProjectionRunner, Repository};
/// # use serde::{Deserialize, Serialize};
///
/// #[event] #[derive(Debug, Clone)] pub struct Deposited { pub cents: u64 }
/// #[event] #[derive(Debug, Clone)] pub struct Audited;
/// #[event] #[derive(Debug, Clone)] pub enum AccountEvent { Deposited(Deposited), Audited(Audited) }
/// # #[derive(Default, Serialize, Deserialize, Aggregate)]
/// # #[aggregate(name = "account", event = AccountEvent)]
/// # pub struct Account;
/// # impl<E> Apply<E> for Account { fn apply(&mut self, _: &E) {} }
///
/// /// The projection's view of the events: deposits only.
/// #[event] #[derive(Debug, Clone)] pub enum BalanceEvent { Deposited(Deposited) }
///
/// struct Balances;
///
/// #[es_core::async_trait]
/// impl Projection for Balances {
///     const NAME: &'static str = "balances";
///     const AGGREGATE_TYPES: &'static [&'static str] = &["account"];
///     // Audited events are known, and left out on purpose.
///     const SOURCE_EVENTS: &'static [&'static [EventDescriptor]] = &[AccountEvent::EVENTS];
///     type Event = BalanceEvent;
///     type Context = BTreeMap<String, u64>;
///
///     async fn handle(&self, balances: &mut Self::Context, event: &DecodedEvent<BalanceEvent>)
///         -> Result<(), es_core::HandlerError> {
///         let BalanceEvent::Deposited(deposit) = &event.event;
///         *balances.entry(event.envelope.stream.aggregate_id.clone()).or_default() += deposit.cents;
///         Ok(())
///     }
///
///     async fn reset(&self, balances: &mut Self::Context) -> Result<(), es_core::HandlerError> {
///         balances.clear();
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = InMemoryStore::new();
/// let accounts = Repository::<Account, _>::new(store.clone());
/// let deposit = |_: &Account| vec![Deposited { cents: 5 }.into(), Audited.into()];
/// accounts.execute("a-1", Metadata::new(), deposit).await?;
///
/// let model = InMemoryReadModel::new();
/// let runner = ProjectionRunner::new(Balances, store, model.clone());
/// runner.catch_up().await?;
/// assert_eq!(model.read(|balances| balances["a-1"]), 5);
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Projection: Send + Sync {
    /// The stable name the checkpoint is stored under. A new name starts from the first event.
    const NAME: &'static str;
    /// Only events of these aggregate types are handled; empty means all types (the
    /// framework's own record streams included, whose events are passed over unless
    /// [`Event`](Projection::Event) handles them: see
    /// [`SOURCE_EVENTS`](Projection::SOURCE_EVENTS)).
    const AGGREGATE_TYPES: &'static [&'static str] = &[];
    /// Every event the aggregates it reads may store, as their `#[event]` enums list them
    /// (e.g. `&[AccountEvent::EVENTS]`): the events of these sets that
    /// [`Event`](Projection::Event) leaves out are passed without a trace (and never decoded).
    /// An event whose name is in neither is unknown to the projection, and the runner's
    /// [`UnknownEvents`] policy decides (by default it stops with
    /// [`ProjectionError::UnknownEvent`]): the same rule as for aggregates, which refuse to load
    /// an event they do not know. The framework's own events,
    /// [`StreamClosed`](crate::lifecycle::StreamClosed) and
    /// [`SubjectForgotten`](crate::pii::SubjectForgotten),
    /// need no listing: a projection that reads their aggregate types (or all types) and does
    /// not handle them passes them over.
    const SOURCE_EVENTS: &'static [&'static [EventDescriptor]] = &[];
    /// The events handled: an `#[event]` enum wrapping just those event structs.
    type Event: EventSet;
    /// Where the handlers write, within one unit of work: a database transaction, an in-memory
    /// model. Given by the [`CheckpointStore`].
    type Context: Send;

    /// Applies one event to the read model. The event id
    /// (`event.envelope.event_id`) is the idempotency key for effects outside the context,
    /// which are delivered at least once; a command sent in reaction to the event takes
    /// [`Metadata::in_reaction_to`](crate::Metadata::in_reaction_to), so that it is carried out
    /// once however often the event is handled.
    ///
    /// An error rolls the batch back. An error that comes from the context's own connection
    /// failing (as [`CheckpointStore::is_transient`] tells) is retried as a transient fault;
    /// any other goes to the [`FailurePolicy`].
    async fn handle(&self, context: &mut Self::Context, event: &DecodedEvent<Self::Event>) -> Result<(), HandlerError>;

    /// Empties the read model, before a rebuild replays every event.
    async fn reset(&self, context: &mut Self::Context) -> Result<(), HandlerError>;
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
