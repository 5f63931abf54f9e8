//! Fresh stores and raw events, as every review suite makes them: a migrated SQLite file, a
//! migrated PostgreSQL schema of its own, events written as another program would store them.

use std::path::Path;

use es_core::{GlobalLog, Metadata, NewEvent, RecordedEvent, UpcastError};
use es_sqlite::{SqliteOptions, SqliteStore};
use es_test_support::{TestDatabase, TestSchema};
use tempfile::TempDir;
use uuid::Uuid;

/// A fresh, migrated schema on the PostgreSQL server of `DATABASE_URL`, dropped with the value.
pub async fn postgres() -> TestSchema {
    TestDatabase::get()
        .expect("a PostgreSQL server (DATABASE_URL)")
        .schema()
        .await
        .expect("a fresh schema")
}

/// A migrated SQLite store in the file at `path`, opened with `options`.
pub async fn sqlite_at(path: &Path, options: SqliteOptions) -> SqliteStore {
    let store = SqliteStore::open_with(path, options).await.expect("open");
    store.migrate().await.expect("migrate");
    store
}

/// A migrated SQLite store in the file `name` of `dir`.
pub async fn sqlite_file(dir: &TempDir, name: &str) -> SqliteStore {
    sqlite_at(&dir.path().join(name), SqliteOptions::default()).await
}

/// A migrated SQLite store in `events.db` of `dir`.
pub async fn sqlite_in(dir: &TempDir) -> SqliteStore {
    sqlite_file(dir, "events.db").await
}

/// A migrated SQLite store in a temporary directory of its own, which must outlive the store.
pub async fn sqlite() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = sqlite_in(&dir).await;
    (dir, store)
}

/// One event with the payload `payload` as it is stored, of schema version `schema_version`,
/// with no metadata.
pub fn raw_event(name: &str, schema_version: u32, payload: &str) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_name: name.into(),
        schema_version,
        payload: payload.as_bytes().to_vec(),
        metadata: Metadata::new(),
    }
}

/// [`raw_event`] of schema version 1.
pub fn raw(name: &str, payload: &str) -> NewEvent {
    raw_event(name, 1, payload)
}

/// Every event of the global log, paging `read_all`.
pub async fn whole_log<S: GlobalLog>(store: &S) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_all(after, 500).await.expect("read_all");
        let Some(last) = page.last() else {
            return all;
        };
        after = last.position;
        all.extend(page);
    }
}

/// The fields of the payload an upcaster is handed; its error when the payload is no JSON object.
pub fn json_object(
    payload: &mut serde_json::Value,
) -> Result<&mut serde_json::Map<String, serde_json::Value>, UpcastError> {
    payload
        .as_object_mut()
        .ok_or_else(|| UpcastError::new("expected a JSON object"))
}
