//! The projection runtime on the in-memory store and read model: filtering, exactly-once
//! batches, failure policies, single active runner, rebuild, late projections, lag, live tailing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use es_core::lifecycle::{StreamChange, StreamLifecycle};
use es_core::pii::{InMemoryKeyStore, PiiStore};
use es_core::{
    async_trait, event, Aggregate, Apply, DecodedEvent, EventDescriptor, EventRegistry, EventSet, EventStore,
    ExpectedVersion, FailurePolicy, HandlerError, InMemoryReadModel, InMemoryStore, Metadata, NewEvent, PollOnly,
    Projection, ProjectionError, ProjectionRunner, Repository, RunnerOptions, StreamId,
};
use serde::{Deserialize, Serialize};

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct Deposited {
    pub cents: u64,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct Noted {
    pub text: String,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum AccountEvent {
    Deposited(Deposited),
    Noted(Noted),
}

#[derive(Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "account", event = AccountEvent)]
pub struct Account;

impl<E> Apply<E> for Account {
    fn apply(&mut self, _: &E) {}
}

/// The projection sees deposits only.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum BalanceEvent {
    Deposited(Deposited),
}

type Balances = BTreeMap<String, u64>;

/// Sums deposits per account; fails on deposits of `poison` cents while `failures_left > 0`.
#[derive(Default)]
struct BalanceProjection {
    poison: u64,
    failures_left: AtomicU32,
    handled: AtomicU32,
}

#[async_trait]
impl Projection for BalanceProjection {
    const NAME: &'static str = "balances";
    const AGGREGATE_TYPES: &'static [&'static str] = &["account"];
    const SOURCE_EVENTS: &'static [&'static [EventDescriptor]] = &[AccountEvent::EVENTS];
    type Event = BalanceEvent;
    type Context = Balances;

    async fn handle(&self, balances: &mut Balances, event: &DecodedEvent<BalanceEvent>) -> Result<(), HandlerError> {
        let BalanceEvent::Deposited(deposit) = &event.event;
        if deposit.cents == self.poison
            && self
                .failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(format!("cannot handle {} cents", deposit.cents).into());
        }
        self.handled.fetch_add(1, Ordering::SeqCst);
        *balances.entry(event.envelope.stream.aggregate_id.clone()).or_default() += deposit.cents;
        Ok(())
    }

    async fn reset(&self, balances: &mut Balances) -> Result<(), HandlerError> {
        balances.clear();
        Ok(())
    }
}

/// Deposits `cents` (and a note) in `account`; returns the position of the command's last event.
async fn deposit(store: &InMemoryStore, account: &str, cents: u64) -> u64 {
    let repo = Repository::<Account, _>::new(store.clone());
    let events = move |_: &Account| vec![Deposited { cents }.into(), Noted { text: "x".into() }.into()];
    repo.execute(account, Metadata::new(), events)
        .await
        .expect("deposit")
        .position()
}

fn small_batches(failure: FailurePolicy) -> RunnerOptions {
    RunnerOptions {
        batch_size: 3,
        poll_interval: Duration::from_millis(10),
        failure,
        ..RunnerOptions::default()
    }
}

