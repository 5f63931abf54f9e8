//! The check of a blue/green rebuild on a backend: a copy of the read model is built beside the
//! live one and switched in while writers and the live runner go on; readers of the live copy
//! never see it partial, and every event ends up in the new copy exactly once.
//!
//! Tables and their renames are the backend's, so it hands the check a [`BlueGreenProbe`].

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::runner::{MarkingEvent, MarkingSource, MARKING};
use super::{append_ok, event, fresh_stream};
use crate::projection::{CheckpointStore, HandlerError, PollOnly, Projection, ProjectionRunner, RunnerOptions};
use crate::record::DecodedEvent;
use crate::store::{EventStore, ExpectedVersion, GlobalLog};
use crate::EventSet;

/// Which of the two copies of a read model a [`BlueGreenProbe`] writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelCopy {
    /// The copy readers use (a table named like the read model).
    Live,
    /// The copy a rebuild fills beside it (a table of its own).
    Next,
}

/// How the blue/green check writes marks to two copies of a read model, switches them, and
/// reads the live one: a backend's tests implement it for their context type.
#[async_trait]
pub trait BlueGreenProbe<C: CheckpointStore>: Send + Sync {
    /// Writes `mark` into `copy` through a unit's context.
    async fn write(&self, context: &mut C::Context, copy: ModelCopy, mark: u64) -> Result<(), HandlerError>;

    /// Empties `copy` through a unit's context.
    async fn clear(&self, context: &mut C::Context, copy: ModelCopy) -> Result<(), HandlerError>;

    /// Puts the next copy in the live one's place (renames), through a unit's context.
    async fn switch(&self, context: &mut C::Context) -> Result<(), HandlerError>;

    /// The marks of the live copy as a reader outside any unit sees them, in any order.
    async fn live(&self, store: &C) -> Vec<u64>;
}

/// Writes each event's mark into its copy of the model.
struct Copying<C, R> {
    probe: Arc<R>,
    copy: ModelCopy,
    checkpoints: std::marker::PhantomData<fn() -> C>,
}

#[async_trait]
impl<C, R> Projection for Copying<C, R>
where
    C: CheckpointStore + 'static,
    R: BlueGreenProbe<C> + 'static,
{
    const NAME: &'static str = "conformance-copied";
    const AGGREGATE_TYPES: &'static [&'static str] = &[MARKING];
    const SOURCE_EVENTS: &'static [&'static [crate::EventDescriptor]] = &[MarkingSource::EVENTS];
    type Event = MarkingEvent;
    type Context = C::Context;

    async fn handle(&self, context: &mut C::Context, event: &DecodedEvent<MarkingEvent>) -> Result<(), HandlerError> {
        let MarkingEvent::Marked(marked) = &event.event;
        self.probe.write(context, self.copy, marked.n).await
    }

    async fn reset(&self, context: &mut C::Context) -> Result<(), HandlerError> {
        self.probe.clear(context, self.copy).await
    }
}

async fn mark<S: EventStore>(store: &S, n: u64) -> u64 {
    let stream = fresh_stream(MARKING);
    let marked = event("marked", serde_json::json!({ "n": n }));
    append_ok(store, &stream, ExpectedVersion::NoStream, vec![marked.clone()]).await;
    match store.read_event(marked.event_id).await {
        Ok(Some(stored)) => stored.position,
        other => panic!("the appended mark is not readable by id: {other:?}"),
    }
}

async fn sorted_live<C: CheckpointStore, R: BlueGreenProbe<C>>(probe: &R, checkpoints: &C) -> Vec<u64> {
    let mut marks = probe.live(checkpoints).await;
    marks.sort_unstable();
    marks
}

