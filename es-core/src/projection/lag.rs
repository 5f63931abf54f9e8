//! How far a projection is behind, measured for callers and reported as metrics while a
//! runner runs.

use std::time::{Duration, Instant};

use chrono::Utc;

use super::checkpoint::CheckpointStore;
use super::error::ProjectionError;
use super::runner::ProjectionRunner;
use super::Projection;
use crate::store::GlobalLog;

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

impl<P, E, C> ProjectionRunner<P, E, C>
where
    P: Projection,
    E: GlobalLog,
    C: CheckpointStore<Context = P::Context>,
{
    /// How far the projection is behind the head of the store.
    pub async fn lag(&self) -> Result<Lag, ProjectionError> {
        let checkpoint = self
            .checkpoints
            .checkpoint(self.name)
            .await
            .map_err(|source| ProjectionError::from_checkpoint(self.name, source))?;
        let tail = self.events.tail(checkpoint).await.map_err(self.store_error())?;
        let seconds_behind = if tail.events == 0 {
            0.0
        } else {
            let oldest = self.events.read_all(checkpoint, 1).await.map_err(self.store_error())?;
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

    /// Sets the lag gauges, and those of events held back from the log behind transactions
    /// open elsewhere: after [`HELD_BACK_WARNING`] of that, and once a minute while it lasts,
    /// warns, naming what holds them. `held` is since when, and when to warn next.
    pub(super) async fn report_lag(&self, held: &mut Option<(Instant, Instant)>) {
        let lag = match self.lag().await {
            Ok(lag) => lag,
            Err(error) => {
                tracing::warn!(projection = self.name, %error, "cannot measure projection lag");
                return;
            }
        };
        metrics::gauge!("es_projection_lag_events", "projection" => self.name).set(lag.events_behind as f64);
        metrics::gauge!("es_projection_lag_seconds", "projection" => self.name).set(lag.seconds_behind);
        tracing::debug!(
            projection = self.name,
            events_behind = lag.events_behind,
            seconds_behind = lag.seconds_behind,
            "projection lag"
        );
        let held_back = match self.events.unsettled(lag.checkpoint).await {
            Ok(held_back) => held_back,
            Err(error) => {
                tracing::debug!(projection = self.name, %error, "cannot count events held back");
                return;
            }
        };
        metrics::gauge!("es_projection_held_back_events", "projection" => self.name).set(held_back as f64);
        if held_back == 0 {
            *held = None;
            return;
        }
        let (since, next_warning) = held.get_or_insert_with(|| (Instant::now(), Instant::now() + HELD_BACK_WARNING));
        let since = *since;
        if Instant::now() >= *next_warning {
            *next_warning = Instant::now() + HELD_BACK_WARNING_AGAIN;
            let by = self.events.held_back_by().await.ok().flatten();
            tracing::warn!(
                projection = self.name,
                held_back,
                seconds = since.elapsed().as_secs(),
                held_back_by = by.as_deref().unwrap_or("unknown"),
                "events committed are held back from the global log by a write transaction open elsewhere; \
                 the projection handles them once it ends (end it, or set idle_in_transaction_session_timeout)"
            );
        }
    }
}

/// How often a running runner measures and reports its lag.
pub(super) const LAG_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// How long events may stay held back from the log before the runner warns: transactions of
/// ordinary traffic end well before.
const HELD_BACK_WARNING: Duration = Duration::from_secs(30);

/// How often the runner warns again while events stay held back.
const HELD_BACK_WARNING_AGAIN: Duration = Duration::from_secs(60);
