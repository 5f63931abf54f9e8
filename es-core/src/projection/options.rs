//! How a runner sizes its batches and what it does after a failure.

use std::time::{Duration, Instant};

use super::error::ProjectionError;

/// What to do when a handler fails (with an error of its own, not its connection's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Stop the runner with the error. The checkpoint stays before the failing batch.
    Stop,
    /// Roll the batch back and try again, in ever smaller batches, until the same event has
    /// failed `attempts` times (batches that commit the events before it do not reset the
    /// count); then stop. The checkpoint stays just before that event.
    Retry {
        /// Tries of the failing event in all, at least 1.
        attempts: u32,
        /// The pause after each failure.
        backoff: Duration,
    },
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
    /// How often a caught-up runner looks for new events when no wake-up comes.
    pub poll_interval: Duration,
    /// What to do when a handler fails. Default: 3 tries in a row, 200 ms apart, then stop.
    pub failure: FailurePolicy,
    /// What to do when the event store or the checkpoint store is unreachable or a connection
    /// fails. Default: retry at once, then after 100 ms, doubling up to every 5 s, without
    /// limit.
    pub transient_retry: Backoff,
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
        }
    }
}

/// A runner's state between batches: the size of the next batch, and the failures in a row.
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
        }
    }

    /// How many events the next batch may read.
    pub(crate) fn limit(&self) -> usize {
        self.limit
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

    /// Records a failure and decides: the pause before trying again, or the error to stop with.
    pub(crate) fn failed(&mut self, error: ProjectionError) -> Result<Duration, ProjectionError> {
        self.limit = (self.limit / 2).max(1);
        if error.is_transient() {
            return self.transient(error);
        }
        let ProjectionError::Handler(mut failure) = error else {
            tracing::error!(projection = self.projection, %error, "projection stopped");
            return Err(error);
        };
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
        let error = ProjectionError::Handler(failure);
        match self.options.failure {
            FailurePolicy::Retry { attempts, backoff } if self.handler_failures < attempts.max(1) => {
                tracing::warn!(projection = self.projection, %error, next_batch = self.limit,
                    "projection batch failed; retrying with a smaller batch");
                Ok(backoff)
            }
            _ => {
                tracing::error!(projection = self.projection, %error, "projection stopped");
                Err(error)
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
