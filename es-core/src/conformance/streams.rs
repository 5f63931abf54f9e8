//! Checks of streams and snapshots: appends, expectations, reads, replays.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::global_log::read_everything;
use super::{append_ok, assert_conflict, fresh_stream, numbered, payload_json, read};
use crate::metadata::Metadata;
use crate::store::{
    EventStore, ExpectedVersion, GlobalLog, RecordedEvent, ReplayedEvent, Snapshot, SnapshotStore, StoreError,
    StoreResult, StreamId, StreamSlice,
};

/// Appended events read back with versions from 1, their ids, names, schema versions, payloads
/// and metadata intact.
pub async fn append_then_read_stream<S: EventStore>(store: &S) {
    let stream = fresh_stream("conformance");
    let metadata = Metadata::new()
        .with_correlation_id(Uuid::now_v7())
        .with_causation_id(Uuid::now_v7())
        .with_actor("tester")
        .with_extra("tenant", "acme");
    let mut batch = numbered(3);
    batch[1].metadata = metadata.clone();
    batch[2].schema_version = 7;
    batch[2].event_name = "Other".into();
    let ids: Vec<_> = batch.iter().map(|e| e.event_id).collect();
    let outcome = store.append(&stream, ExpectedVersion::NoStream, batch).await;
    let outcome = outcome.unwrap_or_else(|error| panic!("first append failed: {error}"));
    assert_eq!((outcome.previous_version, outcome.new_version), (0, 3));
    assert_eq!(store.stream_version(&stream).await.ok(), Some(3));

    let events = read(store, &stream, StreamSlice::all()).await;
    assert_eq!(events.len(), 3);
    for (n, event) in events.iter().enumerate() {
        assert_eq!(event.version, n as u64 + 1, "versions count from 1");
        assert_eq!(event.event_id, ids[n]);
        assert_eq!(event.stream, stream);
        assert_eq!(payload_json(event), serde_json::json!({ "n": n }));
    }
    assert_eq!(events[0].event_name, "Numbered");
    assert_eq!(events[0].metadata, Metadata::new());
    assert_eq!(events[1].metadata, metadata);
    assert_eq!((events[2].event_name.as_str(), events[2].schema_version), ("Other", 7));
    assert!(
        events.windows(2).all(|w| w[0].position < w[1].position),
        "positions grow"
    );
    assert!(events.windows(2).all(|w| w[0].recorded_at <= w[1].recorded_at));
}

/// `NoStream` accepts only a new stream, and a refusal reports the actual version.
pub async fn no_stream_expectation<S: EventStore>(store: &S) {
    let stream = fresh_stream("conformance");
    append_ok(store, &stream, ExpectedVersion::NoStream, numbered(2)).await;
    let result = store.append(&stream, ExpectedVersion::NoStream, numbered(1)).await;
    assert_conflict(result, ExpectedVersion::NoStream, 2);
    let other = fresh_stream("conformance");
    append_ok(store, &other, ExpectedVersion::Exact(0), numbered(1)).await;
    let result = store.append(&other, ExpectedVersion::Exact(0), numbered(1)).await;
    assert_conflict(result, ExpectedVersion::Exact(0), 1);
}

/// `Exact(n)` accepts only a stream at `n`, refusing both lower and higher expectations.
pub async fn exact_expectation<S: EventStore>(store: &S) {
    let stream = fresh_stream("conformance");
    append_ok(store, &stream, ExpectedVersion::Exact(0), numbered(3)).await;
    assert_conflict(
        store.append(&stream, ExpectedVersion::Exact(2), numbered(1)).await,
        ExpectedVersion::Exact(2),
        3,
    );
    assert_conflict(
        store.append(&stream, ExpectedVersion::Exact(4), numbered(1)).await,
        ExpectedVersion::Exact(4),
        3,
    );
    append_ok(store, &stream, ExpectedVersion::Exact(3), numbered(2)).await;
    assert_eq!(store.stream_version(&stream).await.ok(), Some(5));
}

/// `StreamExists` refuses a new stream and accepts any existing one.
pub async fn stream_exists_expectation<S: EventStore>(store: &S) {
    let stream = fresh_stream("conformance");
    let result = store.append(&stream, ExpectedVersion::StreamExists, numbered(1)).await;
    assert_conflict(result, ExpectedVersion::StreamExists, 0);
    assert_eq!(read(store, &stream, StreamSlice::all()).await.len(), 0);
    append_ok(store, &stream, ExpectedVersion::NoStream, numbered(1)).await;
    append_ok(store, &stream, ExpectedVersion::StreamExists, numbered(1)).await;
    assert_eq!(store.stream_version(&stream).await.ok(), Some(2));
}

