//! Wake-ups: appends of this process wake runners at once, whichever store on the file made
//! them; a runner with a long poll interval is woken by them.

use std::time::Duration;

use es_core::{CheckpointStore, EventStore, ExpectedVersion, ProjectionRunner, RunnerOptions, WakeUp};
use es_sqlite::SqliteStore;

use crate::projection::{create_tables, wait_caught_up, write_cases, Tally};
use crate::support::{fresh, numbered};

async fn woken(wake_up: &mut es_sqlite::SqliteWakeUp) -> bool {
    tokio::time::timeout(Duration::from_secs(10), wake_up.wait())
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_of_any_store_on_the_file_wake_listeners() {
    let db = fresh().await;
    let other = SqliteStore::open(db.path()).await.expect("a second store on the file");
    let mut wake_up = db.store.wake_up();
    let stream = db.stream_with("wake", 1).await;
    assert!(
        woken(&mut wake_up).await,
        "an append through the store wakes its listener"
    );
    other
        .append(&stream, ExpectedVersion::Exact(1), numbered(1))
        .await
        .expect("append through the other store");
    assert!(
        woken(&mut wake_up).await,
        "an append through another store on the file wakes it too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_with_a_long_poll_interval_is_woken_by_appends() {
    let db = fresh().await;
    create_tables(&db.store).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let store = db.store.clone();
        tokio::spawn(async move {
            let options = RunnerOptions {
                poll_interval: Duration::from_secs(3600),
                ..RunnerOptions::default()
            };
            ProjectionRunner::new(Tally::new("woken"), store.clone(), store.checkpoints())
                .with_options(options)
                .run(store.wake_up(), async move {
                    let _ = stopped.await;
                })
                .await
        })
    };
    // The runner may claim and go idle before or after these appends: either way it must
    // handle them without waiting an hour.
    write_cases(&db.store, 20).await;
    wait_caught_up(&db.store).await;
    write_cases(&db.store, 20).await;
    wait_caught_up(&db.store).await;
    stop.send(()).expect("stop");
    running.await.expect("runner task").expect("run returns Ok on shutdown");
    assert!(db.store.checkpoints().checkpoint("tally").await.expect("checkpoint") > 0);
}
