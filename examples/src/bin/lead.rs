//! Plays a sales week over many leads, runs the two read-model projections, queries both, and
//! shows one lead's state at an earlier version. Runs in memory, or on PostgreSQL when
//! `DATABASE_URL` is set.

use std::collections::BTreeMap;
use std::error::Error;

use es_core::{InMemoryReadModel, InMemoryStore, ProjectionRunner, Repository, StreamSlice};
use examples::lead::{Lead, LeadStatus};
use examples::lead_models::{AnalysisModel, AnalysisRow, LeadAnalysisProjection, LeadSearchProjection, SearchModel};
use examples::lead_scenario::{lead_id, lead_name, play_leads, with_typo};

const LEADS: usize = 200;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    println!("Lead example on the in-memory store and in-memory read models");
    let store = InMemoryStore::new();
    let leads = Repository::<Lead, _>::new(store.clone()).with_snapshot_every(10);
    let run = "week1";
    let commands = play_leads(&leads, run, 0..LEADS, 7).await?;
    println!("\n== Played {commands} commands on {LEADS} leads");

    let search = InMemoryReadModel::<SearchModel>::new();
    let analysis = InMemoryReadModel::<AnalysisModel>::new();
    let searched = ProjectionRunner::new(LeadSearchProjection::default(), store.clone(), search.clone())
        .catch_up()
        .await?;
    let analysed = ProjectionRunner::new(LeadAnalysisProjection::default(), store.clone(), analysis.clone())
        .catch_up()
        .await?;
    println!(
        "   projections caught up: search handled {} of {} events, analysis {} of {}",
        searched.handled, searched.read, analysed.handled, analysed.read
    );

    let rows = analysis.read(|model| model.leads.clone());
    print_analysis(&rows);

    println!("\n== Search model: find leads by any name or phone they ever had");
    let fixed = (0..LEADS)
        .map(|index| (index, lead_id(run, index)))
        .find(|(_, id)| search.read(|model| model.leads.get(id).is_some_and(|entry| entry.names.len() > 1)));
    if let Some((index, id)) = fixed {
        let misspelled = with_typo(&lead_name(index));
        let entry = search.read(|model| model.leads.get(&id).cloned().unwrap_or_default());
        println!(
            "   {id} was entered as {misspelled:?}, later fixed: names {:?}, phones {:?}",
            entry.names, entry.phones
        );
        println!(
            "   search {:?} -> {:?}",
            misspelled,
            search.read(|model| model.find(&misspelled))
        );
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
    }
    Ok(())
}

fn print_analysis(rows: &BTreeMap<String, AnalysisRow>) {
    println!("\n== Analysis model: the funnel");
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
