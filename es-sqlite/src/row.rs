//! The one definition of an event row: the columns every read selects, where each sits, how a
//! row becomes a [`RecordedEvent`] (or, for recognising a retried append, a [`StoredEventPlace`]),
//! and the chunks in which a replay lends rows' bytes.

use chrono::{DateTime, Utc};
use es_core::{Metadata, RecordedEvent, ReplayedEvent, StoreError, StoreResult, StoredEventPlace, StreamId};
use rusqlite::types::ValueRef;
use rusqlite::Row;
use uuid::Uuid;

use crate::error::SqliteError;

/// The head of [`event_columns!`]: what a replay needs, and no more.
macro_rules! replay_columns {
    () => {
        "version, event_name, schema_version, payload"
    };
}

/// The columns every read of whole events selects, in the order of [`column`].
macro_rules! event_columns {
    () => {
        concat!(
            crate::row::replay_columns!(),
            ", position, event_id, aggregate_type, aggregate_id, metadata, recorded_at"
        )
    };
}

/// The columns a filtered read selects: [`event_columns!`] in the same places, but the payload
/// and the metadata only for the rows the filter wants (NULL for the others, and never read
/// from the file), then `wanted` at [`column::WANTED`]. A wanted row is decoded by
/// [`recorded_event`]; of the others only the position is read.
macro_rules! filtered_row {
    () => {
        concat!(
            "version, event_name, schema_version, CASE WHEN ",
            $crate::row::filter_wants!(),
            " THEN payload END AS payload, position, event_id, aggregate_type, aggregate_id, CASE WHEN ",
            $crate::row::filter_wants!(),
            " THEN metadata END AS metadata, recorded_at, ",
            $crate::row::filter_wants!(),
            " AS wanted"
        )
    };
}

/// Whether a filter wants a row: `?3` the aggregate types wanted, `?5` the event names wanted
/// (JSON arrays; all when empty), `?4` the event names left out.
macro_rules! filter_wants {
    () => {
        "((json_array_length(?3) = 0 OR aggregate_type IN (SELECT value FROM json_each(?3))) \
         AND (json_array_length(?5) = 0 OR event_name IN (SELECT value FROM json_each(?5))) \
         AND event_name NOT IN (SELECT value FROM json_each(?4)))"
    };
}

/// The columns that say where an event is stored, in the order of [`stored_column`]: what
/// recognising a retried append compares, and no more (no payload is read).
macro_rules! stored_columns {
    () => {
        "version, position, aggregate_type, aggregate_id"
    };
}

pub(crate) use {event_columns, filter_wants, filtered_row, replay_columns, stored_columns};

/// Where each column of [`event_columns!`] sits in a row (the replay's columns are its head).
pub(crate) mod column {
    pub(crate) const VERSION: usize = 0;
    pub(crate) const EVENT_NAME: usize = 1;
    pub(crate) const SCHEMA_VERSION: usize = 2;
    pub(crate) const PAYLOAD: usize = 3;
    pub(crate) const POSITION: usize = 4;
    pub(crate) const EVENT_ID: usize = 5;
    pub(crate) const AGGREGATE_TYPE: usize = 6;
    pub(crate) const AGGREGATE_ID: usize = 7;
    pub(crate) const METADATA: usize = 8;
    pub(crate) const RECORDED_AT: usize = 9;
    /// Only in a filtered read: whether the filter wants the row.
    pub(crate) const WANTED: usize = 10;
}

/// Where each column of [`stored_columns!`] sits in a row.
pub(crate) mod stored_column {
    pub(crate) const VERSION: usize = 0;
    pub(crate) const POSITION: usize = 1;
    pub(crate) const AGGREGATE_TYPE: usize = 2;
    pub(crate) const AGGREGATE_ID: usize = 3;
}

/// How an instant is stored: microseconds since the Unix epoch, UTC (PostgreSQL's precision).
pub(crate) fn micros(instant: DateTime<Utc>) -> i64 {
    instant.timestamp_micros()
}

