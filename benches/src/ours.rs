//! This framework: the account domain written with `#[event]` and `#[derive(Aggregate)]`, run
//! through [`es_core::Repository`] on [`es_postgres::PostgresStore`] or
//! [`es_sqlite::SqliteStore`], as an application would.
//!
//! The PostgreSQL store is built with [`PostgresStore::connect`], the constructor the crate
//! documents, so it gets that constructor's pool settings; the SQLite store with
//! [`SqliteStore::open_with`] and the default [`SqliteOptions`] (WAL, `synchronous = FULL`, a
//! 5-second busy timeout). Commands on new aggregates go through [`Repository::create`], others
//! through [`Repository::execute`].

use std::ops::ControlFlow;
use std::path::Path;

use es_core::{
    decode_record, event, Aggregate, Apply, EventSet, EventStore, GlobalLog, LogFilter, Metadata, Repository,
    UpcastError,
};
use es_postgres::PostgresStore;
use es_sqlite::{SqliteOptions, SqliteStore};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{self, AccountError, StoredEvent, Summary, Tally, LEGACY_REFERENCE, OWNER};
use crate::subject::State;
use crate::BenchResult;

/// How many aggregates' states [`State::Cached`] keeps.
pub const CACHED_AGGREGATES: usize = 1024;

/// An account was opened.
#[event(name = "AccountOpened")]
#[derive(Debug, Clone, PartialEq)]
pub struct AccountOpened {
    /// Who owns it.
    pub owner: String,
}

/// Money was paid in. Version 1 had no reference.
#[event(name = "MoneyDeposited", version = 2)]
#[upcast(from = 1, json = deposited_v1_to_v2)]
#[derive(Debug, Clone, PartialEq)]
pub struct MoneyDeposited {
    /// How much, in cents.
    pub amount: i64,
    /// The payer's reference.
    pub reference: String,
}

fn deposited_v1_to_v2(mut payload: Value) -> Result<Value, UpcastError> {
    let fields = payload
        .as_object_mut()
        .ok_or_else(|| UpcastError::new("MoneyDeposited v1 payload is not an object"))?;
    fields.insert("reference".into(), LEGACY_REFERENCE.into());
    Ok(payload)
}

/// Everything that can happen to an account.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum AccountEvent {
    /// See [`AccountOpened`].
    Opened(AccountOpened),
    /// See [`MoneyDeposited`].
    Deposited(MoneyDeposited),
}

/// A bank account, folded from its events.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "account", id = String, event = AccountEvent, snapshot_revision = 1)]
pub struct Account {
    /// Whether the account was opened.
    pub open: bool,
    /// Who owns it.
    pub owner: String,
    /// The sum of all deposits.
    pub balance: i64,
    /// How many deposits were made.
    pub deposits: u64,
}

impl Apply<AccountOpened> for Account {
    fn apply(&mut self, event: &AccountOpened) {
        self.open = true;
        self.owner = event.owner.clone();
    }
}

impl Apply<MoneyDeposited> for Account {
    fn apply(&mut self, event: &MoneyDeposited) {
        self.balance += event.amount;
        self.deposits += 1;
    }
}

type Decision = Result<Vec<AccountEvent>, AccountError>;

impl Account {
    /// Opens the account.
    pub fn open(&self, owner: &str) -> Decision {
        if self.open {
            return Err(AccountError::AlreadyOpened);
        }
        Ok(vec![AccountOpened {
            owner: owner.to_owned(),
        }
        .into()])
    }

    /// Makes the next `count` deposits.
    pub fn deposit(&self, count: u64) -> Decision {
        if !self.open {
            return Err(AccountError::NotOpened);
        }
        Ok((self.deposits + 1..=self.deposits + count)
            .map(|index| {
                MoneyDeposited {
                    amount: model::amount(index),
                    reference: model::reference(index),
                }
                .into()
            })
            .collect())
    }

