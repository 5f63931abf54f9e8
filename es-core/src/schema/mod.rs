//! The schema lock: the stored shape of every event, checked against the code.
//!
//! Stored events live forever; the code that reads them changes every week. A field renamed or
//! retyped without a schema version bump makes old events fail to load, in production, months
//! later. The schema lock catches that in the tests of the change:
//!
//! - every event type's payload is traced to its JSON **shape** ([`trace_shape`], [`Shape`]):
//!   field names (after serde renames), their kinds, which may be missing, enum variants, nested
//!   types; not Rust type names, which the stored JSON does not contain;
//! - a lock file committed with the application (`events.lock`) records, for each aggregate type,
//!   stored event name and schema version, the shape and its fingerprint, in plain text that
//!   diffs well;
//! - one line in the application's tests, [`assert_schema_lock`], fails when the code disagrees
//!   with the lock, naming the event, the version and each changed field, and saying the fix.
//!
//! ```
//! # use es_core::{event, Aggregate, Apply, EventRegistry};
//! # use serde::{Deserialize, Serialize};
//! # #[event(name = "TicketOpened")]
//! # #[derive(Debug)] pub struct TicketOpened { pub title: String }
//! # #[event] #[derive(Debug)] pub enum TicketEvent { Opened(TicketOpened) }
//! # #[derive(Default, Serialize, Deserialize, Aggregate)]
//! # #[aggregate(name = "ticket", event = TicketEvent)]
//! # pub struct Ticket;
//! # impl Apply<TicketOpened> for Ticket { fn apply(&mut self, _: &TicketOpened) {} }
//! use es_core::schema::{check_schema_lock, LockMode, LockProblem};
//!
//! # let dir = std::env::temp_dir().join(format!("es-schema-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! # let lock = dir.join("events.lock");
//! let mut registry = EventRegistry::new();
//! registry.register::<Ticket>()?;
//! // First adoption: the lock is written.
//! check_schema_lock(&registry, &lock, LockMode::CreateIfMissing)?;
//!
//! // Someone retypes `title` without bumping the version...
//! # mod changed {
//! #     use es_core::{event, Aggregate, Apply};
//! #     use serde::{Deserialize, Serialize};
//! #     #[event(name = "TicketOpened")]
//! #     #[derive(Debug)] pub struct TicketOpened { pub title: Vec<String> }
//! #     #[event] #[derive(Debug)] pub enum TicketEvent { Opened(TicketOpened) }
//! #     #[derive(Default, Serialize, Deserialize, Aggregate)]
//! #     #[aggregate(name = "ticket", event = TicketEvent)]
//! #     pub struct Ticket;
//! #     impl Apply<TicketOpened> for Ticket { fn apply(&mut self, _: &TicketOpened) {} }
//! # }
//! let mut registry = EventRegistry::new();
//! registry.register::<changed::Ticket>()?;
//! let report = check_schema_lock(&registry, &lock, LockMode::Verify)?;
//! assert!(!report.is_ok());
//! let message = report.to_string();
//! assert!(message.contains("`ticket` event `TicketOpened` v1 changed its stored shape without a version bump"));
//! assert!(message.contains("field `title` changed from str to seq<str>"));
//! assert!(message.contains("Bump `version` to 2 and add `#[upcast(from = 1, ...)]`"));
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The rules
//!
//! The check fails, naming the aggregate type, event and version, when
//!
//! 1. the shape at an event's current version differs from its entry: bump `version` and add an
//!    `#[upcast(from = ..)]` step; if no event of the old shape was ever stored (or every change
//!    is compatible, which the message says), accept the change with `ES_SCHEMA_LOCK=update`;
//! 2. an event's current version has no entry, in CI (`CI` set): commit the lock file that a run
//!    outside CI wrote. Outside CI a run records new events and versions (a bump with its
//!    upcast passes at once) as long as every recorded entry agrees with the code, and writes a
//!    lock file that does not exist at all, so adopting the lock is one step;
//! 3. the lock has a version newer than the code's: the code went back to an older version;
//! 4. the lock has an event no registered aggregate has (by name or alias), or a version of a
//!    retired event that no `#[replaced]` rule reads: stored events of it would no longer decode;
//! 5. a typed upcast step (`#[upcast(from = N, typed = Old)]`) decodes version `N` as a type
//!    that no longer reads the shape recorded for `N`: `Old` describes stored events, so give it
//!    back its recorded shape (or accept with `ES_SCHEMA_LOCK=update` if no such event was stored);
//! 6. an event's shape cannot be traced.
//!
//! Entries of older versions stay in the lock: events stored at them still exist, and their
//! upcasts rely on that shape. `ES_SCHEMA_LOCK=update` rewrites the file with the code's shapes,
//! keeping those entries and dropping only those of rules 3 and 4, and prints what changed.
//! `ES_SCHEMA_LOCK=verify` only checks, as in CI. [`check_schema_lock`] takes the mode as a
//! parameter ([`LockMode`]) for tools and tests.
//!
//! # What tracing sees, and what it does not
//!
//! The tracer is a serde deserializer that answers a type's requests along one path per run, and
//! records each request before answering; it never sees a value. So:
//!
//! - leaves are serde kinds, not Rust types: a `chrono::DateTime` or a `uuid::Uuid` is `str`
//!   (events are stored as JSON, so human-readable forms are traced); changing a timestamp to
//!   a free-text string is not seen;
//! - types that read any JSON (`serde_json::Value`, untagged and internally tagged enums,
//!   `#[serde(flatten)]`) are `any`: what is inside them is not checked;
//! - hand-written `Deserialize` impls are traced by what they ask for; a part reached only
//!   through values the tracer cannot make up (a string that must match a pattern before the
//!   rest is read) is `unknown`;
//! - a named type met again inside itself is `recursive(Name)`; two generic instances of one type
//!   nested in each other (`Wrapper<Wrapper<u8>>`) look recursive too;
//! - `#[serde(default)]` and `Option` fields show as `?`; a `deserialize_with` function is traced
//!   by what it asks for; `deny_unknown_fields` and validation in `try_from` are not seen.
mod diff;
mod lock;
mod lock_file;
#[cfg(test)]
mod lock_tests;
mod parse;
mod report;
mod shape;
mod trace;
#[cfg(test)]
mod trace_tests;

pub use diff::{ShapeChange, ShapeChangeKind};
pub use lock::{assert_schema_lock, check_schema_lock, LockKey, LockMode, SchemaLockError, LOCK_ENV};
pub use parse::ParseShapeError;
pub use report::{LockChange, LockOutcome, LockProblem, LockReport};
pub use shape::{Field, Shape, Variant, VariantData};
pub use trace::{trace_shape, ShapeError};

/// Traces the JSON shape of a payload type: [`trace_shape`] of the type, as the
/// [`EventDescriptor`](crate::EventDescriptor)s of the registry hold it.
pub type ShapeTracer = fn() -> Result<Shape, ShapeError>;
