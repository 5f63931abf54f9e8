//! The lock check on versions of one event: unchanged, retyped, renamed, bumped, removed.
//! The mode is always explicit: tests share the process environment.

use std::path::{Path, PathBuf};

use super::{check_schema_lock, LockChange, LockMode, LockOutcome, LockProblem, LockReport, SchemaLockError};
use crate::EventRegistry;

mod fixtures;

use fixtures::*;

fn registry<A: crate::Aggregate>() -> EventRegistry {
    let mut registry = EventRegistry::new();
    registry.register::<A>().expect("one aggregate registers");
    registry
}

/// A fresh directory for one test's lock file.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("es-core-schema-lock-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn lock(&self) -> PathBuf {
        self.0.join("events.lock")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check(registry: &EventRegistry, path: &Path, mode: LockMode) -> LockReport {
    check_schema_lock(registry, path, mode).unwrap_or_else(|error| panic!("{error}"))
}

fn created(dir: &TempDir, registry: &EventRegistry) -> PathBuf {
    let lock = dir.lock();
    let report = check(registry, &lock, LockMode::CreateIfMissing);
    assert_eq!(report.outcome, LockOutcome::Created, "{report}");
    assert!(report.is_ok(), "{report}");
    lock
}

#[test]
fn a_missing_lock_is_created_and_then_passes_unchanged() {
    let dir = TempDir::new("create");
    let lock = created(&dir, &registry::<v1::Note>());
    let text = std::fs::read_to_string(&lock).expect("written");
    assert!(text.starts_with("# es-rs schema lock"), "{text}");
    assert!(text.contains("ES_SCHEMA_LOCK=update"), "{text}");
    let fingerprint = crate::schema::trace_shape::<v1::Noted>().expect("traced").fingerprint();
    assert!(
        text.ends_with(&format!(
            "\n[note Noted v1] {fingerprint}\n{{\n  text: str,\n  priority: u8,\n}}\n"
        )),
        "{text}"
    );

    let report = check(&registry::<v1::Note>(), &lock, LockMode::Verify);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.outcome, LockOutcome::Unchanged);
    assert_eq!(std::fs::read_to_string(&lock).expect("still there"), text);
    // Creating again leaves an existing file alone.
    assert_eq!(
        check(&registry::<v1::Note>(), &lock, LockMode::CreateIfMissing).outcome,
        LockOutcome::Unchanged
    );
}

#[test]
fn fields_declared_in_another_order_are_the_same_stored_shape() {
    let dir = TempDir::new("reordered");
    let lock = created(&dir, &registry::<v1::Note>());
    let before = std::fs::read_to_string(&lock).expect("written");
    for mode in [LockMode::Verify, LockMode::CreateIfMissing, LockMode::Update] {
        let report = check(&registry::<reordered::Note>(), &lock, mode);
        assert!(report.is_ok(), "{mode:?}: {report}");
        assert_eq!(report.outcome, LockOutcome::Unchanged, "{mode:?}: {report}");
        assert_eq!(
            std::fs::read_to_string(&lock).expect("kept"),
            before,
            "{mode:?}: the lock is not rewritten for an order JSON does not keep"
        );
    }
}

#[test]
fn a_typed_upcast_step_must_read_the_shape_recorded_for_its_version() {
    let dir = TempDir::new("typed-step");
    let lock = created(&dir, &registry::<v1::Note>());
    // The bump records v2 and keeps v1, which the step's type reads as it was recorded.
    let bumped = check(&registry::<typed_step::Note>(), &lock, LockMode::CreateIfMissing);
    assert!(bumped.is_ok(), "{bumped}");
    assert_eq!(bumped.outcome, LockOutcome::Updated, "{bumped}");
    let before = std::fs::read_to_string(&lock).expect("written");

    let report = check(
        &registry::<typed_step_drifted::Note>(),
        &lock,
        LockMode::CreateIfMissing,
    );
    assert!(
        matches!(report.problems.as_slice(), [LockProblem::UpcastShapeChanged { key, changes }]
            if key.event == "Noted" && key.version == 1 && changes.len() == 1),
        "{report:?}"
    );
    let message = report.to_string();
    assert!(
        message.contains("`note` event `Noted` v1 is read by a typed upcast step (`#[upcast(from = 1, typed = ...)]`)"),
        "{message}"
    );
    assert!(message.contains("field `priority` changed from u8 to str"), "{message}");
    assert!(
        message.contains("Events stored at v1 would no longer decode"),
        "{message}"
    );
    assert_eq!(std::fs::read_to_string(&lock).expect("kept"), before, "nothing written");

    // Accepting records the step's shape for v1; the check then passes.
    let accepted = check(&registry::<typed_step_drifted::Note>(), &lock, LockMode::Update);
    assert!(accepted.is_ok(), "{accepted}");
    assert!(
        matches!(accepted.changes.as_slice(), [LockChange::Changed(key, _)] if key.version == 1),
        "{accepted:?}"
    );
    assert!(check(&registry::<typed_step_drifted::Note>(), &lock, LockMode::Verify).is_ok());
}