    /// Opens the account with an imported history: `events` events in all, the opening first.
    pub fn import(&self, owner: &str, events: u64) -> Decision {
        let mut decided = self.open(owner)?;
        decided.extend((1..events).map(|index| {
            AccountEvent::from(MoneyDeposited {
                amount: model::amount(index),
                reference: model::reference(index),
            })
        }));
        Ok(decided)
    }

    /// The summary the benchmark checks, at stream version `version`.
    pub fn summary(&self, version: u64) -> Summary {
        Summary {
            version,
            balance: self.balance,
            deposits: self.deposits,
        }
    }
}

/// The same deposit event with no schema history: version 1, no upcaster. Scenario 6 decodes
/// current-version payloads with it to price the upcaster's presence.
pub mod plain {
    use es_core::event;

    use super::AccountOpened;

    /// `MoneyDeposited` as if it had never changed shape.
    #[event(name = "MoneyDeposited")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct MoneyDeposited {
        /// How much, in cents.
        pub amount: i64,
        /// The payer's reference.
        pub reference: String,
    }

    /// The account's events without any upcaster.
    #[event]
    #[derive(Debug, Clone, PartialEq)]
    pub enum AccountEvent {
        /// See [`AccountOpened`].
        Opened(AccountOpened),
        /// See [`MoneyDeposited`].
        Deposited(MoneyDeposited),
    }
}

/// The account repository on a store: PostgreSQL or SQLite.
#[derive(Debug, Clone)]
pub struct Ours<S> {
    repo: Repository<Account, S>,
}

/// Takes snapshots or keeps states as `state` says.
fn configured<S>(repo: Repository<Account, S>, state: State) -> Repository<Account, S>
where
    S: EventStore + es_core::SnapshotStore + Clone + 'static,
{
    match state {
        State::Replay => repo,
        State::Snapshots(every) => repo.with_snapshot_every(every),
        State::Cached => repo.with_cache(CACHED_AGGREGATES),
    }
}

impl Ours<PostgresStore> {
    /// Connects with [`PostgresStore::connect`], uses `schema` (created and migrated here), and
    /// gets command state as `state` says.
    pub async fn connect(url: &str, schema: &str, state: State) -> BenchResult<Self> {
        let store = PostgresStore::connect(url).await?.with_schema(schema)?;
        store.migrate().await?;
        Ok(Self {
            repo: configured(Repository::new(store), state),
        })
    }

    /// The store's connection pool.
    pub fn pool(&self) -> &sqlx::PgPool {
        self.repo.store().pool()
    }

    /// The store.
    pub fn store(&self) -> &PostgresStore {
        self.repo.store()
    }
}

impl Ours<SqliteStore> {
    /// Opens (creating) the file at `path` with the default [`SqliteOptions`], migrates it, and
    /// gets command state as `state` says.
    pub async fn open_file(path: &Path, state: State) -> BenchResult<Self> {
        let store = SqliteStore::open_with(path, SqliteOptions::default()).await?;
        store.migrate().await?;
        Ok(Self {
            repo: configured(Repository::new(store), state),
        })
    }

    /// The settings of the store's writer connection, as SQLite reports them.
    pub async fn settings(&self) -> BenchResult<String> {
        Ok(self.repo.store().write(crate::raw_sqlite::settings_of).await?)
    }
}

impl<S: EventStore + GlobalLog> Ours<S> {
    /// Opens account `id`: a one-event command on a new aggregate, through
    /// [`Repository::create`] (no read of the stream that is expected not to exist).
    pub async fn open(&self, id: &str) -> BenchResult<()> {
        self.repo
            .create(&id.to_owned(), Metadata::new(), |account| account.open(OWNER))
            .await?;
        Ok(())
    }

    /// Makes `count` deposits to account `id` in one command, through
    /// [`Repository::execute`]: load (or take the cached state), decide, append.
    pub async fn deposit(&self, id: &str, count: u64) -> BenchResult<()> {
        self.repo
            .execute(&id.to_owned(), Metadata::new(), |account| account.deposit(count))
            .await?;
        Ok(())
    }

