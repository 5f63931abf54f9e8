//! Shared helpers: fresh schemas, test events, raw SQL, and the gate that keeps tests that need a
//! quiet server apart from the others.

use std::str::FromStr;
use std::sync::LazyLock;

use es_core::{EventStore, ExpectedVersion, GlobalLog, RecordedEvent, StreamId};
use es_postgres::PostgresStore;
use es_test_support::{TestDatabase, TestSchema};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgExecutor;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use uuid::Uuid;

/// `read_all` returns an event only once every transaction older than it has ended, and that
/// holds across the whole server: a test's open transaction delays every other test's
/// `read_all`. Tests that expect their own appends to show up in `read_all` at once (the
/// conformance suite) hold this gate exclusively; every other test holds it shared.
static GATE: LazyLock<RwLock<()>> = LazyLock::new(|| RwLock::new(()));

/// The server for this process.
pub fn database() -> &'static TestDatabase {
    match TestDatabase::get() {
        Ok(database) => database,
        Err(error) => panic!("{error}"),
    }
}

/// A fresh, migrated schema, while holding the gate shared.
pub async fn schema() -> Shared {
    let guard = GATE.read().await;
    let schema = database().schema().await.expect("a fresh schema");
    Shared { schema, _guard: guard }
}

/// A fresh schema that is not migrated yet, while holding the gate shared.
pub async fn unmigrated_schema() -> Shared {
    let guard = GATE.read().await;
    let schema = database().unmigrated_schema().await.expect("a fresh schema name");
    Shared { schema, _guard: guard }
}

/// A fresh, migrated schema while no other test runs.
pub async fn exclusive_schema() -> Exclusive {
    let guard = GATE.write().await;
    let schema = database().schema().await.expect("a fresh schema");
    Exclusive { schema, _guard: guard }
}

/// A test schema and the shared gate.
pub struct Shared {
    pub schema: TestSchema,
    _guard: RwLockReadGuard<'static, ()>,
}

impl std::ops::Deref for Shared {
    type Target = TestSchema;

    fn deref(&self) -> &TestSchema {
        &self.schema
    }
}

/// A test schema and the exclusive gate.
pub struct Exclusive {
    schema: TestSchema,
    _guard: RwLockWriteGuard<'static, ()>,
}

impl std::ops::Deref for Exclusive {
    type Target = TestSchema;

    fn deref(&self) -> &TestSchema {
        &self.schema
    }
}

pub use es_core::conformance::{event, fresh_stream, numbered, whole_stream as read};

/// Runs `sql` (read-model tables to create, as a rule) in `store`'s schema, without naming it.
pub async fn in_schema(store: &PostgresStore, sql: &str) {
    store
        .execute_in_schema(sql)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
}

/// The first column of the rows `sql` selects on `pool`, as numbers (never negative).
pub async fn numbers(pool: &sqlx::PgPool, sql: &str) -> Vec<u64> {
    let numbers: Vec<i64> = sqlx::query_scalar(sql)
        .fetch_all(pool)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
    numbers.into_iter().map(|number| number as u64).collect()
}

/// A fresh stream of `kind` holding `count` numbered events.
pub async fn stream_with(store: &PostgresStore, kind: &str, count: usize) -> StreamId {
    let stream = fresh_stream(kind);
    store
        .append(&stream, ExpectedVersion::NoStream, numbered(count))
        .await
        .expect("append");
    stream
}

/// Pages through `read_all` from the start until `count` events came back. Other tests' open
/// transactions can delay them (never lose them): waits up to 60 seconds.
pub async fn read_all_until<S: GlobalLog + ?Sized>(store: &S, count: usize) -> Vec<RecordedEvent> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut all: Vec<RecordedEvent> = Vec::new();
    while all.len() < count {
        let after = all.last().map_or(0, |e| e.position);
        let page = store.read_all(after, 500).await.expect("read_all");
        if page.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of {count} events came back",
                all.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        all.extend(page);
    }
    all
}

/// One event row written with raw SQL (bind parameters only), bypassing the store's checks: for
/// planting bad data, or for holding a version in a transaction left open.
pub struct RawEvent<'a> {
    pub stream: &'a StreamId,
    pub version: i64,
    pub event_name: &'a str,
    pub schema_version: i32,
    pub payload: &'a str,
    pub metadata: &'a str,
}

impl<'a> RawEvent<'a> {
    /// A row that is well formed but for what the caller changes: schema version 1, and `{}`
    /// for payload and metadata.
    pub fn new(stream: &'a StreamId, version: i64, event_name: &'a str) -> Self {
        Self {
            stream,
            version,
            event_name,
            schema_version: 1,
            payload: "{}",
            metadata: "{}",
        }
    }

