//! A projection runner running in a task of its own until told to stop, as the review suites
//! start one to tail the log while they write.

use std::sync::Arc;
use std::time::Duration;

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

/// Catches `runner` up until its checkpoint reaches `position`, failing once `within` has passed;
/// the events handled on the way. On PostgreSQL the global log shows an event only once every
/// older write transaction of the cluster has ended, so one `catch_up` right after a command may
/// stop short of it while another session's transaction is open.
pub async fn catch_up_to<P, E, C>(runner: &ProjectionRunner<P, E, C>, position: u64, within: Duration) -> u64
where
    P: Projection,
    E: GlobalLog,
    C: CheckpointStore<Context = P::Context>,
{
    let mut handled = 0;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let caught_up = runner.catch_up().await.expect("caught up");
        handled += caught_up.handled;
        if caught_up.position >= position {
            return handled;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the checkpoint stays at {} short of {position}",
            caught_up.position
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
