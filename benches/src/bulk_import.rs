//! Scenario 7, bulk import: es-rs's [`PostgresStore::import`] against a plain binary `COPY` of
//! the same rows (raw sqlx), each into a fresh schema made by [`PostgresStore::migrate`], so both
//! tables are es-postgres's `events`: the same columns, constraints and three unique indexes.
//! cqrs-es has no bulk import and is not measured.
//!
//! The history is the account domain's: `accounts` streams, interleaved in source order (event
//! `i` is event number `i / accounts + 1` of account `i % accounts`), an `AccountOpened` and then
//! `MoneyDeposited` v2 events, each with a fresh UUID v7, an original timestamp (1 ms apart) and
//! no metadata. Both sides build their events inside the timed section, as a migration reading
//! another database would: es-rs as a stream of `ImportedEvent`s (payloads serialized by its
//! event types) handed to `import` with its default chunk size; raw as rows written straight
//! into its `COPY` buffer (positions counted from 1, versions computed from the index), sent a
//! mebibyte at a time in one `COPY` statement, one transaction.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use es_core::{EventSet, Metadata, StreamId};
use es_postgres::{ImportOptions, ImportedEvent, PostgresStore};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Row;
use uuid::Uuid;

use crate::measure::{schema_name, Context};
use crate::model::{self, OWNER};
use crate::ours::{AccountEvent, AccountOpened, MoneyDeposited};
use crate::raw::{Deposited, Opened};
use crate::scenario::Implementation;
use crate::BenchResult;

/// The aggregate type of the timed history (the warm-up's is `warm`).
const ACCOUNT: &str = "account";

/// One history to import: `events` events over `accounts` streams of aggregate type `kind`.
#[derive(Debug, Clone, Copy)]
struct History {
    kind: &'static str,
    events: u64,
    accounts: u64,
}

impl History {
    /// Event `i`'s account and version.
    fn place(self, i: u64) -> (usize, u64) {
        (usize::try_from(i % self.accounts).unwrap_or(0), i / self.accounts + 1)
    }

    /// The accounts' ids.
    fn ids(self) -> Vec<String> {
        (0..self.accounts).map(|account| format!("{account:04}")).collect()
    }

    /// Event `i`'s original timestamp: 1 ms apart from 2020-01-01.
    fn recorded_at(i: u64) -> DateTime<Utc> {
        let millis = 1_577_836_800_000 + i64::try_from(i).unwrap_or(0);
        DateTime::from_timestamp_millis(millis).unwrap_or_default()
    }
}

/// Measures es-rs or the raw `COPY`: an untimed import of a fiftieth of the events, then the
/// timed one; events/s, and a check of what was stored.
pub async fn measure(
    implementation: Implementation,
    context: Context<'_>,
) -> BenchResult<(Vec<(&'static str, f64)>, String)> {
    let url = context.url.ok_or("no PostgreSQL server for a PostgreSQL scenario")?;
    let sizes = context.sizes;
    let schema = schema_name(context.run, implementation, &format!("w7_{}", context.repetition));
    let store = PostgresStore::connect(url).await?.with_schema(&schema)?;
    store.migrate().await?;
    let warm = History {
        kind: "warm",
        events: (sizes.import_events / 50).max(10),
        accounts: sizes.import_accounts,
    };
    let timed = History {
        kind: ACCOUNT,
        events: sizes.import_events,
        accounts: sizes.import_accounts,
    };
    let elapsed = match implementation {
        Implementation::Ours => {
            ours(&store, warm, sizes.import_chunk).await?;
            let start = Instant::now();
            ours(&store, timed, sizes.import_chunk).await?;
            start.elapsed()
        }
        Implementation::Raw => {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .connect(url)
                .await?;
            raw(&pool, &schema, warm, 1).await?;
            let start = Instant::now();
            raw(&pool, &schema, timed, warm.events + 1).await?;
            let elapsed = start.elapsed();
            pool.close().await;
            elapsed
        }
        Implementation::Peer => return Err("cqrs-es has no bulk import: scenario 7 does not measure it".into()),
    };
    let check = check(store.pool(), &schema).await?;
    sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(store.pool())
        .await?;
    store.pool().close().await;
    Ok((vec![("events_per_s", per_second(timed.events, elapsed))], check))
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// es-rs: `history` as a stream of [`ImportedEvent`]s through [`PostgresStore::import`].
async fn ours(store: &PostgresStore, history: History, chunk: usize) -> BenchResult<()> {
    let streams: Vec<StreamId> = history
        .ids()
        .into_iter()
        .map(|id| StreamId::new(history.kind, id))
        .collect();
    let source = futures_util::stream::iter((0..history.events).map(move |i| imported(&streams, history, i)));
    let options = ImportOptions::new(history.kind).with_chunk_size(chunk);
    let report = store.import(options, source, |_| {}).await?;
    if report.events_total != history.events {
        return Err(format!("imported {} of {} events", report.events_total, history.events).into());
    }
    Ok(())
}

/// Event `i` of `history` as es-rs imports it.
fn imported(streams: &[StreamId], history: History, i: u64) -> BenchResult<ImportedEvent> {
    let (account, version) = history.place(i);
    let event = match version {
        1 => AccountEvent::from(AccountOpened { owner: OWNER.into() }),
        _ => AccountEvent::from(MoneyDeposited {
            amount: model::amount(version - 1),
            reference: model::reference(version - 1),
        }),
    };
    Ok(ImportedEvent {
        stream: streams[account].clone(),
        event_id: Uuid::now_v7(),
        event_name: event.event_name().into(),
        schema_version: event.schema_version(),
        payload: event.encode_payload()?,
        metadata: Metadata::new(),
        recorded_at: History::recorded_at(i),
    })
}

/// The binary `COPY` header: signature, no flags, no extension.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Raw: `history` written as rows into one `COPY`, positions from `first_position`.
async fn raw(pool: &PgPool, schema: &str, history: History, first_position: u64) -> BenchResult<()> {
    let mut conn = pool.acquire().await?;
    let sql = format!(
        "COPY {schema}.events (position, event_id, aggregate_type, aggregate_id, version, event_name,
                               schema_version, payload, recorded_at)
         FROM STDIN WITH (FORMAT binary)"
    );
    let mut copy = conn.copy_in_raw(&sql).await?;
    let ids = history.ids();
    let mut buffer = Vec::with_capacity((1 << 20) + 4096);
    buffer.extend_from_slice(HEADER);
    for i in 0..history.events {
        let (account, version) = history.place(i);
        let row = RawRow {
            position: i64::try_from(first_position + i)?,
            kind: history.kind,
            account: &ids[account],
            version: i64::try_from(version)?,
            micros: History::recorded_at(i).timestamp_micros() - POSTGRES_EPOCH_MICROS,
        };
        match version {
            1 => row.write(
                &mut buffer,
                "AccountOpened",
                1,
                &Opened {
                    owner: OWNER.to_owned(),
                },
            )?,
            _ => row.write(
                &mut buffer,
                "MoneyDeposited",
                2,
                &Deposited {
                    amount: model::amount(version - 1),
                    reference: model::reference(version - 1),
                },
            )?,
        }
        if buffer.len() >= 1 << 20 {
            copy.send(buffer.as_slice()).await?;
            buffer.clear();
        }
    }
    buffer.extend_from_slice(&(-1_i16).to_be_bytes());
    copy.send(buffer.as_slice()).await?;
    let rows = copy.finish().await?;
    if rows != history.events {
        return Err(format!("copied {rows} of {} rows", history.events).into());
    }
    Ok(())
}

/// The columns of one raw row but the event itself.
struct RawRow<'a> {
    position: i64,
    kind: &'a str,
    account: &'a str,
    version: i64,
    micros: i64,
}