/// The instant stored as `micros`, if it is one chrono can represent.
pub(crate) fn instant(micros: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
}

/// The value of column `index`, or why it cannot be read.
fn value<'r>(row: &'r Row<'_>, index: usize) -> Result<ValueRef<'r>, String> {
    row.get_ref(index).map_err(|error| error.to_string())
}

fn integer(row: &Row<'_>, index: usize) -> Result<i64, String> {
    match value(row, index)? {
        ValueRef::Integer(integer) => Ok(integer),
        other => Err(format!("expected an integer, found {:?}", other.data_type())),
    }
}

/// The bytes of a TEXT or BLOB column, borrowed from the row.
fn bytes<'r>(row: &'r Row<'_>, index: usize) -> Result<&'r [u8], String> {
    match value(row, index)? {
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => Ok(bytes),
        other => Err(format!("expected text, found {:?}", other.data_type())),
    }
}

fn text<'r>(row: &'r Row<'_>, index: usize) -> Result<&'r str, String> {
    std::str::from_utf8(bytes(row, index)?).map_err(|error| format!("not UTF-8: {error}"))
}

/// The row's version within `stream`, from column `index`.
fn version(row: &Row<'_>, index: usize, stream: &StreamId) -> StoreResult<u64> {
    let corrupt = |reason: String| StoreError::Corrupt {
        stream: stream.clone(),
        version: 0,
        reason,
    };
    let version = integer(row, index).map_err(|e| corrupt(format!("version: {e}")))?;
    u64::try_from(version).map_err(|_| corrupt(format!("stored version {version} is negative")))
}

/// Where the columns that place an event (its stream, version and position) sit in a row.
struct PlaceColumns {
    aggregate_type: usize,
    aggregate_id: usize,
    version: usize,
    position: usize,
}

/// Where they sit among the [`event_columns!`].
const EVENT_PLACE: PlaceColumns = PlaceColumns {
    aggregate_type: column::AGGREGATE_TYPE,
    aggregate_id: column::AGGREGATE_ID,
    version: column::VERSION,
    position: column::POSITION,
};

/// Where they sit among the [`stored_columns!`].
const STORED_PLACE: PlaceColumns = PlaceColumns {
    aggregate_type: stored_column::AGGREGATE_TYPE,
    aggregate_id: stored_column::AGGREGATE_ID,
    version: stored_column::VERSION,
    position: stored_column::POSITION,
};

/// The stream, version and position of a row's event, read from `columns`. `which_row` names
/// the row in the error about an unreadable stream column, when there is no stream to name yet.
fn place(row: &Row<'_>, columns: PlaceColumns, which_row: impl Fn() -> String) -> StoreResult<(StreamId, u64, u64)> {
    let unreadable = |what: &str, reason: String| {
        StoreError::from(SqliteError::Unexpected(format!(
            "{} has an unreadable {what}: {reason}",
            which_row()
        )))
    };
    let stream = StreamId {
        aggregate_type: text(row, columns.aggregate_type)
            .map_err(|e| unreadable("aggregate type", e))?
            .to_owned(),
        aggregate_id: text(row, columns.aggregate_id)
            .map_err(|e| unreadable("aggregate id", e))?
            .to_owned(),
    };
    let version = version(row, columns.version, &stream)?;
    let corrupt = |reason: String| StoreError::Corrupt {
        stream: stream.clone(),
        version,
        reason,
    };
    let position = integer(row, columns.position).map_err(|e| corrupt(format!("position: {e}")))?;
    let position = u64::try_from(position).map_err(|_| corrupt(format!("negative position {position}")))?;
    Ok((stream, version, position))
}

