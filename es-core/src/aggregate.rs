//! Aggregates: state rebuilt by applying events, one handler per event type.

use std::fmt::Display;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::event::{DecodeError, EventSet};

/// An event-sourced aggregate: a consistency boundary whose state is the fold of its events.
///
/// Implemented by [`#[derive(Aggregate)]`](crate::Aggregate); see there for the attributes. The
/// state starts from [`Default`] and is serialized for snapshots.
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The aggregate type stored with every event, e.g. `"ticket"`. Never change it once events
    /// are stored.
    const TYPE: &'static str;
    /// Bump this when snapshots must be thrown away (the apply logic changed, so old states are
    /// wrong): snapshots taken at another revision are ignored and the state is replayed from
    /// events instead. When only the state's *shape* changed, raise
    /// [`Aggregate::SNAPSHOT_VERSION`] with an upcast step instead, and old snapshots are kept.
    const SNAPSHOT_REVISION: u32;
    /// The schema version of the state as snapshots store it, from 1. A snapshot stored at an
    /// older version is upcast by [`Aggregate::decode_snapshot`] (the `#[upcast]` steps on the
    /// aggregate), so a change of shape does not cost a replay of every stream.
    const SNAPSHOT_VERSION: u32 = 1;
    /// Identifies one instance; its [`Display`] form is the stream's aggregate id.
    type Id: Display + Send + Sync;
    /// The enum of this aggregate's events: an [`EventSet`] with an [`Apply`] handler in this
    /// aggregate for each of its events.
    type Event: AppliedBy<Self>;

    /// Applies one event to the state, through the [`Apply`] handler of the event's type.
    fn apply_event(&mut self, event: &Self::Event) {
        event.apply_to(self);
    }

    /// Decodes a snapshot's state stored at `schema_version`. This default reads
    /// [`Aggregate::SNAPSHOT_VERSION`] only and refuses others with a typed error;
    /// `#[derive(Aggregate)]` generates one that upcasts older versions along its `#[upcast]`
    /// steps.
    fn decode_snapshot(schema_version: u32, state: &[u8]) -> Result<Self, DecodeError> {
        if schema_version == Self::SNAPSHOT_VERSION {
            crate::event::upcast::from_slice(Self::TYPE, schema_version, state)
        } else {
            Err(crate::event::upcast::version_error(
                Self::TYPE,
                schema_version,
                Self::SNAPSHOT_VERSION,
            ))
        }
    }
}

/// The handler that applies one event type to an aggregate's state.
///
/// `#[derive(Aggregate)]` requires one `Apply` impl per event of the aggregate: a missing
/// handler is a compile error, never a silently ignored event.
///
/// Apply handlers must not fail: an event is a fact that has already happened. Validation
/// belongs in the command that produced it.
#[diagnostic::on_unimplemented(
    message = "aggregate `{Self}` has no apply handler for event `{E}`",
    label = "`{E}` is one of this aggregate's events, but nothing applies it",
    note = "add `impl es_core::Apply<{E}> for {Self} {{ fn apply(&mut self, event: &{E}) {{ /* change the state */ }} }}`"
)]
pub trait Apply<E> {
    /// Changes the state to reflect `event`.
    fn apply(&mut self, event: &E);
}

/// An event enum whose every event aggregate `A` has an [`Apply`] handler for: the dispatch
/// from the enum to those handlers.
///
/// Implemented by `#[event]` on an enum, for every `A` with all the handlers; a missing one is
/// a compile error naming the event.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event enum",
    label = "expected an enum marked `#[event]`",
    note = "name the aggregate's `#[event]` enum in `#[aggregate(event = ...)]`: an enum whose variants each wrap one `#[event]` struct, e.g. `Opened(TicketOpened)`"
)]
pub trait AppliedBy<A: ?Sized>: EventSet {
    /// Applies this event to `aggregate` with the handler of its type.
    fn apply_to(&self, aggregate: &mut A);
}
