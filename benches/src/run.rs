//! The parent process: finds the server, seeds the read schemas, runs every (scenario,
//! implementation) measurement in a child process of its own, interleaved per repetition, and
//! collects the results.
//!
//! Each measurement runs in a fresh child (this binary, re-executed with hidden arguments), so
//! its peak resident memory is its own and no run warms or pollutes another's heap. Within a
//! repetition the three implementations run back to back for each scenario, and the order
//! rotates from one repetition to the next, so slow drifts of the machine hit them alike.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;

use crate::measure::Measurement;
use crate::scenario::{Implementation, Scenario, Sizes};
use crate::system::{self, Machine, Server};
use crate::BenchResult;

/// The environment variable that hands the server's URL to child processes.
pub const URL_ENV: &str = "ES_BENCH_DATABASE_URL";

/// The prefix of the line on which a child prints its [`Measurement`] as JSON.
pub const RESULT_PREFIX: &str = "ES_BENCH_RESULT ";

/// The hidden first argument of a measuring child.
pub const CHILD_ARG: &str = "__measure";

/// The hidden first argument of a seeding child.
pub const PREPARE_ARG: &str = "__prepare";

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The sizes.
    pub sizes: Sizes,
    /// The scenarios, in table order.
    pub scenarios: Vec<Scenario>,
    /// The command line to print in the report.
    pub command: String,
}

/// Everything a run produced.
#[derive(Debug, Clone)]
pub struct Results {
    /// What was run.
    pub options: Options,
    /// Every measurement, per scenario and implementation, in repetition order.
    pub runs: BTreeMap<(Scenario, Implementation), Vec<Measurement>>,
    /// The machine.
    pub machine: Machine,
    /// The server.
    pub server: Server,
    /// Where the server came from.
    pub database: String,
    /// The load average before the run.
    pub load_before: String,
    /// The load average after the run.
    pub load_after: String,
    /// The highest 1-minute load average seen before any measurement of the run.
    pub load_peak: f64,
    /// When the run started, as the server tells it.
    pub started: String,
    /// The toolchain that built the benchmark, when `rustc` can be asked.
    pub rustc: String,
    /// The commit measured, and whether the framework's crates had uncommitted changes.
    pub revision: String,
    /// How long the whole run took.
    pub elapsed: Duration,
}

/// The server to use: `DATABASE_URL`, or a throwaway server of this process.
fn database() -> BenchResult<(String, String)> {
    let database = es_test_support::TestDatabase::get()?;
    let description = if database.is_throwaway() {
        "a throwaway server started by the benchmark (initdb defaults, fsync and synchronous_commit on)"
    } else {
        "the server at DATABASE_URL"
    };
    Ok((database.url().to_owned(), description.to_owned()))
}

/// Runs the benchmark.
pub fn run(options: Options) -> BenchResult<Results> {
    let started_at = Instant::now();
    // What was built and is about to be measured.
    let revision = revision();
    let load_before = system::load_average();
    let (url, database) = database()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let admin = runtime.block_on(PgPoolOptions::new().max_connections(1).connect(&url))?;
    let server = runtime.block_on(Server::read(&admin))?;
    let started: String = runtime.block_on(
        sqlx::query_scalar("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI \"UTC\"')").fetch_one(&admin),
    )?;
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    // The random tail of the UUID, so runs sharing a DATABASE_URL never collide.
    let run_id = run_id[run_id.len() - 10..].to_owned();
    let mut load_peak = 0.0;
    let outcome = measure_all(&options, &url, &run_id, &mut load_peak);
    let cleanup = runtime.block_on(drop_schemas(&admin, &run_id));
    let runs = outcome?;
    cleanup?;
    Ok(Results {
        options,
        runs,
        machine: Machine::read(),
        server,
        database,
        load_before,
        load_after: system::load_average(),
        load_peak,
        started,
        rustc: rustc_version(),
        revision,
        elapsed: started_at.elapsed(),
    })
}

