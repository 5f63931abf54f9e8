//! Scenarios over scenario 5's seeded events: a projection catching up into a PostgreSQL read
//! model (8), and what the events cost on disk (9).
//!
//! The read model is the same for es-rs and the raw baseline: a table of balances per account,
//! one upsert per deposit, written in units of [`UNIT_EVENTS`] events, each committed with the
//! position reached. es-rs runs a [`ProjectionRunner`] over [`PostgresStore::checkpoints`];
//! the raw baseline streams the events with one query on one connection and writes on another.

use std::time::Instant;

use es_core::{async_trait, DecodedEvent, HandlerError, Projection, ProjectionRunner, RunnerOptions};
use es_postgres::PostgresStore;
use futures_util::TryStreamExt;
use sqlx::postgres::PgPool;
use sqlx::{Acquire, PgConnection, Row};

use crate::model::Summary;
use crate::ours::AccountEvent;
use crate::raw;
use crate::BenchResult;

/// Events per unit of work: the projection runner's default batch size, on both sides.
pub const UNIT_EVENTS: usize = 500;

/// The upsert of one deposit into the balances table `table`.
fn upsert(table: &str) -> String {
    format!(
        "INSERT INTO {table} (account, balance, deposits) VALUES ($1, $2, 1)
         ON CONFLICT (account) DO UPDATE
         SET balance = {table}.balance + excluded.balance, deposits = {table}.deposits + 1"
    )
}

/// Creates the balances table `table` (schema-qualified), empty.
async fn create_table(pool: &PgPool, table: &str) -> BenchResult<()> {
    sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS {table};
         CREATE TABLE {table} (account text PRIMARY KEY, balance bigint NOT NULL, deposits bigint NOT NULL);"
    ))
    .execute(pool)
    .await?;
    Ok(())
}

/// The sum of the balances and deposits in `table`, dropped afterwards.
async fn total_and_drop(pool: &PgPool, table: &str) -> BenchResult<(i64, i64)> {
    let row = sqlx::query(&format!(
        "SELECT coalesce(sum(balance), 0)::bigint AS balance, coalesce(sum(deposits), 0)::bigint AS deposits FROM {table}"
    ))
    .fetch_one(pool)
    .await?;
    let totals = (row.try_get("balance")?, row.try_get("deposits")?);
    sqlx::query(&format!("DROP TABLE {table}")).execute(pool).await?;
    Ok(totals)
}

/// The balances projection as an application writes it.
struct Balances {
    upsert: String,
    clear: String,
}

#[async_trait]
impl Projection for Balances {
    const NAME: &'static str = "bench_balances";
    const AGGREGATE_TYPES: &'static [&'static str] = &["account"];
    type Event = AccountEvent;
    type Context = PgConnection;

    async fn handle(
        &self,
        connection: &mut PgConnection,
        event: &DecodedEvent<AccountEvent>,
    ) -> Result<(), HandlerError> {
        if let AccountEvent::Deposited(deposit) = &event.event {
            sqlx::query(&self.upsert)
                .bind(&event.envelope.stream.aggregate_id)
                .bind(deposit.amount)
                .execute(connection)
                .await?;
        }
        Ok(())
    }

    async fn reset(&self, connection: &mut PgConnection) -> Result<(), HandlerError> {
        sqlx::query(&self.clear).execute(connection).await?;
        Ok(())
    }
}

/// What a catch-up must produce from `streams` accounts of `per_stream` events each.
pub fn expected_totals(streams: u64, per_stream: u64) -> BenchResult<(i64, i64)> {
    let summary = Summary::of_stream(per_stream);
    let streams = i64::try_from(streams)?;
    Ok((summary.balance * streams, i64::try_from(summary.deposits)? * streams))
}

