//! How a runner sizes its batches and what it does after a failure.

use std::time::{Duration, Instant};

use super::error::ProjectionError;

/// What to do when a handler fails on an event (with an error of its own, not its
/// connection's), or an event it handles does not decode.
///
/// Every policy but [`Stop`](FailurePolicy::Stop) first retries: it rolls the batch back,
/// commits the events before the failing one in a batch of their own, and tries the failing
/// event again alone, until it has failed `attempts` times (the batch of the events before it
/// does not reset the count). What happens then is what tells the policies apart. An event
/// that does not decode is not retried (decoding it again gives the same answer): once the
/// events before it are committed, it goes straight to what the policy does after its retries.
///
/// Skipped and parked events are counted (`es_projection_events_skipped_total`,
/// `es_projection_events_parked_total`) and logged with their stream and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Stop the runner with the error. The checkpoint stays before the failing batch.
    Stop,
    /// Retry, then stop the runner with the error. The checkpoint stays just before the event.
    Retry {
        /// Tries of the failing event in all, at least 1.
        attempts: u32,
        /// The pause after each failure.
        backoff: Duration,
    },
    /// Retry, then skip the event for good and go on with the next one.
    Skip {
        /// Tries of the failing event in all, at least 1.
        attempts: u32,
        /// The pause after each failure.
        backoff: Duration,
    },
    /// Retry, then park the event (see [`ParkedEvent`](crate::ParkedEvent)) and go on with
    /// the next one. Parked events can be listed, retried once the cause is fixed, or dropped.
    Park {
        /// Tries of the failing event in all, at least 1.
        attempts: u32,
        /// The pause after each failure.
        backoff: Duration,
    },
}

/// What a policy does with an event once its retries are spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GiveUp {
    Stop,
    Skip,
    Park,
}

impl FailurePolicy {
    /// Tries of a failing event in all, and the pause between them.
    fn retries(self) -> (u32, Duration) {
        match self {
            Self::Stop => (1, Duration::ZERO),
            Self::Retry { attempts, backoff } | Self::Skip { attempts, backoff } | Self::Park { attempts, backoff } => {
                (attempts.max(1), backoff)
            }
        }
    }

    pub(crate) fn gives_up(self) -> GiveUp {
        match self {
            Self::Stop | Self::Retry { .. } => GiveUp::Stop,
            Self::Skip { .. } => GiveUp::Skip,
            Self::Park { .. } => GiveUp::Park,
        }
    }
}

/// What a runner does with an event of an aggregate type it reads whose stored name it does
/// not know: neither an event of the projection's [`Event`](crate::Projection::Event) set nor
/// one of its [`SOURCE_EVENTS`](crate::Projection::SOURCE_EVENTS). Such an event was most
/// likely written by a newer version of the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UnknownEvents {
    /// Stop with [`ProjectionError::UnknownEvent`]: deploy the code that knows the event. The
    /// events before it in its batch are committed first, so the checkpoint stays just before
    /// it.
    #[default]
    Fail,
    /// Skip it, counted in `es_projection_events_skipped_total` (reason `unknown`) and logged.
    Skip,
}

/// Exponential backoff for transient failures. The first failure is retried at once (a cut
/// connection is usually mended by opening a new one); the second after `initial`, each further
/// one after twice the previous pause, up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The pause after the second failure in a row.
    pub initial: Duration,
    /// The longest pause.
    pub max: Duration,
    /// Failures in a row before the runner gives up and returns the error; `None` (the
    /// default) never gives up.
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            max_attempts: None,
        }
    }
}

impl Backoff {
    /// The pause after the `failures`-th failure in a row (from 1).
    pub fn delay(&self, failures: u32) -> Duration {
        if failures <= 1 {
            return Duration::ZERO;
        }
        let doublings = (failures - 2).min(30);
        self.initial
            .saturating_mul(1 << doublings)
            .min(self.max)
            .max(super::runner::MIN_PAUSE)
    }
}

