//! The peer: the same account domain written idiomatically for `cqrs-es` 0.5 and run on
//! `postgres-es` 0.5, as their documentation shows: an [`cqrs_es::Aggregate`] whose `handle`
//! writes events to the [`EventSink`], a [`PersistedEventStore`] over a
//! [`PostgresEventRepository`], commands through a [`CqrsFramework`], and a
//! [`SemanticVersionEventUpcaster`] for `MoneyDeposited` 1.0 payloads.
//!
//! The tables are postgres-es's documented ones (`db/init.sql` of the crate), created in a
//! schema of their own. The pool is built like postgres-es's `default_postgress_pool` (sqlx's
//! default options, 10 connections), without its panic on failure.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{
    EventUpcaster, PersistedEventRepository, PersistedEventStore, PersistenceError, QueryReplay, ReplayStream,
    SemanticVersionEventUpcaster, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::{Aggregate, CqrsFramework, DomainEvent, EventEnvelope, EventStore, Query};
use postgres_es::PostgresEventRepository;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::model::{self, AccountError, StoredEvent, Summary, Tally, LEGACY_REFERENCE, OWNER};
use crate::subject::State;
use crate::BenchResult;

/// The account's events, as cqrs-es models them: one serde enum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerEvent {
    /// An account was opened.
    AccountOpened {
        /// Who owns it.
        owner: String,
    },
    /// Money was paid in (version 2.0; 1.0 had no reference).
    MoneyDeposited {
        /// How much, in cents.
        amount: i64,
        /// The payer's reference.
        reference: String,
    },
}

impl DomainEvent for PeerEvent {
    fn event_type(&self) -> String {
        match self {
            Self::AccountOpened { .. } => "AccountOpened".to_string(),
            Self::MoneyDeposited { .. } => "MoneyDeposited".to_string(),
        }
    }

    fn event_version(&self) -> String {
        match self {
            Self::AccountOpened { .. } => "1.0".to_string(),
            Self::MoneyDeposited { .. } => "2.0".to_string(),
        }
    }
}

/// The account's commands.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerCommand {
    /// Open the account.
    Open {
        /// Who owns it.
        owner: String,
    },
    /// Make the next `count` deposits.
    Deposit {
        /// How many.
        count: u64,
    },
    /// Open the account with an imported history of `events` events.
    Import {
        /// Who owns it.
        owner: String,
        /// How many events in all, the opening first.
        events: u64,
    },
}

/// The account, as a cqrs-es aggregate.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PeerAccount {
    /// Whether the account was opened.
    pub open: bool,
    /// Who owns it.
    pub owner: String,
    /// The sum of all deposits.
    pub balance: i64,
    /// How many deposits were made.
    pub deposits: u64,
}

fn deposit_event(index: u64) -> PeerEvent {
    PeerEvent::MoneyDeposited {
        amount: model::amount(index),
        reference: model::reference(index),
    }
}

impl Aggregate for PeerAccount {
    const TYPE: &'static str = "account";
    type Command = PeerCommand;
    type Event = PeerEvent;
    type Error = AccountError;
    type Services = ();

