//! An outside user's review of the patterns of the design seeds, on both durable backends
//! (SQLite and PostgreSQL), through the public API only:
//!
//! - seed 001: an Account (deposits, withdrawals, overdraft refused as a typed domain error),
//!   snapshots every N events, time travel to a version and to an instant, a failed withdrawal
//!   recorded so that "why did it fail on the 15th, and what was the balance then" has an
//!   answer, and a projection added later that replays the whole history;
//! - seed 002: optimistic concurrency (racing withdrawals, a typed conflict), seat reservation
//!   with buyers racing for the last seats, idempotent consumers, a compensating saga, the
//!   transactional outbox;
//! - seed 003: correlation and causation ids, read-your-writes on a projection, upcasting of
//!   events stored at an older schema version.
//!
//! Each scenario runs on a SQLite file in a temporary directory and on a fresh PostgreSQL schema
//! (`es_test_support`), both removed when the test ends.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use es_core::{
    async_trait, encode_batch, event, wait_for_checkpoint, Aggregate, AppendOutcome, Apply, CommandError, DecodeError,
    DecodedEvent, EventDescriptor, EventSet, EventStore, Executed, ExpectedVersion, GlobalLog, HandlerError,
    InMemoryReadModel, Metadata, NewEvent, Projection, ProjectionRunner, Repository, RepositoryError, RetryPolicy,
    Snapshot, SnapshotStore, StoreError, StreamId, StreamSlice, UpcastError,
};
use es_postgres::PostgresStore;
use es_sqlite::{SqliteContext, SqliteStore};
use es_test_support::{bounded, TestDatabase, TEST_BOUND};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Barrier;
use uuid::Uuid;

#[path = "support/review/mod.rs"]
mod review;

use review::running::{catch_up_to, run_until_stopped};
use review::stores::{json_object, postgres, raw_event, sqlite_in, NumberColumn};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

// ---------------------------------------------------------------------------------------------
// Seed 001 (and 003): the bank Account.
// ---------------------------------------------------------------------------------------------

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct AccountOpened {
    pub owner_id: String,
    pub initial_balance: u64,
}

/// Version 2 added `source` (seed 003, "problem 1": older deposits had none).
#[event(version = 2)]
#[upcast(from = 1, json = deposited_v1_add_source)]
#[derive(Debug, Clone, PartialEq)]
pub struct MoneyDeposited {
    pub amount: u64,
    pub description: String,
    pub source: String,
}

fn deposited_v1_add_source(mut v1: Value) -> Result<Value, UpcastError> {
    json_object(&mut v1)?
        .entry("source")
        .or_insert_with(|| "unknown".into());
    Ok(v1)
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct MoneyWithdrawn {
    pub amount: u64,
    pub description: String,
}

/// Seed 001: "'MoneyWithdrawn 실패' 이벤트도 기록되어 있어서 왜 실패했는지도 추적 가능해요."
#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct WithdrawalDeclined {
    pub amount: u64,
    pub balance: u64,
    pub reason: String,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum AccountEvent {
    Opened(AccountOpened),
    Deposited(MoneyDeposited),
    Withdrawn(MoneyWithdrawn),
    Declined(WithdrawalDeclined),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "account", event = AccountEvent)]
pub struct Account {
    pub open: bool,
    pub owner_id: String,
    pub balance: u64,
    pub transactions: u32,
    pub declined: u32,
    pub last_source: String,
}

impl Apply<AccountOpened> for Account {
    fn apply(&mut self, event: &AccountOpened) {
        self.open = true;
        self.owner_id = event.owner_id.clone();
        self.balance = event.initial_balance;
    }
}
impl Apply<MoneyDeposited> for Account {
    fn apply(&mut self, event: &MoneyDeposited) {
        self.balance += event.amount;
        self.transactions += 1;
        self.last_source = event.source.clone();
    }
}
impl Apply<MoneyWithdrawn> for Account {
    fn apply(&mut self, event: &MoneyWithdrawn) {
        self.balance -= event.amount;
        self.transactions += 1;
    }
}
impl Apply<WithdrawalDeclined> for Account {
    fn apply(&mut self, _: &WithdrawalDeclined) {
        self.declined += 1;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("the account already exists")]
    AlreadyOpen,
    #[error("the account is not open")]
    NotOpen,
    #[error("the amount must be positive")]
    NonPositiveAmount,
    #[error("a deposit is at most 1,000,000")]
    DepositLimit,
    #[error("insufficient funds: balance {balance}, requested {requested}")]
    InsufficientFunds { balance: u64, requested: u64 },
}

impl Account {
    fn open(&self, owner: &str, initial_balance: u64) -> Result<Vec<AccountEvent>, AccountError> {
        if self.open {
            return Err(AccountError::AlreadyOpen);
        }
        Ok(vec![AccountOpened {
            owner_id: owner.into(),
            initial_balance,
        }
        .into()])
    }

    /// The rules a deposit and a withdrawal share: the account is open, the amount positive.
    fn check_movement(&self, amount: u64) -> Result<(), AccountError> {
        if !self.open {
            return Err(AccountError::NotOpen);
        }
        if amount == 0 {
            return Err(AccountError::NonPositiveAmount);
        }
        Ok(())
    }

    fn deposit(&self, amount: u64, description: &str) -> Result<Vec<AccountEvent>, AccountError> {
        self.check_movement(amount)?;
        if amount > 1_000_000 {
            return Err(AccountError::DepositLimit);
        }
        Ok(vec![MoneyDeposited {
            amount,
            description: description.into(),
            source: "bank_transfer".into(),
        }
        .into()])
    }

    fn withdraw(&self, amount: u64, description: &str) -> Result<Vec<AccountEvent>, AccountError> {
        self.check_movement(amount)?;
        if self.balance < amount {
            return Err(AccountError::InsufficientFunds {
                balance: self.balance,
                requested: amount,
            });
        }
        Ok(vec![MoneyWithdrawn {
            amount,
            description: description.into(),
        }
        .into()])
    }

