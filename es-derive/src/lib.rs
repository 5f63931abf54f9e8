//! Macros for `es-core`. Use them through `es_core::{event, Aggregate}`; this crate is an
//! implementation detail and is versioned with `es-core`.
//!
//! The crate is laid out by stage: `attr.rs` parses attributes into the model of `ast.rs`,
//! `valid.rs` checks the model, `expand.rs` generates code from a valid model, and `ctxt.rs`
//! accumulates every error so one compile reports all of them.

mod ast;
mod attr;
mod ctxt;
mod expand;
mod valid;

use proc_macro::TokenStream;

use crate::ctxt::Ctxt;

/// Declares an event type (on a struct) or the events of an aggregate (on an enum).
///
/// # On a struct: one event type
///
/// The struct is the stored payload. `#[event]` derives `serde::Serialize` and
/// `serde::Deserialize` for it (do not derive them yourself; `#[serde(...)]` attributes work as
/// usual) and implements [`EventType`](../es_core/trait.EventType.html).
///
/// | key | meaning | default |
/// |---|---|---|
/// | `name = "..."` | the stored name; never change it once events are stored | the struct's name |
/// | `alias = "..."` | an older stored name, still decoded; repeatable | none |
/// | `version = N` | the current schema version, from 1 | `1` |
///
/// Each older version needs one upgrade step to the next, as an `#[upcast]` attribute:
///
/// - `#[upcast(from = N, json = path)]`: `path` is a
///   `fn(serde_json::Value) -> Result<serde_json::Value, es_core::UpcastError>` turning a
///   version-`N` payload into a version-`N + 1` payload;
/// - `#[upcast(from = N, typed = OldShape)]`: the version-`N` payload decodes as `OldShape`
///   (which derives `Deserialize`), converted with `From`/`TryFrom` into the type of version
///   `N + 1`: the event itself when `N + 1` is current, else the next typed step's type.
///
/// A missing step, a step at or above the current version, and a typed step followed by a JSON
/// step are compile errors.
///
/// ```
/// use es_core::{event, EventType, UpcastError};
/// use serde::Deserialize;
/// use serde_json::Value;
///
/// /// Version 3: a reason and a level. v1 had neither; v2 had a reason only.
/// #[event(name = "TicketEscalated", alias = "EscalationRequested", version = 3)]
/// #[upcast(from = 1, json = v1_add_reason)]
/// #[upcast(from = 2, typed = EscalatedV2)]
/// #[derive(Debug, Clone, PartialEq)]
/// pub struct TicketEscalated {
///     pub reason: String,
///     pub level: u8,
/// }
///
/// fn v1_add_reason(mut payload: Value) -> Result<Value, UpcastError> {
///     let object = payload.as_object_mut().ok_or_else(|| UpcastError::new("not an object"))?;
///     object.insert("reason".into(), "unknown".into());
///     Ok(payload)
/// }
///
/// #[derive(Deserialize)]
/// pub struct EscalatedV2 {
///     reason: String,
/// }
///
/// impl From<EscalatedV2> for TicketEscalated {
///     fn from(v2: EscalatedV2) -> Self {
///         TicketEscalated { reason: v2.reason, level: 1 }
///     }
/// }
///
/// let from_v1 = TicketEscalated::decode_payload(1, b"{}")?;
/// assert_eq!(from_v1, TicketEscalated { reason: "unknown".into(), level: 1 });
/// let current = TicketEscalated::decode_payload(3, br#"{"reason":"VIP","level":2}"#)?;
/// assert_eq!(current.level, 2);
/// assert!(TicketEscalated::decode_payload(4, b"{}").is_err(), "newer than the code");
/// # Ok::<(), es_core::DecodeError>(())
/// ```
///
/// # On an enum: the events of one aggregate
///
/// Each variant wraps one `#[event]` struct. The enum gets
/// [`EventSet`](../es_core/trait.EventSet.html) (the registry of its events, encoding, and
/// decoding by stored name), `From` for each wrapped event, and the dispatch that
/// `#[derive(Aggregate)]` uses. Two events sharing a stored name or alias is a compile error.
///
/// ```
/// use es_core::{event, EventSet};
///
/// #[event] #[derive(Debug)] pub struct LeadContacted;
/// #[event(name = "FollowupSet")] #[derive(Debug)] pub struct FollowUpScheduled { pub on: String }
///
/// #[event]
/// #[derive(Debug)]
/// pub enum LeadEvent {
///     Contacted(LeadContacted),
///     FollowUp(FollowUpScheduled),
/// }
///
/// let names: Vec<_> = LeadEvent::EVENTS.iter().map(|e| e.name).collect();
/// assert_eq!(names, ["LeadContacted", "FollowupSet"]);
/// let event = LeadEvent::decode("FollowupSet", 1, br#"{"on":"2025-01-02"}"#)?;
/// assert!(matches!(event, LeadEvent::FollowUp(_)));
/// # Ok::<(), es_core::DecodeError>(())
/// ```
#[proc_macro_attribute]
pub fn event(args: TokenStream, input: TokenStream) -> TokenStream {
    let args = proc_macro2::TokenStream::from(args);
    let item = match syn::parse::<syn::Item>(input) {
        Ok(item) => item,
        Err(error) => return error.to_compile_error().into(),
    };
    let cx = Ctxt::new();
    let output = match item {
        syn::Item::Struct(mut item) => {
            valid::no_generics(&cx, &item.generics, "an event type");
            let model = attr::event_struct(&cx, args, &mut item);
            valid::event_struct(&cx, &model);
            cx.check().map(|()| expand::event_struct(&model, &item))
        }
        syn::Item::Enum(mut item) => {
            valid::no_generics(&cx, &item.generics, "an event enum");
            let model = attr::event_enum(&cx, args, &mut item);
            valid::event_enum(&cx, &model, &item);
            cx.check().map(|()| expand::event_enum(&model, &item))
        }
        other => {
            cx.error_spanned_by(
                item_keyword(&other),
                "#[event] goes on a struct (one event type) or on an enum whose variants wrap event structs \
                 (the events of an aggregate)",
            );
            cx.check().map(|()| proc_macro2::TokenStream::new())
        }
    };
    output.unwrap_or_else(|errors| errors).into()
}

