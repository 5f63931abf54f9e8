//! Code generation from the checked model that `valid.rs` builds; nothing is checked here.
//! Generated code names everything by absolute path, so user code that shadows `Result` or
//! `Option` still compiles.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::{AggregateModel, EventEnum, EventStruct, UpcastChain};

/// The struct with serde derived for it, and its `EventType` impl, whose decoding upgrades
/// every older schema version along the upcast chain.
pub fn event_struct(model: &EventStruct, item: &syn::ItemStruct) -> TokenStream {
    let ident = &model.ident;
    let name = &model.name;
    let aliases = &model.aliases;
    let version = model.version;
    let rust_name = ident.to_string();
    let decode = versioned_decode(name, version, &model.chain);
    let personal = (!model.pii_fields.is_empty()).then(|| {
        let fields = &model.pii_fields;
        let subject = match &model.pii_subject {
            Some(subject) => quote!(::core::option::Option::Some(#subject)),
            None => quote!(::core::option::Option::None),
        };
        quote! {
            const PII_FIELDS: &'static [&'static str] = &[#(#fields),*];
            const PII_SUBJECT: ::core::option::Option<&'static str> = #subject;
        }
    });
    // Each typed step decodes the events stored at its `from` version as its type.
    let upcast_shapes = (!model.chain.typed.is_empty()).then(|| {
        let (versions, types): (Vec<_>, Vec<_>) = model.chain.typed.iter().cloned().unzip();
        quote! {
            const UPCAST_SHAPES: &'static [(u32, ::es_core::schema::ShapeTracer)] =
                &[#((#versions, <#types as ::es_core::checks::OlderShape>::STEP.trace)),*];
        }
    });
    quote! {
        #[derive(::es_core::serde::Serialize, ::es_core::serde::Deserialize)]
        #[serde(crate = "::es_core::serde")]
        #item

        impl ::es_core::EventType for #ident {
            const NAME: &'static str = #name;
            const ALIASES: &'static [&'static str] = &[#(#aliases),*];
            const VERSION: u32 = #version;
            const RUST_PATH: &'static str = ::core::concat!(::core::module_path!(), "::", #rust_name);
            #personal
            #upcast_shapes

            fn decode_payload(
                schema_version: u32,
                payload: &[u8],
            ) -> ::core::result::Result<Self, ::es_core::DecodeError> {
                #decode
            }
        }
    }
}

/// The body of a function decoding `payload` stored at `schema_version` (both in scope) into
/// `Self` at `version`: straight from the bytes at `version`, along the chain's steps from an
/// older one, a typed error otherwise. `name` names the payload in errors.
fn versioned_decode(name: &str, version: u32, chain: &UpcastChain) -> TokenStream {
    let upcast_arms = (1..version).map(|start| upcast_arm(chain, version, start));
    quote! {
        const NAME: &str = #name;
        match schema_version {
            #version => ::es_core::__private::upcast::from_slice::<Self>(NAME, #version, payload),
            #(#upcast_arms)*
            stored => ::core::result::Result::Err(
                ::es_core::__private::upcast::version_error(NAME, stored, #version),
            ),
        }
    }
}

/// The match arm that upgrades a payload stored at `start` to the current version: the chain's
/// steps from `start` on, JSON ones then typed ones. The payload is parsed once: into a `Value`
/// for JSON steps, or into the first typed step's shape.
fn upcast_arm(chain: &UpcastChain, version: u32, start: u32) -> TokenStream {
    let json: Vec<_> = chain.json.iter().filter(|(from, _)| *from >= start).collect();
    let typed: Vec<_> = chain.typed.iter().filter(|(from, _)| *from >= start).collect();
    let mut body = TokenStream::new();
    // The arm's own names, spanned where they are bound rather than at the user's paths: an
    // event declared by a `macro_rules!` hands its paths over in another hygiene context.
    let (payload, value, typed_value, name_const) = (quote!(payload), quote!(value), quote!(typed), quote!(NAME));

    // The first JSON step parses the stored bytes into a `Value`; each next one takes it on.
    for (i, (from, path)) in json.iter().enumerate() {
        let input = if i == 0 {
            quote! {
                ::es_core::__private::upcast::from_slice::<::es_core::serde_json::Value>(
                    NAME, #from, payload)?
            }
        } else {
            quote!(value)
        };
        body.extend(quote_spanned! {path.span()=>
            let #value = ::es_core::checks::JsonStep::run_step(&#path, #name_const, #from, #input)?;
        });
    }

    // The first typed step decodes its shape from the stored bytes or from the JSON steps'
    // `Value`; each converts into the next one's shape, the last into the event itself.
    for (i, (from, ty)) in typed.iter().enumerate() {
        let old = match (i, json.is_empty()) {
            (0, true) => quote_spanned!(ty.span()=>
                (<#ty as ::es_core::checks::OlderShape>::STEP.decode)(#name_const, #from, #payload)?),
            (0, false) => quote_spanned!(ty.span()=>
                (<#ty as ::es_core::checks::OlderShape>::STEP.from_value)(#name_const, #from, #value)?),
            _ => quote!(typed),
        };
        let next = typed.get(i + 1).map_or_else(|| quote!(Self), |(_, next)| quote!(#next));
        body.extend(quote_spanned! {ty.span()=>
            let #typed_value =
                <#ty as ::es_core::checks::UpcastInto<#next>>::upcast_into(#old, #name_const, #from)?;
        });
    }

    let finish = if !typed.is_empty() {
        quote!(::core::result::Result::Ok(typed))
    } else if !json.is_empty() {
        quote!(::es_core::__private::upcast::from_value::<Self>(NAME, #version, value))
    } else {
        quote!(::es_core::__private::upcast::from_slice::<Self>(NAME, #version, payload))
    };
    // Out of line, so that the current version's arm is all the hot path holds.
    quote! {
        #start => ::es_core::__private::upcast::older(
            || -> ::core::result::Result<Self, ::es_core::DecodeError> { #body #finish },
        ),
    }
}

/// The enum, its `EventSet` impl, the apply dispatch `#[derive(Aggregate)]` relies on, `From`
/// for each wrapped event, and the compile-time check that no two events share a name.
pub fn event_enum(model: &EventEnum, item: &syn::ItemEnum) -> TokenStream {
    let ident = &model.ident;
    let variants: Vec<_> = model.variants.iter().map(|variant| &variant.ident).collect();
    let types: Vec<_> = model.variants.iter().map(|variant| &variant.ty).collect();
    let type_names = types.iter().map(|ty| quote!(#ty).to_string());
    let bounds = types
        .iter()
        .map(|ty| quote_spanned!(ty.span()=> A: ::es_core::Apply<#ty>));
    let name_checks = name_clash_checks(model);
    // Spanned at each variant's type: an event type listed twice is reported as the second
    // `From` conflicting with the first, where the second is written.
    let from_impls = model.variants.iter().map(|variant| {
        let (variant, ty) = (&variant.ident, &variant.ty);
        quote_spanned! {ty.span()=>
            impl ::core::convert::From<#ty> for #ident {
                fn from(event: #ty) -> Self {
                    Self::#variant(event)
                }
            }
        }
    });
    let from_impls = quote!(#(#from_impls)*);
    let replaced = replaced_decoding(model);
    let replaced_checks = replaced_name_checks(model);
    quote! {
        #item

        impl ::es_core::EventSet for #ident {
            const EVENTS: &'static [::es_core::EventDescriptor] = &[
                #(::es_core::EventDescriptor {
                    name: <#types as ::es_core::EventType>::NAME,
                    aliases: <#types as ::es_core::EventType>::ALIASES,
                    version: <#types as ::es_core::EventType>::VERSION,
                    rust_type: #type_names,
                    shape: ::es_core::schema::trace_shape::<#types>,
                    pii_fields: <#types as ::es_core::EventType>::PII_FIELDS,
                    pii_subject: <#types as ::es_core::EventType>::PII_SUBJECT,
                    upcast_shapes: <#types as ::es_core::EventType>::UPCAST_SHAPES,
                },)*
            ];

            #replaced

            fn event_name(&self) -> &'static str {
                match *self {
                    #(Self::#variants(_) => <#types as ::es_core::EventType>::NAME,)*
                }
            }

            fn schema_version(&self) -> u32 {
                match *self {
                    #(Self::#variants(_) => <#types as ::es_core::EventType>::VERSION,)*
                }
            }

            fn encode_payload(
                &self,
            ) -> ::core::result::Result<::std::vec::Vec<u8>, ::es_core::serde_json::Error> {
                match self {
                    #(Self::#variants(event) => ::es_core::serde_json::to_vec(event),)*
                }
            }

            fn decode(
                event_name: &str,
                schema_version: u32,
                payload: &[u8],
            ) -> ::core::result::Result<Self, ::es_core::DecodeError> {
                #(
                    if <#types as ::es_core::EventType>::is_named(event_name) {
                        return <#types as ::es_core::EventType>::decode_payload(schema_version, payload)
                            .map(Self::#variants);
                    }
                )*
                // A replaced name read as one event: fine when its rule made exactly one.
                if let ::core::option::Option::Some(name) =
                    <Self as ::es_core::EventSet>::REPLACED.iter().find(|name| **name == event_name)
                {
                    return <Self as ::es_core::EventSet>::decode_all(event_name, schema_version, payload)
                        .and_then(|decoded| ::es_core::__private::upcast::single(name, decoded));
                }
                ::core::result::Result::Err(::es_core::DecodeError::UnknownEventType {
                    event_name: ::std::borrow::ToOwned::to_owned(event_name),
                })
            }
        }

        impl<A: ?::core::marker::Sized> ::es_core::AppliedBy<A> for #ident
        where
            #(#bounds,)*
        {
            fn apply_to(&self, aggregate: &mut A) {
                match self {
                    #(Self::#variants(event) => <A as ::es_core::Apply<#types>>::apply(aggregate, event),)*
                }
            }
        }

        #from_impls

        #name_checks
        #replaced_checks
    }
}

/// `REPLACED` and the `decode_all` that runs the `#[replaced]` rules, if there are any (the
/// trait's defaults stand otherwise). A replaced name stored at a version no rule reads is a
/// `NoReplacedRule` error: the rule is missing, whichever code is older.
fn replaced_decoding(model: &EventEnum) -> TokenStream {
    if model.replaced.is_empty() {
        return TokenStream::new();
    }
    let mut names: Vec<&str> = model.replaced.iter().map(|rule| rule.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let rules = model.replaced.iter().map(|rule| {
        let (name, version, by) = (&rule.name, rule.version, &rule.by);
        // `payload` spanned where it is bound: see `upcast_arm`.
        let payload = quote!(payload);
        let run = quote_spanned! {by.span()=>
            ::es_core::checks::ReplaceRule::<_, Self>::replace(#by, #name, #version, #payload)
        };
        quote! { (#name, #version) => #run, }
    });
    let other_versions = names.iter().map(|name| {
        quote! {
            (#name, stored) => ::core::result::Result::Err(
                ::es_core::__private::upcast::no_replaced_rule(#name, stored),
            ),
        }
    });
    let read = model.replaced.iter().map(|rule| {
        let (name, version) = (&rule.name, rule.version);
        quote! { (#name, #version) }
    });
    quote! {
        const REPLACED: &'static [&'static str] = &[#(#names),*];
        const REPLACED_VERSIONS: &'static [(&'static str, u32)] = &[#(#read),*];

        fn decode_all(
            event_name: &str,
            schema_version: u32,
            payload: &[u8],
        ) -> ::core::result::Result<::es_core::Decoded<Self>, ::es_core::DecodeError> {
            match (event_name, schema_version) {
                #(#rules)*
                #(#other_versions)*
                _ => <Self as ::es_core::EventSet>::decode(event_name, schema_version, payload)
                    .map(::es_core::Decoded::One),
            }
        }
    }
}

/// Compile-time checks that no event of the enum is stored under a name a `#[replaced]` rule
/// claims, reported at the rule's name.
fn replaced_name_checks(model: &EventEnum) -> TokenStream {
    let mut checks = TokenStream::new();
    let mut names: Vec<&syn::LitStr> = Vec::new();
    for rule in &model.replaced {
        if names.iter().any(|seen| seen.value() == rule.name) {
            continue;
        }
        names.push(&rule.name_lit);
        for variant in &model.variants {
            let (lit, ty) = (&rule.name_lit, &variant.ty);
            checks.extend(quote_spanned! {lit.span()=>
                let () = <::es_core::checks::SharedName<{
                    ::es_core::checks::share_a_name(
                        (#lit, &[], ""),
                        (
                            <#ty as ::es_core::EventType>::NAME,
                            <#ty as ::es_core::EventType>::ALIASES,
                            <#ty as ::es_core::EventType>::RUST_PATH,
                        ),
                    )
                }> as ::es_core::checks::NotReplaced<#ty>>::CHECKED;
            });
        }
    }
    if checks.is_empty() {
        return checks;
    }
    quote! { const _: () = { #checks }; }
}

/// Compile-time checks that no two events of the enum share a stored name or alias. The names
/// live on the event structs, which this macro cannot see, so the compiler evaluates whether
/// they clash and the `DistinctNames` bound reports a clash at the later variant.
fn name_clash_checks(model: &EventEnum) -> TokenStream {
    let mut checks = TokenStream::new();
    for (i, first) in model.variants.iter().enumerate() {
        for second in &model.variants[i + 1..] {
            let (a, b) = (&first.ty, &second.ty);
            let names = |ty: &syn::Type| {
                quote! {(
                    <#ty as ::es_core::EventType>::NAME,
                    <#ty as ::es_core::EventType>::ALIASES,
                    <#ty as ::es_core::EventType>::RUST_PATH,
                )}
            };
            let (a_names, b_names) = (names(a), names(b));
            checks.extend(quote_spanned! {second.ty.span()=>
                let () = <::es_core::checks::SharedName<{ ::es_core::checks::share_a_name(#a_names, #b_names) }>
                    as ::es_core::checks::DistinctNames<#a, #b>>::CHECKED;
            });
        }
    }
    if checks.is_empty() {
        return checks;
    }
    quote! { const _: () = { #checks }; }
}

/// The `Aggregate` impl; `apply_event` is the trait's own, through the enum's `AppliedBy`.
pub fn aggregate(model: &AggregateModel) -> TokenStream {
    let AggregateModel {
        ident,
        name,
        id,
        event,
        snapshot_revision,
        snapshot_version,
        chain,
    } = model;
    // Spanned at the event type, so a type that is not an event enum (or lacks a handler) is
    // reported where it is named.
    let event_type = quote_spanned! {event.span()=> type Event = #event; };
    // The trait's own decoding reads the current version only; older ones need the steps.
    let decode_snapshot = (*snapshot_version > 1).then(|| {
        let decode = versioned_decode(&format!("{name} snapshot"), *snapshot_version, chain);
        quote! {
            fn decode_snapshot(
                schema_version: u32,
                payload: &[u8],
            ) -> ::core::result::Result<Self, ::es_core::DecodeError> {
                #decode
            }
        }
    });
    quote! {
        impl ::es_core::Aggregate for #ident {
            const TYPE: &'static str = #name;
            const SNAPSHOT_REVISION: u32 = #snapshot_revision;
            const SNAPSHOT_VERSION: u32 = #snapshot_version;
            type Id = #id;
            #event_type
            #decode_snapshot
        }
    }
}