    /// A withdrawal whose refusal is a fact worth keeping: insufficient funds record a
    /// `WithdrawalDeclined` instead of writing nothing.
    fn withdraw_or_decline(&self, amount: u64, description: &str) -> Result<Vec<AccountEvent>, AccountError> {
        match self.withdraw(amount, description) {
            Err(AccountError::InsufficientFunds { balance, requested }) => Ok(vec![WithdrawalDeclined {
                amount: requested,
                balance,
                reason: "insufficient funds".into(),
            }
            .into()]),
            other => other,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Seed 002: the conference's seat availability.
// ---------------------------------------------------------------------------------------------

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct ConferenceScheduled {
    pub seats: u32,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct SeatsReserved {
    pub reservation: String,
    pub seats: u32,
    pub payer: String,
    pub price_per_seat: u64,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct ReservationCancelled {
    pub reservation: String,
    pub reason: String,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum SeatEvent {
    Scheduled(ConferenceScheduled),
    Reserved(SeatsReserved),
    Cancelled(ReservationCancelled),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "seat-availability", event = SeatEvent)]
pub struct SeatAvailability {
    pub capacity: u32,
    pub held: BTreeMap<String, u32>,
    pub cancelled: Vec<String>,
}

impl Apply<ConferenceScheduled> for SeatAvailability {
    fn apply(&mut self, event: &ConferenceScheduled) {
        self.capacity = event.seats;
    }
}
impl Apply<SeatsReserved> for SeatAvailability {
    fn apply(&mut self, event: &SeatsReserved) {
        self.held.insert(event.reservation.clone(), event.seats);
    }
}
impl Apply<ReservationCancelled> for SeatAvailability {
    fn apply(&mut self, event: &ReservationCancelled) {
        self.held.remove(&event.reservation);
        self.cancelled.push(event.reservation.clone());
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeatError {
    #[error("the conference is not scheduled")]
    NotScheduled,
    #[error("the conference is already scheduled")]
    AlreadyScheduled,
    #[error("sold out: {available} seats left, {requested} requested")]
    SoldOut { available: u32, requested: u32 },
    #[error("reservation {0} exists")]
    DuplicateReservation(String),
    #[error("no reservation {0} is held")]
    UnknownReservation(String),
}

impl SeatAvailability {
    fn available(&self) -> u32 {
        self.capacity - self.held.values().sum::<u32>()
    }

    fn schedule(&self, seats: u32) -> Result<Vec<SeatEvent>, SeatError> {
        if self.capacity > 0 {
            return Err(SeatError::AlreadyScheduled);
        }
        Ok(vec![ConferenceScheduled { seats }.into()])
    }

    fn reserve(&self, reservation: &str, seats: u32, payer: &str, price: u64) -> Result<Vec<SeatEvent>, SeatError> {
        if self.capacity == 0 {
            return Err(SeatError::NotScheduled);
        }
        if self.held.contains_key(reservation) || self.cancelled.iter().any(|r| r == reservation) {
            return Err(SeatError::DuplicateReservation(reservation.into()));
        }
        if self.available() < seats {
            return Err(SeatError::SoldOut {
                available: self.available(),
                requested: seats,
            });
        }
        Ok(vec![SeatsReserved {
            reservation: reservation.into(),
            seats,
            payer: payer.into(),
            price_per_seat: price,
        }
        .into()])
    }

    fn cancel(&self, reservation: &str, reason: &str) -> Result<Vec<SeatEvent>, SeatError> {
        if !self.held.contains_key(reservation) {
            return Err(SeatError::UnknownReservation(reservation.into()));
        }
        Ok(vec![ReservationCancelled {
            reservation: reservation.into(),
            reason: reason.into(),
        }
        .into()])
    }
}

// ---------------------------------------------------------------------------------------------
// Provisioning: a SQLite file in a temporary directory, a fresh PostgreSQL schema.
// ---------------------------------------------------------------------------------------------

/// What the generic scenarios need of a store.
trait Store: EventStore + SnapshotStore + GlobalLog + Clone + Send + Sync + 'static {}
impl<T: EventStore + SnapshotStore + GlobalLog + Clone + Send + Sync + 'static> Store for T {}

/// Another handle on the same store, as another process would open it: a second SQLite
/// connection set on the same file, a second PostgreSQL pool on the same schema.
trait Reopen: Sized {
    fn reopen(&self) -> impl std::future::Future<Output = Self> + Send;
}

impl Reopen for SqliteStore {
    fn reopen(&self) -> impl std::future::Future<Output = Self> + Send {
        let path = self.path().to_owned();
        async move { SqliteStore::open(path).await.expect("open again") }
    }
}

impl Reopen for PostgresStore {
    fn reopen(&self) -> impl std::future::Future<Output = Self> + Send {
        let schema = self.schema().to_owned();
        async move {
            PostgresStore::connect(TestDatabase::get().unwrap().url())
                .await
                .expect("connect again")
                .with_schema(&schema)
                .unwrap()
        }
    }
}

/// The event `event_id` as the global log returns it, once the log shows it (on PostgreSQL,
/// once every older write transaction of the cluster has ended).
async fn from_the_global_log<S: Store>(store: &S, event_id: Uuid) -> es_core::RecordedEvent {
    loop {
        let page = store.read_all(0, 1000).await.unwrap();
        if let Some(event) = page.into_iter().find(|e| e.event_id == event_id) {
            return event;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn stream_id_of(account: &str) -> StreamId {
    StreamId::new(<Account as Aggregate>::TYPE, account)
}

fn accounts<S: Store>(store: &S) -> Repository<Account, S> {
    Repository::new(store.clone())
}

async fn open_account<S: Store>(repo: &Repository<Account, S>, id: &str, balance: u64) -> Executed<Account> {
    repo.create(id, Metadata::new().with_actor("teller"), |a: &Account| {
        a.open("owner", balance)
    })
    .await
    .expect("opened")
}

async fn deposit<S: Store>(repo: &Repository<Account, S>, id: &str, amount: u64) -> Executed<Account> {
    repo.execute(id, Metadata::new(), |a: &Account| a.deposit(amount, "deposit"))
        .await
        .expect("deposited")
}

/// Checks that account `id` loads at `version` with `balance`.
async fn assert_account<S: Store>(
    repo: &Repository<Account, S>,
    id: &str,
    (version, balance): (u64, u64),
    context: &str,
) {
    let loaded = repo
        .load(id)
        .await
        .unwrap_or_else(|error| panic!("{context}: loading {id}: {error}"));
    assert_eq!(
        (loaded.version, loaded.aggregate.balance),
        (version, balance),
        "{context}: account {id} (version, balance)"
    );
}

/// The seat availability of conferences, on `store`.
fn conferences<S: Store>(store: &S) -> Repository<SeatAvailability, S> {
    Repository::new(store.clone())
}

/// Schedules the conference `CONF` with `capacity` seats.
async fn schedule_conference<S: Store>(
    seats: &Repository<SeatAvailability, S>,
    capacity: u32,
) -> Executed<SeatAvailability> {
    seats
        .create("CONF", Metadata::new(), |s: &SeatAvailability| s.schedule(capacity))
        .await
        .expect("scheduled")
}

/// Reserves `count` seats of `CONF` at 100 each for `payer`, as a command with `metadata`.
async fn reserve<S: Store>(
    seats: &Repository<SeatAvailability, S>,
    reservation: &str,
    count: u32,
    payer: &str,
    metadata: Metadata,
) -> Executed<SeatAvailability> {
    seats
        .execute("CONF", metadata, |s: &SeatAvailability| {
            s.reserve(reservation, count, payer, 100)
        })
        .await
        .expect("reserved")
}

/// The latest snapshot of `stream`, if one was taken.
async fn latest_snapshot<S: Store>(store: &S, stream: &StreamId) -> Option<Snapshot> {
    store.load_snapshot(stream).await.expect("a snapshot read")
}

/// The first event `executed` appended, as the store reads it back by id.
async fn first_stored<S: Store, A: Aggregate>(store: &S, executed: &Executed<A>) -> es_core::RecordedEvent {
    store
        .read_event(executed.appended[0].event_id)
        .await
        .expect("read by id")
        .expect("stored")
}

/// Appends `events` to the new stream `stream`, as another program or an older release stored them.
async fn append_raw<S: Store>(store: &S, stream: &StreamId, events: Vec<NewEvent>) {
    store
        .append(stream, ExpectedVersion::NoStream, events)
        .await
        .expect("appended");
}

/// Runs each of `commands` in a task of its own, all at once; their outcomes, in order.
async fn concurrently<T, F>(commands: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let tasks: Vec<_> = commands.into_iter().map(tokio::spawn).collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("the task ran"));
    }
    outcomes
}

/// One side of a forced race: a command whose first decision waits at `gate` (after its load),
/// so that both sides decide on the same version before either appends.
enum Op {
    Withdraw(u64),
    Deposit(u64),
}

async fn race_two<S: Store>(
    repos: [&Repository<Account, S>; 2],
    id: &str,
    ops: [Op; 2],
) -> Vec<Result<Executed<Account>, CommandError<AccountError>>> {
    let gate = Arc::new(Barrier::new(2));
    concurrently(repos.into_iter().zip(ops).map(|(repo, op)| {
        let repo = repo.clone();
        let id = id.to_owned();
        let gate = Arc::clone(&gate);
        let tries = Arc::new(AtomicU32::new(0));
        async move {
            repo.execute_async(&id, Metadata::new(), move |account: &Account| {
                let first = tries.fetch_add(1, Ordering::SeqCst) == 0;
                let gate = Arc::clone(&gate);
                let decision = match op {
                    Op::Withdraw(amount) => account.withdraw(amount, "atm"),
                    Op::Deposit(amount) => account.deposit(amount, "counter"),
                };
                Box::pin(async move {
                    if first {
                        gate.wait().await;
                    }
                    decision
                })
            })
            .await
        }
    }))
    .await
}

// ---------------------------------------------------------------------------------------------
// Seed 001: domain rules, time travel, snapshots.
// ---------------------------------------------------------------------------------------------

async fn overdraft_scenario<S: Store>(store: S, backend: &str) {
    let repo = accounts(&store);
    let stream = Repository::<Account, S>::stream_id("A-1");

    // A command on an account that was never opened is refused, and writes nothing.
    let early = repo
        .execute("A-1", Metadata::new(), |a: &Account| a.deposit(10, "x"))
        .await;
    assert!(
        matches!(early, Err(CommandError::Rejected(AccountError::NotOpen))),
        "{backend}: {early:?}"
    );
    assert_eq!(store.stream_version(&stream).await.unwrap(), 0, "{backend}");

    open_account(&repo, "A-1", 100).await;
    deposit(&repo, "A-1", 50).await;

    let refused = repo
        .execute("A-1", Metadata::new(), |a: &Account| a.withdraw(151, "rent"))
        .await;
    match refused {
        Err(CommandError::Rejected(AccountError::InsufficientFunds { balance, requested })) => {
            assert_eq!((balance, requested), (150, 151), "{backend}: the refusal says why");
        }
        other => panic!("{backend}: expected an overdraft refusal, got {other:?}"),
    }
    for (amount, expected) in [
        (0, AccountError::NonPositiveAmount),
        (1_000_001, AccountError::DepositLimit),
    ] {
        let refused = repo
            .execute("A-1", Metadata::new(), |a: &Account| a.deposit(amount, "x"))
            .await;
        assert!(
            matches!(&refused, Err(CommandError::Rejected(error)) if *error == expected),
            "{backend}: {refused:?}"
        );
    }
    // The refusals wrote nothing: the stream is at version 2, the balance untouched.
    assert_eq!(store.stream_version(&stream).await.unwrap(), 2, "{backend}");
    assert_account(&repo, "A-1", (2, 150), backend).await;

    // Withdrawing exactly the balance is fine; a cent more is not.
    let emptied = repo
        .execute("A-1", Metadata::new(), |a: &Account| a.withdraw(150, "all"))
        .await
        .unwrap();
    assert_eq!((emptied.version, emptied.aggregate.balance), (3, 0), "{backend}");

    // Load–change–save refuses the same way, recording nothing.
    let mut account = repo.load_for_update("A-1").await.unwrap();
    let refused = account.decide(|a: &Account| a.withdraw(1, "x")).map(|_| ());
    assert_eq!(
        refused,
        Err(AccountError::InsufficientFunds {
            balance: 0,
            requested: 1
        }),
        "{backend}"
    );
    assert!(account.pending().is_empty(), "{backend}: a refusal records nothing");
}

/// Seed 001's PM: "the customer asks why their withdrawal failed on the 15th: what was the
/// balance then?" The decline is recorded as an event, and time travel to an instant shows the
/// balance as it was, with snapshots taken on the way (which must not leak later events).
async fn time_travel_scenario<S: Store>(store: S, backend: &str) {
    let repo = accounts(&store).with_snapshot_every(2);
    let pause = || tokio::time::sleep(Duration::from_millis(60));

    let before_open = Utc::now();
    pause().await;
    open_account(&repo, "A-7", 1000).await; // v1: 1000
    deposit(&repo, "A-7", 500).await; // v2: 1500 (snapshot at 2)
    pause().await;
    let after_deposit = Utc::now();
    pause().await;
    repo.execute("A-7", Metadata::new(), |a: &Account| a.withdraw(1200, "car"))
        .await
        .unwrap(); // v3: 300
    let declined = repo
        .execute("A-7", Metadata::new(), |a: &Account| a.withdraw_or_decline(500, "rent"))
        .await
        .unwrap(); // v4: 300, declined (snapshot at 4)
    assert!(matches!(declined.events[..], [AccountEvent::Declined(_)]), "{backend}");
    pause().await;
    let the_15th = Utc::now();
    pause().await;
    deposit(&repo, "A-7", 100).await; // v5: 400
    deposit(&repo, "A-7", 100).await; // v6: 500 (snapshot at 6)

    let then = repo.load_at_instant("A-7", the_15th).await.unwrap();
    assert_eq!(
        (then.version, then.aggregate.balance, then.aggregate.declined),
        (4, 300, 1),
        "{backend}"
    );
    let earlier = repo.load_at_instant("A-7", after_deposit).await.unwrap();
    assert_eq!((earlier.version, earlier.aggregate.balance), (2, 1500), "{backend}");
    assert_eq!(repo.load_at_version("A-7", 0).await.unwrap().version, 0, "{backend}");
    let nothing = repo.load_at_instant("A-7", before_open).await.unwrap();
    assert_eq!(
        nothing,
        es_core::Versioned {
            aggregate: Account::default(),
            version: 0
        },
        "{backend}"
    );

    // By version, below and above the latest snapshot, and past the head.
    for (version, balance) in [(1, 1000), (3, 300), (5, 400), (6, 500)] {
        let at = repo.load_at_version("A-7", version).await.unwrap();
        assert_eq!(
            (at.version, at.aggregate.balance),
            (version, balance),
            "{backend}: version {version}"
        );
    }
    // "At or before" an instant: the event recorded at that very instant is in, a microsecond
    // earlier it is not.
    let all = repo.events("A-7", StreamSlice::all()).await.unwrap();
    for event in &all {
        let (instant, version) = (event.envelope.recorded_at, event.envelope.version);
        let just_before = instant - chrono::Duration::microseconds(1);
        for (when, what) in [(instant, "at the instant of"), (just_before, "just before")] {
            let expected = all.iter().filter(|e| e.envelope.recorded_at <= when).count() as u64;
            let at = repo.load_at_instant("A-7", when).await.unwrap();
            assert_eq!(at.version, expected, "{backend}: {what} version {version}");
        }
    }
    let past_head = repo.load_at_version("A-7", 99).await.unwrap();
    assert_eq!((past_head.version, past_head.aggregate.balance), (6, 500), "{backend}");

    // And why it failed: the events up to that instant hold the decline and its reason.
    let history = repo
        .events("A-7", StreamSlice::all().recorded_until(the_15th))
        .await
        .unwrap();
    assert_eq!(history.len(), 4, "{backend}");
    match &history[3].event {
        AccountEvent::Declined(declined) => {
            assert_eq!((declined.amount, declined.balance), (500, 300), "{backend}");
            assert_eq!(declined.reason, "insufficient funds", "{backend}");
        }
        other => panic!("{backend}: expected the decline, got {other:?}"),
    }
    assert!(history[3].envelope.recorded_at <= the_15th, "{backend}");
}

async fn snapshot_scenario<S: Store>(store: S, backend: &str) {
    let with_snapshots = accounts(&store).with_snapshot_every(5);
    let replay_only = accounts(&store);
    let stream = Repository::<Account, S>::stream_id("A-5");

    open_account(&with_snapshots, "A-5", 0).await;
    for amount in 1..=11 {
        deposit(&with_snapshots, "A-5", amount).await; // v2..v12
    }
    let snapshot = latest_snapshot(&store, &stream).await.expect("a snapshot was taken");
    assert_eq!(snapshot.version, 10, "{backend}: the latest multiple of 5 passed");
    let state = Account::decode_snapshot(snapshot.schema_version, &snapshot.state).unwrap();
    assert_eq!(
        state.balance,
        (1..=9).sum::<u64>(),
        "{backend}: the state at version 10"
    );

    let fast = with_snapshots.load("A-5").await.unwrap();
    let slow = replay_only.load("A-5").await.unwrap();
    assert_eq!(fast, slow, "{backend}: a snapshot changes nothing but speed");
    assert_eq!(
        (fast.version, fast.aggregate.balance),
        (12, (1..=11).sum::<u64>()),
        "{backend}"
    );
    for version in [3, 7, 10, 11] {
        assert_eq!(
            with_snapshots.load_at_version("A-5", version).await.unwrap(),
            replay_only.load_at_version("A-5", version).await.unwrap(),
            "{backend}: time travel to {version} past a newer snapshot"
        );
    }

    // One command with several events that jumps over a multiple still takes a snapshot.
    let several = |a: &Account| -> Result<Vec<AccountEvent>, AccountError> {
        let mut events = a.deposit(100, "a")?;
        events.extend(a.deposit(100, "b")?);
        events.extend(a.deposit(100, "c")?);
        events.extend(a.deposit(100, "d")?);
        Ok(events)
    };
    let executed = with_snapshots.execute("A-5", Metadata::new(), several).await.unwrap();
    assert_eq!(executed.version, 16, "{backend}");
    assert_eq!(
        latest_snapshot(&store, &stream).await.map(|s| s.version),
        Some(16),
        "{backend}: the stream passed 15 within the command"
    );

    // Seed 001's repository snapshots in `save` too: the load–change–save flow past 20.
    let mut account = with_snapshots.load_for_update("A-5").await.unwrap();
    for _ in 0..5 {
        account.decide(|a: &Account| a.deposit(1, "small")).unwrap();
    }
    let saved = with_snapshots.save(&mut account, Metadata::new()).await.unwrap();
    assert_eq!(saved.version, 21, "{backend}");
    assert_eq!(
        latest_snapshot(&store, &stream).await.map(|s| s.version),
        Some(21),
        "{backend}: a save that passes 20 takes a snapshot as a command does"
    );
    assert_eq!(
        with_snapshots.load("A-5").await.unwrap(),
        replay_only.load("A-5").await.unwrap(),
        "{backend}"
    );
}

/// Money spent per (month, kind): a state whose map keys are tuples, which JSON cannot key an
/// object by, so it cannot be snapshotted as JSON.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "spending", event = AccountEvent)]
pub struct Spending {
    pub by_month_and_kind: BTreeMap<(u32, String), u64>,
}

impl Apply<AccountOpened> for Spending {
    fn apply(&mut self, _: &AccountOpened) {}
}
impl Apply<MoneyDeposited> for Spending {
    fn apply(&mut self, _: &MoneyDeposited) {}
}
impl Apply<MoneyWithdrawn> for Spending {
    fn apply(&mut self, event: &MoneyWithdrawn) {
        *self
            .by_month_and_kind
            .entry((1, event.description.clone()))
            .or_default() += event.amount;
    }
}
impl Apply<WithdrawalDeclined> for Spending {
    fn apply(&mut self, _: &WithdrawalDeclined) {}
}

/// A snapshot is an optimisation: when the state cannot be snapshotted, the command that was
/// appended still succeeds (reporting a failure would invite a retry that appends it twice).
async fn unsnapshottable_scenario<S: Store>(store: S, backend: &str) {
    let spending = Repository::<Spending, S>::new(store.clone()).with_snapshot_every(1);
    let spend = |kind: &'static str| {
        move |_: &Spending| -> Vec<AccountEvent> {
            vec![MoneyWithdrawn {
                amount: 5,
                description: kind.into(),
            }
            .into()]
        }
    };
    for kind in ["food", "rent", "food"] {
        let executed = spending.execute("S-1", Metadata::new(), spend(kind)).await;
        assert!(executed.is_ok(), "{backend}: the events were appended: {executed:?}");
    }
    let stream = Repository::<Spending, S>::stream_id("S-1");
    assert!(
        latest_snapshot(&store, &stream).await.is_none(),
        "{backend}: no snapshot could be taken"
    );
    let loaded = spending.load("S-1").await.unwrap();
    assert_eq!(loaded.version, 3, "{backend}");
    assert_eq!(
        loaded.aggregate.by_month_and_kind[&(1, "food".to_owned())],
        10,
        "{backend}"
    );
}

async fn snapshots_scenario<S: Store>(store: S, backend: &str) {
    snapshot_scenario(store.clone(), backend).await;
    unsnapshottable_scenario(store, backend).await;
}

/// DESIGN.md: "stale snapshots are ignored: snapshots carry the aggregate's SNAPSHOT_REVISION;
/// a mismatch or a decode failure falls back to replay".
async fn bad_snapshot_scenario<S: Store>(store: S, backend: &str) {
    let repo = accounts(&store).with_snapshot_every(100);
    for id in ["stale", "garbage", "too-new"] {
        open_account(&repo, id, 10).await;
        deposit(&repo, id, 5).await;
        deposit(&repo, id, 5).await;
    }
    let lie = serde_json::to_vec(&Account {
        open: true,
        balance: 1_000_000,
        ..Account::default()
    })
    .unwrap();
    let planted = |id: &str, revision: u32, schema_version: u32, state: Vec<u8>| Snapshot {
        stream: Repository::<Account, S>::stream_id(id),
        version: 3,
        revision,
        schema_version,
        state,
        taken_at: Utc::now(),
    };
    let revision = <Account as Aggregate>::SNAPSHOT_REVISION;
    let version = <Account as Aggregate>::SNAPSHOT_VERSION;
    // A stale revision; JSON of another shape (a state that is not JSON at all is refused by the
    // store); a schema version newer than the code's.
    let other_shape = br#"{"balance":"a lot","open":"yes"}"#.to_vec();
    for (id, revision, version, state) in [
        ("stale", revision + 1, version, lie.clone()),
        ("garbage", revision, version, other_shape),
        ("too-new", revision, version + 1, lie),
    ] {
        store
            .save_snapshot(planted(id, revision, version, state))
            .await
            .unwrap_or_else(|e| panic!("{backend}: planting {id}: {e}"));
    }
    let not_json = store
        .save_snapshot(planted("garbage", revision, version, b"not json".to_vec()))
        .await;
    assert!(not_json.is_err(), "{backend}: {not_json:?}");
    let kept = latest_snapshot(&store, &Repository::<Account, S>::stream_id("garbage"))
        .await
        .expect("the planted snapshot");
    assert!(
        kept.state.starts_with(b"{"),
        "{backend}: the refused snapshot replaced nothing"
    );

    for id in ["stale", "garbage", "too-new"] {
        let loaded = repo.load(id).await.unwrap_or_else(|e| panic!("{backend}: {id}: {e}"));
        assert_eq!(
            (loaded.version, loaded.aggregate.balance),
            (3, 20),
            "{backend}: {id} replayed"
        );
        // And a command decides on the replayed state, not on the planted one.
        let refused = repo
            .execute(id, Metadata::new(), |a: &Account| a.withdraw(21, "x"))
            .await;
        assert!(
            matches!(refused, Err(CommandError::Rejected(_))),
            "{backend}: {id}: {refused:?}"
        );
    }
}

/// Seed 003's event list, imported as another system recorded it: its last event (the
/// activation, here a recorded decline) carries a timestamp older than the three before it.
/// Time travel by instant must still give the state after a prefix of the stream (or the
/// import must refuse the history with a typed error): the stores keep `recorded_at` growing
/// within a stream for exactly this ("time travel by instant agrees with the global order").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_on_an_imported_history_whose_timestamps_are_out_of_order() {
    use chrono::TimeZone;
    bounded(async {
        let schema = postgres().await;
        let store = schema.store().clone();
        let at = |m: u32, d: u32, h: u32| Utc.with_ymd_and_hms(2025, m, d, h, 0, 0).unwrap();
        let history = [
            (
                "AccountOpened",
                1,
                r#"{"owner_id":"123","initial_balance":0}"#,
                at(1, 1, 0),
            ),
            (
                "MoneyDeposited",
                2,
                r#"{"amount":3000,"description":"d","source":"bank_transfer"}"#,
                at(1, 15, 10),
            ),
            (
                "MoneyDeposited",
                2,
                r#"{"amount":2500,"description":"d","source":"payroll"}"#,
                at(2, 1, 9),
            ),
            (
                "MoneyWithdrawn",
                1,
                r#"{"amount":500,"description":"atm_withdrawal"}"#,
                at(2, 10, 14),
            ),
            (
                "WithdrawalDeclined",
                1,
                r#"{"amount":9999,"balance":5000,"reason":"r"}"#,
                at(1, 2, 8),
            ),
        ];
        let source = sqlx::query("SELECT g FROM generate_series(0, 4) AS g ORDER BY g")
            .try_map(move |row: sqlx::postgres::PgRow| {
                use sqlx::Row;
                let g: i32 = row.try_get(0)?;
                let (name, schema_version, payload, recorded_at) = history[g as usize];
                Ok(es_postgres::ImportedEvent {
                    stream: StreamId::new("account", "123"),
                    event_id: Uuid::now_v7(),
                    event_name: name.into(),
                    schema_version,
                    payload: payload.as_bytes().to_vec(),
                    metadata: Metadata::new().with_actor("legacy-system"),
                    recorded_at,
                })
            })
            .fetch(store.pool());
        let imported = store
            .import(es_postgres::ImportOptions::new("seed-003"), source, |_| {})
            .await;
        if let Err(refused) = imported {
            // Refusing such a history, with a typed error naming the event, is fine too.
            assert!(
                !matches!(refused, es_postgres::ImportError::Source { .. }),
                "{refused:?}"
            );
            return;
        }
        let repo = accounts(&store);
        for instant in [at(1, 1, 12), at(1, 3, 0), at(1, 20, 0), at(2, 5, 0), at(3, 1, 0)] {
            let then = repo
                .load_at_instant("123", instant)
                .await
                .unwrap_or_else(|error| panic!("the state at {instant}: {error}"));
            let prefix = repo.load_at_version("123", then.version).await.unwrap();
            assert_eq!(
                then, prefix,
                "the state at {instant} is the state after a prefix of the stream"
            );
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Seed 002: concurrency.
// ---------------------------------------------------------------------------------------------

async fn racing_withdrawals_scenario<S: Store + Reopen>(store: S, backend: &str) {
    let repo = accounts(&store);
    // The other writer has a handle of its own, as another process would.
    let other = accounts(&store.reopen().await);
    open_account(&repo, "A-2", 100).await;

    // Both load version 1 with 100, both decide to withdraw 70: one wins; the other is
    // retried on the new state and refused by the rule, never overdrawing.
    let results = race_two([&repo, &other], "A-2", [Op::Withdraw(70), Op::Withdraw(70)]).await;
    let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "{backend}: exactly one withdrawal wins: {results:?}");
    assert_eq!(
        (won[0].version, won[0].aggregate.balance, won[0].attempts),
        (2, 30, 1),
        "{backend}"
    );
    let lost = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert!(
        matches!(
            lost,
            CommandError::Rejected(AccountError::InsufficientFunds {
                balance: 30,
                requested: 70
            })
        ),
        "{backend}: the loser decided again on the winner's state: {lost:?}"
    );

    // Two deposits racing the same way: both succeed, the second after a retry.
    let results = race_two([&repo, &other], "A-2", [Op::Deposit(10), Op::Deposit(15)]).await;
    let mut attempts: Vec<u32> = results.iter().map(|r| r.as_ref().unwrap().attempts).collect();
    attempts.sort_unstable();
    assert_eq!(attempts, [1, 2], "{backend}: {results:?}");
    assert_account(&repo, "A-2", (4, 55), backend).await;

    // Seed 003: "Account already exists". Four tasks open the same account at once.
    let openings = concurrently(["alice", "bob", "carol", "dave"].map(|owner| {
        let repo = repo.clone();
        async move {
            repo.create("A-9", Metadata::new(), |a: &Account| a.open(owner, 10))
                .await
        }
    }))
    .await;
    let mut opened = Vec::new();
    for opening in openings {
        match opening {
            Ok(executed) => opened.push(executed),
            Err(CommandError::Rejected(AccountError::AlreadyOpen)) => {}
            Err(other) => panic!("{backend}: expected AlreadyOpen, got {other:?}"),
        }
    }
    assert_eq!(opened.len(), 1, "{backend}: one opening wins");
    let loaded = repo.load("A-9").await.unwrap();
    assert_eq!(loaded.version, 1, "{backend}");
    assert_eq!(loaded.aggregate.owner_id, opened[0].aggregate.owner_id, "{backend}");
}

async fn typed_conflict_scenario<S: Store>(store: S, backend: &str) {
    let repo = accounts(&store).with_retry(RetryPolicy::no_retries());
    open_account(&repo, "A-3", 100).await;
    let stream = Repository::<Account, S>::stream_id("A-3");

    let results = race_two([&repo, &repo], "A-3", [Op::Deposit(1), Op::Deposit(2)]).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{backend}: {results:?}"
    );
    match results.iter().find_map(|r| r.as_ref().err()).unwrap() {
        CommandError::Conflict { attempts, conflict } => {
            assert_eq!(*attempts, 1, "{backend}");
            assert_eq!(conflict.stream, stream, "{backend}");
            assert_eq!(conflict.expected, ExpectedVersion::Exact(1), "{backend}");
            assert_eq!(conflict.actual, 2, "{backend}");
        }
        other => panic!("{backend}: expected a typed conflict, got {other:?}"),
    }
    assert_eq!(
        store.stream_version(&stream).await.unwrap(),
        2,
        "{backend}: the loser wrote nothing"
    );
    let after_race = repo.load("A-3").await.unwrap().aggregate.balance;

    // Load–change–save: the second copy's save is a conflict, its change stays pending.
    let mut first = repo.load_for_update("A-3").await.unwrap();
    let mut second = repo.load_for_update("A-3").await.unwrap();
    first.decide(|a: &Account| a.withdraw(50, "x")).unwrap();
    second.decide(|a: &Account| a.withdraw(60, "y")).unwrap();
    repo.save(&mut first, Metadata::new()).await.unwrap();
    match repo.save(&mut second, Metadata::new()).await {
        Err(RepositoryError::Conflict(conflict)) => {
            assert_eq!(
                (conflict.expected, conflict.actual),
                (ExpectedVersion::Exact(2), 3),
                "{backend}"
            )
        }
        other => panic!("{backend}: expected a conflict, got {other:?}"),
    }
    assert_eq!(second.pending().len(), 1, "{backend}: the refused change stays pending");
    let loaded = repo.load("A-3").await.unwrap();
    assert_eq!(loaded.version, 3, "{backend}");
    assert_eq!(
        loaded.aggregate.balance,
        after_race - 50,
        "{backend}: only the first save counted"
    );
}

/// `with_cache`: "the cached version is the expected version, so a stale state only costs a
/// conflict, after which the aggregate is reloaded and the command decided again."
async fn stale_cache_scenario<S: Store>(store: S, backend: &str) {
    let cached = accounts(&store).with_cache(16);
    let other_process = accounts(&store);
    open_account(&cached, "A-4", 100).await;
    cached
        .execute("A-4", Metadata::new(), |a: &Account| a.withdraw(50, "x"))
        .await
        .unwrap(); // the cache holds balance 50 at version 2
    other_process
        .execute("A-4", Metadata::new(), |a: &Account| a.withdraw(40, "y"))
        .await
        .unwrap(); // the store is at 10, version 3

    let refused = cached
        .execute("A-4", Metadata::new(), |a: &Account| a.withdraw(50, "z"))
        .await;
    assert!(
        matches!(
            refused,
            Err(CommandError::Rejected(AccountError::InsufficientFunds {
                balance: 10,
                requested: 50
            }))
        ),
        "{backend}: decided again on the reloaded state: {refused:?}"
    );
    let accepted = cached
        .execute("A-4", Metadata::new(), |a: &Account| a.withdraw(10, "w"))
        .await
        .unwrap();
    assert_eq!((accepted.version, accepted.aggregate.balance), (4, 0), "{backend}");
    assert_account(&other_process, "A-4", (4, 0), backend).await;
}

/// Seed 002's conference: SeatAvailability decides from the events; buyers race for the last
/// seats; a cancellation is an event of its own, and frees its seats.
async fn seats_scenario<S: Store>(store: S, backend: &str) {
    // Seed 002's optimisations: snapshots, and cached copies of the aggregate in memory.
    let seats = conferences(&store).with_cache(4).with_snapshot_every(3);
    let plain = conferences(&store);
    schedule_conference(&seats, 10).await;
    reserve(&seats, "R-early", 7, "x", Metadata::new()).await;

    // Eight buyers, one seat each, three seats left.
    let purchases = concurrently((0..8).map(|buyer| {
        let seats = seats.clone();
        async move {
            let reservation = format!("R-{buyer}");
            seats
                .execute("CONF", Metadata::new(), move |s: &SeatAvailability| {
                    s.reserve(&reservation, 1, "buyer", 100)
                })
                .await
        }
    }))
    .await;
    let mut won = 0;
    for purchase in purchases {
        match purchase {
            Ok(_) => won += 1,
            Err(CommandError::Rejected(SeatError::SoldOut {
                available: 0,
                requested: 1,
            })) => {}
            Err(other) => panic!("{backend}: expected a sold-out refusal, got {other:?}"),
        }
    }
    assert_eq!(won, 3, "{backend}: exactly as many buyers as seats");
    let conference = seats.load("CONF").await.unwrap();
    assert_eq!(conference.aggregate.available(), 0, "{backend}");
    assert_eq!(
        conference.aggregate.held.values().sum::<u32>(),
        10,
        "{backend}: never overbooked"
    );

    // Two seats for one buyer are all or nothing.
    let refused = seats
        .execute("CONF", Metadata::new(), |s: &SeatAvailability| {
            s.reserve("R-pair", 2, "x", 100)
        })
        .await;
    assert!(
        matches!(
            refused,
            Err(CommandError::Rejected(SeatError::SoldOut {
                available: 0,
                requested: 2
            }))
        ),
        "{backend}: {refused:?}"
    );

    // A cancellation frees the seats; the history keeps both facts.
    seats
        .execute("CONF", Metadata::new(), |s: &SeatAvailability| {
            s.cancel("R-early", "changed plans")
        })
        .await
        .unwrap();
    let later = reserve(&seats, "R-late", 7, "y", Metadata::new()).await;
    assert_eq!(later.aggregate.available(), 0, "{backend}");
    let history = seats.events("CONF", StreamSlice::all()).await.unwrap();
    let early: Vec<&str> = history
        .iter()
        .filter_map(|e| match &e.event {
            SeatEvent::Reserved(r) if r.reservation == "R-early" => Some("reserved"),
            SeatEvent::Cancelled(c) if c.reservation == "R-early" => Some("cancelled"),
            _ => None,
        })
        .collect();
    assert_eq!(early, ["reserved", "cancelled"], "{backend}");
    assert_eq!(history.len() as u64, later.version, "{backend}");
    assert_eq!(
        seats.load("CONF").await.unwrap(),
        plain.load("CONF").await.unwrap(),
        "{backend}"
    );
}

// ---------------------------------------------------------------------------------------------
// Seed 002 / 003: idempotency, sagas, correlation.
// ---------------------------------------------------------------------------------------------

/// Checks that `again`, a request sent a second time, was answered with the outcome of `first`
/// rather than carried out again.
fn assert_answered_again(
    again: Result<Executed<Account>, CommandError<AccountError>>,
    first: &Executed<Account>,
    what: &str,
) {
    match again {
        Ok(again) => assert!(
            again.already_stored && again.appended == first.appended,
            "{what}: {again:?}"
        ),
        Err(error) => panic!("{what}: {error:?}"),
    }
}

/// Checks that `find_command` finds the request `command` on account `id`, with the events it
/// appended.
async fn assert_command_found<S: Store>(
    repo: &Repository<Account, S>,
    id: &str,
    command: Uuid,
    appended: &[es_core::AppendedEvent],
    backend: &str,
) {
    let found = repo
        .find_command(id, command)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{backend}: the request {command} on {id} is not found"));
    assert_eq!(found.appended, appended, "{backend}: the events of {command}");
}

async fn client_retry_scenario<S: Store>(store: S, backend: &str) {
    let repo = accounts(&store);
    open_account(&repo, "A-6", 100).await;

    // The client's request to withdraw everything; its answer is lost, it sends it again.
    let request = Uuid::now_v7();
    let withdraw_all = |a: &Account| a.withdraw(100, "all");
    let send = || repo.execute("A-6", Metadata::new().with_command_id(request), withdraw_all);
    let first = send().await.unwrap();
    assert!(!first.already_stored, "{backend}");
    // Meanwhile another command moved the stream on.
    deposit(&repo, "A-6", 5).await;
    let again = send()
        .await
        .unwrap_or_else(|e| panic!("{backend}: the request sent again must be recognised: {e:?}"));
    assert!(again.already_stored, "{backend}");
    assert_eq!(again.appended, first.appended, "{backend}");
    assert_eq!(again.command_id, request, "{backend}");
    assert_eq!(
        (again.version, again.aggregate.balance, &again.events),
        (first.version, first.aggregate.balance, &first.events),
        "{backend}: the fields describe the original outcome"
    );
    assert_account(&repo, "A-6", (3, 5), &format!("{backend}: withdrawn once")).await;

    // A request whose decision now has another shape (two events then, one now) is still
    // answered with its original outcome.
    let split = Uuid::now_v7();
    let by_balance = |a: &Account| -> Result<Vec<AccountEvent>, AccountError> {
        if a.balance < 100 {
            let mut events = a.deposit(50, "first half")?;
            events.extend(a.deposit(50, "second half")?);
            Ok(events)
        } else {
            a.deposit(1, "a tip")
        }
    };
    let send = || repo.execute("A-6", Metadata::new().with_command_id(split), by_balance);
    let two = send().await.unwrap();
    assert_eq!(two.appended.len(), 2, "{backend}");
    assert_answered_again(send().await, &two, &format!("{backend}: the request sent again"));
    repo.execute("A-6", Metadata::new(), |a: &Account| a.withdraw(100, "back"))
        .await
        .unwrap();

    assert_command_found(&repo, "A-6", request, &first.appended, backend).await;
    assert!(
        repo.find_command("A-6", Uuid::now_v7()).await.unwrap().is_none(),
        "{backend}"
    );

    // The same with load–change–save: the same request, saved twice.
    let save_request = Uuid::now_v7();
    let save_cash = || async {
        let mut account = repo.load_for_update("A-6").await.unwrap();
        account.decide(|a: &Account| a.deposit(7, "cash")).unwrap();
        let saved = repo
            .save(&mut account, Metadata::new().with_command_id(save_request))
            .await
            .unwrap();
        (saved, account)
    };
    let (saved, _) = save_cash().await;
    assert!(!saved.already_stored, "{backend}");
    deposit(&repo, "A-6", 1).await; // the stream moves on before the request comes again
    let (saved_again, resent) = save_cash().await;
    assert!(saved_again.already_stored, "{backend}");
    assert_eq!(saved_again.appended, saved.appended, "{backend}");
    assert!(resent.pending().is_empty(), "{backend}");
    assert_command_found(&repo, "A-6", save_request, &saved.appended, backend).await;
    assert_account(&repo, "A-6", (8, 13), &format!("{backend}: deposited once")).await;

    // `create` continues "exactly like execute" when the stream exists: the request that
    // opened the account, sent again, is recognised rather than refused as AlreadyOpen.
    let opening = Uuid::now_v7();
    let open = |a: &Account| a.open("zoe", 1);
    let send = || repo.create("A-6b", Metadata::new().with_command_id(opening), open);
    let opened = send().await.unwrap();
    assert_answered_again(send().await, &opened, &format!("{backend}: the opening sent again"));

    // A repository with a cache recognises the request sent again too.
    let cached = accounts(&store).with_cache(8);
    open_account(&cached, "A-6c", 100).await;
    let request = Uuid::now_v7();
    let send = || cached.execute("A-6c", Metadata::new().with_command_id(request), withdraw_all);
    let first = send().await.unwrap();
    let again = send().await;
    assert_answered_again(
        again,
        &first,
        &format!("{backend}: the request sent again through the cache"),
    );
    assert_eq!(repo.load("A-6c").await.unwrap().version, 2, "{backend}");
}

/// Seed 002: "이벤트 게시는 '한 번 이상'일 수 있으므로 이벤트의 소비자는 멱등적이어야 합니다."
async fn idempotent_consumer_scenario<S: Store>(store: S, backend: &str) {
    let repo = accounts(&store);
    open_account(&repo, "payer", 1000).await;
    open_account(&repo, "loyalty", 0).await;
    let paid = repo
        .execute("payer", Metadata::new(), |a: &Account| a.withdraw(300, "order"))
        .await
        .unwrap();
    let event = first_stored(&store, &paid).await;

    // The consumer: one loyalty point per 10 paid.
    let react = |event: es_core::RecordedEvent| {
        let repo = repo.clone();
        async move {
            repo.execute(
                "loyalty",
                Metadata::in_reaction_to(&event, "award-points"),
                |a: &Account| a.deposit(30, "points"),
            )
            .await
            .unwrap()
        }
    };
    let first = react(event.clone()).await;
    let second = react(event.clone()).await;
    assert!(!first.already_stored && second.already_stored, "{backend}");
    // The loyalty stream moves on; the event is delivered a third time.
    deposit(&repo, "loyalty", 1).await;
    let third = react(event.clone()).await;
    assert!(third.already_stored, "{backend}: recognised after the stream moved on");
    assert_eq!(third.appended, first.appended, "{backend}");

    // Another reaction to the same event is a command of its own.
    let receipt = repo
        .execute("loyalty", Metadata::in_reaction_to(&event, "bonus"), |a: &Account| {
            a.deposit(2, "bonus")
        })
        .await
        .unwrap();
    assert!(!receipt.already_stored, "{backend}");
    assert_account(&repo, "loyalty", (4, 33), &format!("{backend}: each reaction once")).await;
}

/// The saga's view of the seat events: reservations only.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum CheckoutEvent {
    Reserved(SeatsReserved),
}

/// Seed 002's compensation: a reservation is charged to its payer; when the payment is declined,
/// a compensating event cancels the reservation. A process manager fed by the global log, whose
/// checkpoints live in memory (its effects are commands, not rows), so a restart delivers every
/// event again: each reaction is a command `in_reaction_to` the event, carried out once.
struct CheckoutSaga<S, C = Vec<String>> {
    accounts: Repository<Account, S>,
    seats: Repository<SeatAvailability, S>,
    context: std::marker::PhantomData<fn() -> C>,
}

/// Where the saga notes what it did: a list in memory, or nowhere (a durable checkpoint store).
trait SagaLog: Send + 'static {
    fn push(&mut self, line: String);
    fn clear(&mut self) {}
}

impl SagaLog for Vec<String> {
    fn push(&mut self, line: String) {
        Vec::push(self, line);
    }
    fn clear(&mut self) {
        Vec::clear(self);
    }
}

impl SagaLog for SqliteContext {
    fn push(&mut self, _: String) {}
}

impl<S: Store, C> CheckoutSaga<S, C> {
    /// The saga, sending its commands through `accounts` and `seats`.
    fn new(accounts: &Repository<Account, S>, seats: &Repository<SeatAvailability, S>) -> Self {
        Self {
            accounts: accounts.clone(),
            seats: seats.clone(),
            context: std::marker::PhantomData,
        }
    }
}

/// Runs a checkout saga without a checkpoint up to `position`: the events it handled, and what
/// it noted doing.
async fn run_checkout_saga<S: Store>(
    accounts: &Repository<Account, S>,
    seats: &Repository<SeatAvailability, S>,
    position: u64,
) -> (u64, Vec<String>) {
    let noted = InMemoryReadModel::<Vec<String>>::new();
    let runner = ProjectionRunner::new(
        CheckoutSaga::new(accounts, seats),
        accounts.store().clone(),
        noted.clone(),
    );
    let handled = catch_up_to(&runner, position, TEST_BOUND).await;
    (handled, noted.read(Clone::clone))
}

#[async_trait]
impl<S: Store, C: SagaLog> Projection for CheckoutSaga<S, C> {
    const NAME: &'static str = "checkout-saga";
    const AGGREGATE_TYPES: &'static [&'static str] = &["seat-availability"];
    const SOURCE_EVENTS: &'static [&'static [EventDescriptor]] = &[SeatEvent::EVENTS];
    type Event = CheckoutEvent;
    type Context = C;

    async fn handle(&self, log: &mut C, event: &DecodedEvent<CheckoutEvent>) -> Result<(), HandlerError> {
        let CheckoutEvent::Reserved(reserved) = &event.event;
        let total = reserved.price_per_seat * u64::from(reserved.seats);
        let description = reserved.reservation.clone();
        let charge = self
            .accounts
            .execute(
                &reserved.payer,
                Metadata::in_reaction_to(&event.envelope, "charge").with_actor("saga:checkout"),
                |a: &Account| a.withdraw_or_decline(total, &description),
            )
            .await?;
        let again = if charge.already_stored { " again" } else { "" };
        if charge.events.iter().any(|e| matches!(e, AccountEvent::Declined(_))) {
            let conference = event.envelope.stream.aggregate_id.clone();
            let reservation = reserved.reservation.clone();
            let undo = self
                .seats
                .execute(
                    &conference,
                    Metadata::in_reaction_to(&event.envelope, "compensate").with_actor("saga:checkout"),
                    |s: &SeatAvailability| s.cancel(&reservation, "payment declined"),
                )
                .await?;
            let undo_again = if undo.already_stored { " again" } else { "" };
            log.push(format!(
                "{}: declined{again}, cancelled{undo_again}",
                reserved.reservation
            ));
        } else {
            log.push(format!("{}: paid{again}", reserved.reservation));
        }
        Ok(())
    }

    async fn reset(&self, log: &mut C) -> Result<(), HandlerError> {
        log.clear();
        Ok(())
    }
}

async fn saga_scenario<S: Store>(store: S, backend: &str) {
    let accounts = accounts(&store);
    let seats = conferences(&store);
    open_account(&accounts, "alice", 500).await;
    open_account(&accounts, "bob", 50).await;
    schedule_conference(&seats, 10).await;
    let alice_order = Uuid::now_v7();
    let bob_order = Uuid::now_v7();
    let alice_metadata = Metadata::new().with_correlation_id(alice_order);
    reserve(&seats, "R-alice", 2, "alice", alice_metadata).await;
    let bob_metadata = Metadata::new().with_correlation_id(bob_order);
    let bob_reserved = reserve(&seats, "R-bob", 1, "bob", bob_metadata).await;

    let (handled, noted) = run_checkout_saga(&accounts, &seats, bob_reserved.position()).await;
    assert_eq!(handled, 2, "{backend}: two reservations");
    assert_eq!(noted, ["R-alice: paid", "R-bob: declined, cancelled"], "{backend}");
    let alice = accounts.load("alice").await.unwrap();
    let bob = accounts.load("bob").await.unwrap();
    assert_eq!((alice.aggregate.balance, bob.aggregate.balance), (300, 50), "{backend}");
    let conference = seats.load("CONF").await.unwrap();
    assert_eq!(
        conference.aggregate.available(),
        8,
        "{backend}: bob's seat is free again"
    );
    assert_eq!(conference.aggregate.cancelled, ["R-bob"], "{backend}");

    // The compensating event carries the order's correlation and names its cause.
    let history = seats.events("CONF", StreamSlice::all()).await.unwrap();
    let cancel = history.last().unwrap();
    assert!(
        matches!(&cancel.event, SeatEvent::Cancelled(c) if c.reservation == "R-bob"),
        "{backend}"
    );
    assert_eq!(cancel.envelope.metadata.correlation_id, Some(bob_order), "{backend}");
    assert_eq!(
        cancel.envelope.metadata.causation_id,
        Some(bob_reserved.appended[0].event_id),
        "{backend}"
    );
    assert_eq!(
        cancel.envelope.metadata.actor.as_deref(),
        Some("saga:checkout"),
        "{backend}"
    );

    // Bob tops up; then the saga restarts without its checkpoint and sees both reservations
    // again. The decline is a recorded fact: it is not charged now, nor cancelled twice.
    deposit(&accounts, "bob", 1000).await;
    let (replayed, noted) = run_checkout_saga(&accounts, &seats, bob_reserved.position()).await;
    assert_eq!(replayed, 2, "{backend}: both reservations delivered again");
    assert_eq!(
        noted,
        ["R-alice: paid again", "R-bob: declined again, cancelled again"],
        "{backend}"
    );
    assert_account(&accounts, "alice", (2, 300), &format!("{backend}: alice charged once")).await;
    assert_account(&accounts, "bob", (3, 1050), &format!("{backend}: bob never charged")).await;
    assert_eq!(
        seats.load("CONF").await.unwrap().version,
        4,
        "{backend}: one cancellation"
    );
}

/// Seed 003: correlation ids tie a request's events together, causation ids name each event's
/// direct cause; `extra` and `actor` travel with them. Every read path returns the same.
async fn correlation_scenario<S: Store>(store: S, backend: &str) {
    let repo = accounts(&store);
    open_account(&repo, "A-8", 0).await;
    let request = Uuid::now_v7();
    let command = Uuid::now_v7();
    let executed = repo
        .execute(
            "A-8",
            Metadata::new()
                .with_correlation_id(request)
                .with_command_id(command)
                .with_actor("user_456")
                .with_extra("ip", "203.0.113.7")
                .with_extra("channel", serde_json::json!({"app": "ios", "build": 42})),
            |a: &Account| a.deposit(100, "payroll"),
        )
        .await
        .unwrap();
    let event_id = executed.appended[0].event_id;
    let stored = first_stored(&store, &executed).await;
    let metadata = &stored.metadata;
    assert_eq!(metadata.correlation_id, Some(request), "{backend}");
    assert_eq!(metadata.causation_id, Some(command), "{backend}: the command caused it");
    assert_eq!(metadata.command_id, Some(command), "{backend}");
    assert_eq!(metadata.actor.as_deref(), Some("user_456"), "{backend}");
    assert_eq!(metadata.extra["ip"], "203.0.113.7", "{backend}");
    assert_eq!(metadata.extra["channel"]["build"], 42, "{backend}");
    // The same metadata from the stream read and from the global log.
    let from_stream = repo.events("A-8", StreamSlice::from_version(2)).await.unwrap();
    assert_eq!(&from_stream[0].envelope.metadata, metadata, "{backend}: read_stream");
    let logged = from_the_global_log(&store, event_id).await;
    assert_eq!(&logged.metadata, metadata, "{backend}: read_all");

    // A reaction: caused by the event, in the same conversation.
    let reaction = repo
        .execute(
            "A-8",
            Metadata::caused_by(&stored).with_actor("process:billing"),
            |a: &Account| a.withdraw(1, "fee"),
        )
        .await
        .unwrap();
    let reacted = first_stored(&store, &reaction).await;
    assert_eq!(reacted.metadata.correlation_id, Some(request), "{backend}");
    assert_eq!(reacted.metadata.causation_id, Some(event_id), "{backend}");
    assert_eq!(reacted.metadata.command_id, Some(reaction.command_id), "{backend}");
    assert_ne!(reaction.command_id, command, "{backend}");
    assert_eq!(reacted.metadata.actor.as_deref(), Some("process:billing"), "{backend}");

    // A bare command is its own correlation and cause.
    let bare = repo
        .execute("A-8", Metadata::new(), |a: &Account| a.deposit(1, "x"))
        .await
        .unwrap();
    let bare_event = first_stored(&store, &bare).await;
    let id = Some(bare.command_id);
    assert_eq!(
        (
            bare_event.metadata.correlation_id,
            bare_event.metadata.causation_id,
            bare_event.metadata.command_id
        ),
        (id, id, id),
        "{backend}"
    );
}

/// Metadata comes back as it was given, whatever the application puts in `extra` (keys that
/// happen to share a well-known field's name included) and whatever the actor is.
async fn metadata_round_trip_scenario<S: Store>(store: S, backend: &str) {
    let repo = accounts(&store);
    open_account(&repo, "M-1", 0).await;
    let given = Metadata::new()
        .with_command_id(Uuid::now_v7())
        .with_correlation_id(Uuid::now_v7())
        .with_causation_id(Uuid::now_v7())
        .with_actor("")
        .with_extra("actor", "mallory")
        .with_extra("correlation_id", "order_xyz")
        .with_extra("command_id", 7)
        .with_extra("extra", serde_json::json!({"nested": true}))
        .with_extra("note", Value::Null);
    let executed = repo
        .execute("M-1", given.clone(), |a: &Account| a.deposit(1, "x"))
        .await
        .unwrap();
    let stored = first_stored(&store, &executed).await;
    assert_eq!(stored.metadata, given, "{backend}: read_event");
    let listed = repo.events("M-1", StreamSlice::from_version(2)).await.unwrap();
    assert_eq!(listed[0].envelope.metadata, given, "{backend}: read_stream");
    let logged = from_the_global_log(&store, stored.event_id).await;
    assert_eq!(logged.metadata, given, "{backend}: read_all");
    assert_eq!(
        repo.load("M-1").await.unwrap().version,
        2,
        "{backend}: the stream still loads"
    );

    // An event stored without metadata (by another program) still gives its reactions a
    // correlation: its own id.
    let stream = StreamId::new("legacy", "L-1");
    let legacy = raw_event("Imported", 1, "{}");
    let legacy_id = legacy.event_id;
    append_raw(&store, &stream, vec![legacy]).await;
    let imported = from_the_global_log(&store, legacy_id).await;
    assert_eq!(imported.metadata, Metadata::new(), "{backend}");
    let reaction = Metadata::caused_by(&imported);
    assert_eq!(reaction.correlation_id, Some(imported.event_id), "{backend}");
}

async fn correlation_and_metadata_scenario<S: Store>(store: S, backend: &str) {
    correlation_scenario(store.clone(), backend).await;
    metadata_round_trip_scenario(store, backend).await;
}

// ---------------------------------------------------------------------------------------------
// Seed 002: publishing through a transactional outbox.
// ---------------------------------------------------------------------------------------------

/// The events of one command, ready to append in a transaction: their stream, the version they
/// are to follow, the events.
type Batch = (StreamId, u64, Vec<NewEvent>);

/// The events of one command on account `id`, with `metadata`, as the repository would make
/// them.
async fn command_batch<S: Store>(
    store: &S,
    id: &str,
    metadata: Metadata,
    decide: impl FnOnce(&Account) -> Result<Vec<AccountEvent>, AccountError>,
) -> Batch {
    let current = accounts(store).load(id).await.unwrap();
    let events = decide(&current.aggregate).unwrap();
    let stream = Repository::<Account, S>::stream_id(id);
    let batch = encode_batch(&stream, &events, &metadata).unwrap();
    (stream, current.version, batch)
}

/// The events of one deposit command, with ids derived from `command`.
async fn deposit_batch<S: Store>(store: &S, id: &str, command: Uuid, amount: u64) -> Batch {
    let metadata = Metadata::new().with_command_id(command);
    command_batch(store, id, metadata, |a| a.deposit(amount, "outbox")).await
}

/// The events of a withdrawal of `amount`, the first half of a transfer.
async fn withdrawal_batch<S: Store>(store: &S, id: &str, amount: u64) -> Batch {
    command_batch(store, id, Metadata::new(), |a| a.withdraw(amount, "transfer")).await
}

/// A store whose database holds tables of the test's own (an outbox, a read model) beside the
/// events.
#[async_trait]
trait OwnTables: Store {
    /// Creates the table `definition` (its name and columns) beside the events.
    async fn create_table(&self, definition: &str);
}

/// SQLite: in the store's file.
#[async_trait]
impl OwnTables for SqliteStore {
    async fn create_table(&self, definition: &str) {
        let statement = format!("CREATE TABLE {definition}");
        self.write(move |db| db.execute_batch(&statement))
            .await
            .expect("a table created");
    }
}

/// PostgreSQL: in the store's schema.
#[async_trait]
impl OwnTables for PostgresStore {
    async fn create_table(&self, definition: &str) {
        sqlx::raw_sql(&format!("CREATE TABLE {}.{definition}", self.schema()))
            .execute(self.pool())
            .await
            .expect("a table created");
    }
}

/// A store whose commands write their outbox rows in the transaction of their events (seed 002's
/// transactional outbox), each backend through its own transaction API.
#[async_trait]
trait Outbox: OwnTables {
    /// The outbox table: its name and its columns, in the backend's types.
    const OUTBOX_TABLE: &'static str;

    /// Creates the outbox table beside the events.
    async fn create_outbox(&self) {
        self.create_table(Self::OUTBOX_TABLE).await;
    }

    /// Appends `batch` and one outbox row per event in one transaction; a retried command
    /// (`already_stored`) writes no rows; `break_outbox` makes the row's insert fail.
    async fn append_with_rows(&self, batch: Batch, break_outbox: bool) -> Result<AppendOutcome, BoxError>;

    /// Deposits `amount` into account `id` as command `command`, with its outbox rows.
    async fn deposit_with_outbox(
        &self,
        id: &str,
        command: Uuid,
        amount: u64,
        break_outbox: bool,
    ) -> Result<AppendOutcome, BoxError> {
        let batch = deposit_batch(self, id, command, amount).await;
        self.append_with_rows(batch, break_outbox).await
    }

    /// Every outbox row: its event's id, and whether it was published.
    async fn outbox_rows(&self) -> Vec<(Uuid, bool)>;

    /// Marks the row of `event_id` published.
    async fn mark_published(&self, event_id: Uuid);
}

/// SQLite: the rows are written by the closure of `SqliteStore::transaction`.
#[async_trait]
impl Outbox for SqliteStore {
    const OUTBOX_TABLE: &'static str = "outbox (event_id BLOB PRIMARY KEY, stream TEXT NOT NULL, \
                                         event_name TEXT NOT NULL, published INTEGER NOT NULL DEFAULT 0)";

    async fn append_with_rows(&self, batch: Batch, break_outbox: bool) -> Result<AppendOutcome, BoxError> {
        let (stream, version, batch) = batch;
        self.transaction(move |tx| {
            let rows: Vec<(Uuid, String)> = batch.iter().map(|e| (e.event_id, e.event_name.clone())).collect();
            let outcome = tx.append(&stream, ExpectedVersion::Exact(version), batch)?;
            if !outcome.already_stored {
                for (event_id, name) in rows {
                    let name = (!break_outbox).then_some(name);
                    tx.execute(
                        "INSERT INTO outbox (event_id, stream, event_name) VALUES (?1, ?2, ?3)",
                        (event_id.as_bytes().to_vec(), stream.to_string(), name),
                    )?;
                }
            }
            Ok::<_, BoxError>(outcome)
        })
        .await
    }

    async fn outbox_rows(&self) -> Vec<(Uuid, bool)> {
        self.read(|db| {
            let mut rows = db.prepare("SELECT event_id, published FROM outbox ORDER BY rowid")?;
            let rows = rows
                .query_map([], |row| Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, bool>(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
        .unwrap()
        .into_iter()
        .map(|(id, published)| (Uuid::from_slice(&id).unwrap(), published))
        .collect()
    }

    async fn mark_published(&self, event_id: Uuid) {
        self.write(move |db| {
            db.execute(
                "UPDATE outbox SET published = 1 WHERE event_id = ?1",
                (event_id.as_bytes().to_vec(),),
            )
        })
        .await
        .expect("the row marked published");
    }
}

/// PostgreSQL: the rows are written in a sqlx transaction, the events by `append_in_transaction`.
#[async_trait]
impl Outbox for PostgresStore {
    const OUTBOX_TABLE: &'static str = "outbox (event_id uuid PRIMARY KEY, stream text NOT NULL, \
                                         event_name text NOT NULL, published boolean NOT NULL DEFAULT false)";

    async fn append_with_rows(&self, batch: Batch, break_outbox: bool) -> Result<AppendOutcome, BoxError> {
        let (stream, version, batch) = batch;
        let rows: Vec<(Uuid, String)> = batch.iter().map(|e| (e.event_id, e.event_name.clone())).collect();
        let mut tx = self.pool().begin().await?;
        let outcome = self
            .append_in_transaction(&mut tx, &stream, ExpectedVersion::Exact(version), batch)
            .await?;
        if outcome.already_stored {
            tx.rollback().await?;
            return Ok(outcome);
        }
        let insert = format!(
            "INSERT INTO {}.outbox (event_id, stream, event_name) VALUES ($1, $2, $3)",
            self.schema()
        );
        for (event_id, name) in rows {
            sqlx::query(&insert)
                .bind(event_id)
                .bind(stream.to_string())
                .bind((!break_outbox).then_some(name))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.notify_listeners();
        Ok(outcome)
    }

    async fn outbox_rows(&self) -> Vec<(Uuid, bool)> {
        sqlx::query_as(&format!(
            "SELECT event_id, published FROM {}.outbox ORDER BY event_id",
            self.schema()
        ))
        .fetch_all(self.pool())
        .await
        .unwrap()
    }

    async fn mark_published(&self, event_id: Uuid) {
        sqlx::query(&format!(
            "UPDATE {}.outbox SET published = true WHERE event_id = $1",
            self.schema()
        ))
        .bind(event_id)
        .execute(self.pool())
        .await
        .expect("the row marked published");
    }
}

/// Checks, on a new outbox beside account `A-1`, that a deposit's outbox row commits with its
/// events, that the same command sent again writes neither, and that when the row fails the
/// events roll back with it. Returns the deposit's command id.
async fn outbox_rows_commit_with_their_events<S: Outbox>(store: &S) -> Uuid {
    store.create_outbox().await;
    open_account(&accounts(store), "A-1", 0).await;

    let command = Uuid::now_v7();
    let outcome = store.deposit_with_outbox("A-1", command, 40, false).await.unwrap();
    assert_eq!((outcome.new_version, outcome.already_stored), (2, false));
    // The answer was lost: the same command again writes neither events nor rows.
    let again = store.deposit_with_outbox("A-1", command, 40, false).await.unwrap();
    assert!(again.already_stored, "the command sent again is recognised");
    assert_eq!(again.positions, outcome.positions);
    assert_eq!(store.outbox_rows().await.len(), 1);

    // The outbox row fails: the events roll back with it.
    let broken = store.deposit_with_outbox("A-1", Uuid::now_v7(), 5, true).await;
    assert!(broken.is_err(), "{broken:?}");
    assert_eq!(
        store.stream_version(&stream_id_of("A-1")).await.unwrap(),
        2,
        "no event without its row"
    );
    assert_eq!(store.outbox_rows().await.len(), 1);
    command
}

/// Checks that the relay publishes what is unpublished, by event id, then marks it: the row of
/// the one deposit command, and no other.
async fn the_relay_publishes_the_commands_row<S: Outbox>(store: &S) {
    let mut published = Vec::new();
    for (event_id, done) in store.outbox_rows().await {
        assert!(!done, "{event_id} was published before the relay ran");
        let event = store
            .read_event(event_id)
            .await
            .unwrap()
            .expect("the row's event exists");
        published.push((event.event_name.clone(), event.version));
        store.mark_published(event_id).await;
    }
    assert_eq!(
        published,
        [("MoneyDeposited".to_owned(), 2)],
        "rows of its own for commands only"
    );
    assert!(store.outbox_rows().await.iter().all(|(_, done)| *done));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_rows_commit_with_their_events_or_not_at_all_on_sqlite() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_in(&dir).await;
        let command = outbox_rows_commit_with_their_events(&store).await;
        let repo = accounts(&store);

        // A stale expected version: a typed conflict, no row.
        let (stream, _, batch) = deposit_batch(&store, "A-1", Uuid::now_v7(), 5).await;
        let conflict = store
            .transaction(move |tx| {
                tx.execute(
                    "INSERT INTO outbox (event_id, stream, event_name) VALUES (?1, 'x', 'y')",
                    (batch[0].event_id.as_bytes().to_vec(),),
                )?;
                tx.append(&stream, ExpectedVersion::Exact(1), batch)?;
                Ok::<_, BoxError>(())
            })
            .await
            .expect_err("the stream is at 2");
        assert!(matches!(conflict.downcast_ref::<StoreError>(), Some(StoreError::Conflict(c)) if c.actual == 2));
        assert_eq!(store.outbox_rows().await.len(), 1);

        // The first attempt's own batch, sent again with the expectation it had then: still
        // recognised, "whatever expected says".
        let (stream, _, batch) = deposit_batch(&store, "A-1", command, 40).await;
        let retried = store
            .transaction(move |tx| Ok::<_, BoxError>(tx.append(&stream, ExpectedVersion::Exact(1), batch)?))
            .await
            .unwrap();
        assert!(retried.already_stored);

        // "A refused append ... leaves the transaction usable: ... carry on without the events."
        let (stream, _, batch) = deposit_batch(&store, "A-1", Uuid::now_v7(), 5).await;
        let kept_row = batch[0].event_id;
        let carried_on = store
            .transaction(move |tx| {
                let refused = tx.append(&stream, ExpectedVersion::Exact(1), batch);
                assert!(matches!(refused, Err(StoreError::Conflict(_))), "{refused:?}");
                tx.execute(
                    "INSERT INTO outbox (event_id, stream, event_name, published) VALUES (?1, 'note', 'n', 1)",
                    (kept_row.as_bytes().to_vec(),),
                )?;
                Ok::<_, BoxError>(())
            })
            .await;
        assert!(carried_on.is_ok(), "{carried_on:?}");
        assert_eq!(store.stream_version(&stream_id_of("A-1")).await.unwrap(), 2);
        assert_eq!(
            store.outbox_rows().await.len(),
            2,
            "the row committed without the events"
        );
        store
            .write(move |db| {
                db.execute(
                    "DELETE FROM outbox WHERE event_id = ?1",
                    (kept_row.as_bytes().to_vec(),),
                )
            })
            .await
            .unwrap();

        // A closure that panics after appending (an outbox row that will not serialize, say):
        // the transaction fails, nothing of it is kept, and the store goes on working.
        let (stream, version, batch) = deposit_batch(&store, "A-1", Uuid::now_v7(), 5).await;
        let panicked = store
            .transaction(move |tx| {
                tx.append(&stream, ExpectedVersion::Exact(version), batch)?;
                if version > 0 {
                    panic!("deliberate panic in the outbox closure (expected in this test's output)");
                }
                Ok::<_, BoxError>(())
            })
            .await;
        assert!(panicked.is_err());
        assert_eq!(store.stream_version(&stream_id_of("A-1")).await.unwrap(), 2);
        deposit(&repo, "A-1", 1).await;
        assert_eq!(store.stream_version(&stream_id_of("A-1")).await.unwrap(), 3);

        // Seed 002's consistency: a transfer is two appends in one transaction; when the second
        // is refused, the first is not kept either.
        open_account(&repo, "A-2", 0).await;
        let transfer = |stale: bool| {
            let store = store.clone();
            async move {
                let (from, from_version, withdraw) = withdrawal_batch(&store, "A-1", 10).await;
                let (to, to_version, credit) = deposit_batch(&store, "A-2", Uuid::now_v7(), 10).await;
                let to_version = if stale { to_version + 1 } else { to_version };
                store
                    .transaction(move |tx| {
                        tx.append(&from, ExpectedVersion::Exact(from_version), withdraw)?;
                        tx.append(&to, ExpectedVersion::Exact(to_version), credit)?;
                        Ok::<_, BoxError>(())
                    })
                    .await
            }
        };
        assert!(transfer(true).await.is_err());
        assert_eq!(
            repo.load("A-1").await.unwrap().aggregate.balance,
            41,
            "nothing withdrawn"
        );
        transfer(false).await.unwrap();
        let (from, to) = (repo.load("A-1").await.unwrap(), repo.load("A-2").await.unwrap());
        assert_eq!((from.aggregate.balance, to.aggregate.balance), (31, 10));

        the_relay_publishes_the_commands_row(&store).await;
    })
    .await
}

/// Appends a deposit into `A-1` by `command` expecting version 1, in a sqlx transaction that
/// must stay usable whatever the append answers; rolls the transaction back and returns the
/// answer.
async fn append_at_version_1_then_roll_back(
    store: &PostgresStore,
    command: Uuid,
    amount: u64,
) -> Result<AppendOutcome, StoreError> {
    let (stream, _, batch) = deposit_batch(store, "A-1", command, amount).await;
    let mut tx = store.pool().begin().await.unwrap();
    let answer = store
        .append_in_transaction(&mut tx, &stream, ExpectedVersion::Exact(1), batch)
        .await;
    let usable: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(usable, 1, "the transaction is usable after {answer:?}");
    tx.rollback().await.unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_rows_commit_with_their_events_or_not_at_all_on_postgres() {
    bounded(async {
        let schema = postgres().await;
        let store = schema.store().clone();
        let command = outbox_rows_commit_with_their_events(&store).await;
        let repo = accounts(&store);

        // A stale expected version: a typed conflict, and the transaction stays usable.
        let refused = append_at_version_1_then_roll_back(&store, Uuid::now_v7(), 5).await;
        assert!(
            matches!(&refused, Err(StoreError::Conflict(c)) if c.actual == 2),
            "{refused:?}"
        );

        // The first attempt's own batch, sent again with the expectation it had then: still
        // recognised, and the transaction stays usable (the statement refused).
        let retried = append_at_version_1_then_roll_back(&store, command, 40).await;
        assert!(retried.unwrap().already_stored);

        // A transfer: two appends in one transaction; the second refused, neither is kept.
        open_account(&repo, "A-2", 0).await;
        for stale in [true, false] {
            let (from, from_version, withdraw) = withdrawal_batch(&store, "A-1", 10).await;
            let (to, to_version, credit) = deposit_batch(&store, "A-2", Uuid::now_v7(), 10).await;
            let to_version = if stale { to_version + 1 } else { to_version };
            let mut tx = store.pool().begin().await.unwrap();
            store
                .append_in_transaction(&mut tx, &from, ExpectedVersion::Exact(from_version), withdraw)
                .await
                .unwrap();
            match store
                .append_in_transaction(&mut tx, &to, ExpectedVersion::Exact(to_version), credit)
                .await
            {
                Ok(_) => tx.commit().await.unwrap(),
                Err(StoreError::Conflict(_)) if stale => tx.rollback().await.unwrap(),
                Err(other) => panic!("stale {stale}: {other:?}"),
            }
            let balances = (
                repo.load("A-1").await.unwrap().aggregate.balance,
                repo.load("A-2").await.unwrap().aggregate.balance,
            );
            assert_eq!(balances, if stale { (40, 0) } else { (30, 10) }, "stale {stale}");
        }

        the_relay_publishes_the_commands_row(&store).await;
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Seed 001 / 003: projections, read-your-writes, a projection added later.
// ---------------------------------------------------------------------------------------------

/// The change an event makes to the balance read model; `None` for the opening.
fn balance_delta(event: &AccountEvent) -> Option<i64> {
    match event {
        AccountEvent::Opened(_) => None,
        AccountEvent::Deposited(d) => Some(d.amount as i64),
        AccountEvent::Withdrawn(w) => Some(-(w.amount as i64)),
        AccountEvent::Declined(_) => Some(0),
    }
}

struct SqliteBalances;

#[async_trait]
impl Projection for SqliteBalances {
    const NAME: &'static str = "account-balances";
    const AGGREGATE_TYPES: &'static [&'static str] = &["account"];
    type Event = AccountEvent;
    type Context = SqliteContext;

    async fn handle(&self, db: &mut SqliteContext, event: &DecodedEvent<AccountEvent>) -> Result<(), HandlerError> {
        let id = &event.envelope.stream.aggregate_id;
        match (&event.event, balance_delta(&event.event)) {
            (AccountEvent::Opened(opened), _) => {
                db.execute(
                    "INSERT INTO account_balances (account_id, balance) VALUES (?1, ?2)",
                    (id, opened.initial_balance as i64),
                )?;
            }
            (_, Some(delta)) => {
                db.execute(
                    "UPDATE account_balances SET balance = balance + ?1 WHERE account_id = ?2",
                    (delta, id),
                )?;
            }
            (_, None) => {}
        }
        Ok(())
    }

    async fn reset(&self, db: &mut SqliteContext) -> Result<(), HandlerError> {
        db.execute("DELETE FROM account_balances", [])?;
        Ok(())
    }
}

struct PostgresBalances;

#[async_trait]
impl Projection for PostgresBalances {
    const NAME: &'static str = "account-balances";
    const AGGREGATE_TYPES: &'static [&'static str] = &["account"];
    type Event = AccountEvent;
    type Context = sqlx::PgConnection;

    async fn handle(
        &self,
        db: &mut sqlx::PgConnection,
        event: &DecodedEvent<AccountEvent>,
    ) -> Result<(), HandlerError> {
        let id = &event.envelope.stream.aggregate_id;
        match (&event.event, balance_delta(&event.event)) {
            (AccountEvent::Opened(opened), _) => {
                sqlx::query("INSERT INTO account_balances (account_id, balance) VALUES ($1, $2)")
                    .bind(id)
                    .bind(opened.initial_balance as i64)
                    .execute(&mut *db)
                    .await?;
            }
            (_, Some(delta)) => {
                sqlx::query("UPDATE account_balances SET balance = balance + $1 WHERE account_id = $2")
                    .bind(delta)
                    .bind(id)
                    .execute(&mut *db)
                    .await?;
            }
            (_, None) => {}
        }
        Ok(())
    }

    async fn reset(&self, db: &mut sqlx::PgConnection) -> Result<(), HandlerError> {
        sqlx::query("DELETE FROM account_balances").execute(&mut *db).await?;
        Ok(())
    }
}

/// Where an account's balance is.
const BALANCE: NumberColumn = NumberColumn {
    table: "account_balances",
    column: "balance",
    key: "account_id",
};

/// A store that keeps the balance read model in a table of its own database.
#[async_trait]
trait BalanceTable: OwnTables {
    /// The balances table: its name and its columns, in the backend's types.
    const BALANCES_TABLE: &'static str;

    /// Creates the balances table beside the events.
    async fn create_balances(&self) {
        self.create_table(Self::BALANCES_TABLE).await;
    }

    /// The balance of account `id` in the table, if it has a row.
    async fn balance(&self, id: &str) -> Option<i64>;
}

#[async_trait]
impl BalanceTable for SqliteStore {
    const BALANCES_TABLE: &'static str = "account_balances (account_id TEXT PRIMARY KEY, balance INTEGER)";

    async fn balance(&self, id: &str) -> Option<i64> {
        BALANCE.in_sqlite(self, id).await.ok().flatten()
    }
}

#[async_trait]
impl BalanceTable for PostgresStore {
    const BALANCES_TABLE: &'static str = "account_balances (account_id text PRIMARY KEY, balance bigint)";

    async fn balance(&self, id: &str) -> Option<i64> {
        BALANCE.in_postgres(self, id).await.unwrap()
    }
}

/// Commands through `writer`, each followed by a read of the balances table of `reader` once
/// the runner has the command's position: the table must show what the command did, at once.
async fn commands_then_reads<W: Store, R: BalanceTable>(
    writer: &W,
    reader: &R,
    progress: &es_core::ProjectionProgress,
    backend: &str,
) {
    let repo = accounts(writer);
    let executed = open_account(&repo, "RYW-1", 10).await;
    let mut positions = vec![executed.position()];
    progress
        .wait_for(executed.position(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        reader.balance("RYW-1").await,
        Some(10),
        "{backend}: the opening is readable at once"
    );
    for (step, amount) in [25_u64, 7, 300].into_iter().enumerate() {
        let executed = if step == 1 {
            repo.execute("RYW-1", Metadata::new(), |a: &Account| a.withdraw(amount, "x"))
                .await
                .unwrap()
        } else {
            deposit(&repo, "RYW-1", amount).await
        };
        positions.push(executed.position());
        progress
            .wait_for(executed.position(), Duration::from_secs(10))
            .await
            .unwrap();
        let expected = executed.aggregate.balance as i64;
        assert_eq!(reader.balance("RYW-1").await, Some(expected), "{backend}: step {step}");
    }
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "{backend}: positions grow: {positions:?}"
    );

    // A command on another aggregate type: "handled it, or passed it as an event it does not
    // read", so waiting for it returns too.
    let other = schedule_conference(&conferences(writer), 3).await;
    let waited = progress.wait_for(other.position(), Duration::from_secs(10)).await;
    assert!(waited.is_ok(), "{backend}: {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_on_a_balance_projection_on_sqlite() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_in(&dir).await;
        store.create_balances().await;
        // A poll interval longer than the test: only wake-ups can bring the runner the events,
        // which a store opened apart on the same file appends ("through this store, its clones,
        // or any other store opened on the same file").
        let runner = ProjectionRunner::new(SqliteBalances, store.clone(), store.checkpoints()).with_options(
            es_core::RunnerOptions {
                poll_interval: Duration::from_secs(60),
                ..es_core::RunnerOptions::default()
            },
        );
        let progress = runner.progress();
        let writer = store.reopen().await;
        let (stop, running) = run_until_stopped(runner, store.wake_up());

        commands_then_reads(&writer, &store, &progress, "sqlite").await;

        // Another process, which does not run the projection, polls the checkpoint instead.
        let other = store.reopen().await;
        waiting_ends_as_documented(&store, &other.checkpoints(), &progress, stop, running).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_on_a_balance_projection_on_postgres() {
    bounded(async {
        let schema = postgres().await;
        let store = schema.store().clone();
        store.create_balances().await;
        let runner = ProjectionRunner::new(PostgresBalances, store.clone(), store.checkpoints());
        let progress = runner.progress();
        let (stop, running) = run_until_stopped(runner, store.wake_up().await.unwrap());

        commands_then_reads(&store, &store, &progress, "postgres").await;

        // Another process, with a store of its own on the same schema, polls the checkpoint.
        let other = store.reopen().await;
        waiting_ends_as_documented(&store, &other.checkpoints(), &progress, stop, running).await;
    })
    .await
}

/// Read-your-writes from another process (`wait_for_checkpoint` on its own checkpoint store
/// reaches the head), a wait past the head times out, and once the runner stops, waiting says so
/// at once rather than running out the clock.
async fn waiting_ends_as_documented<C: es_core::CheckpointStore>(
    store: &impl GlobalLog,
    other: &C,
    progress: &es_core::ProjectionProgress,
    stop: tokio::sync::oneshot::Sender<()>,
    running: tokio::task::JoinHandle<Result<(), es_core::ProjectionError>>,
) {
    let head = store.read_all(0, 1000).await.unwrap().last().unwrap().position;
    let reached = wait_for_checkpoint(
        other,
        "account-balances",
        head,
        Duration::from_millis(10),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert!(reached >= head);

    let far = head + (1 << 40);
    let timed_out = progress.wait_for(far, Duration::from_millis(100)).await;
    assert!(
        matches!(timed_out, Err(es_core::WaitError::Timeout { .. })),
        "{timed_out:?}"
    );
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    let started = std::time::Instant::now();
    let stopped = progress.wait_for(far, Duration::from_secs(5)).await;
    assert!(
        matches!(stopped, Err(es_core::WaitError::Stopped { .. })),
        "{stopped:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

/// The daily-volume projection's view: money moving.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum VolumeEvent {
    Deposited(MoneyDeposited),
    Withdrawn(MoneyWithdrawn),
}

/// Seed 001's architect: "a new dashboard needs daily transaction volume? Replay the existing
/// events into a new projection and the past is filled in too." Per day: (transactions, volume).
struct DailyVolume;

#[async_trait]
impl Projection for DailyVolume {
    const NAME: &'static str = "daily-volume";
    const AGGREGATE_TYPES: &'static [&'static str] = &["account"];
    const SOURCE_EVENTS: &'static [&'static [EventDescriptor]] = &[AccountEvent::EVENTS];
    type Event = VolumeEvent;
    type Context = BTreeMap<String, (u64, u64)>;

    async fn handle(&self, days: &mut Self::Context, event: &DecodedEvent<VolumeEvent>) -> Result<(), HandlerError> {
        let amount = match &event.event {
            VolumeEvent::Deposited(d) => d.amount,
            VolumeEvent::Withdrawn(w) => w.amount,
        };
        let day = days
            .entry(event.envelope.recorded_at.date_naive().to_string())
            .or_default();
        day.0 += 1;
        day.1 += amount;
        Ok(())
    }

    async fn reset(&self, days: &mut Self::Context) -> Result<(), HandlerError> {
        days.clear();
        Ok(())
    }
}

fn totals(days: &BTreeMap<String, (u64, u64)>) -> (u64, u64) {
    days.values().fold((0, 0), |(n, v), (dn, dv)| (n + dn, v + dv))
}

async fn projection_added_later_scenario<S: Store>(store: S, backend: &str) {
    let repo = accounts(&store);
    for (id, start) in [("D-1", 100), ("D-2", 0), ("D-3", 50)] {
        open_account(&repo, id, start).await;
        deposit(&repo, id, 10).await;
    }
    repo.execute("D-1", Metadata::new(), |a: &Account| a.withdraw(60, "x"))
        .await
        .unwrap();
    repo.execute("D-2", Metadata::new(), |a: &Account| a.withdraw_or_decline(60, "y"))
        .await
        .unwrap(); // declined: no money moves
                   // Events of another aggregate type are not the projection's business.
    let last = schedule_conference(&conferences(&store), 3).await;

    let model = InMemoryReadModel::<BTreeMap<String, (u64, u64)>>::new();
    let runner = ProjectionRunner::new(DailyVolume, store.clone(), model.clone());
    let handled = catch_up_to(&runner, last.position(), TEST_BOUND).await;
    assert_eq!(handled, 4, "{backend}: three deposits and a withdrawal");
    assert_eq!(model.read(totals), (4, 90), "{backend}: the whole history is in");
    let lag = runner.lag().await.unwrap();
    assert_eq!(lag.events_behind, 0, "{backend}: {lag:?}");

    let rebuilt = runner.rebuild(|_| {}).await.unwrap();
    assert_eq!(rebuilt.handled, handled, "{backend}");
    assert_eq!(model.read(totals), (4, 90), "{backend}: a rebuild gives the same model");

    // New events only are handled next time.
    let last = deposit(&repo, "D-3", 5).await;
    assert_eq!(catch_up_to(&runner, last.position(), TEST_BOUND).await, 1, "{backend}");
    assert_eq!(model.read(totals), (5, 95), "{backend}");
}

// ---------------------------------------------------------------------------------------------
// Seed 003: upcasting.
// ---------------------------------------------------------------------------------------------

async fn upcast_scenario<S: Store>(store: S, backend: &str) {
    // What an older release stored: deposits without a source.
    let opened = || raw_event("AccountOpened", 1, r#"{"owner_id":"u-123","initial_balance":0}"#);
    let old = Repository::<Account, S>::stream_id("OLD-1");
    let deposited = raw_event("MoneyDeposited", 1, r#"{"amount":3000,"description":"transfer"}"#);
    append_raw(&store, &old, vec![opened(), deposited]).await;
    let repo = accounts(&store);
    let loaded = repo.load("OLD-1").await.unwrap();
    assert_eq!((loaded.version, loaded.aggregate.balance), (2, 3000), "{backend}");
    assert_eq!(loaded.aggregate.last_source, "unknown", "{backend}: upcast on load");

    // New events go in at the current version, beside the old ones.
    let executed = deposit(&repo, "OLD-1", 2500).await;
    assert_eq!(executed.aggregate.last_source, "bank_transfer", "{backend}");
    let history = repo.events("OLD-1", StreamSlice::all()).await.unwrap();
    let versions: Vec<u32> = history.iter().map(|e| e.envelope.schema_version).collect();
    assert_eq!(versions, [1, 1, 2], "{backend}: stored events are never rewritten");
    match &history[1].event {
        AccountEvent::Deposited(d) => assert_eq!(d.source, "unknown", "{backend}"),
        other => panic!("{backend}: {other:?}"),
    }

    // Projections read through the same upcasting.
    let model = InMemoryReadModel::<BTreeMap<String, (u64, u64)>>::new();
    let runner = ProjectionRunner::new(DailyVolume, store.clone(), model.clone());
    catch_up_to(&runner, executed.position(), TEST_BOUND).await;
    assert_eq!(model.read(totals), (2, 5500), "{backend}");

    // A v1 payload the step cannot upgrade: a typed error, never a panic.
    let odd = Repository::<Account, S>::stream_id("ODD-1");
    let unreadable = raw_event("MoneyDeposited", 1, r#"[3000, "transfer"]"#);
    append_raw(&store, &odd, vec![opened(), unreadable]).await;
    let error = decode_failure(&repo, "ODD-1", backend).await;
    assert_eq!(
        (error.version, error.event_name.as_str()),
        (2, "MoneyDeposited"),
        "{backend}"
    );
    assert!(
        matches!(*error.source, DecodeError::Upcast { .. }),
        "{backend}: {error}"
    );

    // An event stored by a newer release is a typed error naming stream, version and event.
    let newer = Repository::<Account, S>::stream_id("NEW-1");
    let too_new = raw_event(
        "MoneyDeposited",
        3,
        r#"{"amount":1,"description":"x","source":"y","fee":0}"#,
    );
    append_raw(&store, &newer, vec![opened(), too_new]).await;
    let error = decode_failure(&repo, "NEW-1", backend).await;
    assert_eq!((error.stream.clone(), error.version), (newer, 2), "{backend}");
    assert_eq!(error.event_name, "MoneyDeposited", "{backend}");
    assert!(
        matches!(
            *error.source,
            DecodeError::SchemaVersionTooNew {
                stored: 3,
                current: 2,
                ..
            }
        ),
        "{backend}: {error}"
    );
}

/// The typed error loading account `id` fails with, as one of its events cannot be decoded.
async fn decode_failure<S: Store>(
    repo: &Repository<Account, S>,
    id: &str,
    backend: &str,
) -> es_core::RecordDecodeError {
    match repo.load(id).await {
        Err(RepositoryError::Decode(error)) => *error,
        other => panic!("{backend}: {id}: expected a decode error, got {other:?}"),
    }
}

impl SagaLog for sqlx::PgConnection {
    fn push(&mut self, _: String) {}
}

/// The checkout saga with durable checkpoints in the event store's own database, as
/// `SqliteStore::checkpoints` and `PostgresStore::checkpoints` offer them: the reactions are
/// commands on the same store, each `in_reaction_to` its event (the Projection docs' advice).
async fn durable_saga<S, C>(store: S, checkpoints: C, backend: &str)
where
    S: Store,
    C: es_core::CheckpointStore,
    C::Context: SagaLog,
{
    let accounts = accounts(&store);
    let seats = conferences(&store);
    open_account(&accounts, "bob", 50).await;
    schedule_conference(&seats, 10).await;
    let reserved = reserve(&seats, "R-bob", 1, "bob", Metadata::new()).await;
    let saga = CheckoutSaga::<S, C::Context>::new(&accounts, &seats);
    let runner = ProjectionRunner::new(saga, store.clone(), checkpoints);
    // Either the saga does its work or it stops with an error saying why: not silence.
    let outcome = tokio::time::timeout(
        Duration::from_secs(20),
        catch_up_to(&runner, reserved.position(), TEST_BOUND),
    )
    .await;
    let handled =
        outcome.unwrap_or_else(|_| panic!("{backend}: the saga's catch-up neither finished nor failed in 20 s"));
    assert_eq!(handled, 1, "{backend}");
    assert_eq!(accounts.load("bob").await.unwrap().aggregate.declined, 1, "{backend}");
    assert_eq!(
        seats.load("CONF").await.unwrap().aggregate.cancelled,
        ["R-bob"],
        "{backend}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_with_durable_checkpoints_in_the_event_store_does_its_work() {
    bounded(async {
        let schema = postgres().await;
        let store = schema.store().clone();
        durable_saga(store.clone(), store.checkpoints(), "postgres").await;

        // On SQLite the unit holds the file's only write lock while the saga's handler runs,
        // so its commands cannot go to the same file: the runner stops, saying so, instead of
        // waiting for ever.
        let dir = tempfile::tempdir().unwrap();
        let options = es_sqlite::SqliteOptions::default().with_busy_timeout(Duration::from_millis(300));
        let store = SqliteStore::open_with(dir.path().join("events.db"), options)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let accounts = accounts(&store);
        let seats = conferences(&store);
        open_account(&accounts, "bob", 50).await;
        schedule_conference(&seats, 10).await;
        reserve(&seats, "R-bob", 1, "bob", Metadata::new()).await;
        let saga = CheckoutSaga::<SqliteStore, SqliteContext>::new(&accounts, &seats);
        let runner = ProjectionRunner::new(saga, store.clone(), store.checkpoints());
        let stopped = tokio::time::timeout(Duration::from_secs(20), runner.catch_up())
            .await
            .expect("the runner stops rather than waiting for ever");
        let error = stopped.expect_err("the saga cannot write to the file its unit holds");
        let message = error.to_string();
        assert!(
            message.contains("held by a unit of work of projection") && message.contains("another file"),
            "{message}"
        );

        // As SqliteCheckpoints' docs say: the saga's checkpoints in another file.
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_in(&dir).await;
        let saga_state = SqliteStore::open(dir.path().join("saga.db")).await.unwrap();
        saga_state.migrate().await.unwrap();
        durable_saga(store.clone(), saga_state.checkpoints(), "sqlite").await;
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Each generic scenario above, as a test on both backends.
// ---------------------------------------------------------------------------------------------

/// One `#[tokio::test]` per `test: scenario` pair, running `scenario(store, backend)` on a fresh
/// SQLite file, then on a fresh PostgreSQL schema, within the test bound.
macro_rules! on_both_backends {
    ($($test:ident: $scenario:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                bounded(async {
                    let dir = tempfile::tempdir().expect("a temporary directory");
                    $scenario(sqlite_in(&dir).await, "sqlite").await;
                    let schema = postgres().await;
                    $scenario(schema.store().clone(), "postgres").await;
                })
                .await
            }
        )+
    };
}

on_both_backends!(
    overdraft_and_invalid_amounts_are_typed_refusals_that_write_nothing: overdraft_scenario,
    a_declined_withdrawal_is_recorded_and_time_travel_shows_the_balance_then: time_travel_scenario,
    snapshots_every_n_events_load_the_same_state_as_a_full_replay: snapshots_scenario,
    a_stale_or_unreadable_snapshot_falls_back_to_replay: bad_snapshot_scenario,
    racing_withdrawals_never_overdraw_and_racing_openings_open_once: racing_withdrawals_scenario,
    without_retries_the_loser_gets_a_typed_conflict_naming_the_actual_version: typed_conflict_scenario,
    a_stale_cache_costs_a_conflict_never_an_overdraft: stale_cache_scenario,
    the_last_seats_go_to_exactly_as_many_buyers_as_there_are_seats: seats_scenario,
    a_client_request_sent_again_is_answered_not_carried_out_twice: client_retry_scenario,
    an_idempotent_consumer_acts_once_for_an_event_delivered_three_times: idempotent_consumer_scenario,
    a_saga_compensates_the_reservation_when_payment_is_declined_and_replays_safely: saga_scenario,
    correlation_and_causation_travel_from_command_to_reaction_and_metadata_comes_back_as_given: correlation_and_metadata_scenario,
    a_projection_added_later_fills_in_the_whole_history_and_rebuilds_the_same: projection_added_later_scenario,
    events_stored_at_an_older_schema_version_are_upcast_on_load_and_in_projections: upcast_scenario,
);
