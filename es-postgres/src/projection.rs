//! Projections on PostgreSQL: checkpoints committed in the read model's own transaction, a
//! checked claim so one runner is active per projection, and LISTEN/NOTIFY wake-ups.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use es_core::{async_trait, CheckpointError, CheckpointStore, WakeUp};
use sqlx::postgres::{PgConnectOptions, PgListener};
use sqlx::{ConnectOptions, PgConnection, PgPool};
use uuid::Uuid;

use crate::error::PostgresError;
use crate::fault::{chain_is_transient, is_transient};
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
/// # Connections
///
/// Units of work run on connections of their own, outside the pool: a runner cancelled mid-batch
/// (a shutdown, an aborted task) drops its unit, and with it the connection, so the server rolls
/// the transaction back. A pooled connection would instead go back to the pool still inside the
/// transaction, and the next user of it would write into a transaction that never commits. These
/// connections name themselves in `pg_stat_activity.application_name`: `es claim
/// <schema>.<projection>` and `es unit <schema>.<projection>`.
///
/// # The claim
///
/// A runner claims a projection with a session advisory lock on a dedicated connection (so a
/// runner that dies releases it at once, and a waiting runner takes over within 250 ms), and
/// then raises the projection's `claim_epoch` in its checkpoint row. Every unit of work locks
/// that row `FOR UPDATE` and checks, in the same statement, that the epoch is still the
/// runner's and that its claim connection still holds the lock:
///
/// - the epoch changed: another runner claimed the projection; the unit is refused with
///   [`CheckpointError::ClaimLost`], and the runner stops without committing again;
/// - the lock is gone (the claim connection was cut) but nobody claimed since: the runner claims
///   again on a new connection and goes on.
///
/// A takeover raises the epoch with an `UPDATE` of the same row, so it waits for the unit in
/// flight, and every unit after it sees the new epoch: units of two runners never both commit
/// under the claim, whatever happens to the connections.
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
    projection: String,
    epoch: i64,
}

#[derive(Debug, Clone)]
struct CheckpointSql {
    begin: String,
    lock_row: String,
    take_claim: String,
    save: String,
    load: String,
}

/// Proof that this runner holds a projection: the advisory lock on a dedicated connection and
/// the claim epoch it raised. Dropping it closes the connection and so releases the lock.
#[derive(Debug)]
pub struct PostgresClaim {
    /// `None` after the connection failed, until the claim is regained.
    connection: Option<PgConnection>,
    projection: String,
    owner: Uuid,
    epoch: i64,
    /// The claim connection's server process, which holds the advisory lock.
    backend_pid: i32,
}

impl PostgresClaim {
    /// The runner's id, stored as `claim_owner` in the checkpoint row while it holds the claim.
    pub fn owner(&self) -> Uuid {
        self.owner
    }

    /// The claim epoch: raised by every runner that claims the projection.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }
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
                lock_row: format!(
                    "SELECT c.position, c.claim_epoch, c.claim_owner,
                            EXISTS (SELECT 1 FROM pg_locks l
                                    WHERE l.locktype = 'advisory' AND l.granted AND l.pid = $2 AND l.objsubid = 1
                                      AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended($3, 0))
                     FROM {s}.projection_checkpoints c WHERE c.projection = $1 FOR UPDATE OF c"
                ),
                take_claim: format!(
                    "INSERT INTO {s}.projection_checkpoints AS c (projection, position, claim_epoch, claim_owner, claimed_at)
                     VALUES ($1, 0, 1, $2, now())
                     ON CONFLICT (projection) DO UPDATE
                        SET claim_epoch = c.claim_epoch + 1, claim_owner = $2, claimed_at = now()
                     RETURNING c.claim_epoch, pg_backend_pid()"
                ),
                save: format!(
                    "UPDATE {s}.projection_checkpoints SET position = $2, updated_at = now()
                     WHERE projection = $1 AND claim_epoch = $3"
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
            tracing::debug!(%error, "LISTEN connection lost; relying on polling until it is back");
            tokio::time::sleep(CLAIM_RETRY).await;
        }
    }
}

