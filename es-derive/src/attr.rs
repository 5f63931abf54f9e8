//! Attribute grammar: turns `#[event(...)]`, `#[upcast(...)]` and `#[aggregate(...)]` into the
//! as-written model of `ast.rs`. Only the grammar is checked here (known keys, values of the
//! right kind, each key once); what the values mean is for `valid.rs`. Every problem is recorded
//! in the context, and parsing goes on, so one compile reports them all.

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::parse::{ParseStream, Parser};
use syn::Token;

use crate::ast::{
    AggregateAttrs, EventAttrs, EventEnum, EventVariant, Number, PiiField, ReplacedAttr, StepKind, UpcastAttr,
};
use crate::ctxt::Ctxt;

/// The names of the attributes and of their keys. The parser matches on them, the unknown-key
/// message lists them, and a test checks that the user docs on `es_core`'s re-exports describe
/// each of them.
pub mod keys {
    /// `#[upcast(...)]`, on an event struct.
    pub const UPCAST: &str = "upcast";
    /// `#[aggregate(...)]`, on a `#[derive(Aggregate)]` type.
    pub const AGGREGATE: &str = "aggregate";
    /// `#[pii]`, on a field of an event struct: personal data.
    pub const PII: &str = "pii";
    /// `subject = field` of `#[event]`: the field naming the data subject of the `#[pii]` fields.
    pub const SUBJECT: &str = "subject";
    /// `#[replaced(...)]`, on an event enum.
    pub const REPLACED: &str = "replaced";
    /// `by = path` of `#[replaced]`: the function that makes events of a retired one.
    pub const BY: &str = "by";

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
    /// `snapshot_version = N` of `#[aggregate]`: the schema version of the snapshot state.
    pub const SNAPSHOT_VERSION: &str = "snapshot_version";

    /// The keys of `#[event(...)]` on a struct.
    pub const EVENT_KEYS: &[&str] = &[NAME, ALIAS, VERSION, SUBJECT];
    /// The keys of `#[upcast(...)]`.
    pub const UPCAST_KEYS: &[&str] = &[FROM, JSON, TYPED];
    /// The keys of `#[replaced(...)]`.
    pub const REPLACED_KEYS: &[&str] = &[NAME, VERSION, BY];
    /// The keys of `#[aggregate(...)]`.
    pub const AGGREGATE_KEYS: &[&str] = &[NAME, ID, EVENT, SNAPSHOT_REVISION, SNAPSHOT_VERSION];
}

use keys::*;

