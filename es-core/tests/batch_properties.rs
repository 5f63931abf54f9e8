//! Property tests of the in-memory store's batch checks: arbitrary appends (payloads that are
//! not JSON, huge or odd, names empty, unicode or huge, odd metadata, schema versions at the
//! edges, sizes around each limit) are stored whole or refused with a typed error that writes
//! nothing; never a panic. The same cases run on SQLite and PostgreSQL (`support/arbitrary.rs`).

#[path = "support/arbitrary.rs"]
mod arbitrary;

use es_core::{InMemoryStore, Limits};

#[test]
fn arbitrary_appends_are_stored_or_refused_typed_around_small_limits() {
    let runtime = arbitrary::runtime();
    arbitrary::check_appends(&runtime, &InMemoryStore::new().with_limits(arbitrary::SMALL), 512);
}

#[test]
fn arbitrary_appends_are_stored_or_refused_typed_around_the_default_limits() {
    let runtime = arbitrary::runtime();
    let store = InMemoryStore::new();
    assert_eq!(es_core::EventStore::limits(&store), Limits::DEFAULT);
    arbitrary::check_appends(&runtime, &store, 64);
}
