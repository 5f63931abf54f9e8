//! The schema lock of the examples (`examples/events.lock`), and the guard at work on a copy of
//! a Ticket event: retyped without a version bump it fails naming the field; with a bump and an
//! upcast it passes.

use std::path::PathBuf;

use es_core::schema::{check_schema_lock, LockMode, LockOutcome, LockProblem};
use es_core::EventRegistry;
use examples::lead::Lead;
use examples::ticket::Ticket;

#[path = "support/review/mod.rs"]
mod review;

const LOCK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/events.lock");

fn registry() -> EventRegistry {
    let mut registry = EventRegistry::new();
    registry
        .register::<Ticket>()
        .and_then(|registry| registry.register::<Lead>())
        .expect("the examples' aggregate types are distinct");
    registry
}

#[test]
fn the_stored_event_shapes_match_the_lock() {
    es_core::testing::assert_schema_lock(&registry(), concat!(env!("CARGO_MANIFEST_DIR"), "/events.lock"));
}

/// `TicketAssigned` as stored by the `ticket` aggregate, with `agent` retyped from a name to a
/// number and no version bump.
mod retyped {
    use es_core::event;

    #[event(name = "TicketAssigned")]
    #[derive(Debug)]
    pub struct TicketAssigned {
        pub agent: u64,
    }

    crate::review::events_only_aggregate!(Ticket "ticket", TicketEvent { Assigned(TicketAssigned) });
}

/// The same change done right: version 2, with an upcast from the stored version 1.
mod bumped {
    use es_core::{event, UpcastError};
    use serde_json::Value;

    #[event(name = "TicketAssigned", version = 2)]
    #[upcast(from = 1, json = agent_name_to_number)]
    #[derive(Debug)]
    pub struct TicketAssigned {
        pub agent: u64,
    }

    /// Agents of v1 were names; the directory number of an unknown name is 0.
    fn agent_name_to_number(mut payload: Value) -> Result<Value, UpcastError> {
        let fields = payload
            .as_object_mut()
            .ok_or_else(|| UpcastError::new("TicketAssigned v1 payload is not an object"))?;
        fields.insert("agent".into(), 0.into());
        Ok(payload)
    }

    crate::review::events_only_aggregate!(Ticket "ticket", TicketEvent { Assigned(TicketAssigned) });
}

/// A temporary copy of the committed lock, cut down to its header and the `TicketAssigned`
/// entry (the copy's registry has only that event).
fn lock_copy(dir: &tempfile::TempDir) -> PathBuf {
    let text = std::fs::read_to_string(LOCK).expect("the examples commit their lock");
    let mut kept = String::new();
    let mut keep = true;
    for line in text.lines() {
        if line.starts_with('[') {
            keep = line.starts_with("[ticket TicketAssigned v1]");
        }
        if keep {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    assert!(kept.contains("[ticket TicketAssigned v1]"), "{text}");
    let path = dir.path().join("events.lock");
    std::fs::write(&path, kept).expect("copy written");
    path
}

fn registry_of<A: es_core::Aggregate>() -> EventRegistry {
    let mut registry = EventRegistry::new();
    registry.register::<A>().expect("one aggregate");
    registry
}

#[test]
fn a_retyped_field_without_a_version_bump_fails_naming_the_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lock = lock_copy(&dir);
    let report = check_schema_lock(&registry_of::<retyped::Ticket>(), &lock, LockMode::CreateIfMissing)
        .expect("the copy is a readable lock");
    assert!(!report.is_ok());
    assert!(
        matches!(report.problems.as_slice(), [LockProblem::ShapeChanged { key, .. }]
            if key.aggregate_type == "ticket" && key.event == "TicketAssigned" && key.version == 1),
        "{report:?}"
    );
    let message = report.to_string();
    assert!(message.contains("field `agent` changed from str to u64"), "{message}");
    assert!(
        message.contains("Bump `version` to 2 and add `#[upcast(from = 1, ...)]`"),
        "{message}"
    );
    assert_eq!(report.outcome, LockOutcome::Unchanged, "a failing check writes nothing");
}

/// Outside CI the lock only grows by itself: a changed shape at a recorded version is never
/// written over, and nothing new is recorded beside it until that is resolved.
#[test]
fn a_run_outside_ci_records_nothing_while_a_recorded_shape_disagrees() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lock = lock_copy(&dir);
    let before = std::fs::read_to_string(&lock).expect("copy");
    let report =
        check_schema_lock(&registry_of::<retyped::Ticket>(), &lock, LockMode::CreateIfMissing).expect("readable");
    assert!(!report.is_ok(), "{report}");
    assert_eq!(report.outcome, LockOutcome::Unchanged);
    assert_eq!(std::fs::read_to_string(&lock).expect("lock"), before);
}

#[test]
fn the_same_change_with_a_version_bump_and_an_upcast_passes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lock = lock_copy(&dir);
    let v1 = std::fs::read_to_string(&lock).expect("copy");
    let code = registry_of::<bumped::Ticket>();

    // The v1 shape still holds for the events stored at v1; only v2 is new to the lock.
    let report = check_schema_lock(&code, &lock, LockMode::Verify).expect("readable");
    assert!(
        matches!(report.problems.as_slice(), [LockProblem::NotLocked { key }]
            if key.event == "TicketAssigned" && key.version == 2),
        "{report}"
    );

    // A run outside CI records v2 beside v1 at once (the bump and its upcast pass), and the
    // check passes from then on, in CI too.
    let report = check_schema_lock(&code, &lock, LockMode::CreateIfMissing).expect("written");
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.outcome, LockOutcome::Updated);
    let text = std::fs::read_to_string(&lock).expect("updated");
    assert!(text.starts_with(&v1), "the v1 entry stays:\n{text}");
    assert!(text.contains("[ticket TicketAssigned v2]"), "{text}");
    assert!(text.contains("  agent: u64,"), "{text}");
    let report = check_schema_lock(&code, &lock, LockMode::Verify).expect("readable");
    assert!(report.is_ok(), "{report}");
}
