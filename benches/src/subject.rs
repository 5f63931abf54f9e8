//! One implementation connected to one schema, behind a common set of operations.

use sqlx::PgPool;

use crate::model::{Summary, Tally};
use crate::ours::Ours;
use crate::peer::Peer;
use crate::raw::Raw;
use crate::scenario::Implementation;
use crate::BenchResult;

/// An implementation under test, connected to its schema.
#[derive(Debug, Clone)]
pub enum Subject {
    /// This framework.
    Ours(Ours),
    /// cqrs-es + postgres-es.
    Peer(Peer),
    /// The raw sqlx baseline.
    Raw(Raw),
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

/// How to connect a [`Subject`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup<'a> {
    /// The server.
    pub url: &'a str,
    /// The implementation's schema.
    pub schema: &'a str,
    /// Whether to create the schema and its tables.
    pub create: bool,
    /// Where commands get their state. (The raw baseline always decides on state cached in
    /// the process.)
    pub state: State,
}

impl Subject {
    /// Connects `implementation` as `setup` says.
    pub async fn connect(implementation: Implementation, setup: Setup<'_>) -> BenchResult<Self> {
        let Setup {
            url,
            schema,
            create,
            state,
        } = setup;
        Ok(match implementation {
            // `migrate` creates the schema, or finds it up to date.
            Implementation::Ours => Self::Ours(Ours::connect(url, schema, state).await?),
            Implementation::Peer => Self::Peer(Peer::connect(url, schema, create, state).await?),
            Implementation::Raw => {
                let snapshots = matches!(state, State::Snapshots(_));
                Self::Raw(Raw::connect(url, schema, create, snapshots).await?)
            }
        })
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        match self {
            Self::Ours(ours) => ours.pool(),
            Self::Peer(peer) => peer.pool(),
            Self::Raw(raw) => raw.pool(),
        }
    }

    /// A one-event command on the new aggregate `id`.
    pub async fn open(&self, id: &str) -> BenchResult<()> {
        match self {
            Self::Ours(ours) => ours.open(id).await,
            Self::Peer(peer) => peer.open(id).await,
            Self::Raw(raw) => raw.open(id).await,
        }
    }

    /// A command producing `count` deposits on the live aggregate `id`.
    pub async fn deposit(&self, id: &str, count: u64) -> BenchResult<()> {
        match self {
            Self::Ours(ours) => ours.deposit(id, count).await,
            Self::Peer(peer) => peer.deposit(id, count).await,
            Self::Raw(raw) => raw.deposit(id, count).await,
        }
    }

    /// A command producing `events` events on the new aggregate `id`.
    pub async fn import(&self, id: &str, events: u64) -> BenchResult<()> {
        match self {
            Self::Ours(ours) => ours.import(id, events).await,
            Self::Peer(peer) => peer.import(id, events).await,
            Self::Raw(raw) => raw.import(id, events).await,
        }
    }

    /// Rehydrates aggregate `id`.
    pub async fn load(&self, id: &str) -> BenchResult<Summary> {
        match self {
            Self::Ours(ours) => ours.load(id).await,
            Self::Peer(peer) => peer.load(id).await,
            Self::Raw(raw) => raw.load(id).await,
        }
    }

    /// Reads and decodes every event of the schema; `page` is this framework's page size.
    pub async fn read_all(&self, page: usize) -> BenchResult<Tally> {
        match self {
            Self::Ours(ours) => ours.read_all(page).await,
            Self::Peer(peer) => peer.read_all().await,
            Self::Raw(raw) => raw.read_all().await,
        }
    }

    /// After seeding aggregate `id`: the raw baseline writes its snapshot row (the frameworks
    /// snapshot by themselves while seeding).
    pub async fn finish_seeding(&self, id: &str) -> BenchResult<()> {
        match self {
            Self::Raw(raw) => raw.save_snapshot(id).await,
            Self::Ours(_) | Self::Peer(_) => Ok(()),
        }
    }
}
