//! Stream lifecycle in the file itself: what the trigger allows, and what a deletion leaves in
//! the file's bytes.

use es_core::conformance::event;
use es_core::lifecycle::{StreamChange, StreamLifecycle};
use es_core::{EventStore, ExpectedVersion, StreamId};

use crate::support::{fresh, raw};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_archiving_or_deleting_a_stream_removes_its_events() {
    let db = fresh().await;
    let open = db.stream_with("migrations", 2).await;
    let tombstoned = db.stream_with("migrations", 1).await;
    es_core::lifecycle::StreamLifecycle::tombstone(
        &db.store,
        &tombstoned,
        es_core::lifecycle::StreamChange::new("t", "t"),
    )
    .await
    .expect("tombstone");
    for stream in [&open, &tombstoned] {
        let deleted = raw(&db).execute(
            "DELETE FROM events WHERE aggregate_type = ?1 AND aggregate_id = ?2",
            [&stream.aggregate_type, &stream.aggregate_id],
        );
        assert!(deleted.is_err(), "the trigger refuses deleting the events of {stream}");
    }
    assert_eq!(db.store.stream_version(&open).await.expect("version"), 2);
    assert_eq!(db.store.stream_version(&tombstoned).await.expect("version"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stream_leaves_no_bytes_of_its_events_in_the_file() {
    let db = fresh().await;
    let (erased, kept) = (StreamId::new("person", "P-1"), StreamId::new("person", "P-2"));
    let secret = format!("erase-me-{}", uuid::Uuid::now_v7().simple());
    let other = format!("keep-me-{}", uuid::Uuid::now_v7().simple());
    for (stream, text) in [(&erased, &secret), (&kept, &other)] {
        let events = vec![event("Noted", serde_json::json!({ "text": text }))];
        db.store
            .append(stream, ExpectedVersion::NoStream, events)
            .await
            .expect("append");
    }
    db.store
        .delete_stream(&erased, StreamChange::new("dpo", "erasure request"))
        .await
        .expect("delete");
    // Everything the WAL holds goes into the file, and the WAL is emptied.
    raw(&db)
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .expect("checkpoint");
    let bytes = std::fs::read(db.path()).expect("the file");
    let contains = |needle: &str| bytes.windows(needle.len()).any(|window| window == needle.as_bytes());
    assert!(contains(&other), "the scan sees the kept stream's payload");
    assert!(!contains(&secret), "the deleted payload is zeroed in the file");
}
