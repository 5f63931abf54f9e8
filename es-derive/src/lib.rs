//! The macros of `es-core`. Use them, and read their documentation, through
//! `es_core::{event, Aggregate}`; this crate is an implementation detail, versioned with `es-core`.
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

/// Implemented by `es-derive`, a part of `es-core`: import it, and find it documented, as
/// `es_core::Aggregate`.
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
