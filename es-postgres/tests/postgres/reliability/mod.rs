//! Reliability under faults and load (issue 13): writers record every append in a history,
//! projections run, faults strike (a chaos proxy, server restarts, killed processes, a full
//! disk), and afterwards the history is checked against the store and the read models against
//! a rebuild. Figures go to docs/RELIABILITY.md; `scripts/reliability` runs the long versions.
//!
//! Knobs (environment): `ES_RELIABILITY_SECONDS` (default 4), how long the load runs under
//! faults; `ES_RELIABILITY_RESTARTS` (default 1); `ES_RELIABILITY_KILLS` (default 6).

mod disk_full;
mod killed_writer;
mod proxy_faults;
mod restart;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use es_core::{
    async_trait, CheckpointStore, DecodedEvent, HandlerError, Metadata, Projection, ProjectionError, ProjectionRunner,
    StreamId,
};
use es_postgres::PostgresStore;
use es_test_support::history::{Batch, History, Outcome, Report};
use es_test_support::load::{Appenders, Tally, MARKER};
use es_test_support::Rng;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgConnection;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::domain::{note, CaseEvent, Cases};
pub use crate::support::knob;
use crate::support::{fault_runner_options, in_schema, store_on_pool};

/// How long the load runs under faults.
pub fn load_time() -> Duration {
    Duration::from_secs(knob("ES_RELIABILITY_SECONDS", 4))
}

/// The bound of a scenario: a minute for set-up and checks, plus its load.
pub fn bound(load: Duration) -> Duration {
    Duration::from_secs(60) + load * 3
}

/// A store on `direct`'s schema with a pool of its own (24 connections) connecting with
/// `options`, that gives up waiting for a connection after `acquire`.
pub async fn store_on(options: PgConnectOptions, direct: &PostgresStore, acquire: Duration) -> PostgresStore {
    let pool = PgPoolOptions::new().max_connections(24).acquire_timeout(acquire);
    store_on_pool(pool, options, direct.schema()).await
}

/// Counts the events of each stream.
struct StreamCounts;

/// One row per event handled: a second handling would show as a second row.
struct EventLog;

#[async_trait]
impl Projection for StreamCounts {
    const NAME: &'static str = "rel_counts";
    type Event = CaseEvent;
    type Context = PgConnection;

    async fn handle(&self, db: &mut PgConnection, event: &DecodedEvent<CaseEvent>) -> Result<(), HandlerError> {
        sqlx::query(
            "INSERT INTO rel_counts (stream, events) VALUES ($1, 1)
             ON CONFLICT (stream) DO UPDATE SET events = rel_counts.events + 1",
        )
        .bind(event.envelope.stream.to_string())
        .execute(&mut *db)
        .await?;
        Ok(())
    }

    async fn reset(&self, db: &mut PgConnection) -> Result<(), HandlerError> {
        sqlx::query("DELETE FROM rel_counts").execute(&mut *db).await?;
        Ok(())
    }
}

#[async_trait]
impl Projection for EventLog {
    const NAME: &'static str = "rel_log";
    type Event = CaseEvent;
    type Context = PgConnection;

    async fn handle(&self, db: &mut PgConnection, event: &DecodedEvent<CaseEvent>) -> Result<(), HandlerError> {
        let envelope = &event.envelope;
        sqlx::query("INSERT INTO rel_log (position, event_id, stream, version) VALUES ($1, $2, $3, $4)")
            .bind(i64::try_from(envelope.position)?)
            .bind(envelope.event_id)
            .bind(envelope.stream.to_string())
            .bind(i64::try_from(envelope.version)?)
            .execute(&mut *db)
            .await?;
        Ok(())
    }

    async fn reset(&self, db: &mut PgConnection) -> Result<(), HandlerError> {
        sqlx::query("DELETE FROM rel_log").execute(&mut *db).await?;
        Ok(())
    }
}

/// Creates the read-model tables of both projections in `store`'s schema.
pub async fn create_tables(store: &PostgresStore) {
    in_schema(
        store,
        "CREATE TABLE rel_counts (stream text PRIMARY KEY, events bigint NOT NULL);
         CREATE TABLE rel_log (position bigint NOT NULL, event_id uuid NOT NULL, stream text NOT NULL,
                               version bigint NOT NULL);",
    )
    .await;
}

