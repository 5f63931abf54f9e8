//! Shared helpers: fresh database files, test events, reading whole streams, querying the file,
//! waiting for a condition.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use es_core::CheckpointStore;
use es_core::{EventStore, ExpectedVersion, GlobalLog, StreamId};
use es_sqlite::{SqliteCheckpoints, SqliteClaim, SqliteOptions, SqliteStore, SqliteUnit};
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

    /// A fresh stream of `kind` holding `count` numbered events, appended through the store.
    pub async fn stream_with(&self, kind: &str, count: usize) -> StreamId {
        let stream = fresh_stream(kind);
        self.store
            .append(&stream, ExpectedVersion::NoStream, numbered(count))
            .await
            .expect("append");
        stream
    }
}

/// A runtime of 2 worker threads, for tests that run processes and block on them.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
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

/// A fresh, migrated store whose file also holds the tables `schema` creates.
pub async fn fresh_with_tables(schema: &'static str) -> TestDb {
    let db = fresh().await;
    db.store
        .write(move |db| db.execute_batch(schema))
        .await
        .unwrap_or_else(|error| panic!("{schema}: {error}"));
    db
}

/// The store's checkpoints, with `projection` claimed.
pub async fn claimed(db: &TestDb, projection: &str) -> (SqliteCheckpoints, SqliteClaim) {
    let checkpoints = db.store.checkpoints();
    let claim = checkpoints.claim(projection).await.expect("claim");
    (checkpoints, claim)
}

/// A unit of work begun under `claim`, and the checkpoint it starts from.
pub async fn begin(checkpoints: &SqliteCheckpoints, claim: &mut SqliteClaim) -> (SqliteUnit, u64) {
    checkpoints.begin(claim).await.expect("begin")
}

/// A raw connection to the file, beside the store's: for planting data and holding locks.
pub fn raw(db: &TestDb) -> rusqlite::Connection {
    rusqlite::Connection::open(db.path()).expect("a raw connection")
}

/// Inserts, behind the store's back, event `name` at `version` of `stream` whose metadata is not
/// JSON: a row that does not map.
pub fn plant_bad_metadata(db: &TestDb, stream: &StreamId, version: i64, name: &str) {
    raw(db)
        .execute(
            "INSERT INTO events (event_id, aggregate_type, aggregate_id, version, event_name, schema_version,
                                 payload, metadata, recorded_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 1, '{}', 'not json', 0)",
            rusqlite::params![
                uuid::Uuid::now_v7().as_bytes(),
                stream.aggregate_type,
                stream.aggregate_id,
                version,
                name
            ],
        )
        .expect("plant a row whose metadata does not decode");
}

/// The rows `sql` selects, read through the store, each mapped by `row`.
pub async fn select<T: Send + 'static>(
    store: &SqliteStore,
    sql: &str,
    row: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Vec<T> {
    let query = sql.to_owned();
    store
        .read(move |db| db.prepare(&query)?.query_map([], row)?.collect())
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
}

/// The first column of the rows `sql` selects, as numbers (never negative).
pub async fn numbers(store: &SqliteStore, sql: &str) -> Vec<u64> {
    let numbers: Vec<i64> = select(store, sql, |row| row.get(0)).await;
    numbers.into_iter().map(|number| number as u64).collect()
}

/// The positions of the first `limit` events of the global log.
pub async fn positions(store: &SqliteStore, limit: usize) -> Vec<u64> {
    let events = store.read_all(0, limit).await.expect("read_all");
    events.iter().map(|event| event.position).collect()
}

/// The number `sql` selects: a count.
pub async fn count(store: &SqliteStore, sql: &str) -> i64 {
    select(store, sql, |row| row.get(0)).await[0]
}

/// Fails the test unless SQLite finds the file intact (`PRAGMA integrity_check` answers one
/// row, `ok`; otherwise a row per problem).
pub async fn assert_intact(store: &SqliteStore) {
    let problems: Vec<String> = select(store, "PRAGMA integrity_check", |row| row.get(0)).await;
    assert_eq!(problems, ["ok"], "the file is damaged");
}

/// Checks `ready` every 10 ms until it says `Ok`; once `limit` has passed, fails the test with the
/// message of its last answer.
pub async fn wait_until<F, Fut>(limit: Duration, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match ready().await {
            Ok(()) => return,
            Err(waiting) => assert!(Instant::now() < deadline, "{waiting}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
