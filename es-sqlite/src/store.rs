//! [`SqliteStore`]: the type, opening and migrating, and SQL of the application's own on the
//! same file; the [`EventStore`](es_core::EventStore) and [`GlobalLog`](es_core::GlobalLog)
//! impls live in `read.rs` (appends in `append.rs`), [`SnapshotStore`](es_core::SnapshotStore)
//! in `snapshot.rs`, [`StreamCatalog`](es_core::StreamCatalog) in `catalog.rs`, transactions
//! the caller controls in `transaction.rs`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use es_core::Limits;
use rusqlite::{Connection, TransactionBehavior};

use crate::connection::{blocking, Database};
use crate::error::SqliteError;
use crate::options::SqliteOptions;
use crate::row::micros;
use crate::sql;
use crate::wake::SqliteWakeUp;

/// An event store in one SQLite file: an append-only `events` table, a `snapshots` table and the
/// checkpoints of projections whose read models live in the same file. Cloning it is cheap and
/// shares its connections.
///
/// Every call runs SQLite on Tokio's blocking threads: use it from within a Tokio runtime.
/// See the [crate documentation](crate) for the design and an example.
#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) database: Arc<Database>,
    /// The stores of the tenants opened so far (`es_core::tenancy`), each migrated once.
    pub(crate) tenants: crate::tenancy::OpenTenants,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.database.path)
            .field("options", &self.database.options)
            .finish()
    }
}

impl SqliteStore {
    /// The most [`SqliteOptions::limits`] can allow: SQLite stores a row of at most
    /// `SQLITE_MAX_LENGTH` bytes (1,000,000,000 as compiled here), so a payload takes at most
    /// 800,000,000 bytes, metadata 100,000,000, an event name and a stream id 1,000,000 each. A
    /// batch is inserted row by row, so SQLite bounds neither its events nor its bytes.
    pub const MAX_LIMITS: Limits = Limits::UNLIMITED
        .with_max_payload_bytes(800_000_000)
        .with_max_metadata_bytes(100_000_000)
        .with_max_event_name_bytes(1_000_000)
        .with_max_stream_id_bytes(1_000_000);

    /// Opens (creating if needed) the database file at `path` with the default
    /// [`SqliteOptions`]: WAL mode, `synchronous = FULL`, a 5-second busy timeout.
    ///
    /// Fails with [`SqliteError::NotADatabase`] if the file is something else (it is left
    /// untouched), [`SqliteError::SchemaTooNew`] if newer code migrated it, and
    /// [`SqliteError::Busy`] if another connection holds it locked past the busy timeout. Call
    /// [`SqliteStore::migrate`] before the first append.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, SqliteError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Opens the existing store at `path` for reading only: every write (appends, snapshots,
    /// migrations, projection claims) fails with [`SqliteError::ReadOnly`]. SQLite itself
    /// refuses the writes, whatever the file's permissions. Nothing is created: a missing file
    /// is [`SqliteError::Open`].
    ///
    /// The file must be a store already: one without the store's tables (an empty file,
    /// another program's database) is [`SqliteError::NotAStore`], a directory
    /// [`SqliteError::IsADirectory`], and a file migrated by newer code
    /// [`SqliteError::SchemaTooNew`]. A file last migrated by *older* code opens, since it is
    /// never migrated here: what needs only its tables works, and what needs a table a later
    /// migration adds fails with [`SqliteError::SchemaTooOld`], which names the fix.
    ///
    /// **A file the process may only read.** SQLite reads a file in WAL mode through an index
    /// beside it (`PATH-shm`), which a reader creates when it is missing. When it is missing
    /// and cannot be created (a directory this process may not write: a backup shelf, another
    /// user's application directory), no writer is active, since every writer creates it; the
    /// store then reads the file as immutable (SQLite's `immutable=1`: no locks, no index), and
    /// [`is_immutable`](Self::is_immutable) says so. That reads the file as it is at opening,
    /// which is what a backup or the store of a stopped application needs; commits of a writer
    /// that starts later are not seen, and its checkpoints may make reads fail (never the
    /// file): open the store again once it stops. If the write-ahead log (`PATH-wal`) holds
    /// commits, the immutable file would not show them, so the open fails with
    /// [`SqliteError::UnreadableWal`] instead.
    pub async fn open_read_only(path: impl AsRef<Path>) -> Result<Self, SqliteError> {
        Self::open_with(path, SqliteOptions::default().with_read_only(true)).await
    }