/// How a runner reads and what it does after failures.
///
/// Build it from the default and change what you need:
///
/// ```
/// use std::time::Duration;
/// use es_core::{Backoff, FailurePolicy, RunnerOptions};
///
/// let options = RunnerOptions {
///     batch_size: 100,
///     failure: FailurePolicy::Stop,
///     transient_retry: Backoff { max_attempts: Some(20), ..Backoff::default() },
///     ..RunnerOptions::default()
/// };
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerOptions {
    /// The most events read (and committed) per unit of work. After a failed batch the next
    /// one is half as large, down to one event; each success doubles it back up to this.
    pub batch_size: usize,
    /// How often a caught-up runner looks for new events when no wake-up comes. Default:
    /// 500 ms.
    pub poll_interval: Duration,
    /// What to do when a handler fails. Default: 3 tries in a row, 200 ms apart, then stop.
    pub failure: FailurePolicy,
    /// What to do when the event store or the checkpoint store is unreachable or a connection
    /// fails. Default: retry at once, then after 100 ms, doubling up to every 5 s, without
    /// limit.
    pub transient_retry: Backoff,
    /// What to do with an event whose name the projection does not know. Default: fail.
    pub unknown_events: UnknownEvents,
    /// How long a batch may run its handlers: once it is spent, the batch commits what it has
    /// handled so far and the next batch goes on from there. It bounds how long a unit of work
    /// stays open (on PostgreSQL, how long it holds a transaction id, which holds back every
    /// reader of the global order). Default: 1 s.
    pub batch_time_budget: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
            failure: FailurePolicy::Retry {
                attempts: 3,
                backoff: Duration::from_millis(200),
            },
            transient_retry: Backoff::default(),
            unknown_events: UnknownEvents::Fail,
            batch_time_budget: Duration::from_secs(1),
        }
    }
}

/// An event the runner gave up on: the next batch skips or parks it instead of handling it.
#[derive(Debug, Clone)]
pub(crate) struct SetAside {
    pub(crate) position: u64,
    /// Why it failed, for the log and the parked event.
    pub(crate) reason: String,
    pub(crate) attempts: u32,
    pub(crate) park: bool,
}

/// A runner's state between batches: the size of the next batch, the failures in a row, and
/// the event it gave up on.
#[derive(Debug)]
pub(crate) struct Pacing {
    projection: &'static str,
    options: RunnerOptions,
    limit: usize,
    /// Where the last handler failure happened, and how many times in a row it did.
    failed_position: Option<u64>,
    handler_failures: u32,
    transient_failures: u32,
    outage_since: Option<Instant>,
    set_aside: Option<SetAside>,
}

impl Pacing {
    pub(crate) fn new(projection: &'static str, options: RunnerOptions) -> Self {
        Self {
            projection,
            options,
            limit: options.batch_size.max(1),
            failed_position: None,
            handler_failures: 0,
            transient_failures: 0,
            outage_since: None,
            set_aside: None,
        }
    }

    /// How many events the next batch may read.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// The event the next batch skips or parks, if the runner gave up on one.
    pub(crate) fn set_aside(&self) -> Option<&SetAside> {
        self.set_aside.as_ref()
    }

    /// The position of the event the last batches failed on, until a batch gets past it: a
    /// batch ends before it (committing the events before it), and one that starts with it
    /// handles it alone, so its retries are its own and a runner that stops leaves its
    /// checkpoint just before it.
    pub(crate) fn failing(&self) -> Option<u64> {
        self.failed_position
    }

    /// Records a batch committed up to `position`: batches grow back, any outage ends, and a
    /// failing event's count ends once a batch got past it (batches that stop before it, as
    /// smaller batches do, leave the count as it is).
    pub(crate) fn succeeded(&mut self, position: u64) {
        self.limit = self.limit.saturating_mul(2).min(self.options.batch_size.max(1));
        if self.failed_position.is_some_and(|failed| position >= failed) {
            self.failed_position = None;
            self.handler_failures = 0;
        }
        if self
            .set_aside
            .as_ref()
            .is_some_and(|set_aside| position >= set_aside.position)
        {
            self.set_aside = None;
        }
        if let Some(since) = self.outage_since.take() {
            tracing::info!(
                projection = self.projection,
                outage_seconds = since.elapsed().as_secs_f64(),
                failures = self.transient_failures,
                "projection runner reconnected; resuming from its checkpoint"
            );
            metrics::gauge!("es_projection_unavailable", "projection" => self.projection).set(0.0);
        }
        self.transient_failures = 0;
    }

