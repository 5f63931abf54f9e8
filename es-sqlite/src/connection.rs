//! Connections to the database file: opening one with the store's settings, the one writer, the
//! pool of readers, write transactions, and running SQLite on Tokio's blocking threads.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, DatabaseName, ErrorCode, OpenFlags};
use tokio::sync::watch;

use crate::error::SqliteError;
use crate::options::SqliteOptions;
use crate::sql;
use crate::SqliteStore;

/// Prepared statements kept per connection: more than the store uses, so none is ever evicted.
const STATEMENT_CACHE: usize = 32;

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Writes: the store's writer, a projection's units of work. Sets the file to WAL mode.
    Writer,
    /// Reads only (`PRAGMA query_only`), never creates the file.
    Reader,
}

/// The open database: its file, settings and connections, shared by a store's clones and its
/// checkpoint stores.
#[derive(Debug)]
pub(crate) struct Database {
    pub(crate) path: PathBuf,
    pub(crate) options: SqliteOptions,
    /// The one connection appends and snapshots go through, so writers of this process queue
    /// here rather than in SQLite's busy handler; `None` when read-only.
    writer: Option<Mutex<Connection>>,
    idle_readers: Mutex<Vec<Connection>>,
    /// Counts appends committed by this process, for wake-ups.
    pub(crate) appended: Arc<watch::Sender<u64>>,
}

impl Database {
    /// Opens the file (blocking): checks it is a database of a schema this code knows, and sets
    /// WAL mode unless read-only.
    pub(crate) fn open(path: &Path, mut options: SqliteOptions) -> Result<Self, SqliteError> {
        let name = path.as_os_str();
        if name.is_empty() || name == ":memory:" {
            return Err(SqliteError::NotAFile { path: path.to_owned() });
        }
        let limits = options.limits.capped_by(SqliteStore::MAX_LIMITS);
        if limits != options.limits {
            tracing::warn!(asked = ?options.limits, applied = ?limits, "limits capped by what SQLite can store");
            options.limits = limits;
        }
        let mut database = Self {
            path: path.to_owned(),
            options,
            writer: None,
            idle_readers: Mutex::default(),
            appended: Arc::new(watch::Sender::new(0)),
        };
        let first = if database.options.read_only {
            database.connect(Role::Reader)?
        } else {
            database.connect(Role::Writer)?
        };
        database.check_schema(&first)?;
        if database.options.read_only {
            database.idle().push(first);
        } else {
            database.writer = Some(Mutex::new(first));
        }
        // Now that the file exists, stores of this process opened on it share wake-ups.
        database.appended = crate::wake::channel_for(&database.path);
        Ok(database)
    }

