//! [`StreamCatalog`] for [`PostgresStore`]: streams listed by a walk over the events' unique
//! index, snapshots paged on their primary key. The statements and their costs are in
//! `sql/catalog.rs`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use es_core::{Snapshot, StoreError, StoreResult, StreamCatalog, StreamId, StreamQuery, StreamSummary};
use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::fault::store_error;
use crate::row::version_column;
use crate::snapshot::snapshot;
use crate::PostgresStore;

/// Listing never scans the `events` table: a page of streams is a walk over the unique index on
/// `(aggregate_type, aggregate_id, version)`, one index seek per stream visited and one more,
/// backwards, for the last event of each stream listed.
///
/// Cost of a page of `limit` streams:
///
/// - without an id prefix, with or without a type: about 2 × `limit` seeks;
/// - with an id prefix, where `aggregate_id` sorts bytewise (a `C` or `POSIX` collation, or one
///   of the `builtin` provider): the walk jumps to the prefix in each type, so about 2 ×
///   `limit` seeks, plus two for each type passed on the way without a type filter;
/// - with an id prefix in any other collation (`C.UTF-8` of libc and ICU collations included),
///   the ids that start with a prefix need not sort together, so the walk visits every stream
///   (of the type, when given) after `after` until `limit` of them matched: one seek per stream
///   visited, all the streams of the type for a prefix that matches few. Declare the column
///   `COLLATE "C"` to make prefix listings cheap.
///
/// Snapshots are paged on the snapshots' primary key: one index range scan of `limit` rows.
#[async_trait]
impl StreamCatalog for PostgresStore {
    async fn list_streams(&self, query: &StreamQuery) -> StoreResult<Vec<StreamSummary>> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let catalog = &self.sql.catalog;
        let statement = if query.aggregate_type.is_some() {
            &catalog.streams_of_type
        } else {
            &catalog.streams
        };
        let after = query.after.as_ref();
        let rows = sqlx::query(statement)
            .bind(query.aggregate_type.as_deref())
            .bind(query.id_prefix.as_deref())
            .bind(after.map(|stream| stream.aggregate_type.as_str()))
            .bind(after.map(|stream| stream.aggregate_id.as_str()))
            .bind(page_size(query.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.iter().map(stream_summary).collect()
    }

    async fn list_snapshots(&self, after: Option<&StreamId>, limit: usize) -> StoreResult<Vec<Snapshot>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let catalog = &self.sql.catalog;
        let query = match after {
            None => sqlx::query(&catalog.snapshots).bind(page_size(limit)),
            Some(after) => sqlx::query(&catalog.snapshots_after)
                .bind(after.aggregate_type.as_str())
                .bind(after.aggregate_id.as_str())
                .bind(page_size(limit)),
        };
        let rows = query.fetch_all(&self.pool).await.map_err(store_error)?;
        rows.iter().map(|row| snapshot(row, stream_of(row)?)).collect()
    }
}

/// A page size as the statements' `bigint` limit: beyond `i64::MAX` is everything anyway.
fn page_size(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The stream a catalog row names.
fn stream_of(row: &PgRow) -> StoreResult<StreamId> {
    Ok(StreamId {
        aggregate_type: row.try_get("aggregate_type").map_err(store_error)?,
        aggregate_id: row.try_get("aggregate_id").map_err(store_error)?,
    })
}

/// Decodes a row of the stream listing: the stream, its last version and that event's time.
fn stream_summary(row: &PgRow) -> StoreResult<StreamSummary> {
    let stream = stream_of(row)?;
    let version = version_column(row, &stream)?;
    let corrupt = |reason: String| StoreError::Corrupt {
        stream: stream.clone(),
        version,
        reason: format!("recorded_at: {reason}"),
    };
    let last_recorded_at: DateTime<Utc> = crate::row::timestamptz_named(row, "recorded_at")
        .map_err(corrupt)?
        .ok_or_else(|| corrupt("NULL".into()))?;
    Ok(StreamSummary {
        stream,
        version,
        last_recorded_at,
    })
}