fn expected_balances(pairs: &[(&str, u64)]) -> Balances {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[tokio::test]
async fn handles_its_events_and_skips_others_without_decoding() {
    let store = InMemoryStore::new();
    deposit(&store, "a", 5).await;
    deposit(&store, "b", 7).await;
    deposit(&store, "a", 1).await;
    // Events the projection does not handle are never decoded: one that would not decode is harmless...
    let junk = NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_name: "Noted".into(),
        schema_version: 1,
        payload: br#"{"not":"a Noted payload"}"#.to_vec(),
        metadata: Metadata::new(),
    };
    store
        .append(&StreamId::new("account", "a"), ExpectedVersion::Any, vec![junk])
        .await
        .expect("append");
    // ...and so are other aggregate types' events with a handled name.
    let foreign = NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_name: "Deposited".into(),
        schema_version: 1,
        payload: br#"{"cents":1000}"#.to_vec(),
        metadata: Metadata::new(),
    };
    store
        .append(&StreamId::new("loan", "a"), ExpectedVersion::Any, vec![foreign])
        .await
        .expect("append");

    let model = InMemoryReadModel::<Balances>::new();
    let runner = ProjectionRunner::new(BalanceProjection::default(), store.clone(), model.clone())
        .with_options(small_batches(FailurePolicy::Stop));
    let caught_up = runner.catch_up().await.expect("catch up");
    assert_eq!((caught_up.read, caught_up.handled), (8, 3));
    assert_eq!(model.read(Clone::clone), expected_balances(&[("a", 6), ("b", 7)]));
    let again = runner.catch_up().await.expect("nothing new");
    assert_eq!(
        (again.read, again.position),
        (0, caught_up.position),
        "exactly once: nothing is handled twice"
    );
}

/// Sums deposits of every aggregate type: it reads the framework's record streams too.
#[derive(Default)]
struct EveryDeposit;

#[async_trait]
impl Projection for EveryDeposit {
    const NAME: &'static str = "every-deposit";
    const SOURCE_EVENTS: &'static [&'static [EventDescriptor]] = &[AccountEvent::EVENTS];
    type Event = BalanceEvent;
    type Context = Balances;

    async fn handle(&self, balances: &mut Balances, event: &DecodedEvent<BalanceEvent>) -> Result<(), HandlerError> {
        let BalanceEvent::Deposited(deposit) = &event.event;
        *balances.entry(event.envelope.stream.aggregate_id.clone()).or_default() += deposit.cents;
        Ok(())
    }

    async fn reset(&self, balances: &mut Balances) -> Result<(), HandlerError> {
        balances.clear();
        Ok(())
    }
}

#[tokio::test]
async fn a_projection_of_all_types_passes_over_the_framework_s_own_events() {
    let store = InMemoryStore::new();
    deposit(&store, "a", 5).await;
    deposit(&store, "b", 7).await;
    let change = StreamChange::new("ops", "duplicate");
    store
        .tombstone(&StreamId::new("account", "b"), change)
        .await
        .expect("tombstone");
    let sealing = PiiStore::new(store.clone(), InMemoryKeyStore::new(), EventRegistry::new());
    sealing.forget("account/a").await.expect("forget");
    let last = deposit(&store, "c", 2).await;

    let model = InMemoryReadModel::<Balances>::new();
    let runner = ProjectionRunner::new(EveryDeposit, store.clone(), model.clone());
    let caught_up = runner.catch_up().await.expect("the framework's events are not unknown");
    assert_eq!(
        (caught_up.handled, caught_up.position),
        (3, last),
        "the deposits handled, the framework's events passed over"
    );
    assert_eq!(
        model.read(Clone::clone),
        expected_balances(&[("a", 5), ("b", 7), ("c", 2)])
    );
}

#[tokio::test]
async fn a_failing_handler_never_moves_the_checkpoint_past_its_event() {
    let store = InMemoryStore::new();
    for (account, cents) in [("a", 1), ("b", 2), ("a", 13), ("c", 4)] {
        deposit(&store, account, cents).await;
    }
    let model = InMemoryReadModel::<Balances>::new();
    let projection = BalanceProjection {
        poison: 13,
        failures_left: AtomicU32::new(u32::MAX),
        ..Default::default()
    };
    let runner = ProjectionRunner::new(projection, store.clone(), model.clone())
        .with_options(small_batches(FailurePolicy::Stop));
    let error = runner
        .catch_up()
        .await
        .expect_err("the poisoned event stops the runner");
    let ProjectionError::Handler(failure) = &error else {
        panic!("expected a handler error, got {error}");
    };
    let (position, stream) = (failure.position, &failure.stream);
    assert_eq!(
        (
            failure.event_name.as_str(),
            stream.aggregate_id.as_str(),
            failure.attempts
        ),
        ("Deposited", "a", 1)
    );
    let checkpoint = runner.lag().await.expect("lag").checkpoint;
    assert!(
        checkpoint < position,
        "checkpoint {checkpoint} must stay before the failing event {position}"
    );
    assert!(error.to_string().contains("cannot handle 13 cents"), "{error}");
    let partial = model.read(Clone::clone);
    assert!(
        partial.values().sum::<u64>() < 20,
        "the failing batch left no trace: {partial:?}"
    );

    // The fault is fixed: the same runner now completes the model, counting nothing twice.
    runner.projection().failures_left.store(0, Ordering::SeqCst);
    runner.catch_up().await.expect("fixed");
    assert_eq!(
        model.read(Clone::clone),
        expected_balances(&[("a", 14), ("b", 2), ("c", 4)])
    );
}

