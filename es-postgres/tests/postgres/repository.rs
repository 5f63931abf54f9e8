//! The `Repository` on PostgreSQL: snapshots that cannot be used are ignored, time travel by
//! version and by instant, load–change–save with two copies, and commands sent again.

use std::time::Duration;

use es_core::{Metadata, RepositoryError, Snapshot, SnapshotStore, StreamId, StreamSlice};

use crate::domain::{note, open, opened_case, Case, Cases};
use crate::support::{schema, Shared};

/// A case with three events and a snapshot taken at version 2.
async fn case_with_snapshot(schema: &Shared) -> (Cases, String) {
    let cases = Cases::new(schema.store().clone()).with_snapshot_every(2);
    let id = opened_case(&cases).await;
    cases.execute(&id, Metadata::new(), note("jammed")).await.expect("note");
    cases
        .execute(&id, Metadata::new(), note("on fire"))
        .await
        .expect("note");
    let snapshot = schema
        .load_snapshot(&Cases::stream_id(&id))
        .await
        .expect("load snapshot")
        .expect("a snapshot was taken");
    assert_eq!((snapshot.version, snapshot.revision), (2, 1));
    (cases, id)
}

/// Overwrites the case's snapshot, at the same version, with another revision and state.
async fn plant_snapshot(schema: &Shared, id: &str, revision: u32, state: &str) {
    let stream = StreamId::new("case", id);
    let taken = schema
        .load_snapshot(&stream)
        .await
        .expect("load snapshot")
        .expect("a snapshot was taken");
    let planted = Snapshot {
        revision,
        schema_version: 1,
        state: state.as_bytes().to_vec(),
        ..taken
    };
    schema.save_snapshot(planted).await.expect("save snapshot");
    let stored = schema.load_snapshot(&stream).await.expect("load snapshot");
    assert_eq!(stored.map(|s| s.revision), Some(revision), "the snapshot was replaced");
}

