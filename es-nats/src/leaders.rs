//! Spreading the partitions' leaders over the nodes of a cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::NatsError;
use crate::NatsStore;

/// How many leader changes [`NatsStore::spread_leaders`] asks for at most.
const MAX_STEPDOWNS: usize = 24;

impl NatsStore {
    /// The server leading each partition now, by partition number (`None` while a partition
    /// has no leader, e.g. during an election).
    pub async fn partition_leaders(&self) -> Result<Vec<Option<String>>, NatsError> {
        let mut leaders = Vec::with_capacity(self.inner.partitions.len());
        for stream in &self.inner.partitions {
            let info = stream
                .get_info()
                .await
                .map_err(|error| NatsError::request("read a partition's leader", error, true))?;
            leaders.push(info.cluster.and_then(|cluster| cluster.leader));
        }
        Ok(leaders)
    }

    /// Spreads the partitions' leaders over the servers that hold their replicas, so that no
    /// server leads more than its share (partitions ÷ servers, rounded up): each write of a
    /// partition goes through its leader, so leaders piled on one server make it the
    /// bottleneck. JetStream elects leaders without regard to the others, so the store asks
    /// a leader with more than its share to step down for one of its partitions (a new
    /// election among the other replicas), until the leaders are spread or after a bounded
    /// number of tries. Returns the leaders as they end up. Appends to a partition whose
    /// leader steps down fail as unavailable for a moment (about a second): run it when the
    /// store is set up, or when a node came back after an outage.
    pub async fn spread_leaders(&self) -> Result<Vec<Option<String>>, NatsError> {
        let servers = self.inner.options.replicas.max(1);
        let share = self.inner.partitions.len().div_ceil(servers);
        for _ in 0..MAX_STEPDOWNS {
            let leaders = self.settled_leaders().await?;
            let mut led: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
            for (partition, leader) in leaders.iter().enumerate() {
                if let Some(leader) = leader {
                    led.entry(leader.as_str()).or_default().push(partition);
                }
            }
            let Some(partition) = led
                .values()
                .find(|partitions| partitions.len() > share)
                .and_then(|p| p.last())
            else {
                return Ok(leaders);
            };
            let Some(stream) = self.inner.partitions.get(*partition) else {
                return Ok(leaders);
            };
            let subject = format!("STREAM.LEADER.STEPDOWN.{}", stream.cached_info().config.name);
            self.inner
                .context
                .request::<_, _, serde_json::Value>(subject, &serde_json::json!({}))
                .await
                .map_err(|error| NatsError::request("ask a partition's leader to step down", error, true))?;
        }
        self.settled_leaders().await
    }

    /// The leaders, once every partition has one (waiting up to ten seconds).
    async fn settled_leaders(&self) -> Result<Vec<Option<String>>, NatsError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let leaders = self.partition_leaders().await?;
            if leaders.iter().all(Option::is_some) || tokio::time::Instant::now() >= deadline {
                return Ok(leaders);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
