//! Appends are idempotent by event id: an append whose answer was lost on the wire after it
//! committed, retried, is recognised and not written twice; the same inside a caller's
//! transaction; and a duplicate id found after waiting on a writer that moved the stream is a
//! conflict first.

use std::time::{Duration, Instant};

use es_core::{AppendOutcome, EventStore, ExpectedVersion, NewEvent, StoreError, StreamId};
use es_postgres::PostgresStore;
use es_test_support::{bounded, CuttingProxy, TEST_BOUND};
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::support::{database, event, fresh_stream, numbered, read, schema, store_on_pool, stream_with};

fn ids(batch: &[NewEvent]) -> Vec<Uuid> {
    batch.iter().map(|event| event.event_id).collect()
}

/// The lost answer on a real wire: a store whose connections go through a [`CuttingProxy`]
/// appends a batch, the server commits it, and the proxy cuts the connection before the answer
/// gets back. The writer sees a transient error; retrying the same batch through the proxy
/// (reconnected) returns the original outcome instead of writing it again, whether the retry
/// expects the version it expected at first or the one it reloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_append_whose_answer_was_lost_is_stored_once() {
    bounded(lost_answer()).await;
}

async fn lost_answer() {
    let schema = schema().await;
    let direct = schema.store();
    let proxy = CuttingProxy::in_front_of(database().url())
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10));
    let through_proxy = store_on_pool(pool, proxy.connect_options(), direct.schema()).await;

    let stream = stream_with(direct, "lost", 1).await;
    let marker = format!("lost-answer-{}", Uuid::now_v7().simple());
    let mut batch = numbered(3);
    batch[1] = event("Marked", serde_json::json!({ "marker": marker }));

    proxy.arm(marker.as_str());
    let lost = through_proxy
        .append(&stream, ExpectedVersion::Exact(1), batch.clone())
        .await;
    match &lost {
        Err(error @ StoreError::Unavailable(_)) => assert!(error.is_transient()),
        other => panic!("a lost answer is an outage (Unavailable), got {other:?}"),
    }
    assert_eq!(proxy.cuts(), 1, "the proxy cut the append's answer");
    assert!(!proxy.is_armed(), "and let everything after it through");

    let stored = read(direct, &stream).await;
    assert_eq!(stored.len(), 4, "the append committed before its answer was lost");
    assert_eq!(ids(&batch), stored[1..].iter().map(|e| e.event_id).collect::<Vec<_>>());
    let original = AppendOutcome {
        previous_version: 1,
        new_version: 4,
        positions: stored[1..].iter().map(|e| e.position).collect(),
        already_stored: true,
    };

    let retried = through_proxy
        .append(&stream, ExpectedVersion::Exact(1), batch.clone())
        .await
        .expect("the retry with the same expectation");
    assert_eq!(retried, original, "the retry returns the original outcome");

    let reloaded = through_proxy.stream_version(&stream).await.expect("reload the version");
    assert_eq!(reloaded, 4);
    let retried = through_proxy
        .append(&stream, ExpectedVersion::Exact(reloaded), batch.clone())
        .await
        .expect("the retry with the reloaded version");
    assert_eq!(
        retried, original,
        "a retry after a reload returns the original outcome too"
    );

    let events = read(direct, &stream).await;
    assert_eq!(events, stored, "the retries wrote nothing: one copy of the batch");
    for event in &events {
        let found = direct.read_event(event.event_id).await.expect("read_event");
        assert_eq!(found.as_ref(), Some(event), "each event once, where it was stored");
    }
    assert_eq!(proxy.cuts(), 1, "no other connection was cut");
}

/// Inside a caller's transaction a batch committed earlier is recognised as well. When the
/// statement refused (the stream is past `expected`) the transaction stays usable; when it ran
/// into the unique `event_id` (the expectation held) the transaction is aborted: the caller
/// rolls back either way, as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_retrying_a_stored_batch_is_told_so() {
    let schema = schema().await;
    let store = schema.store();
    let stream = stream_with(store, "in-tx", 1).await;
    let batch = numbered(2);
    let first = store
        .append(&stream, ExpectedVersion::Exact(1), batch.clone())
        .await
        .expect("the first append");
    assert!(!first.already_stored);
    let original = AppendOutcome {
        already_stored: true,
        ..first
    };

    // The stream is at 3: the statement refuses the expectation.
    let (refused, usable) = retry_in_transaction(store, &stream, ExpectedVersion::Exact(1), &batch).await;
    assert_eq!(refused, original, "a retry refused by the statement");
    assert!(usable, "a refusing statement leaves the transaction usable");
    // The expectation holds: the insert runs into the unique event_id.
    let (collided, usable) = retry_in_transaction(store, &stream, ExpectedVersion::Exact(3), &batch).await;
    assert_eq!(collided, original, "a retry that ran into the unique event_id");
    assert!(!usable, "a failed statement aborts the transaction");
    assert_eq!(read(store, &stream).await.len(), 3, "one copy of the batch");
}

