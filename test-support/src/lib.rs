//! Test support for the es-rs workspace (not published): a real PostgreSQL for tests and
//! benchmarks, [`TestDatabase`], and a fresh store per test, [`TestSchema`].
//!
//! If `DATABASE_URL` is set, tests use that server. Otherwise the first test of the process
//! starts a throwaway server from the PostgreSQL binaries on the machine (`initdb`, `pg_ctl` and
//! `postgres` on `PATH` or under `/usr/lib/postgresql/*/bin`, newest major version first) in a
//! temporary directory, on a free port of 127.0.0.1, with trust authentication. A small watchdog
//! process stops the server and deletes the directory once the test process has exited, however
//! it exits. When running as root, the server runs as the unprivileged `postgres` user (as
//! PostgreSQL requires).
//!
//! Every test takes its own [`TestSchema`]: a store in a fresh, migrated schema with a random
//! name, so tests never see each other's events.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use es_test_support::TestDatabase;
//!
//! let schema = TestDatabase::get()?.schema().await?;
//! let store = schema.store(); // a PostgresStore in a fresh schema
//! # let _ = store; Ok(()) }
//! ```

#![warn(missing_docs)]

use std::ffi::OsString;
use std::net::TcpListener;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use sqlx::postgres::PgPoolOptions;
use sqlx::Connection;

use es_postgres::{PostgresError, PostgresStore};

/// The message when no server can be found.
const NO_POSTGRES: &str =
    "no PostgreSQL found: set DATABASE_URL or install PostgreSQL (Debian: apt-get install postgresql)";

/// Connections per test store: enough for the heaviest concurrency test.
const POOL_SIZE: u32 = 32;

/// Why no test database is available.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TestDatabaseError(String);

/// The PostgreSQL server the tests of this process use: `DATABASE_URL`, or one throwaway server
/// per process.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    /// Whether the server belongs to this process (then schemas need no cleanup).
    throwaway: bool,
}

static DATABASE: OnceLock<Result<TestDatabase, TestDatabaseError>> = OnceLock::new();

impl TestDatabase {
    /// The server for this process, started on first use (which blocks for a few seconds).
    pub fn get() -> Result<&'static TestDatabase, TestDatabaseError> {
        DATABASE
            .get_or_init(|| match std::env::var("DATABASE_URL") {
                Ok(url) if !url.is_empty() => Ok(TestDatabase { url, throwaway: false }),
                _ => start_throwaway_server().map(|url| TestDatabase { url, throwaway: true }),
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The server's connection URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this is the process's own throwaway server (not `DATABASE_URL`).
    pub fn is_throwaway(&self) -> bool {
        self.throwaway
    }

    /// A store in a fresh schema with a random `es_test_` name, migrated, with its own pool.
    pub async fn schema(&self) -> Result<TestSchema, PostgresError> {
        let schema = self.unmigrated_schema().await?;
        schema.migrate().await?;
        Ok(schema)
    }

    /// Like [`TestDatabase::schema`], but the schema is not created yet: for testing
    /// [`PostgresStore::migrate`] itself.
    pub async fn unmigrated_schema(&self) -> Result<TestSchema, PostgresError> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect(&self.url)
            .await
            .map_err(PostgresError::Connect)?;
        let name = format!("es_test_{}", uuid::Uuid::now_v7().simple());
        Ok(TestSchema {
            store: PostgresStore::new(pool).with_schema(&name)?,
            drop_url: (!self.throwaway).then(|| self.url.clone()),
        })
    }
}

/// A [`PostgresStore`] in a fresh schema of the test database; it dereferences to the store. On a `DATABASE_URL` server the schema is dropped when
/// this is dropped; the throwaway server is deleted whole at exit.
#[derive(Debug)]
pub struct TestSchema {
    store: PostgresStore,
    drop_url: Option<String>,
}

impl TestSchema {
    /// The store (clone it to share).
    pub fn store(&self) -> &PostgresStore {
        &self.store
    }
}

impl Deref for TestSchema {
    type Target = PostgresStore;

    fn deref(&self) -> &PostgresStore {
        &self.store
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let Some(url) = self.drop_url.take() else { return };
        let drop_schema = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.store.schema());
        // Drop is synchronous and may run inside any runtime: use a thread with its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                sqlx::raw_sql(&drop_schema).execute(&mut conn).await?;
                conn.close().await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot drop test schema"),
            Err(_) => tracing::warn!("dropping a test schema panicked"),
        }
    }
}

fn error(message: impl Into<String>) -> TestDatabaseError {
    TestDatabaseError(message.into())
}