    async fn handle(&mut self, command: PeerCommand, _: &(), sink: &EventSink<Self>) -> Result<(), AccountError> {
        // `EventSink::write` applies each event to the aggregate it is given, and cqrs-es 0.5's
        // snapshot store applies the events of a command that takes a snapshot to that same
        // aggregate once more, so the documented `sink.write(event, self)` saves a snapshot
        // with those events counted twice. Writing through a copy keeps snapshots right; the
        // copy costs one small clone per command.
        let mut state = self.clone();
        match command {
            PeerCommand::Open { owner } => {
                if state.open {
                    return Err(AccountError::AlreadyOpened);
                }
                sink.write(PeerEvent::AccountOpened { owner }, &mut state).await;
            }
            PeerCommand::Deposit { count } => {
                if !state.open {
                    return Err(AccountError::NotOpened);
                }
                for _ in 0..count {
                    let next = state.deposits + 1;
                    sink.write(deposit_event(next), &mut state).await;
                }
            }
            PeerCommand::Import { owner, events } => {
                if state.open {
                    return Err(AccountError::AlreadyOpened);
                }
                sink.write(PeerEvent::AccountOpened { owner }, &mut state).await;
                for index in 1..events {
                    sink.write(deposit_event(index), &mut state).await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: PeerEvent) {
        match event {
            PeerEvent::AccountOpened { owner } => {
                self.open = true;
                self.owner = owner;
            }
            PeerEvent::MoneyDeposited { amount, .. } => {
                self.balance += amount;
                self.deposits += 1;
            }
        }
    }
}

/// The upcaster a cqrs-es application registers for deposits stored at 1.0.
pub fn deposit_upcaster() -> Box<dyn EventUpcaster> {
    Box::new(SemanticVersionEventUpcaster::new(
        "MoneyDeposited",
        "2.0",
        Box::new(|mut payload: Value| {
            if let Some(fields) = payload.get_mut("MoneyDeposited").and_then(Value::as_object_mut) {
                fields.insert("reference".into(), LEGACY_REFERENCE.into());
            }
            payload
        }),
    ))
}

type PeerStore = PersistedEventStore<PostgresEventRepository, PeerAccount>;

/// postgres-es's documented tables (`db/init.sql`), in schema `{schema}`.
const TABLES: &str = r#"
CREATE SCHEMA {schema};
CREATE TABLE {schema}.events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE TABLE {schema}.snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);
"#;

/// cqrs-es + postgres-es on one schema.
#[derive(Clone)]
pub struct Peer {
    pool: PgPool,
    schema: String,
    storage: Storage,
    cqrs: Arc<CqrsFramework<PeerAccount, PeerStore>>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl Peer {
    /// Connects to `url` and uses `schema`, creating its tables when `create` is set; the event
    /// store gets command state as `state` says.
    pub async fn connect(url: &str, schema: &str, create: bool, state: State) -> BenchResult<Self> {
        let pool = PgPoolOptions::new().max_connections(10).connect(url).await?;
        if create {
            sqlx::raw_sql(&TABLES.replace("{schema}", schema))
                .execute(&pool)
                .await?;
        }
        let storage = match state {
            State::Replay => Storage::Events,
            State::Snapshots(every) => Storage::Snapshots(usize::try_from(every)?),
            State::Cached => Storage::Aggregate,
        };
        let cqrs = Arc::new(CqrsFramework::new(event_store(&pool, schema, storage), Vec::new(), ()));
        Ok(Self {
            pool,
            schema: schema.to_owned(),
            storage,
            cqrs,
        })
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Opens account `id`: a one-event command on a new aggregate.
    pub async fn open(&self, id: &str) -> BenchResult<()> {
        let owner = OWNER.to_owned();
        self.cqrs.execute(id, PeerCommand::Open { owner }).await?;
        Ok(())
    }

    /// Makes `count` deposits to account `id` in one command.
    pub async fn deposit(&self, id: &str, count: u64) -> BenchResult<()> {
        self.cqrs.execute(id, PeerCommand::Deposit { count }).await?;
        Ok(())
    }

    /// Opens account `id` with `events` events in one command.
    pub async fn import(&self, id: &str, events: u64) -> BenchResult<()> {
        let owner = OWNER.to_owned();
        self.cqrs.execute(id, PeerCommand::Import { owner, events }).await?;
        Ok(())
    }

    /// Loads account `id` through the event store (from its snapshot when snapshotting).
    pub async fn load(&self, id: &str) -> BenchResult<Summary> {
        let store = event_store(&self.pool, &self.schema, self.storage);
        let context = store.load_aggregate(id).await?;
        let account = context.aggregate;
        Ok(Summary {
            version: u64::try_from(context.current_sequence)?,
            balance: account.balance,
            deposits: account.deposits,
        })
    }

    /// Replays every event of the store through a query, as cqrs-es rebuilds a view.
    pub async fn read_all(&self) -> BenchResult<Tally> {
        let query = TallyQuery::default();
        let replay = QueryReplay::new(repository(&self.pool, &self.schema), query.clone())
            .with_upcasters(vec![deposit_upcaster()]);
        replay.replay_all().await?;
        Ok(query.tally())
    }
}

/// postgres-es's repository on the tables of `schema`.
fn repository(pool: &PgPool, schema: &str) -> PostgresEventRepository {
    PostgresEventRepository::new(pool.clone()).with_tables(&format!("{schema}.events"), &format!("{schema}.snapshots"))
}

/// Which of cqrs-es's event stores to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Storage {
    /// `new_event_store`: replay the stream.
    Events,
    /// `new_snapshot_store`: snapshot every so many events.
    Snapshots(usize),
    /// `new_aggregate_store`: save the state with every commit, load only the state.
    Aggregate,
}

/// The event store an application builds, with the deposit upcaster registered.
fn event_store(pool: &PgPool, schema: &str, storage: Storage) -> PeerStore {
    let repository = repository(pool, schema);
    let store = match storage {
        Storage::Events => PersistedEventStore::new_event_store(repository),
        Storage::Snapshots(size) => PersistedEventStore::new_snapshot_store(repository, size),
        Storage::Aggregate => PersistedEventStore::new_aggregate_store(repository),
    };
    store.with_upcasters(vec![deposit_upcaster()])
}

/// A cqrs-es query that counts the events it is given.
#[derive(Debug, Clone, Default)]
pub struct TallyQuery {
    events: Arc<AtomicU64>,
    amount: Arc<AtomicI64>,
    legacy: Arc<AtomicU64>,
}

impl TallyQuery {
    /// What the query has seen.
    pub fn tally(&self) -> Tally {
        Tally {
            events: self.events.load(Ordering::Relaxed),
            amount: self.amount.load(Ordering::Relaxed),
            legacy: self.legacy.load(Ordering::Relaxed),
        }
    }
}

#[async_trait]
impl Query<PeerAccount> for TallyQuery {
    async fn dispatch(&self, _aggregate_id: &str, events: &[EventEnvelope<PeerAccount>]) {
        for envelope in events {
            self.events.fetch_add(1, Ordering::Relaxed);
            if let PeerEvent::MoneyDeposited { amount, reference } = &envelope.payload {
                self.amount.fetch_add(*amount, Ordering::Relaxed);
                self.legacy
                    .fetch_add(u64::from(reference == LEGACY_REFERENCE), Ordering::Relaxed);
            }
        }
    }
}

/// Deposit `index` as cqrs-es stores it, at 1.0 or 2.0.
pub fn stored_deposit(index: u64, v1: bool) -> BenchResult<StoredEvent> {
    let amount = model::amount(index);
    let (schema_version, payload) = if v1 {
        (1, serde_json::json!({ "MoneyDeposited": { "amount": amount } }))
    } else {
        (2, serde_json::to_value(deposit_event(index))?)
    };
    Ok(StoredEvent {
        name: "MoneyDeposited",
        schema_version,
        payload: serde_json::to_vec(&payload)?,
    })
}

/// An in-memory [`PersistedEventRepository`] holding one stream of stored events, for
/// measuring cqrs-es's decoding without a database. `get_events` turns the stored bytes into
/// [`SerializedEvent`]s as postgres-es's row mapping does (the `json` column decodes into a
/// [`Value`]); [`PersistedEventStore::load_events`] then upcasts and deserializes them.
#[derive(Debug, Clone)]
pub struct MemoryRepository {
    events: Arc<Vec<StoredEvent>>,
}

impl MemoryRepository {
    /// A repository whose every stream is `events`.
    pub fn new(events: Arc<Vec<StoredEvent>>) -> Self {
        Self { events }
    }

    fn serialized(&self, aggregate_id: &str) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.events
            .iter()
            .enumerate()
            .map(|(sequence, stored)| {
                let payload: Value = serde_json::from_slice(&stored.payload)
                    .map_err(|error| PersistenceError::DeserializationError(Box::new(error)))?;
                Ok(SerializedEvent::new(
                    aggregate_id.to_owned(),
                    sequence + 1,
                    PeerAccount::TYPE.to_owned(),
                    stored.name.to_owned(),
                    format!("{}.0", stored.schema_version),
                    payload,
                    Value::Object(serde_json::Map::new()),
                ))
            })
            .collect()
    }
}

impl PersistedEventRepository for MemoryRepository {
    async fn get_events<A: Aggregate>(&self, aggregate_id: &str) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.serialized(aggregate_id)
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let mut events = self.serialized(aggregate_id)?;
        events.retain(|event| event.sequence > last_sequence);
        Ok(events)
    }

    async fn get_snapshot<A: Aggregate>(&self, _: &str) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        Ok(None)
    }

