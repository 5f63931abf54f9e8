//! Projections on PostgreSQL: checkpoints committed in the read model's own transaction, a
//! claim so one runner is active per projection, and LISTEN/NOTIFY wake-ups.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use es_core::{async_trait, CheckpointStore, ProjectionError, WakeUp};
use sqlx::postgres::{PgConnectOptions, PgListener};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use crate::error::PostgresError;
use crate::PostgresStore;

/// How often a runner waiting for another runner's claim checks again.
const CLAIM_RETRY: Duration = Duration::from_millis(250);

/// Checkpoints of projections whose read models live in the same PostgreSQL database as the
/// events: each batch's read-model writes and its checkpoint commit in **one transaction**, so
/// a crash can neither lose an event nor apply one twice.
///
/// Handlers get the transaction's [`PgConnection`], with `search_path` set to the store's schema
/// (then `public`), so read-model tables can be named without a schema and live beside the
/// events.
///
/// Units of work run on connections of their own, outside the pool: a runner cancelled mid-batch
/// (a shutdown, an aborted task) drops its unit, and with it the connection, so the server rolls
/// the transaction back. A pooled connection would instead go back to the pool still inside the
/// transaction, and the next user of it would write into a transaction that never commits. The
/// claim that keeps one runner active per projection is a session advisory lock on
/// a dedicated connection outside the pool: it pins no pooled connection and is released when
/// the runner stops or its process dies.
#[derive(Debug, Clone)]
pub struct PostgresCheckpoints {
    pool: PgPool,
    schema: String,
    sql: CheckpointSql,
    /// Connections of finished units, for the next unit.
    idle: Arc<Mutex<Vec<PgConnection>>>,
}

/// One unit of work: an open transaction on a connection of its own. Dropping it closes the
/// connection, which rolls the transaction back.
#[derive(Debug)]
pub struct PostgresUnit {
    connection: PgConnection,
}

#[derive(Debug, Clone)]
struct CheckpointSql {
    begin: String,
    ensure_row: String,
    lock_row: String,
    save: String,
    load: String,
}

/// Proof that this runner holds a projection; dropping it closes the dedicated connection and
/// so releases the advisory lock.
#[derive(Debug)]
pub struct PostgresClaim {
    _connection: PgConnection,
}

impl PostgresStore {
    /// Checkpoints for projections of this store, in the store's schema (created by
    /// [`PostgresStore::migrate`]).
    pub fn checkpoints(&self) -> PostgresCheckpoints {
        let s = format!("\"{}\"", self.schema());
        PostgresCheckpoints {
            pool: self.pool().clone(),
            schema: self.schema().to_owned(),
            sql: CheckpointSql {
                begin: format!("BEGIN; SET LOCAL search_path TO {s}, public"),
                ensure_row: format!(
                    "INSERT INTO {s}.projection_checkpoints (projection, position) VALUES ($1, 0)
                     ON CONFLICT (projection) DO NOTHING"
                ),
                lock_row: format!("SELECT position FROM {s}.projection_checkpoints WHERE projection = $1 FOR UPDATE"),
                save: format!(
                    "UPDATE {s}.projection_checkpoints SET position = $2, updated_at = now() WHERE projection = $1"
                ),
                load: format!("SELECT position FROM {s}.projection_checkpoints WHERE projection = $1"),
            },
            idle: Arc::default(),
        }
    }

    /// A wake-up that fires when events are appended to this store (by any process), through
    /// PostgreSQL `LISTEN/NOTIFY`. Notifications are only a wake-up: runners poll as well, so a
    /// notification lost while disconnected delays, never loses, an event.
    pub async fn wake_up(&self) -> Result<PostgresWakeUp, PostgresError> {
        let mut listener = PgListener::connect_with(self.pool())
            .await
            .map_err(PostgresError::Connect)?;
        listener
            .listen(&notification_channel(self.schema()))
            .await
            .map_err(PostgresError::Connect)?;
        Ok(PostgresWakeUp { listener })
    }
}

/// The channel appends to schema `schema` notify: at most 63 bytes, PostgreSQL's identifier limit.
pub(crate) fn notification_channel(schema: &str) -> String {
    let mut channel = format!("es_events_{schema}");
    channel.truncate(63);
    channel
}

/// Wakes a projection runner when events are appended; see [`PostgresStore::wake_up`].
#[derive(Debug)]
pub struct PostgresWakeUp {
    listener: PgListener,
}