/// Decodes the [`event_columns!`] of an event row.
pub(crate) fn recorded_event(row: &Row<'_>) -> StoreResult<RecordedEvent> {
    let (stream, version, position) = place(row, EVENT_PLACE, || "an event row".to_owned())?;
    let corrupt = |reason: String| StoreError::Corrupt {
        stream: stream.clone(),
        version,
        reason,
    };
    let event_name = text(row, column::EVENT_NAME).map_err(|e| corrupt(format!("event name: {e}")))?;
    let schema_version = schema_version(row).map_err(corrupt)?;
    let payload = bytes(row, column::PAYLOAD).map_err(|e| corrupt(format!("payload: {e}")))?;
    let event_id = bytes(row, column::EVENT_ID).map_err(|e| corrupt(format!("event id: {e}")))?;
    let event_id = Uuid::from_slice(event_id).map_err(|e| corrupt(format!("event id: {e}")))?;
    let metadata = text(row, column::METADATA).map_err(|e| corrupt(format!("metadata: {e}")))?;
    let metadata = match command_ids(metadata) {
        Some(metadata) => metadata,
        None => serde_json::from_str(metadata).map_err(|e| corrupt(format!("metadata does not decode: {e}")))?,
    };
    let recorded_at = integer(row, column::RECORDED_AT).map_err(|e| corrupt(format!("recorded_at: {e}")))?;
    let recorded_at =
        instant(recorded_at).ok_or_else(|| corrupt(format!("recorded_at {recorded_at} is out of range")))?;
    Ok(RecordedEvent {
        event_id,
        version,
        position,
        event_name: event_name.to_owned(),
        schema_version,
        payload: payload.to_vec(),
        metadata,
        recorded_at,
        stream,
    })
}

