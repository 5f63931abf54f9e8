//! The in-memory store and read model pass the same conformance suite as every durable backend.

use es_core::conformance::{BlueGreenProbe, ModelCopy, ReadModelProbe};
use es_core::{HandlerError, InMemoryReadModel};

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

/// Two copies of the marks, as two tables would be.
#[derive(Debug, Clone, Default)]
struct Copies {
    live: Vec<u64>,
    next: Vec<u64>,
}

struct CopiesProbe;

#[es_core::async_trait]
impl BlueGreenProbe<InMemoryReadModel<Copies>> for CopiesProbe {
    async fn write(&self, copies: &mut Copies, copy: ModelCopy, mark: u64) -> Result<(), HandlerError> {
        match copy {
            ModelCopy::Live => copies.live.push(mark),
            ModelCopy::Next => copies.next.push(mark),
        }
        Ok(())
    }

    async fn clear(&self, copies: &mut Copies, copy: ModelCopy) -> Result<(), HandlerError> {
        match copy {
            ModelCopy::Live => copies.live.clear(),
            ModelCopy::Next => copies.next.clear(),
        }
        Ok(())
    }

    async fn switch(&self, copies: &mut Copies) -> Result<(), HandlerError> {
        std::mem::swap(&mut copies.live, &mut copies.next);
        Ok(())
    }

    async fn live(&self, model: &InMemoryReadModel<Copies>) -> Vec<u64> {
        model.read(|copies| copies.live.clone())
    }
}

es_core::blue_green_conformance_test!(async { es_core::InMemoryStore::new() }, |store| (
    store,
    InMemoryReadModel::<Copies>::new(),
    CopiesProbe
));

/// The in-memory key store of data subjects.
mod keys {
    es_core::key_store_conformance_tests!(async { es_core::pii::InMemoryKeyStore::new() }, |keys| keys);
}

mod lifecycle {
    es_core::lifecycle_conformance_tests!(async { es_core::InMemoryStore::new() });
}

mod tenancy {
    es_core::tenant_conformance_tests!(async { es_core::tenancy::InMemoryTenants::new() }, |tenants| tenants);
}
