//! Checks that span several attributes: versions, upcast chains, duplicate names.
//! Runs on the parsed model; codegen only ever sees a model that passed.

use std::collections::{BTreeMap, BTreeSet};

use quote::ToTokens;

use crate::ast::{EventEnum, EventStruct, StepKind};
use crate::ctxt::Ctxt;

pub fn event_struct(cx: &Ctxt, event: &EventStruct) {
    if event.version == 0 {
        cx.syn_error(syn::Error::new(
            event.version_span,
            "schema versions start at 1: write `version = 1` (or leave it out)",
        ));
        return;
    }

    let (name, _) = &event.name;
    let mut seen = BTreeSet::from([name.clone()]);
    for alias in &event.aliases {
        if !seen.insert(alias.value()) {
            let message = if &alias.value() == name {
                format!("alias `{name}` is the event's own name; remove it")
            } else {
                format!("alias `{}` is listed twice; remove one", alias.value())
            };
            cx.error_spanned_by(alias, message);
        }
    }

    let mut by_version = BTreeMap::new();
    for step in &event.steps {
        if step.from == 0 {
            cx.syn_error(syn::Error::new(
                step.from_span,
                "schema versions start at 1: there is no version 0 to upcast from",
            ));
        } else if step.from >= event.version {
            cx.syn_error(syn::Error::new(
                step.from_span,
                format!(
                    "an upcast step from version {} is at or above the current version {}: steps upgrade older \
                     payloads; raise `version` on #[event] or remove this step",
                    step.from, event.version
                ),
            ));
        } else if by_version.insert(step.from, step).is_some() {
            cx.syn_error(syn::Error::new(
                step.from_span,
                format!("two upcast steps start at version {}; keep one", step.from),
            ));
        }
    }

    let missing: Vec<u32> = (1..event.version).filter(|v| !by_version.contains_key(v)).collect();
    if !missing.is_empty() {
        let list = missing
            .iter()
            .map(|v| format!("{v} -> {}", v + 1))
            .collect::<Vec<_>>()
            .join(", ");
        cx.syn_error(syn::Error::new(
            event.version_span,
            format!(
                "`{}` is at schema version {}, but the upcast chain has no step for {list}: add \
                 `#[upcast(from = {}, json = ...)]` or `#[upcast(from = {}, typed = ...)]`",
                event.ident, event.version, missing[0], missing[0]
            ),
        ));
    }

    // A typed step converts into the next version's Rust type, so the next step must have one.
    for (from, step) in &by_version {
        if let (StepKind::Typed(ty), Some(next)) = (&step.kind, by_version.get(&(from + 1))) {
            if matches!(next.kind, StepKind::Json(_)) {
                cx.syn_error(syn::Error::new(
                    step.from_span,
                    format!(
                        "the typed step from version {from} converts `{}` into the type of version {}, but that \
                         version's step is JSON and has no type: make both steps `typed` or both `json`",
                        ty.to_token_stream(),
                        from + 1
                    ),
                ));
            }
        }
    }
}

pub fn event_enum(cx: &Ctxt, events: &EventEnum, item: &syn::ItemEnum) {
    if events.variants.is_empty() && item.variants.is_empty() {
        cx.error_spanned_by(
            &item.ident,
            "an #[event] enum needs at least one variant, each wrapping an #[event] struct",
        );
    }
    let mut seen: BTreeMap<String, &syn::Ident> = BTreeMap::new();
    for variant in &events.variants {
        let ty = variant.ty.to_token_stream().to_string();
        if let Some(first) = seen.insert(ty.clone(), &variant.ident) {
            cx.error_spanned_by(
                &variant.ty,
                format!("`{ty}` is already wrapped by variant `{first}`; each event type appears once"),
            );
        }
    }
}

pub fn no_generics(cx: &Ctxt, generics: &syn::Generics, what: &str) {
    if !generics.params.is_empty() || generics.where_clause.is_some() {
        cx.error_spanned_by(
            generics,
            format!("{what} cannot be generic: stored names must be fixed"),
        );
    }
}
