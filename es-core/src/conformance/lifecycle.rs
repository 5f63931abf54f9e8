//! Checks of stream lifecycle: tombstones, archives, deletions with their audit record, and
//! that no append slips past a change.

use std::sync::Arc;

use futures_util::TryStreamExt;
use uuid::Uuid;

use super::global_log::{read_everything, read_until_visible};
use super::{append_ok, event, fresh_stream, numbered, read, whole_stream};
use crate::event::EventSet;
use crate::lifecycle::{
    ClosedQuery, StreamChange, StreamClosed, StreamLifecycle, StreamLifecycleEvent, StreamStatus, STREAM_LIFECYCLE,
};
use crate::store::{
    ExpectedVersion, GlobalLog, LogFilter, RecordedEvent, Snapshot, SnapshotStore, StoreError, StoreResult, StreamId,
    StreamSlice,
};

fn change(reason: &str) -> StreamChange {
    StreamChange::new("conformance@example.com", reason)
}

async fn ok<T>(operation: &str, result: StoreResult<T>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{operation} failed: {error}"),
    }
}

#[track_caller]
fn assert_closed<T: std::fmt::Debug>(result: StoreResult<T>, status: StreamStatus) {
    match result {
        Err(StoreError::StreamClosed(closed)) => assert_eq!(closed.status, status, "the refusal names the status"),
        other => panic!("expected StoreError::StreamClosed ({status}), got {other:?}"),
    }
}

/// What `replay_if_open` makes of `stream`: the versions lent, or the refusal.
async fn replay_open<S: crate::store::EventStore>(store: &S, stream: &StreamId) -> StoreResult<Vec<u64>> {
    let mut versions = Vec::new();
    store
        .replay_if_open(stream, StreamSlice::all(), &mut |event| {
            versions.push(event.version);
            std::ops::ControlFlow::Continue(())
        })
        .await?;
    Ok(versions)
}

/// The events of `stream` in the global log, in order.
async fn logged<S: GlobalLog>(store: &S, stream: &StreamId) -> Vec<RecordedEvent> {
    read_everything(store)
        .await
        .into_iter()
        .filter(|event| &event.stream == stream)
        .collect()
}

/// The lifecycle events the global log holds for `stream`, decoded.
async fn lifecycle_events<S: GlobalLog>(store: &S, stream: &StreamId) -> Vec<StreamClosed> {
    let lifecycle = StreamId::new(STREAM_LIFECYCLE, stream.to_string());
    logged(store, &lifecycle)
        .await
        .iter()
        .map(
            |event| match StreamLifecycleEvent::decode(&event.event_name, event.schema_version, &event.payload) {
                Ok(StreamLifecycleEvent::Closed(closed)) => closed,
                Err(error) => panic!("a lifecycle event does not decode: {error}"),
            },
        )
        .collect()
}

/// Every stream a store accepts can be closed: the record of a stream whose id is as long as
/// the limits allow is not refused for its own, longer id.
pub async fn streams_at_the_id_limit_can_be_closed<S: StreamLifecycle + GlobalLog>(store: &S) {
    let max = store.limits().max_stream_id_bytes.min(4096);
    for status in [StreamStatus::Tombstoned, StreamStatus::Archived, StreamStatus::Deleted] {
        let kind = "lifecycle";
        let prefix = Uuid::now_v7().to_string();
        let id = format!("{prefix}{}", "i".repeat(max - kind.len() - prefix.len()));
        let stream = StreamId::new(kind, id);
        append_ok(store, &stream, ExpectedVersion::NoStream, numbered(1)).await;
        let closed = match status {
            StreamStatus::Tombstoned => store.tombstone(&stream, change("at the limit")).await,
            StreamStatus::Archived => store.archive(&stream, change("at the limit")).await,
            _ => store.delete_stream(&stream, change("at the limit")).await,
        };
        let closed = ok("closing a stream at the id limit", closed).await;
        assert_eq!((closed.stream(), closed.status), (stream.clone(), status));
        assert_eq!(
            lifecycle_events(store, &stream)
                .await
                .last()
                .map(|record| record.status),
            Some(status),
            "the record of {status:?} is in the global log"
        );
    }
}

