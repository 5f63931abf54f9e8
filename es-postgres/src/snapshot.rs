//! Snapshots: the latest one per stream, a newer one never replaced by an older one.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use es_core::{Snapshot, SnapshotStore, StoreError, StoreResult, StreamId};
use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::error::PostgresError;
use crate::fault::store_error;
use crate::row::negative_version;
use crate::PostgresStore;

#[async_trait]
impl SnapshotStore for PostgresStore {
    async fn save_snapshot(&self, snapshot: Snapshot) -> StoreResult<()> {
        let Snapshot {
            stream,
            version,
            revision,
            schema_version,
            state,
            taken_at,
        } = snapshot;
        let out_of_range = |what, value| PostgresError::OutOfRange {
            stream: stream.clone(),
            what,
            value,
        };
        let db_version = i64::try_from(version).map_err(|_| out_of_range("snapshot version", version))?;
        let db_revision =
            i32::try_from(revision).map_err(|_| out_of_range("snapshot revision", u64::from(revision)))?;
        let db_schema_version = i32::try_from(schema_version)
            .map_err(|_| out_of_range("snapshot schema version", u64::from(schema_version)))?;
        let state = String::from_utf8(state).map_err(|_| PostgresError::SnapshotNotUtf8 {
            stream: stream.clone(),
            version,
        })?;
        if let Err(error) = serde_json::from_str::<es_core::serde::de::IgnoredAny>(&state) {
            return Err(PostgresError::SnapshotNotJson {
                stream,
                version,
                reason: error.to_string(),
            }
            .into());
        }
        sqlx::query(&self.sql.save_snapshot)
            .bind(stream.aggregate_type.as_str())
            .bind(stream.aggregate_id.as_str())
            .bind(db_version)
            .bind(db_revision)
            .bind(db_schema_version)
            .bind(state)
            .bind(taken_at)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn load_snapshot(&self, stream: &StreamId) -> StoreResult<Option<Snapshot>> {
        if crate::read::never_stored(stream) {
            return Ok(None);
        }
        let row = sqlx::query(&self.sql.load_snapshot)
            .bind(stream.aggregate_type.as_str())
            .bind(stream.aggregate_id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        row.map(|row| snapshot(&row, stream.clone())).transpose()
    }
}

/// Decodes the snapshot columns (`SNAPSHOT_COLUMNS` in `sql`) of a row of `stream`.
pub(crate) fn snapshot(row: &PgRow, stream: StreamId) -> StoreResult<Snapshot> {
    let version: i64 = row.try_get("version").map_err(store_error)?;
    let version = u64::try_from(version).map_err(|_| negative_version(&stream, version))?;
    let corrupt = |reason: String| StoreError::Corrupt {
        stream: stream.clone(),
        version,
        reason,
    };
    let revision: i32 = row
        .try_get("revision")
        .map_err(|e| corrupt(format!("snapshot revision: {e}")))?;
    let revision = u32::try_from(revision).map_err(|_| corrupt(format!("negative snapshot revision {revision}")))?;
    let schema_version: i32 = row
        .try_get("schema_version")
        .map_err(|e| corrupt(format!("snapshot schema version: {e}")))?;
    let schema_version = u32::try_from(schema_version)
        .map_err(|_| corrupt(format!("negative snapshot schema version {schema_version}")))?;
    let state: String = row
        .try_get("state")
        .map_err(|e| corrupt(format!("snapshot state: {e}")))?;
    let taken_at: DateTime<Utc> = crate::row::timestamptz_named(row, "taken_at")
        .map_err(|reason| corrupt(format!("snapshot time: {reason}")))?
        .ok_or_else(|| corrupt("snapshot time: NULL".into()))?;
    Ok(Snapshot {
        stream,
        version,
        revision,
        schema_version,
        state: state.into_bytes(),
        taken_at,
    })
}
