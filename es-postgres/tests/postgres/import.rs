//! Bulk import (`PostgresStore::import`): histories read back as they were, refused events named,
//! failed chunks rolled back whole, reruns that resume without duplicates or refuse a changed
//! source.

use std::collections::HashMap;
use std::convert::Infallible;

use chrono::DateTime;
use es_core::{EventStore, Limit, Limits, Metadata, StreamId};
use es_postgres::{
    ImportError, ImportOptions, ImportProgress, ImportReport, ImportedEvent, PostgresStore, SourceChange,
};
use futures_util::StreamExt;
use uuid::Uuid;

use crate::support::{fresh_stream, read_all_until, schema, stream_with};

/// A history of `count` events over `streams` streams, interleaved, with original timestamps
/// (microseconds, in the past), ids and metadata of every kind.
fn history(kind: &str, streams: usize, count: usize) -> Vec<ImportedEvent> {
    let ids: Vec<StreamId> = (0..streams).map(|_| fresh_stream(kind)).collect();
    (0..count)
        .map(|i| {
            let mut metadata = Metadata::new();
            if i % 3 == 0 {
                metadata = metadata
                    .with_correlation_id(Uuid::now_v7())
                    .with_actor(format!("user-{i}"));
            }
            if i % 5 == 0 {
                metadata = metadata
                    .with_command_id(Uuid::now_v7())
                    .with_causation_id(Uuid::now_v7());
            }
            if i % 7 == 0 {
                metadata.extra.insert("tenant".into(), format!("t{}", i % 4).into());
                metadata.extra.insert("seq".into(), i.into());
            }
            let micros = 1_500_000_000_000_000 + i64::try_from(i).expect("small") * 1_234_567;
            ImportedEvent {
                stream: ids[i % streams].clone(),
                event_id: Uuid::now_v7(),
                event_name: if i % 2 == 0 { "Opened" } else { "Noted" }.into(),
                schema_version: 1 + u32::try_from(i % 3).expect("small"),
                payload: format!(r#"{{"n": {i}, "text": "tab\there \\ \"quoted\"\nline"}}"#).into_bytes(),
                metadata,
                recorded_at: DateTime::from_timestamp_micros(micros).expect("in range"),
            }
        })
        .collect()
}

/// `events` as an infallible source.
fn source(events: &[ImportedEvent]) -> impl futures_util::Stream<Item = Result<ImportedEvent, Infallible>> + '_ {
    futures_util::stream::iter(events.iter().cloned().map(Ok))
}

/// Imports `events` as `name` in chunks of `chunk`, keeping each progress report.
async fn import(
    store: &PostgresStore,
    name: &str,
    chunk: usize,
    events: &[ImportedEvent],
) -> (Result<ImportReport, ImportError>, Vec<ImportProgress>) {
    let mut reports = Vec::new();
    let options = ImportOptions::new(name).with_chunk_size(chunk);
    let result = store
        .import(options, source(events), |progress| reports.push(progress.clone()))
        .await;
    (result, reports)
}

/// How many rows the events table holds, and how many distinct ids.
async fn stored(store: &PostgresStore) -> (i64, i64) {
    let sql = format!(
        "SELECT count(*), count(DISTINCT event_id) FROM \"{}\".events",
        store.schema()
    );
    sqlx::query_as(&sql).fetch_one(store.pool()).await.expect("count")
}

