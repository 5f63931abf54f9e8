//! The scenarios of the design seeds (Account with deposits and withdrawals, snapshots, time
//! travel, compensation, idempotent consumers, seat reservations, read-your-writes, upcasting),
//! written as an outside user would: only `es_core`'s public API and the in-memory store.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use es_core::{
    event, Aggregate, Apply, AsOf, CommandError, DecodeError, DecodedEvent, EventDescriptor, EventSet, EventStore,
    EventType, ExpectedVersion, InMemoryReadModel, InMemoryStore, Metadata, NewEvent, Projection, ProjectionRunner,
    Repository, RepositoryError, RetryPolicy, Snapshot, SnapshotStore, StreamSlice, WaitError,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// The Account domain of seeds 001 and 003.
// ---------------------------------------------------------------------------------------------

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct AccountOpened {
    pub owner_id: String,
    pub initial_balance: u64,
}

/// Version 1 had no `source` (seed 003, "Event Upcasting"): it reads as `"unknown"`.
#[event(version = 2)]
#[upcast(from = 1, json = deposit_v1_add_source)]
#[derive(Debug, Clone, PartialEq)]
pub struct MoneyDeposited {
    pub amount: u64,
    pub description: String,
    pub source: String,
}

fn deposit_v1_add_source(mut v1: Value) -> Result<Value, es_core::UpcastError> {
    let fields = v1
        .as_object_mut()
        .ok_or_else(|| es_core::UpcastError::new("expected a JSON object"))?;
    fields.entry("source").or_insert_with(|| "unknown".into());
    Ok(v1)
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct MoneyWithdrawn {
    pub amount: u64,
    pub description: String,
}

/// A refused withdrawal kept for the audit trail (seed 001: "the failed withdrawal is recorded").
#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct WithdrawalRejected {
    pub amount: u64,
    pub reason: String,
}

/// The compensating event of a withdrawal (seed 002: undo by appending, never by rewriting).
#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct WithdrawalReversed {
    pub amount: u64,
    pub reason: String,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum AccountEvent {
    Opened(AccountOpened),
    Deposited(MoneyDeposited),
    Withdrawn(MoneyWithdrawn),
    WithdrawalRejected(WithdrawalRejected),
    Reversed(WithdrawalReversed),
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "account", event = AccountEvent)]
pub struct Account {
    owner_id: Option<String>,
    balance: u64,
    rejected_withdrawals: u32,
    deposit_sources: Vec<String>,
}

impl Apply<AccountOpened> for Account {
    fn apply(&mut self, event: &AccountOpened) {
        self.owner_id = Some(event.owner_id.clone());
        self.balance = event.initial_balance;
    }
}
impl Apply<MoneyDeposited> for Account {
    fn apply(&mut self, event: &MoneyDeposited) {
        self.balance += event.amount;
        self.deposit_sources.push(event.source.clone());
    }
}
impl Apply<MoneyWithdrawn> for Account {
    fn apply(&mut self, event: &MoneyWithdrawn) {
        self.balance -= event.amount;
    }
}
impl Apply<WithdrawalRejected> for Account {
    fn apply(&mut self, _: &WithdrawalRejected) {
        self.rejected_withdrawals += 1;
    }
}
impl Apply<WithdrawalReversed> for Account {
    fn apply(&mut self, event: &WithdrawalReversed) {
        self.balance += event.amount;
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AccountError {
    #[error("the account is already open")]
    AlreadyOpen,
    #[error("the account is not open")]
    NotOpen,
    #[error("the amount must be positive")]
    NotPositive,
    #[error("insufficient balance: {balance} < {requested}")]
    Insufficient { balance: u64, requested: u64 },
}

impl Account {
    fn open(&self, owner: &str, initial_balance: u64) -> Result<Vec<AccountEvent>, AccountError> {
        if self.owner_id.is_some() {
            return Err(AccountError::AlreadyOpen);
        }
        Ok(vec![AccountOpened {
            owner_id: owner.into(),
            initial_balance,
        }
        .into()])
    }

    fn deposit(&self, amount: u64, source: &str) -> Result<Vec<AccountEvent>, AccountError> {
        self.ensure_open()?;
        if amount == 0 {
            return Err(AccountError::NotPositive);
        }
        Ok(vec![MoneyDeposited {
            amount,
            description: format!("deposit of {amount}"),
            source: source.into(),
        }
        .into()])
    }

    fn withdraw(&self, amount: u64) -> Result<Vec<AccountEvent>, AccountError> {
        self.ensure_open()?;
        if amount == 0 {
            return Err(AccountError::NotPositive);
        }
        if self.balance < amount {
            return Err(AccountError::Insufficient {
                balance: self.balance,
                requested: amount,
            });
        }
        Ok(vec![MoneyWithdrawn {
            amount,
            description: format!("withdrawal of {amount}"),
        }
        .into()])
    }

    /// A withdrawal whose refusal is itself recorded.
    fn withdraw_or_record(&self, amount: u64) -> Result<Vec<AccountEvent>, AccountError> {
        match self.withdraw(amount) {
            Err(AccountError::Insufficient { balance, .. }) => Ok(vec![WithdrawalRejected {
                amount,
                reason: format!("insufficient balance ({balance})"),
            }
            .into()]),
            other => other,
        }
    }

    fn ensure_open(&self) -> Result<(), AccountError> {
        match self.owner_id {
            Some(_) => Ok(()),
            None => Err(AccountError::NotOpen),
        }
    }
}

type Accounts = Repository<Account, InMemoryStore>;

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::now_v7())
}

async fn open_account(accounts: &Accounts, id: &str, initial: u64) {
    accounts
        .execute(id, Metadata::new(), |account: &Account| {
            account.open("owner-1", initial)
        })
        .await
        .expect("account opened");
}

// ---------------------------------------------------------------------------------------------
// 001: commands, validation, audit trail, stream reads from a version.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn account_commands_validate_and_refusals_write_nothing() {
    let accounts = Accounts::new(InMemoryStore::new());
    let id = new_id("acc");

    let not_open = accounts
        .execute(&id, Metadata::new(), |a: &Account| a.deposit(10, "atm"))
        .await;
    assert!(
        matches!(not_open, Err(CommandError::Rejected(AccountError::NotOpen))),
        "{not_open:?}"
    );

    open_account(&accounts, &id, 10_000).await;
    let deposited = accounts
        .execute(&id, Metadata::new(), |a: &Account| a.deposit(5_000, "bank_transfer"))
        .await
        .expect("deposit");
    assert_eq!((deposited.version, deposited.aggregate.balance), (2, 15_000));
    accounts
        .execute(&id, Metadata::new(), |a: &Account| a.withdraw(3_000))
        .await
        .expect("withdrawal");

    let refused = accounts
        .execute(&id, Metadata::new(), |a: &Account| a.withdraw(1_000_000))
        .await;
    match refused {
        Err(CommandError::Rejected(AccountError::Insufficient { balance, requested })) => {
            assert_eq!((balance, requested), (12_000, 1_000_000))
        }
        other => panic!("expected an insufficient-balance refusal, got {other:?}"),
    }
    let zero = accounts
        .execute(&id, Metadata::new(), |a: &Account| a.deposit(0, "atm"))
        .await;
    assert!(matches!(zero, Err(CommandError::Rejected(AccountError::NotPositive))));
    let again = accounts
        .execute(&id, Metadata::new(), |a: &Account| a.open("x", 1))
        .await;
    assert!(matches!(again, Err(CommandError::Rejected(AccountError::AlreadyOpen))));

    let loaded = accounts.load(&id).await.expect("load");
    assert_eq!(
        (loaded.version, loaded.aggregate.balance),
        (3, 12_000),
        "refusals wrote nothing"
    );
    assert_eq!(
        accounts
            .store()
            .stream_version(&Accounts::stream_id(&id))
            .await
            .unwrap(),
        3
    );
}

