//! What changed between two shapes, named by the path of each change.

use std::fmt;

use super::shape::{Field, Shape, Variant, VariantData};

/// One difference between a locked shape and the code's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeChange {
    /// Where: fields joined by `.` as in the stored JSON (`customer.address.city`), `[]` for the
    /// elements of a sequence, `[0]` for a tuple's first, `.*` for a map's values, `.Variant` for
    /// the content of an enum variant; empty for the payload itself.
    pub path: String,
    /// What changed there.
    pub kind: ShapeChangeKind,
}

/// What a [`ShapeChange`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShapeChangeKind {
    /// The shape at the path is another one.
    Changed {
        /// The locked shape.
        from: Shape,
        /// The code's shape.
        to: Shape,
    },
    /// The field at the path is gone.
    FieldRemoved,
    /// The field at the path is now named `to`, and accepts its old name as an alias
    /// (`#[serde(rename = "to", alias = "old")]`, or renamed in Rust with `alias = "old"`):
    /// old payloads decode. Changes of its shape follow under the new name.
    FieldRenamed {
        /// The field's new name.
        to: String,
    },
    /// The field at the path is new.
    FieldAdded {
        /// Whether it may be missing (old payloads lack it).
        optional: bool,
    },
    /// The field at the path could be missing and now must be present.
    BecameRequired,
    /// The field at the path must no longer be present.
    BecameOptional,
    /// Other names of the field at the path changed.
    AliasesChanged {
        /// The locked aliases.
        from: Vec<String>,
        /// The code's aliases.
        to: Vec<String>,
    },
    /// The enum at the path lost a variant.
    VariantRemoved {
        /// The variant's name.
        variant: String,
    },
    /// The enum at the path has a new variant.
    VariantAdded {
        /// The variant's name.
        variant: String,
    },
}

impl ShapeChange {
    /// Whether payloads stored with the old shape may fail to decode with the new one.
    ///
    /// Added optional fields and variants, fields that may now be missing and added aliases are
    /// compatible; a removed field counts as breaking, since a type that denies unknown fields
    /// would refuse old payloads and its values are lost anyway.
    pub fn is_breaking(&self) -> bool {
        match &self.kind {
            ShapeChangeKind::FieldAdded { optional } => !optional,
            ShapeChangeKind::BecameOptional
            | ShapeChangeKind::VariantAdded { .. }
            | ShapeChangeKind::FieldRenamed { .. } => false,
            // `any` reads whatever was stored (a `serde_json::Value`, a `Forgettable<T>`).
            ShapeChangeKind::Changed { to: Shape::Any, .. } => false,
            ShapeChangeKind::AliasesChanged { from, to } => !from.iter().all(|alias| to.contains(alias)),
            _ => true,
        }
    }

    fn subject(&self) -> String {
        if self.path.is_empty() {
            "the payload".to_owned()
        } else {
            format!("field `{}`", self.path)
        }
    }
}

impl fmt::Display for ShapeChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let subject = self.subject();
        match &self.kind {
            ShapeChangeKind::Changed { from, to } => {
                write!(f, "{subject} changed from {} to {}", from.summary(), to.summary())
            }
            ShapeChangeKind::FieldRemoved => write!(f, "{subject} was removed"),
            ShapeChangeKind::FieldRenamed { to } => {
                write!(
                    f,
                    "{subject} was renamed to `{to}`, which accepts the old name as an alias"
                )
            }
            ShapeChangeKind::FieldAdded { optional: true } => write!(f, "{subject} was added (may be missing)"),
            ShapeChangeKind::FieldAdded { optional: false } => write!(f, "{subject} was added (required)"),
            ShapeChangeKind::BecameRequired => write!(f, "{subject} may no longer be missing"),
            ShapeChangeKind::BecameOptional => write!(f, "{subject} may now be missing"),
            ShapeChangeKind::AliasesChanged { from, to } => {
                write!(f, "the aliases of {subject} changed from {from:?} to {to:?}")
            }
            ShapeChangeKind::VariantRemoved { variant } => write!(f, "variant `{variant}` was removed from {subject}"),
            ShapeChangeKind::VariantAdded { variant } => write!(f, "variant `{variant}` was added to {subject}"),
        }
    }
}

impl Shape {
    /// Every difference from `self` (the locked shape) to `newer` (the code's), in declaration
    /// order; empty when they are equal.
    ///
    /// ```
    /// use es_core::schema::Shape;
    ///
    /// let locked: Shape = "{ priority: str, note?: option<str> }".parse()?;
    /// let code: Shape = "{ priority: u8, tags: seq<str> }".parse()?;
    /// let changes: Vec<String> = locked.differences(&code).iter().map(ToString::to_string).collect();
    /// assert_eq!(changes, [
    ///     "field `priority` changed from str to u8",
    ///     "field `note` was removed",
    ///     "field `tags` was added (required)",
    /// ]);
    /// # Ok::<(), es_core::schema::ParseShapeError>(())
    /// ```
    pub fn differences(&self, newer: &Shape) -> Vec<ShapeChange> {
        let mut out = Vec::new();
        diff(self, newer, "", &mut out);
        out
    }
}

