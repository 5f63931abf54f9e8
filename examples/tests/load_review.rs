//! An outside user's review under concurrent load, on both durable backends (SQLite and
//! PostgreSQL), through the public API only:
//!
//! - many writers on one hot aggregate and on many aggregates, with the repository's retries:
//!   no lost update, every accepted command's events stored exactly once, the typed conflict when
//!   the retries are spent;
//! - seat reservation under races (seed 002): never oversold;
//! - idempotent commands sent by several tasks at once: applied once, each sender answered as
//!   documented;
//! - projections fed while writers run: the read model equals a fold over the global log, no
//!   event skipped or seen twice while transactions commit out of order, two runners of one
//!   projection (one active), a runner stopped or cancelled mid-load and restarted, and
//!   read-your-writes for every write;
//! - several store handles (as separate processes would open them) writing and projecting at
//!   once.
//!
//! Each scenario runs on a SQLite file in a temporary directory and on a fresh PostgreSQL schema
//! (`es_test_support`), both removed when the test ends.

use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use es_core::{
    async_trait, decode_record, encode_batch, event, Aggregate, Apply, CheckpointStore, CommandError, DecodedEvent,
    EventStore, Executed, ExpectedVersion, GlobalLog, HandlerError, Metadata, Projection, ProjectionError,
    ProjectionProgress, ProjectionRunner, RecordedEvent, Repository, RetryPolicy, SnapshotStore, StreamId, StreamSlice,
    WakeUp,
};
use es_postgres::{PostgresStore, PostgresWakeUp};
use es_sqlite::{SqliteContext, SqliteStore, SqliteWakeUp};
use es_test_support::TestDatabase;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Barrier};
use tokio::task::JoinHandle;
use uuid::Uuid;

#[path = "support/review/mod.rs"]
mod review;

use review::on_sqlite_and_postgres;
use review::running::run_until_stopped;
use review::stores::{on_postgres, on_sqlite, NumberColumn};