#[tokio::test]
async fn a_refused_withdrawal_can_be_recorded_and_the_stream_read_from_a_version() {
    let accounts = Accounts::new(InMemoryStore::new());
    let id = new_id("acc");
    open_account(&accounts, &id, 100).await;
    accounts
        .execute(&id, Metadata::new(), |a: &Account| a.withdraw_or_record(500))
        .await
        .expect("the failure is an event");
    accounts
        .execute(&id, Metadata::new(), |a: &Account| a.withdraw_or_record(40))
        .await
        .expect("withdrawal");

    let account = accounts.load(&id).await.expect("load").aggregate;
    assert_eq!((account.balance, account.rejected_withdrawals), (60, 1));

    // getStreamFromVersion: the events after version 1, decoded, with their envelopes.
    let later = accounts.events(&id, StreamSlice::from_version(2)).await.expect("read");
    let versions: Vec<u64> = later.iter().map(|e| e.envelope.version).collect();
    assert_eq!(versions, [2, 3]);
    assert!(matches!(&later[0].event, AccountEvent::WithdrawalRejected(r) if r.amount == 500));
    assert_eq!(later[0].envelope.event_name, "WithdrawalRejected");
    assert!(matches!(&later[1].event, AccountEvent::Withdrawn(w) if w.amount == 40));
}

// ---------------------------------------------------------------------------------------------
// 001/002: time travel, by version and by instant.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn time_travel_by_version_and_by_instant() {
    let accounts = Accounts::new(InMemoryStore::new());
    let id = new_id("acc");
    let before_anything = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(15)).await;
    open_account(&accounts, &id, 0).await;
    tokio::time::sleep(Duration::from_millis(15)).await;
    accounts
        .execute(&id, Metadata::new(), |a: &Account| a.deposit(3_000, "bank_transfer"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(15)).await;
    let after_first_deposit = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(15)).await;
    accounts
        .execute(&id, Metadata::new(), |a: &Account| a.deposit(2_500, "payroll"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(15)).await;
    accounts
        .execute(&id, Metadata::new(), |a: &Account| a.withdraw(500))
        .await
        .unwrap();

    assert_eq!(accounts.load(&id).await.unwrap().aggregate.balance, 5_000);
    let at_two = accounts.load_at_version(&id, 2).await.unwrap();
    assert_eq!((at_two.version, at_two.aggregate.balance), (2, 3_000));
    let at_zero = accounts.load_at_version(&id, 0).await.unwrap();
    assert_eq!((at_zero.version, at_zero.aggregate.balance), (0, 0));
    let beyond = accounts.load_at_version(&id, 99).await.unwrap();
    assert_eq!((beyond.version, beyond.aggregate.balance), (4, 5_000));

    let then = accounts.load_at_instant(&id, after_first_deposit).await.unwrap();
    assert_eq!((then.version, then.aggregate.balance), (2, 3_000));
    let before = accounts.load_at_instant(&id, before_anything).await.unwrap();
    assert_eq!((before.version, before.aggregate), (0, Account::default()));

    // "at or before": an event's own recorded instant includes it.
    let events = accounts.events(&id, StreamSlice::all()).await.unwrap();
    let third_recorded = events[2].envelope.recorded_at;
    let at_third = accounts.load_at_instant(&id, third_recorded).await.unwrap();
    assert_eq!((at_third.version, at_third.aggregate.balance), (3, 5_500));
    // The same through AsOf, as the tools do.
    let stream = Accounts::stream_id(&id);
    let via_as_of = accounts
        .load_stream(&stream, AsOf::Instant(third_recorded))
        .await
        .unwrap();
    assert_eq!(via_as_of, at_third);
}

// ---------------------------------------------------------------------------------------------
// 001/003: snapshots every N events, used for loading, never for an earlier point in time.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn snapshots_every_n_events_are_used_for_loading_but_not_for_the_past() {
    let store = InMemoryStore::new();
    let accounts = Accounts::new(store.clone()).with_snapshot_every(10);
    let id = new_id("acc");
    open_account(&accounts, &id, 0).await;
    for _ in 0..24 {
        accounts
            .execute(&id, Metadata::new(), |a: &Account| a.deposit(1, "atm"))
            .await
            .unwrap();
    }
    let stream = Accounts::stream_id(&id);
    let snapshot = store
        .load_snapshot(&stream)
        .await
        .unwrap()
        .expect("a snapshot was taken");
    assert_eq!(snapshot.version, 20, "the latest multiple of 10 reached");
    let state: Account = serde_json::from_slice(&snapshot.state).unwrap();
    assert_eq!(state.balance, 19);

    // Prove loading starts from the snapshot: doctor it, and the doctored state shows.
    let doctored = Account {
        balance: 1_000_000,
        ..state.clone()
    };
    store
        .save_snapshot(Snapshot {
            state: serde_json::to_vec(&doctored).unwrap(),
            taken_at: chrono::Utc::now(),
            ..snapshot.clone()
        })
        .await
        .unwrap();
    let loaded = accounts.load(&id).await.unwrap();
    assert_eq!((loaded.version, loaded.aggregate.balance), (25, 1_000_005));

    // Time travel to before the snapshot replays the events instead.
    let at_fifteen = accounts.load_at_version(&id, 15).await.unwrap();
    assert_eq!((at_fifteen.version, at_fifteen.aggregate.balance), (15, 14));
    let fifteenth = accounts
        .events(&id, StreamSlice::from_version(15).to_version(15))
        .await
        .unwrap();
    let earlier = accounts
        .load_at_instant(&id, fifteenth[0].envelope.recorded_at)
        .await
        .unwrap();
    assert_eq!((earlier.version, earlier.aggregate.balance), (15, 14));

    // A repository without snapshots never reads them.
    let plain = Accounts::new(store.clone());
    assert_eq!(plain.load(&id).await.unwrap().aggregate.balance, 24);
}

