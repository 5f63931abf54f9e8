//! [`PostgresStore`]: the [`EventStore`] and [`SnapshotStore`] implementation.

use std::fmt;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use es_core::{
    AppendOutcome, ConcurrencyConflict, EventStore, ExpectedVersion, NewEvent, RecordedEvent, ReplayedEvent, Snapshot,
    SnapshotStore, StoreError, StreamId, StreamSlice, Tail,
};
use futures_core::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Executor, Postgres, Row};
use uuid::Uuid;

use crate::error::PostgresError;
use crate::row::{negative_version, recorded_event, replayed_event, Batch};
use crate::sql::{
    validate_schema_name, Statements, EVENT_ID_CONSTRAINT, MAX_EVENTS_PER_TRANSACTION, STREAM_VERSION_CONSTRAINT,
};

/// How many times an append whose expectation still holds after losing a race on a version
/// (`Any`, `StreamExists`) is retried before the conflict is returned.
const MAX_APPEND_ATTEMPTS: u32 = 16;

/// The SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";
/// `invalid_text_representation`: the server refused a payload or metadata as JSON.
const INVALID_TEXT_REPRESENTATION: &str = "22P02";

/// An event store in PostgreSQL: one append-only `events` table and one `snapshots` table in a
/// schema of your choice. Cloning it is cheap and shares the connection pool.
///
/// See the [crate documentation](crate) for the design and an example.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    sql: Arc<Statements>,
    /// Set while a wake-up for listeners is queued but not yet sent.
    wake_up_queued: Arc<AtomicBool>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.sql.schema)
            .field("pool", &self.pool)
            .finish()
    }
}

impl PostgresStore {
    /// The default schema.
    pub const DEFAULT_SCHEMA: &'static str = "public";

    /// Connects a pool to `url` (e.g. `postgres://user:password@host/database`) and uses the
    /// schema `public`. The pool has sqlx's defaults except that it does not ping connections
    /// before handing them out (a round trip per operation).
    ///
    /// To tune the pool (size, timeouts), build a [`PgPool`] yourself and use
    /// [`PostgresStore::new`].
    pub async fn connect(url: &str) -> Result<Self, PostgresError> {
        // No ping before each acquire: it would double the round trips of every append. A dead
        // connection surfaces as an error on use, like any other connection failure.
        let pool = PgPoolOptions::new()
            .test_before_acquire(false)
            .connect(url)
            .await
            .map_err(PostgresError::Connect)?;
        Ok(Self::new(pool))
    }

