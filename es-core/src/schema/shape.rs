//! The traced shape of a payload, its canonical text and its fingerprint.

use std::fmt::{self, Write as _};

/// The JSON shape of a payload type: what its stored events look like, not what the Rust type is
/// called.
///
/// Built by [`trace_shape`](crate::schema::trace_shape). Its [`Display`](fmt::Display) is the
/// canonical text the lock file stores (fields in declaration order, `?` on a field that may be
/// missing); it parses back with [`str::parse`].
///
/// ```
/// use es_core::schema::Shape;
///
/// let shape: Shape = "{\n  title: str,\n  note?: option<str>,\n}".parse()?;
/// assert_eq!(shape.to_string(), "{\n  title: str,\n  note?: option<str>,\n}");
/// assert_eq!(shape.fingerprint().len(), 16);
/// # Ok::<(), es_core::schema::ParseShapeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Shape {
    /// `true` or `false`.
    Bool,
    /// A signed integer read as `i8`.
    I8,
    /// A signed integer read as `i16`.
    I16,
    /// A signed integer read as `i32`.
    I32,
    /// A signed integer read as `i64`.
    I64,
    /// A signed integer read as `i128`.
    I128,
    /// An unsigned integer read as `u8`.
    U8,
    /// An unsigned integer read as `u16`.
    U16,
    /// An unsigned integer read as `u32`.
    U32,
    /// An unsigned integer read as `u64`.
    U64,
    /// An unsigned integer read as `u128`.
    U128,
    /// A number read as `f32`.
    F32,
    /// A number read as `f64`.
    F64,
    /// A one-character string.
    Char,
    /// A string (also timestamps, UUIDs and other types stored as text).
    Str,
    /// Bytes.
    Bytes,
    /// `null`: `()` or a unit struct.
    Unit,
    /// `null` or the inner shape.
    Option(Box<Shape>),
    /// An array of one shape.
    Seq(Box<Shape>),
    /// An object of keys and values (`HashMap`, `BTreeMap`).
    Map(Box<Shape>, Box<Shape>),
    /// A fixed-length array: a tuple or a tuple struct.
    Tuple(Vec<Shape>),
    /// An object with named fields, in declaration order.
    Struct(Vec<Field>),
    /// An externally tagged enum: its variants, in declaration order.
    Enum(Vec<Variant>),
    /// A type already being traced further up (a recursive type), by its Rust name.
    Recursive(String),
    /// Anything: the type reads whatever JSON it is given (`serde_json::Value`, untagged and
    /// internally tagged enums, `#[serde(flatten)]`), so its shape cannot be traced.
    Any,
    /// A part the tracer could not reach (see the limits in [`crate::schema`]).
    Unknown,
}

/// A field of a [`Shape::Struct`] or of a struct variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Field {
    /// The serde name (after `rename` / `rename_all`).
    pub name: String,
    /// Other names also accepted (`#[serde(alias = ..)]`), sorted.
    pub aliases: Vec<String>,
    /// The field's shape.
    pub shape: Shape,
    /// Whether a stored payload may lack the field (an `Option` field or `#[serde(default)]`).
    pub optional: bool,
}

/// A variant of a [`Shape::Enum`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Variant {
    /// The serde name of the variant.
    pub name: String,
    /// What the variant carries.
    pub data: VariantData,
}

/// What an enum variant carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VariantData {
    /// Nothing: stored as the bare name.
    Unit,
    /// One value: `Name(T)`.
    Newtype(Shape),
    /// Several values: `Name(T1, T2)`.
    Tuple(Vec<Shape>),
    /// Named fields: `Name { .. }`.
    Struct(Vec<Field>),
    /// The tracer could not reach the variant's content.
    Unknown,
}

impl Shape {
    /// A short fingerprint of the canonical text: 16 hex digits of its SHA-1.
    pub fn fingerprint(&self) -> String {
        let digest = sha1_smol::Sha1::from(self.to_string()).digest().to_string();
        digest[..16].to_owned()
    }

    /// The shape on one line, cut after about 60 characters, for messages.
    pub fn summary(&self) -> String {
        let mut line = String::new();
        write_shape(&mut line, self, None);
        if line.chars().count() > 60 {
            let mut cut: String = line.chars().take(57).collect();
            cut.push_str(" …");
            return cut;
        }
        line
    }

    /// Whether some part of the shape could not be traced.
    pub fn has_unknown(&self) -> bool {
        match self {
            Shape::Unknown => true,
            Shape::Option(inner) | Shape::Seq(inner) => inner.has_unknown(),
            Shape::Map(key, value) => key.has_unknown() || value.has_unknown(),
            Shape::Tuple(items) => items.iter().any(Shape::has_unknown),
            Shape::Struct(fields) => fields.iter().any(|field| field.shape.has_unknown()),
            Shape::Enum(variants) => variants.iter().any(|variant| match &variant.data {
                VariantData::Unknown => true,
                VariantData::Unit => false,
                VariantData::Newtype(inner) => inner.has_unknown(),
                VariantData::Tuple(items) => items.iter().any(Shape::has_unknown),
                VariantData::Struct(fields) => fields.iter().any(|field| field.shape.has_unknown()),
            }),
            _ => false,
        }
    }

