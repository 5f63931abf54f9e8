//! The projection runner while connections are cut under it: claims stay exclusive, nothing is
//! lost or applied twice, and runs ride the faults out by themselves.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use es_core::{
    async_trait, CheckpointStore, DecodedEvent, EventStore, ExpectedVersion, HandlerError, Projection, ProjectionError,
    ProjectionRunner, StreamId,
};
use es_postgres::PostgresStore;
use es_test_support::{TestSchema, TestServer};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::domain::CaseEvent;
use crate::support::{connect_options, event, fault_runner_options, in_schema, knob, schema, store_on_pool, Rng};

/// Counts the events of each case and logs which runner handled each position.
struct Tally {
    runner: String,
}

#[async_trait]
impl Projection for Tally {
    const NAME: &'static str = "tally";
    type Event = CaseEvent;
    type Context = PgConnection;

    async fn handle(&self, db: &mut PgConnection, event: &DecodedEvent<CaseEvent>) -> Result<(), HandlerError> {
        let position = i64::try_from(event.envelope.position)?;
        sqlx::query("INSERT INTO tally_log (position, runner) VALUES ($1, $2)")
            .bind(position)
            .bind(&self.runner)
            .execute(&mut *db)
            .await?;
        sqlx::query(
            "INSERT INTO tally (stream, ticks) VALUES ($1, 1)
             ON CONFLICT (stream) DO UPDATE SET ticks = tally.ticks + 1",
        )
        .bind(&event.envelope.stream.aggregate_id)
        .execute(&mut *db)
        .await?;
        Ok(())
    }

    async fn reset(&self, db: &mut PgConnection) -> Result<(), HandlerError> {
        sqlx::query("DELETE FROM tally_log").execute(&mut *db).await?;
        sqlx::query("DELETE FROM tally").execute(&mut *db).await?;
        Ok(())
    }
}

async fn create_tables(schema: &TestSchema) {
    in_schema(
        schema,
        "CREATE TABLE tally_log (position bigint PRIMARY KEY, runner text NOT NULL);
         CREATE TABLE tally (stream text PRIMARY KEY, ticks bigint NOT NULL);",
    )
    .await;
}

/// The schema's store on a pool whose connections carry the schema's name, so the test can cut
/// exactly this test's connections.
async fn named_store(schema: &TestSchema) -> PostgresStore {
    let options = connect_options().application_name(&format!("es test {}", schema.schema()));
    store_on_pool(PgPoolOptions::new().max_connections(16), options, schema.schema()).await
}

/// Which connections the fault injector cuts.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// The connection holding the projection's claim.
    ClaimHolder,
    /// Every connection of the test: writers, readers, units, claims, listeners.
    Everything,
}

/// Terminates the connections `cut` names; returns how many.
async fn cut(admin: &PgPool, schema: &str, cut: Cut) -> i64 {
    let sql = match cut {
        Cut::ClaimHolder => {
            "SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity a
             JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'advisory' AND l.granted
             WHERE a.application_name = 'es claim ' || $1 || '.tally'"
        }
        Cut::Everything => {
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()"
        }
    };
    sqlx::query_scalar(sql)
        .bind(schema)
        .fetch_one(admin)
        .await
        .expect("terminating connections")
}

/// Writers appending one note at a time to their own streams until told to stop; appends that
/// fail (their connection was cut) are simply tried again.
fn writers(
    store: &PostgresStore,
    count: usize,
    pause: Duration,
    stop: &Arc<AtomicBool>,
    written: &Arc<AtomicU64>,
) -> Vec<JoinHandle<()>> {
    (0..count)
        .map(|writer| {
            let (store, stop, written) = (store.clone(), Arc::clone(stop), Arc::clone(written));
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let stream = StreamId::new("case", format!("w{writer}-{}", n % 20));
                    // A version-1 note, upcast on the way to the projection.
                    let note = event("NoteAdded", serde_json::json!({ "text": format!("note {n}") }));
                    if store.append(&stream, ExpectedVersion::Any, vec![note]).await.is_ok() {
                        written.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                    tokio::time::sleep(pause).await;
                }
            })
        })
        .collect()
}

