//! `latency`: how long an appended event takes to reach the read models, with two projections
//! running, and how much a slow projection delays everyone else (issue 12).
//!
//! ```text
//! latency [--rate N] [--duration SECONDS] [--warmup SECONDS] [--writers N] [--slow-ms N]
//!         [--slow-handler[=none,before-writes,after-writes]] [--postgres] [--sqlite]
//! ```
//!
//! Each run, on a fresh PostgreSQL schema (`DATABASE_URL`, or a throwaway server) or a fresh
//! SQLite file: two projections run with `ProjectionRunner::run` on the store's wake-up, each
//! writing one row per event into its own read-model table, and a plain `GlobalLog::read_all`
//! reader tails the log on a wake-up of its own. `--writers` tasks then execute commands
//! through `Repository::execute` (one event each) at `--rate` commands per second in all, for
//! `--duration` seconds, plus `--warmup` seconds before and after whose events are not counted
//! (so the figures are the steady state: no connection set-up, and no last events that wait
//! for a poll because no further append wakes anyone up). An event's latency, per reader, is the instant the reader had it (for
//! a projection: the instant the commit of the batch that handled it returned, seen through a
//! wrapper of the checkpoint store; for the plain reader: the instant `read_all` returned it)
//! minus the instant `execute` returned (the append had committed).
//!
//! `--slow-handler` adds a third projection whose handler spends `--slow-ms` (100 ms) once per
//! batch: `before-writes` (the bare flag) before the batch's first write, like a call to another
//! service before writing; `after-writes` right after it. A comma-separated list runs each
//! variant in turn (`none` is the run without a slow projection).

// A binary's root finds modules beside itself: these live in a folder named after it.
#[path = "latency/backend.rs"]
mod backend;
#[path = "latency/model.rs"]
mod model;

use es_bench::flags::value_of;
use std::ops::Range;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use es_bench::BenchResult;
use es_core::{ProjectionError, ProjectionRunner, Repository, RunnerOptions, WakeUp};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use backend::Backend;
use model::{
    last_position, latencies, snapshot, take_reading, writer_ticks, First, Latencies, Mark, Marks, Meter, Rows, Second,
    Slow, Slowness, Table, Timed,
};

const USAGE: &str = "usage: latency [--rate N] [--duration SECONDS] [--warmup SECONDS] [--writers N] [--slow-ms N]
               [--slow-handler[=none,before-writes,after-writes]] [--postgres] [--sqlite]

  --rate N           commands per second, all writers together (default 400)
  --duration S       seconds of writing measured per run (default 20)
  --warmup S         seconds of writing before and after, not counted (default 2)
  --writers N        writer tasks (default 8)
  --slow-handler     add a projection that spends --slow-ms per batch before its writes;
                     =LIST runs each listed variant in turn: none, before-writes, after-writes
  --slow-ms N        the slow projection's time per batch (default 100)
  --postgres         PostgreSQL (DATABASE_URL, or a throwaway server); the default
  --sqlite           SQLite, on a file in a fresh temporary directory";

/// The plain reader's page, and how often it polls without a wake-up (as runners do).
const READ_PAGE: usize = 500;

/// How long the readers get to claim and connect before the writers start.
const SETTLE: Duration = Duration::from_millis(500);

/// How long every reader may take, after the writers stop, to reach the last event.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

