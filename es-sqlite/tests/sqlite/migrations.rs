//! Migrations: idempotent, safe when several stores open a new file at once, and a store used
//! before migrating fails with a typed error.

use es_core::{EventStore, ExpectedVersion, StoreError};
use es_sqlite::{SqliteError, SqliteStore};

use crate::support::{count, fresh, fresh_stream, numbered, raw, temp_file};

async fn migration_count(store: &SqliteStore) -> i64 {
    count(store, "SELECT count(*) FROM es_migrations").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_again_changes_nothing() {
    let db = fresh().await;
    let stream = db.stream_with("migrations", 2).await;
    assert_eq!(migration_count(&db.store).await, 7);
    db.store.migrate().await.expect("second migrate");
    db.store.migrate().await.expect("third migrate");
    assert_eq!(migration_count(&db.store).await, 7);
    assert_eq!(
        db.store.stream_version(&stream).await.expect("version"),
        2,
        "data untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_the_previous_version_gains_the_parked_events() {
    let db = fresh().await;
    let stream = db.stream_with("migrations", 2).await;
    // Back to how the previous version left files: migrations 1 and 2 only.
    raw(&db)
        .execute_batch("DROP TABLE parked_events; DELETE FROM es_migrations WHERE version = 3")
        .expect("undo migration 3");
    let reopened = SqliteStore::open(db.path()).await.expect("reopen");
    reopened.migrate().await.expect("migrate");
    assert_eq!(migration_count(&reopened).await, 7);
    assert_eq!(count(&reopened, "SELECT count(*) FROM parked_events").await, 0);
    assert_eq!(
        reopened.stream_version(&stream).await.expect("version"),
        2,
        "data untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_opening_and_migrating_a_new_file_at_once_all_succeed() {
    let (_dir, path) = temp_file();
    // Separate stores have separate connections, and SQLite locks them against each other as
    // it locks separate processes.
    let opened = futures_util::future::join_all((0..4).map(|_| {
        let path = path.clone();
        async move {
            let store = SqliteStore::open(&path).await?;
            store.migrate().await?;
            Ok::<_, SqliteError>(store)
        }
    }))
    .await;
    let stores: Vec<SqliteStore> = opened
        .into_iter()
        .map(|store| store.expect("every concurrent open and migrate succeeds"))
        .collect();
    assert_eq!(migration_count(&stores[0]).await, 7, "each migration recorded once");
    let stream = fresh_stream("migrations");
    stores[3]
        .append(&stream, ExpectedVersion::NoStream, numbered(1))
        .await
        .expect("the migrated file works");
    assert_eq!(stores[1].stream_version(&stream).await.expect("version"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_used_before_migrating_fails_with_a_typed_error() {
    let (_dir, path) = temp_file();
    let store = SqliteStore::open(&path).await.expect("open");
    let result = store
        .append(&fresh_stream("early"), ExpectedVersion::Any, numbered(1))
        .await;
    match result {
        Err(StoreError::Backend(error)) => {
            assert!(error.to_string().contains("no such table"), "{error}");
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
    store.migrate().await.expect("migrate");
    store
        .append(&fresh_stream("early"), ExpectedVersion::Any, numbered(1))
        .await
        .expect("append after migrating");
}

/// A file last migrated by older code, opened read-only (a newer reader beside an older
/// writer): it is not migrated, what needs only its tables works, and what needs a table of the
/// missing migrations fails with `SchemaTooOld`, naming the migrations and the fix rather than
/// SQLite's "no such table".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_an_older_version_read_only_says_it_needs_migrating() {
    use es_core::{GlobalLog, StreamSlice};
    use futures_util::TryStreamExt;

    let db = fresh().await;
    let stream = db.stream_with("older", 2).await;
    raw(&db)
        .execute_batch(
            "DROP TABLE stream_states; DROP TABLE archived_events; DROP TABLE tenants; \
             DELETE FROM es_migrations WHERE version >= 6",
        )
        .expect("back to migration 5");
    let reader = SqliteStore::open_read_only(db.path()).await.expect("opens read-only");
    let events: Vec<_> = reader
        .read_stream(&stream, StreamSlice::all())
        .try_collect()
        .await
        .expect("a stream reads from the events table alone");
    assert_eq!(events.len(), 2);

    let refused = reader
        .read_all(0, 10)
        .await
        .expect_err("the global log reads the archive too");
    let sqlite = match &refused {
        StoreError::Backend(source) => source.downcast_ref::<SqliteError>(),
        _ => None,
    };
    match sqlite {
        Some(SqliteError::SchemaTooOld { applied, known, .. }) => assert_eq!((*applied, *known), (5, 7)),
        other => panic!("expected SchemaTooOld, got {other:?} ({refused})"),
    }
    let message = refused.to_string();
    assert!(
        message.contains("schema migration 5") && message.contains("up to 7") && message.contains("migrate it"),
        "{message}"
    );
    assert_eq!(migration_count(&db.store).await, 5, "reading never migrates");
}
