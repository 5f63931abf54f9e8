//! `claim_status` sees claims of other processes: another pool's runner holds a projection,
//! and the claim shows as free once that runner's connection is gone.

use std::time::{Duration, Instant};

use es_core::{CheckpointStore, ClaimStatus};
use es_postgres::PostgresCheckpoints;
use sqlx::postgres::PgPoolOptions;

use crate::support::{connect_options, schema, store_on_pool};

async fn status(checkpoints: &PostgresCheckpoints, projection: &str) -> ClaimStatus {
    checkpoints.claim_status(projection).await.expect("claim status")
}

/// Waits up to 10 s for `projection` to show as `expected`.
async fn until(checkpoints: &PostgresCheckpoints, projection: &str, expected: ClaimStatus) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(checkpoints, projection).await != expected {
        assert!(Instant::now() < deadline, "{projection} is not {expected:?} after 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_claim_held_by_another_process_shows_as_held_until_its_connection_ends() {
    let schema = schema().await;
    let here = schema.checkpoints();
    // Another process: its own pool and store over the same schema, sharing nothing with `here`.
    let pool = PgPoolOptions::new().max_connections(2);
    let elsewhere = store_on_pool(pool, connect_options(), schema.schema())
        .await
        .checkpoints();
    let projection = "ticket-board";
    assert_eq!(status(&here, projection).await, ClaimStatus::Free, "never claimed");

    let claim = elsewhere.claim(projection).await.expect("claim elsewhere");
    assert_eq!(status(&here, projection).await, ClaimStatus::Held);
    assert_eq!(status(&elsewhere, projection).await, ClaimStatus::Held);
    assert_eq!(
        status(&here, "another-board").await,
        ClaimStatus::Free,
        "another projection"
    );
    // The same projection name in another schema is another projection.
    let other_schema = crate::support::schema().await;
    assert_eq!(
        status(&other_schema.checkpoints(), projection).await,
        ClaimStatus::Free,
        "another schema"
    );

    // The runner's process dies: the server ends its session, and with it the claim.
    let application = format!("es claim {}.{projection}", schema.schema());
    let ended: Vec<bool> =
        sqlx::query_scalar("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1")
            .bind(&application)
            .fetch_all(schema.pool())
            .await
            .expect("terminating the claim's connection");
    assert_eq!(ended, [true], "one claim connection, named {application}");
    until(&here, projection, ClaimStatus::Free).await;
    drop(claim);

    // Claimed again, here this time: held, and free once the claim is dropped.
    let claim = here.claim(projection).await.expect("claim here");
    assert_eq!(status(&elsewhere, projection).await, ClaimStatus::Held);
    drop(claim);
    until(&elsewhere, projection, ClaimStatus::Free).await;
}
