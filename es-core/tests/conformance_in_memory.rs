//! The in-memory store passes the same conformance suite as every durable backend.

es_core::conformance_tests!(async { es_core::InMemoryStore::new() });
