//! Appends: one statement that checks the expected version and inserts the batch, and what a
//! failed statement means.

use es_core::{AppendOutcome, ConcurrencyConflict, ExpectedVersion, NewEvent, StoreError, StreamId};
use sqlx::{Executor, Postgres, Row};
use uuid::Uuid;

use crate::error::PostgresError;
use crate::fault::store_error;
use crate::read;
use crate::row::{negative_version, Batch};
use crate::sql::{Expectation, EVENT_ID_CONSTRAINT, MAX_EVENTS_PER_TRANSACTION, STREAM_VERSION_CONSTRAINT};
use crate::PostgresStore;

/// How many times an append whose expectation still holds after losing a race on a version
/// (`Any`, `StreamExists`) is retried before the conflict is returned.
const MAX_APPEND_ATTEMPTS: u32 = 16;

/// The SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";
/// `invalid_text_representation`: the server refused a payload or metadata as JSON.
const INVALID_TEXT_REPRESENTATION: &str = "22P02";

impl PostgresStore {
    /// Appends `events` to `stream` inside the caller's open transaction `conn`, with the same
    /// checks as [`EventStore::append`](es_core::EventStore::append). The events commit with
    /// whatever else the transaction writes, or not at all: use it to write an outbox message,
    /// a read model or any other rows of the same database atomically with the events.
    ///
    /// ```no_run
    /// use es_core::{ExpectedVersion, NewEvent, StreamId};
    /// # async fn demo(store: es_postgres::PostgresStore, placed: NewEvent) -> Result<(), Box<dyn std::error::Error>> {
    /// let stream = StreamId::new("order", "O-1");
    /// let mut tx = store.pool().begin().await?;
    /// store
    ///     .append_in_transaction(&mut tx, &stream, ExpectedVersion::NoStream, vec![placed])
    ///     .await?;
    /// sqlx::query("INSERT INTO outbox (topic, body) VALUES ($1, $2)")
    ///     .bind("order-placed")
    ///     .bind(r#"{"order":"O-1"}"#)
    ///     .execute(&mut *tx)
    ///     .await?;
    /// tx.commit().await?;
    /// store.notify_listeners(); // wake projection runners now rather than at their next poll
    /// # Ok(()) }
    /// ```
    ///
    /// # Caveats
    ///
    /// - Once the append has run, the open transaction holds back
    ///   [`GlobalLog::read_all`](es_core::GlobalLog::read_all) for **every** reader of the
    ///   cluster until it ends (see the crate docs): it delays, never loses, events. Keep the
    ///   transaction short and never leave it idle.
    /// - The append is refused with [`PostgresError::StaleTransaction`] (as
    ///   [`StoreError::Backend`]) if the transaction already had a transaction id, that is had
    ///   written something, before the stream's last event was committed: its events would sort
    ///   before events that precede them in the stream. Append early in the transaction, or in a
    ///   fresh one.
    /// - Several appends in one transaction are numbered one after the other; a transaction
    ///   holds at most 2^20 - 1 events.
    /// - Refusals found by the statement (a [`StoreError::Conflict`] on the expectation,
    ///   `StaleTransaction`, a batch too large) leave the transaction usable. A failed statement
    ///   aborts it, as any failed statement does in PostgreSQL: a lost race on a version
    ///   (reported as a conflict, without retries), a duplicate event id, a payload that is not
    ///   JSON. Roll back, and retry the whole transaction if it makes sense.
    /// - Listeners of [`PostgresStore::wake_up`] are not told: the events are not committed
    ///   yet when this returns. Call [`PostgresStore::notify_listeners`] after the commit, or let
    ///   projection runners find the events at their next poll.
    pub async fn append_in_transaction(
        &self,
        conn: &mut sqlx::PgConnection,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        let batch = Batch::new(stream, events)?;
        match execute(self, conn, stream, expected, &batch).await {
            Ok(verdict) => verdict.into_outcome(stream, expected, batch.len()),
            Err(error) => match explain_failure(self, error, stream, &batch).await {
                Failure::VersionTaken(actual) => Err(conflict(stream, expected, actual)),
                Failure::Final(error) => Err(error),
            },
        }
    }
}

/// [`EventStore::append`](es_core::EventStore::append): one statement on the pool, run again
/// while it loses races on a version its expectation still accepts; listeners are woken after
/// the commit.
pub(crate) async fn append(
    store: &PostgresStore,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> Result<AppendOutcome, StoreError> {
    let batch = Batch::new(stream, events)?;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let error = match execute(store, &store.pool, stream, expected, &batch).await {
            Ok(verdict) => {
                let outcome = verdict.into_outcome(stream, expected, batch.len())?;
                if outcome.new_version > outcome.previous_version {
                    store.notify_listeners();
                }
                return Ok(outcome);
            }
            Err(error) => error,
        };
        match explain_failure(store, error, stream, &batch).await {
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

/// Runs the append statement on `executor` (the pool, or the caller's transaction).
async fn execute<'c, E>(
    store: &PostgresStore,
    executor: E,
    stream: &StreamId,
    expected: ExpectedVersion,
    batch: &Batch,
) -> Result<Verdict, sqlx::Error>
where
    E: Executor<'c, Database = Postgres>,
{
    let (kind, exact) = Expectation::parameters(expected);
    let query = sqlx::query(&store.sql.append)
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
async fn explain_failure(store: &PostgresStore, error: sqlx::Error, stream: &StreamId, batch: &Batch) -> Failure {
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
        Some(STREAM_VERSION_CONSTRAINT) => match read::stream_version(store, stream).await {
            Ok(actual) => Failure::VersionTaken(actual),
            Err(error) => Failure::Final(error),
        },
        Some(EVENT_ID_CONSTRAINT) => Failure::Final(duplicate_event_id(store, error, stream, batch).await),
        _ => Failure::Final(store_error(error)),
    }
}

/// The error for a violated unique `event_id`: which id of the batch is taken.
async fn duplicate_event_id(store: &PostgresStore, error: sqlx::Error, stream: &StreamId, batch: &Batch) -> StoreError {
    let stored: Result<Option<Uuid>, _> = sqlx::query_scalar(&store.sql.existing_event_id)
        .bind(batch.ids.as_slice())
        .fetch_optional(&store.pool)
        .await;
    let event_id = match stored {
        Ok(Some(event_id)) => Some(event_id),
        Ok(None) => repeated_id(&batch.ids),
        Err(lookup) => return store_error(lookup),
    };
    match event_id {
        Some(event_id) => StoreError::DuplicateEventId {
            stream: stream.clone(),
            event_id,
        },
        // The clashing row is not visible: it was written earlier in the caller's (now
        // aborted) transaction. Report the database's error as it is.
        None => store_error(error),
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
