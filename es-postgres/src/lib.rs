//! A PostgreSQL event store for `es-core`: one `events` table (append-only but for streams
//! archived or deleted), one-round-trip appends with the expected version enforced by the
//! database, and a global read that never skips an event.
//!
//! [`PostgresStore`] implements [`EventStore`](es_core::EventStore),
//! [`GlobalLog`](es_core::GlobalLog), [`SnapshotStore`](es_core::SnapshotStore) and
//! [`StreamCatalog`](es_core::StreamCatalog) with sqlx, and passes the same conformance suite as
//! the in-memory store. It needs PostgreSQL 13 or newer.
//!
//! ```no_run
//! use es_core::{EventStore, ExpectedVersion, GlobalLog, Metadata, NewEvent, StreamId};
//! use es_postgres::PostgresStore;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PostgresStore::connect("postgres://app@localhost/app").await?.with_schema("tickets")?;
//! store.migrate().await?; // creates or upgrades the schema; safe to run from every process
//!
//! let stream = StreamId::new("ticket", "T-1");
//! let event = NewEvent {
//!     event_id: uuid::Uuid::now_v7(),
//!     event_name: "TicketOpened".into(),
//!     schema_version: 1,
//!     payload: br#"{"title":"Printer on fire"}"#.to_vec(),
//!     metadata: Metadata::new(),
//! };
//! store.append(&stream, ExpectedVersion::NoStream, vec![event]).await?;
//!
//! // Projections tail the global order from a checkpoint:
//! let page = store.read_all(0, 500).await?;
//! let checkpoint = page.last().map_or(0, |event| event.position);
//! # let _ = checkpoint; Ok(()) }
//! ```
//!
//! Usually you hand the store to an [`es_core::Repository`] rather than appending by hand.
//!
//! `connect` fails fast: a server that refuses the first connection (or a wrong password or
//! database) is a [`PostgresError::ConnectFailed`] at once, and one that does not answer is a
//! [`PostgresError::ConnectTimedOut`] after 5 seconds, both naming the address. To change the
//! timeout or the pool, use [`PostgresStore::connect_with`] and [`PostgresOptions`]; to bring
//! a pool of your own, [`PostgresStore::new`].
//!
//! # Design
//!
//! ## Schema
//!
//! [`PostgresStore::migrate`] creates, in the chosen schema (default `public`):
//!
//! - `events`: every event of every aggregate, append-only (rows leave it only when their stream
//!   is archived or deleted, see [`es_core::lifecycle`]): `position` (bigint: the global
//!   order), `event_id` (uuid), `aggregate_type`, `aggregate_id`, `version` (bigint),
//!   `event_name`, `schema_version`, `payload` (jsonb), `recorded_at` (timestamptz), and the
//!   metadata: `command_id`, `correlation_id`, `causation_id` (uuid), `actor` (text) in
//!   columns of their own, the rest (`Metadata::extra`) as `metadata` (jsonb, NULL when empty).
//!   Rows written before migration 5 keep all their metadata in `metadata`; reads merge both.
//!   See [Indexes](#indexes) for the three indexes and why each is there.
//! - `snapshots`: the latest snapshot per stream; saving keeps the row with the higher version.
//! - `projection_checkpoints` and `parked_events`: per projection, its checkpoint and claim, and
//!   the events it parked (see [Projections](#projections)).
//! - `imports`: per [bulk import](#bulk-import), by name, how far it got (its resume record).
//! - `stream_states` and `archived_events`: the records of closed streams (tombstoned, archived,
//!   deleted) and the events of archived streams, with the indexes of `events`.
//! - `pii_keys` and `pii_subject_streams`: the keys of data subjects and the streams holding
//!   their data (the [`KeyStore`](es_core::pii::KeyStore) of a `PiiStore`).
//! - `tenants`: the tenants of this schema, each in a schema of its own (`es_core::tenancy`).
//! - `es_migrations`: which embedded migrations were applied. Migrations run in one transaction
//!   under an advisory lock keyed on the schema name, so concurrent `migrate` calls are safe.
//!
//! ## Appends: one statement, versions enforced by the database
//!
//! An append on the pool is a single `INSERT ... SELECT`, so a single round trip in its own
//! implicit transaction, with no read of the stream before it in the common cases:
//!
//! - `NoStream` and `Exact(v)` number the batch from `v` (0 for a new stream) and insert only if
//!   the stream has an event at version `v` (one index probe; none for a new stream). If the
//!   stream has moved past `v`, the insert of version `v + 1` violates the unique
//!   `(aggregate_type, aggregate_id, version)` constraint;
//! - `Any` and `StreamExists` number the batch after the stream's last version, read by the same
//!   statement.
//!
//! One event is bound as plain values; a batch as one array per column, expanded with
//! `unnest(...) WITH ORDINALITY`, payloads bound as text and cast to `jsonb` by the server. The
//! metadata of a batch whose events share it (a command's events do) is sent once, not once per
//! event. A statement that inserts nothing because the stream is not at `v` is a
//! [`ConcurrencyConflict`](es_core::ConcurrencyConflict), after up to three more queries (where
//! the batch's ids are stored, whether the stream is closed, its version). Two writers that both pass the check collide on the unique constraint: the second
//! waits for the first to commit and then fails with SQLSTATE 23505 on that constraint, and
//! nothing of its batch is written. The store then reads the actual version and returns the
//! conflict, or, if the expectation still holds (`Any`, `StreamExists`), appends again. A
//! violation of the unique `event_id` constraint is
//! [`StoreError::DuplicateEventId`](es_core::StoreError::DuplicateEventId). Errors are told
//! apart by SQLSTATE and constraint name, never by message text.
//!
//! Appends are idempotent by event id, as the [`EventStore`](es_core::EventStore) contract
//! requires: a retry of a batch whose first answer was lost (the connection broke after the
//! commit) finds the stream past its expected version, or collides on `event_id`. On those
//! failure paths only, one more query looks the batch's ids up; when the batch is stored, in
//! order, in that stream, the append returns the original outcome (versions and positions) with
//! [`already_stored`](es_core::AppendOutcome::already_stored) set and writes nothing. The happy
//! path stays one statement.
//!
//! [`PostgresStore::append_in_transaction`] appends inside the caller's own transaction, so the
//! events commit atomically with other rows (an outbox, a read model). That transaction may
//! have appended or written before, so its statement checks more in one CTE: the stream's last
//! event, the positions the transaction already used, and that the transaction is not older
//! than the stream's last event.
//!
//! ## `read_all` never skips: positions from transaction ids
//!
//! A sequence value is taken when a row is inserted but becomes visible when its transaction
//! commits, so a reader of `position > checkpoint` can see position 11 commit, move its
//! checkpoint to 11, and never see position 10 that commits a moment later. This store numbers
//! events instead with the writing transaction's 64-bit id (xid):
//!
//! ```text
//! position = pg_current_xact_id() << 20 | n        (n = 1, 2, ...: the event's index in its transaction)
//! ```
//!
//! and `read_all` returns only events of transactions that are older than every transaction still
//! in flight:
//!
//! ```text
//! WHERE position > $after
//!   AND position < pg_snapshot_xmin(pg_current_snapshot()) << 20
//! ORDER BY position LIMIT $limit
//! ```
//!
//! `xmin` of the reader's snapshot is the oldest xid still running: every transaction below it
//! has ended, so its events are all visible to that very snapshot (or rolled back, never to
//! appear). Every transaction that can still commit, running now or not yet started, has an xid
//! of at least `xmin`, so its positions lie above everything the read returned. Hence once a
//! read returns position `p`, no event below `p` can appear later: a checkpoint is safe.
//! Positions are therefore large, sparse and strictly increasing, and rolled-back appends leave
//! holes that never stall anyone: nothing waits on a hole.
//!
//! The trade-off: a transaction that has an xid and stays open holds back `read_all` for all
//! readers (events committed after it started are returned only once it ends) — it delays, it
//! never loses or reorders events. Such transactions are long-running writes anywhere in the
//! cluster, sessions left *idle in transaction* after a write, and forgotten prepared (two-phase)
//! transactions. Set `idle_in_transaction_session_timeout` (e.g. `1min`) and keep write
//! transactions short. Read-only transactions hold no xid and do not matter; a projection's unit
//! of work takes one only at its first write (see [`PostgresCheckpoints`]).
//!
//! Within a stream, positions grow with versions: an append's xid is assigned after its snapshot
//! saw the stream's previous event committed.
//!
//! Limits and operations:
//!
//! - a transaction appends at most 2^20 - 1 events; the append that would pass them is refused
//!   with [`StoreError::LimitExceeded`](es_core::StoreError::LimitExceeded)
//!   ([`Limit::TransactionEvents`](es_core::Limit::TransactionEvents)) and leaves the
//!   transaction usable;
//! - every append is first checked against the store's [`Limits`](es_core::Limits) (the same
//!   defaults as every store's; [`PostgresStore::with_limits`] up to
//!   [`PostgresStore::MAX_LIMITS`]), before anything is sent: a batch over them is a
//!   [`StoreError::LimitExceeded`](es_core::StoreError::LimitExceeded). A NUL character
//!   (`\u0000`) in a payload or in metadata is refused there too, as on every store; JSON that
//!   `jsonb` cannot hold otherwise (a number beyond `numeric`) is refused by the server. Both are
//!   [`StoreError::InvalidBatch`](es_core::StoreError::InvalidBatch), nothing written;
//! - positions fit a bigint while xids stay below 2^43 (about 8.8 trillion transactions; past that,
//!   appends fail on a check constraint rather than misnumber);
//! - positions come from the cluster's xid counter. Physical replicas, failover and
//!   `pg_upgrade` keep that counter; a dump restored (or logically replicated) into another
//!   cluster does not, and new events there would sort below stored ones, behind every reader's
//!   checkpoint. [`PostgresStore::migrate`] detects this and refuses with
//!   [`PostgresError::TransactionIdsBehind`]; advance the new cluster's counter (`pg_resetwal`)
//!   first.
//!
//! ## Indexes
//!
//! `events` has three indexes, each a unique constraint that a guarantee rests on, and each
//! also serving reads; nothing else is indexed (an application that queries events by other
//! columns adds its own index, and pays for it on every append):
//!
//! | index | guarantees | queries that use it |
//! |---|---|---|
//! | `events_pkey`: `position` | one event per position | `read_all`, `read_filtered`, `replay_all`, `tail`: `WHERE position > $1 AND position < horizon ORDER BY position`; an append in a caller's transaction: the positions its xid already used |
//! | `events_stream_version_key`: `(aggregate_type, aggregate_id, version)` | optimistic concurrency: two writers cannot store the same version of a stream, so an append is checked by the database, not by a read before the write | `read_stream`, `replay_stream` (`WHERE aggregate_type = $1 AND aggregate_id = $2 AND version BETWEEN ..  ORDER BY version`), `stream_version`, the append's `Exact` probe and head read, `list_streams` (a skip scan over it) |
//! | `events_event_id_key`: `event_id` | an id is stored once among the events of streams not archived (appends do not look into `archived_events`, which keeps its own unique index): a retried append collides on it and is recognised instead of stored twice, whatever its expectation | `read_event` (`Repository::find_command`: recognising a command sent again), the failure paths of an append (where are the batch's ids stored?) |
//!
//! Event ids made by the repository begin with the first 48 bits of their command id (see
//! [`es_core::command_event_id`]): the millisecond timestamp of a UUID v7 command id, the
//! default. So `events_event_id_key`, like `events_pkey`, grows at its right edge instead of
//! touching random pages; commands sent with random (v4) ids lose that.
//!
//! What an event costs on disk is measured by the benchmark (`docs/BENCHMARKS.md`, storage per
//! event): table and each index, beside the raw baseline's smaller row.
//!
//! ## Reads
//!
//! [`read_filtered`](es_core::GlobalLog::read_filtered) reads the same page as `read_all` (the
//! same bound, the limit counted over every row) but converts the payload and metadata to text
//! only for the rows whose aggregate type and event name the filter wants (bound as arrays);
//! the others come as their position alone, so a row nobody reading wants cannot fail the read.
//!
//! `read_stream` filters the version range and the `recorded_until` cut-off in SQL and streams
//! rows as they arrive. `recorded_at` is the clock time of the append statement, the same for all
//! events of a batch. Rows that cannot be mapped (metadata that does not decode, a time out of
//! range, a negative version in the global reads; stream reads ask for versions from 1 on, so
//! they do not see a negative one) are [`StoreError::Corrupt`](es_core::StoreError::Corrupt)
//! naming stream and version; a refused or cut connection, a server shutting down or restarting, a
//! serialization failure are [`StoreError::Unavailable`](es_core::StoreError::Unavailable)
//! (worth retrying later), and other database failures
//! [`StoreError::Backend`](es_core::StoreError::Backend), wrapping the sqlx error or a
//! [`PostgresError`].
//!
//! ## The catalog: listing without scanning
//!
//! [`StreamCatalog::list_streams`](es_core::StreamCatalog::list_streams) walks the unique
//! `(aggregate_type, aggregate_id, version)` index with a recursive query, one index seek per
//! stream (a "skip scan"), and one more per stream listed for its last event: a page costs about
//! twice its size in seeks, never a scan of `events`. An id prefix is jumped to only where ids
//! sort bytewise (a `C` collation); in other collations the ids that share a prefix need not sort
//! together, so a prefixed listing visits the streams after the page start until the page is
//! full (see the trait implementation's docs). Snapshots are paged on their primary key.
//!
//! ## Projections
//!
//! [`PostgresStore::checkpoints`] gives the [`CheckpointStore`](es_core::CheckpointStore) for
//! read models kept in the same database: a runner's unit of work is one transaction, in which
//! the handlers write their tables (with `search_path` set to the store's schema alone: create
//! them with [`PostgresStore::execute_in_schema`]) and the
//! checkpoint row (`projection_checkpoints`) is advanced, so each event is applied exactly once.
//! Events the runner parks (`parked_events`) are written in that transaction too. One runner per
//! projection is active: it holds a session advisory lock on a connection of its own, outside
//! the pool, raises the claim epoch in the checkpoint row, and runs its units of work on that
//! very connection; others wait and take over when it stops or dies. A unit can only commit on
//! a live connection that holds the lock, and saves the checkpoint only under its epoch, so a
//! runner whose claim was taken over never commits again (see [`PostgresCheckpoints`]). Units
//! of one projection are serialized by a transaction-scoped advisory lock rather than a row
//! lock, so a unit takes no transaction id, and holds back no reader of `read_all`, until
//! something writes in it. A runner cancelled mid-batch drops the connection, so no transaction
//! is ever left open on a pooled connection.
//! [`claim_status`](es_core::CheckpointStore::claim_status) finds the lock in `pg_locks`,
//! whichever process holds it, without taking it.
//! After each append commits, the store sends a `NOTIFY` from a separate statement (never inside
//! the append: NOTIFY takes a database-wide lock at commit, which would make appends queue
//! behind each other), at most one per 10 ms ([`PostgresStore::with_notify_interval`]) so that
//! a busy writer does not pay a statement per append; [`PostgresStore::wake_up`] listens, and
//! runners poll as well, since a notification is a wake-up, never the transport.
//!
//! ## Bulk import
//!
//! [`PostgresStore::import`] loads another system's history: [`ImportedEvent`]s with their
//! original ids, timestamps (`recorded_at`) and metadata, from a `futures` stream in the order to
//! store them. Versions are numbered per stream from 1 in source order, so every stream must be
//! new (one with events of its own is refused, [`ImportError::StreamHasEvents`]); positions are
//! the store's. The events go in chunks ([`ImportOptions::chunk_size`], 50,000 by default), one
//! transaction each. A chunk is read, checked (the store's limits, UTF-8 payloads) and encoded in
//! `COPY`'s binary format before its transaction begins; the transaction locks the import's row
//! in `imports` and takes its transaction id first, so the client computes the chunk's positions
//! (`xid << 20 | n`, `n` from 1 in source order) and copies the rows with them straight into
//! `events` (no staging table), then records its progress (events done, the last id, a digest of
//! the streams and ids so far) and commits. While a chunk is copied, the next is read and
//! encoded. A refused chunk rolls back whole, with an [`ImportError`] that names the event
//! (stream, index in the source, id): a unique violation is explained by looking the chunk's ids
//! or versions up, a value the server refuses (JSON that `jsonb` will not take) by the row number
//! of the `COPY` error's context.
//!
//! Imported events get the positions of the import's transactions, so they sort after every
//! event stored before, in source order, and projections see them as new events (listeners are
//! notified at the end); only their `recorded_at` tells their age. Running the import again under
//! its name resumes after the last committed chunk: the source is read from its start, the
//! events already stored are skipped (rebuilding each stream's version), and the run stops with
//! [`ImportError::SourceChanged`] unless they replay as they were; a finished import imports
//! nothing.
//!
//! Throughput, on a 2-CPU virtual machine with a throwaway PostgreSQL 15 (initdb defaults,
//! `fsync` on): 1,000,000 small events over 1,000 streams import at about 80,000 events/s
//! (benchmark scenario 7: 75,000 to 82,000 over 6 runs), as fast as a plain binary `COPY` of the
//! same rows into a table of the same schema (74,000 to 91,000). Index maintenance on the
//! server is most of the cost, and the ceiling: the same `COPY` from a file on the server, with
//! no client at all, takes 11 to 13 s with the three unique indexes and 3 s without any, the
//! `(aggregate_type, aggregate_id, version)` index alone about half. The binary format takes
//! less CPU than text on both sides (72,000 to 83,000 events/s against 66,000 to 70,000).
//!
//! # Testing
//!
//! The workspace crate `es-test-support` (not published) gives tests a real server:
//! `DATABASE_URL` or a throwaway one started from the PostgreSQL binaries on the machine, a fresh
//! schema per test, and a server of a test's own to stop and start again for fault tests.

#![warn(missing_docs)]

mod append;
mod catalog;
mod error;
mod fault;
mod import;
mod keys;
mod lifecycle;
mod notify;
mod options;
mod parking;
mod projection;
mod read;
mod row;
mod snapshot;
mod sql;
mod store;
mod tenancy;

pub use error::PostgresError;
pub use import::{EventAt, ImportError, ImportOptions, ImportProgress, ImportReport, ImportedEvent, SourceChange};
pub use notify::PostgresWakeUp;
pub use options::PostgresOptions;
pub use projection::{PostgresCheckpoints, PostgresClaim, PostgresUnit};
pub use store::PostgresStore;

/// The PostgreSQL driver (sqlx 0.8), re-exported: handlers get its
/// [`PgConnection`](sqlx::PgConnection), [`PostgresStore::append_in_transaction`] takes its
/// transactions, and [`PostgresError`] wraps its errors. Use this re-export (or a `sqlx`
/// dependency of the same minor version, `0.8`) so that the types are the same: with another
/// version they are different types, and nothing compiles.
pub use sqlx;
