//! The record codec: typed events to stored records and back, in one place.
//!
//! The repository (loading aggregates, time travel) and the projection runner both decode
//! through here, so a stored event that cannot be decoded is reported the same way wherever it
//! is read: a [`RecordDecodeError`] naming its stream, version and event name.

use uuid::Uuid;

use crate::event::{DecodeError, Decoded, EventSet};
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

/// The envelope: so that what takes a stored event ([`Metadata::caused_by`](crate::Metadata::caused_by),
/// [`Metadata::in_reaction_to`](crate::Metadata::in_reaction_to)) takes the event a handler is
/// given as it is.
impl<E> AsRef<RecordedEvent> for DecodedEvent<E> {
    fn as_ref(&self) -> &RecordedEvent {
        &self.envelope
    }
}

impl<E> DecodedEvent<E> {
    /// Each event a stored event stands for, with its envelope: the envelope is cloned for all
    /// but the last (usually the only) one, which takes it.
    pub(crate) fn each(envelope: RecordedEvent, events: Decoded<E>) -> impl Iterator<Item = DecodedEvent<E>> {
        let mut envelope = Some(envelope);
        let mut events = events.into_iter().peekable();
        std::iter::from_fn(move || {
            let event = events.next()?;
            let envelope = if events.peek().is_some() {
                envelope.clone()?
            } else {
                envelope.take()?
            };
            Some(DecodedEvent { envelope, event })
        })
    }
}

/// A stored event that cannot be turned into its typed event.
///
/// Its [`source`](std::error::Error::source) is the [`DecodeError`] itself (not its box), so
/// `error.source().and_then(|cause| cause.downcast_ref::<DecodeError>())` finds it.
#[derive(Debug)]
pub struct RecordDecodeError {
    /// The event's stream.
    pub stream: StreamId,
    /// The event's version in its stream.
    pub version: u64,
    /// The stored event name.
    pub event_name: String,
    /// Why decoding failed: an unknown name, a schema version newer than the code, a corrupt
    /// payload, a failing upcast step. Boxed to keep `Result`s small on the happy path.
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

/// Decodes a stored event into one event of the set `E`, upcasting older schema versions.
///
/// A retired event that a `#[replaced]` rule turns into no event or several is an error here
/// ([`DecodeError::NotOneEvent`]); readers of whole streams use [`decode_record_all`].
pub fn decode_record<E: EventSet>(record: &RecordedEvent) -> Result<E, RecordDecodeError> {
    E::decode(&record.event_name, record.schema_version, &record.payload)
        .map_err(|source| RecordDecodeError::new(&record.stream, record.version, &record.event_name, source))
}

/// Decodes a stored event into every event of the set `E` it stands for now: one, or what a
/// `#[replaced]` rule makes of a retired event (none, one or several). See
/// [`EventSet::decode_all`].
pub fn decode_record_all<E: EventSet>(record: &RecordedEvent) -> Result<Decoded<E>, RecordDecodeError> {
    E::decode_all(&record.event_name, record.schema_version, &record.payload)
        .map_err(|source| RecordDecodeError::new(&record.stream, record.version, &record.event_name, source))
}

/// Decodes an event lent by [`EventStore::replay_stream`](crate::EventStore::replay_stream)
/// into every event it stands for now.
pub(crate) fn decode_replayed<E: EventSet>(
    stream: &StreamId,
    event: &ReplayedEvent<'_>,
) -> Result<Decoded<E>, RecordDecodeError> {
    E::decode_all(event.event_name, event.schema_version, event.payload)
        .map_err(|source| RecordDecodeError::new(stream, event.version, event.event_name, source))
}

impl std::fmt::Display for RecordDecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot decode event `{}` at version {} of stream {}: {}",
            self.event_name, self.version, self.stream, self.source
        )
    }
}

