//! A projection runner running in a task of its own until told to stop, as the review suites
//! start one to tail the log while they write.

use std::sync::Arc;

use es_core::{CheckpointStore, GlobalLog, Projection, ProjectionError, ProjectionRunner, WakeUp};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Sending on it (or dropping it) stops the runner.
pub type Stop = oneshot::Sender<()>;

/// The task of a running runner: what `run` returned once it stopped.
pub type Running = JoinHandle<Result<(), ProjectionError>>;

/// Spawns `runner.run(wake_up, ..)` (the runner itself or shared in an `Arc`), running until
/// [`Stop`] is sent or dropped.
pub fn run_until_stopped<P, E, C, W>(runner: impl Into<Arc<ProjectionRunner<P, E, C>>>, wake_up: W) -> (Stop, Running)
where
    P: Projection + Send + Sync + 'static,
    E: GlobalLog + Send + Sync + 'static,
    C: CheckpointStore<Context = P::Context> + Send + Sync + 'static,
    W: WakeUp + 'static,
{
    let runner = runner.into();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        runner
            .run(wake_up, async {
                let _ = stopped.await;
            })
            .await
    });
    (stop, running)
}
