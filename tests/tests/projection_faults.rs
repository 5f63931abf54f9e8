//! How the projection runner sorts and survives failures, on the in-memory backend with faults
//! injected: transient failures are retried with smaller batches that grow back, a retry limit
//! is honoured, undecodable events and lost claims stop the runner at once, a connection error
//! under a handler is not blamed on the event, and a failing event is isolated.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use es_core::conformance::event;
use es_core::{
    async_trait, Backoff, CheckpointError, CheckpointStore, ClaimStatus, DecodedEvent, EventStore, ExpectedVersion,
    FailurePolicy, GlobalLog, HandlerError, InMemoryReadModel, InMemoryStore, PollOnly, Projection, ProjectionError,
    ProjectionRunner, RecordedEvent, RunnerOptions, StoreError, StoreResult, StreamId, Tail,
};

#[es_core::event]
#[derive(Debug, Clone)]
pub struct Tick {
    pub n: u64,
}

#[es_core::event]
#[derive(Debug, Clone)]
pub enum TickEvent {
    Tick(Tick),
}

/// A handler's own error type around its driver's error.
#[derive(Debug, thiserror::Error)]
#[error("writing the read model failed")]
struct WriteFailed(#[source] std::io::Error);

/// The positions handled, in order.
type Handled = Vec<u64>;

/// Records every tick's position; fails on tick `poison` with its own error, and on tick
/// `cut_at` (once) with a connection error.
#[derive(Default)]
struct Recorder {
    poison: Option<u64>,
    /// How many times the poison event was handed to the handler.
    poison_tries: AtomicU32,
    cut_at: Option<u64>,
    cut_done: AtomicBool,
}

#[async_trait]
impl Projection for Recorder {
    const NAME: &'static str = "recorder";
    type Event = TickEvent;
    type Context = Handled;

    async fn handle(&self, handled: &mut Handled, event: &DecodedEvent<TickEvent>) -> Result<(), HandlerError> {
        let TickEvent::Tick(tick) = &event.event;
        if Some(tick.n) == self.poison {
            self.poison_tries.fetch_add(1, Ordering::SeqCst);
            return Err(format!("tick {} is poison", tick.n).into());
        }
        if Some(tick.n) == self.cut_at && !self.cut_done.swap(true, Ordering::SeqCst) {
            // Wrapped, as handlers wrap their driver's errors: the runner looks through it.
            let cut = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
            return Err(Box::new(WriteFailed(cut)));
        }
        handled.push(event.envelope.position);
        Ok(())
    }

    async fn reset(&self, handled: &mut Handled) -> Result<(), HandlerError> {
        handled.clear();
        Ok(())
    }
}

/// The in-memory store's global log, failing the next `failures` reads as an outage would and
/// recording the size of every read.
#[derive(Default)]
struct FlakyLog {
    store: InMemoryStore,
    failures: AtomicU32,
    limits: Mutex<Vec<usize>>,
}

#[async_trait]
impl GlobalLog for FlakyLog {
    async fn read_all(&self, after: u64, limit: usize) -> StoreResult<Vec<RecordedEvent>> {
        self.limits.lock().expect("limits").push(limit);
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::unavailable(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            )));
        }
        self.store.read_all(after, limit).await
    }

    async fn tail(&self, after: u64) -> StoreResult<Tail> {
        self.store.tail(after).await
    }
}

impl FlakyLog {
    fn limits(&self) -> Vec<usize> {
        self.limits.lock().expect("limits").clone()
    }
}

/// An in-memory read model whose claims can be lost on demand, and whose backend recognises
/// `std::io::Error`s as its connection failing.
#[derive(Clone, Default)]
struct Losable {
    model: InMemoryReadModel<Handled>,
    lost: Arc<AtomicBool>,
}

#[async_trait]
impl CheckpointStore for Losable {
    type Context = Handled;
    type Unit = <InMemoryReadModel<Handled> as CheckpointStore>::Unit;
    type Claim = <InMemoryReadModel<Handled> as CheckpointStore>::Claim;

    async fn claim(&self, projection: &str) -> Result<Self::Claim, CheckpointError> {
        self.model.claim(projection).await
    }