/// The resume record of import `name`: events done and whether it finished.
async fn record(store: &PostgresStore, name: &str) -> (i64, bool) {
    let sql = format!(
        "SELECT events_done, finished_at IS NOT NULL FROM \"{}\".imports WHERE name = $1",
        store.schema()
    );
    sqlx::query_as(&sql)
        .bind(name)
        .fetch_one(store.pool())
        .await
        .expect("the import's record")
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_history_reads_back_as_it_was_after_what_was_stored() {
    let schema = schema().await;
    let before = stream_with(&schema, "before", 2).await;
    let events = history("import", 300, 20_000);
    let (result, progress) = import(&schema, "history", 1_500, &events).await;
    let report = result.expect("import");
    assert_eq!(report.progress.events_imported, 20_000);
    assert_eq!((report.progress.events_skipped, report.progress.chunks), (0, 14));
    assert_eq!((report.events_total, report.already_finished), (20_000, false));
    let counts: Vec<u64> = progress.iter().map(|progress| progress.events_imported).collect();
    let expected: Vec<u64> = (1..=14).map(|chunk| (chunk * 1_500).min(20_000)).collect();
    assert_eq!(counts, expected, "one progress report per chunk");
    assert!(progress.iter().all(|progress| progress.events_per_second > 0.0));
    assert_eq!(record(&schema, "history").await, (20_000, true));

    let all = read_all_until(schema.store(), 20_002).await;
    assert_eq!(all.len(), 20_002);
    assert!(
        all[..2].iter().all(|event| event.stream == before),
        "stored events sort first"
    );
    let mut versions: HashMap<&StreamId, u64> = HashMap::new();
    for (original, stored) in events.iter().zip(&all[2..]) {
        assert_eq!(stored.event_id, original.event_id, "read_all in source order");
        assert_eq!(stored.stream, original.stream);
        assert_eq!(stored.recorded_at, original.recorded_at);
        assert_eq!(stored.metadata, original.metadata, "{}", original.event_id);
        assert_eq!(
            (&stored.event_name, stored.schema_version),
            (&original.event_name, original.schema_version)
        );
        assert_eq!(json(&stored.payload), json(&original.payload));
        let version = versions.entry(&original.stream).or_default();
        *version += 1;
        assert_eq!(stored.version, *version, "versions 1..n per stream, in source order");
    }
    assert!(all.windows(2).all(|pair| pair[0].position < pair[1].position));
    let stream = &events[0].stream;
    assert_eq!(schema.stream_version(stream).await.expect("version"), versions[stream]);
    assert_eq!(stored(&schema).await, (20_002, 20_002));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_payload_fails_its_chunk_alone_and_a_fixed_rerun_completes_without_duplicates() {
    let schema = schema().await;
    let good = history("bad-payload", 7, 50);
    let mut bad = good.clone();
    bad[25].payload = br#"{"amount": 12,"#.to_vec();
    let (result, progress) = import(&schema, "bad", 10, &bad).await;
    match result {
        Err(ImportError::Refused { event, message }) => {
            assert_eq!((event.index, event.event_id), (25, bad[25].event_id));
            assert_eq!(event.stream, bad[25].stream);
            assert!(message.contains("json"), "{message}");
        }
        other => panic!("expected Refused naming event 25, got {other:?}"),
    }
    assert_eq!(progress.len(), 2, "chunks 1 and 2 committed");
    assert_eq!(stored(&schema).await, (20, 20), "nothing of chunk 3");
    assert_eq!(record(&schema, "bad").await, (20, false));

    let (result, progress) = import(&schema, "bad", 10, &good).await;
    let report = result.expect("the rerun completes");
    assert_eq!(report.progress.events_skipped, 20);
    assert_eq!(report.progress.events_imported, 30);
    assert_eq!((report.progress.chunks, report.events_total), (3, 50));
    assert!(progress.iter().all(|progress| progress.events_skipped == 20));
    assert_eq!(stored(&schema).await, (50, 50), "no duplicates");
    let all = read_all_until(schema.store(), 50).await;
    let ids: Vec<Uuid> = all.iter().map(|event| event.event_id).collect();
    let expected: Vec<Uuid> = good.iter().map(|event| event.event_id).collect();
    assert_eq!(ids, expected, "the rerun continued every stream's versions");
    let stream = &good[0].stream;
    let versions: Vec<u64> = all.iter().filter(|e| &e.stream == stream).map(|e| e.version).collect();
    assert_eq!(versions, (1..=8).collect::<Vec<u64>>());

    let (result, progress) = import(&schema, "bad", 10, &good).await;
    let report = result.expect("a finished import runs again");
    assert!(report.already_finished);
    assert_eq!((report.progress.events_imported, report.events_total), (0, 50));
    assert!(progress.is_empty());
    assert_eq!(stored(&schema).await, (50, 50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_whose_source_replays_differently_is_refused() {
    let schema = schema().await;
    let events = history("replay", 4, 30);
    // The source fails at index 25: chunks 1 and 2 (20 events) are stored.
    let failing = futures_util::stream::iter(events.clone())
        .enumerate()
        .map(|(i, event)| match i {
            25 => Err(std::io::Error::other("the legacy database went away")),
            _ => Ok(event),
        });
    let options = ImportOptions::new("replay").with_chunk_size(10);
    match schema.import(options, failing, |_| {}).await {
        Err(ImportError::Source { index: 25, source }) => assert!(source.to_string().contains("went away")),
        other => panic!("expected the source's error at 25, got {other:?}"),
    }
    assert_eq!(stored(&schema).await, (20, 20));

    let mut swapped = events.clone();
    swapped.swap(3, 4);
    let mut moved = events.clone();
    moved.swap(19, 20);
    let cases = [(swapped, "order"), (moved, "last"), (events[..15].to_vec(), "shorter")];
    for (source, case) in cases {
        let (result, progress) = import(&schema, "replay", 10, &source).await;
        match (case, result) {
            (
                _,
                Err(ImportError::SourceChanged {
                    name,
                    events_done: 20,
                    change,
                }),
            ) => {
                assert_eq!(name, "replay");
                let expected = match case {
                    "order" => SourceChange::OrderDiffers,
                    "last" => SourceChange::LastEventMoved {
                        imported: events[19].event_id,
                        found: events[20].event_id,
                    },
                    _ => SourceChange::Shorter { events: 15 },
                };
                assert_eq!(change, expected, "{case}");
            }
            (_, other) => panic!("{case}: expected SourceChanged, got {other:?}"),
        }
        assert!(progress.is_empty());
        assert_eq!(stored(&schema).await, (20, 20), "{case}: nothing written");
    }
    let (result, _) = import(&schema, "replay", 10, &events).await;
    assert_eq!(result.expect("the same source resumes").progress.events_imported, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_over_the_limits_or_not_utf8_are_refused_before_anything_is_sent() {
    let schema = schema().await;
    let store = schema
        .store()
        .clone()
        .with_limits(Limits::DEFAULT.with_max_payload_bytes(100));
    let mut events = history("limits", 3, 30);
    events[17].payload = format!(r#"{{"text": "{}"}}"#, "x".repeat(200)).into_bytes();
    let (result, progress) = import(&store, "limits", 10, &events).await;
    match result {
        Err(ImportError::LimitExceeded {
            event,
            limit: Limit::PayloadBytes,
            actual,
            max: 100,
        }) => {
            let size = events[17].payload.len();
            assert_eq!((event.index, event.event_id, actual), (17, events[17].event_id, size));
        }
        other => panic!("expected LimitExceeded for event 17, got {other:?}"),
    }
    assert_eq!((progress.len(), stored(&store).await), (1, (10, 10)), "chunk 1 only");

    events[17].payload = vec![b'"', 0xff, b'"'];
    let (result, _) = import(&store, "limits", 10, &events).await;
    assert!(
        matches!(&result, Err(ImportError::PayloadNotUtf8 { event }) if event.index == 17),
        "{result:?}"
    );
    events[17].payload = b"{}".to_vec();
    events[18].event_name = String::new();
    let (result, _) = import(&store, "limits", 10, &events).await;
    assert!(
        matches!(&result, Err(ImportError::InvalidEvent { event, reason }) if event.index == 18 && reason.contains("empty")),
        "{result:?}"
    );
    events[18].event_name = "Fixed".into();
    let (result, _) = import(&store, "limits", 0, &events).await;
    assert!(
        matches!(result, Err(ImportError::InvalidChunkSize { chunk_size: 0, .. })),
        "{result:?}"
    );
    let (result, _) = import(&store, "limits", 10, &events).await;
    assert_eq!(result.expect("fixed").events_total, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_events_of_its_own_or_a_stored_id_is_refused_by_name() {
    let schema = schema().await;
    let mut events = history("existing", 5, 40);
    let existing = stream_with(&schema, "existing", 1).await;
    // Index 13, in chunk 2, is the first event of a stream that already has one.
    events[13].stream = existing.clone();
    let (result, _) = import(&schema, "existing", 10, &events).await;
    match result {
        Err(ImportError::StreamHasEvents { event, version: 1 }) => {
            assert_eq!((event.index, event.stream), (13, existing));
        }
        other => panic!("expected StreamHasEvents for index 13, got {other:?}"),
    }
    assert_eq!(stored(&schema).await, (11, 11), "chunk 1 and the stream's own event");

    // Index 22 reuses the id of an event stored by chunk 1; index 27 repeats index 26's id.
    let mut duplicates = history("duplicates", 5, 40);
    duplicates[22].event_id = events[4].event_id;
    let (result, _) = import(&schema, "duplicates", 10, &duplicates).await;
    assert!(
        matches!(&result, Err(ImportError::DuplicateEventId { event }) if event.index == 22),
        "{result:?}"
    );
    duplicates[22].event_id = Uuid::now_v7();
    duplicates[27].event_id = duplicates[26].event_id;
    let (result, _) = import(&schema, "duplicates", 10, &duplicates).await;
    assert!(
        matches!(&result, Err(ImportError::DuplicateEventId { event }) if event.index == 27),
        "{result:?}"
    );
    assert_eq!(stored(&schema).await, (31, 31), "the chunks before each refusal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_of_a_closed_stream_is_refused_by_name() {
    use es_core::lifecycle::{StreamChange, StreamLifecycle};

    let schema = schema().await;
    let mut events = history("closed", 4, 30);
    // Index 17, in chunk 2, goes to a stream deleted before the import: its id is never reused.
    let deleted = stream_with(&schema, "closed", 2).await;
    schema
        .delete_stream(&deleted, StreamChange::new("dpo", "erasure"))
        .await
        .expect("delete");
    events[17].stream = deleted.clone();
    let before = stored(&schema).await;
    let (result, _) = import(&schema, "closed", 10, &events).await;
    match result {
        Err(ImportError::StreamClosed { event }) => assert_eq!((event.index, event.stream), (17, deleted.clone())),
        other => panic!("expected StreamClosed for index 17, got {other:?}"),
    }
    assert_eq!(stored(&schema).await.0, before.0 + 10, "chunk 1 alone");
    assert_eq!(schema.stream_version(&deleted).await.expect("version"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_finds_its_record_moved_on_stops_without_writing() {
    let schema = schema().await;
    let events = history("concurrent", 3, 30);
    // "Another run" stores 5 more events once chunk 1 (10 events) is committed.
    let sql = format!(
        "UPDATE \"{}\".imports SET events_done = 15 WHERE name = 'shared' AND events_done = 10",
        schema.schema()
    );
    let pool = schema.pool().clone();
    let meddling = futures_util::stream::iter(events.clone())
        .enumerate()
        .then(move |(i, event)| {
            let (pool, sql) = (pool.clone(), sql.clone());
            async move {
                // Retried until chunk 1 has committed (it is written while chunk 2 is read).
                while i == 15 && sqlx::query(&sql).execute(&pool).await.expect("update").rows_affected() == 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                Ok::<_, Infallible>(event)
            }
        });
    let options = ImportOptions::new("shared").with_chunk_size(10);
    let result = schema.import(options, meddling, |_| {}).await;
    assert!(
        matches!(&result, Err(ImportError::ConcurrentRun { name }) if name == "shared"),
        "{result:?}"
    );
    assert_eq!(stored(&schema).await, (10, 10), "chunk 2 was not written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_of_one_import_at_once_store_each_event_once() {
    let schema = schema().await;
    let events = history("twice", 4, 60);
    // A source slow enough that both runs read their first chunk at the same time.
    let slow = || {
        futures_util::stream::iter(events.clone()).then(|event| async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            Ok::<_, Infallible>(event)
        })
    };
    let run = || schema.import(ImportOptions::new("twice").with_chunk_size(10), slow(), |_| {});
    let (first, second) = tokio::join!(run(), run());
    let stopped = [&first, &second]
        .iter()
        .filter(|result| matches!(result, Err(ImportError::ConcurrentRun { .. })))
        .count();
    assert!(stopped >= 1, "one run gives way: {first:?} {second:?}");
    assert!(
        [&first, &second]
            .iter()
            .all(|result| matches!(result, Ok(_) | Err(ImportError::ConcurrentRun { .. }))),
        "{first:?} {second:?}"
    );
    let (result, _) = import(&schema, "twice", 10, &events).await;
    assert_eq!(result.expect("a rerun completes").events_total, 60);
    assert_eq!(stored(&schema).await, (60, 60), "each event stored once");
}

/// The planner's row count of the events table: -1 until something analyzes it.
async fn planner_rows(store: &PostgresStore) -> f32 {
    sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = format('%I.events', $1::text)::regclass")
        .bind(store.schema())
        .fetch_one(store.pool())
        .await
        .expect("pg_class")
}

/// A run that stores events ends with `ANALYZE` of the events table, so the planner knows the
/// rows before autovacuum gets there; unless the options say not to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_leaves_the_planner_statistics_of_what_it_stored() {
    for analyze in [false, true] {
        let schema = schema().await;
        let store = schema.store();
        let events = history("analyzed", 4, 120);
        let before = planner_rows(store).await;
        let options = ImportOptions::new("stats").with_chunk_size(50).with_analyze(analyze);
        let report = store.import(options, source(&events), |_| {}).await.expect("imported");
        assert_eq!(report.events_total, 120);
        let after = planner_rows(store).await;
        if analyze {
            assert_eq!(after, 120.0, "analyzed: the planner counts the imported rows");
        } else {
            assert_eq!(after, before, "not analyzed: the planner's count is as it was");
        }
    }
}
