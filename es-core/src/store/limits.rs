//! What a store accepts: the largest payload, metadata, event name, stream id and batch, checked
//! by every backend before anything is written.

use std::io;

use super::nul::{json_holds_nul, value_holds_nul};
use super::{Limit, LimitExceeded, NewEvent, StoreError, StreamId};
use crate::metadata::Metadata;

/// The largest appends a store accepts. Every backend checks a batch against its limits before
/// anything is written (before any lock or round trip), and refuses one over a limit with
/// [`StoreError::LimitExceeded`], naming the limit, the value and the event.
///
/// Sizes are bytes of UTF-8 or JSON text as stored: a payload's bytes, the metadata serialized
/// as JSON (`{}` when empty: 2 bytes), a name's bytes, a stream id's aggregate type and
/// aggregate id together. A batch's bytes are the sum, over its events, of payload, metadata and
/// event name.
///
/// The streams the framework keeps about another stream or a data subject, ([`STREAM_LIFECYCLE`],
/// `"<type>/<id>"`) and ([`FORGOTTEN_SUBJECTS`], subject), are measured as the stream or subject
/// they name: their aggregate id alone, less the one `/` byte of `"<type>/<id>"`. So every
/// stream a store accepts can also be tombstoned, archived, deleted and forgotten.
///
/// [`STREAM_LIFECYCLE`]: crate::lifecycle::STREAM_LIFECYCLE
/// [`FORGOTTEN_SUBJECTS`]: crate::pii::FORGOTTEN_SUBJECTS
///
/// | limit | default | why |
/// |---|---:|---|
/// | [`max_payload_bytes`](Limits::max_payload_bytes) | 1 MiB | facts, not documents: a file goes to a blob store |
/// | [`max_metadata_bytes`](Limits::max_metadata_bytes) | 64 KiB | ids, an actor and a few application entries |
/// | [`max_event_name_bytes`](Limits::max_event_name_bytes) | 256 | a stable name, not data |
/// | [`max_stream_id_bytes`](Limits::max_stream_id_bytes) | 1,024 | indexed (PostgreSQL: 2,704 bytes an entry) |
/// | [`max_batch_events`](Limits::max_batch_events) | 10,000 | one command's events, or one chunk of an import |
/// | [`max_batch_bytes`](Limits::max_batch_bytes) | 16 MiB | one append is one transaction, held in memory whole |
///
/// The defaults are the same on every backend, so code tested on the in-memory store is refused
/// nothing more in production. A store can be given other limits (`with_limits` on each store),
/// up to its backend's own ceiling ([`Limits::capped_by`]): PostgreSQL numbers at most
/// 2^20 - 1 events per transaction and takes a `jsonb` value up to 256 MiB; SQLite stores a row
/// up to 1,000,000,000 bytes. [`EventStore::limits`](crate::EventStore::limits) tells what a
/// store enforces.
///
/// Besides the limits, [`Limits::check_append`] refuses, as [`StoreError::InvalidBatch`], an
/// empty event name (no event type is stored under one), a NUL character in an event name,
/// aggregate type, aggregate id, payload (`\u0000`) or metadata (PostgreSQL cannot store one in
/// text or `jsonb`), and a schema version
/// above `i32::MAX` (PostgreSQL's `integer`). An empty aggregate type or id is a valid, if odd,
/// stream.
///
/// ```
/// use es_core::{Limits, Metadata, NewEvent, StoreError, StreamId};
///
/// let limits = Limits::default().with_max_batch_events(2);
/// assert_eq!(limits.max_payload_bytes, 1024 * 1024);
/// let stream = StreamId::new("ticket", "T-1");
/// let event = || NewEvent {
///     event_id: uuid::Uuid::now_v7(),
///     event_name: "TicketOpened".into(),
///     schema_version: 1,
///     payload: b"{}".to_vec(),
///     metadata: Metadata::new(),
/// };
/// match limits.check_append(&stream, &[event(), event(), event()]) {
///     Err(StoreError::LimitExceeded(exceeded)) => assert_eq!((exceeded.actual, exceeded.max), (3, 2)),
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Limits {
    /// The largest payload of one event, in bytes. Default 1 MiB (1,048,576).
    pub max_payload_bytes: usize,
    /// The largest metadata of one event, serialized as JSON, in bytes. Default 64 KiB (65,536).
    pub max_metadata_bytes: usize,
    /// The longest stored event name, in bytes. Default 256.
    pub max_event_name_bytes: usize,
    /// The longest stream id, aggregate type and aggregate id together, in bytes. Default 1,024.
    pub max_stream_id_bytes: usize,
    /// The most events in one append. Default 10,000.
    pub max_batch_events: usize,
    /// The most bytes in one append: payloads, metadata and event names. Default 16 MiB
    /// (16,777,216).
    pub max_batch_bytes: usize,
}

