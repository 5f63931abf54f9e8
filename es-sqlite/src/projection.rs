//! Projections on SQLite: read models in the same file, each batch's writes and its checkpoint
//! committed in one write transaction, under a claim fenced by an epoch.

use std::ops::Deref;
use std::sync::Arc;

use es_core::{async_trait, CheckpointError, CheckpointStore, ClaimStatus, ParkedEvent};
use rusqlite::{params, Connection, OptionalExtension};

use crate::claim::{self, release, Slot, SqliteClaim};
use crate::connection::{begin_immediate, blocking, run, Database, Role, UnitMark};
use crate::error::{error_is_transient, SqliteError};
use crate::row::micros;
use crate::{parking, sql, SqliteStore};

/// Checkpoints of projections whose read models live in the same SQLite file as the events:
/// each batch's read-model writes and its checkpoint commit in **one transaction**, so a crash
/// can neither lose an event nor apply one twice. Get it from [`SqliteStore::checkpoints`].
///
/// # What handlers get
///
/// A handler's context is a [`SqliteContext`]: the unit's connection, inside its open write
/// transaction (`BEGIN IMMEDIATE`), with every [`rusqlite::Connection`] method through `Deref`
/// (`execute`, `prepare_cached`, `query_row`, savepoints by SQL). Create the read-model tables
/// beforehand (e.g. with [`SqliteStore::write`]) and name them without a schema. Never run
/// `COMMIT`, `ROLLBACK` or `BEGIN` in a handler: the runner commits the unit with its
/// checkpoint, and refuses to if a handler ended the transaction.
///
/// rusqlite is synchronous, so handlers' SQL runs **on the async runtime's thread**. That is
/// the right trade for what read models do (a few cached statements per event into pages
/// SQLite holds in memory while the transaction is open): the unit already holds the database's
/// write lock, so these calls never wait for a lock, only for the disk on a cache miss. A
/// handler with heavy work can wrap it in `tokio::task::block_in_place` on a multi-threaded
/// runtime.
///
/// Events the runner parks ([`FailurePolicy::Park`](es_core::FailurePolicy::Park)) go to the
/// `parked_events` table within the unit, on its connection and thread as a handler's writes
/// do, so they commit with the checkpoint that passes them; listing them, asking for a retry and
/// dropping one run outside any unit (the last two on the store's writer connection, so they
/// fail with [`SqliteError::ReadOnly`](crate::SqliteError::ReadOnly) on a read-only store).
///
/// A unit holds SQLite's single write lock from `begin` to `commit`: appends (of every
/// process) wait for it, up to their busy timeout. Keep handlers quick and batches moderate
/// ([`RunnerOptions::batch_size`](es_core::RunnerOptions)); effects outside the file (calls to
/// other services) belong in a projection with another checkpoint store.
///
/// For the same reason a handler must never write to this file **through the store**: a
/// command ([`Repository::execute`](es_core::Repository::execute)), an append, a snapshot.
/// Such a write waits for SQLite's write lock, which the handler's own unit holds until the
/// handler returns: after the busy timeout it fails with [`SqliteError::HeldByProjection`]
/// (not a passing [`SqliteError::Busy`]: waiting longer cannot help), so the handler fails and
/// the runner's [`FailurePolicy`](es_core::FailurePolicy) applies. A projection that sends commands (a saga, a process
/// manager) keeps its checkpoints in **another file**, whose lock its units hold while the
/// commands write to the events' file:
///
/// ```no_run
/// # async fn saga() -> Result<(), es_sqlite::SqliteError> {
/// let events = es_sqlite::SqliteStore::open("events.db").await?;
/// let saga_state = es_sqlite::SqliteStore::open("events-saga.db").await?;
/// saga_state.migrate().await?;
/// let checkpoints = saga_state.checkpoints();
/// // ProjectionRunner::new(saga, events.clone(), checkpoints): its handlers run commands on
/// // a Repository over `events`.
/// # let _ = (events, checkpoints); Ok(()) }
/// ```
///
/// # The claim
///
/// A runner claims a projection by locking a file of the projection's own beside the database
/// (`<database>-claim-<projection>-<hash>`, with `flock`), and then raises the projection's
/// `claim_epoch` in its checkpoint row. The operating system releases the lock when the
/// holder's process exits or dies, and a waiting runner (of any process) takes over within
/// [`SqliteOptions::claim_retry`](crate::SqliteOptions) (100 ms by default). Every unit of work
/// reads the epoch inside its write transaction and commits the checkpoint only
/// `WHERE claim_epoch` is still its own, so a runner whose claim was taken over (its lock file
/// deleted and re-created, a file system without working locks) stops with
/// [`CheckpointError::ClaimLost`] instead of committing.
///
/// [`claim_status`](CheckpointStore::claim_status) tells whether a runner, of any process, holds
/// the lock now, by asking for a shared lock on the claim file without waiting (and releasing it
/// at once); it creates no file for a projection never claimed, and works on a read-only store.
#[derive(Debug, Clone)]
pub struct SqliteCheckpoints {
    database: Arc<Database>,
}

