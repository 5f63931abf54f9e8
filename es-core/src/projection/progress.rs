//! Read-your-writes: waiting until a projection has processed a position.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{CheckpointError, CheckpointStore};

/// A projection runner's progress, to wait until it has processed what a command wrote
/// (read-your-writes). Get one from [`ProjectionRunner::progress`](crate::ProjectionRunner::progress)
/// before the runner starts; clones are cheap and every clone sees the same progress.
///
/// The runner reports its checkpoint after every batch it commits, so waiting costs no queries
/// and no polling.
///
/// ```
/// # use std::{collections::BTreeMap, time::Duration};
/// # use es_core::{event, Aggregate, Apply, DecodedEvent, InMemoryReadModel, InMemoryStore, Metadata,
/// #     PollOnly, Projection, ProjectionRunner, Repository};
/// # use serde::{Deserialize, Serialize};
/// # #[event] #[derive(Debug, Clone)] pub struct Deposited { pub cents: u64 }
/// # #[event] #[derive(Debug, Clone)] pub enum AccountEvent { Deposited(Deposited) }
/// # #[derive(Default, Serialize, Deserialize, Aggregate)]
/// # #[aggregate(name = "account", event = AccountEvent)]
/// # pub struct Account;
/// # impl Apply<Deposited> for Account { fn apply(&mut self, _: &Deposited) {} }
/// # struct Balances;
/// # #[es_core::async_trait]
/// # impl Projection for Balances {
/// #     const NAME: &'static str = "balances";
/// #     const AGGREGATE_TYPES: &'static [&'static str] = &["account"];
/// #     type Event = AccountEvent;
/// #     type Context = BTreeMap<String, u64>;
/// #     async fn handle(&self, balances: &mut Self::Context, event: &DecodedEvent<AccountEvent>)
/// #         -> Result<(), es_core::HandlerError> {
/// #         let AccountEvent::Deposited(deposit) = &event.event;
/// #         *balances.entry(event.envelope.stream.aggregate_id.clone()).or_default() += deposit.cents;
/// #         Ok(())
/// #     }
/// #     async fn reset(&self, balances: &mut Self::Context) -> Result<(), es_core::HandlerError> {
/// #         balances.clear(); Ok(())
/// #     }
/// # }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = InMemoryStore::new();
/// let model = InMemoryReadModel::new();
/// let runner = ProjectionRunner::new(Balances, store.clone(), model.clone());
/// let progress = runner.progress();
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let wake_up = store.wake_up();
/// let running = tokio::spawn(async move { runner.run(wake_up, async { let _ = stopped.await; }).await });
///
/// let accounts = Repository::<Account, _>::new(store);
/// let executed = accounts.execute("a-1", Metadata::new(), |_: &Account| vec![Deposited { cents: 5 }.into()]).await?;
/// progress.wait_for(executed.position(), Duration::from_secs(10)).await?;
/// assert_eq!(model.read(|balances| balances["a-1"]), 5, "the read model has the command's events");
/// # let _ = stop.send(()); running.await??;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ProjectionProgress {
    projection: &'static str,
    checkpoint: watch::Receiver<Reported>,
}

/// What a runner reports to its [`ProjectionProgress`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reported {
    /// The last checkpoint committed (or read when the runner started).
    pub(crate) checkpoint: u64,
    /// Whether [`ProjectionRunner::run`](crate::ProjectionRunner::run) has returned (and not
    /// been called again): nothing reports progress until it is.
    pub(crate) run_ended: bool,
}

/// Why waiting for a projection's progress ended without it getting there.
///
/// Two errors are equal when they say the same: a checkpoint failure's `source` is compared by
/// its `reason`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The projection had not processed the position when the time was up.
    #[error("projection {projection} had not reached position {position} after {waited:?} (it is at {reached})")]
    Timeout {
        /// The projection.
        projection: &'static str,
        /// The position waited for.
        position: u64,
        /// Where the projection got to.
        reached: u64,
        /// How long the wait lasted.
        waited: Duration,
    },
    /// The runner's [`run`](crate::ProjectionRunner::run) returned (it was stopped, or failed),
    /// or the runner was dropped, before the projection got there: nothing reports progress.
    #[error("projection {projection} stopped at position {reached}, before position {position}")]
    Stopped {
        /// The projection.
        projection: &'static str,
        /// The position waited for.
        position: u64,
        /// Where the projection got to.
        reached: u64,
    },
    /// The committed checkpoint could not be read ([`wait_for_checkpoint`]).
    #[error("projection {projection}: its checkpoint could not be read: {reason}")]
    Checkpoint {
        /// The projection.
        projection: &'static str,
        /// The checkpoint store's error, as text.
        reason: String,
        /// The checkpoint store's error (shared, so that the wait's error stays `Clone`).
        #[source]
        source: Arc<CheckpointError>,
    },
}

