//! The `Repository` on PostgreSQL: snapshots that cannot be used are ignored, and time travel by
//! version and by instant.

use std::time::Duration;

use es_core::{Metadata, Repository, SnapshotStore, StreamSlice};
use es_postgres::PostgresStore;

use crate::domain::{note, open, Case};
use crate::support::{schema, Shared};

type Cases = Repository<Case, PostgresStore>;

/// A case with three events and a snapshot taken at version 2.
async fn case_with_snapshot(schema: &Shared) -> (Cases, String) {
    let cases = Cases::new(schema.store().clone()).with_snapshot_every(2);
    let id = uuid::Uuid::now_v7().to_string();
    cases
        .execute(&id, Metadata::new(), open("Printer"))
        .await
        .expect("open");
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

/// Replaces the stored snapshot's revision and state.
async fn plant_snapshot(schema: &Shared, id: &str, revision: i32, state: &str) {
    let sql = format!(
        "UPDATE \"{}\".snapshots SET revision = $1, state = $2::jsonb WHERE aggregate_type = 'case' AND aggregate_id = $3",
        schema.schema()
    );
    let updated = sqlx::query(&sql)
        .bind(revision)
        .bind(state)
        .bind(id)
        .execute(schema.pool())
        .await
        .expect("update snapshot");
    assert_eq!(updated.rows_affected(), 1);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_another_revision_is_ignored() {
    let schema = schema().await;
    let (cases, id) = case_with_snapshot(&schema).await;
    plant_snapshot(&schema, &id, 99, r#"{"title": "stale", "notes": []}"#).await;
    let loaded = cases.load(&id).await.expect("load");
    assert_eq!(
        (loaded.version, loaded.aggregate),
        (3, expected()),
        "replayed from events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_snapshot_is_ignored() {
    let schema = schema().await;
    let (cases, id) = case_with_snapshot(&schema).await;
    plant_snapshot(&schema, &id, 1, r#""not a case""#).await;
    let loaded = cases.load(&id).await.expect("load");
    assert_eq!(
        (loaded.version, loaded.aggregate),
        (3, expected()),
        "replayed from events"
    );
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