/// Parses `#[event(...)]` on a struct, and takes the struct's `#[upcast]` attributes off it.
/// `is_above` tells whether an attribute is written above `#[event]`.
pub fn event_struct(
    cx: &Ctxt,
    args: TokenStream,
    item: &mut syn::ItemStruct,
    is_above: impl Fn(&syn::Attribute) -> bool,
) -> EventAttrs {
    let mut name = None;
    let mut aliases = Vec::new();
    let mut version = None;
    let mut version_written = false;
    let mut subject = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident(SUBJECT) {
            set_once(cx, &meta, &mut subject, field_name(cx, &meta, SUBJECT)?);
        } else if meta.path.is_ident(NAME) {
            set_once(cx, &meta, &mut name, lit_str(cx, &meta, NAME)?);
        } else if meta.path.is_ident(ALIAS) {
            aliases.extend(lit_str(cx, &meta, ALIAS)?);
        } else if meta.path.is_ident(VERSION) {
            version_written = true;
            set_once(cx, &meta, &mut version, number(cx, &meta, VERSION)?);
        } else {
            return unknown_key(cx, &meta, "#[event]", EVENT_KEYS);
        }
        Ok(())
    });
    if let Err(error) = parser.parse2(args) {
        cx.syn_error(error);
    }

    let (upcasts, others): (Vec<_>, Vec<_>) = std::mem::take(&mut item.attrs)
        .into_iter()
        .partition(|attr| attr.path().is_ident(UPCAST));
    item.attrs = others;
    item.attrs.retain(|attr| {
        if !attr.path().is_ident(REPLACED) {
            return true;
        }
        cx.error_at(
            attr,
            "#[replaced] belongs on the #[event] enum that reads the retired event, not on an event struct; to \
             read older versions of this event, use #[upcast(from = N, ...)]",
        );
        false
    });
    for attr in upcasts.iter().filter(|attr| is_above(attr)) {
        // The compiler also says it cannot find `upcast`: nothing defines it outside `#[event]`.
        cx.error_at(
            attr,
            "#[upcast] is read by #[event], which sees only the attributes below it: move this #[upcast] below \
             #[event(...)]",
        );
    }
    let mut pii = Vec::new();
    for field in item.fields.iter_mut() {
        let (marks, others): (Vec<_>, Vec<_>) = std::mem::take(&mut field.attrs)
            .into_iter()
            .partition(|attr| attr.path().is_ident(PII));
        field.attrs = others;
        for attr in marks {
            if !matches!(attr.meta, syn::Meta::Path(_)) {
                cx.error_at(
                    &attr,
                    "#[pii] takes no arguments: the subject is `#[event(subject = field)]`",
                );
            }
            pii.push(PiiField {
                attr,
                field: field.clone(),
            });
        }
    }
    EventAttrs {
        ident: item.ident.clone(),
        name,
        aliases,
        version,
        version_written,
        subject,
        pii,
        steps: upcasts.into_iter().filter_map(|attr| upcast_attr(cx, attr)).collect(),
    }
}

/// Parses one `#[upcast(...)]`; `None` if syn could not read it at all.
fn upcast_attr(cx: &Ctxt, attr: syn::Attribute) -> Option<UpcastAttr> {
    let mut from = None;
    let mut kind = None;
    let misspelt = read_keys(cx, &attr, "#[upcast]", UPCAST_KEYS, |meta| {
        if meta.path.is_ident(FROM) {
            set_once(cx, meta, &mut from, number(cx, meta, FROM)?);
        } else if meta.path.is_ident(JSON) {
            let path = path_value(cx, meta, JSON)?;
            set_once(cx, meta, &mut kind, path.map(StepKind::Json));
        } else if meta.path.is_ident(TYPED) {
            let ty = type_value(cx, meta, TYPED)?;
            set_once(cx, meta, &mut kind, ty.map(StepKind::Typed));
        } else {
            return Ok(false);
        }
        Ok(true)
    })?;
    Some(UpcastAttr {
        attr,
        from,
        kind,
        misspelt,
    })
}

/// Reads the `key = value` list of `attr` with `read_key`, which answers `Ok(false)` for a key
/// it does not know; such a key is reported against `keys`. Returns whether an unknown key was
/// met (a missing key is then most likely that key misspelt, so it is reported once), or `None`
/// when syn could not read the list at all.
fn read_keys(
    cx: &Ctxt,
    attr: &syn::Attribute,
    written: &str,
    keys: &[&str],
    mut read_key: impl FnMut(&ParseNestedMeta) -> syn::Result<bool>,
) -> Option<bool> {
    let mut misspelt = false;
    let result = attr.parse_nested_meta(|meta| {
        if read_key(&meta)? {
            return Ok(());
        }
        misspelt = true;
        unknown_key(cx, &meta, written, keys)
    });
    match result {
        Ok(()) => Some(misspelt),
        Err(error) => {
            cx.syn_error(error);
            None
        }
    }
}

