//! The store that seals personal data on the way in and opens it on the way out.

mod sealing;

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures_util::stream;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::Value;
use uuid::Uuid;

use super::error::PiiError;
use super::keys::{KeyStore, SubjectKey};
use super::seal::{self, Tampered};
use super::{SubjectForgotten, FORGOTTEN_SUBJECTS};
use crate::event::EventType;
use crate::lifecycle::StreamClosed;
use crate::metadata::Metadata;
use crate::registry::EventRegistry;
use crate::store::{
    AppendOutcome, EventStore, EventStream, ExpectedVersion, GlobalLog, Limits, LogFilter, LogPage, NewEvent,
    RecordedEvent, ReplayFn, Snapshot, SnapshotStore, StoreError, StoreResult, StreamCatalog, StreamId, StreamQuery,
    StreamSlice, StreamSummary, Tail,
};

/// An event store that seals the `#[pii]` fields of the events it writes, and the snapshots of
/// streams that hold personal data, and opens them when read: see the [module](super).
///
/// It wraps any store (`S`) and passes everything else through; the events it knows come from
/// the [`EventRegistry`] it is given, so register every aggregate whose events have `#[pii]`
/// fields. Reads of aggregate types without personal data go straight to the wrapped store.
/// Clones share the store, the keys and the registry.
#[derive(Debug, Clone)]
pub struct PiiStore<S, K> {
    inner: S,
    keys: K,
    registry: Arc<EventRegistry>,
    /// The aggregate types that have an event with `#[pii]` fields.
    personal: Arc<BTreeSet<&'static str>>,
    /// The (subject, stream) pairs this process has noted in the key store already: noting is
    /// idempotent, so this only saves the round trip of noting them on every append.
    noted: Arc<Mutex<HashSet<(String, StreamId)>>>,
}

impl<S, K: KeyStore> PiiStore<S, K> {
    /// Wraps `inner`, sealing with keys from `keys` the events `registry` says have personal
    /// data.
    pub fn new(inner: S, keys: K, registry: EventRegistry) -> Self {
        let personal = registry
            .events()
            .filter(|registered| !registered.event.pii_fields.is_empty())
            .map(|registered| registered.aggregate_type)
            .collect();
        Self {
            inner,
            keys,
            registry: Arc::new(registry),
            personal: Arc::new(personal),
            noted: Arc::default(),
        }
    }

    /// The same sealing (registry and personal aggregate types) over another store and key
    /// store: a tenant's, say.
    pub(super) fn sealing<S2, K2: KeyStore>(&self, inner: S2, keys: K2) -> PiiStore<S2, K2> {
        PiiStore {
            inner,
            keys,
            registry: Arc::clone(&self.registry),
            personal: Arc::clone(&self.personal),
            noted: Arc::default(),
        }
    }

    /// The wrapped store: what is stored, sealed. For tools and tests.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The key store.
    pub fn keys(&self) -> &K {
        &self.keys
    }

