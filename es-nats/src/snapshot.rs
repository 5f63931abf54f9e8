//! Snapshots, one subject per stream in a stream that keeps one message per subject, and the
//! catalog of streams and snapshots for tools.

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::Stream;
use async_nats::HeaderMap;
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use es_core::{Snapshot, StoreResult, StreamCatalog, StreamId, StreamQuery, StreamSummary};
use futures_util::TryStreamExt;

use crate::codec::{stream_of_subject, token};
use crate::error::NatsError;
use crate::js::{
    contended, last_on, last_sequence, number_header, publish, recorded_at, Contention, Published, VERSION_HEADER,
};
use crate::read::partition;
use crate::NatsStore;

const REVISION_HEADER: &str = "Es-Revision";
const SCHEMA_HEADER: &str = "Es-Schema-Version";
const TAKEN_AT_HEADER: &str = "Es-Taken-At";

/// [`SnapshotStore::save_snapshot`](es_core::SnapshotStore::save_snapshot): published on
/// condition that the stream's snapshot subject is still at the sequence whose version was
/// compared, so a newer snapshot saved meanwhile is never replaced by an older one.
pub(crate) async fn save(store: &NatsStore, snapshot: Snapshot) -> StoreResult<()> {
    if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(&snapshot.state) {
        return Err(crate::NatsError::SnapshotNotJson {
            stream: snapshot.stream,
            version: snapshot.version,
            reason: error.to_string(),
        }
        .into());
    }
    let subject = store.snapshot_subject(&snapshot.stream);
    let mut headers = HeaderMap::new();
    headers.insert(VERSION_HEADER, snapshot.version.to_string().as_str());
    headers.insert(REVISION_HEADER, snapshot.revision.to_string().as_str());
    headers.insert(SCHEMA_HEADER, snapshot.schema_version.to_string().as_str());
    let taken_at = snapshot.taken_at.to_rfc3339_opts(SecondsFormat::Nanos, true);
    headers.insert(TAKEN_AT_HEADER, taken_at.as_str());
    let payload = Bytes::from(snapshot.state);
    let mut contention = Contention::new();
    loop {
        // As appends do (see `append`): the stream's last sequence, then the subject's.
        let stream_last = last_sequence(&store.inner.snapshots, "read the snapshots' last sequence").await?;
        let last = last_on(&store.inner.snapshots, &subject, "read a snapshot").await?;
        let sequence = match &last {
            Some(message) if number_header(message, VERSION_HEADER)? > snapshot.version => return Ok(()),
            Some(message) => message.sequence,
            None => 0,
        };
        let mut headers = headers.clone();
        headers.insert("Nats-Expected-Last-Subject-Sequence", sequence.to_string().as_str());
        headers.insert("Nats-Expected-Last-Sequence", stream_last.to_string().as_str());
        match publish(
            &store.inner.context,
            subject.clone(),
            headers,
            payload.clone(),
            "save a snapshot",
        )
        .await?
        {
            Published::Acked(_) => return Ok(()),
            Published::WrongLastSequence if contention.lost().await => continue,
            Published::WrongLastSequence => {
                return Err(contended("save a snapshot", "other streams' snapshots", &contention).into())
            }
        }
    }
}

/// [`SnapshotStore::load_snapshot`](es_core::SnapshotStore::load_snapshot).
pub(crate) async fn load(store: &NatsStore, stream: &StreamId) -> StoreResult<Option<Snapshot>> {
    let subject = store.snapshot_subject(stream);
    match last_on(&store.inner.snapshots, &subject, "read a snapshot").await? {
        None => Ok(None),
        Some(message) => Ok(Some(decode(stream.clone(), &message)?)),
    }
}

fn decode(stream: StreamId, message: &StreamMessage) -> Result<Snapshot, NatsError> {
    let small = |name: &str| {
        number_header(message, name).and_then(|value| {
            u32::try_from(value).map_err(|_| NatsError::Corrupt(format!("snapshot header {name} is {value}")))
        })
    };
    let taken_at = message
        .headers
        .get(TAKEN_AT_HEADER)
        .and_then(|value| DateTime::parse_from_rfc3339(value.as_str()).ok())
        .map(|at| at.with_timezone(&Utc))
        .ok_or_else(|| NatsError::Corrupt(format!("the snapshot of {stream} has no time")))?;
    Ok(Snapshot {
        version: number_header(message, VERSION_HEADER)?,
        revision: small(REVISION_HEADER)?,
        schema_version: small(SCHEMA_HEADER)?,
        state: message.payload.to_vec(),
        taken_at,
        stream,
    })
}

/// The streams named by the subjects of `js` that match `filter`, each with its subject.
async fn subjects(js: &Stream, filter: &str) -> Result<Vec<(StreamId, String)>, NatsError> {
    let subjects: Vec<(String, usize)> = js
        .info_with_subjects(filter)
        .await
        .map_err(|error| NatsError::request("list subjects", error, true))?
        .try_collect()
        .await
        .map_err(|error| NatsError::request("list subjects", error, true))?;
    Ok(subjects
        .into_iter()
        .filter_map(|(subject, _)| Some((stream_of_subject(&subject)?, subject)))
        .collect())
}

/// Lists streams and snapshots from the subjects JetStream keeps per stream (its per-subject
/// state: no event is read), then reads the last message of each stream of the page.
#[async_trait]
impl StreamCatalog for NatsStore {
    async fn list_streams(&self, query: &StreamQuery) -> StoreResult<Vec<StreamSummary>> {
        let prefix = &self.inner.options.prefix;
        let mut found = Vec::new();
        for number in 0..self.partition_count() {
            let filter = match &query.aggregate_type {
                Some(kind) => format!("{prefix}.e.{number}.{}.*", token(kind)),
                None => format!("{prefix}.e.{number}.>"),
            };
            let js = partition(self, number)?;
            for (stream, subject) in subjects(js, &filter).await? {
                if query.matches(&stream) {
                    found.push((stream, subject, number));
                }
            }
        }
        found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        found.truncate(query.limit);
        let mut summaries = Vec::with_capacity(found.len());
        for (stream, subject, number) in found {
            let js = partition(self, number)?;
            if let Some(last) = last_on(js, &subject, "read a stream's last batch").await? {
                summaries.push(StreamSummary {
                    version: number_header(&last, VERSION_HEADER)?,
                    last_recorded_at: recorded_at(&last),
                    stream,
                });
            }
        }
        Ok(summaries)
    }

    async fn list_snapshots(&self, after: Option<&StreamId>, limit: usize) -> StoreResult<Vec<Snapshot>> {
        let filter = self.snapshot_filter();
        let mut found = subjects(&self.inner.snapshots, &filter).await?;
        found.retain(|(stream, _)| after.is_none_or(|after| stream > after));
        found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        found.truncate(limit);
        let mut snapshots = Vec::with_capacity(found.len());
        for (stream, subject) in found {
            if let Some(message) = last_on(&self.inner.snapshots, &subject, "read a snapshot").await? {
                snapshots.push(decode(stream, &message)?);
            }
        }
        Ok(snapshots)
    }
}
