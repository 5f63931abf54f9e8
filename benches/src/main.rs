//! `es-bench`: runs the benchmark and prints the markdown tables.
//!
//! ```text
//! es-bench [--quick | --smoke] [--repetitions N] [--sqlite | --postgres | --only 1a,s3a,...]
//!          [--write docs/BENCHMARKS.md]
//! ```
//!
//! PostgreSQL scenarios use `DATABASE_URL`, or start a throwaway PostgreSQL from the binaries on
//! the machine; SQLite scenarios use files in a fresh directory under `$TMPDIR` (or `/tmp`).

use std::path::Path;
use std::process::ExitCode;

use es_bench::measure::{self, Context};
use es_bench::run::{self, Options, CHILD_ARG, DIR_ENV, PREPARE_ARG, RESULT_PREFIX, URL_ENV};
use es_bench::scenario::{Backend, Implementation, Scenario, Sizes};
use es_bench::{report, BenchResult};

const USAGE: &str = "usage: es-bench [--quick | --smoke] [--repetitions N]
                [--sqlite | --postgres | --only SCENARIO,...] [--write PATH]

Runs every scenario and prints markdown tables: on PostgreSQL, es-rs, cqrs-es + postgres-es and
raw sqlx against DATABASE_URL (or a throwaway PostgreSQL server); on SQLite, es-rs and raw
rusqlite on files in a fresh directory under $TMPDIR (or /tmp).

  --quick          the issue's sizes with fewer repetitions (2) and iterations
  --smoke          tiny sizes, one repetition: checks that everything runs
  --repetitions N  repeat every measurement N times (default: 5, --quick 2, --smoke 1)
  --sqlite         only the SQLite scenarios (s1a s3a s4b s5): no PostgreSQL needed
  --postgres       only the PostgreSQL scenarios
  --only LIST      only these scenarios (comma-separated): PostgreSQL 1a 1b 2a 2b 2c 3a 3b 3c 4a
                   4b 5 6 7 8 9, SQLite s1a s3a s4b s5
  --write PATH     also write the benchmark document (docs/BENCHMARKS.md) to PATH: the sections
                   of the stores measured are rewritten, the others kept as they are in PATH";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("es-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> BenchResult<()> {
    match args.first().map(String::as_str) {
        Some(CHILD_ARG) => child(&args[1..], true),
        Some(PREPARE_ARG) => child(&args[1..], false),
        _ => parent(args),
    }
}

/// A child: `IMPL RUN SIZES REPETITION SCENARIO` when measuring, `IMPL RUN SIZES REPETITION
/// BACKEND` when seeding.
fn child(args: &[String], measuring: bool) -> BenchResult<()> {
    let [implementation, run_id, sizes, repetition, last] = args else {
        return Err("bad child arguments".into());
    };
    let implementation = Implementation::parse(implementation).ok_or("unknown implementation")?;
    let sizes = Sizes::named(sizes).ok_or("unknown sizes")?;
    let (scenario, backend) = if measuring {
        let scenario = Scenario::parse(last).ok_or("unknown scenario")?;
        (Some(scenario), scenario.backend())
    } else {
        (None, Backend::parse(last).ok_or("unknown backend")?)
    };
    let url = std::env::var(URL_ENV).ok();
    let dir = std::env::var_os(DIR_ENV);
    let context = Context {
        backend,
        url: url.as_deref(),
        dir: dir.as_deref().map(Path::new),
        run: run_id,
        repetition: repetition.parse()?,
        sizes: &sizes,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let Some(scenario) = scenario else {
        return runtime.block_on(measure::prepare(implementation, context));
    };
    let measurement = runtime.block_on(measure::measure(scenario, implementation, context))?;
    println!("{RESULT_PREFIX}{}", serde_json::to_string(&measurement)?);
    Ok(())
}

fn parent(args: &[String]) -> BenchResult<()> {
    let mut sizes = Sizes::full();
    let mut repetitions = None;
    let mut scenarios = Scenario::ALL.to_vec();
    let mut write = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--quick" => sizes = Sizes::quick(),
            "--smoke" => sizes = Sizes::smoke(),
            "--repetitions" => {
                let count = rest.next().ok_or("--repetitions needs a number")?;
                let count: usize = count
                    .parse()
                    .map_err(|_| format!("--repetitions: `{count}` is not a number"))?;
                repetitions = Some(count.max(1));
            }
            "--sqlite" => scenarios = Backend::Sqlite.scenarios(),
            "--postgres" => scenarios = Backend::Postgres.scenarios(),
            "--only" => {
                let list = rest.next().ok_or("--only needs a list of scenarios")?;
                scenarios = list
                    .split(',')
                    .map(|id| Scenario::parse(id.trim()).ok_or_else(|| format!("unknown scenario `{id}`")))
                    .collect::<Result<_, _>>()?;
                scenarios.sort();
                scenarios.dedup();
            }
            "--write" => write = Some(rest.next().ok_or("--write needs a path")?.clone()),
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument `{other}`\n\n{USAGE}").into()),
        }
    }
    if let Some(repetitions) = repetitions {
        sizes.repetitions = repetitions;
    }
    let command = std::env::var("ES_BENCH_COMMAND")
        .ok()
        .filter(|command| !command.is_empty())
        .unwrap_or_else(|| {
            let mut command = "cargo run --release -p es-bench --".to_owned();
            for arg in args {
                command.push(' ');
                command.push_str(arg);
            }
            command
        });
    let results = run::run(Options {
        sizes,
        scenarios,
        command,
    })?;
    println!("{}", report::all_tables(&results));
    if let Some(path) = write {
        // The sections of the stores this run did not measure are kept from the file.
        let existing = match std::fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(format!("cannot read {path}: {error}").into()),
        };
        std::fs::write(&path, report::document(&results, existing.as_deref())?)?;
        eprintln!("es-bench: wrote {path}");
    }
    Ok(())
}
