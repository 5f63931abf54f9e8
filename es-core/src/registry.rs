//! The program-wide registry of aggregate types and their events.
//!
//! Within one aggregate, `#[event]` already rejects duplicate names at compile time. Across
//! aggregates, names are scoped by aggregate type, so what can clash is the aggregate type
//! itself: two aggregates (perhaps from two crates) stored under the same type name would read
//! each other's streams. The registry refuses that when it is built, before any event is read.

use std::any::type_name;
use std::collections::BTreeMap;

use crate::aggregate::Aggregate;
use crate::event::{EventDescriptor, EventSet};

/// One registered event: which aggregate, which stored name, which schema version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisteredEvent {
    /// The aggregate type the event belongs to.
    pub aggregate_type: &'static str,
    /// The event's description (name, aliases, version, Rust type).
    pub event: EventDescriptor,
}

/// Why an aggregate could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Two Rust types claim the same stored aggregate type.
    #[error(
        "aggregate type `{aggregate_type}` is claimed by both `{first}` and `{second}`; give one of \
         them another `#[aggregate(name = \"...\")]`"
    )]
    DuplicateAggregateType {
        /// The stored aggregate type.
        aggregate_type: &'static str,
        /// The Rust type registered first.
        first: &'static str,
        /// The Rust type registered second.
        second: &'static str,
    },
}

/// Lists every aggregate of a program with its events, and finds the event behind a stored name.
///
/// ```
/// # use es_core::{event, Aggregate, Apply, EventRegistry};
/// # use serde::{Deserialize, Serialize};
/// # #[event(name = "deposited", version = 2)]
/// # #[upcast(from = 1, json = keep)]
/// # #[derive(Debug)] pub struct Deposited { pub cents: u64 }
/// # fn keep(v: serde_json::Value) -> Result<serde_json::Value, es_core::UpcastError> { Ok(v) }
/// # #[event] #[derive(Debug)] pub enum AccountEvent { Deposited(Deposited) }
/// # #[derive(Default, Serialize, Deserialize, Aggregate)]
/// # #[aggregate(name = "account", event = AccountEvent)]
/// # pub struct Account;
/// # impl Apply<Deposited> for Account { fn apply(&mut self, _: &Deposited) {} }
/// let mut registry = EventRegistry::new();
/// registry.register::<Account>()?;
/// let listed: Vec<_> = registry.events().map(|e| (e.aggregate_type, e.event.name, e.event.version)).collect();
/// assert_eq!(listed, [("account", "deposited", 2)]);
/// assert!(registry.register::<Account>().is_ok(), "registering the same type twice is harmless");
/// # Ok::<(), es_core::RegistryError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct EventRegistry {
    aggregates: BTreeMap<&'static str, RegisteredAggregate>,
}

#[derive(Debug, Clone)]
struct RegisteredAggregate {
    rust_type: &'static str,
    events: &'static [EventDescriptor],
    replaced: &'static [&'static str],
    replaced_versions: &'static [(&'static str, u32)],
}

impl EventRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers aggregate `A` and its events. Registering the same type again is a no-op;
    /// another type with the same stored aggregate type is an error.
    pub fn register<A: Aggregate>(&mut self) -> Result<&mut Self, RegistryError> {
        let rust_type = type_name::<A>();
        if let Some(existing) = self.aggregates.get(A::TYPE) {
            if existing.rust_type != rust_type {
                return Err(RegistryError::DuplicateAggregateType {
                    aggregate_type: A::TYPE,
                    first: existing.rust_type,
                    second: rust_type,
                });
            }
            return Ok(self);
        }
        self.aggregates.insert(
            A::TYPE,
            RegisteredAggregate {
                rust_type,
                events: <A::Event as EventSet>::EVENTS,
                replaced: <A::Event as EventSet>::REPLACED,
                replaced_versions: <A::Event as EventSet>::REPLACED_VERSIONS,
            },
        );
        Ok(self)
    }

    /// Every registered event, ordered by aggregate type, then declaration order.
    pub fn events(&self) -> impl Iterator<Item = RegisteredEvent> + '_ {
        self.aggregates.iter().flat_map(|(&aggregate_type, aggregate)| {
            aggregate
                .events
                .iter()
                .map(move |&event| RegisteredEvent { aggregate_type, event })
        })
    }

    /// The event stored as `event_name` (its name or an alias) by aggregate type
    /// `aggregate_type`.
    pub fn find(&self, aggregate_type: &str, event_name: &str) -> Option<RegisteredEvent> {
        let (&aggregate_type, aggregate) = self.aggregates.get_key_value(aggregate_type)?;
        aggregate
            .events
            .iter()
            .find(|event| event.name == event_name || event.aliases.contains(&event_name))
            .map(|&event| RegisteredEvent { aggregate_type, event })
    }

    /// Whether aggregate type `aggregate_type` reads events stored as `event_name` through a
    /// `#[replaced]` rule: a retired event, still decoded though no type has its name.
    pub fn is_replaced(&self, aggregate_type: &str, event_name: &str) -> bool {
        self.aggregates
            .get(aggregate_type)
            .is_some_and(|aggregate| aggregate.replaced.contains(&event_name))
    }

    /// Whether a `#[replaced]` rule of aggregate type `aggregate_type` reads events stored as
    /// `event_name` at schema version `version`.
    pub fn reads_replaced(&self, aggregate_type: &str, event_name: &str, version: u32) -> bool {
        self.aggregates.get(aggregate_type).is_some_and(|aggregate| {
            aggregate
                .replaced_versions
                .iter()
                .any(|&(name, read)| name == event_name && read == version)
        })
    }
}
