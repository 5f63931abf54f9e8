//! The event browser's pages do bounded work: on a store of 2,000 streams and 6,000 events,
//! each request reads at most a page's worth of rows, also when the global log's positions are
//! sparse (as in PostgreSQL), so the pages stay fast however large the store grows.

mod pages;
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use es_cli::Cli;
use es_core::{
    async_trait, AppendOutcome, EventStore, ExpectedVersion, GlobalLog, InMemoryStore, Metadata, NewEvent,
    RecordedEvent, Snapshot, SnapshotStore, StoreError, StreamCatalog, StreamId, StreamQuery, StreamSlice,
    StreamSummary, Tail,
};
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use pages::get;
use support::Ticket;

/// A store that counts the rows it hands out, and can spread the global log's positions apart
/// (position × `spread`) the way PostgreSQL's are when transactions roll back.
#[derive(Clone)]
struct Counting {
    inner: InMemoryStore,
    rows: Arc<AtomicU64>,
    spread: u64,
}

impl Counting {
    fn taken(&self) -> u64 {
        self.rows.swap(0, Ordering::SeqCst)
    }

    fn spread(&self, mut event: RecordedEvent) -> RecordedEvent {
        event.position *= self.spread;
        event
    }
}

#[async_trait]
impl EventStore for Counting {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        self.inner.append(stream, expected, events).await
    }

    fn read_stream<'a>(
        &'a self,
        stream: &'a StreamId,
        slice: StreamSlice,
    ) -> BoxStream<'a, Result<RecordedEvent, StoreError>> {
        self.inner
            .read_stream(stream, slice)
            .map_ok(move |event| {
                self.rows.fetch_add(1, Ordering::SeqCst);
                self.spread(event)
            })
            .boxed()
    }

    async fn read_event(&self, event_id: uuid::Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        self.inner.read_event(event_id).await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64, StoreError> {
        self.inner.stream_version(stream).await
    }
}

#[async_trait]
impl GlobalLog for Counting {
    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = self.inner.read_all(after / self.spread, limit).await?;
        self.rows.fetch_add(events.len() as u64, Ordering::SeqCst);
        Ok(events.into_iter().map(|event| self.spread(event)).collect())
    }

    async fn tail(&self, after: u64) -> Result<Tail, StoreError> {
        let mut tail = self.inner.tail(after / self.spread).await?;
        tail.head_position = (tail.head_position * self.spread).max(after);
        Ok(tail)
    }
}

#[async_trait]
impl SnapshotStore for Counting {
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.inner.save_snapshot(snapshot).await
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        self.inner.load_snapshot(stream).await
    }
}

#[async_trait]
impl StreamCatalog for Counting {
    async fn list_streams(&self, query: &StreamQuery) -> Result<Vec<StreamSummary>, StoreError> {
        let streams = self.inner.list_streams(query).await?;
        self.rows.fetch_add(streams.len() as u64, Ordering::SeqCst);
        Ok(streams)
    }

    async fn list_snapshots(&self, after: Option<&StreamId>, limit: usize) -> Result<Vec<Snapshot>, StoreError> {
        self.inner.list_snapshots(after, limit).await
    }
}

/// 2,000 one-event streams and one of 4,000 events: 6,000 events.
async fn large_store() -> InMemoryStore {
    let store = InMemoryStore::new();
    let event = |name: &str, payload: &str| NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_name: name.into(),
        schema_version: if name == "Opened" { 1 } else { 2 },
        payload: payload.as_bytes().to_vec(),
        metadata: Metadata::new(),
    };
    for index in 0..2000 {
        let stream = StreamId::new("ticket", format!("S-{index:05}"));
        let opened = event("Opened", r#"{"title":"small"}"#);
        store
            .append(&stream, ExpectedVersion::Any, vec![opened])
            .await
            .expect("append");
    }
    let big = StreamId::new("ticket", "BIG");
    for batch in 0..8 {
        let events = (0..500)
            .map(|index| event("Escalated", &format!(r#"{{"level":{}}}"#, batch * 500 + index)))
            .collect();
        store.append(&big, ExpectedVersion::Any, events).await.expect("append");
    }
    store
}

#[tokio::test]
async fn every_page_reads_a_bounded_number_of_rows() {
    let inner = large_store().await;
    for spread in [1, 10] {
        let store = Counting {
            inner: inner.clone(),
            rows: Arc::default(),
            spread,
        };
        let router = Cli::new(store.clone())
            .aggregate::<Ticket>()
            .expect("registered")
            .into_router();
        let bounded = [
            ("/", 50),
            ("/?after=ticket%2FS-01000", 50),
            ("/?id=S-019", 50),
            ("/streams/ticket/BIG", 50),
            ("/streams/ticket/BIG?from=3000", 50),
            // Folding version 10 reads its 10 events, 9 for the state before, 1 for the event.
            ("/streams/ticket/BIG/state?version=10", 20),
            // With positions 10 apart, the latest page widens its window: 50, 200 then 800
            // positions, that is 5 + 20 + 80 rows.
            ("/log", if spread == 1 { 50 } else { 105 }),
            // Before a position, each window's read may also return the events after it (up
            // to the window's size): 50 + 200 + 800 rows, still bounded by the windows alone.
            ("/log?before=5000", if spread == 1 { 50 } else { 1050 }),
            ("/log?after=3000", 50),
            ("/log.json?after=100", 500),
        ];
        store.taken();
        for (uri, most) in bounded {
            let page = get(&router, uri).await.body;
            let rows = store.taken();
            assert!(
                rows <= most,
                "{uri} (spread {spread}) read {rows} rows, more than {most}"
            );
            assert!(rows > 0, "{uri} read something");
            if uri.starts_with("/log?") || uri == "/log" {
                assert_eq!(
                    page.matches("<tr><td>").count(),
                    50,
                    "{uri} (spread {spread}) shows a full page"
                );
            }
        }
        let latest = get(&router, "/log").await.body;
        let head = 6000 * spread;
        assert!(
            latest.contains(&format!("<td>{head}</td>")),
            "the latest page ends at the head"
        );
        assert!(
            latest.contains(&format!("href=\"/log?before={}\"", head - 49 * spread)),
            "{latest}"
        );
    }
}
