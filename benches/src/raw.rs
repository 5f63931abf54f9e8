//! The raw baseline: the minimum SQL for the same work, with sqlx and serde and nothing else.
//!
//! - One table: `position` (identity, primary key: the global order), `stream_id`, `version`
//!   (unique per stream: the concurrency check), `event_name`, `schema_version`, `payload`
//!   (jsonb, bound as text and cast by the server, as es-postgres does); and a snapshot table.
//! - A command on a new aggregate is a single `INSERT` in autocommit: one round trip.
//! - A command on a live aggregate decides on state kept in the process (a cache, loaded from
//!   the database on a miss) and appends with one `INSERT` of the next version; the unique
//!   constraint refuses a concurrent writer.
//! - A batch is one `INSERT ... SELECT FROM unnest(...)`.
//! - A load is one streamed `SELECT ... ORDER BY version` decoded row by row into typed events
//!   (after reading the snapshot row, when snapshots are used); a global read is one streamed
//!   `SELECT ... ORDER BY position` of position, stream, version and the event.
//! - The pool skips sqlx's ping before each acquire (`test_before_acquire(false)`): the floor is
//!   one round trip per statement.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Row;

use crate::model::{self, AccountError, StoredEvent, Summary, Tally, LEGACY_REFERENCE, OWNER};
use crate::BenchResult;

/// `AccountOpened`'s payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Opened {
    /// Who owns the account.
    pub owner: String,
}

/// `MoneyDeposited`'s payload at schema version 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deposited {
    /// How much, in cents.
    pub amount: i64,
    /// The payer's reference.
    pub reference: String,
}

/// `MoneyDeposited`'s payload at schema version 1.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DepositedV1 {
    /// How much, in cents.
    pub amount: i64,
}

/// A decoded event.
#[derive(Debug, Clone, PartialEq)]
pub enum RawEvent {
    /// See [`Opened`].
    Opened(Opened),
    /// See [`Deposited`].
    Deposited(Deposited),
}

impl RawEvent {
    pub(crate) fn deposit(index: u64) -> Self {
        Self::Deposited(Deposited {
            amount: model::amount(index),
            reference: model::reference(index),
        })
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Opened(_) => "AccountOpened",
            Self::Deposited(_) => "MoneyDeposited",
        }
    }

    pub(crate) fn schema_version(&self) -> i32 {
        match self {
            Self::Opened(_) => 1,
            Self::Deposited(_) => 2,
        }
    }

    fn payload(&self) -> serde_json::Result<String> {
        match self {
            Self::Opened(payload) => serde_json::to_string(payload),
            Self::Deposited(payload) => serde_json::to_string(payload),
        }
    }

    /// Serializes the payload into `buffer` (cleared first), so a batch reuses one allocation.
    pub(crate) fn write_payload(&self, buffer: &mut Vec<u8>) -> serde_json::Result<()> {
        buffer.clear();
        match self {
            Self::Opened(payload) => serde_json::to_writer(buffer, payload),
            Self::Deposited(payload) => serde_json::to_writer(buffer, payload),
        }
    }

    pub(crate) fn tally(&self) -> Option<(i64, bool)> {
        match self {
            Self::Opened(_) => None,
            Self::Deposited(deposit) => Some((deposit.amount, deposit.reference == LEGACY_REFERENCE)),
        }
    }
}

/// Decodes a stored event, upgrading `MoneyDeposited` version 1 with a typed step.
pub fn decode(name: &str, schema_version: i32, payload: &[u8]) -> BenchResult<RawEvent> {
    Ok(match (name, schema_version) {
        ("AccountOpened", 1) => RawEvent::Opened(serde_json::from_slice(payload)?),
        ("MoneyDeposited", 2) => RawEvent::Deposited(serde_json::from_slice(payload)?),
        ("MoneyDeposited", 1) => {
            let v1: DepositedV1 = serde_json::from_slice(payload)?;
            RawEvent::Deposited(Deposited {
                amount: v1.amount,
                reference: LEGACY_REFERENCE.to_owned(),
            })
        }
        _ => return Err(format!("unknown event {name} v{schema_version}").into()),
    })
}

/// Decodes a stored event that has a single schema version: no upgrade path at all.
pub fn decode_current_only(name: &str, schema_version: i32, payload: &[u8]) -> BenchResult<RawEvent> {
    Ok(match (name, schema_version) {
        ("AccountOpened", 1) => RawEvent::Opened(serde_json::from_slice(payload)?),
        ("MoneyDeposited", 2) => RawEvent::Deposited(serde_json::from_slice(payload)?),
        _ => return Err(format!("unknown event {name} v{schema_version}").into()),
    })
}

/// Decodes `events` with [`decode`] (or [`decode_current_only`] when `upcaster` is false).
pub fn decode_all(events: &[StoredEvent], upcaster: bool) -> BenchResult<Tally> {
    let mut tally = Tally::default();
    for stored in events {
        let version = i32::try_from(stored.schema_version)?;
        let event = if upcaster {
            decode(stored.name, version, &stored.payload)?
        } else {
            decode_current_only(stored.name, version, &stored.payload)?
        };
        tally.count(event.tally());
    }
    Ok(tally)
}