/// A slot that keeps one runner going: when its runner loses the claim, a new runner (with a
/// new name) takes its place and waits for the claim. Returns every run's outcome but the last.
fn runner_slot(
    store: &PostgresStore,
    slot: &'static str,
    shutdown: &watch::Receiver<bool>,
) -> JoinHandle<Vec<Result<(), ProjectionError>>> {
    let (store, mut shutdown) = (store.clone(), shutdown.clone());
    tokio::spawn(async move {
        let mut ended = Vec::new();
        for generation in 0.. {
            let runner = ProjectionRunner::new(
                Tally {
                    runner: format!("{slot}{generation}"),
                },
                store.clone(),
                store.checkpoints(),
            )
            .with_options(fault_runner_options());
            let wake_up = loop {
                match store.wake_up().await {
                    Ok(wake_up) => break wake_up,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            let stop = shutdown.clone();
            let result = runner
                .run(wake_up, async move {
                    let mut stop = stop;
                    let _ = stop.wait_for(|stop| *stop).await;
                })
                .await;
            if *shutdown.borrow_and_update() {
                result.expect("a run that is shut down returns Ok");
                break;
            }
            ended.push(result);
        }
        ended
    })
}

/// Waits until the projection's checkpoint reaches the head of the store, once the writers
/// stopped. The head is read from the table itself, not through
/// `read_all`'s bound, which a unit of work in flight holds back: a runner whose empty batch is
/// open would look caught up with events still to come.
async fn wait_caught_up(store: &PostgresStore) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, head) = stored_after(store, 0).await;
        let checkpoint = store.checkpoints().checkpoint("tally").await.expect("checkpoint");
        if checkpoint == head {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the runner is stuck at {checkpoint}, head {head}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many events are stored after `position`, and the last one's position (`position` when
/// there are none): read from the table, for use once every writer has stopped.
async fn stored_after(store: &PostgresStore, position: u64) -> (u64, u64) {
    let (count, last): (i64, Option<i64>) = sqlx::query_as(&format!(
        "SELECT count(*), max(position) FROM \"{}\".events WHERE position > $1",
        store.schema()
    ))
    .bind(position as i64)
    .fetch_one(store.pool())
    .await
    .expect("counting the stored events");
    (count as u64, last.map_or(position, |last| last as u64))
}

/// The runners named in the log, in position order, with repeats in a row collapsed.
async fn runner_sequence(store: &PostgresStore) -> Vec<String> {
    let mut runners: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT runner FROM \"{}\".tally_log ORDER BY position",
        store.schema()
    ))
    .fetch_all(store.pool())
    .await
    .expect("log");
    runners.dedup();
    runners
}

/// The read model, as (stream, ticks) rows.
async fn tally(store: &PostgresStore) -> Vec<(String, i64)> {
    sqlx::query_as(&format!(
        "SELECT stream, ticks FROM \"{}\".tally ORDER BY stream",
        store.schema()
    ))
    .fetch_all(store.pool())
    .await
    .expect("tally")
}

/// The same projection rebuilt from scratch into another schema.
async fn rebuilt_tally(events: &PostgresStore) -> Vec<(String, i64)> {
    let other = schema().await;
    create_tables(&other).await;
    let runner = ProjectionRunner::new(
        Tally {
            runner: "rebuild".into(),
        },
        events.clone(),
        other.checkpoints(),
    );
    runner.rebuild(|_| {}).await.expect("rebuild");
    tally(&other).await
}

/// A fresh schema with the read-model tables, its store on named connections, and the switches
/// that stop the writers and shut the runners down.
struct Scene {
    schema: crate::support::Shared,
    store: PostgresStore,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    shutdown_tx: watch::Sender<bool>,
    shutdown: watch::Receiver<bool>,
}

impl Scene {
    async fn new() -> Self {
        let schema = schema().await;
        create_tables(&schema).await;
        let store = named_store(&schema).await;
        let (shutdown_tx, shutdown) = watch::channel(false);
        Self {
            schema,
            store,
            stop: Arc::default(),
            written: Arc::default(),
            shutdown_tx,
            shutdown,
        }
    }

    /// Cuts the `target` connections every 100-300 ms (random, from `seed`) for `duration`;
    /// without a target it only waits. Returns how many connections were cut.
    async fn cut_for(&self, duration: Duration, seed: u64, target: Option<Cut>) -> i64 {
        let mut rng = Rng::new(seed);
        let mut cuts = 0;
        let started = Instant::now();
        while started.elapsed() < duration {
            tokio::time::sleep(Duration::from_millis(rng.range(100..300))).await;
            if let Some(target) = target {
                cuts += cut(self.schema.pool(), self.store.schema(), target).await;
            }
        }
        cuts
    }

    async fn stop_writers(&self, writing: Vec<JoinHandle<()>>) {
        self.stop.store(true, Ordering::Relaxed);
        for writer in writing {
            writer.await.expect("writer");
        }
    }
}

