//! Appends: one statement that checks the expected version and inserts the batch, and what a
//! failed or refused statement means, a batch stored before (a retry) included.

use std::collections::HashSet;

use es_core::{
    AppendOutcome, ConcurrencyConflict, ExpectedVersion, Limit, LimitExceeded, NewEvent, StoreError, StoreResult,
    StoredEventPlace, StreamId,
};
use sqlx::{Executor, Postgres, Row};
use uuid::Uuid;

use crate::error::PostgresError;
use crate::fault::store_error;
use crate::read;
use crate::row::{negative_version, stored_event, Batch};
use crate::sql::{Expectation, EVENT_ID_CONSTRAINT, MAX_EVENTS_PER_TRANSACTION, STREAM_VERSION_CONSTRAINT};
use crate::PostgresStore;

mod insert;

use insert::{insert, stored_outcome, Inserted};

/// How many times an append whose expectation still holds after losing a race on a version
/// (`Any`, `StreamExists`) is tried before the conflict is returned. Retries queue on the
/// stream's lock ([`LOCK_STREAM`](crate::sql::LOCK_STREAM)), so they lose only to first attempts arriving meanwhile:
/// each such loss is another append stored, and a run of them this long is not seen in
/// practice.
const MAX_APPEND_ATTEMPTS: u32 = 16;

/// The SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";
/// The class of data exceptions: the server refused a value of the batch (a payload or metadata
/// that is not JSON, or holds `\u0000`, or a number `jsonb` cannot hold).
const DATA_EXCEPTION_CLASS: &str = "22";
/// `program_limit_exceeded`: a value over one of the server's own limits (a `jsonb` value whose
/// binary form passes 256 MiB).
const PROGRAM_LIMIT_EXCEEDED: &str = "54000";

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
    ///   holds at most 2^20 - 1 events: the append that would pass them is refused with
    ///   [`StoreError::LimitExceeded`] ([`Limit::TransactionEvents`]). Each batch is checked
    ///   against the store's [`Limits`](es_core::Limits) as by `EventStore::append`.
    /// - Refusals found before or by the statement (a batch over the limits, a
    ///   [`StoreError::Conflict`] on the expectation, `StaleTransaction`, a transaction full)
    ///   leave the transaction usable. A failed statement aborts it, as any failed statement
    ///   does in PostgreSQL: a lost race on a version (reported as a conflict, without retries,
    ///   whatever the expectation, `ExpectedVersion::Any` included: another transaction took the
    ///   versions this one numbered its batch with),
    ///   a duplicate event id, a payload the server refuses as JSON. Roll back, and retry the
    ///   whole transaction if it makes sense.
    /// - A batch that is already stored, committed by an earlier transaction (a retry of a
    ///   transaction whose commit went unanswered), is recognised as by
    ///   [`EventStore::append`](es_core::EventStore::append): the call writes nothing and returns
    ///   the original outcome with [`AppendOutcome::already_stored`] set. The transaction is
    ///   then still usable if the stream was not at `expected` (the statement refused), and
    ///   aborted if it was (the statement failed on the unique `event_id`): **on
    ///   `already_stored`, roll back**. The transaction that stored the batch committed whatever
    ///   it wrote with it. The stored events are looked up on the pool, after the statement and
    ///   outside the transaction (which may be aborted): events this transaction wrote itself
    ///   are not seen there, and the lookup needs a second connection of the pool.
    /// - Listeners of [`PostgresStore::wake_up`] are not told: the events are not committed
    ///   yet when this returns. Call [`PostgresStore::notify_listeners`] after the commit, or let
    ///   projection runners find the events at their next poll.
    pub async fn append_in_transaction(
        &self,
        conn: &mut sqlx::PgConnection,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendOutcome> {
        let batch = Batch::new(&self.limits, stream, events)?;
        let error = match execute(self, conn, stream, expected, &batch).await {
            Ok(verdict) => return settle(self, verdict, stream, expected, &batch).await,
            Err(error) => error,
        };
        match explain_failure(self, error, stream, &batch).await {
            Failure::AlreadyStored(outcome) => Ok(outcome),
            Failure::VersionTaken(actual) => Err(conflict(stream, expected, actual)),
            // No conflict check on the pool here: it cannot see what this transaction wrote.
            Failure::DuplicateEventId(error) | Failure::Final(error) => Err(error),
        }
    }
}

