//! The parent process: finds the server (for PostgreSQL scenarios) and makes a directory for
//! the files (for SQLite scenarios), seeds the read schemas and files, runs every (scenario,
//! implementation) measurement in a child process of its own, interleaved per repetition, and
//! collects the results.
//!
//! Each measurement runs in a fresh child (this binary, re-executed with hidden arguments), so
//! its peak resident memory is its own and no run warms or pollutes another's heap. Within a
//! repetition the scenario's implementations run back to back, and the order rotates from one
//! repetition to the next, so slow drifts of the machine hit them alike.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;

use crate::measure::Measurement;
use crate::scenario::{Backend, Implementation, Scenario, Sizes};
use crate::system::{self, Machine, Server, SqliteFacts};
use crate::BenchResult;

/// The environment variable that hands the server's URL to child processes.
pub const URL_ENV: &str = "ES_BENCH_DATABASE_URL";

/// The environment variable that hands the directory of the SQLite files to child processes.
pub const DIR_ENV: &str = "ES_BENCH_SQLITE_DIR";

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
    /// The PostgreSQL server, when PostgreSQL scenarios ran.
    pub server: Option<Server>,
    /// Where the server came from, when PostgreSQL scenarios ran.
    pub database: Option<String>,
    /// The SQLite library, files and settings, when SQLite scenarios ran.
    pub sqlite: Option<SqliteFacts>,
    /// The load average before the run.
    pub load_before: String,
    /// The load average after the run.
    pub load_after: String,
    /// The highest 1-minute load average seen before any measurement of the run.
    pub load_peak: f64,
    /// When the run started (UTC).
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

/// Where the children find their stores.
#[derive(Debug, Clone, Copy)]
struct Stores<'a> {
    url: Option<&'a str>,
    dir: Option<&'a Path>,
}

