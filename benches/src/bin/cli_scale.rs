//! `cli_scale`: how long `es doctor` and `es rebuild` take on a store of a million events.
//!
//! ```text
//! cli_scale [--events N] [--sqlite | --postgres]
//! ```
//!
//! Seeds `--events` Lead events (default 1,000,000) in streams of 100 (a lead initialized, then
//! follow-ups and contact detail changes), then runs, in-process on the examples' `es` command
//! line (the same `es_cli::Cli` with the Lead and Ticket types and both Lead projections):
//! `doctor` (decode every event), `rebuild lead-search` and `rebuild lead-analysis`, and prints
//! a markdown table of the times. SQLite uses a file in a fresh temporary directory; PostgreSQL
//! uses `DATABASE_URL` or a throwaway server, in a fresh schema.

use es_bench::flags::value_of;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chrono::Utc;
use es_cli::{CliStore, Exit};
use es_core::{encode_batch, ExpectedVersion, Metadata, StreamId};
use es_postgres::PostgresStore;
use examples::cli::command_line;
use examples::lead::{ContactDetailsUpdated, FollowupSet, LeadEvent, LeadInitialized};
use examples::lead_models::LeadTables;

/// Events per lead stream.
const PER_STREAM: usize = 100;

type Failure = Box<dyn std::error::Error + Send + Sync>;

fn lead_events(index: usize) -> Vec<LeadEvent> {
    let mut events = vec![LeadEvent::from(LeadInitialized {
        name: format!("Lead {index}").into(),
        phone: format!("555-{index:07}").into(),
    })];
    for step in 1..PER_STREAM {
        events.push(if step % 2 == 1 {
            FollowupSet {
                followup_on: Utc::now(),
            }
            .into()
        } else {
            ContactDetailsUpdated {
                name: format!("Lead {index} ({step})").into(),
                phone: format!("555-{index:07}").into(),
            }
            .into()
        });
    }
    events
}

async fn seed<S: CliStore>(store: &S, events: usize) -> Result<Duration, Failure> {
    let started = Instant::now();
    for index in 0..events.div_ceil(PER_STREAM) {
        let stream = StreamId::new("lead", format!("scale-{index:07}"));
        let batch = encode_batch(&stream, &lead_events(index), &Metadata::new().with_actor("seed"))?;
        store.append(&stream, ExpectedVersion::NoStream, batch).await?;
    }
    Ok(started.elapsed())
}

/// Runs one `es` command in-process; its output is discarded, progress lines go to stderr.
async fn timed<S: LeadTables + CliStore>(store: &S, args: &[&str]) -> Result<Duration, Failure> {
    let cli = command_line(store.clone())?;
    let started = Instant::now();
    let argv = std::iter::once("es").chain(args.iter().copied());
    let exit = cli.execute(argv, &mut std::io::sink(), &mut std::io::stderr()).await;
    if exit != Exit::Ok {
        return Err(format!("es {args:?} exited with {}", exit.code()).into());
    }
    Ok(started.elapsed())
}

async fn measure<S: LeadTables + CliStore>(name: &str, store: S, events: usize) -> Result<(), Failure> {
    store.create_tables().await?;
    let seeded = seed(&store, events).await?;
    eprintln!("{name}: seeded {events} events in {:.1} s", seeded.as_secs_f64());
    for args in [
        &["doctor"][..],
        &["rebuild", "lead-search"][..],
        &["rebuild", "lead-analysis"][..],
    ] {
        let took = timed(&store, args).await?;
        let seconds = took.as_secs_f64();
        println!(
            "| {name} | `es {}` | {events} | {seconds:.1} s | {:.0} |",
            args.join(" "),
            events as f64 / seconds
        );
    }
    Ok(())
}

async fn run(args: &[String]) -> Result<(), Failure> {
    let mut events = 1_000_000;
    let mut stores = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--events" => {
                events = value_of(&mut args, "--events", "a positive number", |&value: &usize| value > 0)?;
            }
            "--sqlite" => stores.push("sqlite"),
            "--postgres" => stores.push("postgres"),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if stores.is_empty() {
        stores = vec!["sqlite", "postgres"];
    }
    println!("| store | command | events | time | events/s |");
    println!("|---|---|---|---|---|");
    for store in stores {
        if store == "sqlite" {
            let (_directory, store) = es_bench::fresh::sqlite("scale.db").await?;
            measure("SQLite", store, events).await?;
        } else {
            let schema = es_bench::fresh::postgres().await?;
            let store: PostgresStore = schema.store().clone();
            measure("PostgreSQL", store, events).await?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cli_scale: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cli_scale: {error}");
            ExitCode::FAILURE
        }
    }
}
