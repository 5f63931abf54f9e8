//! [`Appenders`]: writers that append batches with expected versions to shared streams and
//! record every attempt in a [`History`], on any store: the load of the reliability scenarios.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use es_core::{
    Aggregate, CommandError, EventStore, Executed, ExpectedVersion, Metadata, NewEvent, RecordedEvent, RepositoryError,
    StoreError, StreamId,
};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::history::{Batch, History, Outcome};
use crate::Rng;

/// What every event the appenders write carries in its payload: put it in
/// [`Chaos::markers`](crate::Chaos::markers) to lose the answers of appends.
pub const MARKER: &str = "es-reliability-event";

/// How long a writer waits after an append whose answer was lost before it sends it again.
const RESEND_PAUSE: Duration = Duration::from_millis(50);

/// Writers that append batches of events to streams they share, each with the version it last
/// saw as the expected version, and record every attempt in a [`History`].
///
/// A writer picks a stream at random, appends a batch of a random size expecting the version it
/// last saw there (so writers conflict, and learn the actual version from the conflict), and
/// sends a batch whose answer was lost again with the same event ids and expectation, up to
/// [`Appenders::resend`] times: the store must recognise it if it was stored. Each event's
/// payload is JSON: `text` (with [`MARKER`]), `writer`, `batch` (the id of the batch's first
/// event), `index` and `of` (its place in the batch and the batch's size), and `pad`.
///
/// ```no_run
/// # async fn demo(store: es_postgres::PostgresStore) -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::{atomic::AtomicBool, Arc};
/// use es_test_support::{history::History, load::Appenders};
///
/// let (history, stop) = (History::new(), Arc::new(AtomicBool::new(false)));
/// let writers = Appenders::default().spawn(&store, &history, &stop);
/// // ... faults ...
/// stop.store(true, std::sync::atomic::Ordering::Relaxed);
/// for writer in writers {
///     println!("{}", writer.await?);
/// }
/// history.check(&store).await?.assert_clean();
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Appenders {
    /// How many writers [`Appenders::spawn`] starts.
    pub writers: usize,
    /// How many streams they share, `<aggregate_type>/<prefix>-0` and on.
    pub streams: u64,
    /// The streams' aggregate type.
    pub aggregate_type: String,
    /// What the streams' ids start with.
    pub prefix: String,
    /// The stored name of every event (schema version 1).
    pub event_name: String,
    /// How many events a batch holds, drawn from this range.
    pub batch: Range<u64>,
    /// A writer's pause between two batches.
    pub pause: Duration,
    /// How many times a batch whose answer was lost is sent again.
    pub resend: u32,
    /// Filler bytes in each payload.
    pub pad: usize,
    /// The seed of the writers' random choices.
    pub seed: u64,
}

impl Default for Appenders {
    /// 4 writers, 8 streams `case/shared-N`, `NoteAdded` events in batches of 1 to 4, a 2 ms
    /// pause, 3 resends.
    fn default() -> Self {
        Self {
            writers: 4,
            streams: 8,
            aggregate_type: "case".into(),
            prefix: "shared".into(),
            event_name: "NoteAdded".into(),
            batch: 1..5,
            pause: Duration::from_millis(2),
            resend: 3,
            pad: 0,
            seed: 1,
        }
    }
}

/// What the appenders' attempts came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Appends attempted (a batch sent again counts again).
    pub appends: u64,
    /// Appends acknowledged.
    pub acknowledged: u64,
    /// Events in acknowledged appends.
    pub events: u64,
    /// Concurrency conflicts.
    pub conflicts: u64,
    /// Other refusals.
    pub refused: u64,
    /// Lost answers that came as [`StoreError::Unavailable`].
    pub unavailable: u64,
    /// Lost answers that came as any other error (e.g. [`StoreError::Backend`]).
    pub other_errors: u64,
}

impl Tally {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Tally) {
        self.appends += other.appends;
        self.acknowledged += other.acknowledged;
        self.events += other.events;
        self.conflicts += other.conflicts;
        self.refused += other.refused;
        self.unavailable += other.unavailable;
        self.other_errors += other.other_errors;
    }

    /// Counts one append's result.
    pub fn count<T>(&mut self, result: &Result<T, StoreError>, events: usize) {
        self.appends += 1;
        match result {
            Ok(_) => {
                self.acknowledged += 1;
                self.events += events as u64;
            }
            Err(error) => self.count_error(error),
        }
    }

    /// Counts one command's result ([`Repository::execute`](es_core::Repository::execute)).
    pub fn count_command<A: Aggregate, E>(&mut self, result: &Result<Executed<A>, CommandError<E>>) {
        self.appends += 1;
        match result {
            Ok(executed) => {
                self.acknowledged += 1;
                self.events += executed.appended.len() as u64;
            }
            Err(CommandError::Conflict { .. }) => self.conflicts += 1,
            Err(CommandError::Rejected(_)) => self.refused += 1,
            Err(CommandError::Repository(RepositoryError::Store(error))) => self.count_error(error),
            Err(CommandError::Repository(RepositoryError::Conflict(_))) => self.conflicts += 1,
            Err(_) => self.other_errors += 1,
        }
    }

    fn count_error(&mut self, error: &StoreError) {
        match error {
            StoreError::Conflict(_) => self.conflicts += 1,
            StoreError::DuplicateEventId { .. } | StoreError::InvalidBatch { .. } | StoreError::LimitExceeded(_) => {
                self.refused += 1
            }
            StoreError::Unavailable(_) => self.unavailable += 1,
            _ => self.other_errors += 1,
        }
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} appends: {} acknowledged ({} events), {} conflicts, {} refused, {} Unavailable, {} other errors",
            self.appends,
            self.acknowledged,
            self.events,
            self.conflicts,
            self.refused,
            self.unavailable,
            self.other_errors
        )
    }
}

