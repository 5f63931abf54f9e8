//! Reads: a stream's messages by its subject, an event by its id through the index, and the log
//! of a partition by sequence.

use std::collections::VecDeque;

use async_nats::jetstream::message::StreamMessage;
use async_trait::async_trait;
use es_core::EventStream;
use es_core::{EventStore, GlobalLog, RecordedEvent, StoreError, StoreResult, StreamId, StreamSlice};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{decode_batch, position, split_position, stream_of_subject, stream_tokens};
use crate::error::NatsError;
use crate::js::{first_from, last_on, message_at, number_header, recorded_at, VERSION_HEADER};
use crate::NatsStore;

/// A stream's last message: its sequence in the partition (0 when the stream has no event) and
/// the stream's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    /// The JetStream sequence of the stream's last message, 0 if none.
    pub sequence: u64,
    /// The stream's version.
    pub version: u64,
}

/// The last message of `stream`, read from its partition's leader.
pub(crate) async fn head(store: &NatsStore, stream: &StreamId) -> Result<Head, NatsError> {
    let js = partition(store, store.partition_of(stream))?;
    match last_on(js, &store.event_subject(stream), "read a stream's version").await? {
        None => Ok(Head {
            sequence: 0,
            version: 0,
        }),
        Some(message) => Ok(Head {
            sequence: message.sequence,
            version: number_header(&message, VERSION_HEADER)?,
        }),
    }
}

/// The JetStream stream of `partition`.
pub(crate) fn partition(
    store: &NatsStore,
    partition: u32,
) -> Result<&async_nats::jetstream::stream::Stream, NatsError> {
    store
        .partition_stream(partition)
        .ok_or_else(|| NatsError::InvalidOption(format!("the store has no partition {partition}")))
}

/// The events of the batch stored as `message`, with their versions (the batch's last is the
/// message's version header), positions (see [`position`]) and the message's time.
pub(crate) fn events_of(message: &StreamMessage) -> Result<Vec<RecordedEvent>, NatsError> {
    let stream = stream_of_subject(&message.subject)
        .ok_or_else(|| NatsError::Corrupt(format!("an event message on subject {}", message.subject)))?;
    let last = number_header(message, VERSION_HEADER)?;
    let batch = decode_batch(&message.payload)?;
    let first = last
        .checked_add(1)
        .and_then(|next| next.checked_sub(batch.len() as u64))
        .filter(|first| *first >= 1)
        .ok_or_else(|| {
            NatsError::Corrupt(format!(
                "message {} of {stream} holds {} events but ends at version {last}",
                message.sequence,
                batch.len()
            ))
        })?;
    let recorded_at = recorded_at(message);
    Ok(batch
        .into_iter()
        .enumerate()
        .map(|(index, event)| RecordedEvent {
            event_id: event.event_id,
            stream: stream.clone(),
            version: first + index as u64,
            position: position(message.sequence, index),
            event_name: event.event_name,
            schema_version: event.schema_version,
            payload: event.payload,
            metadata: event.metadata,
            recorded_at,
        })
        .collect())
}

/// Where the read of a stream is.
struct Cursor {
    next_sequence: u64,
    pending: VecDeque<RecordedEvent>,
    done: bool,
}

/// [`EventStore::read_stream`]: the stream's messages one by one from its partition, following
/// its subject (no other stream's messages are read), each batch decoded as it comes.
pub(crate) fn read_stream<'a>(store: &'a NatsStore, stream: &'a StreamId, slice: StreamSlice) -> EventStream<'a> {
    let subject = store.event_subject(stream);
    let cursor = Cursor {
        next_sequence: 1,
        pending: VecDeque::new(),
        done: false,
    };
    futures_util::stream::try_unfold(cursor, move |mut cursor| {
        let subject = subject.clone();
        async move {
            loop {
                if let Some(event) = cursor.pending.pop_front() {
                    return Ok(Some((event, cursor)));
                }
                if cursor.done {
                    return Ok(None);
                }
                let js = partition(store, store.partition_of(stream))?;
                let Some(message) = first_from(js, &subject, cursor.next_sequence, "read a stream").await? else {
                    cursor.done = true;
                    continue;
                };
                cursor.next_sequence = message.sequence.saturating_add(1);
                if slice.recorded_until.is_some_and(|until| recorded_at(&message) > until) {
                    cursor.done = true;
                    continue;
                }
                let events = events_of(&message)?;
                let last = events.last().map_or(0, |event| event.version);
                cursor
                    .pending
                    .extend(events.into_iter().filter(|event| slice.contains(event)));
                if slice.to_version.is_some_and(|to| last >= to) {
                    cursor.done = true;
                }
            }
        }
    })
    .boxed()
}

/// Where one event is, as the event-id index holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IndexEntry {
    /// The partition.
    #[serde(rename = "p")]
    pub partition: u32,
    /// The sequence of the batch's message in the partition.
    #[serde(rename = "s")]
    pub sequence: u64,
    /// The event's index inside its batch.
    #[serde(rename = "i")]
    pub index: usize,
    /// The event's version.
    #[serde(rename = "v")]
    pub version: u64,
    /// The stream's subject tokens (see [`stream_tokens`]).
    #[serde(rename = "t")]
    pub stream: String,
}

