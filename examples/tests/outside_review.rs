//! An outside user's review of the durable backends (SQLite, PostgreSQL) and of the `es` command
//! line, through the public API only: the Order aggregate of the single-table design, typed
//! errors, time travel, snapshots, projections in the same database, read-your-writes, stream
//! listing, bulk import, and the documented CLI commands.

use std::process::{Command, Output};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use es_core::{
    async_trait, event, Aggregate, AppendOutcome, Apply, AsOf, CheckpointStore, ClaimStatus, CommandError,
    DecodedEvent, EventStore, Executed, ExpectedVersion, GlobalLog, HandlerError, Metadata, NewEvent, Projection,
    ProjectionError, ProjectionProgress, ProjectionRunner, Repository, RepositoryError, RunnerOptions, Snapshot,
    SnapshotStore, StoreError, StreamCatalog, StreamId, StreamQuery, UnknownEvents, WaitError,
};
use es_postgres::{ImportError, ImportOptions, ImportedEvent, PostgresError, PostgresStore};
use es_sqlite::{SqliteContext, SqliteError, SqliteStore};
use es_test_support::TestDatabase;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[path = "support/review/mod.rs"]
mod review;

use review::running::run_until_stopped;
use review::stores::{postgres, raw, sqlite_file};

// ---------------------------------------------------------------------------------------------
// The Order aggregate of the single-table design (seed 000).
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub item_id: String,
    pub quantity: u32,
    pub price_cents: u64,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct OrderCreated {
    pub customer_id: String,
    pub items: Vec<Item>,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct ItemAddedToOrder {
    pub item: Item,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct OrderShipped {
    pub carrier: String,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum OrderEvent {
    Created(OrderCreated),
    ItemAdded(ItemAddedToOrder),
    Shipped(OrderShipped),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum OrderStatus {
    #[default]
    Pending,
    Created,
    Shipped,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "order", id = String, event = OrderEvent)]
pub struct Order {
    pub customer_id: String,
    pub items: Vec<Item>,
    pub status: OrderStatus,
}

impl Apply<OrderCreated> for Order {
    fn apply(&mut self, event: &OrderCreated) {
        self.customer_id = event.customer_id.clone();
        self.items = event.items.clone();
        self.status = OrderStatus::Created;
    }
}
impl Apply<ItemAddedToOrder> for Order {
    fn apply(&mut self, event: &ItemAddedToOrder) {
        self.items.push(event.item.clone());
    }
}
impl Apply<OrderShipped> for Order {
    fn apply(&mut self, _: &OrderShipped) {
        self.status = OrderStatus::Shipped;
    }
}

impl Order {
    fn create(&self, customer: &str) -> Result<Vec<OrderEvent>, String> {
        if self.status != OrderStatus::Pending {
            return Err("the order exists".into());
        }
        Ok(vec![OrderCreated {
            customer_id: customer.into(),
            items: vec![item("product-A", 2, 1000)],
        }
        .into()])
    }

    fn add_item(&self, id: &str, quantity: u32, price_cents: u64) -> Result<Vec<OrderEvent>, String> {
        if self.status != OrderStatus::Created {
            return Err("cannot add items to an order that is not in CREATED status".into());
        }
        if self.items.iter().any(|item| item.item_id == id) {
            return Err("item already exists in order".into());
        }
        Ok(vec![ItemAddedToOrder {
            item: item(id, quantity, price_cents),
        }
        .into()])
    }

    fn ship(&self) -> Result<Vec<OrderEvent>, String> {
        if self.status != OrderStatus::Created {
            return Err("cannot ship an order that is not in CREATED status".into());
        }
        Ok(vec![OrderShipped { carrier: "DHL".into() }.into()])
    }
}

fn item(id: &str, quantity: u32, price_cents: u64) -> Item {
    Item {
        item_id: id.into(),
        quantity,
        price_cents,
    }
}

/// Creates order `id` for `customer`.
async fn create_order<S: EventStore>(orders: &Repository<Order, S>, id: &str, customer: &str) -> Executed<Order> {
    orders
        .create(id, Metadata::new(), |order: &Order| order.create(customer))
        .await
        .unwrap()
}

/// The order stream of that id.
fn order_stream(id: &str) -> StreamId {
    StreamId::new("order", id)
}

/// Appends one raw event to order `id`, as another program (or an older release) might have
/// stored it.
async fn try_append_to_order<S: EventStore>(
    store: &S,
    id: &str,
    expected: ExpectedVersion,
    event: NewEvent,
) -> Result<AppendOutcome, StoreError> {
    store.append(&order_stream(id), expected, vec![event]).await
}

/// [`try_append_to_order`], which must succeed.
async fn append_to_order<S: EventStore>(
    store: &S,
    id: &str,
    expected: ExpectedVersion,
    event: NewEvent,
) -> AppendOutcome {
    try_append_to_order(store, id, expected, event)
        .await
        .expect("the raw event is appended")
}

/// The Order life of seed 000 on any store: create, add an item, ship; a refused command; a
/// stale copy saved after another one; time travel by version and by instant.
async fn order_life<S: EventStore + SnapshotStore + Clone + 'static>(store: S) -> DateTime<Utc> {
    let orders = Repository::<Order, _>::new(store.clone()).with_snapshot_every(2);
    orders
        .create("O-1", Metadata::new().with_actor("customer"), |order: &Order| {
            order.create("C-9")
        })
        .await
        .expect("created");
    // The same creation again is refused by the rule, not stored twice.
    let again = orders
        .create("O-1", Metadata::new(), |order: &Order| order.create("C-9"))
        .await;
    assert!(matches!(again, Err(CommandError::Rejected(_))), "{again:?}");

    let executed = orders
        .execute("O-1", Metadata::new(), |order: &Order| {
            order.add_item("product-B", 1, 2500)
        })
        .await
        .expect("item added");
    assert_eq!(executed.version, 2);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let between = Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;

    // Two copies loaded at version 2: the first save wins, the second is a typed conflict.
    let mut first = orders.load_for_update("O-1").await.expect("load");
    let mut second = orders.load_for_update("O-1").await.expect("load");
    first.decide(Order::ship).expect("ship");
    orders.save(&mut first, Metadata::new()).await.expect("first save");
    second
        .decide(|order: &Order| order.add_item("product-C", 3, 500))
        .expect("decided on the stale copy");
    match orders.save(&mut second, Metadata::new()).await {
        Err(RepositoryError::Conflict(conflict)) => {
            assert_eq!(conflict.actual, 3, "the conflict names the actual version");
            assert_eq!(conflict.stream, order_stream("O-1"));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // A command against the shipped order is refused by the business rule.
    let refused = orders
        .execute("O-1", Metadata::new(), |order: &Order| {
            order.add_item("product-D", 1, 1)
        })
        .await;
    assert!(matches!(refused, Err(CommandError::Rejected(_))), "{refused:?}");

    let now = orders.load("O-1").await.expect("load");
    assert_eq!(
        (now.version, now.aggregate.status, now.aggregate.items.len()),
        (3, OrderStatus::Shipped, 2)
    );
    let v1 = orders.load_at_version("O-1", 1).await.expect("v1");
    assert_eq!(
        (v1.version, v1.aggregate.items.len(), v1.aggregate.status),
        (1, 1, OrderStatus::Created)
    );
    let at = orders.load_at_instant("O-1", between).await.expect("at instant");
    assert_eq!(
        (at.version, at.aggregate.status),
        (2, OrderStatus::Created),
        "before the shipping"
    );
    let before = orders
        .load_at_instant("O-1", Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap())
        .await
        .expect("before anything");
    assert_eq!((before.version, before.aggregate), (0, Order::default()));
    between
}

// ---------------------------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_order_life_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let between = order_life(sqlite_file(&dir, "orders.db").await).await;

    // A new process opening the same file sees the same history, time travel included.
    let store = sqlite_file(&dir, "orders.db").await;
    let orders = Repository::<Order, _>::new(store.clone()).with_snapshot_every(2);
    let order = orders.load("O-1").await.expect("reloaded");
    assert_eq!((order.version, order.aggregate.status), (3, OrderStatus::Shipped));
    assert_eq!(orders.load_at_instant("O-1", between).await.unwrap().version, 2);
    let snapshot = store
        .load_snapshot(&order_stream("O-1"))
        .await
        .expect("snapshot read")
        .expect("a snapshot was taken every 2 events");
    assert_eq!(snapshot.version, 2);

    // A snapshot that no longer decodes (the state's shape drifted) is ignored: replay instead.
    store
        .save_snapshot(Snapshot {
            stream: order_stream("O-1"),
            version: 3,
            revision: snapshot.revision,
            schema_version: snapshot.schema_version,
            state: br#"{"shape":"of another release"}"#.to_vec(),
            taken_at: Utc::now(),
        })
        .await
        .expect("snapshot saved");
    let order = orders.load("O-1").await.expect("replayed from events");
    assert_eq!((order.version, order.aggregate.items.len()), (3, 2));
    // The global log is dense on SQLite: positions 1..=3.
    let positions: Vec<u64> = store
        .read_all(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(positions, vec![1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_refuses_bad_files_and_read_only_writes_with_typed_errors() {
    let dir = tempfile::tempdir().unwrap();

    // A file that is not a database: typed, and left untouched.
    let text = dir.path().join("notes.db");
    let content = "these are my notes, not a database; ".repeat(20);
    std::fs::write(&text, &content).unwrap();
    match SqliteStore::open(&text).await {
        Err(SqliteError::NotADatabase { path, .. }) => assert_eq!(path, text),
        other => panic!("expected NotADatabase, got {other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&text).unwrap(), content, "left untouched");

    // `:memory:` and "" name no file.
    assert!(matches!(
        SqliteStore::open(":memory:").await,
        Err(SqliteError::NotAFile { .. })
    ));
    assert!(matches!(SqliteStore::open("").await, Err(SqliteError::NotAFile { .. })));
    // A missing directory.
    let missing = dir.path().join("no/such/dir/events.db");
    assert!(matches!(
        SqliteStore::open(&missing).await,
        Err(SqliteError::Open { .. })
    ));
    // Read-only on a missing file creates nothing.
    let absent = dir.path().join("absent.db");
    assert!(SqliteStore::open_read_only(&absent).await.is_err());
    assert!(!absent.exists(), "open_read_only created {absent:?}");

    // A read-only store reads, and refuses every write with SqliteError::ReadOnly.
    let path = dir.path().join("events.db");
    let writable = sqlite_file(&dir, "events.db").await;
    let orders = Repository::<Order, _>::new(writable.clone());
    create_order(&orders, "O-1", "C-1").await;
    let read_only = SqliteStore::open_read_only(&path).await.expect("open read-only");
    assert!(read_only.is_read_only());
    let readers = Repository::<Order, _>::new(read_only.clone());
    assert_eq!(readers.load("O-1").await.unwrap().version, 1);
    let refused = try_append_to_order(
        &read_only,
        "O-2",
        ExpectedVersion::NoStream,
        raw("OrderShipped", r#"{"carrier":"x"}"#),
    )
    .await
    .expect_err("a read-only store refuses appends");
    let cause = match &refused {
        StoreError::Backend(cause) | StoreError::Unavailable(cause) => cause,
        other => panic!("expected a wrapped SqliteError, got {other:?}"),
    };
    assert!(
        matches!(cause.downcast_ref::<SqliteError>(), Some(SqliteError::ReadOnly { .. })),
        "{refused:?}"
    );
    assert!(matches!(read_only.migrate().await, Err(SqliteError::ReadOnly { .. })));
    assert_eq!(writable.stream_version(&order_stream("O-2")).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_unknown_and_malformed_stored_events_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_file(&dir, "events.db").await;
    let orders = Repository::<Order, _>::new(store.clone());
    create_order(&orders, "O-1", "C-1").await;

    // A payload that is not JSON never gets in.
    let bad = try_append_to_order(
        &store,
        "O-1",
        ExpectedVersion::Exact(1),
        raw("OrderShipped", "not json"),
    )
    .await;
    assert!(matches!(bad, Err(StoreError::InvalidBatch { .. })), "{bad:?}");

    // An event this code does not know (written by a newer release, say).
    let refunded = raw("OrderRefunded", r#"{"cents":5}"#);
    append_to_order(&store, "O-1", ExpectedVersion::Exact(1), refunded).await;
    match orders.load("O-1").await {
        Err(RepositoryError::Decode(error)) => {
            assert_eq!((error.stream.clone(), error.version), (order_stream("O-1"), 2));
            assert_eq!(error.event_name, "OrderRefunded");
            assert!(error.to_string().contains("OrderRefunded"), "{error}");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    // Loading can be told to skip unknown names, as the README says.
    let lenient = Repository::<Order, _>::new(store.clone()).with_unknown_events(UnknownEvents::Skip);
    let order = lenient.load("O-1").await.expect("unknown name skipped");
    assert_eq!((order.version, order.aggregate.status), (2, OrderStatus::Created));

    // A known name with a payload of the wrong shape is never skipped silently.
    let mistyped = raw("OrderShipped", r#"{"carrier":42}"#);
    append_to_order(&store, "O-1", ExpectedVersion::Exact(2), mistyped).await;
    match lenient.load("O-1").await {
        Err(RepositoryError::Decode(error)) => assert_eq!(error.version, 3),
        other => panic!("expected a decode error at version 3, got {other:?}"),
    }
    // Time travel before the bad events still works.
    assert_eq!(
        orders.load_at_version("O-1", 1).await.unwrap().aggregate.status,
        OrderStatus::Created
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_handles_on_one_file_never_store_one_version_twice() {
    let dir = tempfile::tempdir().unwrap();
    let a = sqlite_file(&dir, "events.db").await;
    // A second, independent handle on the file: its own connections, as another process has.
    let b = sqlite_file(&dir, "events.db").await;
    let stream = StreamId::new("counter", "C-1");
    let mut writers = Vec::new();
    for writer in 0..8 {
        let store = if writer % 2 == 0 { a.clone() } else { b.clone() };
        let stream = stream.clone();
        writers.push(tokio::spawn(async move {
            let mut won = 0;
            for _ in 0..10 {
                let version = store.stream_version(&stream).await.unwrap();
                match store
                    .append(&stream, ExpectedVersion::Exact(version), vec![raw("Counted", "{}")])
                    .await
                {
                    Ok(_) => won += 1,
                    Err(StoreError::Conflict(conflict)) => assert!(conflict.actual > version),
                    Err(other) => panic!("only conflicts may refuse an append: {other}"),
                }
            }
            won
        }));
    }
    let mut won = 0;
    for writer in writers {
        won += writer.await.unwrap();
    }
    let events = b.read_all(0, 1000).await.unwrap();
    assert_eq!(events.len(), won, "every acknowledged append is stored, once");
    let versions: Vec<u64> = events.iter().map(|event| event.version).collect();
    assert_eq!(
        versions,
        (1..=won as u64).collect::<Vec<_>>(),
        "versions are contiguous, in commit order"
    );
    assert!(events.windows(2).all(|pair| pair[1].position == pair[0].position + 1));
}

/// A read model in the same SQLite file: one row per order line.
struct OrderLines {
    fail_on: Option<String>,
}

#[async_trait]
impl Projection for OrderLines {
    const NAME: &'static str = "order-lines";
    const AGGREGATE_TYPES: &'static [&'static str] = &["order"];
    type Event = OrderEvent;
    type Context = SqliteContext;

    async fn handle(&self, db: &mut SqliteContext, event: &DecodedEvent<OrderEvent>) -> Result<(), HandlerError> {
        let order = &event.envelope.stream.aggregate_id;
        let items = match &event.event {
            OrderEvent::Created(created) => created.items.clone(),
            OrderEvent::ItemAdded(added) => vec![added.item.clone()],
            OrderEvent::Shipped(_) => vec![],
        };
        for item in items {
            if self.fail_on.as_deref() == Some(item.item_id.as_str()) {
                return Err(format!("cannot project {}", item.item_id).into());
            }
            db.execute(
                "INSERT INTO order_lines (order_id, item_id, position) VALUES (?1, ?2, ?3)",
                (order, &item.item_id, event.envelope.position as i64),
            )?;
        }
        Ok(())
    }

    async fn reset(&self, db: &mut SqliteContext) -> Result<(), HandlerError> {
        db.execute("DELETE FROM order_lines", [])?;
        Ok(())
    }
}

async fn order_lines_table(store: &SqliteStore) {
    store
        .write(|db| {
            db.execute_batch(
                "CREATE TABLE IF NOT EXISTS order_lines (order_id TEXT NOT NULL, item_id TEXT NOT NULL, \
                 position INTEGER NOT NULL, UNIQUE (order_id, item_id))",
            )
        })
        .await
        .expect("read-model table");
}

async fn count_lines(store: &SqliteStore) -> i64 {
    store
        .read(|db| db.query_row("SELECT count(*) FROM order_lines", [], |row| row.get(0)))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_projection_in_the_same_file_applies_each_event_exactly_once_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    {
        let store = sqlite_file(&dir, "events.db").await;
        order_lines_table(&store).await;
        let orders = Repository::<Order, _>::new(store.clone());
        for n in 0..5 {
            let id = format!("O-{n}");
            create_order(&orders, &id, "C").await;
            orders
                .execute(&id, Metadata::new(), |o: &Order| o.add_item("bad-item", 1, 1))
                .await
                .unwrap();
        }
        // The handler fails on an event: its batch rolls back, writes and checkpoint alike.
        let failing = ProjectionRunner::new(
            OrderLines {
                fail_on: Some("bad-item".into()),
            },
            store.clone(),
            store.checkpoints(),
        )
        .with_options(RunnerOptions {
            failure: es_core::FailurePolicy::Stop,
            batch_size: 100,
            ..RunnerOptions::default()
        });
        let error = failing.catch_up().await.expect_err("the handler fails");
        assert!(matches!(error, ProjectionError::Handler(_)), "{error:?}");
        let checkpoint = store.checkpoints().checkpoint(OrderLines::NAME).await.unwrap();
        assert_eq!(checkpoint, 0, "nothing of the failed batch committed");
        assert_eq!(
            count_lines(&store).await,
            0,
            "the read-model writes rolled back with it"
        );
    }
    // A restart with the fix: everything once.
    let store = SqliteStore::open(&path).await.unwrap();
    let runner = ProjectionRunner::new(OrderLines { fail_on: None }, store.clone(), store.checkpoints());
    runner.catch_up().await.expect("caught up");
    assert_eq!(count_lines(&store).await, 10);
    // More events, another restart: only the new ones are applied (the UNIQUE constraint would
    // fail the batch if any event were applied twice).
    Repository::<Order, _>::new(store.clone())
        .execute("O-0", Metadata::new(), |o: &Order| o.add_item("late", 1, 1))
        .await
        .unwrap();
    drop(runner);
    let store = SqliteStore::open(&path).await.unwrap();
    let resumed = ProjectionRunner::new(OrderLines { fail_on: None }, store.clone(), store.checkpoints());
    let caught_up = resumed.catch_up().await.expect("resumed");
    assert_eq!(count_lines(&store).await, 11);
    assert_eq!(caught_up.position, store.tail(0).await.unwrap().head_position);
    // A rebuild gives the same model.
    resumed.rebuild(|_| {}).await.expect("rebuilt");
    assert_eq!(count_lines(&store).await, 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wait_for_reads_your_writes_and_one_runner_holds_the_claim() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_file(&dir, "events.db").await;
    order_lines_table(&store).await;
    let runner = ProjectionRunner::new(OrderLines { fail_on: None }, store.clone(), store.checkpoints());
    let progress = runner.progress();
    let (stop, running) = run_until_stopped(runner, store.wake_up());

    let orders = Repository::<Order, _>::new(store.clone());
    let executed = create_order(&orders, "O-1", "C").await;
    read_your_writes(&progress, executed.position()).await;
    assert_eq!(count_lines(&store).await, 1, "the command's line is in the read model");

    // Another handle on the file (another process) sees the claim held, and a second runner
    // does not run beside the first one.
    let other = SqliteStore::open(store.path()).await.unwrap();
    let status = other.checkpoints().claim_status(OrderLines::NAME).await.unwrap();
    assert_eq!(status, ClaimStatus::Held);
    let second = ProjectionRunner::new(OrderLines { fail_on: None }, other.clone(), other.checkpoints());
    let blocked = tokio::time::timeout(Duration::from_millis(500), second.catch_up()).await;
    assert!(
        blocked.is_err(),
        "a second runner waited for the claim instead of running: {blocked:?}"
    );

    // Waiting for a position nobody will reach is a typed timeout.
    match progress
        .wait_for(executed.position() + 1000, Duration::from_millis(200))
        .await
    {
        Err(WaitError::Timeout { reached, .. }) => assert_eq!(reached, executed.position()),
        other => panic!("expected a timeout, got {other:?}"),
    }
    let _ = stop.send(());
    running.await.unwrap().expect("the runner stopped cleanly");
    assert_eq!(
        other.checkpoints().claim_status(OrderLines::NAME).await.unwrap(),
        ClaimStatus::Free
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_lists_streams_by_type_prefix_and_page() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_file(&dir, "events.db").await;
    let orders = Repository::<Order, _>::new(store.clone());
    for id in ["A-1", "A-2", "B-1", "A-3"] {
        create_order(&orders, id, "C").await;
    }
    orders.execute("A-2", Metadata::new(), Order::ship).await.unwrap();
    store
        .append(
            &StreamId::new("other", "A-9"),
            ExpectedVersion::NoStream,
            vec![raw("X", "{}")],
        )
        .await
        .unwrap();

    let query = StreamQuery {
        aggregate_type: Some("order".into()),
        id_prefix: Some("A-".into()),
        limit: 2,
        ..StreamQuery::default()
    };
    let page = store.list_streams(&query).await.unwrap();
    let listed: Vec<(String, u64)> = page
        .iter()
        .map(|s| (s.stream.aggregate_id.clone(), s.version))
        .collect();
    assert_eq!(listed, vec![("A-1".to_string(), 1), ("A-2".to_string(), 2)]);
    let next = store
        .list_streams(&StreamQuery {
            after: Some(page[1].stream.clone()),
            ..query.clone()
        })
        .await
        .unwrap();
    let listed: Vec<&str> = next.iter().map(|s| s.stream.aggregate_id.as_str()).collect();
    assert_eq!(listed, vec!["A-3"]);
    let all = store.list_streams(&StreamQuery::default()).await.unwrap();
    assert_eq!(all.len(), 5);
}

/// Waits until the runner behind `progress` has handled the log up to `position`, the last
/// event a command wrote: read-your-writes.
async fn read_your_writes(progress: &ProjectionProgress, position: u64) {
    progress
        .wait_for(position, Duration::from_secs(10))
        .await
        .expect("read your writes");
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_order_life_with_racing_commands_and_time_travel() {
    let schema = postgres().await;
    let store = schema.store().clone();
    order_life(store.clone()).await;

    // Eight commands race on one order: retries make all of them land, at distinct versions.
    let orders = Repository::<Order, _>::new(store.clone());
    create_order(&orders, "O-2", "C").await;
    let mut tasks = Vec::new();
    for n in 0..8 {
        let orders = orders.clone();
        tasks.push(tokio::spawn(async move {
            orders
                .execute("O-2", Metadata::new(), move |o: &Order| {
                    o.add_item(&format!("p-{n}"), 1, 1)
                })
                .await
                .map(|executed| executed.version)
        }));
    }
    let mut versions = Vec::new();
    for task in tasks {
        versions.push(task.await.unwrap().expect("the command landed after retries"));
    }
    versions.sort_unstable();
    assert_eq!(versions, (2..=9).collect::<Vec<_>>());
    assert_eq!(orders.load("O-2").await.unwrap().aggregate.items.len(), 9);

    // An event this code does not know is a typed decode error naming stream and version.
    append_to_order(&store, "O-2", ExpectedVersion::Exact(9), raw("OrderLost", "{}")).await;
    match orders.load("O-2").await {
        Err(RepositoryError::Decode(error)) => {
            assert_eq!((error.version, error.event_name.as_str()), (10, "OrderLost"))
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_global_log_never_skips_an_event_committed_late() {
    let schema = postgres().await;
    let store = schema.store().clone();
    // Pitfall 1: a transaction that took its position first commits last.
    let early = append_in_flight(&store, "early").await;
    let late = append_to_order(&store, "late", ExpectedVersion::NoStream, raw("X", "{}")).await;
    // A reader now must not hand out the later event, or its checkpoint would pass the earlier.
    let seen = store.read_all(0, 100).await.unwrap();
    assert!(
        seen.is_empty(),
        "read_all returned {seen:?} while an earlier writer is in flight"
    );
    early.commit().await.unwrap();
    let seen = visible(&store, 0, 2).await;
    let ids: Vec<&str> = seen.iter().map(|e| e.stream.aggregate_id.as_str()).collect();
    assert_eq!(ids, vec!["early", "late"], "both, in commit-safe order");
    assert_eq!(seen[1].position, late.positions[0]);

    // Pitfall 2: a rolled-back append leaves a hole that stalls nobody.
    let checkpoint = seen[1].position;
    let doomed = append_in_flight(&store, "doomed").await;
    doomed.rollback().await.unwrap();
    append_to_order(&store, "after", ExpectedVersion::NoStream, raw("X", "{}")).await;
    let next = visible(&store, checkpoint, 1).await;
    let ids: Vec<&str> = next.iter().map(|e| e.stream.aggregate_id.as_str()).collect();
    assert_eq!(ids, vec!["after"]);
}

/// A transaction that appended one event to order `id` and is still in flight.
async fn append_in_flight(store: &PostgresStore, id: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut transaction = store.pool().begin().await.unwrap();
    store
        .append_in_transaction(
            &mut transaction,
            &order_stream(id),
            ExpectedVersion::NoStream,
            vec![raw("X", "{}")],
        )
        .await
        .unwrap();
    transaction
}

/// The global log after `after` once it shows at least `events` events. On PostgreSQL the log is
/// held back by every write transaction in flight anywhere in the cluster (other tests' schemas
/// included), as the crate docs say, so a read right after an append may not show it yet.
async fn visible(store: &PostgresStore, after: u64, events: usize) -> Vec<es_core::RecordedEvent> {
    for _ in 0..500 {
        let page = store.read_all(after, 100).await.unwrap();
        if page.len() >= events {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.read_all(after, 100).await.unwrap()
}

/// The Order lines read model on PostgreSQL, in the store's schema.
struct PgOrderLines;

#[async_trait]
impl Projection for PgOrderLines {
    const NAME: &'static str = "order-lines";
    const AGGREGATE_TYPES: &'static [&'static str] = &["order"];
    type Event = OrderEvent;
    type Context = sqlx::PgConnection;

    async fn handle(&self, db: &mut sqlx::PgConnection, event: &DecodedEvent<OrderEvent>) -> Result<(), HandlerError> {
        let items = match &event.event {
            OrderEvent::Created(created) => created.items.clone(),
            OrderEvent::ItemAdded(added) => vec![added.item.clone()],
            OrderEvent::Shipped(_) => vec![],
        };
        for item in items {
            sqlx::query("INSERT INTO order_lines (order_id, item_id) VALUES ($1, $2)")
                .bind(&event.envelope.stream.aggregate_id)
                .bind(&item.item_id)
                .execute(&mut *db)
                .await?;
        }
        Ok(())
    }

    async fn reset(&self, db: &mut sqlx::PgConnection) -> Result<(), HandlerError> {
        sqlx::query("DELETE FROM order_lines").execute(&mut *db).await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_projection_checkpoint_commits_with_the_read_model_and_wait_for_works() {
    let schema = postgres().await;
    let store = schema.store().clone();
    sqlx::query(&format!(
        "CREATE TABLE \"{}\".order_lines (order_id text NOT NULL, item_id text NOT NULL, UNIQUE (order_id, item_id))",
        store.schema()
    ))
    .execute(store.pool())
    .await
    .unwrap();
    let lines = || async {
        sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM \"{}\".order_lines", store.schema()))
            .fetch_one(store.pool())
            .await
            .unwrap()
    };
    let orders = Repository::<Order, _>::new(store.clone());
    for n in 0..3 {
        create_order(&orders, &format!("O-{n}"), "C").await;
    }
    visible(&store, 0, 3).await;
    let first = ProjectionRunner::new(PgOrderLines, store.clone(), store.checkpoints());
    first.catch_up().await.expect("caught up");
    assert_eq!(lines().await, 3);
    drop(first);

    // A restarted runner tails from its checkpoint; read-your-writes with wait_for.
    let runner = ProjectionRunner::new(PgOrderLines, store.clone(), store.checkpoints());
    let progress = runner.progress();
    let wake_up = store.wake_up().await.expect("listen");
    let (stop, running) = run_until_stopped(runner, wake_up);
    let executed = orders
        .execute("O-1", Metadata::new(), |o: &Order| o.add_item("more", 1, 1))
        .await
        .unwrap();
    read_your_writes(&progress, executed.position()).await;
    assert_eq!(
        lines().await,
        4,
        "each event applied once (UNIQUE would refuse a second time)"
    );
    assert_eq!(
        store.checkpoints().claim_status(PgOrderLines::NAME).await.unwrap(),
        ClaimStatus::Held
    );
    let _ = stop.send(());
    running.await.unwrap().expect("stopped cleanly");
    assert_eq!(
        store.checkpoints().checkpoint(PgOrderLines::NAME).await.unwrap(),
        progress.checkpoint()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connection_and_schema_mistakes_are_typed() {
    match PostgresStore::connect("postgres://postgres@127.0.0.1:1/postgres").await {
        Err(PostgresError::ConnectFailed { address, .. }) => assert!(address.contains("127.0.0.1:1"), "{address}"),
        other => panic!("expected ConnectFailed, got {other:?}"),
    }
    let url = TestDatabase::get().unwrap().url().to_owned();
    let store = PostgresStore::connect(&url).await.expect("connect");
    for bad in ["Tickets", "pg_events", "drop table x", ""] {
        assert!(
            matches!(
                store.clone().with_schema(bad),
                Err(PostgresError::InvalidSchemaName { .. })
            ),
            "{bad:?} accepted"
        );
    }
}

fn imported(n: i64, stream: &str, at: DateTime<Utc>) -> ImportedEvent {
    let (name, payload) = match n {
        0 => ("OrderCreated", r#"{"customer_id":"legacy","items":[]}"#.to_string()),
        _ => (
            "ItemAddedToOrder",
            format!(r#"{{"item":{{"item_id":"i-{n}","quantity":1,"price_cents":{n}}}}}"#),
        ),
    };
    ImportedEvent {
        stream: order_stream(stream),
        event_id: Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("{stream}/{n}").as_bytes()),
        event_name: name.into(),
        schema_version: 1,
        payload: payload.into_bytes(),
        metadata: Metadata::new().with_actor("legacy-system"),
        recorded_at: at + chrono::Duration::days(n),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_bulk_import_keeps_ids_and_timestamps_and_resumes() {
    let schema = postgres().await;
    let store = schema.store().clone();
    let origin = Utc.with_ymd_and_hms(2019, 3, 1, 12, 0, 0).unwrap();
    // The source: 3 orders of 5 events each, in the old system's order (a stream from SQL rows).
    let source = || {
        sqlx::query("SELECT g FROM generate_series(0, 14) AS g ORDER BY g")
            .try_map(move |row: sqlx::postgres::PgRow| {
                use sqlx::Row;
                let g: i32 = row.try_get(0)?;
                Ok(imported(i64::from(g / 3), &format!("L-{}", g % 3), origin))
            })
            .fetch(store.pool())
    };
    let report = store
        .import(ImportOptions::new("legacy-orders").with_chunk_size(4), source(), |_| {})
        .await
        .expect("imported");
    assert_eq!(report.events_total, 15);
    assert!(!report.already_finished);

    let orders = Repository::<Order, _>::new(store.clone());
    let order = orders.load("L-1").await.expect("imported order loads");
    assert_eq!((order.version, order.aggregate.items.len()), (5, 4));
    // Time travel by the original timestamps.
    let back_then = orders
        .load_at_instant("L-1", origin + chrono::Duration::days(2) + chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(back_then.version, 3);
    let first = store
        .read_event(Uuid::new_v5(&Uuid::NAMESPACE_OID, b"L-1/0"))
        .await
        .unwrap()
        .expect("the original id is kept");
    assert_eq!((first.recorded_at, first.version), (origin, 1));
    assert_eq!(first.metadata.actor.as_deref(), Some("legacy-system"));

    // A finished import runs again as a no-op.
    let again = store
        .import(ImportOptions::new("legacy-orders"), source(), |_| {})
        .await
        .expect("rerun");
    assert!(again.already_finished);
    assert_eq!(visible(&store, 0, 15).await.len(), 15);

    // Importing into a stream that has events of its own is refused, naming it.
    let fresh_ids = sqlx::query("SELECT g FROM generate_series(0, 14) AS g ORDER BY g")
        .try_map(move |row: sqlx::postgres::PgRow| {
            use sqlx::Row;
            let g: i32 = row.try_get(0)?;
            let event = imported(i64::from(g / 3), &format!("L-{}", g % 3), origin);
            Ok(ImportedEvent {
                event_id: Uuid::new_v4(),
                ..event
            })
        })
        .fetch(store.pool());
    let other = store
        .import(ImportOptions::new("second"), fresh_ids, |_| {})
        .await
        .expect_err("the streams exist");
    assert!(matches!(other, ImportError::StreamHasEvents { .. }), "{other:?}");
    assert_eq!(visible(&store, 0, 15).await.len(), 15, "nothing written");
    // Commands continue the imported streams.
    let executed = orders.execute("L-1", Metadata::new(), Order::ship).await.unwrap();
    assert_eq!(executed.version, 6);
    assert_eq!(
        orders
            .load_closed("L-1", AsOf::Version(1))
            .await
            .unwrap()
            .aggregate
            .items
            .len(),
        0
    );
}

// ---------------------------------------------------------------------------------------------
// The `es` command line of the examples
// ---------------------------------------------------------------------------------------------

fn es(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(assert_cmd::cargo::cargo_bin("es"))
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("ES_EXAMPLES_DB")
        .args(args)
        .output()
        .expect("es runs")
}

fn text(output: &[u8]) -> String {
    String::from_utf8_lossy(output).into_owned()
}

/// `es` ended with the documented exit `code`, saying on stderr what was wrong (`names`).
#[track_caller]
fn assert_fails(failed: &Output, code: i32, names: &str) {
    let stderr = text(&failed.stderr);
    assert_eq!(failed.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(names), "{stderr}");
}

/// A SQLite file with one ticket of the examples' domain, 3 events.
async fn ticket_file(dir: &tempfile::TempDir) -> (std::path::PathBuf, SqliteStore) {
    use examples::ticket::{Priority, Ticket, TicketAssigned, TicketEvent, TicketOpened};
    let store = sqlite_file(dir, "tickets.db").await;
    let tickets = Repository::<Ticket, _>::new(store.clone());
    let open = |_: &Ticket| -> Vec<TicketEvent> {
        vec![TicketOpened {
            title: "VPN down".into(),
            customer: "acme".into(),
            priority: Priority::High,
        }
        .into()]
    };
    tickets
        .execute("T-1", Metadata::new().with_actor("alice"), open)
        .await
        .unwrap();
    for agent in ["bob", "carol"] {
        let assign = |_: &Ticket| -> Vec<TicketEvent> { vec![TicketAssigned { agent: agent.into() }.into()] };
        tickets.execute("T-1", Metadata::new(), assign).await.unwrap();
    }
    (dir.path().join("tickets.db"), store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es_cli_documented_commands_on_a_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _store) = ticket_file(&dir).await;
    let db = file.to_str().unwrap();
    let cwd = dir.path();

    let streams = es(cwd, &["--db", db, "streams", "--type", "ticket"]);
    assert_eq!(streams.status.code(), Some(0), "{}", text(&streams.stderr));
    let out = text(&streams.stdout);
    assert!(out.contains("ticket/T-1") && out.contains('3'), "{out}");

    let events = es(cwd, &["--db", db, "events", "ticket/T-1"]);
    assert_eq!(events.status.code(), Some(0));
    let out = text(&events.stdout);
    for expected in ["TicketOpened", "TicketAssigned", "actor alice", "VPN down"] {
        assert!(out.contains(expected), "`es events` shows {expected}: {out}");
    }

    // Time travel: the state at version 2, as text and as JSON.
    let state = es(cwd, &["--db", db, "state", "ticket/T-1", "--version", "2"]);
    assert_eq!(state.status.code(), Some(0));
    let out = text(&state.stdout);
    assert!(
        out.contains("version 2") && out.contains("bob") && !out.contains("carol"),
        "{out}"
    );
    let json = es(cwd, &["--db", db, "--json", "state", "ticket/T-1", "--version", "2"]);
    assert_eq!(json.status.code(), Some(0));
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("--json prints JSON");
    assert_eq!(value["version"], 2);
    assert_eq!(value["state"]["assignee"], "bob");

    let doctor = es(cwd, &["--db", db, "doctor"]);
    assert_eq!(doctor.status.code(), Some(0), "{}", text(&doctor.stdout));
    assert!(text(&doctor.stdout).contains("0 problems"));

    // Wrong stream ids and missing files: a message and the documented exit codes.
    assert_fails(&es(cwd, &["--db", db, "events", "ticket/T-404"]), 3, "ticket/T-404");
    assert_fails(&es(cwd, &["--db", db, "state", "T-1"]), 2, "type/id");
    assert_fails(&es(cwd, &["--db", "nowhere.db", "streams"]), 3, "nowhere.db");
    assert!(!cwd.join("nowhere.db").exists(), "looking created the file");
    std::fs::write(
        cwd.join("notes.db"),
        "not a database at all, just some notes ".repeat(10),
    )
    .unwrap();
    // Exit 4: the store failed.
    assert_fails(&es(cwd, &["--db", "notes.db", "streams"]), 4, "not an SQLite database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es_cli_doctor_names_an_event_that_no_longer_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let (file, store) = ticket_file(&dir).await;
    store
        .append(
            &StreamId::new("ticket", "T-1"),
            ExpectedVersion::Exact(3),
            vec![raw("TicketMerged", r#"{"into":"T-2"}"#)],
        )
        .await
        .unwrap();
    let doctor = es(dir.path(), &["--db", file.to_str().unwrap(), "doctor"]);
    let out = text(&doctor.stdout) + &text(&doctor.stderr);
    assert_eq!(doctor.status.code(), Some(1), "{out}");
    assert!(out.contains("ticket/T-1") && out.contains("TicketMerged"), "{out}");
    // The state before the bad event is still reachable by time travel.
    let state = es(
        dir.path(),
        &["--db", file.to_str().unwrap(), "state", "ticket/T-1", "--version", "3"],
    );
    assert_eq!(state.status.code(), Some(0), "{}", text(&state.stderr));
}

#[test]
fn es_help_works_without_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let help = es(dir.path(), &["--help"]);
    assert_eq!(help.status.code(), Some(0), "{}", text(&help.stderr));
    assert!(text(&help.stdout).contains("Usage"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es_cli_reads_while_another_process_holds_the_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    let (file, store) = ticket_file(&dir).await;
    // A long unit of work of another process (a projection's batch, an application's write).
    let (locked, is_locked) = std::sync::mpsc::channel();
    let holder = store.clone();
    let writer = async move {
        holder
            .write(move |db| {
                db.execute_batch("CREATE TABLE IF NOT EXISTS busy (n INTEGER)")?;
                locked.send(()).unwrap();
                std::thread::sleep(Duration::from_secs(7));
                Ok(())
            })
            .await
    };
    let holding = tokio::spawn(writer);
    tokio::task::spawn_blocking(move || is_locked.recv().unwrap())
        .await
        .unwrap();
    let streams = es(dir.path(), &["--db", file.to_str().unwrap(), "streams"]);
    holding.await.unwrap().unwrap();
    assert_eq!(streams.status.code(), Some(0), "{}", text(&streams.stderr));
}
