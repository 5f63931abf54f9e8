//! A projection's unit of work takes no transaction id until something writes in it, so an open
//! unit whose handlers have not written holds back no reader of the global order; one that has
//! written does, until it ends.

use std::time::{Duration, Instant};

use es_core::{CheckpointStore, EventStore, ExpectedVersion, GlobalLog};
use es_postgres::PostgresStore;
use sqlx::PgConnection;

use crate::support::{exclusive_schema, fresh_stream, in_schema, numbered};

/// Appends one event through the store's pool (its own transaction, committed): its position.
async fn append_one(store: &PostgresStore) -> u64 {
    let outcome = store
        .append(&fresh_stream("short"), ExpectedVersion::NoStream, numbered(1))
        .await
        .expect("append");
    outcome.positions[0]
}

async fn readable(store: &PostgresStore, position: u64) -> bool {
    let page = store.read_all(position - 1, 1).await.expect("read_all");
    page.first().is_some_and(|event| event.position == position)
}

/// Waits until `read_all` returns the event at `position`; fails after 60 seconds.
async fn until_readable(store: &PostgresStore, position: u64, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !readable(store, position).await {
        assert!(Instant::now() < deadline, "{why}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn transaction_id(connection: &mut PgConnection) -> Option<i64> {
    sqlx::query_scalar("SELECT pg_current_xact_id_if_assigned()::text::bigint")
        .fetch_one(connection)
        .await
        .expect("the unit's transaction id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_that_has_not_written_holds_no_reader_back() {
    let schema = exclusive_schema().await;
    let checkpoints = schema.checkpoints();
    let mut claim = checkpoints.claim("idle-unit").await.expect("claim");
    let (mut unit, _) = checkpoints.begin(&mut claim).await.expect("begin");
    assert_eq!(
        transaction_id(checkpoints.context(&mut unit)).await,
        None,
        "beginning a unit assigns no transaction id"
    );

    // Appended and committed while the unit is open, by a transaction younger than the unit.
    let position = append_one(&schema).await;
    until_readable(
        &schema,
        position,
        "an event committed while a unit that wrote nothing is open must be readable",
    )
    .await;

    assert_eq!(transaction_id(checkpoints.context(&mut unit)).await, None);
    checkpoints.commit(unit, 0).await.expect("commit");
}

/// The cost that remains: from a unit's first write until it ends, events of younger
/// transactions wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_that_has_written_holds_readers_back_until_it_ends() {
    let schema = exclusive_schema().await;
    in_schema(&schema, "CREATE TABLE marks (mark bigint)").await;
    let checkpoints = schema.checkpoints();
    let mut claim = checkpoints.claim("writing-unit").await.expect("claim");
    let (mut unit, _) = checkpoints.begin(&mut claim).await.expect("begin");
    sqlx::query("INSERT INTO marks (mark) VALUES (1)")
        .execute(&mut *checkpoints.context(&mut unit))
        .await
        .expect("a handler's write");
    assert!(
        transaction_id(checkpoints.context(&mut unit)).await.is_some(),
        "the write took an id"
    );

    let position = append_one(&schema).await;
    // Its transaction is younger than the unit's, which is still in flight: no read returns it,
    // however long one waits (checked twice, a moment apart).
    assert!(!readable(&schema, position).await, "held back by the open unit");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!readable(&schema, position).await, "held back by the open unit");

    checkpoints.commit(unit, 0).await.expect("commit");
    until_readable(&schema, position, "the event is readable once the unit committed").await;
}