    async fn begin(&self, claim: &mut Self::Claim) -> Result<(Self::Unit, u64), CheckpointError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(CheckpointError::ClaimLost {
                reason: "taken over by the test".into(),
            });
        }
        self.model.begin(claim).await
    }

    fn context<'u>(&self, unit: &'u mut Self::Unit) -> &'u mut Handled {
        self.model.context(unit)
    }

    async fn commit(&self, unit: Self::Unit, position: u64) -> Result<(), CheckpointError> {
        self.model.commit(unit, position).await
    }

    async fn checkpoint(&self, projection: &str) -> Result<u64, CheckpointError> {
        self.model.checkpoint(projection).await
    }

    async fn claim_status(&self, projection: &str) -> Result<ClaimStatus, CheckpointError> {
        self.model.claim_status(projection).await
    }

    fn is_transient(&self, error: &(dyn std::error::Error + 'static)) -> bool {
        error.is::<std::io::Error>()
    }
}

fn options(batch_size: usize, failure: FailurePolicy) -> RunnerOptions {
    RunnerOptions {
        batch_size,
        poll_interval: Duration::from_millis(5),
        failure,
        transient_retry: Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(5),
            max_attempts: None,
        },
        ..RunnerOptions::default()
    }
}

async fn ticks(store: &InMemoryStore, count: u64) -> Vec<u64> {
    let mut positions = Vec::new();
    for n in 1..=count {
        let tick = event("Tick", serde_json::json!({ "n": n }));
        store
            .append(&StreamId::new("clock", "c"), ExpectedVersion::Any, vec![tick])
            .await
            .expect("append");
    }
    for event in store.read_all(0, usize::MAX).await.expect("read") {
        positions.push(event.position);
    }
    positions
}

#[tokio::test]
async fn transient_failures_are_retried_with_smaller_batches_that_grow_back() {
    let log = FlakyLog::default();
    let positions = ticks(&log.store, 40).await;
    log.failures.store(3, Ordering::SeqCst);
    let model = InMemoryReadModel::<Handled>::new();
    let runner =
        ProjectionRunner::new(Recorder::default(), log, model.clone()).with_options(options(8, FailurePolicy::Stop));
    let done = runner.catch_up().await.expect("the outage is ridden out");
    assert_eq!(done.read, 40);
    assert_eq!(model.read(Clone::clone), positions, "every event once, in order");
    let limits = runner.events().limits();
    assert_eq!(
        limits[..7],
        [8, 4, 2, 1, 2, 4, 8],
        "halved after each failure, doubled after each success"
    );
}

#[tokio::test]
async fn a_limited_transient_retry_policy_gives_up_with_the_outage() {
    let log = FlakyLog::default();
    ticks(&log.store, 3).await;
    log.failures.store(u32::MAX, Ordering::SeqCst);
    let mut limited = options(8, FailurePolicy::Stop);
    limited.transient_retry.max_attempts = Some(3);
    let runner =
        ProjectionRunner::new(Recorder::default(), log, InMemoryReadModel::<Handled>::new()).with_options(limited);
    let error = runner.catch_up().await.expect_err("the outage outlasts the policy");
    assert!(error.is_transient(), "{error}");
    assert!(matches!(error, ProjectionError::Store { .. }), "{error:?}");
    assert_eq!(runner.events().limits().len(), 3, "three tries in all");
}

#[tokio::test]
async fn an_undecodable_event_stops_the_runner_without_retrying() {
    let log = FlakyLog::default();
    let good = ticks(&log.store, 2).await;
    let corrupt = event("Tick", serde_json::json!({ "n": "not a number" }));
    log.store
        .append(&StreamId::new("clock", "c"), ExpectedVersion::Any, vec![corrupt])
        .await
        .expect("append");
    let model = InMemoryReadModel::<Handled>::new();
    let retry = FailurePolicy::Retry {
        attempts: 5,
        backoff: Duration::from_millis(1),
    };
    let runner = ProjectionRunner::new(Recorder::default(), log, model.clone()).with_options(options(8, retry));
    match runner.catch_up().await {
        Err(ProjectionError::Decode { source, .. }) => assert_eq!(source.version, 3, "{source}"),
        other => panic!("expected a decode error, got {other:?}"),
    }
    // No backoff and no retries of the event: one more batch commits the events before it,
    // and the event, alone in the next, stops the runner at once.
    assert_eq!(runner.events().limits().len(), 3, "{:?}", runner.events().limits());
    assert_eq!(
        model.checkpoint("recorder").await.expect("checkpoint"),
        good[1],
        "the checkpoint stays just before the event"
    );
    assert_eq!(model.read(Vec::len), 2, "the events before it are applied: {good:?}");
}

