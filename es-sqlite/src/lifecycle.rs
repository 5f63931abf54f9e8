//! Stream lifecycle ([`StreamLifecycle`]): each change is one `BEGIN IMMEDIATE` transaction,
//! so it holds the file's write lock and no append can land in between. It records the
//! stream's status, appends the lifecycle event (before moving anything, so the highest
//! position stays in `events` and is never handed out again), then moves or removes the events.

use std::sync::Arc;

use async_trait::async_trait;
use es_core::lifecycle::{check_change, ClosedQuery, StreamChange, StreamClosed, StreamLifecycle, StreamStatus};
use es_core::EventStream;
use es_core::{ExpectedVersion, StoreError, StoreResult, StreamId, StreamSlice};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::append::{append_locked, checked_batch, notify_committed, stream_version};
use crate::connection::{blocking, Database, Immediate};
use crate::error::SqliteError;
use crate::row::{instant, micros};
use crate::{sql, SqliteStore};

/// The record of `stream` if it is closed, read on `connection` (inside the caller's
/// transaction, if any).
pub(crate) fn closure_on(
    database: &Database,
    connection: &Connection,
    stream: &StreamId,
) -> StoreResult<Option<StreamClosed>> {
    let failed = |error| StoreError::from(database.error(error));
    let mut statement = connection.prepare_cached(sql::STREAM_CLOSURE).map_err(failed)?;
    let row = statement
        .query_row(params![stream.aggregate_type, stream.aggregate_id], |row| {
            Ok(closed_stream(row))
        })
        .optional()
        .map_err(failed)?;
    Ok(row.transpose()?)
}

/// A `stream_states` row, in the column order of `sql::STREAM_CLOSURE`.
fn closed_stream(row: &Row<'_>) -> Result<StreamClosed, SqliteError> {
    let read = |error: rusqlite::Error| SqliteError::Unexpected(format!("a stream_states row: {error}"));
    let status: String = row.get(2).map_err(read)?;
    let count = |index: usize| -> Result<u64, SqliteError> {
        let value: i64 = row.get(index).map_err(read)?;
        u64::try_from(value).map_err(|_| SqliteError::Unexpected(format!("a negative count {value} in stream_states")))
    };
    let changed_at: i64 = row.get(7).map_err(read)?;
    Ok(StreamClosed {
        aggregate_type: row.get(0).map_err(read)?,
        aggregate_id: row.get(1).map_err(read)?,
        status: StreamStatus::from_name(&status)
            .ok_or_else(|| SqliteError::Unexpected(format!("an unknown stream status {status:?}")))?,
        version: count(3)?,
        events: count(4)?,
        actor: row.get(5).map_err(read)?,
        reason: row.get(6).map_err(read)?,
        at: instant(changed_at)
            .ok_or_else(|| SqliteError::Unexpected(format!("an instant out of range: {changed_at}")))?,
    })
}

/// [`EventStore::stream_closure`](es_core::EventStore::stream_closure).
pub(crate) async fn stream_closure(store: &SqliteStore, stream: &StreamId) -> StoreResult<Option<StreamClosed>> {
    let (database, stream) = (Arc::clone(&store.database), stream.clone());
    blocking(move || database.with_reader(|connection| closure_on(&database, connection, &stream))).await
}

/// Changes `stream` to `next` in one write transaction; see the module docs.
fn change_blocking(
    database: &Database,
    stream: &StreamId,
    next: StreamStatus,
    change: StreamChange,
) -> StoreResult<(StreamClosed, bool)> {
    let writer = database.writer("change a stream's lifecycle")?;
    let failed = |error| StoreError::from(database.error(error));
    if next != StreamStatus::Deleted {
        return change_on(database, &writer, stream, next, change);
    }
    // A deletion zeroes the pages it frees: the removed events leave no bytes in the file.
    writer.execute_batch("PRAGMA secure_delete = ON").map_err(failed)?;
    let changed = change_on(database, &writer, stream, next, change);
    let restored = writer.execute_batch("PRAGMA secure_delete = OFF");
    let changed = changed?;
    restored.map_err(failed)?;
    Ok(changed)
}

