//! The rules of `#[replaced]` on an event enum: retired events turned into current ones.

use crate::ast::{ReplacedAttr, ReplacedRule};
use crate::attr::keys::NAME;
use crate::ctxt::Ctxt;

use super::{at_least_one, valid_stored_name};

/// Checks the `#[replaced]` rules: each names a valid stored name and a function, reads a
/// version from 1, and no two read the same name at the same version. `None` after reporting.
pub(super) fn replaced_rules(cx: &Ctxt, written: Vec<ReplacedAttr>) -> Option<Vec<ReplacedRule>> {
    let mut valid = true;
    let mut rules: Vec<ReplacedRule> = Vec::new();
    for ReplacedAttr {
        attr,
        name,
        version,
        by,
    } in written
    {
        let (Some(name_lit), Some(by)) = (name, by) else {
            cx.error_at(
                &attr,
                "#[replaced] needs the retired event's stored name and the function that turns it into events of \
                 this enum: `#[replaced(name = \"TicketOpenedWithAgent\", by = split_opened)]`, with \
                 `fn split_opened(old: OldShape) -> Result<Vec<TicketEvent>, E>`",
            );
            valid = false;
            continue;
        };
        let version = at_least_one(
            cx,
            version.as_ref(),
            "schema versions start at 1: write `version = 1` (or leave it out)",
        );
        let name = valid_stored_name(cx, &name_lit, NAME);
        let (Some(name), Some(version)) = (name, version) else {
            valid = false;
            continue;
        };
        if rules.iter().any(|rule| rule.name == name && rule.version == version) {
            cx.error_at(
                &name_lit,
                format!("two #[replaced] rules read `{name}` at version {version}; keep one"),
            );
            valid = false;
            continue;
        }
        rules.push(ReplacedRule {
            name,
            name_lit,
            version,
            by,
        });
    }
    valid.then_some(rules)
}
