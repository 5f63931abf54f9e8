//! The global log lent event by event: [`GlobalLog::replay_all`](super::GlobalLog::replay_all).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{RecordedEvent, StreamId};
use crate::metadata::Metadata;

/// One event as [`GlobalLog::replay_all`](super::GlobalLog::replay_all) lends it: the whole
/// envelope of a [`RecordedEvent`], with the strings, the payload and the metadata borrowed
/// from the store's row instead of copied into an event of their own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoggedEvent<'e> {
    /// The event's place in the global order.
    pub position: u64,
    /// Unique id of the event.
    pub event_id: Uuid,
    /// The aggregate type of the event's stream.
    pub aggregate_type: &'e str,
    /// The aggregate id of the event's stream.
    pub aggregate_id: &'e str,
    /// The event's version within its stream.
    pub version: u64,
    /// The stored event name.
    pub event_name: &'e str,
    /// The payload's schema version.
    pub schema_version: u32,
    /// The payload, as JSON.
    pub payload: &'e [u8],
    /// Metadata stored beside the payload.
    pub metadata: &'e Metadata,
    /// When the store recorded the event.
    pub recorded_at: DateTime<Utc>,
}

impl<'e> LoggedEvent<'e> {
    /// Lends the parts of `event`: for backends whose rows arrive as whole events.
    pub fn of(event: &'e RecordedEvent) -> Self {
        Self {
            position: event.position,
            event_id: event.event_id,
            aggregate_type: &event.stream.aggregate_type,
            aggregate_id: &event.stream.aggregate_id,
            version: event.version,
            event_name: &event.event_name,
            schema_version: event.schema_version,
            payload: &event.payload,
            metadata: &event.metadata,
            recorded_at: event.recorded_at,
        }
    }

    /// The event's stream, copied.
    pub fn stream(&self) -> StreamId {
        StreamId::new(self.aggregate_type, self.aggregate_id)
    }

    /// The event as a [`RecordedEvent`] of its own, copied: to keep it past the call.
    pub fn to_recorded(&self) -> RecordedEvent {
        RecordedEvent {
            event_id: self.event_id,
            stream: self.stream(),
            version: self.version,
            position: self.position,
            event_name: self.event_name.to_owned(),
            schema_version: self.schema_version,
            payload: self.payload.to_vec(),
            metadata: self.metadata.clone(),
            recorded_at: self.recorded_at,
        }
    }
}

/// What [`GlobalLog::replay_all`](super::GlobalLog::replay_all) calls for each event: it
/// handles the event and says whether to go on.
pub type LogReplayFn<'a> = dyn for<'e> FnMut(LoggedEvent<'e>) -> std::ops::ControlFlow<()> + Send + 'a;

/// How far a [`GlobalLog::replay_all`](super::GlobalLog::replay_all) went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogReplay {
    /// How many events the replay went through: those lent and those the filter left out.
    /// When the callback stopped the replay, the events the filter left out just before the
    /// stop may be left out of the count.
    pub scanned: u64,
    /// The position the replay got to: every event up to it was lent or left out by the
    /// filter (the event the callback stopped at included). A consumer that handled every
    /// event lent continues after it, and may checkpoint it.
    pub scanned_to: u64,
    /// Whether the callback stopped the replay before its end.
    pub stopped: bool,
}

impl LogReplay {
    /// A replay from `after` that has gone through nothing yet.
    pub fn starting_at(after: u64) -> Self {
        Self {
            scanned: 0,
            scanned_to: after,
            stopped: false,
        }
    }
}
