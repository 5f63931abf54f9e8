//! [`PostgresStore`]: the type, connecting and migrating; the [`EventStore`] methods live in
//! `append.rs` and `read.rs`, [`SnapshotStore`](es_core::SnapshotStore) in `snapshot.rs`.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use es_core::EventStream;
use es_core::{
    AppendOutcome, EventStore, ExpectedVersion, GlobalLog, Limits, LogFilter, LogPage, LogReplay, LogReplayFn,
    NewEvent, RecordedEvent, ReplayFn, StoreResult, StreamId, StreamSlice, Tail,
};
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{Connection, Executor, Row};
use uuid::Uuid;

use crate::error::PostgresError;
use crate::notify::Notifier;
use crate::options::PostgresOptions;
use crate::sql::{validate_schema_name, Statements, MAX_EVENTS_PER_TRANSACTION};
use crate::{append, read};

/// An event store in PostgreSQL: one append-only `events` table and one `snapshots` table in a
/// schema of your choice. Cloning it is cheap and shares the connection pool.
///
/// See the [crate documentation](crate) for the design and an example.
#[derive(Clone)]
pub struct PostgresStore {
    pub(crate) pool: PgPool,
    pub(crate) sql: Arc<Statements>,
    /// Wakes listeners after commits.
    pub(crate) notifier: Notifier,
    /// What an append may hold, within [`PostgresStore::MAX_LIMITS`].
    pub(crate) limits: Limits,
    /// The stores of the tenants opened so far (`es_core::tenancy`), each migrated once.
    pub(crate) tenants: crate::tenancy::OpenTenants,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.sql.schema)
            .field("pool", &self.pool)
            .field("limits", &self.limits)
            .finish()
    }
}

impl PostgresStore {
    /// The default schema.
    pub const DEFAULT_SCHEMA: &'static str = "public";

    /// The most [`PostgresStore::with_limits`] can allow, from what PostgreSQL itself takes:
    ///
    /// - **events per append: 2^20 - 1** (1,048,575), the most one transaction can number (a
    ///   position is `xid << 20 | n`); several appends in one transaction
    ///   ([`append_in_transaction`](PostgresStore::append_in_transaction)) share them, and the
    ///   append that would pass them is refused with
    ///   [`Limit::TransactionEvents`](es_core::Limit::TransactionEvents);
    /// - **payload and metadata: 256 MiB - 1** each, the largest `jsonb` value. The limit is on
    ///   the binary form, which can outgrow the text (an array of small numbers takes about
    ///   6 times its text): a payload the server still finds too large is refused as
    ///   [`StoreError::InvalidBatch`](es_core::StoreError::InvalidBatch), nothing written;
    /// - **bytes per append: 512 MiB**: a batch travels as one message of arrays, which
    ///   PostgreSQL takes up to 1 GiB;
    /// - **stream id: 2,048 bytes**: aggregate type and id are one entry of a unique b-tree
    ///   index, whose entries PostgreSQL limits to 2,704 bytes.
    pub const MAX_LIMITS: Limits = Limits::UNLIMITED
        .with_max_batch_events(MAX_EVENTS_PER_TRANSACTION)
        .with_max_payload_bytes((1 << 28) - 1)
        .with_max_metadata_bytes((1 << 28) - 1)
        .with_max_batch_bytes(512 << 20)
        .with_max_stream_id_bytes(2048);

    /// Connects to `url` (e.g. `postgres://user:password@host/database`) with the default
    /// [`PostgresOptions`] and uses the schema `public`: see [`PostgresStore::connect_with`].
    ///
    /// Fails within 5 seconds ([`PostgresOptions::DEFAULT_CONNECT_TIMEOUT`]) when the server
    /// cannot be reached, at once when it refuses, with an error naming the address and the
    /// cause.
    pub async fn connect(url: &str) -> Result<Self, PostgresError> {
        Self::connect_with(PostgresOptions::new(url)?).await
    }

    /// Connects with `options` and uses the schema `public`.
    ///
    /// One connection is opened first, within the options' connect timeout, and closed: a
    /// server that refuses it, a name that does not resolve, a wrong password or database fail
    /// at once with [`PostgresError::ConnectFailed`], and a server that does not answer in time
    /// with [`PostgresError::ConnectTimedOut`], both naming the address (never the password).
    /// The pool then opens its connections as operations need them; later outages are the
    /// pool's to wait out, and come as
    /// [`StoreError::Unavailable`](es_core::StoreError::Unavailable).
    ///
    /// To hand over a pool of your own instead, use [`PostgresStore::new`].
    pub async fn connect_with(options: PostgresOptions) -> Result<Self, PostgresError> {
        let address = options.address();
        let timeout = options.connect_timeout();
        match tokio::time::timeout(timeout, PgConnection::connect_with(&options.connect)).await {
            Err(_) => return Err(PostgresError::ConnectTimedOut { address, timeout }),
            Ok(Err(source)) => return Err(PostgresError::ConnectFailed { address, source }),
            Ok(Ok(first)) => {
                if let Err(error) = first.close().await {
                    tracing::debug!(%error, %address, "closing the first connection failed");
                }
            }
        }
        Ok(Self::new(options.pool.connect_lazy_with(options.connect)))
    }

