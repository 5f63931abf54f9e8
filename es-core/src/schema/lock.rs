//! The lock file of stored event shapes and the check of the code against it.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::diff::ShapeChange;
use super::lock_file::{parse_lock, render_lock, write_atomically};
use super::report::{LockChange, LockOutcome, LockProblem, LockReport};
use super::shape::Shape;
use crate::registry::{EventRegistry, RegisteredEvent};

/// The environment variable that [`assert_schema_lock`] reads: `update` rewrites the lock.
pub const LOCK_ENV: &str = "ES_SCHEMA_LOCK";

/// One entry of the lock: an event of an aggregate type at one schema version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LockKey {
    /// The stored aggregate type.
    pub aggregate_type: String,
    /// The stored event name.
    pub event: String,
    /// The schema version.
    pub version: u32,
}

impl fmt::Display for LockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` event `{}` v{}", self.aggregate_type, self.event, self.version)
    }
}

/// What [`check_schema_lock`] may do to the lock file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Only compare; never write (CI).
    Verify,
    /// Write the lock if there is no file yet (first adoption), and record events and versions
    /// it does not have yet when every recorded one agrees with the code; otherwise compare.
    CreateIfMissing,
    /// Rewrite the lock with the code's shapes, keeping older versions' entries.
    Update,
}

impl LockMode {
    /// The mode [`assert_schema_lock`] uses: `ES_SCHEMA_LOCK=update` updates,
    /// `ES_SCHEMA_LOCK=verify` verifies; unset, it verifies in CI (`CI` set to anything but
    /// `false` or `0`) and creates a missing lock elsewhere.
    pub fn from_env() -> Result<Self, SchemaLockError> {
        let var = |name| std::env::var(name).unwrap_or_default();
        Self::from_values(&var(LOCK_ENV), &var("CI"))
    }

    /// [`LockMode::from_env`] on given values (empty for unset), so it can be tested without
    /// touching the process environment.
    pub(crate) fn from_values(lock: &str, ci: &str) -> Result<Self, SchemaLockError> {
        match lock {
            "update" => Ok(Self::Update),
            "verify" => Ok(Self::Verify),
            "" if matches!(ci, "" | "false" | "0") => Ok(Self::CreateIfMissing),
            "" => Ok(Self::Verify),
            other => Err(SchemaLockError::InvalidMode {
                value: other.to_owned(),
            }),
        }
    }
}

/// Why the lock could not be checked at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaLockError {
    /// Reading or writing the file failed.
    #[error("schema lock {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The file is not a lock this version can read.
    #[error(
        "schema lock {}, line {line}: {message} (fix it by hand, or rewrite it with {LOCK_ENV}=update)",
        path.display()
    )]
    Parse {
        /// The lock file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// What is wrong there.
        message: String,
    },
    /// `ES_SCHEMA_LOCK` holds something else than `update` or `verify`.
    #[error("{LOCK_ENV}={value:?} is not understood: use `update` to rewrite the lock, `verify` to only check it")]
    InvalidMode {
        /// The value found.
        value: String,
    },
}

/// Checks every event of `registry` against the lock file at `path`, writing it as `mode` allows.
///
/// Entries are keyed by aggregate type, stored event name and schema version. The check fails
/// (the report has problems) when the current version's shape differs from its entry, when the
/// current version has no entry, when the lock has a newer version than the code or an event the
/// code no longer has, when the type a typed upcast step decodes an older version as no longer
/// reads the shape recorded for that version, or when a shape cannot be traced. [`LockMode::Update`] rewrites the file
/// with the code's shapes instead (keeping the entries of older versions, which events stored
/// at them still need) and leaves only untraceable shapes as problems.
pub fn check_schema_lock(registry: &EventRegistry, path: &Path, mode: LockMode) -> Result<LockReport, SchemaLockError> {
    let io_error = |source| SchemaLockError::Io {
        path: path.to_owned(),
        source,
    };
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(io_error(error)),
    };
    let locked = match &existing {
        Some(text) => parse_lock(text).map_err(|(line, message)| SchemaLockError::Parse {
            path: path.to_owned(),
            line,
            message,
        })?,
        None => BTreeMap::new(),
    };

    let mut problems = Vec::new();
    let mut changes = Vec::new();
    let mut next = locked.clone();
    let mut current = BTreeMap::new();
    for registered in registry.events() {
        let key = LockKey {
            aggregate_type: registered.aggregate_type.to_owned(),
            event: registered.event.name.to_owned(),
            version: registered.event.version,
        };
        match (registered.event.shape)() {
            Ok(shape) => {
                current.insert((key.aggregate_type.clone(), registered.event.name), shape.clone());
                compare(&locked, key, shape, &mut next, &mut problems, &mut changes);
            }
            Err(error) => problems.push(LockProblem::Untraceable { key, error }),
        }
        compare_upcast_shapes(&registered, &locked, &mut next, &mut problems, &mut changes);
    }
    for key in locked.keys() {
        if registry.is_replaced(&key.aggregate_type, &key.event) {
            // A retired event its rules still read: the locked shape is what a rule gets. A
            // locked version no rule reads holds stored events nothing decodes any more.
            if !registry.reads_replaced(&key.aggregate_type, &key.event, key.version) {
                problems.push(LockProblem::RetiredVersionUnread { key: key.clone() });
                next.remove(key);
                changes.push(LockChange::Removed(key.clone()));
            }
            continue;
        }
        let Some(registered) = registry.find(&key.aggregate_type, &key.event) else {
            problems.push(LockProblem::EventRemoved { key: key.clone() });
            next.remove(key);
            changes.push(LockChange::Removed(key.clone()));
            continue;
        };
        let version = registered.event.version;
        if key.version > version {
            problems.push(LockProblem::VersionWentBack {
                key: key.clone(),
                current: version,
            });
            next.remove(key);
            changes.push(LockChange::Removed(key.clone()));
        } else if key.version == version && key.event != registered.event.name {
            // Stored under a name that is now an alias: those events decode as the renamed type.
            if let Some(shape) = current.get(&(key.aggregate_type.clone(), registered.event.name)) {
                compare(
                    &locked,
                    key.clone(),
                    shape.clone(),
                    &mut next,
                    &mut problems,
                    &mut changes,
                );
            }
        }
    }

    // Outside CI, entries the lock does not have yet (a new event, a bumped version) are
    // recorded as long as nothing recorded disagrees: the lock then only grows.
    let only_additions = problems
        .iter()
        .all(|problem| matches!(problem, LockProblem::NotLocked { .. } | LockProblem::Untraceable { .. }));
    let write = match (mode, &existing) {
        (LockMode::Update, _) | (LockMode::CreateIfMissing, None) => true,
        (LockMode::CreateIfMissing, Some(_)) => only_additions,
        (LockMode::Verify, None) => {
            problems.retain(|problem| matches!(problem, LockProblem::Untraceable { .. }));
            problems.insert(0, LockProblem::NoLockFile);
            false
        }
        _ => false,
    };
    if !write {
        return Ok(LockReport {
            path: path.to_owned(),
            outcome: LockOutcome::Unchanged,
            changes: Vec::new(),
            problems,
        });
    }
    // Writing accepts every disagreement but an untraceable shape.
    problems.retain(|problem| matches!(problem, LockProblem::Untraceable { .. }));
    let text = render_lock(&next);
    let outcome = match &existing {
        Some(old) if *old == text => LockOutcome::Unchanged,
        Some(_) => LockOutcome::Updated,
        None => LockOutcome::Created,
    };
    if outcome != LockOutcome::Unchanged {
        write_atomically(path, &text).map_err(io_error)?;
    } else {
        changes.clear();
    }
    Ok(LockReport {
        path: path.to_owned(),
        outcome,
        changes,
        problems,
    })
}

/// Checks the types that typed upcast steps decode older versions as against the shapes the
/// lock recorded for those versions: a change stored payloads would not survive is a problem
/// (and, when writing, the recorded shape is replaced).
fn compare_upcast_shapes(
    registered: &RegisteredEvent,
    locked: &BTreeMap<LockKey, Shape>,
    next: &mut BTreeMap<LockKey, Shape>,
    problems: &mut Vec<LockProblem>,
    changes: &mut Vec<LockChange>,
) {
    for &(version, trace) in registered.event.upcast_shapes {
        let key = LockKey {
            aggregate_type: registered.aggregate_type.to_owned(),
            event: registered.event.name.to_owned(),
            version,
        };
        // A version the lock never recorded: nothing says what its events look like.
        let Some(recorded) = locked.get(&key) else {
            continue;
        };
        match trace() {
            Ok(read_as) => {
                let breaking: Vec<_> = recorded
                    .differences(&read_as)
                    .into_iter()
                    .filter(ShapeChange::is_breaking)
                    .collect();
                if !breaking.is_empty() {
                    problems.push(LockProblem::UpcastShapeChanged {
                        key: key.clone(),
                        changes: breaking.clone(),
                    });
                    changes.push(LockChange::Changed(key.clone(), breaking));
                    next.insert(key, read_as);
                }
            }
            Err(error) => problems.push(LockProblem::Untraceable { key, error }),
        }
    }
}

fn compare(
    locked: &BTreeMap<LockKey, Shape>,
    key: LockKey,
    shape: Shape,
    next: &mut BTreeMap<LockKey, Shape>,
    problems: &mut Vec<LockProblem>,
    changes: &mut Vec<LockChange>,
) {
    match locked.get(&key) {
        Some(old) if *old == shape => {}
        Some(old) => {
            let differences = old.differences(&shape);
            if differences.is_empty() {
                // Fields or variants declared in another order: JSON keeps none, so the stored
                // shape is the same, and the lock keeps its text.
                return;
            }
            problems.push(LockProblem::ShapeChanged {
                key: key.clone(),
                changes: differences.clone(),
            });
            changes.push(LockChange::Changed(key.clone(), differences));
            next.insert(key, shape);
        }
        None => {
            problems.push(LockProblem::NotLocked { key: key.clone() });
            changes.push(LockChange::Added(key.clone()));
            next.insert(key, shape);
        }
    }
}

/// Panics with a readable report when the lock file at `path` disagrees with the events of
/// `registry`: the one line an application's tests need.
///
/// The mode comes from the environment ([`LockMode::from_env`]): `ES_SCHEMA_LOCK=update`
/// rewrites the file and passes, printing what changed; otherwise a missing file is created and
/// passes, except in CI (`CI` set), where nothing is written.
///
/// ```
/// # use es_core::{event, Aggregate, Apply, EventRegistry};
/// # use serde::{Deserialize, Serialize};
/// # #[event(name = "Deposited")]
/// # #[derive(Debug)] pub struct Deposited { pub cents: u64 }
/// # #[event] #[derive(Debug)] pub enum AccountEvent { Deposited(Deposited) }
/// # #[derive(Default, Serialize, Deserialize, Aggregate)]
/// # #[aggregate(name = "account", event = AccountEvent)]
/// # pub struct Account;
/// # impl Apply<Deposited> for Account { fn apply(&mut self, _: &Deposited) {} }
/// # let dir = std::env::temp_dir().join(format!("es-schema-lock-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// # let lock = dir.join("events.lock");
/// let mut registry = EventRegistry::new();
/// registry.register::<Account>()?;
/// # es_core::schema::check_schema_lock(&registry, &lock, es_core::schema::LockMode::Update)?;
/// // In an application's tests, with the lock committed beside its Cargo.toml:
/// // es_core::testing::assert_schema_lock(&registry, concat!(env!("CARGO_MANIFEST_DIR"), "/events.lock"));
/// es_core::testing::assert_schema_lock(&registry, &lock);
/// # assert!(std::fs::read_to_string(&lock)?.contains("[account Deposited v1] eb0a1e0d48cb7b73\n{\n  cents: u64,\n}\n"));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[track_caller]
pub fn assert_schema_lock(registry: &EventRegistry, path: impl AsRef<Path>) {
    let path = path.as_ref();
    let report = LockMode::from_env().and_then(|mode| check_schema_lock(registry, path, mode));
    match report {
        Ok(report) if report.is_ok() => {
            if report.outcome != LockOutcome::Unchanged {
                eprintln!("{report}");
            }
        }
        Ok(report) => panic!("{report}"),
        Err(error) => panic!("{error}"),
    }
}
