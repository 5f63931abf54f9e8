//! `soak`: a long run at a fixed rate with two projections running, sampling the process's
//! memory and the projections' lag (issue 13): memory must stay flat and lag bounded.
//!
//! ```text
//! soak [--minutes M] [--rate N] [--writers N] [--sample-seconds S] [--postgres] [--sqlite]
//! ```
//!
//! On a fresh PostgreSQL schema (`DATABASE_URL`, or a throwaway server) or a fresh SQLite file:
//! two projections run with `ProjectionRunner::run` on the store's wake-up, each writing one
//! row per event into a read-model table of its own (the projections of the `latency`
//! benchmark); `--writers` tasks execute commands through `Repository::execute` (one event
//! each) at `--rate` commands per second in all, for `--minutes`. Every `--sample-seconds` the
//! process's resident memory (`VmRSS` of `/proc/self/status`) and each projection's lag (events
//! and seconds behind, `ProjectionRunner::lag`) are sampled. At the end the projections must
//! catch up and hold one row per event written.

// The binary shares the latency benchmark's stores and projections.
#[path = "latency/backend.rs"]
mod backend;
// Only part of the latency model is used here (no commit marks or latencies).
#[allow(dead_code)]
#[path = "latency/model.rs"]
mod model;

use es_bench::flags::value_of;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use es_bench::BenchResult;
use es_core::{ProjectionError, ProjectionRunner, Repository, RunnerOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use backend::Backend;
use model::{take_reading, writer_ticks, First, Meter, Rows, Second, Table};

const USAGE: &str = "usage: soak [--minutes M] [--rate N] [--writers N] [--sample-seconds S] [--postgres] [--sqlite]

  --minutes M         how long the writers write (default 10)
  --rate N            commands per second, all writers together (default 200)
  --writers N         writer tasks (default 8)
  --sample-seconds S  how often memory and lag are sampled (default 10)
  --postgres          PostgreSQL (DATABASE_URL, or a throwaway server); the default
  --sqlite            SQLite, on a file in a fresh temporary directory";

/// How long the projections may take to catch up once the writers stop.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

struct Options {
    duration: Duration,
    rate: f64,
    writers: usize,
    sample: Duration,
    stores: Vec<&'static str>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        duration: Duration::from_secs(600),
        rate: 200.0,
        writers: 8,
        sample: Duration::from_secs(10),
        stores: Vec::new(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut number = |name: &str| {
            value_of(&mut args, name, "a number above 0", |value: &f64| {
                value.is_finite() && *value > 0.0
            })
        };
        match arg.as_str() {
            "--minutes" => options.duration = Duration::from_secs_f64(number("--minutes")? * 60.0),
            "--rate" => options.rate = number("--rate")?,
            "--writers" => options.writers = number("--writers")?.ceil() as usize,
            "--sample-seconds" => options.sample = Duration::from_secs_f64(number("--sample-seconds")?),
            "--postgres" => options.stores.push("postgres"),
            "--sqlite" => options.stores.push("sqlite"),
            other => return Err(format!("unknown argument {other}\n\n{USAGE}")),
        }
    }
    if options.stores.is_empty() {
        options.stores.push("postgres");
    }
    Ok(options)
}

/// The process's resident memory, in KiB.
fn rss_kib() -> BenchResult<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .ok_or("no VmRSS in /proc/self/status")?;
    let kib = line.split_whitespace().nth(1).ok_or("an empty VmRSS line")?;
    Ok(kib.parse()?)
}

/// One sample.
struct Sample {
    at: Duration,
    written: u64,
    rss_kib: u64,
    /// Events and seconds behind, per projection.
    lag: Vec<(u64, f64)>,
}

/// What a run gave.
struct Soak {
    store: &'static str,
    written: u64,
    failed: u64,
    rss_start: u64,
    samples: Vec<Sample>,
    rss_end: u64,
    drained: Duration,
}

/// A projection runner at work.
fn spawn_runner<B: Backend, T: Table>(
    store: &B,
    wake_up: B::WakeUp,
    stopped: &watch::Receiver<bool>,
) -> JoinHandle<Result<(), ProjectionError>> {
    let projection = Rows::<T, B::Context>::new(None, Arc::default());
    let runner =
        ProjectionRunner::new(projection, store.clone(), store.checkpoints()).with_options(RunnerOptions::default());
    let mut stopped = stopped.clone();
    tokio::spawn(async move {
        runner
            .run(wake_up, async move {
                let _ = stopped.wait_for(|&stop| stop).await;
            })
            .await
    })
}

/// Events and seconds behind of projection `T`, read through a runner that does not run.
async fn lag<B: Backend, T: Table>(store: &B) -> BenchResult<(u64, f64)> {
    let projection = Rows::<T, B::Context>::new(None, Arc::default());
    let lag = ProjectionRunner::new(projection, store.clone(), store.checkpoints())
        .lag()
        .await?;
    Ok((lag.events_behind, lag.seconds_behind))
}

