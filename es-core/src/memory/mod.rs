//! The in-memory backend: an event store and a read model with checkpoints, for tests, examples
//! and small embedded uses.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use uuid::Uuid;

mod lifecycle;
mod read_model;

pub use read_model::{InMemoryClaim, InMemoryReadModel, InMemoryUnit};

use crate::projection::WakeUp;
use crate::store::{
    AppendOutcome, EventStore, EventStream, ExpectedVersion, GlobalLog, Limits, NewEvent, RecordedEvent, Snapshot,
    SnapshotStore, StoreError, StoreResult, StoredEventPlace, StreamCatalog, StreamId, StreamQuery, StreamSlice,
    StreamSummary, Tail,
};

/// An event store that keeps everything in memory. Cloning it shares the same data.
///
/// It passes the same conformance suite as the durable backends, so code tested against it
/// behaves the same in production. Appends are serialized by one lock, which makes `read_all`
/// trivially gap-free.
///
/// ```
/// # async fn demo() -> es_core::StoreResult<()> {
/// use es_core::{EventStore, ExpectedVersion, InMemoryStore, Metadata, NewEvent, StreamId, StreamSlice};
/// use futures_util::TryStreamExt;
///
/// let store = InMemoryStore::new();
/// let stream = StreamId::new("ticket", "T-1");
/// let event = NewEvent {
///     event_id: uuid::Uuid::now_v7(),
///     event_name: "TicketOpened".into(),
///     schema_version: 1,
///     payload: br#"{"title":"Printer on fire"}"#.to_vec(),
///     metadata: Metadata::new(),
/// };
/// store.append(&stream, ExpectedVersion::NoStream, vec![event]).await?;
/// let events: Vec<_> = store.read_stream(&stream, StreamSlice::all()).try_collect().await?;
/// assert_eq!(events[0].version, 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct InMemoryStore {
    state: Arc<Mutex<State>>,
    /// Counts appends, so tailing readers wake up without polling.
    appended: Arc<watch::Sender<u64>>,
    /// What appends through this handle may hold.
    limits: Limits,
    /// The time appends through this handle stamp events with.
    clock: Clock,
}

impl Default for InMemoryStore {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            appended: Arc::new(watch::Sender::new(0)),
            limits: Limits::DEFAULT,
            clock: Clock(Arc::new(Utc::now)),
        }
    }
}

/// Where an [`InMemoryStore`] handle reads the time: the system's, or a test's.
#[derive(Clone)]
struct Clock(Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>);

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// Wakes a tailing reader of an [`InMemoryStore`] when events are appended.
#[derive(Debug)]
pub struct InMemoryWakeUp {
    appended: watch::Receiver<u64>,
}

#[async_trait]
impl WakeUp for InMemoryWakeUp {
    async fn wait(&mut self) {
        if self.appended.changed().await.is_err() {
            // The store is gone: nothing will ever be appended; let the caller's poll timer run.
            std::future::pending::<()>().await;
        }
    }
}

#[derive(Default)]
struct State {
    /// Every event in position order; position `p` is at index `p - 1`; `None` once deleted.
    events: Vec<Option<RecordedEvent>>,
    /// Indexes into `events`, per stream, in version order; ordered for listing.
    streams: BTreeMap<StreamId, Vec<usize>>,
    /// The indexes of archived streams, moved out of `streams`.
    archived: BTreeMap<StreamId, Vec<usize>>,
    /// The records of closed streams.
    closures: BTreeMap<StreamId, crate::lifecycle::StreamClosed>,
    /// Where each event id is in `events`.
    event_ids: HashMap<Uuid, usize>,
    snapshots: BTreeMap<StreamId, Snapshot>,
}

/// Counts, not contents: a store's `Debug` lands in logs and traces (a repository in a
/// `#[tracing::instrument]`ed function), where every stored event would drown the line.
impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("events", &self.event_ids.len())
            .field("streams", &self.streams.len())
            .field("archived_streams", &self.archived.len())
            .field("closed_streams", &self.closures.len())
            .field("snapshots", &self.snapshots.len())
            .finish()
    }
}

