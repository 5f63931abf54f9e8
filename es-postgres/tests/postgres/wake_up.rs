//! LISTEN/NOTIFY wake-ups: a committed append wakes listeners of its schema (sent after the
//! commit, outside the append), and nothing else does.

use std::time::Duration;

use es_core::{EventStore, ExpectedVersion, WakeUp};

use crate::support::{fresh_stream, numbered, schema, stream_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_append_wakes_listeners() {
    let schema = schema().await;
    let mut wake_up = schema.store().wake_up().await.expect("listen");
    let quiet = tokio::time::timeout(Duration::from_millis(300), wake_up.wait()).await;
    assert!(quiet.is_err(), "no append, no wake-up");

    let stream = stream_with(&schema, "wake", 2).await;
    let woken = tokio::time::timeout(Duration::from_secs(5), wake_up.wait()).await;
    assert!(woken.is_ok(), "the append woke the listener");

    let refused = schema.append(&stream, ExpectedVersion::NoStream, numbered(1)).await;
    assert!(refused.is_err());
    let quiet = tokio::time::timeout(Duration::from_millis(300), wake_up.wait()).await;
    assert!(quiet.is_err(), "a refused append wakes nobody");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_of_another_schema_are_not_woken() {
    let (ours, theirs) = (schema().await, schema().await);
    let mut wake_up = theirs.store().wake_up().await.expect("listen");
    ours.append(&fresh_stream("wake"), ExpectedVersion::NoStream, numbered(1))
        .await
        .expect("append");
    let quiet = tokio::time::timeout(Duration::from_millis(500), wake_up.wait()).await;
    assert!(quiet.is_err(), "another schema's append is not ours");
}

/// An append in the caller's transaction wakes nobody by itself (nothing is committed when it
/// returns); `notify_listeners` after the commit does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_in_a_caller_transaction_wake_listeners_when_told() {
    let schema = schema().await;
    let mut wake_up = schema.store().wake_up().await.expect("listen");
    let mut tx = schema.pool().begin().await.expect("begin");
    schema
        .append_in_transaction(&mut tx, &fresh_stream("wake"), ExpectedVersion::NoStream, numbered(1))
        .await
        .expect("append");
    tx.commit().await.expect("commit");
    let quiet = tokio::time::timeout(Duration::from_millis(300), wake_up.wait()).await;
    assert!(quiet.is_err(), "not notified by the append itself");

    schema.notify_listeners();
    let woken = tokio::time::timeout(Duration::from_secs(5), wake_up.wait()).await;
    assert!(woken.is_ok(), "notify_listeners woke the listener");
}

/// A burst of appends sends one notification per interval, not one per append, and its last
/// commit is still followed by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_appends_is_one_notification_per_interval() {
    let schema = schema().await;
    let interval = Duration::from_millis(300);
    let store = schema.store().clone().with_notify_interval(interval);
    let mut wake_up = store.wake_up().await.expect("listen");
    let started = std::time::Instant::now();
    for _ in 0..30 {
        store
            .append(&fresh_stream("burst"), ExpectedVersion::NoStream, numbered(1))
            .await
            .expect("append");
    }
    let elapsed = started.elapsed();
    let mut woken = 0_u128;
    while tokio::time::timeout(Duration::from_millis(800), wake_up.wait())
        .await
        .is_ok()
    {
        woken += 1;
    }
    assert!(woken >= 1, "the burst's last commit is followed by a notification");
    let most = elapsed.as_millis() / interval.as_millis() + 2;
    assert!(
        woken <= most,
        "{woken} notifications for 30 appends in {elapsed:?}: at most {most} with a {interval:?} interval"
    );
}