/// `Any` appends whatever the version.
pub async fn any_expectation<S: EventStore>(store: &S) {
    let stream = fresh_stream("conformance");
    append_ok(store, &stream, ExpectedVersion::Any, numbered(1)).await;
    append_ok(store, &stream, ExpectedVersion::Any, numbered(2)).await;
    let versions: Vec<_> = read(store, &stream, StreamSlice::all())
        .await
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, [1, 2, 3]);
}

/// An empty batch writes nothing but still checks the expectation.
pub async fn empty_append_checks_expectation<S: EventStore>(store: &S) {
    let stream = fresh_stream("conformance");
    let outcome = store.append(&stream, ExpectedVersion::NoStream, Vec::new()).await;
    let outcome = outcome.unwrap_or_else(|error| panic!("empty append failed: {error}"));
    assert_eq!((outcome.previous_version, outcome.new_version), (0, 0));
    append_ok(store, &stream, ExpectedVersion::NoStream, numbered(1)).await;
    assert_conflict(
        store.append(&stream, ExpectedVersion::Exact(5), Vec::new()).await,
        ExpectedVersion::Exact(5),
        1,
    );
}

/// A refused batch leaves the stream and the global order untouched.
pub async fn refused_batch_writes_nothing<S: EventStore + GlobalLog>(store: &S) {
    let stream = fresh_stream("conformance");
    append_ok(store, &stream, ExpectedVersion::NoStream, numbered(2)).await;
    let before = read(store, &stream, StreamSlice::all()).await;
    let batch = numbered(5);
    let ids: BTreeSet<_> = batch.iter().map(|e| e.event_id).collect();
    assert_conflict(
        store.append(&stream, ExpectedVersion::Exact(1), batch).await,
        ExpectedVersion::Exact(1),
        2,
    );
    assert_eq!(read(store, &stream, StreamSlice::all()).await, before);
    let all = read_everything(store).await;
    assert!(
        all.iter().all(|e| !ids.contains(&e.event_id)),
        "no event of a refused batch is visible"
    );
}

/// A batch containing an already-stored event id fails as a whole with `DuplicateEventId`.
pub async fn duplicate_event_id_writes_nothing<S: EventStore>(store: &S) {
    let stream = fresh_stream("conformance");
    let first = numbered(1);
    let reused = first[0].event_id;
    append_ok(store, &stream, ExpectedVersion::NoStream, first.clone()).await;
    let mut batch = numbered(2);
    batch.push(first[0].clone());
    match store.append(&stream, ExpectedVersion::Exact(1), batch).await {
        Err(StoreError::DuplicateEventId { event_id, .. }) => assert_eq!(event_id, reused),
        other => panic!("expected DuplicateEventId, got {other:?}"),
    }
    assert_eq!(store.stream_version(&stream).await.ok(), Some(1));
    let elsewhere = fresh_stream("conformance");
    let result = store.append(&elsewhere, ExpectedVersion::Any, first).await;
    assert!(
        matches!(result, Err(StoreError::DuplicateEventId { .. })),
        "ids are unique store-wide: {result:?}"
    );
    assert_eq!(store.stream_version(&elsewhere).await.ok(), Some(0));

    // An id twice in one batch, on a new stream: refused, nothing written.
    let twice = fresh_stream("conformance");
    let mut batch = numbered(2);
    batch[1].event_id = batch[0].event_id;
    let repeated = batch[0].event_id;
    match store.append(&twice, ExpectedVersion::NoStream, batch).await {
        Err(StoreError::DuplicateEventId { event_id, .. }) => assert_eq!(event_id, repeated),
        other => panic!("an id twice in one batch: expected DuplicateEventId, got {other:?}"),
    }
    assert_eq!(store.stream_version(&twice).await.ok(), Some(0));
}

