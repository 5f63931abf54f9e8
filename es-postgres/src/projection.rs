//! Projections on PostgreSQL: checkpoints committed in the read model's own transaction, a
//! checked claim so one runner is active per projection, and LISTEN/NOTIFY wake-ups.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use es_core::{async_trait, CheckpointError, CheckpointStore, ClaimStatus, ParkedEvent};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::fault::{is_transient, session_ended};
use crate::parking;
use crate::sql::Statements;
use crate::PostgresStore;

/// How often a runner waiting for another runner's claim checks again.
const CLAIM_RETRY: Duration = Duration::from_millis(250);

/// Checkpoints of projections whose read models live in the same PostgreSQL database as the
/// events: each batch's read-model writes and its checkpoint commit in **one transaction**, so
/// a crash can neither lose an event nor apply one twice.
///
/// Handlers get the transaction's [`PgConnection`], with `search_path` set to the store's schema
/// **alone**, so read-model tables are named without a schema and live beside the events (a
/// tenant's beside the tenant's). Create them with [`PostgresStore::execute_in_schema`]: a table
/// created through [`PostgresStore::pool`] without a schema lands in `public`, where handlers
/// do not look (so no read model is shared by every tenant unnoticed); name objects of `public`
/// (an extension's functions) as `public.name`.
///
/// # The claim
///
/// A runner claims a projection with a session advisory lock on a connection of its own,
/// outside the pool, and raises the projection's `claim_epoch` in its checkpoint row. Its units
/// of work run on **that same connection**: a unit can only commit on a live connection that
/// holds the lock, and since PostgreSQL gives the lock to another session only once this one is
/// gone (and its open transaction with it), units of two runners never both commit, whatever
/// happens to the connections. Each unit also checks that the epoch is still the runner's when
/// it begins, and saves the checkpoint only under that epoch.
///
/// When the connection is cut, the next unit claims again on a new connection if no other
/// runner claimed the projection meanwhile (its owner is still this runner); otherwise the
/// runner stops with [`CheckpointError::ClaimLost`]. A runner that dies releases the lock with its connection,
/// and a waiting runner takes over within 250 ms.
///
/// A runner cancelled mid-batch (a shutdown, an aborted task) drops its unit, and with it the
/// connection, so the server rolls the transaction back; a pooled connection would instead go
/// back to the pool still inside the transaction. The claim's connection names itself in
/// `pg_stat_activity.application_name` as `es claim <schema>.<projection>`.
///
/// [`claim_status`](CheckpointStore::claim_status) looks the lock up in `pg_locks` (any
/// session, any process, this database) without taking it. A runner whose process died shows
/// as holding the claim until the server notices its connection is gone, just as long as it
/// keeps other runners waiting.
///
/// # Units of work stay out of readers' way until they write
///
/// [`read_all`](es_core::GlobalLog::read_all) returns only events below the oldest
/// transaction that holds a transaction id (see the crate docs), so a unit must not take one
/// before it needs to. A unit begins with a transaction-scoped advisory lock on a key of its
/// own (`pg_advisory_xact_lock`, the two-key form: never the claim's lock), which serializes
/// the units of one projection, and then reads the checkpoint row without locking it: neither
/// assigns a transaction id. So while a batch's handlers only read (or wait on something
/// else), every reader of the global order goes on. The unit gets its id at its first write
/// (a handler's, a parked event, at the latest the checkpoint's save at commit), and from then
/// until it ends, events appended after that write reach no reader: keep what a batch does
/// after its first write short ([`RunnerOptions::batch_time_budget`](es_core::RunnerOptions)).
///
/// # Parked events
///
/// Events the runner parks ([`FailurePolicy::Park`](es_core::FailurePolicy::Park)) go to the
/// `parked_events` table in the unit's transaction, so they commit with the checkpoint that
/// passes them, and a retried one leaves the table in the transaction of its handler's writes.
/// Listing them, asking for a retry and dropping one run on the pool, outside any unit.
#[derive(Debug, Clone)]
pub struct PostgresCheckpoints {
    pool: PgPool,
    schema: String,
    sql: Arc<Statements>,
}

/// Where a claim keeps its connection while no unit of work uses it.
type ConnectionSlot = Arc<Mutex<Option<PgConnection>>>;

/// One unit of work: an open transaction on the claim's connection. Dropping it closes the
/// connection, which rolls the transaction back (and releases the claim).
#[derive(Debug)]
pub struct PostgresUnit {
    connection: PgConnection,
    /// Where the connection goes back after the unit.
    slot: ConnectionSlot,
    projection: String,
    epoch: i64,
}

