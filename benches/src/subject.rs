//! One implementation connected to one schema (PostgreSQL) or one file (SQLite), behind a common
//! set of operations.

use std::path::Path;

use es_postgres::PostgresStore;
use es_sqlite::SqliteStore;

use crate::model::{Summary, Tally};
use crate::ours::Ours;
use crate::peer::Peer;
use crate::raw::Raw;
use crate::raw_sqlite::RawSqlite;
use crate::scenario::Implementation;
use crate::BenchResult;

/// An implementation under test, connected to its schema or file.
#[derive(Debug, Clone)]
pub enum Subject {
    /// This framework on PostgreSQL.
    Ours(Ours<PostgresStore>),
    /// cqrs-es + postgres-es.
    Peer(Peer),
    /// The raw sqlx baseline.
    Raw(Raw),
    /// This framework on SQLite.
    OursSqlite(Ours<SqliteStore>),
    /// The raw rusqlite baseline.
    RawSqlite(RawSqlite),
}

/// How an implementation gets the state a command decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Replay the stream (the frameworks' defaults).
    Replay,
    /// Snapshot every so many events, and load from the latest snapshot (the raw baseline reads
    /// its snapshot row before the stream).
    Snapshots(u64),
    /// Keep recent states: es-rs's `Repository::with_cache`, cqrs-es's aggregate store (the
    /// state saved with every commit).
    Cached,
}

/// Where a [`Subject`] keeps its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location<'a> {
    /// A schema of a PostgreSQL server.
    Postgres {
        /// The server.
        url: &'a str,
        /// The implementation's schema.
        schema: &'a str,
    },
    /// An SQLite database file.
    Sqlite {
        /// The file.
        path: &'a Path,
    },
}

/// How to connect a [`Subject`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup<'a> {
    /// The schema or file.
    pub location: Location<'a>,
    /// Whether to create the schema and its tables (a file is always created if missing).
    pub create: bool,
    /// Where commands get their state. (The raw baselines always decide on state cached in
    /// the process; on SQLite, es-rs takes its snapshots in the same file.)
    pub state: State,
}

impl Subject {
    /// Connects `implementation` as `setup` says.
    pub async fn connect(implementation: Implementation, setup: Setup<'_>) -> BenchResult<Self> {
        let Setup {
            location,
            create,
            state,
        } = setup;
        Ok(match (location, implementation) {
            // `migrate` creates the schema, or finds it up to date.
            (Location::Postgres { url, schema }, Implementation::Ours) => {
                Self::Ours(Ours::connect(url, schema, state).await?)
            }
            (Location::Postgres { url, schema }, Implementation::Peer) => {
                Self::Peer(Peer::connect(url, schema, create, state).await?)
            }
            (Location::Postgres { url, schema }, Implementation::Raw) => {
                let snapshots = matches!(state, State::Snapshots(_));
                Self::Raw(Raw::connect(url, schema, create, snapshots).await?)
            }
            (Location::Sqlite { path }, Implementation::Ours) => Self::OursSqlite(Ours::open_file(path, state).await?),
            (Location::Sqlite { path }, Implementation::Raw) => Self::RawSqlite(RawSqlite::open_file(path)?),
            (Location::Sqlite { .. }, Implementation::Peer) => {
                return Err("cqrs-es has no SQLite store in this benchmark".into())
            }
        })
    }

    /// Closes the subject and removes what it wrote: drops the schema, or deletes the file.
    pub async fn remove(self, location: Location<'_>) -> BenchResult<()> {
        match (self, location) {
            (Self::Ours(ours), Location::Postgres { schema, .. }) => drop_schema(ours.pool(), schema).await,
            (Self::Peer(peer), Location::Postgres { schema, .. }) => drop_schema(peer.pool(), schema).await,
            (Self::Raw(raw), Location::Postgres { schema, .. }) => drop_schema(raw.pool(), schema).await,
            (subject @ (Self::OursSqlite(_) | Self::RawSqlite(_)), Location::Sqlite { path }) => {
                // Every connection closes with the subject, before its files go.
                drop(subject);
                remove_database_files(path)
            }
            _ => Err("a subject removed from another store than its own".into()),
        }
    }