/// Every stored event of `stream` (an account's or a show's), with its envelope, through the
/// repository's listing.
async fn collect_stream<S: EventStore + Clone>(store: &S, stream: &StreamId, slice: StreamSlice) -> Vec<RecordedEvent> {
    match stream.aggregate_type.as_str() {
        "acct" => Repository::<Acct, _>::new(store.clone())
            .events(&stream.aggregate_id, slice)
            .await
            .expect("the account's events")
            .into_iter()
            .map(|event| event.envelope)
            .collect(),
        "show" => Repository::<Show, _>::new(store.clone())
            .events(&stream.aggregate_id, slice)
            .await
            .expect("the show's events")
            .into_iter()
            .map(|event| event.envelope)
            .collect(),
        other => panic!("no such aggregate type {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The domain: an account (seed 001) and a show with numbered seats (seed 002).
// ---------------------------------------------------------------------------------------------

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct Deposited {
    pub amount: u64,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct Withdrawn {
    pub amount: u64,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum AcctEvent {
    Deposited(Deposited),
    Withdrawn(Withdrawn),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "acct", event = AcctEvent)]
pub struct Acct {
    pub balance: i64,
    pub movements: u64,
}

impl Apply<Deposited> for Acct {
    fn apply(&mut self, event: &Deposited) {
        self.balance += event.amount as i64;
        self.movements += 1;
    }
}

impl Apply<Withdrawn> for Acct {
    fn apply(&mut self, event: &Withdrawn) {
        self.balance -= event.amount as i64;
        self.movements += 1;
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsufficientFunds {
    pub balance: i64,
}

impl Acct {
    fn deposit(&self, amount: u64) -> Vec<AcctEvent> {
        vec![Deposited { amount }.into()]
    }

    fn withdraw(&self, amount: u64) -> Result<Vec<AcctEvent>, InsufficientFunds> {
        if self.balance < amount as i64 {
            return Err(InsufficientFunds { balance: self.balance });
        }
        Ok(vec![Withdrawn { amount }.into()])
    }
}

/// Seats of a show are numbered 1 to `CAPACITY`.
const CAPACITY: u32 = 20;

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct SeatsReserved {
    pub buyer: String,
    pub seats: Vec<u32>,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum ShowEvent {
    Reserved(SeatsReserved),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "show", event = ShowEvent)]
pub struct Show {
    pub taken: BTreeSet<u32>,
    /// Seats reserved twice (must stay 0).
    pub double_booked: u32,
}

impl Apply<SeatsReserved> for Show {
    fn apply(&mut self, event: &SeatsReserved) {
        for seat in &event.seats {
            if !self.taken.insert(*seat) {
                self.double_booked += 1;
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeatError {
    Taken(u32),
    NoSuchSeat(u32),
    SoldOut,
}

impl Show {
    fn reserve(&self, buyer: &str, seats: &[u32]) -> Result<Vec<ShowEvent>, SeatError> {
        for &seat in seats {
            if seat == 0 || seat > CAPACITY {
                return Err(SeatError::NoSuchSeat(seat));
            }
            if self.taken.contains(&seat) {
                return Err(SeatError::Taken(seat));
            }
        }
        Ok(vec![SeatsReserved {
            buyer: buyer.into(),
            seats: seats.to_vec(),
        }
        .into()])
    }

    /// Any one free seat (the lowest).
    fn reserve_any(&self, buyer: &str) -> Result<Vec<ShowEvent>, SeatError> {
        let free = (1..=CAPACITY)
            .find(|seat| !self.taken.contains(seat))
            .ok_or(SeatError::SoldOut)?;
        self.reserve(buyer, &[free])
    }
}

// ---------------------------------------------------------------------------------------------
// The two backends, as a user sets them up: stores, a second handle, a ledger read model.
// ---------------------------------------------------------------------------------------------

/// A read-model context the ledger projection writes to.
#[async_trait]
pub trait LedgerContext: Send + 'static {
    /// Records that `runner` handled the event at `position`, and applies `delta` to `account`.
    async fn record(
        &mut self,
        position: u64,
        event_id: Uuid,
        runner: &str,
        account: &str,
        delta: i64,
    ) -> Result<(), HandlerError>;

    async fn clear(&mut self) -> Result<(), HandlerError>;
}

#[async_trait]
impl LedgerContext for SqliteContext {
    async fn record(
        &mut self,
        position: u64,
        event_id: Uuid,
        runner: &str,
        account: &str,
        delta: i64,
    ) -> Result<(), HandlerError> {
        self.execute(
            "INSERT INTO ledger_seen (position, event_id, runner) VALUES (?1, ?2, ?3)",
            (position as i64, event_id.to_string(), runner),
        )?;
        self.execute(
            "INSERT INTO ledger_balances (account_id, balance) VALUES (?1, ?2)
             ON CONFLICT (account_id) DO UPDATE SET balance = balance + excluded.balance",
            (account, delta),
        )?;
        Ok(())
    }

    async fn clear(&mut self) -> Result<(), HandlerError> {
        self.execute_batch("DELETE FROM ledger_seen; DELETE FROM ledger_balances;")?;
        Ok(())
    }
}

#[async_trait]
impl LedgerContext for sqlx::PgConnection {
    async fn record(
        &mut self,
        position: u64,
        event_id: Uuid,
        runner: &str,
        account: &str,
        delta: i64,
    ) -> Result<(), HandlerError> {
        sqlx::query("INSERT INTO ledger_seen (position, event_id, runner) VALUES ($1, $2, $3)")
            .bind(position as i64)
            .bind(event_id.to_string())
            .bind(runner)
            .execute(&mut *self)
            .await?;
        sqlx::query(
            "INSERT INTO ledger_balances (account_id, balance) VALUES ($1, $2)
             ON CONFLICT (account_id) DO UPDATE SET balance = ledger_balances.balance + excluded.balance",
        )
        .bind(account)
        .bind(delta)
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn clear(&mut self) -> Result<(), HandlerError> {
        sqlx::query("DELETE FROM ledger_seen").execute(&mut *self).await?;
        sqlx::query("DELETE FROM ledger_balances").execute(&mut *self).await?;
        Ok(())
    }
}

/// The ledger: every account event it handles, with the runner that handled it, and the
/// balances.
pub struct Ledger<C> {
    runner: &'static str,
    context: PhantomData<fn() -> C>,
}

impl<C> Ledger<C> {
    fn new(runner: &'static str) -> Self {
        Self {
            runner,
            context: PhantomData,
        }
    }
}

#[async_trait]
impl<C: LedgerContext> Projection for Ledger<C> {
    const NAME: &'static str = "ledger";
    const AGGREGATE_TYPES: &'static [&'static str] = &["acct"];
    type Event = AcctEvent;
    type Context = C;

    async fn handle(&self, context: &mut C, event: &DecodedEvent<AcctEvent>) -> Result<(), HandlerError> {
        let delta = match &event.event {
            AcctEvent::Deposited(deposit) => deposit.amount as i64,
            AcctEvent::Withdrawn(withdrawal) => -(withdrawal.amount as i64),
        };
        let envelope = &event.envelope;
        context
            .record(
                envelope.position,
                envelope.event_id,
                self.runner,
                &envelope.stream.aggregate_id,
                delta,
            )
            .await
    }

    async fn reset(&self, context: &mut C) -> Result<(), HandlerError> {
        context.clear().await
    }
}

/// One row of `ledger_seen`, in the order the rows were written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    position: u64,
    event_id: String,
    runner: String,
}

/// Where an account's balance is.
const BALANCE: NumberColumn = NumberColumn {
    table: "ledger_balances",
    column: "balance",
    key: "account_id",
};

/// What a test needs of a backend.
#[async_trait]
pub trait Backend: EventStore + SnapshotStore + GlobalLog + Clone + Send + Sync + 'static {
    const LABEL: &'static str;
    type Ctx: LedgerContext;
    type Checkpoints: CheckpointStore<Context = Self::Ctx> + Clone + Send + Sync + 'static;
    type Wake: WakeUp + Send + 'static;

    fn ledger_checkpoints(&self) -> Self::Checkpoints;
    async fn wake(&self) -> Self::Wake;
    /// Another handle on the same store, as another process would open it.
    async fn reopen(&self) -> Self;
    async fn create_ledger(&self);
    /// The `ledger_seen` rows in the order they were written.
    async fn seen(&self) -> Vec<Seen>;
    async fn balances(&self) -> BTreeMap<String, i64>;
    async fn balance_of(&self, account: &str) -> Option<i64>;
}

#[async_trait]
impl Backend for SqliteStore {
    const LABEL: &'static str = "sqlite";
    type Ctx = SqliteContext;
    type Checkpoints = es_sqlite::SqliteCheckpoints;
    type Wake = SqliteWakeUp;

    fn ledger_checkpoints(&self) -> Self::Checkpoints {
        self.checkpoints()
    }

    async fn wake(&self) -> SqliteWakeUp {
        self.wake_up()
    }

    async fn reopen(&self) -> Self {
        SqliteStore::open(self.path()).await.expect("open again")
    }

    async fn create_ledger(&self) {
        self.write(|db| {
            db.execute_batch(
                "CREATE TABLE ledger_seen (seq INTEGER PRIMARY KEY AUTOINCREMENT, position INTEGER NOT NULL,
                     event_id TEXT NOT NULL, runner TEXT NOT NULL);
                 CREATE TABLE ledger_balances (account_id TEXT PRIMARY KEY, balance INTEGER NOT NULL);",
            )
        })
        .await
        .expect("ledger tables");
    }

    async fn seen(&self) -> Vec<Seen> {
        self.read(|db| {
            let mut select = db.prepare("SELECT position, event_id, runner FROM ledger_seen ORDER BY seq")?;
            let rows = select.query_map([], |row| {
                Ok(Seen {
                    position: row.get::<_, i64>(0)? as u64,
                    event_id: row.get(1)?,
                    runner: row.get(2)?,
                })
            })?;
            rows.collect()
        })
        .await
        .expect("ledger_seen")
    }

    async fn balances(&self) -> BTreeMap<String, i64> {
        self.read(|db| {
            let mut select = db.prepare("SELECT account_id, balance FROM ledger_balances")?;
            let rows = select.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })
        .await
        .expect("ledger_balances")
    }

    async fn balance_of(&self, account: &str) -> Option<i64> {
        BALANCE.in_sqlite(self, account).await.ok().flatten()
    }
}

#[async_trait]
impl Backend for PostgresStore {
    const LABEL: &'static str = "postgres";
    type Ctx = sqlx::PgConnection;
    type Checkpoints = es_postgres::PostgresCheckpoints;
    type Wake = PostgresWakeUp;

    fn ledger_checkpoints(&self) -> Self::Checkpoints {
        self.checkpoints()
    }

    async fn wake(&self) -> PostgresWakeUp {
        self.wake_up().await.expect("listen")
    }

    async fn reopen(&self) -> Self {
        let options = es_postgres::PostgresOptions::new(TestDatabase::get().unwrap().url())
            .expect("a URL")
            .with_pool_options(sqlx::postgres::PgPoolOptions::new().max_connections(8));
        PostgresStore::connect_with(options)
            .await
            .expect("connect again")
            .with_schema(self.schema())
            .unwrap()
    }

    async fn create_ledger(&self) {
        let schema = self.schema();
        sqlx::raw_sql(&format!(
            "CREATE TABLE {schema}.ledger_seen (seq bigserial PRIMARY KEY, position bigint NOT NULL,
                 event_id text NOT NULL, runner text NOT NULL);
             CREATE TABLE {schema}.ledger_balances (account_id text PRIMARY KEY, balance bigint NOT NULL);"
        ))
        .execute(self.pool())
        .await
        .expect("ledger tables");
    }

    async fn seen(&self) -> Vec<Seen> {
        let select = format!(
            "SELECT position, event_id, runner FROM {}.ledger_seen ORDER BY seq",
            self.schema()
        );
        sqlx::query_as::<_, (i64, String, String)>(&select)
            .fetch_all(self.pool())
            .await
            .expect("ledger_seen")
            .into_iter()
            .map(|(position, event_id, runner)| Seen {
                position: position as u64,
                event_id,
                runner,
            })
            .collect()
    }

    async fn balances(&self) -> BTreeMap<String, i64> {
        let select = format!("SELECT account_id, balance FROM {}.ledger_balances", self.schema());
        sqlx::query_as::<_, (String, i64)>(&select)
            .fetch_all(self.pool())
            .await
            .expect("ledger_balances")
            .into_iter()
            .collect()
    }

    async fn balance_of(&self, account: &str) -> Option<i64> {
        BALANCE.in_postgres(self, account).await.expect("a balance")
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers: the global log, folds, writers.
// ---------------------------------------------------------------------------------------------

/// The global log up to `head` at least (on PostgreSQL a read may stop short while another
/// transaction of the cluster is open: read again until `head` is there).
async fn global_log_through<S: GlobalLog>(store: &S, head: u64) -> Vec<RecordedEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut log: Vec<RecordedEvent> = Vec::new();
    loop {
        let after = log.last().map_or(0, |event| event.position);
        let page = store.read_all(after, 1000).await.expect("read_all");
        if page.is_empty() {
            if after >= head {
                return log;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the global log did not reach {head} (at {after})"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        log.extend(page);
    }
}

/// The balances a fold over the account events of `log` gives.
fn fold_balances(log: &[RecordedEvent]) -> BTreeMap<String, i64> {
    let mut balances = BTreeMap::new();
    for record in log.iter().filter(|record| record.stream.aggregate_type == "acct") {
        let delta = match decode_record::<AcctEvent>(record).expect("an account event") {
            AcctEvent::Deposited(deposit) => deposit.amount as i64,
            AcctEvent::Withdrawn(withdrawal) => -(withdrawal.amount as i64),
        };
        *balances.entry(record.stream.aggregate_id.clone()).or_insert(0) += delta;
    }
    balances
}

fn acct_stream(id: &str) -> StreamId {
    StreamId::new("acct", id)
}

/// A small deterministic generator, one per task.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// One accepted account command, as its sender saw it.
#[derive(Debug, Clone)]
struct Accepted {
    account: String,
    delta: i64,
    command_id: Uuid,
    executed: Executed<Acct>,
}

/// Checks that every accepted command's events are stored exactly once, at the place its answer
/// gave, and that each stream holds nothing else.
async fn assert_stored_exactly_once<S: EventStore + Clone>(store: &S, accepted: &[Accepted], label: &str) {
    let mut by_account: BTreeMap<&str, Vec<&Accepted>> = BTreeMap::new();
    for command in accepted {
        by_account.entry(&command.account).or_default().push(command);
    }
    for (account, commands) in by_account {
        let stored = collect_stream(store, &acct_stream(account), StreamSlice::all()).await;
        assert_eq!(
            stored.len(),
            commands.len(),
            "{label}: {account}: {} events stored for {} accepted commands",
            stored.len(),
            commands.len()
        );
        let versions: Vec<u64> = stored.iter().map(|event| event.version).collect();
        assert_eq!(
            versions,
            (1..=stored.len() as u64).collect::<Vec<_>>(),
            "{label}: {account}"
        );
        let stored_commands: BTreeSet<Uuid> = stored.iter().filter_map(|event| event.metadata.command_id).collect();
        let accepted_commands: BTreeSet<Uuid> = commands.iter().map(|command| command.command_id).collect();
        assert_eq!(
            stored_commands.len(),
            stored.len(),
            "{label}: {account}: a command stored twice"
        );
        assert_eq!(stored_commands, accepted_commands, "{label}: {account}");
        for command in &commands {
            let [appended] = command.executed.appended[..] else {
                panic!("{label}: one event per command: {:?}", command.executed.appended);
            };
            let event = &stored[appended.version as usize - 1];
            assert_eq!(
                (event.event_id, event.position, event.metadata.command_id),
                (appended.event_id, appended.position, Some(command.command_id)),
                "{label}: {account}: the answer names the stored event"
            );
        }
        let sum: i64 = commands.iter().map(|command| command.delta).sum();
        let sum_stored: i64 = fold_balances(&stored)[account];
        assert_eq!(sum, sum_stored, "{label}: {account}");
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Many writers on one hot aggregate: no lost update, exactly once, typed conflicts.
// ---------------------------------------------------------------------------------------------

/// 16 tasks × 12 deposits of distinct amounts on one account, half of them with a client
/// command id, through a repository that snapshots every 7 events.
async fn hot_account_concurrent_deposits<S: Backend>(store: S) {
    const TASKS: usize = 16;
    const EACH: usize = 12;
    let label = S::LABEL;
    let repo = Repository::<Acct, _>::new(store.clone()).with_snapshot_every(7);
    let start = Arc::new(Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (repo, start) = (repo.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                let mut outcomes = Vec::new();
                for i in 0..EACH {
                    let amount = (task * EACH + i + 1) as u64;
                    let metadata = match i % 2 {
                        0 => Metadata::new().with_command_id(Uuid::now_v7()),
                        _ => Metadata::new(),
                    };
                    let sent_id = metadata.command_id;
                    let outcome = repo.execute("HOT", metadata, |acct: &Acct| acct.deposit(amount)).await;
                    outcomes.push((amount, sent_id, outcome));
                }
                outcomes
            })
        })
        .collect();
    let mut accepted = Vec::new();
    let mut gave_up = 0;
    for task in tasks {
        for (amount, sent_id, outcome) in task.await.unwrap() {
            match outcome {
                Ok(executed) => {
                    assert!(
                        !executed.already_stored,
                        "{label}: a fresh command reported as a repeat"
                    );
                    if let Some(sent) = sent_id {
                        assert_eq!(executed.command_id, sent, "{label}: the client's command id");
                    }
                    accepted.push(Accepted {
                        account: "HOT".into(),
                        delta: amount as i64,
                        command_id: executed.command_id,
                        executed,
                    })
                }
                Err(CommandError::Conflict { attempts, conflict }) => {
                    assert!(attempts >= 1, "{label}");
                    assert_eq!(conflict.stream, acct_stream("HOT"), "{label}");
                    gave_up += 1;
                }
                Err(other) => panic!("{label}: unexpected error: {other:?}"),
            }
        }
    }
    assert_eq!(accepted.len() + gave_up, TASKS * EACH);
    let retried = accepted.iter().filter(|command| command.executed.attempts > 1).count();
    eprintln!(
        "{label}: hot account: {} accepted ({retried} after retries), {gave_up} gave up",
        accepted.len()
    );
    assert!(!accepted.is_empty(), "{label}: nothing accepted");
    assert_stored_exactly_once(&store, &accepted, label).await;

    // The answers' versions are distinct and each answer's state is the state at its version.
    let versions: BTreeSet<u64> = accepted.iter().map(|command| command.executed.version).collect();
    assert_eq!(versions.len(), accepted.len(), "{label}: two answers at one version");
    let plain = Repository::<Acct, _>::new(store.clone());
    for command in accepted.iter().step_by(5) {
        let at = plain.load_at_version("HOT", command.executed.version).await.unwrap();
        assert_eq!(at.aggregate, command.executed.aggregate, "{label}: state in the answer");
    }

    // No lost update: the balance is the sum of the accepted deposits, from snapshots or not.
    let expected: i64 = accepted.iter().map(|command| command.delta).sum();
    let loaded = repo.load("HOT").await.unwrap();
    assert_eq!(loaded.aggregate.balance, expected, "{label}: balance with snapshots");
    assert_eq!(loaded.version, accepted.len() as u64, "{label}");
    assert_eq!(plain.load("HOT").await.unwrap().aggregate.balance, expected, "{label}");
}

on_sqlite_and_postgres! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    hot_account_concurrent_deposits_on_sqlite,
    hot_account_concurrent_deposits_on_postgres: hot_account_concurrent_deposits
}

/// Retries spent: 12 commands decided on the same version at once (a barrier inside the
/// decision) without retries: exactly one wins, the others get `CommandError::Conflict` with one
/// attempt and the actual version; then a command that another writer beats on every attempt
/// gives up after its budget of attempts, having written nothing.
async fn spent_retries_give_a_typed_conflict<S: Backend>(store: S) {
    const TASKS: usize = 12;
    let label = S::LABEL;
    let repo = Repository::<Acct, _>::new(store.clone());
    repo.execute("R-1", Metadata::new(), |acct: &Acct| acct.deposit(1))
        .await
        .unwrap();

    let once = repo.clone().with_retry(RetryPolicy::no_retries());
    let decided = Arc::new(Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (once, decided) = (once.clone(), decided.clone());
            tokio::spawn(async move {
                once.execute_async("R-1", Metadata::new(), move |_acct: &Acct| {
                    let decided = decided.clone();
                    Box::pin(async move {
                        decided.wait().await;
                        Ok::<_, InsufficientFunds>(vec![Deposited {
                            amount: 10 + task as u64,
                        }
                        .into()])
                    })
                })
                .await
            })
        })
        .collect();
    let mut won = 0;
    let mut conflicts = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(executed) => {
                assert_eq!(executed.version, 2, "{label}");
                assert_eq!(executed.attempts, 1, "{label}");
                won += 1;
            }
            Err(CommandError::Conflict { attempts, conflict }) => {
                assert_eq!(attempts, 1, "{label}: one attempt without retries");
                assert_eq!(conflict.stream, acct_stream("R-1"), "{label}");
                assert_eq!(conflict.expected, ExpectedVersion::Exact(1), "{label}");
                assert_eq!(conflict.actual, 2, "{label}: the version the winner made");
                conflicts += 1;
            }
            Err(other) => panic!("{label}: unexpected error: {other:?}"),
        }
    }
    assert_eq!((won, conflicts), (1, TASKS - 1), "{label}");
    assert_eq!(
        repo.load("R-1").await.unwrap().version,
        2,
        "{label}: losers wrote nothing"
    );

    // Beaten on every attempt: each decision lets another writer append first.
    let interloper = repo.clone();
    let patient = repo.clone().with_retry(
        RetryPolicy::default()
            .with_max_attempts(3)
            .with_backoff(Duration::from_millis(1), Duration::from_millis(5)),
    );
    let command = Uuid::now_v7();
    let outcome = patient
        .execute_async("R-1", Metadata::new().with_command_id(command), |_acct: &Acct| {
            let interloper = interloper.clone();
            Box::pin(async move {
                interloper
                    .execute("R-1", Metadata::new(), |acct: &Acct| acct.deposit(1))
                    .await
                    .expect("the interloper's deposit");
                Ok::<_, InsufficientFunds>(vec![Deposited { amount: 1000 }.into()])
            })
        })
        .await;
    match outcome {
        Err(CommandError::Conflict { attempts, conflict }) => {
            assert_eq!(attempts, 3, "{label}: the whole budget");
            assert_eq!(
                conflict.actual,
                conflict_expected_version(&conflict.expected) + 1,
                "{label}"
            );
        }
        other => panic!("{label}: expected a conflict, got {other:?}"),
    }
    let stored = collect_stream(&store, &acct_stream("R-1"), StreamSlice::all()).await;
    assert_eq!(
        stored.len(),
        2 + 3,
        "{label}: the interloper's three deposits, not the command"
    );
    assert!(
        stored.iter().all(|event| event.metadata.command_id != Some(command)),
        "{label}: the command that gave up wrote nothing"
    );
    assert!(repo.find_command("R-1", command).await.unwrap().is_none(), "{label}");
}

fn conflict_expected_version(expected: &ExpectedVersion) -> u64 {
    match expected {
        ExpectedVersion::Exact(version) => *version,
        other => panic!("a command expects an exact version, not {other:?}"),
    }
}

on_sqlite_and_postgres! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    spent_retries_give_a_typed_conflict_on_sqlite,
    spent_retries_give_a_typed_conflict_on_postgres: spent_retries_give_a_typed_conflict
}

// ---------------------------------------------------------------------------------------------
// 1b. Many writers on many aggregates, with withdrawals refused on insufficient funds, through
// two repositories with caches of their own (as two processes would have).
// ---------------------------------------------------------------------------------------------

async fn many_accounts_keep_their_balances<S: Backend>(store: S) {
    const TASKS: usize = 24;
    const EACH: usize = 10;
    const ACCOUNTS: u64 = 6;
    let label = S::LABEL;
    let first = Repository::<Acct, _>::new(store.clone()).with_cache(64);
    let other_handle = store.reopen().await;
    let second = Repository::<Acct, _>::new(other_handle).with_cache(64);
    let start = Arc::new(Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let repo = if task % 2 == 0 { first.clone() } else { second.clone() };
            let start = start.clone();
            tokio::spawn(async move {
                let mut rng = Lcg(task as u64 + 1);
                start.wait().await;
                let mut outcomes = Vec::new();
                for _ in 0..EACH {
                    let account = format!("M-{}", rng.next(ACCOUNTS));
                    let amount = 1 + rng.next(50);
                    let command_id = Uuid::now_v7();
                    let metadata = Metadata::new().with_command_id(command_id);
                    let (delta, outcome) = if rng.next(3) == 0 {
                        let outcome = repo
                            .execute(&account, metadata, |acct: &Acct| acct.withdraw(amount))
                            .await;
                        (-(amount as i64), outcome)
                    } else {
                        let outcome = repo
                            .execute(&account, metadata, |acct: &Acct| {
                                Ok::<_, InsufficientFunds>(acct.deposit(amount))
                            })
                            .await;
                        (amount as i64, outcome)
                    };
                    outcomes.push((account, delta, command_id, outcome));
                }
                outcomes
            })
        })
        .collect();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for task in tasks {
        for (account, delta, command_id, outcome) in task.await.unwrap() {
            match outcome {
                Ok(executed) => {
                    assert!(
                        executed.aggregate.balance >= 0,
                        "{label}: {account} overdrawn in an answer"
                    );
                    accepted.push(Accepted {
                        account,
                        delta,
                        command_id,
                        executed,
                    });
                }
                Err(CommandError::Rejected(InsufficientFunds { balance })) => {
                    assert!(
                        delta < 0 && balance < -delta,
                        "{label}: refused wrongly: {balance} for {delta}"
                    );
                    refused += 1;
                }
                Err(CommandError::Conflict { .. }) => {}
                Err(other) => panic!("{label}: unexpected error: {other:?}"),
            }
        }
    }
    assert!(
        accepted.len() > TASKS * EACH / 2,
        "{label}: {} accepted",
        accepted.len()
    );
    assert_stored_exactly_once(&store, &accepted, label).await;
    let plain = Repository::<Acct, _>::new(store.clone());
    for account in 0..ACCOUNTS {
        let account = format!("M-{account}");
        let stored = collect_stream(&store, &acct_stream(&account), StreamSlice::all()).await;
        // Never below zero at any version.
        let mut balance = 0;
        for record in &stored {
            balance += match decode_record::<AcctEvent>(record).unwrap() {
                AcctEvent::Deposited(deposit) => deposit.amount as i64,
                AcctEvent::Withdrawn(withdrawal) => -(withdrawal.amount as i64),
            };
            assert!(
                balance >= 0,
                "{label}: {account} overdrawn at version {}",
                record.version
            );
        }
        assert_eq!(
            plain.load(&account).await.unwrap().aggregate.balance,
            balance,
            "{label}"
        );
    }
    let _ = refused;
}

on_sqlite_and_postgres! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    many_accounts_keep_their_balances_on_sqlite,
    many_accounts_keep_their_balances_on_postgres: many_accounts_keep_their_balances
}

// ---------------------------------------------------------------------------------------------
// 2. Seats: never oversold.
// ---------------------------------------------------------------------------------------------

/// 24 buyers race for overlapping pairs of seats, then 32 buyers race for any free seat until
/// the show is sold out: no seat is sold twice, the refusals are right, and exactly the
/// capacity is sold.
async fn seats_are_never_oversold<S: Backend>(store: S) {
    let label = S::LABEL;
    let shows = Repository::<Show, _>::new(store.clone());
    let patient = RetryPolicy::default()
        .with_max_attempts(40)
        .with_max_elapsed(Duration::from_secs(20));

    // Round 1: buyer b wants seats b and b+1 (mod the capacity): neighbours overlap.
    const PAIRS: u32 = 24;
    let start = Arc::new(Barrier::new(PAIRS as usize));
    let tasks: Vec<_> = (0..PAIRS)
        .map(|buyer| {
            let (shows, start) = (shows.clone().with_retry(patient), start.clone());
            tokio::spawn(async move {
                let seats = [buyer % CAPACITY + 1, (buyer + 1) % CAPACITY + 1];
                let name = format!("pair-{buyer}");
                start.wait().await;
                let outcome = shows
                    .execute("S-1", Metadata::new(), |show: &Show| show.reserve(&name, &seats))
                    .await;
                (seats, outcome)
            })
        })
        .collect();
    let mut sold: BTreeSet<u32> = BTreeSet::new();
    let mut refused_for = Vec::new();
    for task in tasks {
        let (seats, outcome) = task.await.unwrap();
        match outcome {
            Ok(executed) => {
                for seat in seats {
                    assert!(sold.insert(seat), "{label}: seat {seat} sold twice");
                }
                assert_eq!(executed.aggregate.double_booked, 0, "{label}");
            }
            Err(CommandError::Rejected(SeatError::Taken(seat))) => {
                assert!(seats.contains(&seat), "{label}");
                refused_for.push(seat);
            }
            Err(other) => panic!("{label}: unexpected outcome: {other:?}"),
        }
    }
    // A seat given as taken was sold.
    for seat in refused_for {
        assert!(
            sold.contains(&seat),
            "{label}: seat {seat} refused as taken but not sold"
        );
    }
    let show = shows.load("S-1").await.unwrap().aggregate;
    assert_eq!(
        show.taken, sold,
        "{label}: the stored reservations are the accepted ones"
    );
    assert_eq!(show.double_booked, 0, "{label}");

    // Round 2: 32 buyers want any free seat; exactly the seats left are sold.
    const BUYERS: usize = 32;
    let left = CAPACITY as usize - sold.len();
    let start = Arc::new(Barrier::new(BUYERS));
    let tasks: Vec<_> = (0..BUYERS)
        .map(|buyer| {
            let (shows, start) = (shows.clone().with_retry(patient), start.clone());
            tokio::spawn(async move {
                let name = format!("any-{buyer}");
                start.wait().await;
                shows
                    .execute("S-1", Metadata::new(), |show: &Show| show.reserve_any(&name))
                    .await
            })
        })
        .collect();
    let (mut got, mut sold_out) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(executed) => {
                let ShowEvent::Reserved(reserved) = &executed.events[0];
                for seat in &reserved.seats {
                    assert!(sold.insert(*seat), "{label}: seat {seat} sold twice");
                }
                got += 1;
            }
            Err(CommandError::Rejected(SeatError::SoldOut)) => sold_out += 1,
            Err(other) => panic!("{label}: unexpected outcome: {other:?}"),
        }
    }
    assert_eq!((got, sold_out), (left, BUYERS - left), "{label}");
    let show = shows.load("S-1").await.unwrap().aggregate;
    assert_eq!(show.taken.len(), CAPACITY as usize, "{label}: sold out exactly");
    assert_eq!(show.double_booked, 0, "{label}: never oversold");
    let stored = collect_stream(&store, &StreamId::new("show", "S-1"), StreamSlice::all()).await;
    let seats_stored: usize = stored
        .iter()
        .map(|record| match decode_record::<ShowEvent>(record).unwrap() {
            ShowEvent::Reserved(reserved) => reserved.seats.len(),
        })
        .sum();
    assert_eq!(seats_stored, CAPACITY as usize, "{label}: no reservation stored twice");
}