/// Deposit `index` as the baseline stores it (the same JSON as es-rs), at version 1 or 2.
pub fn stored_deposit(index: u64, v1: bool) -> BenchResult<StoredEvent> {
    let amount = model::amount(index);
    let (schema_version, payload) = if v1 {
        (1, serde_json::to_vec(&serde_json::json!({ "amount": amount }))?)
    } else {
        let deposit = Deposited {
            amount,
            reference: model::reference(index),
        };
        (2, serde_json::to_vec(&deposit)?)
    };
    Ok(StoredEvent {
        name: "MoneyDeposited",
        schema_version,
        payload,
    })
}

/// The account state the baseline folds.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RawAccount {
    /// Whether the account was opened.
    pub open: bool,
    /// Who owns it.
    pub owner: String,
    /// The sum of all deposits.
    pub balance: i64,
    /// How many deposits were made.
    pub deposits: u64,
}

impl RawAccount {
    pub(crate) fn apply(&mut self, event: &RawEvent) {
        match event {
            RawEvent::Opened(opened) => {
                self.open = true;
                self.owner.clone_from(&opened.owner);
            }
            RawEvent::Deposited(deposit) => {
                self.balance += deposit.amount;
                self.deposits += 1;
            }
        }
    }
}

/// Statements for one schema.
#[derive(Debug)]
struct Sql {
    create: String,
    insert_one: String,
    insert_batch: String,
    load: String,
    load_snapshot: String,
    save_snapshot: String,
    read_all: String,
}

impl Sql {
    fn new(schema: &str) -> Self {
        Self {
            create: format!(
                "CREATE SCHEMA {schema};
                 CREATE TABLE {schema}.events (
                     position       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                     stream_id      text   NOT NULL,
                     version        bigint NOT NULL,
                     event_name     text   NOT NULL,
                     schema_version int    NOT NULL,
                     payload        jsonb  NOT NULL,
                     UNIQUE (stream_id, version)
                 );
                 CREATE TABLE {schema}.snapshots (
                     stream_id text   PRIMARY KEY,
                     version   bigint NOT NULL,
                     state     jsonb  NOT NULL
                 );"
            ),
            insert_one: format!(
                "INSERT INTO {schema}.events (stream_id, version, event_name, schema_version, payload)
                 VALUES ($1, $2, $3, $4, $5::jsonb)"
            ),
            insert_batch: format!(
                "INSERT INTO {schema}.events (stream_id, version, event_name, schema_version, payload)
                 SELECT $1, e.version, e.event_name, e.schema_version, e.payload::jsonb
                 FROM unnest($2::bigint[], $3::text[], $4::int[], $5::text[])
                     AS e(version, event_name, schema_version, payload)"
            ),
            load: format!(
                "SELECT version, event_name, schema_version, payload::text FROM {schema}.events
                 WHERE stream_id = $1 AND version > $2 ORDER BY version"
            ),
            load_snapshot: format!("SELECT version, state::text FROM {schema}.snapshots WHERE stream_id = $1"),
            save_snapshot: format!(
                "INSERT INTO {schema}.snapshots (stream_id, version, state) VALUES ($1, $2, $3::jsonb)
                 ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, state = excluded.state"
            ),
            read_all: format!(
                "SELECT position, stream_id, version, event_name, schema_version, payload::text
                 FROM {schema}.events ORDER BY position"
            ),
        }
    }
}

/// An account and the stream version it reflects.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cached {
    pub(crate) account: RawAccount,
    pub(crate) version: u64,
}

/// The raw sqlx baseline on one schema.
#[derive(Debug, Clone)]
pub struct Raw {
    pool: PgPool,
    sql: Arc<Sql>,
    snapshots: bool,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
}