#[tokio::test]
async fn the_retry_policy_retries_the_batch_then_succeeds_or_stops() {
    let store = InMemoryStore::new();
    deposit(&store, "a", 13).await;
    let retry = FailurePolicy::Retry {
        attempts: 3,
        backoff: Duration::from_millis(1),
    };
    let flaky = BalanceProjection {
        poison: 13,
        failures_left: AtomicU32::new(2),
        ..Default::default()
    };
    let model = InMemoryReadModel::<Balances>::new();
    let runner = ProjectionRunner::new(flaky, store.clone(), model.clone()).with_options(small_batches(retry));
    runner.catch_up().await.expect("third try succeeds");
    assert_eq!(model.read(Clone::clone), expected_balances(&[("a", 13)]));

    let broken = BalanceProjection {
        poison: 13,
        failures_left: AtomicU32::new(10),
        ..Default::default()
    };
    let runner =
        ProjectionRunner::new(broken, store, InMemoryReadModel::<Balances>::new()).with_options(small_batches(retry));
    match runner.catch_up().await {
        Err(ProjectionError::Handler(failure)) => assert_eq!(failure.attempts, 3),
        other => panic!("expected the runner to give up after 3 attempts, got {other:?}"),
    }
}

#[tokio::test]
async fn rebuild_replays_everything_and_reports_progress() {
    let store = InMemoryStore::new();
    for n in 1..=10 {
        deposit(&store, "a", n).await;
    }
    let model = InMemoryReadModel::<Balances>::new();
    let runner = ProjectionRunner::new(BalanceProjection::default(), store.clone(), model.clone())
        .with_options(small_batches(FailurePolicy::Stop));
    runner.catch_up().await.expect("catch up");
    let mut reports = Vec::new();
    let rebuilt = runner
        .rebuild(|progress| reports.push(progress))
        .await
        .expect("rebuild");
    assert_eq!((rebuilt.read, rebuilt.handled), (20, 10));
    assert_eq!(
        model.read(Clone::clone),
        expected_balances(&[("a", 55)]),
        "reset, then replayed once"
    );
    assert_eq!(reports.last().map(|p| (p.done, p.total)), Some((20, 20)));
    assert!(
        reports.windows(2).all(|w| w[0].done < w[1].done),
        "progress grows: {reports:?}"
    );
}

#[tokio::test]
async fn a_projection_added_later_catches_up_to_the_same_state() {
    let store = InMemoryStore::new();
    let early_model = InMemoryReadModel::<Balances>::new();
    let early = ProjectionRunner::new(BalanceProjection::default(), store.clone(), early_model.clone());
    for n in 1..=50u64 {
        deposit(&store, ["a", "b", "c"][n as usize % 3], n).await;
        if n % 7 == 0 {
            early.catch_up().await.expect("incremental");
        }
    }
    early.catch_up().await.expect("final");
    let late_model = InMemoryReadModel::<Balances>::new();
    let late = ProjectionRunner::new(BalanceProjection::default(), store, late_model.clone());
    let lag = late.lag().await.expect("lag");
    assert_eq!((lag.checkpoint, lag.events_behind), (0, 100));
    assert!(lag.seconds_behind >= 0.0);
    late.catch_up().await.expect("late catch-up");
    assert_eq!(late_model.read(Clone::clone), early_model.read(Clone::clone));
    assert_eq!(late.lag().await.expect("lag").events_behind, 0);
}

