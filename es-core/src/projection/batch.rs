//! The runner's units of work: a batch of events, a reset, the retry of parked events.

use std::time::Instant;

use tracing::Instrument;

use super::checkpoint::{CheckpointError, CheckpointStore};
use super::error::{HandlerFailure, ProjectionError};
use super::options::{error_chain, Pacing, SetAside, UnknownEvents};
use super::parking::ParkedEvent;
use super::runner::ProjectionRunner;
use super::Projection;
use crate::event::EventSet;
use crate::record::{decode_record_all, DecodedEvent};
use crate::store::{GlobalLog, RecordedEvent};

/// What one unit of work did.
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub(super) read: u64,
    pub(super) handled: u64,
    pub(super) skipped: u64,
    pub(super) parked: u64,
    /// The checkpoint committed (or found, when there was nothing to do).
    pub(super) position: u64,
    /// Whether more events may be readable right away.
    pub(super) more: bool,
}

/// Why a batch's handling stopped.
pub(super) enum BatchFailure {
    /// Fatal for the batch, with nothing to ask the checkpoint store about.
    Stop(ProjectionError),
    Handler(Box<HandlerFailure>),
}

/// What the events of one batch came to before the commit.
#[derive(Default)]
pub(super) struct Handled {
    pub(super) handled: u64,
    skipped: u64,
    parked: u64,
    /// Where the time budget cut the batch short, if it did.
    pub(super) cut_at: Option<u64>,
    /// Events looked at before the cut (handled, skipped or parked).
    processed: u64,
    /// Events handled per aggregate type and name, for the metrics.
    per_event: Vec<((String, String), u64)>,
}

