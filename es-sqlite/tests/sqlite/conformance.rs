//! The es-core conformance suites, each check on a fresh file.

use es_core::conformance::ReadModelProbe;
use es_sqlite::{SqliteCheckpoints, SqliteContext, SqliteStore};

use crate::support::{fresh, fresh_with_tables, numbers, TestDb};

es_core::conformance_tests!(fresh(), |db| db.store.clone());

/// Marks are rows of a `marks` table in the same file as the checkpoints.
struct Marks {
    store: SqliteStore,
}

#[es_core::async_trait]
impl ReadModelProbe<SqliteCheckpoints> for Marks {
    async fn write(&self, context: &mut SqliteContext, mark: u64) {
        context
            .execute("INSERT INTO marks (mark) VALUES (?1)", [mark as i64])
            .expect("writing a mark in the unit");
    }

    async fn committed(&self, _: &SqliteCheckpoints) -> Vec<u64> {
        numbers(&self.store, "SELECT mark FROM marks").await
    }
}

/// A fresh file with the probe's table.
async fn marked() -> TestDb {
    fresh_with_tables("CREATE TABLE marks (mark INTEGER NOT NULL)").await
}

es_core::checkpoint_conformance_tests!(marked(), |db| (
    db.store.checkpoints(),
    Marks {
        store: db.store.clone()
    }
));

es_core::runner_conformance_tests!(marked(), |db| (
    db.store.clone(),
    db.store.checkpoints(),
    Marks {
        store: db.store.clone()
    }
));

/// The file's key store of data subjects (migration 5).
mod keys {
    es_core::key_store_conformance_tests!(crate::support::fresh(), |db| db.store.clone());
}

/// Tombstones, archives and deletions, each on a fresh file.
mod lifecycle {
    use crate::support::fresh;

    es_core::lifecycle_conformance_tests!(fresh(), |db| db.store.clone());
}

/// Tenants, each a file of its own beside a fresh file.
mod tenancy {
    use crate::support::fresh;

    es_core::tenant_conformance_tests!(fresh(), |db| db.store.clone());
}
