//! The blue/green rebuild check of the conformance suite on SQLite: two tables, renamed in
//! the unit that switches.

use es_core::conformance::{BlueGreenProbe, ModelCopy};
use es_core::HandlerError;
use es_sqlite::{SqliteCheckpoints, SqliteContext, SqliteStore};

use crate::support::{fresh_with_tables, numbers, TestDb};

/// The live copy is `bg_live`, the next one `bg_next`; the switch renames them.
struct Tables {
    store: SqliteStore,
}

fn table(copy: ModelCopy) -> &'static str {
    match copy {
        ModelCopy::Live => "bg_live",
        ModelCopy::Next => "bg_next",
    }
}

#[es_core::async_trait]
impl BlueGreenProbe<SqliteCheckpoints> for Tables {
    async fn write(&self, db: &mut SqliteContext, copy: ModelCopy, mark: u64) -> Result<(), HandlerError> {
        db.execute(
            &format!("INSERT INTO {} (n) VALUES (?1)", table(copy)),
            [i64::try_from(mark)?],
        )?;
        Ok(())
    }

    async fn clear(&self, db: &mut SqliteContext, copy: ModelCopy) -> Result<(), HandlerError> {
        db.execute_batch(&format!("DELETE FROM {}", table(copy)))?;
        Ok(())
    }

    async fn switch(&self, db: &mut SqliteContext) -> Result<(), HandlerError> {
        db.execute_batch("ALTER TABLE bg_live RENAME TO bg_old; ALTER TABLE bg_next RENAME TO bg_live;")?;
        Ok(())
    }

    async fn live(&self, _: &SqliteCheckpoints) -> Vec<u64> {
        numbers(&self.store, "SELECT n FROM bg_live").await
    }
}

/// A fresh file with both tables.
async fn with_tables() -> TestDb {
    fresh_with_tables("CREATE TABLE bg_live (n INTEGER NOT NULL); CREATE TABLE bg_next (n INTEGER NOT NULL);").await
}

es_core::blue_green_conformance_test!(with_tables(), |db| (
    db.store.clone(),
    db.store.checkpoints(),
    Tables {
        store: db.store.clone()
    }
));
