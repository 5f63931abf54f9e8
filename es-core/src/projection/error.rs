//! Why a projection runner stopped, or why one batch failed.

use uuid::Uuid;

use super::checkpoint::CheckpointError;
use super::HandlerError;
use crate::record::RecordDecodeError;
use crate::store::{StoreError, StreamId};

/// Why a projection stopped.
///
/// [`ProjectionError::is_transient`] tells the failures a runner retries by itself (with
/// [`RunnerOptions::transient_retry`](crate::RunnerOptions::transient_retry)) from the others; a
/// runner returns a transient error only when that policy gives up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// Reading events failed.
    #[error("projection {projection}: reading events failed: {source}")]
    Store {
        /// The projection.
        projection: &'static str,
        /// The store's error; [`StoreError::is_transient`] tells whether it was an outage.
        #[source]
        source: StoreError,
    },
    /// The checkpoint store failed.
    #[error("projection {projection}: {source}")]
    Checkpoint {
        /// The projection.
        projection: &'static str,
        /// The checkpoint store's error.
        #[source]
        source: CheckpointError,
    },
    /// Another runner claimed the projection while this one worked: this runner stopped
    /// without committing again. Nothing is lost: the other runner continues from the last
    /// checkpoint.
    #[error("projection {projection}: another runner took the projection over ({reason}); this runner stopped")]
    ClaimLost {
        /// The projection.
        projection: &'static str,
        /// What the checkpoint store said.
        reason: String,
    },
    /// An event the projection handles does not decode. Retrying cannot help: deploy code that
    /// knows the event (or fix the stored data), then start the runner again.
    #[error("projection {projection}: event at position {position} does not decode: {source}")]
    Decode {
        /// The projection.
        projection: &'static str,
        /// The event's global position.
        position: u64,
        /// Why it does not decode (names stream, version and event).
        #[source]
        source: RecordDecodeError,
    },
    /// An event of an aggregate type the projection reads has a name it does not know (see
    /// [`UnknownEvents`](crate::UnknownEvents)): most likely written by a newer version of the
    /// program. Deploy the code that knows it, declare it in the projection's
    /// [`SOURCE_EVENTS`](crate::Projection::SOURCE_EVENTS) if the projection may ignore it, or
    /// run with `UnknownEvents::Skip`. A retired name that the aggregate's enum reads through a
    /// `#[replaced]` rule is in no `EVENTS` list: the projection's event enum reads it with the
    /// same rule.
    #[error(
        "projection {projection}: event `{event_name}` at position {position} (stream {stream}, version {version}) \
         is unknown to the projection; deploy the code that knows it, list it in the projection's SOURCE_EVENTS \
         to ignore it, leave `{}` out of the projection's AGGREGATE_TYPES if it reads none of its events, or run \
         with UnknownEvents::Skip; if it is a retired name the aggregate's event enum reads with a #[replaced] \
         rule, give the projection's event enum the same rule",
        stream.aggregate_type
    )]
    UnknownEvent {
        /// The projection.
        projection: &'static str,
        /// The event's global position.
        position: u64,
        /// The event's stream.
        stream: StreamId,
        /// The event's version in its stream.
        version: u64,
        /// The stored name nobody knows.
        event_name: String,
    },
    /// A handler failed; the checkpoint stays before this event.
    #[error(transparent)]
    Handler(Box<HandlerFailure>),
    /// The read model's connection failed while a handler was writing: the batch rolled back.
    /// The event itself is not at fault.
    #[error(
        "projection {projection}: the read model's connection failed while handling the event at position \
         {position}: {source}"
    )]
    ContextLost {
        /// The projection.
        projection: &'static str,
        /// The position of the event being handled (0 while emptying the model for a rebuild).
        position: u64,
        /// The error the handler saw.
        #[source]
        source: HandlerError,
    },
    /// The read model's schema is missing or wrong (the backend recognised an undefined table
    /// or column): no event can be handled until it is fixed, so the runner stops whatever the
    /// failure policy, rather than skip or park every event. Create the tables (a migration the
    /// deploy left out), then start the runner again: nothing of the batch was committed.
    #[error(
        "projection {projection}: the read model's schema is missing or wrong (handling the event at position \
         {position}): {source}; create its tables, then start the runner again"
    )]
    ReadModelBroken {
        /// The projection.
        projection: &'static str,
        /// The position of the event being handled.
        position: u64,
        /// The error the handler saw.
        #[source]
        source: HandlerError,
    },
    /// The switch of a blue/green rebuild failed; nothing of it was committed, and the live
    /// model goes on serving.
    #[error("projection {projection}: switching {live} over to it failed: {source}")]
    Switch {
        /// The rebuilt copy.
        projection: &'static str,
        /// The live projection it was to replace.
        live: &'static str,
        /// Why.
        #[source]
        source: HandlerError,
    },
    /// Emptying the read model before a rebuild failed; the checkpoint was not reset.
    #[error("projection {projection}: emptying the read model for a rebuild failed: {source}")]
    Reset {
        /// The projection.
        projection: &'static str,
        /// The projection's error.
        #[source]
        source: HandlerError,
    },
}

impl ProjectionError {
    /// Whether the failure is an outage (a connection refused or cut, a server restarting)
    /// that trying again later may overcome.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store { source, .. } => source.is_transient(),
            Self::Checkpoint { source, .. } => source.is_transient(),
            Self::ContextLost { .. } => true,
            Self::ClaimLost { .. }
            | Self::Decode { .. }
            | Self::UnknownEvent { .. }
            | Self::Switch { .. }
            | Self::Handler(_)
            | Self::ReadModelBroken { .. }
            | Self::Reset { .. } => false,
        }
    }

    pub(crate) fn from_checkpoint(projection: &'static str, source: CheckpointError) -> Self {
        match source {
            CheckpointError::ClaimLost { reason } => Self::ClaimLost { projection, reason },
            source => Self::Checkpoint { projection, source },
        }
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
    /// How many times in a row a batch failed on a handler before the runner stopped.
    pub attempts: u32,
    /// The handler's error.
    #[source]
    pub source: HandlerError,
}
