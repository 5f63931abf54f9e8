//! The benchmark's domain (meters taking readings), the projections that copy every reading
//! into a read-model table of their own, and the checkpoint store that notes when each batch
//! committed.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use es_core::{
    async_trait, event, Aggregate, Apply, CheckpointError, CheckpointStore, ClaimStatus, CommandError, DecodedEvent,
    EventStore, Executed, HandlerError, Metadata, Projection, Repository,
};
use serde::{Deserialize, Serialize};
use tokio::time::{Interval, MissedTickBehavior};

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub value: i64,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum MeterEvent {
    Reading(Reading),
}

/// The aggregate the writers command: each command appends one reading.
#[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "meter", event = MeterEvent)]
pub struct Meter {
    readings: u64,
}

impl Apply<Reading> for Meter {
    fn apply(&mut self, _: &Reading) {
        self.readings += 1;
    }
}

/// Streams per writer: commands load and append to streams of a few dozen events.
pub const STREAMS_PER_WRITER: u64 = 16;

/// The ticks of writer `writer` of `writers`, each writing once a `period` from `start`: offset
/// so that all writers' ticks together are spread evenly; a missed tick is skipped, not made up.
pub fn writer_ticks(start: tokio::time::Instant, period: Duration, writer: usize, writers: usize) -> Interval {
    let first = start + period.mul_f64(writer as f64 / writers as f64);
    let mut ticks = tokio::time::interval_at(first, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    ticks
}

/// Command `command` of writer `writer`: a reading of value `command`, on one of the writer's
/// meters in turn.
pub async fn take_reading<S: EventStore>(
    repository: &Repository<Meter, S>,
    writer: usize,
    command: u64,
) -> Result<Executed<Meter>, CommandError<Infallible>> {
    let meter = format!("meter-{writer}-{}", command % STREAMS_PER_WRITER);
    let value = i64::try_from(command).unwrap_or(i64::MAX);
    let take_reading = move |_: &Meter| vec![Reading { value }.into()];
    repository.execute(meter.as_str(), Metadata::new(), take_reading).await
}

/// Where something became visible: a position, and the instant everything up to it was there.
pub type Mark = (u64, Instant);

/// Marks shared between the task that makes them and the one that reads them at the end.
pub type Marks = Arc<Mutex<Vec<Mark>>>;

/// The marks made so far.
pub fn snapshot(marks: &Marks) -> Vec<Mark> {
    marks.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// The last position marked, 0 before any mark.
pub fn last_position(marks: &Marks) -> u64 {
    let marks = marks.lock().unwrap_or_else(PoisonError::into_inner);
    marks.last().map_or(0, |&(position, _)| position)
}

/// A projection's name, which is also its read-model table's.
pub trait Table: Send + Sync + 'static {
    const NAME: &'static str;
}

/// The first fast projection.
pub struct First;
/// The second fast projection.
pub struct Second;
/// The slow projection (only in a slow-handler run).
pub struct Slow;

impl Table for First {
    const NAME: &'static str = "latency_first";
}
impl Table for Second {
    const NAME: &'static str = "latency_second";
}
impl Table for Slow {
    const NAME: &'static str = "latency_slow";
}

/// Where the slow projection spends its slow time within a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slowness {
    /// Before the batch's first write: work such as a call to another service, after which the
    /// rows are written.
    BeforeWrites,
    /// Right after the batch's first write: the unit has written when the slow part runs.
    AfterWrites,
}

impl Slowness {
    pub fn label(self) -> &'static str {
        match self {
            Self::BeforeWrites => "before-writes",
            Self::AfterWrites => "after-writes",
        }
    }
}

/// What a projection's handler writes through: one row per event.
#[async_trait]
pub trait RowWriter: Send + 'static {
    /// Inserts the row of the event at `position` into `table`.
    async fn insert(
        &mut self,
        table: &'static str,
        position: u64,
        stream: &str,
        value: i64,
    ) -> Result<(), HandlerError>;
    /// Empties `table`.
    async fn clear(&mut self, table: &'static str) -> Result<(), HandlerError>;
}

/// Copies every reading into table `T::NAME` of context `X`; with `slow`, spends the given time
/// once per batch, before or after the batch's first write.
pub struct Rows<T, X> {
    slow: Option<(Slowness, Duration)>,
    /// Set by [`Timed::begin`] when a unit starts, cleared by the batch's first event.
    batch_started: Arc<AtomicBool>,
    _types: PhantomData<fn() -> (T, X)>,
}

impl<T, X> Rows<T, X> {
    pub fn new(slow: Option<(Slowness, Duration)>, batch_started: Arc<AtomicBool>) -> Self {
        Self {
            slow,
            batch_started,
            _types: PhantomData,
        }
    }
}