#[tokio::test]
async fn a_connection_error_under_a_handler_is_retried_not_blamed_on_the_event() {
    let store = InMemoryStore::new();
    let positions = ticks(&store, 6).await;
    let checkpoints = Losable::default();
    let projection = Recorder {
        cut_at: Some(4),
        ..Recorder::default()
    };
    // Even with the strictest handler policy, a cut connection does not stop the runner.
    let runner =
        ProjectionRunner::new(projection, store, checkpoints.clone()).with_options(options(8, FailurePolicy::Stop));
    runner.catch_up().await.expect("the cut is retried as an outage");
    assert_eq!(checkpoints.model.read(Clone::clone), positions);
}

#[tokio::test]
async fn a_failing_event_is_isolated_and_the_checkpoint_stops_just_before_it() {
    let store = InMemoryStore::new();
    let positions = ticks(&store, 20).await;
    let model = InMemoryReadModel::<Handled>::new();
    let projection = Recorder {
        poison: Some(13),
        ..Recorder::default()
    };
    let retry = FailurePolicy::Retry {
        attempts: 3,
        backoff: Duration::from_millis(1),
    };
    let runner = ProjectionRunner::new(projection, store, model.clone()).with_options(options(8, retry));
    match runner.catch_up().await {
        Err(ProjectionError::Handler(failure)) => {
            assert_eq!(failure.position, positions[12], "the failure names the poison event");
            assert_eq!(failure.attempts, 3);
        }
        other => panic!("expected the runner to stop on the poison event, got {other:?}"),
    }
    assert_eq!(model.checkpoint("recorder").await.expect("checkpoint"), positions[11]);
    assert_eq!(
        model.read(Clone::clone),
        positions[..12],
        "everything before the poison event is applied"
    );
}

#[tokio::test]
async fn a_lost_claim_stops_the_run_without_committing_again() {
    let store = InMemoryStore::new();
    let first = ticks(&store, 5).await;
    let checkpoints = Losable::default();
    let runner = ProjectionRunner::new(Recorder::default(), store.clone(), checkpoints.clone())
        .with_options(options(8, FailurePolicy::Stop));
    let running = tokio::spawn(async move { runner.run(PollOnly, std::future::pending()).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while checkpoints.model.read(Vec::len) < first.len() {
        assert!(std::time::Instant::now() < deadline, "the runner never caught up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    checkpoints.lost.store(true, Ordering::SeqCst);
    ticks(&store, 5).await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("run returns once its claim is lost")
        .expect("runner task");
    assert!(matches!(outcome, Err(ProjectionError::ClaimLost { .. })), "{outcome:?}");
    assert_eq!(
        checkpoints.model.read(Clone::clone),
        first,
        "nothing committed after the claim was lost"
    );
}

/// A batch whose time budget is spent commits what it has handled and the next one goes on
/// from there: with no budget at all, every batch commits after its first event.
#[tokio::test]
async fn a_spent_time_budget_commits_the_batch_so_far() {
    let log = FlakyLog::default();
    let positions = ticks(&log.store, 10).await;
    let model = InMemoryReadModel::<Handled>::new();
    let no_time = RunnerOptions {
        batch_time_budget: Duration::ZERO,
        ..options(100, FailurePolicy::Stop)
    };
    let runner = ProjectionRunner::new(Recorder::default(), log, model.clone()).with_options(no_time);
    let done = runner.catch_up().await.expect("caught up");
    assert_eq!((done.read, done.handled), (10, 10));
    assert_eq!(model.read(Clone::clone), positions, "every event once, in order");
    assert_eq!(
        runner.events().limits().len(),
        10,
        "one read per event: each batch is cut after its first (the last one ends at the head)"
    );
}
