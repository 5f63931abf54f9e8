//! Projections with their read model in the same file: exactly once through failures and
//! cancellation, equal to a rebuild, and one active runner per projection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use es_core::{
    async_trait, event, CheckpointStore, DecodedEvent, EventStore, ExpectedVersion, FailurePolicy, GlobalLog,
    HandlerError, PollOnly, Projection, ProjectionError, ProjectionRunner, RunnerOptions, StreamId,
};
use es_sqlite::{SqliteCheckpoints, SqliteContext, SqliteStore};
use rusqlite::params;

use crate::support::{count, event, fresh, select, wait_until, TestDb};

#[event(name = "CaseOpened")]
#[derive(Debug, Clone, PartialEq)]
pub struct CaseOpened {
    pub title: String,
}

#[event(name = "NoteAdded")]
#[derive(Debug, Clone, PartialEq)]
pub struct NoteAdded {
    pub text: String,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum CaseEvent {
    Opened(CaseOpened),
    Noted(NoteAdded),
}

/// Counts the events of each case and logs which runner handled each position; the log's
/// primary key makes a second application of an event fail.
pub struct Tally {
    pub runner: String,
    /// Fails on the event at this position, when set (not 0).
    pub fail_at: Arc<AtomicU64>,
    /// A pause per event, so a batch takes long enough to be interrupted.
    pub pause: Duration,
}

impl Tally {
    pub fn new(runner: &str) -> Self {
        Self {
            runner: runner.to_owned(),
            fail_at: Arc::default(),
            pause: Duration::ZERO,
        }
    }
}

#[async_trait]
impl Projection for Tally {
    const NAME: &'static str = "tally";
    const AGGREGATE_TYPES: &'static [&'static str] = &["case"];
    type Event = CaseEvent;
    type Context = SqliteContext;

    async fn handle(&self, db: &mut SqliteContext, event: &DecodedEvent<CaseEvent>) -> Result<(), HandlerError> {
        let position = event.envelope.position;
        if self.fail_at.load(Ordering::SeqCst) == position {
            return Err(format!("refusing the event at position {position}").into());
        }
        db.prepare_cached("INSERT INTO tally_log (position, runner) VALUES (?1, ?2)")?
            .execute(params![i64::try_from(position)?, self.runner])?;
        db.prepare_cached(
            "INSERT INTO tally (stream, ticks) VALUES (?1, 1)
             ON CONFLICT (stream) DO UPDATE SET ticks = ticks + 1",
        )?
        .execute([&event.envelope.stream.aggregate_id])?;
        if !self.pause.is_zero() {
            tokio::time::sleep(self.pause).await;
        }
        Ok(())
    }

    async fn reset(&self, db: &mut SqliteContext) -> Result<(), HandlerError> {
        db.execute_batch("DELETE FROM tally_log; DELETE FROM tally;")?;
        Ok(())
    }
}

pub async fn create_tables(store: &SqliteStore) {
    store
        .write(|db| {
            db.execute_batch(
                "CREATE TABLE tally_log (position INTEGER PRIMARY KEY, runner TEXT NOT NULL);
                 CREATE TABLE tally (stream TEXT PRIMARY KEY, ticks INTEGER NOT NULL);",
            )
        })
        .await
        .expect("read-model tables");
}

/// The read model, as (stream, ticks) rows.
pub async fn tally(store: &SqliteStore) -> Vec<(String, i64)> {
    select(store, "SELECT stream, ticks FROM tally ORDER BY stream", |row| {
        Ok((row.get(0)?, row.get(1)?))
    })
    .await
}

/// The runners named in the log, in position order, with repeats in a row collapsed.
pub async fn runner_sequence(store: &SqliteStore) -> Vec<String> {
    let log = "SELECT runner FROM tally_log ORDER BY position";
    let mut runners: Vec<String> = select(store, log, |row| row.get(0)).await;
    runners.dedup();
    runners
}

async fn logged(store: &SqliteStore) -> u64 {
    count(store, "SELECT count(*) FROM tally_log").await as u64
}

