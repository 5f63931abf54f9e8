//! Claims and units of work: the epoch fences a runner whose claim was taken over, locks held
//! by others are transient failures, and handlers cannot commit behind the runner's back.

use std::time::Duration;

use es_core::{CheckpointError, CheckpointStore, ClaimStatus};
use es_sqlite::{SqliteError, SqliteOptions, SqliteStore};

use crate::support::{begin, claimed, fresh, fresh_with, fresh_with_tables, raw, select};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_whose_epoch_was_raised_gets_claim_lost() {
    let db = fresh().await;
    let (checkpoints, mut claim) = claimed(&db, "fenced").await;
    assert_eq!(claim.epoch(), 1);
    let (unit, _) = begin(&checkpoints, &mut claim).await;
    checkpoints.commit(unit, 3).await.expect("commit");

    // As if another runner had claimed the projection (its lock file deleted under us).
    db.store
        .write(|conn| conn.execute("UPDATE projection_checkpoints SET claim_epoch = claim_epoch + 1", []))
        .await
        .expect("raise the epoch");
    match checkpoints.begin(&mut claim).await {
        Err(CheckpointError::ClaimLost { reason }) => assert!(reason.contains("claim 2"), "{reason}"),
        other => panic!("expected ClaimLost, got {:?}", other.map(|(_, position)| position)),
    }
    assert_eq!(checkpoints.checkpoint("fenced").await.expect("checkpoint"), 3);
    drop(claim);
    let mut next = checkpoints.claim("fenced").await.expect("claim again");
    assert_eq!(next.epoch(), 3, "every claim raises the epoch");
    let (_, position) = begin(&checkpoints, &mut next).await;
    assert_eq!(position, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_blocked_past_the_busy_timeout_is_a_transient_failure() {
    let db = fresh_with(SqliteOptions::default().with_busy_timeout(Duration::from_millis(200))).await;
    let (checkpoints, mut claim) = claimed(&db, "blocked").await;
    let blocker = raw(&db);
    blocker.execute_batch("BEGIN IMMEDIATE").expect("hold the write lock");
    match checkpoints.begin(&mut claim).await {
        Err(error @ CheckpointError::Unavailable(_)) => assert!(error.is_transient()),
        other => panic!("expected Unavailable, got {:?}", other.map(|(_, position)| position)),
    }
    blocker.execute_batch("ROLLBACK").expect("release the lock");
    let (unit, position) = begin(&checkpoints, &mut claim).await;
    assert_eq!(position, 0);
    checkpoints
        .commit(unit, 1)
        .await
        .expect("the same claim goes on after the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_commits_is_refused() {
    let db = fresh().await;
    let (checkpoints, mut claim) = claimed(&db, "rogue").await;
    let (mut unit, _) = begin(&checkpoints, &mut claim).await;
    checkpoints
        .context(&mut unit)
        .execute_batch("COMMIT")
        .expect("a rogue commit");
    match checkpoints.commit(unit, 9).await {
        Err(CheckpointError::Backend(error)) => assert!(error.to_string().contains("ended the unit"), "{error}"),
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert_eq!(checkpoints.checkpoint("rogue").await.expect("checkpoint"), 0);
    let (unit, _) = begin(&checkpoints, &mut claim).await;
    checkpoints.commit(unit, 1).await.expect("the next unit works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_a_rolled_back_or_dropped_unit_are_discarded() {
    let db = fresh_with_tables("CREATE TABLE model (n INTEGER NOT NULL)").await;
    let (checkpoints, mut claim) = claimed(&db, "model").await;
    let (mut unit, _) = begin(&checkpoints, &mut claim).await;
    checkpoints
        .context(&mut unit)
        .execute("INSERT INTO model VALUES (1)", [])
        .expect("insert");
    checkpoints.rollback(unit).await.expect("rollback");
    let (mut unit, _) = begin(&checkpoints, &mut claim).await;
    checkpoints
        .context(&mut unit)
        .execute("INSERT INTO model VALUES (2)", [])
        .expect("insert");
    drop(unit);
    let (mut unit, _) = begin(&checkpoints, &mut claim).await;
    checkpoints
        .context(&mut unit)
        .execute("INSERT INTO model VALUES (3)", [])
        .expect("insert");
    checkpoints.commit(unit, 1).await.expect("commit");
    let rows: Vec<i64> = select(&db.store, "SELECT n FROM model", |row| row.get(0)).await;
    assert_eq!(rows, [3], "only the committed unit's write is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handlers_lock_error_is_transient_and_its_constraint_error_is_not() {
    let db = fresh().await;
    let checkpoints = db.store.checkpoints();
    let busy = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(busy);
    assert!(checkpoints.is_transient(boxed.as_ref()));
    let unique =
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE), None);
    assert!(!checkpoints.is_transient(&unique));
    assert!(!checkpoints.is_transient(&std::fmt::Error));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_store_cannot_claim() {
    let db = fresh().await;
    let reader = SqliteStore::open_read_only(db.path()).await.expect("open read-only");
    match reader.checkpoints().claim("nope").await {
        Err(CheckpointError::Backend(error)) => assert!(
            matches!(error.downcast_ref::<SqliteError>(), Some(SqliteError::ReadOnly { .. })),
            "{error}"
        ),
        other => panic!("expected a read-only error, got {:?}", other.map(|claim| claim.epoch())),
    }
    assert_eq!(reader.checkpoints().checkpoint("nope").await.expect("checkpoint"), 0);
}

/// The files in the database's directory.
fn files_beside(db: &crate::support::TestDb) -> Vec<std::path::PathBuf> {
    let directory = db.path().parent().expect("a directory").to_owned();
    let mut files: Vec<_> = std::fs::read_dir(directory)
        .expect("list the directory")
        .map(|entry| entry.expect("an entry").path())
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_status_creates_no_file_and_works_on_a_read_only_store() {
    let db = fresh().await;
    let checkpoints = db.store.checkpoints();
    let before = files_beside(&db);
    assert_eq!(
        checkpoints.claim_status("never claimed").await.expect("status"),
        ClaimStatus::Free
    );
    assert_eq!(files_beside(&db), before, "asking left no claim file behind");

    let claim = checkpoints.claim("watched").await.expect("claim");
    let reader = SqliteStore::open_read_only(db.path()).await.expect("open read-only");
    let status = |store: SqliteStore| async move { store.checkpoints().claim_status("watched").await.expect("status") };
    assert_eq!(
        status(reader.clone()).await,
        ClaimStatus::Held,
        "seen by a read-only store"
    );
    assert_eq!(
        status(db.store.clone()).await,
        ClaimStatus::Held,
        "asking again changes nothing"
    );
    drop(claim);
    assert_eq!(status(reader).await, ClaimStatus::Free, "released with the claim");
    assert_eq!(status(db.store.clone()).await, ClaimStatus::Free);
}

/// Checks take a shared lock for an instant: checks at once never see each other as a claim,
/// and a claim taken meanwhile waits them out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_checks_at_once_do_not_see_each_other_and_do_not_stop_a_claim() {
    let db = fresh().await;
    let checkpoints = db.store.checkpoints();
    drop(checkpoints.claim("busy").await.expect("claim once, so the file exists"));
    let ask = |times: usize| {
        let checkpoints = checkpoints.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::with_capacity(times);
            for _ in 0..times {
                statuses.push(checkpoints.claim_status("busy").await.expect("status"));
            }
            statuses
        })
    };
    let askers: Vec<_> = (0..8).map(|_| ask(200)).collect();
    for asker in askers {
        let statuses = asker.await.expect("asker");
        assert!(
            statuses.iter().all(|status| *status == ClaimStatus::Free),
            "{statuses:?}"
        );
    }

    let askers: Vec<_> = (0..4).map(|_| ask(200)).collect();
    let claim = tokio::time::timeout(Duration::from_secs(10), checkpoints.claim("busy"))
        .await
        .expect("claimed within 10 s while checks ran")
        .expect("claim");
    assert_eq!(claim.epoch(), 2);
    assert_eq!(
        checkpoints.claim_status("busy").await.expect("status"),
        ClaimStatus::Held
    );
    drop(claim);
    for asker in askers {
        asker.await.expect("asker");
    }
    assert_eq!(
        checkpoints.claim_status("busy").await.expect("status"),
        ClaimStatus::Free
    );
}