    /// A store over `pool`, in the schema `public`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            sql: Arc::new(Statements::new(Self::DEFAULT_SCHEMA)),
            notifier: Notifier::default(),
            limits: Limits::DEFAULT,
            tenants: Default::default(),
        }
    }

    /// The same store in schema `name`, which must match `[a-z_][a-z0-9_]{0,62}` and not start
    /// with `pg_`. The schema is created by [`PostgresStore::migrate`].
    pub fn with_schema(self, name: &str) -> Result<Self, PostgresError> {
        validate_schema_name(name)?;
        Ok(Self {
            pool: self.pool,
            sql: Arc::new(Statements::new(name)),
            notifier: Notifier::with_interval(self.notifier.interval()),
            limits: self.limits,
            tenants: Default::default(),
        })
    }

    /// The same store (sharing its pool) with other [`Limits`], capped by
    /// [`PostgresStore::MAX_LIMITS`]: appends over them are refused with
    /// [`StoreError::LimitExceeded`](es_core::StoreError::LimitExceeded) before anything is sent
    /// to the server. The default is [`Limits::DEFAULT`], the same as every store's.
    /// [`EventStore::limits`] tells the limits applied.
    ///
    /// ```no_run
    /// use es_core::{EventStore, Limits};
    /// # async fn demo(store: es_postgres::PostgresStore) {
    /// let importer = store.with_limits(Limits::DEFAULT.with_max_batch_events(100_000));
    /// assert_eq!(importer.limits().max_batch_events, 100_000);
    /// # }
    /// ```
    pub fn with_limits(self, limits: Limits) -> Self {
        let applied = limits.capped_by(Self::MAX_LIMITS);
        if applied != limits {
            tracing::warn!(asked = ?limits, ?applied, "limits capped by what PostgreSQL can store");
        }
        Self {
            limits: applied,
            ..self
        }
    }

    /// The schema the store's tables live in.
    pub fn schema(&self) -> &str {
        &self.sql.schema
    }

    /// Runs `sql` (one or more statements, such as the `CREATE TABLE` of a read model) in one
    /// transaction with `search_path` set to the store's schema, as projection handlers run:
    /// a table it names without a schema is created (or found) beside the events, in a
    /// tenant's schema for a tenant's store. The pool's connections have the server's default
    /// `search_path`, so a table created through [`PostgresStore::pool`] without a schema
    /// lands in `public`, where handlers do not look.
    ///
    /// The statements go as they are, without bind parameters: for definitions written in
    /// the program, never for values from outside.
    ///
    /// The application reads the read model through [`PostgresStore::pool`], naming the
    /// table with the store's [`schema`](PostgresStore::schema), quoted:
    ///
    /// ```no_run
    /// # async fn tables(store: es_postgres::PostgresStore) -> Result<(), Box<dyn std::error::Error>> {
    /// store
    ///     .execute_in_schema("CREATE TABLE IF NOT EXISTS ticket_titles (id text PRIMARY KEY, title text NOT NULL)")
    ///     .await?;
    /// let select = format!("SELECT title FROM \"{}\".ticket_titles WHERE id = $1", store.schema());
    /// let title: Option<String> = sqlx::query_scalar(&select).bind("T-1").fetch_optional(store.pool()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn execute_in_schema(&self, sql: &str) -> Result<(), PostgresError> {
        let failed = |source| PostgresError::InSchema {
            schema: self.schema().to_owned(),
            source,
        };
        let mut transaction = self.pool.begin().await.map_err(failed)?;
        let search_path = format!("SET LOCAL search_path TO \"{}\"", self.schema());
        let ran = match sqlx::raw_sql(&search_path).execute(&mut *transaction).await {
            Ok(_) => sqlx::raw_sql(sql).execute(&mut *transaction).await,
            Err(error) => Err(error),
        };
        match ran {
            Ok(_) => transaction.commit().await.map_err(failed),
            Err(error) => {
                crate::fault::end_now(transaction, "failed statements in the schema").await;
                Err(failed(error))
            }
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the schema and its tables, or brings them up to date: applies, in order, each
    /// embedded migration not yet recorded in the schema's `es_migrations` table.
    ///
    /// Everything runs in one transaction holding an advisory lock keyed on the schema name, so
    /// processes that start at the same time are safe: one migrates, the others wait and then
    /// find nothing to do. Calling it again is a no-op. The database user needs the right to
    /// create the schema (or the schema must exist) and tables in it.
    ///
    /// It also checks that the cluster's transaction ids are ahead of the stored positions, and
    /// fails with [`PostgresError::TransactionIdsBehind`] when the data was restored into another
    /// cluster whose counter is behind (see the crate docs): call it at every start.
    pub async fn migrate(&self) -> Result<(), PostgresError> {
        let schema = self.schema();
        let setup = |source| PostgresError::MigrationSetup {
            schema: schema.to_owned(),
            source,
        };
        let mut tx = self.pool.begin().await.map_err(setup)?;
        match self.migrate_in(&mut tx).await {
            Ok(()) => tx.commit().await.map_err(setup),
            Err(error) => {
                crate::fault::end_now(tx, "a failed migration").await;
                Err(error)
            }
        }
    }

    /// The migration's work, within `tx`.
    async fn migrate_in(&self, tx: &mut sqlx::PgConnection) -> Result<(), PostgresError> {
        let schema = self.schema();
        let setup = |source| PostgresError::MigrationSetup {
            schema: schema.to_owned(),
            source,
        };
        sqlx::query(self.sql.migration_lock)
            .bind(format!("es-postgres migrations of schema {schema}"))
            .execute(&mut *tx)
            .await
            .map_err(setup)?;
        // Through `Executor::execute`, whose boxed future is `Send` for any lifetime: callers
        // may migrate inside their own `Send` futures (a tenant opened on first use).
        (&mut *tx)
            .execute(sqlx::raw_sql(&self.sql.ensure_schema))
            .await
            .map_err(setup)?;
        let applied: Vec<i64> = sqlx::query_scalar(&self.sql.applied_migrations)
            .fetch_all(&mut *tx)
            .await
            .map_err(setup)?;
        for (version, description, sql) in &self.sql.migrations {
            if applied.contains(version) {
                continue;
            }
            let failed = |source| PostgresError::Migration {
                schema: schema.to_owned(),
                version: *version,
                description,
                source,
            };
            (&mut *tx).execute(sqlx::raw_sql(sql)).await.map_err(failed)?;
            sqlx::query(&self.sql.record_migration)
                .bind(version)
                .bind(description)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            tracing::info!(schema, version, description, "applied migration");
        }
        let xids = sqlx::query(&self.sql.xid_check)
            .fetch_one(&mut *tx)
            .await
            .map_err(setup)?;
        let stored_xid: Option<i64> = xids.try_get("stored_xid").map_err(setup)?;
        let current_xid: i64 = xids.try_get("current_xid").map_err(setup)?;
        if let Some(stored_xid) = stored_xid.filter(|stored| *stored >= current_xid) {
            return Err(PostgresError::TransactionIdsBehind {
                schema: schema.to_owned(),
                stored_xid,
                current_xid,
            });
        }
        let known = |version: &i64| self.sql.migrations.iter().any(|(known, _, _)| known == version);
        if let Some(unknown) = applied.iter().find(|version| !known(version)) {
            tracing::warn!(
                schema,
                version = unknown,
                "schema has a migration this version of es-postgres does not know: it was migrated by newer code"
            );
        }
        Ok(())
    }
}

