//! `es`: the es-cli command line of the example domains (Ticket and Lead, with the Lead read
//! models' projections), on the store the demos use: the SQLite file `es-examples.db` (or
//! `--db PATH` before the command, or `ES_EXAMPLES_DB`), or PostgreSQL when `DATABASE_URL` is
//! set (schema `es_examples`, or `ES_EXAMPLES_SCHEMA`).
//!
//! ```text
//! cargo run -p examples --bin es -- streams
//! cargo run -p examples --bin es -- events ticket/T-1
//! cargo run -p examples --bin es -- --db other.db doctor
//! ```

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use es_cli::{CliStore, Exit, Preflight};
use es_core::lifecycle::StreamLifecycle;
use es_core::pii::KeyStore;
use es_postgres::PostgresStore;
use es_sqlite::SqliteStore;
use examples::cli::command_line;
use examples::demo::DEFAULT_FILE;
use examples::lead::forgettable_leads;
use examples::lead_models::LeadTables;

#[tokio::main]
async fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    // `--db PATH` right after the program name picks the SQLite file; the rest is es-cli's.
    let file = match args.get(1).and_then(|arg| arg.to_str()) {
        Some("--db") if args.len() > 2 => {
            let path = PathBuf::from(args.remove(2));
            args.remove(1);
            Some(path)
        }
        _ => None,
    };
    // Help needs no store, and a command that looks opens it read-only, unmigrated.
    let writes = match es_cli::preflight(&args) {
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

type Opened = Result<ExitCode, (Exit, String)>;

async fn sqlite(file: PathBuf, writes: bool, args: Vec<OsString>) -> Opened {
    if !file.exists() {
        let message = format!(
            "no store at {}: run `cargo run -p examples` first, or name a file with --db PATH",
            file.display()
        );
        return Err((Exit::NotFound, message));
    }
    if !writes {
        let store = SqliteStore::open_read_only(&file).await.map_err(store_failure)?;
        return run(store, args).await;
    }
    let store = SqliteStore::open(&file).await.map_err(store_failure)?;
    store.migrate().await.map_err(store_failure)?;
    store.create_tables().await.map_err(store_failure)?;
    run(store, args).await
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
        .closing();
    Ok(cli.run_from(args).await)
}
