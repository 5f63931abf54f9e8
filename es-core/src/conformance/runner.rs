//! Checks of a projection runner on a backend: what its failure policies, its unknown-name
//! policy and its progress do with the backend's own checkpoints and read model.
//!
//! The projection writes one mark per event (the event's `n`) through the backend's
//! [`ReadModelProbe`], so the checks see exactly which events were applied, and how often.

use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use super::{append_ok, event, fresh_stream, ReadModelProbe};
use crate::projection::{
    CatchUp, CheckpointStore, FailurePolicy, HandlerError, PollOnly, Projection, ProjectionError, ProjectionRunner,
    RunnerOptions, UnknownEvents,
};
use crate::record::DecodedEvent;
use crate::store::{EventStore, ExpectedVersion, GlobalLog, NewEvent, StreamId};
use crate::{event, EventSet};

/// The event the checks' projection handles.
#[event(name = "marked")]
#[derive(Debug, Clone)]
pub struct Marked {
    /// The mark to write.
    pub n: u64,
}

/// An event of the same aggregate that the projection leaves out on purpose.
#[event(name = "noted")]
#[derive(Debug, Clone)]
pub struct Noted;

/// What the projection handles.
#[event]
#[derive(Debug, Clone)]
pub enum MarkingEvent {
    /// A mark.
    Marked(Marked),
}

/// Everything the aggregate stores.
#[event]
#[derive(Debug, Clone)]
pub enum MarkingSource {
    /// A mark.
    Marked(Marked),
    /// A note.
    Noted(Noted),
}

/// The aggregate type of the marking events.
pub(super) const MARKING: &str = "marking";

/// Writes each event's mark through the probe; fails on the marks in `poison` while they are
/// there.
struct Marking<C, R> {
    probe: Arc<R>,
    poison: Arc<Mutex<BTreeSet<u64>>>,
    checkpoints: PhantomData<fn() -> C>,
}

#[async_trait]
impl<C, R> Projection for Marking<C, R>
where
    C: CheckpointStore + 'static,
    R: ReadModelProbe<C> + 'static,
{
    const NAME: &'static str = "conformance-marking";
    const AGGREGATE_TYPES: &'static [&'static str] = &[MARKING];
    const SOURCE_EVENTS: &'static [&'static [crate::EventDescriptor]] = &[MarkingSource::EVENTS];
    type Event = MarkingEvent;
    type Context = C::Context;

    async fn handle(&self, context: &mut C::Context, event: &DecodedEvent<MarkingEvent>) -> Result<(), HandlerError> {
        let MarkingEvent::Marked(Marked { n }) = event.event;
        if self.poison.lock().unwrap_or_else(PoisonError::into_inner).contains(&n) {
            return Err(format!("mark {n} is poisoned").into());
        }
        self.probe.write(context, n).await;
        Ok(())
    }

    async fn reset(&self, _: &mut C::Context) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// A runner of the marking projection, the poison set that fails its handler, the probe, and
/// the backend's checkpoint store and store (clones of what the runner holds).
type Started<S, C, R> = (
    ProjectionRunner<Marking<C, R>, S, C>,
    Arc<Mutex<BTreeSet<u64>>>,
    Arc<R>,
    C,
    S,
);

/// [`Started`], with the stream of the marks appended instead of the store.
type Failing<S, C, R> = (
    ProjectionRunner<Marking<C, R>, S, C>,
    Arc<Mutex<BTreeSet<u64>>>,
    Arc<R>,
    C,
    StreamId,
);

fn park(attempts: u32) -> FailurePolicy {
    FailurePolicy::Park {
        attempts,
        backoff: QUICK,
    }
}

fn skip(attempts: u32) -> FailurePolicy {
    FailurePolicy::Skip {
        attempts,
        backoff: QUICK,
    }
}

fn retry(attempts: u32) -> FailurePolicy {
    FailurePolicy::Retry {
        attempts,
        backoff: QUICK,
    }
}

fn marked(n: u64) -> NewEvent {
    event("marked", serde_json::json!({ "n": n }))
}

/// Appends `events` to a new stream of the marking aggregate.
async fn append<S: EventStore>(store: &S, events: Vec<NewEvent>) -> StreamId {
    let stream = fresh_stream(MARKING);
    append_ok(store, &stream, ExpectedVersion::NoStream, events).await;
    stream
}

