//! The stream catalog beyond the conformance checks: the index walk lists what the in-memory
//! reference lists, for every combination of filters and pages, on ids where byte order,
//! `LIKE` patterns and prefixes that are types' ends could trip it up.

use es_core::{
    EventStore, ExpectedVersion, InMemoryStore, Snapshot, SnapshotStore, StreamCatalog, StreamId, StreamQuery,
};

use crate::support::{fresh, numbered};

/// Streams of several types, with ids that sort differently by byte and by character, that a
/// `LIKE` pattern would match wrongly, and that are prefixes of each other.
fn streams() -> Vec<(StreamId, usize)> {
    let ids = [
        "",
        "a",
        "a%",
        "a%b",
        "a_",
        "a_b",
        "ab",
        "abc",
        "aB",
        "aé",
        "a\u{ffff}",
        "a\u{10000}",
        "b",
        "Z",
    ];
    let mut streams = Vec::new();
    for (t, kind) in ["", "order", "order2", "ticket"].iter().enumerate() {
        for (i, id) in ids.iter().enumerate() {
            // Not every type holds every id, and streams have different lengths.
            if (t + i) % 3 != 0 {
                streams.push((StreamId::new(*kind, *id), 1 + (t * 7 + i) % 5));
            }
        }
    }
    streams
}

fn summaries(listed: &[es_core::StreamSummary]) -> Vec<(StreamId, u64)> {
    listed
        .iter()
        .map(|summary| (summary.stream.clone(), summary.version))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_agrees_with_the_reference_for_every_filter_and_page() {
    let db = fresh().await;
    let reference = InMemoryStore::new();
    for (stream, events) in streams() {
        let batch = numbered(events);
        db.store
            .append(&stream, ExpectedVersion::NoStream, batch.clone())
            .await
            .expect("append");
        reference
            .append(&stream, ExpectedVersion::NoStream, batch)
            .await
            .expect("append to the reference");
    }
    let kinds = [None, Some(""), Some("order"), Some("order2"), Some("orde"), Some("zzz")];
    let prefixes = [
        None,
        Some(""),
        Some("a"),
        Some("a%"),
        Some("a_"),
        Some("ab"),
        Some("é"),
        Some("q"),
    ];
    let afters = [
        None,
        Some(StreamId::new("", "")),
        Some(StreamId::new("order", "a%")),
        Some(StreamId::new("order", "zz")),
        Some(StreamId::new("order1", "a")),
        Some(StreamId::new("order2", "")),
    ];
    let mut checked = 0;
    for kind in kinds {
        for prefix in prefixes {
            for after in &afters {
                for limit in [0, 1, 2, 5, 100] {
                    let query = StreamQuery {
                        aggregate_type: kind.map(str::to_owned),
                        id_prefix: prefix.map(str::to_owned),
                        after: after.clone(),
                        limit,
                    };
                    let listed = db.store.list_streams(&query).await.expect("list");
                    let expected = reference.list_streams(&query).await.expect("reference");
                    assert_eq!(summaries(&listed), summaries(&expected), "{query:?}");
                    checked += usize::from(!expected.is_empty());
                }
            }
        }
    }
    assert!(checked > 100, "most queries list something: {checked}");

    // Paging through everything, a page at a time, gets every stream once, in order.
    let mut paged = Vec::new();
    let mut query = StreamQuery {
        limit: 3,
        ..StreamQuery::default()
    };
    loop {
        let page = db.store.list_streams(&query).await.expect("page");
        let Some(last) = page.last() else { break };
        query.after = Some(last.stream.clone());
        paged.extend(summaries(&page));
    }
    let mut all: Vec<(StreamId, u64)> = streams()
        .into_iter()
        .map(|(stream, events)| (stream, events as u64))
        .collect();
    all.sort();
    assert_eq!(paged, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streams_last_activity_is_its_last_events_time() {
    let db = fresh().await;
    let stream = StreamId::new("clock", "c-1");
    db.store
        .append(&stream, ExpectedVersion::NoStream, numbered(2))
        .await
        .expect("append");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let last = db
        .store
        .append(&stream, ExpectedVersion::Exact(2), numbered(1))
        .await
        .expect("append");
    let query = StreamQuery {
        aggregate_type: Some("clock".into()),
        ..StreamQuery::default()
    };
    let listed = db.store.list_streams(&query).await.expect("list");
    let events = crate::support::read(&db.store, &stream).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].version, last.new_version);
    assert_eq!(listed[0].last_recorded_at, events[2].recorded_at);
    assert!(listed[0].last_recorded_at > events[0].recorded_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_listed_in_key_order_whole_and_in_pages() {
    let db = fresh().await;
    let mut streams = Vec::new();
    for kind in ["b", "a", ""] {
        for id in ["2", "10", "1", "é"] {
            let stream = StreamId::new(kind, id);
            let snapshot = Snapshot {
                stream: stream.clone(),
                version: 3,
                revision: 2,
                schema_version: 1,
                state: format!(r#"{{"kind":"{kind}","id":"{id}"}}"#).into_bytes(),
                taken_at: chrono::Utc::now(),
            };
            db.store.save_snapshot(snapshot).await.expect("save");
            streams.push(stream);
        }
    }
    streams.sort();
    let everything = db.store.list_snapshots(None, 100).await.expect("list");
    let listed: Vec<StreamId> = everything.iter().map(|snapshot| snapshot.stream.clone()).collect();
    assert_eq!(listed, streams);
    for snapshot in &everything {
        let loaded = db.store.load_snapshot(&snapshot.stream).await.expect("load");
        assert_eq!(loaded.as_ref(), Some(snapshot), "listed as loaded");
    }

    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = db.store.list_snapshots(after.as_ref(), 5).await.expect("page");
        let Some(last) = page.last() else { break };
        after = Some(last.stream.clone());
        paged.extend(page.into_iter().map(|snapshot| snapshot.stream));
    }
    assert_eq!(paged, streams);
    assert!(db.store.list_snapshots(None, 0).await.expect("empty").is_empty());
    assert!(db
        .store
        .list_snapshots(Some(&StreamId::new("b", "é")), 10)
        .await
        .expect("past the end")
        .is_empty());
}
