//! The child process's side: seeding the read schemas (or files) of one implementation, and
//! measuring one (scenario, implementation) run.
//!
//! Every timed section is preceded by an untimed warm-up of the same operation, so connections
//! are open and statements prepared. Each run reports its figures, a `check` string that must
//! be the same for all the scenario's implementations (they did the same work and folded the
//! same state; on SQLite, with the same settings), and the process's peak resident memory.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::model::{self, StoredEvent, Summary, Tally};
use crate::scenario::{Backend, Implementation, Scenario, Sizes};
use crate::stats::{median, median_ms, millis, quantile};
use crate::subject::{Location, Setup, State, Subject};
use crate::{ours, peer, raw, read_model, system, BenchError, BenchResult};

/// The stream of scenarios 3a and 3b.
pub const LOAD_STREAM: &str = "load";
/// The stream of scenario 3c.
pub const LOAD_LARGE_STREAM: &str = "load-large";

/// What one run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// The figures, by [`Metric::key`](crate::scenario::Metric::key).
    pub metrics: BTreeMap<String, f64>,
    /// What the run wrote or read, which all implementations must agree on.
    pub check: String,
    /// The run's peak resident set size (`VmHWM`), in KiB.
    pub peak_rss_kib: u64,
}

/// The name of a schema (or file, with `.db`) of run `run` for `implementation`, e.g.
/// `esb_1a2b3c4d_ours_load`.
pub fn schema_name(run: &str, implementation: Implementation, purpose: &str) -> String {
    format!("esb_{run}_{}_{purpose}", implementation.id())
}

/// Where a child finds the server and its schemas, or the directory of its files.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The store of the scenario (or of the seeding).
    pub backend: Backend,
    /// The PostgreSQL server, for its scenarios.
    pub url: Option<&'a str>,
    /// The directory of the SQLite files, for its scenarios.
    pub dir: Option<&'a Path>,
    /// The run id in schema and file names.
    pub run: &'a str,
    /// The repetition, for fresh schema names.
    pub repetition: usize,
    /// The sizes.
    pub sizes: &'a Sizes,
}

/// A schema's name or a file's path: where a [`Location`] points.
#[derive(Debug, Clone)]
enum Place {
    Schema { url: String, schema: String },
    File(PathBuf),
}

impl Place {
    fn location(&self) -> Location<'_> {
        match self {
            Self::Schema { url, schema } => Location::Postgres { url, schema },
            Self::File(path) => Location::Sqlite { path },
        }
    }
}

impl Context<'_> {
    /// Where `implementation` keeps its events for `purpose` in this run.
    fn place(&self, implementation: Implementation, purpose: &str) -> BenchResult<Place> {
        let name = schema_name(self.run, implementation, purpose);
        Ok(match self.backend {
            Backend::Postgres => Place::Schema {
                url: self
                    .url
                    .ok_or("no PostgreSQL server for a PostgreSQL scenario")?
                    .to_owned(),
                schema: name,
            },
            Backend::Sqlite => {
                let dir = self.dir.ok_or("no directory for the files of an SQLite scenario")?;
                Place::File(dir.join(format!("{name}.db")))
            }
        })
    }

    /// Connects `implementation` to its schema (or file) for `purpose` in this run, creating the
    /// schema and its tables if `create`.
    async fn connect(
        &self,
        implementation: Implementation,
        purpose: &str,
        create: bool,
        state: State,
    ) -> BenchResult<Subject> {
        let place = self.place(implementation, purpose)?;
        let setup = Setup {
            location: place.location(),
            create,
            state,
        };
        Subject::connect(implementation, setup).await
    }

    /// A [`Fresh`] schema (or file) for the writes of `scenario` in this repetition.
    async fn fresh(&self, implementation: Implementation, scenario: Scenario, state: State) -> BenchResult<Fresh> {
        let purpose = format!("w{}_{}", scenario.id(), self.repetition);
        let place = self.place(implementation, &purpose)?;
        if let Place::File(path) = &place {
            // Fresh means fresh, even if a failed run left one behind.
            crate::subject::remove_database_files(path)?;
        }
        let setup = Setup {
            location: place.location(),
            create: true,
            state,
        };
        let subject = Subject::connect(implementation, setup).await?;
        Ok(Fresh { subject, place })
    }
}

