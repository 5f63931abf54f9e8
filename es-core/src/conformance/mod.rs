//! The backend conformance suite: the semantics every [`EventStore`](crate::EventStore),
//! [`GlobalLog`](crate::GlobalLog), [`SnapshotStore`](crate::SnapshotStore) and
//! [`CheckpointStore`](crate::CheckpointStore) must share, as executable
//! checks.
//!
//! A backend runs the store checks from its own tests with
//! [`conformance_tests!`](crate::conformance_tests), giving an async expression that makes a
//! fresh, empty store, and the checkpoint checks with
//! [`checkpoint_conformance_tests!`](crate::checkpoint_conformance_tests), giving an async
//! expression that makes a fixture (kept alive for the test) and how to get from it the
//! checkpoint store and a [`ReadModelProbe`] that writes through the store's context:
//!
//! ```ignore
//! es_core::conformance_tests!(async { es_core::InMemoryStore::new() });
//! es_core::checkpoint_conformance_tests!(async { MyReadModel::new() }, |model| (model.clone(), MyProbe));
//! ```
//!
//! Each expands to one `#[tokio::test]` per check, so a failure names the broken rule. The
//! checks panic on violation, like any test assertion; they need the `tokio` dev-dependency with
//! the `macros`, `time` and `rt-multi-thread` features in the crate that runs them.

mod blue_green;
mod catalog;
mod checkpoints;
mod global_log;
mod idempotency;
mod keys;
mod lifecycle;
mod limits;
mod pii;
mod replaced;
mod runner;
mod snapshots;
mod streams;
mod tenancy;

pub use blue_green::{a_blue_green_rebuild_never_shows_a_partial_model, BlueGreenProbe, ModelCopy};
pub use catalog::{list_snapshots_in_pages, list_streams_filters_and_pages};
pub use checkpoints::{
    a_new_claim_resumes_after_a_crash, claim_status_tells_held_from_free, claims_are_exclusive,
    parked_events_commit_with_the_unit, units_commit_or_discard_the_checkpoint, ReadModelProbe,
};
pub use global_log::{
    a_row_left_out_is_never_decoded, read_all_in_position_order, read_all_pages,
    read_filtered_leaves_out_by_type_and_name, read_filtered_pages_are_read_all_pages_filtered,
    replay_all_lends_what_read_filtered_returns,
};
pub use idempotency::{
    a_batch_stored_otherwise_is_not_a_retry, read_event_by_id, retried_append_returns_the_original_outcome,
};
pub use keys::{forgotten_keys_stay_forgotten, keys_are_created_once, streams_list_their_subjects};
pub use lifecycle::{
    appends_racing_a_tombstone_land_before_it_or_are_refused, archived_streams_read_from_the_archive,
    deleted_streams_leave_an_audit_record, streams_at_the_id_limit_can_be_closed, tombstoned_streams_refuse_appends,
};
pub use limits::{
    batch_limits_hold_at_the_boundary, empty_names_and_nul_characters_are_refused, event_limits_hold_at_the_boundary,
};
pub use pii::{
    enter_contacts, forgotten_subjects_read_as_forgotten, sealed_contacts, subjects_at_the_id_limit_can_be_forgotten,
    Contact, ContactEntered, ContactEvent, ContactNoted,
};
pub use replaced::{
    retired_events_are_replaced_by_their_rules, ContactChanged, Desk, DeskEvent, DeskOpened, DeskStaffed,
};
pub use runner::{Marked, MarkingEvent, MarkingSource, Noted, RunnerParts};
pub use snapshots::{older_snapshots_are_upcast, Tallied, Tally, TallyEvent};
pub use streams::{
    any_expectation, append_then_read_stream, concurrent_appends_exactly_one_wins, duplicate_event_id_writes_nothing,
    empty_append_checks_expectation, exact_expectation, invalid_payload_writes_nothing, no_stream_expectation,
    read_stream_slices, read_stream_until_instant, refused_batch_writes_nothing, replay_lends_what_read_stream_returns,
    snapshots_keep_the_latest, stream_exists_expectation, streams_are_isolated,
};
pub use tenancy::tenants_are_isolated;

use futures_util::TryStreamExt;
use uuid::Uuid;

use crate::metadata::Metadata;
use crate::store::{
    EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError, StoreResult, StreamId, StreamSlice,
};

