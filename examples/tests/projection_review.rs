//! An outside user's review of projections in production on the durable backends (SQLite files
//! and PostgreSQL), through the public API as README's "Projections in production" and the
//! rustdoc of `es_core`'s projection items describe it: read models in the same database,
//! committed with the checkpoint; catch-up then tailing with the backend's wake-up;
//! read-your-writes; two runners racing for one claim; every `FailurePolicy`, parked events and
//! their retry; unknown event names; blue/green rebuilds; `rebuild` with progress; lag; a
//! shutdown in the middle of a batch.
//!
//! Every scenario is written once, over a [`Backend`], and run on both stores.

use std::collections::BTreeSet;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use es_core::{
    async_trait, event, Aggregate, Apply, CheckpointStore, ClaimStatus, DecodedEvent, EventDescriptor, EventSet,
    EventStore, ExpectedVersion, FailurePolicy, GlobalLog, HandlerError, Metadata, NewEvent, Projection,
    ProjectionError, ProjectionRunner, RebuildProgress, Repository, RunnerOptions, StreamId, SwitchFuture,
    UnknownEvents, WaitError, WakeUp,
};
use es_postgres::{PostgresCheckpoints, PostgresStore, PostgresWakeUp};
use es_sqlite::{SqliteCheckpoints, SqliteContext, SqliteStore, SqliteWakeUp};
use es_test_support::{TestDatabase, TestSchema};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

#[path = "support/review/mod.rs"]
mod review;

use review::running::run_until_stopped;
use review::stores::raw;

// ---------------------------------------------------------------------------------------------
// The domain: accounts (seed 001's ledger) and customers, two aggregate types.
// ---------------------------------------------------------------------------------------------

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct AccountOpened {
    pub owner: String,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct MoneyDeposited {
    pub cents: i64,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct MoneyWithdrawn {
    pub cents: i64,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum AccountEvent {
    Opened(AccountOpened),
    Deposited(MoneyDeposited),
    Withdrawn(MoneyWithdrawn),
}

#[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "account", event = AccountEvent)]
pub struct Account {
    balance: i64,
}

impl Apply<AccountOpened> for Account {
    fn apply(&mut self, _: &AccountOpened) {}
}
impl Apply<MoneyDeposited> for Account {
    fn apply(&mut self, event: &MoneyDeposited) {
        self.balance += event.cents;
    }
}
impl Apply<MoneyWithdrawn> for Account {
    fn apply(&mut self, event: &MoneyWithdrawn) {
        self.balance -= event.cents;
    }
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerRegistered {
    pub name: String,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum CustomerEvent {
    Registered(CustomerRegistered),
}

#[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "customer", event = CustomerEvent)]
pub struct Customer {
    name: String,
}

impl Apply<CustomerRegistered> for Customer {
    fn apply(&mut self, event: &CustomerRegistered) {
        self.name = event.name.clone();
    }
}

/// The projection's view: movements of accounts and registrations of customers. `AccountOpened`
/// is left out on purpose (named in `SOURCE_EVENTS`).
#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum LedgerEvent {
    Deposited(MoneyDeposited),
    Withdrawn(MoneyWithdrawn),
    Registered(CustomerRegistered),
}

/// The stored names the ledger writes a row for.
const LEDGER_NAMES: [&str; 3] = ["MoneyDeposited", "MoneyWithdrawn", "CustomerRegistered"];

/// A deposit of this many cents fails while the projection is "broken".
const POISON: i64 = 13;

// ---------------------------------------------------------------------------------------------
// The read model: one row per handled event, no unique key, so an event applied twice shows.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    position: i64,
    stream: String,
    kind: String,
    cents: i64,
}

const TABLE_COLUMNS: &str =
    "(position BIGINT NOT NULL, stream TEXT NOT NULL, kind TEXT NOT NULL, cents BIGINT NOT NULL)";

/// What a handler writes through: the unit's connection of each backend.
#[async_trait]
trait Rows: Send + 'static {
    async fn insert(&mut self, table: &str, row: &Row) -> Result<(), HandlerError>;
    async fn clear(&mut self, table: &str) -> Result<(), HandlerError>;
    /// A blue/green switch: `live` becomes `old`, `next` becomes `live`.
    async fn swap(&mut self, live: &str, next: &str, old: &str) -> Result<(), HandlerError>;
}

#[async_trait]
impl Rows for SqliteContext {
    async fn insert(&mut self, table: &str, row: &Row) -> Result<(), HandlerError> {
        self.execute(
            &format!("INSERT INTO {table} (position, stream, kind, cents) VALUES (?1, ?2, ?3, ?4)"),
            (row.position, &row.stream, &row.kind, row.cents),
        )?;
        Ok(())
    }

    async fn clear(&mut self, table: &str) -> Result<(), HandlerError> {
        self.execute(&format!("DELETE FROM {table}"), [])?;
        Ok(())
    }

    async fn swap(&mut self, live: &str, next: &str, old: &str) -> Result<(), HandlerError> {
        self.execute_batch(&format!(
            "ALTER TABLE {live} RENAME TO {old}; ALTER TABLE {next} RENAME TO {live};"
        ))?;
        Ok(())
    }
}

#[async_trait]
impl Rows for PgConnection {
    async fn insert(&mut self, table: &str, row: &Row) -> Result<(), HandlerError> {
        sqlx::query(&format!(
            "INSERT INTO {table} (position, stream, kind, cents) VALUES ($1, $2, $3, $4)"
        ))
        .bind(row.position)
        .bind(&row.stream)
        .bind(&row.kind)
        .bind(row.cents)
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn clear(&mut self, table: &str) -> Result<(), HandlerError> {
        sqlx::query(&format!("DELETE FROM {table}")).execute(&mut *self).await?;
        Ok(())
    }

    async fn swap(&mut self, live: &str, next: &str, old: &str) -> Result<(), HandlerError> {
        let sql = format!("ALTER TABLE {live} RENAME TO {old}; ALTER TABLE {next} RENAME TO {live};");
        sqlx::Executor::execute(&mut *self, sql.as_str()).await?;
        Ok(())
    }
}

/// Knobs a test turns on a projection from outside: a broken handler, a slow one, counters.
#[derive(Debug, Clone, Default)]
struct Knobs {
    /// While set, the poison deposit fails.
    broken: Arc<AtomicBool>,
    /// How many times the poison deposit was handed to the handler.
    poison_tries: Arc<AtomicU32>,
    /// How many events were handed to the handler (committed or not).
    handled: Arc<AtomicU32>,
    /// A pause per event, to make batches slow.
    delay: Duration,
}

struct Ledger<C> {
    table: &'static str,
    knobs: Knobs,
    _context: PhantomData<fn() -> C>,
}

impl<C> Ledger<C> {
    fn new(table: &'static str, knobs: Knobs) -> Self {
        Self {
            table,
            knobs,
            _context: PhantomData,
        }
    }
}

#[async_trait]
impl<C: Rows> Projection for Ledger<C> {
    const NAME: &'static str = "ledger";
    const AGGREGATE_TYPES: &'static [&'static str] = &["account", "customer"];
    const SOURCE_EVENTS: &'static [&'static [EventDescriptor]] = &[AccountEvent::EVENTS, CustomerEvent::EVENTS];
    type Event = LedgerEvent;
    type Context = C;

    async fn handle(&self, db: &mut C, event: &DecodedEvent<LedgerEvent>) -> Result<(), HandlerError> {
        self.knobs.handled.fetch_add(1, Ordering::SeqCst);
        if !self.knobs.delay.is_zero() {
            tokio::time::sleep(self.knobs.delay).await;
        }
        let (kind, cents) = match &event.event {
            LedgerEvent::Deposited(deposit) => ("deposit", deposit.cents),
            LedgerEvent::Withdrawn(withdrawal) => ("withdrawal", -withdrawal.cents),
            LedgerEvent::Registered(_) => ("registration", 0),
        };
        if kind == "deposit" && cents == POISON {
            self.knobs.poison_tries.fetch_add(1, Ordering::SeqCst);
            if self.knobs.broken.load(Ordering::SeqCst) {
                return Err("the poison deposit cannot be projected".into());
            }
        }
        let row = Row {
            position: event.envelope.position as i64,
            stream: event.envelope.stream.to_string(),
            kind: kind.to_owned(),
            cents,
        };
        db.insert(self.table, &row).await
    }

    async fn reset(&self, db: &mut C) -> Result<(), HandlerError> {
        db.clear(self.table).await
    }
}

// ---------------------------------------------------------------------------------------------
// The two backends.
// ---------------------------------------------------------------------------------------------

#[async_trait]
trait Backend: Send + Sync + Sized + 'static {
    type Store: EventStore + GlobalLog + Clone + Send + Sync + 'static;
    type Context: Rows;
    type Checkpoints: CheckpointStore<Context = Self::Context> + Clone + Send + Sync + 'static;
    type Wake: WakeUp + 'static;

    fn store(&self) -> Self::Store;
    fn checkpoints(&self) -> Self::Checkpoints;
    async fn wake_up(&self) -> Self::Wake;
    /// Runs SQL outside any unit of work (tables, damage).
    async fn sql(&self, sql: &str);
    /// The rows of a read-model table, in position order.
    async fn rows(&self, table: &str) -> Vec<Row>;

    async fn create_table(&self, table: &str) {
        self.sql(&format!("CREATE TABLE {table} {TABLE_COLUMNS}")).await;
    }
}