// ---------------------------------------------------------------------------------------------
// 002/004: optimistic concurrency, and the conference's seat availability under contention.
// ---------------------------------------------------------------------------------------------

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct ConferenceCreated {
    pub seats: u32,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct SeatsReserved {
    pub reservation: String,
    pub quantity: u32,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct SeatsCancelled {
    pub reservation: String,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum SeatEvent {
    Created(ConferenceCreated),
    Reserved(SeatsReserved),
    Cancelled(SeatsCancelled),
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "seat-availability", event = SeatEvent)]
pub struct SeatAvailability {
    capacity: u32,
    reservations: BTreeMap<String, u32>,
}

impl Apply<ConferenceCreated> for SeatAvailability {
    fn apply(&mut self, event: &ConferenceCreated) {
        self.capacity = event.seats;
    }
}
impl Apply<SeatsReserved> for SeatAvailability {
    fn apply(&mut self, event: &SeatsReserved) {
        self.reservations.insert(event.reservation.clone(), event.quantity);
    }
}
impl Apply<SeatsCancelled> for SeatAvailability {
    fn apply(&mut self, event: &SeatsCancelled) {
        self.reservations.remove(&event.reservation);
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SeatError {
    #[error("only {left} seats left")]
    SoldOut { left: u32 },
    #[error("no such reservation")]
    UnknownReservation,
}

impl SeatAvailability {
    fn left(&self) -> u32 {
        self.capacity - self.reservations.values().sum::<u32>()
    }

    fn reserve(&self, reservation: &str, quantity: u32) -> Result<Vec<SeatEvent>, SeatError> {
        if quantity > self.left() {
            return Err(SeatError::SoldOut { left: self.left() });
        }
        Ok(vec![SeatsReserved {
            reservation: reservation.into(),
            quantity,
        }
        .into()])
    }

    fn cancel(&self, reservation: &str) -> Result<Vec<SeatEvent>, SeatError> {
        if !self.reservations.contains_key(reservation) {
            return Err(SeatError::UnknownReservation);
        }
        Ok(vec![SeatsCancelled {
            reservation: reservation.into(),
        }
        .into()])
    }
}

#[tokio::test]
async fn two_copies_loaded_together_cannot_both_be_saved() {
    let seats = Repository::<SeatAvailability, _>::new(InMemoryStore::new());
    let conference = new_id("conf");
    seats
        .create(&conference, Metadata::new(), |_: &SeatAvailability| {
            vec![ConferenceCreated { seats: 2 }.into()]
        })
        .await
        .unwrap();

    let mut first = seats.load_for_update(&conference).await.unwrap();
    let mut second = seats.load_for_update(&conference).await.unwrap();
    first.decide(|s| s.reserve("r-1", 2)).unwrap();
    seats.save(&mut first, Metadata::new()).await.unwrap();
    second.decide(|s| s.reserve("r-2", 2)).unwrap();
    match seats.save(&mut second, Metadata::new()).await {
        Err(RepositoryError::Conflict(conflict)) => {
            assert_eq!(conflict.expected, ExpectedVersion::Exact(1));
            assert_eq!(conflict.actual, 2);
        }
        other => panic!("expected a concurrency conflict, got {other:?}"),
    }
    assert_eq!(second.pending().len(), 1, "the refused change stays pending");
    let now = seats.load(&conference).await.unwrap().aggregate;
    assert_eq!(
        now.reservations.keys().collect::<Vec<_>>(),
        ["r-1"],
        "the store is not overbooked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reservations_never_overbook_and_cancellations_free_seats() {
    let patient = RetryPolicy::default()
        .with_max_attempts(1_000)
        .with_max_elapsed(Duration::from_secs(30))
        .with_backoff(Duration::from_millis(1), Duration::from_millis(10));
    let seats = Repository::<SeatAvailability, _>::new(InMemoryStore::new()).with_retry(patient);
    let conference = new_id("conf");
    seats
        .execute(&conference, Metadata::new(), |_: &SeatAvailability| {
            vec![ConferenceCreated { seats: 10 }.into()]
        })
        .await
        .unwrap();

    let mut tasks = Vec::new();
    for n in 0..30 {
        let seats = seats.clone();
        let conference = conference.clone();
        tasks.push(tokio::spawn(async move {
            let reservation = format!("r-{n}");
            seats
                .execute(&conference, Metadata::new(), move |s: &SeatAvailability| {
                    s.reserve(&reservation, 1)
                })
                .await
        }));
    }
    let (mut accepted, mut sold_out, mut retried) = (0, 0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(executed) => {
                accepted += 1;
                retried += u32::from(executed.attempts > 1);
            }
            Err(CommandError::Rejected(SeatError::SoldOut { left: 0 })) => sold_out += 1,
            Err(other) => panic!("unexpected outcome: {other:?}"),
        }
    }
    assert_eq!((accepted, sold_out), (10, 20));
    let availability = seats.load(&conference).await.unwrap();
    assert_eq!(availability.aggregate.left(), 0);
    assert_eq!(availability.version, 11);
    let _ = retried; // contention is likely but not guaranteed on 2 cores

    let some = availability.aggregate.reservations.keys().next().unwrap().clone();
    seats
        .execute(&conference, Metadata::new(), |s: &SeatAvailability| s.cancel(&some))
        .await
        .unwrap();
    seats
        .execute(&conference, Metadata::new(), |s: &SeatAvailability| {
            s.reserve("late", 1)
        })
        .await
        .expect("a cancelled seat can be reserved again");
    let unknown = seats
        .execute(&conference, Metadata::new(), |s: &SeatAvailability| s.cancel("nobody"))
        .await;
    assert!(matches!(
        unknown,
        Err(CommandError::Rejected(SeatError::UnknownReservation))
    ));
}

// ---------------------------------------------------------------------------------------------
// 002/003: idempotent commands, idempotent consumers, correlation and causation.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_command_sent_again_with_its_command_id_is_not_applied_twice() {
    let accounts = Accounts::new(InMemoryStore::new());
    let id = new_id("acc");
    open_account(&accounts, &id, 500).await;

    let request = Uuid::now_v7();
    let first = accounts
        .execute(&id, Metadata::new().with_command_id(request), |a: &Account| {
            a.withdraw(500)
        })
        .await
        .unwrap();
    assert!(!first.already_stored);
    // The answer was lost; the client sends the same request again. Deciding again would now
    // refuse (the balance is 0), but the original outcome comes back.
    let again = accounts
        .execute(&id, Metadata::new().with_command_id(request), |a: &Account| {
            a.withdraw(500)
        })
        .await
        .expect("recognised, not refused");
    assert!(again.already_stored);
    assert_eq!(again.appended, first.appended);
    assert_eq!(again.version, first.version);
    assert_eq!(again.aggregate.balance, 0);
    assert_eq!(again.position(), first.position());
    let loaded = accounts.load(&id).await.unwrap();
    assert_eq!((loaded.version, loaded.aggregate.balance), (2, 0));

    let found = accounts.find_command(&id, request).await.unwrap().expect("stored");
    assert_eq!(found.appended, first.appended);
    assert!(accounts.find_command(&id, Uuid::now_v7()).await.unwrap().is_none());

    // The same request id on another account is another command.
    let other = new_id("acc");
    open_account(&accounts, &other, 500).await;
    let elsewhere = accounts
        .execute(&other, Metadata::new().with_command_id(request), |a: &Account| {
            a.withdraw(100)
        })
        .await
        .unwrap();
    assert!(!elsewhere.already_stored);
    assert_eq!(accounts.load(&other).await.unwrap().aggregate.balance, 400);

    // Load-change-save is idempotent too.
    let save_id = Uuid::now_v7();
    let mut copy = accounts.load_for_update(&other).await.unwrap();
    copy.decide(|a| a.deposit(1, "atm")).unwrap();
    let mut resent = copy.clone();
    let saved = accounts
        .save(&mut copy, Metadata::new().with_command_id(save_id))
        .await
        .unwrap();
    let saved_again = accounts
        .save(&mut resent, Metadata::new().with_command_id(save_id))
        .await
        .unwrap();
    assert!(saved_again.already_stored);
    assert_eq!(saved_again.appended, saved.appended);
    assert_eq!(accounts.load(&other).await.unwrap().aggregate.balance, 401);
}

#[tokio::test]
async fn metadata_carries_correlation_causation_and_actor() {
    let accounts = Accounts::new(InMemoryStore::new());
    let id = new_id("acc");
    let request = Uuid::now_v7();
    let executed = accounts
        .execute(
            &id,
            Metadata::new()
                .with_correlation_id(request)
                .with_actor("user_456")
                .with_extra("ip", "203.0.113.7"),
            |a: &Account| a.open("user_456", 0),
        )
        .await
        .unwrap();
    let stored = accounts.events(&id, StreamSlice::all()).await.unwrap();
    let metadata = &stored[0].envelope.metadata;
    assert_eq!(metadata.correlation_id, Some(request));
    assert_eq!(metadata.command_id, Some(executed.command_id));
    assert_eq!(metadata.causation_id, Some(executed.command_id));
    assert_eq!(metadata.actor.as_deref(), Some("user_456"));
    assert_eq!(metadata.extra["ip"], "203.0.113.7");
    assert_eq!(stored[0].envelope.event_id, executed.appended[0].event_id);
}

/// A transfer that cannot complete is compensated: the withdrawal stays in the history and a
/// reversing event, caused by it, restores the balance (seed 002, compensating transactions).
#[tokio::test]
async fn a_failed_transfer_is_compensated_by_a_new_event_caused_by_the_first() {
    let accounts = Accounts::new(InMemoryStore::new());
    let (from, to) = (new_id("acc"), new_id("acc"));
    open_account(&accounts, &from, 1_000).await;
    // `to` is never opened: the deposit half of the transfer will be refused.

    let transfer = Uuid::now_v7();
    let withdrawn = accounts
        .execute(&from, Metadata::new().with_correlation_id(transfer), |a: &Account| {
            a.withdraw(300)
        })
        .await
        .unwrap();
    let withdrawal = accounts
        .store()
        .read_event(withdrawn.appended[0].event_id)
        .await
        .unwrap()
        .expect("the withdrawal is stored");

    let deposit = accounts
        .execute(&to, Metadata::caused_by(&withdrawal), |a: &Account| {
            a.deposit(300, "transfer")
        })
        .await;
    assert!(matches!(deposit, Err(CommandError::Rejected(AccountError::NotOpen))));

    let compensated = accounts
        .execute(
            &from,
            Metadata::caused_by(&withdrawal).with_actor("process:transfers"),
            |_: &Account| {
                vec![WithdrawalReversed {
                    amount: 300,
                    reason: "transfer target not open".into(),
                }
                .into()]
            },
        )
        .await
        .unwrap();
    assert_eq!(compensated.aggregate.balance, 1_000);

    let history = accounts.events(&from, StreamSlice::all()).await.unwrap();
    let names: Vec<&str> = history.iter().map(|e| e.envelope.event_name.as_str()).collect();
    assert_eq!(names, ["AccountOpened", "MoneyWithdrawn", "WithdrawalReversed"]);
    let reversal = &history[2].envelope.metadata;
    assert_eq!(reversal.causation_id, Some(withdrawal.event_id));
    assert_eq!(
        reversal.correlation_id,
        Some(transfer),
        "one conversation, one correlation id"
    );
    // The past is intact: at version 2 the money was out.
    assert_eq!(accounts.load_at_version(&from, 2).await.unwrap().aggregate.balance, 700);
    assert_eq!(
        accounts.load(&to).await.unwrap().version,
        0,
        "nothing written to the target"
    );
}

// A consumer with effects of its own: loyalty points credited per deposit, at least once.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct PointsCredited {
    pub points: u64,
    pub for_event: Uuid,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum LoyaltyEvent {
    Credited(PointsCredited),
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "loyalty", event = LoyaltyEvent)]
pub struct Loyalty {
    points: u64,
}

impl Apply<PointsCredited> for Loyalty {
    fn apply(&mut self, event: &PointsCredited) {
        self.points += event.points;
    }
}

#[tokio::test]
async fn an_idempotent_consumer_applies_a_redelivered_event_once() {
    let store = InMemoryStore::new();
    let accounts = Accounts::new(store.clone());
    let loyalty = Repository::<Loyalty, _>::new(store.clone());
    let id = new_id("acc");
    open_account(&accounts, &id, 0).await;
    let deposited = accounts
        .execute(&id, Metadata::new(), |a: &Account| a.deposit(250, "payroll"))
        .await
        .unwrap();
    let event = store.read_event(deposited.appended[0].event_id).await.unwrap().unwrap();

    // The consumer names its reaction: a redelivery is the same command.
    let consume = |event: es_core::RecordedEvent| {
        let loyalty = loyalty.clone();
        let id = id.clone();
        async move {
            let decoded: AccountEvent = es_core::decode_record(&event).unwrap();
            let AccountEvent::Deposited(deposit) = decoded else {
                return None;
            };
            let metadata = Metadata::in_reaction_to(&event, "credit-loyalty-points");
            let credited = loyalty
                .execute(&id, metadata, |_: &Loyalty| {
                    vec![PointsCredited {
                        points: deposit.amount / 10,
                        for_event: event.event_id,
                    }
                    .into()]
                })
                .await
                .unwrap();
            Some(credited.already_stored)
        }
    };
    assert_eq!(consume(event.clone()).await, Some(false));
    assert_eq!(consume(event.clone()).await, Some(true), "the redelivery is recognised");
    let points = loyalty.load(&id).await.unwrap();
    assert_eq!((points.version, points.aggregate.points), (1, 25));
}

// ---------------------------------------------------------------------------------------------
// 001/003: projections: exactly once, resumed from a checkpoint, rebuilt, lag, read-your-writes.
// ---------------------------------------------------------------------------------------------

/// The account_balances read model of seeds 001 and 003.
#[derive(Default)]
struct Balances {
    /// When set: refuses any deposit of exactly 13 until it is `true` (a read model's bug,
    /// fixed later).
    thirteen_fixed: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

#[es_core::async_trait]
impl Projection for Balances {
    const NAME: &'static str = "account-balances";
    const AGGREGATE_TYPES: &'static [&'static str] = &["account"];
    type Event = AccountEvent;
    type Context = BTreeMap<String, u64>;

    async fn handle(
        &self,
        balances: &mut Self::Context,
        event: &DecodedEvent<AccountEvent>,
    ) -> Result<(), es_core::HandlerError> {
        if let (AccountEvent::Deposited(deposit), Some(fixed)) = (&event.event, &self.thirteen_fixed) {
            if deposit.amount == 13 && !fixed.load(std::sync::atomic::Ordering::SeqCst) {
                return Err("the read model rejects 13".into());
            }
        }
        let balance = balances.entry(event.envelope.stream.aggregate_id.clone()).or_default();
        match &event.event {
            AccountEvent::Opened(opened) => *balance = opened.initial_balance,
            AccountEvent::Deposited(deposit) => *balance += deposit.amount,
            AccountEvent::Withdrawn(withdrawal) => *balance -= withdrawal.amount,
            AccountEvent::Reversed(reversal) => *balance += reversal.amount,
            AccountEvent::WithdrawalRejected(_) => {}
        }
        Ok(())
    }

    async fn reset(&self, balances: &mut Self::Context) -> Result<(), es_core::HandlerError> {
        balances.clear();
        Ok(())
    }
}

/// The projection's view of movements only (seed 001: a "daily volume" dashboard added later).
#[event]
#[derive(Debug, Clone)]
pub enum MovementEvent {
    Deposited(MoneyDeposited),
    Withdrawn(MoneyWithdrawn),
}

/// Movements and the distinct events counted, per day.
#[derive(Debug, Default, Clone)]
struct Volume {
    per_day: BTreeMap<chrono::NaiveDate, u64>,
    seen: BTreeSet<Uuid>,
}

struct DailyVolume;

#[es_core::async_trait]
impl Projection for DailyVolume {
    const NAME: &'static str = "daily-volume";
    const AGGREGATE_TYPES: &'static [&'static str] = &["account"];
    const SOURCE_EVENTS: &'static [&'static [EventDescriptor]] = &[AccountEvent::EVENTS];
    type Event = MovementEvent;
    type Context = Volume;

    async fn handle(
        &self,
        volume: &mut Volume,
        event: &DecodedEvent<MovementEvent>,
    ) -> Result<(), es_core::HandlerError> {
        assert!(volume.seen.insert(event.envelope.event_id), "an event handled twice");
        let amount = match &event.event {
            MovementEvent::Deposited(deposit) => deposit.amount,
            MovementEvent::Withdrawn(withdrawal) => withdrawal.amount,
        };
        *volume
            .per_day
            .entry(event.envelope.recorded_at.date_naive())
            .or_default() += amount;
        Ok(())
    }

    async fn reset(&self, volume: &mut Volume) -> Result<(), es_core::HandlerError> {
        *volume = Volume::default();
        Ok(())
    }
}

