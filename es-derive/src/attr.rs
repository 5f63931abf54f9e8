//! Attribute grammar: turns `#[event(...)]`, `#[upcast(...)]` and `#[aggregate(...)]` into the
//! model in `ast.rs`. Every problem is recorded in the context, and parsing goes on, so one
//! compile reports them all.

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::meta::ParseNestedMeta;
use syn::parse::{ParseStream, Parser};
use syn::Token;

use crate::ast::{AggregateModel, EventEnum, EventStruct, EventVariant, StepKind, UpcastStep};
use crate::ctxt::Ctxt;

/// The names of the attributes and of their keys. The parser matches on them, the unknown-key
/// message lists them, and a test checks that the user docs on `es_core`'s re-exports describe
/// each of them.
pub mod keys {
    /// `#[upcast(...)]`, on an event struct.
    pub const UPCAST: &str = "upcast";
    /// `#[aggregate(...)]`, on a `#[derive(Aggregate)]` type.
    pub const AGGREGATE: &str = "aggregate";

    /// `name = "..."` of `#[event]` and `#[aggregate]`: the stored name.
    pub const NAME: &str = "name";
    /// `alias = "..."` of `#[event]`: an older stored name.
    pub const ALIAS: &str = "alias";
    /// `version = N` of `#[event]`: the current schema version.
    pub const VERSION: &str = "version";

    /// `from = N` of `#[upcast]`: the version a step upgrades from.
    pub const FROM: &str = "from";
    /// `json = path` of `#[upcast]`: a step on the JSON payload.
    pub const JSON: &str = "json";
    /// `typed = Type` of `#[upcast]`: a step through an older Rust type.
    pub const TYPED: &str = "typed";

    /// `id = Type` of `#[aggregate]`: the id type.
    pub const ID: &str = "id";
    /// `event = Type` of `#[aggregate]`: the event enum.
    pub const EVENT: &str = "event";
    /// `snapshot_revision = N` of `#[aggregate]`.
    pub const SNAPSHOT_REVISION: &str = "snapshot_revision";

    /// The keys of `#[event(...)]` on a struct.
    pub const EVENT_KEYS: &[&str] = &[NAME, ALIAS, VERSION];
    /// The keys of `#[upcast(...)]`.
    pub const UPCAST_KEYS: &[&str] = &[FROM, JSON, TYPED];
    /// The keys of `#[aggregate(...)]`.
    pub const AGGREGATE_KEYS: &[&str] = &[NAME, ID, EVENT, SNAPSHOT_REVISION];
}

use keys::*;

/// Parses `#[event(...)]` on a struct, and takes the struct's `#[upcast]` attributes off it.
pub fn event_struct(cx: &Ctxt, args: TokenStream, item: &mut syn::ItemStruct) -> EventStruct {
    let ident = item.ident.clone();
    let mut name: Option<syn::LitStr> = None;
    let mut aliases = Vec::new();
    let mut version: Option<(u32, Span)> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident(NAME) {
            if let Some(lit) = lit_str(cx, &meta, NAME)? {
                set_once(cx, &meta, &mut name, lit);
            }
        } else if meta.path.is_ident(ALIAS) {
            aliases.extend(lit_str(cx, &meta, ALIAS)?);
        } else if meta.path.is_ident(VERSION) {
            if let Some(value) = lit_u32(cx, &meta, VERSION)? {
                set_once(cx, &meta, &mut version, value);
            }
        } else {
            unknown_key(cx, &meta, "#[event]", EVENT_KEYS)?;
        }
        Ok(())
    });
    if let Err(error) = parser.parse2(args) {
        cx.syn_error(error);
    }

    let mut steps = Vec::new();
    item.attrs.retain(|attr| {
        if !attr.path().is_ident(UPCAST) {
            return true;
        }
        steps.extend(upcast_step(cx, attr));
        false
    });
    reject_serde_derives(cx, &item.attrs);

    let (version, version_span) = version.unwrap_or((1, ident.span()));
    EventStruct {
        name: match name {
            Some(lit) => (lit.value(), lit.span()),
            None => (ident.to_string(), ident.span()),
        },
        ident,
        aliases,
        version,
        version_span,
        steps,
    }
}

fn upcast_step(cx: &Ctxt, attr: &syn::Attribute) -> Option<UpcastStep> {
    let mut from: Option<(u32, Span)> = None;
    let mut kind: Option<StepKind> = None;
    let result = attr.parse_nested_meta(|meta| {
        if meta.path.is_ident(FROM) {
            if let Some(value) = lit_u32(cx, &meta, FROM)? {
                set_once(cx, &meta, &mut from, value);
            }
        } else if meta.path.is_ident(JSON) {
            if let Some(path) = path_value(cx, &meta, JSON)? {
                set_step_kind(cx, &meta, &mut kind, StepKind::Json(path));
            }
        } else if meta.path.is_ident(TYPED) {
            if let Some(ty) = type_value(cx, &meta, TYPED)? {
                set_step_kind(cx, &meta, &mut kind, StepKind::Typed(ty));
            }
        } else {
            unknown_key(cx, &meta, "#[upcast]", UPCAST_KEYS)?;
        }
        Ok(())
    });
    if let Err(error) = result {
        cx.syn_error(error);
        return None;
    }
    let Some((from, from_span)) = from else {
        cx.error_spanned_by(
            attr,
            "#[upcast] needs the version it upgrades from: `#[upcast(from = 1, json = my_fn)]`",
        );
        return None;
    };
    let Some(kind) = kind else {
        cx.error_spanned_by(
            attr,
            "#[upcast] needs a step: `json = fn_name` (a `fn(Value) -> Result<Value, UpcastError>`) or \
             `typed = OldShape` (a struct converted with `From`/`TryFrom`)",
        );
        return None;
    };
    Some(UpcastStep { from, from_span, kind })
}

