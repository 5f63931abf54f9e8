//! Bad files and bad moments get typed errors, never a panic, and nothing half-written: a file
//! that is not a database, a schema newer than the code, a lock held past the busy timeout, a
//! read-only store, damaged pages, stored rows that do not map.

use std::time::Duration;

use es_core::{EventStore, ExpectedVersion, GlobalLog, Snapshot, SnapshotStore, StoreError, StreamId, StreamSlice};
use es_sqlite::{SqliteError, SqliteOptions, SqliteStore};
use futures_util::TryStreamExt;

use crate::support::{fresh, fresh_stream, fresh_with, numbered, plant_bad_metadata, raw, read, temp_file};

/// The `SqliteError` inside a store error, if any.
fn sqlite_error(error: &StoreError) -> Option<&SqliteError> {
    match error {
        StoreError::Backend(source) | StoreError::Unavailable(source) => source.downcast_ref(),
        _ => None,
    }
}

/// A snapshot of `stream` at `version` with an empty state.
fn empty_snapshot(stream: &StreamId, version: u64) -> Snapshot {
    Snapshot {
        stream: stream.clone(),
        version,
        revision: 1,
        schema_version: 1,
        state: b"{}".to_vec(),
        taken_at: chrono::Utc::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_database_is_refused_and_left_untouched() {
    let (_dir, path) = temp_file();
    let text = "These are my notes, not a database.\n".repeat(200);
    std::fs::write(&path, &text).expect("write a text file");
    for result in [SqliteStore::open(&path).await, SqliteStore::open_read_only(&path).await] {
        match result {
            Err(SqliteError::NotADatabase { path: refused, .. }) => assert_eq!(refused, path),
            other => panic!("expected NotADatabase, got {other:?}"),
        }
    }
    assert_eq!(
        std::fs::read_to_string(&path).expect("read back"),
        text,
        "the file is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_that_name_no_file_or_no_directory_are_refused() {
    for path in ["", ":memory:"] {
        let result = SqliteStore::open(path).await;
        assert!(
            matches!(result, Err(SqliteError::NotAFile { .. })),
            "{path:?}: {result:?}"
        );
    }
    let (dir, _) = temp_file();
    let missing = dir.path().join("no-such-directory").join("events.db");
    let result = SqliteStore::open(&missing).await;
    assert!(matches!(result, Err(SqliteError::Open { .. })), "{result:?}");
    let absent = dir.path().join("absent.db");
    let result = SqliteStore::open_read_only(&absent).await;
    assert!(matches!(result, Err(SqliteError::Open { .. })), "{result:?}");
    assert!(!absent.exists(), "opening read-only creates nothing");
    let options = SqliteOptions::default().with_create_if_missing(false);
    let result = SqliteStore::open_with(&absent, options).await;
    assert!(matches!(result, Err(SqliteError::Open { .. })), "{result:?}");
}

/// A directory, an empty file and another program's database are not stores: a directory is
/// refused whichever way it is opened (SQLite itself calls it a disk I/O error), and a file
/// without the store's tables is refused read-only, since a read-only store cannot migrate it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_that_are_not_stores_are_named_as_such() {
    let (dir, _) = temp_file();
    for result in [
        SqliteStore::open(dir.path()).await,
        SqliteStore::open_read_only(dir.path()).await,
    ] {
        match result {
            Err(error @ SqliteError::IsADirectory { .. }) => {
                let message = error.to_string();
                assert!(
                    message.contains("directory") && message.contains("not an es-rs store"),
                    "{message}"
                );
            }
            other => panic!("expected IsADirectory, got {other:?}"),
        }
    }

    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").expect("an empty file");
    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .and_then(|connection| connection.execute_batch("CREATE TABLE notes (text TEXT)"))
        .expect("another program's database");
    for path in [&empty, &other] {
        match SqliteStore::open_read_only(path).await {
            Err(error @ SqliteError::NotAStore { .. }) => {
                let message = error.to_string();
                assert!(message.contains("not an es-rs store"), "{message}");
                assert!(message.contains(&path.display().to_string()), "{message}");
            }
            other => panic!("{}: expected NotAStore, got {other:?}", path.display()),
        }
    }
    assert_eq!(
        std::fs::metadata(&empty).expect("still there").len(),
        0,
        "left untouched"
    );
    // Opened writable, an empty file is where a new store starts.
    let store = SqliteStore::open(&empty).await.expect("open writable");
    store.migrate().await.expect("migrate");
    drop(store);
    SqliteStore::open_read_only(&empty).await.expect("a store now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_migrated_by_newer_code_is_refused() {
    let db = fresh().await;
    raw(&db)
        .execute(
            "INSERT INTO es_migrations (version, description, applied_at) VALUES (99, 'from the future', 0)",
            [],
        )
        .expect("plant a newer migration");
    match db.store.migrate().await {
        Err(SqliteError::SchemaTooNew { applied, known, .. }) => assert_eq!((applied, known), (99, 7)),
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    for result in [
        SqliteStore::open(db.path()).await,
        SqliteStore::open_read_only(db.path()).await,
    ] {
        assert!(
            matches!(result, Err(SqliteError::SchemaTooNew { applied: 99, .. })),
            "{result:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_past_the_busy_timeout_is_unavailable_and_writes_nothing() {
    let db = fresh_with(SqliteOptions::default().with_busy_timeout(Duration::from_millis(200))).await;
    let stream = fresh_stream("locked");
    let blocker = raw(&db);
    blocker.execute_batch("BEGIN IMMEDIATE").expect("hold the write lock");

    let refused = db.store.append(&stream, ExpectedVersion::NoStream, numbered(3)).await;
    let error = refused.expect_err("the append must wait and give up");
    assert!(error.is_transient(), "{error}");
    assert!(
        matches!(sqlite_error(&error), Some(SqliteError::Busy { .. })),
        "{error}"
    );
    let snapshot = empty_snapshot(&stream, 1);
    let refused = db.store.save_snapshot(snapshot.clone()).await;
    assert!(refused.is_err_and(|error| error.is_transient()));
    assert!(matches!(db.store.migrate().await, Err(SqliteError::Busy { .. })));
    // Readers are not blocked by a writer.
    assert_eq!(db.store.stream_version(&stream).await.expect("read while locked"), 0);

    blocker.execute_batch("ROLLBACK").expect("release the lock");
    assert!(
        read(&db.store, &stream).await.is_empty(),
        "nothing of the refused append"
    );
    db.store
        .append(&stream, ExpectedVersion::NoStream, numbered(3))
        .await
        .expect("the same append works once the lock is free");
    db.store.save_snapshot(snapshot).await.expect("snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_opened_read_only_reads_and_refuses_every_write() {
    let db = fresh().await;
    let stream = db.stream_with("read-only", 2).await;
    let reader = SqliteStore::open_read_only(db.path()).await.expect("open read-only");
    assert!(reader.is_read_only());
    assert_eq!(read(&reader, &stream).await.len(), 2);
    assert_eq!(reader.read_all(0, 10).await.expect("read_all").len(), 2);

    let refused = reader
        .append(&stream, ExpectedVersion::Exact(2), numbered(1))
        .await
        .expect_err("append refused");
    assert!(!refused.is_transient());
    assert!(
        matches!(sqlite_error(&refused), Some(SqliteError::ReadOnly { .. })),
        "{refused}"
    );
    let refused = reader
        .save_snapshot(empty_snapshot(&stream, 2))
        .await
        .expect_err("snapshot refused");
    assert!(
        matches!(sqlite_error(&refused), Some(SqliteError::ReadOnly { .. })),
        "{refused}"
    );
    assert!(matches!(reader.migrate().await, Err(SqliteError::ReadOnly { .. })));
    let write = reader.write(|conn| conn.execute_batch("CREATE TABLE sneaky (x)")).await;
    assert!(matches!(write, Err(SqliteError::ReadOnly { .. })), "{write:?}");
    // SQLite itself refuses, even through the read-only store's raw connections.
    let sneaky = reader.read(|conn| conn.execute_batch("CREATE TABLE sneaky (x)")).await;
    assert!(sneaky.is_err(), "{sneaky:?}");
    assert_eq!(db.store.stream_version(&stream).await.expect("version"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_pages_are_errors_not_panics() {
    let (_dir, path) = temp_file();
    {
        let store = SqliteStore::open(&path).await.expect("open");
        store.migrate().await.expect("migrate");
        for _ in 0..20 {
            let stream = fresh_stream("damaged");
            store
                .append(&stream, ExpectedVersion::NoStream, numbered(50))
                .await
                .expect("append");
        }
    } // the last connection checkpoints the write-ahead log into the file
    let mut bytes = std::fs::read(&path).expect("read the file");
    assert!(bytes.len() > 64 * 1024, "the events are in the main file");
    for (n, byte) in bytes.iter_mut().enumerate().skip(4096 * 3).step_by(7) {
        *byte = (n % 251) as u8;
    }
    std::fs::write(&path, &bytes).expect("damage the file");

    let Ok(store) = SqliteStore::open(&path).await else {
        return; // refused at open: a typed error already
    };
    let all = store.read_all(0, 10_000).await;
    assert!(
        all.is_err(),
        "a damaged file must not read as a healthy one: {:?}",
        all.map(|e| e.len())
    );
    let streamed: Result<Vec<_>, _> = store
        .read_stream(&fresh_stream("damaged"), StreamSlice::all())
        .try_collect()
        .await;
    let _ = streamed; // an error or nothing: either way, no panic
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_rows_that_do_not_map_are_corrupt_naming_stream_and_version() {
    let db = fresh().await;
    let stream = db.stream_with("corrupt", 1).await;
    plant_bad_metadata(&db, &stream, 2, "Numbered");
    let read: Result<Vec<_>, _> = db.store.read_stream(&stream, StreamSlice::all()).try_collect().await;
    match read {
        Err(StoreError::Corrupt {
            stream: bad, version, ..
        }) => assert_eq!((bad, version), (stream.clone(), 2)),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(
        db.store.read_all(0, 10).await,
        Err(StoreError::Corrupt { version: 2, .. })
    ));
    // A replay does not read metadata: the aggregate still loads.
    let mut versions = Vec::new();
    db.store
        .replay_stream(&stream, StreamSlice::all(), &mut |event| {
            versions.push(event.version);
            std::ops::ControlFlow::Continue(())
        })
        .await
        .expect("replay");
    assert_eq!(versions, [1, 2]);
    let changed = raw(&db).execute("DELETE FROM events", []);
    assert!(changed.is_err(), "events are append-only");
}