    /// A store over `pool`, in the schema `public`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            sql: Arc::new(Statements::new(Self::DEFAULT_SCHEMA)),
            wake_up_queued: Arc::default(),
        }
    }

    /// The same store in schema `name`, which must match `[a-z_][a-z0-9_]{0,62}` and not start
    /// with `pg_`. The schema is created by [`PostgresStore::migrate`].
    pub fn with_schema(self, name: &str) -> Result<Self, PostgresError> {
        validate_schema_name(name)?;
        Ok(Self {
            pool: self.pool,
            sql: Arc::new(Statements::new(name)),
            wake_up_queued: Arc::default(),
        })
    }

    /// The schema the store's tables live in.
    pub fn schema(&self) -> &str {
        &self.sql.schema
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
        sqlx::query(self.sql.migration_lock)
            .bind(format!("es-postgres migrations of schema {schema}"))
            .execute(&mut *tx)
            .await
            .map_err(setup)?;
        sqlx::raw_sql(&self.sql.ensure_schema)
            .execute(&mut *tx)
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
            sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(failed)?;
            sqlx::query(&self.sql.record_migration)
                .bind(version)
                .bind(description)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            tracing::info!(schema, version, description, "applied migration");
        }
        let (stored_xid, current_xid): (Option<i64>, i64) = sqlx::query_as(&self.sql.xid_check)
            .fetch_one(&mut *tx)
            .await
            .map_err(setup)?;
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
        tx.commit().await.map_err(setup)
    }

    /// Appends `events` to `stream` inside the caller's open transaction `conn`, with the same
    /// checks as [`EventStore::append`]; they become visible when the caller commits.
    ///
    /// For tests that need an append held open or rolled back. Beware, in production this holds
    /// back [`EventStore::read_all`] for every reader until the transaction ends (see the crate
    /// docs). Several appends in one transaction are numbered one after the other. The append
    /// is refused with [`PostgresError::StaleTransaction`] if the transaction already had a
    /// transaction id before the stream's last event was committed. A lost race on a version
    /// aborts the caller's transaction and is reported as a conflict, without retries.
    #[cfg(feature = "test-support")]
    pub async fn append_in_transaction(
        &self,
        conn: &mut sqlx::PgConnection,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        let batch = Batch::new(stream, events)?;
        match self.execute_append(conn, stream, expected, &batch).await {
            Ok(verdict) => verdict.into_outcome(stream, expected, batch.len()),
            Err(error) => match self.explain_failure(error, stream, &batch).await {
                Failure::VersionTaken(actual) => Err(conflict(stream, expected, actual)),
                Failure::Final(error) => Err(error),
            },
        }
    }

    /// Tells listeners ([`PostgresStore::wake_up`]) that events were committed, from a task of
    /// its own. NOTIFY takes a database-wide lock at commit and holds it through the WAL flush:
    /// sent inside each append, it would make all appends queue behind each other. Sent apart,
    /// one at a time per store, a burst of appends costs one notification, and every commit is
    /// still followed by a notification sent after it.
    fn wake_listeners(&self) {
        if self.wake_up_queued.swap(true, Ordering::AcqRel) {
            return; // the queued notification has not been sent yet: it covers this commit too
        }
        let (pool, queued) = (self.pool.clone(), Arc::clone(&self.wake_up_queued));
        let channel = self.sql.channel.clone();
        tokio::spawn(async move {
            // Commits from here on queue another notification.
            queued.store(false, Ordering::Release);
            let sent = sqlx::query("SELECT pg_notify($1, '')")
                .bind(&channel)
                .execute(&pool)
                .await;
            if let Err(error) = sent {
                // Runners poll as well: a lost wake-up costs latency, never an event.
                tracing::debug!(%error, channel, "could not notify listeners");
            }
        });
    }

    async fn execute_append<'c, E>(
        &self,
        executor: E,
        stream: &StreamId,
        expected: ExpectedVersion,
        batch: &Batch,
    ) -> Result<Verdict, sqlx::Error>
    where
        E: Executor<'c, Database = Postgres>,
    {
        let (kind, exact) = match expected {
            ExpectedVersion::Any => (0, 0),
            ExpectedVersion::NoStream => (1, 0),
            ExpectedVersion::StreamExists => (2, 0),
            // A version beyond i64 cannot be stored, so no stream is at it: -1 never matches.
            ExpectedVersion::Exact(version) => (3, i64::try_from(version).unwrap_or(-1)),
        };
        let query = sqlx::query(&self.sql.append)
            .bind(stream.aggregate_type.as_str())
            .bind(stream.aggregate_id.as_str())
            .bind(kind)
            .bind(exact);
        let row = batch.bind(query).fetch_one(executor).await?;
        Ok(Verdict {
            current: row.try_get("cur_version")?,
            accepted: row.try_get("accepted")?,
            fresh: row.try_get("fresh")?,
            fits: row.try_get("fits")?,
            inserted: row.try_get("inserted")?,
        })
    }

    /// Turns a failed append statement into the error to return, reading what it needs (the
    /// actual version, the duplicate id) on the pool: only this failure path pays the query.
    async fn explain_failure(&self, error: sqlx::Error, stream: &StreamId, batch: &Batch) -> Failure {
        if let Some(db) = error
            .as_database_error()
            .filter(|db| db.code().as_deref() == Some(INVALID_TEXT_REPRESENTATION))
        {
            return Failure::Final(StoreError::InvalidBatch {
                stream: stream.clone(),
                reason: format!("a payload is not valid JSON: {}", db.message()),
            });
        }
        let constraint = error
            .as_database_error()
            .filter(|db| db.code().as_deref() == Some(UNIQUE_VIOLATION))
            .and_then(|db| db.constraint())
            .map(str::to_owned);
        match constraint.as_deref() {
            Some(STREAM_VERSION_CONSTRAINT) => match self.stream_version(stream).await {
                Ok(actual) => Failure::VersionTaken(actual),
                Err(error) => Failure::Final(error),
            },
            Some(EVENT_ID_CONSTRAINT) => Failure::Final(self.duplicate_event_id(error, stream, batch).await),
            _ => Failure::Final(StoreError::backend(error)),
        }
    }

    async fn duplicate_event_id(&self, error: sqlx::Error, stream: &StreamId, batch: &Batch) -> StoreError {
        let stored: Result<Option<Uuid>, _> = sqlx::query_scalar(&self.sql.existing_event_id)
            .bind(batch.ids.as_slice())
            .fetch_optional(&self.pool)
            .await;
        let event_id = match stored {
            Ok(Some(event_id)) => Some(event_id),
            Ok(None) => repeated_id(&batch.ids),
            Err(lookup) => return StoreError::backend(lookup),
        };
        match event_id {
            Some(event_id) => StoreError::DuplicateEventId {
                stream: stream.clone(),
                event_id,
            },
            // The clashing row is not visible: it was written earlier in the caller's (now
            // aborted) transaction. Report the database's error as it is.
            None => StoreError::backend(error),
        }
    }
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        let batch = Batch::new(stream, events)?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let error = match self.execute_append(&self.pool, stream, expected, &batch).await {
                Ok(verdict) => {
                    let outcome = verdict.into_outcome(stream, expected, batch.len())?;
                    if outcome.new_version > outcome.previous_version {
                        self.wake_listeners();
                    }
                    return Ok(outcome);
                }
                Err(error) => error,
            };
            match self.explain_failure(error, stream, &batch).await {
                // Another writer took the version between our read and our insert. Nothing was
                // written; if the expectation still holds (Any, StreamExists), go again.
                Failure::VersionTaken(actual) if expected.accepts(actual) && attempts < MAX_APPEND_ATTEMPTS => {
                    tracing::debug!(stream = %stream, attempts, "lost a race on a version; appending again");
                }
                Failure::VersionTaken(actual) => return Err(conflict(stream, expected, actual)),
                Failure::Final(error) => return Err(error),
            }
        }
    }

    fn read_stream<'a>(
        &'a self,
        stream: &'a StreamId,
        slice: StreamSlice,
    ) -> BoxStream<'a, Result<RecordedEvent, StoreError>> {
        let to_version = slice.to_version.map_or(i64::MAX, saturating_i64);
        sqlx::query(&self.sql.read_stream)
            .bind(stream.aggregate_type.as_str())
            .bind(stream.aggregate_id.as_str())
            .bind(saturating_i64(slice.from_version))
            .bind(to_version)
            .bind(slice.recorded_until)
            .fetch(&self.pool)
            .map(move |row| match row {
                Ok(row) => recorded_event(&row),
                Err(error) => Err(StoreError::backend(error)),
            })
            .boxed()
    }

    async fn replay_stream(
        &self,
        stream: &StreamId,
        slice: StreamSlice,
        apply: &mut (dyn for<'e> FnMut(ReplayedEvent<'e>) -> ControlFlow<()> + Send),
    ) -> Result<(), StoreError> {
        let to_version = slice.to_version.map_or(i64::MAX, saturating_i64);
        let mut rows = sqlx::query(&self.sql.replay_stream)
            .bind(stream.aggregate_type.as_str())
            .bind(stream.aggregate_id.as_str())
            .bind(saturating_i64(slice.from_version))
            .bind(to_version)
            .bind(slice.recorded_until)
            .fetch(&self.pool);
        while let Some(row) = rows.try_next().await.map_err(StoreError::backend)? {
            if apply(replayed_event(&row, stream)?).is_break() {
                break;
            }
        }
        Ok(())
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64, StoreError> {
        let version: Option<i64> = sqlx::query_scalar(&self.sql.stream_version)
            .bind(stream.aggregate_type.as_str())
            .bind(stream.aggregate_id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::backend)?;
        match version {
            None => Ok(0),
            Some(version) => u64::try_from(version).map_err(|_| negative_version(stream, version)),
        }
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        // Positions are positive i64: nothing lies beyond i64::MAX.
        let (Ok(after), Ok(limit @ 1..)) = (i64::try_from(after), i64::try_from(limit)) else {
            return Ok(Vec::new());
        };
        let mut rows = sqlx::query(&self.sql.read_all)
            .bind(after)
            .bind(limit)
            .fetch(&self.pool);
        let mut events = Vec::with_capacity(usize::try_from(limit.min(1024)).unwrap_or(0));
        while let Some(row) = rows.try_next().await.map_err(StoreError::backend)? {
            events.push(recorded_event(&row)?);
        }
        Ok(events)
    }

    async fn tail(&self, after: u64) -> Result<Tail, StoreError> {
        let Ok(db_after) = i64::try_from(after) else {
            return Ok(Tail {
                events: 0,
                head_position: after,
                head_recorded_at: None,
            });
        };
        let row = sqlx::query(&self.sql.tail)
            .bind(db_after)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::backend)?;
        let count: i64 = row.try_get("events").map_err(StoreError::backend)?;
        let head: Option<i64> = row.try_get("position").map_err(StoreError::backend)?;
        let head_recorded_at: Option<DateTime<Utc>> = row.try_get("recorded_at").map_err(StoreError::backend)?;
        let unexpected = |what: &str| StoreError::from(PostgresError::Unexpected(format!("negative {what} in tail")));
        Ok(Tail {
            events: u64::try_from(count).map_err(|_| unexpected("count"))?,
            head_position: match head {
                Some(head) => u64::try_from(head).map_err(|_| unexpected("position"))?,
                None => after,
            },
            head_recorded_at,
        })
    }
}