/// Makes a struct or enum an event-sourced aggregate.
///
/// The type must also implement `Default` (the state before any event) and serde's
/// `Serialize`/`Deserialize` (for snapshots), and have one
/// [`Apply`](../es_core/trait.Apply.html) impl for every event of its event enum: a missing
/// handler is a compile error naming the event.
///
/// | key of `#[aggregate(...)]` | meaning | default |
/// |---|---|---|
/// | `event = Type` | the `#[event]` enum of this aggregate's events | required |
/// | `name = "..."` | the stored aggregate type; never change it once events are stored | the type's name |
/// | `id = Type` | the id type; its `Display` form names the stream | `String` |
/// | `snapshot_revision = N` | bump when the state's shape or apply logic changes, to ignore old snapshots | `1` |
///
/// ```
/// use es_core::{event, Aggregate, Apply};
/// use serde::{Deserialize, Serialize};
///
/// #[event] #[derive(Debug)] pub struct Deposited { pub cents: u64 }
/// #[event] #[derive(Debug)] pub enum AccountEvent { Deposited(Deposited) }
///
/// #[derive(Default, Serialize, Deserialize, Aggregate)]
/// #[aggregate(name = "account", id = u64, event = AccountEvent, snapshot_revision = 2)]
/// pub struct Account { balance: u64 }
///
/// impl Apply<Deposited> for Account {
///     fn apply(&mut self, event: &Deposited) { self.balance += event.cents; }
/// }
///
/// let mut account = Account::default();
/// account.apply_event(&Deposited { cents: 250 }.into());
/// assert_eq!(account.balance, 250);
/// assert_eq!(<Account as es_core::Aggregate>::TYPE, "account");
/// ```
#[proc_macro_derive(Aggregate, attributes(aggregate))]
pub fn derive_aggregate(input: TokenStream) -> TokenStream {
    let input = match syn::parse::<syn::DeriveInput>(input) {
        Ok(input) => input,
        Err(error) => return error.to_compile_error().into(),
    };
    let cx = Ctxt::new();
    if let syn::Data::Union(data) = &input.data {
        cx.error_spanned_by(
            data.union_token,
            "#[derive(Aggregate)] supports structs and enums, not unions",
        );
    }
    valid::no_generics(&cx, &input.generics, "an aggregate");
    let model = attr::aggregate(&cx, &input);
    cx.check()
        .map(|()| model.as_ref().map(expand::aggregate).unwrap_or_default())
        .unwrap_or_else(|errors| errors)
        .into()
}

/// The keyword of an item, to point an error at `fn` or `union` rather than the whole item.
fn item_keyword(item: &syn::Item) -> proc_macro2::TokenStream {
    use quote::ToTokens;
    match item {
        syn::Item::Fn(item) => item.sig.fn_token.to_token_stream(),
        syn::Item::Union(item) => item.union_token.to_token_stream(),
        syn::Item::Trait(item) => item.trait_token.to_token_stream(),
        syn::Item::Type(item) => item.type_token.to_token_stream(),
        syn::Item::Impl(item) => item.impl_token.to_token_stream(),
        other => other.to_token_stream(),
    }
}
