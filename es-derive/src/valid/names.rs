//! The rule of stored names: what an event's name or alias, or an aggregate type, may be.

use crate::attr::keys::NAME;
use crate::ctxt::Ctxt;

/// The stored name: `name = "..."`, else the type's own name, if it is a valid stored name.
pub(super) fn stored_name(cx: &Ctxt, name: Option<&syn::LitStr>, ident: &syn::Ident) -> Option<String> {
    match name {
        Some(lit) => valid_stored_name(cx, lit, NAME),
        None => {
            let name = ident.to_string();
            match invalid_stored_name(&name) {
                None => Some(name),
                Some(problem) => {
                    cx.error_at(
                        ident,
                        format!(
                            "`{name}` cannot be stored as a name: {problem}; give it one with `#[event(name = \"...\")]` \
                             or `#[aggregate(name = \"...\")]`"
                        ),
                    );
                    None
                }
            }
        }
    }
}

/// The value of a `name` or `alias` key, if it is a valid stored name.
pub(super) fn valid_stored_name(cx: &Ctxt, lit: &syn::LitStr, key: &str) -> Option<String> {
    let value = lit.value();
    match invalid_stored_name(&value) {
        None => Some(value),
        Some(problem) => {
            cx.error_at(lit, format!("`{key} = {:?}`: {problem}", value));
            None
        }
    }
}

/// The longest stored name: names are written with every event and shown by every tool.
const MAX_NAME_LEN: usize = 255;

/// What is wrong with a stored name (an event's name or alias, an aggregate type), if anything.
/// Stored names are 1 to 255 ASCII letters, digits, `_`, `-`, `.` and `:`, so they read the same
/// in SQL, URLs, logs and terminals, and never differ by an invisible character.
fn invalid_stored_name(name: &str) -> Option<String> {
    const RULE: &str = "stored names use only ASCII letters, digits, `_`, `-`, `.` and `:` (e.g. `TicketOpened`, \
                        `ticket.opened`)";
    if name.is_empty() {
        return Some(format!("a stored name cannot be empty; {RULE}"));
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!(
            "a stored name has at most {MAX_NAME_LEN} characters, this one {}",
            name.len()
        ));
    }
    let (position, bad) = name
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))?;
    let what = match bad {
        ' ' => "a space".to_owned(),
        c if c.is_whitespace() => format!("whitespace ({c:?})"),
        c if c.is_control() => format!("a control character ({c:?})"),
        c => format!("`{c}`"),
    };
    Some(format!("it has {what} at position {}; {RULE}", position + 1))
}
