//! Ctrl-C during `rebuild`: the command stops with exit code 130, and the read model and its
//! checkpoint still agree (every committed batch is whole, the interrupted one is rolled back).
//!
//! The test sends SIGINT to its own process, so it is alone in this test binary.

use std::time::Duration;

use es_cli::{Cli, Exit};
use es_core::conformance::event;
use es_core::{
    async_trait, CheckpointStore, DecodedEvent, EventStore, ExpectedVersion, HandlerError, InMemoryReadModel,
    InMemoryStore, Projection, ProjectionRunner, RunnerOptions, StreamId,
};

#[es_core::event]
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub n: u64,
}

#[es_core::event]
#[derive(Debug, Clone, PartialEq)]
pub enum Ticks {
    Tick(Tick),
}

/// Records every tick it sees, slowly: a rebuild of 1,000 ticks takes seconds.
struct SlowTicks;

#[async_trait]
impl Projection for SlowTicks {
    const NAME: &'static str = "slow_ticks";
    type Event = Ticks;
    type Context = Vec<u64>;

    async fn handle(&self, seen: &mut Vec<u64>, event: &DecodedEvent<Ticks>) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let Ticks::Tick(tick) = &event.event;
        seen.push(tick.n);
        Ok(())
    }

    async fn reset(&self, seen: &mut Vec<u64>) -> Result<(), HandlerError> {
        seen.clear();
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_a_rebuild_between_consistent_batches() {
    let store = InMemoryStore::new();
    let stream = StreamId::new("clock", "c");
    let ticks: Vec<_> = (1..=1000)
        .map(|n| event("Tick", serde_json::json!({ "n": n })))
        .collect();
    store
        .append(&stream, ExpectedVersion::NoStream, ticks)
        .await
        .expect("append");
    let model = InMemoryReadModel::<Vec<u64>>::new();
    let options = RunnerOptions {
        batch_size: 50,
        ..RunnerOptions::default()
    };
    let runner = ProjectionRunner::new(SlowTicks, store.clone(), model.clone()).with_options(options);
    let cli = Cli::new(store).projection(runner);
    let rebuild = tokio::spawn(async move {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        cli.execute(["es", "rebuild", "slow_ticks"], &mut out, &mut err).await
    });

    // Once the first batch is committed (about 0.25 s in), interrupt: about 4.7 s of work remain.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while model.checkpoint("slow_ticks").await.expect("checkpoint") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the rebuild never committed a batch"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let signalled = std::process::Command::new("kill")
        .args(["-INT", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(signalled.success());

    let exit = tokio::time::timeout(Duration::from_secs(30), rebuild)
        .await
        .expect("the rebuild stops")
        .expect("joined");
    assert_eq!((exit, exit.code()), (Exit::Interrupted, 130));
    let checkpoint = model.checkpoint("slow_ticks").await.expect("checkpoint");
    let seen = model.read(Clone::clone);
    assert!(seen.len() < 1000, "interrupted before the end: {} ticks", seen.len());
    assert_eq!(
        seen,
        (1..=checkpoint).collect::<Vec<_>>(),
        "the model holds exactly the ticks up to its checkpoint"
    );
}