fn set_step_kind(cx: &Ctxt, meta: &ParseNestedMeta, slot: &mut Option<StepKind>, kind: StepKind) {
    if slot.is_some() {
        cx.error_spanned_by(
            &meta.path,
            "an #[upcast] step is either `json = ...` or `typed = ...`, not both; write one #[upcast] per version",
        );
    } else {
        *slot = Some(kind);
    }
}

/// Parses `#[event]` on an enum: each variant wraps one event struct.
pub fn event_enum(cx: &Ctxt, args: TokenStream, item: &mut syn::ItemEnum) -> EventEnum {
    if !args.is_empty() {
        cx.error_spanned_by(
            &args,
            "#[event] on an enum takes no arguments: put `name`, `alias` and `version` on the event structs \
             its variants wrap",
        );
    }
    item.attrs.retain(|attr| {
        if attr.path().is_ident(UPCAST) {
            cx.error_spanned_by(
                attr,
                "#[upcast] belongs on an event struct, not on the enum of an aggregate's events",
            );
            return false;
        }
        true
    });
    reject_serde_derives(cx, &item.attrs);
    let mut variants = Vec::new();
    for variant in &item.variants {
        match &variant.fields {
            syn::Fields::Unnamed(fields) if fields.unnamed.len() == 1 => variants.push(EventVariant {
                ident: variant.ident.clone(),
                ty: fields.unnamed[0].ty.clone(),
            }),
            _ => cx.error_spanned_by(
                variant,
                format!(
                    "each variant of an #[event] enum wraps exactly one #[event] struct, e.g. `{0}({0})`; \
                     move the fields of `{0}` into a struct of their own",
                    variant.ident
                ),
            ),
        }
    }
    EventEnum {
        ident: item.ident.clone(),
        variants,
    }
}

/// Parses `#[aggregate(...)]` on a `#[derive(Aggregate)]` type.
pub fn aggregate(cx: &Ctxt, input: &syn::DeriveInput) -> Option<AggregateModel> {
    let mut name: Option<syn::LitStr> = None;
    let mut id: Option<syn::Type> = None;
    let mut event: Option<syn::Type> = None;
    let mut revision: Option<(u32, Span)> = None;
    for attr in input.attrs.iter().filter(|attr| attr.path().is_ident(AGGREGATE)) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident(NAME) {
                if let Some(lit) = lit_str(cx, &meta, NAME)? {
                    set_once(cx, &meta, &mut name, lit);
                }
            } else if meta.path.is_ident(ID) {
                if let Some(ty) = type_value(cx, &meta, ID)? {
                    set_once(cx, &meta, &mut id, ty);
                }
            } else if meta.path.is_ident(EVENT) {
                if let Some(ty) = type_value(cx, &meta, EVENT)? {
                    set_once(cx, &meta, &mut event, ty);
                }
            } else if meta.path.is_ident(SNAPSHOT_REVISION) {
                if let Some(value) = lit_u32(cx, &meta, SNAPSHOT_REVISION)? {
                    if value.0 == 0 {
                        cx.syn_error(syn::Error::new(value.1, "snapshot revisions start at 1"));
                    }
                    set_once(cx, &meta, &mut revision, value);
                }
            } else {
                unknown_key(cx, &meta, "#[aggregate]", AGGREGATE_KEYS)?;
            }
            Ok(())
        });
        if let Err(error) = result {
            cx.syn_error(error);
        }
    }
    let name = match name {
        Some(lit) if lit.value().trim().is_empty() => {
            cx.error_spanned_by(&lit, "the aggregate type name must not be empty");
            return None;
        }
        Some(lit) => lit.value(),
        None => input.ident.to_string(),
    };
    let Some(event) = event else {
        cx.error_spanned_by(
            &input.ident,
            format!(
                "`{}` names no event type: add `#[aggregate(event = YourEvents)]`, where `YourEvents` is the \
                 #[event] enum of this aggregate's events",
                input.ident
            ),
        );
        return None;
    };
    Some(AggregateModel {
        ident: input.ident.clone(),
        name,
        id: id.unwrap_or_else(|| syn::parse_quote!(::std::string::String)),
        event,
        snapshot_revision: revision.map_or(1, |(value, _)| value),
    })
}

