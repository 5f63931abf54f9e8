//! `contention`: how retry policies fare when 16 tasks command one aggregate at once.
//!
//! ```text
//! contention [--commands N] [--tasks N] [--runs N] [--memory | --sqlite | --postgres]...
//! ```
//!
//! Each run: `--tasks` tasks share `--commands` seat reservations on one conference (one
//! stream), each reservation a command that reads the seats taken and appends one event.
//! Reports per policy and store: the share of commands that gave up with a conflict, the p50,
//! p99 and worst number of attempts, and the wall time. PostgreSQL uses `DATABASE_URL` or a
//! throwaway server; SQLite a file in a fresh temporary directory.

use es_bench::flags::value_of;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use es_core::{event, Aggregate, Apply, CommandError, EventStore, InMemoryStore, Metadata, Repository, RetryPolicy};
use serde::{Deserialize, Serialize};

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct SeatReserved {
    pub seat: u32,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum ConferenceEvent {
    SeatReserved(SeatReserved),
}

#[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "conference", event = ConferenceEvent)]
pub struct Conference {
    reserved: u32,
}

impl Apply<SeatReserved> for Conference {
    fn apply(&mut self, _: &SeatReserved) {
        self.reserved += 1;
    }
}

/// The policies compared: what the repository did before (4 attempts, no backoff), and
/// candidates with backoff and jitter.
fn policies() -> Vec<(&'static str, RetryPolicy)> {
    let no_wait = |attempts| {
        RetryPolicy::default()
            .with_max_attempts(attempts)
            .with_backoff(Duration::ZERO, Duration::ZERO)
    };
    let jittered = |attempts, initial_ms, max_ms| {
        RetryPolicy::default()
            .with_max_attempts(attempts)
            .with_backoff(Duration::from_millis(initial_ms), Duration::from_millis(max_ms))
    };
    vec![
        ("4 attempts, no backoff (before)", no_wait(4)),
        ("10 attempts, no backoff", no_wait(10)),
        ("10 attempts, 1-100 ms jitter", jittered(10, 1, 100)),
        ("16 attempts, 1-100 ms jitter", jittered(16, 1, 100)),
        ("10 attempts, 5-200 ms jitter", jittered(10, 5, 200)),
        ("12 attempts, 5-200 ms jitter", jittered(12, 5, 200)),
        ("12 attempts, 10-400 ms jitter (default)", RetryPolicy::default()),
    ]
}

struct Options {
    commands: usize,
    tasks: usize,
    runs: usize,
    stores: Vec<&'static str>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        commands: 200,
        tasks: 16,
        runs: 5,
        stores: Vec::new(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut number = |name: &str| value_of(&mut args, name, "a positive number", |&value: &usize| value > 0);
        match arg.as_str() {
            "--commands" => options.commands = number("--commands")?,
            "--tasks" => options.tasks = number("--tasks")?,
            "--runs" => options.runs = number("--runs")?,
            "--memory" => options.stores.push("memory"),
            "--sqlite" => options.stores.push("sqlite"),
            "--postgres" => options.stores.push("postgres"),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if options.stores.is_empty() {
        options.stores = vec!["memory", "sqlite", "postgres"];
    }
    Ok(options)
}

/// What one run of one policy gave.
#[derive(Default)]
struct Tally {
    gave_up: usize,
    attempts: Vec<u32>,
    elapsed: Duration,
}

async fn run<S: EventStore + Clone + 'static>(
    store: S,
    policy: RetryPolicy,
    options: &Options,
) -> Result<Tally, String> {
    let repo = Arc::new(Repository::<Conference, _>::new(store).with_retry(policy));
    let conference = uuid::Uuid::now_v7().to_string();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..options.tasks {
        let share = options.commands / options.tasks + usize::from(task < options.commands % options.tasks);
        let (repo, conference) = (Arc::clone(&repo), conference.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            for _ in 0..share {
                let reserve = |conference: &Conference| {
                    vec![SeatReserved {
                        seat: conference.reserved + 1,
                    }
                    .into()]
                };
                match repo.execute(conference.as_str(), Metadata::new(), reserve).await {
                    Ok(done) => tally.attempts.push(done.attempts),
                    Err(CommandError::Conflict { attempts, .. }) => {
                        tally.gave_up += 1;
                        tally.attempts.push(attempts);
                    }
                    Err(other) => return Err(other.to_string()),
                }
            }
            Ok(tally)
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await.map_err(|error| error.to_string())??;
        total.gave_up += tally.gave_up;
        total.attempts.extend(tally.attempts);
    }
    total.elapsed = started.elapsed();
    let stored = repo
        .load(conference.as_str())
        .await
        .map_err(|error| error.to_string())?;
    let accepted = options.commands - total.gave_up;
    if stored.aggregate.reserved as usize != accepted {
        return Err(format!(
            "{accepted} commands accepted but {} seats stored",
            stored.aggregate.reserved
        ));
    }
    Ok(total)
}

fn percentile(sorted: &[u32], fraction: f64) -> u32 {
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

async fn measure<S: EventStore + Clone + 'static>(name: &str, store: S, options: &Options) -> Result<(), String> {
    for (label, policy) in policies() {
        let mut gave_up = Vec::new();
        let mut attempts = Vec::new();
        let mut elapsed = Vec::new();
        for _ in 0..options.runs {
            let tally = run(store.clone(), policy, options).await?;
            gave_up.push(tally.gave_up);
            attempts.extend(tally.attempts);
            elapsed.push(tally.elapsed);
        }
        attempts.sort_unstable();
        elapsed.sort_unstable();
        let commands = options.commands * options.runs;
        let total_gave_up: usize = gave_up.iter().sum();
        println!(
            "| {name} | {label} | {:.1} % ({}–{} of {}) | {} | {} | {} | {} ms |",
            100.0 * total_gave_up as f64 / commands as f64,
            gave_up.iter().min().unwrap_or(&0),
            gave_up.iter().max().unwrap_or(&0),
            options.commands,
            percentile(&attempts, 0.5),
            percentile(&attempts, 0.99),
            attempts.last().unwrap_or(&0),
            elapsed[elapsed.len() / 2].as_millis(),
        );
    }
    Ok(())
}

async fn main_async(options: Options) -> Result<(), String> {
    println!(
        "{} tasks, {} commands on one stream, {} runs per row; attempts over all commands of all runs, time the median run.\n",
        options.tasks, options.commands, options.runs
    );
    println!("| store | policy | gave up | p50 attempts | p99 attempts | worst | time |");
    println!("|---|---|---|---|---|---|---|");
    for store in &options.stores {
        match *store {
            "memory" => measure("memory", InMemoryStore::new(), &options).await?,
            "sqlite" => {
                let (_directory, store) = es_bench::fresh::sqlite("contention.db")
                    .await
                    .map_err(|error| error.to_string())?;
                measure("SQLite", store, &options).await?;
            }
            _ => {
                let schema = es_bench::fresh::postgres().await.map_err(|error| error.to_string())?;
                measure("PostgreSQL", schema.store().clone(), &options).await?;
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("contention: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("contention: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_async(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("contention: {error}");
            ExitCode::FAILURE
        }
    }
}
