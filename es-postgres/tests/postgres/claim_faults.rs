//! A runner whose claim's connection was cut claims again on a new connection. When the answer
//! of that re-claim is lost after the server committed it, the runner has raised the claim epoch
//! itself: it must still hold the projection, not stop with `ClaimLost` (found by the chaos
//! proxy scenario of issue 13).

use std::time::{Duration, Instant};

use es_core::{CheckpointError, CheckpointStore};
use es_test_support::{bounded, CuttingProxy};
use sqlx::postgres::PgPoolOptions;

use crate::support::{database, schema, store_on_pool};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_while_claiming_again_is_not_a_lost_claim() {
    bounded(lost_reclaim_answer()).await;
}

async fn lost_reclaim_answer() {
    let schema = schema().await;
    let proxy = CuttingProxy::in_front_of(database().url())
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let pool = PgPoolOptions::new().max_connections(2);
    let store = store_on_pool(pool, proxy.connect_options(), schema.schema()).await;
    let checkpoints = store.checkpoints();
    let projection = "reclaimed";
    let mut claim = checkpoints.claim(projection).await.expect("claim");
    let (unit, _) = checkpoints.begin(&mut claim).await.expect("begin");
    checkpoints.commit(unit, 5).await.expect("commit");

    // Cut the claim's connection on the server's side.
    let cut: i64 =
        sqlx::query_scalar("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1")
            .bind(format!("es claim {}.{projection}", schema.schema()))
            .fetch_one(schema.pool())
            .await
            .expect("terminate the claim's connection");
    assert_eq!(cut, 1);

    // The statement that claims again binds the projection's name alone as its first parameter
    // (a length, then the bytes); no statement before it on the new connection does.
    let mut marker = i32::try_from(projection.len())
        .expect("a short name")
        .to_be_bytes()
        .to_vec();
    marker.extend_from_slice(projection.as_bytes());
    proxy.arm(marker);
    let lost = checkpoints.begin(&mut claim).await;
    assert!(
        matches!(&lost, Err(CheckpointError::Unavailable(_))),
        "the re-claim's answer was lost: an outage, got {lost:?}"
    );
    assert_eq!(proxy.cuts(), 1, "the proxy cut the re-claim's answer");

    // The server may still hold the lock of the connection just cut for a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (unit, position) = loop {
        match checkpoints.begin(&mut claim).await {
            Ok(begun) => break begun,
            Err(CheckpointError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("the runner still holds its claim, got {other:?}"),
        }
    };
    assert_eq!(position, 5, "from its last commit");
    checkpoints.commit(unit, 6).await.expect("and commits under it");
    assert_eq!(checkpoints.checkpoint(projection).await.expect("checkpoint"), 6);
}