fn join(path: &str, part: &str) -> String {
    if path.is_empty() {
        part.to_owned()
    } else {
        format!("{path}.{part}")
    }
}

fn push(out: &mut Vec<ShapeChange>, path: &str, kind: ShapeChangeKind) {
    out.push(ShapeChange {
        path: path.to_owned(),
        kind,
    });
}

fn diff(old: &Shape, new: &Shape, path: &str, out: &mut Vec<ShapeChange>) {
    match (old, new) {
        (Shape::Struct(old), Shape::Struct(new)) => diff_fields(old, new, path, out),
        (Shape::Enum(old), Shape::Enum(new)) => diff_variants(old, new, path, out),
        (Shape::Option(old), Shape::Option(new)) => diff(old, new, path, out),
        (Shape::Seq(old), Shape::Seq(new)) => diff(old, new, &format!("{path}[]"), out),
        (Shape::Map(old_key, old_value), Shape::Map(new_key, new_value)) => {
            diff(old_key, new_key, &format!("{path}{{key}}"), out);
            diff(old_value, new_value, &join(path, "*"), out);
        }
        (Shape::Tuple(old), Shape::Tuple(new)) if old.len() == new.len() => {
            for (index, (old, new)) in old.iter().zip(new).enumerate() {
                diff(old, new, &format!("{path}[{index}]"), out);
            }
        }
        _ if old != new => push(
            out,
            path,
            ShapeChangeKind::Changed {
                from: old.clone(),
                to: new.clone(),
            },
        ),
        _ => {}
    }
}

fn diff_fields(old: &[Field], new: &[Field], path: &str, out: &mut Vec<ShapeChange>) {
    // The new field each old one is stored as: the same name, else one that takes the old name
    // as an alias (a rename that old payloads survive).
    let successor = |old_field: &Field| {
        new.iter().find(|field| field.name == old_field.name).or_else(|| {
            let renamed = |field: &&Field| field.aliases.contains(&old_field.name);
            new.iter()
                .filter(|field| !old.iter().any(|old| old.name == field.name))
                .find(renamed)
        })
    };
    for old_field in old {
        let Some(new_field) = successor(old_field) else {
            push(out, &join(path, &old_field.name), ShapeChangeKind::FieldRemoved);
            continue;
        };
        let mut old_aliases = old_field.aliases.clone();
        if new_field.name != old_field.name {
            push(
                out,
                &join(path, &old_field.name),
                ShapeChangeKind::FieldRenamed {
                    to: new_field.name.clone(),
                },
            );
            // The old name is the alias that makes the rename; it was no alias before.
            old_aliases.push(old_field.name.clone());
            old_aliases.sort();
        }
        let at = join(path, &new_field.name);
        diff(&old_field.shape, &new_field.shape, &at, out);
        match (old_field.optional, new_field.optional) {
            (true, false) => push(out, &at, ShapeChangeKind::BecameRequired),
            (false, true) => push(out, &at, ShapeChangeKind::BecameOptional),
            _ => {}
        }
        if old_aliases != new_field.aliases {
            push(
                out,
                &at,
                ShapeChangeKind::AliasesChanged {
                    from: old_aliases,
                    to: new_field.aliases.clone(),
                },
            );
        }
    }
    for new_field in new {
        let succeeds_one = old
            .iter()
            .any(|old_field| successor(old_field).is_some_and(|successor| successor.name == new_field.name));
        if !succeeds_one {
            push(
                out,
                &join(path, &new_field.name),
                ShapeChangeKind::FieldAdded {
                    optional: new_field.optional,
                },
            );
        }
    }
}

fn diff_variants(old: &[Variant], new: &[Variant], path: &str, out: &mut Vec<ShapeChange>) {
    for old_variant in old {
        let Some(new_variant) = new.iter().find(|variant| variant.name == old_variant.name) else {
            push(
                out,
                path,
                ShapeChangeKind::VariantRemoved {
                    variant: old_variant.name.clone(),
                },
            );
            continue;
        };
        let at = join(path, &old_variant.name);
        match (&old_variant.data, &new_variant.data) {
            (VariantData::Newtype(old), VariantData::Newtype(new)) => diff(old, new, &at, out),
            (VariantData::Struct(old), VariantData::Struct(new)) => diff_fields(old, new, &at, out),
            (VariantData::Tuple(old), VariantData::Tuple(new)) if old.len() == new.len() => {
                diff(&Shape::Tuple(old.clone()), &Shape::Tuple(new.clone()), &at, out)
            }
            (old_data, new_data) if old_data != new_data => push(
                out,
                &at,
                ShapeChangeKind::Changed {
                    from: variant_shape(old_data),
                    to: variant_shape(new_data),
                },
            ),
            _ => {}
        }
    }
    for new_variant in new {
        if !old.iter().any(|variant| variant.name == new_variant.name) {
            push(
                out,
                path,
                ShapeChangeKind::VariantAdded {
                    variant: new_variant.name.clone(),
                },
            );
        }
    }
}

