//! The Lead read models on real PostgreSQL: whatever happens to the runners (interrupted at
//! random points, started twice, tailing 8 concurrent writers, a failing handler, added late),
//! the tables end up equal to a from-scratch rebuild and to an independent in-memory oracle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use es_core::{
    async_trait, DecodedEvent, FailurePolicy, HandlerError, Projection, ProjectionError, ProjectionRunner, Repository,
    RunnerOptions,
};
use es_postgres::{PostgresCheckpoints, PostgresStore};
use es_test_support::{TestDatabase, TestSchema};
use examples::lead::Lead;
use examples::lead_models::{LeadAnalysisEvent, LeadAnalysisProjection, LeadSearchProjection, LeadTables};
use examples::lead_scenario::{play_leads, Dice, ScenarioError};
use sqlx::PgConnection;
use tokio::task::JoinSet;

mod support;

use crate::support::{rebuilt_in_memory, tables};

type Search = LeadSearchProjection<PgConnection>;
type Analysis = LeadAnalysisProjection<PgConnection>;
type Runner<P> = ProjectionRunner<P, PostgresStore, PostgresCheckpoints>;

async fn fresh_schema() -> TestSchema {
    let database = TestDatabase::get().unwrap_or_else(|error| panic!("{error}"));
    let schema = database.schema().await.expect("a fresh schema");
    schema.create_tables().await.expect("read-model tables");
    schema
}

fn options() -> RunnerOptions {
    RunnerOptions {
        batch_size: 40,
        poll_interval: Duration::from_millis(20),
        failure: FailurePolicy::Stop,
        ..RunnerOptions::default()
    }
}

/// A runner reading events from `events`, keeping its read model and checkpoint in `models`.
fn runner<P: Projection<Context = PgConnection> + Default>(
    events: &PostgresStore,
    models: &PostgresStore,
) -> Runner<P> {
    ProjectionRunner::new(P::default(), events.clone(), models.checkpoints()).with_options(options())
}

/// 8 writers, each playing `leads` leads of its own through the repository.
fn spawn_writers(store: &PostgresStore, leads: usize) -> JoinSet<Result<u64, ScenarioError>> {
    let mut writers = JoinSet::new();
    for writer in 0..8u64 {
        let repository = Repository::<Lead, _>::new(store.clone()).with_snapshot_every(5);
        writers.spawn(async move {
            let run = format!("w{writer}");
            play_leads(&repository, &run, 0..leads, writer).await
        });
    }
    writers
}

async fn join_all<E: std::fmt::Debug + 'static>(mut tasks: JoinSet<Result<u64, E>>) -> u64 {
    let mut total = 0;
    while let Some(result) = tasks.join_next().await {
        total += result.expect("task").expect("task succeeded");
    }
    total
}

async fn head(store: &PostgresStore) -> u64 {
    let sql = format!("SELECT coalesce(max(position), 0) FROM \"{}\".events", store.schema());
    let head: i64 = sqlx::query_scalar(&sql).fetch_one(store.pool()).await.expect("head");
    u64::try_from(head).expect("positive")
}