/// Expands to one `#[tokio::test]` per store check ([`EventStore`](crate::EventStore),
/// [`GlobalLog`](crate::GlobalLog), [`SnapshotStore`](crate::SnapshotStore),
/// [`StreamCatalog`](crate::StreamCatalog)).
///
/// The argument is an async expression that makes a fresh, empty store; or an async expression
/// that makes a fixture, kept alive for the test, and how to get the store from it.
#[macro_export]
macro_rules! conformance_tests {
    ($make_fixture:expr, |$fixture:ident| $store:expr) => {
        $crate::conformance_tests!(@each $make_fixture, |$fixture| $store => |store| [$crate::conformance](&store);
            append_then_read_stream,
            no_stream_expectation,
            exact_expectation,
            stream_exists_expectation,
            any_expectation,
            empty_append_checks_expectation,
            refused_batch_writes_nothing,
            duplicate_event_id_writes_nothing,
            retried_append_returns_the_original_outcome,
            a_batch_stored_otherwise_is_not_a_retry,
            read_event_by_id,
            invalid_payload_writes_nothing,
            event_limits_hold_at_the_boundary,
            batch_limits_hold_at_the_boundary,
            empty_names_and_nul_characters_are_refused,
            concurrent_appends_exactly_one_wins,
            streams_are_isolated,
            read_stream_slices,
            read_stream_until_instant,
            replay_lends_what_read_stream_returns,
            read_all_in_position_order,
            read_all_pages,
            read_filtered_leaves_out_by_type_and_name,
            read_filtered_pages_are_read_all_pages_filtered,
            replay_all_lends_what_read_filtered_returns,
            snapshots_keep_the_latest,
            older_snapshots_are_upcast,
            retired_events_are_replaced_by_their_rules,
            forgotten_subjects_read_as_forgotten,
            subjects_at_the_id_limit_can_be_forgotten,
            list_streams_filters_and_pages,
            list_snapshots_in_pages,
        );
    };
    ($make_store:expr) => {
        $crate::conformance_tests!($make_store, |store| store);
    };
    // One test per check: the fixture made, the parts bound from it, and `callee::check(args)`
    // awaited; then the same for the checks left. Every suite of this module expands through it.
    (@each $make_fixture:expr, |$fixture:ident| $parts:expr => |$bound:pat_param| [$($callee:tt)+]($($arg:expr),*);) => {};
    (@each $make_fixture:expr, |$fixture:ident| $parts:expr => |$bound:pat_param| [$($callee:tt)+]($($arg:expr),*);
        $check:ident $(, $rest:ident)* $(,)?) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let $fixture = $make_fixture.await;
            let $bound = $parts;
            $($callee)+::$check($($arg),*).await;
        }
        $crate::conformance_tests!(@each $make_fixture, |$fixture| $parts => |$bound| [$($callee)+]($($arg),*);
            $($rest),*);
    };
}

/// Expands to one `#[tokio::test]` per [`StreamLifecycle`](crate::lifecycle::StreamLifecycle)
/// check: tombstones, archives, deletions and their audit, appends racing a change. The
/// arguments are those of [`conformance_tests!`](crate::conformance_tests); the store must also
/// be `Clone + 'static` (the race check appends from several tasks).
#[macro_export]
macro_rules! lifecycle_conformance_tests {
    ($make_fixture:expr, |$fixture:ident| $store:expr) => {
        $crate::conformance_tests!(@each $make_fixture, |$fixture| $store => |store| [$crate::conformance](&store);
            tombstoned_streams_refuse_appends,
            archived_streams_read_from_the_archive,
            deleted_streams_leave_an_audit_record,
            appends_racing_a_tombstone_land_before_it_or_are_refused,
            streams_at_the_id_limit_can_be_closed,
        );
    };
    ($make_store:expr) => {
        $crate::lifecycle_conformance_tests!($make_store, |store| store);
    };
}

/// Expands to the `#[tokio::test]` of [`TenantStores`](crate::tenancy::TenantStores): the
/// first argument is an async expression making a fixture, the second how to get the tenants
/// from it.
#[macro_export]
macro_rules! tenant_conformance_tests {
    ($make_fixture:expr, |$fixture:ident| $tenants:expr) => {
        $crate::conformance_tests!(@each $make_fixture, |$fixture| $tenants => |tenants| [$crate::conformance](&tenants);
            tenants_are_isolated);
    };
}

/// Expands to one `#[tokio::test]` per [`KeyStore`](crate::pii::KeyStore) check. The argument
/// is an async expression making a fixture; the second says how to get the key store from it.
#[macro_export]
macro_rules! key_store_conformance_tests {
    ($make_fixture:expr, |$fixture:ident| $keys:expr) => {
        $crate::conformance_tests!(@each $make_fixture, |$fixture| $keys => |keys| [$crate::conformance](&keys);
            keys_are_created_once, forgotten_keys_stay_forgotten, streams_list_their_subjects);
    };
}