impl SqliteStore {
    /// Checkpoints for projections whose read models live in this store's file (the table is
    /// created by [`SqliteStore::migrate`]).
    pub fn checkpoints(&self) -> SqliteCheckpoints {
        SqliteCheckpoints {
            database: Arc::clone(&self.database),
        }
    }
}

/// What a projection's handlers write to: the unit of work's connection, inside its open write
/// transaction. Derefs to [`rusqlite::Connection`]; see [`SqliteCheckpoints`] for the rules.
#[derive(Debug)]
pub struct SqliteContext {
    connection: Connection,
}

impl SqliteContext {
    /// The unit's connection, inside its open transaction.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }
}

impl Deref for SqliteContext {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.connection
    }
}

/// One unit of work: an open write transaction on the claim's connection. Dropping it closes
/// the connection, which rolls the transaction back.
#[derive(Debug)]
pub struct SqliteUnit {
    context: SqliteContext,
    /// Notes the unit as holding the write lock, until it ends.
    _held: UnitMark,
    /// Where the connection goes back after the unit.
    slot: Slot,
    projection: String,
    epoch: i64,
}

fn out_of_range(what: &str, value: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::backend(format!("{what} {value} is out of range"))
}

/// Opens the unit's transaction on `connection` and reads the checkpoint, if the claim is still
/// the runner's (blocking).
fn open_unit(connection: &Connection, projection: &str, epoch: i64) -> Result<Result<u64, String>, rusqlite::Error> {
    begin_immediate(connection)?;
    let row: Option<(i64, i64, Option<Vec<u8>>)> = connection
        .prepare_cached(sql::UNIT_CHECKPOINT)?
        .query_row([projection], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .optional()?;
    Ok(match row {
        Some((position, stored, _)) if stored == epoch => {
            Ok(u64::try_from(position).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, position))?)
        }
        Some((_, stored, owner)) => {
            let owner = owner
                .and_then(|owner| uuid::Uuid::from_slice(&owner).ok())
                .map_or_else(|| "unknown".to_owned(), |owner| owner.to_string());
            Err(format!(
                "runner {owner} claimed it (claim {stored}) after this runner (claim {epoch})"
            ))
        }
        None => Err("the projection's checkpoint row was deleted".to_owned()),
    })
}

#[async_trait]
impl CheckpointStore for SqliteCheckpoints {
    type Context = SqliteContext;
    type Unit = SqliteUnit;
    type Claim = SqliteClaim;

    async fn claim(&self, projection: &str) -> Result<SqliteClaim, CheckpointError> {
        claim::acquire(&self.database, projection).await
    }

    async fn begin(&self, claim: &mut SqliteClaim) -> Result<(SqliteUnit, u64), CheckpointError> {
        let (database, slot) = (Arc::clone(&self.database), Arc::clone(&claim.slot));
        let (kept, projection, epoch) = (claim.take_connection(), claim.projection.clone(), claim.epoch);
        blocking(move || {
            // A unit that was dropped took its connection with it: open another.
            let connection = match kept {
                Some(connection) => connection,
                None => database.connect(Role::Writer)?,
            };
            match open_unit(&connection, &projection, epoch) {
                Ok(Ok(position)) => Ok((
                    SqliteUnit {
                        _held: database.unit_opened(&projection),
                        context: SqliteContext { connection },
                        slot,
                        projection,
                        epoch,
                    },
                    position,
                )),
                Ok(Err(reason)) => {
                    let _ = run(&connection, sql::ROLLBACK);
                    release(&slot, connection);
                    Err(CheckpointError::ClaimLost { reason })
                }
                Err(error) => {
                    if !connection.is_autocommit() {
                        let _ = run(&connection, sql::ROLLBACK);
                    }
                    release(&slot, connection);
                    Err(database.error(error).into())
                }
            }
        })
        .await
    }