#[async_trait]
impl<T: Table, X: RowWriter> Projection for Rows<T, X> {
    const NAME: &'static str = T::NAME;
    const AGGREGATE_TYPES: &'static [&'static str] = &["meter"];
    type Event = MeterEvent;
    type Context = X;

    async fn handle(&self, rows: &mut X, event: &DecodedEvent<MeterEvent>) -> Result<(), HandlerError> {
        let first_of_batch = self.batch_started.swap(false, Ordering::AcqRel);
        let slow = self.slow.filter(|_| first_of_batch);
        if let Some((Slowness::BeforeWrites, pause)) = slow {
            tokio::time::sleep(pause).await;
        }
        let MeterEvent::Reading(reading) = &event.event;
        let envelope = &event.envelope;
        rows.insert(T::NAME, envelope.position, &envelope.stream.aggregate_id, reading.value)
            .await?;
        if let Some((Slowness::AfterWrites, pause)) = slow {
            tokio::time::sleep(pause).await;
        }
        Ok(())
    }

    async fn reset(&self, rows: &mut X) -> Result<(), HandlerError> {
        rows.clear(T::NAME).await
    }
}

/// A checkpoint store that forwards everything to `inner` and, each time a unit commits, marks
/// the committed position with the instant the commit returned: every event up to that
/// position is in the read model from then on.
pub struct Timed<C> {
    inner: C,
    commits: Marks,
    batch_started: Arc<AtomicBool>,
}

impl<C> Timed<C> {
    pub fn new(inner: C, batch_started: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            commits: Marks::default(),
            batch_started,
        }
    }

    /// The marks of the commits, in commit order (so in position order).
    pub fn commits(&self) -> Marks {
        Arc::clone(&self.commits)
    }
}

#[async_trait]
impl<C: CheckpointStore> CheckpointStore for Timed<C> {
    type Context = C::Context;
    type Unit = C::Unit;
    type Claim = C::Claim;

    async fn claim(&self, projection: &str) -> Result<Self::Claim, CheckpointError> {
        self.inner.claim(projection).await
    }

    async fn begin(&self, claim: &mut Self::Claim) -> Result<(Self::Unit, u64), CheckpointError> {
        let begun = self.inner.begin(claim).await?;
        self.batch_started.store(true, Ordering::Release);
        Ok(begun)
    }

    fn context<'u>(&self, unit: &'u mut Self::Unit) -> &'u mut Self::Context {
        self.inner.context(unit)
    }

    async fn commit(&self, unit: Self::Unit, position: u64) -> Result<(), CheckpointError> {
        self.inner.commit(unit, position).await?;
        let committed = Instant::now();
        self.commits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((position, committed));
        Ok(())
    }

    async fn rollback(&self, unit: Self::Unit) -> Result<(), CheckpointError> {
        self.inner.rollback(unit).await
    }

    async fn checkpoint(&self, projection: &str) -> Result<u64, CheckpointError> {
        self.inner.checkpoint(projection).await
    }

    async fn claim_status(&self, projection: &str) -> Result<ClaimStatus, CheckpointError> {
        self.inner.claim_status(projection).await
    }

    fn is_transient(&self, error: &(dyn std::error::Error + 'static)) -> bool {
        self.inner.is_transient(error)
    }
}

/// The latency of each appended event: the instant of the first mark at or after its position
/// minus the instant its append returned. Also counts the events no mark covers, and those
/// marked before their append returned (counted as 0: the reader was faster than the writer's
/// task).
pub fn latencies(appends: &[Mark], marks: &[Mark]) -> Latencies {
    let mut marks = marks.to_vec();
    marks.sort_by_key(|&(position, _)| position);
    let mut found = Latencies::default();
    for &(position, appended) in appends {
        let index = marks.partition_point(|&(marked, _)| marked < position);
        match marks.get(index) {
            Some(&(_, seen)) => {
                if seen < appended {
                    found.early += 1;
                }
                found.samples.push(seen.saturating_duration_since(appended));
            }
            None => found.missing += 1,
        }
    }
    found.samples.sort_unstable();
    found
}

/// Latencies of one reader over a run.
#[derive(Debug, Default)]
pub struct Latencies {
    /// Sorted.
    pub samples: Vec<Duration>,
    pub missing: usize,
    pub early: usize,
}

impl Latencies {
    /// The nearest-rank percentile, zero without samples.
    pub fn percentile(&self, fraction: f64) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        let rank = (self.samples.len() as f64 * fraction).ceil() as usize;
        self.samples[rank.clamp(1, self.samples.len()) - 1]
    }
}