impl IndexEntry {
    /// Whether the entry places an event in `stream`.
    pub(crate) fn is_in(&self, stream: &StreamId) -> bool {
        self.stream == stream_tokens(stream)
    }
}

/// The index entry of `event_id`, if the index has one.
pub(crate) async fn indexed(store: &NatsStore, event_id: Uuid) -> Result<Option<IndexEntry>, NatsError> {
    let Some(message) = last_on(
        &store.inner.index,
        &store.index_subject(event_id),
        "read the event-id index",
    )
    .await?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&message.payload)
        .map(Some)
        .map_err(|error| NatsError::Corrupt(format!("index entry of event {event_id}: {error}")))
}

/// [`EventStore::read_event`]: the index says which message holds the event; the message is
/// read and the event checked to be the one asked for.
pub(crate) async fn read_event(store: &NatsStore, event_id: Uuid) -> StoreResult<Option<RecordedEvent>> {
    let Some(entry) = indexed(store, event_id).await? else {
        return Ok(None);
    };
    let js = partition(store, entry.partition)?;
    let Some(message) = message_at(js, entry.sequence, "read an event by id").await? else {
        return Ok(None);
    };
    let events = events_of(&message)?;
    Ok(events
        .into_iter()
        .nth(entry.index)
        .filter(|event| event.event_id == event_id))
}

/// The global log of one partition: every event of the streams the partition holds, in
/// position order (a total order inside the partition; none across partitions).
///
/// Positions are `sequence << 16 | index`: the JetStream sequence of the batch's message, then
/// the event's index in its batch. They grow strictly within a partition and have holes.
#[derive(Debug, Clone)]
pub struct PartitionLog {
    store: NatsStore,
    partition: u32,
}

impl PartitionLog {
    /// The partition this log reads.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The store the partition belongs to.
    pub fn store(&self) -> &NatsStore {
        &self.store
    }
}

impl NatsStore {
    /// The global log of `partition`; `None` when the store has no such partition.
    pub fn partition_log(&self, partition: u32) -> Option<PartitionLog> {
        (partition < self.partition_count()).then(|| PartitionLog {
            store: self.clone(),
            partition,
        })
    }

    /// The global log of each partition, by partition number: one projection runner per
    /// partition consumes them in parallel.
    pub fn partition_logs(&self) -> Vec<PartitionLog> {
        (0..self.partition_count())
            .map(|partition| PartitionLog {
                store: self.clone(),
                partition,
            })
            .collect()
    }
}

/// Up to `limit` events of `partition` with positions above `after`, in position order.
async fn read_partition(
    store: &NatsStore,
    partition_number: u32,
    after: u64,
    limit: usize,
) -> StoreResult<Vec<RecordedEvent>> {
    let js = partition(store, partition_number)?;
    let filter = store.partition_filter(partition_number);
    let (mut next, _) = split_position(after);
    let mut events = Vec::new();
    while events.len() < limit {
        let Some(message) = first_from(js, &filter, next, "read a partition's log").await? else {
            break;
        };
        next = message.sequence.saturating_add(1);
        let wanted = limit - events.len();
        events.extend(
            events_of(&message)?
                .into_iter()
                .filter(|event| event.position > after)
                .take(wanted),
        );
    }
    Ok(events)
}

#[async_trait]
impl GlobalLog for PartitionLog {
    async fn read_all(&self, after: u64, limit: usize) -> StoreResult<Vec<RecordedEvent>> {
        read_partition(&self.store, self.partition, after, limit).await
    }
}

/// The store itself is a global log only when it has one partition (then it is that
/// partition's log); with more, [`GlobalLog::read_all`] fails with
/// [`StoreError::Backend`] naming [`NatsStore::partition_logs`], which a projection reads
/// instead, one runner per partition.
#[async_trait]
impl GlobalLog for NatsStore {
    async fn read_all(&self, after: u64, limit: usize) -> StoreResult<Vec<RecordedEvent>> {
        if self.partition_count() != 1 {
            return Err(StoreError::backend(NatsError::InvalidOption(format!(
                "the store has {} partitions, each with a log of its own: read them with \
                 NatsStore::partition_logs",
                self.partition_count()
            ))));
        }
        read_partition(self, 0, after, limit).await
    }
}

/// A partition's log also reads and writes streams (those of the whole store), so that a
/// [`ProjectionRunner`](es_core::ProjectionRunner) can be given one.
#[async_trait]
impl EventStore for PartitionLog {
    async fn append(
        &self,
        stream: &StreamId,
        expected: es_core::ExpectedVersion,
        events: Vec<es_core::NewEvent>,
    ) -> StoreResult<es_core::AppendOutcome> {
        self.store.append(stream, expected, events).await
    }

    fn limits(&self) -> es_core::Limits {
        self.store.limits()
    }

    fn read_stream<'a>(&'a self, stream: &'a StreamId, slice: StreamSlice) -> EventStream<'a> {
        self.store.read_stream(stream, slice)
    }

    async fn read_event(&self, event_id: Uuid) -> StoreResult<Option<RecordedEvent>> {
        self.store.read_event(event_id).await
    }

    async fn stream_version(&self, stream: &StreamId) -> StoreResult<u64> {
        self.store.stream_version(stream).await
    }
}
