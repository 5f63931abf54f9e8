//! Checks of checkpoint stores: read-model writes commit or vanish together with the checkpoint,
//! claims are exclusive, and a new claim resumes from the last commit after a crash.
//!
//! What a handler writes depends on the backend's context type, so the backend hands the suite a
//! [`ReadModelProbe`]: a way to write a mark through a unit's context and to read the committed
//! marks. Losing a claim (a cut connection) cannot be caused generically: backends whose claims
//! can be lost test that with their own fault injection.

use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use chrono::{DateTime, Utc};

use crate::projection::{CheckpointStore, ClaimStatus, ParkedEvent};
use crate::store::StreamId;

/// How the checkpoint checks write to a backend's read model and read it back: a backend's
/// tests implement it for their context type (an in-memory model, a database connection).
#[async_trait]
pub trait ReadModelProbe<C: CheckpointStore>: Send + Sync {
    /// Writes `mark` through a unit's context, as a handler would.
    async fn write(&self, context: &mut C::Context, mark: u64);

    /// The marks committed so far, read outside any unit of work, in any order.
    async fn committed(&self, store: &C) -> Vec<u64>;
}

async fn committed_marks<C: CheckpointStore, R: ReadModelProbe<C>>(store: &C, probe: &R) -> Vec<u64> {
    let mut marks = probe.committed(store).await;
    marks.sort_unstable();
    marks
}

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

/// The value of a checkpoint-store call that must succeed; panics naming `what` otherwise.
fn must<T>(result: Result<T, crate::projection::CheckpointError>, what: &str) -> T {
    result.unwrap_or_else(|error| panic!("{what} failed: {error}"))
}

/// [`must`] for a call that reads the `what` of `projection`.
fn must_read<T>(result: Result<T, crate::projection::CheckpointError>, what: &str, projection: &str) -> T {
    must(result, &format!("reading the {what} of {projection}"))
}

/// Begins a unit, retrying transient failures for up to 10 s as a runner does: after a unit
/// was dropped, a backend whose unit owned the claim's connection may need a moment to claim
/// again.
async fn begin<C: CheckpointStore>(store: &C, claim: &mut C::Claim) -> (C::Unit, u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match store.begin(claim).await {
            Err(error) if error.is_transient() && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            began => return must(began, "beginning a unit of work"),
        }
    }
}

async fn checkpoint<C: CheckpointStore>(store: &C, projection: &str) -> u64 {
    must_read(store.checkpoint(projection).await, "checkpoint", projection)
}

/// A new projection starts at 0. A committed unit makes its read-model writes and its checkpoint
/// visible together; a rolled-back or dropped unit leaves neither.
pub async fn units_commit_or_discard_the_checkpoint<C: CheckpointStore, R: ReadModelProbe<C>>(store: &C, probe: &R) {
    let projection = fresh_projection();
    assert_eq!(checkpoint(store, &projection).await, 0, "a new projection starts at 0");
    let before = committed_marks(store, probe).await;
    let mut claim = claim(store, &projection).await;
    let (mut unit, position) = begin(store, &mut claim).await;
    assert_eq!(position, 0);
    probe.write(store.context(&mut unit), 1).await;
    if let Err(error) = store.commit(unit, 5).await {
        panic!("commit failed: {error}");
    }
    assert_eq!(checkpoint(store, &projection).await, 5, "a commit moves the checkpoint");
    let mut expected = [before.as_slice(), &[1]].concat();
    expected.sort_unstable();
    assert_eq!(
        committed_marks(store, probe).await,
        expected,
        "a commit makes the unit's writes visible"
    );

    let (mut unit, position) = begin(store, &mut claim).await;
    assert_eq!(position, 5, "a unit reads the committed checkpoint");
    probe.write(store.context(&mut unit), 2).await;
    if let Err(error) = store.rollback(unit).await {
        panic!("rollback failed: {error}");
    }
    let (mut unit, position) = begin(store, &mut claim).await;
    assert_eq!(position, 5, "a rolled-back unit leaves the checkpoint");
    probe.write(store.context(&mut unit), 3).await;
    drop(unit);
    assert_eq!(
        committed_marks(store, probe).await,
        expected,
        "rolled-back and dropped units leave no writes"
    );
    let (unit, position) = begin(store, &mut claim).await;
    assert_eq!(position, 5, "a dropped unit leaves the checkpoint");
    if let Err(error) = store.commit(unit, 9).await {
        panic!("commit after a dropped unit failed: {error}");
    }
    assert_eq!(checkpoint(store, &projection).await, 9);
}

/// While one runner holds a projection's claim, another's claim waits; it resolves once the
/// first is released. Other projections are not affected.
pub async fn claims_are_exclusive<C: CheckpointStore, R: ReadModelProbe<C>>(store: &C, _: &R) {
    let projection = fresh_projection();
    let first = claim(store, &projection).await;
    let waiting = tokio::time::timeout(Duration::from_millis(600), store.claim(&projection)).await;
    assert!(waiting.is_err(), "a second claim resolved while the first was held");
    let other = claim(store, &fresh_projection()).await;
    drop(first);
    let second = claim(store, &projection).await;
    drop((second, other));
}

