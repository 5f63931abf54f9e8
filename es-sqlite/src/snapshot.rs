//! Snapshots: the latest one per stream, a newer one never replaced by an older one.

use std::sync::Arc;

use async_trait::async_trait;
use es_core::{Snapshot, SnapshotStore, StoreError, StoreResult, StreamId};
use rusqlite::{params, OptionalExtension};
use serde::de::IgnoredAny;

use crate::connection::blocking;
use crate::error::SqliteError;
use crate::row::{instant, micros};
use crate::{sql, SqliteStore};

#[async_trait]
impl SnapshotStore for SqliteStore {
    async fn save_snapshot(&self, snapshot: Snapshot) -> StoreResult<()> {
        let not_json = |reason: String| SqliteError::SnapshotNotJson {
            stream: snapshot.stream.clone(),
            version: snapshot.version,
            reason,
        };
        let state = std::str::from_utf8(&snapshot.state).map_err(|error| not_json(error.to_string()))?;
        serde_json::from_str::<IgnoredAny>(state).map_err(|error| not_json(error.to_string()))?;
        let Ok(version) = i64::try_from(snapshot.version) else {
            return Err(StoreError::InvalidBatch {
                stream: snapshot.stream.clone(),
                reason: format!("snapshot version {} does not fit SQLite's integers", snapshot.version),
            });
        };
        let database = Arc::clone(&self.database);
        blocking(move || {
            let writer = database.writer("save a snapshot")?;
            if !writer.is_autocommit() {
                // A transaction left open by a failed rollback would swallow this write.
                writer
                    .execute_batch("ROLLBACK")
                    .map_err(|error| StoreError::from(database.error(error)))?;
            }
            let Snapshot {
                stream,
                revision,
                schema_version,
                state,
                taken_at,
                ..
            } = &snapshot;
            // Checked to be UTF-8 above.
            let state = String::from_utf8_lossy(state);
            writer
                .prepare_cached(sql::SAVE_SNAPSHOT)
                .and_then(|mut statement| {
                    statement.execute(params![
                        stream.aggregate_type,
                        stream.aggregate_id,
                        version,
                        revision,
                        state,
                        micros(*taken_at),
                        schema_version,
                    ])
                })
                .map_err(|error| StoreError::from(database.write_error(error)))?;
            Ok(())
        })
        .await
    }

    async fn load_snapshot(&self, stream: &StreamId) -> StoreResult<Option<Snapshot>> {
        let (database, owned_stream) = (Arc::clone(&self.database), stream.clone());
        let row = blocking(move || {
            database.with_reader(|connection| {
                connection
                    .prepare_cached(sql::LOAD_SNAPSHOT)
                    .and_then(|mut statement| {
                        statement
                            .query_row(params![owned_stream.aggregate_type, owned_stream.aggregate_id], |row| {
                                snapshot_row(row, 0)
                            })
                            .optional()
                    })
                    .map_err(|error| StoreError::from(database.error(error)))
            })
        })
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        stored_snapshot(stream.clone(), row).map(Some)
    }
}

/// A snapshot row's values: version, revision, state, `taken_at` and schema version, as stored.
pub(crate) type SnapshotRow = (i64, i64, String, i64, i64);

/// Reads the columns `version, revision, state, taken_at, schema_version` of a snapshot row, the
/// first at column `first`.
pub(crate) fn snapshot_row(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<SnapshotRow> {
    Ok((
        row.get(first)?,
        row.get(first + 1)?,
        row.get(first + 2)?,
        row.get(first + 3)?,
        row.get(first + 4)?,
    ))
}

/// The snapshot of `stream` stored as `row`; a value out of range is
/// [`StoreError::Corrupt`].
pub(crate) fn stored_snapshot(stream: StreamId, row: SnapshotRow) -> StoreResult<Snapshot> {
    let (version, revision, state, taken_at, schema_version) = row;
    let corrupt = |reason: String| StoreError::Corrupt {
        stream: stream.clone(),
        version: u64::try_from(version).unwrap_or(0),
        reason,
    };
    Ok(Snapshot {
        version: u64::try_from(version).map_err(|_| corrupt(format!("negative snapshot version {version}")))?,
        revision: u32::try_from(revision)
            .map_err(|_| corrupt(format!("snapshot revision {revision} is out of range")))?,
        schema_version: u32::try_from(schema_version)
            .map_err(|_| corrupt(format!("snapshot schema version {schema_version} is out of range")))?,
        state: state.into_bytes(),
        taken_at: instant(taken_at).ok_or_else(|| corrupt(format!("snapshot time {taken_at} is out of range")))?,
        stream,
    })
}