on_sqlite_and_postgres! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    seats_are_never_oversold_on_sqlite,
    seats_are_never_oversold_on_postgres: seats_are_never_oversold
}

// ---------------------------------------------------------------------------------------------
// 3. Idempotent commands sent by several tasks at once.
// ---------------------------------------------------------------------------------------------

/// 8 commands, each sent by 6 tasks at once on one account; then one seat reservation sent by 8
/// tasks at once (a decision that refuses once the seat is taken); then a reaction to one
/// event, sent by 6 consumers at once with `Metadata::in_reaction_to`.
async fn idempotent_commands_sent_at_once<S: Backend>(store: S) {
    const COMMANDS: usize = 8;
    const SENDERS: usize = 6;
    let label = S::LABEL;
    let patient = RetryPolicy::default()
        .with_max_attempts(40)
        .with_max_elapsed(Duration::from_secs(20));
    let repo = Repository::<Acct, _>::new(store.clone()).with_retry(patient);
    let ids: Vec<Uuid> = (0..COMMANDS).map(|_| Uuid::now_v7()).collect();
    let start = Arc::new(Barrier::new(COMMANDS * SENDERS));
    let mut tasks = Vec::new();
    for (command, &id) in ids.iter().enumerate() {
        for _ in 0..SENDERS {
            let (repo, start) = (repo.clone(), start.clone());
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let amount = 100 + command as u64;
                let outcome = repo
                    .execute("I-1", Metadata::new().with_command_id(id), |acct: &Acct| {
                        acct.deposit(amount)
                    })
                    .await;
                (id, outcome.expect("a sender's answer"))
            }));
        }
    }
    let mut answers: BTreeMap<Uuid, Vec<Executed<Acct>>> = BTreeMap::new();
    for task in tasks {
        let (id, executed) = task.await.unwrap();
        answers.entry(id).or_default().push(executed);
    }
    let stored = collect_stream(&store, &acct_stream("I-1"), StreamSlice::all()).await;
    assert_eq!(stored.len(), COMMANDS, "{label}: each command applied once");
    for (id, answers) in &answers {
        let fresh = answers.iter().filter(|executed| !executed.already_stored).count();
        assert_eq!(fresh, 1, "{label}: exactly one sender carried the command out");
        let first = &answers[0];
        for executed in answers {
            assert_eq!(executed.command_id, *id, "{label}");
            assert_eq!(
                executed.appended, first.appended,
                "{label}: the same events in every answer"
            );
            assert_eq!(executed.version, first.version, "{label}");
            assert_eq!(
                executed.aggregate, first.aggregate,
                "{label}: the state after the command"
            );
            assert_eq!(executed.events, first.events, "{label}");
        }
        let [appended] = first.appended[..] else {
            panic!("{label}: one event")
        };
        let event = &stored[appended.version as usize - 1];
        assert_eq!(
            (event.event_id, event.metadata.command_id),
            (appended.event_id, Some(*id))
        );
    }
    let expected: i64 = (0..COMMANDS as i64).map(|command| 100 + command).sum();
    assert_eq!(repo.load("I-1").await.unwrap().aggregate.balance, expected, "{label}");

    // A reservation sent by 8 tasks at once: once taken, deciding again would refuse, yet
    // every sender is answered with the original outcome.
    let shows = Repository::<Show, _>::new(store.clone()).with_retry(patient);
    let reservation = Uuid::now_v7();
    let start = Arc::new(Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (shows, start) = (shows.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                shows
                    .execute("S-7", Metadata::new().with_command_id(reservation), |show: &Show| {
                        show.reserve("alice", &[7])
                    })
                    .await
            })
        })
        .collect();
    let mut fresh = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(executed) => {
                fresh += usize::from(!executed.already_stored);
                assert_eq!(executed.version, 1, "{label}");
                assert_eq!(executed.aggregate.taken, BTreeSet::from([7]), "{label}");
            }
            Err(other) => panic!("{label}: a sender of the same request was refused: {other:?}"),
        }
    }
    assert_eq!(fresh, 1, "{label}");
    assert_eq!(shows.load("S-7").await.unwrap().version, 1, "{label}");

    // A reaction to one event by 6 consumers at once: carried out once.
    let source = collect_stream(&store, &acct_stream("I-1"), StreamSlice::all()).await[0].clone();
    let start = Arc::new(Barrier::new(SENDERS));
    let tasks: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (repo, start, source) = (repo.clone(), start.clone(), source.clone());
            tokio::spawn(async move {
                start.wait().await;
                repo.execute("I-REACT", Metadata::in_reaction_to(&source, "bonus"), |acct: &Acct| {
                    acct.deposit(5)
                })
                .await
                .expect("a reaction")
            })
        })
        .collect();
    let mut fresh = 0;
    for task in tasks {
        fresh += usize::from(!task.await.unwrap().already_stored);
    }
    assert_eq!(fresh, 1, "{label}");
    let reactions = collect_stream(&store, &acct_stream("I-REACT"), StreamSlice::all()).await;
    assert_eq!(reactions.len(), 1, "{label}: the reaction applied once");
}