    /// The `#[pii]` fields and subject field of event `event_name` of `stream`'s aggregate type,
    /// if it has personal data.
    fn personal_fields(
        &self,
        stream: &StreamId,
        event_name: &str,
    ) -> Option<(&'static [&'static str], Option<&'static str>)> {
        if !self.personal.contains(stream.aggregate_type.as_str()) {
            return None;
        }
        let registered = self.registry.find(&stream.aggregate_type, event_name)?;
        let fields = registered.event.pii_fields;
        (!fields.is_empty()).then_some((fields, registered.event.pii_subject))
    }

    /// Opens the sealed fields of `events` in place: with their subject's key, or as forgotten
    /// when it is gone. One key lookup for the whole slice.
    async fn open_events(&self, events: &mut [RecordedEvent]) -> StoreResult<()> {
        let mut opened: Vec<(usize, &'static [&'static str], Value)> = Vec::new();
        let mut subjects: BTreeSet<String> = BTreeSet::new();
        for (index, event) in events.iter().enumerate() {
            let Some((fields, _)) = self.personal_fields(&event.stream, &event.event_name) else {
                continue;
            };
            let Ok(payload) = serde_json::from_slice::<Value>(&event.payload) else {
                // Not JSON: left as it is, for the decoder to report.
                continue;
            };
            subjects.extend(
                fields
                    .iter()
                    .filter_map(|field| payload.get(*field).and_then(seal::sealed_subject))
                    .map(str::to_owned),
            );
            opened.push((index, fields, payload));
        }
        if opened.is_empty() {
            return Ok(());
        }
        let wanted: Vec<&str> = subjects.iter().map(String::as_str).collect();
        let keys = self.keys.keys(&wanted).await?;
        for (index, fields, mut payload) in opened {
            let event = &mut events[index];
            for field in fields {
                let Some(value) = payload.get_mut(*field) else {
                    continue;
                };
                let Some(subject) = seal::sealed_subject(value) else {
                    continue;
                };
                *value = match keys.get(subject) {
                    Some(key) => seal::open(key, &seal::field_context(event.event_id, field), value).map_err(
                        |Tampered(reason)| StoreError::Corrupt {
                            stream: event.stream.clone(),
                            version: event.version,
                            reason: format!("personal field `{field}`: {reason}"),
                        },
                    )?,
                    None => seal::forgotten(),
                };
            }
            event.payload = payload.to_string().into_bytes();
        }
        Ok(())
    }
}

impl<S: EventStore, K: KeyStore> PiiStore<S, K> {
    /// Forgets data subject `subject` (`"<aggregate type>/<aggregate id>"` for a stream, else
    /// the subject field's value): destroys its key, so that every value sealed for it reads as
    /// forgotten from now on, and appends a [`SubjectForgotten`] event to the stream
    /// ([`FORGOTTEN_SUBJECTS`], `subject`) for projections. Whether the subject had a key.
    ///
    /// Forgetting again does no harm: the key stays gone and another [`SubjectForgotten`] event
    /// is appended (projections purge again, finding nothing). A subject never seen gets the
    /// event too, returns `false`, and its personal data is refused from then on. The event
    /// is checked against the store's limits before the key is destroyed; when the append
    /// fails after that (an outage), forgetting again appends it.
    pub async fn forget(&self, subject: &str) -> StoreResult<bool> {
        let forgotten = SubjectForgotten {
            subject: subject.to_owned(),
        };
        let payload = serde_json::to_vec(&forgotten).map_err(|error| StoreError::Backend(Box::new(error)))?;
        let event = NewEvent {
            event_id: Uuid::now_v7(),
            event_name: SubjectForgotten::NAME.to_owned(),
            schema_version: SubjectForgotten::VERSION,
            payload,
            metadata: Metadata::new(),
        };
        let record = StreamId::new(FORGOTTEN_SUBJECTS, subject);
        let events = vec![event];
        // Refused before the key is destroyed: a key gone without its event would leave
        // projections never told.
        self.inner.limits().check_append(&record, &events)?;
        let had_key = self.keys.forget(subject).await?;
        self.inner.append(&record, ExpectedVersion::Any, events).await?;
        Ok(had_key)
    }
}

/// A store that can forget a data subject: what a tool (es-cli's `forget`) needs of a
/// [`PiiStore`] without knowing its type parameters.
#[async_trait]
pub trait ForgetSubjects: Send + Sync {
    /// Forgets `subject` for good: see [`PiiStore::forget`]. Whether it had a key.
    async fn forget_subject(&self, subject: &str) -> StoreResult<bool>;
}

#[async_trait]
impl<S: EventStore, K: KeyStore> ForgetSubjects for PiiStore<S, K> {
    async fn forget_subject(&self, subject: &str) -> StoreResult<bool> {
        self.forget(subject).await
    }
}