/// `#[event]` derives serde itself; a second derive would be a confusing "conflicting
/// implementations" error, so it is named here instead.
fn reject_serde_derives(cx: &Ctxt, attrs: &[syn::Attribute]) {
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("derive")) {
        let Ok(paths) = attr.parse_args_with(syn::punctuated::Punctuated::<syn::Path, Token![,]>::parse_terminated)
        else {
            continue;
        };
        for path in paths {
            let last = path.segments.last().map(|segment| segment.ident.to_string());
            if let Some(trait_name @ ("Serialize" | "Deserialize")) = last.as_deref() {
                cx.error_spanned_by(
                    &path,
                    format!("#[event] already derives `{trait_name}`; remove it from this #[derive(...)]"),
                );
            }
        }
    }
}

fn set_once<T>(cx: &Ctxt, meta: &ParseNestedMeta, slot: &mut Option<T>, value: T) {
    if slot.is_some() {
        let key = meta.path.get_ident().map(ToString::to_string).unwrap_or_default();
        cx.error_spanned_by(&meta.path, format!("`{key}` is given twice; keep one"));
    } else {
        *slot = Some(value);
    }
}

fn unknown_key(cx: &Ctxt, meta: &ParseNestedMeta, attribute: &str, expected: &[&str]) -> syn::Result<()> {
    let expected = expected
        .iter()
        .map(|key| format!("`{key}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let key = meta
        .path
        .get_ident()
        .map(ToString::to_string)
        .unwrap_or_else(|| "?".into());
    cx.error_spanned_by(
        &meta.path,
        format!("unknown {attribute} key `{key}`; expected one of {expected}"),
    );
    skip_value(meta.input)
}

/// Skips the rest of one `key = value` or `key(...)` entry, so parsing can go on after an error.
fn skip_value(input: ParseStream) -> syn::Result<()> {
    while !input.is_empty() && !input.peek(Token![,]) {
        input.parse::<TokenTree>()?;
    }
    Ok(())
}

fn value_expr(meta: &ParseNestedMeta) -> syn::Result<syn::Expr> {
    meta.value()?.parse()
}

fn lit_str(cx: &Ctxt, meta: &ParseNestedMeta, key: &str) -> syn::Result<Option<syn::LitStr>> {
    match value_expr(meta)? {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(lit),
            ..
        }) => {
            if lit.value().trim().is_empty() {
                cx.error_spanned_by(&lit, format!("`{key}` must not be empty"));
                return Ok(None);
            }
            Ok(Some(lit))
        }
        other => {
            cx.error_spanned_by(
                &other,
                format!("`{key}` takes a string literal, e.g. `{key} = \"TicketOpened\"`"),
            );
            Ok(None)
        }
    }
}

fn lit_u32(cx: &Ctxt, meta: &ParseNestedMeta, key: &str) -> syn::Result<Option<(u32, Span)>> {
    let expr = value_expr(meta)?;
    if let syn::Expr::Lit(syn::ExprLit {
        lit: syn::Lit::Int(lit),
        ..
    }) = &expr
    {
        if let Ok(value) = lit.base10_parse::<u32>() {
            return Ok(Some((value, lit.span())));
        }
    }
    cx.error_spanned_by(&expr, format!("`{key}` takes a whole number, e.g. `{key} = 2`"));
    Ok(None)
}

fn path_value(cx: &Ctxt, meta: &ParseNestedMeta, key: &str) -> syn::Result<Option<syn::Path>> {
    match value_expr(meta)? {
        syn::Expr::Path(path) if path.qself.is_none() => Ok(Some(path.path)),
        other => {
            cx.error_spanned_by(
                &other,
                format!("`{key}` takes the path of a function, without quotes, e.g. `{key} = upgrade_v1`"),
            );
            Ok(None)
        }
    }
}

fn example_type(key: &str) -> &'static str {
    match key {
        ID => "TicketId",
        TYPED => "EscalatedV1",
        _ => "TicketEvent",
    }
}

fn type_value(cx: &Ctxt, meta: &ParseNestedMeta, key: &str) -> syn::Result<Option<syn::Type>> {
    let input = meta.value()?;
    if input.peek(syn::Lit) {
        let lit: syn::Lit = input.parse()?;
        cx.syn_error(syn::Error::new(
            lit.span(),
            format!(
                "`{key}` takes a type, without quotes, e.g. `{key} = {}`",
                example_type(key)
            ),
        ));
        return Ok(None);
    }
    input.parse().map(Some)
}

#[cfg(test)]
mod tests {
    use super::keys::*;

    /// The user docs live on `es_core`'s re-exports of the macros; each key the parser accepts
    /// must be described there, written as `key = ...`.
    #[test]
    fn the_docs_describe_every_key() {
        let event = include_str!("../../es-core/src/macro_docs/event.md");
        let aggregate = include_str!("../../es-core/src/macro_docs/aggregate.md");
        for (docs, keys) in [(event, EVENT_KEYS), (event, UPCAST_KEYS), (aggregate, AGGREGATE_KEYS)] {
            for key in keys {
                let written = ["`", "(", ", "].map(|before| format!("{before}{key} = "));
                assert!(
                    written.iter().any(|written| docs.contains(written.as_str())),
                    "the docs do not describe `{key} = ...`"
                );
            }
        }
    }
}