/// Appends `batch` to `stream` expecting `expected` in a transaction of its own, which is then
/// rolled back: the outcome, and whether the transaction could still run a statement.
async fn retry_in_transaction(
    store: &PostgresStore,
    stream: &StreamId,
    expected: ExpectedVersion,
    batch: &[NewEvent],
) -> (AppendOutcome, bool) {
    let mut tx = store.pool().begin().await.expect("begin");
    let outcome = store
        .append_in_transaction(&mut tx, stream, expected, batch.to_vec())
        .await
        .unwrap_or_else(|error| panic!("retrying expecting {expected}: {error}"));
    let usable = sqlx::query("SELECT 1").execute(&mut *tx).await.is_ok();
    tx.rollback().await.expect("rollback");
    (outcome, usable)
}

/// The contract puts a conflict before a duplicate id. A statement that checks its expectation
/// on a snapshot taken before another writer committed can still run into that writer's event
/// id: the store then reads the stream's version again and reports the conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_found_after_waiting_on_a_writer_is_a_conflict_when_the_stream_moved() {
    bounded(duplicate_after_a_wait()).await;
}

async fn duplicate_after_a_wait() {
    let schema = schema().await;
    let store = schema.store().clone();
    let stream = fresh_stream("moved");
    let batch = numbered(2);
    let taken = batch[0].event_id;

    // Another writer, not committed yet, holds version 1 of the stream with the batch's first id.
    let mut writer = store.pool().begin().await.expect("begin");
    sqlx::query(&format!(
        "INSERT INTO \"{}\".events (position, event_id, aggregate_type, aggregate_id, version, event_name,
                                    schema_version, payload, metadata, recorded_at)
         VALUES ((pg_current_xact_id()::text::bigint << 20) | 1, $1, $2, $3, 1, 'Other', 1, '{{}}', '{{}}',
                 clock_timestamp())",
        store.schema()
    ))
    .bind(taken)
    .bind(&stream.aggregate_type)
    .bind(&stream.aggregate_id)
    .execute(&mut *writer)
    .await
    .expect("the other writer's event");

    // The append sees an empty stream, passes `NoStream`, and waits on the writer's rows.
    let append = {
        let (store, stream) = (store.clone(), stream.clone());
        tokio::spawn(async move { store.append(&stream, ExpectedVersion::NoStream, batch).await })
    };
    let deadline = Instant::now() + TEST_BOUND;
    while !waits_on_a_lock(&store).await {
        assert!(
            !append.is_finished(),
            "the append finished instead of waiting on the writer"
        );
        assert!(Instant::now() < deadline, "the append never waited on the writer");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    writer.commit().await.expect("the other writer commits");

    match append.await.expect("append task") {
        Err(StoreError::Conflict(conflict)) => {
            assert_eq!((conflict.expected, conflict.actual), (ExpectedVersion::NoStream, 1));
        }
        other => panic!("the stream moved past NoStream: a conflict, got {other:?}"),
    }
    let events = read(&store, &stream).await;
    assert_eq!(events.len(), 1, "nothing of the batch was written");
    assert_eq!(events[0].event_id, taken);
}

/// Whether an append on `store`'s schema waits on a lock (found by the statement's start and
/// the quoted schema name, as `failures.rs` does).
async fn waits_on_a_lock(store: &PostgresStore) -> bool {
    let waiting: Option<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active'
           AND query LIKE $1 AND wait_event_type = 'Lock'
         LIMIT 1",
    )
    .bind(format!("%INSERT INTO \"{}\".events (%", store.schema()))
    .fetch_optional(store.pool())
    .await
    .expect("pg_stat_activity");
    waiting.is_some()
}