/// Runs the benchmark.
pub fn run(options: Options) -> BenchResult<Results> {
    let started_at = Instant::now();
    let started = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    // What was built and is about to be measured.
    let revision = revision();
    let load_before = system::load_average();
    let backends: BTreeSet<Backend> = options.scenarios.iter().map(|scenario| scenario.backend()).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let postgres = if backends.contains(&Backend::Postgres) {
        let (url, database) = database()?;
        let admin = runtime.block_on(PgPoolOptions::new().max_connections(1).connect(&url))?;
        let server = runtime.block_on(Server::read(&admin))?;
        Some((url, database, admin, server))
    } else {
        None
    };
    // Removed with everything in it when dropped, at the end of the run.
    let files = if backends.contains(&Backend::Sqlite) {
        let dir = tempfile::Builder::new().prefix("es-bench-").tempdir()?;
        let facts = runtime.block_on(SqliteFacts::read(dir.path()))?;
        Some((dir, facts))
    } else {
        None
    };
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    // The random tail of the UUID, so runs sharing a DATABASE_URL never collide.
    let run_id = run_id[run_id.len() - 10..].to_owned();
    let stores = Stores {
        url: postgres.as_ref().map(|(url, ..)| url.as_str()),
        dir: files.as_ref().map(|(dir, _)| dir.path()),
    };
    let mut load_peak = 0.0;
    let admin = postgres.as_ref().map(|(_, _, admin, _)| (&runtime, admin));
    let outcome = measure_all(&options, stores, admin, &run_id, &mut load_peak);
    let (server, database) = match postgres {
        Some((_, database, admin, server)) => {
            let cleanup = runtime.block_on(drop_schemas(&admin, &run_id));
            if outcome.is_ok() {
                cleanup?;
            }
            (Some(server), Some(database))
        }
        None => (None, None),
    };
    let runs = outcome?;
    let sqlite = match files {
        Some((dir, facts)) => {
            dir.close()?;
            Some(facts)
        }
        None => None,
    };
    Ok(Results {
        options,
        runs,
        machine: Machine::read(),
        server,
        database,
        sqlite,
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
    stores: Stores<'_>,
    admin: Option<(&tokio::runtime::Runtime, &sqlx::PgPool)>,
    run_id: &str,
    load_peak: &mut f64,
) -> BenchResult<BTreeMap<(Scenario, Implementation), Vec<Measurement>>> {
    let sizes = &options.sizes;
    let seeded: BTreeSet<Backend> = options
        .scenarios
        .iter()
        .filter(|scenario| scenario.reads_seeded_data())
        .map(|scenario| scenario.backend())
        .collect();
    for backend in seeded {
        for &implementation in backend.implementations() {
            let what = match backend {
                Backend::Postgres => "schemas",
                Backend::Sqlite => "files",
            };
            eprintln!(
                "es-bench: seeding the read {what} of {} ({backend})",
                implementation.label_on(backend)
            );
            let start = Instant::now();
            let args = [PREPARE_ARG, implementation.id(), run_id, sizes.name, "0", backend.id()];
            child(stores, &args)?;
            eprintln!("es-bench:   seeded in {:.1} s", start.elapsed().as_secs_f64());
        }
        if let (Backend::Postgres, Some((runtime, admin))) = (backend, admin) {
            runtime.block_on(analyze_schemas(admin, run_id))?;
        }
    }
    let mut runs: BTreeMap<(Scenario, Implementation), Vec<Measurement>> = BTreeMap::new();
    for repetition in 0..sizes.repetitions {
        for &scenario in &options.scenarios {
            let backend = scenario.backend();
            let implementations = scenario.implementations();
            let mut checks = Vec::new();
            for k in 0..implementations.len() {
                let implementation = implementations[(k + repetition) % implementations.len()];
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
                let measurement = child(stores, &args)?.ok_or("the child printed no result")?;
                eprintln!(
                    "es-bench: [{}/{}] {} {:<12} {} | peak {:.1} MiB",
                    repetition + 1,
                    sizes.repetitions,
                    scenario.id(),
                    implementation.label_on(backend),
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
                            "scenario {}: {} and {} disagree on the work done: `{reference}` vs `{check}`",
                            scenario.id(),
                            first.label_on(backend),
                            implementation.label_on(backend),
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
fn child(stores: Stores<'_>, args: &[&str]) -> BenchResult<Option<Measurement>> {
    let mut command = Command::new(std::env::current_exe()?);
    command.args(args);
    if let Some(url) = stores.url {
        command.env(URL_ENV, url);
    }
    if let Some(dir) = stores.dir {
        command.env(DIR_ENV, dir);
    }
    let output = command.stdin(Stdio::null()).stderr(Stdio::inherit()).output()?;
    if !output.status.success() {
        return Err(format!("es-bench {} failed: {}", args.join(" "), output.status).into());
    }
    let stdout = String::from_utf8(output.stdout)?;
    let result = stdout.lines().find_map(|line| line.strip_prefix(RESULT_PREFIX));
    Ok(result.map(serde_json::from_str).transpose()?)
}

/// Analyzes every table of run `run_id`'s schemas, as autovacuum would a minute after the
/// seeding: the scenarios read a database in its steady state, with planner statistics. (Without
/// them PostgreSQL plans es-rs's horizon-bounded global read as a sort of the whole log: see
/// `ImportOptions::analyze` in es-postgres.)
async fn analyze_schemas(admin: &sqlx::PgPool, run_id: &str) -> BenchResult<()> {
    let prefix = format!("esb_{run_id}_");
    let tables: Vec<(String, String)> =
        sqlx::query_as("SELECT schemaname::text, tablename::text FROM pg_tables WHERE starts_with(schemaname, $1)")
            .bind(&prefix)
            .fetch_all(admin)
            .await?;
    for (schema, table) in tables {
        sqlx::raw_sql(&format!("ANALYZE \"{schema}\".\"{table}\""))
            .execute(admin)
            .await?;
    }
    Ok(())
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
    match git(&[
        "status",
        "--porcelain",
        "--",
        "es-core",
        "es-derive",
        "es-postgres",
        "es-sqlite",
    ]) {
        Some(changes) if changes.is_empty() => {
            format!("commit `{commit}`; es-core, es-derive, es-postgres and es-sqlite as committed")
        }
        Some(_) => {
            format!("commit `{commit}` **with uncommitted changes** to es-core, es-derive, es-postgres or es-sqlite")
        }
        None => format!("commit `{commit}`"),
    }
}