on_sqlite_and_postgres! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    idempotent_commands_sent_at_once_on_sqlite,
    idempotent_commands_sent_at_once_on_postgres: idempotent_commands_sent_at_once
}

// ---------------------------------------------------------------------------------------------
// 4. Projections fed while writers run.
// ---------------------------------------------------------------------------------------------

type Running = (oneshot::Sender<()>, JoinHandle<Result<(), ProjectionError>>);

/// Starts a ledger runner named `runner` (its tag in `ledger_seen`) on `store`.
async fn start_ledger<S: Backend>(store: &S, runner: &'static str, batch_size: usize) -> (ProjectionProgress, Running) {
    let runner = ProjectionRunner::new(Ledger::<S::Ctx>::new(runner), store.clone(), store.ledger_checkpoints())
        .with_options(es_core::RunnerOptions {
            batch_size,
            poll_interval: Duration::from_millis(50),
            ..es_core::RunnerOptions::default()
        });
    let progress = runner.progress();
    let wake = store.wake().await;
    (progress, run_until_stopped(runner, wake))
}

/// What the writers of a projection test did.
#[derive(Debug, Default)]
struct Load {
    /// Positions of every event written, with their ids.
    written: BTreeMap<u64, Uuid>,
    /// Read-your-writes failures: (account, expected balance, balance read).
    stale_reads: Vec<(String, i64, Option<i64>)>,
}

