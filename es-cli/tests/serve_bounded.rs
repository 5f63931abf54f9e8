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
            // The state after version 10 folds the 9 events before it and applies the 10th,
            // shown on the page too: 11 rows.
            ("/streams/ticket/BIG/state?version=10", 11),
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

/// Every page on a store of 1,000,000 events (10,000 streams of 10, one of 900,000): each
/// answers well within a second, but for the state of the long stream at a late version, which
/// folds its events. Ignored by default: building the store takes a while and
/// memory; run it with `cargo test -p es-cli --test serve_bounded -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "builds a store of a million events"]
async fn a_million_events_pages_answer_quickly() {
    let store = InMemoryStore::new();
    let event = |name: &str, payload: String| NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_name: name.into(),
        schema_version: if name == "Opened" { 1 } else { 2 },
        payload: payload.into_bytes(),
        metadata: Metadata::new().with_actor("load"),
    };
    let started = std::time::Instant::now();
    for index in 0..10_000 {
        let stream = StreamId::new("ticket", format!("S-{index:05}"));
        let mut events = vec![event("Opened", r#"{"title":"small"}"#.to_owned())];
        events.extend((1..10).map(|level| event("Escalated", format!(r#"{{"level":{level}}}"#))));
        store
            .append(&stream, ExpectedVersion::Any, events)
            .await
            .expect("append");
    }
    let big = StreamId::new("ticket", "BIG");
    for batch in 0..900 {
        let events = (0..1000)
            .map(|index| event("Escalated", format!(r#"{{"level":{}}}"#, batch * 1000 + index)))
            .collect();
        store.append(&big, ExpectedVersion::Any, events).await.expect("append");
    }
    let tail = store.tail(0).await.expect("tail");
    assert_eq!(tail.events, 1_000_000);
    eprintln!("built 1,000,000 events in {:.1} s", started.elapsed().as_secs_f64());
    let router = Cli::new(store).aggregate::<Ticket>().expect("registered").into_router();
    for uri in [
        "/",
        "/?after=ticket%2FS-05000",
        "/?type=ticket&id=S-099",
        "/streams/ticket/BIG",
        "/streams/ticket/BIG?from=899951",
        "/streams/ticket/BIG/state?version=1000",
        "/streams/ticket/S-09999/state",
        "/log",
        "/log?before=500000",
        "/log?after=999000",
        "/log.json?after=999500",
        "/projections",
    ] {
        let started = std::time::Instant::now();
        let page = get(&router, uri).await;
        let took = started.elapsed();
        eprintln!(
            "{uri}: {:.1} ms, {} bytes",
            took.as_secs_f64() * 1000.0,
            page.body.len()
        );
        assert!(took < std::time::Duration::from_secs(1), "{uri} took {took:?}");
    }
    // The one page whose work grows with its stream: the state after version N folds N events
    // (no snapshot here), so the latest state of a 900,000-event stream takes a while.
    let started = std::time::Instant::now();
    get(&router, "/streams/ticket/BIG/state").await;
    eprintln!(
        "/streams/ticket/BIG/state (folds 900,000 events): {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
}