async fn some_history(accounts: &Accounts) -> (String, String) {
    let (a, b) = (new_id("acc"), new_id("acc"));
    open_account(accounts, &a, 100).await;
    open_account(accounts, &b, 0).await;
    accounts
        .execute(&a, Metadata::new(), |x: &Account| x.deposit(50, "atm"))
        .await
        .unwrap();
    accounts
        .execute(&b, Metadata::new(), |x: &Account| x.deposit(70, "atm"))
        .await
        .unwrap();
    accounts
        .execute(&a, Metadata::new(), |x: &Account| x.withdraw(30))
        .await
        .unwrap();
    accounts
        .execute(&a, Metadata::new(), |x: &Account| x.withdraw_or_record(10_000))
        .await
        .unwrap();
    (a, b)
}

#[tokio::test]
async fn projections_resume_from_their_checkpoint_and_rebuild_to_the_same_model() {
    let store = InMemoryStore::new();
    let accounts = Accounts::new(store.clone());
    let (a, b) = some_history(&accounts).await;

    let model = InMemoryReadModel::<BTreeMap<String, u64>>::new();
    let runner = ProjectionRunner::new(Balances::default(), store.clone(), model.clone());
    let lag = runner.lag().await.unwrap();
    assert_eq!((lag.checkpoint, lag.events_behind), (0, 6));
    assert!(lag.seconds_behind >= 0.0);
    let first = runner.catch_up().await.unwrap();
    assert_eq!((first.read, first.handled, first.position), (6, 6, 6));
    assert_eq!(model.read(|m| (m[&a], m[&b])), (120, 70));
    let lag = runner.lag().await.unwrap();
    assert_eq!((lag.checkpoint, lag.events_behind, lag.seconds_behind), (6, 0, 0.0));

    // A new process: a new runner on the same model resumes, it does not count twice.
    drop(runner);
    accounts
        .execute(&b, Metadata::new(), |x: &Account| x.withdraw(20))
        .await
        .unwrap();
    let resumed = ProjectionRunner::new(Balances::default(), store.clone(), model.clone());
    let second = resumed.catch_up().await.unwrap();
    assert_eq!((second.handled, second.position), (1, 7));
    assert_eq!(resumed.catch_up().await.unwrap().handled, 0, "caught up: nothing again");
    assert_eq!(model.read(|m| (m[&a], m[&b])), (120, 50));

    let mut reports = Vec::new();
    let rebuilt = resumed.rebuild(|progress| reports.push(progress)).await.unwrap();
    assert_eq!((rebuilt.handled, rebuilt.position), (7, 7));
    assert!(!reports.is_empty());
    assert_eq!(reports.last().unwrap().done, 7);
    assert_eq!(model.read(|m| (m.len(), m[&a], m[&b])), (2, 120, 50));

    // A dashboard added later fills in the past from the same events.
    let volume = InMemoryReadModel::<Volume>::new();
    let dashboard = ProjectionRunner::new(DailyVolume, store.clone(), volume.clone());
    let filled = dashboard.catch_up().await.unwrap();
    assert_eq!(
        (filled.read, filled.handled),
        (7, 4),
        "opens and the rejection are passed over"
    );
    let today = chrono::Utc::now().date_naive();
    assert_eq!(volume.read(|v| v.per_day.get(&today).copied()), Some(50 + 70 + 30 + 20));
    dashboard.rebuild(|_| {}).await.unwrap();
    assert_eq!(volume.read(|v| (v.seen.len(), v.per_day[&today])), (4, 170));
}