    /// A new connection to the file with the store's settings (blocking).
    pub(crate) fn connect(&self, role: Role) -> Result<Connection, SqliteError> {
        let options = &self.options;
        let flags = if options.read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        } else if role == Role::Writer && options.create_if_missing {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
        };
        let connection =
            Connection::open_with_flags(&self.path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(|source| {
                SqliteError::Open {
                    path: self.path.clone(),
                    source,
                }
            })?;
        let setup = |error| self.error(error);
        connection.busy_timeout(options.busy_timeout).map_err(setup)?;
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // SQLite answers "busy" at once, without its busy handler, while another connection is
        // turning a new file into WAL mode: such steps of opening wait here instead, as long
        // as the busy timeout.
        let deadline = std::time::Instant::now() + options.busy_timeout;
        // The first read of the file: a file that is not a database fails here, untouched.
        until_not_busy(deadline, || connection.query_row(sql::PROBE, [], |_| Ok(()))).map_err(setup)?;
        if !options.read_only && connection.is_readonly(DatabaseName::Main).map_err(setup)? {
            return Err(SqliteError::ReadOnly {
                path: self.path.clone(),
                operation: "open the file for writing",
            });
        }
        if role == Role::Writer && !options.read_only {
            let mode: String = until_not_busy(deadline, || {
                connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            })
            .map_err(setup)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(SqliteError::Unexpected(format!(
                    "{} cannot use write-ahead logging (journal mode stays `{mode}`)",
                    self.path.display()
                )));
            }
        }
        connection
            .pragma_update(None, "synchronous", options.synchronous.pragma())
            .map_err(setup)?;
        connection.pragma_update(None, "foreign_keys", "ON").map_err(setup)?;
        if role == Role::Reader {
            connection.pragma_update(None, "query_only", "ON").map_err(setup)?;
        }
        Ok(connection)
    }

    /// Refuses a database migrated by newer code.
    pub(crate) fn check_schema(&self, connection: &Connection) -> Result<(), SqliteError> {
        let deadline = std::time::Instant::now() + self.options.busy_timeout;
        let has_history: i64 = until_not_busy(deadline, || {
            connection.query_row(sql::HISTORY_EXISTS, [], |row| row.get(0))
        })
        .map_err(|error| self.error(error))?;
        if has_history == 0 {
            return Ok(());
        }
        let applied: Option<i64> = connection
            .query_row(sql::NEWEST_APPLIED, [], |row| row.get(0))
            .map_err(|error| self.error(error))?;
        self.refuse_newer(applied.unwrap_or(0))
    }

    /// [`SqliteError::SchemaTooNew`] when `applied` is beyond the newest known migration.
    pub(crate) fn refuse_newer(&self, applied: i64) -> Result<(), SqliteError> {
        let known = sql::newest_migration();
        if applied > known {
            return Err(SqliteError::SchemaTooNew {
                path: self.path.clone(),
                applied,
                known,
            });
        }
        Ok(())
    }

    /// Whether the store was opened read-only.
    pub(crate) fn is_read_only(&self) -> bool {
        self.writer.is_none()
    }

    /// The writer connection, locked (blocking); [`SqliteError::ReadOnly`] naming `operation`
    /// when the store is read-only.
    pub(crate) fn writer(&self, operation: &'static str) -> Result<MutexGuard<'_, Connection>, SqliteError> {
        let Some(writer) = &self.writer else {
            return Err(self.read_only(operation));
        };
        // Every write runs in a transaction that is rolled back unless committed, and the next
        // user rolls back a transaction a panic left open: recovering from poisoning is safe.
        Ok(writer.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The error for a write refused because the store is read-only.
    pub(crate) fn read_only(&self, operation: &'static str) -> SqliteError {
        SqliteError::ReadOnly {
            path: self.path.clone(),
            operation,
        }
    }

    /// Runs `read` on an idle reader connection, or a new one (blocking), and keeps the
    /// connection for reuse afterwards.
    pub(crate) fn with_reader<T, E>(&self, read: impl FnOnce(&Connection) -> Result<T, E>) -> Result<T, E>
    where
        E: From<SqliteError>,
    {
        let idle = self.idle().pop();
        let connection = match idle {
            Some(connection) => connection,
            None => self.connect(Role::Reader)?,
        };
        let result = read(&connection);
        let mut idle = self.idle();
        if connection.is_autocommit() && idle.len() < self.options.max_idle_readers {
            idle.push(connection);
        }
        result
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Connection>> {
        // Holds idle connections only; a panic cannot leave it half-changed.
        self.idle_readers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sorts an SQLite error of this database into the store's errors.
    pub(crate) fn error(&self, source: rusqlite::Error) -> SqliteError {
        let path = self.path.clone();
        match source.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => SqliteError::Busy {
                path,
                timeout: self.options.busy_timeout,
                source,
            },
            Some(ErrorCode::ReadOnly) => SqliteError::ReadOnly {
                path,
                operation: "write to it",
            },
            Some(ErrorCode::NotADatabase) => SqliteError::NotADatabase { path, source },
            _ => SqliteError::Sqlite { path, source },
        }
    }
}

/// A write transaction (`BEGIN IMMEDIATE`) on a borrowed connection, rolled back unless
/// committed.
pub(crate) struct Immediate<'c> {
    connection: &'c Connection,
    open: bool,
}

impl<'c> Immediate<'c> {
    /// Takes the write lock, waiting up to the busy timeout.
    pub(crate) fn begin(connection: &'c Connection) -> rusqlite::Result<Self> {
        begin_immediate(connection)?;
        Ok(Self { connection, open: true })
    }

    /// Commits; on failure the transaction is rolled back.
    pub(crate) fn commit(mut self) -> rusqlite::Result<()> {
        run(self.connection, sql::COMMIT)?;
        self.open = false;
        Ok(())
    }
}

impl Drop for Immediate<'_> {
    fn drop(&mut self) {
        if self.open && !self.connection.is_autocommit() {
            // A failed rollback leaves the transaction open; the next `begin` rolls it back.
            let _ = run(self.connection, sql::ROLLBACK);
        }
    }
}

/// Opens a write transaction on `connection`, first rolling back any transaction a failure left
/// open.
pub(crate) fn begin_immediate(connection: &Connection) -> rusqlite::Result<()> {
    if !connection.is_autocommit() {
        run(connection, sql::ROLLBACK)?;
    }
    run(connection, sql::BEGIN_IMMEDIATE)
}

/// Runs a cached statement that returns no rows.
pub(crate) fn run(connection: &Connection, statement: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(statement)?.execute([]).map(drop)
}

/// Runs `work` on one of Tokio's blocking threads, so SQLite's waits (locks, disk) never block
/// the async runtime.
pub(crate) async fn blocking<T, E, F>(work: F) -> Result<T, E>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<SqliteError> + Send + 'static,
{
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| E::from(SqliteError::NoRuntime))?;
    match runtime.spawn_blocking(work).await {
        Ok(result) => result,
        Err(error) => Err(E::from(SqliteError::Task(error.to_string()))),
    }
}

/// Runs `step` again while SQLite says the database is busy, until `deadline` (blocking).
fn until_not_busy<T>(
    deadline: std::time::Instant,
    mut step: impl FnMut() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    loop {
        match step() {
            Err(error)
                if matches!(
                    error.sqlite_error_code(),
                    Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            result => return result,
        }
    }
}