    fn context<'u>(&self, unit: &'u mut SqliteUnit) -> &'u mut SqliteContext {
        &mut unit.context
    }

    async fn commit(&self, unit: SqliteUnit, position: u64) -> Result<(), CheckpointError> {
        let position = i64::try_from(position).map_err(|_| out_of_range("checkpoint", position))?;
        let database = Arc::clone(&self.database);
        blocking(move || {
            let SqliteUnit {
                context: SqliteContext { connection },
                slot,
                projection,
                epoch,
                ..
            } = unit;
            if connection.is_autocommit() {
                release(&slot, connection);
                return Err(CheckpointError::backend(SqliteError::Unexpected(
                    "a handler ended the unit's transaction (COMMIT or ROLLBACK): its writes were not committed \
                     together with the checkpoint"
                        .into(),
                )));
            }
            let saved = connection
                .prepare_cached(sql::SAVE_CHECKPOINT)
                .and_then(|mut statement| {
                    statement.execute(params![projection, position, epoch, micros(chrono::Utc::now())])
                })
                .and_then(|saved| {
                    if saved == 1 {
                        run(&connection, sql::COMMIT).map(|()| true)
                    } else {
                        Ok(false)
                    }
                });
            let outcome = match saved {
                Ok(true) => Ok(()),
                // Cannot happen while this unit holds the write lock; refuse rather than guess.
                Ok(false) => Err(CheckpointError::ClaimLost {
                    reason: "the checkpoint row no longer carries this runner's claim".into(),
                }),
                Err(error) => Err(database.error(error).into()),
            };
            if !connection.is_autocommit() {
                let _ = run(&connection, sql::ROLLBACK);
            }
            release(&slot, connection);
            outcome
        })
        .await
    }

    async fn rollback(&self, unit: SqliteUnit) -> Result<(), CheckpointError> {
        let database = Arc::clone(&self.database);
        blocking(move || {
            let SqliteUnit {
                context: SqliteContext { connection },
                slot,
                ..
            } = unit;
            if connection.is_autocommit() {
                release(&slot, connection);
                return Ok(());
            }
            // A connection whose rollback fails is closed, which ends the transaction; the next
            // unit opens another.
            run(&connection, sql::ROLLBACK).map_err(|error| database.error(error))?;
            release(&slot, connection);
            Ok(())
        })
        .await
    }

    async fn park(&self, unit: &mut SqliteUnit, parked: &ParkedEvent) -> Result<(), CheckpointError> {
        parking::park(&self.database, &unit.context.connection, parked)
    }

    async fn unpark(&self, unit: &mut SqliteUnit, projection: &str, position: u64) -> Result<(), CheckpointError> {
        parking::unpark(&self.database, &unit.context.connection, projection, position)
    }

    async fn take_over(&self, unit: &mut SqliteUnit, projection: &str) -> Result<u64, CheckpointError> {
        parking::take_over(&self.database, &unit.context.connection, projection)
    }

    async fn hand_over(&self, unit: &mut SqliteUnit, projection: &str, position: u64) -> Result<(), CheckpointError> {
        parking::hand_over(&self.database, &unit.context.connection, projection, position)
    }

    async fn parked(&self, projection: &str) -> Result<Vec<ParkedEvent>, CheckpointError> {
        parking::parked(&self.database, projection).await
    }

    async fn request_retry(&self, projection: &str, position: u64) -> Result<bool, CheckpointError> {
        parking::request_retry(&self.database, projection, position).await
    }

    async fn drop_parked(&self, projection: &str, position: u64) -> Result<bool, CheckpointError> {
        parking::drop_parked(&self.database, projection, position).await
    }

    async fn checkpoint(&self, projection: &str) -> Result<u64, CheckpointError> {
        let (database, projection) = (Arc::clone(&self.database), projection.to_owned());
        let position: Option<i64> = blocking(move || {
            database.with_reader(|connection| {
                connection
                    .prepare_cached(sql::LOAD_CHECKPOINT)
                    .and_then(|mut statement| statement.query_row([&projection], |row| row.get(0)).optional())
                    .map_err(|error| CheckpointError::from(database.error(error)))
            })
        })
        .await?;
        let position = position.unwrap_or(0);
        u64::try_from(position).map_err(|_| out_of_range("checkpoint", position))
    }

    /// [`CheckpointStore::claim_status`]: whether the projection's claim file is locked, asked
    /// without waiting and without creating the file (see the claim's notes in the type's
    /// docs). Works on a read-only store too.
    async fn claim_status(&self, projection: &str) -> Result<ClaimStatus, CheckpointError> {
        let (database, projection) = (Arc::clone(&self.database), projection.to_owned());
        blocking(move || claim::status(&database, &projection).map_err(CheckpointError::from)).await
    }

    fn is_transient(&self, error: &(dyn std::error::Error + 'static)) -> bool {
        error_is_transient(error)
    }

    /// SQLite's "no such table", "no such column" and "table … has no column named …".
    fn is_fatal(&self, error: &(dyn std::error::Error + 'static)) -> bool {
        let Some(rusqlite::Error::SqliteFailure(_, Some(message))) = error.downcast_ref::<rusqlite::Error>() else {
            return false;
        };
        message.starts_with("no such table")
            || message.starts_with("no such column")
            || (message.starts_with("table ") && message.contains(" has no column named "))
    }
}
