//! The blue/green rebuild check of the conformance suite on PostgreSQL: two tables, renamed in
//! the unit that switches (a live runner's cached statements follow the name).

use es_core::conformance::{BlueGreenProbe, ModelCopy};
use es_core::HandlerError;
use es_postgres::PostgresCheckpoints;
use sqlx::{PgConnection, PgPool};

use crate::support::{exclusive_schema, in_schema, numbers, Exclusive};

/// The live copy is `bg_live`, the next one `bg_next`; the switch renames them.
struct Tables {
    pool: PgPool,
    schema: String,
}

fn table(copy: ModelCopy) -> &'static str {
    match copy {
        ModelCopy::Live => "bg_live",
        ModelCopy::Next => "bg_next",
    }
}

#[es_core::async_trait]
impl BlueGreenProbe<PostgresCheckpoints> for Tables {
    // Unqualified names: a unit's search_path starts with the store's schema.
    async fn write(&self, db: &mut PgConnection, copy: ModelCopy, mark: u64) -> Result<(), HandlerError> {
        let insert = format!("INSERT INTO {} (n) VALUES ($1)", table(copy));
        sqlx::query(&insert).bind(i64::try_from(mark)?).execute(db).await?;
        Ok(())
    }

    async fn clear(&self, db: &mut PgConnection, copy: ModelCopy) -> Result<(), HandlerError> {
        sqlx::query(&format!("DELETE FROM {}", table(copy))).execute(db).await?;
        Ok(())
    }

    async fn switch(&self, db: &mut PgConnection) -> Result<(), HandlerError> {
        sqlx::query("ALTER TABLE bg_live RENAME TO bg_old")
            .execute(&mut *db)
            .await?;
        sqlx::query("ALTER TABLE bg_next RENAME TO bg_live")
            .execute(&mut *db)
            .await?;
        Ok(())
    }

    async fn live(&self, _: &PostgresCheckpoints) -> Vec<u64> {
        numbers(&self.pool, &format!("SELECT n FROM \"{}\".bg_live", self.schema)).await
    }
}

/// A fresh schema with both tables, the server to itself: the check's catch-ups expect their
/// appends readable at once.
async fn with_tables() -> Exclusive {
    let schema = exclusive_schema().await;
    in_schema(
        &schema,
        "CREATE TABLE bg_live (n bigint NOT NULL); CREATE TABLE bg_next (n bigint NOT NULL);",
    )
    .await;
    schema
}

es_core::blue_green_conformance_test!(with_tables(), |schema| (
    schema.store().clone(),
    schema.checkpoints(),
    Tables {
        pool: schema.pool().clone(),
        schema: schema.schema().to_owned(),
    }
));