struct Sqlite {
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

impl Sqlite {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteStore::open(dir.path().join("events.db")).await.expect("open");
        store.migrate().await.expect("migrate");
        Self { store, _dir: dir }
    }
}

#[async_trait]
impl Backend for Sqlite {
    type Store = SqliteStore;
    type Context = SqliteContext;
    type Checkpoints = SqliteCheckpoints;
    type Wake = SqliteWakeUp;

    fn store(&self) -> SqliteStore {
        self.store.clone()
    }

    fn checkpoints(&self) -> SqliteCheckpoints {
        self.store.checkpoints()
    }

    async fn wake_up(&self) -> SqliteWakeUp {
        self.store.wake_up()
    }

    async fn sql(&self, sql: &str) {
        let sql = sql.to_owned();
        self.store
            .write(move |db| db.execute_batch(&sql))
            .await
            .expect("SQL outside a unit");
    }

    async fn rows(&self, table: &str) -> Vec<Row> {
        let sql = format!("SELECT position, stream, kind, cents FROM {table} ORDER BY position, kind");
        self.store
            .read(move |db| {
                let mut statement = db.prepare(&sql)?;
                let rows = statement.query_map([], |row| {
                    Ok(Row {
                        position: row.get(0)?,
                        stream: row.get(1)?,
                        kind: row.get(2)?,
                        cents: row.get(3)?,
                    })
                })?;
                rows.collect()
            })
            .await
            .expect("rows")
    }
}

struct Postgres {
    schema: TestSchema,
}

impl Postgres {
    async fn new() -> Self {
        let database = TestDatabase::get().expect("a PostgreSQL server (DATABASE_URL)");
        Self {
            schema: database.schema().await.expect("a fresh schema"),
        }
    }

    /// Terminates the session holding the claim on `projection` (its connection dies), and
    /// returns how many sessions were terminated.
    async fn kill_claim(&self, projection: &str) -> i64 {
        let name = format!("es claim {}.{projection}", self.schema.schema());
        sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity a \
             WHERE a.application_name = $1 AND EXISTS (SELECT 1 FROM pg_locks l \
             WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)",
        )
        .bind(name)
        .fetch_one(self.schema.pool())
        .await
        .expect("terminate the claim's session")
    }
}

#[async_trait]
impl Backend for Postgres {
    type Store = PostgresStore;
    type Context = PgConnection;
    type Checkpoints = PostgresCheckpoints;
    type Wake = PostgresWakeUp;

    fn store(&self) -> PostgresStore {
        self.schema.store().clone()
    }

    fn checkpoints(&self) -> PostgresCheckpoints {
        self.schema.checkpoints()
    }

    async fn wake_up(&self) -> PostgresWakeUp {
        self.schema.wake_up().await.expect("LISTEN")
    }

