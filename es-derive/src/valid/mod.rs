//! Every validity rule: what the values written in the attributes mean (versions, names, the
//! upcast chain) and what the item they sit on may be. Turns the as-written model of `ast.rs`
//! into the checked one, so `expand.rs` only ever sees a model that passed and checks nothing.
//!
//! Each function returns `None` only after reporting why; every rule is still checked, so one
//! compile reports all the mistakes.

use std::collections::{BTreeMap, BTreeSet};

use proc_macro2::TokenStream;
use quote::ToTokens;

use crate::ast::{
    AggregateAttrs, AggregateModel, EventAttrs, EventEnum, EventStruct, Number, StepKind, UpcastAttr, UpcastChain,
};
use crate::attr::keys::ALIAS;
use crate::ctxt::Ctxt;

mod names;
mod pii;
mod replaced;

use names::{stored_name, valid_stored_name};
use pii::personal_data;
use replaced::replaced_rules;

/// Checks `#[event]` on a struct and builds its upcast chain.
pub fn event_struct(cx: &Ctxt, event: EventAttrs, item: &syn::ItemStruct) -> Option<EventStruct> {
    let borrows = no_lifetimes(cx, &item.generics);
    no_generics(cx, &item.generics, "an event type", borrows);
    if !borrows {
        no_borrowed_fields(cx, &item.fields);
    }
    no_serde_derives(cx, &item.attrs);
    let personal = personal_data(cx, &event, item);
    let name = stored_name(cx, event.name.as_ref(), &event.ident);
    let aliases = distinct_aliases(cx, name.as_deref(), &event.aliases);
    let version = at_least_one(
        cx,
        event.version.as_ref(),
        "schema versions start at 1: write `version = 1` (or leave it out)",
    );
    // With no valid current version, every step would be reported as out of range.
    let version = version.filter(|_| event.version.is_some() || !event.version_written);
    let chain = version.and_then(|current| {
        let version_at = event.version.as_ref().map_or_else(
            || event.ident.to_token_stream(),
            |version| version.lit.to_token_stream(),
        );
        upcast_chain(
            cx,
            &event.ident,
            current,
            (&version_at, "`version` on #[event]"),
            event.steps,
        )
    });
    Some(EventStruct {
        ident: event.ident,
        name: name?,
        aliases: aliases?,
        version: version?,
        chain: chain?,
        pii_fields: personal.as_ref()?.0.clone(),
        pii_subject: personal?.1,
    })
}

/// The aliases, if none is empty, repeated, or the event's own `name`.
fn distinct_aliases(cx: &Ctxt, name: Option<&str>, aliases: &[syn::LitStr]) -> Option<Vec<String>> {
    let mut seen: BTreeSet<String> = name.into_iter().map(str::to_owned).collect();
    let mut valid = Vec::new();
    for lit in aliases {
        let Some(alias) = valid_stored_name(cx, lit, ALIAS) else {
            continue;
        };
        if Some(alias.as_str()) == name {
            cx.error_at(lit, format!("alias `{alias}` is the event's own name; remove it"));
        } else if !seen.insert(alias.clone()) {
            cx.error_at(lit, format!("alias `{alias}` is listed twice; remove one"));
        } else {
            valid.push(alias);
        }
    }
    (valid.len() == aliases.len()).then_some(valid)
}

