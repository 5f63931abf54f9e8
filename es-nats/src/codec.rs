//! How streams, batches and positions are written in JetStream: subject tokens, the binary
//! encoding of one append's batch, the position of an event, the partition of a stream.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use es_core::{Metadata, NewEvent, StreamId};
use uuid::Uuid;

use crate::error::NatsError;

/// How many low bits of a position hold the event's index inside its batch; the bits above
/// hold the JetStream sequence of the batch's message. See [`position`].
pub(crate) const INDEX_BITS: u32 = 16;

/// The most events one batch (one message) may hold, so that an index fits [`INDEX_BITS`].
pub(crate) const MAX_BATCH_EVENTS: usize = 1 << INDEX_BITS;

/// What the batch encoding adds per event, in bytes, to its name, payload and metadata: the id
/// (16) and four 32-bit numbers (schema version and three lengths).
pub(crate) const EVENT_OVERHEAD: usize = 16 + 4 * 4;

/// The first bytes of every encoded batch: a tag and the encoding's version.
const MAGIC: [u8; 2] = [b'E', 1];

/// The position of the event at `index` inside the batch stored as message `sequence`: the
/// sequence in the high bits, the index in the low [`INDEX_BITS`]. Strictly increasing in a
/// partition (sequences grow, and indices grow inside a message), from `1 << INDEX_BITS`, for
/// the first 2^48 messages of a partition.
pub(crate) fn position(sequence: u64, index: usize) -> u64 {
    (sequence << INDEX_BITS) | index as u64
}

/// The message sequence and the index inside its batch of `position` (inverse of [`position`]).
pub(crate) fn split_position(position: u64) -> (u64, usize) {
    (position >> INDEX_BITS, (position & ((1 << INDEX_BITS) - 1)) as usize)
}

/// The partition of `stream` among `partitions`: FNV-1a (64 bits) of the aggregate id, modulo
/// the count. Stable across processes, platforms and releases: never change it, since the
/// partition of a stream is where its events are.
pub(crate) fn partition_of(stream: &StreamId, partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in stream.aggregate_id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u32
}

/// One subject token for any text: `x` then the text in unpadded URL-safe base64, so that dots,
/// wildcards, spaces and the empty string all make a valid, non-empty token.
pub(crate) fn token(text: &str) -> String {
    let mut token = String::with_capacity(1 + text.len().div_ceil(3) * 4);
    token.push('x');
    URL_SAFE_NO_PAD.encode_string(text.as_bytes(), &mut token);
    token
}

/// The text of a token made by [`token`]; `None` if it is not one.
pub(crate) fn untoken(token: &str) -> Option<String> {
    let encoded = token.strip_prefix('x')?;
    let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
    String::from_utf8(bytes).ok()
}

/// The two tokens naming `stream` in a subject: aggregate type, then aggregate id.
pub(crate) fn stream_tokens(stream: &StreamId) -> String {
    format!("{}.{}", token(&stream.aggregate_type), token(&stream.aggregate_id))
}

/// The stream named by the last two tokens of `subject`; `None` if they are not tokens.
pub(crate) fn stream_of_subject(subject: &str) -> Option<StreamId> {
    let mut tokens = subject.rsplit('.');
    let id = untoken(tokens.next()?)?;
    let kind = untoken(tokens.next()?)?;
    Some(StreamId::new(kind, id))
}

/// One event as decoded from a batch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredEvent {
    /// The event's id.
    pub event_id: Uuid,
    /// The stored event name.
    pub event_name: String,
    /// The payload's schema version.
    pub schema_version: u32,
    /// The payload (JSON).
    pub payload: Vec<u8>,
    /// The metadata.
    pub metadata: Metadata,
}

/// Encodes a checked batch (see [`crate::append`]) with the metadata of each event already
/// serialized: `MAGIC`, the event count (u32), then per event its id (16 bytes), schema
/// version (u32), and name, payload and metadata each as a u32 length and the bytes. All
/// numbers big-endian.
pub(crate) fn encode_batch(events: &[NewEvent], metadata: &[Vec<u8>]) -> Vec<u8> {
    let size = events
        .iter()
        .zip(metadata)
        .map(|(event, metadata)| EVENT_OVERHEAD + event.event_name.len() + event.payload.len() + metadata.len())
        .sum::<usize>();
    let mut bytes = Vec::with_capacity(MAGIC.len() + 4 + size);
    bytes.extend_from_slice(&MAGIC);
    push_len(&mut bytes, events.len());
    for (event, metadata) in events.iter().zip(metadata) {
        bytes.extend_from_slice(event.event_id.as_bytes());
        bytes.extend_from_slice(&event.schema_version.to_be_bytes());
        push_len(&mut bytes, event.event_name.len());
        bytes.extend_from_slice(event.event_name.as_bytes());
        push_len(&mut bytes, event.payload.len());
        bytes.extend_from_slice(&event.payload);
        push_len(&mut bytes, metadata.len());
        bytes.extend_from_slice(metadata);
    }
    bytes
}