/// Seeds the read schemas (or files) of `implementation` through its own write path: the
/// streams of scenario 3 (on PostgreSQL, snapshotted every `load_events` events, and the large
/// one of 3c) and the streams of scenario 5.
pub async fn prepare(implementation: Implementation, context: Context<'_>) -> BenchResult<()> {
    let sizes = context.sizes;
    let load_state = match context.backend {
        Backend::Postgres => State::Snapshots(sizes.load_events),
        // No SQLite scenario reads snapshots.
        Backend::Sqlite => State::Replay,
    };
    let load = context.connect(implementation, "load", true, load_state).await?;
    seed_stream(&load, LOAD_STREAM, sizes.load_events, sizes.load_events).await?;
    if context.backend == Backend::Postgres {
        seed_stream(&load, LOAD_LARGE_STREAM, sizes.load_large_events, sizes.load_events).await?;
    }
    let all = context.connect(implementation, "all", true, State::Replay).await?;
    let per_stream = sizes.read_all_events / sizes.read_all_streams;
    for stream in 0..sizes.read_all_streams {
        all.import(&format!("all-{stream:04}"), per_stream).await?;
    }
    Ok(())
}

/// Writes `events` events to the new stream `id` in commands of at most `chunk` events.
async fn seed_stream(subject: &Subject, id: &str, events: u64, chunk: u64) -> BenchResult<()> {
    let first = events.min(chunk);
    subject.import(id, first).await?;
    let mut written = first;
    while written < events {
        let count = chunk.min(events - written);
        subject.deposit(id, count).await?;
        written += count;
    }
    subject.finish_seeding(id).await
}

/// Runs `scenario` once for `implementation` and reports what it measured.
pub async fn measure(
    scenario: Scenario,
    implementation: Implementation,
    context: Context<'_>,
) -> BenchResult<Measurement> {
    let (metrics, check) = match scenario {
        Scenario::NewSequential => new_sequential(implementation, context, scenario).await?,
        Scenario::NewConcurrent => new_concurrent(implementation, context).await?,
        Scenario::Live => live(implementation, context, scenario, State::Replay).await?,
        Scenario::LiveSnapshots => {
            let state = State::Snapshots(context.sizes.live_snapshot_every);
            live(implementation, context, scenario, state).await?
        }
        Scenario::LiveCache => live(implementation, context, scenario, State::Cached).await?,
        Scenario::Load => {
            let (events, iterations) = (context.sizes.load_events, context.sizes.load_iterations);
            load(implementation, context, LOAD_STREAM, events, iterations, State::Replay).await?
        }
        Scenario::LoadSnapshot => {
            let (events, iterations) = (context.sizes.load_events, context.sizes.load_iterations);
            let state = State::Snapshots(events);
            load(implementation, context, LOAD_STREAM, events, iterations, state).await?
        }
        Scenario::LoadLarge => {
            let events = context.sizes.load_large_events;
            let iterations = context.sizes.load_large_iterations;
            load(
                implementation,
                context,
                LOAD_LARGE_STREAM,
                events,
                iterations,
                State::Replay,
            )
            .await?
        }
        Scenario::Batch => {
            let (events, iterations) = (context.sizes.batch_events, context.sizes.batch_iterations);
            batch(implementation, context, scenario, events, iterations).await?
        }
        Scenario::BatchLarge => {
            let (events, iterations) = (context.sizes.batch_large_events, context.sizes.batch_large_iterations);
            batch(implementation, context, scenario, events, iterations).await?
        }
        Scenario::ReadAll | Scenario::SqliteReadAll => read_all(implementation, context).await?,
        Scenario::Upcast => upcast(implementation, context.sizes).await?,
        Scenario::BulkImport => crate::bulk_import::measure(implementation, context).await?,
        Scenario::CatchUp => catch_up(implementation, context).await?,
        Scenario::Storage => storage(implementation, context).await?,
        Scenario::SqliteNewSequential => new_sequential(implementation, context, scenario).await?,
        Scenario::SqliteLoad => {
            let (events, iterations) = (context.sizes.load_events, context.sizes.load_iterations);
            load(implementation, context, LOAD_STREAM, events, iterations, State::Replay).await?
        }
        Scenario::SqliteBatchLarge => {
            let (events, iterations) = (context.sizes.batch_large_events, context.sizes.batch_large_iterations);
            batch(implementation, context, scenario, events, iterations).await?
        }
    };
    Ok(Measurement {
        metrics: metrics
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect(),
        check,
        peak_rss_kib: system::peak_rss_kib()?,
    })
}

