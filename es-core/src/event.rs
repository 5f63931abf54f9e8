//! Typed events: stored names, schema versions, and decoding with upcasting.
//!
//! You rarely implement these traits by hand: [`#[event]`](crate::event) on a struct implements
//! [`EventType`], and on an enum of such structs implements [`EventSet`].

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// One kind of event, as stored: a stable name, older names, and a schema version.
///
/// Implemented by `#[event]` on a struct. The struct is the payload: it is stored as JSON under
/// [`EventType::NAME`] with [`EventType::VERSION`] beside it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event type",
    label = "not an `#[event]` struct",
    note = "an event is a struct marked `#[es_core::event]`; an `#[event]` enum's variants each wrap one such struct, never another enum or a plain struct"
)]
pub trait EventType: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The name stored with every event of this type. Never change it once events are stored:
    /// rename the Rust type freely, and list old stored names in [`EventType::ALIASES`].
    const NAME: &'static str;
    /// Names this event was stored under before; still decoded, never written.
    const ALIASES: &'static [&'static str];
    /// The current schema version of the payload; written with every new event.
    const VERSION: u32;
    /// The `#[pii]` fields, by stored (JSON) name: personal data that a
    /// [`PiiStore`](crate::pii::PiiStore) seals with the data subject's key.
    const PII_FIELDS: &'static [&'static str] = &[];
    /// The field whose value names the data subject of the `#[pii]` fields
    /// (`#[event(subject = field)]`); `None` when the subject is the stream.
    const PII_SUBJECT: Option<&'static str> = None;
    /// The Rust type's path, set by `#[event]`, so the compile-time name check tells one type
    /// listed twice from two types sharing a name. Empty when unknown.
    #[doc(hidden)]
    const RUST_PATH: &'static str = "";
    /// The older schema versions that typed upcast steps (`#[upcast(from = N, typed = Old)]`)
    /// decode, each with a tracer of the type they decode as: the schema lock checks those
    /// types against the shapes it recorded for the versions. Set by `#[event]`.
    const UPCAST_SHAPES: &'static [(u32, crate::schema::ShapeTracer)] = &[];

    /// Decodes a payload stored at `schema_version`.
    ///
    /// A payload at [`EventType::VERSION`] is decoded straight from `payload`; an older one is
    /// upcast step by step first. Newer versions are refused with
    /// [`DecodeError::SchemaVersionTooNew`].
    fn decode_payload(schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError>;

    /// Whether `name` is this event's stored name or one of its aliases.
    fn is_named(name: &str) -> bool {
        name == Self::NAME || Self::ALIASES.contains(&name)
    }
}

/// What the registry knows of one event type.
#[derive(Clone, Copy)]
pub struct EventDescriptor {
    /// The stored name.
    pub name: &'static str,
    /// Older stored names, still decoded.
    pub aliases: &'static [&'static str],
    /// The current schema version.
    pub version: u32,
    /// The Rust type, for error messages.
    pub rust_type: &'static str,
    /// Traces the JSON shape of the payload at the current version, for the schema lock
    /// ([`crate::schema`]). Called only when the lock is checked: tracing costs a few hundred
    /// trial deserializations.
    pub shape: crate::schema::ShapeTracer,
    /// The older schema versions that typed upcast steps decode, with the types' tracers (see
    /// [`EventType::UPCAST_SHAPES`]).
    pub upcast_shapes: &'static [(u32, crate::schema::ShapeTracer)],
    /// The `#[pii]` fields, by stored (JSON) name: sealed by a
    /// [`PiiStore`](crate::pii::PiiStore).
    pub pii_fields: &'static [&'static str],
    /// The field naming the data subject of the `#[pii]` fields; `None` when the stream is.
    pub pii_subject: Option<&'static str>,
}

// By hand: `shape` and the upcast shapes' tracers are function pointers, whose addresses say
// nothing about the event (and are not even stable across codegen units), so they take no part
// in equality or debug output.
impl PartialEq for EventDescriptor {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.aliases == other.aliases
            && self.version == other.version
            && self.rust_type == other.rust_type
            && self.pii_fields == other.pii_fields
            && self.pii_subject == other.pii_subject
            && self.upcast_versions().eq(other.upcast_versions())
    }
}