/// The balances read model, kept by a runner tailing a store in a task until `stop` is sent.
struct Tailing {
    model: InMemoryReadModel<BTreeMap<String, u64>>,
    progress: es_core::ProjectionProgress,
    stop: tokio::sync::oneshot::Sender<()>,
    running: tokio::task::JoinHandle<Result<(), es_core::ProjectionError>>,
}

fn tail_balances(store: &InMemoryStore) -> Tailing {
    let model = InMemoryReadModel::<BTreeMap<String, u64>>::new();
    let runner = ProjectionRunner::new(Balances::default(), store.clone(), model.clone());
    let progress = runner.progress();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let wake_up = store.wake_up();
    let running = tokio::spawn(async move {
        runner
            .run(wake_up, async {
                let _ = stopped.await;
            })
            .await
    });
    Tailing {
        model,
        progress,
        stop,
        running,
    }
}

/// Read-your-writes in a process that does not run the projection: it sees only the
/// checkpoint store the runner commits to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_from_another_process_waits_on_the_committed_checkpoint() {
    let store = InMemoryStore::new();
    let accounts = Accounts::new(store.clone());
    let Tailing {
        model,
        progress: _,
        stop,
        running,
    } = tail_balances(&store);
    let id = new_id("acc");
    let opened = accounts
        .execute(&id, Metadata::new(), |a: &Account| a.open("owner-1", 40))
        .await
        .unwrap();
    let poll = Duration::from_millis(5);
    let reached = es_core::wait_for_checkpoint(
        &model,
        "account-balances",
        opened.position(),
        poll,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert!(reached >= opened.position());
    assert_eq!(model.read(|m| m[&id]), 40, "the read model has the write");

    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    let deposited = accounts
        .execute(&id, Metadata::new(), |a: &Account| a.deposit(2, "atm"))
        .await
        .unwrap();
    match es_core::wait_for_checkpoint(
        &model,
        "account-balances",
        deposited.position(),
        poll,
        Duration::from_millis(50),
    )
    .await
    {
        Err(WaitError::Timeout { position, reached, .. }) => {
            assert_eq!(position, deposited.position());
            assert!(reached < position, "no runner: {reached}");
        }
        other => panic!("expected a timeout with no runner, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_waits_for_the_projection_to_reach_the_command() {
    let store = InMemoryStore::new();
    let accounts = Accounts::new(store.clone());
    let Tailing {
        model,
        progress,
        stop,
        running,
    } = tail_balances(&store);
    assert_eq!(progress.projection(), "account-balances");

    let id = new_id("acc");
    for amount in [10, 20, 30] {
        let executed = accounts
            .execute(&id, Metadata::new(), move |a: &Account| match a.owner_id {
                None => a.open("owner-1", amount),
                Some(_) => a.deposit(amount, "atm"),
            })
            .await
            .unwrap();
        let reached = progress
            .wait_for(executed.position(), Duration::from_secs(10))
            .await
            .unwrap();
        assert!(reached >= executed.position());
        assert_eq!(
            model.read(|m| m[&id]),
            executed.aggregate.balance,
            "the read model has the write"
        );
    }
    assert_eq!(model.read(|m| m[&id]), 60);

    let head = progress.checkpoint();
    match progress.wait_for(head + 100, Duration::from_millis(50)).await {
        Err(WaitError::Timeout { position, reached, .. }) => assert_eq!((position, reached), (head + 100, head)),
        other => panic!("expected a timeout, got {other:?}"),
    }

    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    match progress.wait_for(head + 1, Duration::from_secs(5)).await {
        Err(WaitError::Stopped { reached, .. }) => assert_eq!(reached, head),
        other => panic!("expected the stopped runner to be reported, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 003: schema evolution: an event stored at an older version is upcast where it is read.
// ---------------------------------------------------------------------------------------------

fn raw_event(name: &str, schema_version: u32, payload: &str) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_name: name.into(),
        schema_version,
        payload: payload.as_bytes().to_vec(),
        metadata: Metadata::new(),
    }
}

#[tokio::test]
async fn events_stored_at_an_older_version_are_upcast_for_aggregates_and_projections() {
    let store = InMemoryStore::new();
    let accounts = Accounts::new(store.clone());
    let id = new_id("acc");
    let stream = Accounts::stream_id(&id);
    // History written by the previous release: MoneyDeposited v1 had no source.
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![
                raw_event("AccountOpened", 1, r#"{"owner_id":"user_123","initial_balance":0}"#),
                raw_event("MoneyDeposited", 1, r#"{"amount":3000,"description":"first"}"#),
            ],
        )
        .await
        .unwrap();
    // And the current release adds one with a source.
    accounts
        .execute(&id, Metadata::new(), |a: &Account| a.deposit(2_500, "payroll"))
        .await
        .unwrap();

    let account = accounts.load(&id).await.unwrap().aggregate;
    assert_eq!(account.balance, 5_500);
    assert_eq!(account.deposit_sources, ["unknown", "payroll"]);
    let stored = accounts.events(&id, StreamSlice::all()).await.unwrap();
    assert_eq!(
        stored[1].envelope.schema_version, 1,
        "the stored event is never rewritten"
    );
    assert_eq!(stored[2].envelope.schema_version, 2);
    assert!(matches!(&stored[1].event, AccountEvent::Deposited(d) if d.source == "unknown"));

    let volume = InMemoryReadModel::<Volume>::new();
    ProjectionRunner::new(DailyVolume, store.clone(), volume.clone())
        .catch_up()
        .await
        .unwrap();
    assert_eq!(volume.read(|v| v.per_day.values().sum::<u64>()), 5_500);

    // A version newer than the code is a typed error, not a guess.
    let newer = new_id("acc");
    store
        .append(
            &Accounts::stream_id(&newer),
            ExpectedVersion::NoStream,
            vec![raw_event(
                "MoneyDeposited",
                3,
                r#"{"amount":1,"description":"x","source":"y"}"#,
            )],
        )
        .await
        .unwrap();
    match accounts.load(&newer).await {
        Err(RepositoryError::Decode(error)) => {
            assert_eq!(error.version, 1);
            assert!(
                matches!(*error.source, DecodeError::SchemaVersionTooNew { .. }),
                "{:?}",
                error.source
            );
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    // The upcaster refuses a payload that is not an object, typed as well.
    assert!(matches!(
        MoneyDeposited::decode_payload(1, b"[1,2]"),
        Err(DecodeError::Upcast { .. })
    ));
    assert!(AccountEvent::handles("MoneyDeposited"));
}

// ---------------------------------------------------------------------------------------------
// Edges a user meets: read-your-writes across aggregate types, `create` on an existing stream,
// the store's own optimistic check, Uuid ids (seed 000's Order).
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_position_the_projection_does_not_read_still_returns() {
    let store = InMemoryStore::new();
    let accounts = Accounts::new(store.clone());
    let loyalty = Repository::<Loyalty, _>::new(store.clone());
    let Tailing {
        model,
        progress,
        stop,
        running,
    } = tail_balances(&store);

    let id = new_id("acc");
    open_account(&accounts, &id, 5).await;
    // The last event in the log is of a type the projection leaves out.
    let credited = loyalty
        .execute(&id, Metadata::new(), |_: &Loyalty| {
            vec![PointsCredited {
                points: 1,
                for_event: Uuid::now_v7(),
            }
            .into()]
        })
        .await
        .unwrap();
    let waited = progress.wait_for(credited.position(), Duration::from_secs(5)).await;
    assert!(
        matches!(waited, Ok(at) if at >= credited.position()),
        "an event the projection does not read counts as processed: {waited:?}"
    );
    assert_eq!(model.read(|m| m[&id]), 5);
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn create_on_an_existing_stream_decides_again_on_the_real_state() {
    let accounts = Accounts::new(InMemoryStore::new());
    let id = new_id("acc");
    let first = accounts
        .create(&id, Metadata::new(), |a: &Account| a.open("owner-1", 10))
        .await
        .unwrap();
    assert_eq!(first.version, 1);
    let second = accounts
        .create(&id, Metadata::new(), |a: &Account| a.open("owner-2", 99))
        .await;
    assert!(
        matches!(second, Err(CommandError::Rejected(AccountError::AlreadyOpen))),
        "{second:?}"
    );
    let account = accounts.load(&id).await.unwrap();
    assert_eq!(
        (account.version, account.aggregate.owner_id.as_deref()),
        (1, Some("owner-1"))
    );
}

#[tokio::test]
async fn the_store_refuses_an_append_at_the_wrong_expected_version() {
    let store = InMemoryStore::new();
    let stream = es_core::StreamId::new("order", Uuid::new_v4().to_string());
    let created = r#"{"owner_id":"c-1","initial_balance":0}"#;
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![raw_event("OrderCreated", 1, created)],
        )
        .await
        .unwrap();
    let again = store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![raw_event("OrderCreated", 1, created)],
        )
        .await;
    assert!(
        matches!(again, Err(es_core::StoreError::Conflict(ref c)) if c.actual == 1),
        "{again:?}"
    );
    let stale = store
        .append(
            &stream,
            ExpectedVersion::Exact(0),
            vec![raw_event("ItemAdded", 1, "{}")],
        )
        .await;
    assert!(matches!(stale, Err(es_core::StoreError::Conflict(_))), "{stale:?}");
    let outcome = store
        .append(
            &stream,
            ExpectedVersion::Exact(1),
            vec![raw_event("ItemAdded", 1, "{}")],
        )
        .await
        .unwrap();
    assert_eq!((outcome.previous_version, outcome.new_version), (1, 2));
    assert_eq!(store.stream_version(&stream).await.unwrap(), 2);
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct OrderCreated {
    pub customer_id: Uuid,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct ItemAddedToOrder {
    pub item_id: String,
    pub quantity: u32,
    pub price_cents: u64,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct OrderShipped;

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum OrderEvent {
    Created(OrderCreated),
    ItemAdded(ItemAddedToOrder),
    Shipped(OrderShipped),
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "order", id = Uuid, event = OrderEvent)]
pub struct Order {
    customer_id: Option<Uuid>,
    items: BTreeMap<String, (u32, u64)>,
    shipped: bool,
}

impl Apply<OrderCreated> for Order {
    fn apply(&mut self, event: &OrderCreated) {
        self.customer_id = Some(event.customer_id);
    }
}
impl Apply<ItemAddedToOrder> for Order {
    fn apply(&mut self, event: &ItemAddedToOrder) {
        self.items
            .insert(event.item_id.clone(), (event.quantity, event.price_cents));
    }
}
impl Apply<OrderShipped> for Order {
    fn apply(&mut self, _: &OrderShipped) {
        self.shipped = true;
    }
}

impl Order {
    fn add_item(&self, item: &str, quantity: u32, price_cents: u64) -> Result<Vec<OrderEvent>, String> {
        if self.customer_id.is_none() || self.shipped {
            return Err("items can only be added to a created, unshipped order".into());
        }
        if self.items.contains_key(item) {
            return Err("Item already exists in order. Use update item quantity instead.".into());
        }
        Ok(vec![ItemAddedToOrder {
            item_id: item.into(),
            quantity,
            price_cents,
        }
        .into()])
    }

    fn ship(&self) -> Result<Vec<OrderEvent>, String> {
        if self.customer_id.is_none() || self.shipped || self.items.is_empty() {
            return Err("the order cannot be shipped".into());
        }
        Ok(vec![OrderShipped.into()])
    }
}

#[tokio::test]
async fn an_order_with_a_uuid_id_lives_in_one_stream_named_by_the_id() {
    let orders = Repository::<Order, _>::new(InMemoryStore::new()).with_snapshot_every(2);
    let order_id = Uuid::new_v4();
    let customer_id = Uuid::new_v4();
    orders
        .create(&order_id, Metadata::new(), |_: &Order| {
            vec![OrderCreated { customer_id }.into()]
        })
        .await
        .unwrap();
    orders
        .execute(&order_id, Metadata::new(), |o: &Order| o.add_item("book", 2, 1_500))
        .await
        .unwrap();
    let duplicate = orders
        .execute(&order_id, Metadata::new(), |o: &Order| o.add_item("book", 1, 1_500))
        .await;
    assert!(matches!(duplicate, Err(CommandError::Rejected(_))));
    orders.execute(&order_id, Metadata::new(), Order::ship).await.unwrap();
    let after = orders
        .execute(&order_id, Metadata::new(), |o: &Order| o.add_item("pen", 1, 100))
        .await;
    assert!(matches!(after, Err(CommandError::Rejected(_))));

    let stream = Repository::<Order, InMemoryStore>::stream_id(&order_id);
    assert_eq!(stream.aggregate_type, "order");
    assert_eq!(stream.aggregate_id, order_id.to_string());
    let order = orders.load(&order_id).await.unwrap();
    assert_eq!(order.version, 3);
    assert!(order.aggregate.shipped);
    assert_eq!(order.aggregate.customer_id, Some(customer_id));
    assert!(!orders.load_at_version(&order_id, 2).await.unwrap().aggregate.shipped);
}

// ---------------------------------------------------------------------------------------------
// 004: the Lead, with forgettable personal data (crypto-shredding).
// ---------------------------------------------------------------------------------------------

mod lead {
    use super::*;
    use es_core::pii::{Forgettable, InMemoryKeyStore, PiiStore};
    use es_core::EventRegistry;

    #[event(name = "lead-initialized")]
    #[derive(Debug, Clone)]
    pub struct LeadInitialized {
        #[pii]
        pub name: Forgettable<String>,
        #[pii]
        pub phone: Forgettable<String>,
    }

    #[event(name = "contacted")]
    #[derive(Debug, Clone)]
    pub struct Contacted;

    #[event(name = "contact-details-updated")]
    #[derive(Debug, Clone)]
    pub struct ContactDetailsUpdated {
        #[pii]
        pub name: Forgettable<String>,
    }

    #[event]
    #[derive(Debug, Clone)]
    pub enum LeadEvent {
        Initialized(LeadInitialized),
        Contacted(Contacted),
        Updated(ContactDetailsUpdated),
    }

    #[derive(Debug, Default, Clone, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "lead", event = LeadEvent)]
    pub struct Lead {
        names: Vec<Forgettable<String>>,
        phone: Forgettable<String>,
        calls: u32,
    }

    impl Apply<LeadInitialized> for Lead {
        fn apply(&mut self, event: &LeadInitialized) {
            self.names.push(event.name.clone());
            self.phone = event.phone.clone();
        }
    }
    impl Apply<Contacted> for Lead {
        fn apply(&mut self, _: &Contacted) {
            self.calls += 1;
        }
    }
    impl Apply<ContactDetailsUpdated> for Lead {
        fn apply(&mut self, event: &ContactDetailsUpdated) {
            self.names.push(event.name.clone());
        }
    }

    #[tokio::test]
    async fn a_forgotten_lead_still_loads_with_its_history_but_without_its_personal_data() {
        let mut registry = EventRegistry::new();
        registry.register::<Lead>().unwrap();
        let raw = InMemoryStore::new();
        let store = PiiStore::new(raw.clone(), InMemoryKeyStore::new(), registry);
        let leads = Repository::<Lead, _>::new(store.clone()).with_snapshot_every(2);
        let id = "1";
        let steps: Vec<LeadEvent> = vec![
            LeadInitialized {
                name: "aab".to_owned().into(),
                phone: "1111".to_owned().into(),
            }
            .into(),
            Contacted.into(),
            ContactDetailsUpdated {
                name: "aaa".to_owned().into(),
            }
            .into(),
            Contacted.into(),
        ];
        for step in steps {
            leads
                .execute(id, Metadata::new(), move |_: &Lead| vec![step.clone()])
                .await
                .unwrap();
        }
        let lead = leads.load(id).await.unwrap();
        let names: Vec<_> = lead.aggregate.names.iter().map(|n| n.known().cloned()).collect();
        assert_eq!(names, [Some("aab".to_owned()), Some("aaa".to_owned())]);
        assert_eq!((lead.version, lead.aggregate.calls), (4, 2));

        // What is stored holds no plaintext.
        let stream = Repository::<Lead, InMemoryStore>::stream_id(id);
        let stored = raw.read_event(leads.events(id, StreamSlice::all()).await.unwrap()[0].envelope.event_id);
        let stored = stored.await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&stored.payload);
        assert!(!text.contains("aab") && !text.contains("1111"), "sealed: {text}");
        let snapshot = raw.load_snapshot(&stream).await.unwrap().expect("snapshot at 4");
        assert!(
            !String::from_utf8_lossy(&snapshot.state).contains("aaa"),
            "snapshot sealed"
        );

        assert!(store.forget("lead/1").await.unwrap());
        let forgotten = leads.load(id).await.unwrap();
        assert_eq!((forgotten.version, forgotten.aggregate.calls), (4, 2));
        assert!(forgotten.aggregate.names.iter().all(Forgettable::is_forgotten));
        assert!(forgotten.aggregate.phone.is_forgotten());
        let past = leads.load_at_version(id, 1).await.unwrap();
        assert!(
            past.aggregate.phone.is_forgotten(),
            "time travel does not bring it back"
        );
        // Recording new personal data for a forgotten subject is refused.
        let again = leads
            .execute(id, Metadata::new(), |_: &Lead| {
                vec![ContactDetailsUpdated {
                    name: "new".to_owned().into(),
                }
                .into()]
            })
            .await;
        assert!(again.is_err(), "{again:?}");
        // Events without personal data still go in.
        leads
            .execute(id, Metadata::new(), |_: &Lead| vec![Contacted.into()])
            .await
            .unwrap();
        assert_eq!(leads.load(id).await.unwrap().aggregate.calls, 3);
    }
}

// ---------------------------------------------------------------------------------------------
// 003: a failing projection handler is parked and retried once fixed; events from a newer
// producer; lag in seconds.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_failing_event_is_parked_then_retried_exactly_once_when_fixed() {
    let store = InMemoryStore::new();
    let accounts = Accounts::new(store.clone());
    let id = new_id("acc");
    open_account(&accounts, &id, 0).await;
    for amount in [5, 13, 7] {
        accounts
            .execute(&id, Metadata::new(), move |a: &Account| a.deposit(amount, "atm"))
            .await
            .unwrap();
    }
    let fixed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let model = InMemoryReadModel::<BTreeMap<String, u64>>::new();
    let options = es_core::RunnerOptions {
        failure: es_core::FailurePolicy::Park {
            attempts: 2,
            backoff: Duration::from_millis(1),
        },
        ..es_core::RunnerOptions::default()
    };
    let runner = ProjectionRunner::new(
        Balances {
            thirteen_fixed: Some(fixed.clone()),
        },
        store.clone(),
        model.clone(),
    )
    .with_options(options);
    let caught_up = runner.catch_up().await.unwrap();
    assert_eq!((caught_up.parked, caught_up.position), (1, 4));
    assert_eq!(model.read(|m| m[&id]), 12, "the other events went through");
    let parked = runner.parked().await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!((parked[0].version, parked[0].attempts), (3, 2));
    assert!(parked[0].error.contains("rejects 13"), "{}", parked[0].error);

    fixed.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(runner.retry_parked(parked[0].position).await.unwrap());
    runner.catch_up().await.unwrap();
    assert!(runner.parked().await.unwrap().is_empty());
    assert_eq!(model.read(|m| m[&id]), 25);
    runner.catch_up().await.unwrap();
    assert_eq!(model.read(|m| m[&id]), 25, "handled exactly once");
    assert!(!runner.retry_parked(parked[0].position).await.unwrap());
}

#[tokio::test]
async fn events_from_a_newer_producer_fail_loading_unless_skipped() {
    let store = InMemoryStore::new();
    let id = new_id("acc");
    let accounts = Accounts::new(store.clone());
    open_account(&accounts, &id, 10).await;
    store
        .append(
            &Accounts::stream_id(&id),
            ExpectedVersion::Exact(1),
            vec![raw_event("AccountFrozen", 1, r#"{"by":"compliance"}"#)],
        )
        .await
        .unwrap();
    match accounts.load(&id).await {
        Err(RepositoryError::Decode(error)) => {
            assert!(
                matches!(*error.source, DecodeError::UnknownEventType { .. }),
                "{error:?}"
            )
        }
        other => panic!("expected an unknown-event error, got {other:?}"),
    }
    let tolerant = Accounts::new(store.clone()).with_unknown_events(es_core::UnknownEvents::Skip);
    let loaded = tolerant.load(&id).await.unwrap();
    assert_eq!(
        (loaded.version, loaded.aggregate.balance),
        (2, 10),
        "skipped, still counted"
    );
    let next = tolerant
        .execute(&id, Metadata::new(), |a: &Account| a.deposit(1, "atm"))
        .await
        .unwrap();
    assert_eq!((next.version, next.attempts), (3, 1), "appends after the skipped event");
}

#[tokio::test]
async fn lag_reports_events_and_seconds_behind() {
    let store = InMemoryStore::new();
    let accounts = Accounts::new(store.clone());
    let id = new_id("acc");
    open_account(&accounts, &id, 1).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    accounts
        .execute(&id, Metadata::new(), |a: &Account| a.deposit(1, "atm"))
        .await
        .unwrap();
    let runner = ProjectionRunner::new(Balances::default(), store.clone(), InMemoryReadModel::new());
    let lag = runner.lag().await.unwrap();
    assert_eq!((lag.checkpoint, lag.events_behind), (0, 2));
    assert!(
        lag.seconds_behind >= 0.05,
        "the oldest unhandled event is 60 ms old: {lag:?}"
    );
}