/// [`change_blocking`] on the writer connection.
fn change_on(
    database: &Database,
    writer: &Connection,
    stream: &StreamId,
    next: StreamStatus,
    change: StreamChange,
) -> StoreResult<(StreamClosed, bool)> {
    let failed = |error| StoreError::from(database.error(error));
    let transaction = Immediate::begin(writer).map_err(|error| StoreError::from(database.write_error(error)))?;
    let current = closure_on(database, writer, stream)?;
    if let Some(done) = check_change(stream, current.clone(), next)? {
        return Ok((done, false));
    }
    let keys = params![stream.aggregate_type, stream.aggregate_id];
    let version = match &current {
        Some(closed) => closed.version,
        None => stream_version(writer, stream).map_err(failed)?,
    };
    let (hot, archived): (i64, i64) = writer
        .prepare_cached(sql::COUNT_STREAM_EVENTS)
        .and_then(|mut statement| statement.query_row(keys, |row| Ok((row.get(0)?, row.get(1)?))))
        .map_err(failed)?;
    let moved = match next {
        StreamStatus::Archived => hot,
        StreamStatus::Deleted => hot + archived,
        _ => 0,
    };
    let closed = StreamClosed::new(stream, next, version, moved.unsigned_abs(), change);
    writer
        .prepare_cached(sql::CLOSE_STREAM)
        .and_then(|mut statement| {
            statement.execute(params![
                stream.aggregate_type,
                stream.aggregate_id,
                next.as_str(),
                i64::try_from(closed.version).unwrap_or(i64::MAX),
                moved,
                closed.actor,
                closed.reason,
                micros(closed.at),
            ])
        })
        .map_err(failed)?;
    let logged = [closed.to_new_event()?];
    let lifecycle_stream = closed.lifecycle_stream();
    let payloads = checked_batch(database, &lifecycle_stream, &logged)?;
    append_locked(
        database,
        writer,
        &lifecycle_stream,
        ExpectedVersion::Any,
        &logged,
        payloads,
    )?;
    let run = |statement: &str| {
        writer
            .prepare_cached(statement)
            .and_then(|mut statement| statement.execute(keys))
            .map_err(failed)
    };
    match next {
        StreamStatus::Archived => {
            run(sql::ARCHIVE_EVENTS)?;
            run(sql::DELETE_HOT_EVENTS)?;
            run(sql::DELETE_SNAPSHOT)?;
        }
        StreamStatus::Deleted => {
            run(sql::DELETE_HOT_EVENTS)?;
            run(sql::DELETE_ARCHIVED_EVENTS)?;
            run(sql::DELETE_SNAPSHOT)?;
        }
        _ => {}
    }
    transaction.commit().map_err(failed)?;
    Ok((closed, true))
}

#[async_trait]
impl StreamLifecycle for SqliteStore {
    async fn close(&self, stream: &StreamId, status: StreamStatus, change: StreamChange) -> StoreResult<StreamClosed> {
        let (database, owned) = (Arc::clone(&self.database), stream.clone());
        let (closed, wrote) = blocking(move || change_blocking(&database, &owned, status, change)).await?;
        if wrote {
            notify_committed(&self.database);
        }
        Ok(closed)
    }

    fn read_archived<'a>(&'a self, stream: &'a StreamId, slice: StreamSlice) -> EventStream<'a> {
        crate::read::stream_rows(&self.database, stream, slice, sql::READ_ARCHIVED)
    }

    async fn closed_streams(&self, query: &ClosedQuery) -> StoreResult<Vec<StreamClosed>> {
        let database = Arc::clone(&self.database);
        let query = query.clone();
        blocking(move || {
            database.with_reader(|connection| {
                let failed = |error| StoreError::from(database.error(error));
                let mut statement = connection.prepare_cached(sql::CLOSED_STREAMS).map_err(failed)?;
                let after = query.after.as_ref();
                let mut rows = statement
                    .query(params![
                        query.status.as_str(),
                        after.map(|stream| stream.aggregate_type.as_str()),
                        after.map(|stream| stream.aggregate_id.as_str()),
                        i64::try_from(query.limit).unwrap_or(i64::MAX),
                    ])
                    .map_err(failed)?;
                let mut closed = Vec::new();
                while let Some(row) = rows.next().map_err(failed)? {
                    closed.push(closed_stream(row)?);
                }
                Ok(closed)
            })
        })
        .await
    }
}