impl EventDescriptor {
    /// The versions of [`upcast_shapes`](Self::upcast_shapes), without the tracers.
    fn upcast_versions(&self) -> impl Iterator<Item = u32> + '_ {
        self.upcast_shapes.iter().map(|(version, _)| *version)
    }
}

impl Eq for EventDescriptor {}

impl fmt::Debug for EventDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventDescriptor")
            .field("name", &self.name)
            .field("aliases", &self.aliases)
            .field("version", &self.version)
            .field("rust_type", &self.rust_type)
            .field("pii_fields", &self.pii_fields)
            .field("pii_subject", &self.pii_subject)
            .field("upcast_versions", &self.upcast_versions().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// All the events of one aggregate: an enum whose variants each wrap one [`EventType`].
///
/// Implemented by `#[event]` on such an enum; [`Aggregate::Event`](crate::Aggregate::Event) names
/// it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event enum",
    label = "expected an enum marked `#[event]`",
    note = "put `#[es_core::event]` on an enum whose variants each wrap one `#[event]` struct, e.g. `Opened(TicketOpened)`"
)]
pub trait EventSet: Send + Sync + Sized + 'static {
    /// Every event type of the set, in declaration order.
    const EVENTS: &'static [EventDescriptor];

    /// The stored name of this event.
    fn event_name(&self) -> &'static str;

    /// The schema version this event is written at.
    fn schema_version(&self) -> u32;

    /// Serializes the payload as JSON.
    fn encode_payload(&self) -> Result<Vec<u8>, serde_json::Error>;

    /// Decodes a stored event by name (or alias) and schema version.
    fn decode(event_name: &str, schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError>;

    /// Stored names of retired event types that `#[replaced]` rules turn into events of this set
    /// (none, one or several per stored event); [`EventSet::decode_all`] decodes them.
    const REPLACED: &'static [&'static str] = &[];

    /// Each name of [`EventSet::REPLACED`] with a schema version a `#[replaced]` rule reads it
    /// at: a retired event stored at any other version does not decode.
    const REPLACED_VERSIONS: &'static [(&'static str, u32)] = &[];

    /// Decodes a stored event into every event it stands for now: one event for the name or an
    /// alias of an event of the set; for a name of [`EventSet::REPLACED`], whatever its
    /// `#[replaced]` rule returns (none, one or several events).
    ///
    /// Readers of stored events (repositories, projections) decode through this. The default,
    /// for a set without replaced names, is [`EventSet::decode`].
    fn decode_all(event_name: &str, schema_version: u32, payload: &[u8]) -> Result<Decoded<Self>, DecodeError> {
        Self::decode(event_name, schema_version, payload).map(Decoded::One)
    }

    /// Whether any event of the set is stored under `event_name`, or a `#[replaced]` rule turns
    /// events of that name into events of the set: a cheap check that lets readers skip events
    /// they do not handle without touching the payload.
    fn handles(event_name: &str) -> bool {
        Self::EVENTS
            .iter()
            .any(|event| event.name == event_name || event.aliases.contains(&event_name))
            || Self::REPLACED.contains(&event_name)
    }
}

/// What one stored event stands for now: usually one event; for a retired event type that a
/// `#[replaced]` rule turns into events of the set, any number of them, none included.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded<E> {
    /// The stored event, decoded (and upcast) into one event.
    One(E),
    /// What a `#[replaced]` rule made of the stored event, in order.
    Many(Vec<E>),
}

impl<E> Decoded<E> {
    /// How many events the stored event stands for.
    pub fn len(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Many(events) => events.len(),
        }
    }

    /// Whether the stored event stands for no event at all (a rule dropped it).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<E> IntoIterator for Decoded<E> {
    type Item = E;
    type IntoIter = std::iter::Chain<std::option::IntoIter<E>, std::vec::IntoIter<E>>;

    fn into_iter(self) -> Self::IntoIter {
        match self {
            Self::One(event) => Some(event).into_iter().chain(Vec::new()),
            Self::Many(events) => None.into_iter().chain(events),
        }
    }
}