/// A runner that dies mid-unit (its unit and claim dropped) loses only that unit, writes
/// included: the next claim resumes from the last commit.
pub async fn a_new_claim_resumes_after_a_crash<C: CheckpointStore, R: ReadModelProbe<C>>(store: &C, probe: &R) {
    let projection = fresh_projection();
    let mut crashed = claim(store, &projection).await;
    let (unit, _) = begin(store, &mut crashed).await;
    if let Err(error) = store.commit(unit, 7).await {
        panic!("commit failed: {error}");
    }
    let before = committed_marks(store, probe).await;
    let (mut in_flight, _) = begin(store, &mut crashed).await;
    probe.write(store.context(&mut in_flight), 70).await;
    drop((in_flight, crashed));
    assert_eq!(
        committed_marks(store, probe).await,
        before,
        "the crashed unit's writes are gone"
    );
    let mut next = claim(store, &projection).await;
    let (unit, position) = begin(store, &mut next).await;
    assert_eq!(position, 7, "the next runner resumes from the last commit");
    drop(unit);
}

async fn claim_status<C: CheckpointStore>(store: &C, projection: &str) -> ClaimStatus {
    must_read(store.claim_status(projection).await, "claim status", projection)
}

/// `claim_status` tells a held claim from a free one: free before the first claim, held while
/// a claim lives, free again (within 10 s) once it is dropped.
pub async fn claim_status_tells_held_from_free<C: CheckpointStore, R: ReadModelProbe<C>>(store: &C, _: &R) {
    let projection = fresh_projection();
    assert_eq!(
        claim_status(store, &projection).await,
        ClaimStatus::Free,
        "never claimed"
    );
    let held = claim(store, &projection).await;
    assert_eq!(claim_status(store, &projection).await, ClaimStatus::Held, "claimed");
    assert_eq!(
        claim_status(store, &fresh_projection()).await,
        ClaimStatus::Free,
        "another one"
    );
    drop(held);
    // A backend may release the claim in the background (a connection closing).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while claim_status(store, &projection).await == ClaimStatus::Held {
        assert!(
            std::time::Instant::now() < deadline,
            "a dropped claim still shows as held after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn parked_event(projection: &str, position: u64, error: &str, attempts: u32) -> ParkedEvent {
    ParkedEvent {
        projection: projection.to_owned(),
        position,
        event_id: Uuid::now_v7(),
        stream: StreamId::new("conformance", Uuid::now_v7().to_string()),
        version: 3,
        event_name: "Numbered".to_owned(),
        error: error.to_owned(),
        attempts,
        // Whole microseconds: what every backend's timestamps keep.
        parked_at: DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap_or_default(),
        retry_requested: false,
    }
}

async fn parked<C: CheckpointStore>(store: &C, projection: &str) -> Vec<ParkedEvent> {
    must_read(store.parked(projection).await, "parked events", projection)
}

/// Parked events commit or vanish with their unit, like the checkpoint. Parking the same event
/// again keeps when it was first parked and replaces its error and attempts; retry requests
/// and drops work outside units; unparking commits with the unit; projections are apart.
pub async fn parked_events_commit_with_the_unit<C: CheckpointStore, R: ReadModelProbe<C>>(store: &C, _: &R) {
    let (projection, other) = (fresh_projection(), fresh_projection());
    let mut claim = claim(store, &projection).await;
    let first = parked_event(&projection, 40, "boom", 3);
    let (mut unit, _) = begin(store, &mut claim).await;
    must(store.park(&mut unit, &first).await, "parking an event");
    must(store.rollback(unit).await, "rolling back");
    assert!(
        parked(store, &projection).await.is_empty(),
        "a rolled-back park leaves nothing"
    );

    let (mut unit, _) = begin(store, &mut claim).await;
    must(store.park(&mut unit, &first).await, "parking an event");
    let second = parked_event(&projection, 20, "bang", 1);
    must(store.park(&mut unit, &second).await, "parking a second event");
    must(store.commit(unit, 41).await, "committing parked events");
    assert_eq!(
        parked(store, &projection).await,
        [second.clone(), first.clone()],
        "parked events are kept whole, in position order"
    );
    assert!(parked(store, &other).await.is_empty(), "another projection has none");

    assert!(must(store.request_retry(&projection, 40).await, "requesting a retry"));
    assert!(!must(
        store.request_retry(&projection, 41).await,
        "requesting a retry of nothing"
    ));
    assert!(!must(
        store.request_retry(&other, 40).await,
        "requesting another projection's retry"
    ));
    let listed = parked(store, &projection).await;
    assert_eq!(
        listed.iter().map(|p| p.retry_requested).collect::<Vec<_>>(),
        [false, true]
    );

    let again = ParkedEvent {
        error: "boom again".to_owned(),
        attempts: 4,
        parked_at: first.parked_at + chrono::Duration::seconds(5),
        ..first.clone()
    };
    let (mut unit, _) = begin(store, &mut claim).await;
    must(store.unpark(&mut unit, &projection, 20).await, "unparking an event");
    must(store.rollback(unit).await, "rolling back");
    assert_eq!(
        parked(store, &projection).await.len(),
        2,
        "a rolled-back unpark leaves it parked"
    );
    let (mut unit, _) = begin(store, &mut claim).await;
    must(store.park(&mut unit, &again).await, "parking an event again");
    must(store.unpark(&mut unit, &projection, 20).await, "unparking an event");
    must(store.commit(unit, 41).await, "committing");
    assert_eq!(
        parked(store, &projection).await,
        [ParkedEvent {
            parked_at: first.parked_at,
            ..again
        }],
        "parked again: first parked time kept, error and attempts replaced, retry request cleared; unparked: gone"
    );
    assert!(!must(
        store.drop_parked(&other, 40).await,
        "dropping another projection's"
    ));
    assert!(must(
        store.drop_parked(&projection, 40).await,
        "dropping a parked event"
    ));
    assert!(!must(store.drop_parked(&projection, 40).await, "dropping it twice"));
    assert!(parked(store, &projection).await.is_empty());
    assert_eq!(checkpoint(store, &projection).await, 41);
}
