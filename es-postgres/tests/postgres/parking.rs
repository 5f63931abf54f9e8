//! Parked events beyond the conformance suite (which checks parking, listing, retry requests,
//! unparking and dropping): a unit dropped mid-way (a crashed runner) parks nothing, and a
//! rolled-back unpark leaves the event parked.

use std::time::Duration;

use chrono::{DateTime, Utc};
use es_core::{CheckpointStore, ParkedEvent, StreamId};
use es_postgres::{PostgresCheckpoints, PostgresClaim, PostgresUnit};
use uuid::Uuid;

use crate::support::schema;

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

/// Begins a unit, retrying transient failures as the runner does: after a unit was dropped
/// (its connection with it), the server may take a moment to release the claim's old lock.
async fn begin(checkpoints: &PostgresCheckpoints, claim: &mut PostgresClaim) -> PostgresUnit {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match checkpoints.begin(claim).await {
            Ok((unit, _)) => return unit,
            Err(error) if error.is_transient() && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("begin: {error}"),
        }
    }
}

async fn listed(checkpoints: &PostgresCheckpoints, projection: &str) -> Vec<ParkedEvent> {
    checkpoints.parked(projection).await.expect("list the parked events")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_events_commit_with_the_unit_and_nothing_else() {
    let schema = schema().await;
    let checkpoints = schema.checkpoints();
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
        [five.clone(), nine.clone()],
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
    let schema = schema().await;
    let checkpoints = schema.checkpoints();
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
