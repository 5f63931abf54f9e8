//! The in-memory store and read model pass the same conformance suite as every durable backend.

es_core::conformance_tests!(async { es_core::InMemoryStore::new() });

es_core::checkpoint_conformance_tests!(async { es_core::InMemoryReadModel::<()>::new() }, |model| model);
