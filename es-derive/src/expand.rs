//! Code generation from a model that has already passed `valid.rs`. Generated code names
//! everything by absolute path, so user code that shadows `Result` or `Option` still compiles.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::{AggregateModel, EventEnum, EventStruct, StepKind};

pub fn event_struct(model: &EventStruct, item: &syn::ItemStruct) -> TokenStream {
    let ident = &model.ident;
    let name = &model.name.0;
    let aliases = &model.aliases;
    let version = model.version;
    let upcast_arms = (1..version).map(|start| upcast_chain(model, start));
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

/// The match arm that upgrades a payload stored at `start` to the current version, one step at a
/// time. The payload is parsed once: into a `Value` for JSON steps, or into the typed shape.
fn upcast_chain(model: &EventStruct, start: u32) -> TokenStream {
    enum Carried {
        Bytes,
        Json,
        Typed,
    }
    let step_at = |version: u32| model.steps.iter().find(|step| step.from == version);
    let mut body = TokenStream::new();
    let mut carried = Carried::Bytes;
    for from in start..model.version {
        let Some(step) = step_at(from) else {
            return quote! { #start => ::core::compile_error!("upcast chain has a gap"), };
        };
        match &step.kind {
            StepKind::Json(path) => {
                let input = match carried {
                    Carried::Bytes => quote! {
                        ::es_core::__private::upcast::from_slice::<::es_core::__private::serde_json::Value>(
                            NAME, #from, payload)?
                    },
                    Carried::Json => quote!(value),
                    Carried::Typed => {
                        return quote! { #start => ::core::compile_error!("typed step before JSON step"), }
                    }
                };
                body.extend(quote_spanned! {path.span()=>
                    let value = ::es_core::__private::upcast::json_step(NAME, #from, #path, #input)?;
                });
                carried = Carried::Json;
            }
            StepKind::Typed(ty) => {
                let old = match carried {
                    Carried::Bytes => quote!(::es_core::__private::upcast::from_slice::<#ty>(NAME, #from, payload)?),
                    Carried::Json => quote!(::es_core::__private::upcast::from_value::<#ty>(NAME, #from, value)?),
                    Carried::Typed => quote!(typed),
                };
                let next = match step_at(from + 1).map(|next| &next.kind) {
                    Some(StepKind::Typed(next)) => quote!(#next),
                    _ => quote!(Self),
                };
                body.extend(quote_spanned! {ty.span()=>
                    let typed = ::es_core::__private::upcast::typed_step::<#ty, #next>(NAME, #from, #old)?;
                });
                carried = Carried::Typed;
            }
        }
    }
    let version = model.version;
    let finish = match carried {
        Carried::Json => quote!(::es_core::__private::upcast::from_value::<Self>(NAME, #version, value)),
        Carried::Typed | Carried::Bytes => quote!(::core::result::Result::Ok(typed)),
    };
    quote! { #start => { #body #finish } }
}

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
