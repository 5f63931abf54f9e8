//! [`CuttingProxy`]: a TCP proxy in front of a PostgreSQL server that can lose one answer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::postgres::PgConnectOptions;

use super::{holds_marker, Faults, Relay, Verdict};
use crate::TestDatabaseError;

/// A TCP proxy between PostgreSQL clients and a server that loses an answer the way a broken
/// network does.
///
/// It forwards every byte both ways until it is [armed](CuttingProxy::arm) with a marker. Then
/// the first connection whose client→server bytes contain the marker is cut at the first
/// server→client bytes that follow: both of its sockets are closed and those bytes are never
/// forwarded. That disarms the proxy; other connections, and connections opened later, are left
/// alone.
///
/// Put the marker in a statement's parameters (an event's payload, say): the Bind message
/// carries them, after the statement was prepared in a round trip of its own. A statement that
/// runs in its own implicit transaction commits at the Sync that follows, and PostgreSQL sends
/// its answer only then (when the answer fits the server's 8 kB send buffer, as a short one
/// does). So the cut falls after the commit and before the client hears of it: the client sees a
/// broken connection for a statement that took effect.
///
/// The proxy listens on a free port of 127.0.0.1 and runs on the Tokio runtime it was started
/// on. Dropping it stops it and closes every connection it relays.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use es_test_support::{CuttingProxy, TestDatabase};
///
/// let proxy = CuttingProxy::in_front_of(TestDatabase::get()?.url()).await?;
/// let pool = sqlx::PgPool::connect_with(proxy.connect_options()).await?;
/// proxy.arm("lost-answer-7");
/// // A statement whose parameters contain "lost-answer-7" commits, and its caller gets an error.
/// # let _ = pool; Ok(()) }
/// ```
#[derive(Debug)]
pub struct CuttingProxy {
    relay: Relay,
    shared: Arc<Shared>,
}

/// What the proxy's tasks share with its handle.
#[derive(Debug, Default)]
struct Shared {
    /// The marker the proxy is armed with.
    marker: Mutex<Option<Vec<u8>>>,
    /// How many connections were cut.
    cuts: AtomicUsize,
}

impl CuttingProxy {
    /// Starts a proxy in front of the server of `url` (a `postgres://` URL such as
    /// [`TestDatabase::url`](crate::TestDatabase::url)), which must be reached over TCP.
    pub async fn in_front_of(url: &str) -> Result<Self, TestDatabaseError> {
        let shared = Arc::new(Shared::default());
        let relay = Relay::start(url, Arc::clone(&shared) as Arc<dyn Faults>).await?;
        Ok(Self { relay, shared })
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.relay.addr()
    }

    /// Options that connect to the server through the proxy: those of the URL the proxy was
    /// started for, with the proxy's host and port.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.relay.connect_options()
    }

    /// Arms the proxy: the first connection to send `marker` afterwards is cut at the first
    /// bytes the server sends back (see [`CuttingProxy`]). An empty marker matches any bytes.
    /// Arming again replaces the marker.
    pub fn arm(&self, marker: impl Into<Vec<u8>>) {
        *self.shared.lock_marker() = Some(marker.into());
    }

    /// Disarms the proxy; a connection that already sent the marker is still cut.
    pub fn disarm(&self) {
        *self.shared.lock_marker() = None;
    }

    /// Whether the proxy waits for its marker: armed and no connection has sent it yet.
    pub fn is_armed(&self) -> bool {
        self.shared.lock_marker().is_some()
    }

    /// How many connections the proxy has cut.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }
}

impl Shared {
    fn lock_marker(&self) -> std::sync::MutexGuard<'_, Option<Vec<u8>>> {
        // The guarded value is a plain Option: a panic elsewhere cannot leave it half-written.
        self.marker.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Faults for Shared {
    /// Loses the answer when the window holds the armed marker, and disarms, so that one
    /// connection only is cut.
    fn client_sent(&self, window: &[u8]) -> Verdict {
        let mut marker = self.lock_marker();
        if !marker.as_deref().is_some_and(|marker| holds_marker(window, [marker])) {
            return Verdict::Forward;
        }
        *marker = None;
        Verdict::LoseAnswer
    }

    fn server_sent(&self, _: &[u8]) -> Verdict {
        Verdict::Forward
    }

    /// A marker may straddle two reads.
    fn overlap(&self) -> usize {
        self.lock_marker()
            .as_ref()
            .map_or(0, |marker| marker.len().saturating_sub(1))
    }

    fn answer_lost(&self) {
        self.cuts.fetch_add(1, Ordering::SeqCst);
    }
}
