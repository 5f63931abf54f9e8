//! Property tests of the SQLite store's batch checks: arbitrary appends (payloads that are not
//! JSON, huge or odd, names empty, unicode or huge, odd metadata, schema versions at the edges,
//! sizes around each limit) are stored whole or refused with a typed error that writes nothing;
//! never a panic. The cases and the property are the in-memory store's, shared by path.

#[path = "../../../es-core/tests/support/arbitrary.rs"]
mod arbitrary;

use es_core::Limits;
use es_sqlite::SqliteOptions;

use crate::support::fresh_with;

#[test]
fn arbitrary_appends_are_stored_or_refused_typed_around_small_limits() {
    let runtime = arbitrary::runtime();
    let db = runtime.block_on(fresh_with(SqliteOptions::default().with_limits(arbitrary::SMALL)));
    arbitrary::check_appends(&runtime, &db.store, 256);
}

#[test]
fn arbitrary_appends_are_stored_or_refused_typed_around_the_default_limits() {
    let runtime = arbitrary::runtime();
    let db = runtime.block_on(fresh_with(SqliteOptions::default().with_limits(Limits::DEFAULT)));
    arbitrary::check_appends(&runtime, &db.store, 48);
}
