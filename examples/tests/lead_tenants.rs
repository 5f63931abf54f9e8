//! Leads of two tenants (issue 16): each tenant's read models, kept in the tenant's own schema
//! or file, hold that tenant's leads and equal a rebuild from that tenant's log alone; and on
//! PostgreSQL a projection declared across tenants (one runner per tenant, each tenant's
//! checkpoint in its schema) fills one shared table with every tenant's leads, exactly once.

use es_core::tenancy::{TenantId, TenantStores};
use es_core::{
    async_trait, event, DecodedEvent, EventDescriptor, EventSet, HandlerError, Projection, ProjectionRunner, Repository,
};
use es_postgres::PostgresStore;
use es_test_support::TestDatabase;
use examples::lead::{Lead, LeadEvent, LeadInitialized};
use examples::lead_models::LeadTables;
use examples::lead_scenario::play_leads;
use sqlx::PgConnection;

mod support;

use crate::support::{catch_up_tables, leads_file, rebuilt_in_memory, tables};

/// Plays `leads` leads named after the tenant in its store, and catches its read models up.
async fn play_tenant<S: LeadTables>(store: &S, tenant: &TenantId, leads: usize) {
    store.create_tables().await.expect("read-model tables");
    let repository = Repository::<Lead, _>::new(store.clone());
    play_leads(&repository, tenant.as_str(), 0..leads, 3)
        .await
        .expect("leads played");
    catch_up_tables(store).await;
}

/// Each tenant's tables hold exactly its own leads, as a rebuild from its own log does.
async fn tenants_keep_their_own_read_models<T>(tenants: &T)
where
    T: TenantStores,
    T::Store: LeadTables,
{
    let plan = [
        (TenantId::new("acme").expect("id"), 5),
        (TenantId::new("globex").expect("id"), 3),
    ];
    for (tenant, leads) in &plan {
        let store = tenants.tenant(tenant).await.expect("tenant store");
        play_tenant(&store, tenant, *leads).await;
    }
    for (tenant, leads) in &plan {
        let store = tenants.tenant(tenant).await.expect("tenant store");
        let (search, analysis) = tables(&store).await;
        assert_eq!(analysis.leads.len(), *leads, "{tenant} has its own leads");
        let prefix = format!("{tenant}-");
        assert!(
            analysis
                .leads
                .keys()
                .chain(search.leads.keys())
                .all(|id| id.starts_with(&prefix)),
            "{tenant}'s tables hold no other tenant's lead"
        );
        assert_eq!((search, analysis), rebuilt_in_memory(&store).await);
    }
    let listed = tenants.tenants().await.expect("tenants");
    assert_eq!(listed, plan.map(|(tenant, _)| tenant));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_tenants_keep_their_own_read_models() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = leads_file(&dir).await;
    tenants_keep_their_own_read_models(&store).await;
    assert!(store.tenant_path(&TenantId::new("acme").expect("id")).exists());
}

/// Every lead of every tenant, in one table of the main schema: a projection declared across
/// tenants, one instance (and runner) per tenant.
struct AllLeads {
    tenant: TenantId,
    table: String,
}

#[event]
#[derive(Debug, Clone)]
enum LeadStarted {
    Initialized(LeadInitialized),
}

