//! Shared helpers: fresh database files, test events, reading whole streams.

use std::path::PathBuf;

use es_sqlite::{SqliteOptions, SqliteStore};
use tempfile::TempDir;

pub use es_core::conformance::{event, fresh_stream, numbered, whole_stream as read};

/// A migrated store on a new file in a temporary directory, removed with the fixture.
pub struct TestDb {
    pub store: SqliteStore,
    /// Removed (with the file) when the fixture is dropped.
    pub _dir: TempDir,
}

impl TestDb {
    /// The database file.
    pub fn path(&self) -> PathBuf {
        self.store.path().to_owned()
    }
}

/// A new temporary directory and the path of a database file in it (not created yet).
pub fn temp_file() -> (TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("es-sqlite-test-")
        .tempdir()
        .expect("a temporary directory");
    let path = dir.path().join("events.db");
    (dir, path)
}

/// A fresh, migrated store with the default options.
pub async fn fresh() -> TestDb {
    fresh_with(SqliteOptions::default()).await
}

/// A fresh, migrated store with `options`.
pub async fn fresh_with(options: SqliteOptions) -> TestDb {
    let (dir, path) = temp_file();
    let store = SqliteStore::open_with(&path, options).await.expect("open a new file");
    store.migrate().await.expect("migrate");
    TestDb { store, _dir: dir }
}

/// A raw connection to the file, beside the store's: for planting data and holding locks.
pub fn raw(db: &TestDb) -> rusqlite::Connection {
    rusqlite::Connection::open(db.path()).expect("a raw connection")
}