struct Options {
    rate: f64,
    duration: Duration,
    warmup: Duration,
    writers: usize,
    slow_for: Duration,
    variants: Vec<Option<Slowness>>,
    stores: Vec<&'static str>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        rate: 400.0,
        duration: Duration::from_secs(20),
        warmup: Duration::from_secs(2),
        writers: 8,
        slow_for: Duration::from_millis(100),
        variants: vec![None],
        stores: Vec::new(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut number = |name: &str| {
            value_of(&mut args, name, "a number, 0 or more", |value: &f64| {
                value.is_finite() && *value >= 0.0
            })
        };
        match arg.as_str() {
            "--rate" => options.rate = number("--rate")?,
            "--duration" => options.duration = Duration::from_secs_f64(number("--duration")?),
            "--warmup" => options.warmup = Duration::from_secs_f64(number("--warmup")?),
            "--writers" => options.writers = number("--writers")?.ceil() as usize,
            "--slow-ms" => options.slow_for = Duration::from_secs_f64(number("--slow-ms")? / 1000.0),
            "--slow-handler" => options.variants = vec![Some(Slowness::BeforeWrites)],
            "--postgres" => options.stores.push("postgres"),
            "--sqlite" => options.stores.push("sqlite"),
            other => match other.strip_prefix("--slow-handler=") {
                Some(list) => options.variants = list.split(',').map(variant).collect::<Result<_, _>>()?,
                None => return Err(format!("unknown argument {other}\n\n{USAGE}")),
            },
        }
    }
    if options.rate <= 0.0 || options.duration.is_zero() || options.writers == 0 {
        return Err("--rate, --duration and --writers must be above 0".to_owned());
    }
    if options.stores.is_empty() {
        options.stores.push("postgres");
    }
    Ok(options)
}

fn variant(name: &str) -> Result<Option<Slowness>, String> {
    match name.trim() {
        "none" => Ok(None),
        "before-writes" => Ok(Some(Slowness::BeforeWrites)),
        "after-writes" => Ok(Some(Slowness::AfterWrites)),
        other => Err(format!(
            "unknown slow handler `{other}`: none, before-writes or after-writes"
        )),
    }
}

/// One reader's figures over a run.
struct ReaderFigures {
    name: String,
    latencies: Latencies,
    /// Commits (projections) or reads that returned events (the plain reader).
    batches: usize,
}

/// What one run gave.
struct Run {
    store: &'static str,
    slow: Option<Slowness>,
    /// Events appended within the counted window.
    events: usize,
    writing: Duration,
    readers: Vec<ReaderFigures>,
}

/// A projection runner at work, and the marks of its commits.
struct Running {
    name: String,
    commits: Marks,
    task: JoinHandle<Result<(), ProjectionError>>,
}

/// Resolves once `stopped` turns true (or its sender is gone).
async fn stop_signal(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|&stop| stop).await;
}

async fn spawn_runner<B: Backend, T: Table>(
    store: &B,
    slow: Option<(Slowness, Duration)>,
    stopped: &watch::Receiver<bool>,
) -> BenchResult<Running> {
    let batch_started = Arc::new(AtomicBool::new(false));
    let checkpoints = Timed::new(store.checkpoints(), Arc::clone(&batch_started));
    let commits = checkpoints.commits();
    let projection = Rows::<T, B::Context>::new(slow, batch_started);
    // The default options: batches of up to 500, a poll every 500 ms besides the wake-ups.
    let runner = ProjectionRunner::new(projection, store.clone(), checkpoints).with_options(RunnerOptions::default());
    let wake_up = store.wake_up().await?;
    let shutdown = stop_signal(stopped.clone());
    let name = match slow {
        Some((slowness, pause)) => format!("projection {} ({} ms {})", T::NAME, pause.as_millis(), slowness.label()),
        None => format!("projection {}", T::NAME),
    };
    Ok(Running {
        name,
        commits,
        task: tokio::spawn(async move { runner.run(wake_up, shutdown).await }),
    })
}