    /// Inserts the row into the events table of `store`'s schema, through `executor`: the
    /// store's pool, or a transaction.
    pub async fn insert<'c>(&self, store: &PostgresStore, executor: impl PgExecutor<'c>) {
        let sql = format!(
            "INSERT INTO \"{}\".events (position, event_id, aggregate_type, aggregate_id, version, event_name,
                                        schema_version, payload, metadata, recorded_at)
             VALUES ((pg_current_xact_id()::text::bigint << 20) | 1, $1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb,
                     clock_timestamp())",
            store.schema()
        );
        sqlx::query(&sql)
            .bind(Uuid::now_v7())
            .bind(&self.stream.aggregate_type)
            .bind(&self.stream.aggregate_id)
            .bind(self.version)
            .bind(self.event_name)
            .bind(self.schema_version)
            .bind(self.payload)
            .bind(self.metadata)
            .execute(executor)
            .await
            .expect("inserting a raw row");
    }
}

/// A knob of a fault test from the environment, for the figures in docs/RELIABILITY.md.
pub fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Options of runners that ride out faults by themselves: unlimited retries, short backoff.
pub fn fault_runner_options() -> es_core::RunnerOptions {
    es_core::RunnerOptions {
        poll_interval: std::time::Duration::from_millis(50),
        transient_retry: es_core::Backoff {
            initial: std::time::Duration::from_millis(20),
            max: std::time::Duration::from_millis(500),
            max_attempts: None,
        },
        ..es_core::RunnerOptions::default()
    }
}

/// A small, fast, seedable random number generator, shared with the test support.
pub use es_test_support::Rng;

/// How to connect to the server for this process.
pub fn connect_options() -> PgConnectOptions {
    PgConnectOptions::from_str(database().url()).expect("the database URL")
}

/// A store on `schema` over a pool of its own, made by `pool` connecting with `connect`: as
/// another process would have, or one through a proxy.
pub async fn store_on_pool(pool: PgPoolOptions, connect: PgConnectOptions, schema: &str) -> PostgresStore {
    let pool = pool.connect_with(connect).await.expect("a pool of its own");
    PostgresStore::new(pool).with_schema(schema).expect("the schema")
}

/// The store on a pool of one connection, in `schema`: it prepares its statements where a test
/// can then explain them ([`plans`]).
pub async fn store_on_one_connection(schema: &str) -> (PostgresStore, sqlx::PgPool) {
    let store = store_on_pool(PgPoolOptions::new().max_connections(1), connect_options(), schema).await;
    let pool = store.pool().clone();
    (store, pool)
}

/// The plans of the statements prepared on `pool`'s one connection whose text holds every one
/// of `needles`, as (parameter count, plan), in custom and in generic plan mode each;
/// `arguments(parameter count)` are what each is explained with.
pub async fn plans(pool: &sqlx::PgPool, needles: &[&str], arguments: impl Fn(i32) -> String) -> Vec<(i32, String)> {
    let mut connection = pool.acquire().await.expect("the connection");
    let statements: Vec<(String, i32, String)> = sqlx::query_as(
        "SELECT name, cardinality(parameter_types), statement FROM pg_prepared_statements WHERE from_sql = false",
    )
    .fetch_all(&mut *connection)
    .await
    .expect("prepared statements");
    let mut plans = Vec::new();
    for (name, parameters, _) in statements
        .into_iter()
        .filter(|(_, _, text)| needles.iter().all(|needle| text.contains(needle)))
    {
        for mode in ["force_custom_plan", "force_generic_plan"] {
            sqlx::query("SELECT set_config('plan_cache_mode', $1, false)")
                .bind(mode)
                .execute(&mut *connection)
                .await
                .expect("plan cache mode");
            let explain = format!("EXPLAIN (COSTS OFF) EXECUTE \"{name}\"({})", arguments(parameters));
            let lines: Vec<String> = sqlx::query_scalar(&explain)
                .fetch_all(&mut *connection)
                .await
                .unwrap_or_else(|error| panic!("{explain}: {error}"));
            plans.push((parameters, format!("{mode}:\n{}", lines.join("\n"))));
        }
    }
    plans
}

/// Writes 2,000 streams (`kind`, `stream-1` to `stream-2000`) of 10 events each straight into
/// `schema`'s events table, positioned as the store positions them: enough rows for the planner
/// to plan the store's statements as it would in production, once [`analyze`]d.
pub async fn twenty_thousand_events(schema: &Shared) {
    let s = schema.schema();
    sqlx::query(&format!(
        "INSERT INTO \"{s}\".events (position, event_id, aggregate_type, aggregate_id, version, event_name,
                                    schema_version, payload, recorded_at)
         SELECT (pg_current_xact_id()::text::bigint << 20) | row_number() OVER (), gen_random_uuid(),
                'kind', 'stream-' || n, v, 'Numbered', 1, '{{}}', clock_timestamp()
         FROM generate_series(1, 2000) AS n, generate_series(1, 10) AS v"
    ))
    .execute(schema.pool())
    .await
    .expect("20,000 events");
}

/// `ANALYZE` of `tables` in `schema`.
pub async fn analyze(schema: &Shared, tables: &[&str]) {
    for table in tables {
        sqlx::query(&format!("ANALYZE \"{}\".{table}", schema.schema()))
            .execute(schema.pool())
            .await
            .expect("ANALYZE");
    }
}
