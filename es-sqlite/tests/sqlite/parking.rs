//! Parked events beyond the conformance suite (which checks parking, listing, retry requests,
//! unparking and dropping): a unit dropped mid-way (a crashed runner) parks nothing, a
//! rolled-back unpark leaves the event parked, nothing is parked once a handler ended the
//! unit's transaction, and a read-only store lists parked events but changes none.

use std::error::Error;

use chrono::{DateTime, Utc};
use es_core::{CheckpointStore, ParkedEvent, StreamId};
use es_sqlite::{SqliteCheckpoints, SqliteClaim, SqliteError, SqliteStore, SqliteUnit};
use uuid::Uuid;

use crate::support::fresh;

/// Now, at the microsecond: what the table keeps of an instant.
fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

fn parked(projection: &str, position: u64, error: &str, attempts: u32) -> ParkedEvent {
    ParkedEvent {
        projection: projection.to_owned(),
        position,
        event_id: Uuid::now_v7(),
        stream: StreamId::new("case", format!("case-{position}")),
        version: position + 1,
        event_name: "NoteAdded".to_owned(),
        error: error.to_owned(),
        attempts,
        parked_at: now(),
        retry_requested: false,
    }
}

async fn begin(checkpoints: &SqliteCheckpoints, claim: &mut SqliteClaim) -> SqliteUnit {
    checkpoints.begin(claim).await.expect("begin").0
}

async fn listed(checkpoints: &SqliteCheckpoints, projection: &str) -> Vec<ParkedEvent> {
    checkpoints.parked(projection).await.expect("list the parked events")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_events_commit_with_the_unit_and_nothing_else() {
    let db = fresh().await;
    let checkpoints = db.store.checkpoints();
    let mut claim = checkpoints.claim("parking").await.expect("claim");

    let mut unit = begin(&checkpoints, &mut claim).await;
    checkpoints
        .park(&mut unit, &parked("parking", 5, "boom", 3))
        .await
        .expect("park");
    checkpoints.rollback(unit).await.expect("rollback");
    let mut unit = begin(&checkpoints, &mut claim).await;
    checkpoints
        .park(&mut unit, &parked("parking", 5, "boom", 3))
        .await
        .expect("park");
    drop(unit);
    assert!(
        listed(&checkpoints, "parking").await.is_empty(),
        "rolled back and dropped units park nothing"
    );

    let (nine, five) = (parked("parking", 9, "later", 1), parked("parking", 5, "boom", 3));
    let mut unit = begin(&checkpoints, &mut claim).await;
    checkpoints.park(&mut unit, &nine).await.expect("park");
    checkpoints.park(&mut unit, &five).await.expect("park");
    checkpoints.commit(unit, 10).await.expect("commit");
    assert_eq!(
        listed(&checkpoints, "parking").await,
        [five, nine],
        "in position order, whole"
    );
    assert_eq!(checkpoints.checkpoint("parking").await.expect("checkpoint"), 10);
    assert!(
        listed(&checkpoints, "other").await.is_empty(),
        "each projection has its own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparking_commits_with_the_unit_and_dropping_is_for_good() {
    let db = fresh().await;
    let checkpoints = db.store.checkpoints();
    let mut claim = checkpoints.claim("unparking").await.expect("claim");
    let mut unit = begin(&checkpoints, &mut claim).await;
    for position in [3, 4] {
        let event = parked("unparking", position, "boom", 1);
        checkpoints.park(&mut unit, &event).await.expect("park");
    }
    checkpoints.commit(unit, 4).await.expect("commit");

    let mut unit = begin(&checkpoints, &mut claim).await;
    checkpoints.unpark(&mut unit, "unparking", 3).await.expect("unpark");
    checkpoints.rollback(unit).await.expect("rollback");
    assert_eq!(
        listed(&checkpoints, "unparking").await.len(),
        2,
        "a rolled-back unpark leaves it parked"
    );
    let mut unit = begin(&checkpoints, &mut claim).await;
    checkpoints.unpark(&mut unit, "unparking", 3).await.expect("unpark");
    checkpoints.commit(unit, 4).await.expect("commit");
    let positions: Vec<u64> = listed(&checkpoints, "unparking")
        .await
        .iter()
        .map(|p| p.position)
        .collect();
    assert_eq!(positions, [4]);

    assert!(checkpoints.drop_parked("unparking", 4).await.expect("drop"));
    assert!(
        !checkpoints.drop_parked("unparking", 4).await.expect("drop"),
        "already dropped"
    );
    assert!(listed(&checkpoints, "unparking").await.is_empty());
}

/// A handler that ended the unit's transaction: parking in it would commit on its own, so it
/// is refused, and nothing is parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_parked_outside_the_units_transaction() {
    let db = fresh().await;
    let checkpoints = db.store.checkpoints();
    let mut claim = checkpoints.claim("ended").await.expect("claim");
    let mut unit = begin(&checkpoints, &mut claim).await;
    checkpoints
        .context(&mut unit)
        .execute_batch("COMMIT")
        .expect("a handler commits");
    let refused = checkpoints.park(&mut unit, &parked("ended", 2, "boom", 1)).await;
    assert!(
        matches!(refused, Err(ref error) if !error.is_transient()),
        "{refused:?}"
    );
    let refused = checkpoints.unpark(&mut unit, "ended", 2).await;
    assert!(refused.is_err(), "{refused:?}");
    let _ = checkpoints.rollback(unit).await;
    assert!(listed(&checkpoints, "ended").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_store_lists_parked_events_and_changes_none() {
    let db = fresh().await;
    let checkpoints = db.store.checkpoints();
    let mut claim = checkpoints.claim("read-only").await.expect("claim");
    let mut unit = begin(&checkpoints, &mut claim).await;
    checkpoints
        .park(&mut unit, &parked("read-only", 2, "boom", 1))
        .await
        .expect("park");
    checkpoints.commit(unit, 2).await.expect("commit");

    let reader = SqliteStore::open_read_only(db.path())
        .await
        .expect("open read-only")
        .checkpoints();
    assert_eq!(listed(&reader, "read-only").await.len(), 1);
    for refused in [
        reader.request_retry("read-only", 2).await,
        reader.drop_parked("read-only", 2).await,
    ] {
        let error = refused.expect_err("a read-only store changes nothing");
        let source = error.source().and_then(|source| source.downcast_ref::<SqliteError>());
        assert!(matches!(source, Some(SqliteError::ReadOnly { .. })), "{error:?}");
    }
    assert!(!listed(&checkpoints, "read-only").await[0].retry_requested);
}
