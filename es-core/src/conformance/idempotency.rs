//! Checks of idempotent appends (a retried batch is recognised by its event ids) and of
//! looking events up by id.

use uuid::Uuid;

use super::{append_ok, assert_conflict, fresh_stream, numbered, read};
use crate::store::{AppendOutcome, EventStore, ExpectedVersion, NewEvent, StoreError, StreamSlice};

fn ids(batch: &[NewEvent]) -> Vec<Uuid> {
    batch.iter().map(|event| event.event_id).collect()
}

async fn append<S: EventStore>(
    store: &S,
    stream: &crate::StreamId,
    expected: ExpectedVersion,
    batch: Vec<NewEvent>,
) -> AppendOutcome {
    match store.append(stream, expected, batch).await {
        Ok(outcome) => outcome,
        Err(error) => panic!("append to {stream} expecting {expected} failed: {error}"),
    }
}

/// An append returns the positions of its events, as they are stored; a batch appended again
/// (a retry whose first answer was lost) writes nothing and returns the original outcome,
/// whatever version the retry expects, even after other events followed it.
pub async fn retried_append_returns_the_original_outcome<S: EventStore>(store: &S) {
    let stream = fresh_stream("conformance");
    append_ok(store, &stream, ExpectedVersion::NoStream, numbered(1)).await;
    let batch = numbered(3);
    let first = append(store, &stream, ExpectedVersion::Exact(1), batch.clone()).await;
    assert_eq!((first.previous_version, first.new_version), (1, 4));
    assert!(!first.already_stored, "a first append is not a retry");
    let stored = read(store, &stream, StreamSlice::all()).await;
    let stored_positions: Vec<u64> = stored[1..].iter().map(|event| event.position).collect();
    assert_eq!(
        first.positions, stored_positions,
        "the outcome names the stored positions"
    );

    let retried = append(store, &stream, ExpectedVersion::Exact(1), batch.clone()).await;
    let original = AppendOutcome {
        already_stored: true,
        ..first.clone()
    };
    assert_eq!(retried, original, "the same expectation: the original outcome");

    append_ok(store, &stream, ExpectedVersion::Exact(4), numbered(2)).await;
    for expected in [
        ExpectedVersion::Exact(6),
        ExpectedVersion::Exact(4),
        ExpectedVersion::NoStream,
        ExpectedVersion::StreamExists,
        ExpectedVersion::Any,
    ] {
        let retried = append(store, &stream, expected, batch.clone()).await;
        assert_eq!(retried, original, "a retry expecting {expected}: the original outcome");
    }
    let events = read(store, &stream, StreamSlice::all()).await;
    assert_eq!(events.len(), 6, "retries wrote nothing");
    assert_eq!(ids(&batch), events[1..4].iter().map(|e| e.event_id).collect::<Vec<_>>());
}

/// A batch that is only partly stored, stored in another order or in another stream is not a
/// retry: it fails whole, with a conflict when the stream is not at the expected version and
/// with `DuplicateEventId` when it is, and writes nothing.
pub async fn a_batch_stored_otherwise_is_not_a_retry<S: EventStore>(store: &S) {
    let stream = fresh_stream("conformance");
    let batch = numbered(3);
    append_ok(store, &stream, ExpectedVersion::NoStream, batch.clone()).await;
    let fresh = numbered(1).remove(0);
    let mut reversed = batch.clone();
    reversed.reverse();
    let refused = [
        vec![batch[0].clone(), fresh.clone()],
        vec![fresh, batch[2].clone()],
        vec![batch[0].clone(), batch[2].clone()],
        reversed,
    ];
    for candidate in refused {
        let duplicate = store
            .append(&stream, ExpectedVersion::Exact(3), candidate.clone())
            .await;
        assert!(
            matches!(duplicate, Err(StoreError::DuplicateEventId { .. })),
            "a batch {:?} partly stored as {:?}: {duplicate:?}",
            ids(&candidate),
            ids(&batch),
        );
        let conflict = store.append(&stream, ExpectedVersion::Exact(1), candidate).await;
        assert_conflict(conflict, ExpectedVersion::Exact(1), 3);
    }
    let elsewhere = fresh_stream("conformance");
    let moved = store.append(&elsewhere, ExpectedVersion::Any, batch).await;
    assert!(
        matches!(moved, Err(StoreError::DuplicateEventId { .. })),
        "a batch stored in another stream: {moved:?}"
    );
    assert_eq!(read(store, &stream, StreamSlice::all()).await.len(), 3);
    assert_eq!(store.stream_version(&elsewhere).await.ok(), Some(0));
}

/// `read_event` finds any stored event by its id, with the envelope `read_stream` returns, and
/// nothing for an id never stored.
pub async fn read_event_by_id<S: EventStore>(store: &S) {
    let stream = fresh_stream("conformance");
    append_ok(store, &stream, ExpectedVersion::NoStream, numbered(3)).await;
    for event in read(store, &stream, StreamSlice::all()).await {
        match store.read_event(event.event_id).await {
            Ok(Some(found)) => assert_eq!(found, event),
            other => panic!("event {} not found by id: {other:?}", event.event_id),
        }
    }
    match store.read_event(Uuid::now_v7()).await {
        Ok(None) => {}
        other => panic!("an unknown id must find nothing: {other:?}"),
    }
}