/// Two runner slots compete for the projection while `target` connections are cut every
/// 100-300 ms and 4 writers append; then checks every promise of the runner.
async fn two_runners_under_cuts(target: Cut) {
    let scene = Scene::new().await;
    let store = &scene.store;
    let slots = [
        runner_slot(store, "a", &scene.shutdown),
        runner_slot(store, "b", &scene.shutdown),
    ];
    let writing = writers(store, 4, Duration::from_millis(2), &scene.stop, &scene.written);
    let cuts = scene.cut_for(Duration::from_secs(4), 0x5eed, Some(target)).await;
    scene.stop_writers(writing).await;
    wait_caught_up(store).await;
    scene.shutdown_tx.send(true).expect("shutdown");
    let mut ended = Vec::new();
    for slot in slots {
        ended.extend(slot.await.expect("runner slot"));
    }

    assert!(cuts > 0, "the test cut no connection");
    for result in &ended {
        match result {
            Err(ProjectionError::ClaimLost { .. }) => {}
            other => panic!("a run may only end early by losing its claim, got {other:?}"),
        }
    }
    // A runner that lost its claim never commits again: along the positions, each runner's
    // batches form one run, and runs follow each other without returning to an earlier runner.
    let sequence = runner_sequence(store).await;
    let mut seen = std::collections::HashSet::new();
    for runner in &sequence {
        assert!(
            seen.insert(runner),
            "runner {runner} committed again after another runner: {sequence:?}"
        );
    }
    let (events, _) = stored_after(store, 0).await;
    let logged: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{}\".tally_log", store.schema()))
        .fetch_one(store.pool())
        .await
        .expect("count");
    assert_eq!(logged as u64, events, "every event handled exactly once");
    // An append whose connection was cut after its commit is stored but not acknowledged.
    assert!(
        events >= scene.written.load(Ordering::Relaxed),
        "every acknowledged append is stored"
    );
    assert_eq!(
        tally(store).await,
        rebuilt_tally(store).await,
        "the read model equals a rebuild"
    );
    eprintln!(
        "{target:?}: {cuts} connections cut, {events} events, {} runs lost their claim, runners {sequence:?}",
        ended.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cutting_the_claim_connection_never_leaves_two_runners_committing() {
    two_runners_under_cuts(Cut::ClaimHolder).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cutting_every_connection_loses_nothing_and_keeps_one_runner() {
    two_runners_under_cuts(Cut::Everything).await;
}

/// One runner while 8 writers append and every connection of the test is cut every 100-300 ms:
/// the runner makes progress during the faults, reports its lag when they end (a small part of
/// what was written, on a machine with CPU to spare: see docs/RELIABILITY.md), and catches up by
/// itself afterwards, without being restarted.
///
/// `ES_FAULT_SECONDS` (default 5) sets how long connections are cut, `ES_FAULT_WRITER_PAUSE_MS`
/// (default 5) the pause of each writer between appends (0: flat out, which on a 2-core machine
/// leaves the runner too little CPU to keep up even without faults), and `ES_FAULT_CUT=0` turns
/// the cuts off, for a baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_keeps_up_while_connections_are_cut() {
    let scene = Scene::new().await;
    let store = &scene.store;
    let slot = runner_slot(store, "only", &scene.shutdown);
    let pause = Duration::from_millis(knob("ES_FAULT_WRITER_PAUSE_MS", 5));
    let writing = writers(store, 8, pause, &scene.stop, &scene.written);
    let seconds = knob("ES_FAULT_SECONDS", 5);
    let target = (knob("ES_FAULT_CUT", 1) != 0).then_some(Cut::Everything);
    let cuts = scene.cut_for(Duration::from_secs(seconds), 0xfa17, target).await;
    scene.stop_writers(writing).await;
    // Measured on the test's own connections, which were not cut.
    let checkpoint = scene
        .schema
        .checkpoints()
        .checkpoint("tally")
        .await
        .expect("checkpoint");
    let (behind, _) = stored_after(scene.schema.store(), checkpoint).await;
    let (stored, _) = stored_after(scene.schema.store(), 0).await;
    let caught_up = Instant::now();
    wait_caught_up(store).await;
    let catch_up_seconds = caught_up.elapsed().as_secs_f64();
    scene.shutdown_tx.send(true).expect("shutdown");
    let ended = slot.await.expect("runner slot");

    assert!(ended.is_empty(), "the only runner must not stop by itself: {ended:?}");
    assert_eq!(runner_sequence(store).await, ["only0"], "one runner did all the work");
    assert_eq!(
        tally(store).await,
        rebuilt_tally(store).await,
        "the read model equals a rebuild"
    );
    let share = behind as f64 / stored.max(1) as f64;
    eprintln!(
        "faults: {seconds} s, {cuts} connections cut, 8 writers pausing {pause:?}, {stored} events written, lag \
         when the faults ended: {behind} events ({:.1}% of those written), caught up {catch_up_seconds:.2} s later",
        share * 100.0
    );
    // How far behind depends on how much CPU the runner gets (docs/RELIABILITY.md has the
    // figures of a quiet machine); what must hold on any machine is that it made progress.
    assert!(
        behind < stored,
        "the runner handled nothing of {stored} events while connections were cut"
    );
}

/// `run` is called once while the server is stopped (as a crash would: `-m immediate`) and
/// started again 3 seconds later: it keeps running through the outage and catches up
/// afterwards by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_rides_out_a_server_restart() {
    let server = Arc::new(
        tokio::task::spawn_blocking(TestServer::start)
            .await
            .expect("start task")
            .expect("a server of the test's own"),
    );
    let test_schema = server.schema().await.expect("schema");
    create_tables(&test_schema).await;
    let store = test_schema.store().clone();
    let (stop, written) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let writing = writers(&store, 4, Duration::from_millis(5), &stop, &written);
    let (shutdown_tx, mut shutdown) = watch::channel(false);
    let running = {
        let (store, wake_up) = (store.clone(), store.wake_up().await.expect("wake-up"));
        tokio::spawn(async move {
            let runner = ProjectionRunner::new(Tally { runner: "only".into() }, store.clone(), store.checkpoints())
                .with_options(fault_runner_options());
            runner
                .run(wake_up, async move {
                    let _ = shutdown.wait_for(|stop| *stop).await;
                })
                .await
        })
    };

    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = written.load(Ordering::Relaxed);
    let restart = Arc::clone(&server);
    tokio::task::spawn_blocking(move || {
        restart.stop()?;
        std::thread::sleep(Duration::from_secs(3));
        restart.restart()
    })
    .await
    .expect("restart task")
    .expect("stop and start the server");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writing {
        writer.await.expect("writer");
    }
    assert!(
        written.load(Ordering::Relaxed) > before,
        "events were written after the restart"
    );
    wait_caught_up(&store).await;
    assert!(
        !running.is_finished(),
        "run returned during the outage: {:?}",
        running.await
    );
    shutdown_tx.send(true).expect("shutdown");
    running.await.expect("runner task").expect("run returns Ok on shutdown");

    let (events, _) = stored_after(&store, 0).await;
    assert_eq!(runner_sequence(&store).await, ["only"], "one run did all the work");
    assert_eq!(
        tally(&store).await,
        rebuilt_tally(&store).await,
        "the read model equals a rebuild"
    );
    eprintln!("restart: {events} events, the run survived a 3-second outage");
}

