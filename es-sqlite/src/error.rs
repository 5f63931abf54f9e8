//! Errors of the SQLite store, and which of them are outages worth retrying.

use std::error::Error;
use std::path::PathBuf;
use std::time::Duration;

use es_core::{CheckpointError, StoreError, StreamId};
use rusqlite::ErrorCode;

/// Why opening, migrating or using the store failed, for a reason other than a concurrency
/// conflict or a bad batch.
///
/// Opening and [migrating](crate::SqliteStore::migrate) return it directly. The trait methods
/// return [`StoreError`] or [`CheckpointError`], wrapping a `SqliteError` in their `Unavailable`
/// variant when [`SqliteError::is_transient`] says so and in `Backend` otherwise; callers can
/// recover it with `downcast_ref::<SqliteError>()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// The path names no file: `""` and `":memory:"` are refused, since readers and writers use
    /// separate connections that must see the same data.
    #[error(
        "`{path}` names no database file: es-sqlite keeps events in a file (for tests, use a file in a \
         temporary directory)"
    )]
    NotAFile {
        /// The refused path.
        path: PathBuf,
    },
    /// The path is a directory: a store is a file.
    #[error("{path} is a directory, not an es-rs store: name the store's file (the directory holds it)")]
    IsADirectory {
        /// The directory.
        path: PathBuf,
    },
    /// Opened read-only, the file is an SQLite database (or empty) without the store's tables:
    /// it has no migration history, so it is not an es-rs store, and a read-only store cannot
    /// migrate it into one.
    #[error(
        "{path} is not an es-rs store: it has none of the store's tables (an empty file, or another program's \
         database); name the store's file, or, to start a store in this file, open it writable and migrate it"
    )]
    NotAStore {
        /// The file.
        path: PathBuf,
    },
    /// Opened read-only, the file's write-ahead log holds commits, and reading them needs the
    /// log's index (`-shm`), which does not exist and which SQLite cannot create: the directory
    /// is not writable by this process. (Without commits in the log, the file is read as
    /// immutable instead: see [`SqliteStore::open_read_only`](crate::SqliteStore::open_read_only).)
    #[error(
        "cannot read {path}: its write-ahead log {wal} holds commits, and reading them needs {shm}, which does not \
         exist and cannot be created (this process may not write the directory); read it as a user who may write \
         the directory, or copy {path} and {wal} to a directory you may write"
    )]
    UnreadableWal {
        /// The database file.
        path: PathBuf,
        /// The write-ahead log.
        wal: PathBuf,
        /// The index SQLite needs beside it.
        shm: PathBuf,
    },
    /// A write through the store waited out the busy timeout for SQLite's write lock while a
    /// unit of work of this process's projection `projection` held it all along: most likely a
    /// handler of that projection writing to the file whose events it projects (a command, an
    /// append), which waits for its own unit. Not transient: waiting longer cannot help. Keep
    /// such a projection's checkpoints in another file (see
    /// [`SqliteCheckpoints`](crate::SqliteCheckpoints)).
    #[error(
        "the write lock of {path} is held by a unit of work of projection `{projection}` of this process, open for \
         {held_for:?}: a handler that writes to the store it projects (a command, an append) waits for its own \
         unit; keep that projection's checkpoints in another file (see SqliteCheckpoints)"
    )]
    HeldByProjection {
        /// The database file.
        path: PathBuf,
        /// The projection whose unit holds the lock.
        projection: String,
        /// How long its unit had been open.
        held_for: std::time::Duration,
    },
    /// SQLite could not open the file (a missing directory, a missing file when not creating
    /// one, a permission).
    #[error("cannot open the SQLite database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The file exists but is not an SQLite database (or its header is damaged). Nothing was
    /// written to it.
    #[error("{path} is not an SQLite database (or its header is damaged); it was left untouched: {source}")]
    NotADatabase {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was migrated by a newer version of es-sqlite: this code does not know its
    /// schema and refuses to touch it.
    #[error(
        "the database {path} has schema migration {applied}, but this version of es-sqlite knows migrations up \
         to {known} only: it was migrated by newer code; deploy that code to use it"
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The newest migration recorded in the database.
        applied: i64,
        /// The newest migration this code knows.
        known: i64,
    },
    /// The database, opened read-only, was last migrated by older code, and this operation needs
    /// a table or column a later migration adds (the stream lifecycle's, say). A read-only store
    /// never migrates: open the file writable and [migrate](crate::SqliteStore::migrate) it once
    /// (running the application that writes it does). Operations that need only the older
    /// tables work meanwhile.
    #[error(
        "the database {path} has schema migration {applied}, but this version of es-sqlite needs migrations up to \
         {known} for this: it was last migrated by older code, and a store opened read-only never migrates; open it \
         writable and migrate it once (run the application that writes it) to bring it up to date: {source}"
    )]
    SchemaTooOld {
        /// The database file.
        path: PathBuf,
        /// The newest migration recorded in the database.
        applied: i64,
        /// The newest migration this code knows.
        known: i64,
        /// SQLite's error (a missing table, say).
        #[source]
        source: rusqlite::Error,
    },
    /// Another connection (another process, a projection's unit of work) held the lock this
    /// operation needed for longer than the busy timeout. Nothing was written; trying again
    /// later may work.
    #[error("the database {path} stayed locked by another connection past the busy timeout of {timeout:?}: {source}")]
    Busy {
        /// The database file.
        path: PathBuf,
        /// The busy timeout that ran out.
        timeout: Duration,
        /// SQLite's error (`SQLITE_BUSY` or `SQLITE_LOCKED`).
        #[source]
        source: rusqlite::Error,
    },
    /// A write on a store opened read-only, or on a file SQLite can only open read-only.
    #[error(
        "the database {path} is read-only here: cannot {operation} (the store was opened read-only, or this \
         process may not write the file or its directory)"
    )]
    ReadOnly {
        /// The database file.
        path: PathBuf,
        /// What was refused.
        operation: &'static str,
    },
    /// A migration failed; nothing of it was applied.
    #[error("migration {version} ({description}) of {path} failed; nothing of it was applied: {source}")]
    Migration {
        /// The database file.
        path: PathBuf,
        /// The migration's version.
        version: i64,
        /// What the migration does.
        description: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// Any other failure of SQLite: a missing table (not migrated), a full disk, an I/O error,
    /// a corrupt page.
    #[error("SQLite failed on {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The file that holds a projection's claim cannot be created or locked.
    #[error("cannot use the projection claim file {path}: {source}")]
    ClaimFile {
        /// The claim file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A snapshot's state is not JSON.
    #[error("the snapshot state of {stream} at version {version} is not JSON: {reason}")]
    SnapshotNotJson {
        /// The snapshot's stream.
        stream: StreamId,
        /// The snapshot's version.
        version: u64,
        /// What is wrong.
        reason: String,
    },
    /// The store was used outside a Tokio runtime: it runs SQLite on Tokio's blocking threads.
    #[error("es-sqlite runs SQLite on Tokio's blocking threads: call it from within a Tokio runtime")]
    NoRuntime,
    /// The blocking task running SQLite failed (the runtime is shutting down).
    #[error("the task running SQLite failed: {0}")]
    Task(String),
    /// SQLite answered something the store does not expect.
    #[error("unexpected answer from SQLite: {0}")]
    Unexpected(String),
}

impl SqliteError {
    /// Whether the failure is an outage that trying again later may overcome: a lock held past
    /// the busy timeout, a full disk, an I/O error, memory exhausted.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Busy { .. } => true,
            Self::Sqlite { source, .. } => is_transient(source),
            _ => false,
        }
    }
}

