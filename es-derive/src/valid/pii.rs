//! The rules of personal data: `#[pii]` fields and `#[event(subject = field)]`.

use crate::ast::{EventAttrs, PiiField};
use crate::ctxt::Ctxt;

use super::written;

/// The stored names of the `#[pii]` fields and of the subject field. A `#[pii]` field is a
/// `Forgettable<T>` (it must be able to read as forgotten), has a name (a field of a struct
/// with named fields), and is not the subject; `subject = field` names another field, and is
/// only written when there are `#[pii]` fields.
pub(super) fn personal_data(
    cx: &Ctxt,
    event: &EventAttrs,
    item: &syn::ItemStruct,
) -> Option<(Vec<String>, Option<String>)> {
    let rename_all = container_rename_all(cx, &item.attrs);
    let mut valid = true;
    let mut fields = Vec::new();
    for PiiField { attr, field } in &event.pii {
        let Some(ident) = &field.ident else {
            cx.error_at(
                attr,
                "#[pii] marks a named field: personal data is sealed field by field, by name",
            );
            valid = false;
            continue;
        };
        if !is_forgettable(&field.ty) {
            cx.error_at(
                &field.ty,
                format!(
                    "a #[pii] field is a `Forgettable<T>`, so that it reads as forgotten once its subject is: \
                     `pub {ident}: es_core::pii::Forgettable<{}>`",
                    written(&field.ty)
                ),
            );
            valid = false;
        }
        if event.subject.as_ref() == Some(ident) {
            cx.error_at(
                attr,
                format!("`{ident}` names the data subject: it is an id that finds the key, and cannot be sealed"),
            );
            valid = false;
        }
        fields.push(stored_field_name(cx, field, ident, rename_all.as_deref())?);
    }
    let subject = match &event.subject {
        None => None,
        Some(_) if event.pii.is_empty() => {
            if let Some(subject) = &event.subject {
                cx.error_at(
                    subject,
                    "`subject` names whose personal data the #[pii] fields hold, but no field is #[pii]",
                );
            }
            return None;
        }
        Some(subject) => {
            let Some(field) = item.fields.iter().find(|field| field.ident.as_ref() == Some(subject)) else {
                cx.error_at(
                    subject,
                    format!("`{}` has no field `{subject}` to name the data subject", item.ident),
                );
                return None;
            };
            Some(stored_field_name(cx, field, subject, rename_all.as_deref())?)
        }
    };
    valid.then_some((fields, subject))
}

/// Whether `ty` is written as `Forgettable<...>` (by any path).
fn is_forgettable(ty: &syn::Type) -> bool {
    let syn::Type::Path(path) = ty else {
        return false;
    };
    path.path
        .segments
        .last()
        .is_some_and(|last| last.ident == "Forgettable" && !last.arguments.is_empty())
}

/// The value of `#[serde(rename_all = "...")]` on the struct, if any; a rename_all that differs
/// for serializing and deserializing is refused when there is personal data.
fn container_rename_all(cx: &Ctxt, attrs: &[syn::Attribute]) -> Option<String> {
    serde_string(cx, attrs, "rename_all")
}

/// The JSON name of `field`: its `#[serde(rename = "...")]`, else its name under the struct's
/// `rename_all`, else its name.
fn stored_field_name(cx: &Ctxt, field: &syn::Field, ident: &syn::Ident, rename_all: Option<&str>) -> Option<String> {
    if let Some(rename) = serde_string(cx, &field.attrs, "rename") {
        return Some(rename);
    }
    let name = ident.to_string();
    let name = name.strip_prefix("r#").unwrap_or(&name).to_owned();
    let words = || name.split('_').filter(|word| !word.is_empty());
    let capitalized = |word: &str| {
        let mut chars = word.chars();
        chars
            .next()
            .map(|first| first.to_uppercase().chain(chars).collect::<String>())
            .unwrap_or_default()
    };
    Some(match rename_all {
        None | Some("snake_case") => name.clone(),
        Some("lowercase") => name.to_lowercase(),
        Some("UPPERCASE") | Some("SCREAMING_SNAKE_CASE") => name.to_uppercase(),
        Some("PascalCase") => words().map(capitalized).collect(),
        Some("camelCase") => {
            let pascal: String = words().map(capitalized).collect();
            let mut chars = pascal.chars();
            chars
                .next()
                .map(|first| first.to_lowercase().chain(chars).collect())
                .unwrap_or_default()
        }
        Some("kebab-case") => name.replace('_', "-"),
        Some("SCREAMING-KEBAB-CASE") => name.replace('_', "-").to_uppercase(),
        Some(other) => {
            cx.error_at(
                ident,
                format!("#[pii] cannot tell the stored name of `{ident}` under `rename_all = \"{other}\"`"),
            );
            return None;
        }
    })
}

/// The string value of `#[serde(key = "...")]` among `attrs`.
fn serde_string(cx: &Ctxt, attrs: &[syn::Attribute], key: &str) -> Option<String> {
    let mut found = None;
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("serde")) {
        // Only `key = "..."` matters here; serde itself reports a malformed attribute.
        let _ = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident(key) {
                if meta.input.peek(syn::Token![=]) {
                    if let Ok(syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(value),
                        ..
                    })) = meta.value()?.parse::<syn::Expr>()
                    {
                        found = Some(value.value());
                    }
                } else {
                    cx.error_at(
                        &meta.path,
                        format!("with #[pii] fields, `{key}` must be the same both ways: `{key} = \"...\"`"),
                    );
                    meta.input.parse::<proc_macro2::Group>()?;
                }
            } else if meta.input.peek(syn::Token![=]) {
                meta.value()?.parse::<syn::Expr>()?;
            } else if meta.input.peek(syn::token::Paren) {
                meta.input.parse::<proc_macro2::Group>()?;
            }
            Ok(())
        });
    }
    found
}
