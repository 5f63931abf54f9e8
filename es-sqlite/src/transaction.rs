//! Transactions the caller controls: events appended together with rows of the caller's own
//! (an outbox, a read model), committed or rolled back as one.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use es_core::{AppendOutcome, ExpectedVersion, NewEvent, StoreError, StoreResult, StreamId};
use rusqlite::Connection;

use crate::append::{append_locked, checked_batch, notify_committed, wrote};
use crate::connection::{blocking, run, Database, Immediate};
use crate::error::SqliteError;
use crate::{sql, SqliteStore};

impl SqliteStore {
    /// Runs `work` in a write transaction (`BEGIN IMMEDIATE`) on the store's writer connection,
    /// on a blocking thread, and commits it if `work` returns `Ok`: events appended with
    /// [`SqliteTransaction::append`] and the rows `work` writes through the transaction's
    /// [`Connection`] commit together, or not at all. Use it to write an outbox message or a
    /// read-model row atomically with the events that cause it (an *inline projection*).
    ///
    /// If `work` returns `Err` (or panics), the whole transaction is rolled back, events
    /// included, and its error is returned as it is. Failures of the transaction itself (taking
    /// the write lock past the busy timeout, the commit, a read-only store) are converted with
    /// `E::from(SqliteError)`: [`StoreError`], `Box<dyn Error + Send + Sync>` or an error type of
    /// your own with that `From` impl all work.
    ///
    /// Listeners of [`SqliteStore::wake_up`] are told after the commit if an append wrote
    /// events. The transaction holds SQLite's single write lock from start to end: appends and
    /// projection units (of every process) wait for it, so keep `work` short, and never call
    /// anything slow (another service, say) inside it. Nor the store's other writes (`append`,
    /// `write`, another `transaction`): they would wait for the connection `work` holds.
    ///
    /// ```
    /// use es_core::{ExpectedVersion, Metadata, NewEvent, StoreError, StreamId};
    /// use es_sqlite::SqliteStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("events.db");
    /// let store = SqliteStore::open(&path).await?;
    /// store.migrate().await?;
    /// store
    ///     .write(|db| db.execute_batch("CREATE TABLE outbox (event_id BLOB PRIMARY KEY, topic TEXT NOT NULL)"))
    ///     .await?;
    ///
    /// let stream = StreamId::new("ticket", "T-1");
    /// let opened = NewEvent {
    ///     event_id: uuid::Uuid::now_v7(),
    ///     event_name: "TicketOpened".into(),
    ///     schema_version: 1,
    ///     payload: br#"{"title":"Printer on fire"}"#.to_vec(),
    ///     metadata: Metadata::new(),
    /// };
    /// let event_id = opened.event_id;
    /// let outcome = store
    ///     .transaction(move |tx| {
    ///         let outcome = tx.append(&stream, ExpectedVersion::NoStream, vec![opened])?;
    ///         if !outcome.already_stored {
    ///             // The same transaction: the row commits with the event, or neither does.
    ///             tx.execute(
    ///                 "INSERT INTO outbox (event_id, topic) VALUES (?1, ?2)",
    ///                 (event_id.as_bytes(), "ticket-opened"),
    ///             )?;
    ///         }
    ///         Ok::<_, Box<dyn std::error::Error + Send + Sync>>(outcome)
    ///     })
    ///     .await?;
    /// assert_eq!(outcome.new_version, 1);
    ///
    /// // An error returned by the closure rolls everything back, events included: here a
    /// // typed conflict, since the stream exists.
    /// let refused = store
    ///     .transaction(|tx| {
    ///         tx.execute("INSERT INTO outbox (event_id, topic) VALUES (?1, ?2)", (&[0u8; 16][..], "lost"))?;
    ///         let again = StreamId::new("ticket", "T-1");
    ///         tx.append(&again, ExpectedVersion::NoStream, Vec::new())?;
    ///         Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    ///     })
    ///     .await;
    /// let error = refused.expect_err("the stream exists");
    /// assert!(matches!(error.downcast_ref::<StoreError>(), Some(StoreError::Conflict(_))));
    /// let rows: i64 = store.read(|db| db.query_row("SELECT count(*) FROM outbox", [], |row| row.get(0))).await?;
    /// assert_eq!(rows, 1, "the row written before the conflict was rolled back");
    /// # Ok(()) }
    /// ```
    pub async fn transaction<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut SqliteTransaction<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<SqliteError> + Send + 'static,
    {
        let database = Arc::clone(&self.database);
        blocking(move || run_transaction(&database, work)).await
    }
}

