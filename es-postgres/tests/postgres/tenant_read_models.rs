//! Read models of tenants: a handler's unqualified table is its own tenant's, created with
//! `execute_in_schema`, and never a table of the same name in `public` that every tenant would
//! share.

use es_core::tenancy::{TenantId, TenantStores};
use es_core::CheckpointStore;
use es_postgres::PostgresStore;

use crate::support::schema;

/// Writes `mark` into the unqualified table `marks` within a unit of `store`'s checkpoints, as
/// a handler would.
async fn mark_in_a_unit(store: &PostgresStore, projection: &str, mark: &str) -> Result<(), sqlx::Error> {
    let checkpoints = store.checkpoints();
    let mut claim = checkpoints.claim(projection).await.expect("claim");
    let (mut unit, _) = checkpoints.begin(&mut claim).await.expect("begin");
    let written = sqlx::query("INSERT INTO marks (mark) VALUES ($1)")
        .bind(mark)
        .execute(checkpoints.context(&mut unit))
        .await;
    match written {
        Ok(_) => checkpoints.commit(unit, 1).await.expect("commit"),
        Err(_) => checkpoints.rollback(unit).await.expect("rollback"),
    }
    written.map(|_| ())
}

async fn marks(store: &PostgresStore) -> Vec<String> {
    sqlx::query_scalar(&format!("SELECT mark FROM \"{}\".marks ORDER BY mark", store.schema()))
        .fetch_all(store.pool())
        .await
        .expect("the tenant's marks")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_s_handlers_write_their_own_tables_only() {
    let schema = schema().await;
    let main: &PostgresStore = schema.store();
    let (acme, globex) = (
        main.tenant(&TenantId::new("acme").expect("id")).await.expect("acme"),
        main.tenant(&TenantId::new("globex").expect("id"))
            .await
            .expect("globex"),
    );
    for tenant in [&acme, &globex] {
        tenant
            .execute_in_schema("CREATE TABLE marks (mark text NOT NULL)")
            .await
            .expect("the tenant's table, beside its events");
    }
    mark_in_a_unit(&acme, "marking", "acme secret")
        .await
        .expect("acme writes");
    mark_in_a_unit(&globex, "marking", "globex secret")
        .await
        .expect("globex writes");
    assert_eq!(marks(&acme).await, ["acme secret"]);
    assert_eq!(marks(&globex).await, ["globex secret"]);

    // A table created through the pool without a schema lands in `public`: handlers do not see
    // it, so a read model cannot end up shared by every tenant unnoticed.
    let table = format!("marks_{}", uuid::Uuid::now_v7().simple());
    sqlx::raw_sql(&format!("CREATE TABLE {table} (mark text)"))
        .execute(main.pool())
        .await
        .expect("a table in public");
    let checkpoints = acme.checkpoints();
    let mut claim = checkpoints.claim("looking").await.expect("claim");
    let (mut unit, _) = checkpoints.begin(&mut claim).await.expect("begin");
    let seen = sqlx::query(&format!("SELECT mark FROM {table}"))
        .fetch_all(checkpoints.context(&mut unit))
        .await;
    checkpoints.rollback(unit).await.expect("rollback");
    sqlx::raw_sql(&format!("DROP TABLE public.{table}"))
        .execute(main.pool())
        .await
        .expect("dropped");
    let error = seen.expect_err("a handler must not find a table in public");
    assert!(error.to_string().contains("does not exist"), "{error}");
}
