//! The transactional outbox on SQLite and PostgreSQL: events and outbox rows commit together,
//! the relay publishes at least once (a failed publish is retried by the next run, a crash
//! between publish and mark publishes twice) and the receiver deduplicates by event id.

use es_core::{async_trait, command_event_id, encode_batch, EventStore, ExpectedVersion, Metadata, Repository};
use es_postgres::PostgresStore;
use es_sqlite::SqliteStore;
use es_test_support::{TestDatabase, TestSchema};
use examples::outbox::{
    execute_with_outbox, insert_sqlite_rows, publish_pending, InMemoryBroker, OutboxError, OutboxMessage, OutboxStore,
    Publisher,
};
use examples::ticket::{Priority, Ticket, TicketError, TicketEvent, TicketOpened};
use tempfile::TempDir;
use uuid::Uuid;

/// What the tests need of a store beyond the outbox: planting an outbox row directly.
#[async_trait]
trait Fixture: OutboxStore + EventStore + Clone + 'static {
    /// Writes a published outbox row for `event_id`, with no event behind it.
    async fn plant_published_row(&self, event_id: Uuid);
}

#[async_trait]
impl Fixture for SqliteStore {
    async fn plant_published_row(&self, event_id: Uuid) {
        self.write(move |db| {
            db.execute(
                "INSERT INTO outbox (event_id, position, aggregate_type, aggregate_id, event_name, payload, published_at)
                 VALUES (?1, 0, 'planted', 'planted', 'Planted', '{}', 0)",
                [event_id.as_bytes()],
            )
        })
        .await
        .expect("a planted row");
    }
}

#[async_trait]
impl Fixture for PostgresStore {
    async fn plant_published_row(&self, event_id: Uuid) {
        sqlx::query(&format!(
            "INSERT INTO \"{}\".outbox (event_id, position, aggregate_type, aggregate_id, event_name, payload, published_at)
             VALUES ($1, 0, 'planted', 'planted', 'Planted', '{{}}', now())",
            self.schema()
        ))
        .bind(event_id)
        .execute(self.pool())
        .await
        .expect("a planted row");
    }
}

async fn sqlite() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(dir.path().join("outbox.db")).await.expect("open");
    store.migrate().await.expect("migrate");
    store.create_outbox().await.expect("the outbox table");
    (dir, store)
}

async fn postgres() -> TestSchema {
    let database = TestDatabase::get().unwrap_or_else(|error| panic!("{error}"));
    let schema = database.schema().await.expect("a fresh schema");
    schema.create_outbox().await.expect("the outbox table");
    schema
}

/// Runs each test body on a fresh SQLite file and on a fresh PostgreSQL schema.
macro_rules! on_both_stores {
    ($($test:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let (_dir, store) = super::sqlite().await;
                    super::$test(&store).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let schema = super::postgres().await;
                    super::$test(schema.store()).await;
                }
            )*
        }
    };
}

on_both_stores!(
    a_command_appends_its_events_with_their_outbox_rows,
    a_failed_publish_leaves_the_row_unpublished_for_the_next_run,
    a_crash_between_publish_and_mark_delivers_twice_and_the_receiver_dedups,
    a_failing_outbox_write_leaves_neither_events_nor_rows,
    a_retried_batch_writes_its_outbox_rows_once,
);

/// Opens ticket `id` and assigns it, each command with its outbox rows; the ids of the stored
/// events, in order.
async fn open_and_assign<S: Fixture>(store: &S, id: &str) -> Vec<Uuid> {
    execute_with_outbox(store, id, Uuid::now_v7(), |ticket| {
        ticket.open("Printer on fire", "ada", Priority::High)
    })
    .await
    .expect("open");
    execute_with_outbox(store, id, Uuid::now_v7(), |ticket| ticket.assign("grace"))
        .await
        .expect("assign");
    let stream = Repository::<Ticket, S>::stream_id(id);
    let events = es_core::conformance::whole_stream(store, &stream).await;
    events.iter().map(|event| event.event_id).collect()
}

fn ids(messages: &[OutboxMessage]) -> Vec<Uuid> {
    messages.iter().map(|message| message.event_id).collect()
}

async fn a_command_appends_its_events_with_their_outbox_rows<S: Fixture>(store: &S) {
    let events = open_and_assign(store, "T-1").await;
    assert_eq!(events.len(), 2);
    let pending = store.unpublished(10).await.expect("unpublished");
    assert_eq!(ids(&pending), events, "one row per event, keyed by its id, in order");
    assert_eq!(pending[0].event_name, "TicketOpened");
    assert_eq!(pending[0].payload["title"], "Printer on fire");
    assert_eq!(pending[1].stream, Repository::<Ticket, S>::stream_id("T-1"));

    let broker = InMemoryBroker::new();
    assert_eq!(publish_pending(store, &broker, 1).await.expect("publish"), 2);
    assert_eq!(ids(&broker.deliveries()), events);
    assert!(store.unpublished(10).await.expect("unpublished").is_empty());
    assert_eq!(publish_pending(store, &broker, 10).await.expect("publish"), 0);
    assert_eq!(broker.deliveries().len(), 2, "published rows are not sent again");
}

