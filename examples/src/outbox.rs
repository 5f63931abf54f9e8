//! The transactional outbox, on the Ticket domain: publishing events to other systems at least
//! once, without ever announcing an event that was not stored, or storing one that is never
//! announced.
//!
//! Publishing inside the command is wrong both ways: publish then append, and a failed append
//! has announced what never happened; append then publish, and a crash in between loses the
//! message. The outbox splits the work in two:
//!
//! 1. **The command** ([`execute_with_outbox`]) appends its events and one outbox row per event
//!    (keyed by the event's id) in **one transaction** of the event store's database
//!    ([`OutboxStore::append_with_outbox`]): SQLite's [`SqliteStore::transaction`], or
//!    PostgreSQL's [`PostgresStore::append_in_transaction`] inside a `sqlx` transaction. Both
//!    commit, or neither does.
//! 2. **The relay** ([`publish_pending`]) reads the unpublished rows, oldest first, hands each to
//!    the external system (a [`Publisher`]), and marks it published only **after** the
//!    publisher accepted it. It never runs inside a transaction of the store: a slow broker must
//!    not hold the database's locks.
//!
//! A crash (or a lost acknowledgement) between the publish and the mark publishes the row again
//! on the next run: delivery is **at least once**, never at most once. The event id travels
//! with every message as its idempotency key, and the receiver deduplicates on it
//! ([`InMemoryBroker::processed`] shows how), so each event takes effect once. Messages go out
//! in order per stream; across streams on PostgreSQL a message may go out after one of a
//! transaction that committed later (see [`OutboxStore::unpublished`]).
//!
//! The tests (`examples/tests/outbox.rs`) run it all on both stores.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use es_core::{
    async_trait, encode_batch, AppendOutcome, ExpectedVersion, Metadata, NewEvent, RecordEncodeError, Repository,
    RepositoryError, StoreError, StreamId,
};
use es_postgres::PostgresStore;
use es_sqlite::rusqlite::{self, Connection};
use es_sqlite::{SqliteError, SqliteStore};
use serde_json::Value;
use uuid::Uuid;

use crate::ticket::{Ticket, TicketError, TicketEvent};

/// One message for the external system: an event, with its id as the idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    /// The event's id: receivers deduplicate on it.
    pub event_id: Uuid,
    /// The event's stream.
    pub stream: StreamId,
    /// The event's stored name.
    pub event_name: String,
    /// The event's payload.
    pub payload: Value,
}

impl OutboxMessage {
    /// The message announcing `event`, appended to `stream`.
    pub fn for_event(stream: &StreamId, event: &NewEvent) -> Result<Self, OutboxError> {
        Ok(Self {
            event_id: event.event_id,
            stream: stream.clone(),
            event_name: event.event_name.clone(),
            payload: serde_json::from_slice(&event.payload)?,
        })
    }

    /// The messages announcing a batch of `events`, appended to `stream`, one per event.
    pub fn for_batch(stream: &StreamId, events: &[NewEvent]) -> Result<Vec<Self>, OutboxError> {
        events.iter().map(|event| Self::for_event(stream, event)).collect()
    }
}

