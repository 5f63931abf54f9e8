//! Checks of the stream catalog: listing streams in order, filtered and paged, and snapshots.

use uuid::Uuid;

use super::{append_ok, numbered, whole_stream};
use crate::store::{
    EventStore, ExpectedVersion, Snapshot, SnapshotStore, StreamCatalog, StreamId, StreamQuery, StreamSummary,
};

/// Two aggregate types of their own (the first sorts before the second), so the check sees only
/// its streams whatever else the store holds. Ids and types use lowercase letters and digits
/// only: their order is the same in every collation.
fn kinds() -> (String, String) {
    let unique = Uuid::now_v7().simple().to_string();
    (format!("catalog{unique}a"), format!("catalog{unique}b"))
}

async fn list<S: StreamCatalog>(store: &S, query: StreamQuery) -> Vec<(String, String, u64)> {
    match store.list_streams(&query).await {
        Ok(streams) => streams
            .into_iter()
            .map(|summary| {
                (
                    summary.stream.aggregate_type,
                    summary.stream.aggregate_id,
                    summary.version,
                )
            })
            .collect(),
        Err(error) => panic!("listing {query:?} failed: {error}"),
    }
}

/// Streams are listed in (aggregate type, id) order with their versions, filtered by type and
/// id prefix, and paged with `after` and `limit`; the last activity is the last event's time.
pub async fn list_streams_filters_and_pages<S: EventStore + StreamCatalog>(store: &S) {
    let (first, second) = kinds();
    let streams = [
        (StreamId::new(&first, "b1"), 3),
        (StreamId::new(&first, "a1"), 2),
        (StreamId::new(&second, "a1"), 1),
        (StreamId::new(&first, "a2"), 1),
    ];
    for (stream, events) in &streams {
        append_ok(store, stream, ExpectedVersion::NoStream, numbered(*events)).await;
    }
    let of_first = |id_prefix: Option<&str>, after: Option<&str>, limit: usize| StreamQuery {
        aggregate_type: Some(first.clone()),
        id_prefix: id_prefix.map(str::to_owned),
        after: after.map(|id| StreamId::new(&first, id)),
        limit,
    };
    let row = |kind: &str, id: &str, version: u64| (kind.to_owned(), id.to_owned(), version);

    let all = list(store, of_first(None, None, 10)).await;
    assert_eq!(all, [row(&first, "a1", 2), row(&first, "a2", 1), row(&first, "b1", 3)]);
    let prefixed = list(store, of_first(Some("a"), None, 10)).await;
    assert_eq!(prefixed, [row(&first, "a1", 2), row(&first, "a2", 1)]);
    let page = list(store, of_first(None, None, 2)).await;
    assert_eq!(page, [row(&first, "a1", 2), row(&first, "a2", 1)]);
    let next = list(store, of_first(None, Some("a2"), 2)).await;
    assert_eq!(next, [row(&first, "b1", 3)]);
    assert!(list(store, of_first(Some("c"), None, 10)).await.is_empty());

    // Without a type filter, pages run on into the next type, the prefix still applying.
    let across = StreamQuery {
        after: Some(StreamId::new(&first, "a2")),
        limit: 2,
        ..StreamQuery::default()
    };
    assert_eq!(
        list(store, across.clone()).await,
        [row(&first, "b1", 3), row(&second, "a1", 1)]
    );
    let across_prefixed = StreamQuery {
        id_prefix: Some("a".into()),
        limit: 1,
        ..across
    };
    assert_eq!(list(store, across_prefixed).await, [row(&second, "a1", 1)]);

    let summaries: Vec<StreamSummary> = match store.list_streams(&of_first(Some("b"), None, 1)).await {
        Ok(summaries) => summaries,
        Err(error) => panic!("listing failed: {error}"),
    };
    let stored = whole_stream(store, &streams[0].0).await;
    assert_eq!(
        summaries[0].last_recorded_at, stored[2].recorded_at,
        "the last event's time"
    );
}

/// Every snapshot is listed, in stream order, in pages.
pub async fn list_snapshots_in_pages<S: SnapshotStore + StreamCatalog>(store: &S) {
    let (first, _) = kinds();
    for id in ["s2", "s1", "s3"] {
        let snapshot = Snapshot {
            stream: StreamId::new(&first, id),
            version: 7,
            revision: 1,
            schema_version: 1,
            state: format!(r#"{{"id":"{id}"}}"#).into_bytes(),
            taken_at: chrono::Utc::now(),
        };
        if let Err(error) = store.save_snapshot(snapshot).await {
            panic!("saving a snapshot failed: {error}");
        }
    }
    let first_page = snapshots_of(store, &first, Some(StreamId::new(&first, "")), 2).await;
    assert_eq!(
        first_page,
        [
            ("s1".to_owned(), serde_json::json!({ "id": "s1" })),
            ("s2".to_owned(), serde_json::json!({ "id": "s2" }))
        ]
    );
    let rest = snapshots_of(store, &first, Some(StreamId::new(&first, "s2")), 2).await;
    assert_eq!(rest.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["s3"]);
}

/// A page of snapshots, as (id, state) of the streams of aggregate type `kind`.
async fn snapshots_of<S: StreamCatalog>(
    store: &S,
    kind: &str,
    after: Option<StreamId>,
    limit: usize,
) -> Vec<(String, serde_json::Value)> {
    match store.list_snapshots(after.as_ref(), limit).await {
        Ok(snapshots) => snapshots
            .into_iter()
            .filter(|snapshot| snapshot.stream.aggregate_type == kind)
            // States are compared as JSON: a store may keep them in a normalized form (jsonb).
            .map(|snapshot| {
                let state = serde_json::from_slice(&snapshot.state).unwrap_or(serde_json::Value::Null);
                (snapshot.stream.aggregate_id, state)
            })
            .collect(),
        Err(error) => panic!("listing snapshots failed: {error}"),
    }
}
