//! Appends under contention, and appends inside a caller's transaction.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use es_core::{EventStore, ExpectedVersion, StoreError};
use es_postgres::PostgresError;

use crate::support::{event, fresh_stream, numbered, read, read_all_until, schema, stream_with, Rng};

/// 16 writers race on one stream for 3 seconds, each reading the version and appending with
/// `Exact`: every version is written exactly once, by the writer that was told it won, and the
/// losers get a typed conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_write_every_version_exactly_once() {
    let schema = schema().await;
    let stream = fresh_stream("race");
    let deadline = Instant::now() + Duration::from_secs(3);
    let writers = (0..16u64).map(|writer| {
        let store = schema.store().clone();
        let stream = stream.clone();
        tokio::spawn(async move {
            let mut rng = Rng::new(writer + 1);
            let (mut won, mut conflicts) = (Vec::new(), 0u32);
            while Instant::now() < deadline {
                let version = store.stream_version(&stream).await.expect("stream_version");
                let len = rng.range(1..4) as usize;
                let batch: Vec<_> = (0..len)
                    .map(|i| event("Raced", serde_json::json!({ "writer": writer, "i": i })))
                    .collect();
                let ids: Vec<_> = batch.iter().map(|e| e.event_id).collect();
                match store.append(&stream, ExpectedVersion::Exact(version), batch).await {
                    Ok(outcome) => {
                        assert_eq!(outcome.previous_version, version);
                        assert_eq!(outcome.new_version, version + len as u64);
                        won.extend(ids.into_iter().enumerate().map(|(i, id)| (version + 1 + i as u64, id)));
                    }
                    Err(StoreError::Conflict(conflict)) => {
                        assert_eq!(conflict.expected, ExpectedVersion::Exact(version));
                        assert!(conflict.actual > version, "a loser sees a newer version: {conflict}");
                        conflicts += 1;
                    }
                    Err(other) => panic!("writer {writer}: unexpected error {other:?}"),
                }
            }
            (won, conflicts)
        })
    });
    let mut claimed = BTreeMap::new();
    let mut conflicts = 0;
    for writer in futures_util::future::join_all(writers).await {
        let (won, lost) = writer.expect("writer task");
        conflicts += lost;
        for (version, id) in won {
            assert!(claimed.insert(version, id).is_none(), "version {version} claimed twice");
        }
    }
    let events = read(&**schema, &stream).await;
    let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
    assert_eq!(
        versions,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "no gaps, no repeats"
    );
    assert_eq!(
        claimed.len(),
        events.len(),
        "every stored version was reported won, once"
    );
    for event in &events {
        assert_eq!(claimed.get(&event.version), Some(&event.event_id), "the winner's event");
    }
    assert!(events.len() > 16, "writers made progress: {} events", events.len());
    assert!(conflicts > 0, "16 racing writers must have conflicted");
    eprintln!(
        "racing writers: {} versions written, {conflicts} conflicts",
        events.len()
    );
}

/// `Any` never conflicts: writers that lose the race on a version append again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_any_appends_all_land() {
    let schema = schema().await;
    let stream = fresh_stream("any");
    for _ in 0..5 {
        let appends = (0..12).map(|_| schema.append(&stream, ExpectedVersion::Any, numbered(2)));
        for result in futures_util::future::join_all(appends).await {
            result.expect("an Any append always lands");
        }
    }
    let versions: Vec<u64> = read(&**schema, &stream).await.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=120).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_repeating_an_id_is_a_duplicate() {
    let schema = schema().await;
    let stream = fresh_stream("duplicates");
    let mut batch = numbered(3);
    batch[2].event_id = batch[0].event_id;
    let repeated = batch[0].event_id;
    match schema.append(&stream, ExpectedVersion::NoStream, batch).await {
        Err(StoreError::DuplicateEventId { stream: s, event_id }) => {
            assert_eq!((s, event_id), (stream.clone(), repeated));
        }
        other => panic!("expected DuplicateEventId, got {other:?}"),
    }
    assert_eq!(schema.stream_version(&stream).await.expect("version"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_must_be_json() {
    let schema = schema().await;
    let stream = fresh_stream("json");
    let mut batch = numbered(2);
    batch[1].payload = b"{not json".to_vec();
    let result = schema.append(&stream, ExpectedVersion::NoStream, batch).await;
    match result {
        Err(StoreError::InvalidBatch { stream: s, reason }) => {
            assert_eq!(s, stream);
            assert!(reason.contains("not valid JSON"), "{reason}");
        }
        other => panic!("expected an invalid batch, got {other:?}"),
    }
    let mut batch = numbered(1);
    batch[0].payload = vec![0xff, 0xfe];
    match schema.append(&stream, ExpectedVersion::NoStream, batch).await {
        Err(StoreError::InvalidBatch { reason, .. }) => assert!(reason.contains("not UTF-8"), "{reason}"),
        other => panic!("expected an invalid batch, got {other:?}"),
    }
    assert_eq!(schema.stream_version(&stream).await.expect("version"), 0);
}

/// Several appends in one transaction get consecutive positions, each append reporting its
/// own, and commit together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_in_one_transaction_are_numbered_in_order() {
    let schema = schema().await;
    let (a, b) = (fresh_stream("tx"), fresh_stream("tx"));
    let mut tx = schema.pool().begin().await.expect("begin");
    schema
        .append_in_transaction(&mut tx, &a, ExpectedVersion::NoStream, numbered(2))
        .await
        .expect("first append");
    schema
        .append_in_transaction(&mut tx, &b, ExpectedVersion::NoStream, numbered(1))
        .await
        .expect("second append");
    let outcome = schema
        .append_in_transaction(&mut tx, &a, ExpectedVersion::Exact(2), numbered(2))
        .await
        .expect("third append");
    assert_eq!((outcome.previous_version, outcome.new_version), (2, 4));
    assert_eq!(
        schema.stream_version(&a).await.expect("version"),
        0,
        "not visible before commit"
    );
    tx.commit().await.expect("commit");
    let all = read_all_until(&**schema, 5).await;
    let order: Vec<_> = all.iter().map(|e| (e.stream.clone(), e.version)).collect();
    assert_eq!(
        order,
        [
            (a.clone(), 1),
            (a.clone(), 2),
            (b.clone(), 1),
            (a.clone(), 3),
            (a.clone(), 4)
        ]
    );
    assert!(
        all.windows(2).all(|w| w[0].position + 1 == w[1].position),
        "one transaction, consecutive"
    );
    let stored: Vec<u64> = all[3..].iter().map(|e| e.position).collect();
    assert_eq!(
        outcome.positions, stored,
        "an append names the positions its events got"
    );
}

/// A transaction whose xid predates the stream's last event may not append to it: its events
/// would sort before events that precede them in the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_older_than_the_stream_is_refused() {
    let schema = schema().await;
    let stream = fresh_stream("stale");
    let mut tx = schema.pool().begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *tx)
        .await
        .expect("take an xid");
    schema
        .append(&stream, ExpectedVersion::NoStream, numbered(1))
        .await
        .expect("a newer transaction appends");
    let result = schema
        .append_in_transaction(&mut tx, &stream, ExpectedVersion::Exact(1), numbered(1))
        .await;
    match result {
        Err(StoreError::Backend(error)) => assert!(
            matches!(error.downcast_ref(), Some(PostgresError::StaleTransaction { .. })),
            "{error}"
        ),
        other => panic!("expected StaleTransaction, got {other:?}"),
    }
    tx.rollback().await.expect("rollback");
    assert_eq!(schema.stream_version(&stream).await.expect("version"), 1);
}