#[async_trait]
impl SnapshotStore for PostgresStore {
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let Snapshot {
            stream,
            version,
            revision,
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
        let state = String::from_utf8(state).map_err(|_| PostgresError::SnapshotNotUtf8 {
            stream: stream.clone(),
            version,
        })?;
        sqlx::query(&self.sql.save_snapshot)
            .bind(stream.aggregate_type.as_str())
            .bind(stream.aggregate_id.as_str())
            .bind(db_version)
            .bind(db_revision)
            .bind(state)
            .bind(taken_at)
            .execute(&self.pool)
            .await
            .map_err(StoreError::backend)?;
        Ok(())
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        let row = sqlx::query(&self.sql.load_snapshot)
            .bind(stream.aggregate_type.as_str())
            .bind(stream.aggregate_id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::backend)?;
        let Some(row) = row else { return Ok(None) };
        let version: i64 = row.try_get("version").map_err(StoreError::backend)?;
        let version = u64::try_from(version).map_err(|_| negative_version(stream, version))?;
        let corrupt = |reason: String| StoreError::Corrupt {
            stream: stream.clone(),
            version,
            reason,
        };
        let revision: i32 = row
            .try_get("revision")
            .map_err(|e| corrupt(format!("snapshot revision: {e}")))?;
        let revision =
            u32::try_from(revision).map_err(|_| corrupt(format!("negative snapshot revision {revision}")))?;
        let state: String = row
            .try_get("state")
            .map_err(|e| corrupt(format!("snapshot state: {e}")))?;
        let taken_at: DateTime<Utc> = row
            .try_get("taken_at")
            .map_err(|e| corrupt(format!("snapshot time: {e}")))?;
        Ok(Some(Snapshot {
            stream: stream.clone(),
            version,
            revision,
            state: state.into_bytes(),
            taken_at,
        }))
    }
}

