//! The runnable demos behind the binaries: `cargo run -p examples` plays both domains,
//! `--bin ticket` or `--bin lead` one of them.
//!
//! Where they store events ([`Backend::choose`]): a SQLite file by default (`es-examples.db` in
//! the working directory; `--db PATH` or `ES_EXAMPLES_DB` to change it), which a second run
//! continues; PostgreSQL when `DATABASE_URL` is set (schema `es_examples`); memory with
//! `--memory`.

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

impl Backend {
    /// From the command line and the environment: `--memory`, else `DATABASE_URL`, else the
    /// SQLite file named by `--db PATH`, `ES_EXAMPLES_DB` or [`DEFAULT_FILE`].
    pub fn choose() -> Result<Self, String> {
        let mut args = std::env::args().skip(1);
        let mut file = std::env::var_os("ES_EXAMPLES_DB").map(PathBuf::from);
        let mut memory = false;
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--memory" => memory = true,
                "--db" => file = Some(args.next().ok_or("--db needs a path")?.into()),
                other => {
                    return Err(format!(
                        "unknown argument {other:?}; use --memory, or --db PATH for the SQLite file"
                    ))
                }
            }
        }
        if memory {
            return Ok(Self::Memory);
        }
        if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|url| !url.is_empty()) {
            return Ok(Self::Postgres(url));
        }
        Ok(Self::Sqlite(file.unwrap_or_else(|| DEFAULT_FILE.into())))
    }
}

/// Says how much history `store` already holds: a durable store continues earlier runs.
pub async fn announce_history<S: GlobalLog>(store: &S, what: &str) -> Outcome {
    let stored = store.tail(0).await?.events;
    if stored == 0 {
        println!("{what}: a new, empty store");
    } else {
        println!("{what}: {stored} events already stored; this run continues that history");
    }
    Ok(())
}
