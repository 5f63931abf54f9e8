//! Parked events on SQLite: the `parked_events` table, written within a unit of work (so a
//! parked event and the checkpoint that passes it commit together) and read and changed by
//! operators outside any unit.

use std::sync::Arc;

use es_core::{CheckpointError, ParkedEvent, StreamId};
use rusqlite::{params, Connection, OptionalExtension, Row};
use uuid::Uuid;

use crate::connection::{blocking, run, Database};
use crate::error::SqliteError;
use crate::row::{instant, micros};
use crate::sql;

/// A number of a parked event as the table stores it.
fn stored(what: &str, value: u64) -> Result<i64, CheckpointError> {
    i64::try_from(value).map_err(|_| CheckpointError::backend(format!("parked event {what} {value} is out of range")))
}

/// Refuses to write in a unit whose transaction a handler ended: the write would commit on its
/// own, not with the checkpoint.
fn in_transaction(connection: &Connection) -> Result<(), CheckpointError> {
    if connection.is_autocommit() {
        return Err(CheckpointError::backend(SqliteError::Unexpected(
            "a handler ended the unit's transaction (COMMIT or ROLLBACK): nothing more is written in it".into(),
        )));
    }
    Ok(())
}

/// Parks `parked` on the unit's `connection`, inside its write transaction: a new row, or the
/// row of an event parked before, with the new error and attempts, its first `parked_at` kept
/// and its retry request cleared. Runs on the caller's thread, as handlers do: the unit holds
/// the write lock, so this waits for no lock.
pub(crate) fn park(database: &Database, connection: &Connection, parked: &ParkedEvent) -> Result<(), CheckpointError> {
    in_transaction(connection)?;
    let (position, version) = (stored("position", parked.position)?, stored("version", parked.version)?);
    connection
        .prepare_cached(sql::PARK)
        .and_then(|mut statement| {
            statement.execute(params![
                parked.projection,
                position,
                parked.event_id.as_bytes(),
                parked.stream.aggregate_type,
                parked.stream.aggregate_id,
                version,
                parked.event_name,
                parked.error,
                parked.attempts,
                micros(parked.parked_at),
            ])
        })
        .map_err(|error| database.error(error))?;
    Ok(())
}

/// The checkpoint of `projection` read within a unit (which holds the file's only write lock,
/// so no unit of `projection` can be open): a blue/green switch taking the live projection
/// over.
pub(crate) fn take_over(
    database: &Database,
    connection: &Connection,
    projection: &str,
) -> Result<u64, CheckpointError> {
    in_transaction(connection)?;
    let position: Option<i64> = connection
        .prepare_cached(sql::LOAD_CHECKPOINT)
        .and_then(|mut statement| statement.query_row([projection], |row| row.get(0)).optional())
        .map_err(|error| database.error(error))?;
    let position = position.unwrap_or(0);
    u64::try_from(position).map_err(|_| CheckpointError::backend(format!("checkpoint {position} is out of range")))
}

/// Sets the checkpoint of `projection` within a unit: the end of a blue/green switch.
pub(crate) fn hand_over(
    database: &Database,
    connection: &Connection,
    projection: &str,
    position: u64,
) -> Result<(), CheckpointError> {
    in_transaction(connection)?;
    let position = stored("checkpoint", position)?;
    connection
        .prepare_cached(sql::HAND_OVER)
        .and_then(|mut statement| statement.execute(params![projection, position, micros(chrono::Utc::now())]))
        .map_err(|error| database.error(error))?;
    Ok(())
}

/// Removes the parked event of `projection` at `position` on `connection`: a unit's, inside its
/// transaction, or the writer. Returns whether there was one.
fn remove(
    database: &Database,
    connection: &Connection,
    projection: &str,
    position: u64,
) -> Result<bool, CheckpointError> {
    let Ok(position) = i64::try_from(position) else {
        // No event is parked beyond the positions the table can hold.
        return Ok(false);
    };
    let removed = connection
        .prepare_cached(sql::UNPARK)
        .and_then(|mut statement| statement.execute(params![projection, position]))
        .map_err(|error| database.error(error))?;
    Ok(removed > 0)
}

