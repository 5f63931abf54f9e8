//! Appends under contention and at size: every version once, dense positions, atomic batches,
//! chunked reads that agree with each other.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use es_core::{EventStore, ExpectedVersion, GlobalLog, StoreError, StreamSlice};
use es_sqlite::SqliteStore;

use crate::support::{event, fresh, fresh_stream, numbered, positions, read};

/// 16 tasks, on two stores opened separately on the file (so they race in SQLite's locks as well
/// as in the store's), each appending 5 events one at a time with the version it read: every
/// version is written once, every loser gets a typed conflict, and positions stay dense.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_tasks_racing_on_one_stream_write_every_version_once() {
    let db = fresh().await;
    let second = SqliteStore::open(db.path()).await.expect("a second store on the file");
    let stream = fresh_stream("race");
    let tasks = (0..16).map(|task| {
        let store = if task % 2 == 0 {
            db.store.clone()
        } else {
            second.clone()
        };
        let stream = stream.clone();
        tokio::spawn(async move {
            let (mut written, mut conflicts) = (0, 0);
            while written < 5 {
                let version = store.stream_version(&stream).await.expect("version");
                let note = event("Raced", serde_json::json!({ "task": task, "n": written }));
                match store.append(&stream, ExpectedVersion::Exact(version), vec![note]).await {
                    Ok(outcome) => {
                        assert_eq!(outcome.previous_version, version);
                        written += 1;
                    }
                    Err(StoreError::Conflict(conflict)) => {
                        assert!(conflict.actual > version, "a conflict reports a newer version");
                        conflicts += 1;
                    }
                    Err(other) => panic!("a losing append must get a conflict, got {other}"),
                }
            }
            conflicts
        })
    });
    let conflicts: u32 = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(|task| task.expect("task"))
        .sum();
    let events = read(&db.store, &stream).await;
    let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=80).collect::<Vec<_>>(), "every version once");
    let written: BTreeSet<_> = events.iter().map(|e| e.payload.clone()).collect();
    assert_eq!(written.len(), 80, "every task's every event once");
    assert_eq!(
        positions(&db.store, 1000).await,
        (1..=80).collect::<Vec<_>>(),
        "dense positions"
    );
    eprintln!("16 racing tasks: 80 events, {conflicts} conflicts");
}

/// A batch of 10,000 events with a duplicate id at its end writes nothing; the same batch
/// without it is written whole, with dense positions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_is_atomic() {
    let db = fresh().await;
    let stream = fresh_stream("large");
    let mut batch = numbered(10_000);
    let mut with_duplicate = batch.clone();
    with_duplicate[9_999].event_id = with_duplicate[17].event_id;
    match db
        .store
        .append(&stream, ExpectedVersion::NoStream, with_duplicate)
        .await
    {
        Err(StoreError::DuplicateEventId { event_id, .. }) => assert_eq!(event_id, batch[17].event_id),
        other => panic!("expected DuplicateEventId, got {other:?}"),
    }
    assert_eq!(db.store.tail(0).await.expect("tail").events, 0, "nothing of the batch");
    batch[500].payload = b"[1, 2".to_vec();
    let refused = db.store.append(&stream, ExpectedVersion::NoStream, batch.clone()).await;
    match refused {
        Err(StoreError::InvalidBatch { reason, .. }) => assert!(reason.contains("#501"), "{reason}"),
        other => panic!("expected InvalidBatch, got {other:?}"),
    }
    batch[500].payload = b"[1, 2]".to_vec();
    let outcome = db
        .store
        .append(&stream, ExpectedVersion::NoStream, batch)
        .await
        .expect("append");
    assert_eq!(outcome.new_version, 10_000);
    let tail = db.store.tail(0).await.expect("tail");
    assert_eq!((tail.events, tail.head_position), (10_000, 10_000));
    let later = db.store.tail(9_990).await.expect("tail");
    assert_eq!((later.events, later.head_position), (10, 10_000));
    let beyond = db.store.tail(20_000).await.expect("tail");
    assert_eq!(
        (beyond.events, beyond.head_position, beyond.head_recorded_at),
        (0, 20_000, None)
    );
}

/// Stream reads and replays span many chunks and agree with `read_all`; a replay that breaks
/// stops early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_reads_agree_and_a_replay_stops_when_told() {
    let db = fresh().await;
    let stream = fresh_stream("chunks");
    // Payloads large enough that chunks are cut by size as well as by count.
    let batch: Vec<_> = (0..2_000)
        .map(|n| event("Big", serde_json::json!({ "n": n, "filler": "x".repeat(n % 1000) })))
        .collect();
    db.store
        .append(&stream, ExpectedVersion::NoStream, batch)
        .await
        .expect("append");
    let streamed = read(&db.store, &stream).await;
    let mut all = Vec::new();
    while all.len() < 2_000 {
        let after = all.last().map_or(0, |e: &es_core::RecordedEvent| e.position);
        all.extend(db.store.read_all(after, 333).await.expect("read_all"));
    }
    assert_eq!(streamed, all);
    let mut replayed = Vec::new();
    db.store
        .replay_stream(&stream, StreamSlice::all(), &mut |event| {
            replayed.push((event.version, event.payload.to_vec()));
            ControlFlow::Continue(())
        })
        .await
        .expect("replay");
    let expected: Vec<_> = streamed.iter().map(|e| (e.version, e.payload.clone())).collect();
    assert_eq!(replayed, expected);
    let mut seen = 0;
    db.store
        .replay_stream(&stream, StreamSlice::from_version(100), &mut |event| {
            seen += 1;
            assert_eq!(event.version, 99 + seen);
            if seen == 1_500 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await
        .expect("replay");
    assert_eq!(seen, 1_500);
    // Dropping a read in the middle frees its reader: the store goes on reading.
    let store = Arc::new(db.store.clone());
    {
        use futures_util::StreamExt;
        let mut partial = store.read_stream(&stream, StreamSlice::all());
        let first = partial.next().await.expect("an event").expect("readable");
        assert_eq!(first.version, 1);
    }
    assert_eq!(store.stream_version(&stream).await.expect("version"), 2_000);
}

/// An event stamped later than the clock (a clock that stepped back): the next append is
/// recorded at that instant, not before it, so time travel by instant follows the global order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_at_never_goes_backwards() {
    let db = fresh().await;
    let ahead = chrono::Utc::now() + chrono::Duration::hours(1);
    let planted = fresh_stream("clock");
    crate::support::raw(&db)
        .execute(
            "INSERT INTO events (event_id, aggregate_type, aggregate_id, version, event_name, schema_version,
                                 payload, metadata, recorded_at)
             VALUES (?1, ?2, ?3, 1, 'Ahead', 1, '{}', '{}', ?4)",
            rusqlite::params![
                uuid::Uuid::now_v7().as_bytes(),
                planted.aggregate_type,
                planted.aggregate_id,
                ahead.timestamp_micros()
            ],
        )
        .expect("plant an event from the future");
    let stream = db.stream_with("clock", 2).await;
    let events = read(&db.store, &stream).await;
    assert!(events
        .iter()
        .all(|e| e.recorded_at.timestamp_micros() == ahead.timestamp_micros()));
}