    pub(crate) fn primitive_name(&self) -> Option<&'static str> {
        Some(match self {
            Shape::Bool => "bool",
            Shape::I8 => "i8",
            Shape::I16 => "i16",
            Shape::I32 => "i32",
            Shape::I64 => "i64",
            Shape::I128 => "i128",
            Shape::U8 => "u8",
            Shape::U16 => "u16",
            Shape::U32 => "u32",
            Shape::U64 => "u64",
            Shape::U128 => "u128",
            Shape::F32 => "f32",
            Shape::F64 => "f64",
            Shape::Char => "char",
            Shape::Str => "str",
            Shape::Bytes => "bytes",
            Shape::Unit => "unit",
            Shape::Any => "any",
            Shape::Unknown => "unknown",
            _ => return None,
        })
    }

    pub(crate) fn primitive(name: &str) -> Option<Shape> {
        const ALL: [Shape; 19] = [
            Shape::Bool,
            Shape::I8,
            Shape::I16,
            Shape::I32,
            Shape::I64,
            Shape::I128,
            Shape::U8,
            Shape::U16,
            Shape::U32,
            Shape::U64,
            Shape::U128,
            Shape::F32,
            Shape::F64,
            Shape::Char,
            Shape::Str,
            Shape::Bytes,
            Shape::Unit,
            Shape::Any,
            Shape::Unknown,
        ];
        ALL.into_iter().find(|shape| shape.primitive_name() == Some(name))
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::new();
        write_shape(&mut text, self, Some(0));
        f.write_str(&text)
    }
}

/// Whether a name can be written bare; anything else is written as a JSON string, so any serde
/// name (`"@type"`, `"a b"`) survives the round trip through the lock file.
pub(crate) fn is_bare(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(crate) fn write_name(out: &mut String, name: &str) {
    if is_bare(name) {
        out.push_str(name);
    } else {
        // Serializing a string to JSON cannot fail.
        out.push_str(&serde_json::to_string(name).unwrap_or_default());
    }
}

/// `indent` is `Some(level)` for the multi-line canonical text, `None` for one line.
fn write_shape(out: &mut String, shape: &Shape, indent: Option<usize>) {
    if let Some(name) = shape.primitive_name() {
        out.push_str(name);
        return;
    }
    match shape {
        Shape::Option(inner) => wrap(out, "option<", inner, indent, ">"),
        Shape::Seq(inner) => wrap(out, "seq<", inner, indent, ">"),
        Shape::Map(key, value) => {
            out.push_str("map<");
            write_shape(out, key, indent);
            out.push_str(", ");
            write_shape(out, value, indent);
            out.push('>');
        }
        Shape::Tuple(items) => write_tuple(out, items, indent, true),
        Shape::Struct(fields) => write_fields(out, fields, indent),
        Shape::Enum(variants) => write_enum(out, variants, indent),
        Shape::Recursive(name) => {
            out.push_str("recursive(");
            write_name(out, name);
            out.push(')');
        }
        _ => out.push_str("unknown"),
    }
}

fn wrap(out: &mut String, open: &str, inner: &Shape, indent: Option<usize>, close: &str) {
    out.push_str(open);
    write_shape(out, inner, indent);
    out.push_str(close);
}

/// `(a, b)`; a tuple of one is `(a,)` so that it differs from a newtype variant's `(a)`.
fn write_tuple(out: &mut String, items: &[Shape], indent: Option<usize>, mark_single: bool) {
    out.push('(');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push_str(", ");
        }
        write_shape(out, item, indent);
    }
    if items.len() == 1 && mark_single {
        out.push(',');
    }
    out.push(')');
}

fn pad(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str("  ");
    }
}

fn write_fields(out: &mut String, fields: &[Field], indent: Option<usize>) {
    write_braced(out, "{", fields, indent, write_field);
}

/// `open` and a `{ ... }` list of items, one a line under `indent` and on one line without it.
fn write_braced<T>(
    out: &mut String,
    open: &str,
    items: &[T],
    indent: Option<usize>,
    write_item: fn(&mut String, &T, Option<usize>),
) {
    out.push_str(open);
    if items.is_empty() {
        out.push('}');
        return;
    }
    match indent {
        Some(level) => {
            out.push('\n');
            for item in items {
                pad(out, level + 1);
                write_item(out, item, Some(level + 1));
                out.push_str(",\n");
            }
            pad(out, level);
            out.push('}');
        }
        None => {
            out.push(' ');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                write_item(out, item, None);
            }
            out.push_str(" }");
        }
    }
}

fn write_field(out: &mut String, field: &Field, indent: Option<usize>) {
    write_name(out, &field.name);
    for alias in &field.aliases {
        out.push('|');
        write_name(out, alias);
    }
    if field.optional {
        out.push('?');
    }
    out.push_str(": ");
    write_shape(out, &field.shape, indent);
}

fn write_enum(out: &mut String, variants: &[Variant], indent: Option<usize>) {
    // Unit-only enums stay on one line, however deep.
    let all_unit = variants.iter().all(|variant| variant.data == VariantData::Unit);
    write_braced(out, "enum {", variants, indent.filter(|_| !all_unit), write_variant);
}

fn write_variant(out: &mut String, variant: &Variant, indent: Option<usize>) {
    write_name(out, &variant.name);
    match &variant.data {
        VariantData::Unit => {}
        VariantData::Newtype(inner) => wrap(out, "(", inner, indent, ")"),
        VariantData::Tuple(items) => write_tuple(out, items, indent, true),
        VariantData::Struct(fields) => {
            out.push(' ');
            write_fields(out, fields, indent);
        }
        VariantData::Unknown => out.push_str(" unknown"),
    }
}

/// The text of a lock entry's name (aggregate type, event name): bare when possible.
pub(crate) fn name_text(name: &str) -> String {
    let mut out = String::new();
    write_name(&mut out, name);
    out
}

/// `text` with every line but the first indented by `by`, for nesting a report under a heading.
pub(crate) fn indented(text: &str, by: &str) -> String {
    let mut out = String::new();
    for (index, line) in text.lines().enumerate() {
        if index > 0 {
            out.push('\n');
            out.push_str(by);
        }
        let _ = write!(out, "{line}");
    }
    out
}