/// A tombstoned stream refuses appends with a typed error, keeps its events where they were
/// (stream and global log), says so through `stream_closure`, and tells the global log.
pub async fn tombstoned_streams_refuse_appends<S: StreamLifecycle + GlobalLog>(store: &S) {
    let stream = fresh_stream("lifecycle");
    let other = fresh_stream("lifecycle");
    append_ok(store, &stream, ExpectedVersion::NoStream, numbered(2)).await;
    append_ok(store, &other, ExpectedVersion::NoStream, numbered(1)).await;
    let before = whole_stream(store, &stream).await;
    assert_eq!(ok("stream_closure", store.stream_closure(&stream).await).await, None);
    assert_eq!(ok("replay_if_open", replay_open(store, &stream).await).await, [1, 2]);

    let closed = ok("tombstone", store.tombstone(&stream, change("duplicate")).await).await;
    assert_eq!(
        (closed.status, closed.version, closed.events),
        (StreamStatus::Tombstoned, 2, 0)
    );
    assert_eq!(
        (closed.actor.as_str(), closed.reason.as_str()),
        ("conformance@example.com", "duplicate")
    );
    assert_eq!(closed.stream(), stream);
    assert_eq!(
        ok("stream_closure", store.stream_closure(&stream).await).await.as_ref(),
        Some(&closed)
    );
    match replay_open(store, &stream).await {
        Err(StoreError::StreamClosed(refused)) => assert_eq!(*refused, closed, "the refusal carries the record"),
        other => panic!("replay_if_open of a tombstoned stream: {other:?}"),
    }

    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::Exact(2),
        ExpectedVersion::StreamExists,
    ] {
        assert_closed(
            store.append(&stream, expected, numbered(1)).await,
            StreamStatus::Tombstoned,
        );
    }
    assert_eq!(
        whole_stream(store, &stream).await,
        before,
        "the events stay in the stream"
    );
    assert_eq!(ok("stream_version", store.stream_version(&stream).await).await, 2);
    let ids: Vec<Uuid> = before.iter().map(|event| event.event_id).collect();
    read_until_visible(store, &ids).await;
    assert_eq!(
        logged(store, &stream).await,
        before,
        "the events stay in the global log"
    );
    assert_eq!(
        lifecycle_events(store, &stream).await,
        vec![closed.clone()],
        "the global log is told"
    );

    let again = ok("tombstone again", store.tombstone(&stream, change("retried")).await).await;
    assert_eq!(
        again, closed,
        "a tombstone retried returns the first record and writes nothing"
    );
    assert_eq!(lifecycle_events(store, &stream).await.len(), 1);
    append_ok(store, &other, ExpectedVersion::Exact(1), numbered(1)).await;
}

