//! `es`: the es-cli command line of the example domains (Ticket and Lead, with the Lead read
//! models' projections), on the store the demos use: the SQLite file `es-examples.db` (or
//! `--db PATH` before the command, or `ES_EXAMPLES_DB`), or PostgreSQL when `DATABASE_URL` is
//! set and `--db` is not (schema `es_examples`, or `ES_EXAMPLES_SCHEMA`). `es --help` says the
//! same, with the exit codes.
//!
//! ```text
//! cargo run -p examples --bin es -- streams
//! cargo run -p examples --bin es -- events ticket/T-1
//! cargo run -p examples --bin es -- --db other.db doctor
//! ```

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use es_cli::{CliStore, Exit, Preflight, Program};
use es_core::lifecycle::StreamLifecycle;
use es_core::pii::KeyStore;
use es_postgres::PostgresStore;
use es_sqlite::{SqliteError, SqliteStore};
use examples::cli::command_line;
use examples::demo::DEFAULT_FILE;
use examples::lead::forgettable_leads;
use examples::lead_models::LeadTables;

/// How `es` chooses its store, for `es --help`.
const STORE_HELP: &str = "\
Choosing the store:
  --db PATH              The SQLite file of the store. Before the command: es --db PATH streams.
                         It wins over DATABASE_URL.
  ES_EXAMPLES_DB=PATH    The SQLite file when neither --db nor DATABASE_URL is given
                         (default: es-examples.db in the working directory).
  DATABASE_URL=URL       PostgreSQL instead of SQLite, unless --db is given.
  ES_EXAMPLES_SCHEMA=S   The PostgreSQL schema (default: es_examples).
Commands that only look open the store read-only and never migrate it (nor create it); `rebuild`,
`forget`, `close` and `parked --retry/--drop` open it for writing and migrate it first.";

/// The binary as its operators see it.
fn program() -> Program {
    Program::new("es", env!("CARGO_PKG_VERSION"))
        .usage("es [--db PATH] [--json] <COMMAND>")
        .store_help(STORE_HELP)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let (file, args) = match take_db(args) {
        Ok(taken) => taken,
        Err(message) => {
            eprintln!(
                "error: {message}\n\nUsage: es [--db PATH] [--json] <COMMAND>\n\nFor more information, try '--help'."
            );
            return Exit::Usage.into();
        }
    };
    // Help needs no store, and a command that looks opens it read-only, unmigrated.
    let writes = match program().preflight(&args) {
        Preflight::Answered(exit) => return exit.into(),
        Preflight::Reads => false,
        _ => true,
    };
    let url = std::env::var("DATABASE_URL").ok().filter(|url| !url.is_empty());
    let opened = match (file, url) {
        (None, Some(url)) => postgres(&url, writes, args).await,
        (file, _) => {
            let file = file
                .or_else(|| std::env::var_os("ES_EXAMPLES_DB").map(PathBuf::from))
                .unwrap_or_else(|| DEFAULT_FILE.into());
            sqlite(file, writes, args).await
        }
    };
    match opened {
        Ok(exit) => exit,
        Err((exit, message)) => {
            eprintln!("error: {message}");
            exit.into()
        }
    }
}

/// Takes `--db PATH` (or `--db=PATH`) from among the options before the command, and refuses
/// it anywhere else, saying where it goes: es-cli's grammar does not know it, and would call it
/// an unexpected argument.
fn take_db(args: Vec<OsString>) -> Result<(Option<PathBuf>, Vec<OsString>), String> {
    let mut kept = Vec::with_capacity(args.len());
    let mut file = None;
    let mut args = args.into_iter();
    kept.extend(args.next()); // the program's name
    let mut before_command = true;
    while let Some(arg) = args.next() {
        let text = arg.to_str().unwrap_or_default();
        if text == "--" {
            // What follows is positional: not options.
            kept.push(arg);
            kept.extend(args.by_ref());
            break;
        }
        let value = match text {
            "--db" => Some(None),
            _ => text.strip_prefix("--db=").map(|path| Some(OsString::from(path))),
        };
        let Some(value) = value else {
            if !text.starts_with('-') {
                before_command = false;
            }
            kept.push(arg);
            continue;
        };
        if !before_command {
            return Err("--db goes before the command, e.g. `es --db PATH streams`".into());
        }
        let path = match value {
            Some(path) => path,
            None => args.next().ok_or("--db needs a PATH: `es --db PATH COMMAND`")?,
        };
        if path.is_empty() {
            return Err("--db needs a PATH: `es --db PATH COMMAND`".into());
        }
        file = Some(PathBuf::from(path));
    }
    Ok((file, kept))
}