    async fn persist<A: Aggregate>(
        &self,
        _: &[SerializedEvent],
        _: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        Err(PersistenceError::UnknownError(
            "the in-memory repository is read-only".into(),
        ))
    }

    async fn stream_events<A: Aggregate>(&self, _: &str) -> Result<ReplayStream, PersistenceError> {
        Err(PersistenceError::UnknownError(
            "not supported by the in-memory repository".into(),
        ))
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        Err(PersistenceError::UnknownError(
            "not supported by the in-memory repository".into(),
        ))
    }
}

/// Decodes the events of `store` the way cqrs-es loads them, with [`EventStore::load_events`]:
/// upcasting, then deserializing each [`SerializedEvent`].
pub async fn decode_with(store: &PersistedEventStore<MemoryRepository, PeerAccount>) -> BenchResult<Tally> {
    let mut tally = Tally::default();
    for envelope in store.load_events("decode").await? {
        let deposit = match envelope.payload {
            PeerEvent::AccountOpened { .. } => None,
            PeerEvent::MoneyDeposited { amount, reference } => Some((amount, reference == LEGACY_REFERENCE)),
        };
        tally.count(deposit);
    }
    Ok(tally)
}

/// Builds the memory event store for [`decode_with`], so building it stays out of the timing.
pub fn memory_store(
    events: Arc<Vec<StoredEvent>>,
    upcaster: bool,
) -> PersistedEventStore<MemoryRepository, PeerAccount> {
    let store = PersistedEventStore::new_event_store(MemoryRepository::new(events));
    if upcaster {
        store.with_upcasters(vec![deposit_upcaster()])
    } else {
        store
    }
}