/// The metadata of most events, read without the JSON parser: none (`{}`), or the ids a
/// command gives its events (correlation, causation and command id, as `serde_json` writes
/// them, in that order), nothing else. `None` for any other text, which the parser reads:
/// serde_json's generic path took a third of a global read's time on these.
fn command_ids(text: &str) -> Option<Metadata> {
    if text == "{}" {
        return Some(Metadata::new());
    }
    fn uuid(text: &str) -> Option<(Uuid, &str)> {
        let (id, rest) = text.split_at_checked(36)?;
        Some((Uuid::try_parse(id).ok()?, rest))
    }
    let rest = text.strip_prefix(r#"{"correlation_id":""#)?;
    let (correlation, rest) = uuid(rest)?;
    let rest = rest.strip_prefix(r#"","causation_id":""#)?;
    let (causation, rest) = uuid(rest)?;
    let rest = rest.strip_prefix(r#"","command_id":""#)?;
    let (command, rest) = uuid(rest)?;
    (rest == r#""}"#).then(|| {
        Metadata::new()
            .with_correlation_id(correlation)
            .with_causation_id(causation)
            .with_command_id(command)
    })
}

/// The position of a row of a filtered read that the filter leaves out: nothing else of it is
/// read.
pub(crate) fn left_out_position(row: &Row<'_>) -> StoreResult<u64> {
    let unreadable = |reason: String| StoreError::from(SqliteError::Unexpected(format!("an event row has {reason}")));
    let position = integer(row, column::POSITION).map_err(|e| unreadable(format!("an unreadable position: {e}")))?;
    u64::try_from(position).map_err(|_| unreadable(format!("the negative position {position}")))
}

/// Whether the filter of a filtered read wants the row.
pub(crate) fn wanted(row: &Row<'_>) -> StoreResult<bool> {
    integer(row, column::WANTED)
        .map(|wanted| wanted != 0)
        .map_err(|e| StoreError::from(SqliteError::Unexpected(format!("a filtered row's `wanted`: {e}"))))
}

/// Decodes the [`stored_columns!`] of the row of event `event_id` (the id the row was looked
/// up by, so it is not read again).
pub(crate) fn stored_event(row: &Row<'_>, event_id: Uuid) -> StoreResult<StoredEventPlace> {
    let (stream, version, position) = place(row, STORED_PLACE, || format!("the row of event {event_id}"))?;
    Ok(StoredEventPlace {
        event_id,
        stream,
        version,
        position,
    })
}

fn schema_version(row: &Row<'_>) -> Result<u32, String> {
    let schema_version = integer(row, column::SCHEMA_VERSION).map_err(|e| format!("schema version: {e}"))?;
    u32::try_from(schema_version).map_err(|_| format!("schema version {schema_version} is out of range"))
}

/// Rows of a replay, copied into one buffer as SQLite hands them out and lent from it: no
/// envelope and no allocation per event. Filled on a blocking thread, lent on the caller's.
#[derive(Debug)]
pub(crate) struct ReplayChunk {
    /// Each event's name, then its payload, back to back.
    bytes: Vec<u8>,
    events: Vec<Lent>,
    /// How many events the chunk takes before it is sent on.
    capacity: usize,
}

/// Where one event's fields sit in [`ReplayChunk::bytes`]: its name starts where the previous
/// event's payload ends.
#[derive(Debug)]
struct Lent {
    version: u64,
    schema_version: u32,
    name_end: usize,
    payload_end: usize,
}

impl ReplayChunk {
    /// The first chunk of a replay holds this many events, so the caller starts folding at
    /// once; each next one twice as many, up to [`ReplayChunk::MAX_EVENTS`]...
    const FIRST_EVENTS: usize = 64;
    const MAX_EVENTS: usize = 4096;
    /// ...or this many bytes: fewer, larger chunks cost fewer hand-overs between threads.
    const MAX_BYTES: usize = 1024 * 1024;

    /// The first chunk of a replay.
    pub(crate) fn first() -> Self {
        Self::with_capacity(Self::FIRST_EVENTS)
    }

    fn with_capacity(events: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(events * 128),
            events: Vec::with_capacity(events),
            capacity: events,
        }
    }

    /// An empty chunk to fill after this one, twice as large.
    pub(crate) fn next(&self) -> Self {
        Self::with_capacity((self.capacity * 2).min(Self::MAX_EVENTS))
    }

    /// Copies the [`replay_columns!`] of a row of `stream` into the chunk.
    pub(crate) fn push(&mut self, row: &Row<'_>, stream: &StreamId) -> StoreResult<()> {
        let version = version(row, column::VERSION, stream)?;
        let corrupt = |reason: String| StoreError::Corrupt {
            stream: stream.clone(),
            version,
            reason,
        };
        let schema_version = schema_version(row).map_err(corrupt)?;
        let name = bytes(row, column::EVENT_NAME).map_err(|e| corrupt(format!("event name: {e}")))?;
        let payload = bytes(row, column::PAYLOAD).map_err(|e| corrupt(format!("payload: {e}")))?;
        self.bytes.extend_from_slice(name);
        let name_end = self.bytes.len();
        self.bytes.extend_from_slice(payload);
        self.events.push(Lent {
            version,
            schema_version,
            name_end,
            payload_end: self.bytes.len(),
        });
        Ok(())
    }

    /// Whether the chunk should be sent on.
    pub(crate) fn is_full(&self) -> bool {
        self.events.len() >= self.capacity || self.bytes.len() >= Self::MAX_BYTES
    }

    /// Whether the chunk holds no event.
    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The chunk's events of `stream`, lent from its buffer.
    pub(crate) fn replayed<'c>(
        &'c self,
        stream: &'c StreamId,
    ) -> impl Iterator<Item = StoreResult<ReplayedEvent<'c>>> + 'c {
        let mut start = 0;
        self.events.iter().map(move |lent| {
            let name = &self.bytes[start..lent.name_end];
            let payload = &self.bytes[lent.name_end..lent.payload_end];
            start = lent.payload_end;
            let event_name = std::str::from_utf8(name).map_err(|error| StoreError::Corrupt {
                stream: stream.clone(),
                version: lent.version,
                reason: format!("event name is not UTF-8: {error}"),
            })?;
            Ok(ReplayedEvent {
                version: lent.version,
                event_name,
                schema_version: lent.schema_version,
                payload,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-read shapes read as the parser reads them, and every other shape is left to it.
    #[test]
    fn command_ids_read_what_the_parser_reads_or_nothing() {
        let ids = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
        let full = Metadata::new()
            .with_correlation_id(ids[0])
            .with_causation_id(ids[1])
            .with_command_id(ids[2]);
        for metadata in [Metadata::new(), full.clone()] {
            let text = serde_json::to_string(&metadata).expect("JSON");
            assert_eq!(command_ids(&text), Some(metadata), "{text}");
        }
        let mut others = vec![
            full.clone().with_actor("ann"),
            Metadata::new().with_command_id(ids[2]),
            Metadata::new().with_correlation_id(ids[0]).with_command_id(ids[2]),
        ];
        let mut extra = full.clone();
        extra.extra.insert("tenant".into(), "acme".into());
        others.push(extra);
        for metadata in others {
            let text = serde_json::to_string(&metadata).expect("JSON");
            assert_eq!(command_ids(&text), None, "left to the parser: {text}");
        }
        let upper = serde_json::to_string(&full).expect("JSON").to_uppercase();
        assert_eq!(command_ids(&upper), None, "another spelling of the keys");
        let escaped = serde_json::to_string(&full).expect("JSON").replacen('0', "\\u0030", 1);
        assert_eq!(command_ids(&escaped), None, "an escape");
        let text = serde_json::to_string(&full).expect("JSON");
        for cut in 0..text.len() {
            assert_eq!(command_ids(&text[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn the_column_positions_match_the_column_list() -> rusqlite::Result<()> {
        let connection = crate::sql::tests::migrated()?;
        let statement = connection.prepare(crate::sql::READ_ALL)?;
        let names = statement.column_names();
        let expected = [
            (column::VERSION, "version"),
            (column::EVENT_NAME, "event_name"),
            (column::SCHEMA_VERSION, "schema_version"),
            (column::PAYLOAD, "payload"),
            (column::POSITION, "position"),
            (column::EVENT_ID, "event_id"),
            (column::AGGREGATE_TYPE, "aggregate_type"),
            (column::AGGREGATE_ID, "aggregate_id"),
            (column::METADATA, "metadata"),
            (column::RECORDED_AT, "recorded_at"),
        ];
        assert_eq!(names.len(), expected.len());
        for (index, name) in expected {
            assert_eq!(names[index], name);
        }
        let filtered = connection.prepare(crate::sql::READ_FILTERED)?;
        assert_eq!(
            filtered.column_names()[..column::WANTED],
            names,
            "a filtered read's wanted rows are decoded like every other"
        );
        assert_eq!(filtered.column_names()[column::WANTED], "wanted");
        assert_eq!(filtered.column_count(), column::WANTED + 1);
        let replay = connection.prepare(crate::sql::REPLAY_STREAM)?;
        assert_eq!(replay.column_names(), names[..4]);
        assert_eq!(
            connection.prepare(crate::sql::READ_EVENT)?.column_names(),
            names,
            "an event read by id is decoded like every other"
        );
        let stored = connection.prepare(crate::sql::STORED_EVENT)?;
        let expected = [
            (stored_column::VERSION, "version"),
            (stored_column::POSITION, "position"),
            (stored_column::AGGREGATE_TYPE, "aggregate_type"),
            (stored_column::AGGREGATE_ID, "aggregate_id"),
        ];
        let stored_names = stored.column_names();
        assert_eq!(stored_names.len(), expected.len());
        for (index, name) in expected {
            assert_eq!(stored_names[index], name);
        }
        Ok(())
    }

    #[test]
    fn instants_round_trip_at_microsecond_precision() {
        let now = Utc::now();
        let Some(stored) = instant(micros(now)) else {
            panic!("{now} is out of range");
        };
        assert!(now - stored < chrono::Duration::microseconds(1));
        assert!(stored <= now, "stored instants are truncated, never rounded up");
    }
}
