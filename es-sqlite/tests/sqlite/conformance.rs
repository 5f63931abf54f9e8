//! The es-core conformance suites, each check on a fresh file.

es_core::conformance_tests!(crate::support::fresh(), |db| db.store.clone());

es_core::checkpoint_conformance_tests!(crate::support::fresh(), |db| db.store.checkpoints());
