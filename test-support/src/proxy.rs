//! [`CuttingProxy`]: a TCP proxy in front of a PostgreSQL server that can lose one answer.

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::postgres::PgConnectOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::{error, TestDatabaseError};

/// Bytes read from a socket at a time.
const CHUNK: usize = 16 * 1024;

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
    addr: SocketAddr,
    /// How clients reach the server through the proxy.
    options: PgConnectOptions,
    shared: Arc<Shared>,
    /// Accepts connections; its connection tasks are aborted with it.
    accept: JoinHandle<()>,
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
        let options = PgConnectOptions::from_str(url).map_err(|e| error(format!("cannot read the URL {url}: {e}")))?;
        if let Some(socket) = options.get_socket() {
            return Err(error(format!(
                "{url} reaches the server through the Unix socket {}: a TCP proxy needs a TCP host",
                socket.display()
            )));
        }
        let server = (options.get_host(), options.get_port());
        let upstream = tokio::net::lookup_host(server)
            .await
            .ok()
            .and_then(|mut addresses| addresses.next())
            .ok_or_else(|| error(format!("cannot resolve the host of {url}")))?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| error(format!("cannot listen on 127.0.0.1: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| error(format!("cannot read the proxy's address: {e}")))?;
        let shared = Arc::new(Shared::default());
        let accept = tokio::spawn(accept(listener, upstream, Arc::clone(&shared)));
        Ok(Self {
            addr,
            options: options.host(&addr.ip().to_string()).port(addr.port()),
            shared,
            accept,
        })
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Options that connect to the server through the proxy: those of the URL the proxy was
    /// started for, with the proxy's host and port.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.options.clone()
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

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        // The connection tasks live in the accept task's JoinSet: dropping it aborts them all.
        self.accept.abort();
    }
}

impl Shared {
    fn lock_marker(&self) -> std::sync::MutexGuard<'_, Option<Vec<u8>>> {
        // The guarded value is a plain Option: a panic elsewhere cannot leave it half-written.
        self.marker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `bytes` hold the armed marker; if so the proxy disarms, so that one connection
    /// only is cut.
    fn take_marker_in(&self, bytes: &[u8]) -> bool {
        let mut marker = self.lock_marker();
        let found = marker
            .as_deref()
            .is_some_and(|marker| marker.is_empty() || bytes.windows(marker.len()).any(|window| window == marker));
        if found {
            *marker = None;
        }
        found
    }

    /// How many bytes of a chunk to keep for the next one: a marker may straddle two reads.
    fn overlap(&self) -> usize {
        self.lock_marker()
            .as_ref()
            .map_or(0, |marker| marker.len().saturating_sub(1))
    }
}

/// Accepts connections until the proxy is dropped, relaying each in a task of its own.
async fn accept(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        // Reap finished relays so the set does not grow with every connection.
        while connections.try_join_next().is_some() {}
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(error) => {
                tracing::warn!(%error, "the cutting proxy cannot accept a connection");
                continue;
            }
        };
        connections.spawn(relay(client, upstream, Arc::clone(&shared)));
    }
}

/// Relays one connection until either side closes it or the proxy cuts it. Returning drops both
/// sockets, which closes them.
async fn relay(client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    let server = match TcpStream::connect(upstream).await {
        Ok(server) => server,
        Err(error) => {
            tracing::warn!(%error, %upstream, "the cutting proxy cannot reach the server");
            return;
        }
    };
    // Nagle's delay would only slow the tests down: PostgreSQL clients write whole messages.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Set once the client sent the marker on this connection: the server's next bytes are the
    // answer to lose.
    let tripped = AtomicBool::new(false);
    tokio::select! {
        () = to_server(client_read, server_write, &shared, &tripped) => {}
        () = to_client(server_read, client_write, &shared, &tripped) => {}
    }
}

/// Forwards client→server bytes, watching for the marker.
async fn to_server(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, shared: &Shared, tripped: &AtomicBool) {
    let mut buffer = vec![0; CHUNK];
    // The end of the bytes already forwarded, searched again with the next chunk.
    let mut carried: Vec<u8> = Vec::new();
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let chunk = &buffer[..read];
        carried.extend_from_slice(chunk);
        // Tripped before the bytes go out, so the answer to them cannot slip through.
        if shared.take_marker_in(&carried) {
            tripped.store(true, Ordering::SeqCst);
        }
        let keep = shared.overlap().min(carried.len());
        carried.drain(..carried.len() - keep);
        if to.write_all(chunk).await.is_err() {
            return;
        }
    }
}

/// Forwards server→client bytes, unless the connection tripped: then it returns without
/// forwarding them, and the relay closes both sockets.
async fn to_client(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, shared: &Shared, tripped: &AtomicBool) {
    let mut buffer = vec![0; CHUNK];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if tripped.load(Ordering::SeqCst) {
            shared.cuts.fetch_add(1, Ordering::SeqCst);
            tracing::debug!(
                bytes = read,
                "the cutting proxy cut a connection before the server's answer"
            );
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
