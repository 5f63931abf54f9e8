//! The servers a test binary shares, and fresh stores on them.

use es_nats::{NatsOptions, NatsStore};
use tokio::sync::OnceCell;
use uuid::Uuid;

use es_test_support::nats::NatsCluster;

static SINGLE: OnceCell<NatsCluster> = OnceCell::const_new();
static TRIO: OnceCell<NatsCluster> = OnceCell::const_new();

/// The single node this test binary shares, started by the first test that asks.
pub async fn single() -> &'static NatsCluster {
    SINGLE.get_or_init(|| NatsCluster::start(1)).await
}

/// The three-node cluster this test binary shares, started by the first test that asks.
pub async fn trio() -> &'static NatsCluster {
    TRIO.get_or_init(|| NatsCluster::start(3)).await
}

/// A prefix no other store uses.
pub fn unique_prefix() -> String {
    let id = Uuid::new_v4().simple().to_string();
    format!("t{}", &id[..20])
}

/// A fresh, empty store with `partitions` partitions on `cluster`, each stream with as many
/// replicas as the cluster has nodes.
pub async fn fresh_store(cluster: &NatsCluster, partitions: u32) -> NatsStore {
    let options = NatsOptions::new()
        .prefix(unique_prefix())
        .partitions(partitions)
        .replicas(cluster.size());
    match NatsStore::connect(&cluster.url(), options).await {
        Ok(store) => store,
        Err(error) => panic!("a fresh store on {}: {error}", cluster.url()),
    }
}

/// A fresh single-partition store on the shared single node.
pub async fn on_single() -> NatsStore {
    fresh_store(single().await, 1).await
}

/// A fresh single-partition store on the shared three-node cluster, replicated three times.
pub async fn on_trio() -> NatsStore {
    fresh_store(trio().await, 1).await
}
