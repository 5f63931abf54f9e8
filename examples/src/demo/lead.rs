//! Plays a sales week over many leads, runs the two read-model projections, queries both, and
//! shows one lead's state at an earlier version. On the store [`Backend::choose`] picks; in a
//! SQLite file or PostgreSQL the read models are tables beside the events, and a second run adds
//! a week to the same history.

use std::collections::BTreeMap;

use crate::lead::{forget_lead, forgettable_leads, Lead, LeadStatus};
use crate::lead_models::{
    lead_runners, AnalysisModel, AnalysisRow, LeadAnalysisProjection, LeadSearchProjection, LeadTables, SearchModel,
};
use crate::lead_scenario::{lead_id, lead_name, play_leads, with_typo};
use es_core::pii::{InMemoryKeyStore, KeyStore, PiiStore};
use es_core::{EventStore, InMemoryReadModel, InMemoryStore, ProjectionRunner, Repository, SnapshotStore, StreamSlice};
use es_postgres::PostgresStore;
use es_sqlite::SqliteStore;

use super::{announce_history, Backend, Outcome};

const LEADS: usize = 200;

/// Runs the demo on `backend`.
pub async fn run(backend: &Backend) -> Outcome {
    match backend {
        Backend::Memory => in_memory().await,
        Backend::Sqlite(path) => {
            let store = SqliteStore::open(path).await?;
            store.migrate().await?;
            let what = format!(
                "Lead example on the SQLite file {}: events and read-model tables",
                path.display()
            );
            on_database(forgettable_leads(store.clone(), store)?, &what).await
        }
        Backend::Postgres(url) => {
            let store = PostgresStore::connect(url).await?.with_schema("es_examples")?;
            store.migrate().await?;
            on_database(
                forgettable_leads(store.clone(), store)?,
                "Lead example on PostgreSQL: events and read-model tables in schema `es_examples`",
            )
            .await
        }
    }
}

async fn in_memory() -> Outcome {
    println!("Lead example on the in-memory store and in-memory read models");
    let store = forgettable_leads(InMemoryStore::new(), InMemoryKeyStore::new())?;
    let leads = Repository::<Lead, _>::new(store.clone()).with_snapshot_every(10);
    let run = "week1";
    play(&leads, run).await?;

    let search = InMemoryReadModel::<SearchModel>::new();
    let analysis = InMemoryReadModel::<AnalysisModel>::new();
    let search_runner = ProjectionRunner::new(LeadSearchProjection::default(), store.clone(), search.clone());
    let searched = search_runner.catch_up().await?;
    let analysed = ProjectionRunner::new(LeadAnalysisProjection::default(), store.clone(), analysis.clone())
        .catch_up()
        .await?;
    println!(
        "   projections caught up: search handled {} of {} events, analysis {} of {}",
        searched.handled, searched.read, analysed.handled, analysed.read
    );
    let searched = search.read(Clone::clone);
    print_analysis(&analysis.read(|model| model.leads.clone()));
    if let Some(misspelled) = print_search(&searched, run) {
        println!("   search {misspelled:?} -> {:?}", searched.find(&misspelled));
    }
    time_travel(&leads, &searched, run).await?;
    let forgotten = forget_first(&store, &leads, run).await?;
    search_runner.catch_up().await?;
    println!(
        "   after the search projection caught up, it knows {forgotten}: {}",
        search.read(|model| model.leads.contains_key(&forgotten))
    );
    Ok(())
}

/// Forgets the first lead of `run` at its request, and shows what is left of it.
async fn forget_first<S: EventStore + SnapshotStore, K: KeyStore>(
    store: &PiiStore<S, K>,
    leads: &Repository<Lead, PiiStore<S, K>>,
    run: &str,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let id = lead_id(run, 0);
    let before = leads.load(&id).await?.aggregate;
    forget_lead(store, &id).await?;
    let after = leads.load(&id).await?.aggregate;
    println!("\n== {id} asked to be forgotten: its key is destroyed");
    println!("   before: name {:<20} phone {}", before.name, before.phone);
    println!(
        "   after:  name {:<20} phone {}   (status {}, still loads)",
        after.name,
        after.phone,
        after.status.map_or("-", LeadStatus::as_str)
    );
    Ok(id)
}