/// While writers append and the live runner keeps the live copy up to date,
/// [`ProjectionRunner::rebuild_beside`] builds the next copy and switches it in: a reader of
/// the live copy sees every mark it saw before, never one twice; after the switch the live
/// copy holds every mark exactly once, and the live runner goes on writing to it.
pub async fn a_blue_green_rebuild_never_shows_a_partial_model<S, C, R>(store: S, checkpoints: C, probe: R)
where
    S: EventStore + GlobalLog + Clone + 'static,
    C: CheckpointStore + Clone + 'static,
    R: BlueGreenProbe<C> + 'static,
{
    const WAIT: Duration = Duration::from_secs(30);
    const BEFORE: u64 = 120;
    const DURING: u64 = 60;
    let probe = Arc::new(probe);
    let copying = |copy| Copying {
        probe: Arc::clone(&probe),
        copy,
        checkpoints: std::marker::PhantomData,
    };
    let mut head = 0;
    for n in 1..=BEFORE {
        head = mark(&store, n).await;
    }
    let options = RunnerOptions {
        batch_size: 16,
        poll_interval: Duration::from_millis(5),
        ..RunnerOptions::default()
    };
    let live =
        ProjectionRunner::new(copying(ModelCopy::Live), store.clone(), checkpoints.clone()).with_options(options);
    let live_progress = live.progress();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let live_task = tokio::spawn(async move {
        live.run(PollOnly, async {
            let _ = stopped.await;
        })
        .await
    });
    if let Err(error) = live_progress.wait_for(head, WAIT).await {
        panic!("the live copy never caught up: {error}");
    }

    let (done, reads) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU32::new(0)));
    let reader = tokio::spawn({
        let (probe, checkpoints, done, reads) = (
            Arc::clone(&probe),
            checkpoints.clone(),
            Arc::clone(&done),
            Arc::clone(&reads),
        );
        async move {
            while !done.load(Ordering::SeqCst) {
                let seen = sorted_live(&*probe, &checkpoints).await;
                assert!(
                    seen.len() as u64 >= BEFORE,
                    "a reader saw a partial model: {} marks",
                    seen.len()
                );
                assert!(
                    seen.windows(2).all(|pair| pair[0] < pair[1]),
                    "a reader saw a mark twice"
                );
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        }
    });
    let writer = tokio::spawn({
        let store = store.clone();
        async move {
            let mut head = 0;
            for n in BEFORE + 1..=BEFORE + DURING {
                head = mark(&store, n).await;
                tokio::task::yield_now().await;
            }
            head
        }
    });
    let next = ProjectionRunner::new(copying(ModelCopy::Next), store, checkpoints.clone())
        .with_name("conformance-copied-next")
        .with_options(options);
    let switcher = Arc::clone(&probe);
    let rebuilt = next
        .rebuild_beside(
            "conformance-copied",
            |_| {},
            move |context| {
                let switcher = Arc::clone(&switcher);
                Box::pin(async move { switcher.switch(context).await })
            },
        )
        .await;
    match rebuilt {
        Ok(done) => assert!(done.read >= BEFORE, "the copy replayed every event: {done:?}"),
        Err(error) => panic!("the rebuild beside the live copy failed: {error}"),
    }
    let head = match writer.await {
        Ok(head) => head,
        Err(error) => panic!("the writer failed: {error}"),
    };
    if let Err(error) = live_progress.wait_for(head, WAIT).await {
        panic!("the live runner did not go on after the switch: {error}");
    }
    done.store(true, Ordering::SeqCst);
    if let Err(error) = reader.await {
        panic!("a reader saw a partial model: {error}");
    }
    assert!(reads.load(Ordering::SeqCst) > 0, "the reader read");
    assert_eq!(
        sorted_live(&*probe, &checkpoints).await,
        (1..=BEFORE + DURING).collect::<Vec<_>>(),
        "every mark exactly once in the switched-in copy"
    );
    let _ = stop.send(());
    match live_task.await {
        Ok(Ok(())) => {}
        other => panic!("the live runner did not stop cleanly: {other:?}"),
    }
}
