//! Tenants: one store per tenant, so that a tenant can never read or write another's streams.
//!
//! A backend that serves tenants implements [`TenantStores`]: [`TenantStores::tenant`] gives
//! the tenant's own store, created on first use. PostgreSQL keeps each tenant in a schema of its
//! own (`<schema>__<tenant>`, in the same database and pool), SQLite in a file of its own beside
//! the main file, memory in a store of its own. Why a store per tenant rather than a tenant
//! column: isolation is the database's (no query can forget a `WHERE tenant = ?`, and the
//! conformance suite checks every read), a tenant is dropped, backed up or moved whole, and each
//! tenant's indexes stay as small as its data; the price is one set of tables per tenant, which
//! suits hundreds or thousands of tenants, not millions.
//!
//! **Personal data per tenant**: a [`PiiStore`](crate::pii::PiiStore) over a store that keeps
//! its own keys (`PiiStore<S, S>`, as the PostgreSQL and SQLite stores do) serves tenants too,
//! each sealing with the keys in its own schema or file: forgetting a subject in one tenant
//! leaves another tenant's subject of the same name untouched.
//!
//! **Projections per tenant** run on the tenant's store, with checkpoints in the same place as
//! its events: `ProjectionRunner::new(projection, tenant.clone(), tenant.checkpoints())`.
//! **Projections across tenants** run one runner per tenant (each tenant's checkpoint stays in
//! its own place) writing into one shared read model, the projection value carrying its tenant:
//! on PostgreSQL the tenants share a database, so each batch still commits its read-model
//! writes together with the tenant's checkpoint. Each tenant's log is in order; there is no
//! order between tenants.
//!
//! **Time is shared on PostgreSQL**: a tenant's global log shows an event once every write
//! transaction older than it has ended, in any schema of the cluster (what keeps it gap-free),
//! so one tenant's long write delays every tenant's projections until it ends. A tenant that
//! must not wait on others gets a database of its own.
//!
//! ```
//! use es_core::tenancy::{InMemoryTenants, TenantId, TenantStores};
//! use es_core::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamId};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tenants = InMemoryTenants::new();
//! let (acme, globex) = (TenantId::new("acme")?, TenantId::new("globex")?);
//! let ticket = StreamId::new("ticket", "T-1");
//! let opened = NewEvent {
//!     event_id: uuid::Uuid::now_v7(),
//!     event_name: "TicketOpened".into(),
//!     schema_version: 1,
//!     payload: br#"{"title":"Printer on fire"}"#.to_vec(),
//!     metadata: Metadata::new(),
//! };
//! tenants.tenant(&acme).await?.append(&ticket, ExpectedVersion::NoStream, vec![opened]).await?;
//! assert_eq!(tenants.tenant(&acme).await?.stream_version(&ticket).await?, 1);
//! assert_eq!(tenants.tenant(&globex).await?.stream_version(&ticket).await?, 0);
//! assert_eq!(tenants.tenants().await?, vec![acme, globex]);
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use crate::lifecycle::StreamLifecycle;
use crate::memory::InMemoryStore;
use crate::store::{GlobalLog, SnapshotStore, StoreResult, StreamCatalog};

/// The longest tenant id: short enough for a PostgreSQL schema name, `<main>__<tenant>`, beside a
/// main schema of up to 31 bytes.
pub const MAX_TENANT_ID_BYTES: usize = 30;

/// A tenant's id: 1 to [`MAX_TENANT_ID_BYTES`] of lowercase ASCII letters, digits and single
/// underscores between them, starting with a letter and not ending with an underscore (`acme_eu`,
/// not `acme__eu` or `acme_`): a name every backend can use in a schema or file name as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

/// A tenant id that is not one ([`TenantId::new`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{id:?} is not a tenant id: use 1 to {MAX_TENANT_ID_BYTES} lowercase ASCII letters, digits and single \
     underscores between them, starting with a letter and not ending with an underscore (e.g. \"acme_eu\")"
)]
pub struct InvalidTenantId {
    /// The refused id.
    pub id: String,
}

impl TenantId {
    /// The tenant `id`, if it is a valid one.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidTenantId> {
        let id = id.into();
        let valid = (1..=MAX_TENANT_ID_BYTES).contains(&id.len())
            && id.starts_with(|c: char| c.is_ascii_lowercase())
            && id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !id.contains("__")
            && !id.ends_with('_');
        match valid {
            true => Ok(Self(id)),
            false => Err(InvalidTenantId { id }),
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A backend's tenants: a store per tenant. Checked by the conformance suite
/// (`tenant_conformance_tests!`, feature `conformance`).
#[async_trait]
pub trait TenantStores: Send + Sync {
    /// What a tenant's store is: everything a store of the backend is.
    type Store: GlobalLog + SnapshotStore + StreamCatalog + StreamLifecycle + Clone + 'static;

    /// The store of `tenant`, created (and migrated) on first use: it reads and writes that
    /// tenant's streams and no others.
    async fn tenant(&self, tenant: &TenantId) -> StoreResult<Self::Store>;

    /// Every tenant created so far, in order.
    async fn tenants(&self) -> StoreResult<Vec<TenantId>>;
}

/// Tenants in memory: one [`InMemoryStore`] each. Cloning shares the tenants.
#[derive(Debug, Clone, Default)]
pub struct InMemoryTenants {
    stores: Arc<Mutex<BTreeMap<TenantId, InMemoryStore>>>,
}

impl InMemoryTenants {
    /// No tenants yet.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl TenantStores for InMemoryTenants {
    type Store = InMemoryStore;

    async fn tenant(&self, tenant: &TenantId) -> StoreResult<InMemoryStore> {
        let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(stores.entry(tenant.clone()).or_default().clone())
    }

    async fn tenants(&self) -> StoreResult<Vec<TenantId>> {
        let stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(stores.keys().cloned().collect())
    }
}