fn expected() -> Case {
    Case {
        title: "Printer".into(),
        notes: vec!["jammed".into(), "on fire".into()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usable_snapshot_is_used() {
    let schema = schema().await;
    let (cases, id) = case_with_snapshot(&schema).await;
    assert_eq!(cases.load(&id).await.expect("load").aggregate, expected());
    // A (deliberately different) state at the current revision is taken as it is: proof that
    // the snapshot, not the events, supplies versions 1 and 2.
    plant_snapshot(&schema, &id, 1, r#"{"title": "from the snapshot", "notes": []}"#).await;
    let loaded = cases.load(&id).await.expect("load");
    assert_eq!(loaded.version, 3);
    assert_eq!(loaded.aggregate.title, "from the snapshot");
    assert_eq!(loaded.aggregate.notes, ["on fire"]);
}

/// Plants `state` at `revision` over a fresh case's snapshot: loading must ignore it and
/// replay the events.
async fn assert_snapshot_is_ignored(revision: u32, state: &str) {
    let schema = schema().await;
    let (cases, id) = case_with_snapshot(&schema).await;
    plant_snapshot(&schema, &id, revision, state).await;
    let loaded = cases.load(&id).await.expect("load");
    assert_eq!(
        (loaded.version, loaded.aggregate),
        (3, expected()),
        "replayed from events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_another_revision_is_ignored() {
    assert_snapshot_is_ignored(99, r#"{"title": "stale", "notes": []}"#).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_snapshot_is_ignored() {
    assert_snapshot_is_ignored(1, r#""not a case""#).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_by_version_and_instant() {
    let schema = schema().await;
    // Snapshots on: time travel before the snapshot must not use it.
    let (cases, id) = case_with_snapshot(&schema).await;
    let at = |version| {
        let cases = cases.clone();
        let id = id.clone();
        async move { cases.load_at_version(&id, version).await.expect("load_at_version") }
    };
    let v1 = at(1).await;
    assert_eq!(
        (v1.version, v1.aggregate.title.as_str(), v1.aggregate.notes.len()),
        (1, "Printer", 0)
    );
    assert_eq!(at(2).await.aggregate.notes, ["jammed"]);
    assert_eq!(at(3).await.aggregate, expected());
    assert_eq!(at(99).await.version, 3);

    let events = cases.events(&id, StreamSlice::all()).await.expect("events");
    assert_eq!(events.len(), 3);
    let second = events[1].envelope.recorded_at;
    let until_second = cases.load_at_instant(&id, second).await.expect("load_at_instant");
    assert_eq!((until_second.version, until_second.aggregate.notes.len()), (2, 1));
    let before = events[0].envelope.recorded_at - chrono::Duration::milliseconds(1);
    let nothing = cases.load_at_instant(&id, before).await.expect("load_at_instant");
    assert_eq!((nothing.version, nothing.aggregate), (0, Case::default()));

    tokio::time::sleep(Duration::from_millis(20)).await;
    let now = chrono::Utc::now();
    cases.execute(&id, Metadata::new(), note("fixed")).await.expect("note");
    let before_fix = cases.load_at_instant(&id, now).await.expect("load_at_instant");
    assert_eq!((before_fix.version, before_fix.aggregate), (3, expected()));
    assert_eq!(cases.load(&id).await.expect("load").version, 4);
}

/// The seeds' two copies: both loaded at version 1, the first saved, the second refused with a
/// typed conflict and nothing of it written.
#[tokio::test]
async fn two_copies_loaded_together_cannot_both_be_saved() {
    let schema = schema().await;
    let cases = Cases::new(schema.store().clone());
    let id = uuid::Uuid::now_v7().to_string();
    let mut new_case = cases.load_for_update(&id).await.expect("load");
    new_case.decide(open("Printer")).expect("decided");
    assert_eq!(
        cases.save(&mut new_case, Metadata::new()).await.expect("saved").version,
        1
    );

    let mut first = cases.load_for_update(&id).await.expect("load");
    let mut second = cases.load_for_update(&id).await.expect("load");
    first.decide(note("jammed")).expect("decided");
    let saved = cases.save(&mut first, Metadata::new()).await.expect("saved");
    assert_eq!(
        (saved.version, saved.appended.len(), saved.already_stored),
        (2, 1, false)
    );
    let stored = cases.events(&id, StreamSlice::from_version(2)).await.expect("read");
    assert_eq!(saved.appended[0].event_id, stored[0].envelope.event_id);
    assert_eq!(saved.appended[0].position, stored[0].envelope.position);

    second.decide(note("on fire")).expect("decided");
    match cases.save(&mut second, Metadata::new()).await {
        Err(RepositoryError::Conflict(conflict)) => {
            assert_eq!(
                (conflict.actual, conflict.stream),
                (2, StreamId::new("case", id.as_str()))
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let case = cases.load(&id).await.expect("load");
    assert_eq!((case.version, case.aggregate.notes), (2, vec!["jammed".to_string()]));
}

/// A command sent again with the same command id, after it was carried out, gets the original
/// outcome back, even though the decision would now refuse it.
#[tokio::test]
async fn a_command_sent_again_is_answered_with_its_original_outcome() {
    let schema = schema().await;
    let cases = Cases::new(schema.store().clone());
    let id = opened_case(&cases).await;
    let request = uuid::Uuid::now_v7();
    let close = |case: &Case| case.close("fixed");
    // The request, as the client sends it each time.
    let send = || cases.execute(&id, Metadata::new().with_command_id(request), close);
    let first = send().await.expect("closed");
    let again = send().await.expect("recognised");
    assert!(again.already_stored);
    assert_eq!(
        (again.version, &again.appended, &again.events),
        (first.version, &first.appended, &first.events)
    );
    let refused = cases.execute(&id, Metadata::new(), close).await;
    assert!(refused.is_err(), "another command is refused: {refused:?}");
    assert_eq!(cases.load(&id).await.expect("load").version, 2, "closed once");
}

/// A load asks whether the stream is closed in the statement that reads its events: a merge of
/// the closure probe and the stream's index scan, with nothing sorted; a closed stream's events
/// are not read, and the refusal carries its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_reads_the_closure_and_the_events_in_one_ordered_statement() {
    use es_core::lifecycle::{StreamChange, StreamLifecycle, StreamStatus};
    use es_core::{EventStore, StoreError};

    let schema = schema().await;
    let s = schema.schema();
    crate::support::twenty_thousand_events(&schema).await;
    let tombstoned = StreamId::new("kind", "stream-7");
    schema
        .tombstone(&tombstoned, StreamChange::new("test", "a closed stream"))
        .await
        .expect("tombstoned");
    crate::support::analyze(&schema, &["events", "stream_states"]).await;

    let (store, pool) = crate::support::store_on_one_connection(s).await;
    let replay = |stream: StreamId| {
        let store = store.clone();
        async move {
            let mut versions = Vec::new();
            store
                .replay_if_open(&stream, StreamSlice::all(), &mut |event| {
                    versions.push(event.version);
                    std::ops::ControlFlow::Continue(())
                })
                .await
                .map(|()| versions)
        }
    };
    let open = replay(StreamId::new("kind", "stream-3")).await.expect("an open stream");
    assert_eq!(open, (1..=10).collect::<Vec<u64>>());
    match replay(tombstoned).await {
        Err(StoreError::StreamClosed(closed)) => assert_eq!(closed.status, StreamStatus::Tombstoned),
        other => panic!("a tombstoned stream is refused, got {other:?}"),
    }

    let plans = crate::support::plans(&pool, &["stream_states", "UNION ALL", "ORDER BY version"], |_| {
        "'kind', 'stream-3', 1, 9223372036854775807, NULL".to_owned()
    })
    .await;
    assert_eq!(plans.len(), 2, "one statement, in two plan modes: {plans:?}");
    for (_, plan) in plans {
        let top = plan.lines().nth(1).unwrap_or_default();
        assert!(!top.contains("Sort"), "nothing is sorted on top: {plan}");
        assert!(plan.contains("Merge Append"), "{plan}");
        assert!(
            plan.contains("Index Scan using events_stream_version_key on events"),
            "{plan}"
        );
        assert!(!plan.contains("Seq Scan on events"), "{plan}");
    }
}
