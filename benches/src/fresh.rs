//! Fresh stores for the benchmark binaries that run on either backend (`latency`, `soak`,
//! `contention`, `cli_scale`): each run gets stores no other run has written to.

use es_sqlite::SqliteStore;
use es_test_support::{TestDatabase, TestSchema};
use tempfile::TempDir;

use crate::BenchResult;

/// A migrated SQLite store on a file named `file` in a fresh temporary directory, and the
/// directory: dropping it removes the file.
pub async fn sqlite(file: &str) -> BenchResult<(TempDir, SqliteStore)> {
    let directory = tempfile::tempdir()?;
    let store = SqliteStore::open(directory.path().join(file)).await?;
    store.migrate().await?;
    Ok((directory, store))
}

/// A fresh, migrated schema on the benchmark's PostgreSQL server (`DATABASE_URL`, or a
/// throwaway server of this process); dropping it drops the schema. Its store is
/// [`TestSchema::store`].
pub async fn postgres() -> BenchResult<TestSchema> {
    Ok(TestDatabase::get()?.schema().await?)
}
