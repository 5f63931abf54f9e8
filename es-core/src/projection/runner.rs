//! The runner: feeds one projection from the global log, a checkpointed batch at a time.

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::checkpoint::{CheckpointError, CheckpointStore};
use super::error::{HandlerFailure, ProjectionError};
use super::options::{Pacing, RunnerOptions};
use super::{Projection, WakeUp};
use crate::event::EventSet;
use crate::record::{decode_record, DecodedEvent};
use crate::store::{GlobalLog, RecordedEvent, StoreError};

/// How far a projection is behind the head of the store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lag {
    /// The projection's checkpoint.
    pub checkpoint: u64,
    /// Events after the checkpoint.
    pub events_behind: u64,
    /// Age of the oldest unhandled event (0 when caught up).
    pub seconds_behind: f64,
}

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
pub struct CatchUp {
    /// Events read (handled or skipped).
    pub read: u64,
    /// Events handed to the projection.
    pub handled: u64,
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
/// The runner sorts failures into three kinds, each handled its own way:
///
/// | failure | examples | what the runner does |
/// |---|---|---|
/// | transient | connection refused or cut, server restarting | retries with backoff ([`RunnerOptions::transient_retry`], without limit by default) |
/// | handler | a handler's own error | the [`FailurePolicy`](crate::FailurePolicy) ([`RunnerOptions::failure`]) |
/// | fatal | an event that does not decode, a lost claim, a missing table | stops with the error |
///
/// After any failed batch the next one is half as large (down to one event) and batches grow
/// back after successes, so a runner makes progress even when faults come faster than a full
/// batch takes, and a failing event is isolated in a batch of its own.
#[derive(Debug)]
pub struct ProjectionRunner<P, E, C> {
    projection: P,
    events: E,
    checkpoints: C,
    options: RunnerOptions,
}

/// Why a batch's handling stopped.
enum BatchFailure {
    Decode(ProjectionError),
    Handler(Box<HandlerFailure>),
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
        Self {
            projection,
            events,
            checkpoints,
            options: RunnerOptions::default(),
        }
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

