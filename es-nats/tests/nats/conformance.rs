//! The es-core conformance suite, on one node and on a three-node cluster.
//!
//! The global-log checks need one total order: they run on single-partition stores, whose
//! log is the partition's. Stores with several partitions have one log per partition (a total
//! order inside each, none across): `partitions.rs` checks that semantic explicitly, and runs
//! the stream checks on a four-partition store.

/// One node, one partition.
mod single {
    es_core::conformance_tests!(crate::support::on_single());
}

/// Three nodes, every stream replicated three times, one partition.
mod cluster {
    es_core::conformance_tests!(crate::support::on_trio());
}
