//! Wake-ups for listeners ([`PostgresStore::wake_up`](crate::PostgresStore::wake_up)): a
//! `NOTIFY` after each commit of events, never inside the append.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sqlx::PgPool;

use crate::sql::Statements;
use crate::PostgresStore;

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
}

/// Sends the notifications of one store (and its clones), coalescing bursts.
#[derive(Debug, Clone, Default)]
pub(crate) struct Notifier {
    /// Set while a wake-up for listeners is queued but not yet sent.
    queued: Arc<AtomicBool>,
}

impl Notifier {
    /// Tells listeners that events were committed, from a task of its own. NOTIFY takes a
    /// database-wide lock at commit and holds it through the WAL flush: sent inside each append,
    /// it would make all appends queue behind each other. Sent apart, one at a time per store, a
    /// burst of appends costs one notification, and every commit is still followed by a
    /// notification sent after it.
    pub(crate) fn events_committed(&self, pool: &PgPool, sql: &Arc<Statements>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!("no Tokio runtime to send the notification from; listeners will poll");
            return;
        };
        if self.queued.swap(true, Ordering::AcqRel) {
            return; // the queued notification has not been sent yet: it covers this commit too
        }
        let (pool, queued, sql) = (pool.clone(), Arc::clone(&self.queued), Arc::clone(sql));
        runtime.spawn(async move {
            // Commits from here on queue another notification.
            queued.store(false, Ordering::Release);
            let sent = sqlx::query(sql.notify).bind(&sql.channel).execute(&pool).await;
            if let Err(error) = sent {
                // Runners poll as well: a lost wake-up costs latency, never an event.
                tracing::debug!(%error, channel = sql.channel, "could not notify listeners");
            }
        });
    }
}