/// Catches up until the checkpoint reaches the last committed event: `read_all` may hold back
/// events while other tests' transactions are in flight.
async fn catch_up_fully<P: Projection<Context = PgConnection>>(runner: &Runner<P>, events: &PostgresStore) {
    let target = head(events).await;
    for _ in 0..1000 {
        let reached = runner.catch_up().await.expect("catch up");
        if reached.position >= target {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{} never reached position {target}", P::NAME);
}

/// Catches both projections up fully: events from `events`, tables and checkpoints in `models`.
async fn catch_up_both(events: &PostgresStore, models: &PostgresStore) {
    catch_up_fully(&runner::<Search>(events, models), events).await;
    catch_up_fully(&runner::<Analysis>(events, models), events).await;
}

/// Asserts the tables equal the in-memory oracle, then rebuilds both projections and asserts again.
async fn assert_models_are_exact(schema: &TestSchema) {
    let store = schema.store();
    let (search, analysis) = tables(store).await;
    let (expected_search, expected_analysis) = rebuilt_in_memory(store).await;
    assert!(!expected_analysis.leads.is_empty(), "the scenario produced leads");
    assert_eq!(search, expected_search, "search model");
    assert_eq!(
        analysis, expected_analysis,
        "analysis model: a follow-up counted twice or lost shows here"
    );
    runner::<Search>(store, store)
        .rebuild(|_| {})
        .await
        .expect("rebuild search");
    runner::<Analysis>(store, store)
        .rebuild(|_| {})
        .await
        .expect("rebuild analysis");
    assert_eq!(
        tables(store).await,
        (search, analysis),
        "a from-scratch rebuild gives the same tables"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_interrupted_at_random_points_and_restarted_equal_a_rebuild() {
    let schema = fresh_schema().await;
    let store = schema.store().clone();
    let writers = tokio::spawn(join_all(spawn_writers(&store, 12)));
    let mut dice = Dice::new(42);
    let mut interruptions = 0;
    while !writers.is_finished() || interruptions < 4 {
        let search = runner::<Search>(&store, &store);
        let analysis = runner::<Analysis>(&store, &store);
        let wake = store.wake_up().await.expect("listen");
        let task = tokio::spawn(async move {
            tokio::try_join!(
                search.run(wake, std::future::pending()),
                analysis.run(es_core::PollOnly, std::future::pending()),
            )
        });
        // Interrupted at a random point: mid-batch, mid-claim or idle. The task is dropped,
        // as in a crash: its open transaction never commits.
        tokio::time::sleep(Duration::from_millis(2 + dice.roll(80))).await;
        task.abort();
        match task.await {
            Err(join) => assert!(join.is_cancelled(), "{join}"),
            Ok(result) => panic!("a runner stopped on its own: {result:?}"),
        }
        interruptions += 1;
    }
    let events = writers.await.expect("writers");
    assert!(events > 500, "enough events to interrupt: {events}");
    catch_up_both(&store, &store).await;
    assert_models_are_exact(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runners_started_at_once_tailing_eight_writers() {
    let schema = fresh_schema().await;
    let store = schema.store().clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut runners = JoinSet::new();
    // Two processes, each running both projections, started at the same moment.
    for _ in 0..2 {
        let (search, analysis) = (runner::<Search>(&store, &store), runner::<Analysis>(&store, &store));
        let (wake_search, wake_analysis) = (
            store.wake_up().await.expect("listen"),
            store.wake_up().await.expect("listen"),
        );
        let (mut stop_search, mut stop_analysis) = (stopped.clone(), stopped.clone());
        runners.spawn(async move {
            tokio::try_join!(
                search.run(wake_search, async move {
                    let _ = stop_search.wait_for(|stop| *stop).await;
                }),
                analysis.run(wake_analysis, async move {
                    let _ = stop_analysis.wait_for(|stop| *stop).await;
                }),
            )
            .map(|_| 0)
        });
    }
    let events = join_all(spawn_writers(&store, 10)).await;
    assert!(events > 400, "{events}");
    // Let the live runners finish the tail, then stop them all.
    let target = head(&store).await;
    let (search_lag, analysis_lag) = (runner::<Search>(&store, &store), runner::<Analysis>(&store, &store));
    for _ in 0..1000 {
        let analysis_done = analysis_lag.lag().await.expect("lag").checkpoint >= target;
        let search_done = search_lag.lag().await.expect("lag").checkpoint >= target;
        if analysis_done && search_done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        analysis_lag.lag().await.expect("lag").checkpoint,
        target,
        "the live runners tailed everything"
    );
    stop.send(true).expect("runners listen");
    while let Some(result) = runners.join_next().await {
        result.expect("join").expect("runner stops cleanly");
    }
    assert_models_are_exact(&schema).await;
}

/// The analysis projection, failing on the events of one lead while `broken` is set.
#[derive(Default)]
struct FlakyAnalysis {
    inner: Analysis,
    poisoned_lead: String,
    broken: AtomicBool,
}

#[async_trait]
impl Projection for FlakyAnalysis {
    const NAME: &'static str = Analysis::NAME;
    const AGGREGATE_TYPES: &'static [&'static str] = Analysis::AGGREGATE_TYPES;
    const SOURCE_EVENTS: &'static [&'static [es_core::EventDescriptor]] = Analysis::SOURCE_EVENTS;
    type Event = LeadAnalysisEvent;
    type Context = PgConnection;

    async fn handle(&self, db: &mut PgConnection, event: &DecodedEvent<LeadAnalysisEvent>) -> Result<(), HandlerError> {
        // Write first, then fail: the write must roll back with the batch.
        self.inner.handle(db, event).await?;
        if self.broken.load(Ordering::SeqCst) && event.envelope.stream.aggregate_id == self.poisoned_lead {
            return Err("the analytics service is down".into());
        }
        Ok(())
    }

    async fn reset(&self, db: &mut PgConnection) -> Result<(), HandlerError> {
        self.inner.reset(db).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_handler_holds_the_checkpoint_until_fixed() {
    let schema = fresh_schema().await;
    let store = schema.store().clone();
    let repository = Repository::<Lead, _>::new(store.clone());
    play_leads(&repository, "f", 0..12, 3).await.expect("scenario");
    let projection = FlakyAnalysis {
        poisoned_lead: "f-L0005".into(),
        broken: AtomicBool::new(true),
        ..Default::default()
    };
    let flaky = ProjectionRunner::new(projection, store.clone(), store.checkpoints()).with_options(options());
    let error = loop {
        match flaky.catch_up().await {
            Err(error) => break error,
            Ok(progress) if progress.position >= head(&store).await => panic!("the poisoned lead never failed"),
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let ProjectionError::Handler(failure) = &error else {
        panic!("expected a handler failure, got {error}");
    };
    assert_eq!(failure.stream.aggregate_id, "f-L0005");
    assert!(error.to_string().contains("the analytics service is down"), "{error}");
    let checkpoint = flaky.lag().await.expect("lag").checkpoint;
    assert!(
        checkpoint < failure.position,
        "checkpoint {checkpoint} passed the failing event {}",
        failure.position
    );
    let (_, analysis) = tables(&store).await;
    assert!(
        !analysis.leads.contains_key("f-L0005"),
        "the failing batch's writes rolled back, the lead's first event included"
    );

    flaky.projection().broken.store(false, Ordering::SeqCst);
    catch_up_fully(&flaky, &store).await;
    catch_up_fully(&runner::<Search>(&store, &store), &store).await;
    assert_models_are_exact(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projection_added_after_10000_events_catches_up_to_the_same_state() {
    let events_schema = fresh_schema().await;
    let store = events_schema.store().clone();
    // The early projection tails from the start while the history is written.
    let early = Arc::new(runner::<Analysis>(&store, &store));
    let early_search = Arc::new(runner::<Search>(&store, &store));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tails = JoinSet::new();
    for tail in [0, 1] {
        let (early, early_search, mut stopped) = (Arc::clone(&early), Arc::clone(&early_search), stopped.clone());
        let wake = store.wake_up().await.expect("listen");
        tails.spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            if tail == 0 {
                early.run(wake, shutdown).await
            } else {
                early_search.run(wake, shutdown).await
            }
        });
    }
    let mut written = 0;
    while written < 10_000 {
        written += join_all(spawn_writers_tagged(&store, 25, written)).await;
    }
    stop.send(true).expect("tails listen");
    while let Some(result) = tails.join_next().await {
        result.expect("join").expect("tail");
    }
    catch_up_fully(&early, &store).await;
    catch_up_fully(&early_search, &store).await;

    // The late projection reads the same events but keeps its tables in another schema.
    let late_schema = fresh_schema().await;
    let late_store = late_schema.store().clone();
    let late = runner::<Analysis>(&store, &late_store);
    assert_eq!(late.lag().await.expect("lag").checkpoint, 0);
    catch_up_both(&store, &late_store).await;
    let early_tables = tables(&store).await;
    assert!(
        early_tables.1.leads.len() >= 1000,
        "{} leads",
        early_tables.1.leads.len()
    );
    assert_eq!(tables(&late_store).await, early_tables);
    assert_eq!(early_tables, rebuilt_in_memory(&store).await);
}

/// Like [`spawn_writers`], with run tags that never repeat across rounds.
fn spawn_writers_tagged(store: &PostgresStore, leads: usize, round: u64) -> JoinSet<Result<u64, ScenarioError>> {
    let mut writers = JoinSet::new();
    for writer in 0..8u64 {
        let repository = Repository::<Lead, _>::new(store.clone());
        writers.spawn(async move {
            let run = format!("r{round}w{writer}");
            play_leads(&repository, &run, 0..leads, writer + round).await
        });
    }
    writers
}