/// Orders the `#[upcast]` steps into a chain from version 1 to `current`: every step names its
/// version, starts below `current`, and is the only one to start there; no version lacks a step;
/// and no JSON step follows a typed one. `version` is where the current version is written and
/// how to name that key in a message.
fn upcast_chain(
    cx: &Ctxt,
    ident: &syn::Ident,
    current: u32,
    (version_at, version_key): (&TokenStream, &str),
    steps: Vec<UpcastAttr>,
) -> Option<UpcastChain> {
    let mut complete = true;
    let mut by_version: BTreeMap<u32, (Number, StepKind)> = BTreeMap::new();
    // Versions whose step was written but is incomplete (reported): not reported as missing.
    let mut written = BTreeSet::new();
    for UpcastAttr {
        attr,
        from,
        kind,
        misspelt,
    } in steps
    {
        let Some(from) = from else {
            if !misspelt {
                cx.error_at(
                    &attr,
                    "#[upcast] needs the version it upgrades from: `#[upcast(from = 1, json = my_fn)]`",
                );
            }
            complete = false;
            continue;
        };
        written.insert(from.value);
        let Some(kind) = kind else {
            if !misspelt {
                cx.error_at(
                    &attr,
                    "#[upcast] needs a step: `json = fn_name` (a `fn(Value) -> Result<Value, UpcastError>`) or \
                     `typed = OldShape` (a struct converted with `From`/`TryFrom`)",
                );
            }
            complete = false;
            continue;
        };
        let problem = if from.value == 0 {
            Some("schema versions start at 1: there is no version 0 to upcast from".to_owned())
        } else if from.value >= current {
            Some(format!(
                "an upcast step from version {} is at or above the current version {current}: steps upgrade older \
                 payloads; raise {version_key} or remove this step",
                from.value
            ))
        } else if by_version.contains_key(&from.value) {
            Some(format!("two upcast steps start at version {}; keep one", from.value))
        } else {
            None
        };
        match problem {
            Some(problem) => {
                cx.error_at(&from.lit, problem);
                complete = false;
            }
            None => {
                by_version.insert(from.value, (from, kind));
            }
        }
    }

    let missing: Vec<u32> = (1..current).filter(|v| !written.contains(v)).collect();
    if let Some(first) = missing.first() {
        let list = missing
            .iter()
            .map(|v| format!("{v} -> {}", v + 1))
            .collect::<Vec<_>>()
            .join(", ");
        cx.error_at(
            version_at,
            format!(
                "`{ident}` is at schema version {current}, but the upcast chain has no step for {list}: add \
                 `#[upcast(from = {first}, json = ...)]` or `#[upcast(from = {first}, typed = ...)]`"
            ),
        );
        complete = false;
    }

    // A typed step converts into the next version's Rust type, so the next step must have one.
    for (from, (number, kind)) in &by_version {
        if let (StepKind::Typed(ty), Some((_, StepKind::Json(_)))) = (kind, by_version.get(&(from + 1))) {
            cx.error_at(
                &number.lit,
                format!(
                    "the typed step from version {from} converts `{}` into the type of version {}, but that \
                     version's step is JSON and has no type: make both steps `typed` or both `json`",
                    ty.to_token_stream(),
                    from + 1
                ),
            );
            complete = false;
        }
    }

    if !complete {
        return None;
    }
    // Versions 1 up to `current` in order, JSON steps first: what the checks above established.
    let mut chain = UpcastChain::default();
    for (from, (_, kind)) in by_version {
        match kind {
            StepKind::Json(path) => chain.json.push((from, path)),
            StepKind::Typed(ty) => chain.typed.push((from, ty)),
        }
    }
    Some(chain)
}

/// Checks `#[event]` on an enum: a fixed, non-empty set of distinct event types.
pub fn event_enum(cx: &Ctxt, mut events: EventEnum, item: &syn::ItemEnum) -> Option<EventEnum> {
    no_generics(cx, &item.generics, "an event enum", false);
    let mut valid = true;
    for variant in &events.variants {
        if let Some(inner) = wrapped_type(&variant.ty) {
            cx.error_at(
                &variant.ty,
                format!(
                    "variant `{0}` wraps `{1}`: a variant wraps the #[event] struct itself, `{0}({2})`, because \
                     events are stored and decoded by value",
                    variant.ident,
                    written(&variant.ty),
                    inner,
                ),
            );
            valid = false;
        }
    }
    if events.variants.is_empty() && item.variants.is_empty() {
        cx.error_at(
            &item.ident,
            "an #[event] enum needs at least one variant, each wrapping an #[event] struct",
        );
        valid = false;
    }
    let mut seen: BTreeMap<String, &syn::Ident> = BTreeMap::new();
    for variant in &events.variants {
        let ty = variant.ty.to_token_stream().to_string();
        if let Some(first) = seen.insert(ty.clone(), &variant.ident) {
            cx.error_at(
                &variant.ty,
                format!("`{ty}` is already wrapped by variant `{first}`; each event type appears once"),
            );
            valid = false;
        }
    }
    match replaced_rules(cx, std::mem::take(&mut events.replaced_written)) {
        Some(rules) => events.replaced = rules,
        None => valid = false,
    }
    valid.then_some(events)
}