async fn marks<C: CheckpointStore, R: ReadModelProbe<C>>(checkpoints: &C, probe: &R) -> Vec<u64> {
    let mut marks = probe.committed(checkpoints).await;
    marks.sort_unstable();
    marks
}

async fn catch_up<P, S, C>(runner: &ProjectionRunner<P, S, C>) -> CatchUp
where
    P: Projection,
    S: GlobalLog,
    C: CheckpointStore<Context = P::Context>,
{
    match tokio::time::timeout(Duration::from_secs(30), runner.catch_up()).await {
        Ok(Ok(done)) => done,
        Ok(Err(error)) => panic!("catch_up failed: {error}"),
        Err(_) => panic!("catch_up did not finish in 30 s"),
    }
}

const QUICK: Duration = Duration::from_millis(1);

/// A backend's parts for the runner checks: its store, its checkpoint store and a probe of the
/// read model the checkpoints' units write to. Each check is a method; the
/// [`runner_conformance_tests!`](crate::runner_conformance_tests) macro runs them all.
pub struct RunnerParts<S, C, R> {
    /// The store whose global log feeds the runner; the checks append to it too.
    pub store: S,
    /// The checkpoint store, shared by the runner and the checks.
    pub checkpoints: C,
    /// Reads the marks the projection wrote through the checkpoints' units.
    pub probe: R,
}