/// Runs `program` with `args` in `cwd` (as `user` via `runuser` when given) and returns its stdout, or an
/// error naming the command and its stderr.
fn run(user: Option<&str>, cwd: &Path, program: &Path, args: &[OsString]) -> Result<String, TestDatabaseError> {
    let mut command = match user {
        Some(user) => {
            let mut command = Command::new("runuser");
            command.args(["-u", user, "--"]).arg(program);
            command
        }
        None => Command::new(program),
    };
    let output = command
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| error(format!("cannot run {}: {e}", program.display())))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(error(format!(
            "{} failed ({}): {}",
            program.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Directories holding `initdb`, `pg_ctl` and `postgres`, newest major version first (`PATH`
/// before `/usr/lib/postgresql` for the same version).
fn binary_dirs() -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versioned: Vec<PathBuf> = entries.flatten().map(|entry| entry.path().join("bin")).collect();
        versioned.sort();
        candidates.extend(versioned);
    }
    let complete = |dir: &PathBuf| ["initdb", "pg_ctl", "postgres"].iter().all(|b| dir.join(b).is_file());
    let mut found: Vec<(u32, usize, PathBuf)> = candidates
        .into_iter()
        .filter(complete)
        .enumerate()
        .filter_map(|(order, dir)| {
            let output = Command::new(dir.join("initdb")).arg("--version").output().ok()?;
            // "initdb (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            let version = text.split(") ").nth(1)?.split(['.', ' ']).next()?.trim().parse().ok()?;
            Some((version, order, dir))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    found.into_iter().map(|(_, _, dir)| dir).collect()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

fn id_of(flag: &str, user: &str) -> Result<u32, TestDatabaseError> {
    let output = Command::new("id")
        .args([flag, user])
        .output()
        .map_err(|e| error(format!("cannot run id: {e}")))?;
    String::from_utf8_lossy(&output.stdout).trim().parse().map_err(|_| {
        error(format!(
            "running as root needs an unprivileged `{user}` user to run PostgreSQL"
        ))
    })
}

fn free_port() -> Result<u16, TestDatabaseError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| error(format!("no free port: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| error(format!("no free port: {e}")))?
        .port();
    Ok(port)
}

/// Starts a throwaway server and returns its URL.
fn start_throwaway_server() -> Result<String, TestDatabaseError> {
    let bin = binary_dirs().into_iter().next().ok_or_else(|| error(NO_POSTGRES))?;
    let user = is_root().then_some("postgres");
    let dir = std::env::temp_dir().join(format!(
        "es-postgres-test-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| error(format!("cannot create {}: {e}", dir.display())))?;
    // From here on the watchdog owns the directory: it deletes it when this process is gone, even
    // if the server never starts.
    spawn_watchdog(&bin, &dir, user)?;
    if let Some(user) = user {
        let (uid, gid) = (id_of("-u", user)?, id_of("-g", user)?);
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .map_err(|e| error(format!("cannot hand {} to {user}: {e}", dir.display())))?;
    }
    let data = dir.join("data");
    run(
        user,
        &dir,
        &bin.join("initdb"),
        &[
            "-D".into(),
            data.clone().into(),
            "-U".into(),
            "postgres".into(),
            "--auth=trust".into(),
            "--encoding=UTF8".into(),
            "--locale=C".into(),
            // Only initdb's own final sync of the files: the server keeps fsync at its default.
            "--no-sync".into(),
        ],
    )?;
    let mut last_error = error(NO_POSTGRES);
    // A free port can be taken by someone else before the server binds it: try a few.
    for _ in 0..5 {
        let port = free_port()?;
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={} -c max_connections=200",
            dir.display()
        );
        let started = run(
            user,
            &dir,
            &bin.join("pg_ctl"),
            &[
                "-D".into(),
                data.clone().into(),
                "-l".into(),
                dir.join("server.log").into(),
                "-w".into(),
                "-t".into(),
                "60".into(),
                "-o".into(),
                options.into(),
                "start".into(),
            ],
        );
        match started {
            Ok(_) => return Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres")),
            Err(e) => {
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                last_error = error(format!("{e}\n{log}"));
            }
        }
    }
    Err(last_error)
}

/// Starts a detached shell that waits for this process to exit, then stops the server (if it
/// runs) and deletes `dir`.
fn spawn_watchdog(bin: &Path, dir: &Path, user: Option<&str>) -> Result<(), TestDatabaseError> {
    use std::os::unix::process::CommandExt;

    const SCRIPT: &str = r#"
        while kill -0 "$1" 2>/dev/null; do sleep 0.2; done
        if [ -f "$3/data/postmaster.pid" ]; then
            if [ -n "$4" ]; then runuser -u "$4" -- "$2/pg_ctl" -D "$3/data" -m immediate stop
            else "$2/pg_ctl" -D "$3/data" -m immediate stop; fi
        fi
        rm -rf "$3"
    "#;
    Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("es-postgres-test-watchdog")
        .arg(std::process::id().to_string())
        .arg(bin)
        .arg(dir)
        .arg(user.unwrap_or(""))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C to the tests must not kill the cleanup.
        .process_group(0)
        .spawn()
        .map_err(|e| error(format!("cannot start the cleanup watchdog: {e}")))?;
    Ok(())
}
