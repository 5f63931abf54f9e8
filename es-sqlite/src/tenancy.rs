//! Tenants ([`TenantStores`]): a file per tenant, `<this file>.tenants/<tenant>.db`, opened
//! with the main file's options, migrated on first use and listed in the main file's
//! `tenants` table.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use es_core::tenancy::{TenantId, TenantStores};
use es_core::{StoreError, StoreResult};
use rusqlite::params;

use crate::error::SqliteError;
use crate::row::micros;
use crate::SqliteStore;

/// The stores of the tenants a store has opened.
pub(crate) type OpenTenants = Arc<Mutex<BTreeMap<TenantId, SqliteStore>>>;

const REGISTER_TENANT: &str =
    "INSERT INTO tenants (tenant, created_at) VALUES (?1, ?2) ON CONFLICT (tenant) DO NOTHING";
const TENANTS: &str = "SELECT tenant FROM tenants ORDER BY tenant";

impl SqliteStore {
    /// The file of `tenant`'s store: `<this file>.tenants/<tenant>.db`.
    pub fn tenant_path(&self, tenant: &TenantId) -> PathBuf {
        let mut directory = self.path().as_os_str().to_owned();
        directory.push(".tenants");
        PathBuf::from(directory).join(format!("{tenant}.db"))
    }
}

/// Each tenant is a file of its own, so isolation is the file system's: a tenant's store has no
/// connection to any other tenant's file. The first [`tenant`](TenantStores::tenant) call of a
/// process creates the directory and file, migrates it and records the tenant; later calls
/// return the kept store.
#[async_trait]
impl TenantStores for SqliteStore {
    type Store = SqliteStore;

    async fn tenant(&self, tenant: &TenantId) -> StoreResult<SqliteStore> {
        if let Some(store) = self.tenants.lock().unwrap_or_else(PoisonError::into_inner).get(tenant) {
            return Ok(store.clone());
        }
        let path = self.tenant_path(tenant);
        if let Some(directory) = path.parent() {
            // Once per tenant and process, and quick: not worth a blocking thread.
            std::fs::create_dir_all(directory).map_err(|source| {
                StoreError::from(SqliteError::Unexpected(format!(
                    "cannot create the tenants' directory {}: {source}",
                    directory.display()
                )))
            })?;
        }
        let store = SqliteStore::open_with(&path, self.options().clone()).await?;
        store.migrate().await?;
        let name = tenant.as_str().to_owned();
        self.write(move |db| db.execute(REGISTER_TENANT, params![name, micros(chrono::Utc::now())]))
            .await?;
        let mut open = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(open.entry(tenant.clone()).or_insert(store).clone())
    }

    async fn tenants(&self) -> StoreResult<Vec<TenantId>> {
        let names = self
            .read(|db| {
                let mut statement = db.prepare_cached(TENANTS)?;
                let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
                rows.collect::<Result<Vec<_>, _>>()
            })
            .await?;
        names
            .into_iter()
            .map(|name| TenantId::new(name).map_err(|error| SqliteError::Unexpected(error.to_string()).into()))
            .collect()
    }
}