/// Read-your-writes without polling: each runner's progress tells when it has handled a
/// command's events.
#[tokio::test]
async fn a_running_projection_tails_new_events_and_a_second_runner_waits() {
    const WAIT: Duration = Duration::from_secs(10);
    let store = InMemoryStore::new();
    let written = deposit(&store, "a", 1).await;
    let model = InMemoryReadModel::<Balances>::new();
    let first = ProjectionRunner::new(BalanceProjection::default(), store.clone(), model.clone());
    let second = ProjectionRunner::new(BalanceProjection::default(), store.clone(), model.clone());
    let (first_progress, second_progress) = (first.progress(), second.progress());
    let (first, second) = (Arc::new(first), Arc::new(second));
    let (stop_first, first_stopped) = tokio::sync::oneshot::channel::<()>();
    let (stop_second, second_stopped) = tokio::sync::oneshot::channel::<()>();
    let wake = store.wake_up();
    let first_task = tokio::spawn({
        let first = Arc::clone(&first);
        async move { first.run(wake, async { first_stopped.await.unwrap_or_default() }).await }
    });
    first_progress
        .wait_for(written, WAIT)
        .await
        .expect("the first runner handles it");
    assert_eq!(model.read(|m| m.values().sum::<u64>()), 1);
    let second_task = tokio::spawn({
        let second = Arc::clone(&second);
        async move {
            second
                .run(PollOnly, async { second_stopped.await.unwrap_or_default() })
                .await
        }
    });
    let written = deposit(&store, "a", 10).await;
    first_progress
        .wait_for(written, WAIT)
        .await
        .expect("the first runner tails");
    assert_eq!(model.read(|m| m.values().sum::<u64>()), 11, "read your writes");
    assert_eq!(first.projection().handled.load(Ordering::SeqCst), 2);
    assert_eq!(
        second.projection().handled.load(Ordering::SeqCst),
        0,
        "the second runner only waits"
    );

    stop_first.send(()).expect("first runs");
    first_task.await.expect("join").expect("first stops cleanly");
    let written = deposit(&store, "a", 100).await;
    second_progress
        .wait_for(written, WAIT)
        .await
        .expect("the second runner takes over");
    assert_eq!(model.read(|m| m.values().sum::<u64>()), 111);
    assert_eq!(
        second.projection().handled.load(Ordering::SeqCst),
        1,
        "the second took over"
    );
    stop_second.send(()).expect("second runs");
    second_task.await.expect("join").expect("second stops cleanly");
}

/// A runner whose `run` stopped on a failure is reported as stopped to waiters at once, though
/// the runner itself lives on (kept to read its parked events, say): they do not wait out
/// their timeout.
#[tokio::test]
async fn waiters_learn_at_once_that_run_returned_while_the_runner_lives_on() {
    let store = InMemoryStore::new();
    let poisoned = deposit(&store, "a", 13).await;
    let projection = BalanceProjection {
        poison: 13,
        failures_left: AtomicU32::new(u32::MAX),
        ..Default::default()
    };
    let runner = Arc::new(
        ProjectionRunner::new(projection, store.clone(), InMemoryReadModel::<Balances>::new())
            .with_options(small_batches(FailurePolicy::Stop)),
    );
    let progress = runner.progress();
    let running = tokio::spawn({
        let runner = Arc::clone(&runner);
        async move { runner.run(PollOnly, std::future::pending::<()>()).await }
    });
    let started = std::time::Instant::now();
    let waited = progress.wait_for(poisoned, Duration::from_secs(30)).await;
    assert!(matches!(waited, Err(es_core::WaitError::Stopped { .. })), "{waited:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert!(
        running.await.expect("joined").is_err(),
        "run returned the handler's failure"
    );
    assert_eq!(Arc::strong_count(&runner), 1, "the runner is alive, outside run");
}
