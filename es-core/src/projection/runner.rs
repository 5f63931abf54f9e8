//! The runner: feeds one projection from the global log, a checkpointed batch at a time.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::checkpoint::CheckpointStore;
use super::error::ProjectionError;
use super::lag::LAG_REPORT_INTERVAL;
use super::options::{Pacing, RunnerOptions};
use super::parking::ParkedEvent;
use super::progress::{ProjectionProgress, Reported};
use super::{Projection, WakeUp};
use crate::event::{EventDescriptor, EventSet};
use crate::lifecycle::StreamLifecycleEvent;
use crate::pii::ForgottenSubjectEvent;
use crate::store::{GlobalLog, LogFilter, StoreError};

/// The framework's own events, which any store may hold in its record streams: every
/// projection knows them, and passes over those its [`Projection::Event`] does not handle.
const FRAMEWORK_EVENTS: [&[EventDescriptor]; 2] = [StreamLifecycleEvent::EVENTS, ForgottenSubjectEvent::EVENTS];

/// Progress of a rebuild, reported after every batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RebuildProgress {
    /// Events read so far.
    pub done: u64,
    /// Events in the store when the rebuild started.
    pub total: u64,
    /// Events read per second so far.
    pub events_per_second: f64,
}

/// What a catch-up or rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CatchUp {
    /// Stored events read: handed to the projection, passed over, skipped or parked.
    pub read: u64,
    /// Events handed to the projection: a stored event a `#[replaced]` rule reads as several
    /// events counts each of them, one it drops counts none.
    pub handled: u64,
    /// Events skipped: unknown ones under [`UnknownEvents::Skip`](crate::UnknownEvents::Skip),
    /// failing ones under [`FailurePolicy::Skip`](crate::FailurePolicy::Skip).
    pub skipped: u64,
    /// Failing events parked under [`FailurePolicy::Park`](crate::FailurePolicy::Park).
    pub parked: u64,
    /// The checkpoint reached.
    pub position: u64,
}

/// Feeds one projection from a global log, committing read-model writes and checkpoints
/// together.
///
/// [`catch_up`](Self::catch_up), [`run`](Self::run) and [`rebuild`](Self::rebuild) claim the
/// projection first (waiting while another runner holds it) and retry transient failures by
/// themselves, as [`RunnerOptions`] says.
///
/// Only one runner per projection is active at a time: each claims the projection first (see
/// [`CheckpointStore::claim`]); a second runner waits and takes over when the first stops. The
/// claim is checked at the start of every unit of work, under the same lock that serializes the
/// units, so a runner that lost its claim (its connection was cut and another runner took over)
/// never commits again: it stops with [`ProjectionError::ClaimLost`].
///
/// # Faults
///
/// The runner sorts failures into these kinds, each handled its own way:
///
/// | failure | examples | what the runner does |
/// |---|---|---|
/// | transient | connection refused or cut, server restarting | retries with backoff ([`RunnerOptions::transient_retry`], without limit by default) |
/// | handler | a handler's own error | the [`FailurePolicy`](crate::FailurePolicy) ([`RunnerOptions::failure`]): retry, then stop, skip or park |
/// | bad event | an event it handles that does not decode | no retry: stops, or skips or parks it, by the same policy |
/// | unknown event | a name neither its events nor its `SOURCE_EVENTS` know | the [`UnknownEvents`](crate::UnknownEvents) policy: stop or skip |
/// | fatal | a lost claim; a read-model table or column the backend reports undefined ([`ProjectionError::ReadModelBroken`], whatever the failure policy) | stops with the error |
///
/// After any failed batch the next one is half as large (down to one event) and batches grow
/// back after successes, so a runner makes progress even when faults come faster than a full
/// batch takes, and a failing event is isolated in a batch of its own.
#[derive(Debug)]
pub struct ProjectionRunner<P, E, C> {
    pub(super) projection: P,
    /// The name checkpoints, parked events, logs and metrics go by: the projection's
    /// [`NAME`](Projection::NAME) unless renamed with [`with_name`](ProjectionRunner::with_name).
    pub(super) name: &'static str,
    pub(super) events: E,
    pub(super) checkpoints: C,
    pub(super) options: RunnerOptions,
    /// What the runner reads: its aggregate types, less the events it leaves out on purpose.
    pub(super) filter: LogFilter,
    /// The last checkpoint committed, and whether `run` has returned, for
    /// [`ProjectionProgress`].
    pub(super) progress: watch::Sender<Reported>,
}