/// A refused or empty append takes no transaction id (so its commit writes and flushes no WAL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_empty_appends_take_no_transaction_id() {
    let schema = schema().await;
    let stream = stream_with(&schema, "cheap", 1).await;
    let mut tx = schema.pool().begin().await.expect("begin");
    let refused = schema
        .append_in_transaction(&mut tx, &stream, ExpectedVersion::NoStream, numbered(3))
        .await;
    assert!(matches!(refused, Err(StoreError::Conflict(_))), "{refused:?}");
    let empty = schema
        .append_in_transaction(&mut tx, &stream, ExpectedVersion::Exact(1), Vec::new())
        .await
        .expect("empty append");
    assert_eq!((empty.previous_version, empty.new_version), (1, 1));
    let xid: Option<String> = sqlx::query_scalar("SELECT pg_current_xact_id_if_assigned()::text")
        .fetch_one(&mut *tx)
        .await
        .expect("xid");
    assert_eq!(xid, None, "no transaction id was assigned");
    tx.rollback().await.expect("rollback");
}

/// An append inside the caller's transaction refuses a closed stream too, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_in_a_transaction_refuses_a_closed_stream() {
    use es_core::lifecycle::{StreamChange, StreamLifecycle, StreamStatus};

    let schema = schema().await;
    let stream = stream_with(&schema, "tx", 1).await;
    schema
        .tombstone(&stream, StreamChange::new("ops", "done"))
        .await
        .expect("tombstone");
    let mut tx = schema.pool().begin().await.expect("begin");
    match schema
        .append_in_transaction(&mut tx, &stream, ExpectedVersion::Any, numbered(1))
        .await
    {
        Err(es_core::StoreError::StreamClosed(closed)) => assert_eq!(closed.status, StreamStatus::Tombstoned),
        other => panic!("expected StreamClosed, got {other:?}"),
    }
    tx.commit().await.expect("commit");
    assert_eq!(schema.stream_version(&stream).await.expect("version"), 1);
}

/// A lifecycle change that cannot take the events table's lock (a caller's transaction that
/// appended stays open) gives up as unavailable after its lock timeout, instead of holding up
/// every append queued behind it; once the transaction ends it goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifecycle_change_blocked_by_an_open_transaction_gives_up_as_unavailable() {
    use es_core::lifecycle::{StreamChange, StreamLifecycle};

    let schema = schema().await;
    let (held, closed) = (fresh_stream("tx"), fresh_stream("tx"));
    schema
        .append(&closed, ExpectedVersion::NoStream, numbered(1))
        .await
        .expect("append");
    let mut tx = schema.pool().begin().await.expect("begin");
    schema
        .append_in_transaction(&mut tx, &held, ExpectedVersion::NoStream, numbered(1))
        .await
        .expect("an append left open");
    // Without the lock timeout the change would wait for this very task: bounded, so that a
    // regression fails instead of hanging.
    let change = schema.tombstone(&closed, StreamChange::new("ops", "done"));
    let refused = tokio::time::timeout(std::time::Duration::from_secs(60), change)
        .await
        .expect("the change gives up on its own");
    assert!(
        matches!(&refused, Err(es_core::StoreError::Unavailable(_))),
        "{refused:?}"
    );
    tx.commit().await.expect("commit");
    schema
        .tombstone(&closed, StreamChange::new("ops", "done"))
        .await
        .expect("the change goes through once the transaction ended");
}
