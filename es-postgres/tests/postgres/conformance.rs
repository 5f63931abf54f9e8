//! The es-core conformance suite, on PostgreSQL. Each store check holds the server to itself
//! (see `support::GATE`): its `read_all` checks expect their own appends to be visible at once.

use es_core::conformance::ReadModelProbe;
use es_postgres::PostgresCheckpoints;
use sqlx::{PgConnection, PgPool};

use es_test_support::TestSchema;

use crate::support::{exclusive_schema, in_schema, numbers, schema, Exclusive, Shared};

es_core::conformance_tests!(crate::support::exclusive_schema(), |schema| schema.store().clone());

/// Marks are rows of a `marks` table beside the checkpoints.
struct Marks {
    pool: PgPool,
    table: String,
}

impl Marks {
    fn of(schema: &TestSchema) -> Self {
        Self {
            pool: schema.pool().clone(),
            table: format!("\"{}\".marks", schema.schema()),
        }
    }
}

#[es_core::async_trait]
impl ReadModelProbe<PostgresCheckpoints> for Marks {
    async fn write(&self, db: &mut PgConnection, mark: u64) {
        // Unqualified: a unit's search_path starts with the store's schema.
        sqlx::query("INSERT INTO marks (mark) VALUES ($1)")
            .bind(mark as i64)
            .execute(db)
            .await
            .expect("writing a mark in the unit");
    }

    async fn committed(&self, _: &PostgresCheckpoints) -> Vec<u64> {
        numbers(&self.pool, &format!("SELECT mark FROM {}", self.table)).await
    }
}

/// Creates the probe's table in `schema`.
async fn create_marks(schema: &TestSchema) {
    in_schema(schema, "CREATE TABLE marks (mark bigint NOT NULL)").await;
}

/// A fresh schema with the probe's table.
async fn marked_schema() -> Shared {
    let schema = schema().await;
    create_marks(&schema).await;
    schema
}

/// A fresh schema with the probe's table, while no other test runs: the runner checks expect
/// their appends to be readable at once.
async fn marked_exclusive_schema() -> Exclusive {
    let schema = exclusive_schema().await;
    create_marks(&schema).await;
    schema
}

// Checkpoints need no quiet server: each check works on its own projection names.
es_core::checkpoint_conformance_tests!(marked_schema(), |schema| (schema.checkpoints(), Marks::of(&schema)));

es_core::runner_conformance_tests!(marked_exclusive_schema(), |schema| (
    schema.store().clone(),
    schema.checkpoints(),
    Marks::of(&schema)
));

/// The schema's key store of data subjects (migration 8).
mod keys {
    es_core::key_store_conformance_tests!(crate::support::schema(), |schema| schema.store().clone());
}

/// Tombstones, archives and deletions, each in a schema of its own: a change locks the events
/// table of its schema against appends.
mod lifecycle {
    es_core::lifecycle_conformance_tests!(crate::support::exclusive_schema(), |schema| schema.store().clone());
}

/// Tenants, each a schema of its own beside the test's schema.
mod tenancy {
    es_core::tenant_conformance_tests!(crate::support::schema(), |schema| schema.store().clone());
}