impl InMemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same store (sharing its data) with other [`Limits`]. It has no ceiling of its own:
    /// any limits apply as given. The default is [`Limits::DEFAULT`], the same as the durable
    /// stores', so that what a test appends here is accepted there.
    pub fn with_limits(self, limits: Limits) -> Self {
        Self { limits, ..self }
    }

    /// The same store (sharing its data) stamping the events appended through this handle with
    /// the time `clock` gives instead of the system's: for tests of time travel by instant
    /// ("the balance at the end of last month") that set the time rather than wait for it.
    ///
    /// As on the durable stores, an event is never stamped before the last one stored, so
    /// `recorded_at` grows with positions: a clock set back stamps the time of the last event.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> es_core::StoreResult<()> {
    /// use std::sync::{Arc, Mutex};
    ///
    /// use chrono::{TimeZone, Utc};
    /// use es_core::{EventStore, ExpectedVersion, InMemoryStore, Metadata, NewEvent, StreamId, StreamSlice};
    /// use futures_util::TryStreamExt;
    ///
    /// let deposit = || NewEvent {
    ///     event_id: uuid::Uuid::now_v7(),
    ///     event_name: "MoneyDeposited".into(),
    ///     schema_version: 1,
    ///     payload: br#"{"amount":10}"#.to_vec(),
    ///     metadata: Metadata::new(),
    /// };
    /// let now = Arc::new(Mutex::new(Utc.with_ymd_and_hms(2026, 10, 31, 17, 0, 0).unwrap()));
    /// let clock = Arc::clone(&now);
    /// let store = InMemoryStore::new().with_clock(move || *clock.lock().unwrap());
    /// let account = StreamId::new("account", "A-1");
    /// store.append(&account, ExpectedVersion::NoStream, vec![deposit()]).await?;
    /// *now.lock().unwrap() = Utc.with_ymd_and_hms(2026, 11, 3, 9, 30, 0).unwrap();
    /// store.append(&account, ExpectedVersion::Exact(1), vec![deposit()]).await?;
    ///
    /// let end_of_october = Utc.with_ymd_and_hms(2026, 10, 31, 23, 59, 59).unwrap();
    /// let slice = StreamSlice::all().recorded_until(end_of_october);
    /// let then: Vec<_> = store.read_stream(&account, slice).try_collect().await?;
    /// assert_eq!(then.len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn with_clock(self, clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        Self {
            clock: Clock(Arc::new(clock)),
            ..self
        }
    }

    /// A wake-up that fires after each append, for [`ProjectionRunner::run`](crate::ProjectionRunner::run).
    pub fn wake_up(&self) -> InMemoryWakeUp {
        InMemoryWakeUp {
            appended: self.appended.subscribe(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation validates first and then only pushes, so a panic elsewhere cannot leave
        // the state half-written: recovering from poisoning is safe.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn version_of(&self, stream: &StreamId) -> u64 {
        self.streams.get(stream).map_or(0, |indexes| indexes.len() as u64)
    }

    /// Appends `events` to `stream` (checked already), returning their positions.
    fn push(&mut self, stream: &StreamId, events: Vec<NewEvent>, now: DateTime<Utc>) -> Vec<u64> {
        let last = self.events.iter().rev().flatten().next().map(|event| event.recorded_at);
        let recorded_at = last.map_or(now, |last| now.max(last));
        let mut positions = Vec::with_capacity(events.len());
        for (version, event) in (self.version_of(stream) + 1..).zip(events) {
            let index = self.events.len();
            positions.push(index as u64 + 1);
            self.event_ids.insert(event.event_id, index);
            self.events.push(Some(RecordedEvent {
                event_id: event.event_id,
                stream: stream.clone(),
                version,
                position: index as u64 + 1,
                event_name: event.event_name,
                schema_version: event.schema_version,
                payload: event.payload,
                metadata: event.metadata,
                recorded_at,
            }));
            self.streams.entry(stream.clone()).or_default().push(index);
        }
        positions
    }

    /// The events at `indexes` within `slice`, for a stream read.
    fn slice_of(&self, indexes: Option<&Vec<usize>>, slice: StreamSlice) -> Vec<StoreResult<RecordedEvent>> {
        indexes
            .into_iter()
            .flatten()
            .filter_map(|&index| self.events[index].as_ref())
            .filter(|event| slice.contains(event))
            .map(|event| Ok(event.clone()))
            .collect()
    }

    /// The original outcome, when `events` is a batch stored before (a retried append).
    fn already_stored(&self, stream: &StreamId, events: &[NewEvent]) -> Option<AppendOutcome> {
        let first = events.first()?;
        if !self.event_ids.contains_key(&first.event_id) {
            return None;
        }
        let ids: Vec<Uuid> = events.iter().map(|event| event.event_id).collect();
        let stored: Vec<StoredEventPlace> = ids
            .iter()
            .filter_map(|id| self.event_ids.get(id))
            .filter_map(|&index| self.events[index].as_ref())
            .map(StoredEventPlace::from)
            .collect();
        AppendOutcome::from_stored(stream, &ids, &stored)
    }
}

#[async_trait]
impl EventStore for InMemoryStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendOutcome> {
        self.limits.check_append(stream, &events)?;
        let mut state = self.lock();
        let closure = state.closures.get(stream);
        // A batch sent again is recognised while its events are in the stream, a tombstoned
        // one's included; once archived or deleted, the stream refuses it as closed (as the
        // durable stores do: the events left the hot table).
        let in_stream = closure.is_none_or(|closed| closed.status == crate::lifecycle::StreamStatus::Tombstoned);
        if in_stream {
            if let Some(outcome) = state.already_stored(stream, &events) {
                return Ok(outcome);
            }
        }
        if let Some(closure) = state.closures.get(stream) {
            return Err(closure.clone().refuse());
        }
        let actual = state.version_of(stream);
        expected.check(stream, actual)?;
        // The same rule as the durable stores: a payload must be JSON.
        if let Some((index, error)) = events.iter().enumerate().find_map(|(index, event)| {
            serde_json::from_slice::<serde::de::IgnoredAny>(&event.payload)
                .err()
                .map(|error| (index, error))
        }) {
            return Err(StoreError::InvalidBatch {
                stream: stream.clone(),
                reason: format!("the payload of event #{} is not valid JSON: {error}", index + 1),
            });
        }
        let mut batch_ids = HashSet::with_capacity(events.len());
        if let Some(duplicate) = events
            .iter()
            .find(|event| state.event_ids.contains_key(&event.event_id) || !batch_ids.insert(event.event_id))
        {
            return Err(StoreError::DuplicateEventId {
                stream: stream.clone(),
                event_id: duplicate.event_id,
            });
        }
        let positions = state.push(stream, events, (self.clock.0)());
        drop(state);
        if !positions.is_empty() {
            self.appended.send_modify(|count| *count += 1);
        }
        Ok(AppendOutcome::new(actual, positions))
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    async fn read_event(&self, event_id: Uuid) -> StoreResult<Option<RecordedEvent>> {
        let state = self.lock();
        Ok(state
            .event_ids
            .get(&event_id)
            .and_then(|&index| state.events[index].clone()))
    }

    fn read_stream<'a>(&'a self, stream: &'a StreamId, slice: StreamSlice) -> EventStream<'a> {
        let state = self.lock();
        let events = state.slice_of(state.streams.get(stream), slice);
        Box::pin(futures_util::stream::iter(events))
    }

    async fn stream_version(&self, stream: &StreamId) -> StoreResult<u64> {
        Ok(self.lock().version_of(stream))
    }

    async fn stream_closure(&self, stream: &StreamId) -> StoreResult<Option<crate::lifecycle::StreamClosed>> {
        Ok(self.lock().closures.get(stream).cloned())
    }
}

#[async_trait]
impl GlobalLog for InMemoryStore {
    async fn read_all(&self, after: u64, limit: usize) -> StoreResult<Vec<RecordedEvent>> {
        let state = self.lock();
        let start = usize::try_from(after).unwrap_or(usize::MAX).min(state.events.len());
        Ok(state.events[start..].iter().flatten().take(limit).cloned().collect())
    }

    async fn tail(&self, after: u64) -> StoreResult<Tail> {
        let state = self.lock();
        let start = usize::try_from(after).unwrap_or(usize::MAX).min(state.events.len());
        let last = state.events.iter().rev().flatten().next();
        Ok(Tail {
            events: state.events[start..].iter().flatten().count() as u64,
            head_position: last.map_or(after, |event| event.position.max(after)),
            head_recorded_at: last
                .filter(|event| event.position > after)
                .map(|event| event.recorded_at),
        })
    }
}

#[async_trait]
impl SnapshotStore for InMemoryStore {
    async fn save_snapshot(&self, snapshot: Snapshot) -> StoreResult<()> {
        let mut state = self.lock();
        let keep_existing = state
            .snapshots
            .get(&snapshot.stream)
            .is_some_and(|existing| existing.version > snapshot.version);
        if !keep_existing {
            state.snapshots.insert(snapshot.stream.clone(), snapshot);
        }
        Ok(())
    }

    async fn load_snapshot(&self, stream: &StreamId) -> StoreResult<Option<Snapshot>> {
        Ok(self.lock().snapshots.get(stream).cloned())
    }
}

#[async_trait]
impl StreamCatalog for InMemoryStore {
    async fn list_streams(&self, query: &StreamQuery) -> StoreResult<Vec<StreamSummary>> {
        let state = self.lock();
        Ok(state
            .streams
            .iter()
            .filter(|(stream, _)| query.matches(stream))
            .filter_map(|(stream, indexes)| {
                let last = state.events[*indexes.last()?].as_ref()?;
                Some(StreamSummary {
                    stream: stream.clone(),
                    version: indexes.len() as u64,
                    last_recorded_at: last.recorded_at,
                })
            })
            .take(query.limit)
            .collect())
    }

    async fn list_snapshots(&self, after: Option<&StreamId>, limit: usize) -> StoreResult<Vec<Snapshot>> {
        let state = self.lock();
        Ok(state
            .snapshots
            .iter()
            .filter(|(stream, _)| after.is_none_or(|after| *stream > after))
            .take(limit)
            .map(|(_, snapshot)| snapshot.clone())
            .collect())
    }
}
