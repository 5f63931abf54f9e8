//! Appends in a transaction the caller controls: events and the caller's rows commit together or
//! not at all, with the append's usual outcomes (conflicts, retries, duplicates) inside.

use es_core::{EventStore, ExpectedVersion, GlobalLog, NewEvent, StoreError, StreamId, WakeUp};
use es_sqlite::{SqliteError, SqliteStore, SqliteTransaction, SqliteWakeUp};
use futures_util::FutureExt;

use crate::support::{count, event, fresh_stream, fresh_with_tables, numbered, positions, read, TestDb};

/// What the tests' closures fail with: the store's errors, SQLite's, or one of their own.
#[derive(Debug, thiserror::Error)]
enum TestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sqlite(#[from] SqliteError),
    #[error(transparent)]
    Rows(#[from] rusqlite::Error),
    #[error("the caller gave up")]
    GaveUp,
}

async fn with_outbox() -> TestDb {
    fresh_with_tables("CREATE TABLE outbox (event_id BLOB PRIMARY KEY, name TEXT NOT NULL) STRICT").await
}

/// One outbox row per event of `events`, written through the transaction.
fn outbox_rows(tx: &SqliteTransaction<'_>, events: &[NewEvent]) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached("INSERT INTO outbox (event_id, name) VALUES (?1, ?2)")?;
    for event in events {
        insert.execute((event.event_id.as_bytes(), &event.event_name))?;
    }
    Ok(())
}

/// Appends `events` and their outbox rows in one transaction.
async fn append_with_rows(
    store: &SqliteStore,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> Result<es_core::AppendOutcome, TestError> {
    let stream = stream.clone();
    store
        .transaction(move |tx| {
            let outcome = tx.append(&stream, expected, events.clone())?;
            if !outcome.already_stored {
                outbox_rows(tx, &events)?;
            }
            Ok(outcome)
        })
        .await
}

/// Whether the wake-up fired, asked without waiting.
fn fired(wake_up: &mut SqliteWakeUp) -> bool {
    wake_up.wait().now_or_never().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_the_callers_rows_commit_together_and_wake_listeners() {
    let db = with_outbox().await;
    let mut wake_up = db.store.wake_up();
    let stream = fresh_stream("together");
    let events = numbered(3);
    let outcome = append_with_rows(&db.store, &stream, ExpectedVersion::NoStream, events.clone())
        .await
        .expect("the transaction commits");
    assert_eq!((outcome.previous_version, outcome.new_version), (0, 3));
    assert_eq!(outcome.positions, [1, 2, 3]);
    assert!(!outcome.already_stored);
    let stored = read(&db.store, &stream).await;
    let ids: Vec<_> = stored.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, events.iter().map(|e| e.event_id).collect::<Vec<_>>());
    assert_eq!(count(&db.store, "SELECT count(*) FROM outbox").await, 3);
    assert!(fired(&mut wake_up), "listeners are told after the commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_from_the_closure_rolls_back_events_and_rows() {
    let db = with_outbox().await;
    let mut wake_up = db.store.wake_up();
    let stream = fresh_stream("rolled-back");
    let written = stream.clone();
    let result = db
        .store
        .transaction(move |tx| {
            let events = numbered(2);
            tx.append(&written, ExpectedVersion::NoStream, events.clone())?;
            outbox_rows(tx, &events)?;
            // The events are visible inside the transaction...
            let inside: i64 = tx.query_row("SELECT count(*) FROM events", [], |row| row.get(0))?;
            assert_eq!(inside, 2);
            Err::<(), _>(TestError::GaveUp)
        })
        .await;
    assert!(
        matches!(result, Err(TestError::GaveUp)),
        "the closure's error, as it is: {result:?}"
    );
    // ...and nowhere after the rollback.
    assert!(read(&db.store, &stream).await.is_empty());
    assert_eq!(db.store.stream_version(&stream).await.expect("version"), 0);
    assert_eq!(count(&db.store, "SELECT count(*) FROM outbox").await, 0);
    assert!(!fired(&mut wake_up), "nothing committed: nobody is woken");
    // No hole either: the next append takes position 1.
    let next = db.stream_with("next", 1).await;
    assert_eq!(db.store.read_all(0, 10).await.expect("read_all")[0].stream, next);
    assert_eq!(db.store.read_all(0, 10).await.expect("read_all")[0].position, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_inside_is_typed_writes_nothing_and_leaves_the_transaction_usable() {
    let db = with_outbox().await;
    let stream = db.stream_with("conflict", 2).await;
    let inside = stream.clone();
    let (refused, outcome) = db
        .store
        .transaction(move |tx| {
            let refused = tx.append(&inside, ExpectedVersion::Exact(1), numbered(1));
            let events = numbered(1);
            let outcome = tx.append(&inside, ExpectedVersion::Exact(2), events.clone())?;
            outbox_rows(tx, &events)?;
            Ok::<_, TestError>((refused, outcome))
        })
        .await
        .expect("the transaction commits");
    match refused {
        Err(StoreError::Conflict(conflict)) => {
            assert_eq!(conflict.expected, ExpectedVersion::Exact(1));
            assert_eq!(conflict.actual, 2);
        }
        other => panic!("a stale expectation is a conflict, got {other:?}"),
    }
    assert_eq!((outcome.previous_version, outcome.new_version), (2, 3));
    assert_eq!(read(&db.store, &stream).await.len(), 3);
    assert_eq!(count(&db.store, "SELECT count(*) FROM outbox").await, 1);

    // Returned from the closure, the conflict rolls back what came before it.
    let inside = stream.clone();
    let result = db
        .store
        .transaction(move |tx| {
            let events = numbered(1);
            outbox_rows(tx, &events)?;
            tx.append(&inside, ExpectedVersion::NoStream, events)?;
            Ok::<_, TestError>(())
        })
        .await;
    assert!(
        matches!(result, Err(TestError::Store(StoreError::Conflict(_)))),
        "{result:?}"
    );
    assert_eq!(count(&db.store, "SELECT count(*) FROM outbox").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_is_already_stored_and_writes_nothing() {
    let db = with_outbox().await;
    let stream = fresh_stream("retried");
    let batch = numbered(2);
    let first = append_with_rows(&db.store, &stream, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("first attempt");
    db.stream_with("between", 1).await;
    let mut wake_up = db.store.wake_up();
    // The writer lost the answer and sends the same batch again, with the same expectation.
    let retry = append_with_rows(&db.store, &stream, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("the retry is recognised, not a conflict");
    assert!(retry.already_stored);
    assert_eq!(retry.positions, first.positions);
    assert_eq!((retry.previous_version, retry.new_version), (0, 2));
    assert_eq!(read(&db.store, &stream).await.len(), 2);
    assert_eq!(count(&db.store, "SELECT count(*) FROM outbox").await, 2);
    assert!(!fired(&mut wake_up), "a retry wrote nothing: nobody is woken");

    // Within one transaction too: the second append of a batch finds the first.
    let other = fresh_stream("twice");
    let (once, twice) = db
        .store
        .transaction(move |tx| {
            let batch = numbered(2);
            let once = tx.append(&other, ExpectedVersion::NoStream, batch.clone())?;
            let twice = tx.append(&other, ExpectedVersion::NoStream, batch)?;
            Ok::<_, StoreError>((once, twice))
        })
        .await
        .expect("commits");
    assert!(!once.already_stored && twice.already_stored);
    assert_eq!(twice.positions, once.positions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_at_its_last_event_leaves_none_of_it() {
    let db = with_outbox().await;
    let taken = db.stream_with("taken", 1).await;
    let taken_id = read(&db.store, &taken).await[0].event_id;
    let stream = fresh_stream("partial");
    let inside = stream.clone();
    let (refused, invalid) = db
        .store
        .transaction(move |tx| {
            let mut batch = numbered(3);
            batch[2].event_id = taken_id;
            let refused = tx.append(&inside, ExpectedVersion::NoStream, batch);
            let mut bad = numbered(1);
            bad[0].payload = b"not json".to_vec();
            let invalid = tx.append(&inside, ExpectedVersion::NoStream, bad);
            // Nothing of either batch is in the transaction, which carries on.
            let events: i64 = tx.query_row("SELECT count(*) FROM events", [], |row| row.get(0))?;
            assert_eq!(events, 1);
            tx.append(&inside, ExpectedVersion::NoStream, numbered(1))?;
            Ok::<_, TestError>((refused, invalid))
        })
        .await
        .expect("commits");
    match refused {
        Err(StoreError::DuplicateEventId { event_id, .. }) => assert_eq!(event_id, taken_id),
        other => panic!("a stored id is a duplicate, got {other:?}"),
    }
    assert!(matches!(invalid, Err(StoreError::InvalidBatch { .. })), "{invalid:?}");
    let versions: Vec<u64> = read(&db.store, &stream).await.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1]);
    assert_eq!(positions(&db.store, 10).await, [1, 2], "dense positions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_ended_by_the_closure_is_an_error() {
    let db = with_outbox().await;
    let result = db
        .store
        .transaction(|tx| {
            tx.append(&fresh_stream("ended"), ExpectedVersion::NoStream, numbered(1))?;
            tx.execute_batch("ROLLBACK")?;
            Ok::<_, TestError>(())
        })
        .await;
    assert!(
        matches!(result, Err(TestError::Sqlite(SqliteError::Unexpected(_)))),
        "{result:?}"
    );
    // The writer is usable afterwards.
    db.stream_with("after", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_store_refuses_transactions() {
    let db = with_outbox().await;
    let reader = SqliteStore::open_read_only(db.path()).await.expect("open read-only");
    let result = reader
        .transaction(|tx| {
            tx.append(
                &fresh_stream("read-only"),
                ExpectedVersion::NoStream,
                vec![event("E", serde_json::json!({}))],
            )
        })
        .await;
    let Err(StoreError::Backend(error)) = result else {
        panic!("a read-only store refuses: {result:?}");
    };
    assert!(matches!(
        error.downcast_ref::<SqliteError>(),
        Some(SqliteError::ReadOnly { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_closure_rolls_back_and_the_store_carries_on() {
    let db = with_outbox().await;
    let stream = fresh_stream("panicked");
    let inside = stream.clone();
    let result = db
        .store
        .transaction(move |tx| -> Result<(), StoreError> {
            tx.append(&inside, ExpectedVersion::NoStream, numbered(1))?;
            panic!("the closure panics after its append");
        })
        .await;
    let Err(StoreError::Backend(error)) = result else {
        panic!("a panic is reported as an error: {result:?}");
    };
    assert!(matches!(
        error.downcast_ref::<SqliteError>(),
        Some(SqliteError::Task(_))
    ));
    assert!(read(&db.store, &stream).await.is_empty());
    db.stream_with("after", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_in_a_transaction_refuses_a_closed_stream() {
    use es_core::lifecycle::{StreamChange, StreamLifecycle, StreamStatus};

    let db = with_outbox().await;
    let stream = fresh_stream("closed");
    append_with_rows(&db.store, &stream, ExpectedVersion::NoStream, numbered(1))
        .await
        .expect("the first append");
    db.store
        .archive(&stream, StreamChange::new("ops", "old"))
        .await
        .expect("archive");
    match append_with_rows(&db.store, &stream, ExpectedVersion::Any, numbered(1)).await {
        Err(TestError::Store(StoreError::StreamClosed(closed))) => assert_eq!(closed.status, StreamStatus::Archived),
        other => panic!("expected StreamClosed, got {other:?}"),
    }
}
