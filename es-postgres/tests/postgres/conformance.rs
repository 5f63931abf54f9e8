//! The es-core conformance suite, on PostgreSQL. Each check holds the server to itself (see
//! `support::GATE`): its `read_all` checks expect their own appends to be visible at once.

es_core::conformance_tests!(crate::support::exclusive_schema(), |schema| schema.store().clone());

// Checkpoints need no quiet server: each check works on its own projection names.
es_core::checkpoint_conformance_tests!(crate::support::schema(), |schema| schema.checkpoints());