#[async_trait]
impl WakeUp for PostgresWakeUp {
    async fn wait(&mut self) {
        if let Err(error) = self.listener.recv().await {
            // The listener reconnects on the next call; meanwhile the runner's polling covers.
            tracing::warn!(%error, "LISTEN connection lost; relying on polling until it is back");
            tokio::time::sleep(CLAIM_RETRY).await;
        }
    }
}

impl PostgresCheckpoints {
    fn failed(projection: &str) -> impl Fn(sqlx::Error) -> ProjectionError + '_ {
        move |error| ProjectionError::checkpoint(projection, error)
    }

    fn idle_connection(&self) -> Option<PgConnection> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop()
    }

    fn keep_idle(&self, connection: PgConnection) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(connection);
    }

    fn claim_key(&self, projection: &str) -> String {
        format!("es-postgres projection {} in schema {}", projection, self.schema)
    }
}

#[async_trait]
impl CheckpointStore for PostgresCheckpoints {
    type Context = PgConnection;
    type Unit = PostgresUnit;
    type Claim = PostgresClaim;

    async fn claim(&self, projection: &str) -> Result<PostgresClaim, ProjectionError> {
        let failed = Self::failed(projection);
        let options: PgConnectOptions = (*self.pool.connect_options()).clone();
        let mut connection = options.connect().await.map_err(&failed)?;
        let key = self.claim_key(projection);
        let mut waited = false;
        loop {
            let claimed: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(&key)
                .fetch_one(&mut connection)
                .await
                .map_err(&failed)?;
            if claimed {
                if waited {
                    tracing::info!(projection, "took over the projection from the previous runner");
                }
                return Ok(PostgresClaim {
                    _connection: connection,
                });
            }
            if !waited {
                tracing::info!(projection, "another runner holds the projection; waiting to take over");
                waited = true;
            }
            tokio::time::sleep(CLAIM_RETRY).await;
            connection.ping().await.map_err(&failed)?;
        }
    }

    async fn begin(&self, projection: &str) -> Result<(Self::Unit, u64), ProjectionError> {
        let failed = Self::failed(projection);
        let mut connection = match self.idle_connection() {
            Some(connection) => connection,
            None => {
                let options: PgConnectOptions = (*self.pool.connect_options()).clone();
                options.connect().await.map_err(&failed)?
            }
        };
        // Simple-query protocol: both statements in one round trip.
        sqlx::Executor::execute(&mut connection, self.sql.begin.as_str())
            .await
            .map_err(&failed)?;
        sqlx::query(&self.sql.ensure_row)
            .bind(projection)
            .execute(&mut connection)
            .await
            .map_err(&failed)?;
        let position: i64 = sqlx::query_scalar(&self.sql.lock_row)
            .bind(projection)
            .fetch_one(&mut connection)
            .await
            .map_err(&failed)?;
        let position = u64::try_from(position)
            .map_err(|_| ProjectionError::checkpoint(projection, format!("negative checkpoint {position}")))?;
        Ok((PostgresUnit { connection }, position))
    }

    fn context<'u>(&self, unit: &'u mut Self::Unit) -> &'u mut PgConnection {
        &mut unit.connection
    }

    async fn commit(&self, mut unit: Self::Unit, projection: &str, position: u64) -> Result<(), ProjectionError> {
        let failed = Self::failed(projection);
        let position = i64::try_from(position)
            .map_err(|_| ProjectionError::checkpoint(projection, format!("checkpoint {position} out of range")))?;
        sqlx::query(&self.sql.save)
            .bind(projection)
            .bind(position)
            .execute(&mut unit.connection)
            .await
            .map_err(&failed)?;
        sqlx::Executor::execute(&mut unit.connection, "COMMIT")
            .await
            .map_err(&failed)?;
        self.keep_idle(unit.connection);
        Ok(())
    }

    async fn rollback(&self, mut unit: Self::Unit) {
        // A connection whose rollback fails is dropped, which closes it.
        match sqlx::Executor::execute(&mut unit.connection, "ROLLBACK").await {
            Ok(_) => self.keep_idle(unit.connection),
            Err(error) => tracing::debug!(%error, "rollback failed; closing the connection instead"),
        }
    }

    async fn checkpoint(&self, projection: &str) -> Result<u64, ProjectionError> {
        let position: Option<i64> = sqlx::query_scalar(&self.sql.load)
            .bind(projection)
            .fetch_optional(&self.pool)
            .await
            .map_err(Self::failed(projection))?;
        let position = position.unwrap_or(0);
        u64::try_from(position)
            .map_err(|_| ProjectionError::checkpoint(projection, format!("negative checkpoint {position}")))
    }
}