impl<P, E, C> ProjectionRunner<P, E, C>
where
    P: Projection,
    E: GlobalLog,
    C: CheckpointStore<Context = P::Context>,
{
    /// Empties the read model, forgets the parked events and sets the checkpoint to 0, in one
    /// unit of work.
    pub(super) async fn reset(&self, claim: &mut C::Claim) -> Result<(), ProjectionError> {
        let parked = self.parked().await?;
        let (mut unit, _) = self.begin(claim).await?;
        for event in &parked {
            if let Err(source) = self.checkpoints.unpark(&mut unit, self.name, event.position).await {
                let _ = self.checkpoints.rollback(unit).await;
                return Err(ProjectionError::from_checkpoint(self.name, source));
            }
        }
        let context = self.checkpoints.context(&mut unit);
        if let Err(source) = self.projection.reset(context).await {
            let rollback = self.checkpoints.rollback(unit).await;
            return Err(if self.context_lost(source.as_ref(), &rollback) {
                ProjectionError::ContextLost {
                    projection: self.name,
                    position: 0,
                    source,
                }
            } else {
                ProjectionError::Reset {
                    projection: self.name,
                    source,
                }
            });
        }
        self.commit(unit, 0).await
    }

    /// One unit of work: read a batch after the checkpoint, handle what concerns the
    /// projection, commit the writes with the new checkpoint.
    pub(super) async fn step(&self, claim: &mut C::Claim, pacing: &Pacing) -> Result<Batch, ProjectionError> {
        let limit = pacing.limit();
        // Read before opening a unit: a unit locks (a row, or SQLite's whole file) and an idle
        // runner's polls should not.
        let checkpoint = self
            .checkpoints
            .checkpoint(self.name)
            .await
            .map_err(self.checkpoint_error())?;
        let mut page = self
            .events
            .read_filtered(checkpoint, limit, &self.filter)
            .await
            .map_err(self.store_error())?;
        if page.scanned_to <= checkpoint {
            self.reached(checkpoint);
            return Ok(Batch {
                position: checkpoint,
                ..Batch::default()
            });
        }
        let opened = Instant::now();
        let (mut unit, locked) = self.begin(claim).await?;
        if locked != checkpoint {
            // The checkpoint moved between the read and the lock (a runner that held the claim
            // before this one committed): read again from where it stands now.
            page = match self.events.read_filtered(locked, limit, &self.filter).await {
                Ok(page) => page,
                Err(source) => {
                    let _ = self.checkpoints.rollback(unit).await;
                    return Err(self.store_error()(source));
                }
            };
            if page.scanned_to <= locked {
                let _ = self.checkpoints.rollback(unit).await;
                self.reached(locked);
                return Ok(Batch {
                    position: locked,
                    ..Batch::default()
                });
            }
        }
        let span = tracing::debug_span!(
            "projection_batch",
            projection = self.name,
            after = locked,
            events = page.events.len()
        );
        let handled = self
            .handle_batch(&mut unit, page.events, pacing.set_aside(), pacing.failing())
            .instrument(span)
            .await;
        let handled = match handled {
            Ok(handled) => handled,
            Err(failure) => return Err(self.abandon(unit, failure).await),
        };
        let position = handled.cut_at.unwrap_or(page.scanned_to);
        let started = Instant::now();
        self.commit(unit, position).await?;
        self.reached(position);
        self.count(&handled, started, opened);
        tracing::trace!(
            projection = self.name,
            read = page.scanned,
            handled = handled.handled,
            position,
            "batch committed"
        );
        // Cut short by the time budget, the batch read only what it got to (the events left out
        // before the cut are not counted: a progress report may lag by those).
        let read = if handled.cut_at.is_some() {
            handled.processed
        } else {
            page.scanned as u64
        };
        Ok(Batch {
            read,
            handled: handled.handled,
            skipped: handled.skipped,
            parked: handled.parked,
            position,
            more: handled.cut_at.is_some() || !page.at_head,
        })
    }

    /// Rolls back a unit whose batch failed, and says why it failed.
    pub(super) async fn abandon(&self, unit: C::Unit, failure: BatchFailure) -> ProjectionError {
        match failure {
            BatchFailure::Stop(error) => {
                let _ = self.checkpoints.rollback(unit).await;
                error
            }
            BatchFailure::Handler(failure) => {
                let rollback = self.checkpoints.rollback(unit).await;
                if chain(failure.source.as_ref()).any(|error| self.checkpoints.is_fatal(error)) {
                    let HandlerFailure { position, source, .. } = *failure;
                    return ProjectionError::ReadModelBroken {
                        projection: self.name,
                        position,
                        source,
                    };
                }
                if !self.context_lost(failure.source.as_ref(), &rollback) {
                    return ProjectionError::Handler(failure);
                }
                let HandlerFailure { position, source, .. } = *failure;
                ProjectionError::ContextLost {
                    projection: self.name,
                    position,
                    source,
                }
            }
        }
    }

    /// Hands the batch's events to the handler within `unit`, until the time budget is spent.
    /// The records move into the handler's envelopes: no copy per event. The event at
    /// `failing` (see `Pacing::failing`) ends the batch before it, or, first in the batch, is
    /// the batch.
    pub(super) async fn handle_batch(
        &self,
        unit: &mut C::Unit,
        batch: Vec<RecordedEvent>,
        set_aside: Option<&SetAside>,
        failing: Option<u64>,
    ) -> Result<Handled, BatchFailure> {
        let started = Instant::now();
        let mut done = Handled::default();
        let mut last = None;
        for envelope in batch {
            // The failing event ends the batch before it; handled first, it ends it after it.
            let around_failing = failing.is_some() && (failing == Some(envelope.position) || failing == last);
            if last.is_some() && (around_failing || started.elapsed() >= self.options.batch_time_budget) {
                done.cut_at = last;
                break;
            }
            last = Some(envelope.position);
            done.processed += 1;
            if let Some(set_aside) = set_aside.filter(|set_aside| set_aside.position == envelope.position) {
                self.set_aside(unit, &envelope, set_aside)
                    .await
                    .map_err(BatchFailure::Stop)?;
                if set_aside.park {
                    done.parked += 1;
                } else {
                    done.skipped += 1;
                }
                continue;
            }
            if !P::Event::handles(&envelope.event_name) {
                self.unknown(&envelope)?;
                done.skipped += 1;
                continue;
            }
            // A batch has few distinct (type, name) pairs: find the pair's counter by comparing
            // strings, and copy them only the first time the batch meets the pair.
            let counter = match done.per_event.iter().position(|((aggregate_type, name), _)| {
                *aggregate_type == envelope.stream.aggregate_type && *name == envelope.event_name
            }) {
                Some(counter) => counter,
                None => {
                    let key = (envelope.stream.aggregate_type.clone(), envelope.event_name.clone());
                    done.per_event.push((key, 0));
                    done.per_event.len() - 1
                }
            };
            let context = self.checkpoints.context(unit);
            done.handled += self.handle(context, envelope).await?;
            done.per_event[counter].1 += 1;
        }
        Ok(done)
    }

    /// Decodes one stored event and hands what it stands for to the handler (one event; none or
    /// several for a retired event a `#[replaced]` rule turns into events, all within this unit,
    /// so a failure of any of them leaves none applied), in a span that carries the ids a trace
    /// follows from the command that wrote it. Returns how many events it handed over.
    async fn handle(&self, context: &mut P::Context, envelope: RecordedEvent) -> Result<u64, BatchFailure> {
        let events = decode_record_all::<P::Event>(&envelope).map_err(|source| {
            BatchFailure::Stop(ProjectionError::Decode {
                projection: self.name,
                position: envelope.position,
                source,
            })
        })?;
        let span = tracing::trace_span!(
            "projection_event",
            projection = self.name,
            position = envelope.position,
            event_id = %envelope.event_id,
            correlation_id = envelope.metadata.correlation_id.map(tracing::field::display),
        );
        let handed = events.len() as u64;
        for decoded in DecodedEvent::each(envelope, events) {
            let Err(source) = self.projection.handle(context, &decoded).instrument(span.clone()).await else {
                continue;
            };
            let DecodedEvent { envelope, .. } = decoded;
            return Err(BatchFailure::Handler(Box::new(HandlerFailure {
                projection: self.name,
                position: envelope.position,
                event_id: envelope.event_id,
                event_name: envelope.event_name,
                stream: envelope.stream,
                attempts: 1,
                source,
            })));
        }
        Ok(handed)
    }

    /// Skips or parks an event the runner gave up on, within the unit.
    async fn set_aside(
        &self,
        unit: &mut C::Unit,
        event: &RecordedEvent,
        set_aside: &SetAside,
    ) -> Result<(), ProjectionError> {
        let labels = [
            ("projection", self.name.to_owned()),
            ("aggregate_type", event.stream.aggregate_type.clone()),
            ("event", event.event_name.clone()),
        ];
        if set_aside.park {
            let parked = ParkedEvent::new(self.name, event, set_aside.reason.clone(), set_aside.attempts);
            self.checkpoints
                .park(unit, &parked)
                .await
                .map_err(self.checkpoint_error())?;
            metrics::counter!("es_projection_events_parked_total", &labels).increment(1);
            tracing::warn!(projection = self.name, position = event.position, stream = %event.stream,
                version = event.version, event = %event.event_name, reason = %set_aside.reason,
                attempts = set_aside.attempts, "event parked; the projection goes on without it");
        } else {
            metrics::counter!("es_projection_events_skipped_total", &labels).increment(1);
            tracing::warn!(projection = self.name, position = event.position, stream = %event.stream,
                version = event.version, event = %event.event_name, reason = %set_aside.reason,
                attempts = set_aside.attempts, "event skipped for good");
        }
        Ok(())
    }

    /// An event of a type the projection reads, under a name it does not know: skipped or
    /// fatal, by the [`UnknownEvents`] policy.
    fn unknown(&self, event: &RecordedEvent) -> Result<(), BatchFailure> {
        if self.options.unknown_events == UnknownEvents::Skip {
            let labels = [
                ("projection", self.name.to_owned()),
                ("aggregate_type", event.stream.aggregate_type.clone()),
                ("event", event.event_name.clone()),
                ("reason", "unknown".to_owned()),
            ];
            metrics::counter!("es_projection_events_skipped_total", &labels).increment(1);
            tracing::warn!(projection = self.name, position = event.position, stream = %event.stream,
                version = event.version, event = %event.event_name, "unknown event skipped");
            return Ok(());
        }
        Err(BatchFailure::Stop(ProjectionError::UnknownEvent {
            projection: self.name,
            position: event.position,
            stream: event.stream.clone(),
            version: event.version,
            event_name: event.event_name.clone(),
        }))
    }

    /// Handles the parked events an operator asked to retry, each in a unit of its own: its
    /// writes commit with its removal from the parked events; failing again, it stays parked.
    pub(super) async fn retry_requested(&self, claim: &mut C::Claim) -> Result<(), ProjectionError> {
        let parked = self.parked().await?;
        for parked in parked.into_iter().filter(|parked| parked.retry_requested) {
            let event = self
                .events
                .read_all(parked.position.saturating_sub(1), 1)
                .await
                .map_err(self.store_error())?
                .into_iter()
                .find(|event| event.position == parked.position);
            let (mut unit, checkpoint) = self.begin(claim).await?;
            let failure = match event {
                None => "the event is no longer in the store".to_owned(),
                Some(event) => {
                    let context = self.checkpoints.context(&mut unit);
                    match self.handle(context, event).await {
                        Ok(_) => {
                            if let Err(source) = self.checkpoints.unpark(&mut unit, self.name, parked.position).await {
                                let _ = self.checkpoints.rollback(unit).await;
                                return Err(ProjectionError::from_checkpoint(self.name, source));
                            }
                            self.commit(unit, checkpoint).await?;
                            tracing::info!(projection = self.name, position = parked.position, stream = %parked.stream,
                                version = parked.version, "parked event handled on retry");
                            continue;
                        }
                        Err(BatchFailure::Stop(error)) => failure_text(&error),
                        Err(BatchFailure::Handler(failure)) => error_chain(failure.source.as_ref()),
                    }
                }
            };
            // Failed again: keep it parked, with one more attempt and the new error.
            if let Err(source) = self.checkpoints.rollback(unit).await {
                if source.is_transient() {
                    return Err(ProjectionError::from_checkpoint(self.name, source));
                }
            }
            let (mut unit, checkpoint) = self.begin(claim).await?;
            let again = ParkedEvent {
                error: failure,
                attempts: parked.attempts.saturating_add(1),
                retry_requested: false,
                ..parked
            };
            if let Err(source) = self.checkpoints.park(&mut unit, &again).await {
                let _ = self.checkpoints.rollback(unit).await;
                return Err(ProjectionError::from_checkpoint(self.name, source));
            }
            self.commit(unit, checkpoint).await?;
            tracing::warn!(projection = self.name, position = again.position, stream = %again.stream,
                version = again.version, reason = %again.error, "parked event failed again on retry; it stays parked");
        }
        Ok(())
    }

    pub(super) fn checkpoint_error(&self) -> impl Fn(CheckpointError) -> ProjectionError {
        let projection = self.name;
        move |source| ProjectionError::from_checkpoint(projection, source)
    }

    pub(super) async fn begin(&self, claim: &mut C::Claim) -> Result<(C::Unit, u64), ProjectionError> {
        self.checkpoints.begin(claim).await.map_err(self.checkpoint_error())
    }

    pub(super) async fn commit(&self, unit: C::Unit, position: u64) -> Result<(), ProjectionError> {
        self.checkpoints
            .commit(unit, position)
            .await
            .map_err(self.checkpoint_error())
    }

    /// Tells [`ProjectionProgress`](super::ProjectionProgress) waiters the projection got to
    /// `position`.
    pub(super) fn reached(&self, position: u64) {
        self.progress.send_if_modified(|reported| {
            let moved = position > reported.checkpoint;
            reported.checkpoint = reported.checkpoint.max(position);
            moved
        });
    }

    /// Counts the batch's events by type and name, and times its commit and the whole unit
    /// (how long it held its locks, and on PostgreSQL at most how long a transaction id).
    fn count(&self, handled: &Handled, commit_started: Instant, opened: Instant) {
        for ((aggregate_type, event), count) in &handled.per_event {
            let labels = [
                ("projection", self.name.to_owned()),
                ("aggregate_type", aggregate_type.clone()),
                ("event", event.clone()),
            ];
            metrics::counter!("es_projection_events_handled_total", &labels).increment(*count);
        }
        metrics::histogram!("es_projection_commit_seconds", "projection" => self.name)
            .record(commit_started.elapsed().as_secs_f64());
        metrics::histogram!("es_projection_batch_seconds", "projection" => self.name)
            .record(opened.elapsed().as_secs_f64());
    }

    /// Whether a projection's error came from its context's connection failing under it rather
    /// than from its own logic: the backend recognises its connection errors, and a rollback
    /// that fails says the same.
    fn context_lost(&self, error: &(dyn std::error::Error + 'static), rollback: &Result<(), CheckpointError>) -> bool {
        if rollback.as_ref().is_err_and(CheckpointError::is_transient) {
            return true;
        }
        chain(error).any(|error| self.checkpoints.is_transient(error))
    }
}

/// `error` and each of its sources in turn: what the checkpoint store is asked about, since a
/// handler may wrap its driver's error.
fn chain<'e>(
    error: &'e (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'e (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |error| error.source())
}

/// What a parked event keeps of a failure that is not a handler's.
fn failure_text(error: &ProjectionError) -> String {
    match error {
        ProjectionError::Decode { source, .. } => error_chain(source),
        error => error.to_string(),
    }
}