/// A payload that is not JSON is refused as an invalid batch, and nothing of the batch is written.
pub async fn invalid_payload_writes_nothing<S: EventStore>(store: &S) {
    let stream = fresh_stream("conformance");
    let mut batch = numbered(3);
    batch[2].payload = b"{not json".to_vec();
    match store.append(&stream, ExpectedVersion::NoStream, batch).await {
        Err(StoreError::InvalidBatch { stream: refused, .. }) => assert_eq!(refused, stream),
        other => panic!("expected InvalidBatch, got {other:?}"),
    }
    assert_eq!(store.stream_version(&stream).await.ok(), Some(0));
}

/// Writers racing with the same expected version: exactly one wins, the rest get conflicts.
pub async fn concurrent_appends_exactly_one_wins<S: EventStore>(store: &S) {
    let stream = fresh_stream("conformance");
    append_ok(store, &stream, ExpectedVersion::NoStream, numbered(1)).await;
    let store = Arc::new(store);
    let attempts = (0..8).map(|_| {
        let stream = stream.clone();
        let store = Arc::clone(&store);
        async move { store.append(&stream, ExpectedVersion::Exact(1), numbered(3)).await }
    });
    let results = futures_util::future::join_all(attempts).await;
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "exactly one of the racing appends wins: {results:?}");
    for result in results.into_iter().filter(|r| r.is_err()) {
        match result {
            Err(StoreError::Conflict(conflict)) => assert_eq!(conflict.actual, 4),
            other => panic!("a losing append must get a conflict, got {other:?}"),
        }
    }
    let versions: Vec<_> = read(*store, &stream, StreamSlice::all())
        .await
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);
}

/// Streams with the same id but another aggregate type are separate.
pub async fn streams_are_isolated<S: EventStore>(store: &S) {
    let id = Uuid::now_v7().to_string();
    let ticket = StreamId::new("conformance-ticket", id.clone());
    let lead = StreamId::new("conformance-lead", id);
    append_ok(store, &ticket, ExpectedVersion::NoStream, numbered(2)).await;
    append_ok(store, &lead, ExpectedVersion::NoStream, numbered(1)).await;
    assert_eq!(read(store, &ticket, StreamSlice::all()).await.len(), 2);
    assert_eq!(read(store, &lead, StreamSlice::all()).await.len(), 1);
    assert_eq!(
        read(store, &fresh_stream("conformance"), StreamSlice::all()).await,
        Vec::new()
    );
    assert_eq!(store.stream_version(&fresh_stream("conformance")).await.ok(), Some(0));
}

/// Version slices: from, to, and both; time travel by version.
pub async fn read_stream_slices<S: EventStore>(store: &S) {
    let stream = fresh_stream("conformance");
    append_ok(store, &stream, ExpectedVersion::NoStream, numbered(10)).await;
    let versions = |events: Vec<RecordedEvent>| events.iter().map(|e| e.version).collect::<Vec<_>>();
    assert_eq!(
        versions(read(store, &stream, StreamSlice::from_version(8)).await),
        [8, 9, 10]
    );
    assert_eq!(
        versions(read(store, &stream, StreamSlice::all().to_version(3)).await),
        [1, 2, 3]
    );
    assert_eq!(
        versions(read(store, &stream, StreamSlice::from_version(4).to_version(6)).await),
        [4, 5, 6]
    );
    assert_eq!(
        versions(read(store, &stream, StreamSlice::from_version(11)).await),
        Vec::<u64>::new()
    );
    assert_eq!(
        versions(read(store, &stream, StreamSlice::from_version(0).to_version(1)).await),
        [1]
    );
}