    /// Opens account `id` with `events` events in one command, through [`Repository::create`].
    pub async fn import(&self, id: &str, events: u64) -> BenchResult<()> {
        self.repo
            .create(&id.to_owned(), Metadata::new(), |account| account.import(OWNER, events))
            .await?;
        Ok(())
    }

    /// Loads account `id` (from its snapshot when the repository takes snapshots).
    pub async fn load(&self, id: &str) -> BenchResult<Summary> {
        let loaded = self.repo.load(&id.to_owned()).await?;
        Ok(loaded.aggregate.summary(loaded.version))
    }

    /// Reads every event of the store in global order, `page` at a time, decoding each.
    pub async fn read_all(&self, page: usize) -> BenchResult<Tally> {
        let mut tally = Tally::default();
        let mut after = 0;
        loop {
            let events = self.repo.store().read_all(after, page).await?;
            let Some(last) = events.last() else { break };
            after = last.position;
            for record in &events {
                tally.count(deposit_of(&decode_record::<AccountEvent>(record)?));
            }
        }
        Ok(tally)
    }
}

impl<S: EventStore + GlobalLog> Ours<S> {
    /// Reads every event of the store in global order with [`GlobalLog::replay_all`] (one
    /// query on PostgreSQL), decoding each from the row it is lent from.
    pub async fn replay_all(&self) -> BenchResult<Tally> {
        let mut tally = Tally::default();
        let mut failed = None;
        self.repo
            .store()
            .replay_all(0, &LogFilter::all(), &mut |event| match AccountEvent::decode(
                event.event_name,
                event.schema_version,
                event.payload,
            ) {
                Ok(decoded) => {
                    tally.count(deposit_of(&decoded));
                    ControlFlow::Continue(())
                }
                Err(error) => {
                    failed = Some(error);
                    ControlFlow::Break(())
                }
            })
            .await?;
        match failed {
            Some(error) => Err(error.into()),
            None => Ok(tally),
        }
    }
}

fn deposit_of(event: &AccountEvent) -> Option<(i64, bool)> {
    match event {
        AccountEvent::Opened(_) => None,
        AccountEvent::Deposited(deposit) => Some((deposit.amount, deposit.reference == LEGACY_REFERENCE)),
    }
}

fn plain_deposit_of(event: &plain::AccountEvent) -> Option<(i64, bool)> {
    match event {
        plain::AccountEvent::Opened(_) => None,
        plain::AccountEvent::Deposited(deposit) => Some((deposit.amount, deposit.reference == LEGACY_REFERENCE)),
    }
}

/// Deposit `index` as this framework stores it, at schema version 1 or 2.
pub fn stored_deposit(index: u64, v1: bool) -> BenchResult<StoredEvent> {
    let amount = model::amount(index);
    let (schema_version, payload) = if v1 {
        (1, serde_json::to_vec(&serde_json::json!({ "amount": amount }))?)
    } else {
        let event = AccountEvent::from(MoneyDeposited {
            amount,
            reference: model::reference(index),
        });
        (event.schema_version(), event.encode_payload()?)
    };
    Ok(StoredEvent {
        name: "MoneyDeposited",
        schema_version,
        payload,
    })
}

/// Decodes `events` into [`AccountEvent`] (which has an upcaster for `MoneyDeposited` v1).
pub fn decode_with_upcaster(events: &[StoredEvent]) -> Result<Tally, es_core::DecodeError> {
    let mut tally = Tally::default();
    for stored in events {
        let event = AccountEvent::decode(stored.name, stored.schema_version, &stored.payload)?;
        tally.count(deposit_of(&event));
    }
    Ok(tally)
}

/// Decodes `events` into [`plain::AccountEvent`], which has no upcaster. The events must be at
/// the current version; they are read as the plain type's version 1.
pub fn decode_without_upcaster(events: &[StoredEvent]) -> Result<Tally, es_core::DecodeError> {
    use es_core::EventType;

    let mut tally = Tally::default();
    for stored in events {
        let event = plain::AccountEvent::decode(stored.name, plain::MoneyDeposited::VERSION, &stored.payload)?;
        tally.count(plain_deposit_of(&event));
    }
    Ok(tally)
}
