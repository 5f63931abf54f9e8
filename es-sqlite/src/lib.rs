//! A SQLite event store for `es-core`: durable, embedded, one file, with the same semantics as
//! the PostgreSQL store: one `events` table (append-only but for streams archived or deleted),
//! optimistic concurrency enforced under the database's write lock, and a global read that
//! never skips an event.
//!
//! [`SqliteStore`] implements [`EventStore`](es_core::EventStore),
//! [`GlobalLog`](es_core::GlobalLog), [`SnapshotStore`](es_core::SnapshotStore) and, for tools,
//! [`StreamCatalog`](es_core::StreamCatalog), and
//! [`SqliteCheckpoints`] implements [`CheckpointStore`](es_core::CheckpointStore) for read
//! models kept in the same file. All pass the conformance suite of `es-core`. SQLite (3.46) is
//! compiled into the binary through rusqlite's `bundled` feature: no system library is needed.
//!
//! ```
//! use es_core::{EventStore, ExpectedVersion, GlobalLog, Metadata, NewEvent, StreamId};
//! use es_sqlite::SqliteStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("events.db");
//! let store = SqliteStore::open(&path).await?; // creates the file if needed
//! store.migrate().await?; // creates or upgrades the tables; safe to run from every process
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
//! assert_eq!(page[0].position, 1);
//! # Ok(()) }
//! ```
//!
//! Usually you hand the store to an [`es_core::Repository`] rather than appending by hand, and
//! its [`checkpoints`](SqliteStore::checkpoints) to a [`ProjectionRunner`](es_core::ProjectionRunner).
//!
//! # Design
//!
//! ## Schema
//!
//! [`SqliteStore::migrate`] creates, in the file:
//!
//! - `events`: every event of every aggregate, append-only (triggers refuse `UPDATE`, and
//!   `DELETE` but of a stream recorded as archived or deleted). The columns and their meaning are PostgreSQL's: `position` (the global order;
//!   the table's rowid), `event_id` (16-byte UUID, unique, so indexed: appends recognise a
//!   retried batch by it, `read_event` finds an event by it), `aggregate_type`,
//!   `aggregate_id`, `version` (unique per stream, which also serves `read_stream`,
//!   `stream_version` and the version check), `event_name`, `schema_version`, `payload` and
//!   `metadata` (JSON text), `recorded_at` (microseconds since the Unix epoch, UTC). A
//!   `STRICT` table: SQLite refuses values of the wrong type.
//! - `snapshots`: the latest snapshot per stream; saving keeps the row with the higher version.
//! - `projection_checkpoints`: per projection, the checkpoint and the claim (epoch, owner).
//! - `parked_events`: per projection, the events it parked (gave up on and went on without),
//!   with the last error, until an operator retries or drops them.
//! - `stream_states` and `archived_events`: the records of closed streams (tombstoned, archived,
//!   deleted) and the events of archived streams ([`es_core::lifecycle`]).
//! - `pii_keys` and `pii_subject_streams`: the keys of data subjects and the streams holding
//!   their data (the [`KeyStore`](es_core::pii::KeyStore) of a `PiiStore`).
//! - `tenants`: the tenants of this file, each in a file of its own beside it
//!   (`es_core::tenancy`).
//! - `es_migrations`: which embedded migrations were applied. `migrate` runs in one
//!   `BEGIN IMMEDIATE` transaction, so processes opening a new file at once are safe; a file
//!   migrated by newer code is refused with [`SqliteError::SchemaTooNew`], at `open` already.
//!
//! ## Connections and durability
//!
//! The file is put in WAL mode: readers never block the writer or each other, and each reader
//! sees whole commits only. Every connection has `foreign_keys = ON`, a busy timeout (5 s by
//! default) and `synchronous = FULL` by default, so an acknowledged append survives power loss;
//! [`Synchronous::Normal`] trades that for speed on slow disks (see [`SqliteOptions`]).
//!
//! A store has one writer connection (appends and snapshots queue for it in the process, not in
//! SQLite's busy loop) and a pool of reader connections (`query_only`). Every call runs SQLite
//! on Tokio's blocking threads, never on the async runtime's, and no lock is held across an
//! `await`; stream reads hand rows over in chunks while SQLite reads on. Statements are
//! prepared once per connection and take bind parameters only.
//!
//! ## Appends: one transaction, versions checked under the write lock
//!
//! An append first checks the batch, before any lock is taken: against the store's
//! [`Limits`](es_core::Limits) ([`SqliteOptions::limits`], the same defaults as every store's,
//! up to [`SqliteStore::MAX_LIMITS`]; else
//! [`StoreError::LimitExceeded`](es_core::StoreError::LimitExceeded)), and payloads must be
//! JSON (else [`StoreError::InvalidBatch`](es_core::StoreError::InvalidBatch)). It then opens
//! a `BEGIN IMMEDIATE` transaction, which takes SQLite's single write lock at once
//! (waiting up to the busy timeout, else [`SqliteError::Busy`], reported as the transient
//! [`StoreError::Unavailable`](es_core::StoreError::Unavailable)). Under the lock it
//! recognises a retried batch (below), reads the stream's version, checks the
//! [`ExpectedVersion`](es_core::ExpectedVersion) (a refusal is a
//! [`ConcurrencyConflict`](es_core::ConcurrencyConflict) with the actual version), inserts the
//! batch with one cached statement and commits. Nobody can write between the read and the
//! insert, so of racing writers, in this process or another, exactly one wins at each version.
//! The append returns the positions SQLite assigned (the rowids of the inserted events).
//! Any failure rolls the whole batch back.
//!
//! **Appends are idempotent by event id**, so a writer that lost an append's answer (its
//! process died after the commit, say) retries safely. Under the same lock, before the version
//! check, the store probes the unique `event_id` index for the batch's first id: one lookup,
//! which finds nothing on the happy path. When it is stored, the store looks up the batch's
//! other ids; if the whole batch is stored in this stream at consecutive versions in batch
//! order, it writes nothing and returns the original outcome, with
//! [`already_stored`](es_core::AppendOutcome::already_stored) set, whatever the expected
//! version (the rule of [`AppendOutcome::from_stored`](es_core::AppendOutcome::from_stored)).
//! Otherwise the expectation is checked first (a conflict), then the ids: a batch stored only
//! partly, in another order or in another stream, or with an id stored elsewhere, is a
//! [`StoreError::DuplicateEventId`](es_core::StoreError::DuplicateEventId). An id stored that
//! the probe did not cover (a later one of the batch, or one repeated in it) violates the
//! unique constraint; the store then looks the id up in the same transaction, telling the
//! cases apart by data, never by message text.
//!
//! `recorded_at` is the clock time of the append, the same for a whole batch, and never earlier
//! than the last stored event's, even if the clock steps back: time travel by instant agrees
//! with the global order.
//!
//! ## Appends in a transaction of yours
//!
//! [`SqliteStore::transaction`] runs a closure in a write transaction of the writer connection:
//! [`SqliteTransaction::append`] appends events with the same checks and outcomes as above
//! (each append under a savepoint, so a refused one leaves nothing of its batch), and the
//! closure writes rows of its own through the same connection: an outbox row or a read-model
//! row commits with the events that cause it, or neither does. An error from the closure rolls
//! everything back. Wake-ups fire after the commit.
//!
//! ## `read_all` never skips: why no event can be missed
//!
//! The PostgreSQL store needs transaction ids to number events safely, because there a sequence
//! value is taken at insert and becomes visible at commit, out of order. SQLite rules that out
//! by construction:
//!
//! 1. **One writer at a time.** SQLite has a single write lock per database file; every write
//!    transaction (appends, snapshots, projections' units) holds it from `BEGIN IMMEDIATE` to
//!    `COMMIT`, across processes.
//! 2. **Positions are assigned under that lock.** `position` is the rowid: each insert gets the
//!    highest position in the table + 1, read inside the transaction that holds the lock. No
//!    other transaction can take a position until this one has committed or rolled back; a
//!    rolled-back append leaves no hole, since the next one takes the same numbers. Positions
//!    are therefore dense (1, 2, 3, ...) but for the events of deleted streams, and commit in
//!    increasing order. Events leave the table only when their stream is archived or deleted,
//!    and that change first appends its own event after them, so the highest position stays in
//!    the table and a position is never handed out twice; `VACUUM` keeps rowids that are a
//!    table's `INTEGER PRIMARY KEY`.
//! 3. **Readers see whole commits.** In WAL mode a read sees the database as of the last commit
//!    before it started, never part of a transaction.
//!
//! So when a read returns position `p`, every event below `p` was committed by the same or an
//! earlier transaction and is visible to that read: `WHERE position > $after ORDER BY position`
//! is gap-free, and a checkpoint is safe as soon as a read returned it. Unlike PostgreSQL, no
//! open transaction holds readers back: readers never wait for writers.
//!
//! ## Reads
//!
//! `read_stream` filters the version range and the `recorded_until` cut-off in SQL, on the stream
//! index, and streams rows out in chunks of 256 events; `replay_stream` reads only the four columns
//! a replay needs and lends each event's name and payload from a chunk's buffer, building no
//! envelope. `read_filtered` reads `read_all`'s page (the limit counted over every row) in one
//! scan of the position range, but reads the payload and metadata only of the rows whose
//! aggregate type and event name the filter wants (bound as JSON arrays), so a row nobody
//! reading wants cannot fail the read. `tail` is one query, and so is `read_event` (on the `event_id` index). `list_streams`
//! walks the stream index from stream to stream in one read transaction, one seek to the next
//! stream and one to its last event each: a page costs about two index seeks per stream listed,
//! however many events the streams hold; `list_snapshots` reads a range of the snapshots' key. Rows
//! that cannot be mapped (metadata that does not decode, an id of the wrong length) are
//! [`StoreError::Corrupt`](es_core::StoreError::Corrupt) naming stream and version. Locks held past
//! the busy timeout, I/O errors and a full disk are
//! [`StoreError::Unavailable`](es_core::StoreError::Unavailable) (worth retrying later); other
//! failures are [`StoreError::Backend`](es_core::StoreError::Backend). Both wrap a [`SqliteError`].
//!
//! ## Projections
//!
//! [`SqliteStore::checkpoints`] gives the checkpoint store for read models kept in the same
//! file: a runner's unit of work is one write transaction in which the handlers write their
//! tables (through a [`SqliteContext`]) and the checkpoint row is advanced, so each event is
//! applied exactly once; the events the runner parks are written in it too. One runner per projection is active, across processes: it holds an
//! exclusive lock on a claim file of the projection's own beside the database, released by the
//! operating system when its process dies, and raises the claim epoch in the checkpoint row,
//! which every unit checks; [`claim_status`](es_core::CheckpointStore::claim_status) asks the
//! lock, from any process. See [`SqliteCheckpoints`] for what handlers may do and the
//! trade-offs. [`SqliteStore::wake_up`] wakes runners after appends of the same process; their
//! poll interval covers other processes.
//!
//! ## Bad input
//!
//! A file that is not a database ([`SqliteError::NotADatabase`], left untouched), a directory
//! ([`SqliteError::IsADirectory`]), a schema newer than the code ([`SqliteError::SchemaTooNew`]),
//! a lock held past the busy timeout ([`SqliteError::Busy`]), a write to a store opened with
//! [`SqliteStore::open_read_only`] ([`SqliteError::ReadOnly`]); and, read-only, a file without
//! the store's tables ([`SqliteError::NotAStore`]) or one whose schema is older than the code,
//! when an operation needs a newer table ([`SqliteError::SchemaTooOld`]): each is a typed error,
//! nothing is half-written, and nothing panics. A read-only store in a directory this process
//! may not write reads the file as immutable (see [`SqliteStore::open_read_only`]).
//!
//! ## Limits
//!
//! - One writer at a time per file: appends of all processes are serialized (fine for the
//!   thousands of appends per second one disk sustains; not a server for many machines).
//! - The file must be on a local file system: SQLite's locking (and the claims' `flock`) is
//!   unreliable over network file systems.
//! - A projection's unit of work holds the write lock while its handlers run: appends wait.
//! - Every call crosses to a blocking thread and back: microseconds, up to tens of them on a
//!   busy machine. That is noise next to a durable commit or a long replay, but it is most of
//!   the cost of loading a stream of a few events.

#![warn(missing_docs)]

mod append;
mod catalog;
mod claim;
mod connection;
mod error;
mod keys;
mod lifecycle;
mod options;
mod parking;
mod projection;
mod read;
mod row;
mod snapshot;
mod sql;
mod store;
mod tenancy;
mod transaction;
mod units;
mod wake;
mod write_lock;

pub use claim::SqliteClaim;
pub use error::SqliteError;
pub use options::{SqliteOptions, Synchronous};
pub use projection::{SqliteCheckpoints, SqliteContext, SqliteUnit};
pub use store::SqliteStore;
pub use transaction::SqliteTransaction;
pub use wake::SqliteWakeUp;

/// The SQLite driver, re-exported: handlers write through its [`Connection`](rusqlite::Connection)
/// and [`SqliteError`] wraps its errors. Use this re-export rather than a `rusqlite` dependency
/// of your own, so the versions always match.
pub use rusqlite;