impl Load {
    fn head(&self) -> u64 {
        self.written.keys().next_back().copied().unwrap_or(0)
    }
}

/// `writers` tasks, each `each` commands: on an account of its own (and, with `ryw`, waits for
/// each one's position and reads its balance back) or on a shared hot account. `pause` spaces
/// the commands out so that runners can be stopped and started in between.
async fn run_writers<S: Backend>(
    stores: &[S],
    writers: usize,
    each: usize,
    ryw: Option<ProjectionProgress>,
    pause: Duration,
) -> Load {
    let tasks: Vec<_> = (0..writers)
        .map(|task| {
            let store = stores[task % stores.len()].clone();
            let ryw = ryw.clone();
            tokio::spawn(async move {
                let repo = Repository::<Acct, _>::new(store.clone());
                let own = format!("OWN-{task}");
                let mut load = Load::default();
                for i in 0..each {
                    let shared = i % 3 == 2;
                    let account = if shared { "SHARED".to_owned() } else { own.clone() };
                    let outcome = if i % 4 == 3 && !shared {
                        repo.execute(&account, Metadata::new(), |acct: &Acct| acct.withdraw(1))
                            .await
                    } else {
                        let amount = (task * 1000 + i + 1) as u64;
                        repo.execute(&account, Metadata::new(), |acct: &Acct| {
                            Ok::<_, InsufficientFunds>(acct.deposit(amount))
                        })
                        .await
                    };
                    let executed = match outcome {
                        Ok(executed) => executed,
                        Err(CommandError::Conflict { .. }) => continue,
                        Err(other) => panic!("writer {task}: {other:?}"),
                    };
                    for appended in &executed.appended {
                        load.written.insert(appended.position, appended.event_id);
                    }
                    if let (Some(progress), false) = (&ryw, shared) {
                        progress
                            .wait_for(executed.position(), Duration::from_secs(10))
                            .await
                            .expect("read-your-writes: the runner reaches the command's position");
                        let read = store.balance_of(&own).await;
                        if read != Some(executed.aggregate.balance) {
                            load.stale_reads.push((own.clone(), executed.aggregate.balance, read));
                        }
                    }
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
                load
            })
        })
        .collect();
    let mut load = Load::default();
    for task in tasks {
        let done = task.await.unwrap();
        load.written.extend(done.written);
        load.stale_reads.extend(done.stale_reads);
    }
    load
}

/// The read model against the global log: every account event handled once, in the global
/// order, by runners that took turns (never interleaved), and the balances equal to a fold.
/// Returns the runners in the order they took over.
async fn assert_ledger_matches_the_log<S: Backend>(store: &S, head: u64, label: &str) -> Vec<String> {
    let log = global_log_through(store, head).await;
    let expected: Vec<(u64, String)> = log
        .iter()
        .filter(|record| record.stream.aggregate_type == "acct")
        .map(|record| (record.position, record.event_id.to_string()))
        .collect();
    let seen = store.seen().await;
    let mut positions = BTreeMap::new();
    for row in &seen {
        *positions.entry(row.position).or_insert(0) += 1;
    }
    let twice: Vec<_> = positions.iter().filter(|(_, count)| **count > 1).collect();
    assert!(twice.is_empty(), "{label}: events handled twice: {twice:?}");
    let got: Vec<(u64, String)> = seen.iter().map(|row| (row.position, row.event_id.clone())).collect();
    if got != expected {
        let expected_positions: BTreeSet<u64> = expected.iter().map(|(position, _)| *position).collect();
        let seen_positions: BTreeSet<u64> = positions.keys().copied().collect();
        let missing: Vec<_> = expected_positions.difference(&seen_positions).collect();
        panic!(
            "{label}: the read model saw {} events, the log has {}; missing {missing:?}; \
             in order: {}",
            got.len(),
            expected.len(),
            seen.windows(2).all(|pair| pair[0].position < pair[1].position)
        );
    }
    assert_eq!(
        store.balances().await,
        fold_balances(&log),
        "{label}: balances = fold of the log"
    );
    let mut turns: Vec<String> = Vec::new();
    for row in &seen {
        if turns.last() != Some(&row.runner) {
            assert!(
                !turns.contains(&row.runner),
                "{label}: runners interleaved: {} came back after {turns:?}",
                row.runner
            );
            turns.push(row.runner.clone());
        }
    }
    turns
}

/// Reads the global log from `after` on, page by page, until told to stop, and returns every
/// position it saw, in the order seen.
fn start_tailer<S: Backend>(store: S) -> (Arc<std::sync::atomic::AtomicBool>, JoinHandle<Vec<u64>>) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let tailing = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let stopped = stopping.load(std::sync::atomic::Ordering::SeqCst);
            let page = store.read_all(after, 17).await.expect("read_all");
            if let Some(last) = page.last() {
                after = last.position;
            }
            let empty = page.is_empty();
            seen.extend(page.iter().map(|event| event.position));
            if stopped && empty {
                return seen;
            }
            if empty {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    (stop, tailing)
}

/// On PostgreSQL: writers whose transactions stay open a while after their append, so that
/// transactions commit out of the order of their positions.
async fn slow_postgres_writers(store: &PostgresStore, writers: usize, each: usize) -> BTreeMap<u64, Uuid> {
    let tasks: Vec<_> = (0..writers)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut written = BTreeMap::new();
                let stream = acct_stream(&format!("SLOW-{task}"));
                for i in 0..each {
                    let events = [AcctEvent::from(Deposited { amount: (i + 1) as u64 })];
                    let batch = encode_batch(&stream, &events, &Metadata::new()).unwrap();
                    let event_id = batch[0].event_id;
                    let mut tx = store.pool().begin().await.unwrap();
                    let outcome = store
                        .append_in_transaction(&mut tx, &stream, ExpectedVersion::Exact(i as u64), batch)
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(20 + 15 * ((task + i) % 5) as u64)).await;
                    tx.commit().await.unwrap();
                    store.notify_listeners();
                    written.insert(outcome.positions[0], event_id);
                }
                written
            })
        })
        .collect();
    let mut written = BTreeMap::new();
    for task in tasks {
        written.extend(task.await.unwrap());
    }
    written
}

