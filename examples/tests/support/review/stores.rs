//! Fresh stores and raw events, as every review suite makes them: a migrated SQLite file, a
//! migrated PostgreSQL schema of its own, events written as another program would store them.

use std::path::Path;

use es_core::{GlobalLog, Metadata, NewEvent, RecordedEvent, UpcastError};
use es_postgres::PostgresStore;
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

/// A row written straight into PostgreSQL's events table with SQL, as a broken writer (or an
/// operator's hand) would leave it, behind the framework's checks.
pub struct RawRow<'a> {
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub version: i64,
    pub event_name: &'a str,
    pub schema_version: i32,
    pub payload: &'a str,
    pub metadata: &'a str,
}

/// Inserts `rows` in one transaction, positioned the way the store positions its own commits.
pub async fn insert_raw_rows(store: &PostgresStore, rows: &[RawRow<'_>]) {
    let insert = format!(
        "INSERT INTO {}.events (position, event_id, aggregate_type, aggregate_id, version, event_name, \
         schema_version, payload, metadata, recorded_at) \
         VALUES ((pg_current_xact_id()::text::bigint << 20) | $1, gen_random_uuid(), $2, $3, $4, $5, $6, \
         $7::jsonb, $8::jsonb, now())",
        store.schema()
    );
    let mut tx = store.pool().begin().await.expect("begin");
    for (index, row) in (1_i64..).zip(rows) {
        sqlx::query(&insert)
            .bind(index)
            .bind(row.aggregate_type)
            .bind(row.aggregate_id)
            .bind(row.version)
            .bind(row.event_name)
            .bind(row.schema_version)
            .bind(row.payload)
            .bind(row.metadata)
            .execute(&mut *tx)
            .await
            .expect("raw insert");
    }
    tx.commit().await.expect("commit");
}

/// How many schemas of `store`'s server are named `name`: 0 or 1.
pub async fn schemas_named(store: &PostgresStore, name: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname = $1")
        .bind(name)
        .fetch_one(store.pool())
        .await
        .expect("namespaces")
}

/// The tables of `store`'s schema, by name.
pub async fn schema_tables(store: &PostgresStore) -> Vec<String> {
    sqlx::query_scalar("SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1")
        .bind(store.schema())
        .fetch_all(store.pool())
        .await
        .expect("tables")
}

/// Begins a transaction on `connection` and gives it a transaction id, as a writer in the middle
/// of a commit has one: PostgreSQL's global log holds back what commits after it until it ends.
pub async fn open_write_transaction(connection: &mut sqlx::PgConnection) -> sqlx::Transaction<'_, sqlx::Postgres> {
    use sqlx::Connection;
    let mut transaction = connection.begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *transaction)
        .await
        .expect("a transaction id");
    transaction
}

/// Runs `test` on a fresh SQLite file, within the suites' bound ([`es_test_support::bounded`]).
pub async fn on_sqlite<T, Fut: std::future::Future<Output = T>>(test: impl FnOnce(SqliteStore) -> Fut) -> T {
    es_test_support::bounded(async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        test(sqlite_in(&dir).await).await
    })
    .await
}

/// Runs `test` on the store of a fresh PostgreSQL schema, within the suites' bound
/// ([`es_test_support::bounded`]); the schema is dropped after.
pub async fn on_postgres<T, Fut: std::future::Future<Output = T>>(test: impl FnOnce(PostgresStore) -> Fut) -> T {
    es_test_support::bounded(async {
        let schema = postgres().await;
        test(schema.store().clone()).await
    })
    .await
}

/// Where a read model keeps one number per key: `SELECT column FROM table WHERE key = ...`, as
/// the suites read their balances and counts.
pub struct NumberColumn {
    pub table: &'static str,
    pub column: &'static str,
    pub key: &'static str,
}

impl NumberColumn {
    /// The number of `id`'s row in the SQLite store's own file; `None` when there is no such row.
    pub async fn in_sqlite(&self, store: &SqliteStore, id: &str) -> Result<Option<i64>, es_sqlite::SqliteError> {
        use rusqlite::OptionalExtension;
        let select = format!("SELECT {} FROM {} WHERE {} = ?1", self.column, self.table, self.key);
        let id = id.to_owned();
        store
            .read(move |db| db.query_row(&select, [id], |row| row.get(0)).optional())
            .await
    }

    /// The number of `id`'s row in the PostgreSQL store's schema; `None` when there is no such row.
    pub async fn in_postgres(&self, store: &PostgresStore, id: &str) -> Result<Option<i64>, sqlx::Error> {
        let (schema, table) = (store.schema(), self.table);
        let select = format!(
            "SELECT {} FROM \"{schema}\".{table} WHERE {} = $1",
            self.column, self.key
        );
        sqlx::query_scalar::<_, i64>(&select)
            .bind(id)
            .fetch_optional(store.pool())
            .await
    }
}