impl Limits {
    /// The limits every store enforces unless told otherwise (see the table above).
    pub const DEFAULT: Self = Self {
        max_payload_bytes: 1 << 20,
        max_metadata_bytes: 64 << 10,
        max_event_name_bytes: 256,
        max_stream_id_bytes: 1024,
        max_batch_events: 10_000,
        max_batch_bytes: 16 << 20,
    };

    /// No limit at all: the ceiling of a backend that imposes none.
    pub const UNLIMITED: Self = Self {
        max_payload_bytes: usize::MAX,
        max_metadata_bytes: usize::MAX,
        max_event_name_bytes: usize::MAX,
        max_stream_id_bytes: usize::MAX,
        max_batch_events: usize::MAX,
        max_batch_bytes: usize::MAX,
    };

    /// Sets [`Limits::max_payload_bytes`].
    pub const fn with_max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    /// Sets [`Limits::max_metadata_bytes`].
    pub const fn with_max_metadata_bytes(mut self, bytes: usize) -> Self {
        self.max_metadata_bytes = bytes;
        self
    }

    /// Sets [`Limits::max_event_name_bytes`].
    pub const fn with_max_event_name_bytes(mut self, bytes: usize) -> Self {
        self.max_event_name_bytes = bytes;
        self
    }

    /// Sets [`Limits::max_stream_id_bytes`].
    pub const fn with_max_stream_id_bytes(mut self, bytes: usize) -> Self {
        self.max_stream_id_bytes = bytes;
        self
    }

    /// Sets [`Limits::max_batch_events`].
    pub const fn with_max_batch_events(mut self, events: usize) -> Self {
        self.max_batch_events = events;
        self
    }