type Figures = (Vec<(&'static str, f64)>, String);

/// A fresh schema (or file) for a writing scenario, removed by [`Fresh::remove`].
struct Fresh {
    subject: Subject,
    place: Place,
}

impl Fresh {
    async fn remove(self) -> BenchResult<()> {
        self.subject.remove(self.place.location()).await
    }
}

/// `check`, followed on SQLite by the settings `subject` runs with, so the cross-check of the
/// implementations also compares their durability.
async fn with_settings(subject: &Subject, check: String) -> BenchResult<String> {
    Ok(match subject.sqlite_settings().await? {
        Some(settings) => format!("{check}; {settings}"),
        None => check,
    })
}

async fn timed<F, T>(operation: F) -> BenchResult<(T, Duration)>
where
    F: Future<Output = BenchResult<T>>,
{
    let start = Instant::now();
    let value = operation.await?;
    Ok((value, start.elapsed()))
}

/// Checks that a load folded what the stream holds.
fn expect_summary(found: Summary, events: u64) -> BenchResult<String> {
    let expected = Summary::of_stream(events);
    if found != expected {
        return Err(format!("loaded {found}, expected {expected}").into());
    }
    Ok(found.to_string())
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn latency_figures(count: u64, total: Duration, latencies: &[Duration]) -> Vec<(&'static str, f64)> {
    let latencies = millis(latencies);
    vec![
        ("events_per_s", per_second(count, total)),
        ("p50_ms", quantile(&latencies, 0.5)),
        ("p99_ms", quantile(&latencies, 0.99)),
    ]
}

async fn new_sequential(
    implementation: Implementation,
    context: Context<'_>,
    scenario: Scenario,
) -> BenchResult<Figures> {
    let fresh = context.fresh(implementation, scenario, State::Replay).await?;
    let subject = &fresh.subject;
    for i in 0..context.sizes.warmup {
        subject.open(&format!("warm-{i}")).await?;
    }
    let count = context.sizes.sequential_commands;
    let mut latencies = Vec::with_capacity(usize::try_from(count)?);
    let start = Instant::now();
    for i in 0..count {
        let ((), latency) = timed(subject.open(&format!("account-{i}"))).await?;
        latencies.push(latency);
    }
    let total = start.elapsed();
    let check = format!(
        "{count} accounts; {}",
        expect_summary(subject.load("account-0").await?, 1)?
    );
    let check = with_settings(subject, check).await?;
    fresh.remove().await?;
    Ok((latency_figures(count, total, &latencies), check))
}

async fn new_concurrent(implementation: Implementation, context: Context<'_>) -> BenchResult<Figures> {
    let fresh = context
        .fresh(implementation, Scenario::NewConcurrent, State::Replay)
        .await?;
    let tasks = context.sizes.tasks;
    let per_task = context.sizes.concurrent_commands / tasks;
    // The warm-up runs the tasks too, so that every task has its connection open.
    let warmup = context.sizes.warmup.div_ceil(tasks).max(2);
    let (_, warm_latencies) = concurrent_opens(&fresh.subject, "warm", tasks, warmup).await?;
    drop(warm_latencies);
    let (total, latencies) = concurrent_opens(&fresh.subject, "account", tasks, per_task).await?;
    let count = tasks * per_task;
    let check = format!(
        "{count} accounts; {}",
        expect_summary(fresh.subject.load("account-0-0").await?, 1)?
    );
    fresh.remove().await?;
    Ok((latency_figures(count, total, &latencies), check))
}

/// `tasks` tasks each open `per_task` accounts; the wall time and every command's latency.
async fn concurrent_opens(
    subject: &Subject,
    prefix: &str,
    tasks: u64,
    per_task: u64,
) -> BenchResult<(Duration, Vec<Duration>)> {
    let mut set = tokio::task::JoinSet::new();
    let start = Instant::now();
    for task in 0..tasks {
        let subject = subject.clone();
        let prefix = prefix.to_owned();
        set.spawn(async move {
            let mut latencies = Vec::new();
            for i in 0..per_task {
                let ((), latency) = timed(subject.open(&format!("{prefix}-{task}-{i}"))).await?;
                latencies.push(latency);
            }
            Ok::<_, BenchError>(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(joined) = set.join_next().await {
        latencies.extend(joined??);
    }
    Ok((start.elapsed(), latencies))
}

async fn live(
    implementation: Implementation,
    context: Context<'_>,
    scenario: Scenario,
    state: State,
) -> BenchResult<Figures> {
    let fresh = context.fresh(implementation, scenario, state).await?;
    let subject = &fresh.subject;
    subject.open("warm").await?;
    for _ in 1..context.sizes.warmup {
        subject.deposit("warm", 1).await?;
    }
    let commands = context.sizes.live_commands;
    let start = Instant::now();
    subject.open("live").await?;
    for _ in 1..commands {
        subject.deposit("live", 1).await?;
    }
    let total = start.elapsed();
    let check = expect_summary(subject.load("live").await?, commands)?;
    fresh.remove().await?;
    Ok((vec![("commands_per_s", per_second(commands, total))], check))
}

async fn load(
    implementation: Implementation,
    context: Context<'_>,
    stream: &str,
    events: u64,
    iterations: usize,
    state: State,
) -> BenchResult<Figures> {
    let subject = context.connect(implementation, "load", false, state).await?;
    let mut check = expect_summary(subject.load(stream).await?, events)?;
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let (summary, elapsed) = timed(subject.load(stream)).await?;
        check = expect_summary(summary, events)?;
        times.push(elapsed);
    }
    let check = with_settings(&subject, check).await?;
    Ok((vec![("ms", median_ms(&times))], check))
}

async fn batch(
    implementation: Implementation,
    context: Context<'_>,
    scenario: Scenario,
    events: u64,
    iterations: usize,
) -> BenchResult<Figures> {
    let fresh = context.fresh(implementation, scenario, State::Replay).await?;
    let subject = &fresh.subject;
    subject.import("warm", events).await?;
    let mut times = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let ((), elapsed) = timed(subject.import(&format!("batch-{i}"), events)).await?;
        times.push(elapsed);
    }
    let check = with_settings(subject, expect_summary(subject.load("warm").await?, events)?).await?;
    fresh.remove().await?;
    let ms = median_ms(&times);
    Ok((vec![("ms", ms), ("events_per_s", events as f64 / (ms / 1e3))], check))
}

async fn read_all(implementation: Implementation, context: Context<'_>) -> BenchResult<Figures> {
    let sizes = context.sizes;
    let subject = context.connect(implementation, "all", false, State::Replay).await?;
    let per_stream = sizes.read_all_events / sizes.read_all_streams;
    let expected = Tally {
        events: per_stream * sizes.read_all_streams,
        amount: Summary::of_stream(per_stream).balance * i64::try_from(sizes.read_all_streams)?,
        legacy: 0,
    };
    let check_tally = |tally: Tally| {
        if tally == expected {
            Ok(tally.to_string())
        } else {
            Err(BenchError::from(format!("read {tally}, expected {expected}")))
        }
    };
    let mut check = check_tally(subject.read_all(sizes.read_all_page).await?)?;
    let mut times = Vec::with_capacity(sizes.passes);
    for _ in 0..sizes.passes {
        let (tally, elapsed) = timed(subject.read_all(sizes.read_all_page)).await?;
        check = check_tally(tally)?;
        times.push(elapsed.as_secs_f64());
    }
    let events_per_s = expected.events as f64 / median(&times);
    let check = with_settings(&subject, check).await?;
    Ok((vec![("events_per_s", events_per_s)], check))
}

/// Scenario 8: a fresh read model caught up from position 0, `passes` times.
async fn catch_up(implementation: Implementation, context: Context<'_>) -> BenchResult<Figures> {
    let sizes = context.sizes;
    let subject = context.connect(implementation, "all", false, State::Replay).await?;
    let schema = schema_name(context.run, implementation, "all");
    let per_stream = sizes.read_all_events / sizes.read_all_streams;
    let expected = read_model::expected_totals(sizes.read_all_streams, per_stream)?;
    let mut times = Vec::with_capacity(sizes.passes);
    for pass in 0..sizes.passes.max(1) {
        let pass = format!("{}_{pass}", context.repetition);
        let (seconds, totals) = match &subject {
            Subject::Ours(ours) => read_model::catch_up_ours(ours.store(), &pass).await?,
            Subject::Raw(raw) => read_model::catch_up_raw(raw.pool(), &schema, &pass).await?,
            _ => return Err(format!("scenario 8 is not measured for {implementation:?}").into()),
        };
        if totals != expected {
            return Err(format!("the read model holds {totals:?}, expected {expected:?}").into());
        }
        times.push(seconds);
    }
    let events = (per_stream * sizes.read_all_streams) as f64;
    let check = format!("balance {}, deposits {}", expected.0, expected.1);
    Ok((vec![("events_per_s", events / median(&times))], check))
}

/// Scenario 9: the bytes per event of scenario 5's events table and its indexes.
async fn storage(implementation: Implementation, context: Context<'_>) -> BenchResult<Figures> {
    let subject = context.connect(implementation, "all", false, State::Replay).await?;
    let schema = schema_name(context.run, implementation, "all");
    let pool = match &subject {
        Subject::Ours(ours) => ours.pool(),
        Subject::Peer(peer) => peer.pool(),
        Subject::Raw(raw) => raw.pool(),
        _ => return Err("scenario 9 runs on PostgreSQL".into()),
    };
    let [table, indexes, total] = read_model::bytes_per_row(pool, &schema, "events").await?;
    let check = format!("{} events", context.sizes.read_all_events);
    Ok((
        vec![("total_bytes", total), ("table_bytes", table), ("index_bytes", indexes)],
        check,
    ))
}

/// The stored events of scenario 6 in `implementation`'s format: deposits 1 to `events`, every
/// second one at schema version 1.
pub fn upcast_events(implementation: Implementation, events: u64) -> BenchResult<Vec<StoredEvent>> {
    (1..=events)
        .map(|index| {
            let v1 = model::stored_as_v1(index);
            match implementation {
                Implementation::Ours => ours::stored_deposit(index, v1),
                Implementation::Peer => peer::stored_deposit(index, v1),
                Implementation::Raw => raw::stored_deposit(index, v1),
            }
        })
        .collect()
}

/// One decoder of scenario 6, ready to run.
enum Decoder {
    Ours {
        events: Arc<Vec<StoredEvent>>,
        upcaster: bool,
    },
    Peer(cqrs_es::persist::PersistedEventStore<peer::MemoryRepository, peer::PeerAccount>),
    Raw {
        events: Arc<Vec<StoredEvent>>,
        upcaster: bool,
    },
}

impl Decoder {
    fn new(implementation: Implementation, events: Arc<Vec<StoredEvent>>, upcaster: bool) -> Self {
        match implementation {
            Implementation::Ours => Self::Ours { events, upcaster },
            Implementation::Peer => Self::Peer(peer::memory_store(events, upcaster)),
            Implementation::Raw => Self::Raw { events, upcaster },
        }
    }

    async fn run(&self) -> BenchResult<Tally> {
        Ok(match self {
            Self::Ours { events, upcaster: true } => ours::decode_with_upcaster(events)?,
            Self::Ours {
                events,
                upcaster: false,
            } => ours::decode_without_upcaster(events)?,
            Self::Peer(store) => peer::decode_with(store).await?,
            Self::Raw { events, upcaster } => raw::decode_all(events, *upcaster)?,
        })
    }
}

async fn upcast(implementation: Implementation, sizes: &Sizes) -> BenchResult<Figures> {
    let mixed = upcast_events(implementation, sizes.upcast_events)?;
    // Both current-version decoders read the very same events, so memory layout cannot favour
    // either.
    let current: Arc<Vec<StoredEvent>> = Arc::new(
        mixed
            .iter()
            .filter(|event| event.schema_version == 2)
            .cloned()
            .collect(),
    );
    let (mixed_count, current_count) = (mixed.len() as u64, current.len() as u64);
    let decoders = [
        Decoder::new(implementation, Arc::new(mixed), true),
        Decoder::new(implementation, Arc::clone(&current), true),
        Decoder::new(implementation, current, false),
    ];
    let mut tallies = Vec::new();
    for decoder in &decoders {
        tallies.push(decoder.run().await?);
    }
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    let mut paired = Vec::with_capacity(sizes.decode_passes);
    for pass in 0..sizes.decode_passes {
        // The two current-version decoders run back to back, in alternating order, so that
        // each pass gives a pair measured under the same conditions.
        let order = if pass % 2 == 0 { [0, 1, 2] } else { [0, 2, 1] };
        for index in order {
            let (_, elapsed) = timed(decoders[index].run()).await?;
            times[index].push(elapsed.as_secs_f64());
        }
        paired.push(times[2][pass] / times[1][pass]);
    }
    if tallies[1] != tallies[2] {
        return Err(format!("with an upcaster {}, without {}", tallies[1], tallies[2]).into());
    }
    let figures = vec![
        ("mixed_per_s", mixed_count as f64 / median(&times[0])),
        ("current_per_s", current_count as f64 / median(&times[1])),
        ("plain_per_s", current_count as f64 / median(&times[2])),
        ("with_vs_without", median(&paired)),
    ];
    Ok((figures, format!("all: {}; current half: {}", tallies[0], tallies[1])))
}