#[test]
fn a_retyped_field_without_a_bump_fails_naming_the_field_and_the_fix() {
    let dir = TempDir::new("retyped");
    let lock = created(&dir, &registry::<v1::Note>());
    let before = std::fs::read_to_string(&lock).expect("written");
    let report = check(&registry::<retyped::Note>(), &lock, LockMode::CreateIfMissing);
    assert!(!report.is_ok());
    assert!(
        matches!(report.problems.as_slice(), [LockProblem::ShapeChanged { key, changes }]
            if key.event == "Noted" && key.version == 1 && changes.len() == 1),
        "{report:?}"
    );
    let message = report.to_string();
    assert!(
        message.contains("`note` event `Noted` v1 changed its stored shape"),
        "{message}"
    );
    assert!(message.contains("field `text` changed from str to u32"), "{message}");
    assert!(
        message.contains("Bump `version` to 2 and add `#[upcast(from = 1, ...)]`"),
        "{message}"
    );
    assert!(message.contains("ES_SCHEMA_LOCK=update"), "{message}");
    assert_eq!(
        std::fs::read_to_string(&lock).expect("kept"),
        before,
        "a failing check writes nothing"
    );
}

#[test]
fn a_renamed_field_without_a_bump_fails() {
    let dir = TempDir::new("renamed");
    let lock = created(&dir, &registry::<v1::Note>());
    let message = check(&registry::<renamed::Note>(), &lock, LockMode::Verify).to_string();
    assert!(message.contains("field `text` was removed"), "{message}");
    assert!(message.contains("field `body` was added (required)"), "{message}");
}

#[test]
fn a_version_bump_with_an_upcast_adds_an_entry_and_keeps_the_old_one() {
    let dir = TempDir::new("bumped");
    let lock = created(&dir, &registry::<v1::Note>());
    let v1_text = std::fs::read_to_string(&lock).expect("written");

    // The old shape is untouched; only the new version is missing from the lock.
    let report = check(&registry::<bumped::Note>(), &lock, LockMode::Verify);
    assert!(
        matches!(report.problems.as_slice(), [LockProblem::NotLocked { key }] if key.version == 2),
        "{report}"
    );
    assert!(report.to_string().contains("is not in the lock yet"), "{report}");

    let report = check(&registry::<bumped::Note>(), &lock, LockMode::Update);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.outcome, LockOutcome::Updated);
    assert!(
        matches!(report.changes.as_slice(), [LockChange::Added(key)] if key.version == 2),
        "{report}"
    );
    let text = std::fs::read_to_string(&lock).expect("rewritten");
    assert!(text.starts_with(&v1_text), "the v1 entry stays as it was:\n{text}");
    assert!(text.contains("[note Noted v2]"), "{text}");
    assert!(check(&registry::<bumped::Note>(), &lock, LockMode::Verify).is_ok());

    // Going back to v1 code: stored v2 events would not decode.
    let report = check(&registry::<v1::Note>(), &lock, LockMode::Verify);
    assert!(
        matches!(report.problems.as_slice(), [LockProblem::VersionWentBack { key, current: 1 }] if key.version == 2),
        "{report}"
    );
    assert!(
        report.to_string().contains("went back to an older schema version"),
        "{report}"
    );
}

#[test]
fn without_a_lock_file_verify_fails_and_writes_nothing() {
    let dir = TempDir::new("ci");
    let lock = dir.lock();
    let report = check(&registry::<v1::Note>(), &lock, LockMode::Verify);
    assert!(
        matches!(report.problems.as_slice(), [LockProblem::NoLockFile]),
        "{report}"
    );
    assert!(
        report
            .to_string()
            .contains("run the tests once with ES_SCHEMA_LOCK=update"),
        "{report}"
    );
    assert!(!lock.exists());
}

