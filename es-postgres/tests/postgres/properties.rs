//! Property tests of the PostgreSQL store's batch checks: arbitrary appends (payloads that are
//! not JSON, huge or odd, names empty, unicode or huge, odd metadata, schema versions at the
//! edges, sizes around each limit) are stored whole or refused with a typed error that writes
//! nothing; never a panic, never an untyped server error. The cases and the property are the
//! in-memory store's, shared by path; JSON is compared as JSON (`jsonb` normalizes its text).

#[path = "../../../es-core/tests/support/arbitrary.rs"]
mod arbitrary;

use crate::support::schema;

#[test]
fn arbitrary_appends_are_stored_or_refused_typed_around_small_limits() {
    let runtime = arbitrary::runtime();
    let schema = runtime.block_on(schema());
    let store = schema.store().clone().with_limits(arbitrary::SMALL);
    arbitrary::check_appends(&runtime, &store, 192);
}

#[test]
fn arbitrary_appends_are_stored_or_refused_typed_around_the_default_limits() {
    let runtime = arbitrary::runtime();
    let schema = runtime.block_on(schema());
    arbitrary::check_appends(&runtime, schema.store(), 48);
}