/// Checks `#[derive(Aggregate)]` and fills in the defaults of its `#[aggregate]` keys.
pub fn aggregate(cx: &Ctxt, attrs: AggregateAttrs, input: &syn::DeriveInput) -> Option<AggregateModel> {
    if let syn::Data::Union(data) = &input.data {
        cx.error_at(
            data.union_token,
            "#[derive(Aggregate)] supports structs and enums, not unions",
        );
    }
    no_generics(cx, &input.generics, "an aggregate", false);
    let name = stored_name(cx, attrs.name.as_ref(), &attrs.ident);
    let snapshot_revision = at_least_one(cx, attrs.snapshot_revision.as_ref(), "snapshot revisions start at 1");
    let snapshot_version = at_least_one(
        cx,
        attrs.snapshot_version.as_ref(),
        "snapshot schema versions start at 1: write `snapshot_version = 1` (or leave it out)",
    );
    let ident = attrs.ident;
    let chain = snapshot_version.and_then(|current| {
        let version_at = attrs
            .snapshot_version
            .as_ref()
            .map_or_else(|| ident.to_token_stream(), |version| version.lit.to_token_stream());
        upcast_chain(
            cx,
            &ident,
            current,
            (&version_at, "`snapshot_version` on #[aggregate]"),
            attrs.steps,
        )
    });
    if attrs.event.is_none() && !attrs.misspelt {
        cx.error_at(
            &ident,
            format!(
                "`{ident}` names no event type: add `#[aggregate(event = YourEvents)]`, where `YourEvents` is the \
                 #[event] enum of this aggregate's events"
            ),
        );
    }
    Some(AggregateModel {
        ident,
        name: name?,
        id: attrs.id.unwrap_or_else(|| syn::parse_quote!(::std::string::String)),
        event: attrs.event?,
        snapshot_revision: snapshot_revision?,
        snapshot_version: snapshot_version?,
        chain: chain?,
    })
}

/// The value of a version-like key, 1 when it is not written; 0 is reported with `message`.
fn at_least_one(cx: &Ctxt, number: Option<&Number>, message: &str) -> Option<u32> {
    match number {
        None => Some(1),
        Some(number) if number.value == 0 => {
            cx.error_at(&number.lit, message);
            None
        }
        Some(number) => Some(number.value),
    }
}

/// An event cannot borrow: it is decoded from stored bytes that are gone once the read returns.
/// Reported once for the lifetimes, not again for the fields that use them. Whether there were
/// any.
fn no_lifetimes(cx: &Ctxt, generics: &syn::Generics) -> bool {
    let lifetimes: Vec<_> = generics.lifetimes().collect();
    if let Some(first) = lifetimes.first() {
        cx.error_at(
            first,
            "an event cannot borrow (it is decoded from stored bytes that are gone once the read returns): remove \
             the lifetime and give the fields owned types, `String` for `&str`, `Vec<T>` for `&[T]`",
        );
    }
    !lifetimes.is_empty()
}

/// A field of an event that borrows, even `&'static`, could only ever be decoded from a literal.
fn no_borrowed_fields(cx: &Ctxt, fields: &syn::Fields) {
    struct FindReferences<'a>(&'a Ctxt);
    impl<'ast> syn::visit::Visit<'ast> for FindReferences<'_> {
        fn visit_type_reference(&mut self, reference: &'ast syn::TypeReference) {
            self.0.error_at(
                reference,
                format!(
                    "an event field cannot borrow (`{}` decodes only from a literal, never from stored bytes): use \
                     an owned type, `String` for `&str`, `Vec<T>` for `&[T]`",
                    written(&syn::Type::Reference(reference.clone()))
                ),
            );
        }
    }
    for field in fields {
        syn::visit::Visit::visit_type(&mut FindReferences(cx), &field.ty);
    }
}

