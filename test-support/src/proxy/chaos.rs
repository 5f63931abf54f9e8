//! [`ChaosProxy`]: a TCP proxy in front of a PostgreSQL server that drops, stalls, loses answers
//! and refuses connections at random, as the test switches it.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;

use super::{holds_marker, Faults, Relay, Verdict};
use crate::{Rng, TestDatabaseError};

/// What a [`ChaosProxy`] does to the connections it relays. The default does nothing: every
/// byte is forwarded. Chances are per chunk of bytes relayed (one read from a socket: about one
/// message or round trip of the PostgreSQL protocol), drawn from the proxy's seeded [`Rng`].
///
/// ```
/// use std::time::Duration;
/// use es_test_support::Chaos;
///
/// let storm = Chaos::default()
///     .dropping(0.002)
///     .stalling(0.002, Duration::from_millis(50)..Duration::from_millis(500))
///     .losing_answers(0.05, ["reliability-event", "COMMIT"]);
/// assert!(!storm.is_calm());
/// assert!(Chaos::default().is_calm());
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chaos {
    /// The chance that the connection is cut at a chunk, either way, before it is forwarded:
    /// a request that never reached the server, or an answer that never reached the client.
    pub drop: f64,
    /// The chance that a chunk is held back for a time drawn from [`Chaos::stall_for`] before
    /// it is forwarded.
    pub stall: f64,
    /// How long a stall lasts, drawn evenly from this range.
    pub stall_for: Range<Duration>,
    /// The chance that a client chunk holding one of [`Chaos::markers`] has its answer lost: the
    /// chunk reaches the server, and the connection is cut at the first bytes the server sends
    /// back. A statement that runs in its own transaction (an append) or a `COMMIT` has then
    /// committed, and its client hears nothing (see [`CuttingProxy`](crate::CuttingProxy) for
    /// why the cut falls after the commit).
    pub lose_answer: f64,
    /// What marks the requests whose answers may be lost: a string every event payload of the
    /// test carries, `COMMIT`... An empty marker marks every request.
    pub markers: Vec<Vec<u8>>,
}

impl Chaos {
    /// Cut connections at a chunk with chance `p`.
    pub fn dropping(mut self, p: f64) -> Self {
        self.drop = p;
        self
    }

    /// Hold a chunk back with chance `p`, for a time drawn from `pause`.
    pub fn stalling(mut self, p: f64, pause: Range<Duration>) -> Self {
        self.stall = p;
        self.stall_for = pause;
        self
    }

    /// Lose the answer to a request holding one of `markers` with chance `p`.
    pub fn losing_answers<M: AsRef<[u8]>>(mut self, p: f64, markers: impl IntoIterator<Item = M>) -> Self {
        self.lose_answer = p;
        self.markers = markers.into_iter().map(|marker| marker.as_ref().to_vec()).collect();
        self
    }

    /// Whether it does nothing.
    pub fn is_calm(&self) -> bool {
        self.drop <= 0.0 && self.stall <= 0.0 && (self.lose_answer <= 0.0 || self.markers.is_empty())
    }
}

/// What a [`ChaosProxy`] has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChaosCounts {
    /// Connections relayed.
    pub connections: u64,
    /// Connections refused (closed before a byte was relayed).
    pub refused: u64,
    /// Connections cut at a chunk ([`Chaos::drop`]).
    pub dropped: u64,
    /// Chunks held back ([`Chaos::stall`]).
    pub stalled: u64,
    /// Answers lost ([`Chaos::lose_answer`]).
    pub answers_lost: u64,
}

impl std::fmt::Display for ChaosCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} connections, {} refused, {} dropped, {} stalls, {} answers lost",
            self.connections, self.refused, self.dropped, self.stalled, self.answers_lost
        )
    }
}

/// A TCP proxy between PostgreSQL clients and a server that misbehaves like a bad network, at
/// random but replayably (from a seed), as the test switches it while it runs:
///
/// - [`ChaosProxy::set`] a [`Chaos`]: drop connections, stall them, lose the answers of
///   committed statements, each with a chance per chunk of bytes;
/// - [`ChaosProxy::refuse_for`] a while: new connections are closed as soon as they are
///   accepted, as by a server that is down, while open ones carry on.
///
/// It starts calm, listens on a free port of 127.0.0.1 and runs on the Tokio runtime it was
/// started on. Dropping it stops it and closes every connection it relays.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use es_test_support::{Chaos, ChaosProxy, TestDatabase};
///
/// let proxy = ChaosProxy::in_front_of(TestDatabase::get()?.url(), 0x5eed).await?;
/// let pool = sqlx::PgPool::connect_with(proxy.connect_options()).await?;
/// proxy.set(Chaos::default().dropping(0.01));
/// // ... load ...
/// proxy.refuse_for(Duration::from_secs(1));
/// proxy.set(Chaos::default()); // calm again
/// println!("{}", proxy.counts());
/// # let _ = pool; Ok(()) }
/// ```
#[derive(Debug)]
pub struct ChaosProxy {
    relay: Relay,
    state: Arc<State>,
}

