//! `es-bench`: runs the benchmark and prints the markdown tables.
//!
//! ```text
//! es-bench [--quick | --smoke] [--only 1a,3c,...] [--write docs/BENCHMARKS.md]
//! ```
//!
//! Uses `DATABASE_URL`, or starts a throwaway PostgreSQL from the binaries on the machine.

use std::process::ExitCode;

use es_bench::measure::{self, Context};
use es_bench::run::{self, Options, CHILD_ARG, PREPARE_ARG, RESULT_PREFIX, URL_ENV};
use es_bench::scenario::{Implementation, Scenario, Sizes};
use es_bench::{report, BenchResult};

const USAGE: &str = "usage: es-bench [--quick | --smoke] [--only SCENARIO,...] [--write PATH]

Runs every scenario for es-rs, cqrs-es + postgres-es and raw sqlx against DATABASE_URL (or a
throwaway PostgreSQL server) and prints a markdown table.

  --quick          the issue's sizes with fewer repetitions (2) and iterations
  --smoke          tiny sizes, one repetition: checks that everything runs
  --only LIST      only these scenarios: 1a 1b 2a 2b 2c 3a 3b 3c 4a 4b 5 6 (comma-separated)
  --write PATH     also write the benchmark document (docs/BENCHMARKS.md) to PATH";

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

/// A child: `IMPL RUN SIZES REPETITION [SCENARIO]`.
fn child(args: &[String], measuring: bool) -> BenchResult<()> {
    let [implementation, run_id, sizes, repetition, rest @ ..] = args else {
        return Err("bad child arguments".into());
    };
    let implementation = Implementation::parse(implementation).ok_or("unknown implementation")?;
    let sizes = Sizes::named(sizes).ok_or("unknown sizes")?;
    let url = std::env::var(URL_ENV)?;
    let context = Context {
        url: &url,
        run: run_id,
        repetition: repetition.parse()?,
        sizes: &sizes,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if !measuring {
        return runtime.block_on(measure::prepare(implementation, context));
    }
    let scenario = rest
        .first()
        .and_then(|id| Scenario::parse(id))
        .ok_or("unknown scenario")?;
    let measurement = runtime.block_on(measure::measure(scenario, implementation, context))?;
    println!("{RESULT_PREFIX}{}", serde_json::to_string(&measurement)?);
    Ok(())
}

fn parent(args: &[String]) -> BenchResult<()> {
    let mut sizes = Sizes::full();
    let mut scenarios = Scenario::ALL.to_vec();
    let mut write = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--quick" => sizes = Sizes::quick(),
            "--smoke" => sizes = Sizes::smoke(),
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
    println!("{}", report::tables(&results));
    if let Some(path) = write {
        std::fs::write(&path, report::document(&results))?;
        eprintln!("es-bench: wrote {path}");
    }
    Ok(())
}
