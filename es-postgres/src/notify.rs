//! Wake-ups for listeners ([`PostgresStore::wake_up`](crate::PostgresStore::wake_up)): a
//! `NOTIFY` after each commit of events, never inside the append.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use es_core::{async_trait, WakeUp};
use sqlx::postgres::PgListener;
use sqlx::PgPool;

use crate::sql::Statements;
use crate::{PostgresError, PostgresStore};

impl PostgresStore {
    /// Wakes the listeners of this store's schema ([`PostgresStore::wake_up`], in any process)
    /// soon, from a task of its own; it does not wait for the notification to be sent.
    ///
    /// [`EventStore::append`](es_core::EventStore::append) does this itself after each commit.
    /// Call it after committing a transaction in which you appended with
    /// [`PostgresStore::append_in_transaction`]. Calling it without new events only makes
    /// listeners look for events in vain. Outside a Tokio runtime it does nothing (runners poll
    /// as well).
    pub fn notify_listeners(&self) {
        self.notifier.events_committed(&self.pool, &self.sql);
    }

    /// The same store (sharing its pool) sending its listeners at most one notification per
    /// `interval` (default 10 ms): each appending process sends one statement per interval
    /// under load instead of one per append, and listeners hear of a commit at most `interval`
    /// after it (at once after a quiet interval). `Duration::ZERO` notifies after every
    /// append, as soon as the previous notification is out.
    ///
    /// ```no_run
    /// # fn demo(store: es_postgres::PostgresStore) {
    /// let eager = store.with_notify_interval(std::time::Duration::ZERO);
    /// # }
    /// ```
    pub fn with_notify_interval(self, interval: Duration) -> Self {
        Self {
            notifier: Notifier::with_interval(interval),
            ..self
        }
    }
}

/// Sends the notifications of one store (and its clones), at most one per interval.
#[derive(Debug, Clone)]
pub(crate) struct Notifier {
    state: Arc<NotifierState>,
}

#[derive(Debug)]
struct NotifierState {
    /// Set while a wake-up for listeners is queued but not yet sent.
    queued: AtomicBool,
    /// When the last notification was sent.
    last_sent: Mutex<Option<Instant>>,
    /// The least time between two notifications.
    interval: Duration,
}

impl Default for Notifier {
    fn default() -> Self {
        Self::with_interval(DEFAULT_NOTIFY_INTERVAL)
    }
}

/// The least time between two notifications of one store: see
/// [`PostgresStore::with_notify_interval`].
pub(crate) const DEFAULT_NOTIFY_INTERVAL: Duration = Duration::from_millis(10);

impl Notifier {
    /// A notifier that sends at most one notification per `interval`.
    pub(crate) fn with_interval(interval: Duration) -> Self {
        Self {
            state: Arc::new(NotifierState {
                queued: AtomicBool::new(false),
                last_sent: Mutex::new(None),
                interval,
            }),
        }
    }

    /// The least time between two notifications.
    pub(crate) fn interval(&self) -> Duration {
        self.state.interval
    }

    /// Tells listeners that events were committed, from a task of its own. NOTIFY takes a
    /// database-wide lock at commit and holds it through the WAL flush: sent inside each append,
    /// it would make all appends queue behind each other. Sent apart, one at a time per store
    /// and at most one per interval, a burst of appends costs one notification (a statement
    /// per append would cost the server about a sixth of a one-event append), and every commit
    /// is still followed by a notification sent after it: at once after a quiet interval,
    /// otherwise at the end of the interval.
    pub(crate) fn events_committed(&self, pool: &PgPool, sql: &Arc<Statements>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!("no Tokio runtime to send the notification from; listeners will poll");
            return;
        };
        if self.state.queued.swap(true, Ordering::AcqRel) {
            return; // the queued notification has not been sent yet: it covers this commit too
        }
        let (pool, state, sql) = (pool.clone(), Arc::clone(&self.state), Arc::clone(sql));
        runtime.spawn(async move {
            let last_sent = *state.last_sent.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(last_sent) = last_sent {
                let wait = (last_sent + state.interval).saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            // Commits from here on queue another notification.
            state.queued.store(false, Ordering::Release);
            *state.last_sent.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
            let sent = sqlx::query(sql.notify).bind(&sql.channel).execute(&pool).await;
            if let Err(error) = sent {
                // Runners poll as well: a lost wake-up costs latency, never an event.
                tracing::debug!(%error, channel = sql.channel, "could not notify listeners");
            }
        });
    }
}

impl PostgresStore {
    /// A wake-up that fires when events are appended to this store (by any process), through
    /// PostgreSQL `LISTEN/NOTIFY`. Notifications are only a wake-up: runners poll as well, so a
    /// notification lost while disconnected delays, never loses, an event.
    pub async fn wake_up(&self) -> Result<PostgresWakeUp, PostgresError> {
        let mut listener = PgListener::connect_with(self.pool())
            .await
            .map_err(PostgresError::Connect)?;
        listener
            .listen(&self.sql.channel)
            .await
            .map_err(PostgresError::Connect)?;
        Ok(PostgresWakeUp { listener })
    }
}

/// Wakes a projection runner when events are appended; see [`PostgresStore::wake_up`].
#[derive(Debug)]
pub struct PostgresWakeUp {
    listener: PgListener,
}

#[async_trait]
impl WakeUp for PostgresWakeUp {
    async fn wait(&mut self) {
        if let Err(error) = self.listener.recv().await {
            // The listener reconnects on the next call; meanwhile the runner's polling covers.
            tracing::debug!(%error, "LISTEN connection lost; relying on polling until it is back");
            tokio::time::sleep(LISTEN_RETRY).await;
        }
    }
}

/// How long a wake-up whose `LISTEN` connection was lost waits before listening again.
const LISTEN_RETRY: Duration = Duration::from_millis(250);
