//! The macros of `es-core`. Use them, and read their documentation, through
//! `es_core::{event, Aggregate}`; this crate is an implementation detail, versioned with `es-core`.
//!
//! The crate is laid out by stage: `attr.rs` parses attributes into the as-written model of
//! `ast.rs`, `valid.rs` applies every validity rule and builds the checked model, `expand.rs`
//! generates code from a checked model, and `ctxt.rs` accumulates every error so one compile
//! reports all of them.

mod ast;
mod attr;
mod ctxt;
mod expand;
mod valid;

use proc_macro::TokenStream;

use crate::ctxt::Ctxt;

/// Implemented by `es-derive`, a part of `es-core`: import it, and find it documented, as
/// `es_core::event`.
#[proc_macro_attribute]
pub fn event(args: TokenStream, input: TokenStream) -> TokenStream {
    let args = proc_macro2::TokenStream::from(args);
    let item = match syn::parse::<syn::Item>(input) {
        Ok(item) => item,
        Err(error) => return error.to_compile_error().into(),
    };
    let cx = Ctxt::new();
    match item {
        syn::Item::Struct(mut item) => {
            let event = attr::event_struct(&cx, args, &mut item, written_before_this_macro);
            let event = valid::event_struct(&cx, event, &item);
            finish(cx, event, |event| expand::event_struct(&event, &item))
        }
        syn::Item::Enum(mut item) => {
            let events = attr::event_enum(&cx, args, &mut item);
            let events = valid::event_enum(&cx, events, &item);
            finish(cx, events, |events| expand::event_enum(&events, &item))
        }
        other => {
            cx.error_at(
                item_keyword(&other),
                "#[event] goes on a struct (one event type) or on an enum whose variants wrap event structs \
                 (the events of an aggregate)",
            );
            finish(cx, None, |()| proc_macro2::TokenStream::new())
        }
    }
}

/// Implemented by `es-derive`, a part of `es-core`: import it, and find it documented, as
/// `es_core::Aggregate`.
#[proc_macro_derive(Aggregate, attributes(aggregate, upcast))]
pub fn derive_aggregate(input: TokenStream) -> TokenStream {
    let input = match syn::parse::<syn::DeriveInput>(input) {
        Ok(input) => input,
        Err(error) => return error.to_compile_error().into(),
    };
    let cx = Ctxt::new();
    let aggregate = attr::aggregate(&cx, &input);
    let aggregate = valid::aggregate(&cx, aggregate, &input);
    finish(cx, aggregate, |aggregate| expand::aggregate(&aggregate))
}

/// The code generated from `model` if no error was recorded, else every recorded error. `model`
/// is `None` only after an error was recorded.
fn finish<T>(cx: Ctxt, model: Option<T>, expand: impl FnOnce(T) -> proc_macro2::TokenStream) -> TokenStream {
    match cx.check() {
        Ok(()) => model.map(expand).unwrap_or_default(),
        Err(errors) => errors,
    }
    .into()
}

/// Whether `attr` is written above the attribute of the macro being expanded. The compiler hands
/// an attribute macro the attributes on both sides of it, so position is the only way to tell.
fn written_before_this_macro(attr: &syn::Attribute) -> bool {
    let this_macro = proc_macro::Span::call_site();
    let attr = attr.pound_token.span.unwrap();
    (attr.line(), attr.column()) < (this_macro.line(), this_macro.column())
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