/// An archived stream's events leave the stream reads for the archive, keep their positions in
/// the global log (so a rebuild reads the same log as before), and still load through the
/// archive, with time travel; its snapshot is dropped and appends are refused.
pub async fn archived_streams_read_from_the_archive<S: StreamLifecycle + GlobalLog + SnapshotStore>(store: &S) {
    let stream = fresh_stream("lifecycle");
    append_ok(store, &stream, ExpectedVersion::NoStream, numbered(2)).await;
    let last = numbered(1);
    append_ok(store, &stream, ExpectedVersion::Exact(2), last.clone()).await;
    let snapshot = Snapshot {
        stream: stream.clone(),
        version: 3,
        revision: 0,
        schema_version: 0,
        state: br#"{"n":3}"#.to_vec(),
        taken_at: chrono::Utc::now(),
    };
    ok("save_snapshot", store.save_snapshot(snapshot).await).await;
    let events = whole_stream(store, &stream).await;
    let ids: Vec<Uuid> = events.iter().map(|event| event.event_id).collect();
    read_until_visible(store, &ids).await;
    let filter = LogFilter::default();
    let log_before = logged(store, &stream).await;
    let filtered_before = ok("read_filtered", store.read_filtered(0, 10_000, &filter).await).await;

    let closed = ok("archive", store.archive(&stream, change("closed in 2019")).await).await;
    assert_eq!(
        (closed.status, closed.version, closed.events),
        (StreamStatus::Archived, 3, 3)
    );
    // A batch stored before, sent again: its events left the stream, so it is refused as closed.
    match store.append(&stream, ExpectedVersion::Exact(2), last).await {
        Err(StoreError::StreamClosed(record)) => assert_eq!(record.status, StreamStatus::Archived),
        other => panic!("a batch sent again after the archive: expected StreamClosed, got {other:?}"),
    }
    assert_eq!(
        whole_stream(store, &stream).await,
        vec![],
        "archived events leave the stream reads"
    );
    assert_closed(replay_open(store, &stream).await, StreamStatus::Archived);
    let archived: Vec<RecordedEvent> = ok(
        "read_archived",
        store.read_archived(&stream, StreamSlice::all()).try_collect().await,
    )
    .await;
    assert_eq!(archived, events, "the archive holds the events as they were");
    let first_two: Vec<RecordedEvent> = ok(
        "read_archived to version 2",
        store
            .read_archived(&stream, StreamSlice::all().to_version(2))
            .try_collect()
            .await,
    )
    .await;
    assert_eq!(first_two, events[..2], "time travel reads the archive by version");
    let until: Vec<RecordedEvent> = ok(
        "read_archived until an instant",
        store
            .read_archived(&stream, StreamSlice::all().recorded_until(events[1].recorded_at))
            .try_collect()
            .await,
    )
    .await;
    assert_eq!(until, events[..2], "time travel reads the archive by instant");

    assert_eq!(
        logged(store, &stream).await,
        log_before,
        "archived events keep their place in the global log"
    );
    let filtered_after = ok("read_filtered", store.read_filtered(0, 10_000, &filter).await).await;
    let without_lifecycle = |page: Vec<RecordedEvent>| -> Vec<RecordedEvent> {
        page.into_iter()
            .filter(|event| event.stream.aggregate_type != STREAM_LIFECYCLE)
            .collect()
    };
    assert_eq!(
        without_lifecycle(filtered_after.events),
        without_lifecycle(filtered_before.events),
        "a rebuild reads the same log after an archive"
    );
    assert_eq!(
        ok("load_snapshot", store.load_snapshot(&stream).await).await,
        None,
        "the snapshot is dropped"
    );
    assert_closed(
        store.append(&stream, ExpectedVersion::Any, numbered(1)).await,
        StreamStatus::Archived,
    );
    assert_closed(
        store.append(&stream, ExpectedVersion::NoStream, numbered(1)).await,
        StreamStatus::Archived,
    );
    assert_eq!(
        ok("archive again", store.archive(&stream, change("retried")).await).await,
        closed
    );
    assert_closed(
        store.tombstone(&stream, change("backwards")).await,
        StreamStatus::Archived,
    );
    assert_eq!(lifecycle_events(store, &stream).await, vec![closed]);

    // A tombstoned stream may be archived: it keeps the version it was closed at.
    let tombstoned = fresh_stream("lifecycle");
    append_ok(store, &tombstoned, ExpectedVersion::NoStream, numbered(1)).await;
    ok("tombstone", store.tombstone(&tombstoned, change("done")).await).await;
    let archived = ok("archive", store.archive(&tombstoned, change("old")).await).await;
    assert_eq!(
        (archived.status, archived.version, archived.events),
        (StreamStatus::Archived, 1, 1)
    );
}