/// Parses `#[event]` on an enum: each variant wraps one event struct.
pub fn event_enum(cx: &Ctxt, args: TokenStream, item: &mut syn::ItemEnum) -> EventEnum {
    if !args.is_empty() {
        cx.error_at(
            &args,
            "#[event] on an enum takes no arguments: put `name`, `alias` and `version` on the event structs \
             its variants wrap",
        );
    }
    let mut replaced_written = Vec::new();
    item.attrs.retain(|attr| {
        if attr.path().is_ident(UPCAST) {
            cx.error_at(
                attr,
                "#[upcast] belongs on an event struct, not on the enum of an aggregate's events; to turn a retired \
                 event into events of this enum, use #[replaced(name = \"...\", by = fn_name)]",
            );
            return false;
        }
        if attr.path().is_ident(REPLACED) {
            replaced_written.extend(replaced_attr(cx, attr.clone()));
            return false;
        }
        true
    });
    let mut variants = Vec::new();
    for variant in &item.variants {
        match &variant.fields {
            syn::Fields::Unnamed(fields) if fields.unnamed.len() == 1 => {
                variants.extend(fields.unnamed.first().map(|field| EventVariant {
                    ident: variant.ident.clone(),
                    ty: field.ty.clone(),
                }));
            }
            syn::Fields::Unit => cx.error_at(
                variant,
                format!(
                    "variant `{0}` wraps no event: each variant of an #[event] enum wraps one #[event] struct, \
                     e.g. `{0}(Ticket{0})`",
                    variant.ident
                ),
            ),
            _ => cx.error_at(
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
        replaced_written,
        replaced: Vec::new(),
    }
}

/// Parses one `#[replaced(...)]`; `None` if syn could not read it at all.
fn replaced_attr(cx: &Ctxt, attr: syn::Attribute) -> Option<ReplacedAttr> {
    let mut name = None;
    let mut version = None;
    let mut by = None;
    let misspelt = read_keys(cx, &attr, "#[replaced]", REPLACED_KEYS, |meta| {
        if meta.path.is_ident(NAME) {
            set_once(cx, meta, &mut name, lit_str(cx, meta, NAME)?);
        } else if meta.path.is_ident(VERSION) {
            set_once(cx, meta, &mut version, number(cx, meta, VERSION)?);
        } else if meta.path.is_ident(BY) {
            set_once(cx, meta, &mut by, path_value(cx, meta, BY)?);
        } else {
            return Ok(false);
        }
        Ok(true)
    })?;
    if misspelt {
        return None;
    }
    Some(ReplacedAttr {
        attr,
        name,
        version,
        by,
    })
}

/// Parses the `#[aggregate(...)]` attributes of a `#[derive(Aggregate)]` type.
pub fn aggregate(cx: &Ctxt, input: &syn::DeriveInput) -> AggregateAttrs {
    let mut name = None;
    let mut id = None;
    let mut event = None;
    let mut snapshot_revision = None;
    let mut snapshot_version = None;
    let mut misspelt = false;
    for attr in input.attrs.iter().filter(|attr| attr.path().is_ident(AGGREGATE)) {
        let read = read_keys(cx, attr, "#[aggregate]", AGGREGATE_KEYS, |meta| {
            if meta.path.is_ident(NAME) {
                set_once(cx, meta, &mut name, lit_str(cx, meta, NAME)?);
            } else if meta.path.is_ident(ID) {
                set_once(cx, meta, &mut id, type_value(cx, meta, ID)?);
            } else if meta.path.is_ident(EVENT) {
                set_once(cx, meta, &mut event, type_value(cx, meta, EVENT)?);
            } else if meta.path.is_ident(SNAPSHOT_REVISION) {
                set_once(cx, meta, &mut snapshot_revision, number(cx, meta, SNAPSHOT_REVISION)?);
            } else if meta.path.is_ident(SNAPSHOT_VERSION) {
                set_once(cx, meta, &mut snapshot_version, number(cx, meta, SNAPSHOT_VERSION)?);
            } else {
                return Ok(false);
            }
            Ok(true)
        });
        misspelt |= read != Some(false);
    }
    let steps = input
        .attrs
        .iter()
        .filter(|attr| attr.path().is_ident(UPCAST))
        .filter_map(|attr| upcast_attr(cx, attr.clone()))
        .collect();
    AggregateAttrs {
        ident: input.ident.clone(),
        name,
        id,
        event,
        snapshot_revision,
        snapshot_version,
        steps,
        misspelt,
    }
}

/// Fills `slot` with `value` (if the value parsed). A slot filled already means its key was given
/// twice, or, for the step of an `#[upcast]`, that it has both `json` and `typed`.
fn set_once<T>(cx: &Ctxt, meta: &ParseNestedMeta, slot: &mut Option<T>, value: Option<T>) {
    let Some(value) = value else {
        return;
    };
    if slot.is_none() {
        *slot = Some(value);
        return;
    }
    let key = meta.path.to_token_stream().to_string();
    let message = if key == JSON || key == TYPED {
        format!(
            "an #[upcast] step is either `{JSON} = ...` or `{TYPED} = ...`, not both; write one #[upcast] per \
             version"
        )
    } else {
        format!("`{key}` is given twice; keep one")
    };
    cx.error_at(&meta.path, message);
}

fn unknown_key(cx: &Ctxt, meta: &ParseNestedMeta, attribute: &str, expected: &[&str]) -> syn::Result<()> {
    let expected = expected
        .iter()
        .map(|key| format!("`{key}`"))
        .collect::<Vec<_>>()
        .join(", ");
    cx.error_at(
        &meta.path,
        format!(
            "unknown {attribute} key `{}`; expected one of {expected}",
            meta.path.to_token_stream()
        ),
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
        }) => Ok(Some(lit)),
        other => {
            cx.error_at(
                &other,
                format!("`{key}` takes a string literal, e.g. `{key} = \"TicketOpened\"`"),
            );
            Ok(None)
        }
    }
}

