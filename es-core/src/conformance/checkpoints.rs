//! Checks of checkpoint stores: units commit or discard as a whole, claims are exclusive, and a
//! new claim resumes from the last commit after a crash.
//!
//! What a handler writes depends on the backend's context type, so these checks cover the
//! checkpoint itself; the read-model writes that commit with it are checked by each backend's
//! projection tests. Losing a claim (a cut connection) cannot be caused generically either:
//! backends whose claims can be lost test that with their own fault injection.

use std::time::Duration;

use uuid::Uuid;

use crate::projection::CheckpointStore;

fn fresh_projection() -> String {
    format!("conformance-{}", Uuid::now_v7().simple())
}

async fn claim<C: CheckpointStore>(store: &C, projection: &str) -> C::Claim {
    match tokio::time::timeout(Duration::from_secs(10), store.claim(projection)).await {
        Ok(Ok(claim)) => claim,
        Ok(Err(error)) => panic!("claiming {projection} failed: {error}"),
        Err(_) => panic!("claiming a free projection {projection} did not finish in 10 s"),
    }
}

async fn begin<C: CheckpointStore>(store: &C, claim: &mut C::Claim) -> (C::Unit, u64) {
    match store.begin(claim).await {
        Ok(begun) => begun,
        Err(error) => panic!("beginning a unit of work failed: {error}"),
    }
}

async fn checkpoint<C: CheckpointStore>(store: &C, projection: &str) -> u64 {
    match store.checkpoint(projection).await {
        Ok(position) => position,
        Err(error) => panic!("reading the checkpoint of {projection} failed: {error}"),
    }
}

/// A new projection starts at 0; a committed unit moves the checkpoint; a rolled-back or
/// dropped unit leaves it where it was.
pub async fn units_commit_or_discard_the_checkpoint<C: CheckpointStore>(store: &C) {
    let projection = fresh_projection();
    assert_eq!(checkpoint(store, &projection).await, 0, "a new projection starts at 0");
    let mut claim = claim(store, &projection).await;
    let (unit, position) = begin(store, &mut claim).await;
    assert_eq!(position, 0);
    if let Err(error) = store.commit(unit, 5).await {
        panic!("commit failed: {error}");
    }
    assert_eq!(checkpoint(store, &projection).await, 5, "a commit moves the checkpoint");

    let (unit, position) = begin(store, &mut claim).await;
    assert_eq!(position, 5, "a unit reads the committed checkpoint");
    if let Err(error) = store.rollback(unit).await {
        panic!("rollback failed: {error}");
    }
    let (unit, position) = begin(store, &mut claim).await;
    assert_eq!(position, 5, "a rolled-back unit leaves the checkpoint");
    drop(unit);
    let (unit, position) = begin(store, &mut claim).await;
    assert_eq!(position, 5, "a dropped unit leaves the checkpoint");
    if let Err(error) = store.commit(unit, 9).await {
        panic!("commit after a dropped unit failed: {error}");
    }
    assert_eq!(checkpoint(store, &projection).await, 9);
}

/// While one runner holds a projection's claim, another's claim waits; it resolves once the
/// first is released. Other projections are not affected.
pub async fn claims_are_exclusive<C: CheckpointStore>(store: &C) {
    let projection = fresh_projection();
    let first = claim(store, &projection).await;
    let waiting = tokio::time::timeout(Duration::from_millis(600), store.claim(&projection)).await;
    assert!(waiting.is_err(), "a second claim resolved while the first was held");
    let other = claim(store, &fresh_projection()).await;
    drop(first);
    let second = claim(store, &projection).await;
    drop((second, other));
}

/// A runner that dies mid-unit (its unit and claim dropped) loses only that unit: the next
/// claim resumes from the last commit.
pub async fn a_new_claim_resumes_after_a_crash<C: CheckpointStore>(store: &C) {
    let projection = fresh_projection();
    let mut crashed = claim(store, &projection).await;
    let (unit, _) = begin(store, &mut crashed).await;
    if let Err(error) = store.commit(unit, 7).await {
        panic!("commit failed: {error}");
    }
    let (in_flight, _) = begin(store, &mut crashed).await;
    drop((in_flight, crashed));
    let mut next = claim(store, &projection).await;
    let (unit, position) = begin(store, &mut next).await;
    assert_eq!(position, 7, "the next runner resumes from the last commit");
    drop(unit);
}