impl<S: EventStore, K: KeyStore> PiiStore<S, K> {
    /// `events` with their personal data opened a chunk at a time: one key lookup per chunk,
    /// and a long stream is never held in memory whole.
    pub(super) fn opened<'a>(&'a self, events: EventStream<'a>) -> EventStream<'a> {
        events
            .try_chunks(256)
            .map_err(|error| error.1)
            .and_then(move |mut chunk| async move {
                self.open_events(&mut chunk).await?;
                Ok(stream::iter(chunk.into_iter().map(Ok)))
            })
            .try_flatten()
            .boxed()
    }
}

/// The subject of a stream's own personal data.
fn stream_subject(stream: &StreamId) -> String {
    format!("{}/{}", stream.aggregate_type, stream.aggregate_id)
}

#[async_trait]
impl<S: EventStore, K: KeyStore> EventStore for PiiStore<S, K> {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        mut events: Vec<NewEvent>,
    ) -> StoreResult<AppendOutcome> {
        self.seal_batch(stream, &mut events, self.inner.limits()).await?;
        self.inner.append(stream, expected, events).await
    }

    fn limits(&self) -> Limits {
        self.inner.limits()
    }

    fn read_stream<'a>(&'a self, stream: &'a StreamId, slice: StreamSlice) -> EventStream<'a> {
        if !self.personal.contains(stream.aggregate_type.as_str()) {
            return self.inner.read_stream(stream, slice);
        }
        self.opened(self.inner.read_stream(stream, slice))
    }

    async fn read_event(&self, event_id: Uuid) -> StoreResult<Option<RecordedEvent>> {
        let Some(event) = self.inner.read_event(event_id).await? else {
            return Ok(None);
        };
        let mut events = [event];
        self.open_events(&mut events).await?;
        let [event] = events;
        Ok(Some(event))
    }

    async fn stream_version(&self, stream: &StreamId) -> StoreResult<u64> {
        self.inner.stream_version(stream).await
    }

    async fn stream_closure(&self, stream: &StreamId) -> StoreResult<Option<StreamClosed>> {
        self.inner.stream_closure(stream).await
    }

    async fn replay_stream(&self, stream: &StreamId, slice: StreamSlice, apply: &mut ReplayFn<'_>) -> StoreResult<()> {
        if !self.personal.contains(stream.aggregate_type.as_str()) {
            return self.inner.replay_stream(stream, slice, apply).await;
        }
        crate::store::lend_each(self.read_stream(stream, slice), apply).await
    }

    async fn replay_if_open(&self, stream: &StreamId, slice: StreamSlice, apply: &mut ReplayFn<'_>) -> StoreResult<()> {
        if !self.personal.contains(stream.aggregate_type.as_str()) {
            return self.inner.replay_if_open(stream, slice, apply).await;
        }
        // Replay first, then ask: see the trait's default.
        self.replay_stream(stream, slice, apply).await?;
        crate::store::refuse_closed(self.inner.stream_closure(stream).await?)
    }
}

#[async_trait]
impl<S: GlobalLog, K: KeyStore> GlobalLog for PiiStore<S, K> {
    async fn read_all(&self, after: u64, limit: usize) -> StoreResult<Vec<RecordedEvent>> {
        let mut events = self.inner.read_all(after, limit).await?;
        self.open_events(&mut events).await?;
        Ok(events)
    }

    async fn read_filtered(&self, after: u64, limit: usize, filter: &LogFilter) -> StoreResult<LogPage> {
        let mut page = self.inner.read_filtered(after, limit, filter).await?;
        self.open_events(&mut page.events).await?;
        Ok(page)
    }

    async fn tail(&self, after: u64) -> StoreResult<Tail> {
        self.inner.tail(after).await
    }

    async fn unsettled(&self, after: u64) -> StoreResult<u64> {
        self.inner.unsettled(after).await
    }