/// What the append statement found and did.
struct Verdict {
    /// The stream's version as the statement read it.
    current: i64,
    /// Whether the expectation held.
    accepted: bool,
    /// Whether the transaction is not older than the stream's last event.
    fresh: bool,
    /// Whether the batch fit the transaction's remaining positions.
    fits: bool,
    /// How many events were inserted.
    inserted: i64,
}

impl Verdict {
    fn into_outcome(
        self,
        stream: &StreamId,
        expected: ExpectedVersion,
        len: usize,
    ) -> Result<AppendOutcome, StoreError> {
        let current = u64::try_from(self.current).map_err(|_| negative_version(stream, self.current))?;
        if !self.accepted {
            return Err(conflict(stream, expected, current));
        }
        if !self.fits {
            return Err(PostgresError::BatchTooLarge {
                stream: stream.clone(),
                len,
                max: MAX_EVENTS_PER_TRANSACTION,
            }
            .into());
        }
        if !self.fresh {
            return Err(PostgresError::StaleTransaction { stream: stream.clone() }.into());
        }
        if usize::try_from(self.inserted).ok() != Some(len) {
            let message = format!("inserted {} of {len} events into {stream}", self.inserted);
            return Err(PostgresError::Unexpected(message).into());
        }
        Ok(AppendOutcome {
            previous_version: current,
            new_version: current + len as u64,
        })
    }
}

/// A failed append statement, explained.
enum Failure {
    /// The unique (stream, version) constraint fired: another writer committed first. The
    /// stream's version after that.
    VersionTaken(u64),
    /// The error to return.
    Final(StoreError),
}

fn conflict(stream: &StreamId, expected: ExpectedVersion, actual: u64) -> StoreError {
    tracing::debug!(stream = %stream, %expected, actual, "append refused: concurrency conflict");
    StoreError::Conflict(ConcurrencyConflict {
        stream: stream.clone(),
        expected,
        actual,
    })
}

/// The first id that occurs twice in `ids`.
fn repeated_id(ids: &[Uuid]) -> Option<Uuid> {
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    ids.iter().copied().find(|id| !seen.insert(*id))
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