/// Whether `error` is one SQLite may not return when tried again later.
pub(crate) fn is_transient(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::OutOfMemory
                | ErrorCode::FileLockingProtocolFailed
        )
    )
}

/// Whether `error` itself is a transient SQLite failure (the runner walks its sources).
pub(crate) fn error_is_transient(error: &(dyn Error + 'static)) -> bool {
    error.downcast_ref::<rusqlite::Error>().is_some_and(is_transient)
        || error
            .downcast_ref::<SqliteError>()
            .is_some_and(SqliteError::is_transient)
}

impl From<SqliteError> for StoreError {
    fn from(error: SqliteError) -> Self {
        let transient = error.is_transient();
        StoreError::from_backend(error, transient)
    }
}

impl From<SqliteError> for CheckpointError {
    fn from(error: SqliteError) -> Self {
        let transient = error.is_transient();
        CheckpointError::from_backend(error, transient)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn locks_and_io_are_transient_and_constraints_are_not() {
        for code in [
            rusqlite::ffi::SQLITE_BUSY,
            rusqlite::ffi::SQLITE_LOCKED,
            rusqlite::ffi::SQLITE_IOERR,
            rusqlite::ffi::SQLITE_FULL,
        ] {
            assert!(is_transient(&failure(code)), "{code}");
        }
        for code in [
            rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE,
            rusqlite::ffi::SQLITE_READONLY,
            rusqlite::ffi::SQLITE_NOTADB,
            rusqlite::ffi::SQLITE_CORRUPT,
            rusqlite::ffi::SQLITE_ERROR,
        ] {
            assert!(!is_transient(&failure(code)), "{code}");
        }
        assert!(!is_transient(&rusqlite::Error::QueryReturnedNoRows));
    }

    #[test]
    fn a_wrapped_busy_error_is_found_in_the_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("writing the read model failed")]
        struct Wrapper(#[source] rusqlite::Error);

        // The runner walks the sources: the wrapper is not SQLite's, its source is.
        let busy_inside = Wrapper(failure(rusqlite::ffi::SQLITE_BUSY));
        assert!(!error_is_transient(&busy_inside));
        assert!(busy_inside.source().is_some_and(error_is_transient));
        let unique_inside = Wrapper(failure(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE));
        assert!(!unique_inside.source().is_some_and(error_is_transient));
        let busy = SqliteError::Busy {
            path: PathBuf::from("x.db"),
            timeout: Duration::ZERO,
            source: failure(rusqlite::ffi::SQLITE_BUSY),
        };
        assert!(error_is_transient(&busy));
        assert!(StoreError::from(busy).is_transient());
    }
}
