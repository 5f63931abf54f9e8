//! Closing Lead streams on PostgreSQL and SQLite (issue 16): an archived lead loads only
//! through the explicit call, time travel included, and rebuilding the read models after the
//! archive gives the same tables; a tombstoned lead takes no more commands; a deleted lead
//! leaves an audit record and its rows leave the read models, live and rebuilt alike.

use es_core::lifecycle::{ClosedQuery, StreamChange, StreamLifecycle, StreamStatus};
use es_core::{AsOf, CommandError, Repository, RepositoryError, Versioned};
use es_test_support::TestDatabase;
use examples::lead::{Lead, LeadError, LeadEvent};
use examples::lead_models::LeadTables;
use examples::lead_scenario::{lead_id, play_leads};

mod support;

use crate::support::{catch_up_tables, leads_file, rebuild_tables, rebuilt_in_memory, tables};

fn change(reason: &str) -> StreamChange {
    StreamChange::new("dpo@example.com", reason)
}

#[track_caller]
fn assert_closed<T: std::fmt::Debug>(result: Result<T, RepositoryError>, status: StreamStatus) {
    match result {
        Err(RepositoryError::StreamClosed(closed)) => assert_eq!(closed.status, status),
        other => panic!("expected RepositoryError::StreamClosed ({status}), got {other:?}"),
    }
}

/// A command on the lead `id`, closed as `status`, is refused naming that status (failing as
/// `what` otherwise); the lead still loads explicitly as it was, `state`.
async fn refused_but_loadable<S: StreamLifecycle>(
    leads: &Repository<Lead, S>,
    id: &str,
    (status, what): (StreamStatus, &str),
    command: impl FnMut(&Lead) -> Result<Vec<LeadEvent>, LeadError>,
    state: &Versioned<Lead>,
) {
    match leads.execute(id, Default::default(), command).await {
        Err(CommandError::Repository(RepositoryError::StreamClosed(closed))) => assert_eq!(closed.status, status),
        other => panic!("{what}: {other:?}"),
    }
    assert_eq!(&leads.load_closed(id, AsOf::Latest).await.expect("load_closed"), state);
}

async fn leads_are_closed<S: LeadTables + StreamLifecycle>(store: S) {
    store.create_tables().await.expect("read-model tables");
    let leads = Repository::<Lead, _>::new(store.clone()).with_snapshot_every(3);
    play_leads(&leads, "life", 0..12, 5).await.expect("a week of leads");
    catch_up_tables(&store).await;
    let (search_before, analysis_before) = tables(&store).await;
    let [archived, tombstoned, deleted] = [0, 1, 2].map(|index| lead_id("life", index));
    assert!(search_before.leads.contains_key(&deleted) && analysis_before.leads.contains_key(&deleted));

    // Archive: loads refused, explicit loads and time travel from the archive, rebuilds unchanged.
    let latest = leads.load(&archived).await.expect("load");
    let at_two = leads.load_at_version(&archived, 2).await.expect("load at version 2");
    let stream = Repository::<Lead, S>::stream_id(&archived);
    let closed = store.archive(&stream, change("closed in 2019")).await.expect("archive");
    assert_eq!((closed.status, closed.events), (StreamStatus::Archived, latest.version));
    assert_closed(leads.load(&archived).await, StreamStatus::Archived);
    // An archived stream reads as empty to a command, which decides to start a new lead: the
    // append refuses it.
    refused_but_loadable(
        &leads,
        &archived,
        (StreamStatus::Archived, "a command on an archived lead"),
        |lead| lead.initialize("Ada", "555-0100"),
        &latest,
    )
    .await;
    assert_eq!(
        leads
            .load_closed(&archived, AsOf::Version(2))
            .await
            .expect("time travel"),
        at_two
    );
    rebuild_tables(&store).await;
    assert_eq!(
        tables(&store).await,
        (search_before.clone(), analysis_before.clone()),
        "a rebuild after an archive"
    );

    // Tombstone: no more commands; the state still loads explicitly.
    let before_tombstone = leads.load(&tombstoned).await.expect("load");
    store
        .tombstone(&Repository::<Lead, S>::stream_id(&tombstoned), change("duplicate"))
        .await
        .expect("tombstone");
    refused_but_loadable(
        &leads,
        &tombstoned,
        (StreamStatus::Tombstoned, "a command on a tombstoned lead"),
        Lead::close,
        &before_tombstone,
    )
    .await;

    // Delete: gone from the store and from the read models, live and rebuilt; audited.
    let deleted_version = leads.load(&deleted).await.expect("load").version;
    let record = store
        .delete_stream(
            &Repository::<Lead, S>::stream_id(&deleted),
            change("erasure request #7"),
        )
        .await
        .expect("delete");
    assert_eq!((record.status, record.events), (StreamStatus::Deleted, deleted_version));
    assert_closed(leads.load_closed(&deleted, AsOf::Latest).await, StreamStatus::Deleted);
    catch_up_tables(&store).await;
    let (search, analysis) = tables(&store).await;
    assert!(!search.leads.contains_key(&deleted), "the search projection was told");
    assert!(
        !analysis.leads.contains_key(&deleted),
        "the analysis projection was told"
    );
    assert_eq!(search.leads.len(), search_before.leads.len() - 1);
    assert_eq!((search.clone(), analysis.clone()), rebuilt_in_memory(&store).await);
    rebuild_tables(&store).await;
    assert_eq!(tables(&store).await, (search, analysis), "a rebuild after a deletion");
    let audit = store
        .closed_streams(&ClosedQuery::new(StreamStatus::Deleted))
        .await
        .expect("audit");
    assert_eq!(audit, vec![record]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leads_are_closed_on_postgres() {
    let database = TestDatabase::get().unwrap_or_else(|error| panic!("{error}"));
    let schema = database.schema().await.expect("a fresh schema");
    leads_are_closed(schema.store().clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leads_are_closed_on_sqlite() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = leads_file(&dir).await;
    leads_are_closed(store).await;
}
