//! The runnable demos behind the binaries: `cargo run -p examples` plays both domains,
//! `--bin ticket` or `--bin lead` one of them.
//!
//! Where they store events ([`Backend::choose`]): a SQLite file by default (`es-examples.db` in
//! the working directory; `--db PATH` or `ES_EXAMPLES_DB` to change it), which a second run
//! continues; PostgreSQL when `DATABASE_URL` is set (schema `es_examples`) and no argument says
//! otherwise; memory with `--memory`.

use std::error::Error;
use std::path::PathBuf;

use es_core::GlobalLog;

pub mod lead;
pub mod ticket;

/// What a demo returns.
pub type Outcome = Result<(), Box<dyn Error + Send + Sync>>;

/// Where a demo keeps its events and read models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The in-memory store: forgotten at exit.
    Memory,
    /// A SQLite file: the embedded, durable default.
    Sqlite(PathBuf),
    /// PostgreSQL at this URL, schema `es_examples`.
    Postgres(String),
}

/// The SQLite file the demos use unless told otherwise.
pub const DEFAULT_FILE: &str = "es-examples.db";

/// What `--help` prints.
pub const USAGE: &str = "\
Plays the Ticket and Lead demos (or one of them) on an event store.

Usage: [--memory | --db PATH]

Where the events go:
  --db PATH      a SQLite file (default: es-examples.db, or $ES_EXAMPLES_DB); a second run continues it
  --memory       memory only: gone when the demo ends
  (neither)      PostgreSQL when $DATABASE_URL is set (schema es_examples), else the SQLite file
  -h, --help     this text

Look at what it stored with the es command line: cargo run -p examples --bin es -- --help";

impl Backend {
    /// From the command line and the environment: `--memory`, or `--db PATH` for a SQLite file;
    /// else `DATABASE_URL` for PostgreSQL; else the SQLite file named by `ES_EXAMPLES_DB`, or
    /// [`DEFAULT_FILE`]. An explicit argument wins over the environment. `--help` (or `-h`)
    /// prints [`USAGE`] and exits the process with success.
    pub fn choose() -> Result<Self, String> {
        let mut args = std::env::args().skip(1);
        let mut chosen = None;
        while let Some(arg) = args.next() {
            let backend = match arg.as_str() {
                "--help" | "-h" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                "--memory" => Self::Memory,
                "--db" => Self::Sqlite(args.next().ok_or("--db needs a path")?.into()),
                other => {
                    return Err(format!(
                        "unknown argument {other:?}; use --memory, or --db PATH for the SQLite file (--help says more)"
                    ))
                }
            };
            if chosen.replace(backend).is_some() {
                return Err("give one of --memory and --db PATH".into());
            }
        }
        if let Some(backend) = chosen {
            return Ok(backend);
        }
        if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|url| !url.is_empty()) {
            return Ok(Self::Postgres(url));
        }
        let file = std::env::var_os("ES_EXAMPLES_DB").map_or_else(|| DEFAULT_FILE.into(), PathBuf::from);
        Ok(Self::Sqlite(file))
    }
}

impl Backend {
    /// What to put before a command of the `es` binary (`--db PATH `, or nothing) so that it
    /// looks at this store; `None` for memory, which is gone when the demo ends.
    pub fn es_arguments(&self) -> Option<String> {
        match self {
            Self::Memory => None,
            Self::Postgres(_) => Some(String::new()),
            // `es` picks PostgreSQL when DATABASE_URL is set, and the default file otherwise.
            Self::Sqlite(path) => {
                let url_set = std::env::var("DATABASE_URL").is_ok_and(|url| !url.is_empty());
                let chosen_anyway =
                    std::env::var_os("ES_EXAMPLES_DB").map_or_else(|| DEFAULT_FILE.into(), PathBuf::from);
                if !url_set && *path == chosen_anyway {
                    return Some(String::new());
                }
                let path = path.display().to_string();
                let quoted = if path.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
                    format!("'{}'", path.replace('\'', r"'\''"))
                } else {
                    path
                };
                Some(format!("--db {quoted} "))
            }
        }
    }
}

/// Says how much history `store` already holds: a durable store continues earlier runs.
pub async fn announce_history<S: GlobalLog>(store: &S, what: &str) -> Outcome {
    let stored = store.tail(0).await?.events;
    if stored == 0 {
        println!("{what}: a new, empty store");
    } else {
        println!("{what}: the store holds {stored} events already, of every demo; this run continues that history");
    }
    Ok(())
}
