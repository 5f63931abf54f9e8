//! A lead asks to be forgotten, in the SQLite file the demo uses: its name and phone go from
//! every event and snapshot (a scan of the raw file finds neither), the lead still loads with
//! them forgotten, the search model drops its rows, and every other lead is untouched.

use es_core::{ProjectionRunner, Repository};
use examples::lead::{forget_lead, forgettable_leads, Lead};
use examples::lead_models::{LeadSearchProjection, LeadTables};
use examples::lead_scenario::{lead_id, play_leads};

// Of the helpers the Lead suites share, this suite uses `leads_file` alone.
#[allow(dead_code)]
mod support;

use crate::support::leads_file;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_lead_leaves_no_name_or_phone_and_no_search_rows() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = leads_file(&dir).await;
    let path = file.path().to_owned();
    file.create_tables().await.expect("read-model tables");
    let store = forgettable_leads(file.clone(), file.clone()).expect("one aggregate");
    let leads = Repository::<Lead, _>::new(store.clone()).with_snapshot_every(2);
    play_leads(&leads, "week", 0..6, 3).await.expect("a week of leads");
    let search = ProjectionRunner::new(LeadSearchProjection::default(), store.clone(), store.read_models());
    search.catch_up().await.expect("search caught up");

    let (forgotten, kept) = (lead_id("week", 0), lead_id("week", 1));
    let before = leads.load(&forgotten).await.expect("loads").aggregate;
    let (name, phone) = (
        before.name.known().cloned().expect("a name"),
        before.phone.known().cloned().expect("a phone"),
    );
    let searchable = store.load_search().await.expect("search rows");
    assert!(searchable.leads.contains_key(&forgotten));

    assert!(forget_lead(&store, &forgotten).await.expect("forgets"));
    search.catch_up().await.expect("search caught up again");

    let after = leads
        .load(&forgotten)
        .await
        .expect("a forgotten lead still loads")
        .aggregate;
    assert!(after.name.is_forgotten() && after.phone.is_forgotten(), "{after:?}");
    assert_eq!(after.status, before.status, "what is not personal stays");
    let other = leads.load(&kept).await.expect("loads").aggregate;
    assert!(other.name.known().is_some() && other.phone.known().is_some());
    let searchable = store.load_search().await.expect("search rows");
    assert!(
        !searchable.leads.contains_key(&forgotten),
        "the search model dropped the lead"
    );
    assert!(searchable.leads.contains_key(&kept));

    let raw = rusqlite::Connection::open(&path).expect("a raw connection");
    let mut everything = String::new();
    for sql in [
        "SELECT payload FROM events",
        "SELECT state FROM snapshots",
        "SELECT value FROM lead_search",
    ] {
        let mut statement = raw.prepare(sql).expect("prepares");
        let rows = statement
            .query_map([], |row| row.get::<_, String>(0))
            .expect("reads")
            .collect::<Result<Vec<_>, _>>()
            .expect("rows");
        everything.push_str(&rows.join("\n"));
    }
    assert!(!everything.contains(&name), "`{name}` is left in the file");
    assert!(!everything.contains(&phone), "`{phone}` is left in the file");
}
