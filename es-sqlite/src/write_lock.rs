//! Taking SQLite's write lock: `BEGIN IMMEDIATE` transactions on a connection, rolled back
//! unless committed.

use rusqlite::Connection;

use crate::sql;

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
