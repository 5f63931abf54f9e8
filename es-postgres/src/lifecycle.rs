//! Stream lifecycle ([`StreamLifecycle`]): each change is one transaction that first locks the
//! events table against appends (`LOCK TABLE ... SHARE ROW EXCLUSIVE`: appends in flight commit
//! first, new ones wait), then records the status, appends the lifecycle event and moves or
//! removes the events. An append that waited finds the record and is refused. A change waits
//! at most 5 seconds for the lock (a transaction of the caller's that appended and stays open
//! holds it off), then fails as unavailable, so appends are never held up for longer.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use es_core::lifecycle::{check_change, ClosedQuery, StreamChange, StreamClosed, StreamLifecycle, StreamStatus};
use es_core::EventStream;
use es_core::{ExpectedVersion, StoreResult, StreamId, StreamSlice};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::error::PostgresError;
use crate::fault::store_error;
use crate::PostgresStore;

/// A `stream_states` row, read by column name.
fn closed_stream(row: &PgRow) -> StoreResult<StreamClosed> {
    let status: String = row.try_get("status").map_err(store_error)?;
    let count = |column: &str| -> StoreResult<u64> {
        let value: i64 = row.try_get(column).map_err(store_error)?;
        u64::try_from(value)
            .map_err(|_| PostgresError::Unexpected(format!("a negative {column} {value} in stream_states")).into())
    };
    let at: DateTime<Utc> = crate::row::timestamptz_named(row, "changed_at")
        .map_err(|reason| PostgresError::Unexpected(format!("changed_at in stream_states: {reason}")))?
        .ok_or_else(|| PostgresError::Unexpected("changed_at in stream_states: NULL".into()))?;
    Ok(StreamClosed {
        aggregate_type: row.try_get("aggregate_type").map_err(store_error)?,
        aggregate_id: row.try_get("aggregate_id").map_err(store_error)?,
        status: StreamStatus::from_name(&status)
            .ok_or_else(|| PostgresError::Unexpected(format!("an unknown stream status {status:?}")))?,
        version: count("version")?,
        events: count("events")?,
        actor: row.try_get("actor").map_err(store_error)?,
        reason: row.try_get("reason").map_err(store_error)?,
        at,
    })
}

/// The record of `stream` if it is closed, read on `executor`.
pub(crate) async fn closure_on<'c, E>(
    store: &PostgresStore,
    executor: E,
    stream: &StreamId,
) -> StoreResult<Option<StreamClosed>>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    if crate::read::never_stored(stream) {
        return Ok(None);
    }
    let row = sqlx::query(&store.sql.lifecycle.closure)
        .bind(stream.aggregate_type.as_str())
        .bind(stream.aggregate_id.as_str())
        .fetch_optional(executor)
        .await
        .map_err(store_error)?;
    row.as_ref().map(closed_stream).transpose()
}

/// Runs a statement of (`$1`, `$2`) = `stream` on `conn`.
async fn run(conn: &mut PgConnection, statement: &str, stream: &StreamId) -> StoreResult<()> {
    sqlx::query(statement)
        .bind(stream.aggregate_type.as_str())
        .bind(stream.aggregate_id.as_str())
        .execute(conn)
        .await
        .map_err(store_error)?;
    Ok(())
}

/// Each change is one transaction; see the module docs.
#[async_trait]
impl StreamLifecycle for PostgresStore {
    async fn close(&self, stream: &StreamId, next: StreamStatus, change: StreamChange) -> StoreResult<StreamClosed> {
        let statements = &self.sql.lifecycle;
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        sqlx::query(&statements.lock_timeout)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        sqlx::query(&statements.lock)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        let current = closure_on(self, &mut *tx, stream).await?;
        if let Some(done) = check_change(stream, current.clone(), next)? {
            crate::fault::end_now(tx, "a change already made").await;
            return Ok(done);
        }
        let counts = sqlx::query(&statements.count)
            .bind(stream.aggregate_type.as_str())
            .bind(stream.aggregate_id.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(store_error)?;
        let count = |column: &str| -> StoreResult<u64> {
            let value: i64 = counts.try_get(column).map_err(store_error)?;
            Ok(value.unsigned_abs())
        };
        let version = match &current {
            Some(closed) => closed.version,
            None => count("version")?,
        };
        let moved = match next {
            StreamStatus::Archived => count("hot")?,
            StreamStatus::Deleted => count("hot")? + count("archived")?,
            _ => 0,
        };
        let closed = StreamClosed::new(stream, next, version, moved, change);
        sqlx::query(&statements.close)
            .bind(stream.aggregate_type.as_str())
            .bind(stream.aggregate_id.as_str())
            .bind(next.as_str())
            .bind(i64::try_from(closed.version).unwrap_or(i64::MAX))
            .bind(i64::try_from(moved).unwrap_or(i64::MAX))
            .bind(closed.actor.as_str())
            .bind(closed.reason.as_str())
            .bind(closed.at)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        let logged = closed.to_new_event()?;
        self.append_in_transaction(&mut tx, &closed.lifecycle_stream(), ExpectedVersion::Any, vec![logged])
            .await?;
        match next {
            StreamStatus::Archived => {
                run(&mut tx, &statements.archive, stream).await?;
                run(&mut tx, &statements.delete_snapshot, stream).await?;
            }
            StreamStatus::Deleted => {
                run(&mut tx, &statements.delete_hot, stream).await?;
                run(&mut tx, &statements.delete_archived, stream).await?;
                run(&mut tx, &statements.delete_snapshot, stream).await?;
            }
            _ => {}
        }
        tx.commit().await.map_err(store_error)?;
        self.notify_listeners();
        Ok(closed)
    }

    fn read_archived<'a>(&'a self, stream: &'a StreamId, slice: StreamSlice) -> EventStream<'a> {
        crate::read::stream_rows(self, &self.sql.lifecycle.read_archived, stream, slice)
    }

    async fn closed_streams(&self, query: &ClosedQuery) -> StoreResult<Vec<StreamClosed>> {
        let after = query.after.as_ref();
        let rows = sqlx::query(&self.sql.lifecycle.closed_streams)
            .bind(query.status.as_str())
            .bind(after.map(|stream| stream.aggregate_type.as_str()))
            .bind(after.map(|stream| stream.aggregate_id.as_str()))
            .bind(i64::try_from(query.limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.iter().map(closed_stream).collect()
    }
}
