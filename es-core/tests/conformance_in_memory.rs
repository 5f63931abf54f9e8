//! The in-memory store and read model pass the same conformance suite as every durable backend.

use es_core::conformance::ReadModelProbe;
use es_core::InMemoryReadModel;

es_core::conformance_tests!(async { es_core::InMemoryStore::new() });

/// Marks are pushed onto the model, a `Vec`.
struct Marks;

#[es_core::async_trait]
impl ReadModelProbe<InMemoryReadModel<Vec<u64>>> for Marks {
    async fn write(&self, model: &mut Vec<u64>, mark: u64) {
        model.push(mark);
    }

    async fn committed(&self, store: &InMemoryReadModel<Vec<u64>>) -> Vec<u64> {
        store.read(Clone::clone)
    }
}

es_core::checkpoint_conformance_tests!(async { InMemoryReadModel::<Vec<u64>>::new() }, |model| (model, Marks));

es_core::runner_conformance_tests!(async { es_core::InMemoryStore::new() }, |store| (
    store,
    InMemoryReadModel::<Vec<u64>>::new(),
    Marks
));