#[test]
fn an_event_missing_from_an_existing_lock_fails_in_ci_and_is_recorded_outside() {
    mod memo {
        use crate::{event, Aggregate, Apply};
        use serde::{Deserialize, Serialize};

        #[event(name = "Memoed")]
        #[derive(Debug)]
        pub struct Memoed {
            pub at: chrono::DateTime<chrono::Utc>,
        }
        #[event]
        #[derive(Debug)]
        pub enum MemoEvent {
            Memoed(Memoed),
        }
        #[derive(Default, Serialize, Deserialize, Aggregate)]
        #[aggregate(name = "memo", event = MemoEvent)]
        pub struct Memo;
        impl Apply<Memoed> for Memo {
            fn apply(&mut self, _: &Memoed) {}
        }
    }
    let dir = TempDir::new("missing-entry");
    let lock = created(&dir, &registry::<v1::Note>());
    let mut both = registry::<v1::Note>();
    both.register::<memo::Memo>().expect("registers");
    // In CI (verify), the entry the committed lock lacks fails.
    let report = check(&both, &lock, LockMode::Verify);
    assert_eq!(report.outcome, LockOutcome::Unchanged);
    assert!(
        matches!(report.problems.as_slice(), [LockProblem::NotLocked { key }]
            if key.aggregate_type == "memo" && key.event == "Memoed" && key.version == 1),
        "{report}"
    );
    // Outside CI it is recorded beside the others, which stay as they were.
    let before = std::fs::read_to_string(&lock).expect("lock");
    let report = check(&both, &lock, LockMode::CreateIfMissing);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.outcome, LockOutcome::Updated);
    let after = std::fs::read_to_string(&lock).expect("lock");
    assert!(after.contains("[memo Memoed v1]"), "{after}");
    for line in before.lines() {
        assert!(after.contains(line), "kept: {line}");
    }
    assert!(check(&both, &lock, LockMode::Verify).is_ok());
}

#[test]
fn update_mode_rewrites_a_changed_shape_and_then_it_passes() {
    let dir = TempDir::new("update");
    let lock = created(&dir, &registry::<v1::Note>());
    let report = check(&registry::<retyped::Note>(), &lock, LockMode::Update);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.outcome, LockOutcome::Updated);
    let message = report.to_string();
    assert!(message.contains("changed `note` event `Noted` v1"), "{message}");
    assert!(message.contains("field `text` changed from str to u32"), "{message}");
    let text = std::fs::read_to_string(&lock).expect("rewritten");
    assert!(text.contains("  text: u32,"), "{text}");
    assert!(check(&registry::<retyped::Note>(), &lock, LockMode::Verify).is_ok());
    // Nothing left to update: the file is not touched.
    assert_eq!(
        check(&registry::<retyped::Note>(), &lock, LockMode::Update).outcome,
        LockOutcome::Unchanged
    );
}

#[test]
fn a_removed_event_fails_and_update_drops_it() {
    let dir = TempDir::new("removed");
    let lock = created(&dir, &registry::<v1::Note>());
    let report = check(&registry::<removed::Note>(), &lock, LockMode::Verify);
    assert_eq!(report.problems.len(), 2, "{report}");
    assert!(report
        .problems
        .iter()
        .any(|problem| matches!(problem, LockProblem::EventRemoved { key } if key.event == "Noted")));
    assert!(report
        .problems
        .iter()
        .any(|problem| matches!(problem, LockProblem::NotLocked { key } if key.event == "Archived")));
    assert!(
        report
            .to_string()
            .contains("stored `Noted` events would no longer decode"),
        "{report}"
    );

    let report = check(&registry::<removed::Note>(), &lock, LockMode::Update);
    assert!(report.is_ok(), "{report}");
    let text = std::fs::read_to_string(&lock).expect("rewritten");
    assert!(!text.contains("Noted"), "{text}");
    assert!(text.contains("[note Archived v1]"), "{text}");
}

#[test]
fn a_retired_event_read_by_a_rule_keeps_its_entries() {
    let dir = TempDir::new("retired");
    let lock = created(&dir, &registry::<v1::Note>());
    let report = check(&registry::<retired::Note>(), &lock, LockMode::Verify);
    assert_eq!(report.problems.len(), 1, "{report}");
    assert!(matches!(&report.problems[0], LockProblem::NotLocked { key } if key.event == "Archived"));
    let report = check(&registry::<retired::Note>(), &lock, LockMode::Update);
    assert!(report.is_ok(), "{report}");
    let text = std::fs::read_to_string(&lock).expect("rewritten");
    assert!(text.contains("[note Noted v1]"), "the rule still reads `Noted`: {text}");
    assert!(check(&registry::<retired::Note>(), &lock, LockMode::Verify).is_ok());
}

#[test]
fn an_untraceable_event_fails_in_every_mode() {
    let dir = TempDir::new("untraceable");
    for mode in [LockMode::CreateIfMissing, LockMode::Update, LockMode::Verify] {
        let report = check(&registry::<opaque::Vault>(), &dir.lock(), mode);
        assert!(
            report
                .problems
                .iter()
                .any(|problem| matches!(problem, LockProblem::Untraceable { .. })),
            "{mode:?}: {report}"
        );
    }
}

