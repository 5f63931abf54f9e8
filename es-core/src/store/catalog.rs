//! What tools need to see of a store: which streams exist, and every snapshot.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Snapshot, StoreResult, StreamId};

/// Which streams [`StreamCatalog::list_streams`] returns: a page of them in (aggregate type,
/// aggregate id) order, optionally of one aggregate type and with ids that start with a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamQuery {
    /// Only streams of this aggregate type.
    pub aggregate_type: Option<String>,
    /// Only streams whose aggregate id starts with this.
    pub id_prefix: Option<String>,
    /// Only streams after this one (the last of the previous page).
    pub after: Option<StreamId>,
    /// At most this many streams.
    pub limit: usize,
}

impl Default for StreamQuery {
    fn default() -> Self {
        Self {
            aggregate_type: None,
            id_prefix: None,
            after: None,
            limit: 100,
        }
    }
}

impl StreamQuery {
    /// Whether `stream` passes the query's filters (not its page bounds).
    pub fn matches(&self, stream: &StreamId) -> bool {
        self.aggregate_type
            .as_ref()
            .is_none_or(|kind| *kind == stream.aggregate_type)
            && self
                .id_prefix
                .as_ref()
                .is_none_or(|prefix| stream.aggregate_id.starts_with(prefix.as_str()))
            && self.after.as_ref().is_none_or(|after| stream > after)
    }
}

/// One stream as [`StreamCatalog::list_streams`] describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    /// The stream.
    pub stream: StreamId,
    /// Its version: the number of events in it.
    pub version: u64,
    /// When its last event was recorded.
    pub last_recorded_at: DateTime<Utc>,
}

/// What is stored, for the tools that look at it (the `es-cli` command line and event browser):
/// which streams exist, and every snapshot. Applications do not need it.
///
/// The contract, checked by the conformance suite: streams come in (aggregate type, aggregate
/// id) order, filtered and paged as the [`StreamQuery`] says, each with its version and the
/// time of its last event; backends answer a page without reading every event (an index walk,
/// not a scan), so that listing stays fast on a large store.
#[async_trait]
pub trait StreamCatalog: Send + Sync {
    /// A page of the streams that have events, as `query` selects them.
    async fn list_streams(&self, query: &StreamQuery) -> StoreResult<Vec<StreamSummary>>;

    /// Up to `limit` stored snapshots of the streams after `after` (from the first when
    /// `None`), in stream order.
    async fn list_snapshots(&self, after: Option<&StreamId>, limit: usize) -> StoreResult<Vec<Snapshot>>;
}
