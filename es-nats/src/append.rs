//! Appends: one JetStream message per batch, published on the stream's subject on condition
//! that the subject's last sequence is the one the expectation was checked against, so the
//! server refuses the batch if anything was appended in between.

use async_nats::HeaderMap;
use bytes::Bytes;
use es_core::{AppendOutcome, ExpectedVersion, NewEvent, StoreError, StoreResult, StoredEventPlace, StreamId};
use futures_util::{StreamExt, TryStreamExt};
use serde::de::IgnoredAny;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::codec::{encode_batch, position, stream_tokens};
use crate::error::NatsError;
use crate::js::{contended, last_sequence, message_at, publish, Contention, Published, VERSION_HEADER};
use crate::read::{events_of, head, indexed, partition, IndexEntry};
use crate::NatsStore;

/// How many index lookups or writes of one batch are in flight at once.
const INDEX_CONCURRENCY: usize = 512;

/// What is stored of a batch already.
enum Earlier {
    /// None of its events.
    New,
    /// The whole batch, as this batch: a retry, with the original outcome.
    Retried(AppendOutcome),
    /// Some of its events, but not as this batch: this id is stored.
    Duplicate(Uuid),
}

/// [`EventStore::append`](es_core::EventStore::append).
pub(crate) async fn append(
    store: &NatsStore,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> StoreResult<AppendOutcome> {
    let metadata = checked_batch(store, stream, &events)?;
    let ids: Vec<Uuid> = events.iter().map(|event| event.event_id).collect();
    let earlier = earlier(store, stream, &ids).await?;
    if let Earlier::Retried(outcome) = earlier {
        tracing::debug!(stream = %stream, "append already stored: the original outcome, nothing written");
        return Ok(outcome);
    }
    let subject = store.event_subject(stream);
    let payload = Bytes::from(encode_batch(&events, &metadata));
    let message_id = message_id(stream, &ids);
    let js = partition(store, store.partition_of(stream))?;
    let mut contention = Contention::new();
    loop {
        // The partition's last sequence first, then the stream's head: a publish conditioned on
        // that sequence can only be stored if nothing was appended to the partition since, so
        // the head it was judged on is still the stream's head.
        let partition_last = last_sequence(js, "read a partition's last sequence").await?;
        let head = head(store, stream).await?;
        if let Err(conflict) = expected.check(stream, head.version) {
            if let Some(outcome) = deduplicated(store, stream, &ids, &subject, &message_id, &payload).await? {
                return Ok(outcome);
            }
            return Err(conflict.into());
        }
        if let Earlier::Duplicate(event_id) = earlier {
            return Err(StoreError::DuplicateEventId {
                stream: stream.clone(),
                event_id,
            });
        }
        if events.is_empty() {
            return Ok(AppendOutcome::new(head.version, Vec::new()));
        }
        let Some(new_version) = head.version.checked_add(events.len() as u64) else {
            return Err(
                NatsError::Corrupt(format!("{stream} is at version {}, which cannot grow", head.version)).into(),
            );
        };
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", message_id.as_str());
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            head.sequence.to_string().as_str(),
        );
        headers.insert("Nats-Expected-Last-Sequence", partition_last.to_string().as_str());
        headers.insert(VERSION_HEADER, new_version.to_string().as_str());
        let published = publish(
            &store.inner.context,
            subject.clone(),
            headers,
            payload.clone(),
            "append a batch",
        )
        .await?;
        let ack = match published {
            Published::Acked(ack) => ack,
            // Another batch got in since the head was read (of this stream, or of another of
            // the partition): judge the expectation again.
            Published::WrongLastSequence if contention.lost().await => continue,
            Published::WrongLastSequence => {
                return Err(contended("append a batch", "other streams of the partition", &contention).into())
            }
        };
        if ack.duplicate {
            // The server remembers this batch (same stream, same ids): a retry within the
            // deduplication window whose index entries may be missing.
            return original(store, stream, &ids, ack.sequence).await;
        }
        let positions: Vec<u64> = (0..events.len()).map(|index| position(ack.sequence, index)).collect();
        index_batch(store, stream, &ids, ack.sequence, head.version).await?;
        return Ok(AppendOutcome::new(head.version, positions));
    }
}

/// Checks the batch against the store's limits, and that each payload is JSON; returns each
/// event's metadata serialized.
fn checked_batch(store: &NatsStore, stream: &StreamId, events: &[NewEvent]) -> StoreResult<Vec<Vec<u8>>> {
    store.inner.limits.check_append(stream, events)?;
    let mut seen = std::collections::HashSet::with_capacity(events.len());
    if let Some(repeated) = events.iter().find(|event| !seen.insert(event.event_id)) {
        return Err(StoreError::DuplicateEventId {
            stream: stream.clone(),
            event_id: repeated.event_id,
        });
    }
    let invalid = |reason: String| StoreError::InvalidBatch {
        stream: stream.clone(),
        reason,
    };
    events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            serde_json::from_slice::<IgnoredAny>(&event.payload).map_err(|error| {
                invalid(format!(
                    "the payload of event #{} is not valid JSON: {error}",
                    index + 1
                ))
            })?;
            serde_json::to_vec(&event.metadata).map_err(|error| {
                invalid(format!(
                    "the metadata of event #{} does not serialize: {error}",
                    index + 1
                ))
            })
        })
        .collect()
}