impl Appenders {
    /// Starts [`Appenders::writers`] writers on the current Tokio runtime; each appends until
    /// `stop` is set and returns its [`Tally`].
    pub fn spawn<S: EventStore + Clone + 'static>(
        &self,
        store: &S,
        history: &History,
        stop: &Arc<AtomicBool>,
    ) -> Vec<JoinHandle<Tally>> {
        (0..self.writers)
            .map(|writer| {
                let (this, store, history, stop) = (self.clone(), store.clone(), history.clone(), Arc::clone(stop));
                tokio::spawn(async move { this.write(writer, &store, &history, &stop).await })
            })
            .collect()
    }

    /// One writer's loop, numbered `writer`: appends until `stop` is set.
    pub async fn write<S: EventStore + ?Sized>(
        &self,
        writer: usize,
        store: &S,
        history: &History,
        stop: &AtomicBool,
    ) -> Tally {
        let mut rng = Rng::new(self.seed ^ (writer as u64 + 1).wrapping_mul(0x1000_0000_01B3));
        let mut seen: HashMap<u64, u64> = HashMap::new();
        let mut tally = Tally::default();
        while !stop.load(Ordering::Relaxed) {
            let slot = rng.range(0..self.streams.max(1));
            let stream = StreamId::new(self.aggregate_type.as_str(), format!("{}-{slot}", self.prefix));
            let events = self.batch(writer, rng.range(self.batch.clone()).max(1));
            let version = seen.get(&slot).copied().unwrap_or(0);
            let expected = ExpectedVersion::Exact(version);
            let batch = Batch::of(&stream, &events);
            for sent in 0..=self.resend {
                let attempt = history.attempt(&batch);
                let result = store.append(&stream, expected, events.clone()).await;
                attempt.finish(Outcome::of_append(&result));
                tally.count(&result, events.len());
                match result {
                    Ok(outcome) => seen.insert(slot, outcome.new_version),
                    Err(StoreError::Conflict(conflict)) => seen.insert(slot, conflict.actual),
                    Err(error) if Outcome::of_store_error(&error).is_unknown() => {
                        if sent < self.resend && !stop.load(Ordering::Relaxed) {
                            tokio::time::sleep(RESEND_PAUSE).await;
                            continue;
                        }
                        None
                    }
                    Err(_) => None,
                };
                break;
            }
            tokio::time::sleep(self.pause).await;
        }
        tally
    }

    /// A batch of `size` events, each saying where it belongs.
    fn batch(&self, writer: usize, size: u64) -> Vec<NewEvent> {
        let ids: Vec<Uuid> = (0..size).map(|_| Uuid::now_v7()).collect();
        let pad = "x".repeat(self.pad);
        ids.iter()
            .enumerate()
            .map(|(index, &event_id)| {
                let payload = serde_json::json!({
                    "text": format!("{MARKER} w{writer} {index}/{size}"),
                    "writer": writer,
                    "batch": ids[0],
                    "index": index,
                    "of": size,
                    "pad": pad,
                });
                NewEvent {
                    event_id,
                    event_name: self.event_name.clone(),
                    schema_version: 1,
                    payload: payload.to_string().into_bytes(),
                    metadata: Metadata::new(),
                }
            })
            .collect()
    }
}

/// The batches of [`Appenders`] that `events` (what one read returned, e.g. a whole stream read
/// at once) show only in part: the ids of their first events. Events without the appenders'
/// payload are passed over.
pub fn incomplete_batches(events: &[RecordedEvent]) -> Vec<Uuid> {
    let mut seen: HashMap<Uuid, (u64, u64)> = HashMap::new();
    for event in events {
        let Ok(payload) = serde_json::from_slice::<serde_json::Value>(&event.payload) else {
            continue;
        };
        let batch = payload["batch"].as_str().and_then(|batch| batch.parse::<Uuid>().ok());
        let (Some(batch), Some(of)) = (batch, payload["of"].as_u64()) else {
            continue;
        };
        seen.entry(batch).or_insert((0, of)).0 += 1;
    }
    let mut incomplete: Vec<Uuid> = seen
        .into_iter()
        .filter(|(_, (count, of))| count != of)
        .map(|(batch, _)| batch)
        .collect();
    incomplete.sort();
    incomplete
}