impl std::error::Error for RecordDecodeError {
    // By hand: a derived `source` would hand out the `Box`, which does not downcast to
    // `DecodeError`.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
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

/// Serializes a batch of events for `stream`, each with `metadata`. An event whose payload
/// would not decode back into it (a NaN or infinite float, which JSON cannot hold; a
/// `Serialize` that writes what its `Deserialize` refuses) is refused here, before anything is
/// stored: stored, it would make its stream fail to load for good.
///
/// When `metadata` names a command ([`Metadata::command_id`]), each event's id is derived from
/// it, the stream and the event's place in the batch ([`command_event_id`]): encoding the same
/// command's events again gives the same ids, which is what makes a retried append recognisable
/// ([`EventStore::append`](crate::EventStore::append) is idempotent by event id). Otherwise
/// each event gets a fresh UUID v7.
pub fn encode_batch<E: EventSet>(
    stream: &StreamId,
    events: &[E],
    metadata: &Metadata,
) -> Result<Vec<NewEvent>, RecordEncodeError> {
    let command_ids = metadata.command_id.map(|command| CommandEventIds::new(command, stream));
    events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let refused = |source| RecordEncodeError {
                stream: stream.clone(),
                event_name: event.event_name(),
                source,
            };
            let payload = event.encode_payload().map_err(refused)?;
            // What cannot be read back must not be stored: a later load of the stream would
            // fail for good. serde_json writes a NaN or infinite float as `null`, for one.
            if let Err(error) = E::decode(event.event_name(), event.schema_version(), &payload) {
                return Err(refused(serde::ser::Error::custom(format_args!(
                    "it would not read back ({error}); a NaN or infinite float, for one, is written as null"
                ))));
            }
            let event_id = match &command_ids {
                Some(ids) => ids.get(index),
                None => Uuid::now_v7(),
            };
            Ok(NewEvent {
                event_id,
                event_name: event.event_name().to_owned(),
                schema_version: event.schema_version(),
                payload,
                metadata: metadata.clone(),
            })
        })
        .collect()
}

/// The id of the `index`-th event (from 0) that command `command` appends to `stream`.
///
/// A UUID v8: the first 48 bits are the command id's (for a UUID v7 command id, its
/// millisecond timestamp, so ids stay roughly time-ordered and index-friendly), the rest a
/// SHA-1 of the command id, stream and index. Stable across versions of this crate: stored ids
/// are compared with it when a command is sent again.
pub fn command_event_id(command: Uuid, stream: &StreamId, index: usize) -> Uuid {
    let name = format!("{}\0{}\0{index}", stream.aggregate_type, stream.aggregate_id);
    let mut bytes = *Uuid::new_v5(&command, name.as_bytes()).as_bytes();
    bytes[..6].copy_from_slice(&command.as_bytes()[..6]);
    Uuid::new_v8(bytes)
}

/// [`command_event_id`] for every event of one command's batch: the SHA-1 of the part they
/// share (the command id as the v5 namespace, then the stream) is taken once, and each id
/// hashes only its index on top. The same ids, bit for bit (the v5 version and variant bits are
/// overwritten by v8's).
struct CommandEventIds {
    command: Uuid,
    prefix: sha1_smol::Sha1,
}

impl CommandEventIds {
    fn new(command: Uuid, stream: &StreamId) -> Self {
        let mut prefix = sha1_smol::Sha1::new();
        prefix.update(command.as_bytes());
        prefix.update(stream.aggregate_type.as_bytes());
        prefix.update(b"\0");
        prefix.update(stream.aggregate_id.as_bytes());
        prefix.update(b"\0");
        Self { command, prefix }
    }

    fn get(&self, index: usize) -> Uuid {
        let mut hash = self.prefix.clone();
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        let mut rest = index;
        loop {
            start -= 1;
            digits[start] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        hash.update(&digits[start..]);
        let digest = hash.digest().bytes();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        bytes[..6].copy_from_slice(&self.command.as_bytes()[..6]);
        Uuid::new_v8(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_derives_the_same_ids_as_one_by_one() {
        let command = Uuid::now_v7();
        for stream in [
            StreamId::new("ticket", "T-1"),
            StreamId::new("", ""),
            StreamId::new("a\0b", "é"),
        ] {
            let ids = CommandEventIds::new(command, &stream);
            for index in [0, 1, 9, 10, 99, 100, 12_345, usize::MAX] {
                assert_eq!(
                    ids.get(index),
                    command_event_id(command, &stream, index),
                    "{stream} #{index}"
                );
            }
        }
    }

    #[test]
    fn command_event_ids_are_stable_and_distinct() {
        let command = Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001);
        let stream = StreamId::new("ticket", "T-1");
        let first = command_event_id(command, &stream, 0);
        // Pinned: changing the derivation would stop recognising commands sent before.
        assert_eq!(first.to_string(), "01930000-0000-8b96-aae2-6da74d5357b5");
        assert_eq!(first.get_version_num(), 8);
        assert_eq!(first.as_bytes()[..6], command.as_bytes()[..6]);
        assert_eq!(command_event_id(command, &stream, 0), first);
        assert_ne!(command_event_id(command, &stream, 1), first);
        assert_ne!(command_event_id(command, &StreamId::new("ticket", "T-2"), 0), first);
        assert_ne!(command_event_id(command, &StreamId::new("ticke", "tT-1"), 0), first);
    }
}