#[async_trait]
impl Projection for AllLeads {
    const NAME: &'static str = "all-leads";
    const AGGREGATE_TYPES: &'static [&'static str] = &["lead"];
    const SOURCE_EVENTS: &'static [&'static [EventDescriptor]] = &[LeadEvent::EVENTS];
    type Event = LeadStarted;
    type Context = PgConnection;

    async fn handle(&self, db: &mut PgConnection, event: &DecodedEvent<LeadStarted>) -> Result<(), HandlerError> {
        // A plain insert: a lead counted twice would fail on the primary key.
        sqlx::query(&format!("INSERT INTO {} (tenant, lead_id) VALUES ($1, $2)", self.table))
            .bind(self.tenant.as_str())
            .bind(&event.envelope.stream.aggregate_id)
            .execute(db)
            .await?;
        Ok(())
    }

    async fn reset(&self, db: &mut PgConnection) -> Result<(), HandlerError> {
        sqlx::query(&format!("DELETE FROM {} WHERE tenant = $1", self.table))
            .bind(self.tenant.as_str())
            .execute(db)
            .await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tenants_per_tenant_and_across_tenants() {
    let database = TestDatabase::get().unwrap_or_else(|error| panic!("{error}"));
    let schema = database.schema().await.expect("a fresh schema");
    let main: &PostgresStore = schema.store();
    tenants_keep_their_own_read_models(main).await;

    let table = format!("\"{}\".all_leads", main.schema());
    sqlx::query(&format!(
        "CREATE TABLE {table} (tenant text NOT NULL, lead_id text NOT NULL, PRIMARY KEY (tenant, lead_id))"
    ))
    .execute(main.pool())
    .await
    .expect("the shared table");
    for round in 0..2 {
        for tenant in main.tenants().await.expect("tenants") {
            let store = main.tenant(&tenant).await.expect("tenant store");
            let projection = AllLeads {
                tenant,
                table: table.clone(),
            };
            // The second round finds every checkpoint at the end: nothing is counted twice.
            let caught = ProjectionRunner::new(projection, store.clone(), store.checkpoints())
                .catch_up()
                .await
                .expect("caught up");
            if round == 1 {
                assert_eq!(caught.handled, 0, "each tenant's checkpoint is kept in its schema");
            }
        }
    }
    let counts: Vec<(String, i64)> = sqlx::query_as(&format!(
        "SELECT tenant, count(*) FROM {table} GROUP BY tenant ORDER BY tenant"
    ))
    .fetch_all(main.pool())
    .await
    .expect("counts");
    assert_eq!(counts, [("acme".to_owned(), 5), ("globex".to_owned(), 3)]);
}

/// The same lead id in two tenants of a store that seals personal data: forgetting it in one
/// tenant destroys that tenant's key only; the other tenant's lead keeps its name.
async fn forgetting_is_per_tenant<S>(main: S)
where
    S: TenantStores + es_core::pii::KeyStore + Clone,
    S::Store: es_core::pii::KeyStore,
{
    let sealed = examples::lead::forgettable_leads(main.clone(), main).expect("one aggregate");
    let (acme, globex) = (TenantId::new("acme").expect("id"), TenantId::new("globex").expect("id"));
    let mut names = Vec::new();
    for tenant in [&acme, &globex] {
        let store = sealed.tenant(tenant).await.expect("a tenant's sealed store");
        let leads = Repository::<Lead, _>::new(store);
        let name = format!("Ada of {tenant}");
        leads
            .execute("L-1", Default::default(), |lead| lead.initialize(&name, "555-0100"))
            .await
            .expect("a lead");
        names.push(name);
    }
    let acme_store = sealed.tenant(&acme).await.expect("acme");
    assert!(examples::lead::forget_lead(&acme_store, "L-1").await.expect("forgets"));
    let name_in = |store| async move {
        let lead = Repository::<Lead, _>::new(store).load("L-1").await.expect("loads");
        lead.aggregate.name.known().cloned()
    };
    assert_eq!(name_in(acme_store).await, None, "forgotten in acme");
    let globex_store = sealed.tenant(&globex).await.expect("globex");
    assert_eq!(name_in(globex_store).await, Some(names[1].clone()), "kept in globex");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_tenants_forget_their_own_subjects() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = leads_file(&dir).await;
    forgetting_is_per_tenant(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tenants_forget_their_own_subjects() {
    let database = TestDatabase::get().unwrap_or_else(|error| panic!("{error}"));
    let schema = database.schema().await.expect("a fresh schema");
    forgetting_is_per_tenant(schema.store().clone()).await;
}
