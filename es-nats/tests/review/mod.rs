//! What the two outside reviews (`nats_review.rs`, `nats_second_review.rs`) share: bounded
//! waits, unique prefixes, stores that connect while their servers start, snapshots.

use std::time::{Duration, Instant};

use es_core::{AppendOutcome, EventStore, ExpectedVersion, NewEvent, Snapshot, StoreError, StreamId};
use es_nats::{NatsOptions, NatsStore};
use es_test_support::nats::NatsCluster;
use uuid::Uuid;

/// The bound on any single wait: a hang fails the test instead of blocking the suite.
pub const BOUND: Duration = Duration::from_secs(90);

/// The output of `future`, which must finish within [`BOUND`]; `what` names it if it does not.
pub async fn bounded<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(BOUND, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {BOUND:?}"),
    }
}

/// A store prefix no other store uses.
pub fn prefix() -> String {
    format!("r{}", &Uuid::new_v4().simple().to_string()[..16])
}

/// A store on `url` (one node, or every node comma-separated), connecting again while the
/// servers start (bounded).
pub async fn store_on(url: &str, options: NatsOptions) -> NatsStore {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout(Duration::from_secs(30), NatsStore::connect(url, options.clone())).await {
            Ok(Ok(store)) => return store,
            Ok(Err(error)) if Instant::now() < deadline => {
                eprintln!("connecting to {url}: {error}; again");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok(Err(error)) => panic!("a store on {url}: {error}"),
            Err(_) => panic!("connecting to {url} took more than 30 s"),
        }
    }
}

/// A node of the test's own, and a store on it with the default options (but a fresh prefix).
/// The node stops when the cluster value is dropped.
pub async fn store_on_a_node() -> (NatsCluster, NatsStore) {
    let cluster = NatsCluster::start(1).await;
    let store = store_on(&cluster.url(), NatsOptions::new().prefix(prefix())).await;
    (cluster, store)
}

/// Appends `batch` to `stream` at `expected` once the servers answer again: tried again while
/// the store is `Unavailable` (bounded; `what` names the wait), any other error fails the test.
pub async fn append_once_back(
    what: &str,
    store: &NatsStore,
    stream: &StreamId,
    expected: ExpectedVersion,
    batch: &[NewEvent],
) -> AppendOutcome {
    bounded(what, async {
        loop {
            match store.append(stream, expected, batch.to_vec()).await {
                Ok(outcome) => return outcome,
                Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(other) => panic!("{what}: {other:?}"),
            }
        }
    })
    .await
}

/// A snapshot of `stream` at `version` holding `state`, taken now.
pub fn snapshot(stream: &StreamId, version: u64, state: &[u8]) -> Snapshot {
    Snapshot {
        stream: stream.clone(),
        version,
        revision: 1,
        schema_version: 1,
        state: state.to_vec(),
        taken_at: chrono::Utc::now(),
    }
}
