//! What the repository suites share: a counter aggregate and an instrumented in-memory store.

#![allow(dead_code)] // each suite uses its own part

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use es_core::EventStream;
use es_core::{
    event, Aggregate, AppendOutcome, Apply, EventStore, ExpectedVersion, InMemoryStore, Metadata, NewEvent,
    RecordedEvent, Snapshot, SnapshotStore, StoreError, StoreResult, StreamId, StreamSlice,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[event(version = 2)]
#[upcast(from = 1, json = v1_to_v2)]
#[derive(Debug, Clone, PartialEq)]
pub struct Added {
    pub amount: i64,
}

fn v1_to_v2(mut v1: serde_json::Value) -> Result<serde_json::Value, es_core::UpcastError> {
    // v1 stored the amount in hundreds.
    let hundreds = v1["hundreds"]
        .as_i64()
        .ok_or_else(|| es_core::UpcastError::missing_field("hundreds"))?;
    v1["amount"] = (hundreds * 100).into();
    Ok(v1)
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct Reset;

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum CounterEvent {
    Added(Added),
    Reset(Reset),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "counter", event = CounterEvent, snapshot_revision = 3)]
pub struct Counter {
    pub total: i64,
    pub changes: u32,
}

impl Apply<Added> for Counter {
    fn apply(&mut self, event: &Added) {
        self.total += event.amount;
        self.changes += 1;
    }
}

impl Apply<Reset> for Counter {
    fn apply(&mut self, _: &Reset) {
        self.total = 0;
        self.changes += 1;
    }
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("amount must be positive")]
pub struct NotPositive;

pub fn add(amount: i64) -> impl Fn(&Counter) -> Result<Vec<CounterEvent>, NotPositive> {
    move |_| {
        if amount <= 0 {
            return Err(NotPositive);
        }
        Ok(vec![Added { amount }.into()])
    }
}

pub fn new_id() -> String {
    Uuid::now_v7().to_string()
}

/// Opens a counter only if it has never changed.
pub fn first_add(counter: &Counter) -> Result<Vec<CounterEvent>, &'static str> {
    if counter.changes > 0 {
        return Err("already started");
    }
    Ok(vec![Added { amount: 1 }.into()])
}

/// An in-memory store that counts stream reads, lets a competing writer append right before
/// each of its first `races` appends, and fails appends as an unreachable server would:
/// `outages` before committing, `lost_answers` after.
#[derive(Clone, Default)]
pub struct InstrumentedStore {
    pub inner: InMemoryStore,
    pub races: Arc<AtomicU32>,
    pub stream_reads: Arc<AtomicU32>,
    /// How many of the next appends commit and then lose their answer (`Unavailable`).
    pub lost_answers: Arc<AtomicU32>,
    /// How many of the next appends fail with `Unavailable` without committing.
    pub outages: Arc<AtomicU32>,
}

#[async_trait]
impl EventStore for InstrumentedStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendOutcome> {
        if take_one(&self.races) {
            let competitor =
                es_core::encode_batch(stream, &[CounterEvent::from(Added { amount: 100 })], &Metadata::new())
                    .expect("encode");
            self.inner.append(stream, ExpectedVersion::Any, competitor).await?;
        }
        if take_one(&self.outages) {
            return Err(StoreError::unavailable(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset,
            )));
        }
        let outcome = self.inner.append(stream, expected, events).await?;
        if take_one(&self.lost_answers) {
            return Err(StoreError::unavailable(std::io::Error::from(
                std::io::ErrorKind::ConnectionAborted,
            )));
        }
        Ok(outcome)
    }

    async fn read_event(&self, event_id: Uuid) -> StoreResult<Option<RecordedEvent>> {
        self.inner.read_event(event_id).await
    }

    fn read_stream<'a>(&'a self, stream: &'a StreamId, slice: StreamSlice) -> EventStream<'a> {
        self.stream_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_stream(stream, slice)
    }

    async fn stream_version(&self, stream: &StreamId) -> StoreResult<u64> {
        self.inner.stream_version(stream).await
    }
}

#[async_trait]
impl SnapshotStore for InstrumentedStore {
    async fn save_snapshot(&self, snapshot: Snapshot) -> StoreResult<()> {
        self.inner.save_snapshot(snapshot).await
    }

    async fn load_snapshot(&self, stream: &StreamId) -> StoreResult<Option<Snapshot>> {
        self.inner.load_snapshot(stream).await
    }
}

/// Counts `counter` down by one unless it is 0: whether it was not.
fn take_one(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl InstrumentedStore {
    /// A store whose next `count` appends commit and then lose their answer.
    pub fn losing_answers(count: u32) -> Self {
        Self {
            lost_answers: Arc::new(AtomicU32::new(count)),
            ..Self::default()
        }
    }

    /// A store whose next `count` appends fail before committing.
    pub fn with_outages(count: u32) -> Self {
        Self {
            outages: Arc::new(AtomicU32::new(count)),
            ..Self::default()
        }
    }
}