/// A runner and a tailer of the raw log, fed while 16 writers run (on PostgreSQL also writers
/// whose transactions commit out of order); every write is read back through the read model
/// (read-your-writes). The read model equals the log, handled once and in order, and the
/// tailer saw the whole log in order.
async fn projection_under_load<S: Backend>(store: S, slow: Option<PostgresStore>) {
    let label = S::LABEL;
    store.create_ledger().await;
    let (progress, (stop, running)) = start_ledger(&store, "only", 20).await;
    let (stop_tailer, tailing) = start_tailer(store.clone());
    let slow_writers = slow.map(|pg| tokio::spawn(async move { slow_postgres_writers(&pg, 4, 6).await }));
    // Writers of another aggregate type, which the ledger passes over: waiting for their
    // positions returns too ("handled it, or passed it as an event it does not read").
    let show_writers: Vec<_> = (0..2)
        .map(|task| {
            let (store, progress) = (store.clone(), progress.clone());
            tokio::spawn(async move {
                let shows = Repository::<Show, _>::new(store);
                let mut written = BTreeMap::new();
                for seat in 1..=10 {
                    let executed = shows
                        .execute(&format!("SH-{task}"), Metadata::new(), |show: &Show| {
                            show.reserve("carol", &[seat])
                        })
                        .await
                        .unwrap();
                    written.insert(executed.position(), executed.appended[0].event_id);
                    progress
                        .wait_for(executed.position(), Duration::from_secs(10))
                        .await
                        .expect("waiting for an event the projection does not read");
                }
                written
            })
        })
        .collect();
    let load = run_writers(
        std::slice::from_ref(&store),
        16,
        9,
        Some(progress.clone()),
        Duration::ZERO,
    )
    .await;
    let mut written = load.written.clone();
    for task in show_writers {
        written.extend(task.await.unwrap());
    }
    if let Some(slow_writers) = slow_writers {
        written.extend(slow_writers.await.unwrap());
    }
    let head = written.keys().next_back().copied().unwrap();
    progress.wait_for(head, Duration::from_secs(20)).await.unwrap();
    assert!(
        load.stale_reads.is_empty(),
        "{label}: stale reads: {:?}",
        load.stale_reads
    );
    let turns = assert_ledger_matches_the_log(&store, head, label).await;
    assert_eq!(turns, ["only"], "{label}");

    stop_tailer.store(true, std::sync::atomic::Ordering::SeqCst);
    let tailed = tailing.await.unwrap();
    eprintln!(
        "{label}: projection under load: {} events written, head {head}",
        written.len()
    );
    let log: Vec<u64> = global_log_through(&store, head)
        .await
        .iter()
        .map(|event| event.position)
        .collect();
    assert!(
        tailed.windows(2).all(|pair| pair[0] < pair[1]),
        "{label}: the tailer saw positions out of order or twice"
    );
    let missed: Vec<_> = log.iter().filter(|position| !tailed.contains(position)).collect();
    assert!(missed.is_empty(), "{label}: the tailer skipped {missed:?}");
    assert_eq!(tailed, log, "{label}");
    let written_positions: BTreeSet<u64> = written.keys().copied().collect();
    let logged: BTreeSet<u64> = log.into_iter().collect();
    assert_eq!(written_positions, logged, "{label}: the log is what the writers wrote");

    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn projection_under_load_on_sqlite() {
    on_sqlite(|store| projection_under_load(store, None)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn projection_under_load_on_postgres() {
    on_postgres(|store| {
        let slow = store.clone();
        projection_under_load(store, Some(slow))
    })
    .await
}

/// Two runners of the ledger started at once (on `stores[0]` and `stores[1]`, which may be the
/// same handle) while writers run: only one handles events; the active one is then stopped and
/// the other takes over, without losing or repeating an event.
async fn two_runners_started_at_once<S: Backend>(stores: Vec<S>) {
    let label = S::LABEL;
    let store = stores[0].clone();
    store.create_ledger().await;
    let ((p1, r1), (p2, r2)) = tokio::join!(
        start_ledger(&stores[0], "first", 10),
        start_ledger(&stores[1 % stores.len()], "second", 10)
    );
    let writing = {
        let stores = stores.clone();
        tokio::spawn(async move { run_writers(&stores, 8, 14, None, Duration::from_millis(15)).await })
    };
    // Wait until some events are handled, then see who is active.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let active = loop {
        let seen = store.seen().await;
        if seen.len() >= 20 {
            let runners: BTreeSet<&str> = seen.iter().map(|row| row.runner.as_str()).collect();
            assert_eq!(runners.len(), 1, "{label}: both runners active at once: {runners:?}");
            break seen[0].runner.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{label}: no runner made progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (active_runner, waiting_runner, waiting_progress, waiting_name) = if active == "first" {
        (r1, r2, p2, "second")
    } else {
        (r2, r1, p1, "first")
    };
    assert!(!waiting_runner.1.is_finished(), "{label}: the waiting runner gave up");
    let _ = active_runner.0.send(());
    active_runner.1.await.unwrap().unwrap();
    let load = writing.await.unwrap();
    let head = load.head();
    waiting_progress
        .wait_for(head, Duration::from_secs(20))
        .await
        .expect("the waiting runner takes over");
    let turns = assert_ledger_matches_the_log(&store, head, label).await;
    eprintln!("{label}: two runners: turns {turns:?}");
    assert_eq!(turns.first(), Some(&active), "{label}");
    assert!(turns.len() <= 2, "{label}: {turns:?}");
    if turns.len() == 2 {
        assert_eq!(turns[1], waiting_name, "{label}");
    }
    let _ = waiting_runner.0.send(());
    waiting_runner.1.await.unwrap().unwrap();
}

on_sqlite_and_postgres! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    two_runners_started_at_once_on_sqlite,
    two_runners_started_at_once_on_postgres: |store| two_runners_started_at_once(vec![store])
}

/// A runner stopped gracefully mid-load, a second one cancelled (its task aborted, perhaps
/// mid-batch) mid-load, a third one that finishes: together they handled every event once, in
/// order.
async fn runner_restarted_mid_load<S: Backend>(store: S) {
    let label = S::LABEL;
    store.create_ledger().await;
    let writing = {
        let store = store.clone();
        tokio::spawn(async move { run_writers(&[store], 8, 16, None, Duration::from_millis(12)).await })
    };
    let handled = |at_least: usize| {
        let store = store.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while store.seen().await.len() < at_least {
                assert!(tokio::time::Instant::now() < deadline, "no progress");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let (_, (stop, running)) = start_ledger(&store, "r1", 3).await;
    handled(15).await;
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    let after_first = store.seen().await.len();

    let (_, (_stop, running)) = start_ledger(&store, "r2", 3).await;
    handled(after_first + 15).await;
    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());

    let (progress, (stop, running)) = start_ledger(&store, "r3", 3).await;
    let load = writing.await.unwrap();
    let head = load.head();
    progress.wait_for(head, Duration::from_secs(20)).await.unwrap();
    let turns = assert_ledger_matches_the_log(&store, head, label).await;
    assert_eq!(turns, ["r1", "r2", "r3"], "{label}");
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

on_sqlite_and_postgres! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    runner_restarted_mid_load_on_sqlite,
    runner_restarted_mid_load_on_postgres: runner_restarted_mid_load
}

// ---------------------------------------------------------------------------------------------
// 5. Several store handles writing and projecting at once.
// ---------------------------------------------------------------------------------------------

/// Two handles (a second SQLite connection set on the same file, a second PostgreSQL pool):
/// writers on both and the ledger's runner on each (one active across the handles; the other
/// takes over when it stops); then commands of both handles on the same accounts.
async fn several_handles_at_once<S: Backend>(store: S) {
    let other = store.reopen().await;
    two_runners_started_at_once(vec![store.clone(), other.clone()]).await;

    // And the commands of both handles on the same accounts keep every balance.
    many_accounts_keep_their_balances(other).await;
}

on_sqlite_and_postgres! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    several_handles_at_once_on_sqlite,
    several_handles_at_once_on_postgres: several_handles_at_once
}

// ---------------------------------------------------------------------------------------------
// More of 1 and 3: raw appends expecting any version, load–change–save copies, idempotency
// with snapshots and a cache.
// ---------------------------------------------------------------------------------------------

/// 24 tasks × 8 appends of one event each, started at once, on one stream, straight through
/// `EventStore::append`, expecting `ExpectedVersion::Any` ("append whatever the stream's
/// version (no concurrency check)"): none is refused, the versions have no gap, and each
/// outcome names its stored events.
async fn appends_expecting_any_never_conflict<S: Backend>(store: S) {
    const TASKS: usize = 24;
    const ROUNDS: usize = 8;
    const BATCH: usize = 1;
    let label = S::LABEL;
    let stream = acct_stream("ANY");
    let start = Arc::new(Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (store, start, stream) = (store.clone(), start.clone(), stream.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for round in 0..ROUNDS {
                    let events: Vec<AcctEvent> = (0..BATCH)
                        .map(|i| {
                            Deposited {
                                amount: ((task * ROUNDS + round) * BATCH + i + 1) as u64,
                            }
                            .into()
                        })
                        .collect();
                    let batch = encode_batch(&stream, &events, &Metadata::new()).unwrap();
                    let ids: Vec<Uuid> = batch.iter().map(|event| event.event_id).collect();
                    if round == 0 {
                        start.wait().await;
                    }
                    let outcome = store.append(&stream, ExpectedVersion::Any, batch).await;
                    outcomes.push((ids, outcome));
                }
                outcomes
            })
        })
        .collect();
    // Other work on the same store meanwhile: commands on other streams, as production has.
    let background = {
        let store = store.clone();
        tokio::spawn(async move { run_writers(&[store], 12, 10, None, Duration::ZERO).await })
    };
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.unwrap());
    }
    background.await.unwrap();
    let mut placed = BTreeMap::new();
    let mut refused = Vec::new();
    for (ids, outcome) in outcomes {
        match outcome {
            Ok(outcome) => {
                assert_eq!(outcome.new_version, outcome.previous_version + BATCH as u64, "{label}");
                assert!(!outcome.already_stored, "{label}");
                for ((version, id), position) in (outcome.previous_version + 1..).zip(ids).zip(outcome.positions) {
                    assert!(
                        placed.insert(version, (id, position)).is_none(),
                        "{label}: {version} twice"
                    );
                }
            }
            Err(error) => refused.push(error.to_string()),
        }
    }
    assert!(
        refused.is_empty(),
        "{label}: {} of {} appends expecting any version refused, e.g. {:?}",
        refused.len(),
        TASKS * ROUNDS,
        refused.first()
    );
    let stored = collect_stream(&store, &stream, StreamSlice::all()).await;
    assert_eq!(stored.len(), TASKS * ROUNDS * BATCH, "{label}");
    for event in &stored {
        assert_eq!(
            placed.get(&event.version),
            Some(&(event.event_id, event.position)),
            "{label}: version {}",
            event.version
        );
    }
}

