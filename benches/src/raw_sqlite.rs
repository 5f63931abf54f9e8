//! The raw SQLite baseline: the minimum SQL for the same work as es-sqlite, with rusqlite (the
//! same bundled SQLite, through `es_sqlite::rusqlite`) and serde, and nothing else.
//!
//! - The same file settings as es-sqlite's defaults: WAL, `synchronous = FULL`, the same busy
//!   timeout ([`SqliteOptions::default`]). Each run checks that both sides report the same.
//! - One `events` table of the same shape as es-sqlite's (`STRICT`; `position` is the rowid;
//!   the 16-byte `event_id` unique; `aggregate_type`, `aggregate_id`, `version` unique together;
//!   `event_name`, `schema_version`, JSON `payload` and `metadata` text, `recorded_at` in
//!   microseconds), without es-sqlite's `CHECK` constraints and append-only triggers: integrity
//!   that es-rs adds is part of what es-rs costs.
//! - One connection, called directly on the caller's thread (no hand-off to a blocking thread),
//!   with every statement prepared once (`prepare_cached`), `BEGIN`/`COMMIT` included.
//! - An append is one `BEGIN IMMEDIATE` transaction: the cached `INSERT` once per event, then
//!   `COMMIT`. The unique constraint on the version is the concurrency check, as in the raw sqlx
//!   baseline; nothing is read first. It stores what es-rs stores: a fresh UUID v7 per event,
//!   the command's correlation id as metadata (serialized once per command), the time of the
//!   append once per batch.
//! - A command on a live aggregate decides on state cached in the process (loaded on a miss).
//! - A load is one `SELECT` of version, name, schema version and payload, decoded with serde
//!   from the row's borrowed bytes and folded row by row.
//! - The global read pages through `WHERE position > ? ORDER BY position LIMIT ?` with es-rs's
//!   page size, reading position, stream, version and the event (what a projection needs),
//!   borrowed from the rows.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use es_sqlite::rusqlite::{self, params, Connection, OpenFlags};
use es_sqlite::SqliteOptions;
use uuid::Uuid;

use crate::model::{AccountError, Summary, Tally, OWNER};
use crate::raw::{decode, Cached, Opened, RawEvent};
use crate::BenchResult;

/// The aggregate type of every stream (es-rs's `Account::TYPE`).
const AGGREGATE_TYPE: &str = "account";