impl RawRow<'_> {
    /// Writes the row with the event `name` at `schema_version`, its payload serialized in place.
    fn write<P: serde::Serialize>(
        &self,
        buffer: &mut Vec<u8>,
        name: &str,
        schema_version: i32,
        payload: &P,
    ) -> BenchResult<()> {
        let field = |buffer: &mut Vec<u8>, bytes: &[u8]| -> BenchResult<()> {
            buffer.extend_from_slice(&i32::try_from(bytes.len())?.to_be_bytes());
            buffer.extend_from_slice(bytes);
            Ok(())
        };
        buffer.extend_from_slice(&9_i16.to_be_bytes());
        field(buffer, &self.position.to_be_bytes())?;
        field(buffer, Uuid::now_v7().as_bytes())?;
        field(buffer, self.kind.as_bytes())?;
        field(buffer, self.account.as_bytes())?;
        field(buffer, &self.version.to_be_bytes())?;
        field(buffer, name.as_bytes())?;
        field(buffer, &schema_version.to_be_bytes())?;
        // jsonb: a version byte, then the JSON text; the length is filled in after it.
        let length_at = buffer.len();
        buffer.extend_from_slice(&[0, 0, 0, 0, 1]);
        serde_json::to_writer(&mut *buffer, payload)?;
        let length = i32::try_from(buffer.len() - length_at - 4)?;
        buffer[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
        field(buffer, &self.micros.to_be_bytes())
    }
}

/// What the timed import stored, the same for both: events, streams, the sum of versions and of
/// the deposits, the first and last timestamps.
async fn check(pool: &PgPool, schema: &str) -> BenchResult<String> {
    let sql = format!(
        "SELECT count(*) AS events, count(DISTINCT aggregate_id) AS streams, sum(version)::bigint AS versions,
                sum(CASE WHEN event_name = 'MoneyDeposited' THEN (payload->>'amount')::bigint END)::bigint AS amount,
                min(recorded_at) AS first, max(recorded_at) AS last
         FROM {schema}.events WHERE aggregate_type = $1"
    );
    let row = sqlx::query(&sql).bind(ACCOUNT).fetch_one(pool).await?;
    let events: i64 = row.try_get("events")?;
    let streams: i64 = row.try_get("streams")?;
    let versions: Option<i64> = row.try_get("versions")?;
    let amount: Option<i64> = row.try_get("amount")?;
    let first: Option<DateTime<Utc>> = row.try_get("first")?;
    let last: Option<DateTime<Utc>> = row.try_get("last")?;
    let time = |at: Option<DateTime<Utc>>| at.map_or_else(|| "none".to_owned(), |at| at.to_rfc3339());
    Ok(format!(
        "events {events} streams {streams} version sum {} amount {} recorded {} to {}",
        versions.unwrap_or(0),
        amount.unwrap_or(0),
        time(first),
        time(last)
    ))
}
