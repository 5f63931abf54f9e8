//! The load while the server is stopped as a crash would (`pg_ctl -m immediate`) and started
//! again, on a server of the test's own.

use std::sync::Arc;
use std::time::Duration;

use es_postgres::PostgresStore;
use es_test_support::{bounded_by, TestServer};

use super::{bound, create_tables, knob, load_time, store_on, Load};

/// How long the server stays down each time.
const DOWN: Duration = Duration::from_secs(2);

/// 8 writers and 2 projections while the server crashes `ES_RELIABILITY_RESTARTS` times (1),
/// down for 2 s each time, within `ES_RELIABILITY_SECONDS` (4) of load after each restart.
/// Writers get typed errors (`StoreError::Unavailable`, nothing else) and write again once the
/// server is back; each projection's one run resumes by itself; nothing lost or duplicated;
/// the read models equal a rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reliability_across_server_crashes_loses_and_duplicates_nothing() {
    let (load, restarts) = (load_time(), knob("ES_RELIABILITY_RESTARTS", 1).max(1));
    let total = (load + DOWN) * u32::try_from(restarts).unwrap_or(u32::MAX);
    bounded_by(bound(total), crashes(load, restarts)).await;
}

async fn crashes(load: Duration, restarts: u64) {
    let server = Arc::new(
        tokio::task::spawn_blocking(TestServer::start)
            .await
            .expect("start task")
            .unwrap_or_else(|error| panic!("{error}")),
    );
    let schema = server.schema().await.expect("a schema");
    let direct = schema.store().clone();
    create_tables(&direct).await;
    // A pool that gives up on a connection soon, so that writers hear of the outage.
    let options = server.url().parse().expect("the server's URL");
    let store = store_on(options, &direct, Duration::from_secs(1)).await;

    let mut running = Load::start(&store, &direct, 0xc7a5);
    let mut at_restart = 0;
    for _ in 0..restarts {
        tokio::time::sleep(load / 2).await;
        let crashing = Arc::clone(&server);
        tokio::task::spawn_blocking(move || {
            crashing.stop()?;
            std::thread::sleep(DOWN);
            crashing.restart()
        })
        .await
        .expect("restart task")
        .unwrap_or_else(|error| panic!("{error}"));
        at_restart = schema_events(&direct).await;
        tokio::time::sleep(load / 2).await;
    }
    let after = schema_events(&direct).await;
    let tally = running.stop_writers().await;
    let rebuild_into = server.schema().await.expect("a schema for the rebuild");
    let figures = running.finish(&direct, rebuild_into.store()).await;
    eprintln!(
        "reliability (server crashes: {restarts} x {} s down, {} s of load around each): \n  {figures}",
        DOWN.as_secs(),
        load.as_secs()
    );
    figures.report.assert_clean();
    assert!(tally.unavailable > 0, "the writers never heard of the outage: {tally}");
    assert_eq!(
        tally.other_errors, 0,
        "an outage is StoreError::Unavailable, nothing else: {tally}"
    );
    assert!(after > at_restart, "nothing was written after the last restart");
}

/// Events stored in the schema, counted directly.
async fn schema_events(direct: &PostgresStore) -> i64 {
    loop {
        let counted = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{}\".events", direct.schema()))
            .fetch_one(direct.pool())
            .await;
        match counted {
            Ok(count) => return count,
            // The direct pool reconnects after the crash too.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