    async fn sql(&self, sql: &str) {
        let mut tx = self.schema.pool().begin().await.expect("begin");
        sqlx::query(&format!("SET LOCAL search_path TO \"{}\"", self.schema.schema()))
            .execute(&mut *tx)
            .await
            .expect("search_path");
        let sql = sql.to_owned();
        sqlx::Executor::execute(&mut *tx, sql.as_str())
            .await
            .expect("SQL outside a unit");
        tx.commit().await.expect("commit");
    }

    async fn rows(&self, table: &str) -> Vec<Row> {
        let sql = format!(
            "SELECT position, stream, kind, cents FROM \"{}\".{table} ORDER BY position, kind",
            self.schema.schema()
        );
        let rows: Vec<(i64, String, String, i64)> =
            sqlx::query_as(&sql).fetch_all(self.schema.pool()).await.expect("rows");
        rows.into_iter()
            .map(|(position, stream, kind, cents)| Row {
                position,
                stream,
                kind,
                cents,
            })
            .collect()
    }
}

type Runner<B> = ProjectionRunner<Ledger<<B as Backend>::Context>, <B as Backend>::Store, <B as Backend>::Checkpoints>;

fn runner<B: Backend>(backend: &B, table: &'static str, knobs: &Knobs, options: RunnerOptions) -> Runner<B> {
    ProjectionRunner::new(
        Ledger::new(table, knobs.clone()),
        backend.store(),
        backend.checkpoints(),
    )
    .with_options(options)
}