/// Proof that this runner holds a projection: the advisory lock on its connection and the
/// claim epoch it raised. Dropping it closes the connection and so releases the lock.
#[derive(Debug)]
pub struct PostgresClaim {
    /// The connection holding the lock; empty while a unit uses it, or after it was lost.
    slot: ConnectionSlot,
    projection: String,
    owner: Uuid,
    epoch: i64,
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

    fn take_connection(&self) -> Option<PgConnection> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl PostgresUnit {
    /// Gives the connection back to its claim, for the next unit.
    fn release(self) {
        release(&self.slot, self.connection);
    }
}

/// Puts a claim's connection back into its slot.
fn release(slot: &ConnectionSlot, connection: PgConnection) {
    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(connection);
}

impl PostgresStore {
    /// Checkpoints for projections of this store, in the store's schema (created by
    /// [`PostgresStore::migrate`]).
    pub fn checkpoints(&self) -> PostgresCheckpoints {
        PostgresCheckpoints {
            pool: self.pool().clone(),
            schema: self.schema().to_owned(),
            sql: Arc::clone(&self.sql),
        }
    }
}

/// Sorts a database error into an outage or a lasting failure.
pub(crate) fn checkpoint_error(error: sqlx::Error) -> CheckpointError {
    let transient = is_transient(&error);
    CheckpointError::from_backend(error, transient)
}

pub(crate) fn out_of_range(what: &str, value: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::backend(format!("{what} {value} is out of range"))
}

impl PostgresCheckpoints {
    /// A new connection outside the pool, named `es claim <schema>.<projection>` for
    /// `pg_stat_activity`.
    async fn connect(&self, projection: &str) -> Result<PgConnection, CheckpointError> {
        let mut name = format!("es claim {}.{projection}", self.schema);
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

    fn claim_key(&self, projection: &str) -> String {
        format!("es-postgres projection {} in schema {}", projection, self.schema)
    }

    /// The key of the lock that serializes the units of work of `projection`: another text than
    /// the claim's, hashed into the two-key space of advisory locks, so never the claim's lock.
    fn unit_key(&self, projection: &str) -> String {
        format!(
            "es-postgres units of projection {} in schema {}",
            projection, self.schema
        )
    }

    /// Tries the advisory lock once on `connection`.
    async fn try_lock(&self, connection: &mut PgConnection, projection: &str) -> Result<bool, CheckpointError> {
        sqlx::query_scalar(self.sql.checkpoints.try_lock)
            .bind(self.claim_key(projection))
            .fetch_one(connection)
            .await
            .map_err(checkpoint_error)
    }

    /// Raises the claim epoch for `owner` on `connection`, which holds the lock.
    async fn raise_epoch(
        &self,
        connection: &mut PgConnection,
        projection: &str,
        owner: Uuid,
    ) -> Result<i64, CheckpointError> {
        let epoch = sqlx::query_scalar(&self.sql.checkpoints.take_claim)
            .bind(projection)
            .bind(owner)
            .fetch_one(connection)
            .await
            .map_err(checkpoint_error)?;
        tracing::info!(projection, %owner, epoch, "claimed the projection");
        Ok(epoch)
    }

    /// Claims the projection again on a new connection after the claim's connection was lost,
    /// unless another runner claimed it meanwhile (even one that is gone again: its work
    /// happened after ours, and this runner must not resume as if it had not). Returns the new
    /// connection, inside a transaction.
    ///
    /// "Another runner" is told by the claim's owner, which only a claim changes, not by the
    /// epoch, which a re-claim of ours whose answer was lost may have raised.
    async fn reclaim(&self, claim: &mut PostgresClaim) -> Result<PgConnection, CheckpointError> {
        tracing::warn!(
            projection = claim.projection,
            "the claim's connection was lost; claiming again"
        );
        let mut connection = self.connect(&claim.projection).await?;
        if !self.try_lock(&mut connection, &claim.projection).await? {
            // Either another runner claimed the projection, or the server has not yet noticed
            // that our old connection is gone (a half-open socket) and still holds its lock.
            let owner: Option<Option<Uuid>> = sqlx::query_scalar(&self.sql.checkpoints.owner)
                .bind(&claim.projection)
                .fetch_optional(&mut connection)
                .await
                .map_err(checkpoint_error)?;
            if owner.flatten() == Some(claim.owner) {
                return Err(CheckpointError::unavailable(
                    "the claim's old connection still holds the lock on the server; waiting for the server to drop it",
                ));
            }
            return Err(CheckpointError::ClaimLost {
                reason: "the claim's connection was lost and another runner holds the projection now".into(),
            });
        }
        let regained: Option<i64> = sqlx::query_scalar(&self.sql.checkpoints.retake_claim)
            .bind(&claim.projection)
            .bind(claim.owner)
            .fetch_optional(&mut connection)
            .await
            .map_err(checkpoint_error)?;
        // Without the epoch, the connection (and the lock) is dropped on return.
        let Some(epoch) = regained else {
            return Err(CheckpointError::ClaimLost {
                reason: "the claim's connection was lost and another runner claimed the projection meanwhile".into(),
            });
        };
        tracing::info!(projection = claim.projection, owner = %claim.owner, epoch, "claimed the projection again");
        claim.epoch = epoch;
        sqlx::Executor::execute(&mut connection, self.sql.checkpoints.begin.as_str())
            .await
            .map_err(checkpoint_error)?;
        Ok(connection)
    }

    /// The claim's connection inside a new transaction; claims again if the connection is gone.
    async fn open_unit(&self, claim: &mut PostgresClaim) -> Result<PgConnection, CheckpointError> {
        let Some(mut connection) = claim.take_connection() else {
            return self.reclaim(claim).await;
        };
        // Simple-query protocol: both statements in one round trip.
        match sqlx::Executor::execute(&mut connection, self.sql.checkpoints.begin.as_str()).await {
            Ok(_) => Ok(connection),
            Err(error) if session_ended(&error) => {
                // The lock went with the session: close what is left of it, then claim again.
                drop(connection);
                self.reclaim(claim).await
            }
            Err(error) => {
                // The session (and its lock) lives on: keep it for the next unit.
                release(&claim.slot, connection);
                Err(checkpoint_error(error))
            }
        }
    }
}

#[async_trait]
impl CheckpointStore for PostgresCheckpoints {
    type Context = PgConnection;
    type Unit = PostgresUnit;
    type Claim = PostgresClaim;