    async fn held_back_by(&self) -> StoreResult<Option<String>> {
        self.inner.held_back_by().await
    }
}

#[async_trait]
impl<S: SnapshotStore, K: KeyStore> SnapshotStore for PiiStore<S, K> {
    /// A snapshot of a stream holding personal data is sealed whole, with a key derived from
    /// the keys of every subject whose data the stream holds; when one of them is forgotten
    /// already, it is not saved at all.
    async fn save_snapshot(&self, mut snapshot: Snapshot) -> StoreResult<()> {
        if self.personal.contains(snapshot.stream.aggregate_type.as_str()) {
            let subjects = self.keys.subjects_of(&snapshot.stream).await?;
            if !subjects.is_empty() {
                let Some(key) = self.snapshot_key(&subjects).await? else {
                    return Ok(());
                };
                let context = snapshot.stream.to_string();
                snapshot.state = seal::seal_state(&key, &subjects, context.as_bytes(), &snapshot.state).map_err(
                    |seal::TooLong| PiiError::TooLong {
                        stream: snapshot.stream.clone(),
                    },
                )?;
            }
        }
        self.inner.save_snapshot(snapshot).await
    }

    /// A sealed snapshot opens only while every subject it was sealed for has a key; once one
    /// was forgotten, there is no snapshot (loads replay the events, whose fields read as
    /// forgotten).
    async fn load_snapshot(&self, stream: &StreamId) -> StoreResult<Option<Snapshot>> {
        let Some(snapshot) = self.inner.load_snapshot(stream).await? else {
            return Ok(None);
        };
        self.open_snapshot(snapshot).await
    }
}

impl<S, K: KeyStore> PiiStore<S, K> {
    /// The key of a snapshot holding data of `subjects`, derived from all of theirs; `None`
    /// when one of them was forgotten.
    async fn snapshot_key(&self, subjects: &[String]) -> StoreResult<Option<SubjectKey>> {
        let wanted: Vec<&str> = subjects.iter().map(String::as_str).collect();
        let keys = self.keys.keys(&wanted).await?;
        let keys: Option<Vec<&SubjectKey>> = subjects.iter().map(|subject| keys.get(subject)).collect();
        Ok(keys.map(|keys| seal::snapshot_key(&keys)))
    }

    /// `snapshot` with its state opened, if it was sealed; `None` when one of its subjects was
    /// forgotten.
    async fn open_snapshot(&self, mut snapshot: Snapshot) -> StoreResult<Option<Snapshot>> {
        let Some(subjects) = seal::sealed_state_subjects(&snapshot.state) else {
            return Ok(Some(snapshot));
        };
        let Some(key) = self.snapshot_key(&subjects).await? else {
            return Ok(None);
        };
        let context = snapshot.stream.to_string();
        snapshot.state = seal::open_state(&key, context.as_bytes(), &snapshot.state).map_err(|Tampered(reason)| {
            StoreError::Corrupt {
                stream: snapshot.stream.clone(),
                version: snapshot.version,
                reason: format!("sealed snapshot: {reason}"),
            }
        })?;
        Ok(Some(snapshot))
    }
}

#[async_trait]
impl<S: StreamCatalog, K: KeyStore> StreamCatalog for PiiStore<S, K> {
    async fn list_streams(&self, query: &StreamQuery) -> StoreResult<Vec<StreamSummary>> {
        self.inner.list_streams(query).await
    }

    /// The snapshots, opened; one sealed for a subject forgotten since is listed as stored
    /// (sealed), as loads would ignore it.
    async fn list_snapshots(&self, after: Option<&StreamId>, limit: usize) -> StoreResult<Vec<Snapshot>> {
        let mut listed = Vec::new();
        for snapshot in self.inner.list_snapshots(after, limit).await? {
            let sealed = snapshot.clone();
            listed.push(self.open_snapshot(snapshot).await?.unwrap_or(sealed));
        }
        Ok(listed)
    }
}
