//! Bad stored data comes back as typed errors naming stream, version and event, through the
//! `Repository`.

use es_core::{DecodeError, EventStore, RecordDecodeError, RepositoryError, StoreError, StreamId, StreamSlice};

use crate::domain::{opened_case, Cases};
use crate::support::{schema, RawEvent, Shared};

/// A case opened through the repository (version 1), then one raw row planted at version 2:
/// the repository, the case's id and its stream.
async fn case_with_planted_row(
    schema: &Shared,
    event_name: &str,
    schema_version: i32,
    payload: &str,
    metadata: &str,
) -> (Cases, String, StreamId) {
    let cases = Cases::new(schema.store().clone());
    let id = opened_case(&cases).await;
    let stream = Cases::stream_id(&id);
    let planted = RawEvent {
        schema_version,
        payload,
        metadata,
        ..RawEvent::new(&stream, 2, event_name)
    };
    planted.insert(schema, schema.pool()).await;
    (cases, id, stream)
}

/// Loads a case whose second row is `event_name` at `schema_version` with `payload`; returns
/// the decode error that gives, after checking that it names the stream, version 2 and the
/// event.
async fn decode_error(schema: &Shared, event_name: &str, schema_version: i32, payload: &str) -> DecodeError {
    let (cases, id, stream) = case_with_planted_row(schema, event_name, schema_version, payload, "{}").await;
    match cases.load(&id).await {
        Err(RepositoryError::Decode(error)) => {
            let RecordDecodeError {
                stream: s,
                version,
                event_name: name,
                source,
            } = *error;
            assert_eq!(
                (&s, version, name.as_str()),
                (&stream, 2, event_name),
                "the error names the event"
            );
            *source
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

/// Checks that `result` is a `Corrupt` error naming version 2 of `stream`, for a reason that
/// mentions `about`.
#[track_caller]
fn assert_corrupt<T: std::fmt::Debug>(result: Result<T, RepositoryError>, stream: &StreamId, about: &str) {
    match result {
        Err(RepositoryError::Store(StoreError::Corrupt {
            stream: s,
            version,
            reason,
        })) => {
            assert_eq!((&s, version), (stream, 2));
            assert!(reason.contains(about), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Rows the code cannot decode, each with the decode error it must give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_rows_are_decode_errors() {
    type Expected = fn(&DecodeError) -> bool;
    let schema = schema().await;
    // What is wrong with the row; its event name, schema version and payload; the error.
    #[rustfmt::skip]
    let rows: [(&str, &str, i32, &str, Expected); 4] = [
        ("an unknown event name", "CaseVanished", 1, "{}",
            |e| matches!(e, DecodeError::UnknownEventType { event_name } if event_name == "CaseVanished")),
        ("a payload of the wrong shape", "NoteAdded", 2, r#"{"text": 42}"#,
            |e| matches!(e, DecodeError::Payload { event_name: "NoteAdded", .. })),
        ("a schema version newer than the code", "NoteAdded", 3, r#"{"text": "x", "priority": 1}"#,
            |e| matches!(e, DecodeError::SchemaVersionTooNew { event_name: "NoteAdded", stored: 3, current: 2 })),
        ("a schema version below the upcast chain (no upcast path)", "NoteAdded", 0, r#"{"text": "x"}"#,
            |e| matches!(e, DecodeError::NoUpcastPath { event_name: "NoteAdded", stored: 0, current: 2 })),
    ];
    for (what, event_name, schema_version, payload, expected) in rows {
        let error = decode_error(&schema, event_name, schema_version, payload).await;
        assert!(expected(&error), "{what}: got {error:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_schema_version_is_upcast() {
    let schema = schema().await;
    let (cases, id, _) = case_with_planted_row(&schema, "NoteAdded", 1, r#"{"text": "stored at v1"}"#, "{}").await;
    let case = cases.load(&id).await.expect("load");
    assert_eq!(
        (case.version, case.aggregate.notes),
        (2, vec!["stored at v1".to_owned()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_metadata_is_corrupt() {
    let schema = schema().await;
    let payload = r#"{"text":"fine","priority":1}"#;
    let (cases, id, stream) = case_with_planted_row(&schema, "NoteAdded", 2, payload, r#"{"actor": 7}"#).await;
    // Reading envelopes reports it...
    assert_corrupt(cases.events(&id, StreamSlice::all()).await, &stream, "metadata");
    // ...while loading the state, which never reads metadata, is unaffected.
    assert_eq!(cases.load(&id).await.expect("load").version, 2);
}

/// The schema forbids negative versions; a hand-edited table without the check still cannot
/// slip one through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_numbers_are_corrupt() {
    let schema = schema().await;
    let drop_checks = format!(
        "ALTER TABLE \"{0}\".events DROP CONSTRAINT events_version_check;
         ALTER TABLE \"{0}\".events DROP CONSTRAINT events_schema_version_check;",
        schema.schema()
    );
    sqlx::raw_sql(&drop_checks)
        .execute(schema.pool())
        .await
        .expect("drop checks");

    let payload = r#"{"text": "x", "priority": 1}"#;
    let (cases, id, stream) = case_with_planted_row(&schema, "NoteAdded", -1, payload, "{}").await;
    assert_corrupt(cases.load(&id).await, &stream, "schema version");

    let other = StreamId::new("case", uuid::Uuid::now_v7().to_string());
    let planted = RawEvent {
        payload: r#"{"title": "x"}"#,
        ..RawEvent::new(&other, -5, "CaseOpened")
    };
    planted.insert(&schema, schema.pool()).await;
    match schema.stream_version(&other).await {
        Err(StoreError::Corrupt { stream, reason, .. }) => {
            assert_eq!(stream, other);
            assert!(reason.contains("-5"), "{reason}");
        }
        result => panic!("expected Corrupt, got {result:?}"),
    }
}

/// A snapshot whose state is not JSON is refused with a typed error before it is sent (the
/// column is `jsonb`), and nothing is saved.
#[tokio::test]
async fn a_snapshot_that_is_not_json_is_refused_typed() {
    use es_core::{Snapshot, SnapshotStore};
    let schema = schema().await;
    let stream = StreamId::new("case", uuid::Uuid::now_v7().to_string());
    let snapshot = Snapshot {
        stream: stream.clone(),
        version: 3,
        revision: 1,
        schema_version: 1,
        state: b"{not json".to_vec(),
        taken_at: chrono::Utc::now(),
    };
    match schema.store().save_snapshot(snapshot).await {
        Err(StoreError::Backend(error)) => assert!(
            matches!(
                error.downcast_ref::<es_postgres::PostgresError>(),
                Some(es_postgres::PostgresError::SnapshotNotJson { version: 3, .. })
            ),
            "{error}"
        ),
        other => panic!("a state that is not JSON: {other:?}"),
    }
    assert!(matches!(schema.store().load_snapshot(&stream).await, Ok(None)));
}