/// A read model whose tables were never created stops the runner with `ReadModelBroken`, even
/// under `Skip` and `Park`, which would otherwise pass over every event for good. Nothing is
/// committed, and the runner goes on once the tables exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_read_model_table_stops_the_runner_whatever_the_policy() {
    let schema = schema().await;
    let stream = es_core::StreamId::new("case", "missing-tables");
    let opened = event("CaseOpened", serde_json::json!({ "title": "t" }));
    schema
        .store()
        .append(&stream, es_core::ExpectedVersion::NoStream, vec![opened])
        .await
        .expect("appended");
    // Other tests of this binary hold transactions open, holding the log back: wait to see it.
    crate::support::read_all_until(schema.store(), 1).await;
    let quick = Duration::from_millis(1);
    for failure in [
        es_core::FailurePolicy::Skip {
            attempts: 1,
            backoff: quick,
        },
        es_core::FailurePolicy::Park {
            attempts: 1,
            backoff: quick,
        },
    ] {
        let runner = ProjectionRunner::new(
            Tally { runner: "r".into() },
            schema.store().clone(),
            schema.checkpoints(),
        )
        .with_options(es_core::RunnerOptions {
            failure,
            ..es_core::RunnerOptions::default()
        });
        let stopped = tokio::time::timeout(Duration::from_secs(20), runner.catch_up())
            .await
            .expect("stops in time");
        let Err(ProjectionError::ReadModelBroken { source, .. }) = stopped else {
            panic!("{failure:?}: expected ReadModelBroken, got {stopped:?}");
        };
        assert!(source.to_string().contains("does not exist"), "{source}");
        assert!(
            runner.parked().await.expect("parked").is_empty(),
            "{failure:?}: nothing parked"
        );
        let checkpoint = schema.checkpoints().checkpoint("tally").await.expect("checkpoint");
        assert_eq!(checkpoint, 0, "{failure:?}: nothing committed");
    }
    create_tables(&schema).await;
    let runner = ProjectionRunner::new(
        Tally { runner: "r".into() },
        schema.store().clone(),
        schema.checkpoints(),
    );
    runner.catch_up().await.expect("caught up");
    assert_eq!(tally(schema.store()).await, [("missing-tables".to_owned(), 1)]);
}
