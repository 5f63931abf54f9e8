//! A connection killed in the middle of an append leaves all of the batch or none of it.

use std::time::{Duration, Instant};

use es_core::{AppendOutcome, EventStore, ExpectedVersion, Limits, NewEvent, StoreError, StoreResult, StreamId};
use es_postgres::PostgresStore;
use sqlx::{Postgres, Transaction};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::support::{fresh_stream, numbered, schema, RawEvent};

const BIG_BATCH: usize = 50_000;

/// The schema's store, taking batches of [`BIG_BATCH`] events: five times the default limit,
/// so that an append runs long enough to be killed midway.
fn big_batch_store(store: &PostgresStore) -> PostgresStore {
    store
        .clone()
        .with_limits(Limits::DEFAULT.with_max_batch_events(BIG_BATCH))
}

/// The pid of a backend running an append on `store`'s schema, optionally only one waiting on a
/// lock. Found by the start of the statement and the quoted schema name: `pg_stat_activity`
/// keeps only the first kilobyte of the text.
async fn find_backend(store: &PostgresStore, waiting_on_lock: bool) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active'
           AND query LIKE $1
           AND (NOT $2 OR wait_event_type = 'Lock')
         LIMIT 1",
    )
    .bind(format!("%INSERT INTO \"{}\".events (%", store.schema()))
    .bind(waiting_on_lock)
    .fetch_optional(store.pool())
    .await
    .expect("pg_stat_activity")
}

async fn terminate(store: &PostgresStore, pid: i32) {
    let done: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(store.pool())
        .await
        .expect("pg_terminate_backend");
    assert!(done, "backend {pid} terminated");
}

async fn stored_count(store: &PostgresStore, ids: &[Uuid]) -> i64 {
    let sql = format!(
        "SELECT count(*) FROM \"{}\".events WHERE event_id = ANY($1)",
        store.schema()
    );
    sqlx::query_scalar(&sql)
        .bind(ids)
        .fetch_one(store.pool())
        .await
        .expect("count")
}

/// What the tests kill the append of: a new stream, a batch of `BIG_BATCH` events for it, and
/// their ids.
fn big_append() -> (StreamId, Vec<NewEvent>, Vec<Uuid>) {
    let batch = numbered(BIG_BATCH);
    let ids = batch.iter().map(|e| e.event_id).collect();
    (fresh_stream("killed"), batch, ids)
}

/// Appends `batch` to the new `stream` in a task of its own, for the test to kill meanwhile.
fn spawn_append(
    store: &PostgresStore,
    stream: &StreamId,
    batch: Vec<NewEvent>,
) -> JoinHandle<StoreResult<AppendOutcome>> {
    let (store, stream) = (store.clone(), stream.clone());
    tokio::spawn(async move { store.append(&stream, ExpectedVersion::NoStream, batch).await })
}

/// An open transaction that has inserted `version` of `stream`: an append that reaches that
/// version waits on it until it ends.
async fn hold_version(store: &PostgresStore, stream: &StreamId, version: i64) -> Transaction<'static, Postgres> {
    let mut blocker = store.pool().begin().await.expect("begin");
    RawEvent::new(stream, version, "Blocker")
        .insert(store, &mut *blocker)
        .await;
    blocker
}

/// A batch of 50,000 whose append is blocked at event 30,000 (another transaction holds that
/// version), then killed: none of its 29,999 inserted rows survive, and the error is `Unavailable` (an outage: retrying may succeed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_killed_midway_leaves_nothing() {
    let schema = schema().await;
    let store = &big_batch_store(schema.store());
    let (stream, batch, ids) = big_append();
    let blocker = hold_version(store, &stream, 30_000).await;

    let append = spawn_append(store, &stream, batch);
    let deadline = Instant::now() + Duration::from_secs(60);
    let pid = loop {
        if let Some(pid) = find_backend(store, true).await {
            break pid;
        }
        if append.is_finished() {
            panic!("the append finished instead of blocking: {:?}", append.await);
        }
        assert!(Instant::now() < deadline, "the append never blocked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    terminate(store, pid).await;
    let result = append.await.expect("append task");
    assert!(matches!(result, Err(StoreError::Unavailable(_))), "{result:?}");
    blocker.rollback().await.expect("rollback");

    assert_eq!(store.stream_version(&stream).await.expect("version"), 0);
    assert_eq!(stored_count(store, &ids).await, 0, "no event of the killed batch");
    // The pool replaced the dead connection: the store goes on working.
    let outcome = store
        .append(&stream, ExpectedVersion::NoStream, numbered(3))
        .await
        .expect("append after the kill");
    assert_eq!(outcome.new_version, 3);
}

/// Killed while running (or finished first): the stream has all of the batch or none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_killed_while_running_is_all_or_nothing() {
    let schema = schema().await;
    let store = &big_batch_store(schema.store());
    let (stream, batch, ids) = big_append();
    let append = spawn_append(store, &stream, batch);
    while !append.is_finished() {
        if let Some(pid) = find_backend(store, false).await {
            terminate(store, pid).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let result = append.await.expect("append task");
    let stored = stored_count(store, &ids).await;
    let version = store.stream_version(&stream).await.expect("version");
    match result {
        Ok(outcome) => {
            assert_eq!(outcome.new_version, BIG_BATCH as u64);
            assert_eq!((stored, version), (BIG_BATCH as i64, BIG_BATCH as u64));
        }
        Err(StoreError::Unavailable(error)) => {
            eprintln!("killed mid-append: {error}");
            assert_eq!((stored, version), (0, 0), "a killed append leaves nothing");
        }
        Err(other) => panic!("a killed append is an outage (Unavailable), got {other:?}"),
    }
}

/// A transaction holding a 50,000-event append, killed before it commits: nothing is visible,
/// and appending on the dead connection is an `Unavailable` error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_killed_before_commit_leaves_nothing() {
    let schema = schema().await;
    let store = &big_batch_store(schema.store());
    let (stream, batch, ids) = big_append();
    let mut tx = store.pool().begin().await.expect("begin");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *tx)
        .await
        .expect("pid");
    store
        .append_in_transaction(&mut tx, &stream, ExpectedVersion::NoStream, batch)
        .await
        .expect("append in transaction");
    terminate(store, pid).await;
    let result = store
        .append_in_transaction(&mut tx, &stream, ExpectedVersion::Exact(BIG_BATCH as u64), numbered(1))
        .await;
    assert!(matches!(result, Err(StoreError::Unavailable(_))), "{result:?}");
    assert!(tx.commit().await.is_err(), "a killed transaction cannot commit");
    assert_eq!(store.stream_version(&stream).await.expect("version"), 0);
    assert_eq!(stored_count(store, &ids).await, 0);
}
