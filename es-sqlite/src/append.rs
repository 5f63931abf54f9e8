//! Appends: one `BEGIN IMMEDIATE` transaction that, under the write lock, recognises a retried
//! batch, reads the stream's version, checks the expectation and inserts the batch with one
//! cached statement.

use std::sync::Arc;

use es_core::{
    AppendOutcome, ExpectedVersion, Metadata, NewEvent, StoreError, StoreResult, StoredEventPlace, StreamId,
};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Statement};
use serde::de::IgnoredAny;
use uuid::Uuid;

use crate::connection::{blocking, Database, Immediate};
use crate::error::SqliteError;
use crate::row::{micros, stored_event};
use crate::{sql, SqliteStore};

/// [`EventStore::append`](es_core::EventStore::append): the batch is checked, then written in
/// one transaction on a blocking thread; wake-ups fire after the commit.
pub(crate) async fn append(
    store: &SqliteStore,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> StoreResult<AppendOutcome> {
    let database = Arc::clone(&store.database);
    let owned_stream = stream.clone();
    let outcome = blocking(move || append_blocking(&database, &owned_stream, expected, &events)).await?;
    if wrote(&outcome) {
        notify_committed(&store.database);
    }
    Ok(outcome)
}

/// Whether an append wrote events. A retry or an empty batch wrote nothing: runners have
/// nothing new to read.
pub(crate) fn wrote(outcome: &AppendOutcome) -> bool {
    !outcome.already_stored && !outcome.positions.is_empty()
}

/// Tells the wake-up listeners of the file that this process committed events.
pub(crate) fn notify_committed(database: &Database) {
    database.appended.send_modify(|count| *count = count.wrapping_add(1));
}

fn append_blocking(
    database: &Database,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> StoreResult<AppendOutcome> {
    // Checked before taking any lock: a bad batch costs other writers nothing.
    let payloads = checked_batch(database, stream, events)?;
    let writer = database.writer("append events")?;
    let failed = |error| StoreError::from(database.error(error));
    let transaction = Immediate::begin(&writer).map_err(|error| StoreError::from(database.write_error(error)))?;
    let outcome = append_locked(database, &writer, stream, expected, events, payloads)?;
    // Otherwise nothing was written: the guard rolls the read-only transaction back.
    if wrote(&outcome) {
        transaction.commit().map_err(failed)?;
    }
    Ok(outcome)
}

/// Appends `events` (whose `payloads` [`checked_batch`] gave) on `writer`, which is inside a
/// write transaction, so holds the write lock: the store's own (`append_blocking`) or a
/// caller's ([`SqliteTransaction::append`](crate::SqliteTransaction::append)). Writes nothing
/// unless it succeeds, except on a failed insert: then the caller rolls back what it inserted.
pub(crate) fn append_locked(
    database: &Database,
    writer: &Connection,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[NewEvent],
    payloads: Vec<&str>,
) -> StoreResult<AppendOutcome> {
    let failed = |error| StoreError::from(database.error(error));
    // The contract's order: a retried batch gets its original outcome whatever `expected` says
    // (its writer may have reloaded the stream since), then the expectation, then duplicates.
    // Judged under the write lock, so no other writer can store the batch in between.
    let earlier = earlier(database, writer, stream, events)?;
    if let Earlier::Retried(outcome) = earlier {
        tracing::debug!(
            stream = %stream,
            previous_version = outcome.previous_version,
            new_version = outcome.new_version,
            "append already stored: the original outcome, nothing written"
        );
        return Ok(outcome);
    }
    // The stream's version and whether it is closed, in one statement: the record itself is
    // read only for the refusal.
    let (version, closed): (i64, bool) = writer
        .prepare_cached(sql::STREAM_HEAD)
        .and_then(|mut statement| {
            statement.query_row(params![stream.aggregate_type, stream.aggregate_id], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
        })
        .map_err(failed)?;
    if closed {
        if let Some(closed) = crate::lifecycle::closure_on(database, writer, stream)? {
            return Err(closed.refuse());
        }
    }
    let actual = u64::try_from(version)
        .map_err(|_| SqliteError::Unexpected(format!("a negative version {version} in {stream}")))?;
    expected.check(stream, actual).inspect_err(|_| {
        tracing::debug!(stream = %stream, %expected, actual, "append refused: concurrency conflict");
    })?;
    if let Earlier::Duplicate(event_id) = earlier {
        return Err(StoreError::DuplicateEventId {
            stream: stream.clone(),
            event_id,
        });
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
            return Err(insert_failed(database, writer, error, stream, event));
        }
        // The position is the rowid SQLite just assigned: no query needed.
        let position = writer.last_insert_rowid();
        let position = u64::try_from(position)
            .map_err(|_| SqliteError::Unexpected(format!("SQLite assigned the negative position {position}")))?;
        positions.push(position);
    }
    Ok(AppendOutcome::new(actual, positions))
}

/// What is stored of a batch already, as far as the append must know.
enum Earlier {
    /// The batch's first event is not stored: a new batch (should a later id be stored, the
    /// insert's unique constraint finds it).
    New,
    /// The whole batch is stored, as this batch: a retry, with the original outcome.
    Retried(AppendOutcome),
    /// The first event, this id, is stored, but the batch is not stored as a whole in order.
    Duplicate(Uuid),
}

/// Looks for `events` among the stored events. The happy path costs one probe of the
/// `event_id` index, for the first id; only when that is stored are the others looked up, and
/// [`AppendOutcome::from_stored`] (the rule every backend shares) judges the whole.
fn earlier(
    database: &Database,
    connection: &Connection,
    stream: &StreamId,
    events: &[NewEvent],
) -> StoreResult<Earlier> {
    let [first, rest @ ..] = events else {
        return Ok(Earlier::New);
    };
    let failed = |error| StoreError::from(database.error(error));
    let mut lookup = connection.prepare_cached(sql::STORED_EVENT).map_err(failed)?;
    let Some(found) = find_stored(database, &mut lookup, first.event_id)? else {
        return Ok(Earlier::New);
    };
    let mut stored = Vec::with_capacity(events.len());
    stored.push(found);
    for event in rest {
        match find_stored(database, &mut lookup, event.event_id)? {
            Some(found) => stored.push(found),
            // Partly stored is never a retry (`from_stored` would say so too): stop looking.
            None => return Ok(Earlier::Duplicate(first.event_id)),
        }
    }
    let ids: Vec<Uuid> = events.iter().map(|event| event.event_id).collect();
    Ok(match AppendOutcome::from_stored(stream, &ids, &stored) {
        Some(outcome) => Earlier::Retried(outcome),
        None => Earlier::Duplicate(first.event_id),
    })
}

/// Where the event `event_id` is stored, with the [`sql::STORED_EVENT`] statement; `None` when
/// it is not.
fn find_stored(
    database: &Database,
    lookup: &mut Statement<'_>,
    event_id: Uuid,
) -> StoreResult<Option<StoredEventPlace>> {
    let failed = |error| StoreError::from(database.error(error));
    let mut rows = lookup.query([event_id.as_bytes()]).map_err(failed)?;
    match rows.next().map_err(failed)? {
        Some(row) => stored_event(row, event_id).map(Some),
        None => Ok(None),
    }
}

/// Checks the batch against the store's limits ([`Limits::check_append`](es_core::Limits::check_append)),
/// then returns its payloads as text, each checked to be JSON; [`StoreError::InvalidBatch`]
/// naming the first that is not. One allocation for the batch, none per event.
pub(crate) fn checked_batch<'e>(
    database: &Database,
    stream: &StreamId,
    events: &'e [NewEvent],
) -> StoreResult<Vec<&'e str>> {
    database.options.limits.check_append(stream, events)?;
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
    /// The metadata the buffer holds, if any.
    held: Option<Metadata>,
}

impl MetadataBuffer {
    /// The metadata of `event` as JSON text, borrowed from the buffer. Empty metadata costs no
    /// serialization, and the events of one command, which share their metadata, cost one.
    fn encode(&mut self, stream: &StreamId, event: &NewEvent) -> StoreResult<&str> {
        if event.metadata == Metadata::new() {
            return Ok("{}");
        }
        let invalid = |reason: String| StoreError::InvalidBatch {
            stream: stream.clone(),
            reason: format!("the metadata of event {} does not serialize: {reason}", event.event_id),
        };
        if self.held.as_ref() != Some(&event.metadata) {
            self.held = None;
            self.buffer.clear();
            serde_json::to_writer(&mut self.buffer, &event.metadata).map_err(|error| invalid(error.to_string()))?;
            self.held = Some(event.metadata.clone());
        }
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
/// never by the message text. What the batch inserted is rolled back by the caller.
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