/// Runs `work` in a write transaction on the writer connection and commits it (blocking).
fn run_transaction<T, E, F>(database: &Database, work: F) -> Result<T, E>
where
    F: FnOnce(&mut SqliteTransaction<'_>) -> Result<T, E>,
    E: From<SqliteError>,
{
    let writer = database.writer("run a write transaction")?;
    let failed = |error| E::from(database.error(error));
    // Rolled back when dropped uncommitted: when `work` fails, panics, or the commit is refused.
    let transaction = Immediate::begin(&writer).map_err(|error| E::from(database.write_error(error)))?;
    let mut tx = SqliteTransaction {
        database,
        connection: &writer,
        appended: false,
        broken: None,
    };
    let value = work(&mut tx)?;
    let SqliteTransaction { appended, broken, .. } = tx;
    if let Some(reason) = broken {
        return Err(SqliteError::Unexpected(format!("the transaction was rolled back: {reason}")).into());
    }
    if writer.is_autocommit() {
        // Its writes may be committed (a `COMMIT`) or not (a `ROLLBACK`, or SQLite's own
        // rollback after an I/O error or a full disk): in either case not as one transaction.
        if appended {
            notify_committed(database);
        }
        return Err(SqliteError::Unexpected(
            "the transaction ended inside the closure (a COMMIT or ROLLBACK it ran, or SQLite's rollback after \
             an error): its writes were not committed as one transaction"
                .into(),
        )
        .into());
    }
    transaction.commit().map_err(failed)?;
    if appended {
        notify_committed(database);
    }
    Ok(value)
}

/// A write transaction the caller controls, given to the closure of
/// [`SqliteStore::transaction`]: [`append`](Self::append) events, and write rows of your own
/// through the [`Connection`] (every method, through `Deref`, or [`connection`](Self::connection)),
/// all committed together.
///
/// Never run `BEGIN`, `COMMIT` or `ROLLBACK` through the connection: the store ends the
/// transaction, and refuses to report success if the closure did (savepoints are fine). Name
/// your tables without a schema.
pub struct SqliteTransaction<'t> {
    database: &'t Database,
    connection: &'t Connection,
    /// Whether an append wrote events: listeners are told after the commit.
    appended: bool,
    /// Why the transaction must not commit: an append failed and what it had inserted could
    /// not be undone.
    broken: Option<String>,
}

impl SqliteTransaction<'_> {
    /// Appends `events` to `stream` inside the transaction, with the same checks and outcomes as
    /// [`EventStore::append`](es_core::EventStore::append): the [`ExpectedVersion`] is checked
    /// under the write lock the transaction holds ([`StoreError::Conflict`] with the actual
    /// version), a batch over the store's limits is [`StoreError::LimitExceeded`], a payload
    /// that is not JSON is [`StoreError::InvalidBatch`], and an event id
    /// stored already (or repeated in the batch) is [`StoreError::DuplicateEventId`].
    ///
    /// Appends are idempotent by event id, as with `EventStore::append`: a batch stored whole
    /// before, by a committed transaction or earlier in this one, is not written again, and the
    /// original outcome comes back with [`AppendOutcome::already_stored`] set, whatever
    /// `expected` says. The transaction that stored it committed whatever it wrote with it:
    /// **on `already_stored`, skip your own writes** (a retried command whose first answer was
    /// lost must not write its outbox rows twice).
    ///
    /// The events are visible to the transaction's own queries at once, and to other
    /// connections once the transaction commits. Several appends, to one stream or several,
    /// may share a transaction.
    ///
    /// # Errors
    ///
    /// A refused append (a conflict, a duplicate id, an invalid batch) writes nothing of its
    /// batch and leaves the transaction usable: return the error to roll back everything, or
    /// carry on without the events. Other failures are [`StoreError::Unavailable`] (the disk,
    /// a lock: worth retrying) or [`StoreError::Backend`], wrapping a [`SqliteError`]; after
    /// them SQLite may have rolled the transaction back itself, so return them.
    pub fn append(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendOutcome> {
        let payloads = checked_batch(self.database, stream, &events)?;
        let failed = |error| StoreError::from(self.database.error(error));
        run(self.connection, sql::SAVEPOINT_APPEND).map_err(failed)?;
        let appended = append_locked(self.database, self.connection, stream, expected, &events, payloads);
        // The savepoint makes the append all or nothing within the transaction: a batch that
        // fails at its tenth insert leaves none of the nine before.
        let closed = match &appended {
            Ok(_) => run(self.connection, sql::RELEASE_APPEND),
            Err(_) => {
                run(self.connection, sql::ROLLBACK_TO_APPEND).and_then(|()| run(self.connection, sql::RELEASE_APPEND))
            }
        };
        if let Err(error) = closed {
            // The batch, or part of it, may still be in the transaction while the caller is told
            // the append failed: the transaction must never commit.
            let error = self.database.error(error);
            self.broken = Some(format!(
                "the savepoint of an append to {stream} could not be closed ({error}), so the transaction may \
                 hold part of a batch"
            ));
            return Err(error.into());
        }
        let outcome = appended?;
        self.appended |= wrote(&outcome);
        Ok(outcome)
    }

    /// The transaction's connection, for the caller's own statements (the same as through
    /// `Deref`).
    pub fn connection(&self) -> &Connection {
        self.connection
    }
}

impl Deref for SqliteTransaction<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.connection
    }
}

impl fmt::Debug for SqliteTransaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteTransaction")
            .field("path", &self.database.path)
            .field("appended", &self.appended)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}
