//! The traits through which the code that the macros generate checks what you wrote.
//!
//! You never implement or call these: each is implemented for every type that qualifies, and
//! exists so that a mistake is one compile error, at your code, saying what is wrong and how to
//! fix it (their names are what such an error mentions). See the
//! [`#[event]`](macro@crate::event) and [`#[derive(Aggregate)]`](derive@crate::Aggregate) docs
//! for what the macros accept.

use std::fmt::Display;

use serde::de::DeserializeOwned;

use crate::event::{DecodeError, Decoded, UpcastError};

/// An older shape of an event's payload, named by `#[upcast(from = N, typed = OldShape)]`: what
/// was stored at version `N` is decoded as this type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the older shape of a typed upcast step: it does not implement `Deserialize`",
    label = "the stored payload is decoded as this type",
    note = "add `#[derive(serde::Deserialize)]` to `{Self}`"
)]
pub trait OlderShape: DeserializeOwned {
    /// What the generated code does with this shape, in one item: a mistake in the shape is
    /// then reported once, however many places use it.
    #[doc(hidden)]
    const STEP: OlderStep<Self> = OlderStep {
        decode: |event_name, schema_version, payload| {
            crate::event::upcast::from_slice(event_name, schema_version, payload)
        },
        from_value: |event_name, schema_version, value| {
            crate::event::upcast::from_value(event_name, schema_version, value)
        },
        trace: crate::schema::trace_shape::<Self>,
    };
}

/// What the generated code does with an [`OlderShape`].
#[doc(hidden)]
pub struct OlderStep<T> {
    /// Decodes a payload stored at `schema_version` as this shape.
    pub decode: fn(&'static str, u32, &[u8]) -> Result<T, DecodeError>,
    /// Decodes a value the JSON steps before produced as this shape.
    pub from_value: fn(&'static str, u32, serde_json::Value) -> Result<T, DecodeError>,
    /// Traces this shape, for the schema lock's check of typed steps.
    pub trace: crate::schema::ShapeTracer,
}

impl<T: DeserializeOwned> OlderShape for T {}

/// The conversion of a typed upcast step: `Self`, an older shape, becomes `New` through
/// `From<Self> for New` or `TryFrom<Self> for New` whose error says why (`Display`).
#[diagnostic::on_unimplemented(
    message = "the typed upcast step cannot convert `{Self}` into `{New}`",
    label = "needs `impl From<{Self}> for {New}`, or `TryFrom` with an error that implements `Display`",
    note = "add `impl From<{Self}> for {New}`, or `impl TryFrom<{Self}> for {New}` whose `Error` implements `std::fmt::Display` (any `std::error::Error` does)"
)]
pub trait UpcastInto<New>: Sized {
    /// Converts, turning a refusal or a panic into a [`DecodeError::Upcast`].
    #[doc(hidden)]
    fn upcast_into(self, event_name: &'static str, from: u32) -> Result<New, DecodeError>;
}

impl<Old, New> UpcastInto<New> for Old
where
    New: TryFrom<Old>,
    <New as TryFrom<Old>>::Error: Display,
{
    fn upcast_into(self, event_name: &'static str, from: u32) -> Result<New, DecodeError> {
        crate::event::upcast::typed_step(event_name, from, self)
    }
}

/// The function of a JSON upcast step, named by `#[upcast(from = N, json = path)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a JSON upcast step",
    label = "expected a `fn(serde_json::Value) -> Result<serde_json::Value, es_core::UpcastError>`",
    note = "a JSON step takes the payload stored at version N and returns it as version N + 1, or an `UpcastError` saying why it cannot"
)]
pub trait JsonStep {
    /// Runs the step, turning a refusal or a panic into a [`DecodeError::Upcast`].
    #[doc(hidden)]
    fn run_step(
        &self,
        event_name: &'static str,
        from: u32,
        value: serde_json::Value,
    ) -> Result<serde_json::Value, DecodeError>;
}

impl<F> JsonStep for F
where
    F: Fn(serde_json::Value) -> Result<serde_json::Value, UpcastError>,
{
    fn run_step(
        &self,
        event_name: &'static str,
        from: u32,
        value: serde_json::Value,
    ) -> Result<serde_json::Value, DecodeError> {
        crate::event::upcast::json_step(event_name, from, self, value)
    }
}

