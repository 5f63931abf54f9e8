//! Appends: one `BEGIN IMMEDIATE` transaction that reads the stream's version under the write
//! lock, checks the expectation and inserts the batch with one cached statement.

use std::sync::Arc;

use es_core::{AppendOutcome, ConcurrencyConflict, ExpectedVersion, Metadata, NewEvent, StoreError, StreamId};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use serde::de::IgnoredAny;

use crate::connection::{blocking, Database, Immediate};
use crate::error::SqliteError;
use crate::row::micros;
use crate::{sql, SqliteStore};

/// [`EventStore::append`](es_core::EventStore::append): the batch is checked, then written in
/// one transaction on a blocking thread; wake-ups fire after the commit.
pub(crate) async fn append(
    store: &SqliteStore,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> Result<AppendOutcome, StoreError> {
    let database = Arc::clone(&store.database);
    let owned_stream = stream.clone();
    let outcome = blocking(move || append_blocking(&database, &owned_stream, expected, &events)).await?;
    if !outcome.positions.is_empty() {
        store
            .database
            .appended
            .send_modify(|count| *count = count.wrapping_add(1));
    }
    Ok(outcome)
}

fn append_blocking(
    database: &Database,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<AppendOutcome, StoreError> {
    // Checked before taking any lock: a bad batch costs other writers nothing.
    let payloads = checked_payloads(stream, events)?;
    let writer = database.writer("append events")?;
    let failed = |error| StoreError::from(database.error(error));
    let transaction = Immediate::begin(&writer).map_err(failed)?;
    let actual = stream_version(&writer, stream).map_err(failed)?;
    if !expected.accepts(actual) {
        tracing::debug!(stream = %stream, %expected, actual, "append refused: concurrency conflict");
        return Err(ConcurrencyConflict {
            stream: stream.clone(),
            expected,
            actual,
        }
        .into());
    }
    if events.is_empty() {
        return Ok(AppendOutcome::new(actual, Vec::new()));
    }
    let new_version = actual + events.len() as u64;
    let Ok(last_version) = i64::try_from(new_version) else {
        return Err(StoreError::InvalidBatch {
            stream: stream.clone(),
            reason: format!("version {new_version} does not fit SQLite's 64-bit integers"),
        });
    };
    // Never before the last stored event, even if the clock stepped back: `recorded_at` grows
    // with positions, so time travel by instant agrees with the global order.
    let last_recorded_at: Option<i64> = writer
        .prepare_cached(sql::LAST_RECORDED_AT)
        .and_then(|mut statement| statement.query_row([], |row| row.get(0)).optional())
        .map_err(failed)?;
    let recorded_at = micros(chrono::Utc::now()).max(last_recorded_at.unwrap_or(i64::MIN));
    let mut insert = writer.prepare_cached(sql::INSERT_EVENT).map_err(failed)?;
    let mut metadata = MetadataBuffer::default();
    let mut positions = Vec::with_capacity(events.len());
    let first_version = last_version - events.len() as i64 + 1;
    for ((event, payload), version) in events.iter().zip(payloads).zip(first_version..) {
        let inserted = insert.execute(params![
            event.event_id.as_bytes(),
            stream.aggregate_type,
            stream.aggregate_id,
            version,
            event.event_name,
            event.schema_version,
            payload,
            metadata.encode(stream, event)?,
            recorded_at,
        ]);
        if let Err(error) = inserted {
            return Err(insert_failed(database, &writer, error, stream, event));
        }
        // The position is the rowid SQLite just assigned: no query needed.
        let position = writer.last_insert_rowid();
        let position = u64::try_from(position)
            .map_err(|_| SqliteError::Unexpected(format!("SQLite assigned the negative position {position}")))?;
        positions.push(position);
    }
    drop(insert);
    transaction.commit().map_err(failed)?;
    Ok(AppendOutcome::new(actual, positions))
}

/// The batch's payloads as text, each checked to be JSON; [`StoreError::InvalidBatch`] naming
/// the first that is not. One allocation for the batch, none per event.
fn checked_payloads<'e>(stream: &StreamId, events: &'e [NewEvent]) -> Result<Vec<&'e str>, StoreError> {
    let invalid = |index: usize, reason: String| StoreError::InvalidBatch {
        stream: stream.clone(),
        reason: format!("the payload of event #{} is not valid JSON: {reason}", index + 1),
    };
    events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let text = std::str::from_utf8(&event.payload).map_err(|error| invalid(index, error.to_string()))?;
            serde_json::from_str::<IgnoredAny>(text).map_err(|error| invalid(index, error.to_string()))?;
            Ok(text)
        })
        .collect()
}

/// Serializes each event's metadata into one reused buffer.
#[derive(Default)]
struct MetadataBuffer {
    buffer: Vec<u8>,
}

impl MetadataBuffer {
    /// The metadata of `event` as JSON text, borrowed from the buffer; most events carry none
    /// and cost no serialization at all.
    fn encode(&mut self, stream: &StreamId, event: &NewEvent) -> Result<&str, StoreError> {
        if event.metadata == Metadata::new() {
            return Ok("{}");
        }
        let invalid = |reason: String| StoreError::InvalidBatch {
            stream: stream.clone(),
            reason: format!("the metadata of event {} does not serialize: {reason}", event.event_id),
        };
        self.buffer.clear();
        serde_json::to_writer(&mut self.buffer, &event.metadata).map_err(|error| invalid(error.to_string()))?;
        std::str::from_utf8(&self.buffer).map_err(|error| invalid(error.to_string()))
    }
}

/// The version of `stream` (0 when it has no event), with a cached statement.
pub(crate) fn stream_version(connection: &Connection, stream: &StreamId) -> rusqlite::Result<u64> {
    let mut statement = connection.prepare_cached(sql::STREAM_VERSION)?;
    let mut rows = statement.query(params![stream.aggregate_type, stream.aggregate_id])?;
    let Some(row) = rows.next()? else { return Ok(0) };
    let version: i64 = row.get(0)?;
    u64::try_from(version).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, version))
}

/// Explains a failed insert: a stored (or repeated) event id is
/// [`StoreError::DuplicateEventId`], told apart by looking the id up inside the transaction,
/// never by the message text. The transaction is rolled back by the caller's guard.
fn insert_failed(
    database: &Database,
    writer: &Connection,
    error: rusqlite::Error,
    stream: &StreamId,
    event: &NewEvent,
) -> StoreError {
    if error.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) {
        let stored = writer
            .prepare_cached(sql::EVENT_ID_EXISTS)
            .and_then(|mut statement| statement.query_row([event.event_id.as_bytes()], |row| row.get::<_, i64>(0)));
        match stored {
            Ok(count) if count > 0 => {
                return StoreError::DuplicateEventId {
                    stream: stream.clone(),
                    event_id: event.event_id,
                }
            }
            Ok(_) => {}
            Err(lookup) => return database.error(lookup).into(),
        }
    }
    database.error(error).into()
}
