//! What the suites of the Lead read models share.

use es_core::{GlobalLog, InMemoryReadModel, ProjectionRunner};
use examples::lead_models::{AnalysisModel, LeadAnalysisProjection, LeadSearchProjection, LeadTables, SearchModel};

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