/// Why a stored payload did not decode into a typed event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No event of the aggregate is stored under this name or alias.
    #[error(
        "unknown event type `{event_name}`: no event of this aggregate has that name or alias \
         (add `alias = \"{event_name}\"` to the event that was renamed)"
    )]
    UnknownEventType {
        /// The stored name.
        event_name: String,
    },
    /// The payload was written by newer code than this program.
    #[error(
        "event `{event_name}` is stored at schema version {stored}, but this program knows \
         only up to version {current}: deploy the newer code before reading these events"
    )]
    SchemaVersionTooNew {
        /// The event's stored name.
        event_name: &'static str,
        /// The stored schema version.
        stored: u32,
        /// The newest version this program knows.
        current: u32,
    },
    /// The stored schema version is below where the upcast chain starts (e.g. version 0).
    #[error(
        "event `{event_name}` is stored at schema version {stored}, from which no upcast path \
         leads to version {current}"
    )]
    NoUpcastPath {
        /// The event's stored name.
        event_name: &'static str,
        /// The stored schema version.
        stored: u32,
        /// The current version.
        current: u32,
    },
    /// The payload is not valid JSON for the expected shape.
    #[error("payload of event `{event_name}` at schema version {schema_version} does not decode: {source}")]
    Payload {
        /// The event's stored name.
        event_name: &'static str,
        /// The schema version the payload was read as.
        schema_version: u32,
        /// The underlying JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// An upcast step refused the payload, or panicked on it.
    #[error("upcasting event `{event_name}` from schema version {from} failed: {message}")]
    Upcast {
        /// The event's stored name.
        event_name: &'static str,
        /// The version the failing step starts from.
        from: u32,
        /// What the step reported.
        message: String,
    },
    /// A `#[replaced]` rule turned the stored event into no event or several, and it was read
    /// as one.
    #[error(
        "stored event `{event_name}` now stands for {count} events (a #[replaced] rule): read it with \
         `EventSet::decode_all`"
    )]
    NotOneEvent {
        /// The stored name.
        event_name: &'static str,
        /// How many events the rule made of it.
        count: usize,
    },
    /// A retired event (a name `#[replaced]` rules read) is stored at a schema version none of
    /// its rules reads.
    #[error(
        "retired event `{event_name}` is stored at schema version {stored}, which no #[replaced] rule reads: \
         add `#[replaced(name = \"{event_name}\", version = {stored}, by = ...)]`"
    )]
    NoReplacedRule {
        /// The stored name.
        event_name: &'static str,
        /// The stored schema version.
        stored: u32,
    },
}

/// The error a JSON upcast step returns when it cannot upgrade a payload.
///
/// ```
/// use es_core::UpcastError;
/// use serde_json::Value;
///
/// fn add_reason(mut payload: Value) -> Result<Value, UpcastError> {
///     let object = payload.as_object_mut().ok_or_else(|| UpcastError::new("payload is not an object"))?;
///     object.insert("reason".into(), Value::from("not recorded"));
///     Ok(payload)
/// }
/// assert!(add_reason(Value::from(3)).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpcastError {
    message: String,
}

impl UpcastError {
    /// An upcast failure with a message saying what is wrong with the payload.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The payload lacks a field the step needs.
    pub fn missing_field(field: &str) -> Self {
        Self::new(format!("missing field `{field}`"))
    }
}

impl fmt::Display for UpcastError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UpcastError {}

/// The signature of a JSON upcast step: payload at version `n` in, payload at `n + 1` out.
pub type JsonUpcast = fn(serde_json::Value) -> Result<serde_json::Value, UpcastError>;

/// Helpers called by the code that `#[event]` generates. Not public API.
#[doc(hidden)]
pub mod upcast {
    use super::*;

    pub fn from_slice<T: DeserializeOwned>(
        event_name: &'static str,
        schema_version: u32,
        payload: &[u8],
    ) -> Result<T, DecodeError> {
        serde_json::from_slice(payload).map_err(|source| DecodeError::Payload {
            event_name,
            schema_version,
            source,
        })
    }

    /// Runs `upcast`, the match arm of an older schema version, out of line. The decoding of
    /// current-version payloads, the hot path, then stays small enough to inline, without the
    /// steps' unwinding (a JSON step catches panics) in its body.
    #[cold]
    #[inline(never)]
    pub fn older<T>(upcast: impl FnOnce() -> Result<T, DecodeError>) -> Result<T, DecodeError> {
        upcast()
    }