impl PartialEq for WaitError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                Self::Timeout {
                    projection,
                    position,
                    reached,
                    waited,
                },
                Self::Timeout {
                    projection: p,
                    position: q,
                    reached: r,
                    waited: w,
                },
            ) => (projection, position, reached, waited) == (p, q, r, w),
            (
                Self::Stopped {
                    projection,
                    position,
                    reached,
                },
                Self::Stopped {
                    projection: p,
                    position: q,
                    reached: r,
                },
            ) => (projection, position, reached) == (p, q, r),
            (
                Self::Checkpoint { projection, reason, .. },
                Self::Checkpoint {
                    projection: p,
                    reason: r,
                    ..
                },
            ) => (projection, reason) == (p, r),
            _ => false,
        }
    }
}

impl Eq for WaitError {}

/// The instant `timeout` from now; a timeout too long for the clock (`Duration::MAX`, "wait
/// for ever") ends a century from now instead of overflowing.
pub(crate) fn deadline_after(timeout: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

impl ProjectionProgress {
    pub(crate) fn new(projection: &'static str, checkpoint: watch::Receiver<Reported>) -> Self {
        Self { projection, checkpoint }
    }

    /// The projection the progress is of.
    pub fn projection(&self) -> &'static str {
        self.projection
    }

    /// The last checkpoint the runner committed (or read when it started).
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint.borrow().checkpoint
    }

    /// Waits until the projection has processed every event up to `position` (handled it, or
    /// passed it as an event it does not read), at most `timeout`. Returns the checkpoint
    /// reached. Wait for the position of the last event a command wrote
    /// ([`Executed::position`](crate::Executed::position)).
    ///
    /// Fails at once with [`WaitError::Stopped`] when the runner's `run` has returned (or the
    /// runner was dropped) short of `position`, and with [`WaitError::Timeout`] when time runs
    /// out while it runs (or before it starts).
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> Result<u64, WaitError> {
        let mut checkpoint = self.checkpoint.clone();
        let reached = |checkpoint: &watch::Receiver<Reported>| checkpoint.borrow().checkpoint;
        let waited = tokio::time::timeout(timeout, async {
            checkpoint
                .wait_for(|reported| reported.checkpoint >= position || reported.run_ended)
                .await
                .map(|reported| *reported)
        })
        .await;
        match waited {
            Ok(Ok(reported)) if reported.checkpoint >= position => Ok(reported.checkpoint),
            Ok(_) => Err(WaitError::Stopped {
                projection: self.projection,
                position,
                reached: reached(&self.checkpoint),
            }),
            Err(_) => Err(WaitError::Timeout {
                projection: self.projection,
                position,
                reached: reached(&self.checkpoint),
                waited: timeout,
            }),
        }
    }

    /// Waits until every projection of `all` has processed `position`, at most `timeout` in
    /// all.
    pub async fn wait_all(all: &[ProjectionProgress], position: u64, timeout: Duration) -> Result<(), WaitError> {
        let deadline = deadline_after(timeout);
        for progress in all {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            progress.wait_for(position, left).await.map_err(|error| match error {
                WaitError::Timeout {
                    projection,
                    position,
                    reached,
                    ..
                } => WaitError::Timeout {
                    projection,
                    position,
                    reached,
                    waited: timeout,
                },
                error => error,
            })?;
        }
        Ok(())
    }
}

/// [`ProjectionProgress::wait_for`] in a process that does not run the projection (another
/// instance of a web service, a worker): reads the committed checkpoint of `projection` in
/// `checkpoints` every `poll` until it reaches `position`, at most `timeout`, and returns the
/// checkpoint reached. The runner's own process waits with [`ProjectionProgress`] instead,
/// which costs no queries.
///
/// ```
/// # use std::time::Duration;
/// # use es_core::{wait_for_checkpoint, InMemoryReadModel, WaitError};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let checkpoints = InMemoryReadModel::<Vec<u64>>::new(); // the store the runner commits to
/// let waited = wait_for_checkpoint(&checkpoints, "balances", 7, Duration::from_millis(5), Duration::from_millis(20));
/// assert!(matches!(waited.await, Err(WaitError::Timeout { reached: 0, .. })));
/// # }
/// ```
pub async fn wait_for_checkpoint<C: CheckpointStore + ?Sized>(
    checkpoints: &C,
    projection: &'static str,
    position: u64,
    poll: Duration,
    timeout: Duration,
) -> Result<u64, WaitError> {
    let deadline = deadline_after(timeout);
    loop {
        let reached = checkpoints
            .checkpoint(projection)
            .await
            .map_err(|error| WaitError::Checkpoint {
                projection,
                reason: error.to_string(),
                source: Arc::new(error),
            })?;
        if reached >= position {
            return Ok(reached);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(WaitError::Timeout {
                projection,
                position,
                reached,
                waited: timeout,
            });
        }
        tokio::time::sleep(poll.min(deadline - now)).await;
    }
}
