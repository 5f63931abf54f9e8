//! Bad stored data comes back as typed errors naming stream, version and event, through the
//! `Repository`.

use es_core::{
    DecodeError, EventStore, Metadata, RecordDecodeError, Repository, RepositoryError, StoreError, StreamId,
    StreamSlice,
};

use crate::domain::{open, Case};
use crate::support::{insert_raw, schema, Shared};

/// A case opened through the repository (version 1), then one raw row at version 2; returns the
/// error loading it gives.
async fn load_with_planted_row(
    schema: &Shared,
    event_name: &str,
    schema_version: i32,
    payload: &str,
    metadata: &str,
) -> (StreamId, RepositoryError) {
    let cases = Repository::<Case, _>::new(schema.store().clone());
    let id = uuid::Uuid::now_v7().to_string();
    cases
        .execute(&id, Metadata::new(), open("Printer"))
        .await
        .expect("open");
    let stream = Repository::<Case, es_postgres::PostgresStore>::stream_id(&id);
    insert_raw(schema, &stream, 2, event_name, schema_version, payload, metadata).await;
    match cases.load(&id).await {
        Ok(case) => panic!("loading bad data succeeded: {case:?}"),
        Err(error) => (stream, error),
    }
}

#[track_caller]
fn assert_decode_error(error: RepositoryError, stream: &StreamId, name: &str) -> DecodeError {
    match error {
        RepositoryError::Decode(error) => {
            let RecordDecodeError {
                stream: s,
                version,
                event_name,
                source,
            } = *error;
            assert_eq!(
                (&s, version, event_name.as_str()),
                (stream, 2, name),
                "the error names the event"
            );
            *source
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_event_name_is_a_decode_error() {
    let schema = schema().await;
    let (stream, error) = load_with_planted_row(&schema, "CaseVanished", 1, "{}", "{}").await;
    match assert_decode_error(error, &stream, "CaseVanished") {
        DecodeError::UnknownEventType { event_name } => assert_eq!(event_name, "CaseVanished"),
        other => panic!("expected UnknownEventType, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_of_the_wrong_shape_is_a_decode_error() {
    let schema = schema().await;
    let (stream, error) = load_with_planted_row(&schema, "NoteAdded", 2, r#"{"text": 42}"#, "{}").await;
    match assert_decode_error(error, &stream, "NoteAdded") {
        DecodeError::Payload { event_name, .. } => assert_eq!(event_name, "NoteAdded"),
        other => panic!("expected Payload, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_version_newer_than_the_code_is_a_decode_error() {
    let schema = schema().await;
    let (stream, error) = load_with_planted_row(&schema, "NoteAdded", 3, r#"{"text": "x", "priority": 1}"#, "{}").await;
    match assert_decode_error(error, &stream, "NoteAdded") {
        DecodeError::SchemaVersionTooNew {
            event_name,
            stored,
            current,
        } => assert_eq!((event_name, stored, current), ("NoteAdded", 3, 2)),
        other => panic!("expected SchemaVersionTooNew, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_version_below_the_chain_has_no_upcast_path() {
    let schema = schema().await;
    let (stream, error) = load_with_planted_row(&schema, "NoteAdded", 0, r#"{"text": "x"}"#, "{}").await;
    match assert_decode_error(error, &stream, "NoteAdded") {
        DecodeError::NoUpcastPath {
            event_name,
            stored,
            current,
        } => assert_eq!((event_name, stored, current), ("NoteAdded", 0, 2)),
        other => panic!("expected NoUpcastPath, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_schema_version_is_upcast() {
    let schema = schema().await;
    let cases = Repository::<Case, _>::new(schema.store().clone());
    let id = uuid::Uuid::now_v7().to_string();
    cases
        .execute(&id, Metadata::new(), open("Printer"))
        .await
        .expect("open");
    let stream = Repository::<Case, es_postgres::PostgresStore>::stream_id(&id);
    insert_raw(&schema, &stream, 2, "NoteAdded", 1, r#"{"text": "stored at v1"}"#, "{}").await;
    let case = cases.load(&id).await.expect("load");
    assert_eq!(
        (case.version, case.aggregate.notes),
        (2, vec!["stored at v1".to_owned()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_metadata_is_corrupt() {
    let schema = schema().await;
    let cases = Repository::<Case, _>::new(schema.store().clone());
    let id = uuid::Uuid::now_v7().to_string();
    cases
        .execute(&id, Metadata::new(), open("Printer"))
        .await
        .expect("open");
    let stream = Repository::<Case, es_postgres::PostgresStore>::stream_id(&id);
    insert_raw(
        &schema,
        &stream,
        2,
        "NoteAdded",
        2,
        r#"{"text":"fine","priority":1}"#,
        r#"{"actor": 7}"#,
    )
    .await;
    // Reading envelopes reports it...
    match cases.events(&id, StreamSlice::all()).await {
        Err(RepositoryError::Store(StoreError::Corrupt {
            stream: s,
            version,
            reason,
        })) => {
            assert_eq!((s, version), (stream, 2));
            assert!(reason.contains("metadata"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
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

    let cases = Repository::<Case, _>::new(schema.store().clone());
    let id = uuid::Uuid::now_v7().to_string();
    cases
        .execute(&id, Metadata::new(), open("Printer"))
        .await
        .expect("open");
    let stream = Repository::<Case, es_postgres::PostgresStore>::stream_id(&id);
    insert_raw(
        &schema,
        &stream,
        2,
        "NoteAdded",
        -1,
        r#"{"text": "x", "priority": 1}"#,
        "{}",
    )
    .await;
    match cases.load(&id).await {
        Err(RepositoryError::Store(StoreError::Corrupt {
            stream: s,
            version,
            reason,
        })) => {
            assert_eq!((s, version), (stream.clone(), 2));
            assert!(reason.contains("schema version"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }

    let other = StreamId::new("case", uuid::Uuid::now_v7().to_string());
    insert_raw(&schema, &other, -5, "CaseOpened", 1, r#"{"title": "x"}"#, "{}").await;
    match schema.stream_version(&other).await {
        Err(StoreError::Corrupt { stream, reason, .. }) => {
            assert_eq!(stream, other);
            assert!(reason.contains("-5"), "{reason}");
        }
        result => panic!("expected Corrupt, got {result:?}"),
    }
}
