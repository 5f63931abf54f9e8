//! The Lead read models in the SQLite file that holds the events: after a second week is played
//! on the same file, projections resumed from their checkpoints hold exactly what in-memory
//! projections rebuilt from all events hold.

use es_core::{GlobalLog, ProjectionRunner, Repository};
use es_sqlite::SqliteStore;
use examples::lead::Lead;
use examples::lead_models::{LeadAnalysisProjection, LeadSearchProjection, LeadTables};
use examples::lead_scenario::play_leads;

mod support;

use crate::support::{rebuilt_in_memory, tables};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_read_models_resume_and_equal_a_rebuild_in_memory() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("leads.db");
    for week in ["week1", "week2"] {
        // Each week opens the file anew, as a second run of the demo would.
        let store = SqliteStore::open(&path).await.expect("open");
        store.migrate().await.expect("migrate");
        store.create_tables().await.expect("read-model tables");
        let leads = Repository::<Lead, _>::new(store.clone()).with_snapshot_every(5);
        play_leads(&leads, week, 0..40, 11).await.expect("a week of leads");
        ProjectionRunner::new(LeadSearchProjection::default(), store.clone(), store.read_models())
            .catch_up()
            .await
            .expect("search caught up");
        let analysed = ProjectionRunner::new(LeadAnalysisProjection::default(), store.clone(), store.read_models())
            .catch_up()
            .await
            .expect("analysis caught up");
        if week == "week2" {
            let stored = store.tail(0).await.expect("tail").events;
            assert!(analysed.read < stored, "the second week resumed from its checkpoint");
        }
    }

    let store = SqliteStore::open(&path).await.expect("open");
    let (search, analysis) = rebuilt_in_memory(&store).await;
    let (tables_search, tables_analysis) = tables(&store).await;
    assert_eq!(tables_search.leads.len(), 80, "both weeks' leads are searchable");
    assert_eq!(tables_search, search);
    assert_eq!(tables_analysis, analysis);
}
