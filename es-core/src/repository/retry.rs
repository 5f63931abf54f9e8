//! How often and how patiently a command is tried again after a conflict or an outage.

use std::time::Duration;

use uuid::Uuid;

/// How a [`Repository`](crate::Repository) retries a command that lost a race (a concurrency
/// conflict) or met an outage of the store: a budget of attempts and of time, and exponential
/// backoff with full jitter between attempts.
///
/// Between attempt `n` and `n + 1` the command waits a random time between zero and
/// `min(max_backoff, initial_backoff × 2^(n-1))`. The randomness spreads writers that collided
/// apart, so they stop colliding again; without it, 16 writers on one stream kept meeting.
///
/// The defaults, 12 attempts within 5 seconds and backoff from 10 ms up to 400 ms, come from a
/// measurement of 16 tasks commanding one aggregate at once on each store, where they were the
/// cheapest policy tried with which no command gave up (4 immediate attempts lost about half
/// of them): see "Commands under contention" in `docs/BENCHMARKS.md`.
///
/// ```
/// use std::time::Duration;
/// use es_core::RetryPolicy;
///
/// let patient = RetryPolicy::default()
///     .with_max_attempts(20)
///     .with_max_elapsed(Duration::from_secs(10))
///     .with_backoff(Duration::from_millis(2), Duration::from_millis(200));
/// assert_eq!(patient.max_attempts(), 20);
/// let never_retry = RetryPolicy::no_retries();
/// assert_eq!(never_retry.max_attempts(), 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    max_elapsed: Duration,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            max_elapsed: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(400),
        }
    }
}

impl RetryPolicy {
    /// One attempt: a conflict or an outage is returned at once.
    pub fn no_retries() -> Self {
        Self::default().with_max_attempts(1)
    }

    /// How many times a command is tried in all (at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// No attempt starts later than this after the first one began (the attempt that is
    /// running then is finished, not cut short).
    pub fn with_max_elapsed(mut self, elapsed: Duration) -> Self {
        self.max_elapsed = elapsed;
        self
    }

    /// The backoff before the second attempt is at most `initial`; it doubles per attempt up to
    /// `max`. `Duration::ZERO` for both retries at once (not advised under contention).
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// How many times a command is tried in all.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The time budget of a command's attempts.
    pub fn max_elapsed(&self) -> Duration {
        self.max_elapsed
    }

    /// The wait before attempt `attempts + 1`, or `None` when the budget allows no further
    /// attempt: `attempts` made, `elapsed` since the first began.
    pub(crate) fn next_backoff(&self, attempts: u32, elapsed: Duration) -> Option<Duration> {
        if attempts >= self.max_attempts {
            return None;
        }
        let ceiling = self
            .initial_backoff
            .saturating_mul(1 << attempts.saturating_sub(1).min(20))
            .min(self.max_backoff);
        let wait = ceiling.mul_f64(jitter());
        (elapsed + wait < self.max_elapsed).then_some(wait)
    }
}

/// A random fraction in `[0, 1)`, from the random bits of a UUID v4 (no RNG dependency of our
/// own; a UUID v7's low bits are a counter, not random).
fn jitter() -> f64 {
    const MANTISSA: u32 = 53;
    let random = Uuid::new_v4().as_u128() as u64 & ((1 << MANTISSA) - 1);
    random as f64 / (1_u64 << MANTISSA) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_the_budgets_end_retries() {
        let policy = RetryPolicy::default()
            .with_max_attempts(12)
            .with_max_elapsed(Duration::from_secs(60))
            .with_backoff(Duration::from_millis(4), Duration::from_millis(50));
        for attempts in 1..12 {
            let ceiling = Duration::from_millis((4 << (attempts - 1)).min(50));
            for _ in 0..50 {
                let wait = policy.next_backoff(attempts, Duration::ZERO);
                assert!(wait.is_some_and(|wait| wait <= ceiling), "{attempts}: {wait:?}");
            }
        }
        assert_eq!(policy.next_backoff(12, Duration::ZERO), None, "attempts spent");
        assert_eq!(policy.next_backoff(1, Duration::from_secs(60)), None, "time spent");
        assert_eq!(RetryPolicy::no_retries().next_backoff(1, Duration::ZERO), None);
    }

    #[test]
    fn jitter_spreads_waits() {
        let waits: std::collections::BTreeSet<u64> = (0..64)
            .map(|_| jitter())
            .inspect(|fraction| assert!((0.0..1.0).contains(fraction)))
            .map(|fraction| (fraction * 1000.0) as u64)
            .collect();
        assert!(waits.len() > 32, "64 draws gave only {} distinct waits", waits.len());
    }
}