    /// Opens the database file at `path` with `options`.
    pub async fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, SqliteError> {
        let path = path.as_ref().to_owned();
        let database = blocking(move || Database::open(&path, options)).await?;
        Ok(Self {
            database: Arc::new(database),
            tenants: Default::default(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.database.path
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &SqliteOptions {
        &self.database.options
    }

    /// Whether the store was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.database.is_read_only()
    }

    /// Whether the store, opened read-only on a file in a directory this process may not
    /// write, reads it as immutable: as it was at opening, without locks (see
    /// [`open_read_only`](Self::open_read_only)).
    pub fn is_immutable(&self) -> bool {
        self.database.is_immutable()
    }

    /// Creates the tables, or brings them up to date: applies, in order, each embedded migration
    /// not yet recorded in the `es_migrations` table. Calling it again is a no-op.
    ///
    /// Everything runs in one `BEGIN IMMEDIATE` transaction, so processes that open the same new
    /// file at once are safe: one migrates, the others wait for its lock (up to the busy
    /// timeout) and then find nothing to do. A database migrated by newer code is refused with
    /// [`SqliteError::SchemaTooNew`], and nothing is changed.
    pub async fn migrate(&self) -> Result<(), SqliteError> {
        let database = Arc::clone(&self.database);
        blocking(move || migrate(&database)).await
    }

    /// A wake-up that fires when this process appends to the store's file (through this store,
    /// its clones, or any other store opened on the same file), for
    /// [`ProjectionRunner::run`](es_core::ProjectionRunner::run). Appends by other processes
    /// are found by the runner's polling ([`RunnerOptions::poll_interval`](es_core::RunnerOptions)).
    pub fn wake_up(&self) -> SqliteWakeUp {
        SqliteWakeUp {
            appended: self.database.appended.subscribe(),
        }
    }

    /// Runs `query` on a read-only connection to the file, on a blocking thread: to read the
    /// tables of read models kept in the same file. The connection sees the latest commits.
    ///
    /// ```no_run
    /// # async fn demo(store: es_sqlite::SqliteStore) -> Result<(), es_sqlite::SqliteError> {
    /// let open: i64 = store
    ///     .read(|db| db.query_row("SELECT count(*) FROM open_tickets", [], |row| row.get(0)))
    ///     .await?;
    /// # let _ = open; Ok(()) }
    /// ```
    pub async fn read<T, F>(&self, query: F) -> Result<T, SqliteError>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let database = Arc::clone(&self.database);
        blocking(move || database.with_reader(|connection| query(connection).map_err(|error| database.error(error))))
            .await
    }

    /// Runs `work` in a write transaction (`BEGIN IMMEDIATE`) on the store's writer connection,
    /// on a blocking thread, and commits it if `work` succeeds: to create the tables of read
    /// models, or write rows of the application's own. Appends wait while it runs. To append
    /// events in the same transaction as your rows, use [`SqliteStore::transaction`].
    ///
    /// ```no_run
    /// # async fn demo(store: es_sqlite::SqliteStore) -> Result<(), es_sqlite::SqliteError> {
    /// store
    ///     .write(|db| db.execute_batch("CREATE TABLE IF NOT EXISTS open_tickets (id TEXT PRIMARY KEY)"))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn write<T, F>(&self, work: F) -> Result<T, SqliteError>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let database = Arc::clone(&self.database);
        blocking(move || {
            let mut writer = database.writer("write")?;
            let failed = |error| database.error(error);
            if !writer.is_autocommit() {
                writer.execute_batch(sql::ROLLBACK).map_err(failed)?;
            }
            let transaction = writer
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|error| database.write_error(error))?;
            let value = work(&transaction).map_err(failed)?;
            transaction.commit().map_err(failed)?;
            Ok(value)
        })
        .await
    }
}

/// Applies the missing migrations in one write transaction (blocking).
fn migrate(database: &Database) -> Result<(), SqliteError> {
    let writer = database.writer("migrate")?;
    let failed = |error| database.error(error);
    let transaction = crate::connection::Immediate::begin(&writer).map_err(failed)?;
    writer.execute_batch(sql::CREATE_HISTORY).map_err(failed)?;
    let applied: Vec<i64> = writer
        .prepare(sql::APPLIED)
        .and_then(|mut statement| statement.query_map([], |row| row.get(0))?.collect())
        .map_err(failed)?;
    database.refuse_newer(applied.last().copied().unwrap_or(0))?;
    for migration in sql::MIGRATIONS {
        if applied.contains(&migration.version) {
            continue;
        }
        let failed = |source| SqliteError::Migration {
            path: database.path.clone(),
            version: migration.version,
            description: migration.description,
            source,
        };
        writer.execute_batch(migration.sql).map_err(failed)?;
        writer
            .execute(
                sql::RECORD_MIGRATION,
                (migration.version, migration.description, micros(chrono::Utc::now())),
            )
            .map_err(failed)?;
        tracing::info!(
            path = %database.path.display(),
            version = migration.version,
            description = migration.description,
            "applied migration"
        );
    }
    transaction.commit().map_err(failed)
}
