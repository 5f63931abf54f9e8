//! Stream lifecycle and tenants through a [`PiiStore`]: changes go to the inner store, archived
//! events are opened as stream reads are, and each tenant's store seals with the tenant's own
//! keys.

use async_trait::async_trait;

use super::keys::KeyStore;
use super::store::PiiStore;
use crate::lifecycle::{ClosedQuery, StreamChange, StreamClosed, StreamLifecycle, StreamStatus};
use crate::store::{EventStream, StoreResult, StreamId, StreamSlice};
use crate::tenancy::{TenantId, TenantStores};

#[async_trait]
impl<S: StreamLifecycle, K: KeyStore> StreamLifecycle for PiiStore<S, K> {
    async fn close(&self, stream: &StreamId, status: StreamStatus, change: StreamChange) -> StoreResult<StreamClosed> {
        self.inner().close(stream, status, change).await
    }

    fn read_archived<'a>(&'a self, stream: &'a StreamId, slice: StreamSlice) -> EventStream<'a> {
        self.opened(self.inner().read_archived(stream, slice))
    }

    async fn closed_streams(&self, query: &ClosedQuery) -> StoreResult<Vec<StreamClosed>> {
        self.inner().closed_streams(query).await
    }
}

/// Tenants of a store that keeps its own keys (as the PostgreSQL and SQLite stores do): each
/// tenant's store seals with the keys kept in the tenant's own schema or file, so forgetting a
/// subject in one tenant leaves a subject of the same name in another untouched.
#[async_trait]
impl<S> TenantStores for PiiStore<S, S>
where
    S: TenantStores + KeyStore,
    S::Store: KeyStore,
{
    type Store = PiiStore<S::Store, S::Store>;

    async fn tenant(&self, tenant: &TenantId) -> StoreResult<Self::Store> {
        let store = self.inner().tenant(tenant).await?;
        Ok(self.sealing(store.clone(), store))
    }

    async fn tenants(&self) -> StoreResult<Vec<TenantId>> {
        self.inner().tenants().await
    }
}
