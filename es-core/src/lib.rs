//! Event-sourced aggregates for Rust, with the guarantees checked by the compiler.
//!
//! An event-sourced aggregate keeps no current-state row: every change is an **event**, stored
//! append-only in the aggregate's **stream**, and the state is the fold of those events. This
//! crate gives you:
//!
//! - [`#[event]`](macro@event) for event types: a stable stored name, aliases for renamed events,
//!   a schema version, and **upcasting** of payloads stored at older versions;
//! - [`#[derive(Aggregate)]`](derive@Aggregate) for the aggregate: apply dispatch that is
//!   exhaustive by construction (an event with no [`Apply`] handler does not compile);
//! - a [`Repository`] that loads aggregates (now, [at a version](Repository::load_at_version) or
//!   [at an instant](Repository::load_at_instant)), executes commands
//!   ([sync](Repository::execute) or [async](Repository::execute_async)) or
//!   [saves](Repository::save) aggregates changed in place, with optimistic concurrency,
//!   [retries](RetryPolicy) with backoff and jitter, idempotent commands (a request sent again
//!   is recognised by its [command id](Metadata::with_command_id)), and snapshots;
//! - storage traits split by need ([`EventStore`] for repositories, [`GlobalLog`] for
//!   projections, [`SnapshotStore`], [`CheckpointStore`]) with an [`InMemoryStore`] and
//!   [`InMemoryReadModel`] here, a SQLite store in `es-sqlite` (one file, the embedded durable
//!   choice) and a PostgreSQL store in `es-postgres`, all checked by the same conformance suite
//!   (module `conformance`, feature `conformance`), and refusing alike, before writing
//!   anything, an append over the same [`Limits`] (1 MiB payloads, 10,000 events or 16 MiB per
//!   append, ...);
//! - projections ([`Projection`], [`ProjectionRunner`]): read models fed by the store's
//!   gap-free global order, with checkpoints committed together with the read-model writes, one
//!   active runner per projection, and runners that ride out outages by themselves;
//! - given/when/then tests in [`testing`].
//!
//! # A first aggregate
//!
//! ```
//! use es_core::{event, Aggregate, Apply, InMemoryStore, Metadata, Repository};
//! use serde::{Deserialize, Serialize};
//!
//! // Each event is a struct; its name and schema version are stored with it.
//! #[event]
//! #[derive(Debug, Clone, PartialEq)]
//! pub struct TicketOpened { pub title: String }
//!
//! #[event(name = "TicketClosed", alias = "TicketDone")]
//! #[derive(Debug, Clone, PartialEq)]
//! pub struct TicketClosed;
//!
//! // The aggregate's events: one variant per event type.
//! #[event]
//! #[derive(Debug, Clone, PartialEq)]
//! pub enum TicketEvent {
//!     Opened(TicketOpened),
//!     Closed(TicketClosed),
//! }
//!
//! #[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
//! #[aggregate(name = "ticket", id = String, event = TicketEvent)]
//! pub struct Ticket { title: String, open: bool }
//!
//! // One handler per event; leaving one out is a compile error.
//! impl Apply<TicketOpened> for Ticket {
//!     fn apply(&mut self, event: &TicketOpened) {
//!         self.title = event.title.clone();
//!         self.open = true;
//!     }
//! }
//! impl Apply<TicketClosed> for Ticket {
//!     fn apply(&mut self, _: &TicketClosed) { self.open = false; }
//! }
//!
//! #[derive(Debug, PartialEq, thiserror::Error)]
//! pub enum TicketError {
//!     #[error("the ticket is already closed")]
//!     AlreadyClosed,
//! }
//!
//! impl Ticket {
//!     // Commands decide: they read the state and return new events, or refuse.
//!     pub fn close(&self) -> Result<Vec<TicketEvent>, TicketError> {
//!         if !self.open { return Err(TicketError::AlreadyClosed); }
//!         Ok(vec![TicketClosed.into()])
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tickets = Repository::<Ticket, _>::new(InMemoryStore::new());
//! let open = |_: &Ticket| vec![TicketOpened { title: "Printer on fire".into() }.into()];
//! tickets.execute("T-1", Metadata::new(), open).await?;
//! tickets.execute("T-1", Metadata::new().with_actor("alice"), Ticket::close).await?;
//!
//! assert!(!tickets.load("T-1").await?.aggregate.open);
//! assert!(tickets.load_at_version("T-1", 1).await?.aggregate.open); // time travel
//!
//! // Load, change, save: the classic flow, with the same optimistic concurrency.
//! let mut ticket = tickets.load_for_update("T-1").await?;
//! assert_eq!(ticket.decide(Ticket::close).err(), Some(TicketError::AlreadyClosed));
//! # Ok(()) }
//! ```
//!
//! # Schema evolution
//!
//! When an event's payload changes shape, bump its `version` and say how to upgrade each older
//! version by one step, either on JSON or with typed structs kept for the old shapes:
//!
//! ```
//! use es_core::{event, UpcastError};
//! use serde_json::Value;
//!
//! // v1 had no reason; v2 has one.
//! #[event(version = 2)]
//! #[upcast(from = 1, json = add_reason)]
//! #[derive(Debug, PartialEq)]
//! pub struct TicketEscalated { pub reason: String }
//!
//! fn add_reason(mut v1: Value) -> Result<Value, UpcastError> {
//!     let payload = v1.as_object_mut().ok_or_else(|| UpcastError::new("not an object"))?;
//!     payload.insert("reason".into(), "not recorded".into());
//!     Ok(v1)
//! }
//!
//! use es_core::EventType;
//! let stored_v1 = br#"{}"#;
//! let event = TicketEscalated::decode_payload(1, stored_v1)?;
//! assert_eq!(event.reason, "not recorded");
//! # Ok::<(), es_core::DecodeError>(())
//! ```
//!
//! A missing step is a compile error, a version newer than the code is a typed
//! [`DecodeError::SchemaVersionTooNew`], and a payload at the current version decodes straight
//! from its bytes.
//!
//! # Errors
//!
//! Every error is a typed enum or struct to match on ([`RepositoryError`], [`CommandError`],
//! [`StoreError`], [`DecodeError`], [`ProjectionError`], ...), and its message alone tells the
//! whole story: what failed (the stream, the version, the event) and why, the cause's own message
//! included, as sqlx's errors do, so a log line of `{error}` is enough. The cause is also its
//! [`source`](std::error::Error::source), typed, to downcast or walk; a reporter that prints
//! the whole chain (anyhow's `{:#}`) shows the cause's text a second time.
//!
//! # Metrics and traces
//!
//! es-core records through the [`metrics`](https://docs.rs/metrics/0.24) facade (0.24) and
//! [`tracing`](https://docs.rs/tracing): nothing is exported until the application installs a
//! recorder (e.g. `metrics-exporter-prometheus`) and a subscriber. The metrics:
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `es_projection_events_handled_total` | counter | `projection`, `aggregate_type`, `event` | events a projection handled and committed |
//! | `es_projection_events_skipped_total` | counter | `projection`, `aggregate_type`, `event`, and `reason` = `unknown` for unknown events | events skipped (unknown, by policy) |
//! | `es_projection_events_parked_total` | counter | `projection`, `aggregate_type`, `event` | events parked after failing |
//! | `es_projection_failures_total` | counter | `projection`, `kind` (`handler`, `decode`, `transient`) | failures, retried or not |
//! | `es_projection_lag_events` | gauge | `projection` | events between the checkpoint and the head |
//! | `es_projection_lag_seconds` | gauge | `projection` | age of the oldest event not yet handled |
//! | `es_projection_held_back_events` | gauge | `projection` | events committed but held back from the global log behind a write transaction open elsewhere (PostgreSQL; see [`GlobalLog::unsettled`]); after 30 s of it the runner logs a warning naming the transaction, and again each minute it lasts |
//! | `es_projection_unavailable` | gauge | `projection` | 1 while the runner waits out an outage |
//! | `es_projection_batch_seconds` | histogram | `projection` | how long a unit of work was open |
//! | `es_projection_commit_seconds` | histogram | `projection` | how long its commit took |
//! | `es_aggregate_events_skipped_total` | counter | `aggregate_type` | unknown events a repository skipped on load |
//!
//! Commands run in an `execute` span (aggregate type and id, command and correlation ids), loads in
//! a `load` span, and a projection handles each event in a span carrying the ids of the
//! command that wrote it.