/// The trait's methods, each implemented in the module of its concern.
#[async_trait]
impl EventStore for PostgresStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendOutcome> {
        append::append(self, stream, expected, events).await
    }

    /// The limits of [`PostgresStore::with_limits`] ([`Limits::DEFAULT`] unless set).
    fn limits(&self) -> Limits {
        self.limits
    }

    fn read_stream<'a>(&'a self, stream: &'a StreamId, slice: StreamSlice) -> EventStream<'a> {
        read::read_stream(self, stream, slice)
    }

    async fn replay_stream(&self, stream: &StreamId, slice: StreamSlice, apply: &mut ReplayFn<'_>) -> StoreResult<()> {
        read::replay(self, stream, slice, apply, false).await
    }

    async fn replay_if_open(&self, stream: &StreamId, slice: StreamSlice, apply: &mut ReplayFn<'_>) -> StoreResult<()> {
        read::replay(self, stream, slice, apply, true).await
    }

    async fn read_event(&self, event_id: Uuid) -> StoreResult<Option<RecordedEvent>> {
        read::read_event(self, event_id).await
    }

    async fn stream_version(&self, stream: &StreamId) -> StoreResult<u64> {
        read::stream_version(self, stream).await
    }

    async fn stream_closure(&self, stream: &StreamId) -> StoreResult<Option<es_core::lifecycle::StreamClosed>> {
        crate::lifecycle::closure_on(self, &self.pool, stream).await
    }
}

/// The global order: `read_all` bounded by the oldest running transaction (see the crate docs).
#[async_trait]
impl GlobalLog for PostgresStore {
    async fn read_all(&self, after: u64, limit: usize) -> StoreResult<Vec<RecordedEvent>> {
        read::read_all(self, after, limit).await
    }

    async fn read_filtered(&self, after: u64, limit: usize, filter: &LogFilter) -> StoreResult<LogPage> {
        read::read_filtered(self, after, limit, filter).await
    }

    async fn replay_all(&self, after: u64, filter: &LogFilter, apply: &mut LogReplayFn<'_>) -> StoreResult<LogReplay> {
        read::replay_all(self, after, filter, apply).await
    }

    async fn tail(&self, after: u64) -> StoreResult<Tail> {
        read::tail(self, after).await
    }

    async fn unsettled(&self, after: u64) -> StoreResult<u64> {
        read::unsettled(self, after).await
    }

    async fn held_back_by(&self) -> StoreResult<Option<String>> {
        read::held_back_by(self).await
    }
}
