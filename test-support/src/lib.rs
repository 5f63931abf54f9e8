//! Test support for the es-rs workspace (not published): a real PostgreSQL for tests and
//! benchmarks.
//!
//! - [`TestDatabase`]: the server the tests of a process share. If `DATABASE_URL` is set, that
//!   server. Otherwise the first test of the process starts a throwaway server from the
//!   PostgreSQL binaries on the machine (`initdb`, `pg_ctl` and `postgres` on `PATH` or under
//!   `/usr/lib/postgresql/*/bin`, newest major version first) in a temporary directory, on a free
//!   port of 127.0.0.1, with trust authentication.
//! - [`TestSchema`]: what every test takes, a store in a fresh, migrated schema with a random
//!   name, so tests never see each other's events.
//! - [`TestServer`]: a server of a test's own for fault tests, to stop as a crash would and start
//!   again on the same URL. Never `DATABASE_URL`'s server, so it always needs the binaries.
//! - [`CuttingProxy`]: a TCP proxy in front of a server that cuts a connection after the server
//!   committed a marked statement and before its answer reaches the client: a lost answer.
//! - [`ChaosProxy`]: a TCP proxy that drops and stalls connections, loses answers and refuses
//!   new connections at random (from a seed), as the test switches it ([`Chaos`]).
//! - [`history`]: histories of appends, recorded by the writers and checked against the store
//!   after the run; [`load`]: writers that record them, on any store.
//! - [`ChildTest`]: a test of the running binary in a child process, to kill with `SIGKILL`
//!   ([`killing`]: writer processes killed at random, checked after every kill);
//!   [`SmallDisk`]: a small `tmpfs` to run out of space on.
//! - [`bounded`] and [`bounded_by`]: run a test that cuts connections to its end, or fail it
//!   after a bound instead of letting it hang.
//!
//! A small watchdog process stops each throwaway server and deletes its directory once the test
//! process has exited, however it exits. When running as root, the servers run as the
//! unprivileged `postgres` user (as PostgreSQL requires).
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

mod child;
mod cluster;
mod disk;
pub mod history;
pub mod killing;
pub mod load;
pub mod nats;
mod proxy;
mod rng;
mod server;

use std::future::Future;
use std::ops::Deref;
use std::sync::OnceLock;
use std::time::Duration;

use es_postgres::{PostgresError, PostgresStore};
use sqlx::postgres::PgPoolOptions;
use sqlx::Connection;

pub use crate::child::ChildTest;
use crate::cluster::Cluster;
pub use crate::disk::SmallDisk;
pub use crate::proxy::{Chaos, ChaosCounts, ChaosProxy, CuttingProxy};
pub use crate::rng::Rng;
pub use crate::server::TestServer;

/// The message when no server can be found.
const NO_POSTGRES: &str =
    "no PostgreSQL found: set DATABASE_URL or install PostgreSQL (Debian: apt-get install postgresql)";

/// Connections per test store: enough for the heaviest concurrency test.
const POOL_SIZE: u32 = 32;

/// Why no test server is available.
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
                _ => {
                    // Never dropped: the watchdog removes the cluster when the process exits.
                    let cluster = Cluster::create(NO_POSTGRES)?;
                    let port = cluster.start_on_free_port()?;
                    Ok(TestDatabase {
                        url: cluster::url(port),
                        throwaway: true,
                    })
                }
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
        TestSchema::create(&self.url, self.drop_url()).await
    }

    /// Like [`TestDatabase::schema`], but the schema is not created yet: for testing
    /// [`PostgresStore::migrate`] itself.
    pub async fn unmigrated_schema(&self) -> Result<TestSchema, PostgresError> {
        TestSchema::unmigrated(&self.url, self.drop_url()).await
    }

    /// Where to drop schemas after use: on a server that outlives the process.
    fn drop_url(&self) -> Option<String> {
        (!self.throwaway).then(|| self.url.clone())
    }
}

/// A [`PostgresStore`] in a fresh schema of a test server; it dereferences to the store. On a
/// `DATABASE_URL` server the schema is dropped when this is dropped; throwaway servers are
/// deleted whole.
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

    /// A fresh, migrated schema on the server at `url`, dropped through `drop_url` if given.
    async fn create(url: &str, drop_url: Option<String>) -> Result<Self, PostgresError> {
        let schema = Self::unmigrated(url, drop_url).await?;
        schema.migrate().await?;
        Ok(schema)
    }

    /// A fresh schema name on the server at `url`, with a pool of its own; nothing is created.
    async fn unmigrated(url: &str, drop_url: Option<String>) -> Result<Self, PostgresError> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect(url)
            .await
            .map_err(PostgresError::Connect)?;
        let name = format!("es_test_{}", uuid::Uuid::now_v7().simple());
        Ok(Self {
            store: PostgresStore::new(pool).with_schema(&name)?,
            drop_url,
        })
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
        // The schema, and the schemas of its tenants (`<schema>__<tenant>`, es_core::tenancy).
        let schema = self.store.schema();
        let drop_schema = format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE;
             DO $$ DECLARE tenant text; BEGIN
                 FOR tenant IN SELECT nspname FROM pg_namespace WHERE starts_with(nspname, '{schema}__') LOOP
                     EXECUTE format('DROP SCHEMA %I CASCADE', tenant);
                 END LOOP;
             END $$;"
        );
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

/// How long a test run by [`bounded`] may take.
pub const TEST_BOUND: Duration = Duration::from_secs(60);

/// Runs `test` to its end, or panics once it has run for [`TEST_BOUND`]: a test that cuts
/// connections (through a [`CuttingProxy`], or by stopping a [`TestServer`]) fails instead of
/// hanging when a cut leaves something waiting forever.
pub async fn bounded<T>(test: impl Future<Output = T>) -> T {
    bounded_by(TEST_BOUND, test).await
}

/// Like [`bounded`], with a bound of the test's own: for a test whose length is set at run time
/// (a long version run by a script).
pub async fn bounded_by<T>(bound: Duration, test: impl Future<Output = T>) -> T {
    match tokio::time::timeout(bound, test).await {
        Ok(outcome) => outcome,
        Err(_) => panic!("the test ran out of time ({} s)", bound.as_secs()),
    }
}

fn error(message: impl Into<String>) -> TestDatabaseError {
    TestDatabaseError(message.into())
}