/// A deleted stream's events are gone from everywhere (stream, archive, global log, lookups by
/// id, snapshot); the audit record says who deleted how many events, when and why, and the
/// global log tells projections; the id is never reused.
pub async fn deleted_streams_leave_an_audit_record<S: StreamLifecycle + GlobalLog + SnapshotStore>(store: &S) {
    let stream = fresh_stream("lifecycle");
    let kept = fresh_stream("lifecycle");
    append_ok(store, &stream, ExpectedVersion::NoStream, numbered(2)).await;
    append_ok(store, &kept, ExpectedVersion::NoStream, numbered(1)).await;
    let events = whole_stream(store, &stream).await;
    let kept_events = whole_stream(store, &kept).await;
    let ids: Vec<Uuid> = events.iter().chain(&kept_events).map(|event| event.event_id).collect();
    read_until_visible(store, &ids).await;

    let closed = ok(
        "delete_stream",
        store.delete_stream(&stream, change("erasure request #42")).await,
    )
    .await;
    assert_eq!(
        (closed.status, closed.version, closed.events),
        (StreamStatus::Deleted, 2, 2)
    );
    assert_eq!(closed.reason, "erasure request #42");
    assert_eq!(whole_stream(store, &stream).await, vec![]);
    assert_closed(replay_open(store, &stream).await, StreamStatus::Deleted);
    assert_eq!(ok("replay_if_open", replay_open(store, &kept).await).await, [1]);
    assert_eq!(ok("stream_version", store.stream_version(&stream).await).await, 0);
    for event in &events {
        assert_eq!(
            ok("read_event", store.read_event(event.event_id).await).await,
            None,
            "deleted events are gone by id"
        );
    }
    assert_eq!(
        logged(store, &stream).await,
        vec![],
        "deleted events leave the global log"
    );
    assert_eq!(logged(store, &kept).await, kept_events, "other streams are untouched");
    assert_eq!(
        lifecycle_events(store, &stream).await,
        vec![closed.clone()],
        "projections are told"
    );
    assert_closed(
        store.append(&stream, ExpectedVersion::NoStream, numbered(1)).await,
        StreamStatus::Deleted,
    );
    assert_eq!(
        ok("delete again", store.delete_stream(&stream, change("retried")).await).await,
        closed
    );

    // An archived stream is deleted from the archive.
    let archived = fresh_stream("lifecycle");
    append_ok(store, &archived, ExpectedVersion::NoStream, numbered(3)).await;
    ok("archive", store.archive(&archived, change("old")).await).await;
    let deleted = ok("delete_stream", store.delete_stream(&archived, change("erasure")).await).await;
    assert_eq!((deleted.version, deleted.events), (3, 3));
    let left: Vec<RecordedEvent> = ok(
        "read_archived",
        store.read_archived(&archived, StreamSlice::all()).try_collect().await,
    )
    .await;
    assert_eq!(left, vec![], "nothing is left in the archive");

    let audit = ok(
        "closed_streams",
        store
            .closed_streams(&ClosedQuery::new(StreamStatus::Deleted).limit(10_000))
            .await,
    )
    .await;
    for record in [&closed, &deleted] {
        assert!(audit.contains(record), "the audit lists {}", record.stream());
    }
    let mut sorted = audit.clone();
    sorted.sort_by_key(StreamClosed::stream);
    assert_eq!(audit, sorted, "the audit is in stream order");
    let first = audit[0].stream();
    let after_first = ok(
        "closed_streams after",
        store
            .closed_streams(&ClosedQuery::new(StreamStatus::Deleted).after(first).limit(10_000))
            .await,
    )
    .await;
    assert_eq!(after_first, audit[1..], "the audit pages by stream");
}

/// A change and concurrent appends never interleave: every append either lands before the
/// tombstone (and counts in its version) or is refused as closed.
pub async fn appends_racing_a_tombstone_land_before_it_or_are_refused<S>(store: &S)
where
    S: StreamLifecycle + Clone + 'static,
{
    let stream = Arc::new(fresh_stream("lifecycle"));
    append_ok(store, &stream, ExpectedVersion::NoStream, numbered(1)).await;
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            let stream = Arc::clone(&stream);
            tokio::spawn(async move {
                let mut landed = Vec::new();
                for _ in 0..25 {
                    match store
                        .append(
                            &stream,
                            ExpectedVersion::Any,
                            vec![event("Raced", serde_json::json!({}))],
                        )
                        .await
                    {
                        Ok(outcome) => landed.push(outcome.new_version),
                        Err(StoreError::StreamClosed(_)) => return landed,
                        Err(error) => panic!("an append racing a tombstone failed otherwise: {error}"),
                    }
                }
                landed
            })
        })
        .collect();
    tokio::task::yield_now().await;
    let closed = ok("tombstone", store.tombstone(&stream, change("raced")).await).await;
    let mut landed = Vec::new();
    for writer in writers {
        match writer.await {
            Ok(versions) => landed.extend(versions),
            Err(error) => panic!("a writer panicked: {error}"),
        }
    }
    let stored = read(store, &stream, StreamSlice::all()).await;
    assert_eq!(
        stored.len() as u64,
        closed.version,
        "the tombstone's version counts every stored event"
    );
    assert_eq!(
        landed.len() as u64 + 1,
        closed.version,
        "every acknowledged append is stored, no other"
    );
    assert!(landed.iter().all(|version| *version <= closed.version));
}
