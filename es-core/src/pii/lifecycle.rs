//! Stream lifecycle through a [`PiiStore`]: changes go to the inner store, archived events are
//! opened as stream reads are.

use async_trait::async_trait;
use futures_util::stream::BoxStream;

use super::keys::KeyStore;
use super::store::PiiStore;
use crate::lifecycle::{ClosedQuery, StreamChange, StreamClosed, StreamLifecycle, StreamStatus};
use crate::store::{RecordedEvent, StoreResult, StreamId, StreamSlice};

#[async_trait]
impl<S: StreamLifecycle, K: KeyStore> StreamLifecycle for PiiStore<S, K> {
    async fn close(&self, stream: &StreamId, status: StreamStatus, change: StreamChange) -> StoreResult<StreamClosed> {
        self.inner().close(stream, status, change).await
    }

    fn read_archived<'a>(
        &'a self,
        stream: &'a StreamId,
        slice: StreamSlice,
    ) -> BoxStream<'a, StoreResult<RecordedEvent>> {
        self.opened(self.inner().read_archived(stream, slice))
    }

    async fn closed_streams(&self, query: &ClosedQuery) -> StoreResult<Vec<StreamClosed>> {
        self.inner().closed_streams(query).await
    }
}
