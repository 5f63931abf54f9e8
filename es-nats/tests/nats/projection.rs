//! Projections on a partitioned store: one runner per partition, each reading its partition's
//! log and keeping its own checkpoint, together build the read model of every stream.

use std::collections::BTreeMap;

use es_core::conformance::event;
use es_core::{
    async_trait, event, CheckpointStore, DecodedEvent, EventStore, ExpectedVersion, GlobalLog, HandlerError,
    Projection, ProjectionRunner, StreamId,
};
use es_nats::{NatsCheckpoints, NatsStore};
use serde::{Deserialize, Serialize};

use crate::support::{fresh_store, single};

#[event(name = "CaseOpened")]
#[derive(Debug, Clone, PartialEq)]
pub struct CaseOpened {
    pub title: String,
}

#[event(name = "NoteAdded")]
#[derive(Debug, Clone, PartialEq)]
pub struct NoteAdded {
    pub text: String,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum CaseEvent {
    Opened(CaseOpened),
    Noted(NoteAdded),
}

/// The read model: events per case.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tallies {
    per_case: BTreeMap<String, u64>,
}

/// Counts the events of each case.
pub struct Tally;

#[async_trait]
impl Projection for Tally {
    const NAME: &'static str = "tally";
    const AGGREGATE_TYPES: &'static [&'static str] = &["case"];
    type Event = CaseEvent;
    type Context = Tallies;

    async fn handle(&self, model: &mut Tallies, event: &DecodedEvent<CaseEvent>) -> Result<(), HandlerError> {
        *model
            .per_case
            .entry(event.envelope.stream.aggregate_id.clone())
            .or_default() += 1;
        Ok(())
    }

    async fn reset(&self, model: &mut Tallies) -> Result<(), HandlerError> {
        model.per_case.clear();
        Ok(())
    }
}

/// The checkpoint name of the tally of each partition (runners take `'static` names).
const NAMES: [&str; 4] = ["tally@p0", "tally@p1", "tally@p2", "tally@p3"];

async fn append_cases(store: &NatsStore, cases: usize, round: u64) {
    for case in 0..cases {
        let stream = StreamId::new("case", format!("case-{case}"));
        let batch = vec![
            event("NoteAdded", serde_json::json!({ "text": format!("round {round}") })),
            event("NoteAdded", serde_json::json!({ "text": "again" })),
        ];
        let batch = if round == 0 {
            let mut opened = vec![event(
                "CaseOpened",
                serde_json::json!({ "title": format!("case {case}") }),
            )];
            opened.extend(batch);
            opened
        } else {
            batch
        };
        let expected = if round == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Any
        };
        store.append(&stream, expected, batch).await.expect("an append");
    }
}

/// Runs one runner per partition, in parallel, until each has caught up.
async fn catch_up_every_partition(store: &NatsStore, checkpoints: &NatsCheckpoints<Tallies>) {
    let runs = store.partition_logs().into_iter().map(|log| {
        let name = NAMES[log.partition() as usize];
        let runner = ProjectionRunner::new(Tally, log, checkpoints.clone()).with_name(name);
        async move { runner.catch_up().await.map(drop) }
    });
    for result in futures_util::future::join_all(runs).await {
        result.expect("a partition's runner caught up");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_runner_per_partition_builds_the_whole_model() {
    let store = fresh_store(single().await, 4).await;
    let checkpoints: NatsCheckpoints<Tallies> = store.checkpoints().await.expect("checkpoints");
    append_cases(&store, 16, 0).await;
    catch_up_every_partition(&store, &checkpoints).await;
    append_cases(&store, 16, 1).await;
    catch_up_every_partition(&store, &checkpoints).await;

    let mut whole = BTreeMap::new();
    for log in store.partition_logs() {
        let name = NAMES[log.partition() as usize];
        let model = checkpoints.model(name).await.expect("a partition's model");
        for case in model.per_case.keys() {
            let stream = StreamId::new("case", case.clone());
            assert_eq!(
                store.partition_of(&stream),
                log.partition(),
                "{case} counted by its partition's runner"
            );
        }
        let head = log
            .read_all(0, 10_000)
            .await
            .expect("the partition's log")
            .last()
            .map_or(0, |e| e.position);
        assert_eq!(
            checkpoints.checkpoint(name).await.expect("a checkpoint"),
            head,
            "{name} at its partition's head"
        );
        whole.extend(model.per_case);
    }
    let expected: BTreeMap<String, u64> = (0..16).map(|case| (format!("case-{case}"), 5)).collect();
    assert_eq!(
        whole, expected,
        "every case counted once per event, across the partitions"
    );
}
