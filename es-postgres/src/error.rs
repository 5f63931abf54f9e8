//! Errors of the PostgreSQL store.

use std::time::Duration;

use es_core::{StoreError, StreamId};
use uuid::Uuid;

/// Why setting up the store failed, or why an append was refused before or after reaching the
/// database for a reason that is not a concurrency conflict.
///
/// Construction and [migration](crate::PostgresStore::migrate) return it directly. The
/// [`EventStore`](es_core::EventStore) methods return [`StoreError`]; those of its failures that
/// are not covered by a dedicated `StoreError` variant come as [`StoreError::Backend`] wrapping a
/// `PostgresError`, which callers can recover with `downcast_ref`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// The schema name is not of the form `[a-z_][a-z0-9_]{0,62}` (or starts with the reserved `pg_`).
    #[error(
        "invalid schema name `{name}`: use 1 to 63 characters of `a-z`, `0-9` and `_`, not starting with a \
         digit or `pg_`"
    )]
    InvalidSchemaName {
        /// The rejected name.
        name: String,
    },
    /// A tenant's schema, `<main schema>__<tenant>`, would be longer than PostgreSQL's 63
    /// bytes: the main schema leaves `room` bytes for tenant ids (a main schema of up to 31
    /// bytes leaves room for every [`TenantId`](es_core::tenancy::TenantId)).
    #[error(
        "tenant `{tenant}` cannot have a schema beside the main schema `{schema}`: `{schema}__{tenant}` is over \
         PostgreSQL's 63 bytes, and this main schema leaves room for tenant ids of at most {room} bytes (use a \
         shorter main schema, or shorter tenant ids)"
    )]
    TenantSchemaTooLong {
        /// The main schema.
        schema: String,
        /// The tenant id.
        tenant: String,
        /// The longest tenant id this main schema leaves room for.
        room: usize,
    },
    /// A connection URL does not parse, or a connection other than the store's first failed
    /// (the one [`PostgresStore::wake_up`](crate::PostgresStore::wake_up) listens on).
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(#[source] sqlx::Error),
    /// The first connection of [`PostgresStore::connect`](crate::PostgresStore::connect) failed:
    /// the server refused it (nothing listens at the address, or the server is starting or
    /// shutting down), the name did not resolve, or the server turned it down (a wrong
    /// password, a missing database).
    #[error("cannot connect to PostgreSQL at {address}: {source}")]
    ConnectFailed {
        /// Where: `user@host:port/database` ([`PostgresOptions::address`](crate::PostgresOptions::address)).
        address: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// The first connection of [`PostgresStore::connect`](crate::PostgresStore::connect) got no
    /// answer within the connect timeout
    /// ([`PostgresOptions::with_connect_timeout`](crate::PostgresOptions::with_connect_timeout)):
    /// the address drops packets, or the server is stalled.
    #[error("no answer from PostgreSQL at {address} within {timeout:?} (the connect timeout)")]
    ConnectTimedOut {
        /// Where: `user@host:port/database`.
        address: String,
        /// The connect timeout that ran out.
        timeout: Duration,
    },
    /// SQL run by [`PostgresStore::execute_in_schema`](crate::PostgresStore::execute_in_schema)
    /// failed; nothing of it was applied.
    #[error("SQL run in schema `{schema}` failed: {source}")]
    InSchema {
        /// The store's schema.
        schema: String,
        /// The database's error.
        #[source]
        source: sqlx::Error,
    },
    /// A migration failed; nothing of it was applied.
    #[error("migration {version} ({description}) of schema `{schema}` failed: {source}")]
    Migration {
        /// The schema migrated.
        schema: String,
        /// The migration's version.
        version: i64,
        /// What the migration does.
        description: &'static str,
        /// The database's error.
        #[source]
        source: sqlx::Error,
    },
    /// Preparing or reading the migration history failed.
    #[error("cannot migrate schema `{schema}`: {source}")]
    MigrationSetup {
        /// The schema migrated.
        schema: String,
        /// The database's error.
        #[source]
        source: sqlx::Error,
    },
    /// The stored events carry positions from transaction ids this cluster has not reached yet:
    /// the data was restored (dump, logical replication) into another cluster. New events would
    /// get lower positions than stored ones, and `read_all` readers past them would never see
    /// them, so the store refuses to start.
    #[error(
        "schema `{schema}` holds events of transaction id {stored_xid}, but this cluster is only at {current_xid}: \
         the data comes from another cluster. Advance this cluster's transaction id counter past {stored_xid} \
         (e.g. `pg_resetwal --epoch`/`--next-transaction-id` on the stopped cluster) before appending"
    )]
    TransactionIdsBehind {
        /// The schema checked.
        schema: String,
        /// The highest transaction id found in the stored positions.
        stored_xid: i64,
        /// The cluster's current transaction id.
        current_xid: i64,
    },
    /// An event's payload is not UTF-8, so it cannot be JSON.
    #[error("the payload of event {event_id} for {stream} is not UTF-8 JSON")]
    PayloadNotUtf8 {
        /// The stream appended to.
        stream: StreamId,
        /// The event.
        event_id: Uuid,
    },
    /// A snapshot's state is not UTF-8, so it cannot be JSON.
    #[error("the snapshot state of {stream} at version {version} is not UTF-8 JSON")]
    SnapshotNotUtf8 {
        /// The snapshot's stream.
        stream: StreamId,
        /// The snapshot's version.
        version: u64,
    },
    /// A snapshot's state is not JSON (the column is `jsonb`): refused before it is sent.
    #[error("the snapshot state of {stream} at version {version} is not JSON: {reason}")]
    SnapshotNotJson {
        /// The snapshot's stream.
        stream: StreamId,
        /// The snapshot's version.
        version: u64,
        /// What is wrong, as the JSON parser says.
        reason: String,
    },
    /// A number does not fit its column (e.g. a schema version above `i32::MAX`).
    #[error("{what} {value} of {stream} does not fit the database column")]
    OutOfRange {
        /// The stream concerned.
        stream: StreamId,
        /// Which number.
        what: &'static str,
        /// The number.
        value: u64,
    },
    /// Metadata could not be serialized.
    #[error("cannot serialize the metadata of event {event_id} for {stream}: {source}")]
    Metadata {
        /// The stream appended to.
        stream: StreamId,
        /// The event.
        event_id: Uuid,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// An append inside a caller's transaction was refused because that transaction is older
    /// than the stream's last event: its events would get lower positions than events before
    /// them in the stream. Append in a fresh transaction.
    #[error(
        "the transaction appending to {stream} is older than the stream's last event; \
         append in a transaction that begins after it"
    )]
    StaleTransaction {
        /// The stream appended to.
        stream: StreamId,
    },
    /// The database answered something the store does not expect.
    #[error("unexpected answer from PostgreSQL: {0}")]
    Unexpected(String),
}

impl From<PostgresError> for StoreError {
    fn from(error: PostgresError) -> Self {
        // Caller mistakes in a batch are not backend failures: retrying cannot help.
        match &error {
            PostgresError::PayloadNotUtf8 { stream, .. }
            | PostgresError::OutOfRange { stream, .. }
            | PostgresError::Metadata { stream, .. } => StoreError::InvalidBatch {
                stream: stream.clone(),
                reason: error.to_string(),
            },
            PostgresError::Connect(source) | PostgresError::ConnectFailed { source, .. }
                if crate::fault::is_transient(source) =>
            {
                StoreError::unavailable(error)
            }
            PostgresError::ConnectTimedOut { .. } => StoreError::unavailable(error),
            _ => StoreError::backend(error),
        }
    }
}