on_sqlite_and_postgres! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    appends_expecting_any_never_conflict_on_sqlite,
    appends_expecting_any_never_conflict_on_postgres: appends_expecting_any_never_conflict
}

/// 10 copies of one account loaded at once and saved at once: with distinct command ids exactly
/// one save wins and the others get `RepositoryError::Conflict` with nothing written; with one
/// command id (the same request handled by 10 workers) every save succeeds, one of them fresh.
async fn copies_saved_at_once<S: Backend>(store: S) {
    const COPIES: usize = 10;
    let label = S::LABEL;
    let repo = Repository::<Acct, _>::new(store.clone());
    repo.execute("LS-1", Metadata::new(), |acct: &Acct| acct.deposit(100))
        .await
        .unwrap();
    for same_request in [false, true] {
        let request = Uuid::now_v7();
        let loaded = Arc::new(Barrier::new(COPIES));
        let tasks: Vec<_> = (0..COPIES)
            .map(|copy| {
                let (repo, loaded) = (repo.clone(), loaded.clone());
                tokio::spawn(async move {
                    let mut acct = repo.load_for_update("LS-1").await.unwrap();
                    acct.decide(|acct: &Acct| acct.withdraw(10 + copy as u64)).unwrap();
                    loaded.wait().await;
                    let metadata = match same_request {
                        true => Metadata::new().with_command_id(request),
                        false => Metadata::new(),
                    };
                    repo.save(&mut acct, metadata).await
                })
            })
            .collect();
        let (mut fresh, mut repeated, mut conflicts) = (0, 0, 0);
        let mut saved_versions = BTreeSet::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(saved) if saved.already_stored => {
                    repeated += 1;
                    saved_versions.insert(saved.version);
                }
                Ok(saved) => {
                    fresh += 1;
                    saved_versions.insert(saved.version);
                }
                Err(es_core::RepositoryError::Conflict(conflict)) => {
                    assert_eq!(conflict.stream, acct_stream("LS-1"), "{label}");
                    conflicts += 1;
                }
                Err(other) => panic!("{label}: unexpected error: {other:?}"),
            }
        }
        let stored = collect_stream(&store, &acct_stream("LS-1"), StreamSlice::all()).await;
        if same_request {
            assert_eq!(
                (fresh, repeated, conflicts),
                (1, COPIES - 1, 0),
                "{label}: the same request saved by every copy"
            );
            assert_eq!(saved_versions.len(), 1, "{label}: all answers describe one save");
            assert_eq!(stored.len(), 3, "{label}: saved once");
        } else {
            assert_eq!((fresh, repeated, conflicts), (1, 0, COPIES - 1), "{label}");
            assert_eq!(stored.len(), 2, "{label}: the losers wrote nothing");
        }
    }
}

on_sqlite_and_postgres! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    copies_saved_at_once_on_sqlite,
    copies_saved_at_once_on_postgres: copies_saved_at_once
}

/// Idempotent commands sent at once through repositories that snapshot every 2 events and
/// cache states (two of them, as two processes): each command applied once, and each answer
/// describes the state right after the command, not a later snapshot's. Then a new aggregate
/// created (`Repository::create`) by 8 senders of one request at once.
async fn idempotent_commands_with_snapshots_and_caches<S: Backend>(store: S) {
    const COMMANDS: usize = 8;
    const SENDERS: usize = 5;
    let label = S::LABEL;
    let patient = RetryPolicy::default()
        .with_max_attempts(40)
        .with_max_elapsed(Duration::from_secs(20));
    let first = Repository::<Acct, _>::new(store.clone())
        .with_retry(patient)
        .with_snapshot_every(2)
        .with_cache(16);
    let second = Repository::<Acct, _>::new(store.reopen().await)
        .with_retry(patient)
        .with_snapshot_every(2)
        .with_cache(16);
    let ids: Vec<Uuid> = (0..COMMANDS).map(|_| Uuid::now_v7()).collect();
    let start = Arc::new(Barrier::new(COMMANDS * SENDERS));
    let mut tasks = Vec::new();
    for (command, &id) in ids.iter().enumerate() {
        for sender in 0..SENDERS {
            let repo = if sender % 2 == 0 { first.clone() } else { second.clone() };
            let start = start.clone();
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let amount = 1 << command;
                let outcome = repo
                    .execute("IS-1", Metadata::new().with_command_id(id), |acct: &Acct| {
                        acct.deposit(amount)
                    })
                    .await;
                (id, outcome.expect("a sender's answer"))
            }));
        }
    }
    let mut answers: BTreeMap<Uuid, Vec<Executed<Acct>>> = BTreeMap::new();
    for task in tasks {
        let (id, executed) = task.await.unwrap();
        answers.entry(id).or_default().push(executed);
    }
    let plain = Repository::<Acct, _>::new(store.clone());
    let stored = collect_stream(&store, &acct_stream("IS-1"), StreamSlice::all()).await;
    assert_eq!(stored.len(), COMMANDS, "{label}: each command applied once");
    for answers in answers.values() {
        let fresh = answers.iter().filter(|executed| !executed.already_stored).count();
        assert_eq!(fresh, 1, "{label}: exactly one sender carried the command out");
        for executed in answers {
            let truth = plain.load_at_version("IS-1", executed.version).await.unwrap();
            assert_eq!(
                executed.aggregate, truth.aggregate,
                "{label}: the answer (already_stored: {}) gives the state at version {}",
                executed.already_stored, executed.version
            );
        }
    }
    assert_eq!(
        first.load("IS-1").await.unwrap().aggregate.balance,
        (1 << COMMANDS) - 1,
        "{label}"
    );

    // One request creating a new show, sent by 8 senders at once.
    let shows = Repository::<Show, _>::new(store.clone()).with_retry(patient);
    let request = Uuid::now_v7();
    let start = Arc::new(Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (shows, start) = (shows.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                shows
                    .create("NEW-1", Metadata::new().with_command_id(request), |show: &Show| {
                        show.reserve("bob", &[1, 2])
                    })
                    .await
            })
        })
        .collect();
    let mut fresh = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(executed) => {
                fresh += usize::from(!executed.already_stored);
                assert_eq!(executed.version, 1, "{label}");
            }
            Err(other) => panic!("{label}: a sender of the same creation was refused: {other:?}"),
        }
    }
    assert_eq!(fresh, 1, "{label}");
    assert_eq!(shows.load("NEW-1").await.unwrap().version, 1, "{label}");
}

on_sqlite_and_postgres! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    idempotent_commands_with_snapshots_and_caches_on_sqlite,
    idempotent_commands_with_snapshots_and_caches_on_postgres: idempotent_commands_with_snapshots_and_caches
}

// ---------------------------------------------------------------------------------------------
// More of 4: a rebuild while writers run, concurrent catch-ups, repeated cancellations.
// ---------------------------------------------------------------------------------------------