async fn a_failed_publish_leaves_the_row_unpublished_for_the_next_run<S: Fixture>(store: &S) {
    let events = open_and_assign(store, "T-2").await;
    let broker = InMemoryBroker::new();
    broker.fail_next(1);
    match publish_pending(store, &broker, 10).await {
        Err(OutboxError::Publish { event_id, .. }) => assert_eq!(event_id, events[0]),
        other => panic!("the publisher's failure is returned, got {other:?}"),
    }
    assert!(
        broker.deliveries().is_empty(),
        "the relay stops at the failure, keeping the order"
    );
    assert_eq!(ids(&store.unpublished(10).await.expect("unpublished")), events);

    assert_eq!(publish_pending(store, &broker, 10).await.expect("the next run"), 2);
    assert_eq!(ids(&broker.deliveries()), events);
    assert!(store.unpublished(10).await.expect("unpublished").is_empty());
}

async fn a_crash_between_publish_and_mark_delivers_twice_and_the_receiver_dedups<S: Fixture>(store: &S) {
    let events = open_and_assign(store, "T-3").await;
    let broker = InMemoryBroker::new();
    // A relay publishes the first row, then its process dies before marking it.
    let pending = store.unpublished(10).await.expect("unpublished");
    broker.publish(&pending[0]).await.expect("published");

    // The next run finds the row still unpublished and sends it again.
    assert_eq!(publish_pending(store, &broker, 10).await.expect("publish"), 2);
    assert_eq!(ids(&broker.deliveries()), [events[0], events[0], events[1]]);
    assert_eq!(ids(&broker.processed()), events, "the receiver dedups by event id");
    assert!(store.unpublished(10).await.expect("unpublished").is_empty());
}

async fn a_failing_outbox_write_leaves_neither_events_nor_rows<S: Fixture>(store: &S) {
    // A row already holds the key the command's first event will get: the outbox write fails
    // after the append, inside the same transaction.
    let command = Uuid::now_v7();
    let stream = Repository::<Ticket, S>::stream_id("T-4");
    store.plant_published_row(command_event_id(command, &stream, 0)).await;
    let failed = execute_with_outbox(store, "T-4", command, |ticket| {
        ticket.open("Printer on fire", "ada", Priority::Normal)
    })
    .await;
    assert!(
        matches!(failed, Err(OutboxError::SqliteRows(_) | OutboxError::Postgres(_))),
        "the outbox write fails: {failed:?}"
    );
    assert_eq!(store.stream_version(&stream).await.expect("version"), 0, "no event");
    assert!(store.unpublished(10).await.expect("unpublished").is_empty(), "no row");

    // Another command on the same ticket goes through, events and rows.
    let events = open_and_assign(store, "T-4").await;
    assert_eq!(ids(&store.unpublished(10).await.expect("unpublished")), events);
}

async fn a_retried_batch_writes_its_outbox_rows_once<S: Fixture>(store: &S) {
    // The command's events, encoded with its id: a retry after a lost answer encodes the same.
    let stream = Repository::<Ticket, S>::stream_id("T-5");
    let opened = TicketOpened {
        title: "Printer on fire".into(),
        customer: "ada".into(),
        priority: Priority::Low,
    };
    let metadata = Metadata::new().with_command_id(Uuid::now_v7());
    let batch = encode_batch(&stream, &[TicketEvent::Opened(opened)], &metadata).expect("encode");
    let first = store
        .append_with_outbox(&stream, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("first attempt");
    let retry = store
        .append_with_outbox(&stream, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("the retry is recognised");
    assert!(!first.already_stored && retry.already_stored);
    assert_eq!(retry.positions, first.positions);
    let pending = store.unpublished(10).await.expect("unpublished");
    assert_eq!(
        ids(&pending),
        [batch[0].event_id],
        "one row, written by the first attempt"
    );
}

/// On SQLite, through the store's transaction directly: a closure that fails after appending
/// and writing its rows leaves neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_failing_closure_leaves_neither_events_nor_rows() {
    let (_dir, store) = sqlite().await;
    let stream = Repository::<Ticket, SqliteStore>::stream_id("T-6");
    let inside = stream.clone();
    let result = store
        .transaction(move |tx| {
            let opened = Ticket::default().open("Printer on fire", "ada", Priority::Normal)?;
            let events = encode_batch(&inside, &opened, &Metadata::new())?;
            let messages = OutboxMessage::for_batch(&inside, &events)?;
            let outcome = tx.append(&inside, ExpectedVersion::NoStream, events)?;
            insert_sqlite_rows(tx, &messages, &outcome.positions)?;
            let written: i64 = tx.query_row("SELECT count(*) FROM outbox", [], |row| row.get(0))?;
            assert_eq!(written, 1, "the row is written inside the transaction");
            Err::<(), _>(OutboxError::Rejected(TicketError::Closed))
        })
        .await;
    assert!(
        matches!(result, Err(OutboxError::Rejected(TicketError::Closed))),
        "{result:?}"
    );
    assert_eq!(store.stream_version(&stream).await.expect("version"), 0, "no event");
    assert!(store.unpublished(10).await.expect("unpublished").is_empty(), "no row");
}