type Opened = Result<ExitCode, (Exit, String)>;

async fn sqlite(file: PathBuf, writes: bool, args: Vec<OsString>) -> Opened {
    if !file.exists() {
        let message = format!(
            "no store at {}: run `cargo run -p examples` first, or name the store's file with --db PATH (before \
             the command)",
            file.display()
        );
        return Err((Exit::NotFound, message));
    }
    if !writes {
        let store = SqliteStore::open_read_only(&file)
            .await
            .map_err(|error| sqlite_failure(&file, error))?;
        if store.is_immutable() {
            eprintln!(
                "note: {} is read as it is now (this user may not write its directory, and no writer is active): \
                 events committed from now on are not seen",
                file.display()
            );
        }
        return run(store, args).await;
    }
    // A writing command migrates the store; it must not turn a file that is no store into one.
    if let Err(error @ (SqliteError::NotAStore { .. } | SqliteError::IsADirectory { .. })) =
        SqliteStore::open_read_only(&file).await
    {
        return Err(sqlite_failure(&file, error));
    }
    let store = SqliteStore::open(&file)
        .await
        .map_err(|error| sqlite_failure(&file, error))?;
    store.migrate().await.map_err(|error| sqlite_failure(&file, error))?;
    store.create_tables().await.map_err(store_failure)?;
    run(store, args).await
}

/// What `es` says when the SQLite store cannot be used, and its exit code: a path that is no
/// store is "not found" like a missing one (exit 3), with where to name the right one.
fn sqlite_failure(file: &Path, error: SqliteError) -> (Exit, String) {
    match error {
        SqliteError::NotAStore { .. } | SqliteError::IsADirectory { .. } => {
            (Exit::NotFound, format!("{error} (with --db PATH before the command)"))
        }
        SqliteError::ReadOnly { .. } => (
            Exit::Store,
            format!(
                "this command writes to the store, and this user may not write {} (or its directory): run it as \
                 a user who may ({error})",
                file.display()
            ),
        ),
        other => store_failure(other),
    }
}

async fn postgres(url: &str, writes: bool, args: Vec<OsString>) -> Opened {
    let schema = std::env::var("ES_EXAMPLES_SCHEMA").unwrap_or_else(|_| "es_examples".into());
    let store = PostgresStore::connect(url)
        .await
        .and_then(|store| store.with_schema(&schema))
        .map_err(store_failure)?;
    if writes {
        store.migrate().await.map_err(store_failure)?;
        store.create_tables().await.map_err(store_failure)?;
    }
    run(store, args).await
}

fn store_failure(error: impl std::fmt::Display) -> (Exit, String) {
    (Exit::Store, error.to_string())
}

/// The command line over `store` (migrated, with the Lead tables, if the command writes):
/// both aggregates, both Lead projections, the leads' personal
/// data opened with the keys `store` keeps, and closing streams.
async fn run<S: LeadTables + CliStore + KeyStore + StreamLifecycle>(store: S, args: Vec<OsString>) -> Opened {
    let sealed = forgettable_leads(store.clone(), store).map_err(|error| (Exit::Usage, error.to_string()))?;
    let cli = command_line(sealed)
        .and_then(es_cli::Cli::forgetting)
        .map_err(|error| (Exit::Usage, error.to_string()))?
        .closing()
        .program(program());
    Ok(cli.run_from(args).await)
}