    /// Sets [`Limits::max_batch_bytes`].
    pub const fn with_max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes;
        self
    }

    /// Each limit no higher than `ceiling`'s: what a backend applies to the limits it is given,
    /// with its own hard limits as the ceiling.
    ///
    /// ```
    /// use es_core::Limits;
    ///
    /// let ceiling = Limits::UNLIMITED.with_max_batch_events(1000);
    /// let asked = Limits::default().with_max_batch_events(50_000).with_max_payload_bytes(10);
    /// let applied = asked.capped_by(ceiling);
    /// assert_eq!((applied.max_batch_events, applied.max_payload_bytes), (1000, 10));
    /// ```
    pub fn capped_by(self, ceiling: Self) -> Self {
        Self {
            max_payload_bytes: self.max_payload_bytes.min(ceiling.max_payload_bytes),
            max_metadata_bytes: self.max_metadata_bytes.min(ceiling.max_metadata_bytes),
            max_event_name_bytes: self.max_event_name_bytes.min(ceiling.max_event_name_bytes),
            max_stream_id_bytes: self.max_stream_id_bytes.min(ceiling.max_stream_id_bytes),
            max_batch_events: self.max_batch_events.min(ceiling.max_batch_events),
            max_batch_bytes: self.max_batch_bytes.min(ceiling.max_batch_bytes),
        }
    }

    /// The value of `limit`; `None` for [`Limit::TransactionEvents`], which is a backend's own.
    pub fn get(&self, limit: Limit) -> Option<usize> {
        match limit {
            Limit::PayloadBytes => Some(self.max_payload_bytes),
            Limit::MetadataBytes => Some(self.max_metadata_bytes),
            Limit::EventNameBytes => Some(self.max_event_name_bytes),
            Limit::StreamIdBytes => Some(self.max_stream_id_bytes),
            Limit::BatchEvents => Some(self.max_batch_events),
            Limit::BatchBytes => Some(self.max_batch_bytes),
            Limit::TransactionEvents => None,
        }
    }

    /// Checks an append of `events` to `stream` against these limits and the rules for names:
    /// what every store calls before writing anything (an empty batch included: its stream id is
    /// checked).
    ///
    /// Returns [`StoreError::LimitExceeded`] for the first limit exceeded (the stream id, the
    /// number of events, then each event in batch order, then the batch's bytes), and
    /// [`StoreError::InvalidBatch`] for an empty event name, a name, id, payload or metadata
    /// holding a NUL character, or a schema version above `i32::MAX`.
    /// The payloads are not parsed: whether they are JSON is the store's next check.
    pub fn check_append(&self, stream: &StreamId, events: &[NewEvent]) -> Result<(), StoreError> {
        no_nul(stream, "the aggregate type", &stream.aggregate_type)?;
        no_nul(stream, "the aggregate id", &stream.aggregate_id)?;
        self.within(stream, Limit::StreamIdBytes, None, stream_id_bytes(stream))?;
        self.within(stream, Limit::BatchEvents, None, events.len())?;
        let mut batch_bytes = 0usize;
        let mut previous: Option<(&Metadata, usize)> = None;
        for (index, event) in events.iter().enumerate() {
            valid_event(stream, index, event)?;
            self.within(stream, Limit::EventNameBytes, Some(index), event.event_name.len())?;
            self.within(stream, Limit::PayloadBytes, Some(index), event.payload.len())?;
            // The events of one command share their metadata: measure it once per run.
            let metadata_bytes = match previous {
                Some((same, bytes)) if *same == event.metadata => bytes,
                _ => metadata_bytes(stream, index, &event.metadata)?,
            };
            previous = Some((&event.metadata, metadata_bytes));
            self.within(stream, Limit::MetadataBytes, Some(index), metadata_bytes)?;
            batch_bytes = batch_bytes
                .saturating_add(event.payload.len())
                .saturating_add(metadata_bytes)
                .saturating_add(event.event_name.len());
        }
        self.within(stream, Limit::BatchBytes, None, batch_bytes)
    }

    /// `Ok` when `actual` is within `limit`.
    fn within(&self, stream: &StreamId, limit: Limit, event: Option<usize>, actual: usize) -> Result<(), StoreError> {
        match self.get(limit) {
            Some(max) if actual > max => Err(StoreError::LimitExceeded(LimitExceeded {
                stream: stream.clone(),
                limit,
                event,
                actual,
                max,
            })),
            _ => Ok(()),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The bytes of `stream`'s id that count against [`Limits::max_stream_id_bytes`]: see
/// [`Limits`] for the framework's record streams, measured as what they name.
fn stream_id_bytes(stream: &StreamId) -> usize {
    let names_another =
        [crate::lifecycle::STREAM_LIFECYCLE, crate::pii::FORGOTTEN_SUBJECTS].contains(&stream.aggregate_type.as_str());
    if names_another {
        stream.aggregate_id.len().saturating_sub(1)
    } else {
        stream.aggregate_type.len().saturating_add(stream.aggregate_id.len())
    }
}

/// The largest schema version a store keeps: PostgreSQL's `integer` column.
const MAX_SCHEMA_VERSION: u32 = i32::MAX as u32;

/// Refuses an event with an empty name, a NUL character in its name, or a schema version above
/// [`MAX_SCHEMA_VERSION`].
fn valid_event(stream: &StreamId, index: usize, event: &NewEvent) -> Result<(), StoreError> {
    let invalid = |reason: String| StoreError::InvalidBatch {
        stream: stream.clone(),
        reason,
    };
    let number = index + 1;
    if event.event_name.is_empty() {
        return Err(invalid(format!("the event name of event #{number} is empty")));
    }
    if event.event_name.contains('\0') {
        no_nul(stream, &format!("the event name of event #{number}"), &event.event_name)?;
    }
    if json_holds_nul(&event.payload) {
        return Err(invalid(format!(
            "the payload of event #{number} holds a NUL character (`\\u0000`), which PostgreSQL cannot store \
             in jsonb"
        )));
    }
    match event.schema_version {
        version if version > MAX_SCHEMA_VERSION => Err(invalid(format!(
            "the schema version of event #{number} is {version}, above {MAX_SCHEMA_VERSION}, the largest a store \
             keeps"
        ))),
        _ => Ok(()),
    }
}

/// Refuses a name or id with a NUL character.
fn no_nul(stream: &StreamId, what: &str, text: &str) -> Result<(), StoreError> {
    match text.contains('\0') {
        true => Err(StoreError::InvalidBatch {
            stream: stream.clone(),
            reason: format!("{what} contains a NUL character, which PostgreSQL cannot store in text"),
        }),
        false => Ok(()),
    }
}

/// The bytes of `metadata` serialized as JSON, counted without building the text. Metadata
/// holding a NUL character (in the actor or an extra value) is refused: PostgreSQL cannot
/// store it.
fn metadata_bytes(stream: &StreamId, index: usize, metadata: &Metadata) -> Result<usize, StoreError> {
    let holds_nul = metadata.actor.as_deref().is_some_and(|actor| actor.contains('\0'))
        || metadata
            .extra
            .iter()
            .any(|(key, value)| key.contains('\0') || value_holds_nul(value));
    if holds_nul {
        return Err(StoreError::InvalidBatch {
            stream: stream.clone(),
            reason: format!(
                "the metadata of event #{} holds a NUL character, which PostgreSQL cannot store",
                index + 1
            ),
        });
    }
    let mut counter = ByteCounter(0);
    serde_json::to_writer(&mut counter, metadata).map_err(|error| StoreError::InvalidBatch {
        stream: stream.clone(),
        reason: format!("the metadata of event #{} does not serialize: {error}", index + 1),
    })?;
    Ok(counter.0)
}

/// A writer that only counts.
struct ByteCounter(usize);

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, payload: &str) -> NewEvent {
        NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_name: name.into(),
            schema_version: 1,
            payload: payload.as_bytes().to_vec(),
            metadata: Metadata::new(),
        }
    }

    fn exceeded(result: Result<(), StoreError>) -> LimitExceeded {
        match result {
            Err(StoreError::LimitExceeded(exceeded)) => exceeded,
            other => panic!("expected LimitExceeded, got {other:?}"),
        }
    }

    #[test]
    fn a_batch_at_each_limit_passes_and_one_over_is_refused() {
        let stream = StreamId::new("t", "1");
        // Event name 1 byte, payload 4 bytes, metadata `{}` 2 bytes: 7 bytes each.
        let limits = Limits::UNLIMITED
            .with_max_payload_bytes(4)
            .with_max_event_name_bytes(1)
            .with_max_metadata_bytes(2)
            .with_max_batch_events(3)
            .with_max_batch_bytes(21)
            .with_max_stream_id_bytes(2);
        let batch = vec![event("E", "1234"), event("E", "1234"), event("E", "1234")];
        assert!(limits.check_append(&stream, &batch).is_ok());

        let over = exceeded(limits.with_max_batch_bytes(20).check_append(&stream, &batch));
        assert_eq!(
            (over.limit, over.event, over.actual, over.max),
            (Limit::BatchBytes, None, 21, 20)
        );
        let over = exceeded(limits.check_append(&stream, &[batch.clone(), vec![event("E", "1")]].concat()));
        assert_eq!((over.limit, over.actual, over.max), (Limit::BatchEvents, 4, 3));
        let over = exceeded(limits.check_append(&stream, &[event("E", "1"), event("E", "12345")]));
        assert_eq!((over.limit, over.event, over.actual), (Limit::PayloadBytes, Some(1), 5));
        let over = exceeded(limits.check_append(&stream, &[event("EE", "1")]));
        assert_eq!(
            (over.limit, over.event, over.actual),
            (Limit::EventNameBytes, Some(0), 2)
        );
        let mut odd = event("E", "1");
        odd.metadata = Metadata::new().with_actor("a");
        let over = exceeded(limits.check_append(&stream, &[odd]));
        assert_eq!(
            (over.limit, over.actual),
            (Limit::MetadataBytes, r#"{"actor":"a"}"#.len())
        );
        let over = exceeded(limits.check_append(&StreamId::new("t", "12"), &[]));
        assert_eq!(
            (over.limit, over.event, over.actual, over.max),
            (Limit::StreamIdBytes, None, 3, 2)
        );
        assert_eq!(
            over.to_string(),
            "the stream id t/12 is 3 bytes of type and id, over the limit of 2 (max_stream_id_bytes); nothing of the batch was written"
        );
    }

    #[test]
    fn messages_name_the_event_the_limit_and_the_value() {
        let stream = StreamId::new("ticket", "T-1");
        let big = "x".repeat(Limits::DEFAULT.max_payload_bytes + 1);
        let error = Limits::default().check_append(&stream, &[event("Opened", "1"), event("Opened", &big)]);
        let error = error.err().map(|error| error.to_string()).unwrap_or_default();
        assert_eq!(
            error,
            "the payload of event #2 for ticket/T-1 is 1048577 bytes, over the limit of 1048576 \
             (max_payload_bytes); nothing of the batch was written"
        );
    }

    #[test]
    fn empty_event_names_and_nul_characters_are_invalid() {
        let good = StreamId::new("t", "1");
        for (stream, name) in [
            (StreamId::new("t\0", "1"), "E"),
            (StreamId::new("t", "1\0"), "E"),
            (good.clone(), ""),
            (good.clone(), "E\0"),
        ] {
            let result = Limits::default().check_append(&stream, &[event(name, "1")]);
            assert!(
                matches!(result, Err(StoreError::InvalidBatch { .. })),
                "{stream:?} {name:?}: {result:?}"
            );
        }
        assert!(Limits::default().check_append(&good, &[event("É🦀", "1")]).is_ok());
        let mut too_new = event("E", "1");
        too_new.schema_version = u32::MAX;
        let result = Limits::default().check_append(&good, &[too_new]);
        assert!(matches!(result, Err(StoreError::InvalidBatch { .. })), "{result:?}");
        let odd = StreamId::new("", "");
        assert!(
            Limits::default().check_append(&odd, &[event("E", "1")]).is_ok(),
            "an odd but valid stream"
        );
    }

    #[test]
    fn nul_characters_in_payloads_and_metadata_are_invalid() {
        let stream = StreamId::new("t", "1");
        let refused = |event: NewEvent| {
            let result = Limits::default().check_append(&stream, &[event]);
            matches!(result, Err(StoreError::InvalidBatch { .. }))
        };
        for payload in [
            r#""\u0000""#,
            r#"{"a":"x\u0000y"}"#,
            r#"["\\\u0000"]"#,
            r#"{"\u0000":1}"#,
        ] {
            assert!(refused(event("E", payload)), "{payload}");
        }
        // An escaped backslash followed by the text `u0000`, and other escapes, hold no NUL.
        for payload in [r#""\\u0000""#, r#""\u0001\n\"\\""#, r#""u0000""#, r#""\\""#] {
            assert!(!refused(event("E", payload)), "{payload}");
        }
        let with = |metadata: Metadata| NewEvent {
            metadata,
            ..event("E", "1")
        };
        assert!(refused(with(Metadata::new().with_actor("al\0ice"))));
        assert!(refused(with(Metadata::new().with_extra("note", "a\0b"))));
        assert!(refused(with(Metadata::new().with_extra("a\0", "b"))));
        assert!(refused(with(
            Metadata::new().with_extra("nested", serde_json::json!({"k": ["\0"]}))
        )));
        assert!(!refused(with(
            Metadata::new().with_actor("alice").with_extra("note", "\\u0000")
        )));
    }

    #[test]
    fn metadata_is_measured_as_stored() {
        let metadata = Metadata::new().with_actor("alice").with_extra("ip", "203.0.113.7");
        let stored = serde_json::to_vec(&metadata).map(|text| text.len()).unwrap_or_default();
        assert_eq!(
            metadata_bytes(&StreamId::new("t", "1"), 0, &metadata).ok(),
            Some(stored)
        );
        assert_eq!(
            metadata_bytes(&StreamId::new("t", "1"), 0, &Metadata::new()).ok(),
            Some(2)
        );
    }

    #[test]
    fn capping_takes_the_lower_of_each_limit() {
        let ceiling = Limits::UNLIMITED.with_max_batch_events(5).with_max_payload_bytes(100);
        let capped = Limits::DEFAULT.with_max_payload_bytes(50).capped_by(ceiling);
        assert_eq!(capped.max_batch_events, 5);
        assert_eq!(capped.max_payload_bytes, 50);
        assert_eq!(capped.max_batch_bytes, Limits::DEFAULT.max_batch_bytes);
        assert_eq!(Limits::DEFAULT.capped_by(Limits::UNLIMITED), Limits::DEFAULT);
    }
}