    /// Claims the projection, then handles events until it has caught up with the head.
    pub async fn catch_up(&self) -> Result<CatchUp, ProjectionError> {
        let mut pacing = Pacing::new(P::NAME, self.options);
        let mut claim = self.claim(&mut pacing).await?;
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
    pub async fn run<W: WakeUp>(
        &self,
        mut wake_up: W,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ProjectionError> {
        tokio::pin!(shutdown);
        let mut pacing = Pacing::new(P::NAME, self.options);
        let mut claim = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            claim = self.claim(&mut pacing) => claim?,
        };
        tracing::info!(projection = P::NAME, "projection runner active");
        let mut last_lag_report: Option<Instant> = None;
        loop {
            let limit = pacing.limit();
            let step = tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                step = self.step(&mut claim, limit) => step,
            };
            let pause = match step {
                Ok(batch) => {
                    pacing.succeeded(batch.position);
                    if last_lag_report.is_none_or(|reported| reported.elapsed() >= LAG_REPORT_INTERVAL) {
                        last_lag_report = Some(Instant::now());
                        tokio::select! {
                            biased;
                            () = &mut shutdown => return Ok(()),
                            () = self.report_lag() => {}
                        }
                    }
                    if batch.read >= limit as u64 {
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
    pub async fn rebuild(
        &self,
        mut on_progress: impl FnMut(RebuildProgress) + Send,
    ) -> Result<CatchUp, ProjectionError> {
        let mut pacing = Pacing::new(P::NAME, self.options);
        let mut claim = self.claim(&mut pacing).await?;
        loop {
            match self.reset(&mut claim).await {
                Ok(()) => break,
                Err(error) => tokio::time::sleep(pacing.failed(error)?).await,
            }
        }
        let total = loop {
            match self.events.tail(0).await {
                Ok(tail) => break tail.events,
                Err(source) => tokio::time::sleep(pacing.failed(store_error::<P>(source))?).await,
            }
        };
        let started = Instant::now();
        tracing::info!(projection = P::NAME, total, "rebuilding projection");
        self.drain(&mut claim, &mut pacing, |done| {
            let seconds = started.elapsed().as_secs_f64();
            on_progress(RebuildProgress {
                done,
                total,
                events_per_second: if seconds > 0.0 { done as f64 / seconds } else { 0.0 },
            });
        })
        .await
    }

    /// How far the projection is behind the head of the store.
    pub async fn lag(&self) -> Result<Lag, ProjectionError> {
        let checkpoint = self
            .checkpoints
            .checkpoint(P::NAME)
            .await
            .map_err(|source| ProjectionError::from_checkpoint(P::NAME, source))?;
        let tail = self.events.tail(checkpoint).await.map_err(store_error::<P>)?;
        let seconds_behind = if tail.events == 0 {
            0.0
        } else {
            let oldest = self.events.read_all(checkpoint, 1).await.map_err(store_error::<P>)?;
            oldest.first().map_or(0.0, |event| {
                (Utc::now() - event.recorded_at).num_milliseconds().max(0) as f64 / 1000.0
            })
        };
        Ok(Lag {
            checkpoint,
            events_behind: tail.events,
            seconds_behind,
        })
    }

    async fn report_lag(&self) {
        match self.lag().await {
            Ok(lag) => {
                metrics::gauge!("es_projection_lag_events", "projection" => P::NAME).set(lag.events_behind as f64);
                metrics::gauge!("es_projection_lag_seconds", "projection" => P::NAME).set(lag.seconds_behind);
                tracing::debug!(
                    projection = P::NAME,
                    events_behind = lag.events_behind,
                    seconds_behind = lag.seconds_behind,
                    "projection lag"
                );
            }
            Err(error) => tracing::warn!(projection = P::NAME, %error, "cannot measure projection lag"),
        }
    }

    /// Claims the projection, retrying transient failures.
    async fn claim(&self, pacing: &mut Pacing) -> Result<C::Claim, ProjectionError> {
        loop {
            match self.checkpoints.claim(P::NAME).await {
                Ok(claim) => return Ok(claim),
                Err(source) => {
                    let delay = pacing.failed(ProjectionError::from_checkpoint(P::NAME, source))?;
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Handles batches until one comes back short: the head is reached.
    async fn drain(
        &self,
        claim: &mut C::Claim,
        pacing: &mut Pacing,
        mut on_batch: impl FnMut(u64) + Send,
    ) -> Result<CatchUp, ProjectionError> {
        let mut total = CatchUp::default();
        loop {
            let limit = pacing.limit();
            match self.step(claim, limit).await {
                Ok(batch) => {
                    pacing.succeeded(batch.position);
                    total.read += batch.read;
                    total.handled += batch.handled;
                    total.position = batch.position;
                    if batch.read > 0 {
                        on_batch(total.read);
                    }
                    if batch.read < limit as u64 {
                        return Ok(total);
                    }
                }
                Err(error) => tokio::time::sleep(pacing.failed(error)?).await,
            }
        }
    }

    /// Empties the read model and sets the checkpoint to 0, in one unit of work.
    async fn reset(&self, claim: &mut C::Claim) -> Result<(), ProjectionError> {
        let (mut unit, _) = self.begin(claim).await?;
        let context = self.checkpoints.context(&mut unit);
        if let Err(source) = self.projection.reset(context).await {
            let rollback = self.checkpoints.rollback(unit).await;
            return Err(if self.context_lost(source.as_ref(), &rollback) {
                ProjectionError::ContextLost {
                    projection: P::NAME,
                    position: 0,
                    source,
                }
            } else {
                ProjectionError::Reset {
                    projection: P::NAME,
                    source,
                }
            });
        }
        self.commit(unit, 0).await
    }

    /// One unit of work: read a batch after the checkpoint, handle what concerns the
    /// projection, commit the writes with the new checkpoint.
    async fn step(&self, claim: &mut C::Claim, limit: usize) -> Result<CatchUp, ProjectionError> {
        // Read before opening a unit: a unit locks (a row, or SQLite's whole file) and an idle
        // runner's polls should not.
        let checkpoint = self
            .checkpoints
            .checkpoint(P::NAME)
            .await
            .map_err(|source| ProjectionError::from_checkpoint(P::NAME, source))?;
        let mut batch = self
            .events
            .read_all(checkpoint, limit)
            .await
            .map_err(store_error::<P>)?;
        if batch.is_empty() {
            return Ok(CatchUp {
                position: checkpoint,
                ..CatchUp::default()
            });
        }
        let (mut unit, locked) = self.begin(claim).await?;
        if locked != checkpoint {
            // The checkpoint moved between the read and the lock (a runner that held the claim
            // before this one committed): read again from where it stands now.
            batch = match self.events.read_all(locked, limit).await {
                Ok(batch) => batch,
                Err(source) => {
                    let _ = self.checkpoints.rollback(unit).await;
                    return Err(store_error::<P>(source));
                }
            };
        }
        let Some(last) = batch.last() else {
            let _ = self.checkpoints.rollback(unit).await;
            return Ok(CatchUp {
                position: locked,
                ..CatchUp::default()
            });
        };
        let (position, read) = (last.position, batch.len());
        let handled = match self.handle_batch(&mut unit, batch).await {
            Ok(handled) => handled,
            Err(BatchFailure::Decode(error)) => {
                let _ = self.checkpoints.rollback(unit).await;
                return Err(error);
            }
            Err(BatchFailure::Handler(failure)) => {
                let rollback = self.checkpoints.rollback(unit).await;
                if !self.context_lost(failure.source.as_ref(), &rollback) {
                    return Err(ProjectionError::Handler(failure));
                }
                let HandlerFailure { position, source, .. } = *failure;
                return Err(ProjectionError::ContextLost {
                    projection: P::NAME,
                    position,
                    source,
                });
            }
        };
        self.commit(unit, position).await?;
        metrics::counter!("es_projection_events_handled_total", "projection" => P::NAME).increment(handled);
        tracing::trace!(projection = P::NAME, read, handled, position, "batch committed");
        Ok(CatchUp {
            read: read as u64,
            handled,
            position,
        })
    }

    async fn begin(&self, claim: &mut C::Claim) -> Result<(C::Unit, u64), ProjectionError> {
        self.checkpoints
            .begin(claim)
            .await
            .map_err(|source| ProjectionError::from_checkpoint(P::NAME, source))
    }

    async fn commit(&self, unit: C::Unit, position: u64) -> Result<(), ProjectionError> {
        self.checkpoints
            .commit(unit, position)
            .await
            .map_err(|source| ProjectionError::from_checkpoint(P::NAME, source))
    }

    /// Whether a projection's error came from its context's connection failing under it rather
    /// than from its own logic: the backend recognises its connection errors, and a rollback
    /// that fails says the same.
    fn context_lost(&self, error: &(dyn std::error::Error + 'static), rollback: &Result<(), CheckpointError>) -> bool {
        if rollback.as_ref().is_err_and(CheckpointError::is_transient) {
            return true;
        }
        std::iter::successors(Some(error), |error| error.source()).any(|error| self.checkpoints.is_transient(error))
    }

    /// Hands the batch's events that concern the projection to its handler, within `unit`. The
    /// records move into the handler's envelopes: no copy per event.
    async fn handle_batch(&self, unit: &mut C::Unit, batch: Vec<RecordedEvent>) -> Result<u64, BatchFailure> {
        let context = self.checkpoints.context(unit);
        let mut handled = 0;
        for envelope in batch.into_iter().filter(concerns::<P>) {
            let event = decode_record::<P::Event>(&envelope).map_err(|source| {
                BatchFailure::Decode(ProjectionError::Decode {
                    projection: P::NAME,
                    position: envelope.position,
                    source: Box::new(source),
                })
            })?;
            let decoded = DecodedEvent { envelope, event };
            if let Err(source) = self.projection.handle(context, &decoded).await {
                let DecodedEvent { envelope, .. } = decoded;
                return Err(BatchFailure::Handler(Box::new(HandlerFailure {
                    projection: P::NAME,
                    position: envelope.position,
                    event_id: envelope.event_id,
                    event_name: envelope.event_name,
                    stream: envelope.stream,
                    attempts: 1,
                    source,
                })));
            }
            handled += 1;
        }
        Ok(handled)
    }
}

fn store_error<P: Projection>(source: StoreError) -> ProjectionError {
    ProjectionError::Store {
        projection: P::NAME,
        source,
    }
}

const LAG_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// The shortest wait between polls or retries: a zero setting must not spin on the store.
pub(crate) const MIN_PAUSE: Duration = Duration::from_millis(1);

/// Whether the projection handles `record`: decided by aggregate type and stored name alone.
fn concerns<P: Projection>(record: &RecordedEvent) -> bool {
    (P::AGGREGATE_TYPES.is_empty() || P::AGGREGATE_TYPES.contains(&record.stream.aggregate_type.as_str()))
        && P::Event::handles(&record.event_name)
}
