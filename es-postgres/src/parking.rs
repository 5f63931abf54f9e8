//! Parked events on PostgreSQL: the `parked_events` table, written within a unit of work (so a
//! parked event and the checkpoint that passes it commit together) and read and changed by
//! operators outside any unit.

use chrono::{DateTime, Utc};
use es_core::{CheckpointError, ParkedEvent, StreamId};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::projection::{checkpoint_error, out_of_range};
use crate::sql::ParkingStatements;

/// A number of a parked event as the table stores it.
fn stored(what: &str, value: u64) -> Result<i64, CheckpointError> {
    i64::try_from(value).map_err(|_| out_of_range(what, value))
}

/// Parks `parked` on the unit's `connection`: a new row, or the row of an event parked before,
/// with the new error and attempts, its first `parked_at` kept and its retry request cleared.
pub(crate) async fn park(
    sql: &ParkingStatements,
    connection: &mut PgConnection,
    parked: &ParkedEvent,
) -> Result<(), CheckpointError> {
    sqlx::query(&sql.park)
        .bind(&parked.projection)
        .bind(stored("position", parked.position)?)
        .bind(parked.event_id)
        .bind(&parked.stream.aggregate_type)
        .bind(&parked.stream.aggregate_id)
        .bind(stored("version", parked.version)?)
        .bind(&parked.event_name)
        .bind(&parked.error)
        .bind(i64::from(parked.attempts))
        .bind(parked.parked_at)
        .execute(connection)
        .await
        .map_err(checkpoint_error)?;
    Ok(())
}

/// Removes the parked event of `projection` at `position` through `executor` (a unit's
/// connection, or the pool). Returns whether there was one.
pub(crate) async fn unpark<'c>(
    sql: &ParkingStatements,
    executor: impl sqlx::PgExecutor<'c>,
    projection: &str,
    position: u64,
) -> Result<bool, CheckpointError> {
    change_one(&sql.unpark, executor, projection, position).await
}

/// Runs `statement`, which changes the parked event of `projection` at `position` if there is
/// one. Returns whether there was.
async fn change_one<'c>(
    statement: &str,
    executor: impl sqlx::PgExecutor<'c>,
    projection: &str,
    position: u64,
) -> Result<bool, CheckpointError> {
    let Ok(position) = i64::try_from(position) else {
        // No event is parked beyond the positions the table can hold.
        return Ok(false);
    };
    let changed = sqlx::query(statement)
        .bind(projection)
        .bind(position)
        .execute(executor)
        .await
        .map_err(checkpoint_error)?;
    Ok(changed.rows_affected() > 0)
}

/// The parked events of `projection`, in position order.
pub(crate) async fn parked(
    sql: &ParkingStatements,
    pool: &PgPool,
    projection: &str,
) -> Result<Vec<ParkedEvent>, CheckpointError> {
    let rows = sqlx::query(&sql.list)
        .bind(projection)
        .fetch_all(pool)
        .await
        .map_err(checkpoint_error)?;
    rows.iter().map(parked_event).collect()
}

/// Marks the parked event of `projection` at `position` for a retry. Returns whether there was
/// one.
pub(crate) async fn request_retry(
    sql: &ParkingStatements,
    pool: &PgPool,
    projection: &str,
    position: u64,
) -> Result<bool, CheckpointError> {
    change_one(&sql.request_retry, pool, projection, position).await
}

/// Decodes a row of the parked events' columns.
fn parked_event(row: &PgRow) -> Result<ParkedEvent, CheckpointError> {
    let get = |column: &str| -> Result<i64, CheckpointError> { row.try_get(column).map_err(checkpoint_error) };
    let number = |column: &str| -> Result<u64, CheckpointError> {
        let value = get(column)?;
        u64::try_from(value).map_err(|_| out_of_range(&format!("parked event {column}"), value))
    };
    let attempts = get("attempts")?;
    let parked_at: DateTime<Utc> = crate::row::timestamptz_named(row, "parked_at")
        .map_err(|reason| CheckpointError::backend(format!("parked_at: {reason}")))?
        .ok_or_else(|| CheckpointError::backend("parked_at: NULL"))?;
    let event_id: Uuid = row.try_get("event_id").map_err(checkpoint_error)?;
    Ok(ParkedEvent {
        projection: row.try_get("projection").map_err(checkpoint_error)?,
        position: number("position")?,
        event_id,
        stream: StreamId {
            aggregate_type: row.try_get("aggregate_type").map_err(checkpoint_error)?,
            aggregate_id: row.try_get("aggregate_id").map_err(checkpoint_error)?,
        },
        version: number("version")?,
        event_name: row.try_get("event_name").map_err(checkpoint_error)?,
        error: row.try_get("error").map_err(checkpoint_error)?,
        attempts: u32::try_from(attempts).map_err(|_| out_of_range("parked event attempts", attempts))?,
        parked_at,
        retry_requested: row.try_get("retry_requested").map_err(checkpoint_error)?,
    })
}