    /// Records a failure and decides: the pause before trying again (perhaps setting the
    /// failing event aside, by the failure policy), or the error to stop with.
    pub(crate) fn failed(&mut self, error: ProjectionError) -> Result<Duration, ProjectionError> {
        self.limit = (self.limit / 2).max(1);
        if error.is_transient() {
            return self.transient(error);
        }
        match error {
            ProjectionError::Handler(mut failure) => {
                metrics::counter!("es_projection_failures_total", "projection" => self.projection, "kind" => "handler")
                    .increment(1);
                // Tries of the same event in a row; a batch that fails elsewhere starts the count again.
                if self.failed_position == Some(failure.position) {
                    self.handler_failures += 1;
                } else {
                    self.failed_position = Some(failure.position);
                    self.handler_failures = 1;
                }
                failure.attempts = self.handler_failures;
                let (attempts, backoff) = self.options.failure.retries();
                let (position, reason) = (failure.position, error_chain(failure.source.as_ref()));
                let error = ProjectionError::Handler(failure);
                if self.handler_failures < attempts {
                    tracing::warn!(projection = self.projection, %error, next_batch = self.limit,
                        "projection batch failed; retrying with a smaller batch");
                    return Ok(backoff);
                }
                self.give_up(position, reason, self.handler_failures, error)
            }
            ProjectionError::Decode {
                position, ref source, ..
            } => {
                metrics::counter!("es_projection_failures_total", "projection" => self.projection, "kind" => "decode")
                    .increment(1);
                // Decoding again gives the same answer: no retries of the event, but one more
                // batch, at once, to commit the events before it if the batch had any.
                if self.failed_position != Some(position) {
                    self.failed_position = Some(position);
                    self.handler_failures = 0;
                    return Ok(Duration::ZERO);
                }
                let reason = error_chain(source);
                self.give_up(position, reason, 1, error)
            }
            // An unknown name stops the runner (the policy is `UnknownEvents::Fail`), but only
            // after one more batch, at once, has committed the events before it: the checkpoint
            // a stopped runner leaves is just before the event that stopped it.
            ProjectionError::UnknownEvent { position, .. } if self.failed_position != Some(position) => {
                self.failed_position = Some(position);
                self.handler_failures = 0;
                Ok(Duration::ZERO)
            }
            error => {
                tracing::error!(projection = self.projection, %error, "projection stopped");
                Err(error)
            }
        }
    }

    /// The retries of an event are spent: stop, or set it aside for the next batch.
    fn give_up(
        &mut self,
        position: u64,
        reason: String,
        attempts: u32,
        error: ProjectionError,
    ) -> Result<Duration, ProjectionError> {
        let park = match self.options.failure.gives_up() {
            GiveUp::Stop => {
                tracing::error!(projection = self.projection, %error, "projection stopped");
                return Err(error);
            }
            GiveUp::Skip => false,
            GiveUp::Park => true,
        };
        self.set_aside = Some(SetAside {
            position,
            reason,
            attempts,
            park,
        });
        Ok(Duration::ZERO)
    }

    fn transient(&mut self, error: ProjectionError) -> Result<Duration, ProjectionError> {
        self.transient_failures += 1;
        metrics::counter!("es_projection_failures_total", "projection" => self.projection, "kind" => "transient")
            .increment(1);
        let retry = self.options.transient_retry;
        if retry.max_attempts.is_some_and(|max| self.transient_failures >= max) {
            tracing::error!(projection = self.projection, %error, failures = self.transient_failures,
                "projection stopped: still unavailable after the configured retries");
            return Err(error);
        }
        let delay = retry.delay(self.transient_failures);
        if self.outage_since.is_none() {
            self.outage_since = Some(Instant::now());
            metrics::gauge!("es_projection_unavailable", "projection" => self.projection).set(1.0);
            tracing::warn!(projection = self.projection, %error,
                "projection runner cannot reach its stores; retrying with backoff until they are back");
        } else {
            tracing::debug!(projection = self.projection, %error, failures = self.transient_failures,
                retry_in_ms = delay.as_millis() as u64, "still unavailable");
        }
        Ok(delay)
    }
}

/// An error and its sources, one after the other: what a parked event keeps of its failure. A
/// source whose text the error's own message already includes (many errors print their cause)
/// is not repeated.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    for source in std::iter::successors(error.source(), |error| error.source()) {
        let cause = source.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Layer {
        #[error("cannot decode: {0}")]
        Printing(#[source] Box<Layer>),
        #[error("handler failed")]
        Quiet(#[source] Box<Layer>),
        #[error("invalid type: integer `5`")]
        Root,
    }

    #[test]
    fn an_error_chain_names_each_cause_once() {
        let printing = Layer::Printing(Box::new(Layer::Root));
        assert_eq!(error_chain(&printing), "cannot decode: invalid type: integer `5`");
        let quiet = Layer::Quiet(Box::new(Layer::Printing(Box::new(Layer::Root))));
        assert_eq!(
            error_chain(&quiet),
            "handler failed: cannot decode: invalid type: integer `5`"
        );
    }

    #[test]
    fn backoff_retries_once_at_once_then_doubles_up_to_its_maximum() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(700),
            max_attempts: None,
        };
        let delays: Vec<_> = (1..=6).map(|n| backoff.delay(n).as_millis()).collect();
        assert_eq!(delays, [0, 100, 200, 400, 700, 700]);
        assert_eq!(backoff.delay(u32::MAX), Duration::from_millis(700));
    }
}