fn quick(failure: FailurePolicy) -> RunnerOptions {
    RunnerOptions {
        poll_interval: Duration::from_millis(50),
        failure,
        ..RunnerOptions::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers: commands, raw events, bounded waits.
// ---------------------------------------------------------------------------------------------

/// Runs `future`, panicking after `seconds`: no test hangs.
async fn within<T>(what: &str, seconds: u64, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(seconds), future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: not done within {seconds} s"),
    }
}

/// Appends account events through the repository: one command, one append. Returns the
/// position of its last event.
async fn account<S: EventStore + Clone>(store: &S, id: &str, events: Vec<AccountEvent>) -> u64 {
    let accounts = Repository::<Account, _>::new(store.clone());
    let executed = accounts
        .execute(id, Metadata::new(), move |_: &Account| events.clone())
        .await
        .expect("command");
    executed.position()
}

fn deposits(cents: &[i64]) -> Vec<AccountEvent> {
    cents.iter().map(|&cents| MoneyDeposited { cents }.into()).collect()
}

async fn register<S: EventStore + Clone>(store: &S, id: &str, name: &str) -> u64 {
    let customers = Repository::<Customer, _>::new(store.clone());
    let name = name.to_owned();
    customers
        .execute(id, Metadata::new(), move |_: &Customer| {
            vec![CustomerEvent::from(CustomerRegistered { name: name.clone() })]
        })
        .await
        .expect("registered")
        .position()
}

async fn append_raw<S: EventStore>(store: &S, stream: StreamId, event: NewEvent) -> u64 {
    let outcome = store
        .append(&stream, ExpectedVersion::Any, vec![event])
        .await
        .expect("raw append");
    outcome.positions[0]
}

/// Waits until the global log shows everything up to `position` (PostgreSQL holds events back
/// while older transactions of the cluster are in flight).
async fn visible<S: GlobalLog>(store: &S, position: u64) {
    within("the global log shows the appended events", 30, async {
        while store.tail(0).await.expect("tail").head_position < position {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// The positions of every event the ledger writes a row for, from the global log.
async fn ledger_positions<S: GlobalLog>(store: &S) -> Vec<i64> {
    let events = store.read_all(0, 100_000).await.expect("read_all");
    events
        .iter()
        .filter(|event| ["account", "customer"].contains(&event.stream.aggregate_type.as_str()))
        .filter(|event| LEDGER_NAMES.contains(&event.event_name.as_str()))
        .map(|event| event.position as i64)
        .collect()
}

fn positions(rows: &[Row]) -> Vec<i64> {
    rows.iter().map(|row| row.position).collect()
}

/// Asserts the table holds exactly one row per event at `expected`.
fn assert_exactly_once(rows: &[Row], expected: &[i64], what: &str) {
    let got = positions(rows);
    let distinct: BTreeSet<i64> = got.iter().copied().collect();
    assert_eq!(distinct.len(), got.len(), "{what}: an event was applied twice: {got:?}");
    assert_eq!(got, expected, "{what}: rows differ from the events");
}

/// Spawns `runner.run` with the backend's wake-up; returns its task and the shutdown trigger.
async fn spawn_run<B: Backend>(
    backend: &B,
    runner: Runner<B>,
) -> (
    tokio::task::JoinHandle<Result<(), ProjectionError>>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (stop, task) = run_until_stopped(runner, backend.wake_up().await);
    (task, stop)
}

async fn stop_run(
    task: tokio::task::JoinHandle<Result<(), ProjectionError>>,
    stop: tokio::sync::oneshot::Sender<()>,
) -> Result<(), ProjectionError> {
    let _ = stop.send(());
    within("the runner stops on shutdown", 20, task)
        .await
        .expect("runner task")
}

// ---------------------------------------------------------------------------------------------
// 1. Catch-up over history, then tailing live writes with the wake-up; read-your-writes; a
//    projection over two aggregate types, with a left-out event and another type's events.
// ---------------------------------------------------------------------------------------------

async fn catch_up_then_tail<B: Backend>(backend: B, poll_interval: Duration) -> (B, Vec<Row>) {
    let store = backend.store();
    backend.create_table("ledger").await;
    // History before any runner: a left-out event, two aggregate types, another type's event
    // of a name nobody knows (filtered by type before decoding).
    account(
        &store,
        "A",
        vec![
            AccountOpened { owner: "ann".into() }.into(),
            MoneyDeposited { cents: 100 }.into(),
        ],
    )
    .await;
    account(&store, "A", deposits(&[1, 2, 3, 4, 5])).await;
    register(&store, "C-1", "Ann").await;
    append_raw(&store, StreamId::new("audit", "1"), raw("SomethingAudited", "{}")).await;
    let head = account(&store, "A", vec![MoneyWithdrawn { cents: 30 }.into()]).await;
    visible(&store, head).await;

    let options = RunnerOptions {
        poll_interval,
        ..RunnerOptions::default()
    };
    let runner = runner(&backend, "ledger", &Knobs::default(), options);
    let progress = runner.progress();
    assert_eq!(progress.projection(), "ledger");
    let (task, stop) = spawn_run(&backend, runner).await;

    progress
        .wait_for(head, Duration::from_secs(30))
        .await
        .expect("caught up with the history");
    let rows = backend.rows("ledger").await;
    assert_exactly_once(&rows, &ledger_positions(&store).await, "after catch-up");
    assert_eq!(rows.len(), 8, "6 deposits, 1 registration, 1 withdrawal: {rows:?}");
    assert!(rows
        .iter()
        .any(|row| row.kind == "registration" && row.stream == "customer/C-1"));

    // Live writes: read-your-writes on each command's position, woken by the backend.
    for n in 0..3 {
        let position = account(&store, "B", deposits(&[10 + n])).await;
        let reached = progress
            .wait_for(position, Duration::from_secs(30))
            .await
            .expect("read your writes");
        assert!(reached >= position);
        let rows = backend.rows("ledger").await;
        assert!(
            rows.iter().any(|row| row.position == position as i64),
            "the command's deposit is in the read model"
        );
    }
    let position = register(&store, "C-2", "Bob").await;
    progress
        .wait_for(position, Duration::from_secs(30))
        .await
        .expect("registration");

    // A position nobody writes: a typed timeout naming where the projection is.
    match progress.wait_for(position + 1_000, Duration::from_millis(200)).await {
        Err(WaitError::Timeout {
            reached,
            position: waited,
            ..
        }) => {
            assert_eq!(waited, position + 1_000);
            assert!(reached >= position);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }

    stop_run(task, stop).await.expect("a clean shutdown");
    // The runner is gone: waiting for more says so instead of waiting the whole timeout.
    match within(
        "wait_for after the runner is gone",
        20,
        progress.wait_for(position + 1, Duration::from_secs(10)),
    )
    .await
    {
        Err(WaitError::Stopped { reached, .. }) => assert!(reached >= position),
        other => panic!("expected WaitError::Stopped once the runner was dropped, got {other:?}"),
    }
    let rows = backend.rows("ledger").await;
    assert_exactly_once(&rows, &ledger_positions(&store).await, "after tailing");
    assert_eq!(
        backend
            .checkpoints()
            .claim_status("ledger")
            .await
            .expect("claim status"),
        ClaimStatus::Free
    );
    (backend, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_catch_up_then_tail_with_wake_ups_and_read_your_writes() {
    // A poll interval of an hour: only the wake-up can bring live events in time.
    let (backend, rows) = catch_up_then_tail(Sqlite::new().await, Duration::from_secs(3600)).await;
    // Events appended in a transaction of the application's own wake runners too.
    let runner = runner(
        &backend,
        "ledger",
        &Knobs::default(),
        RunnerOptions {
            poll_interval: Duration::from_secs(3600),
            ..RunnerOptions::default()
        },
    );
    let progress = runner.progress();
    let (task, stop) = spawn_run(&backend, runner).await;
    progress
        .wait_for(
            rows.last().map_or(0, |row| row.position as u64),
            Duration::from_secs(20),
        )
        .await
        .expect("resumed");
    let position = backend
        .store
        .transaction(|tx| {
            let outcome = tx.append(
                &StreamId::new("account", "T"),
                ExpectedVersion::Any,
                vec![raw("MoneyDeposited", r#"{"cents":77}"#)],
            )?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(outcome.positions[0])
        })
        .await
        .expect("appended in a transaction");
    progress
        .wait_for(position, Duration::from_secs(20))
        .await
        .expect("a transaction's append wakes the runner");
    stop_run(task, stop).await.expect("clean shutdown");
    let rows = backend.rows("ledger").await;
    assert_exactly_once(&rows, &ledger_positions(&backend.store).await, "after the transaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_catch_up_then_tail_with_wake_ups_and_read_your_writes() {
    // Other sessions of a shared server may hold events back past a wake-up: poll too.
    catch_up_then_tail(Postgres::new().await, Duration::from_secs(2)).await;
}

// ---------------------------------------------------------------------------------------------
// 2. Two runners race for one projection: one holds the claim, the other takes over when the
//    first dies.
// ---------------------------------------------------------------------------------------------

/// Starts runner A, then runner B on the same projection; returns both with their knobs.
async fn two_runners<B: Backend>(
    backend: &B,
) -> (
    (
        tokio::task::JoinHandle<Result<(), ProjectionError>>,
        tokio::sync::oneshot::Sender<()>,
        Knobs,
    ),
    (
        tokio::task::JoinHandle<Result<(), ProjectionError>>,
        tokio::sync::oneshot::Sender<()>,
        Knobs,
        es_core::ProjectionProgress,
    ),
) {
    let store = backend.store();
    backend.create_table("ledger").await;
    let head = account(&store, "A", deposits(&[1, 2, 3, 4, 5])).await;
    visible(&store, head).await;

    let (knobs_a, knobs_b) = (Knobs::default(), Knobs::default());
    let first = runner(backend, "ledger", &knobs_a, quick(FailurePolicy::Stop));
    let first_progress = first.progress();
    let (task_a, stop_a) = spawn_run(backend, first).await;
    first_progress
        .wait_for(head, Duration::from_secs(30))
        .await
        .expect("the first runner caught up");

    let second = runner(backend, "ledger", &knobs_b, quick(FailurePolicy::Stop));
    let second_progress = second.progress();
    let (task_b, stop_b) = spawn_run(backend, second).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let more = account(&store, "A", deposits(&[6, 7, 8])).await;
    first_progress
        .wait_for(more, Duration::from_secs(30))
        .await
        .expect("the first runner tails");
    assert_eq!(knobs_a.handled.load(Ordering::SeqCst), 8);
    assert_eq!(
        knobs_b.handled.load(Ordering::SeqCst),
        0,
        "the second runner must wait while the first holds the claim"
    );
    assert!(!task_b.is_finished(), "the waiting runner keeps waiting");
    assert_eq!(
        backend.checkpoints().claim_status("ledger").await.expect("status"),
        ClaimStatus::Held
    );
    ((task_a, stop_a, knobs_a), (task_b, stop_b, knobs_b, second_progress))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_second_runner_takes_over_when_the_first_dies() {
    let backend = Sqlite::new().await;
    let store = backend.store();
    let ((task_a, _stop_a, knobs_a), (task_b, stop_b, knobs_b, progress_b)) = two_runners(&backend).await;
    // The first runner dies (its task is dropped, as a crashed process's would be).
    task_a.abort();
    let _ = within("the aborted runner ends", 20, task_a).await;
    let last = account(&store, "A", deposits(&[9, 10, 11])).await;
    progress_b
        .wait_for(last, Duration::from_secs(30))
        .await
        .expect("the second runner took over and caught up");
    assert_eq!(knobs_a.handled.load(Ordering::SeqCst), 8);
    assert_eq!(
        knobs_b.handled.load(Ordering::SeqCst),
        3,
        "the second runner resumed from the checkpoint"
    );
    stop_run(task_b, stop_b).await.expect("clean shutdown");
    let rows = backend.rows("ledger").await;
    assert_exactly_once(&rows, &ledger_positions(&store).await, "after the takeover");
    assert_eq!(
        backend.checkpoints().claim_status("ledger").await.expect("status"),
        ClaimStatus::Free
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_second_runner_takes_over_when_the_claim_connection_dies() {
    let backend = Postgres::new().await;
    let store = backend.store();
    let ((task_a, stop_a, knobs_a), (task_b, stop_b, knobs_b, progress_b)) = two_runners(&backend).await;
    assert_eq!(backend.kill_claim("ledger").await, 1, "one session holds the claim");
    // Give the waiting runner its chance to claim (it retries every 250 ms).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let last = account(&store, "A", deposits(&[9, 10, 11])).await;
    progress_b
        .wait_for(last, Duration::from_secs(30))
        .await
        .expect("the second runner took over and caught up");
    assert_eq!(knobs_b.handled.load(Ordering::SeqCst), 3, "resumed from the checkpoint");
    // The first runner either noticed it lost the claim, or never got to a unit again.
    match stop_run(task_a, stop_a).await {
        Ok(()) | Err(ProjectionError::ClaimLost { .. }) => {}
        Err(other) => panic!("the first runner failed otherwise: {other}"),
    }
    assert_eq!(knobs_a.handled.load(Ordering::SeqCst), 8);
    stop_run(task_b, stop_b).await.expect("clean shutdown");
    let rows = backend.rows("ledger").await;
    assert_exactly_once(&rows, &ledger_positions(&store).await, "after the takeover");
}

// ---------------------------------------------------------------------------------------------
// 3. A handler failing on one event, under each FailurePolicy; a parked event retried after the
//    fix; an event of an unknown name.
// ---------------------------------------------------------------------------------------------

/// An account opened, then deposits 1, 2, 3, 4, POISON, 5, 6 in one append. Returns the
/// poison's position and the head.
async fn poisoned_history<S: EventStore + GlobalLog + Clone>(store: &S) -> (u64, u64) {
    account(store, "P", vec![AccountOpened { owner: "pat".into() }.into()]).await;
    let head = account(store, "P", deposits(&[1, 2, 3, 4, POISON, 5, 6])).await;
    visible(store, head).await;
    // Positions are not dense on PostgreSQL: look the poison up.
    let poison = store
        .read_all(0, 100_000)
        .await
        .expect("read_all")
        .into_iter()
        .find(|event| event.stream == StreamId::new("account", "P") && event.version == 6)
        .expect("the poison deposit")
        .position;
    (poison, head)
}

async fn failure_policies<B: Backend>(backend: B) {
    let store = backend.store();
    let checkpoints = backend.checkpoints();
    for table in ["l_stop", "l_retry", "l_skip", "l_park", "l_unknown"] {
        backend.create_table(table).await;
    }
    let (poison, head) = poisoned_history(&store).await;
    let knobs = Knobs::default();
    knobs.broken.store(true, Ordering::SeqCst);
    let tries = || knobs.poison_tries.swap(0, Ordering::SeqCst);
    let backoff = Duration::from_millis(10);

    // Stop: the first failure stops the runner; nothing of the batch commits.
    let stop = runner(&backend, "l_stop", &knobs, quick(FailurePolicy::Stop)).with_name("ledger-stop");
    match within("catch up (stop)", 60, stop.catch_up()).await {
        Err(ProjectionError::Handler(failure)) => {
            assert_eq!(failure.position, poison);
            assert_eq!(failure.attempts, 1);
            assert_eq!(failure.event_name, "MoneyDeposited");
            assert_eq!(failure.stream, StreamId::new("account", "P"));
            assert!(failure.to_string().contains("poison"), "{failure}");
        }
        other => panic!("expected a handler failure, got {other:?}"),
    }
    assert_eq!(tries(), 1);
    assert_eq!(checkpoints.checkpoint("ledger-stop").await.unwrap(), 0);
    assert!(backend.rows("l_stop").await.is_empty(), "the failed batch rolled back");

    // Retry: tried `attempts` times in all, then stops.
    let retry = FailurePolicy::Retry { attempts: 3, backoff };
    let retrying = runner(&backend, "l_retry", &knobs, quick(retry)).with_name("ledger-retry");
    match within("catch up (retry)", 60, retrying.catch_up()).await {
        Err(ProjectionError::Handler(failure)) => {
            assert_eq!((failure.position, failure.attempts), (poison, 3));
        }
        other => panic!("expected a handler failure, got {other:?}"),
    }
    assert_eq!(tries(), 3, "three tries of the failing event in all");
    let checkpoint = checkpoints.checkpoint("ledger-retry").await.unwrap();
    assert!(checkpoint < poison, "the checkpoint stays before the failing event");
    let retry_rows = backend.rows("l_retry").await;
    assert!(retry_rows.iter().all(|row| row.position as u64 <= checkpoint));

    // Skip: tried, then skipped for good; the rest goes on.
    let skip = FailurePolicy::Skip { attempts: 2, backoff };
    let skipping = runner(&backend, "l_skip", &knobs, quick(skip)).with_name("ledger-skip");
    let done = within("catch up (skip)", 60, skipping.catch_up()).await.expect("skips");
    assert_eq!((done.skipped, done.parked, done.position), (1, 0, head));
    assert_eq!(tries(), 2);
    let skipped: Vec<i64> = backend.rows("l_skip").await.iter().map(|row| row.cents).collect();
    assert_eq!(skipped, [1, 2, 3, 4, 5, 6]);
    assert!(
        skipping.parked().await.unwrap().is_empty(),
        "skipped events are not parked"
    );

    // Park: tried, then set aside with what an operator needs; the rest goes on.
    let park = FailurePolicy::Park { attempts: 2, backoff };
    let parking = runner(&backend, "l_park", &knobs, quick(park)).with_name("ledger-park");
    let done = within("catch up (park)", 60, parking.catch_up()).await.expect("parks");
    assert_eq!((done.skipped, done.parked, done.position), (0, 1, head));
    assert_eq!(tries(), 2);
    let parked = parking.parked().await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    let event = &parked[0];
    assert_eq!(event.projection, "ledger-park");
    assert_eq!(event.position, poison);
    assert_eq!(event.stream, StreamId::new("account", "P"));
    assert_eq!(event.version, 6);
    assert_eq!(event.event_name, "MoneyDeposited");
    assert_eq!(event.attempts, 2);
    assert!(event.error.contains("poison"), "{}", event.error);
    assert!(!event.retry_requested);
    let parked_rows: Vec<i64> = backend.rows("l_park").await.iter().map(|row| row.cents).collect();
    assert_eq!(parked_rows, [1, 2, 3, 4, 5, 6]);

    // Retried before the fix: it fails again and stays parked, one attempt more.
    assert!(parking.retry_parked(poison).await.unwrap());
    assert!(parking.parked().await.unwrap()[0].retry_requested);
    within("catch up (failed retry)", 60, parking.catch_up())
        .await
        .expect("catch up");
    let again = parking.parked().await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].attempts, again[0].retry_requested), (3, false));
    assert_eq!(again[0].parked_at, event.parked_at, "the first parking time is kept");
    assert_eq!(tries(), 1);

    // Fixed, retried: the running runner applies it once, and it leaves the parked events.
    knobs.broken.store(false, Ordering::SeqCst);
    assert!(parking.retry_parked(poison).await.unwrap());
    let (task, stop) = spawn_run(&backend, parking).await;
    within("the running runner retries the parked event", 30, async {
        while !checkpoints.parked("ledger-park").await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    stop_run(task, stop).await.expect("clean shutdown");
    let rows = backend.rows("l_park").await;
    assert_exactly_once(&rows, &ledger_positions(&store).await, "after the retry");
    let parking = runner(&backend, "l_park", &knobs, quick(park)).with_name("ledger-park");
    assert!(!parking.retry_parked(poison).await.unwrap(), "nothing parked any more");
    assert!(!parking.drop_parked(poison).await.unwrap());
    within("catch up", 60, parking.catch_up()).await.expect("catch up");
    assert_eq!(backend.rows("l_park").await, rows, "applied exactly once");

    // An event of a name nobody knows, of a type the projection reads: stop by default...
    let frozen = append_raw(&store, StreamId::new("account", "P"), raw("AccountFrozen", "{}")).await;
    visible(&store, frozen).await;
    let strict = runner(&backend, "l_unknown", &knobs, quick(FailurePolicy::Stop)).with_name("ledger-unknown");
    match within("catch up (unknown)", 60, strict.catch_up()).await {
        Err(error @ ProjectionError::UnknownEvent { .. }) => {
            let ProjectionError::UnknownEvent {
                position,
                ref event_name,
                ref stream,
                version,
                ..
            } = error
            else {
                unreachable!()
            };
            assert_eq!((position, event_name.as_str(), version), (frozen, "AccountFrozen", 9));
            assert_eq!(*stream, StreamId::new("account", "P"));
            assert!(error.to_string().contains("UnknownEvents::Skip"), "{error}");
        }
        other => panic!("expected an unknown event, got {other:?}"),
    }
    assert!(checkpoints.checkpoint("ledger-unknown").await.unwrap() < frozen);
    // ... or skip it and count it.
    let lenient = runner(
        &backend,
        "l_unknown",
        &knobs,
        RunnerOptions {
            unknown_events: UnknownEvents::Skip,
            ..quick(FailurePolicy::Stop)
        },
    )
    .with_name("ledger-unknown");
    let done = within("catch up (skip unknown)", 60, lenient.catch_up())
        .await
        .expect("skips it");
    assert_eq!(done.position, frozen);
    assert!(done.skipped >= 1);
    let rows = backend.rows("l_unknown").await;
    assert_exactly_once(&rows, &ledger_positions(&store).await, "unknown skipped");

    // An event it handles that does not decode is never retried: parked after one try...
    let bad = append_raw(
        &store,
        StreamId::new("account", "P"),
        raw("MoneyDeposited", r#"{"cents":"lots"}"#),
    )
    .await;
    visible(&store, bad).await;
    backend.create_table("l_decode").await;
    let skip_unknown = |failure| RunnerOptions {
        unknown_events: UnknownEvents::Skip,
        ..quick(failure)
    };
    let decode_park = runner(&backend, "l_decode", &knobs, skip_unknown(park)).with_name("ledger-decode");
    let done = within("catch up (bad payload)", 60, decode_park.catch_up())
        .await
        .expect("parks it");
    assert_eq!((done.parked, done.position), (1, bad));
    let parked = decode_park.parked().await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(
        (parked[0].position, parked[0].attempts),
        (bad, 1),
        "no retries of a bad payload"
    );
    assert_eq!(decode_park.lag().await.unwrap().events_behind, 0);
    // ... and the retrying policy stops at once with a decode error.
    let decode_retry = runner(&backend, "l_decode", &knobs, skip_unknown(retry)).with_name("ledger-decode-retry");
    match within("catch up (bad payload, retry)", 60, decode_retry.catch_up()).await {
        Err(ProjectionError::Decode { position, .. }) => assert_eq!(position, bad),
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_failure_policies_parked_retries_and_unknown_events() {
    failure_policies(Sqlite::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_failure_policies_parked_retries_and_unknown_events() {
    failure_policies(Postgres::new().await).await;
}

// ---------------------------------------------------------------------------------------------
// 4. Blue/green: a copy rebuilt beside the live model, which keeps serving, then switched in.
// ---------------------------------------------------------------------------------------------

async fn blue_green<B: Backend>(backend: B) {
    let store = backend.store();
    backend.create_table("ledger").await;
    backend.create_table("ledger_next").await;
    for n in 0..6 {
        account(&store, &format!("A-{n}"), deposits(&[1, 2, 3, 4, 5, 6, 7, 8])).await;
    }
    let head = register(&store, "C-1", "Ann").await;
    visible(&store, head).await;

    let live = runner(&backend, "ledger", &Knobs::default(), quick(FailurePolicy::Stop));
    let live_progress = live.progress();
    let (live_task, live_stop) = spawn_run(&backend, live).await;
    live_progress
        .wait_for(head, Duration::from_secs(30))
        .await
        .expect("live caught up");
    let served_before = backend.rows("ledger").await.len();

    // Readers of the live model, and writers, while the copy is rebuilt.
    let backend = Arc::new(backend);
    let reading = Arc::new(AtomicBool::new(true));
    let smallest = Arc::new(Mutex::new(usize::MAX));
    let reader = {
        let (backend, reading, smallest) = (Arc::clone(&backend), Arc::clone(&reading), Arc::clone(&smallest));
        tokio::spawn(async move {
            let mut reads = 0;
            while reading.load(Ordering::SeqCst) {
                let served = backend.rows("ledger").await.len();
                {
                    let mut smallest = smallest.lock().unwrap();
                    *smallest = (*smallest).min(served);
                }
                reads += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            reads
        })
    };
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for n in 0..5 {
                account(&store, "W", deposits(&[100 + n])).await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };

    let slow = Knobs {
        delay: Duration::from_millis(5),
        ..Knobs::default()
    };
    let next = runner(&*backend, "ledger_next", &slow, quick(FailurePolicy::Stop)).with_name("ledger-next");
    let reports = Arc::new(Mutex::new(Vec::<RebuildProgress>::new()));
    let on_progress = {
        let reports = Arc::clone(&reports);
        move |progress: RebuildProgress| reports.lock().unwrap().push(progress)
    };
    let switched = within(
        "rebuild beside the live model",
        120,
        next.rebuild_beside("ledger", on_progress, |db: &mut B::Context| -> SwitchFuture<'_> {
            Box::pin(async move { db.swap("ledger", "ledger_next", "ledger_old").await })
        }),
    )
    .await
    .expect("rebuilt and switched");
    within("writer", 60, writer).await.expect("writer");
    reading.store(false, Ordering::SeqCst);
    let reads = within("reader", 60, reader).await.expect("reader");
    assert!(reads > 0);
    assert!(!reports.lock().unwrap().is_empty(), "progress was reported");
    assert!(
        *smallest.lock().unwrap() >= served_before,
        "readers never saw the live model emptied or partial during the rebuild"
    );
    assert!(switched.position >= head);

    // The live runner goes on, writing to the switched-in table.
    let after = account(&store, "Z", deposits(&[999])).await;
    live_progress
        .wait_for(after, Duration::from_secs(30))
        .await
        .expect("the live runner goes on after the switch");
    stop_run(live_task, live_stop)
        .await
        .expect("live runner: clean shutdown");
    let rows = backend.rows("ledger").await;
    assert_exactly_once(&rows, &ledger_positions(&store).await, "the switched-in model");
    assert!(rows.iter().any(|row| row.cents == 999));
    let old = backend.rows("ledger_old").await;
    assert!(!old.is_empty(), "the old model is kept out of the way");
    assert!(
        old.iter().all(|row| row.cents != 999),
        "nothing is written to the old model any more"
    );
    let checkpoints = backend.checkpoints();
    assert!(checkpoints.checkpoint("ledger").await.unwrap() >= after);
    assert!(checkpoints.checkpoint("ledger-next").await.unwrap() >= switched.position);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_blue_green_rebuild_keeps_serving_then_switches() {
    blue_green(Sqlite::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_blue_green_rebuild_keeps_serving_then_switches() {
    blue_green(Postgres::new().await).await;
}

// ---------------------------------------------------------------------------------------------
// 5. Lag in events and seconds; `rebuild` with progress.
// ---------------------------------------------------------------------------------------------

async fn lag_and_rebuild<B: Backend>(backend: B) {
    let store = backend.store();
    backend.create_table("ledger").await;
    for _ in 0..4 {
        account(&store, "A", deposits(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10])).await;
    }
    register(&store, "C", "Cy").await;
    let head = append_raw(&store, StreamId::new("audit", "1"), raw("SomethingAudited", "{}")).await;
    visible(&store, head).await;
    let runner = runner(
        &backend,
        "ledger",
        &Knobs::default(),
        RunnerOptions {
            batch_size: 8,
            ..quick(FailurePolicy::Stop)
        },
    );
    let done = within("catch up", 60, runner.catch_up()).await.expect("caught up");
    assert_eq!(done.position, head);
    let lag = runner.lag().await.expect("lag");
    assert_eq!((lag.checkpoint, lag.events_behind), (head, 0));
    assert_eq!(lag.seconds_behind, 0.0);

    // Events the runner has not seen: behind by their number and the oldest one's age.
    let behind = account(&store, "B", deposits(&[1, 2, 3, 4, 5])).await;
    visible(&store, behind).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let lag = runner.lag().await.expect("lag");
    assert_eq!((lag.checkpoint, lag.events_behind), (head, 5));
    assert!(lag.seconds_behind >= 1.0, "{lag:?}");
    within("catch up", 60, runner.catch_up()).await.expect("caught up");
    assert_eq!(runner.lag().await.expect("lag").events_behind, 0);

    // The model is damaged; a rebuild reports progress and restores it.
    backend.sql("DELETE FROM ledger WHERE cents > 5").await;
    let total = store.tail(0).await.expect("tail").events;
    let mut reports = Vec::new();
    let rebuilt = within("rebuild", 60, runner.rebuild(|progress| reports.push(progress)))
        .await
        .expect("rebuilt");
    assert_eq!(rebuilt.read, total, "every event read once");
    assert_eq!(rebuilt.position, behind);
    assert!(reports.len() >= 2, "a report per batch: {reports:?}");
    assert!(
        reports.windows(2).all(|pair| pair[0].done < pair[1].done),
        "{reports:?}"
    );
    assert!(reports
        .iter()
        .all(|report| report.total == total && report.done <= total));
    let last = reports.last().unwrap();
    assert_eq!(last.done, total);
    assert!(last.events_per_second > 0.0);
    let rows = backend.rows("ledger").await;
    assert_exactly_once(&rows, &ledger_positions(&store).await, "after the rebuild");
    assert_eq!(rows.len(), 46);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_lag_and_rebuild_with_progress() {
    lag_and_rebuild(Sqlite::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lag_and_rebuild_with_progress() {
    lag_and_rebuild(Postgres::new().await).await;
}

// ---------------------------------------------------------------------------------------------
// 6. A shutdown in the middle of a batch: nothing of it commits; after a restart every event is
//    applied exactly once.
// ---------------------------------------------------------------------------------------------

async fn shutdown_mid_batch<B: Backend>(backend: B) {
    let store = backend.store();
    backend.create_table("ledger").await;
    let cents: Vec<i64> = (1..=40).collect();
    let head = account(&store, "A", deposits(&cents)).await;
    visible(&store, head).await;

    let slow = Knobs {
        delay: Duration::from_millis(25),
        ..Knobs::default()
    };
    let options = RunnerOptions {
        batch_time_budget: Duration::from_secs(30),
        ..quick(FailurePolicy::Stop)
    };
    let runner_one = runner(&backend, "ledger", &slow, options);
    let progress = runner_one.progress();
    let (task, stop) = spawn_run(&backend, runner_one).await;
    within("the batch is under way", 30, async {
        while slow.handled.load(Ordering::SeqCst) < 10 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    stop_run(task, stop).await.expect("a clean shutdown mid-batch");
    let handled = slow.handled.load(Ordering::SeqCst);
    assert!(handled < 40, "the shutdown came mid-batch ({handled} handled)");
    assert_eq!(progress.checkpoint(), 0);
    let checkpoint = backend.checkpoints().checkpoint("ledger").await.unwrap();
    assert_eq!(checkpoint, 0, "the unfinished batch did not commit");
    assert!(backend.rows("ledger").await.is_empty(), "its writes rolled back");

    // A restart applies everything, once.
    let restarted = runner(&backend, "ledger", &Knobs::default(), quick(FailurePolicy::Stop));
    let done = within("catch up after the restart", 60, restarted.catch_up())
        .await
        .expect("caught up");
    assert_eq!(done.position, head);
    let rows = backend.rows("ledger").await;
    assert_exactly_once(&rows, &ledger_positions(&store).await, "after the restart");
    assert_eq!(rows.len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_shutdown_mid_batch_then_restart_applies_each_event_once() {
    shutdown_mid_batch(Sqlite::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_shutdown_mid_batch_then_restart_applies_each_event_once() {
    shutdown_mid_batch(Postgres::new().await).await;
}

// ---------------------------------------------------------------------------------------------
// 7. Documented statements the code does not keep.
// ---------------------------------------------------------------------------------------------

/// `FailurePolicy::Retry` (the default policy): "Retry, then stop the runner with the error.
/// The checkpoint stays just before the event."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_retry_policy_stops_with_the_checkpoint_just_before_the_failing_event() {
    let backend = Sqlite::new().await;
    let store = backend.store();
    backend.create_table("ledger").await;
    let (poison, _) = poisoned_history(&store).await;
    let knobs = Knobs::default();
    knobs.broken.store(true, Ordering::SeqCst);
    // The default options: Retry { attempts: 3, backoff: 200 ms }, batches of 500.
    let retrying = ProjectionRunner::new(Ledger::new("ledger", knobs.clone()), store.clone(), store.checkpoints());
    let error = within("catch up", 60, retrying.catch_up()).await.expect_err("stops");
    assert!(matches!(error, ProjectionError::Handler(_)), "{error}");
    let checkpoint = store.checkpoints().checkpoint("ledger").await.unwrap();
    assert_eq!(
        checkpoint,
        poison - 1,
        "the checkpoint stays just before the failing event ({poison}), as FailurePolicy::Retry says"
    );
    assert_eq!(
        backend.rows("ledger").await.len(),
        4,
        "the deposits before it are applied"
    );
}

/// `retry_parked`: the running runner handles the retried event within its poll interval,
/// however the batches come (here, woken by appends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_retry_parked_is_handled_by_the_running_runner_within_its_poll_interval() {
    let backend = Sqlite::new().await;
    let store = backend.store();
    backend.create_table("ledger").await;
    let (poison, head) = poisoned_history(&store).await;
    let knobs = Knobs::default();
    knobs.broken.store(true, Ordering::SeqCst);
    let options = RunnerOptions {
        poll_interval: Duration::from_millis(200),
        failure: FailurePolicy::Park {
            attempts: 1,
            backoff: Duration::ZERO,
        },
        ..RunnerOptions::default()
    };
    let running = runner(&backend, "ledger", &knobs, options);
    let progress = running.progress();
    let (task, stop) = spawn_run(&backend, running).await;
    progress
        .wait_for(head, Duration::from_secs(20))
        .await
        .expect("caught up");
    let checkpoints = store.checkpoints();
    assert_eq!(checkpoints.parked("ledger").await.unwrap().len(), 1);

    knobs.broken.store(false, Ordering::SeqCst);
    assert!(checkpoints.request_retry("ledger", poison).await.unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut still_parked = checkpoints.parked("ledger").await.unwrap();
    while !still_parked.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        still_parked = checkpoints.parked("ledger").await.unwrap();
    }
    stop_run(task, stop).await.expect("clean shutdown");
    assert!(
        still_parked.is_empty(),
        "the retried event was handled: {still_parked:?}"
    );
}