impl<P, E, C> ProjectionRunner<P, E, C>
where
    P: Projection,
    E: GlobalLog,
    C: CheckpointStore<Context = P::Context>,
{
    /// A runner of `projection`, reading `events`, keeping checkpoints (and the read model) in
    /// `checkpoints`, with default [`RunnerOptions`].
    pub fn new(projection: P, events: E, checkpoints: C) -> Self {
        let left_out = P::SOURCE_EVENTS
            .iter()
            .chain(&FRAMEWORK_EVENTS)
            .flat_map(|events| events.iter())
            .flat_map(|event| std::iter::once(event.name).chain(event.aliases.iter().copied()))
            .filter(|name| !P::Event::handles(name));
        Self {
            projection,
            name: P::NAME,
            events,
            checkpoints,
            options: RunnerOptions::default(),
            filter: LogFilter::all()
                .aggregate_types(P::AGGREGATE_TYPES.iter().copied())
                .excluding_names(left_out),
            progress: watch::Sender::new(Reported::default()),
        }
    }

    /// Keeps this runner's checkpoint (and parked events, logs and metrics) under `name`
    /// instead of the projection's [`NAME`](Projection::NAME): to build a second copy of a read
    /// model beside the live one (see [`rebuild_beside`](Self::rebuild_beside)).
    pub fn with_name(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// The name the runner keeps its checkpoint under.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: RunnerOptions) -> Self {
        self.options = options;
        self
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// The global log the runner reads.
    pub fn events(&self) -> &E {
        &self.events
    }

    /// The checkpoint store (and read model) the runner commits to.
    pub fn checkpoints(&self) -> &C {
        &self.checkpoints
    }

    /// The projection, the global log and the checkpoint store, giving the runner up.
    pub fn into_parts(self) -> (P, E, C) {
        (self.projection, self.events, self.checkpoints)
    }

    /// The runner's progress, to wait until it has processed a position (read-your-writes).
    /// It follows this runner's commits, whichever of its methods runs.
    pub fn progress(&self) -> ProjectionProgress {
        ProjectionProgress::new(self.name, self.progress.subscribe())
    }

    /// The events this projection parked (see [`FailurePolicy::Park`](crate::FailurePolicy::Park)),
    /// in position order.
    pub async fn parked(&self) -> Result<Vec<ParkedEvent>, ProjectionError> {
        self.checkpoints
            .parked(self.name)
            .await
            .map_err(self.checkpoint_error())
    }

    /// Asks for the parked event at `position` to be handled again, once its cause is fixed:
    /// the runner running this projection looks for such requests once per
    /// [`poll_interval`](crate::RunnerOptions::poll_interval) (so within about that time, and
    /// after a batch it may be in the middle of), or the next [`catch_up`](Self::catch_up)
    /// does, before its first batch. Its writes commit together with its removal from the
    /// parked events, so it is applied exactly once; failing again, it stays parked with one
    /// more attempt. Returns whether such an event was parked.
    ///
    /// A retried event is handled after events that follow it in the global order: a
    /// projection that parks events must not depend on their order.
    pub async fn retry_parked(&self, position: u64) -> Result<bool, ProjectionError> {
        self.checkpoints
            .request_retry(self.name, position)
            .await
            .map_err(self.checkpoint_error())
    }

    /// Forgets the parked event at `position` for good. Returns whether there was one.
    pub async fn drop_parked(&self, position: u64) -> Result<bool, ProjectionError> {
        self.checkpoints
            .drop_parked(self.name, position)
            .await
            .map_err(self.checkpoint_error())
    }

    /// Claims the projection, handles the parked events an operator asked to retry, then
    /// handles events until it has caught up with the head.
    ///
    /// The head is what [`GlobalLog::read_all`] returns now: on PostgreSQL an event committed
    /// just before may lie beyond it while another write transaction in the cluster is open.
    /// To be sure a given position is handled, call again until the returned checkpoint
    /// reaches it, or wait with [`wait_for_checkpoint`](crate::wait_for_checkpoint).
    ///
    /// While another runner holds the projection (a [`run`](Self::run) in this or another
    /// process), this waits for it to let go, however long that is: the other runner keeps the
    /// model up to date meanwhile. Bound the wait with `tokio::time::timeout` (dropping the
    /// future gives the claim up, and nothing is half-committed), or ask
    /// [`CheckpointStore::claim_status`] first.
    pub async fn catch_up(&self) -> Result<CatchUp, ProjectionError> {
        let mut pacing = Pacing::new(self.name, self.options);
        let mut claim = self.claim(&mut pacing).await?;
        loop {
            match self.retry_requested(&mut claim).await {
                Ok(()) => break,
                Err(error) => tokio::time::sleep(pacing.failed(error)?).await,
            }
        }
        self.drain(&mut claim, &mut pacing, |_| {}).await
    }

    /// Claims the projection (waiting while another runner holds it), catches up, then tails
    /// new events, woken by `wake_up` or every poll interval, until `shutdown` resolves.
    ///
    /// It rides out outages by itself: when the stores are unreachable it retries with backoff
    /// and resumes from the checkpoint once they are back (logged, and visible in the
    /// `es_projection_unavailable` gauge). It returns `Ok` on shutdown, and an error only when
    /// another runner took the projection over ([`ProjectionError::ClaimLost`]) or a failure
    /// is fatal by the [`RunnerOptions`]. Stopping mid-batch is safe: the unfinished batch
    /// rolls back.
    pub async fn run<W: WakeUp>(&self, wake_up: W, shutdown: impl Future<Output = ()>) -> Result<(), ProjectionError> {
        self.progress.send_modify(|reported| reported.run_ended = false);
        let ended = self.run_until(wake_up, shutdown).await;
        // Waiters learn at once that nothing will report progress, though the runner lives on.
        self.progress.send_modify(|reported| reported.run_ended = true);
        ended
    }

    async fn run_until<W: WakeUp>(
        &self,
        mut wake_up: W,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ProjectionError> {
        tokio::pin!(shutdown);
        let mut pacing = Pacing::new(self.name, self.options);
        let mut claim = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            claim = self.claim(&mut pacing) => claim?,
        };
        tracing::info!(projection = self.name, "projection runner active");
        let mut last_lag_report: Option<Instant> = None;
        // Since when events are held back, and when to warn of it next.
        let mut held_back: Option<(Instant, Instant)> = None;
        let mut last_retry_check: Option<Instant> = None;
        loop {
            if last_retry_check.is_none_or(|checked| checked.elapsed() >= self.options.poll_interval) {
                last_retry_check = Some(Instant::now());
                let retried = tokio::select! {
                    biased;
                    () = &mut shutdown => return Ok(()),
                    retried = self.retry_requested(&mut claim) => retried,
                };
                if let Err(error) = retried {
                    let pause = pacing.failed(error)?;
                    tokio::select! {
                        biased;
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(pause) => continue,
                    }
                }
            }
            let step = tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                step = self.step(&mut claim, &pacing) => step,
            };
            let pause = match step {
                Ok(batch) => {
                    pacing.succeeded(batch.position);
                    if last_lag_report.is_none_or(|reported| reported.elapsed() >= LAG_REPORT_INTERVAL) {
                        last_lag_report = Some(Instant::now());
                        tokio::select! {
                            biased;
                            () = &mut shutdown => return Ok(()),
                            () = self.report_lag(&mut held_back) => {}
                        }
                    }
                    if batch.more {
                        continue;
                    }
                    None
                }
                Err(error) => Some(pacing.failed(error)?),
            };
            tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                () = wake_up.wait(), if pause.is_none() => {}
                () = tokio::time::sleep(pause.unwrap_or(self.options.poll_interval.max(MIN_PAUSE))) => {}
            }
        }
    }

    /// Empties the read model, resets the checkpoint, and replays every event, reporting
    /// progress after each batch. A projection added later catches up the same way (its
    /// checkpoint starts at 0), without the reset.
    ///
    /// Readers see the model emptied, then filling up. To keep serving the complete model
    /// while a new one is built, use [`rebuild_beside`](Self::rebuild_beside).
    ///
    /// Like [`catch_up`](Self::catch_up), it first waits, without limit, while another runner
    /// holds the projection: stop that runner first (`es rebuild` refuses instead of waiting).
    pub async fn rebuild(&self, on_progress: impl FnMut(RebuildProgress) + Send) -> Result<CatchUp, ProjectionError> {
        let mut pacing = Pacing::new(self.name, self.options);
        let mut claim = self.claim(&mut pacing).await?;
        self.replay_from_scratch(&mut claim, &mut pacing, on_progress).await
    }

    /// Resets the read model and replays every event, with progress reports.
    pub(super) async fn replay_from_scratch(
        &self,
        claim: &mut C::Claim,
        pacing: &mut Pacing,
        mut on_progress: impl FnMut(RebuildProgress) + Send,
    ) -> Result<CatchUp, ProjectionError> {
        loop {
            match self.reset(claim).await {
                Ok(()) => break,
                Err(error) => tokio::time::sleep(pacing.failed(error)?).await,
            }
        }
        let total = loop {
            match self.events.tail(0).await {
                Ok(tail) => break tail.events,
                Err(source) => tokio::time::sleep(pacing.failed(self.store_error()(source))?).await,
            }
        };
        let started = Instant::now();
        tracing::info!(projection = self.name, total, "rebuilding projection");
        let done = self
            .drain(claim, pacing, |done| {
                let seconds = started.elapsed().as_secs_f64();
                on_progress(RebuildProgress {
                    done,
                    total,
                    events_per_second: if seconds > 0.0 { done as f64 / seconds } else { 0.0 },
                });
            })
            .await?;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            projection = self.name,
            events = done.read,
            seconds,
            events_per_second = if seconds > 0.0 { done.read as f64 / seconds } else { 0.0 },
            "projection rebuilt"
        );
        Ok(done)
    }

    /// Claims the projection, retrying transient failures.
    pub(super) async fn claim(&self, pacing: &mut Pacing) -> Result<C::Claim, ProjectionError> {
        loop {
            match self.checkpoints.claim(self.name).await {
                Ok(claim) => return Ok(claim),
                Err(source) => {
                    let delay = pacing.failed(ProjectionError::from_checkpoint(self.name, source))?;
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Handles batches until one comes back short: the head is reached.
    pub(super) async fn drain(
        &self,
        claim: &mut C::Claim,
        pacing: &mut Pacing,
        mut on_batch: impl FnMut(u64) + Send,
    ) -> Result<CatchUp, ProjectionError> {
        let mut total = CatchUp::default();
        loop {
            match self.step(claim, pacing).await {
                Ok(batch) => {
                    pacing.succeeded(batch.position);
                    total.read += batch.read;
                    total.handled += batch.handled;
                    total.skipped += batch.skipped;
                    total.parked += batch.parked;
                    total.position = batch.position;
                    if batch.read > 0 {
                        on_batch(total.read);
                    }
                    if !batch.more {
                        return Ok(total);
                    }
                }
                Err(error) => tokio::time::sleep(pacing.failed(error)?).await,
            }
        }
    }
}

/// The shortest wait between polls or retries: a zero setting must not spin on the store.
pub(crate) const MIN_PAUSE: Duration = Duration::from_millis(1);

impl<P, E, C> ProjectionRunner<P, E, C> {
    pub(super) fn store_error(&self) -> impl Fn(StoreError) -> ProjectionError {
        let projection = self.name;
        move |source| ProjectionError::Store { projection, source }
    }
}