/// Appends `len` as a big-endian u32. Lengths are bounded by the store's limits, far below
/// `u32::MAX`; a larger one is clamped, and the decoder then refuses the batch as corrupt.
fn push_len(bytes: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    bytes.extend_from_slice(&len.to_be_bytes());
}

/// Decodes a batch made by [`encode_batch`].
pub(crate) fn decode_batch(bytes: &[u8]) -> Result<Vec<StoredEvent>, NatsError> {
    let mut reader = Reader { bytes, at: 0 };
    if reader.take(MAGIC.len())? != MAGIC {
        return Err(NatsError::Corrupt("a message that is not an event batch".into()));
    }
    let count = reader.u32()? as usize;
    // Each event takes at least its fixed overhead: a corrupt count cannot make a huge vector.
    let mut events = Vec::with_capacity(count.min(bytes.len() / EVENT_OVERHEAD));
    for _ in 0..count {
        let id = reader.take(16)?;
        let event_id = Uuid::from_slice(id).map_err(|error| NatsError::Corrupt(error.to_string()))?;
        let schema_version = reader.u32()?;
        let name = reader.sized()?;
        let event_name = std::str::from_utf8(name)
            .map_err(|error| NatsError::Corrupt(format!("an event name that is not UTF-8: {error}")))?
            .to_owned();
        let payload = reader.sized()?.to_vec();
        let metadata = serde_json::from_slice(reader.sized()?)
            .map_err(|error| NatsError::Corrupt(format!("metadata that does not decode: {error}")))?;
        events.push(StoredEvent {
            event_id,
            event_name,
            schema_version,
            payload,
            metadata,
        });
    }
    if reader.at != bytes.len() {
        return Err(NatsError::Corrupt("bytes after the last event of a batch".into()));
    }
    Ok(events)
}

/// Reads a batch front to back, refusing to read past its end.
struct Reader<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl<'b> Reader<'b> {
    fn take(&mut self, len: usize) -> Result<&'b [u8], NatsError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| NatsError::Corrupt("a batch cut short".into()))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn u32(&mut self) -> Result<u32, NatsError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn sized(&mut self) -> Result<&'b [u8], NatsError> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_any_text() {
        for text in ["", "a.b", "*", ">", "with space", "ünï"] {
            let encoded = token(text);
            assert!(encoded
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
            assert_eq!(untoken(&encoded).as_deref(), Some(text));
        }
        let stream = StreamId::new("a.b", "");
        assert_eq!(
            stream_of_subject(&format!("es.e.0.{}", stream_tokens(&stream))),
            Some(stream)
        );
    }

    #[test]
    fn positions_grow_within_and_across_messages() {
        assert!(position(1, 0) >= 1);
        assert!(position(1, MAX_BATCH_EVENTS - 1) < position(2, 0));
        assert_eq!(split_position(position(7, 3)), (7, 3));
    }

    #[test]
    fn batches_round_trip_and_garbage_is_refused() {
        let event = es_core::conformance::event("Opened", serde_json::json!({"a": 1}));
        let metadata = serde_json::to_vec(&event.metadata).unwrap_or_default();
        let bytes = encode_batch(std::slice::from_ref(&event), &[metadata]);
        let decoded = decode_batch(&bytes).unwrap_or_default();
        assert_eq!(decoded.len(), 1);
        assert_eq!(decoded[0].event_id, event.event_id);
        assert_eq!(decoded[0].payload, event.payload);
        for cut in 0..bytes.len() {
            assert!(decode_batch(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn partitions_are_stable() {
        let stream = StreamId::new("ticket", "T-1");
        assert_eq!(partition_of(&stream, 1), 0);
        // FNV-1a-64("T-1") = 7795635408622770401: pinned, since a stream's partition is where
        // its events are stored.
        assert_eq!(partition_of(&stream, 4), 1);
        assert_eq!(partition_of(&stream, 7), 0);
        assert_eq!(
            partition_of(&stream, 4),
            partition_of(&StreamId::new("other", "T-1"), 4)
        );
    }
}