/// Sorts a database error into an outage or a lasting failure.
fn checkpoint_error(error: sqlx::Error) -> CheckpointError {
    if is_transient(&error) {
        CheckpointError::unavailable(error)
    } else {
        CheckpointError::backend(error)
    }
}

fn out_of_range(what: &str, value: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::backend(format!("{what} {value} is out of range"))
}

impl PostgresCheckpoints {
    /// A new connection outside the pool, named `es <role> <schema>.<projection>` for
    /// `pg_stat_activity`.
    async fn connect(&self, role: &str, projection: &str) -> Result<PgConnection, CheckpointError> {
        let mut name = format!("es {role} {}.{projection}", self.schema);
        if name.len() > 63 {
            let mut end = 63;
            while !name.is_char_boundary(end) {
                end -= 1;
            }
            name.truncate(end);
        }
        let options: PgConnectOptions = (*self.pool.connect_options()).clone().application_name(&name);
        options.connect().await.map_err(checkpoint_error)
    }

    /// A connection inside a new transaction: an idle one if it still works, else a new one.
    async fn open_unit(&self, projection: &str) -> Result<PgConnection, CheckpointError> {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        if let Some(mut connection) = idle {
            // Simple-query protocol: both statements in one round trip.
            match sqlx::Executor::execute(&mut connection, self.sql.begin.as_str()).await {
                Ok(_) => return Ok(connection),
                Err(error) if is_transient(&error) => {
                    tracing::debug!(projection, %error, "an idle unit connection is gone; opening a new one");
                }
                Err(error) => return Err(checkpoint_error(error)),
            }
        }
        let mut connection = self.connect("unit", projection).await?;
        sqlx::Executor::execute(&mut connection, self.sql.begin.as_str())
            .await
            .map_err(checkpoint_error)?;
        Ok(connection)
    }

    fn keep_idle(&self, connection: PgConnection) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(connection);
    }

    /// Ends the transaction on `connection`, keeping the connection if that works.
    async fn roll_back(&self, mut connection: PgConnection) -> Result<(), CheckpointError> {
        match sqlx::Executor::execute(&mut connection, "ROLLBACK").await {
            Ok(_) => {
                self.keep_idle(connection);
                Ok(())
            }
            // The connection is dropped, which closes it.
            Err(error) => Err(checkpoint_error(error)),
        }
    }

    fn claim_key(&self, projection: &str) -> String {
        format!("es-postgres projection {} in schema {}", projection, self.schema)
    }

    /// Tries the advisory lock once on `connection`.
    async fn try_lock(&self, connection: &mut PgConnection, projection: &str) -> Result<bool, CheckpointError> {
        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(self.claim_key(projection))
            .fetch_one(connection)
            .await
            .map_err(checkpoint_error)
    }

    /// Raises the claim epoch for `owner`, on the connection that holds the lock; waits for a
    /// unit of the previous holder still in flight.
    async fn take_claim(
        &self,
        mut connection: PgConnection,
        projection: &str,
        owner: Uuid,
    ) -> Result<PostgresClaim, CheckpointError> {
        let (epoch, backend_pid): (i64, i32) = sqlx::query_as(&self.sql.take_claim)
            .bind(projection)
            .bind(owner)
            .fetch_one(&mut connection)
            .await
            .map_err(checkpoint_error)?;
        tracing::info!(projection, %owner, epoch, "claimed the projection");
        Ok(PostgresClaim {
            connection: Some(connection),
            projection: projection.to_owned(),
            owner,
            epoch,
            backend_pid,
        })
    }

    /// Claims the projection again after the claim's connection was lost, unless another
    /// runner holds it now.
    async fn regain(&self, claim: &mut PostgresClaim) -> Result<(), CheckpointError> {
        claim.connection = None;
        tracing::warn!(
            projection = claim.projection,
            "the claim's connection was lost; claiming again"
        );
        let mut connection = self.connect("claim", &claim.projection).await?;
        if !self.try_lock(&mut connection, &claim.projection).await? {
            return Err(CheckpointError::ClaimLost {
                reason: "the claim's connection was lost and another runner holds the projection now".into(),
            });
        }
        *claim = self.take_claim(connection, &claim.projection, claim.owner).await?;
        Ok(())
    }
}