/// What a smart pointer, container or reference `ty` wraps (`TicketOpened` for
/// `Box<TicketOpened>`), if it is one: a variant of an event enum wraps an event struct itself.
fn wrapped_type(ty: &syn::Type) -> Option<String> {
    const WRAPPERS: &[&str] = &["Box", "Rc", "Arc", "Option", "Vec", "Cow"];
    match ty {
        syn::Type::Reference(reference) => Some(written(&reference.elem)),
        syn::Type::Path(path) => {
            let last = path.path.segments.last()?;
            if !WRAPPERS.contains(&last.ident.to_string().as_str()) {
                return None;
            }
            let syn::PathArguments::AngleBracketed(arguments) = &last.arguments else {
                return None;
            };
            arguments.args.iter().find_map(|argument| match argument {
                syn::GenericArgument::Type(inner) => Some(written(inner)),
                _ => None,
            })
        }
        _ => None,
    }
}

/// A type as the user would write it: `&'static str`, not the token stream's `& 'static str`.
fn written(ty: &syn::Type) -> String {
    ty.to_token_stream()
        .to_string()
        .replace("& ", "&")
        .replace(" <", "<")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace(" ,", ",")
}

/// Stored names are fixed strings, so nothing that carries them can be generic. Lifetimes already
/// reported by [`no_lifetimes`] are not reported again.
fn no_generics(cx: &Ctxt, generics: &syn::Generics, what: &str, lifetimes_reported: bool) {
    let other_than_reported = generics
        .params
        .iter()
        .any(|param| !(lifetimes_reported && matches!(param, syn::GenericParam::Lifetime(_))));
    if other_than_reported || generics.where_clause.is_some() {
        cx.error_at(
            generics,
            format!("{what} cannot be generic: stored names must be fixed"),
        );
    }
}

/// `#[event]` derives serde itself; a second derive would be a confusing "conflicting
/// implementations" error, so it is named here instead.
fn no_serde_derives(cx: &Ctxt, attrs: &[syn::Attribute]) {
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("derive")) {
        let Ok(paths) =
            attr.parse_args_with(syn::punctuated::Punctuated::<syn::Path, syn::Token![,]>::parse_terminated)
        else {
            continue;
        };
        for path in paths {
            let last = path.segments.last().map(|segment| segment.ident.to_string());
            if let Some(trait_name @ ("Serialize" | "Deserialize")) = last.as_deref() {
                cx.error_at(
                    &path,
                    format!("#[event] already derives `{trait_name}`; remove it from this #[derive(...)]"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use quote::ToTokens;

    use crate::ast::EventStruct;
    use crate::ctxt::Ctxt;

    fn check(mut item: syn::ItemStruct, args: proc_macro2::TokenStream) -> Result<EventStruct, String> {
        let cx = Ctxt::new();
        let event = crate::attr::event_struct(&cx, args, &mut item, |_| false);
        let event = super::event_struct(&cx, event, &item);
        match (cx.check(), event) {
            (Ok(()), Some(event)) => Ok(event),
            (Err(errors), _) => Err(errors.to_string()),
            (Ok(()), None) => Err("no model and no error".into()),
        }
    }

    fn written(steps: &[(u32, impl ToTokens)]) -> Vec<(u32, String)> {
        steps
            .iter()
            .map(|(from, step)| (*from, step.to_token_stream().to_string()))
            .collect()
    }

    #[test]
    fn the_chain_is_in_version_order_whatever_the_attribute_order() {
        let item = syn::parse_quote! {
            #[upcast(from = 3, typed = V3)]
            #[upcast(from = 1, json = one)]
            #[upcast(from = 2, json = two)]
            struct Escalated;
        };
        let event = check(item, quote::quote!(version = 4)).unwrap_or_else(|errors| panic!("{errors}"));
        assert_eq!(
            written(&event.chain.json),
            [(1, "one".to_owned()), (2, "two".to_owned())]
        );
        assert_eq!(written(&event.chain.typed), [(3, "V3".to_owned())]);
    }

    #[test]
    fn a_broken_chain_builds_no_model() {
        let item = syn::parse_quote! {
            #[upcast(from = 1, typed = V1)]
            #[upcast(from = 2, json = two)]
            struct Escalated;
        };
        let errors = check(item, quote::quote!(version = 3)).err().unwrap_or_default();
        assert!(errors.contains("the typed step from version 1"), "{errors}");
    }
}