/// Time travel by instant: only events recorded at or before the cut-off.
pub async fn read_stream_until_instant<S: EventStore + GlobalLog>(store: &S) {
    let stream = fresh_stream("conformance");
    for version in 0..3 {
        append_ok(store, &stream, ExpectedVersion::Exact(version), numbered(1)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events = read(store, &stream, StreamSlice::all()).await;
    assert!(events[0].recorded_at < events[1].recorded_at && events[1].recorded_at < events[2].recorded_at);
    let until = |instant| StreamSlice::all().recorded_until(instant);
    assert_eq!(read(store, &stream, until(events[1].recorded_at)).await.len(), 2);
    assert_eq!(read(store, &stream, until(events[0].recorded_at)).await.len(), 1);
    let before_all = events[0].recorded_at - chrono::Duration::milliseconds(1);
    assert_eq!(read(store, &stream, until(before_all)).await.len(), 0);
    assert_eq!(
        read(store, &stream, until(events[2].recorded_at).to_version(1))
            .await
            .len(),
        1
    );
}

/// `replay_stream` lends the same versions, names, schema versions and payloads as
/// `read_stream`, honours the slice, and stops when told to; so does `replay_if_open` on an
/// open stream, and on a stream never written it lends nothing.
pub async fn replay_lends_what_read_stream_returns<S: EventStore + GlobalLog>(store: &S) {
    let stream = fresh_stream("conformance");
    let mut batch = numbered(6);
    batch[3].schema_version = 4;
    batch[4].event_name = "Renamed".into();
    append_ok(store, &stream, ExpectedVersion::NoStream, batch).await;
    let slice = StreamSlice::from_version(2).to_version(5);
    let expected: Vec<_> = read(store, &stream, slice)
        .await
        .iter()
        .map(|e| (e.version, e.event_name.clone(), e.schema_version, payload_json(e)))
        .collect();
    for open_only in [false, true] {
        let method = if open_only { "replay_if_open" } else { "replay_stream" };
        let mut replayed = Vec::new();
        let mut apply = |event: ReplayedEvent<'_>| {
            let payload = serde_json::from_slice(event.payload).unwrap_or(serde_json::Value::Null);
            replayed.push((
                event.version,
                event.event_name.to_owned(),
                event.schema_version,
                payload,
            ));
            std::ops::ControlFlow::Continue(())
        };
        let result = replay_with(store, open_only, &stream, slice, &mut apply).await;
        assert!(result.is_ok(), "{method} failed: {result:?}");
        assert_eq!(replayed, expected, "{method}");
        let mut seen = 0;
        let mut stop_at_two = |_: ReplayedEvent<'_>| {
            seen += 1;
            if seen == 2 {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        };
        let result = replay_with(store, open_only, &stream, StreamSlice::all(), &mut stop_at_two).await;
        assert!(result.is_ok(), "{method} failed: {result:?}");
        assert_eq!(seen, 2, "{method} stops when told to");
    }
    let mut lent = 0;
    let result = store
        .replay_if_open(&fresh_stream("conformance"), StreamSlice::all(), &mut |_| {
            lent += 1;
            std::ops::ControlFlow::Continue(())
        })
        .await;
    assert!(result.is_ok(), "replay_if_open of a new stream failed: {result:?}");
    assert_eq!(lent, 0, "a stream never written has no events");
}

/// `replay_if_open` when `open_only`, else `replay_stream`.
async fn replay_with<S: EventStore>(
    store: &S,
    open_only: bool,
    stream: &StreamId,
    slice: StreamSlice,
    apply: &mut crate::store::ReplayFn<'_>,
) -> StoreResult<()> {
    match open_only {
        true => store.replay_if_open(stream, slice, apply).await,
        false => store.replay_stream(stream, slice, apply).await,
    }
}

/// The latest snapshot wins, with its revision and schema version; an older one does not replace
/// a newer one; streams are separate.
pub async fn snapshots_keep_the_latest<S: SnapshotStore>(store: &S) {
    let stream = fresh_stream("conformance");
    let snapshot = |version: u64, revision: u32| Snapshot {
        stream: stream.clone(),
        version,
        revision,
        // Distinct per snapshot, so a store that loses or mixes it up is caught.
        schema_version: u32::try_from(version).unwrap_or(u32::MAX) + 100,
        state: serde_json::json!({ "at": version }).to_string().into_bytes(),
        taken_at: chrono::Utc::now(),
    };
    assert_eq!(store.load_snapshot(&stream).await.ok(), Some(None));
    let save = |snapshot: Snapshot| async move {
        if let Err(error) = store.save_snapshot(snapshot).await {
            panic!("saving a snapshot failed: {error}");
        }
    };
    save(snapshot(5, 1)).await;
    save(snapshot(10, 2)).await;
    save(snapshot(7, 1)).await;
    let latest = store.load_snapshot(&stream).await.ok().flatten();
    let latest = latest.unwrap_or_else(|| panic!("snapshot of {stream} is missing"));
    assert_eq!((latest.version, latest.revision, latest.schema_version), (10, 2, 110));
    let state: serde_json::Value = serde_json::from_slice(&latest.state).unwrap_or_default();
    assert_eq!(state, serde_json::json!({ "at": 10 }));
    assert_eq!(store.load_snapshot(&fresh_stream("conformance")).await.ok(), Some(None));
}