fn measure_all(
    options: &Options,
    url: &str,
    run_id: &str,
    load_peak: &mut f64,
) -> BenchResult<BTreeMap<(Scenario, Implementation), Vec<Measurement>>> {
    let sizes = &options.sizes;
    if options.scenarios.iter().any(|scenario| scenario.reads_seeded_data()) {
        for implementation in Implementation::ALL {
            eprintln!("es-bench: seeding the read schemas of {implementation}");
            let start = Instant::now();
            child(url, &[PREPARE_ARG, implementation.id(), run_id, sizes.name, "0"])?;
            eprintln!("es-bench:   seeded in {:.1} s", start.elapsed().as_secs_f64());
        }
    }
    let mut runs: BTreeMap<(Scenario, Implementation), Vec<Measurement>> = BTreeMap::new();
    for repetition in 0..sizes.repetitions {
        for &scenario in &options.scenarios {
            let mut checks = Vec::new();
            for k in 0..Implementation::ALL.len() {
                let implementation = Implementation::ALL[(k + repetition) % Implementation::ALL.len()];
                let repetition_arg = repetition.to_string();
                let args = [
                    CHILD_ARG,
                    implementation.id(),
                    run_id,
                    sizes.name,
                    &repetition_arg,
                    scenario.id(),
                ];
                *load_peak = system::load_1min().unwrap_or(0.0).max(*load_peak);
                let measurement = child(url, &args)?.ok_or("the child printed no result")?;
                eprintln!(
                    "es-bench: [{}/{}] {} {:<8} {} | peak {:.1} MiB",
                    repetition + 1,
                    sizes.repetitions,
                    scenario.id(),
                    implementation.label(),
                    summary(&measurement),
                    measurement.peak_rss_kib as f64 / 1024.0
                );
                checks.push((implementation, measurement.check.clone()));
                runs.entry((scenario, implementation)).or_default().push(measurement);
            }
            if let Some((first, reference)) = checks.first() {
                for (implementation, check) in &checks[1..] {
                    if check != reference {
                        return Err(format!(
                            "scenario {}: {first} and {implementation} disagree on the work done: \
                             `{reference}` vs `{check}`",
                            scenario.id()
                        )
                        .into());
                    }
                }
            }
        }
    }
    Ok(runs)
}

fn summary(measurement: &Measurement) -> String {
    measurement
        .metrics
        .iter()
        .map(|(key, value)| format!("{key}={value:.3}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs this binary with `args`; returns the measurement it printed, if any.
fn child(url: &str, args: &[&str]) -> BenchResult<Option<Measurement>> {
    let output = Command::new(std::env::current_exe()?)
        .args(args)
        .env(URL_ENV, url)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(format!("es-bench {} failed: {}", args.join(" "), output.status).into());
    }
    let stdout = String::from_utf8(output.stdout)?;
    let result = stdout.lines().find_map(|line| line.strip_prefix(RESULT_PREFIX));
    Ok(result.map(serde_json::from_str).transpose()?)
}

/// Drops every schema of run `run_id`.
async fn drop_schemas(admin: &sqlx::PgPool, run_id: &str) -> BenchResult<()> {
    let prefix = format!("esb_{run_id}_");
    let schemas: Vec<String> = sqlx::query_scalar("SELECT nspname::text FROM pg_namespace")
        .fetch_all(admin)
        .await?;
    for schema in schemas.iter().filter(|schema| schema.starts_with(&prefix)) {
        sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(admin)
            .await?;
    }
    admin.close().await;
    Ok(())
}

fn rustc_version() -> String {
    Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned()))
        .arg("--version")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The commit of the working tree, when `git` can tell, noting uncommitted changes to the
/// framework's crates.
fn revision() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let Some(commit) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown (not a git checkout)".to_owned();
    };
    match git(&["status", "--porcelain", "--", "es-core", "es-derive", "es-postgres"]) {
        Some(changes) if changes.is_empty() => {
            format!("commit `{commit}`; es-core, es-derive and es-postgres as committed")
        }
        Some(_) => format!("commit `{commit}` **with uncommitted changes** to es-core, es-derive or es-postgres"),
        None => format!("commit `{commit}`"),
    }
}
