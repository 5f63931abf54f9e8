//! What the suites of the Lead read models share.

use es_core::{EventStore, ExpectedVersion, GlobalLog, InMemoryReadModel, ProjectionRunner};
use examples::lead_models::{AnalysisModel, LeadAnalysisProjection, LeadSearchProjection, LeadTables, SearchModel};
use uuid::Uuid;

/// Both models as their tables in `store` hold them.
pub async fn tables<S: LeadTables>(store: &S) -> (SearchModel, AnalysisModel) {
    let search = store.load_search().await.expect("search table");
    let analysis = store.load_analysis().await.expect("analysis table");
    (search, analysis)
}

/// Both models built in memory from every event of `events`, independently of any tables: what
/// the tables must equal.
pub async fn rebuilt_in_memory<S: GlobalLog + Clone>(events: &S) -> (SearchModel, AnalysisModel) {
    let search = InMemoryReadModel::<SearchModel>::new();
    let analysis = InMemoryReadModel::<AnalysisModel>::new();
    ProjectionRunner::new(LeadSearchProjection::default(), events.clone(), search.clone())
        .catch_up()
        .await
        .expect("search rebuilt in memory");
    ProjectionRunner::new(LeadAnalysisProjection::default(), events.clone(), analysis.clone())
        .catch_up()
        .await
        .expect("analysis rebuilt in memory");
    (search.read(Clone::clone), analysis.read(Clone::clone))
}

/// Waits until everything appended so far is visible in the global log: a marker appended last
/// is visible only once every earlier commit is (PostgreSQL may hold events back while other
/// transactions are in flight).
// Not every suite that shares this module reads the log right after appending.
#[allow(dead_code)]
pub async fn settle<S: EventStore + GlobalLog>(store: &S) {
    let marker = es_core::StreamId::new("settle", Uuid::now_v7().to_string());
    let outcome = store
        .append(&marker, ExpectedVersion::NoStream, es_core::conformance::numbered(1))
        .await
        .expect("a marker");
    let position = outcome.positions[0];
    for _ in 0..500 {
        if store.tail(0).await.expect("tail").head_position >= position {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the marker at {position} never became visible");
}

/// Catches both tables of `store` up with everything appended so far (after [`settle`]).
#[allow(dead_code)]
pub async fn catch_up_tables<S: LeadTables>(store: &S) {
    update_tables(store, false).await;
}

/// Rebuilds both tables of `store` from scratch (after [`settle`]).
#[allow(dead_code)]
pub async fn rebuild_tables<S: LeadTables>(store: &S) {
    update_tables(store, true).await;
}

async fn update_tables<S: LeadTables>(store: &S, from_scratch: bool) {
    settle(store).await;
    let search = ProjectionRunner::new(LeadSearchProjection::default(), store.clone(), store.read_models());
    let analysis = ProjectionRunner::new(LeadAnalysisProjection::default(), store.clone(), store.read_models());
    match from_scratch {
        true => {
            search.rebuild(|_| {}).await.expect("search rebuilt");
            analysis.rebuild(|_| {}).await.expect("analysis rebuilt");
        }
        false => {
            search.catch_up().await.expect("search caught up");
            analysis.catch_up().await.expect("analysis caught up");
        }
    }
}

/// A migrated SQLite store in `leads.db` of `dir`.
#[allow(dead_code)]
pub async fn leads_file(dir: &tempfile::TempDir) -> es_sqlite::SqliteStore {
    let store = es_sqlite::SqliteStore::open(dir.path().join("leads.db"))
        .await
        .expect("open");
    store.migrate().await.expect("migrate");
    store
}

/// The stored names of the seed's lead 1 events, in the seed's order.
#[allow(dead_code)]
pub const SEED_EVENT_NAMES: [&str; 7] = [
    "LeadInitialized",
    "Contacted",
    "FollowupSet",
    "ContactDetailsUpdated",
    "Contacted",
    "OrderSubmitted",
    "PaymentConfirmed",
];
