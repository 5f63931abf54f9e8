//! TCP proxies on loopback in front of a PostgreSQL server that break connections the way a
//! network does: [`CuttingProxy`] loses the answer of one marked statement, [`ChaosProxy`] drops,
//! stalls, cuts answers and refuses connections at random, as the test switches it.
//!
//! Both share the machinery of this module: the listener, the accept loop, and a relay per
//! connection that asks a [`Faults`] what to do with every chunk of bytes before it forwards it.

mod chaos;
mod cutting;

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::{error, TestDatabaseError};

pub use chaos::{Chaos, ChaosCounts, ChaosProxy};
pub use cutting::CuttingProxy;

/// Bytes read from a socket at a time.
const CHUNK: usize = 16 * 1024;

/// What a relay does with a chunk of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Forward it.
    Forward,
    /// Hold it for a while, then forward it.
    Stall(Duration),
    /// Close both sockets without forwarding it.
    Cut,
    /// Forward it (it comes from the client), and lose the server's answer to it: the next bytes
    /// the server sends on this connection are not forwarded, and both sockets are closed.
    LoseAnswer,
}

/// The policy of a proxy: asked about every connection and every chunk of bytes.
pub(crate) trait Faults: Send + Sync + 'static {
    /// Whether to relay a new connection; a refused one is closed at once.
    fn admit(&self) -> bool {
        true
    }

    /// What to do with bytes from the client. `window` ends with them, preceded by up to
    /// [`Faults::overlap`] bytes of the previous chunk, so that a marker split across two reads is
    /// still found.
    fn client_sent(&self, window: &[u8]) -> Verdict;

    /// What to do with bytes from the server (never [`Verdict::LoseAnswer`]).
    fn server_sent(&self, bytes: &[u8]) -> Verdict;

    /// How many bytes of a client chunk to keep for the next window.
    fn overlap(&self) -> usize {
        0
    }

    /// Called when the answer a [`Verdict::LoseAnswer`] asked for was lost.
    fn answer_lost(&self);
}

/// Whether `window` holds one of `markers` (an empty marker matches anything).
pub(crate) fn holds_marker<'m>(window: &[u8], markers: impl IntoIterator<Item = &'m [u8]>) -> bool {
    markers
        .into_iter()
        .any(|marker| marker.is_empty() || window.windows(marker.len()).any(|part| part == marker))
}

/// A listener on a free port of 127.0.0.1 relaying to the server of a URL, under a policy.
#[derive(Debug)]
pub(crate) struct Relay {
    addr: SocketAddr,
    /// How clients reach the server through the proxy.
    options: PgConnectOptions,
    /// Accepts connections; its connection tasks are aborted with it.
    accept: JoinHandle<()>,
}

impl Relay {
    /// Starts relaying to the server of `url` (a `postgres://` URL reached over TCP) under
    /// `faults`, on the Tokio runtime of the caller.
    pub(crate) async fn start(url: &str, faults: Arc<dyn Faults>) -> Result<Self, TestDatabaseError> {
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
        let accept = tokio::spawn(accept(listener, upstream, faults));
        Ok(Self {
            addr,
            options: options.host(&addr.ip().to_string()).port(addr.port()),
            accept,
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn connect_options(&self) -> PgConnectOptions {
        self.options.clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The connection tasks live in the accept task's JoinSet: dropping it aborts them all.
        self.accept.abort();
    }
}

/// Accepts connections until the proxy is dropped, relaying each admitted one in a task of its
/// own.
async fn accept(listener: TcpListener, upstream: SocketAddr, faults: Arc<dyn Faults>) {
    let mut connections = JoinSet::new();
    loop {
        // Reap finished relays so the set does not grow with every connection.
        while connections.try_join_next().is_some() {}
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(error) => {
                tracing::warn!(%error, "a test proxy cannot accept a connection");
                continue;
            }
        };
        if !faults.admit() {
            // Closed before a byte is relayed: the client's start-up fails.
            drop(client);
            continue;
        }
        connections.spawn(relay(client, upstream, Arc::clone(&faults)));
    }
}

/// Relays one connection until either side closes it or the policy cuts it. Returning drops both
/// sockets, which closes them.
async fn relay(client: TcpStream, upstream: SocketAddr, faults: Arc<dyn Faults>) {
    let server = match TcpStream::connect(upstream).await {
        Ok(server) => server,
        Err(error) => {
            tracing::warn!(%error, %upstream, "a test proxy cannot reach the server");
            return;
        }
    };
    // Nagle's delay would only slow the tests down: PostgreSQL clients write whole messages.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Set once the policy asked to lose the answer to what the client sent.
    let tripped = AtomicBool::new(false);
    tokio::select! {
        () = to_server(client_read, server_write, &*faults, &tripped) => {}
        () = to_client(server_read, client_write, &*faults, &tripped) => {}
    }
}

/// Forwards client→server bytes as the policy says.
async fn to_server(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, faults: &dyn Faults, tripped: &AtomicBool) {
    let mut buffer = vec![0; CHUNK];
    // The end of the bytes already forwarded, searched again with the next chunk.
    let mut window: Vec<u8> = Vec::new();
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let chunk = &buffer[..read];
        window.extend_from_slice(chunk);
        let verdict = faults.client_sent(&window);
        let keep = faults.overlap().min(window.len());
        window.drain(..window.len() - keep);
        match verdict {
            Verdict::Forward => {}
            Verdict::Stall(pause) => tokio::time::sleep(pause).await,
            Verdict::Cut => return,
            // Tripped before the bytes go out, so the answer to them cannot slip through.
            Verdict::LoseAnswer => tripped.store(true, Ordering::SeqCst),
        }
        if to.write_all(chunk).await.is_err() {
            return;
        }
    }
}

/// Forwards server→client bytes as the policy says; once the connection tripped, returns
/// without forwarding them, and the relay closes both sockets.
async fn to_client(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, faults: &dyn Faults, tripped: &AtomicBool) {
    let mut buffer = vec![0; CHUNK];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if tripped.load(Ordering::SeqCst) {
            faults.answer_lost();
            tracing::debug!(bytes = read, "a test proxy cut a connection before the server's answer");
            return;
        }
        match faults.server_sent(&buffer[..read]) {
            Verdict::Forward | Verdict::LoseAnswer => {}
            Verdict::Stall(pause) => tokio::time::sleep(pause).await,
            Verdict::Cut => return,
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