/// Both read models of `store`'s schema, sorted.
async fn models(store: &PostgresStore) -> (Vec<(String, i64)>, Vec<(i64, Uuid, String, i64)>) {
    let s = store.schema();
    let counts = sqlx::query_as(&format!(
        "SELECT stream, events FROM \"{s}\".rel_counts ORDER BY stream"
    ))
    .fetch_all(store.pool())
    .await
    .expect("rel_counts");
    let log = sqlx::query_as(&format!(
        "SELECT position, event_id, stream, version FROM \"{s}\".rel_log ORDER BY position, event_id"
    ))
    .fetch_all(store.pool())
    .await
    .expect("rel_log");
    (counts, log)
}

/// Runs `projection` once, from the first wake-up it can get until shutdown.
fn run<P>(
    projection: P,
    store: &PostgresStore,
    shutdown: &watch::Receiver<bool>,
) -> JoinHandle<Result<(), ProjectionError>>
where
    P: Projection<Context = PgConnection> + 'static,
{
    let (store, mut shutdown) = (store.clone(), shutdown.clone());
    tokio::spawn(async move {
        let wake_up = loop {
            match store.wake_up().await {
                Ok(wake_up) => break wake_up,
                Err(_) if *shutdown.borrow() => return Ok(()),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let runner =
            ProjectionRunner::new(projection, store.clone(), store.checkpoints()).with_options(fault_runner_options());
        runner
            .run(wake_up, async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            })
            .await
    })
}

/// Writers executing `note` commands through a [`Repository`](es_core::Repository) on 8 shared
/// cases, each with a command id of its own, sent again with the same id when its answer was
/// lost (the repository must recognise it). Every send is recorded in `history`.
fn commanders(store: &PostgresStore, history: &History, stop: &Arc<AtomicBool>, seed: u64) -> Vec<JoinHandle<Tally>> {
    (0..4u64)
        .map(|writer| {
            let (cases, history, stop) = (Cases::new(store.clone()), history.clone(), Arc::clone(stop));
            tokio::spawn(async move {
                let mut rng = Rng::new(seed ^ (writer + 101));
                let mut tally = Tally::default();
                while !stop.load(Ordering::Relaxed) {
                    let case = format!("cmd-{}", rng.range(0..8));
                    let command = Uuid::now_v7();
                    let batch = Batch::of_command(&StreamId::new("case", case.as_str()), command, 1);
                    let text = format!("{MARKER} c{writer} {command}");
                    for _send in 0..3 {
                        let attempt = history.attempt(&batch);
                        let metadata = Metadata::new().with_command_id(command);
                        let result = cases.execute(case.as_str(), metadata, note(&text)).await;
                        let outcome = Outcome::of_command(&result);
                        tally.count_command(&result);
                        attempt.finish(outcome.clone());
                        if !outcome.is_unknown() || stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                tally
            })
        })
        .collect()
}

/// The largest lag seen: events behind and seconds behind, over both projections.
#[derive(Debug, Default, Clone, Copy)]
pub struct MaxLag {
    pub events: u64,
    pub seconds: f64,
    pub samples: u64,
}

/// Samples both projections' lag every 200 ms through `direct` until `stop`.
fn sample_lag(direct: &PostgresStore, stop: &Arc<AtomicBool>) -> JoinHandle<MaxLag> {
    let (direct, stop) = (direct.clone(), Arc::clone(stop));
    tokio::spawn(async move {
        let counts = ProjectionRunner::new(StreamCounts, direct.clone(), direct.checkpoints());
        let log = ProjectionRunner::new(EventLog, direct.clone(), direct.checkpoints());
        let mut max = MaxLag::default();
        while !stop.load(Ordering::Relaxed) {
            for lag in [counts.lag().await, log.lag().await].into_iter().flatten() {
                max.events = max.events.max(lag.events_behind);
                max.seconds = max.seconds.max(lag.seconds_behind);
                max.samples += 1;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        max
    })
}

/// 8 writers (4 appending batches with expected versions, 4 executing commands) and 2
/// projections at work on a store, with the lag sampled on a direct one.
pub struct Load {
    history: History,
    stop: Arc<AtomicBool>,
    writers: Vec<JoinHandle<Tally>>,
    runs: Vec<(&'static str, JoinHandle<Result<(), ProjectionError>>)>,
    shutdown: watch::Sender<bool>,
    lag_stop: Arc<AtomicBool>,
    lag: JoinHandle<MaxLag>,
    tally: Tally,
}

impl Load {
    /// Starts the load on `store`; `direct` reaches the same schema without faults. The schema
    /// needs [`create_tables`].
    pub fn start(store: &PostgresStore, direct: &PostgresStore, seed: u64) -> Self {
        let (history, stop) = (History::new(), Arc::new(AtomicBool::new(false)));
        // Two send a batch whose answer was lost again (the store must recognise it), two move
        // on (reading must tell whether it was stored).
        let resending = Appenders {
            writers: 2,
            batch: 1..6,
            seed,
            ..Appenders::default()
        };
        let moving_on = Appenders {
            resend: 0,
            seed: seed ^ 0xff,
            ..resending.clone()
        };
        let mut writers = resending.spawn(store, &history, &stop);
        writers.extend(moving_on.spawn(store, &history, &stop));
        writers.extend(commanders(store, &history, &stop, seed));
        let (shutdown, stopping) = watch::channel(false);
        let runs = vec![
            (StreamCounts::NAME, run(StreamCounts, store, &stopping)),
            (EventLog::NAME, run(EventLog, store, &stopping)),
        ];
        let lag_stop = Arc::new(AtomicBool::new(false));
        let lag = sample_lag(direct, &lag_stop);
        Self {
            history,
            stop,
            writers,
            runs,
            shutdown,
            lag_stop,
            lag,
            tally: Tally::default(),
        }
    }

    /// Stops the writers and adds up what their attempts came to.
    pub async fn stop_writers(&mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for writer in self.writers.drain(..) {
            self.tally.add(&writer.await.expect("a writer panicked"));
        }
        self.tally
    }

    /// Stops the writers, waits for both projections to catch up (each run must still be the
    /// first one), shuts them down, and checks the history and the read models (against a
    /// rebuild into `rebuild_into`, a fresh schema of the same server).
    pub async fn finish(mut self, direct: &PostgresStore, rebuild_into: &PostgresStore) -> Figures {
        let tally = self.stop_writers().await;
        let caught_up = Instant::now();
        let mut runs = Vec::new();
        for (name, running) in self.runs {
            runs.push((name, wait_caught_up(direct, name, running).await));
        }
        let catch_up = caught_up.elapsed();
        self.lag_stop.store(true, Ordering::Relaxed);
        let max_lag = self.lag.await.expect("lag sampler");
        self.shutdown.send(true).expect("shutdown");
        for (name, running) in runs {
            let result = running.await.expect("a runner task panicked");
            assert!(result.is_ok(), "projection {name} ended with {result:?}");
        }
        let mut report = self.history.check(direct).await.expect("reading the store back");
        create_tables(rebuild_into).await;
        rebuild(StreamCounts, direct, rebuild_into).await;
        rebuild(EventLog, direct, rebuild_into).await;
        let (live, rebuilt) = (models(direct).await, models(rebuild_into).await);
        report.compare_model(StreamCounts::NAME, &live.0, &rebuilt.0);
        report.compare_model(EventLog::NAME, &live.1, &rebuilt.1);
        Figures {
            tally,
            report,
            max_lag,
            catch_up,
        }
    }
}

/// Rebuilds `projection` from `events` into the read model and checkpoints of `into`.
async fn rebuild<P>(projection: P, events: &PostgresStore, into: &PostgresStore)
where
    P: Projection<Context = PgConnection> + 'static,
{
    ProjectionRunner::new(projection, events.clone(), into.checkpoints())
        .rebuild(|_| {})
        .await
        .expect("rebuild");
}

/// Waits until projection `name`'s checkpoint reaches the last stored position (read from the
/// table: `read_all`'s bound is held back by units in flight and other tests' transactions);
/// fails if its run ended meanwhile, which it must not do before shutdown.
async fn wait_caught_up(
    direct: &PostgresStore,
    name: &str,
    running: JoinHandle<Result<(), ProjectionError>>,
) -> JoinHandle<Result<(), ProjectionError>> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let head_sql = format!("SELECT coalesce(max(position), 0) FROM \"{}\".events", direct.schema());
    loop {
        let head: i64 = sqlx::query_scalar(&head_sql)
            .fetch_one(direct.pool())
            .await
            .expect("the head");
        let checkpoint = direct.checkpoints().checkpoint(name).await.expect("checkpoint");
        if running.is_finished() {
            panic!("projection {name} stopped running: {:?}", running.await);
        }
        if i64::try_from(checkpoint).is_ok_and(|checkpoint| checkpoint >= head) {
            return running;
        }
        assert!(
            Instant::now() < deadline,
            "projection {name} is stuck at {checkpoint}, head {head}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a scenario measured.
pub struct Figures {
    pub tally: Tally,
    pub report: Report,
    pub max_lag: MaxLag,
    pub catch_up: Duration,
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "writers: {}\n  history: {}\n  projections: max lag {} events / {:.2} s ({} samples), caught up {:.2} s \
             after the writers stopped",
            self.tally,
            self.report,
            self.max_lag.events,
            self.max_lag.seconds,
            self.max_lag.samples,
            self.catch_up.as_secs_f64()
        )
    }
}
