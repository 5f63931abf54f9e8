//! The record codec: typed events to stored records and back, in one place.
//!
//! The repository (loading aggregates, time travel) and the projection runner both decode
//! through here, so a stored event that cannot be decoded is reported the same way wherever it
//! is read: a [`RecordDecodeError`] naming its stream, version and event name.

use uuid::Uuid;

use crate::event::{DecodeError, EventSet};
use crate::metadata::Metadata;
use crate::store::{NewEvent, RecordedEvent, ReplayedEvent, StreamId};

/// A stored event decoded into a typed event, with its envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedEvent<E> {
    /// The stored envelope: ids, version, position, metadata, timestamp and raw payload.
    pub envelope: RecordedEvent,
    /// The typed event, upcast to the current schema.
    pub event: E,
}

/// A stored event that cannot be turned into its typed event.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode event `{event_name}` at version {version} of stream {stream}: {source}")]
pub struct RecordDecodeError {
    /// The event's stream.
    pub stream: StreamId,
    /// The event's version in its stream.
    pub version: u64,
    /// The stored event name.
    pub event_name: String,
    /// Why decoding failed: an unknown name, a schema version newer than the code, a corrupt
    /// payload, a failing upcast step. Boxed to keep `Result`s small on the happy path.
    #[source]
    pub source: Box<DecodeError>,
}

/// A typed event that cannot be serialized into a record.
#[derive(Debug, thiserror::Error)]
#[error("cannot serialize event `{event_name}` for stream {stream}: {source}")]
pub struct RecordEncodeError {
    /// The stream written.
    pub stream: StreamId,
    /// The event's stored name.
    pub event_name: &'static str,
    /// The serializer's error.
    #[source]
    pub source: serde_json::Error,
}

/// Decodes a stored event into the event set `E`, upcasting older schema versions.
pub fn decode_record<E: EventSet>(record: &RecordedEvent) -> Result<E, RecordDecodeError> {
    E::decode(&record.event_name, record.schema_version, &record.payload)
        .map_err(|source| RecordDecodeError::new(&record.stream, record.version, &record.event_name, source))
}

/// Decodes an event lent by [`EventStore::replay_stream`](crate::EventStore::replay_stream).
pub(crate) fn decode_replayed<E: EventSet>(
    stream: &StreamId,
    event: &ReplayedEvent<'_>,
) -> Result<E, RecordDecodeError> {
    E::decode(event.event_name, event.schema_version, event.payload)
        .map_err(|source| RecordDecodeError::new(stream, event.version, event.event_name, source))
}

impl RecordDecodeError {
    fn new(stream: &StreamId, version: u64, event_name: &str, source: DecodeError) -> Self {
        Self {
            stream: stream.clone(),
            version,
            event_name: event_name.to_owned(),
            source: Box::new(source),
        }
    }
}

/// Serializes a batch of events for `stream`, each with a fresh UUID v7 id and `metadata`.
pub fn encode_batch<E: EventSet>(
    stream: &StreamId,
    events: &[E],
    metadata: &Metadata,
) -> Result<Vec<NewEvent>, RecordEncodeError> {
    events
        .iter()
        .map(|event| {
            let payload = event.encode_payload().map_err(|source| RecordEncodeError {
                stream: stream.clone(),
                event_name: event.event_name(),
                source,
            })?;
            Ok(NewEvent {
                event_id: Uuid::now_v7(),
                event_name: event.event_name().to_owned(),
                schema_version: event.schema_version(),
                payload,
                metadata: metadata.clone(),
            })
        })
        .collect()
}