    /// A one-event command on the new aggregate `id`.
    pub async fn open(&self, id: &str) -> BenchResult<()> {
        match self {
            Self::Ours(ours) => ours.open(id).await,
            Self::Peer(peer) => peer.open(id).await,
            Self::Raw(raw) => raw.open(id).await,
            Self::OursSqlite(ours) => ours.open(id).await,
            Self::RawSqlite(raw) => raw.open(id),
        }
    }

    /// A command producing `count` deposits on the live aggregate `id`.
    pub async fn deposit(&self, id: &str, count: u64) -> BenchResult<()> {
        match self {
            Self::Ours(ours) => ours.deposit(id, count).await,
            Self::Peer(peer) => peer.deposit(id, count).await,
            Self::Raw(raw) => raw.deposit(id, count).await,
            Self::OursSqlite(ours) => ours.deposit(id, count).await,
            Self::RawSqlite(raw) => raw.deposit(id, count),
        }
    }

    /// A command producing `events` events on the new aggregate `id`.
    pub async fn import(&self, id: &str, events: u64) -> BenchResult<()> {
        match self {
            Self::Ours(ours) => ours.import(id, events).await,
            Self::Peer(peer) => peer.import(id, events).await,
            Self::Raw(raw) => raw.import(id, events).await,
            Self::OursSqlite(ours) => ours.import(id, events).await,
            Self::RawSqlite(raw) => raw.import(id, events),
        }
    }

    /// Rehydrates aggregate `id`.
    pub async fn load(&self, id: &str) -> BenchResult<Summary> {
        match self {
            Self::Ours(ours) => ours.load(id).await,
            Self::Peer(peer) => peer.load(id).await,
            Self::Raw(raw) => raw.load(id).await,
            Self::OursSqlite(ours) => ours.load(id).await,
            Self::RawSqlite(raw) => raw.load(id),
        }
    }

    /// Reads and decodes every event of the schema or file; `page` is the page size of the
    /// paged reads (es-rs and raw rusqlite on SQLite). es-rs on PostgreSQL streams the log
    /// with `GlobalLog::replay_all`.
    pub async fn read_all(&self, page: usize) -> BenchResult<Tally> {
        match self {
            Self::Ours(ours) => ours.replay_all().await,
            Self::Peer(peer) => peer.read_all().await,
            Self::Raw(raw) => raw.read_all().await,
            Self::OursSqlite(ours) => ours.read_all(page).await,
            Self::RawSqlite(raw) => raw.read_all(page),
        }
    }

    /// After seeding aggregate `id`: the raw sqlx baseline writes its snapshot row (the
    /// frameworks snapshot by themselves while seeding; no SQLite scenario reads snapshots).
    pub async fn finish_seeding(&self, id: &str) -> BenchResult<()> {
        match self {
            Self::Raw(raw) => raw.save_snapshot(id).await,
            Self::Ours(_) | Self::Peer(_) | Self::OursSqlite(_) | Self::RawSqlite(_) => Ok(()),
        }
    }

    /// On SQLite, the settings of the connection that writes, as SQLite reports them
    /// (`journal_mode`, `synchronous`, `busy_timeout`): part of every SQLite run's check, so
    /// both sides are known to have run with the same durability. `None` on PostgreSQL.
    pub async fn sqlite_settings(&self) -> BenchResult<Option<String>> {
        match self {
            Self::OursSqlite(ours) => Ok(Some(ours.settings().await?)),
            Self::RawSqlite(raw) => Ok(Some(raw.settings()?)),
            Self::Ours(_) | Self::Peer(_) | Self::Raw(_) => Ok(None),
        }
    }
}

async fn drop_schema(pool: &sqlx::PgPool, schema: &str) -> BenchResult<()> {
    sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(pool)
        .await?;
    pool.close().await;
    Ok(())
}

/// Deletes an SQLite database and its write-ahead log and shared-memory index, if present.
pub fn remove_database_files(path: &Path) -> BenchResult<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::remove_file(&name) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}
