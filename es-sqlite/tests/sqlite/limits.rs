//! Limits of the SQLite store: set per store, capped by what SQLite can store, enforced in the
//! caller's transactions too. Each limit at its boundary is checked by the conformance suite.

use es_core::{EventStore, ExpectedVersion, Limit, Limits, StoreError};
use es_sqlite::{SqliteOptions, SqliteStore};

use crate::support::{fresh_stream, fresh_with, numbered, read};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_set_per_store_and_capped_by_what_sqlite_stores() {
    let db = fresh_with(SqliteOptions::default().with_limits(Limits::DEFAULT.with_max_batch_events(3))).await;
    assert_eq!(db.store.limits(), Limits::DEFAULT.with_max_batch_events(3));
    let stream = fresh_stream("limits");
    match db.store.append(&stream, ExpectedVersion::NoStream, numbered(4)).await {
        Err(StoreError::LimitExceeded(exceeded)) => {
            assert_eq!(
                (exceeded.limit, exceeded.actual, exceeded.max),
                (Limit::BatchEvents, 4, 3)
            );
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    db.store
        .append(&stream, ExpectedVersion::NoStream, numbered(3))
        .await
        .expect("3 events are within the limit");

    let unlimited = SqliteStore::open_with(db.path(), SqliteOptions::default().with_limits(Limits::UNLIMITED))
        .await
        .expect("open");
    assert_eq!(unlimited.limits(), SqliteStore::MAX_LIMITS);
    assert_eq!(unlimited.options().limits, SqliteStore::MAX_LIMITS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_limits_in_a_transaction_writes_nothing_and_leaves_it_usable() {
    let db = fresh_with(SqliteOptions::default().with_limits(Limits::DEFAULT.with_max_payload_bytes(10))).await;
    let stream = fresh_stream("limits");
    let inside = stream.clone();
    let refused = db
        .store
        .transaction(move |tx| {
            let mut batch = numbered(2);
            batch[1].payload = br#""0123456789""#.to_vec();
            let refused = tx.append(&inside, ExpectedVersion::NoStream, batch);
            tx.append(&inside, ExpectedVersion::NoStream, numbered(1))?;
            Ok::<_, StoreError>(refused)
        })
        .await
        .expect("the transaction commits");
    match refused {
        Err(StoreError::LimitExceeded(exceeded)) => {
            assert_eq!(
                (exceeded.limit, exceeded.event, exceeded.actual, exceeded.max),
                (Limit::PayloadBytes, Some(1), 12, 10)
            );
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    assert_eq!(
        read(&db.store, &stream).await.len(),
        1,
        "only the batch within the limits"
    );
}