    pub fn from_value<T: DeserializeOwned>(
        event_name: &'static str,
        schema_version: u32,
        value: serde_json::Value,
    ) -> Result<T, DecodeError> {
        serde_json::from_value(value).map_err(|source| DecodeError::Payload {
            event_name,
            schema_version,
            source,
        })
    }

    /// Runs a JSON step. A step that panics (indexing a payload of an unexpected shape, an
    /// overflow) fails like one that returns an error: stored data must not bring the reader
    /// down.
    pub fn json_step<F>(
        event_name: &'static str,
        from: u32,
        step: &F,
        value: serde_json::Value,
    ) -> Result<serde_json::Value, DecodeError>
    where
        F: Fn(serde_json::Value) -> Result<serde_json::Value, UpcastError>,
    {
        // A step is a plain function: a panic leaves no state of it half-changed.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || step(value))) {
            Ok(upcast) => upcast.map_err(|error| DecodeError::Upcast {
                event_name,
                from,
                message: error.to_string(),
            }),
            Err(panic) => Err(panicked(event_name, from, panic.as_ref())),
        }
    }

    /// Runs a typed step (`From`/`TryFrom`); a panic fails the step, as in [`json_step`].
    pub fn typed_step<Old, New>(event_name: &'static str, from: u32, old: Old) -> Result<New, DecodeError>
    where
        New: TryFrom<Old>,
        <New as TryFrom<Old>>::Error: fmt::Display,
    {
        // `old` is moved into the step and never seen again, so a panic leaves nothing broken.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || New::try_from(old))) {
            Ok(upcast) => upcast.map_err(|error| DecodeError::Upcast {
                event_name,
                from,
                message: error.to_string(),
            }),
            Err(panic) => Err(panicked(event_name, from, panic.as_ref())),
        }
    }

    /// The error of a step that panicked, with the panic's message.
    fn panicked(event_name: &'static str, from: u32, panic: &(dyn std::any::Any + Send)) -> DecodeError {
        let message = panic
            .downcast_ref::<&str>()
            .map(|message| (*message).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        DecodeError::Upcast {
            event_name,
            from,
            message: format!("the step panicked ({message}); make it return an UpcastError instead"),
        }
    }

    /// Runs a `#[replaced]` rule on a stored payload, decoded as the rule's argument type; a
    /// refusal or a panic fails like an upcast step.
    pub fn replace<T, E, F, Error>(
        event_name: &'static str,
        schema_version: u32,
        rule: F,
        payload: &[u8],
    ) -> Result<Decoded<E>, DecodeError>
    where
        T: DeserializeOwned,
        F: FnOnce(T) -> Result<Vec<E>, Error>,
        Error: fmt::Display,
    {
        let old: T = from_slice(event_name, schema_version, payload)?;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || rule(old))) {
            Ok(Ok(events)) => Ok(Decoded::Many(events)),
            Ok(Err(error)) => Err(DecodeError::Upcast {
                event_name,
                from: schema_version,
                message: error.to_string(),
            }),
            Err(panic) => Err(panicked(event_name, schema_version, panic.as_ref())),
        }
    }

    /// The one event a replaced name stands for, read where one event is expected.
    pub fn single<E>(event_name: &'static str, decoded: Decoded<E>) -> Result<E, DecodeError> {
        match decoded {
            Decoded::One(event) => Ok(event),
            Decoded::Many(events) if events.len() == 1 => events
                .into_iter()
                .next()
                .ok_or(DecodeError::NotOneEvent { event_name, count: 0 }),
            Decoded::Many(events) => Err(DecodeError::NotOneEvent {
                event_name,
                count: events.len(),
            }),
        }
    }

    pub fn no_replaced_rule(event_name: &'static str, stored: u32) -> DecodeError {
        DecodeError::NoReplacedRule { event_name, stored }
    }

    pub fn version_error(event_name: &'static str, stored: u32, current: u32) -> DecodeError {
        if stored > current {
            DecodeError::SchemaVersionTooNew {
                event_name,
                stored,
                current,
            }
        } else {
            DecodeError::NoUpcastPath {
                event_name,
                stored,
                current,
            }
        }
    }
}