/// The writers: each executes commands at its share of the rate until `end`; counts what was
/// written and what failed (a soak goes on after a failure, and reports it).
fn write<B: Backend>(
    store: &B,
    options: &Options,
    written: &Arc<AtomicU64>,
    failed: &Arc<AtomicU64>,
) -> Vec<JoinHandle<()>> {
    let repository = Arc::new(Repository::<Meter, _>::new(store.clone()));
    let period = Duration::from_secs_f64(options.writers as f64 / options.rate);
    let start = tokio::time::Instant::now();
    let end = start + options.duration;
    (0..options.writers)
        .map(|writer| {
            let (repository, written, failed) = (Arc::clone(&repository), Arc::clone(written), Arc::clone(failed));
            let mut ticks = writer_ticks(start, period, writer, options.writers);
            tokio::spawn(async move {
                for command in 0u64.. {
                    if ticks.tick().await >= end {
                        break;
                    }
                    match take_reading(&repository, writer, command).await {
                        Ok(_) => written.fetch_add(1, Ordering::Relaxed),
                        Err(error) => {
                            eprintln!("soak: a command failed: {error}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect()
}

async fn soak<B: Backend>(store: B, options: &Options) -> BenchResult<Soak> {
    for table in [First::NAME, Second::NAME] {
        store.create_table(table).await?;
    }
    let (stop, stopped) = watch::channel(false);
    let runners = [
        spawn_runner::<B, First>(&store, store.wake_up().await?, &stopped),
        spawn_runner::<B, Second>(&store, store.wake_up().await?, &stopped),
    ];
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_start = rss_kib()?;
    let (written, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let writers = write(&store, options, &written, &failed);
    let mut samples = Vec::new();
    let mut next = started + options.sample;
    while writers.iter().any(|writer| !writer.is_finished()) {
        if Instant::now() >= next {
            next += options.sample;
            let sample = Sample {
                at: started.elapsed(),
                written: written.load(Ordering::Relaxed),
                rss_kib: rss_kib()?,
                lag: vec![lag::<B, First>(&store).await?, lag::<B, Second>(&store).await?],
            };
            eprintln!(
                "soak: {:>5.0} s, {} events, RSS {} KiB, lag {:?}",
                sample.at.as_secs_f64(),
                sample.written,
                sample.rss_kib,
                sample.lag
            );
            samples.push(sample);
        }
        if runners.iter().any(JoinHandle::is_finished) {
            return Err("a projection stopped during the soak".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_end = rss_kib()?;
    let written = written.load(Ordering::Relaxed);
    let drain = Instant::now();
    loop {
        let (first, second) = (lag::<B, First>(&store).await?, lag::<B, Second>(&store).await?);
        if first.0 == 0 && second.0 == 0 && store.rows(First::NAME).await? >= written {
            break;
        }
        if drain.elapsed() > DRAIN_LIMIT {
            return Err(format!("the projections did not catch up within {DRAIN_LIMIT:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = drain.elapsed();
    stop.send_replace(true);
    for runner in runners {
        runner.await??;
    }
    for table in [First::NAME, Second::NAME] {
        let rows = store.rows(table).await?;
        if rows != written {
            return Err(format!("{table} has {rows} rows for {written} events").into());
        }
    }
    Ok(Soak {
        store: B::LABEL,
        written,
        failed: failed.load(Ordering::Relaxed),
        rss_start,
        samples,
        rss_end,
        drained,
    })
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn print(run: &Soak, options: &Options) {
    let seconds = options.duration.as_secs_f64();
    let rss_max = run
        .samples
        .iter()
        .map(|s| s.rss_kib)
        .chain([run.rss_start, run.rss_end])
        .max()
        .unwrap_or(0);
    let max_events = run
        .samples
        .iter()
        .flat_map(|s| s.lag.iter().map(|l| l.0))
        .max()
        .unwrap_or(0);
    let max_seconds = run
        .samples
        .iter()
        .flat_map(|s| s.lag.iter().map(|l| l.1))
        .fold(0.0, f64::max);
    // Memory once warm: the first sample after a minute (or the first sample).
    let warm = run
        .samples
        .iter()
        .find(|s| s.at >= Duration::from_secs(60))
        .or(run.samples.first())
        .map_or(run.rss_start, |s| s.rss_kib);
    println!(
        "\n{}: {} events in {:.0} s ({:.1}/s), {} commands failed; RSS start {}, warm (1 min) {}, end {}, max {}; \
         max lag {} events / {:.2} s; caught up {:.2} s after the writers stopped; every projection holds one \
         row per event.\n",
        run.store,
        run.written,
        seconds,
        run.written as f64 / seconds,
        run.failed,
        mib(run.rss_start),
        mib(warm),
        mib(run.rss_end),
        mib(rss_max),
        max_events,
        max_seconds,
        run.drained.as_secs_f64()
    );
    println!("| at | events | RSS | lag (events, first / second) | lag (seconds, first / second) |");
    println!("|---:|---:|---:|---:|---:|");
    for sample in &run.samples {
        let events: Vec<String> = sample.lag.iter().map(|l| l.0.to_string()).collect();
        let secs: Vec<String> = sample.lag.iter().map(|l| format!("{:.2}", l.1)).collect();
        println!(
            "| {:.0} s | {} | {} | {} | {} |",
            sample.at.as_secs_f64(),
            sample.written,
            mib(sample.rss_kib),
            events.join(" / "),
            secs.join(" / ")
        );
    }
}

async fn main_async(options: Options) -> BenchResult<()> {
    println!(
        "{} writers, {} commands/s in all (one event each), for {:.0} s; two projections with default runner \
         options on the store's wake-up; memory and lag sampled every {:.0} s.",
        options.writers,
        options.rate,
        options.duration.as_secs_f64(),
        options.sample.as_secs_f64()
    );
    for store in &options.stores {
        let run = if *store == "sqlite" {
            let (_directory, store) = es_bench::fresh::sqlite("soak.db").await?;
            soak(store, &options).await?
        } else {
            let schema = es_bench::fresh::postgres().await?;
            soak(schema.store().clone(), &options).await?
        };
        print(&run, &options);
    }
    Ok(())
}

fn main() -> ExitCode {
    es_bench::main_with("soak", USAGE, parse, main_async)
}