/// [`EventStore::append`](es_core::EventStore::append): one statement on the pool, run again
/// while it loses races on a version its expectation still accepts; listeners are woken after
/// the commit. A batch stored before is recognised on the failure paths only, so the happy path
/// stays one round trip.
pub(crate) async fn append(
    store: &PostgresStore,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> StoreResult<AppendOutcome> {
    let batch = Batch::new(&store.limits, stream, events)?;
    if batch.len() == 0 {
        // Nothing to insert, but the stream's status and the expectation are still checked.
        refuse_closed(store, stream).await?;
        let actual = read::stream_version(store, stream).await?;
        return match expected.accepts(actual) {
            true => Ok(AppendOutcome::new(actual, Vec::new())),
            false => Err(conflict(stream, expected, actual)),
        };
    }
    let mut attempts = 0;
    loop {
        attempts += 1;
        // The first attempt is one statement; one that lost a race queues on the stream.
        let error = match insert(store, stream, expected, &batch, attempts > 1).await {
            Ok(Inserted::Stored {
                first_position,
                first_version,
            }) => {
                let outcome = stored_outcome(stream, first_position, first_version, batch.len())?;
                store.notify_listeners();
                return Ok(outcome);
            }
            Ok(Inserted::Refused) => {
                // The stream is not where `expected` says (an `Exact` version it has not
                // reached, `StreamExists` on no stream), unless this is a retry of a batch
                // stored before: only now do we look.
                let stored = stored_events(store, &batch).await?;
                if let Some(outcome) = already_stored(stream, &batch, &stored) {
                    return Ok(outcome);
                }
                refuse_closed(store, stream).await?;
                let actual = read::stream_version(store, stream).await?;
                if expected.accepts(actual) && attempts < MAX_APPEND_ATTEMPTS {
                    // Another writer moved the stream to where we expected it meanwhile.
                    continue;
                }
                return Err(conflict(stream, expected, actual));
            }
            Err(error) => error,
        };
        match explain_failure(store, error, stream, &batch).await {
            Failure::AlreadyStored(outcome) => return Ok(outcome),
            // Another writer took the version between our read and our insert. Nothing was
            // written; if the expectation still holds (Any, StreamExists), go again.
            Failure::VersionTaken(actual) if expected.accepts(actual) && attempts < MAX_APPEND_ATTEMPTS => {
                tracing::debug!(stream = %stream, attempts, "lost a race on a version; appending again");
            }
            Failure::VersionTaken(actual) => return Err(conflict(stream, expected, actual)),
            Failure::DuplicateEventId(duplicate) => {
                return Err(conflict_first(store, stream, expected, duplicate).await);
            }
            Failure::Final(error) => return Err(error),
        }
    }
}

/// [`StoreError::StreamClosed`] when `stream` is closed: what a refused append checks first.
async fn refuse_closed(store: &PostgresStore, stream: &StreamId) -> StoreResult<()> {
    match crate::lifecycle::closure_on(store, &store.pool, stream).await? {
        Some(closed) => Err(closed.refuse()),
        None => Ok(()),
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
    let query = sqlx::query(&store.sql.append_in_transaction)
        .bind(stream.aggregate_type.as_str())
        .bind(stream.aggregate_id.as_str())
        .bind(kind)
        .bind(exact);
    let row = batch.bind(query).fetch_one(executor).await?;
    Ok(Verdict {
        current: row.try_get("cur_version")?,
        used: row.try_get("used")?,
        accepted: row.try_get("accepted")?,
        fresh: row.try_get("fresh")?,
        fits: row.try_get("fits")?,
        closed: row.try_get("closed")?,
        positions: row.try_get("positions")?,
    })
}

/// The outcome of a statement that ran: the append, or its refusal, unless the refused batch
/// turns out to be stored already (a retry whose first answer was lost).
async fn settle(
    store: &PostgresStore,
    verdict: Verdict,
    stream: &StreamId,
    expected: ExpectedVersion,
    batch: &Batch,
) -> StoreResult<AppendOutcome> {
    // A retry finds the stream past the version it expected, or stale for the transaction:
    // the statement refuses and only then do we look for the batch. A failed lookup is returned
    // rather than the refusal: a caller acting on a conflict could redo a done command, while a
    // caller retrying after an outage will have the batch recognised.
    if verdict.refused() {
        let stored = stored_events(store, batch).await?;
        if let Some(outcome) = already_stored(stream, batch, &stored) {
            return Ok(outcome);
        }
        if verdict.closed {
            refuse_closed(store, stream).await?;
        }
    }
    verdict.into_outcome(stream, expected, batch.len())
}

/// Where the batch's ids are stored, if anywhere: one query on the pool (the caller's
/// transaction may be aborted), on the failure paths only.
async fn stored_events(store: &PostgresStore, batch: &Batch) -> StoreResult<Vec<StoredEventPlace>> {
    if batch.ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(&store.sql.stored_events)
        .bind(batch.ids.as_slice())
        .fetch_all(&store.pool)
        .await
        .map_err(store_error)?;
    rows.iter().map(stored_event).collect()
}

/// The original outcome, when `stored` (the events carrying the batch's ids) is the batch stored
/// in `stream`, in order: the rule es-core defines for every backend.
fn already_stored(stream: &StreamId, batch: &Batch, stored: &[StoredEventPlace]) -> Option<AppendOutcome> {
    let outcome = AppendOutcome::from_stored(stream, &batch.ids, stored)?;
    tracing::debug!(stream = %stream, "the batch was stored before: nothing written");
    Some(outcome)
}

/// Explains a failed append statement, reading what it needs on the pool: only the failure
/// paths pay the queries. A unique violation may be a retry of a batch stored before, so the
/// batch's ids are looked up first.
async fn explain_failure(store: &PostgresStore, error: sqlx::Error, stream: &StreamId, batch: &Batch) -> Failure {
    if let Some(db) = error.as_database_error().filter(|db| {
        db.code()
            .is_some_and(|code| code.starts_with(DATA_EXCEPTION_CLASS) || code == PROGRAM_LIMIT_EXCEEDED)
    }) {
        // The batch's values are the statement's only data: the server refused one of them.
        return Failure::Final(StoreError::InvalidBatch {
            stream: stream.clone(),
            reason: format!(
                "PostgreSQL refused a payload or metadata (not valid JSON, or not storable as jsonb): {}",
                db.message()
            ),
        });
    }
    let constraint = error
        .as_database_error()
        .filter(|db| db.code().as_deref() == Some(UNIQUE_VIOLATION))
        .and_then(|db| db.constraint())
        .map(str::to_owned);
    let version_taken = match constraint.as_deref() {
        Some(STREAM_VERSION_CONSTRAINT) => true,
        Some(EVENT_ID_CONSTRAINT) => false,
        _ => return Failure::Final(store_error(error)),
    };
    let stored = match stored_events(store, batch).await {
        Ok(stored) => stored,
        Err(lookup) => return Failure::Final(lookup),
    };
    if let Some(outcome) = already_stored(stream, batch, &stored) {
        return Failure::AlreadyStored(outcome);
    }
    if version_taken {
        match read::stream_version(store, stream).await {
            Ok(actual) => Failure::VersionTaken(actual),
            Err(error) => Failure::Final(error),
        }
    } else {
        Failure::DuplicateEventId(duplicate_event_id(error, stream, batch, &stored))
    }
}

/// The error for a violated unique `event_id`: the first id of the batch that is stored, or
/// that the batch repeats.
fn duplicate_event_id(error: sqlx::Error, stream: &StreamId, batch: &Batch, stored: &[StoredEventPlace]) -> StoreError {
    let stored: HashSet<Uuid> = stored.iter().map(|event| event.event_id).collect();
    let event_id = batch
        .ids
        .iter()
        .copied()
        .find(|id| stored.contains(id))
        .or_else(|| repeated_id(&batch.ids));
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

/// A duplicate id found by a statement whose expectation held on its snapshot: a writer that
/// committed meanwhile may have moved the stream, and a stream not at `expected` is a conflict
/// first (the contract's precedence). If the version cannot be read, the duplicate stands:
/// nothing was written either way.
async fn conflict_first(
    store: &PostgresStore,
    stream: &StreamId,
    expected: ExpectedVersion,
    duplicate: StoreError,
) -> StoreError {
    match read::stream_version(store, stream).await {
        Ok(actual) if !expected.accepts(actual) => conflict(stream, expected, actual),
        _ => duplicate,
    }
}

/// What the append statement found and did.
struct Verdict {
    /// The stream's version as the statement read it.
    current: i64,
    /// How many events the transaction had appended before this statement.
    used: i64,
    /// Whether the expectation held.
    accepted: bool,
    /// Whether the transaction is not older than the stream's last event.
    fresh: bool,
    /// Whether the batch fit the transaction's remaining positions.
    fits: bool,
    /// Whether the stream is closed (es_core::lifecycle).
    closed: bool,
    /// The positions of the inserted events, in batch order; `None` when nothing was inserted.
    positions: Option<Vec<i64>>,
}

impl Verdict {
    /// Whether the statement refused the batch (and so wrote nothing).
    fn refused(&self) -> bool {
        !(self.accepted && self.fits && self.fresh) || self.closed
    }

    fn into_outcome(self, stream: &StreamId, expected: ExpectedVersion, len: usize) -> StoreResult<AppendOutcome> {
        let current = u64::try_from(self.current).map_err(|_| negative_version(stream, self.current))?;
        if !self.accepted {
            return Err(conflict(stream, expected, current));
        }
        if !self.fits {
            let used = usize::try_from(self.used).unwrap_or(MAX_EVENTS_PER_TRANSACTION);
            return Err(LimitExceeded {
                stream: stream.clone(),
                limit: Limit::TransactionEvents,
                event: None,
                actual: used.saturating_add(len),
                max: MAX_EVENTS_PER_TRANSACTION,
            }
            .into());
        }
        if !self.fresh {
            return Err(PostgresError::StaleTransaction { stream: stream.clone() }.into());
        }
        let positions = self.positions.unwrap_or_default();
        if positions.len() != len {
            let message = format!("inserted {} of {len} events into {stream}", positions.len());
            return Err(PostgresError::Unexpected(message).into());
        }
        let positions = positions
            .into_iter()
            .map(u64::try_from)
            .collect::<Result<Vec<u64>, _>>()
            .map_err(|_| PostgresError::Unexpected(format!("a negative position inserted into {stream}")))?;
        Ok(AppendOutcome::new(current, positions))
    }
}

/// A failed append statement, explained.
enum Failure {
    /// The batch had been stored before (a retry): its original outcome. Nothing was written.
    AlreadyStored(AppendOutcome),
    /// The unique (stream, version) constraint fired: another writer committed first. The
    /// stream's version after that.
    VersionTaken(u64),
    /// The unique `event_id` constraint fired and the batch is not a retry: the error to return,
    /// unless the stream has moved past `expected` meanwhile (a conflict comes first).
    DuplicateEventId(StoreError),
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
    let mut seen = HashSet::with_capacity(ids.len());
    ids.iter().copied().find(|id| !seen.insert(*id))
}