    async fn claim(&self, projection: &str) -> Result<PostgresClaim, CheckpointError> {
        let mut connection = self.connect(projection).await?;
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
        let owner = Uuid::now_v7();
        let epoch = self.raise_epoch(&mut connection, projection, owner).await?;
        Ok(PostgresClaim {
            slot: Arc::new(Mutex::new(Some(connection))),
            projection: projection.to_owned(),
            owner,
            epoch,
        })
    }

    /// Opens the unit's transaction, takes the projection's unit lock (transaction-scoped,
    /// advisory: no transaction id) and reads the checkpoint and the claim epoch. The unit gets a
    /// transaction id only when something writes in it; see [`PostgresCheckpoints`].
    async fn begin(&self, claim: &mut PostgresClaim) -> Result<(Self::Unit, u64), CheckpointError> {
        let mut connection = self.open_unit(claim).await?;
        // On failure the connection is dropped (closed), which ends the transaction; the next
        // unit claims again.
        sqlx::query(self.sql.checkpoints.lock_unit)
            .bind(self.unit_key(&claim.projection))
            .execute(&mut connection)
            .await
            .map_err(checkpoint_error)?;
        let row: Option<(i64, i64, Option<Uuid>)> = sqlx::query_as(&self.sql.checkpoints.read_row)
            .bind(&claim.projection)
            .fetch_optional(&mut connection)
            .await
            .map_err(checkpoint_error)?;
        let unit = PostgresUnit {
            connection,
            slot: Arc::clone(&claim.slot),
            projection: claim.projection.clone(),
            epoch: claim.epoch,
        };
        let lost = match row {
            Some((position, epoch, _)) if epoch == claim.epoch => {
                let position = u64::try_from(position).map_err(|_| out_of_range("checkpoint", position))?;
                return Ok((unit, position));
            }
            Some((_, epoch, owner)) => {
                let owner = owner.map_or_else(|| "unknown".to_owned(), |owner| owner.to_string());
                format!(
                    "runner {owner} claimed it (claim {epoch}) after this runner {} (claim {})",
                    claim.owner, claim.epoch
                )
            }
            None => "the projection's checkpoint row was deleted".to_owned(),
        };
        // Not this runner's any more: close the connection, which ends the transaction and
        // releases whatever lock it still holds.
        drop(unit);
        Err(CheckpointError::ClaimLost { reason: lost })
    }

    fn context<'u>(&self, unit: &'u mut Self::Unit) -> &'u mut PgConnection {
        &mut unit.connection
    }

    async fn commit(&self, mut unit: Self::Unit, position: u64) -> Result<(), CheckpointError> {
        let position = i64::try_from(position).map_err(|_| out_of_range("checkpoint", position))?;
        let saved = sqlx::query(&self.sql.checkpoints.save)
            .bind(&unit.projection)
            .bind(position)
            .bind(unit.epoch)
            .execute(&mut unit.connection)
            .await
            .map_err(checkpoint_error)?;
        if saved.rows_affected() != 1 {
            // The save is the fence: it commits only under the epoch the unit began with, which
            // another runner raises only once this runner's session (and its claim) is gone.
            return Err(CheckpointError::ClaimLost {
                reason: "the checkpoint row no longer carries this runner's claim".into(),
            });
        }
        sqlx::Executor::execute(&mut unit.connection, "COMMIT")
            .await
            .map_err(checkpoint_error)?;
        unit.release();
        Ok(())
    }

