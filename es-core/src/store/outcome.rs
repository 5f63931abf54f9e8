//! What an append did, and where a stored event is: how a retried append recognises its batch.

use uuid::Uuid;

use super::{RecordedEvent, StreamId};

/// What a successful append did.
///
/// When the batch had been appended before ([`AppendOutcome::already_stored`]), it describes
/// that original append, so a retried append returns what the first one would have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The stream's version before the append.
    pub previous_version: u64,
    /// The stream's version after the append (the version of its last new event).
    pub new_version: u64,
    /// The global positions of the batch's events, in batch order (empty for an empty batch).
    pub positions: Vec<u64>,
    /// Whether every event of the batch was already stored by an earlier append (a retry whose
    /// first attempt committed): nothing was written this time.
    pub already_stored: bool,
}

impl AppendOutcome {
    /// The outcome of appending events at `positions` to a stream that was at `previous_version`.
    pub fn new(previous_version: u64, positions: Vec<u64>) -> Self {
        Self {
            previous_version,
            new_version: previous_version + positions.len() as u64,
            positions,
            already_stored: false,
        }
    }

    /// The outcome of an append that wrote nothing because its batch was already stored: the
    /// rule of idempotent appends (see [`EventStore::append`](super::EventStore::append)), for backends to share.
    ///
    /// `stored` are the stored events that carry one of the batch's `ids`, in any order.
    /// Returns the original outcome when they are exactly the batch, stored in `stream` at
    /// consecutive versions in batch order; `None` otherwise (an empty batch included).
    pub fn from_stored(stream: &StreamId, ids: &[Uuid], stored: &[StoredEventPlace]) -> Option<Self> {
        if ids.is_empty() || stored.len() != ids.len() {
            return None;
        }
        let mut stored: Vec<&StoredEventPlace> = stored.iter().collect();
        stored.sort_unstable_by_key(|event| event.version);
        let first = stored[0].version;
        let previous_version = first.checked_sub(1)?;
        let in_place =
            stored.iter().zip(ids).zip(first..).all(|((event, id), version)| {
                event.event_id == *id && event.stream == *stream && event.version == version
            });
        in_place.then(|| Self {
            previous_version,
            new_version: previous_version + ids.len() as u64,
            positions: stored.iter().map(|event| event.position).collect(),
            already_stored: true,
        })
    }
}

/// Where one stored event is: what [`AppendOutcome::from_stored`] compares a batch with. A
/// backend reads it back for the ids of a batch (no payload needed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEventPlace {
    /// The event's id.
    pub event_id: Uuid,
    /// Its stream.
    pub stream: StreamId,
    /// Its version in the stream.
    pub version: u64,
    /// Its global position.
    pub position: u64,
}

impl From<&RecordedEvent> for StoredEventPlace {
    fn from(event: &RecordedEvent) -> Self {
        Self {
            event_id: event.event_id,
            stream: event.stream.clone(),
            version: event.version,
            position: event.position,
        }
    }
}
