//! How [`PostgresStore::connect_with`](crate::PostgresStore::connect_with) connects: the server,
//! how long the first connection may take, and the pool.

use std::fmt;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::error::PostgresError;

/// How to connect a [`PostgresStore`](crate::PostgresStore): the server, how long the first
/// connection may take, and the options of the connection pool.
///
/// [`PostgresStore::connect_with`](crate::PostgresStore::connect_with) opens one connection
/// first, within [`connect_timeout`](PostgresOptions::connect_timeout): a server that refuses
/// it, or a wrong password or database, fails at once with
/// [`PostgresError::ConnectFailed`] naming the address and the cause, and one that does not
/// answer in time fails with [`PostgresError::ConnectTimedOut`], rather than being retried
/// quietly for as long as the pool waits for a connection (30 seconds by default).
///
/// ```no_run
/// use std::time::Duration;
/// use es_postgres::{PostgresOptions, PostgresStore};
/// use sqlx::postgres::PgPoolOptions;
///
/// # async fn demo() -> Result<(), es_postgres::PostgresError> {
/// let options = PostgresOptions::new("postgres://app@db.internal/app")?
///     .with_connect_timeout(Duration::from_secs(2))
///     .with_pool_options(PgPoolOptions::new().max_connections(20));
/// let store = PostgresStore::connect_with(options).await?.with_schema("tickets")?;
/// # let _ = store; Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresOptions {
    pub(crate) connect: PgConnectOptions,
    pub(crate) pool: PgPoolOptions,
    connect_timeout: Duration,
}

impl PostgresOptions {
    /// How long the first connection may take unless told otherwise: 5 seconds.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

    /// Options for the server at `url` (e.g. `postgres://user:password@host:5432/database`),
    /// with the default timeout and pool. A URL that does not parse is
    /// [`PostgresError::Connect`].
    pub fn new(url: &str) -> Result<Self, PostgresError> {
        let connect = url.parse::<PgConnectOptions>().map_err(PostgresError::Connect)?;
        Ok(Self::from_connect_options(connect))
    }

    /// Options for the server `connect` describes (built field by field, or from the
    /// environment with `PgConnectOptions::new()`), with the default timeout and pool.
    pub fn from_connect_options(connect: PgConnectOptions) -> Self {
        Self {
            connect,
            // No ping before each acquire: it would double the round trips of every append. A
            // dead connection surfaces as an error on use, like any other connection failure.
            pool: PgPoolOptions::new().test_before_acquire(false),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// Sets how long the first connection may take, from the TCP connect to the end of the
    /// authentication. Default: [`PostgresOptions::DEFAULT_CONNECT_TIMEOUT`].
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the options of the connection pool (size, how long an operation waits for a
    /// connection, lifetimes). Default: sqlx's, except that connections are not pinged before
    /// each use (`test_before_acquire(false)`): keep that unless you want a round trip more per
    /// operation.
    pub fn with_pool_options(mut self, pool: PgPoolOptions) -> Self {
        self.pool = pool;
        self
    }

    /// How long the first connection may take.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Where the options connect, as errors name it: `user@host:port/database`, or the Unix
    /// socket's path instead of `host:port`. Never the password.
    pub fn address(&self) -> String {
        let options = &self.connect;
        let place = match options.get_socket() {
            Some(socket) => socket.display().to_string(),
            None if options.get_host().starts_with('/') => options.get_host().to_owned(),
            // An IPv6 address, unless the URL's brackets are still on it.
            None if options.get_host().contains(':') && !options.get_host().starts_with('[') => {
                format!("[{}]:{}", options.get_host(), options.get_port())
            }
            None => format!("{}:{}", options.get_host(), options.get_port()),
        };
        let database = options.get_database().unwrap_or(options.get_username());
        format!("{}@{place}/{database}", options.get_username())
    }
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The address, not the connect options: those hold the password.
        f.debug_struct("PostgresOptions")
            .field("address", &self.address())
            .field("connect_timeout", &self.connect_timeout)
            .field("pool", &self.pool)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_names_user_host_port_and_database_but_never_the_password() {
        let options = PostgresOptions::new("postgres://app:secret@db.internal:6432/events").map(|o| o.address());
        assert_eq!(options.ok().as_deref(), Some("app@db.internal:6432/events"));
        let defaults = PostgresOptions::new("postgres://app:secret@[::1]").map(|o| o.address());
        assert_eq!(defaults.ok().as_deref(), Some("app@[::1]:5432/app"));
        let debug = PostgresOptions::new("postgres://app:secret@host/db").map(|o| format!("{o:?}"));
        assert!(debug.is_ok_and(|debug| !debug.contains("secret")));
    }

    #[test]
    fn a_url_that_does_not_parse_is_a_connect_error() {
        let result = PostgresOptions::new("postgres://postgres@127.0.0.1:not-a-port/none");
        assert!(matches!(result, Err(PostgresError::Connect(_))), "{result:?}");
    }
}