impl<S, C, R> RunnerParts<S, C, R>
where
    S: EventStore + GlobalLog + Clone + 'static,
    C: CheckpointStore + Clone + 'static,
    R: ReadModelProbe<C> + 'static,
{
    /// A runner of the marking projection on these parts, with `failure` and `unknown` policies.
    fn start(self, failure: FailurePolicy, unknown: UnknownEvents) -> Started<S, C, R> {
        let (probe, poison) = (Arc::new(self.probe), Arc::new(Mutex::new(BTreeSet::new())));
        let projection = Marking {
            probe: Arc::clone(&probe),
            poison: Arc::clone(&poison),
            checkpoints: PhantomData,
        };
        let options = RunnerOptions {
            batch_size: 4,
            poll_interval: Duration::from_millis(5),
            failure,
            unknown_events: unknown,
            ..RunnerOptions::default()
        };
        let runner =
            ProjectionRunner::new(projection, self.store.clone(), self.checkpoints.clone()).with_options(options);
        (runner, poison, probe, self.checkpoints, self.store)
    }

    /// A runner under `failure` whose handler fails on mark `poisoned` while it is in the
    /// returned poison set, after marks 1 to `count` were appended to a new stream (the last
    /// element).
    async fn failing_on(self, poisoned: u64, count: u64, failure: FailurePolicy) -> Failing<S, C, R> {
        let (runner, poison, probe, checkpoints, _) = self.start(failure, UnknownEvents::Fail);
        poison.lock().unwrap_or_else(PoisonError::into_inner).insert(poisoned);
        let stream = append(runner.events(), (1..=count).map(marked).collect()).await;
        (runner, poison, probe, checkpoints, stream)
    }

    /// Under `Park`, a handler that keeps failing on one event parks it after its attempts and the
    /// events after it go on; once fixed and retried, it is applied exactly once and leaves the
    /// parked events.
    pub async fn a_parked_event_is_retried_and_applied_once(self) {
        let (runner, poison, probe, checkpoints, stream) = self.failing_on(3, 6, park(2)).await;
        let done = catch_up(&runner).await;
        assert_eq!((done.handled, done.parked), (5, 1), "five handled, one parked");
        assert_eq!(
            marks(&checkpoints, &*probe).await,
            [1, 2, 4, 5, 6],
            "the events after the poison one went on"
        );
        let parked = runner
            .parked()
            .await
            .unwrap_or_else(|error| panic!("listing parked events: {error}"));
        assert_eq!(parked.len(), 1, "one parked event: {parked:?}");
        let poisoned = &parked[0];
        assert_eq!((&poisoned.stream, poisoned.version, poisoned.attempts), (&stream, 3, 2));
        assert!(
            poisoned.error.contains("mark 3 is poisoned"),
            "the handler's error is kept: {}",
            poisoned.error
        );

        assert_eq!(catch_up(&runner).await.handled, 0, "nothing is retried unasked");
        poison.lock().unwrap_or_else(PoisonError::into_inner).clear();
        let asked = runner.retry_parked(poisoned.position).await;
        assert!(
            matches!(asked, Ok(true)),
            "a retry of the parked event is accepted: {asked:?}"
        );
        catch_up(&runner).await;
        assert_eq!(
            marks(&checkpoints, &*probe).await,
            [1, 2, 3, 4, 5, 6],
            "the fixed event applied once"
        );
        assert!(matches!(runner.parked().await.as_deref(), Ok([])), "no longer parked");
        let asked = runner.retry_parked(poisoned.position).await;
        assert!(matches!(asked, Ok(false)), "nothing left to retry: {asked:?}");
        catch_up(&runner).await;
        assert_eq!(marks(&checkpoints, &*probe).await, [1, 2, 3, 4, 5, 6], "and only once");
    }

    /// A parked event that fails again on retry stays parked with one more attempt; a dropped one
    /// is gone for good.
    pub async fn a_parked_event_failing_again_stays_parked(self) {
        let (runner, _, probe, checkpoints, _) = self.failing_on(2, 3, park(1)).await;
        catch_up(&runner).await;
        let parked = runner.parked().await.unwrap_or_default();
        let [poisoned] = parked.as_slice() else {
            panic!("one parked event expected: {parked:?}")
        };
        assert!(matches!(runner.retry_parked(poisoned.position).await, Ok(true)));
        catch_up(&runner).await;
        let again = runner.parked().await.unwrap_or_default();
        assert_eq!(again.len(), 1, "still parked: {again:?}");
        assert_eq!(
            (again[0].attempts, again[0].retry_requested),
            (2, false),
            "one more attempt, request cleared"
        );
        assert!(matches!(runner.drop_parked(poisoned.position).await, Ok(true)));
        assert!(matches!(runner.parked().await.as_deref(), Ok([])));
        assert_eq!(marks(&checkpoints, &*probe).await, [1, 3]);
    }

    /// Under `Skip`, a failing event is skipped after its attempts and counted; nothing is parked.
    pub async fn a_skipped_event_is_passed_for_good(self) {
        let (runner, _, probe, checkpoints, _) = self.failing_on(2, 3, skip(2)).await;
        let done = catch_up(&runner).await;
        assert_eq!((done.handled, done.skipped, done.parked), (2, 1, 0));
        assert_eq!(marks(&checkpoints, &*probe).await, [1, 3]);
        assert!(
            matches!(runner.parked().await.as_deref(), Ok([])),
            "skipping parks nothing"
        );
    }

    /// Under `Retry`, the runner stops after the attempts, its checkpoint just before the event.
    pub async fn retries_spent_stop_the_runner(self) {
        let (runner, _, probe, checkpoints, _) = self.failing_on(3, 4, retry(2)).await;
        match runner.catch_up().await {
            Err(ProjectionError::Handler(failure)) => assert_eq!(failure.attempts, 2, "{failure}"),
            other => panic!("expected the handler's failure after 2 attempts, got {other:?}"),
        }
        assert_eq!(
            marks(&checkpoints, &*probe).await,
            [1, 2],
            "the events before it are committed"
        );
    }

    /// An event that does not decode is not retried: `Retry` stops at once with the decode error;
    /// `Park` parks it after one attempt.
    pub async fn an_event_that_does_not_decode_is_not_retried(self) {
        let retrying = FailurePolicy::Retry {
            attempts: 50,
            backoff: Duration::from_secs(60),
        };
        let (runner, _, probe, _, store) = self.start(retrying, UnknownEvents::Fail);
        let bad = event("marked", serde_json::json!({ "n": "three" }));
        append(&store, vec![marked(1), bad, marked(4)]).await;
        let stopped = tokio::time::timeout(Duration::from_secs(30), runner.catch_up()).await;
        assert!(
            matches!(stopped, Ok(Err(ProjectionError::Decode { .. }))),
            "stops at once with the decode error (a retry would wait 60 s): {stopped:?}"
        );
        let (projection, _, checkpoints) = runner.into_parts();
        let parking = RunnerOptions {
            failure: FailurePolicy::Park {
                attempts: 50,
                backoff: Duration::from_secs(60),
            },
            ..RunnerOptions::default()
        };
        let runner = ProjectionRunner::new(projection, store, checkpoints.clone()).with_options(parking);
        let done = catch_up(&runner).await;
        assert_eq!(done.parked, 1);
        let parked = runner.parked().await.unwrap_or_default();
        assert_eq!(
            parked.iter().map(|p| p.attempts).collect::<Vec<_>>(),
            [1],
            "parked after one attempt"
        );
        assert_eq!(marks(&checkpoints, &*probe).await, [1, 4]);
    }

    /// An event of a type the projection reads, with a name neither its events nor its
    /// `SOURCE_EVENTS` know, stops it by default and is skipped under `UnknownEvents::Skip`; a
    /// name of its `SOURCE_EVENTS` it does not handle is passed in both.
    pub async fn unknown_events_fail_or_are_skipped(self) {
        let (runner, _, probe, checkpoints, store) = self.start(FailurePolicy::Stop, UnknownEvents::Fail);
        let unheard = event("unheard", serde_json::json!({}));
        let stream = append(
            &store,
            vec![marked(1), event("noted", serde_json::json!(null)), unheard, marked(2)],
        )
        .await;
        match runner.catch_up().await {
            Err(ProjectionError::UnknownEvent {
                event_name,
                stream: at,
                version,
                ..
            }) => {
                assert_eq!((event_name.as_str(), &at, version), ("unheard", &stream, 3));
            }
            other => panic!("expected an unknown event error, got {other:?}"),
        }
        assert_eq!(
            marks(&checkpoints, &*probe).await,
            [1],
            "the events before the unknown one committed, none after it"
        );
        let stored = match store.read_all(0, 10).await {
            Ok(events) => events,
            Err(error) => panic!("read_all failed: {error}"),
        };
        let at = |version| {
            stored
                .iter()
                .find(|e| e.stream == stream && e.version == version)
                .map(|e| e.position)
        };
        let (Some(first_at), Some(unheard_at), Ok(left_at)) =
            (at(1), at(3), checkpoints.checkpoint(Marking::<C, R>::NAME).await)
        else {
            panic!("the events or the checkpoint could not be read back");
        };
        assert!(
            (first_at..unheard_at).contains(&left_at),
            "the checkpoint is left past the events before the unknown one ({first_at}) and before it \
             ({unheard_at}), got {left_at}"
        );
        let (projection, _, checkpoints) = runner.into_parts();
        let skipping = RunnerOptions {
            unknown_events: UnknownEvents::Skip,
            ..RunnerOptions::default()
        };
        let runner = ProjectionRunner::new(projection, store, checkpoints.clone()).with_options(skipping);
        let done = catch_up(&runner).await;
        assert_eq!(
            (done.handled, done.skipped),
            (1, 1),
            "the unknown event skipped and counted, the mark before it not handled again"
        );
        assert_eq!(marks(&checkpoints, &*probe).await, [1, 2]);
    }

    /// A runner's progress tells, without polling, when a command's events are in the read model:
    /// right after `wait_for` returns, the read model has them.
    pub async fn progress_waits_for_a_position(self) {
        let (runner, _, probe, checkpoints, store) = self.start(FailurePolicy::Stop, UnknownEvents::Fail);
        let progress = runner.progress();
        let too_far = progress.wait_for(u64::MAX, Duration::from_millis(20)).await;
        assert!(matches!(too_far, Err(crate::WaitError::Timeout { .. })), "{too_far:?}");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(async move {
            runner
                .run(PollOnly, async {
                    let _ = stopped.await;
                })
                .await
        });
        for n in 1..=3 {
            let stream = fresh_stream(MARKING);
            let appended = match store.append(&stream, ExpectedVersion::NoStream, vec![marked(n)]).await {
                Ok(outcome) => outcome,
                Err(error) => panic!("append failed: {error}"),
            };
            let position = appended.positions.last().copied().unwrap_or_default();
            let reached = progress.wait_for(position, Duration::from_secs(30)).await;
            assert!(matches!(reached, Ok(at) if at >= position), "{reached:?}");
            assert_eq!(
                marks(&checkpoints, &*probe).await,
                (1..=n).collect::<Vec<_>>(),
                "read your writes"
            );
        }
        let _ = stop.send(());
        let stopped = running.await;
        assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
    }
}
