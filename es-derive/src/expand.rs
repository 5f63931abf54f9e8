//! Code generation from the checked model that `valid.rs` builds; nothing is checked here.
//! Generated code names everything by absolute path, so user code that shadows `Result` or
//! `Option` still compiles.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::{AggregateModel, EventEnum, EventStruct};

/// The struct with serde derived for it, and its `EventType` impl, whose decoding upgrades
/// every older schema version along the upcast chain.
pub fn event_struct(model: &EventStruct, item: &syn::ItemStruct) -> TokenStream {
    let ident = &model.ident;
    let name = &model.name;
    let aliases = &model.aliases;
    let version = model.version;
    let upcast_arms = (1..version).map(|start| upcast_arm(model, start));
    quote! {
        #[derive(::es_core::__private::serde::Serialize, ::es_core::__private::serde::Deserialize)]
        #[serde(crate = "::es_core::__private::serde")]
        #item

        impl ::es_core::EventType for #ident {
            const NAME: &'static str = #name;
            const ALIASES: &'static [&'static str] = &[#(#aliases),*];
            const VERSION: u32 = #version;

            fn decode_payload(
                schema_version: u32,
                payload: &[u8],
            ) -> ::core::result::Result<Self, ::es_core::DecodeError> {
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
    }
}

/// The match arm that upgrades a payload stored at `start` to the current version: the chain's
/// steps from `start` on, JSON ones then typed ones. The payload is parsed once: into a `Value`
/// for JSON steps, or into the first typed step's shape.
fn upcast_arm(model: &EventStruct, start: u32) -> TokenStream {
    let json: Vec<_> = model.chain.json.iter().filter(|(from, _)| *from >= start).collect();
    let typed: Vec<_> = model.chain.typed.iter().filter(|(from, _)| *from >= start).collect();
    let mut body = TokenStream::new();

    // The first JSON step parses the stored bytes into a `Value`; each next one takes it on.
    for (i, (from, path)) in json.iter().enumerate() {
        let input = if i == 0 {
            quote! {
                ::es_core::__private::upcast::from_slice::<::es_core::__private::serde_json::Value>(
                    NAME, #from, payload)?
            }
        } else {
            quote!(value)
        };
        body.extend(quote_spanned! {path.span()=>
            let value = ::es_core::__private::upcast::json_step(NAME, #from, #path, #input)?;
        });
    }

    // The first typed step decodes its shape from the stored bytes or from the JSON steps'
    // `Value`; each converts into the next one's shape, the last into the event itself.
    for (i, (from, ty)) in typed.iter().enumerate() {
        let old = match (i, json.is_empty()) {
            (0, true) => quote!(::es_core::__private::upcast::from_slice::<#ty>(NAME, #from, payload)?),
            (0, false) => quote!(::es_core::__private::upcast::from_value::<#ty>(NAME, #from, value)?),
            _ => quote!(typed),
        };
        let next = typed.get(i + 1).map_or_else(|| quote!(Self), |(_, next)| quote!(#next));
        body.extend(quote_spanned! {ty.span()=>
            let typed = ::es_core::__private::upcast::typed_step::<#ty, #next>(NAME, #from, #old)?;
        });
    }

    let version = model.version;
    let finish = if !typed.is_empty() {
        quote!(::core::result::Result::Ok(typed))
    } else if !json.is_empty() {
        quote!(::es_core::__private::upcast::from_value::<Self>(NAME, #version, value))
    } else {
        quote!(::es_core::__private::upcast::from_slice::<Self>(NAME, #version, payload))
    };
    quote! { #start => { #body #finish } }
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
    quote! {
        #item

        impl ::es_core::EventSet for #ident {
            const EVENTS: &'static [::es_core::EventDescriptor] = &[
                #(::es_core::EventDescriptor {
                    name: <#types as ::es_core::EventType>::NAME,
                    aliases: <#types as ::es_core::EventType>::ALIASES,
                    version: <#types as ::es_core::EventType>::VERSION,
                    rust_type: #type_names,
                    shape: ::es_core::__private::trace_shape::<#types>,
                },)*
            ];

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
            ) -> ::core::result::Result<::std::vec::Vec<u8>, ::es_core::__private::serde_json::Error> {
                match self {
                    #(Self::#variants(event) => ::es_core::__private::serde_json::to_vec(event),)*
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
                ::core::result::Result::Err(::es_core::DecodeError::UnknownEventType {
                    event_name: ::std::borrow::ToOwned::to_owned(event_name),
                })
            }
        }

        impl<A: ?::core::marker::Sized> ::es_core::__private::ApplyEach<A> for #ident
        where
            #(#bounds,)*
        {
            fn apply_to(&self, aggregate: &mut A) {
                match self {
                    #(Self::#variants(event) => <A as ::es_core::Apply<#types>>::apply(aggregate, event),)*
                }
            }
        }

        #(
            impl ::core::convert::From<#types> for #ident {
                fn from(event: #types) -> Self {
                    Self::#variants(event)
                }
            }
        )*

        #name_checks
    }
}

/// Compile-time checks that no two events of the enum share a stored name or alias. The names
/// live on the event structs, which this macro cannot see, so the check is a constant evaluated
/// by the compiler.
fn name_clash_checks(model: &EventEnum) -> TokenStream {
    let mut checks = TokenStream::new();
    for (i, first) in model.variants.iter().enumerate() {
        for second in &model.variants[i + 1..] {
            let (a, b) = (&first.ty, &second.ty);
            let message = format!(
                "events of `{}`: variants `{}` and `{}` share a stored name or alias; give one of them \
                 another #[event(name = \"...\")] or drop the alias",
                model.ident, first.ident, second.ident
            );
            checks.extend(quote_spanned! {second.ty.span()=>
                if ::es_core::__private::upcast::share_a_name::<#a, #b>() {
                    ::core::panic!(#message);
                }
            });
        }
    }
    if checks.is_empty() {
        return checks;
    }
    quote! { const _: () = { #checks }; }
}

/// The `Aggregate` impl, dispatching each event to its `Apply` handler.
pub fn aggregate(model: &AggregateModel) -> TokenStream {
    let AggregateModel {
        ident,
        name,
        id,
        event,
        snapshot_revision,
    } = model;
    let apply = quote_spanned! {event.span()=>
        <#event as ::es_core::__private::ApplyEach<Self>>::apply_to(event, self)
    };
    quote! {
        impl ::es_core::Aggregate for #ident {
            const TYPE: &'static str = #name;
            const SNAPSHOT_REVISION: u32 = #snapshot_revision;
            type Id = #id;
            type Event = #event;

            fn apply_event(&mut self, event: &Self::Event) {
                #apply
            }
        }
    }
}