fn number(cx: &Ctxt, meta: &ParseNestedMeta, key: &str) -> syn::Result<Option<Number>> {
    let expr = value_expr(meta)?;
    if let syn::Expr::Lit(syn::ExprLit {
        lit: syn::Lit::Int(lit),
        ..
    }) = &expr
    {
        if let Ok(value) = lit.base10_parse::<u32>() {
            return Ok(Some(Number {
                value,
                lit: lit.clone(),
            }));
        }
    }
    cx.error_at(&expr, format!("`{key}` takes a whole number, e.g. `{key} = 2`"));
    Ok(None)
}

fn field_name(cx: &Ctxt, meta: &ParseNestedMeta, key: &str) -> syn::Result<Option<syn::Ident>> {
    match value_expr(meta)? {
        syn::Expr::Path(path) if path.qself.is_none() && path.path.get_ident().is_some() => {
            Ok(path.path.get_ident().cloned())
        }
        other => {
            cx.error_at(
                &other,
                format!("`{key}` takes the name of a field, without quotes, e.g. `{key} = person_id`"),
            );
            Ok(None)
        }
    }
}

fn path_value(cx: &Ctxt, meta: &ParseNestedMeta, key: &str) -> syn::Result<Option<syn::Path>> {
    match value_expr(meta)? {
        syn::Expr::Path(path) if path.qself.is_none() => Ok(Some(path.path)),
        other => {
            cx.error_at(
                &other,
                format!("`{key}` takes the path of a function, without quotes, e.g. `{key} = upgrade_v1`"),
            );
            Ok(None)
        }
    }
}

fn type_value(cx: &Ctxt, meta: &ParseNestedMeta, key: &str) -> syn::Result<Option<syn::Type>> {
    let input = meta.value()?;
    if input.peek(syn::Lit) {
        let lit: syn::Lit = input.parse()?;
        let example = match key {
            ID => "TicketId",
            TYPED => "EscalatedV1",
            _ => "TicketEvent",
        };
        cx.error_at(
            &lit,
            format!("`{key}` takes a type, without quotes, e.g. `{key} = {example}`"),
        );
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
        for (docs, keys) in [
            (event, EVENT_KEYS),
            (event, UPCAST_KEYS),
            (event, REPLACED_KEYS),
            (aggregate, AGGREGATE_KEYS),
        ] {
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
