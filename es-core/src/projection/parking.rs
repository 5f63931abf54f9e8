//! Parked events: events a projection gave up on, kept with their error until an operator
//! retries or drops them.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::store::{RecordedEvent, StreamId};

/// An event a projection could not process and set aside by
/// [`FailurePolicy::Park`](crate::FailurePolicy::Park), so that the events after it go on.
///
/// Parked events are kept by the [`CheckpointStore`](crate::CheckpointStore) (a dead-letter
/// table next to the checkpoints), committed together with the checkpoint that passes them.
/// List them with [`ProjectionRunner::parked`](crate::ProjectionRunner::parked); once the cause
/// is fixed, [`retry_parked`](crate::ProjectionRunner::retry_parked) asks the projection's
/// runner to handle the event again (it is applied exactly once: its writes commit together
/// with its removal from the parked events), or
/// [`drop_parked`](crate::ProjectionRunner::drop_parked) gives up on it for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedEvent {
    /// The projection that parked it.
    pub projection: String,
    /// The event's global position.
    pub position: u64,
    /// The event's id.
    pub event_id: Uuid,
    /// The event's stream.
    pub stream: StreamId,
    /// The event's version in its stream.
    pub version: u64,
    /// The event's stored name.
    pub event_name: String,
    /// Why it failed, last time.
    pub error: String,
    /// How many times it was tried, over all its retries.
    pub attempts: u32,
    /// When it was first parked.
    pub parked_at: DateTime<Utc>,
    /// Whether an operator asked for it to be tried again; the projection's runner does so at
    /// its next batch.
    pub retry_requested: bool,
}

impl ParkedEvent {
    /// `event`, parked now by `projection` after `attempts` tries that failed with `error`.
    pub fn new(projection: impl Into<String>, event: &RecordedEvent, error: impl Into<String>, attempts: u32) -> Self {
        Self {
            projection: projection.into(),
            position: event.position,
            event_id: event.event_id,
            stream: event.stream.clone(),
            version: event.version,
            event_name: event.event_name.clone(),
            error: error.into(),
            attempts,
            parked_at: Utc::now(),
            retry_requested: false,
        }
    }
}