/// The batch's message id for JetStream's deduplication: a SHA-256 of the stream and the
/// batch's event ids, so the same batch to the same stream is recognised, and nothing else.
fn message_id(stream: &StreamId, ids: &[Uuid]) -> String {
    let mut hash = Sha256::new();
    hash.update(stream_tokens(stream).as_bytes());
    for id in ids {
        hash.update(id.as_bytes());
    }
    hash.finalize().iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Looks the batch's ids up in the event-id index, and judges what is stored with
/// [`AppendOutcome::from_stored`], the rule every backend shares.
async fn earlier(store: &NatsStore, stream: &StreamId, ids: &[Uuid]) -> Result<Earlier, NatsError> {
    let Some(first) = ids.first() else {
        return Ok(Earlier::New);
    };
    let found: Vec<Option<IndexEntry>> = futures_util::stream::iter(ids.iter().copied().map(|id| indexed(store, id)))
        .buffered(INDEX_CONCURRENCY)
        .try_collect()
        .await?;
    let stored: Vec<StoredEventPlace> = ids
        .iter()
        .zip(&found)
        .filter_map(|(id, entry)| {
            let entry = entry.as_ref()?;
            Some(StoredEventPlace {
                event_id: *id,
                stream: if entry.is_in(stream) {
                    stream.clone()
                } else {
                    // Somewhere else: any other stream makes `from_stored` refuse.
                    StreamId::new(format!("{}\0elsewhere", stream.aggregate_type), entry.stream.clone())
                },
                version: entry.version,
                position: position(entry.sequence, entry.index),
            })
        })
        .collect();
    if stored.is_empty() {
        return Ok(Earlier::New);
    }
    Ok(match AppendOutcome::from_stored(stream, ids, &stored) {
        Some(outcome) => Earlier::Retried(outcome),
        None => {
            let duplicate = ids
                .iter()
                .zip(&found)
                .find(|(_, entry)| entry.is_some())
                .map_or(*first, |(id, _)| *id);
            Earlier::Duplicate(duplicate)
        }
    })
}

/// Asks the server whether it remembers this batch (a retry of an append that committed but
/// whose index entries were not written, e.g. its server died in between): the batch's
/// message id published on a condition that can never hold (the stream's last sequence being
/// `u64::MAX`), so that the server answers with the original's sequence if the id is within
/// its deduplication window (it checks that first), and refuses otherwise, storing nothing.
async fn deduplicated(
    store: &NatsStore,
    stream: &StreamId,
    ids: &[Uuid],
    subject: &str,
    message_id: &str,
    payload: &Bytes,
) -> StoreResult<Option<AppendOutcome>> {
    if ids.is_empty() {
        return Ok(None);
    }
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", message_id);
    headers.insert("Nats-Expected-Last-Sequence", u64::MAX.to_string().as_str());
    let published = publish(
        &store.inner.context,
        subject.to_owned(),
        headers,
        payload.clone(),
        "ask whether a batch is stored",
    )
    .await?;
    match published {
        Published::Acked(ack) if ack.duplicate => original(store, stream, ids, ack.sequence).await.map(Some),
        Published::Acked(ack) => Err(NatsError::Corrupt(format!(
            "the server stored message {} of {stream} against an impossible condition",
            ack.sequence
        ))
        .into()),
        Published::WrongLastSequence => Ok(None),
    }
}

/// The outcome of the batch the server found stored as message `sequence` (a deduplicated
/// retry); writes its index entries again, in case the first attempt could not.
async fn original(store: &NatsStore, stream: &StreamId, ids: &[Uuid], sequence: u64) -> StoreResult<AppendOutcome> {
    let js = partition(store, store.partition_of(stream))?;
    let message = message_at(js, sequence, "read a deduplicated batch")
        .await?
        .ok_or_else(|| {
            NatsError::Corrupt(format!(
                "the server names message {sequence} of {stream}, which is gone"
            ))
        })?;
    let events = events_of(&message)?;
    let stored: Vec<StoredEventPlace> = events.iter().map(StoredEventPlace::from).collect();
    let outcome = AppendOutcome::from_stored(stream, ids, &stored).ok_or_else(|| {
        NatsError::Corrupt(format!(
            "message {sequence} of {stream} has this batch's message id but other events"
        ))
    })?;
    index_batch(store, stream, ids, sequence, outcome.previous_version).await?;
    Ok(outcome)
}

/// Writes the index entry of each event of the batch stored as message `sequence`, the stream
/// having been at `previous_version` before it. An entry not written (the server failed in
/// between) fails the append as unavailable: its retry, recognised by the server's
/// deduplication, writes the entries again.
async fn index_batch(
    store: &NatsStore,
    stream: &StreamId,
    ids: &[Uuid],
    sequence: u64,
    previous_version: u64,
) -> Result<(), NatsError> {
    let partition = store.partition_of(stream);
    let tokens = stream_tokens(stream);
    let writes = ids.iter().copied().enumerate().map(|(index, id)| {
        let entry = IndexEntry {
            partition,
            sequence,
            index,
            version: previous_version.saturating_add(index as u64 + 1),
            stream: tokens.clone(),
        };
        async move {
            let payload = serde_json::to_vec(&entry).map_err(|error| NatsError::Corrupt(error.to_string()))?;
            let published = publish(
                &store.inner.context,
                store.index_subject(id),
                HeaderMap::new(),
                Bytes::from(payload),
                "index an event id",
            )
            .await?;
            match published {
                Published::Acked(_) => Ok(()),
                Published::WrongLastSequence => Err(NatsError::request("index an event id", "refused", false)),
            }
        }
    });
    futures_util::stream::iter(writes)
        .buffer_unordered(INDEX_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .map(drop)
}
