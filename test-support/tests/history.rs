//! The history checker on the in-memory store: a history that holds is clean, and each kind of
//! broken promise is found and counted.

use es_core::conformance::numbered;
use es_core::{EventStore, ExpectedVersion, InMemoryStore, NewEvent, StreamId};
use es_test_support::history::{Batch, History, Outcome};

async fn append(store: &InMemoryStore, history: &History, stream: &StreamId, expected: u64, events: Vec<NewEvent>) {
    let batch = Batch::of(stream, &events);
    let result = store.append(stream, ExpectedVersion::Exact(expected), events).await;
    history.record(&batch, Outcome::of_append(&result));
}

#[tokio::test]
async fn a_history_that_holds_is_clean() {
    let (store, history) = (InMemoryStore::new(), History::new());
    let (a, b) = (StreamId::new("case", "a"), StreamId::new("case", "b"));
    append(&store, &history, &a, 0, numbered(3)).await;
    append(&store, &history, &b, 0, numbered(1)).await;
    append(&store, &history, &a, 0, numbered(2)).await; // a conflict
    let retried = numbered(2);
    append(&store, &history, &a, 3, retried.clone()).await;
    append(&store, &history, &a, 3, retried).await; // sent again: the original outcome
                                                    // An answer lost after the commit, and one lost before it.
    let stored = numbered(1);
    store
        .append(&b, ExpectedVersion::Exact(1), stored.clone())
        .await
        .expect("append");
    history.record(&Batch::of(&b, &stored), Outcome::Unknown("cut".into()));
    history.record(&Batch::of(&b, &numbered(2)), Outcome::Unknown("cut".into()));

    let report = history.check(&store).await.expect("check");
    report.assert_clean();
    assert_eq!((report.appends, report.batches, report.events), (7, 6, 11));
    assert_eq!((report.acknowledged, report.stored, report.conflicts), (6, 7, 1));
    assert_eq!((report.unknown_stored, report.unknown_not_stored), (1, 1));
}

#[tokio::test]
async fn every_broken_promise_is_found() {
    let (store, history) = (InMemoryStore::new(), History::new());
    let stream = StreamId::new("case", "a");
    // Acknowledged, never stored: lost.
    let phantom_ack = numbered(2);
    history.record(
        &Batch::of(&stream, &phantom_ack),
        Outcome::Ok {
            first_version: 1,
            positions: vec![1, 2],
        },
    );
    // Refused, yet stored.
    let refused = numbered(1);
    store
        .append(&stream, ExpectedVersion::NoStream, refused.clone())
        .await
        .expect("append");
    history.record(&Batch::of(&stream, &refused), Outcome::Conflict);
    // Half a batch stored.
    let half = numbered(2);
    store
        .append(&stream, ExpectedVersion::Exact(1), half[..1].to_vec())
        .await
        .expect("append");
    history.record(&Batch::of(&stream, &half), Outcome::Unknown("cut".into()));
    // Stored, never attempted.
    store
        .append(&StreamId::new("case", "b"), ExpectedVersion::NoStream, numbered(1))
        .await
        .expect("append");
    store
        .append(&stream, ExpectedVersion::Exact(2), numbered(1))
        .await
        .expect("append");
    let mut report = history.check(&store).await.expect("check");
    report.compare_model("tally", &vec![1, 2], &vec![1, 3]);

    assert!(!report.is_clean());
    assert_eq!(report.lost, 2, "{report}");
    assert_eq!(report.failed_stored, 1, "{report}");
    assert_eq!(report.partial_batches, 1, "{report}");
    assert_eq!(report.phantom, 2, "{report}");
    assert_eq!(report.models_differing, 1, "{report}");
    let panicked = std::panic::catch_unwind(|| report.assert_clean());
    assert!(panicked.is_err(), "assert_clean panics on violations");
}

/// A store whose first `read_all` lets an append in flight commit, as a server does with the
/// last append of a writer process killed a moment before the check.
struct LateCommit {
    inner: InMemoryStore,
    in_flight: std::sync::Mutex<Option<(StreamId, Vec<NewEvent>)>>,
}

#[es_core::async_trait]
impl EventStore for LateCommit {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> es_core::StoreResult<es_core::AppendOutcome> {
        self.inner.append(stream, expected, events).await
    }

    fn read_stream<'a>(
        &'a self,
        stream: &'a StreamId,
        slice: es_core::StreamSlice,
    ) -> futures_util::stream::BoxStream<'a, es_core::StoreResult<es_core::RecordedEvent>> {
        self.inner.read_stream(stream, slice)
    }

    async fn read_event(&self, event_id: uuid::Uuid) -> es_core::StoreResult<Option<es_core::RecordedEvent>> {
        self.inner.read_event(event_id).await
    }

    async fn stream_version(&self, stream: &StreamId) -> es_core::StoreResult<u64> {
        self.inner.stream_version(stream).await
    }
}

#[es_core::async_trait]
impl es_core::GlobalLog for LateCommit {
    async fn read_all(&self, after: u64, limit: usize) -> es_core::StoreResult<Vec<es_core::RecordedEvent>> {
        let landing = self.in_flight.lock().expect("lock").take();
        if let Some((stream, events)) = landing {
            self.inner.append(&stream, ExpectedVersion::Any, events).await?;
        }
        self.inner.read_all(after, limit).await
    }
}

#[tokio::test]
async fn an_append_that_commits_while_the_checker_reads_is_waited_for() {
    let store = LateCommit {
        inner: InMemoryStore::new(),
        in_flight: std::sync::Mutex::default(),
    };
    let history = History::new();
    let stream = StreamId::new("case", "a");
    append(&store.inner, &history, &stream, 0, numbered(2)).await;
    let late = numbered(3);
    history.record(&Batch::of(&stream, &late), Outcome::Unknown("killed".into()));
    *store.in_flight.lock().expect("lock") = Some((stream, late));

    let report = history.check(&store).await.expect("check");
    report.assert_clean();
    assert_eq!((report.stored, report.unknown_stored), (5, 1));
}
