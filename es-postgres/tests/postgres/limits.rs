//! Limits of the PostgreSQL store beyond the conformance checks (which check each of the
//! store's limits at its boundary): limits set per store and capped by what PostgreSQL takes,
//! the 2^20 - 1 events one transaction can number, and values only the server refuses.

use std::time::Instant;

use es_core::{EventStore, ExpectedVersion, Limit, Limits, Metadata, NewEvent, StoreError};
use es_postgres::PostgresStore;

use crate::support::{event, exclusive_schema, fresh_stream, numbered, read, schema};

/// The most events one transaction can number: positions are `xid << 20 | n`.
const TRANSACTION_EVENTS: usize = (1 << 20) - 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_set_per_store_and_capped_by_what_postgres_takes() {
    let schema = schema().await;
    assert_eq!(schema.limits(), Limits::DEFAULT);
    let store = schema
        .store()
        .clone()
        .with_limits(Limits::DEFAULT.with_max_batch_events(3));
    assert_eq!(store.limits().max_batch_events, 3);
    let stream = fresh_stream("limits");
    match store.append(&stream, ExpectedVersion::NoStream, numbered(4)).await {
        Err(StoreError::LimitExceeded(exceeded)) => {
            assert_eq!(
                (exceeded.limit, exceeded.actual, exceeded.max),
                (Limit::BatchEvents, 4, 3)
            );
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    let mut tx = store.pool().begin().await.expect("begin");
    let refused = store
        .append_in_transaction(&mut tx, &stream, ExpectedVersion::NoStream, numbered(4))
        .await;
    assert!(matches!(refused, Err(StoreError::LimitExceeded(_))), "{refused:?}");
    store
        .append_in_transaction(&mut tx, &stream, ExpectedVersion::NoStream, numbered(3))
        .await
        .expect("the transaction is still usable");
    tx.commit().await.expect("commit");
    assert_eq!(read(&store, &stream).await.len(), 3);

    let unlimited = store.clone().with_limits(Limits::UNLIMITED);
    assert_eq!(unlimited.limits(), PostgresStore::MAX_LIMITS);
    assert_eq!(unlimited.limits().max_batch_events, TRANSACTION_EVENTS);
    let moved = unlimited.with_schema(schema.schema()).expect("same schema");
    assert_eq!(
        moved.limits(),
        PostgresStore::MAX_LIMITS,
        "with_schema keeps the limits"
    );
}

/// Several appends in one transaction fill its 2^20 - 1 positions exactly; the next event is
/// refused with a typed error, and the transaction, still usable, commits every event before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_holds_exactly_2_pow_20_minus_1_events() {
    // The transaction holds an xid for the whole test, which holds back every reader of
    // `read_all` on the server: run alone.
    let schema = exclusive_schema().await;
    let store = schema.store().clone().with_limits(PostgresStore::MAX_LIMITS);
    let started = Instant::now();
    let (a, b) = (fresh_stream("full"), fresh_stream("full"));
    let mut tx = store.pool().begin().await.expect("begin");
    let mut appended = 0;
    for (stream, count) in [(&a, 1 << 19), (&b, (1 << 19) - 2), (&a, 1)] {
        let expected = match appended {
            0 => ExpectedVersion::NoStream,
            _ => ExpectedVersion::Any,
        };
        store
            .append_in_transaction(&mut tx, stream, expected, tiny(count))
            .await
            .unwrap_or_else(|error| panic!("{count} events after {appended}: {error}"));
        appended += count;
    }
    assert_eq!(appended, TRANSACTION_EVENTS);
    for count in [1, 2] {
        match store
            .append_in_transaction(&mut tx, &b, ExpectedVersion::Any, tiny(count))
            .await
        {
            Err(StoreError::LimitExceeded(exceeded)) => assert_eq!(
                (exceeded.limit, exceeded.actual, exceeded.max),
                (Limit::TransactionEvents, TRANSACTION_EVENTS + count, TRANSACTION_EVENTS)
            ),
            other => panic!("the transaction is full: expected LimitExceeded, got {other:?}"),
        }
    }
    tx.commit().await.expect("the transaction is still usable and commits");
    assert_eq!(store.stream_version(&a).await.expect("version"), (1 << 19) + 1);
    assert_eq!(store.stream_version(&b).await.expect("version"), (1 << 19) - 2);
    eprintln!(
        "{TRANSACTION_EVENTS} events in one transaction: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// `count` of the smallest events: name `E`, payload `0`, no metadata.
fn tiny(count: usize) -> Vec<NewEvent> {
    (0..count)
        .map(|_| NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_name: "E".into(),
            schema_version: 1,
            payload: b"0".to_vec(),
            metadata: Metadata::new(),
        })
        .collect()
}

/// JSON that parses but that `jsonb` cannot hold: a `\u0000` in a string, a number beyond
/// `numeric`'s range. The server refuses the value; the store reports an invalid batch, and
/// nothing of the batch is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_the_server_cannot_store_is_an_invalid_batch() {
    let schema = schema().await;
    let mut nul_in_metadata = event("Odd", serde_json::json!({}));
    nul_in_metadata.metadata = Metadata::new().with_actor("a\u{0}b");
    for odd in [
        event("Odd", serde_json::json!({ "text": "a\u{0}b" })),
        NewEvent {
            payload: b"1e1000000".to_vec(),
            ..event("Odd", serde_json::json!(0))
        },
        nul_in_metadata,
    ] {
        let stream = fresh_stream("odd");
        let mut batch = numbered(2);
        batch.push(odd);
        match schema.append(&stream, ExpectedVersion::NoStream, batch).await {
            Err(StoreError::InvalidBatch {
                stream: refused,
                reason,
            }) => {
                assert_eq!(refused, stream);
                // NUL characters are refused before the server sees them, as every store does.
                assert!(
                    reason.contains("PostgreSQL refused") || reason.contains("PostgreSQL cannot store"),
                    "{reason}"
                );
            }
            other => panic!("expected InvalidBatch, got {other:?}"),
        }
        assert_eq!(schema.stream_version(&stream).await.expect("version"), 0);
    }
}