/// What the proxy's tasks share with its handle.
#[derive(Debug)]
struct State {
    chaos: Mutex<Chaos>,
    rng: Mutex<Rng>,
    /// New connections are refused until then.
    refuse_until: Mutex<Option<Instant>>,
    connections: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
    stalled: AtomicU64,
    answers_lost: AtomicU64,
}

impl ChaosProxy {
    /// Starts a calm proxy in front of the server of `url` (a `postgres://` URL reached over
    /// TCP), drawing its faults from an [`Rng`] seeded with `seed`.
    pub async fn in_front_of(url: &str, seed: u64) -> Result<Self, TestDatabaseError> {
        let state = Arc::new(State {
            chaos: Mutex::new(Chaos::default()),
            rng: Mutex::new(Rng::new(seed)),
            refuse_until: Mutex::new(None),
            connections: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            stalled: AtomicU64::new(0),
            answers_lost: AtomicU64::new(0),
        });
        let relay = Relay::start(url, Arc::clone(&state) as Arc<dyn Faults>).await?;
        Ok(Self { relay, state })
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

    /// From now on, does what `chaos` says to every chunk of every connection (open ones
    /// included).
    pub fn set(&self, chaos: Chaos) {
        *lock(&self.state.chaos) = chaos;
    }

    /// What the proxy does now.
    pub fn chaos(&self) -> Chaos {
        lock(&self.state.chaos).clone()
    }

    /// Refuses new connections for `period` from now (open ones carry on); a zero period stops
    /// refusing at once.
    pub fn refuse_for(&self, period: Duration) {
        *lock(&self.state.refuse_until) = Some(Instant::now() + period);
    }

    /// Whether new connections are refused now.
    pub fn is_refusing(&self) -> bool {
        self.state.refusing()
    }

    /// What the proxy has done so far.
    pub fn counts(&self) -> ChaosCounts {
        let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ChaosCounts {
            connections: count(&self.state.connections),
            refused: count(&self.state.refused),
            dropped: count(&self.state.dropped),
            stalled: count(&self.state.stalled),
            answers_lost: count(&self.state.answers_lost),
        }
    }
}

/// Locks a mutex whose value stays whole whatever panicked while it was held (plain values,
/// replaced at once).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    fn refusing(&self) -> bool {
        lock(&self.refuse_until).is_some_and(|until| Instant::now() < until)
    }

    /// Drop or stall, as the dice say.
    fn roll(&self, chaos: &Chaos, rng: &mut Rng) -> Verdict {
        if rng.chance(chaos.drop) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Verdict::Cut;
        }
        if rng.chance(chaos.stall) {
            self.stalled.fetch_add(1, Ordering::Relaxed);
            return Verdict::Stall(rng.duration(chaos.stall_for.clone()));
        }
        Verdict::Forward
    }
}

impl Faults for State {
    fn admit(&self) -> bool {
        if self.refusing() {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.connections.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn client_sent(&self, window: &[u8]) -> Verdict {
        let chaos = lock(&self.chaos);
        let mut rng = lock(&self.rng);
        let verdict = self.roll(&chaos, &mut rng);
        if verdict != Verdict::Forward {
            return verdict;
        }
        let marked = chaos.lose_answer > 0.0 && holds_marker(window, chaos.markers.iter().map(Vec::as_slice));
        match marked && rng.chance(chaos.lose_answer) {
            true => Verdict::LoseAnswer,
            false => Verdict::Forward,
        }
    }

    fn server_sent(&self, _: &[u8]) -> Verdict {
        let chaos = lock(&self.chaos);
        let mut rng = lock(&self.rng);
        self.roll(&chaos, &mut rng)
    }

    fn overlap(&self) -> usize {
        let chaos = lock(&self.chaos);
        chaos
            .markers
            .iter()
            .map(|marker| marker.len().saturating_sub(1))
            .max()
            .unwrap_or(0)
    }

    fn answer_lost(&self) {
        self.answers_lost.fetch_add(1, Ordering::Relaxed);
    }
}
