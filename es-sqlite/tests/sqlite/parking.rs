//! Parked events beyond the conformance suite (which checks parking, listing, retry requests,
//! unparking and dropping, with units committed, rolled back and dropped): nothing is parked
//! once a handler ended the unit's transaction, and a read-only store lists parked events but
//! changes none.

use std::error::Error;

use chrono::{DateTime, Utc};
use es_core::{CheckpointStore, ParkedEvent, StreamId};
use es_sqlite::{SqliteCheckpoints, SqliteError, SqliteStore};
use uuid::Uuid;

use crate::support::{begin, claimed, fresh};

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

async fn listed(checkpoints: &SqliteCheckpoints, projection: &str) -> Vec<ParkedEvent> {
    checkpoints.parked(projection).await.expect("list the parked events")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_parked_outside_the_units_transaction() {
    let db = fresh().await;
    let (checkpoints, mut claim) = claimed(&db, "ended").await;
    let (mut unit, _) = begin(&checkpoints, &mut claim).await;
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
    let (checkpoints, mut claim) = claimed(&db, "read-only").await;
    let (mut unit, _) = begin(&checkpoints, &mut claim).await;
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
