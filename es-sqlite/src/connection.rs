//! Connections to the database file: opening one with the store's settings, the one writer, the
//! pool of readers, write transactions, and running SQLite on Tokio's blocking threads.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rusqlite::ffi::SQLITE_ERROR;
use rusqlite::{Connection, DatabaseName, ErrorCode, OpenFlags};
use tokio::sync::watch;

use crate::error::SqliteError;
use crate::options::SqliteOptions;
use crate::sql;
pub(crate) use crate::units::{OpenUnits, UnitMark};
pub(crate) use crate::write_lock::{begin_immediate, run, Immediate};
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
    /// The URI every connection opens when the store is read as an unchanging file (SQLite's
    /// `immutable`): read-only, where the write-ahead log's index cannot be created and no
    /// writer is active (see [`Database::open`]).
    immutable: Option<String>,
    /// The newest migration applied to a file opened read-only whose schema is older than this
    /// code: a statement that fails on it for want of a table is [`SqliteError::SchemaTooOld`].
    behind: Option<i64>,
    idle_readers: Mutex<Vec<Connection>>,
    /// The units of work of this process's projections open on the file.
    pub(crate) units: OpenUnits,
    /// Counts appends committed by this process, for wake-ups.
    pub(crate) appended: Arc<watch::Sender<u64>>,
}

impl Database {
    /// Opens the file (blocking): checks it is a database of a schema this code knows, and sets
    /// WAL mode unless read-only.
    ///
    /// Read-only, the file must be a store already (a file without the migration history is
    /// [`SqliteError::NotAStore`]: it cannot be migrated through this handle), and its schema
    /// may be older than the code (recorded in `behind`). A file in WAL mode needs its `-shm`
    /// index to be read; when that does not exist and cannot be created (a directory this
    /// process may not write) no writer is active, since every writer creates it, so the file
    /// is read as immutable instead, provided no write-ahead log holds commits.
    pub(crate) fn open(path: &Path, mut options: SqliteOptions) -> Result<Self, SqliteError> {
        let name = path.as_os_str();
        if name.is_empty() || name == ":memory:" {
            return Err(SqliteError::NotAFile { path: path.to_owned() });
        }
        // SQLite reports a directory as a disk I/O error.
        if path.is_dir() {
            return Err(SqliteError::IsADirectory { path: path.to_owned() });
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
            immutable: None,
            behind: None,
            idle_readers: Mutex::default(),
            units: OpenUnits::default(),
            appended: Arc::new(watch::Sender::new(0)),
        };
        let first = if database.options.read_only {
            database.first_reader()?
        } else {
            database.connect(Role::Writer)?
        };
        let applied = database.check_schema(&first)?;
        if database.options.read_only {
            match applied {
                None => return Err(SqliteError::NotAStore { path: path.to_owned() }),
                Some(applied) if applied < sql::newest_migration() => database.behind = Some(applied),
                Some(_) => {}
            }
            database.idle().push(first);
        } else {
            database.writer = Some(Mutex::new(first));
        }
        // Now that the file exists, stores of this process opened on it share wake-ups.
        database.appended = crate::wake::channel_for(&database.path);
        Ok(database)
    }

    /// The first connection of a read-only store (blocking), falling back to reading the file
    /// as immutable when SQLite cannot create the index of its write-ahead log (see
    /// [`Database::open`]).
    fn first_reader(&mut self) -> Result<Connection, SqliteError> {
        let source = match self.try_connect(Role::Reader) {
            Ok(connection) => return Ok(connection),
            Err(Connect::Failed(error)) => return Err(error),
            Err(Connect::NoSharedMemory(source)) => source,
        };
        let shm = sibling(&self.path, "-shm");
        let wal = sibling(&self.path, "-wal");
        // An existing index that cannot be read is a permission problem, not a missing writer.
        if shm.exists() {
            return Err(self.error(source));
        }
        // Commits still in the log are not in the file: an immutable read would miss them.
        if std::fs::metadata(&wal).is_ok_and(|log| log.len() > 0) {
            return Err(SqliteError::UnreadableWal {
                path: self.path.clone(),
                wal,
                shm,
            });
        }
        let Some(uri) = immutable_uri(&self.path) else {
            return Err(self.error(source));
        };
        tracing::warn!(
            path = %self.path.display(),
            "the directory is read-only and no writer is active: reading the file as immutable"
        );
        self.immutable = Some(uri);
        self.connect(Role::Reader)
    }