impl Raw {
    /// Connects to `url` and uses `schema`, creating its tables when `create` is set. Loads read
    /// the snapshot row first when `snapshots` is set.
    pub async fn connect(url: &str, schema: &str, create: bool, snapshots: bool) -> BenchResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .test_before_acquire(false)
            .connect(url)
            .await?;
        let sql = Sql::new(schema);
        if create {
            sqlx::raw_sql(&sql.create).execute(&pool).await?;
        }
        Ok(Self {
            pool,
            sql: Arc::new(sql),
            snapshots,
            cache: Arc::default(),
        })
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn cached(&self, id: &str) -> Option<Cached> {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    fn remember(&self, id: &str, cached: Cached) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_owned(), cached);
    }

    async fn append(&self, id: &str, version: u64, events: &[RawEvent]) -> BenchResult<()> {
        let first = i64::try_from(version)? + 1;
        if let [event] = events {
            sqlx::query(&self.sql.insert_one)
                .bind(id)
                .bind(first)
                .bind(event.name())
                .bind(event.schema_version())
                .bind(event.payload()?)
                .execute(&self.pool)
                .await?;
            return Ok(());
        }
        let versions: Vec<i64> = (first..).take(events.len()).collect();
        let names: Vec<&str> = events.iter().map(RawEvent::name).collect();
        let schema_versions: Vec<i32> = events.iter().map(RawEvent::schema_version).collect();
        let payloads = events.iter().map(RawEvent::payload).collect::<Result<Vec<_>, _>>()?;
        sqlx::query(&self.sql.insert_batch)
            .bind(id)
            .bind(versions)
            .bind(names)
            .bind(schema_versions)
            .bind(payloads)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Opens account `id` with one `INSERT` of version 1 (the unique constraint refuses it if
    /// the account exists), and caches the new state.
    pub async fn open(&self, id: &str) -> BenchResult<()> {
        let account = RawAccount::default();
        if account.open {
            return Err(AccountError::AlreadyOpened.into());
        }
        let event = RawEvent::Opened(Opened {
            owner: OWNER.to_owned(),
        });
        self.append(id, 0, std::slice::from_ref(&event)).await?;
        let mut cached = Cached { account, version: 1 };
        cached.account.apply(&event);
        self.remember(id, cached);
        Ok(())
    }

    /// Makes `count` deposits to account `id`: decides on the cached state (loaded on a miss)
    /// and appends the next versions.
    pub async fn deposit(&self, id: &str, count: u64) -> BenchResult<()> {
        let mut cached = match self.cached(id) {
            Some(cached) => cached,
            None => self.load_state(id).await?,
        };
        if !cached.account.open {
            return Err(AccountError::NotOpened.into());
        }
        let first = cached.account.deposits + 1;
        let events: Vec<RawEvent> = (first..first + count).map(RawEvent::deposit).collect();
        self.append(id, cached.version, &events).await?;
        for event in &events {
            cached.account.apply(event);
        }
        cached.version += count;
        self.remember(id, cached);
        Ok(())
    }

    /// Opens account `id` with `events` events in one `INSERT ... unnest`.
    pub async fn import(&self, id: &str, events: u64) -> BenchResult<()> {
        let mut batch = vec![RawEvent::Opened(Opened {
            owner: OWNER.to_owned(),
        })];
        batch.extend((1..events).map(RawEvent::deposit));
        self.append(id, 0, &batch).await
    }

    /// Saves a snapshot of account `id` at its current version (loading it first).
    pub async fn save_snapshot(&self, id: &str) -> BenchResult<()> {
        let cached = self.load_state(id).await?;
        sqlx::query(&self.sql.save_snapshot)
            .bind(id)
            .bind(i64::try_from(cached.version)?)
            .bind(serde_json::to_string(&cached.account)?)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn load_state(&self, id: &str) -> BenchResult<Cached> {
        let mut cached = Cached::default();
        if self.snapshots {
            let row = sqlx::query(&self.sql.load_snapshot)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            if let Some(row) = row {
                cached.version = u64::try_from(row.try_get::<i64, _>(0)?)?;
                cached.account = serde_json::from_str(row.try_get::<&str, _>(1)?)?;
            }
        }
        let mut rows = sqlx::query(&self.sql.load)
            .bind(id)
            .bind(i64::try_from(cached.version)?)
            .fetch(&self.pool);
        while let Some(row) = rows.try_next().await? {
            let version: i64 = row.try_get(0)?;
            let event = decode(row.try_get(1)?, row.try_get(2)?, row.try_get::<&str, _>(3)?.as_bytes())?;
            cached.account.apply(&event);
            cached.version = u64::try_from(version)?;
        }
        Ok(cached)
    }

    /// Loads account `id` from the database (never from the cache).
    pub async fn load(&self, id: &str) -> BenchResult<Summary> {
        let cached = self.load_state(id).await?;
        Ok(Summary {
            version: cached.version,
            balance: cached.account.balance,
            deposits: cached.account.deposits,
        })
    }

    /// Reads every event in global order with one streamed query: position, stream, version
    /// and the decoded event.
    pub async fn read_all(&self) -> BenchResult<Tally> {
        let mut tally = Tally::default();
        let mut rows = sqlx::query(&self.sql.read_all).fetch(&self.pool);
        let mut checkpoint = 0;
        while let Some(row) = rows.try_next().await? {
            // What a projection needs besides the event: where it is, for the checkpoint, and
            // whose it is.
            let position: i64 = row.try_get(0)?;
            let _stream: &str = row.try_get(1)?;
            let _version: i64 = row.try_get(2)?;
            let event = decode(row.try_get(3)?, row.try_get(4)?, row.try_get::<&str, _>(5)?.as_bytes())?;
            tally.count(event.tally());
            checkpoint = checkpoint.max(position);
        }
        if tally.events > 0 && checkpoint == 0 {
            return Err("no positions read".into());
        }
        Ok(tally)
    }
}
