//! Tenants ([`TenantStores`]): a schema per tenant, `<schema>__<tenant>`, in the same database
//! and pool, migrated on first use and listed in the main schema's `tenants` table.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use es_core::tenancy::{TenantId, TenantStores};
use es_core::StoreResult;

use crate::fault::store_error;
use crate::PostgresStore;

/// PostgreSQL's longest identifier (NAMEDATALEN - 1).
const MAX_SCHEMA_BYTES: usize = 63;

/// The stores of the tenants a store has opened.
pub(crate) type OpenTenants = Arc<Mutex<BTreeMap<TenantId, PostgresStore>>>;

impl PostgresStore {
    /// The schema of `tenant`'s tables: `<this schema>__<tenant>`.
    pub fn tenant_schema(&self, tenant: &TenantId) -> String {
        format!("{}__{}", self.schema(), tenant)
    }
}

/// Each tenant is a schema of its own, so isolation is PostgreSQL's: every statement of a
/// tenant's store names its schema, and no query can reach another tenant's tables. The first
/// [`tenant`](TenantStores::tenant) call of a process migrates the schema and records the
/// tenant; later calls return the kept store.
///
/// A tenant's schema name is at most 63 bytes, like every PostgreSQL identifier: a main schema
/// of up to 31 bytes takes every [`TenantId`]; a longer one refuses the tenant ids it leaves no
/// room for with [`PostgresError::TenantSchemaTooLong`](crate::PostgresError::TenantSchemaTooLong).
#[async_trait]
impl TenantStores for PostgresStore {
    type Store = PostgresStore;

    async fn tenant(&self, tenant: &TenantId) -> StoreResult<PostgresStore> {
        if let Some(store) = self.tenants.lock().unwrap_or_else(PoisonError::into_inner).get(tenant) {
            return Ok(store.clone());
        }
        let schema = self.tenant_schema(tenant);
        if schema.len() > MAX_SCHEMA_BYTES {
            return Err(crate::PostgresError::TenantSchemaTooLong {
                schema: self.schema().to_owned(),
                tenant: tenant.to_string(),
                room: MAX_SCHEMA_BYTES.saturating_sub(self.schema().len() + 2),
            }
            .into());
        }
        let store = self.clone().with_schema(&schema)?;
        store.migrate().await?;
        sqlx::query(&self.sql.lifecycle.register_tenant)
            .bind(tenant.as_str())
            .execute(self.pool())
            .await
            .map_err(store_error)?;
        let mut open = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(open.entry(tenant.clone()).or_insert(store).clone())
    }

    async fn tenants(&self) -> StoreResult<Vec<TenantId>> {
        let names: Vec<String> = sqlx::query_scalar(&self.sql.lifecycle.tenants)
            .fetch_all(self.pool())
            .await
            .map_err(store_error)?;
        names
            .into_iter()
            .map(|name| TenantId::new(name).map_err(|error| crate::PostgresError::Unexpected(error.to_string()).into()))
            .collect()
    }
}
