//! Migrations: idempotent, safe when processes start at once, and schema names checked.

use es_core::{EventStore, ExpectedVersion};
use es_postgres::{PostgresError, PostgresStore};

use crate::support::{database, fresh_stream, numbered, schema, stream_with, unmigrated_schema};

async fn migration_count(store: &PostgresStore) -> i64 {
    let sql = format!("SELECT count(*) FROM \"{}\".es_migrations", store.schema());
    sqlx::query_scalar(&sql)
        .fetch_one(store.pool())
        .await
        .expect("reading the migration history")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_again_changes_nothing() {
    let schema = schema().await;
    let stream = stream_with(&schema, "migrations", 2).await;
    let before = migration_count(&schema).await;
    assert!(before >= 1);
    schema.migrate().await.expect("second migrate");
    schema.migrate().await.expect("third migrate");
    assert_eq!(migration_count(&schema).await, before);
    assert_eq!(
        schema.stream_version(&stream).await.expect("version"),
        2,
        "data untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_of_a_new_schema_all_succeed() {
    let schema = unmigrated_schema().await;
    // Separate pools, as separate processes would have.
    let mut stores = Vec::new();
    for _ in 0..4 {
        let store = PostgresStore::connect(database().url())
            .await
            .expect("connect")
            .with_schema(schema.schema())
            .expect("valid schema");
        stores.push(store);
    }
    let results = futures_util::future::join_all(stores.iter().map(|store| store.migrate())).await;
    for result in results {
        result.expect("every concurrent migrate succeeds");
    }
    assert_eq!(
        migration_count(&schema).await,
        10,
        "each of the 10 migrations recorded once"
    );
    let stream = fresh_stream("migrations");
    stores[3]
        .append(&stream, ExpectedVersion::NoStream, numbered(1))
        .await
        .expect("the migrated schema works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_names_are_checked() {
    let schema = schema().await;
    for bad in [
        "Public",
        "1st",
        "a-b",
        "x\"; DROP TABLE y; --",
        "pg_toast",
        "",
        &"s".repeat(64),
    ] {
        let result = PostgresStore::new(schema.pool().clone()).with_schema(bad);
        assert!(
            matches!(result, Err(PostgresError::InvalidSchemaName { ref name }) if name == bad),
            "{bad:?} must be refused"
        );
    }
    let store = PostgresStore::new(schema.pool().clone());
    assert_eq!(store.schema(), "public");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_url_is_a_typed_error() {
    let result = PostgresStore::connect("postgres://postgres@127.0.0.1:not-a-port/none").await;
    assert!(matches!(result, Err(PostgresError::Connect(_))), "{result:?}");
}

/// Events whose positions come from transaction ids ahead of the cluster's (data restored from
/// another cluster) make `migrate` refuse: new events would sort below them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_ahead_of_the_cluster_are_refused() {
    let schema = schema().await;
    let plant = format!(
        "INSERT INTO \"{}\".events (position, event_id, aggregate_type, aggregate_id, version, event_name,
                                    schema_version, payload, metadata, recorded_at)
         VALUES (((pg_current_xact_id()::text::bigint + 1000000) << 20) | 1, $1, 'restored', 'r-1', 1, 'Restored', 1,
                 '{{}}', '{{}}', now())",
        schema.schema()
    );
    sqlx::query(&plant)
        .bind(uuid::Uuid::now_v7())
        .execute(schema.pool())
        .await
        .expect("plant a restored event");
    match schema.migrate().await {
        Err(PostgresError::TransactionIdsBehind {
            stored_xid,
            current_xid,
            ..
        }) => assert!(stored_xid > current_xid),
        other => panic!("expected TransactionIdsBehind, got {other:?}"),
    }
}

/// Rows written before migration 5 keep all their metadata in the JSON column and NULL in the
/// columns of the well-known fields: they read back whole, beside rows written since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_written_before_the_columns_reads_back_whole() {
    let schema = schema().await;
    let stream = fresh_stream("old-metadata");
    let (command, correlation, causation) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let old = es_core::Metadata::new()
        .with_command_id(command)
        .with_correlation_id(correlation)
        .with_causation_id(causation)
        .with_actor("agent:old")
        .with_extra("ip", "203.0.113.7");
    let plant = format!(
        "INSERT INTO \"{}\".events (position, event_id, aggregate_type, aggregate_id, version, event_name,
                                    schema_version, payload, metadata, recorded_at)
         VALUES ((pg_current_xact_id()::text::bigint << 20) | 1, $1, $2, $3, 1, 'Old', 1, '{{}}', $4::jsonb, now())",
        schema.schema()
    );
    sqlx::query(&plant)
        .bind(uuid::Uuid::now_v7())
        .bind(&stream.aggregate_type)
        .bind(&stream.aggregate_id)
        .bind(serde_json::to_string(&old).expect("metadata JSON"))
        .execute(schema.pool())
        .await
        .expect("plant an event as migration 4 stored it");
    let new = es_core::Metadata::new().with_actor("agent:new").with_extra("n", 2);
    let mut batch = numbered(1);
    batch[0].metadata = new.clone();
    schema
        .append(&stream, ExpectedVersion::Exact(1), batch)
        .await
        .expect("append after the old row");

    let events = crate::support::read(schema.store(), &stream).await;
    let metadata: Vec<_> = events.iter().map(|event| event.metadata.clone()).collect();
    assert_eq!(metadata, [old, new]);
    let by_id = schema
        .read_event(events[0].event_id)
        .await
        .expect("read_event")
        .expect("the old event");
    assert_eq!(by_id.metadata, events[0].metadata);
}
