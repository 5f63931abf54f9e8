//! How a store opens its database file: durability, waiting for locks, read-only access.

use std::time::Duration;

use es_core::Limits;

/// How hard SQLite works to make a commit survive a crash of the machine (`PRAGMA synchronous`).
///
/// A crash of the *process* never loses a commit in either mode: a commit is in the
/// write-ahead log before `append` returns. The modes differ on power loss or an operating
/// system crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// `FULL`, the default: every commit is flushed to disk (`fsync` of the write-ahead log)
    /// before it returns, so an acknowledged append survives power loss, as with PostgreSQL's
    /// default `synchronous_commit = on`.
    #[default]
    Full,
    /// `NORMAL`: the write-ahead log is flushed at checkpoints only. Much faster appends on slow
    /// disks; power loss may roll back the last commits (whole commits, never part of one), and
    /// never corrupts the file.
    Normal,
}

impl Synchronous {
    /// The pragma's value.
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Normal => "NORMAL",
        }
    }
}

/// Options for opening a [`SqliteStore`](crate::SqliteStore). Start from the default and change
/// what you need:
///
/// ```
/// use std::time::Duration;
/// use es_sqlite::{SqliteOptions, Synchronous};
///
/// let options = SqliteOptions::default()
///     .with_busy_timeout(Duration::from_secs(2))
///     .with_synchronous(Synchronous::Normal);
/// assert_eq!(options.busy_timeout, Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// How long an operation waits for another connection's write lock (another process
    /// appending, a projection's unit of work) before failing with
    /// [`SqliteError::Busy`](crate::SqliteError::Busy), which stores report as the transient
    /// [`StoreError::Unavailable`](es_core::StoreError::Unavailable). Default: 5 seconds.
    pub busy_timeout: Duration,
    /// Durability of commits. Default: [`Synchronous::Full`].
    pub synchronous: Synchronous,
    /// Open the file read-only: reads work, every write fails with
    /// [`SqliteError::ReadOnly`](crate::SqliteError::ReadOnly). SQLite itself refuses writes, so
    /// this holds even for a user (root) whom file permissions would not stop. The file must be
    /// a store already, and one in a directory this process may not write is read as immutable:
    /// see [`SqliteStore::open_read_only`](crate::SqliteStore::open_read_only). Default: `false`.
    pub read_only: bool,
    /// Create the file when it does not exist (ignored when read-only). Default: `true`.
    pub create_if_missing: bool,
    /// How many idle reader connections the store keeps open for reuse; more are opened while
    /// reads run concurrently. Default: 4.
    pub max_idle_readers: usize,
    /// How often a projection runner waiting for another runner's claim tries again: the
    /// longest delay before it takes over once the holder is gone. Default: 100 ms.
    pub claim_retry: Duration,
    /// What an append may hold: appends over these limits are refused with
    /// [`StoreError::LimitExceeded`](es_core::StoreError::LimitExceeded) before any lock is
    /// taken. Capped by [`SqliteStore::MAX_LIMITS`](crate::SqliteStore::MAX_LIMITS) when the
    /// store opens. Default: [`Limits::DEFAULT`], the same as every store's.
    pub limits: Limits,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(5),
            synchronous: Synchronous::Full,
            read_only: false,
            create_if_missing: true,
            max_idle_readers: 4,
            claim_retry: Duration::from_millis(100),
            limits: Limits::DEFAULT,
        }
    }
}

impl SqliteOptions {
    /// Sets [`SqliteOptions::busy_timeout`].
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Sets [`SqliteOptions::synchronous`].
    pub fn with_synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Sets [`SqliteOptions::read_only`].
    pub fn with_read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Sets [`SqliteOptions::create_if_missing`].
    pub fn with_create_if_missing(mut self, create: bool) -> Self {
        self.create_if_missing = create;
        self
    }

    /// Sets [`SqliteOptions::max_idle_readers`].
    pub fn with_max_idle_readers(mut self, readers: usize) -> Self {
        self.max_idle_readers = readers;
        self
    }

    /// Sets [`SqliteOptions::claim_retry`].
    pub fn with_claim_retry(mut self, retry: Duration) -> Self {
        self.claim_retry = retry;
        self
    }

    /// Sets [`SqliteOptions::limits`].
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}