/// A variant's content as a shape, to say what it changed from and to.
fn variant_shape(data: &VariantData) -> Shape {
    match data {
        VariantData::Unit => Shape::Unit,
        VariantData::Newtype(inner) => inner.clone(),
        VariantData::Tuple(items) => Shape::Tuple(items.clone()),
        VariantData::Struct(fields) => Shape::Struct(fields.clone()),
        VariantData::Unknown => Shape::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(old: &str, new: &str) -> Vec<String> {
        let parse = |text: &str| text.parse::<Shape>().unwrap_or_else(|error| panic!("{error}: {text}"));
        parse(old)
            .differences(&parse(new))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn equal_shapes_have_no_differences() {
        assert!(changes("{ a: str, b?: option<u8> }", "{ a: str, b?: option<u8> }").is_empty());
    }

    #[test]
    fn each_kind_of_change_is_named_by_its_dotted_path() {
        assert_eq!(
            changes(
                "{ customer: { address: { city: str } }, note?: option<str>, priority: enum { Low, High, Urgent } }",
                "{ customer: { address: { city: u32 } }, note: option<str>, priority: enum { Low, High, Later }, tags: seq<str> }",
            ),
            [
                "field `customer.address.city` changed from str to u32",
                "field `note` may no longer be missing",
                "variant `Urgent` was removed from field `priority`",
                "variant `Later` was added to field `priority`",
                "field `tags` was added (required)",
            ]
        );
        assert_eq!(
            changes(
                "{ lines: seq<{ qty: u32 }>, by: map<str, (str, u8)>, change: enum { Set(str), Moved { to: str } } }",
                "{ lines: seq<{ qty: i64 }>, by: map<str, (str, u16)>, change: enum { Set(u8), Moved { to: str, why?: str } } }",
            ),
            [
                "field `lines[].qty` changed from u32 to i64",
                "field `by.*[1]` changed from u8 to u16",
                "field `change.Set` changed from str to u8",
                "field `change.Moved.why` was added (may be missing)",
            ]
        );
        assert_eq!(changes("str", "u8"), ["the payload changed from str to u8"]);
    }

    #[test]
    fn a_field_renamed_with_its_old_name_as_alias_is_a_compatible_rename() {
        let old: Shape = "{ item: str, qty: u32 }".parse().unwrap_or(Shape::Unknown);
        let renamed: Shape = "{ sku|item: str, qty: u32 }".parse().unwrap_or(Shape::Unknown);
        let found = old.differences(&renamed);
        assert_eq!(
            found.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["field `item` was renamed to `sku`, which accepts the old name as an alias"]
        );
        assert!(!found[0].is_breaking());
        // Its shape changed too: told under the new name, and breaking.
        let retyped: Shape = "{ sku|item: u8, qty: u32 }".parse().unwrap_or(Shape::Unknown);
        assert_eq!(
            changes_of(&old, &retyped),
            [
                "field `item` was renamed to `sku`, which accepts the old name as an alias",
                "field `sku` changed from str to u8",
            ]
        );
        // Without the alias it is a removal and an addition.
        assert_eq!(
            changes("{ item: str }", "{ sku: str }"),
            ["field `item` was removed", "field `sku` was added (required)"]
        );
    }

    fn changes_of(old: &Shape, new: &Shape) -> Vec<String> {
        old.differences(new).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn compatible_changes_are_told_apart_from_breaking_ones() {
        let old: Shape = "{ a: str, e: enum { X } }".parse().unwrap_or(Shape::Unknown);
        let compatible: Shape = "{ a?: str, b?: u8, e: enum { X, Y } }"
            .parse()
            .unwrap_or(Shape::Unknown);
        let breaking: Shape = "{ a: u8, e: enum { X } }".parse().unwrap_or(Shape::Unknown);
        assert!(old.differences(&compatible).iter().all(|change| !change.is_breaking()));
        assert_eq!(old.differences(&compatible).len(), 3);
        assert!(old.differences(&breaking).iter().all(ShapeChange::is_breaking));
        assert_eq!(old.differences(&breaking).len(), 1);
    }
}