async fn on_database<S: LeadTables + KeyStore>(store: PiiStore<S, S>, what: &str) -> Outcome {
    store.create_tables().await?;
    announce_history(&store, what).await?;
    let leads = Repository::<Lead, _>::new(store.clone()).with_snapshot_every(10);
    let run = format!("run{}", chrono::Utc::now().format("%Y%m%d%H%M%S%3f"));
    play(&leads, &run).await?;

    let (search, analysis) = lead_runners(&store);
    let searched = search.catch_up().await?;
    let analysed = analysis.catch_up().await?;
    println!(
        "   projections caught up from their checkpoints: search handled {} of {} new events, analysis {} of {}",
        searched.handled, searched.read, analysed.handled, analysed.read
    );
    let search_model = store.load_search().await?;
    let analysis_model = store.load_analysis().await?;
    print_analysis(&analysis_model.leads);
    if let Some(misspelled) = print_search(&search_model, &run) {
        println!("   search {misspelled:?} -> {:?}", store.find(&misspelled).await?);
    }
    time_travel(&leads, &search_model, &run).await?;
    let forgotten = forget_first(&store, &leads, &run).await?;
    search.catch_up().await?;
    println!(
        "   after the search projection caught up, it knows {forgotten}: {}",
        store.load_search().await?.leads.contains_key(&forgotten)
    );
    Ok(())
}

async fn play<S: EventStore + SnapshotStore>(leads: &Repository<Lead, S>, run: &str) -> Outcome {
    let commands = play_leads(leads, run, 0..LEADS, 7).await?;
    println!("\n== Played {commands} commands on {LEADS} leads (run {run})");
    Ok(())
}

fn print_analysis(rows: &BTreeMap<String, AnalysisRow>) {
    println!("\n== Analysis model: the funnel ({} leads)", rows.len());
    let mut by_status: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    for row in rows.values() {
        let entry = by_status.entry(row.status.as_str()).or_default();
        entry.0 += 1;
        entry.1 += row.followups;
    }
    println!("   {:<16} {:>6} {:>16}", "status", "leads", "avg follow-ups");
    for (status, (count, followups)) in by_status {
        println!(
            "   {status:<16} {count:>6} {:>16.2}",
            f64::from(followups) / f64::from(count)
        );
    }
}

/// The first lead of `run` whose name was fixed; prints what the search model knows of it and
/// returns the misspelled name it was entered under.
fn print_search(search: &SearchModel, run: &str) -> Option<String> {
    println!("\n== Search model: leads are found by any name or phone they ever had");
    let (index, id, entry) = (0..LEADS).find_map(|index| {
        let id = lead_id(run, index);
        let entry = search.leads.get(&id).filter(|entry| entry.names.len() > 1)?;
        Some((index, id, entry))
    })?;
    let misspelled = with_typo(&lead_name(index));
    println!("   {id} was entered as {misspelled:?}, later fixed:");
    println!("   names {:?}, phones {:?}", entry.names, entry.phones);
    Some(misspelled)
}

async fn time_travel<S: EventStore + SnapshotStore>(
    leads: &Repository<Lead, S>,
    search: &SearchModel,
    run: &str,
) -> Outcome {
    let Some(id) = (0..LEADS)
        .map(|index| lead_id(run, index))
        .find(|id| search.leads.get(id).is_some_and(|entry| entry.names.len() > 1))
    else {
        return Ok(());
    };
    let history = leads.events(&id, StreamSlice::all()).await?;
    println!("\n== Time travel on {id} ({} events)", history.len());
    for decoded in &history {
        let past = leads.load_at_version(&id, decoded.envelope.version).await?;
        println!(
            "   v{:<2} {:<22} status {:<16} name {:<14} followups {}",
            decoded.envelope.version,
            decoded.envelope.event_name,
            past.aggregate.status.map_or("-", LeadStatus::as_str),
            past.aggregate.name,
            past.aggregate.followups
        );
    }
    Ok(())
}