/// Appends `count` events round-robin over 10 cases (plus an event of another aggregate type
/// every 10, which the projection skips).
pub async fn write_cases(store: &SqliteStore, count: usize) {
    for n in 0..count {
        let (stream, name) = if n % 10 == 9 {
            (StreamId::new("other", "x"), "Elsewhere")
        } else {
            (StreamId::new("case", format!("c{}", n % 7)), "NoteAdded")
        };
        let payload = serde_json::json!({ "title": format!("case {n}"), "text": format!("note {n}") });
        store
            .append(&stream, ExpectedVersion::Any, vec![event(name, payload)])
            .await
            .expect("append");
    }
}

/// A runner of `tally` on the store, in batches of 32 that stop at the first handler failure.
fn runner(store: &SqliteStore, tally: Tally) -> ProjectionRunner<Tally, SqliteStore, SqliteCheckpoints> {
    ProjectionRunner::new(tally, store.clone(), store.checkpoints()).with_options(RunnerOptions {
        batch_size: 32,
        poll_interval: Duration::from_millis(20),
        failure: FailurePolicy::Stop,
        ..RunnerOptions::default()
    })
}

/// The projection rebuilt from scratch in the same file; returns the rebuilt model.
async fn rebuilt(db: &TestDb) -> Vec<(String, i64)> {
    let runner = ProjectionRunner::new(Tally::new("rebuild"), db.store.clone(), db.store.checkpoints());
    runner.rebuild(|_| {}).await.expect("rebuild");
    tally(&db.store).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_interrupted_and_resumed_equals_a_rebuild() {
    let db = fresh().await;
    create_tables(&db.store).await;
    write_cases(&db.store, 300).await;
    let head = db.store.tail(0).await.expect("tail").head_position;

    // A handler failure stops the runner before the event, with everything before it committed.
    let failing = Tally::new("first");
    failing.fail_at.store(151, Ordering::SeqCst);
    match runner(&db.store, failing).catch_up().await {
        Err(ProjectionError::Handler(failure)) => assert_eq!(failure.position, 151),
        other => panic!("expected the handler failure at 151, got {other:?}"),
    }
    let checkpoint = db.store.checkpoints().checkpoint("tally").await.expect("checkpoint");
    assert!(
        checkpoint < 151,
        "the checkpoint stays before the failing event: {checkpoint}"
    );
    let checkpoint = i64::try_from(checkpoint).expect("a position");
    let handled_before: i64 = db
        .store
        .read(move |db| {
            db.query_row(
                "SELECT count(*) FROM tally_log WHERE position > ?1",
                [checkpoint],
                |row| row.get(0),
            )
        })
        .await
        .expect("counting the log");
    assert_eq!(handled_before, 0, "nothing after the checkpoint is in the read model");

    // A run cancelled in the middle of a batch: the batch rolls back.
    let mut slow = Tally::new("second");
    slow.pause = Duration::from_millis(2);
    let cancelled = tokio::time::timeout(
        Duration::from_millis(150),
        runner(&db.store, slow).run(PollOnly, std::future::pending::<()>()),
    )
    .await;
    assert!(cancelled.is_err(), "the run was cancelled, not finished: {cancelled:?}");
    let interrupted_at = db.store.checkpoints().checkpoint("tally").await.expect("checkpoint");
    assert!(interrupted_at < head, "the run was interrupted before the head");

    // Resumed: caught up, every event handled exactly once, equal to a rebuild.
    let runner = ProjectionRunner::new(Tally::new("third"), db.store.clone(), db.store.checkpoints());
    let caught_up = runner.catch_up().await.expect("catch up");
    assert_eq!(caught_up.position, head);
    let cases = count(&db.store, "SELECT count(*) FROM events WHERE aggregate_type = 'case'").await as u64;
    assert_eq!(
        logged(&db.store).await,
        cases,
        "every event of the projection handled once"
    );
    let resumed = tally(&db.store).await;
    assert_eq!(resumed.iter().map(|(_, ticks)| ticks).sum::<i64>() as u64, cases);
    assert_eq!(resumed, rebuilt(&db).await, "the read model equals a rebuild");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_take_turns_and_never_both_commit() {
    let db = fresh().await;
    create_tables(&db.store).await;
    let (stop_a, stopped_a) = tokio::sync::oneshot::channel::<()>();
    let (stop_b, stopped_b) = tokio::sync::oneshot::channel::<()>();
    let spawn = |name: &str, stopped: tokio::sync::oneshot::Receiver<()>| {
        let (store, name) = (db.store.clone(), name.to_owned());
        tokio::spawn(async move {
            runner(&store, Tally::new(&name))
                .run(store.wake_up(), async move {
                    let _ = stopped.await;
                })
                .await
        })
    };
    let a = spawn("a", stopped_a);
    // Let `a` claim first.
    wait_for_claim(&db.store).await;
    let b = spawn("b", stopped_b);
    write_cases(&db.store, 100).await;
    wait_caught_up(&db.store).await;
    assert_eq!(runner_sequence(&db.store).await, ["a"], "only the claim holder commits");

    stop_a.send(()).expect("stop a");
    a.await.expect("runner a").expect("a stops cleanly");
    write_cases(&db.store, 100).await;
    wait_caught_up(&db.store).await;
    stop_b.send(()).expect("stop b");
    b.await.expect("runner b").expect("b stops cleanly");

    assert_eq!(
        runner_sequence(&db.store).await,
        ["a", "b"],
        "b took over when a stopped, and a never committed again"
    );
    assert_eq!(tally(&db.store).await, rebuilt(&db).await);
}

/// Waits (up to 10 s) until a runner has claimed the projection: its checkpoint row exists.
async fn wait_for_claim(store: &SqliteStore) {
    let checkpoint_rows = "SELECT count(*) FROM projection_checkpoints WHERE projection = 'tally'";
    wait_until(Duration::from_secs(10), || async {
        match count(store, checkpoint_rows).await {
            1 => Ok(()),
            _ => Err("the first runner never claimed the projection".to_owned()),
        }
    })
    .await;
}

/// Waits (up to 30 s) until the projection's checkpoint reaches the head of the store.
pub async fn wait_caught_up(store: &SqliteStore) {
    wait_until(Duration::from_secs(30), || async {
        let head = store.tail(0).await.expect("tail").head_position;
        let checkpoint = store.checkpoints().checkpoint("tally").await.expect("checkpoint");
        if checkpoint == head {
            Ok(())
        } else {
            Err(format!("the runner is stuck at {checkpoint}, head {head}"))
        }
    })
    .await;
}

/// A read model whose tables were never created (a deploy that left out its migration) stops the
/// runner with `ReadModelBroken`, whatever the failure policy: under `Skip` it would otherwise
/// pass over every event and leave the model empty for good. Nothing is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_read_model_table_stops_the_runner_whatever_the_policy() {
    let db = fresh().await;
    write_cases(&db.store, 5).await;
    let quick = Duration::from_millis(1);
    for failure in [
        FailurePolicy::Skip {
            attempts: 1,
            backoff: quick,
        },
        FailurePolicy::Park {
            attempts: 1,
            backoff: quick,
        },
        FailurePolicy::Stop,
    ] {
        let runner = ProjectionRunner::new(Tally::new("r"), db.store.clone(), db.store.checkpoints()).with_options(
            RunnerOptions {
                failure,
                ..RunnerOptions::default()
            },
        );
        let stopped = tokio::time::timeout(Duration::from_secs(20), runner.catch_up())
            .await
            .expect("stops in time");
        match stopped {
            Err(ProjectionError::ReadModelBroken {
                position, ref source, ..
            }) => {
                assert!(position > 0);
                assert!(source.to_string().contains("no such table"), "{source}");
                let message = stopped.as_ref().map(|_| ()).unwrap_err().to_string();
                assert!(message.contains("create its tables"), "{message}");
            }
            other => panic!("{failure:?}: expected ReadModelBroken, got {other:?}"),
        }
        let checkpoint = db.store.checkpoints().checkpoint("tally").await.expect("checkpoint");
        assert_eq!(checkpoint, 0, "{failure:?}: nothing committed");
        assert!(
            runner.parked().await.expect("parked").is_empty(),
            "{failure:?}: nothing parked"
        );
    }
    // Once the tables exist, the same runner goes on.
    create_tables(&db.store).await;
    let runner = ProjectionRunner::new(Tally::new("r"), db.store.clone(), db.store.checkpoints());
    runner.catch_up().await.expect("caught up");
    assert_eq!(logged(&db.store).await, 5, "every case event handled");
}