/// Removes the parked event of `projection` at `position` within the unit on `connection`.
pub(crate) fn unpark(
    database: &Database,
    connection: &Connection,
    projection: &str,
    position: u64,
) -> Result<(), CheckpointError> {
    in_transaction(connection)?;
    remove(database, connection, projection, position).map(drop)
}

/// The parked events of `projection`, in position order, read on a reader connection.
pub(crate) async fn parked(database: &Arc<Database>, projection: &str) -> Result<Vec<ParkedEvent>, CheckpointError> {
    let (database, projection) = (Arc::clone(database), projection.to_owned());
    blocking(move || {
        database.with_reader(|connection| {
            let failed = |error| CheckpointError::from(database.error(error));
            let mut statement = connection.prepare_cached(sql::PARKED).map_err(failed)?;
            let mut rows = statement.query([&projection]).map_err(failed)?;
            let mut parked = Vec::new();
            while let Some(row) = rows.next().map_err(failed)? {
                parked.push(parked_event(row).map_err(failed)?);
            }
            Ok(parked)
        })
    })
    .await
}

/// Runs `write` on the store's writer connection (on a blocking thread), outside any unit: one
/// statement, its own transaction. `operation` names it when the store is read-only.
async fn write<F>(database: &Arc<Database>, operation: &'static str, write: F) -> Result<bool, CheckpointError>
where
    F: FnOnce(&Database, &Connection) -> Result<bool, CheckpointError> + Send + 'static,
{
    let database = Arc::clone(database);
    blocking(move || {
        let writer = database.writer(operation)?;
        if !writer.is_autocommit() {
            // A transaction left open by a failed rollback would swallow this write.
            run(&writer, sql::ROLLBACK).map_err(|error| database.error(error))?;
        }
        write(&database, &writer)
    })
    .await
}

/// Marks the parked event of `projection` at `position` for a retry. Returns whether there was
/// one.
pub(crate) async fn request_retry(
    database: &Arc<Database>,
    projection: &str,
    position: u64,
) -> Result<bool, CheckpointError> {
    let Ok(position) = i64::try_from(position) else {
        return Ok(false);
    };
    let projection = projection.to_owned();
    write(database, "retry a parked event", move |database, writer| {
        let marked = writer
            .prepare_cached(sql::REQUEST_RETRY)
            .and_then(|mut statement| statement.execute(params![projection, position]))
            .map_err(|error| database.error(error))?;
        Ok(marked > 0)
    })
    .await
}

/// Forgets the parked event of `projection` at `position`. Returns whether there was one.
pub(crate) async fn drop_parked(
    database: &Arc<Database>,
    projection: &str,
    position: u64,
) -> Result<bool, CheckpointError> {
    let projection = projection.to_owned();
    write(database, "drop a parked event", move |database, writer| {
        remove(database, writer, &projection, position)
    })
    .await
}

/// Decodes a row of the parked events' columns, in `parked_columns!` order.
fn parked_event(row: &Row<'_>) -> rusqlite::Result<ParkedEvent> {
    let out_of_range = |index: usize, value: i64| rusqlite::Error::IntegralValueOutOfRange(index, value);
    let number = |index: usize| -> rusqlite::Result<u64> {
        let value: i64 = row.get(index)?;
        u64::try_from(value).map_err(|_| out_of_range(index, value))
    };
    let event_id: Vec<u8> = row.get(2)?;
    let event_id = Uuid::from_slice(&event_id)
        .map_err(|error| rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Blob, Box::new(error)))?;
    let attempts: i64 = row.get(8)?;
    let parked_at: i64 = row.get(9)?;
    Ok(ParkedEvent {
        projection: row.get(0)?,
        position: number(1)?,
        event_id,
        stream: StreamId {
            aggregate_type: row.get(3)?,
            aggregate_id: row.get(4)?,
        },
        version: number(5)?,
        event_name: row.get(6)?,
        error: row.get(7)?,
        attempts: u32::try_from(attempts).map_err(|_| out_of_range(8, attempts))?,
        parked_at: instant(parked_at).ok_or_else(|| out_of_range(9, parked_at))?,
        retry_requested: row.get::<_, i64>(10)? != 0,
    })
}