/// es-rs: a fresh projection (a name and a table of its own for `pass`, which names the
/// repetition and the pass in it: checkpoints stay in the seeded schema between repetitions)
/// caught up from position 0 by a [`ProjectionRunner`]. Returns the seconds it took and the
/// read model's totals.
pub async fn catch_up_ours(store: &PostgresStore, pass: &str) -> BenchResult<(f64, (i64, i64))> {
    let table = format!("\"{}\".balances_{pass}", store.schema());
    create_table(store.pool(), &table).await?;
    let projection = Balances {
        upsert: upsert(&table),
        clear: format!("DELETE FROM {table}"),
    };
    let name: &'static str = Box::leak(format!("bench_balances_{pass}").into_boxed_str());
    let options = RunnerOptions {
        batch_size: UNIT_EVENTS,
        ..RunnerOptions::default()
    };
    let runner = ProjectionRunner::new(projection, store.clone(), store.checkpoints())
        .with_name(name)
        .with_options(options);
    let started = Instant::now();
    runner.catch_up().await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok((seconds, total_and_drop(store.pool(), &table).await?))
}

/// The raw baseline: one query streams every event in position order on one connection; the
/// other writes the upserts in transactions of [`UNIT_EVENTS`] events, each saving the position
/// reached in a checkpoint row.
pub async fn catch_up_raw(pool: &PgPool, schema: &str, pass: &str) -> BenchResult<(f64, (i64, i64))> {
    let table = format!("{schema}.balances_{pass}");
    create_table(pool, &table).await?;
    sqlx::raw_sql(&format!(
        "CREATE TABLE IF NOT EXISTS {schema}.checkpoints (name text PRIMARY KEY, position bigint NOT NULL)"
    ))
    .execute(pool)
    .await?;
    let upsert = upsert(&table);
    let save_checkpoint = format!(
        "INSERT INTO {schema}.checkpoints (name, position) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET position = excluded.position"
    );
    let name = format!("balances_{pass}");
    let started = Instant::now();
    let mut reader = pool.acquire().await?;
    let mut writer = pool.acquire().await?;
    let read = format!(
        "SELECT position, stream_id, event_name, schema_version, payload::text FROM {schema}.events ORDER BY position"
    );
    let mut rows = sqlx::query(&read).fetch(&mut *reader);
    let mut unit = writer.begin().await?;
    let mut in_unit = 0;
    let mut position = 0_i64;
    while let Some(row) = rows.try_next().await? {
        position = row.try_get(0)?;
        let event = raw::decode(row.try_get(2)?, row.try_get(3)?, row.try_get::<&str, _>(4)?.as_bytes())?;
        if let raw::RawEvent::Deposited(deposit) = event {
            sqlx::query(&upsert)
                .bind(row.try_get::<&str, _>(1)?)
                .bind(deposit.amount)
                .execute(&mut *unit)
                .await?;
        }
        in_unit += 1;
        if in_unit == UNIT_EVENTS {
            sqlx::query(&save_checkpoint)
                .bind(&name)
                .bind(position)
                .execute(&mut *unit)
                .await?;
            unit.commit().await?;
            unit = writer.begin().await?;
            in_unit = 0;
        }
    }
    sqlx::query(&save_checkpoint)
        .bind(&name)
        .bind(position)
        .execute(&mut *unit)
        .await?;
    unit.commit().await?;
    let seconds = started.elapsed().as_secs_f64();
    drop(rows);
    Ok((seconds, total_and_drop(pool, &table).await?))
}

/// The bytes `{schema}.{table}` takes, per row: the table (with its TOAST), its indexes, both.
pub async fn bytes_per_row(pool: &PgPool, schema: &str, table: &str) -> BenchResult<[f64; 3]> {
    let relation = format!("{schema}.{table}");
    let row = sqlx::query(&format!(
        "SELECT pg_table_size($1::regclass) AS heap, pg_indexes_size($1::regclass) AS indexes,
                (SELECT count(*) FROM {relation}) AS rows"
    ))
    .bind(&relation)
    .fetch_one(pool)
    .await?;
    let heap: i64 = row.try_get("heap")?;
    let indexes: i64 = row.try_get("indexes")?;
    let rows: i64 = row.try_get("rows")?;
    if rows == 0 {
        return Err(format!("{relation} is empty").into());
    }
    let per_row = |bytes: i64| bytes as f64 / rows as f64;
    Ok([per_row(heap), per_row(indexes), per_row(heap + indexes)])
}