    async fn rollback(&self, mut unit: Self::Unit) -> Result<(), CheckpointError> {
        // A connection whose rollback fails is dropped, which closes it; the next unit claims
        // again.
        sqlx::Executor::execute(&mut unit.connection, "ROLLBACK")
            .await
            .map_err(checkpoint_error)?;
        unit.release();
        Ok(())
    }

    /// Takes `projection`'s unit lock in this unit (waiting for its open unit, keeping its next
    /// ones out until this one ends) and reads its checkpoint.
    async fn take_over(&self, unit: &mut Self::Unit, projection: &str) -> Result<u64, CheckpointError> {
        sqlx::query(self.sql.checkpoints.lock_unit)
            .bind(self.unit_key(projection))
            .execute(&mut unit.connection)
            .await
            .map_err(checkpoint_error)?;
        let row: Option<(i64, i64, Option<Uuid>)> = sqlx::query_as(&self.sql.checkpoints.read_row)
            .bind(projection)
            .fetch_optional(&mut unit.connection)
            .await
            .map_err(checkpoint_error)?;
        let position = row.map_or(0, |(position, _, _)| position);
        u64::try_from(position).map_err(|_| out_of_range("checkpoint", position))
    }

    async fn hand_over(&self, unit: &mut Self::Unit, projection: &str, position: u64) -> Result<(), CheckpointError> {
        let position = i64::try_from(position).map_err(|_| out_of_range("checkpoint", position))?;
        sqlx::query(&self.sql.checkpoints.hand_over)
            .bind(projection)
            .bind(position)
            .execute(&mut unit.connection)
            .await
            .map_err(checkpoint_error)?;
        Ok(())
    }

    async fn park(&self, unit: &mut Self::Unit, parked: &ParkedEvent) -> Result<(), CheckpointError> {
        parking::park(&self.sql.parking, &mut unit.connection, parked).await
    }

    async fn unpark(&self, unit: &mut Self::Unit, projection: &str, position: u64) -> Result<(), CheckpointError> {
        parking::unpark(&self.sql.parking, &mut unit.connection, projection, position).await?;
        Ok(())
    }

    async fn parked(&self, projection: &str) -> Result<Vec<ParkedEvent>, CheckpointError> {
        parking::parked(&self.sql.parking, &self.pool, projection).await
    }

    async fn request_retry(&self, projection: &str, position: u64) -> Result<bool, CheckpointError> {
        parking::request_retry(&self.sql.parking, &self.pool, projection, position).await
    }

    async fn drop_parked(&self, projection: &str, position: u64) -> Result<bool, CheckpointError> {
        parking::unpark(&self.sql.parking, &self.pool, projection, position).await
    }

    async fn checkpoint(&self, projection: &str) -> Result<u64, CheckpointError> {
        let position: Option<i64> = sqlx::query_scalar(&self.sql.checkpoints.load)
            .bind(projection)
            .fetch_optional(&self.pool)
            .await
            .map_err(checkpoint_error)?;
        let position = position.unwrap_or(0);
        u64::try_from(position).map_err(|_| out_of_range("checkpoint", position))
    }

    /// Reads `pg_locks` for a granted advisory lock with the claim's key in this database: the
    /// lock table is shared by every session of the cluster, so a runner in any process shows,
    /// and the claim's lock is held exactly as long as a runner holds the claim (until its
    /// connection ends). The lock is not taken, so a runner claiming at the same moment is
    /// never turned away.
    async fn claim_status(&self, projection: &str) -> Result<ClaimStatus, CheckpointError> {
        let row = sqlx::query(self.sql.checkpoints.claim_held)
            .bind(self.claim_key(projection))
            .fetch_one(&self.pool)
            .await
            .map_err(checkpoint_error)?;
        let held: bool = row.try_get("held").map_err(checkpoint_error)?;
        Ok(if held { ClaimStatus::Held } else { ClaimStatus::Free })
    }

    fn is_transient(&self, error: &(dyn std::error::Error + 'static)) -> bool {
        error.downcast_ref::<sqlx::Error>().is_some_and(is_transient)
    }

    /// An undefined table (`42P01`), column (`42703`) or schema (`3F000`).
    fn is_fatal(&self, error: &(dyn std::error::Error + 'static)) -> bool {
        let Some(sqlx::Error::Database(error)) = error.downcast_ref::<sqlx::Error>() else {
            return false;
        };
        matches!(error.code().as_deref(), Some("42P01" | "42703" | "3F000"))
    }
}