    /// A new connection to the file with the store's settings (blocking).
    pub(crate) fn connect(&self, role: Role) -> Result<Connection, SqliteError> {
        self.try_connect(role).map_err(|failure| match failure {
            Connect::Failed(error) => error,
            Connect::NoSharedMemory(source) => self.error(source),
        })
    }

    /// [`Database::connect`], telling apart a read-only connection that cannot create the
    /// index of the write-ahead log.
    fn try_connect(&self, role: Role) -> Result<Connection, Connect> {
        let options = &self.options;
        let flags = if options.read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        } else if role == Role::Writer && options.create_if_missing {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
        };
        let flags = flags | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let opened = match &self.immutable {
            Some(uri) => Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI),
            None => Connection::open_with_flags(&self.path, flags),
        };
        let connection = opened.map_err(|source| {
            Connect::Failed(SqliteError::Open {
                path: self.path.clone(),
                source,
            })
        })?;
        let setup = |error| Connect::Failed(self.error(error));
        connection
            .busy_timeout(sqlite_busy_timeout(options.busy_timeout))
            .map_err(setup)?;
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // SQLite answers "busy" at once, without its busy handler, while another connection is
        // turning a new file into WAL mode: such steps of opening wait here instead, as long
        // as the busy timeout.
        let deadline = deadline_after(options.busy_timeout);
        // The first read of the file: a file that is not a database fails here, untouched. A
        // read-only connection to a file in WAL mode fails here too when SQLite can neither
        // find nor create the log's index (`-shm`).
        if let Err(error) = until_not_busy(deadline, || connection.query_row(sql::PROBE, [], |_| Ok(()))) {
            let no_index = options.read_only
                && self.immutable.is_none()
                && matches!(
                    error.sqlite_error_code(),
                    Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen)
                );
            return Err(if no_index {
                Connect::NoSharedMemory(error)
            } else {
                Connect::Failed(self.error(error))
            });
        }
        if !options.read_only && connection.is_readonly(DatabaseName::Main).map_err(setup)? {
            return Err(Connect::Failed(SqliteError::ReadOnly {
                path: self.path.clone(),
                operation: "open the file for writing",
            }));
        }
        if role == Role::Writer && !options.read_only {
            let mode: String = until_not_busy(deadline, || {
                connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            })
            .map_err(setup)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(Connect::Failed(SqliteError::Unexpected(format!(
                    "{} cannot use write-ahead logging (journal mode stays `{mode}`)",
                    self.path.display()
                ))));
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

    /// Refuses a database migrated by newer code; the newest migration applied, `None` when the
    /// file has no migration history (it is not a store yet).
    pub(crate) fn check_schema(&self, connection: &Connection) -> Result<Option<i64>, SqliteError> {
        let deadline = deadline_after(self.options.busy_timeout);
        let has_history: i64 = until_not_busy(deadline, || {
            connection.query_row(sql::HISTORY_EXISTS, [], |row| row.get(0))
        })
        .map_err(|error| self.error(error))?;
        if has_history == 0 {
            return Ok(None);
        }
        let applied: Option<i64> = connection
            .query_row(sql::NEWEST_APPLIED, [], |row| row.get(0))
            .map_err(|error| self.error(error))?;
        let applied = applied.unwrap_or(0);
        self.refuse_newer(applied)?;
        Ok(Some(applied))
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

    /// Whether the file is read as immutable (see [`Database::open`]).
    pub(crate) fn is_immutable(&self) -> bool {
        self.immutable.is_some()
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

    /// [`Database::error`] for a write through the store (an append, a snapshot, a lifecycle
    /// change, a transaction): a write that waited out the busy timeout while a unit of work of
    /// this process held the write lock all along is
    /// [`SqliteError::HeldByProjection`], not a passing [`SqliteError::Busy`].
    pub(crate) fn write_error(&self, source: rusqlite::Error) -> SqliteError {
        if matches!(
            source.sqlite_error_code(),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
        ) {
            if let Some((projection, since)) = self.units.oldest() {
                let held_for = since.elapsed();
                if held_for >= sqlite_busy_timeout(self.options.busy_timeout) {
                    return SqliteError::HeldByProjection {
                        path: self.path.clone(),
                        projection,
                        held_for,
                    };
                }
            }
        }
        self.error(source)
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
            _ => match self.behind {
                // A plain SQL error (a table or column missing) on a file whose schema is known
                // to be older than the code: the missing migrations are the cause.
                Some(applied) if source.sqlite_error().is_some_and(|e| e.extended_code == SQLITE_ERROR) => {
                    SqliteError::SchemaTooOld {
                        path,
                        applied,
                        known: sql::newest_migration(),
                        source,
                    }
                }
                _ => SqliteError::Sqlite { path, source },
            },
        }
    }
}

/// Why a connection could not be opened.
enum Connect {
    /// For good: the error to report.
    Failed(SqliteError),
    /// Read-only, SQLite can neither find nor create the index of the write-ahead log (`-shm`).
    NoSharedMemory(rusqlite::Error),
}

/// The file beside `path` whose name ends with `suffix`, as SQLite names the write-ahead log
/// (`-wal`) and its index (`-shm`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The URI that opens `path` read-only as an immutable file: absolute, with the characters a URI
/// gives meaning to escaped. `None` for a path that cannot be written as one (not UTF-8, or on a
/// platform whose paths are not Unix paths).
fn immutable_uri(path: &Path) -> Option<String> {
    if !cfg!(unix) {
        return None;
    }
    let absolute = std::fs::canonicalize(path).ok()?;
    let mut uri = String::from("file://");
    for character in absolute.to_str()?.chars() {
        match character {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            other => uri.push(other),
        }
    }
    uri.push_str("?mode=ro&immutable=1");
    Some(uri)
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

/// The longest busy timeout SQLite takes (`i32::MAX` milliseconds, about 24 days): a longer
/// one, such as `Duration::MAX` for "wait for ever", waits that long instead of failing.
fn sqlite_busy_timeout(timeout: std::time::Duration) -> std::time::Duration {
    timeout.min(std::time::Duration::from_millis(i32::MAX as u64))
}

/// The instant `timeout` from now, or a century from now for a timeout too long for the clock.
fn deadline_after(timeout: std::time::Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(std::time::Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn the_immutable_uri_is_absolute_and_escapes_what_a_uri_reads() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a%b?c#d.db");
        std::fs::write(&path, b"")?;
        let Some(uri) = immutable_uri(&path) else {
            return Err("no URI for a UTF-8 path".into());
        };
        let absolute = std::fs::canonicalize(dir.path())?;
        let expected = format!("file://{}/a%25b%3fc%23d.db?mode=ro&immutable=1", absolute.display());
        assert_eq!(uri, expected);
        // SQLite reads it back as the same file.
        let connection =
            Connection::open_with_flags(&uri, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI)?;
        let file: String = connection.query_row("PRAGMA database_list", [], |row| row.get(2))?;
        assert_eq!(Path::new(&file), std::fs::canonicalize(&path)?);
        Ok(())
    }

    #[test]
    fn the_log_and_its_index_sit_beside_the_file() {
        assert_eq!(sibling(Path::new("dir/es.db"), "-wal"), PathBuf::from("dir/es.db-wal"));
        assert_eq!(sibling(Path::new("es.db"), "-shm"), PathBuf::from("es.db-shm"));
    }
}