#[test]
fn a_hand_edited_shape_is_reported_with_its_line() {
    let dir = TempDir::new("edited");
    let lock = created(&dir, &registry::<v1::Note>());
    let text = std::fs::read_to_string(&lock).expect("written");
    std::fs::write(&lock, text.replace("priority: u8", "priority: u16")).expect("edit");
    let header_line = text.lines().position(|line| line.starts_with("[note")).expect("entry") + 1;
    match check_schema_lock(&registry::<v1::Note>(), &lock, LockMode::Verify) {
        Err(SchemaLockError::Parse { line, message, .. }) => {
            assert_eq!(line, header_line);
            assert!(message.contains("fingerprint"), "{message}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    std::fs::write(&lock, "[note Noted v1] 0000\n{ text: str").expect("edit");
    assert!(matches!(
        check_schema_lock(&registry::<v1::Note>(), &lock, LockMode::Verify),
        Err(SchemaLockError::Parse { line: 1, .. })
    ));
}

#[test]
fn odd_names_survive_the_round_trip_through_the_file() {
    mod odd {
        use crate::{event, Aggregate, Apply};
        use serde::{Deserialize, Serialize};

        #[event(name = "note.added:v1")]
        #[derive(Debug)]
        pub struct Added {
            #[serde(rename = "a b")]
            pub text: String,
        }
        #[event]
        #[derive(Debug)]
        pub enum OddEvent {
            Added(Added),
        }
        #[derive(Default, Serialize, Deserialize, Aggregate)]
        #[aggregate(name = "my.notes", event = OddEvent)]
        pub struct Odd;
        impl Apply<Added> for Odd {
            fn apply(&mut self, _: &Added) {}
        }
    }
    let dir = TempDir::new("odd");
    let lock = created(&dir, &registry::<odd::Odd>());
    let text = std::fs::read_to_string(&lock).expect("written");
    assert!(text.contains("[\"my.notes\" \"note.added:v1\" v1]"), "{text}");
    assert!(text.contains("\"a b\": str"), "{text}");
    assert!(
        check(&registry::<odd::Odd>(), &lock, LockMode::Verify).is_ok(),
        "{text}"
    );
}

#[test]
fn a_compatible_change_still_fails_but_says_old_events_decode() {
    let dir = TempDir::new("widened");
    let lock = created(&dir, &registry::<v1::Note>());
    let report = check(&registry::<widened::Note>(), &lock, LockMode::Verify);
    let message = report.to_string();
    assert!(message.contains("field `tags` was added (may be missing)"), "{message}");
    assert!(
        message.contains("still decode (every change is compatible)"),
        "{message}"
    );
    assert!(!message.contains("would no longer decode"), "{message}");
}

#[test]
fn entries_under_a_name_that_became_an_alias_are_checked_against_the_renamed_event() {
    let dir = TempDir::new("aliased");
    let lock = created(&dir, &registry::<v1::Note>());
    let report = check(&registry::<aliased::Note>(), &lock, LockMode::Verify);
    // `Noted` events still decode as `NoteTaken` (no removal), but `priority` was widened at the
    // same version, and the new name has no entry yet.
    assert_eq!(report.problems.len(), 2, "{report}");
    assert!(report.problems.iter().any(|problem| matches!(problem,
        LockProblem::ShapeChanged { key, changes } if key.event == "Noted" && changes[0].path == "priority")));
    assert!(report
        .problems
        .iter()
        .any(|problem| matches!(problem, LockProblem::NotLocked { key } if key.event == "NoteTaken")));

    assert!(check(&registry::<aliased::Note>(), &lock, LockMode::Update).is_ok());
    let text = std::fs::read_to_string(&lock).expect("rewritten");
    assert!(
        text.contains("[note Noted v1]") && text.contains("[note NoteTaken v1]"),
        "{text}"
    );
    assert!(check(&registry::<aliased::Note>(), &lock, LockMode::Verify).is_ok());
}

#[test]
fn the_mode_comes_from_es_schema_lock_then_from_ci() {
    assert_eq!(LockMode::from_values("update", "true").ok(), Some(LockMode::Update));
    assert_eq!(LockMode::from_values("verify", "").ok(), Some(LockMode::Verify));
    assert_eq!(LockMode::from_values("", "").ok(), Some(LockMode::CreateIfMissing));
    assert_eq!(LockMode::from_values("", "false").ok(), Some(LockMode::CreateIfMissing));
    assert_eq!(LockMode::from_values("", "true").ok(), Some(LockMode::Verify));
    assert_eq!(LockMode::from_values("", "1").ok(), Some(LockMode::Verify));
    let error = LockMode::from_values("yes", "").err().map(|error| error.to_string());
    assert!(
        error
            .as_deref()
            .is_some_and(|error| error.contains("ES_SCHEMA_LOCK=\"yes\"")),
        "{error:?}"
    );
}