const CREATE: &str = "CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY,
    event_id       BLOB    NOT NULL UNIQUE,
    aggregate_type TEXT    NOT NULL,
    aggregate_id   TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    event_name     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    recorded_at    INTEGER NOT NULL,
    UNIQUE (aggregate_type, aggregate_id, version)
) STRICT";
const BEGIN: &str = "BEGIN IMMEDIATE";
const COMMIT: &str = "COMMIT";
const ROLLBACK: &str = "ROLLBACK";
const INSERT: &str = "INSERT INTO events
    (event_id, aggregate_type, aggregate_id, version, event_name, schema_version, payload, metadata, recorded_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
const LOAD: &str = "SELECT version, event_name, schema_version, payload FROM events
    WHERE aggregate_type = ?1 AND aggregate_id = ?2 ORDER BY version";
const READ_ALL: &str = "SELECT position, aggregate_type, aggregate_id, version, event_name, schema_version, payload
    FROM events WHERE position > ?1 ORDER BY position LIMIT ?2";

/// The settings of `connection` that decide durability and waiting, as SQLite reports them.
pub fn settings_of(connection: &Connection) -> rusqlite::Result<String> {
    let pragma = |name: &str| {
        connection.query_row(&format!("PRAGMA {name}"), [], |row| {
            row.get::<_, rusqlite::types::Value>(0)
        })
    };
    let text = |value: rusqlite::types::Value| match value {
        rusqlite::types::Value::Integer(integer) => integer.to_string(),
        rusqlite::types::Value::Text(text) => text,
        other => format!("{other:?}"),
    };
    Ok(format!(
        "journal_mode={} synchronous={} busy_timeout={}",
        text(pragma("journal_mode")?),
        text(pragma("synchronous")?),
        text(pragma("busy_timeout")?)
    ))
}

/// The raw rusqlite baseline on one file.
#[derive(Debug, Clone)]
pub struct RawSqlite {
    connection: Arc<Mutex<Connection>>,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
}

/// Locks a mutex; a panic elsewhere leaves nothing half-changed that matters to a benchmark.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RawSqlite {
    /// Opens (creating) the file at `path` with es-sqlite's default settings, and creates the
    /// table if missing.
    pub fn open_file(path: &Path) -> BenchResult<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(path, flags)?;
        let defaults = SqliteOptions::default();
        connection.busy_timeout(defaults.busy_timeout)?;
        let mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!("{} stays in journal mode {mode}", path.display()).into());
        }
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.execute_batch(CREATE)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            cache: Arc::default(),
        })
    }

    /// The connection's settings, as SQLite reports them.
    pub fn settings(&self) -> BenchResult<String> {
        Ok(settings_of(&lock(&self.connection))?)
    }

    /// Appends `events` to stream `id` after `version`, in one transaction.
    fn append(&self, id: &str, version: u64, events: &[RawEvent]) -> BenchResult<()> {
        let metadata = format!(r#"{{"correlation_id":"{}"}}"#, Uuid::now_v7());
        let recorded_at = chrono::Utc::now().timestamp_micros();
        let first = i64::try_from(version)? + 1;
        let connection = lock(&self.connection);
        connection.prepare_cached(BEGIN)?.execute([])?;
        let inserted = (|| -> BenchResult<()> {
            let mut insert = connection.prepare_cached(INSERT)?;
            let mut payload = Vec::with_capacity(128);
            for (event, version) in events.iter().zip(first..) {
                event.write_payload(&mut payload)?;
                insert.execute(params![
                    Uuid::now_v7().as_bytes(),
                    AGGREGATE_TYPE,
                    id,
                    version,
                    event.name(),
                    event.schema_version(),
                    std::str::from_utf8(&payload)?,
                    metadata,
                    recorded_at,
                ])?;
            }
            Ok(())
        })();
        match inserted {
            Ok(()) => {
                connection.prepare_cached(COMMIT)?.execute([])?;
                Ok(())
            }
            Err(error) => {
                let _ = connection
                    .prepare_cached(ROLLBACK)
                    .and_then(|mut rollback| rollback.execute([]));
                Err(error)
            }
        }
    }

    /// Opens account `id`: one transaction inserting version 1 (the unique constraint refuses it
    /// if the account exists), and caches the new state.
    pub fn open(&self, id: &str) -> BenchResult<()> {
        let event = RawEvent::Opened(Opened {
            owner: OWNER.to_owned(),
        });
        self.append(id, 0, std::slice::from_ref(&event))?;
        let mut cached = Cached::default();
        cached.account.apply(&event);
        cached.version = 1;
        lock(&self.cache).insert(id.to_owned(), cached);
        Ok(())
    }

    /// Makes `count` deposits to account `id`: decides on the cached state (loaded on a miss)
    /// and appends the next versions.
    pub fn deposit(&self, id: &str, count: u64) -> BenchResult<()> {
        let cached = lock(&self.cache).get(id).cloned();
        let mut cached = match cached {
            Some(cached) => cached,
            None => self.load_state(id)?,
        };
        if !cached.account.open {
            return Err(AccountError::NotOpened.into());
        }
        let first = cached.account.deposits + 1;
        let events: Vec<RawEvent> = (first..first + count).map(RawEvent::deposit).collect();
        self.append(id, cached.version, &events)?;
        for event in &events {
            cached.account.apply(event);
        }
        cached.version += count;
        lock(&self.cache).insert(id.to_owned(), cached);
        Ok(())
    }

    /// Opens account `id` with `events` events in one transaction.
    pub fn import(&self, id: &str, events: u64) -> BenchResult<()> {
        let mut batch = vec![RawEvent::Opened(Opened {
            owner: OWNER.to_owned(),
        })];
        batch.extend((1..events).map(RawEvent::deposit));
        self.append(id, 0, &batch)
    }

    fn load_state(&self, id: &str) -> BenchResult<Cached> {
        let connection = lock(&self.connection);
        let mut statement = connection.prepare_cached(LOAD)?;
        let mut rows = statement.query(params![AGGREGATE_TYPE, id])?;
        let mut cached = Cached::default();
        while let Some(row) = rows.next()? {
            let version: i64 = row.get(0)?;
            let event = decode(row.get_ref(1)?.as_str()?, row.get(2)?, row.get_ref(3)?.as_bytes()?)?;
            cached.account.apply(&event);
            cached.version = u64::try_from(version)?;
        }
        Ok(cached)
    }

    /// Loads account `id` from the file (never from the cache).
    pub fn load(&self, id: &str) -> BenchResult<Summary> {
        let cached = self.load_state(id)?;
        Ok(Summary {
            version: cached.version,
            balance: cached.account.balance,
            deposits: cached.account.deposits,
        })
    }

    /// Reads every event in global order, `page` at a time: position, stream, version and the
    /// decoded event.
    pub fn read_all(&self, page: usize) -> BenchResult<Tally> {
        let connection = lock(&self.connection);
        let mut statement = connection.prepare_cached(READ_ALL)?;
        let mut tally = Tally::default();
        let mut after = 0_i64;
        loop {
            let mut rows = statement.query(params![after, i64::try_from(page)?])?;
            let mut read = 0;
            while let Some(row) = rows.next()? {
                // What a projection needs besides the event: where it is, for the checkpoint, and
                // whose it is.
                let position: i64 = row.get(0)?;
                let _type: &str = row.get_ref(1)?.as_str()?;
                let _id: &str = row.get_ref(2)?.as_str()?;
                let _version: i64 = row.get(3)?;
                let event = decode(row.get_ref(4)?.as_str()?, row.get(5)?, row.get_ref(6)?.as_bytes()?)?;
                tally.count(event.tally());
                after = position;
                read += 1;
            }
            if read < page {
                break;
            }
        }
        Ok(tally)
    }
}
