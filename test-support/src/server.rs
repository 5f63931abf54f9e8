//! [`TestServer`]: a PostgreSQL server of a test's own, to stop and start again.

use std::sync::{Mutex, PoisonError};

use es_postgres::PostgresError;

use crate::cluster::{self, Cluster};
use crate::{TestDatabaseError, TestSchema};

/// The message when a [`TestServer`] cannot be made.
const NO_BINARIES: &str = "no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH or under \
     /usr/lib/postgresql/*/bin: a TestServer is always a server of its own, DATABASE_URL does not \
     apply. Install PostgreSQL (Debian: apt-get install postgresql)";

/// A PostgreSQL server of its own, for fault tests: [stop](TestServer::stop) it as a crash
/// would and [start it again](TestServer::restart) on the same port and data directory, so
/// clients reconnect to the same [URL](TestServer::url) and find the committed data.
///
/// It is never the per-process [`TestDatabase`](crate::TestDatabase), and never
/// `DATABASE_URL`'s server: stopping it disturbs no other test. Each one is a cluster of its own
/// (`initdb` takes a second or two), on a free port of 127.0.0.1, in a temporary directory. It is
/// stopped and deleted when dropped, and by the watchdog when the process exits without dropping
/// it.
///
/// Stopping and starting run `pg_ctl` and wait for it: they block the calling thread for up to a
/// few seconds (use a multi-threaded runtime in async tests).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use es_test_support::TestServer;
///
/// let server = TestServer::start()?;
/// let schema = server.schema().await?; // a store in a fresh schema on this server
/// server.stop()?; // every connection is cut; new ones are refused
/// server.restart()?; // crash recovery, then the same URL works again
/// # let _ = schema; Ok(()) }
/// ```
#[derive(Debug)]
pub struct TestServer {
    cluster: Cluster,
    url: String,
    port: u16,
    /// Whether the server runs; the lock also orders stops and starts.
    running: Mutex<bool>,
}

impl TestServer {
    /// Creates a cluster and starts its server on a free port. Fails, saying what to install,
    /// when the machine has no PostgreSQL server binaries.
    pub fn start() -> Result<Self, TestDatabaseError> {
        let cluster = Cluster::create(NO_BINARIES)?;
        let port = cluster.start_on_free_port()?;
        Ok(Self {
            cluster,
            url: cluster::url(port),
            port,
            running: Mutex::new(true),
        })
    }

    /// The connection URL; the same for the server's whole life, across stops and starts.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port of 127.0.0.1 the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server runs.
    pub fn is_running(&self) -> bool {
        *self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the server at once (`pg_ctl -m immediate stop`), as a crash would: open
    /// connections are cut, new ones are refused, and uncommitted transactions are lost. Does
    /// nothing if it is stopped already.
    pub fn stop(&self) -> Result<(), TestDatabaseError> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if *running {
            self.cluster.stop_immediately()?;
            *running = false;
        }
        Ok(())
    }

    /// Starts the server again on the same port and data directory, and waits until it accepts
    /// connections (after recovering from the stop as from a crash). If it runs, it is first
    /// stopped as [`TestServer::stop`] does: a crash and a recovery in one call.
    pub fn restart(&self) -> Result<(), TestDatabaseError> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if *running {
            self.cluster.stop_immediately()?;
            *running = false;
        }
        self.cluster.start(self.port)?;
        *running = true;
        Ok(())
    }

    /// A store in a fresh, migrated schema of this server, with its own pool (see
    /// [`TestDatabase::schema`](crate::TestDatabase::schema)). The server must be running.
    pub async fn schema(&self) -> Result<TestSchema, PostgresError> {
        TestSchema::create(&self.url, None).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            tracing::warn!(%error, "cannot stop a test server; the watchdog will at exit");
            return;
        }
        if let Err(error) = self.cluster.remove() {
            tracing::warn!(%error, "cannot remove a test server; the watchdog will at exit");
        }
    }
}