/// Tails the global log as a projection runner would, without a checkpoint store: reads on each
/// wake-up (or poll) until a short page, marking the last position of every page with events.
async fn plain_reader<B: Backend>(
    store: B,
    mut wake_up: B::WakeUp,
    marks: Marks,
    stopped: watch::Receiver<bool>,
) -> BenchResult<()> {
    let poll = RunnerOptions::default().poll_interval;
    let shutdown = stop_signal(stopped);
    tokio::pin!(shutdown);
    let mut after = 0;
    loop {
        let page = store.read_all(after, READ_PAGE).await?;
        let seen = Instant::now();
        if let Some(last) = page.last() {
            after = last.position;
            marks.lock().unwrap_or_else(PoisonError::into_inner).push((after, seen));
            if page.len() == READ_PAGE {
                continue;
            }
        }
        tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            () = wake_up.wait() => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
}

/// Runs the writers: each executes commands at its share of the rate, for the warm-up, the
/// duration and the warm-up again. Returns every appended event's position with the instant its
/// `execute` returned, and the window of those instants that counts.
async fn write<B: Backend>(store: B, options: &Options) -> BenchResult<(Vec<Mark>, Range<Instant>)> {
    let repository = Arc::new(Repository::<Meter, _>::new(store));
    let period = Duration::from_secs_f64(options.writers as f64 / options.rate);
    let start = tokio::time::Instant::now();
    let counted = start.into_std() + options.warmup;
    let window = counted..counted + options.duration;
    let end = start + options.duration + options.warmup * 2;
    let mut tasks = Vec::new();
    for writer in 0..options.writers {
        let repository = Arc::clone(&repository);
        let mut ticks = writer_ticks(start, period, writer, options.writers);
        tasks.push(tokio::spawn(async move {
            let mut appended = Vec::new();
            for command in 0u64.. {
                if ticks.tick().await >= end {
                    break;
                }
                let done = take_reading(&repository, writer, command)
                    .await
                    .map_err(|error| error.to_string())?;
                let returned = Instant::now();
                appended.extend(done.appended.iter().map(|event| (event.position, returned)));
            }
            Ok::<_, String>(appended)
        }));
    }
    let mut appended = Vec::new();
    for task in tasks {
        appended.extend(task.await??);
    }
    Ok((appended, window))
}

/// One run: readers up, writers for the duration, every reader drained, figures out.
async fn scenario<B: Backend>(store: B, slow: Option<Slowness>, options: &Options) -> BenchResult<Run> {
    let mut tables = vec![First::NAME, Second::NAME];
    if slow.is_some() {
        tables.push(Slow::NAME);
    }
    for table in &tables {
        store.create_table(table).await?;
    }
    let (stop, stopped) = watch::channel(false);
    let mut runners = vec![
        spawn_runner::<B, First>(&store, None, &stopped).await?,
        spawn_runner::<B, Second>(&store, None, &stopped).await?,
    ];
    if let Some(slowness) = slow {
        runners.push(spawn_runner::<B, Slow>(&store, Some((slowness, options.slow_for)), &stopped).await?);
    }
    let reader_marks = Marks::default();
    let reader = tokio::spawn(plain_reader(
        store.clone(),
        store.wake_up().await?,
        Arc::clone(&reader_marks),
        stopped.clone(),
    ));
    tokio::time::sleep(SETTLE).await;

    let (appended, window) = write(store.clone(), options).await?;
    let counted: Vec<Mark> = appended
        .iter()
        .copied()
        .filter(|(_, returned)| window.contains(returned))
        .collect();

    let head = appended.iter().map(|&(position, _)| position).max().unwrap_or(0);
    let deadline = Instant::now() + DRAIN_LIMIT;
    loop {
        let behind =
            runners.iter().any(|runner| last_position(&runner.commits) < head) || last_position(&reader_marks) < head;
        let stopped_early = runners.iter().any(|runner| runner.task.is_finished()) || reader.is_finished();
        if !behind || stopped_early {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the readers did not reach the last event within {DRAIN_LIMIT:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send_replace(true);
    let mut readers = Vec::new();
    for runner in runners {
        runner.task.await??;
        let commits = snapshot(&runner.commits);
        readers.push(ReaderFigures {
            name: runner.name,
            latencies: latencies(&counted, &commits),
            batches: counted_batches(&commits, &window),
        });
    }
    reader.await??;
    let reads = snapshot(&reader_marks);
    readers.push(ReaderFigures {
        name: "plain read_all reader".to_owned(),
        latencies: latencies(&counted, &reads),
        batches: counted_batches(&reads, &window),
    });
    for table in tables {
        let rows = store.rows(table).await?;
        if rows != appended.len() as u64 {
            return Err(format!("{table} has {rows} rows for {} events", appended.len()).into());
        }
    }
    Ok(Run {
        store: B::LABEL,
        slow,
        events: counted.len(),
        writing: options.duration,
        readers,
    })
}

/// The marks made within `window`: the batches of the counted part of the run.
fn counted_batches(marks: &[Mark], window: &Range<Instant>) -> usize {
    marks.iter().filter(|(_, at)| window.contains(at)).count()
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

fn slow_label(run: &Run, options: &Options) -> String {
    run.slow.map_or_else(
        || "none".to_owned(),
        |slowness| format!("{} ms {}", options.slow_for.as_millis(), slowness.label()),
    )
}

fn print_run(run: &Run, options: &Options) {
    println!(
        "\n{}, slow handler: {}. {} events appended in the {:.1} s counted ({:.1} events/s).\n",
        run.store,
        slow_label(run, options),
        run.events,
        run.writing.as_secs_f64(),
        run.events as f64 / run.writing.as_secs_f64(),
    );
    println!("| reader | batches | events/batch | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|---|");
    for reader in &run.readers {
        let latencies = &reader.latencies;
        println!(
            "| {} | {} | {:.1} | {} | {} | {} | {} |",
            reader.name,
            reader.batches,
            run.events as f64 / reader.batches.max(1) as f64,
            millis(latencies.percentile(0.5)),
            millis(latencies.percentile(0.9)),
            millis(latencies.percentile(0.99)),
            millis(latencies.samples.last().copied().unwrap_or_default()),
        );
    }
    // After the table, not inside it: a line between rows would cut the markdown table.
    for reader in &run.readers {
        let latencies = &reader.latencies;
        if latencies.missing > 0 || latencies.early > 0 {
            println!(
                "\n{}: {} events never seen, {} seen before their writer's task noted that execute \
                 returned (counted as 0 ms).",
                reader.name, latencies.missing, latencies.early
            );
        }
    }
}

fn print_summary(runs: &[Run], options: &Options) {
    println!("\nSummary: latency from `execute` returned to the reader having the event.\n");
    println!("| store | slow handler | reader | events/s | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|---|---|");
    for run in runs {
        for reader in &run.readers {
            let latencies = &reader.latencies;
            println!(
                "| {} | {} | {} | {:.0} | {} | {} | {} | {} |",
                run.store,
                slow_label(run, options),
                reader.name,
                run.events as f64 / run.writing.as_secs_f64(),
                millis(latencies.percentile(0.5)),
                millis(latencies.percentile(0.9)),
                millis(latencies.percentile(0.99)),
                millis(latencies.samples.last().copied().unwrap_or_default()),
            );
        }
    }
}

async fn main_async(options: Options) -> BenchResult<()> {
    println!(
        "{} writers, {} commands/s in all (one event each), {:.0} s counted per run after {:.0} s \
         of warm-up (and {:.0} s more, uncounted); two projections with default runner options on \
         the store's wake-up, and a plain read_all reader.",
        options.writers,
        options.rate,
        options.duration.as_secs_f64(),
        options.warmup.as_secs_f64(),
        options.warmup.as_secs_f64()
    );
    let mut runs = Vec::new();
    for store in &options.stores {
        for &slow in &options.variants {
            let run = if *store == "sqlite" {
                let (_directory, store) = es_bench::fresh::sqlite("latency.db").await?;
                scenario(store, slow, &options).await?
            } else {
                let schema = es_bench::fresh::postgres().await?;
                scenario(schema.store().clone(), slow, &options).await?
            };
            print_run(&run, &options);
            runs.push(run);
        }
    }
    print_summary(&runs, &options);
    Ok(())
}

fn main() -> ExitCode {
    es_bench::main_with("latency", USAGE, parse, main_async)
}