/// Expands to one `#[tokio::test]` per [`CheckpointStore`](crate::CheckpointStore) check. The
/// first argument is an async expression making a fixture that lives as long as the test; the
/// second says how to get from it the checkpoint store and a [`ReadModelProbe`] for its context.
#[macro_export]
macro_rules! checkpoint_conformance_tests {
    ($make_fixture:expr, |$fixture:ident| $store_and_probe:expr) => {
        $crate::conformance_tests!(@each $make_fixture, |$fixture| $store_and_probe
            => |(checkpoints, probe)| [$crate::conformance](&checkpoints, &probe);
            units_commit_or_discard_the_checkpoint, claims_are_exclusive, a_new_claim_resumes_after_a_crash,
            claim_status_tells_held_from_free, parked_events_commit_with_the_unit);
    };
}

/// Expands to one `#[tokio::test]` per check of a [`ProjectionRunner`](crate::ProjectionRunner)
/// on a backend: failure policies, unknown names, progress. The first argument is an async
/// expression making a fresh fixture that lives as long as the test; the second says how to
/// get from it the store, the checkpoint store and a [`ReadModelProbe`] (all by value).
#[macro_export]
macro_rules! runner_conformance_tests {
    ($make_fixture:expr, |$fixture:ident| $parts:expr) => {
        $crate::conformance_tests!(@each $make_fixture, |$fixture| $parts
            => |(store, checkpoints, probe)| [$crate::conformance::RunnerParts]
                ($crate::conformance::RunnerParts { store, checkpoints, probe });
            a_parked_event_is_retried_and_applied_once, a_parked_event_failing_again_stays_parked,
            a_skipped_event_is_passed_for_good, retries_spent_stop_the_runner,
            an_event_that_does_not_decode_is_not_retried, unknown_events_fail_or_are_skipped,
            progress_waits_for_a_position);
    };
}

/// Expands to a `#[tokio::test]` of a blue/green rebuild on a backend
/// ([`a_blue_green_rebuild_never_shows_a_partial_model`]). The first argument is an async
/// expression making a fresh fixture (with the probe's two tables); the second gives from it
/// the store, the checkpoint store and a [`BlueGreenProbe`] (all by value).
#[macro_export]
macro_rules! blue_green_conformance_test {
    ($make_fixture:expr, |$fixture:ident| $parts:expr) => {
        $crate::conformance_tests!(@each $make_fixture, |$fixture| $parts
            => |(store, checkpoints, probe)| [$crate::conformance](store, checkpoints, probe);
            a_blue_green_rebuild_never_shows_a_partial_model);
    };
}

/// A new event named `name` with a JSON payload, schema version 1 and empty metadata: for a
/// backend's own tests as much as for the suite.
pub fn event(name: &str, payload: serde_json::Value) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_name: name.to_owned(),
        schema_version: 1,
        payload: payload.to_string().into_bytes(),
        metadata: Metadata::new(),
    }
}

/// `count` events named `Numbered` with payloads `{"n": 0}`, `{"n": 1}`, ...
pub fn numbered(count: usize) -> Vec<NewEvent> {
    (0..count)
        .map(|n| event("Numbered", serde_json::json!({ "n": n })))
        .collect()
}

/// A stream of aggregate type `kind` with a new, unique id: one no other test uses.
pub fn fresh_stream(kind: &str) -> StreamId {
    StreamId::new(kind, Uuid::now_v7().to_string())
}

/// The whole stream, as `read_stream` returns it; panics on a read error.
pub async fn whole_stream<S: EventStore + ?Sized>(store: &S, stream: &StreamId) -> Vec<RecordedEvent> {
    read(store, stream, StreamSlice::all()).await
}

pub(crate) async fn read<S: EventStore + ?Sized>(
    store: &S,
    stream: &StreamId,
    slice: StreamSlice,
) -> Vec<RecordedEvent> {
    match store.read_stream(stream, slice).try_collect().await {
        Ok(events) => events,
        Err(error) => panic!("reading {stream} failed: {error}"),
    }
}

pub(crate) async fn append_ok<S: EventStore>(
    store: &S,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) {
    if let Err(error) = store.append(stream, expected, events).await {
        panic!("append to {stream} expecting {expected} failed: {error}");
    }
}

#[track_caller]
pub(crate) fn assert_conflict<T: std::fmt::Debug>(result: StoreResult<T>, expected: ExpectedVersion, actual: u64) {
    match result {
        Err(StoreError::Conflict(conflict)) => {
            assert_eq!(conflict.expected, expected, "conflict reports the expectation");
            assert_eq!(conflict.actual, actual, "conflict reports the actual version");
        }
        other => panic!("expected a conflict (expected {expected}, actual {actual}), got {other:?}"),
    }
}

pub(crate) fn payload_json(event: &RecordedEvent) -> serde_json::Value {
    match serde_json::from_slice(&event.payload) {
        Ok(value) => value,
        Err(error) => panic!("stored payload is not JSON: {error}"),
    }
}