/// The function of a `#[replaced(name = "...", by = path)]` rule: it takes a retired event's
/// payload, decoded as `Old`, and returns the events of the enum `Events` it stands for now
/// (none, one or several), or an error saying why it cannot.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a #[replaced] rule of `{Events}`",
    label = "expected a `fn(Old) -> Result<Vec<{Events}>, E>`, with `Old: Deserialize` and `E: Display`",
    note = "a rule takes the retired event's payload, decoded as its argument's type (`serde_json::Value` for raw JSON), and returns the events it stands for now"
)]
pub trait ReplaceRule<Old, Events> {
    /// Runs the rule on a stored payload.
    #[doc(hidden)]
    fn replace(
        self,
        event_name: &'static str,
        schema_version: u32,
        payload: &[u8],
    ) -> Result<Decoded<Events>, DecodeError>;
}

impl<F, Old, Events, Error> ReplaceRule<Old, Events> for F
where
    F: FnOnce(Old) -> Result<Vec<Events>, Error>,
    Old: DeserializeOwned,
    Error: Display,
{
    fn replace(
        self,
        event_name: &'static str,
        schema_version: u32,
        payload: &[u8],
    ) -> Result<Decoded<Events>, DecodeError> {
        crate::event::upcast::replace(event_name, schema_version, self, payload)
    }
}

/// Holds when an event of an `#[event]` enum, `B`, is not stored under a name that a
/// `#[replaced]` rule of the same enum claims: a stored name must say which it is.
#[diagnostic::on_unimplemented(
    message = "`{B}` is stored under a name or alias that a #[replaced] rule of this enum also claims",
    label = "a #[replaced] rule claims a name or alias of `{B}`",
    note = "a #[replaced] rule is for a retired event's name; to upgrade `{B}` itself, use #[upcast] on it"
)]
pub trait NotReplaced<B> {
    /// Evaluated by the generated check; it exists only when the name is free.
    #[doc(hidden)]
    const CHECKED: () = ();
}

impl<B> NotReplaced<B> for SharedName<false> {}

/// Whether two events of one `#[event]` enum share a stored name or alias.
pub struct SharedName<const SHARED: bool>;

/// Holds when two events of one `#[event]` enum, `A` and then `B`, share no stored name or alias:
/// a stored name must say which event it is.
#[diagnostic::on_unimplemented(
    message = "`{B}` and `{A}` share a stored name or alias, so a stored event of that name could be either",
    label = "shares a stored name or alias with `{A}`, an earlier variant",
    note = "give one of them another `#[event(name = \"...\")]`, or drop the alias they share; `EventSet::EVENTS` lists each event's name and aliases"
)]
pub trait DistinctNames<A, B> {
    /// Evaluated by the generated check; it exists only when the names are distinct.
    #[doc(hidden)]
    const CHECKED: () = ();
}

impl<A, B> DistinctNames<A, B> for SharedName<false> {}

/// Whether two events share a stored name or alias, given each one's name, aliases and Rust
/// path; evaluated at compile time for every pair of events in one `#[event]` enum. The code
/// generated passes `<T as EventType>::NAME` and so on, so a variant type that is not an event is
/// reported there, once.
#[doc(hidden)]
pub const fn share_a_name(
    (a_name, a_aliases, a_path): (&str, &[&str], &str),
    (b_name, b_aliases, b_path): (&str, &[&str], &str),
) -> bool {
    // One type listed twice (through an alias) is reported as conflicting `From` impls instead.
    if !a_path.is_empty() && str_eq(a_path, b_path) {
        return false;
    }
    if names_of_share(a_name, a_aliases, b_name) {
        return true;
    }
    let mut i = 0;
    while i < b_aliases.len() {
        if names_of_share(a_name, a_aliases, b_aliases[i]) {
            return true;
        }
        i += 1;
    }
    false
}

const fn names_of_share(a_name: &str, a_aliases: &[&str], b: &str) -> bool {
    if str_eq(a_name, b) {
        return true;
    }
    let mut i = 0;
    while i < a_aliases.len() {
        if str_eq(a_aliases[i], b) {
            return true;
        }
        i += 1;
    }
    false
}

/// Byte-wise string equality, usable in constants.
const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
