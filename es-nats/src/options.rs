//! How a NATS store is laid out: the name prefix, the partitions, the replicas, the limits.

use std::time::Duration;

use es_core::Limits;

use crate::error::NatsError;

/// The options of a [`NatsStore`](crate::NatsStore). The defaults: prefix `es`, one partition,
/// one replica, a two-minute deduplication window, [`Limits::DEFAULT`] (capped by what the
/// server's `max_payload` can carry, see [`NatsStore::limits`](es_core::EventStore::limits)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    pub(crate) prefix: String,
    pub(crate) partitions: u32,
    pub(crate) replicas: usize,
    pub(crate) duplicate_window: Duration,
    pub(crate) limits: Limits,
    pub(crate) request_timeout: Duration,
    pub(crate) ping_interval: Duration,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            prefix: "es".to_owned(),
            partitions: 1,
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            limits: Limits::DEFAULT,
            request_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(2),
        }
    }
}

impl NatsOptions {
    /// The default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// The prefix of every JetStream stream name and subject of the store: letters, digits,
    /// `-` and `_`, at most 32 characters. Stores with different prefixes share a server
    /// without seeing each other. Default `es`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How many partitions (JetStream streams) the event streams are spread over, by a stable
    /// hash of the aggregate id. Each partition has its own global log. Never change it for
    /// an existing store: a stream's partition is where its events are. Default 1.
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions;
        self
    }

    /// How many servers keep a copy of each JetStream stream: 1, or 3 (or 5) on a cluster.
    /// Default 1.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// How long JetStream remembers a batch's message id, so that a retried append is
    /// recognised by the server itself (the store also recognises it later through its
    /// event-id index). Default two minutes.
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// The limits the store enforces; capped by what one message can carry.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How long one JetStream request (a publish's acknowledgement, a read) may take before it
    /// fails as [`StoreError::Unavailable`](es_core::StoreError::Unavailable). Default 5 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The prefix of the store's JetStream stream names and subjects.
    pub fn prefix_name(&self) -> &str {
        &self.prefix
    }

    /// The number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.partitions
    }

    /// The number of replicas of each JetStream stream.
    pub fn replica_count(&self) -> usize {
        self.replicas
    }

    /// How often [`NatsStore::connect`](crate::NatsStore::connect) pings its server: a server
    /// that misses three pings in a row (frozen, or cut off without the connection closing)
    /// is left for another node of the cluster. Default 2 s (the client's own default is a
    /// minute, too long for a paused node). Ignored by [`NatsStore::new`](crate::NatsStore::new),
    /// which takes a connection as it is.
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Checks the options.
    pub(crate) fn validate(&self) -> Result<(), NatsError> {
        let prefix_ok = !self.prefix.is_empty()
            && self.prefix.len() <= 32
            && self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !prefix_ok {
            return Err(NatsError::InvalidOption(format!(
                "the prefix {:?} must be 1 to 32 letters, digits, `-` or `_`",
                self.prefix
            )));
        }
        if self.partitions == 0 || self.partitions > 1024 {
            return Err(NatsError::InvalidOption(format!(
                "{} partitions: there must be 1 to 1024",
                self.partitions
            )));
        }
        if self.replicas == 0 || self.replicas > 5 {
            return Err(NatsError::InvalidOption(format!(
                "{} replicas: JetStream keeps 1 to 5",
                self.replicas
            )));
        }
        Ok(())
    }
}