/// Why a command, or a run of the relay, failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The ticket refused the command.
    #[error(transparent)]
    Rejected(#[from] TicketError),
    /// Loading the ticket failed.
    #[error(transparent)]
    Load(#[from] RepositoryError),
    /// An event would not serialize.
    #[error(transparent)]
    Encode(#[from] RecordEncodeError),
    /// The append was refused (a [`StoreError::Conflict`]: reload and decide again) or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// SQLite failed.
    #[error(transparent)]
    Sqlite(#[from] SqliteError),
    /// A statement of the outbox failed on SQLite.
    #[error(transparent)]
    SqliteRows(#[from] rusqlite::Error),
    /// A statement of the outbox failed on PostgreSQL.
    #[error(transparent)]
    Postgres(#[from] sqlx::Error),
    /// A payload is not JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A global position does not fit the outbox's 64-bit signed column.
    #[error("the position {0} does not fit a 64-bit signed integer")]
    Position(u64),
    /// The publisher refused or failed: the message stays unpublished for the next run.
    #[error("publishing event {event_id} failed; it stays in the outbox: {source}")]
    Publish {
        /// The message's event id.
        event_id: Uuid,
        /// The publisher's error.
        #[source]
        source: PublishError,
    },
}

/// An event store whose database also holds the outbox.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Creates the outbox table if it does not exist.
    async fn create_outbox(&self) -> Result<(), OutboxError>;

    /// Appends `events` to `stream` and one outbox row per event, in one transaction. A retried
    /// batch ([`AppendOutcome::already_stored`]) writes no rows: the transaction that stored it
    /// wrote them.
    async fn append_with_outbox(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, OutboxError>;

    /// Up to `limit` unpublished messages, in the order of their events' global positions.
    ///
    /// That order holds within each stream, and within each call; across calls it does not on
    /// PostgreSQL: a transaction that took its positions earlier may commit after a later one
    /// was published. A consumer that needs one order across streams reads the global log (a
    /// projection), whose order is gap-free; the outbox is for delivering each event at least
    /// once, in order per stream.
    async fn unpublished(&self, limit: usize) -> Result<Vec<OutboxMessage>, OutboxError>;

    /// Marks the message of `event_id` published.
    async fn mark_published(&self, event_id: Uuid) -> Result<(), OutboxError>;
}

/// Runs a command on ticket `ticket`: loads it, lets `decide` (a method of [`Ticket`]) answer
/// with events, and appends them with their outbox rows, expecting the version loaded. The
/// events carry `command` as their command id, so their ids are derived from it.
///
/// A [`StoreError::Conflict`] (another writer got there first) is returned, not retried:
/// reload and decide again.
pub async fn execute_with_outbox<S>(
    store: &S,
    ticket: &str,
    command: Uuid,
    decide: impl FnOnce(&Ticket) -> Result<Vec<TicketEvent>, TicketError>,
) -> Result<AppendOutcome, OutboxError>
where
    S: OutboxStore + es_core::EventStore + Clone,
{
    let current = Repository::<Ticket, S>::new(store.clone()).load(ticket).await?;
    let events = decide(&current.aggregate)?;
    let stream = Repository::<Ticket, S>::stream_id(ticket);
    let batch = encode_batch(&stream, &events, &Metadata::new().with_command_id(command))?;
    store
        .append_with_outbox(&stream, ExpectedVersion::Exact(current.version), batch)
        .await
}

/// The external system's failure to take a message (unreachable, refused, timed out).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PublishError(pub String);

/// The external system: a message broker, a webhook, another service's API.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Delivers `message`; `Ok` once the system has taken it (its acknowledgement).
    async fn publish(&self, message: &OutboxMessage) -> Result<(), PublishError>;
}

/// Publishes the unpublished messages, oldest first, `batch` at a time, until none is left;
/// returns how many were published. Each is marked published after `publisher` took it.
///
/// Stops at the first failure, which is returned: that message and those after it stay
/// unpublished, in order, for the next run. Run one relay at a time (two would both publish
/// the same rows: harmless to a deduplicating receiver, but wasted).
pub async fn publish_pending<S, P>(store: &S, publisher: &P, batch: usize) -> Result<usize, OutboxError>
where
    S: OutboxStore + ?Sized,
    P: Publisher + ?Sized,
{
    let mut published = 0;
    loop {
        let messages = store.unpublished(batch.max(1)).await?;
        if messages.is_empty() {
            return Ok(published);
        }
        for message in messages {
            publisher
                .publish(&message)
                .await
                .map_err(|source| OutboxError::Publish {
                    event_id: message.event_id,
                    source,
                })?;
            // A crash here publishes the message again on the next run: at least once.
            store.mark_published(message.event_id).await?;
            published += 1;
        }
    }
}

/// An in-memory stand-in for the external system: it records every delivery, fails on demand,
/// and shows what a receiver deduplicating by event id processes. Clones share the broker.
#[derive(Debug, Clone, Default)]
pub struct InMemoryBroker {
    state: Arc<Mutex<BrokerState>>,
}

#[derive(Debug, Default)]
struct BrokerState {
    deliveries: Vec<OutboxMessage>,
    failures: usize,
}

impl InMemoryBroker {
    /// A broker that takes every message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next `publishes` calls fail, delivering nothing.
    pub fn fail_next(&self, publishes: usize) {
        self.state().failures = publishes;
    }

    /// Every delivery, in order, duplicates included.
    pub fn deliveries(&self) -> Vec<OutboxMessage> {
        self.state().deliveries.clone()
    }

    /// What a receiver that deduplicates by event id processes: each event once, at its first
    /// delivery.
    pub fn processed(&self) -> Vec<OutboxMessage> {
        let mut seen = HashSet::new();
        self.state()
            .deliveries
            .iter()
            .filter(|message| seen.insert(message.event_id))
            .cloned()
            .collect()
    }

    fn state(&self) -> MutexGuard<'_, BrokerState> {
        // Only pushes and counters: a panic cannot leave the state half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Publisher for InMemoryBroker {
    async fn publish(&self, message: &OutboxMessage) -> Result<(), PublishError> {
        let mut state = self.state();
        if state.failures > 0 {
            state.failures -= 1;
            return Err(PublishError("the broker is unreachable".into()));
        }
        state.deliveries.push(message.clone());
        Ok(())
    }
}

/// The outbox row of each message, at its event's position: `positions` are the append's.
fn rows<'m>(
    messages: &'m [OutboxMessage],
    positions: &'m [u64],
) -> impl Iterator<Item = Result<(&'m OutboxMessage, i64), OutboxError>> {
    messages
        .iter()
        .zip(positions.iter().copied())
        .map(|(message, position)| {
            Ok((
                message,
                i64::try_from(position).map_err(|_| OutboxError::Position(position))?,
            ))
        })
}

// SQLite: the outbox is a table of the store's file, written in `SqliteStore::transaction`.

/// Writes the outbox rows of `messages`, appended at `positions`, through `connection` (inside
/// the transaction that appended their events).
pub fn insert_sqlite_rows(
    connection: &Connection,
    messages: &[OutboxMessage],
    positions: &[u64],
) -> Result<(), OutboxError> {
    let mut insert = connection.prepare_cached(
        "INSERT INTO outbox (event_id, position, aggregate_type, aggregate_id, event_name, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for row in rows(messages, positions) {
        let (message, position) = row?;
        insert.execute((
            message.event_id.as_bytes(),
            position,
            &message.stream.aggregate_type,
            &message.stream.aggregate_id,
            &message.event_name,
            message.payload.to_string(),
        ))?;
    }
    Ok(())
}

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn create_outbox(&self) -> Result<(), OutboxError> {
        self.write(|db| {
            db.execute_batch(
                "CREATE TABLE IF NOT EXISTS outbox (
                     event_id       BLOB    PRIMARY KEY CHECK (length(event_id) = 16),
                     position       INTEGER NOT NULL,
                     aggregate_type TEXT    NOT NULL,
                     aggregate_id   TEXT    NOT NULL,
                     event_name     TEXT    NOT NULL,
                     payload        TEXT    NOT NULL,
                     published_at   INTEGER
                 ) STRICT, WITHOUT ROWID;
                 CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (position) WHERE published_at IS NULL;",
            )
        })
        .await?;
        Ok(())
    }

    async fn append_with_outbox(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, OutboxError> {
        let messages = OutboxMessage::for_batch(stream, &events)?;
        let stream = stream.clone();
        // One write transaction: the events and their rows commit together, or neither does.
        self.transaction(move |tx| {
            let outcome = tx.append(&stream, expected, events)?;
            if !outcome.already_stored {
                insert_sqlite_rows(tx, &messages, &outcome.positions)?;
            }
            Ok(outcome)
        })
        .await
    }

    async fn unpublished(&self, limit: usize) -> Result<Vec<OutboxMessage>, OutboxError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .read(move |db| {
                db.prepare_cached(
                    "SELECT event_id, aggregate_type, aggregate_id, event_name, payload FROM outbox
                     WHERE published_at IS NULL ORDER BY position LIMIT ?1",
                )?
                .query_map([limit], |row| {
                    Ok((
                        row.get::<_, [u8; 16]>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, String>(4)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        rows.into_iter()
            .map(|(event_id, aggregate_type, aggregate_id, event_name, payload)| {
                Ok(OutboxMessage {
                    event_id: Uuid::from_bytes(event_id),
                    stream: StreamId::new(aggregate_type, aggregate_id),
                    event_name,
                    payload: serde_json::from_str(&payload)?,
                })
            })
            .collect()
    }

    async fn mark_published(&self, event_id: Uuid) -> Result<(), OutboxError> {
        let now = chrono::Utc::now().timestamp_micros();
        self.write(move |db| {
            db.prepare_cached("UPDATE outbox SET published_at = ?2 WHERE event_id = ?1 AND published_at IS NULL")?
                .execute((event_id.as_bytes(), now))
        })
        .await?;
        Ok(())
    }
}

// PostgreSQL: the outbox is a table of the store's schema, written in the `sqlx` transaction
// that `append_in_transaction` appends in.

/// The outbox table of `store`, schema-qualified.
fn pg_outbox(store: &PostgresStore) -> String {
    format!("\"{}\".outbox", store.schema())
}

#[async_trait]
impl OutboxStore for PostgresStore {
    async fn create_outbox(&self) -> Result<(), OutboxError> {
        let outbox = pg_outbox(self);
        sqlx::raw_sql(&format!(
            "CREATE TABLE IF NOT EXISTS {outbox} (
                 event_id       uuid   PRIMARY KEY,
                 position       bigint NOT NULL,
                 aggregate_type text   NOT NULL,
                 aggregate_id   text   NOT NULL,
                 event_name     text   NOT NULL,
                 payload        jsonb  NOT NULL,
                 published_at   timestamptz
             );
             CREATE INDEX IF NOT EXISTS outbox_unpublished ON {outbox} (position) WHERE published_at IS NULL;"
        ))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn append_with_outbox(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, OutboxError> {
        let messages = OutboxMessage::for_batch(stream, &events)?;
        let mut tx = self.pool().begin().await?;
        // The append comes first: it is refused in a transaction that wrote before it (see its
        // docs). Any error below drops `tx`, which rolls the events back with the rows.
        let outcome = self.append_in_transaction(&mut tx, stream, expected, events).await?;
        if outcome.already_stored {
            // Stored with its rows by an earlier transaction; this one may be aborted.
            tx.rollback().await?;
            return Ok(outcome);
        }
        let insert = format!(
            "INSERT INTO {} (event_id, position, aggregate_type, aggregate_id, event_name, payload)
             VALUES ($1, $2, $3, $4, $5, $6)",
            pg_outbox(self)
        );
        for row in rows(&messages, &outcome.positions) {
            let (message, position) = row?;
            sqlx::query(&insert)
                .bind(message.event_id)
                .bind(position)
                .bind(&message.stream.aggregate_type)
                .bind(&message.stream.aggregate_id)
                .bind(&message.event_name)
                .bind(sqlx::types::Json(&message.payload))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        // Projection runners learn of the events now rather than at their next poll.
        self.notify_listeners();
        Ok(outcome)
    }

    async fn unpublished(&self, limit: usize) -> Result<Vec<OutboxMessage>, OutboxError> {
        let rows: Vec<(Uuid, String, String, String, sqlx::types::Json<Value>)> = sqlx::query_as(&format!(
            "SELECT event_id, aggregate_type, aggregate_id, event_name, payload FROM {}
             WHERE published_at IS NULL ORDER BY position LIMIT $1",
            pg_outbox(self)
        ))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(event_id, aggregate_type, aggregate_id, event_name, payload)| OutboxMessage {
                    event_id,
                    stream: StreamId::new(aggregate_type, aggregate_id),
                    event_name,
                    payload: payload.0,
                },
            )
            .collect())
    }

    async fn mark_published(&self, event_id: Uuid) -> Result<(), OutboxError> {
        sqlx::query(&format!(
            "UPDATE {} SET published_at = now() WHERE event_id = $1 AND published_at IS NULL",
            pg_outbox(self)
        ))
        .bind(event_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