#[async_trait]
impl CheckpointStore for PostgresCheckpoints {
    type Context = PgConnection;
    type Unit = PostgresUnit;
    type Claim = PostgresClaim;

    async fn claim(&self, projection: &str) -> Result<PostgresClaim, CheckpointError> {
        let mut connection = self.connect("claim", projection).await?;
        let mut waited = false;
        while !self.try_lock(&mut connection, projection).await? {
            if !waited {
                tracing::info!(projection, "another runner holds the projection; waiting to take over");
                waited = true;
            }
            tokio::time::sleep(CLAIM_RETRY).await;
        }
        if waited {
            tracing::info!(projection, "the previous runner is gone; taking the projection over");
        }
        self.take_claim(connection, projection, Uuid::now_v7()).await
    }

    async fn begin(&self, claim: &mut PostgresClaim) -> Result<(Self::Unit, u64), CheckpointError> {
        // Twice at most: a claim regained on the first pass is checked again on the second.
        for _ in 0..2 {
            let mut connection = self.open_unit(&claim.projection).await?;
            let row: Option<(i64, i64, Option<Uuid>, bool)> = sqlx::query_as(&self.sql.lock_row)
                .bind(&claim.projection)
                .bind(claim.backend_pid)
                .bind(self.claim_key(&claim.projection))
                .fetch_optional(&mut connection)
                .await
                .map_err(checkpoint_error)?;
            let Some((position, epoch, owner, lock_held)) = row else {
                self.roll_back(connection).await?;
                return Err(CheckpointError::ClaimLost {
                    reason: "the projection's checkpoint row was deleted".into(),
                });
            };
            if epoch != claim.epoch {
                self.roll_back(connection).await?;
                let owner = owner.map_or_else(|| "unknown".to_owned(), |owner| owner.to_string());
                return Err(CheckpointError::ClaimLost {
                    reason: format!(
                        "runner {owner} claimed it (claim {epoch}) after this runner {} (claim {})",
                        claim.owner, claim.epoch
                    ),
                });
            }
            if lock_held && claim.connection.is_some() {
                let position = u64::try_from(position).map_err(|_| out_of_range("checkpoint", position))?;
                let unit = PostgresUnit {
                    connection,
                    projection: claim.projection.clone(),
                    epoch,
                };
                return Ok((unit, position));
            }
            // Our row lock would block our own epoch update: release it before claiming again.
            self.roll_back(connection).await?;
            self.regain(claim).await?;
        }
        Err(CheckpointError::unavailable(
            "the claim was regained but its lock is not visible; trying again",
        ))
    }

    fn context<'u>(&self, unit: &'u mut Self::Unit) -> &'u mut PgConnection {
        &mut unit.connection
    }

    async fn commit(&self, mut unit: Self::Unit, position: u64) -> Result<(), CheckpointError> {
        let position = i64::try_from(position).map_err(|_| out_of_range("checkpoint", position))?;
        let saved = sqlx::query(&self.sql.save)
            .bind(&unit.projection)
            .bind(position)
            .bind(unit.epoch)
            .execute(&mut unit.connection)
            .await
            .map_err(checkpoint_error)?;
        if saved.rows_affected() != 1 {
            // Cannot happen while the row stays locked by this unit; refuse rather than guess.
            return Err(CheckpointError::ClaimLost {
                reason: "the checkpoint row no longer carries this runner's claim".into(),
            });
        }
        sqlx::Executor::execute(&mut unit.connection, "COMMIT")
            .await
            .map_err(checkpoint_error)?;
        self.keep_idle(unit.connection);
        Ok(())
    }

    async fn rollback(&self, unit: Self::Unit) -> Result<(), CheckpointError> {
        self.roll_back(unit.connection).await
    }

    async fn checkpoint(&self, projection: &str) -> Result<u64, CheckpointError> {
        let position: Option<i64> = sqlx::query_scalar(&self.sql.load)
            .bind(projection)
            .fetch_optional(&self.pool)
            .await
            .map_err(checkpoint_error)?;
        let position = position.unwrap_or(0);
        u64::try_from(position).map_err(|_| out_of_range("checkpoint", position))
    }

    fn is_transient(&self, error: &(dyn std::error::Error + 'static)) -> bool {
        chain_is_transient(error)
    }
}