/// A runner handles part of the load, stops; a rebuild runs while the writers go on; a new
/// runner follows: the model is the log, once, and in order.
async fn rebuild_while_writers_run<S: Backend>(store: S) {
    let label = S::LABEL;
    store.create_ledger().await;
    let writing = {
        let store = store.clone();
        tokio::spawn(async move { run_writers(&[store], 8, 14, None, Duration::from_millis(10)).await })
    };
    let (_, (stop, running)) = start_ledger(&store, "before", 10).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.seen().await.len() < 20 {
        assert!(tokio::time::Instant::now() < deadline, "{label}: no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(());
    running.await.unwrap().unwrap();

    let rebuilder = ProjectionRunner::new(
        Ledger::<S::Ctx>::new("rebuild"),
        store.clone(),
        store.ledger_checkpoints(),
    )
    .with_options(es_core::RunnerOptions {
        batch_size: 7,
        ..es_core::RunnerOptions::default()
    });
    let rebuilt = rebuilder.rebuild(|_| {}).await.unwrap();
    assert!(rebuilt.handled >= 20, "{label}: {rebuilt:?}");

    let (progress, (stop, running)) = start_ledger(&store, "after", 10).await;
    let load = writing.await.unwrap();
    progress.wait_for(load.head(), Duration::from_secs(20)).await.unwrap();
    let turns = assert_ledger_matches_the_log(&store, load.head(), label).await;
    assert_eq!(turns.first().map(String::as_str), Some("rebuild"), "{label}: {turns:?}");
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

on_sqlite_and_postgres! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    rebuild_while_writers_run_on_sqlite,
    rebuild_while_writers_run_on_postgres: rebuild_while_writers_run
}

/// Four `catch_up` calls of the ledger at once, again and again while writers run (each waits
/// for the others' claims), then one last catch-up: every event handled once, in order.
async fn concurrent_catch_ups<S: Backend>(store: S) {
    let label = S::LABEL;
    store.create_ledger().await;
    let writing = {
        let store = store.clone();
        tokio::spawn(async move { run_writers(&[store], 8, 10, None, Duration::from_millis(5)).await })
    };
    let names = ["c0", "c1", "c2", "c3"];
    let catching: Vec<_> = names
        .into_iter()
        .map(|name| {
            let store = store.clone();
            tokio::spawn(async move {
                let runner =
                    ProjectionRunner::new(Ledger::<S::Ctx>::new(name), store.clone(), store.ledger_checkpoints())
                        .with_options(es_core::RunnerOptions {
                            batch_size: 5,
                            ..es_core::RunnerOptions::default()
                        });
                for _ in 0..6 {
                    runner.catch_up().await.expect("a catch-up");
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
            })
        })
        .collect();
    for task in catching {
        task.await.unwrap();
    }
    let load = writing.await.unwrap();
    let last = ProjectionRunner::new(Ledger::<S::Ctx>::new("last"), store.clone(), store.ledger_checkpoints());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while last.catch_up().await.unwrap().position < load.head() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{label}: the head is not reached"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Catch-ups take turns (and may come back): check the log once, in order.
    let log = global_log_through(&store, load.head()).await;
    let expected: Vec<u64> = log
        .iter()
        .filter(|record| record.stream.aggregate_type == "acct")
        .map(|record| record.position)
        .collect();
    let seen: Vec<u64> = store.seen().await.iter().map(|row| row.position).collect();
    assert_eq!(seen, expected, "{label}: each event once, in order");
    assert_eq!(store.balances().await, fold_balances(&log), "{label}");
}

on_sqlite_and_postgres! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    concurrent_catch_ups_on_sqlite,
    concurrent_catch_ups_on_postgres: concurrent_catch_ups
}

/// Runners cancelled (their tasks aborted) at random moments, six times, with batches of two
/// events, while writers run; a last runner finishes: every event handled once, in order.
async fn runners_cancelled_again_and_again<S: Backend>(store: S) {
    let label = S::LABEL;
    store.create_ledger().await;
    let writing = {
        let store = store.clone();
        tokio::spawn(async move { run_writers(&[store], 8, 14, None, Duration::from_millis(8)).await })
    };
    let names = ["x0", "x1", "x2", "x3", "x4", "x5"];
    let mut rng = Lcg(7);
    for name in names {
        let (_, (_stop, running)) = start_ledger(&store, name, 2).await;
        tokio::time::sleep(Duration::from_millis(20 + rng.next(60))).await;
        running.abort();
        let _ = running.await;
    }
    let (progress, (stop, running)) = start_ledger(&store, "final", 10).await;
    let load = writing.await.unwrap();
    progress.wait_for(load.head(), Duration::from_secs(20)).await.unwrap();
    let log = global_log_through(&store, load.head()).await;
    let expected: Vec<u64> = log
        .iter()
        .filter(|record| record.stream.aggregate_type == "acct")
        .map(|record| record.position)
        .collect();
    let seen: Vec<u64> = store.seen().await.iter().map(|row| row.position).collect();
    assert_eq!(seen, expected, "{label}: each event once, in order");
    assert_eq!(store.balances().await, fold_balances(&log), "{label}");
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

on_sqlite_and_postgres! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    runners_cancelled_again_and_again_on_sqlite,
    runners_cancelled_again_and_again_on_postgres: runners_cancelled_again_and_again
}

/// Read-your-writes from another handle that does not run the projection: writers on the
/// second handle wait with `wait_for_checkpoint` on its own checkpoint store, then read their
/// balance through it.
async fn read_your_writes_from_another_handle<S: Backend>(store: S) {
    let label = S::LABEL;
    store.create_ledger().await;
    let other = store.reopen().await;
    let (_, (stop, running)) = start_ledger(&store, "only", 10).await;
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let other = other.clone();
            tokio::spawn(async move {
                let repo = Repository::<Acct, _>::new(other.clone());
                let checkpoints = other.ledger_checkpoints();
                let account = format!("RYW-{task}");
                let mut stale = Vec::new();
                for i in 0..8 {
                    let executed = repo
                        .execute(&account, Metadata::new(), |acct: &Acct| acct.deposit(i + 1))
                        .await
                        .unwrap();
                    es_core::wait_for_checkpoint(
                        &checkpoints,
                        "ledger",
                        executed.position(),
                        Duration::from_millis(5),
                        Duration::from_secs(10),
                    )
                    .await
                    .expect("the checkpoint reaches the command");
                    let read = other.balance_of(&account).await;
                    if read != Some(executed.aggregate.balance) {
                        stale.push((account.clone(), executed.aggregate.balance, read));
                    }
                }
                stale
            })
        })
        .collect();
    let mut stale = Vec::new();
    for task in tasks {
        stale.extend(task.await.unwrap());
    }
    assert!(stale.is_empty(), "{label}: stale reads: {stale:?}");
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

on_sqlite_and_postgres! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    read_your_writes_from_another_handle_on_sqlite,
    read_your_writes_from_another_handle_on_postgres: read_your_writes_from_another_handle
}

// ---------------------------------------------------------------------------------------------
// Time travel by instant under concurrent writers.
// ---------------------------------------------------------------------------------------------

/// 16 writers on 4 accounts through two handles: within each stream, `recorded_at` never goes
/// back (what time travel by instant rests on: "the longest prefix of the stream recorded by
/// then"), and loading at each event's instant gives at least that event's version; on SQLite
/// the global log's times do not go back either ("never earlier than the last stored event's":
/// time travel by instant agrees with the global order).
async fn recorded_at_follows_the_order<S: Backend>(store: S) {
    let label = S::LABEL;
    let stores = [store.clone(), store.reopen().await];
    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let repo = Repository::<Acct, _>::new(stores[task % 2].clone());
            tokio::spawn(async move {
                let mut head = 0;
                for i in 0..10 {
                    let account = format!("T-{}", (task + i) % 4);
                    if let Ok(executed) = repo
                        .execute(&account, Metadata::new(), |acct: &Acct| acct.deposit(1))
                        .await
                    {
                        head = head.max(executed.position());
                    }
                }
                head
            })
        })
        .collect();
    let mut head = 0;
    for task in tasks {
        head = head.max(task.await.unwrap());
    }
    let repo = Repository::<Acct, _>::new(store.clone());
    for account in 0..4 {
        let account = format!("T-{account}");
        let stored = collect_stream(&store, &acct_stream(&account), StreamSlice::all()).await;
        for pair in stored.windows(2) {
            assert!(
                pair[0].recorded_at <= pair[1].recorded_at,
                "{label}: {account}: version {} recorded at {} after version {} at {}",
                pair[1].version,
                pair[1].recorded_at,
                pair[0].version,
                pair[0].recorded_at
            );
        }
        for event in &stored {
            let at = repo.load_at_instant(&account, event.recorded_at).await.unwrap();
            assert!(
                at.version >= event.version,
                "{label}: {account}: at the instant of version {} the state is at version {}",
                event.version,
                at.version
            );
        }
    }
    if S::LABEL == "sqlite" {
        let log = global_log_through(&store, head).await;
        for pair in log.windows(2) {
            assert!(
                pair[0].recorded_at <= pair[1].recorded_at,
                "{label}: position {} recorded before position {}",
                pair[1].position,
                pair[0].position
            );
        }
    }
}

on_sqlite_and_postgres! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    recorded_at_follows_the_order_on_sqlite,
    recorded_at_follows_the_order_on_postgres: recorded_at_follows_the_order
}