#![warn(missing_docs)]

extern crate self as es_core;

mod aggregate;
pub mod checks;
#[cfg(feature = "conformance")]
pub mod conformance;
mod event;
pub mod lifecycle;
mod memory;
mod metadata;
pub mod pii;
mod projection;
mod record;
mod registry;
mod repository;
pub mod schema;
mod store;
pub mod tenancy;
pub mod testing;

pub use aggregate::{Aggregate, AppliedBy, Apply};
pub use event::{DecodeError, Decoded, EventDescriptor, EventSet, EventType, JsonUpcast, UpcastError};
pub use memory::{InMemoryClaim, InMemoryReadModel, InMemoryStore, InMemoryUnit, InMemoryWakeUp};
pub use metadata::Metadata;
pub use projection::{
    wait_for_checkpoint, Backoff, CatchUp, CheckpointError, CheckpointStore, ClaimStatus, FailurePolicy, HandlerError,
    HandlerFailure, Lag, ParkedEvent, PollOnly, Projection, ProjectionError, ProjectionProgress, ProjectionRunner,
    RebuildProgress, RunnerOptions, SwitchFuture, UnknownEvents, WaitError, WakeUp,
};
pub use record::{
    command_event_id, decode_record, decode_record_all, encode_batch, DecodedEvent, RecordDecodeError,
    RecordEncodeError,
};
pub use registry::{EventRegistry, RegisteredEvent, RegistryError};
pub use repository::{
    AppendedEvent, AsOf, CommandError, DecideFuture, Decision, Executed, IdRef, Loaded, Repository, RepositoryError,
    RetryPolicy, Saved, Versioned,
};
pub use store::{
    AppendOutcome, ConcurrencyConflict, EventStore, EventStream, ExpectedVersion, GlobalLog, Limit, LimitExceeded,
    Limits, LogFilter, LogPage, LogReplay, LogReplayFn, LoggedEvent, NewEvent, RecordedEvent, ReplayFn, ReplayedEvent,
    Snapshot, SnapshotStore, StoreError, StoreResult, StoredEventPlace, StreamCatalog, StreamId, StreamQuery,
    StreamSlice, StreamSummary, Tail,
};

#[doc = include_str!("macro_docs/event.md")]
pub use es_derive::event;
#[doc = include_str!("macro_docs/aggregate.md")]
pub use es_derive::Aggregate;

/// Re-exported so projections and stores can implement this crate's async traits without
/// depending on `async-trait` themselves.
pub use async_trait::async_trait;

/// The serde that `#[event]` derives `Serialize` and `Deserialize` with, for code that needs the
/// same version.
pub use serde;
/// The JSON library of stored payloads: JSON upcast steps take and return its
/// [`Value`](serde_json::Value).
pub use serde_json;

/// Re-exports for the code the macros generate. Not public API: may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::event::upcast;
}

#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
