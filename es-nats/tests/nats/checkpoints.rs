//! The checkpoint and runner checks of the conformance suite, on the single node and on the
//! three-node cluster: read models are documents committed in one message with the checkpoint.
//! The blue/green check is not run (see the end of this file).

use es_core::conformance::ReadModelProbe;
use es_nats::{NatsCheckpoints, NatsStore};
use serde::{Deserialize, Serialize};

/// The probe's read model: the marks written through units.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Marks {
    marks: Vec<u64>,
}

/// Writes marks into the unit's document and reads every projection's committed marks.
pub struct Probe;

#[es_core::async_trait]
impl ReadModelProbe<NatsCheckpoints<Marks>> for Probe {
    async fn write(&self, context: &mut Marks, mark: u64) {
        context.marks.push(mark);
    }

    async fn committed(&self, store: &NatsCheckpoints<Marks>) -> Vec<u64> {
        let models = store.models().await.expect("reading the read models");
        models.into_iter().flat_map(|(_, model)| model.marks).collect()
    }
}

/// A fresh store and its checkpoints.
pub async fn fixture(store: NatsStore) -> (NatsStore, NatsCheckpoints<Marks>) {
    let checkpoints = store.checkpoints().await.expect("the checkpoint stream");
    (store, checkpoints)
}

/// Module `$module` runs the checkpoint and runner suites on the fresh stores `$on()` gives.
macro_rules! suites_on {
    ($module:ident, $on:path) => {
        mod $module {
            use super::{fixture, Probe};

            es_core::checkpoint_conformance_tests!(fixture($on().await), |parts| (parts.1.clone(), Probe));

            es_core::runner_conformance_tests!(fixture($on().await), |parts| (
                parts.0.clone(),
                parts.1.clone(),
                Probe
            ));
        }
    };
}

suites_on!(single, crate::support::on_single);
suites_on!(cluster, crate::support::on_trio);

// Not run, on purpose: `blue_green_conformance_test!`. `NatsCheckpoints` keeps each read model
// in its projection's own message, so a switch between two read models cannot commit
// atomically with the other projection's checkpoint; `take_over` and `hand_over` refuse (the
// trait's defaults), and `ProjectionRunner::rebuild_beside` fails with that error instead of
// switching. Rebuild a NATS projection under a new name and move readers over by hand.
