//! The two stores as the benchmark needs them: a checkpoint store whose context takes rows, a
//! wake-up, and the read-model tables.

use es_bench::BenchResult;
use es_core::{async_trait, CheckpointStore, EventStore, GlobalLog, HandlerError, WakeUp};
use es_postgres::{PostgresCheckpoints, PostgresStore, PostgresWakeUp};
use es_sqlite::rusqlite::params;
use es_sqlite::{SqliteCheckpoints, SqliteContext, SqliteStore, SqliteWakeUp};
use sqlx::PgConnection;

use crate::model::RowWriter;

/// The columns of every read-model table: the event's position, its stream, its value.
const COLUMNS: &str = "(position bigint PRIMARY KEY, stream text NOT NULL, value bigint NOT NULL)";

/// A store the scenario runs on.
#[async_trait]
pub trait Backend: EventStore + GlobalLog + Clone + 'static {
    type Context: RowWriter;
    type Checkpoints: CheckpointStore<Context = Self::Context> + 'static;
    type WakeUp: WakeUp + 'static;

    /// The name in the report.
    const LABEL: &'static str;

    fn checkpoints(&self) -> Self::Checkpoints;
    async fn wake_up(&self) -> BenchResult<Self::WakeUp>;
    /// Creates the read-model table `table`.
    async fn create_table(&self, table: &'static str) -> BenchResult<()>;
    /// The rows of `table`.
    async fn rows(&self, table: &'static str) -> BenchResult<u64>;
}

#[async_trait]
impl RowWriter for PgConnection {
    async fn insert(
        &mut self,
        table: &'static str,
        position: u64,
        stream: &str,
        value: i64,
    ) -> Result<(), HandlerError> {
        // The unit's `search_path` is the store's schema: the table needs no schema.
        let sql = format!("INSERT INTO {table} (position, stream, value) VALUES ($1, $2, $3)");
        sqlx::query(&sql)
            .bind(i64::try_from(position)?)
            .bind(stream)
            .bind(value)
            .execute(self)
            .await?;
        Ok(())
    }

    async fn clear(&mut self, table: &'static str) -> Result<(), HandlerError> {
        sqlx::query(&format!("DELETE FROM {table}")).execute(self).await?;
        Ok(())
    }
}

#[async_trait]
impl Backend for PostgresStore {
    type Context = PgConnection;
    type Checkpoints = PostgresCheckpoints;
    type WakeUp = PostgresWakeUp;

    const LABEL: &'static str = "PostgreSQL";

    fn checkpoints(&self) -> PostgresCheckpoints {
        PostgresStore::checkpoints(self)
    }

    async fn wake_up(&self) -> BenchResult<PostgresWakeUp> {
        Ok(PostgresStore::wake_up(self).await?)
    }

    async fn create_table(&self, table: &'static str) -> BenchResult<()> {
        let sql = format!("CREATE TABLE \"{}\".{table} {COLUMNS}", self.schema());
        sqlx::query(&sql).execute(self.pool()).await?;
        Ok(())
    }

    async fn rows(&self, table: &'static str) -> BenchResult<u64> {
        let sql = format!("SELECT count(*) FROM \"{}\".{table}", self.schema());
        let rows: i64 = sqlx::query_scalar(&sql).fetch_one(self.pool()).await?;
        Ok(u64::try_from(rows)?)
    }
}

#[async_trait]
impl RowWriter for SqliteContext {
    async fn insert(
        &mut self,
        table: &'static str,
        position: u64,
        stream: &str,
        value: i64,
    ) -> Result<(), HandlerError> {
        let sql = format!("INSERT INTO {table} (position, stream, value) VALUES (?1, ?2, ?3)");
        self.prepare_cached(&sql)?
            .execute(params![i64::try_from(position)?, stream, value])?;
        Ok(())
    }

    async fn clear(&mut self, table: &'static str) -> Result<(), HandlerError> {
        self.execute(&format!("DELETE FROM {table}"), [])?;
        Ok(())
    }
}

#[async_trait]
impl Backend for SqliteStore {
    type Context = SqliteContext;
    type Checkpoints = SqliteCheckpoints;
    type WakeUp = SqliteWakeUp;

    const LABEL: &'static str = "SQLite";

    fn checkpoints(&self) -> SqliteCheckpoints {
        SqliteStore::checkpoints(self)
    }

    async fn wake_up(&self) -> BenchResult<SqliteWakeUp> {
        Ok(SqliteStore::wake_up(self))
    }

    async fn create_table(&self, table: &'static str) -> BenchResult<()> {
        let sql = format!("CREATE TABLE {table} {COLUMNS}");
        self.write(move |db| db.execute_batch(&sql)).await?;
        Ok(())
    }

    async fn rows(&self, table: &'static str) -> BenchResult<u64> {
        let sql = format!("SELECT count(*) FROM {table}");
        let rows: i64 = self.read(move |db| db.query_row(&sql, [], |row| row.get(0))).await?;
        Ok(u64::try_from(rows)?)
    }
}
