//! What a lock check found and did: its report, the disagreements it lists and the changes it
//! wrote.

use std::fmt;
use std::path::PathBuf;

use super::diff::ShapeChange;
use super::lock::{LockKey, LOCK_ENV};
use super::shape::indented;
use super::trace::ShapeError;

/// What the check did to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockOutcome {
    /// The file was left as it was.
    Unchanged,
    /// There was no file; it was written.
    Created,
    /// The file was rewritten with the code's shapes.
    Updated,
}

/// A disagreement between the lock and the code. Each says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockProblem {
    /// The shape at the event's current version is not the locked one.
    ShapeChanged {
        /// The event and version.
        key: LockKey,
        /// What changed, field by field.
        changes: Vec<ShapeChange>,
    },
    /// A typed upcast step (`#[upcast(from = N, typed = Old)]`) decodes the events stored at
    /// an older version as a type whose shape no longer reads what the lock recorded for it.
    UpcastShapeChanged {
        /// The event and the older version.
        key: LockKey,
        /// What the step's type changed, field by field, against the recorded shape: only the
        /// changes that stored payloads would not survive.
        changes: Vec<ShapeChange>,
    },
    /// The event's current version has no entry yet.
    NotLocked {
        /// The event and version.
        key: LockKey,
    },
    /// There is no lock file, and this mode does not create one.
    NoLockFile,
    /// The lock has a version newer than the code's.
    VersionWentBack {
        /// The locked entry.
        key: LockKey,
        /// The code's version.
        current: u32,
    },
    /// The lock has an event the code no longer has.
    EventRemoved {
        /// The locked entry.
        key: LockKey,
    },
    /// A retired event is locked at a schema version that no `#[replaced]` rule reads.
    RetiredVersionUnread {
        /// The locked entry.
        key: LockKey,
    },
    /// The event's shape could not be traced.
    Untraceable {
        /// The event and version.
        key: LockKey,
        /// Why.
        error: ShapeError,
    },
}

impl fmt::Display for LockProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockProblem::ShapeChanged { key, changes } => {
                writeln!(f, "{key} changed its stored shape without a version bump:")?;
                for change in changes {
                    writeln!(f, "    {change}")?;
                }
                let (version, next) = (key.version, key.version.saturating_add(1));
                if changes.iter().any(ShapeChange::is_breaking) {
                    write!(
                        f,
                        "  Events stored at v{version} would no longer decode. Bump `version` to {next} and add \
                         `#[upcast(from = {version}, ...)]`; if no event of the old shape was ever stored, accept \
                         the change with {LOCK_ENV}=update."
                    )
                } else {
                    write!(
                        f,
                        "  Events stored at v{version} still decode (every change is compatible): accept the \
                         change with {LOCK_ENV}=update, or bump `version` to {next} if you prefer a new version."
                    )
                }
            }
            LockProblem::UpcastShapeChanged { key, changes } => {
                writeln!(
                    f,
                    "{key} is read by a typed upcast step (`#[upcast(from = {}, typed = ...)]`) whose type no \
                     longer has the shape recorded for it:",
                    key.version
                )?;
                for change in changes {
                    writeln!(f, "    {change}")?;
                }
                write!(
                    f,
                    "  Events stored at v{} would no longer decode: give the step's type back the recorded shape \
                     (it describes stored events, not the current type); if no event of that shape was ever \
                     stored, accept the change with {LOCK_ENV}=update.",
                    key.version
                )
            }
            LockProblem::NotLocked { key } => write!(
                f,
                "{key} is not in the lock yet: run the tests once outside CI (or with {LOCK_ENV}=update) and commit \
                 the lock file."
            ),
            LockProblem::NoLockFile => write!(
                f,
                "the lock file does not exist: run the tests once with {LOCK_ENV}=update and commit it."
            ),
            LockProblem::VersionWentBack { key, current } => write!(
                f,
                "{key} is locked, but the code is at v{current}: the code went back to an older schema \
                 version, and events stored at v{} would no longer decode. Restore the newer version; if no \
                 event was ever stored at it, accept with {LOCK_ENV}=update.",
                key.version
            ),
            LockProblem::EventRemoved { key } => write!(
                f,
                "{key} is locked, but no registered aggregate has that event: stored `{}` events would no \
                 longer decode. Keep the type (or an alias to it), or accept with {LOCK_ENV}=update if none was \
                 ever stored.",
                key.event
            ),
            LockProblem::RetiredVersionUnread { key } => write!(
                f,
                "{key} is locked, but no #[replaced] rule reads `{}` at v{}: stored events of that version would \
                 no longer decode. Add `#[replaced(name = \"{}\", version = {}, by = ...)]`, or accept with \
                 {LOCK_ENV}=update if none was ever stored.",
                key.event, key.version, key.event, key.version
            ),
            LockProblem::Untraceable { key, error } => write!(f, "{key}: {error}"),
        }
    }
}

/// A change written to the lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockChange {
    /// A new entry.
    Added(LockKey),
    /// An entry's shape replaced.
    Changed(LockKey, Vec<ShapeChange>),
    /// An entry dropped (an event or version the code no longer has).
    Removed(LockKey),
}

impl fmt::Display for LockChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockChange::Added(key) => write!(f, "added {key}"),
            LockChange::Removed(key) => write!(f, "removed {key}"),
            LockChange::Changed(key, changes) => {
                write!(f, "changed {key}:")?;
                for change in changes {
                    write!(f, "\n    {change}")?;
                }
                Ok(())
            }
        }
    }
}

/// What [`check_schema_lock`](super::check_schema_lock) found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockReport {
    /// The lock file.
    pub path: PathBuf,
    /// What was done to the file.
    pub outcome: LockOutcome,
    /// The changes written, when the file was created or updated.
    pub changes: Vec<LockChange>,
    /// The disagreements left: the check passes when there are none.
    pub problems: Vec<LockProblem>,
}

impl LockReport {
    /// Whether the code agrees with the lock (after any write).
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for LockReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match self.outcome {
            LockOutcome::Unchanged if self.is_ok() => write!(f, "schema lock {path}: the code agrees with it")?,
            LockOutcome::Unchanged => write!(f, "schema lock {path} disagrees with the code:")?,
            LockOutcome::Created => write!(f, "schema lock {path} created; commit it")?,
            LockOutcome::Updated => write!(f, "schema lock {path} updated; review and commit it")?,
        }
        for change in &self.changes {
            write!(f, "\n  {}", indented(&change.to_string(), "  ").trim_start())?;
        }
        for problem in &self.problems {
            write!(
                f,
                "\n\n- {}",
                indented(problem.to_string().trim_end(), "  ").trim_start()
            )?;
        }
        Ok(())
    }
}
