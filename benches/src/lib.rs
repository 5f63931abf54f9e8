//! Benchmarks of es-rs on PostgreSQL against the most used Rust peer (`cqrs-es` + `postgres-es`)
//! and a raw sqlx baseline, on the same server, in the same run; and of es-rs on SQLite against a
//! raw rusqlite baseline, on files of the same kind.
//!
//! The binary `es-bench` (run it with `scripts/bench`) measures every scenario of
//! [`scenario::Scenario`] for the implementations of its [`scenario::Backend`] and prints
//! markdown tables; `--write docs/BENCHMARKS.md` also writes the document with the machine,
//! server and files it ran on, rewriting only the sections of the stores it measured. The
//! modules:
//!
//! - [`model`]: the account domain's shared data (deposits, the summary every load is checked
//!   against);
//! - [`ours`], [`peer`], [`raw`], [`raw_sqlite`]: the domain implemented four ways (es-rs on
//!   either store), and [`subject`] to drive them alike;
//! - [`bulk_import`]: scenario 7, es-rs's bulk import against a plain `COPY` of the same rows;
//! - [`scenario`]: scenarios, metrics, targets and sizes; [`measure`]: one measurement, in a
//!   child process; [`run`]: the parent that runs them all; [`report`]: the markdown;
//! - [`read_model`]: the scenarios over scenario 5's events (catch-up into a read model,
//!   storage per event);
//! - [`verdicts`]: why a target was missed, printed under the tables;
//! - [`flags`]: the flags of those binaries;
//! - [`fresh`]: fresh stores of either backend for the binaries `latency`, `soak`, `contention`
//!   and `cli_scale`;
//! - [`stats`] and [`system`]: medians, peak memory, machine, server and file system facts.

#![warn(missing_docs)]

pub mod bulk_import;
pub mod flags;
pub mod fresh;
pub mod measure;
pub mod model;
pub mod ours;
pub mod peer;
pub mod raw;
pub mod raw_sqlite;
pub mod read_model;
pub mod report;
pub mod run;
pub mod scenario;
pub mod stats;
pub mod subject;
pub mod system;
pub mod verdicts;

/// Any error of the benchmark.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// A result with a [`BenchError`].
pub type BenchResult<T> = Result<T, BenchError>;

/// The `main` of a benchmark binary: `--help` prints `usage`; otherwise `parse` reads the
/// arguments and `run` runs on a multi-threaded Tokio runtime. A failure is printed as
/// `<name>: <error>`, with a failing exit code.
pub fn main_with<O, Fut>(
    name: &str,
    usage: &str,
    parse: impl FnOnce(&[String]) -> Result<O, String>,
    run: impl FnOnce(O) -> Fut,
) -> std::process::ExitCode
where
    Fut: std::future::Future<Output = BenchResult<()>>,
{
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "--help" || arg == "-h") {
        println!("{usage}");
        return std::process::ExitCode::SUCCESS;
    }
    let outcome = parse(&args).map_err(Into::into).and_then(|options| {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        runtime.block_on(run(options))
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
