//! The typed model of what the user declared, in two forms: *as written* (filled by `attr.rs`,
//! optional keys still optional, nothing checked) and *checked* (built by `valid.rs`, the only
//! input of `expand.rs`).

// ---- As written ----

/// A whole number as written, e.g. the `2` of `version = 2`.
pub struct Number {
    /// Its value.
    pub value: u32,
    /// The literal, to point errors at.
    pub lit: syn::LitInt,
}

/// `#[event(...)]` on a struct and its `#[upcast(...)]` attributes, as written.
pub struct EventAttrs {
    /// The struct's name.
    pub ident: syn::Ident,
    /// `name = "..."`.
    pub name: Option<syn::LitStr>,
    /// Every `alias = "..."`, in order.
    pub aliases: Vec<syn::LitStr>,
    /// `version = N`.
    pub version: Option<Number>,
    /// Whether `version` was written, readable or not: an unreadable one is reported, and
    /// the steps are not checked against a version the user did not mean.
    pub version_written: bool,
    /// Every `#[upcast(...)]` that parsed, in order.
    pub steps: Vec<UpcastAttr>,
    /// `subject = field`: the field naming the data subject of the `#[pii]` fields.
    pub subject: Option<syn::Ident>,
    /// The fields marked `#[pii]` (the marks taken off them), in order.
    pub pii: Vec<PiiField>,
}

/// A field marked `#[pii]`, as written.
pub struct PiiField {
    /// The `#[pii]` attribute, to point errors at.
    pub attr: syn::Attribute,
    /// The field.
    pub field: syn::Field,
}

/// One `#[upcast(...)]`, as written.
pub struct UpcastAttr {
    /// The whole attribute, to point errors about it at.
    pub attr: syn::Attribute,
    /// `from = N`.
    pub from: Option<Number>,
    /// `json = ...` or `typed = ...`.
    pub kind: Option<StepKind>,
    /// Whether it has an unknown key (reported already), most likely a misspelt one: a key it
    /// then lacks is not reported again.
    pub misspelt: bool,
}

/// How an upcast step upgrades a payload from version `from` to `from + 1`.
pub enum StepKind {
    /// `json = path::to::fn`: a `fn(Value) -> Result<Value, UpcastError>`.
    Json(syn::Path),
    /// `typed = OldShape`: the payload at `from` decodes as `OldShape`, which converts into the
    /// next version's type with `From`/`TryFrom`.
    Typed(syn::Type),
}

/// `#[aggregate(...)]` on a `#[derive(Aggregate)]` type, as written.
pub struct AggregateAttrs {
    /// The type's name.
    pub ident: syn::Ident,
    /// `name = "..."`.
    pub name: Option<syn::LitStr>,
    /// `id = Type`.
    pub id: Option<syn::Type>,
    /// `event = Type`.
    pub event: Option<syn::Type>,
    /// `snapshot_revision = N`.
    pub snapshot_revision: Option<Number>,
    /// `snapshot_version = N`.
    pub snapshot_version: Option<Number>,
    /// Every `#[upcast(...)]` that parsed: the steps of the snapshot state.
    pub steps: Vec<UpcastAttr>,
    /// Whether an `#[aggregate]` key was unknown or the attribute did not parse (reported):
    /// a key it lacks may be the one misspelt.
    pub misspelt: bool,
}

// ---- Checked ----

/// `#[event]` on a struct: one event type, checked.
pub struct EventStruct {
    /// The struct's name.
    pub ident: syn::Ident,
    /// The stored name.
    pub name: String,
    /// Older stored names, distinct from each other and from `name`.
    pub aliases: Vec<String>,
    /// The current schema version, at least 1.
    pub version: u32,
    /// How payloads stored at every older version reach `version`.
    pub chain: UpcastChain,
    /// The stored (JSON) names of the `#[pii]` fields.
    pub pii_fields: Vec<String>,
    /// The stored (JSON) name of the subject field, if the subject is not the stream.
    pub pii_subject: Option<String>,
}

/// The upcast steps of an event, each with the version it upgrades from: one step for every
/// version from 1 up to the one before the current version, in order, the JSON steps first and
/// the typed ones after them. A JSON step never follows a typed one (a typed step converts into
/// the next version's Rust type, which a JSON step does not have), so the two are kept apart.
#[derive(Default)]
pub struct UpcastChain {
    /// The JSON steps, from version 1 on.
    pub json: Vec<(u32, syn::Path)>,
    /// The typed steps, from the version after the last JSON step up to the current one.
    pub typed: Vec<(u32, syn::Type)>,
}

/// `#[event]` on an enum: the events of one aggregate. `attr.rs` fills the variants and the
/// `#[replaced]` rules as written; `valid.rs` checks them and fills `replaced`.
pub struct EventEnum {
    /// The enum's name.
    pub ident: syn::Ident,
    /// The variants that each wrap one type; every other variant was reported.
    pub variants: Vec<EventVariant>,
    /// Every `#[replaced(...)]` that parsed, as written.
    pub replaced_written: Vec<ReplacedAttr>,
    /// The checked `#[replaced]` rules.
    pub replaced: Vec<ReplacedRule>,
}

/// One `#[replaced(...)]` on an event enum, as written.
pub struct ReplacedAttr {
    /// The whole attribute, to point errors about it at.
    pub attr: syn::Attribute,
    /// `name = "..."`: the retired event's stored name.
    pub name: Option<syn::LitStr>,
    /// `version = N`: the schema version the rule reads.
    pub version: Option<Number>,
    /// `by = path`: the rule.
    pub by: Option<syn::Path>,
}

/// A checked `#[replaced]` rule: events stored as `name` at `version` become what `by` returns.
pub struct ReplacedRule {
    /// The retired event's stored name, a valid stored name.
    pub name: String,
    /// The literal, to point errors at.
    pub name_lit: syn::LitStr,
    /// The schema version the rule reads, at least 1.
    pub version: u32,
    /// A `fn(Old) -> Result<Vec<Enum>, E>`.
    pub by: syn::Path,
}

/// A variant of an event enum, wrapping one event type.
pub struct EventVariant {
    /// The variant's name.
    pub ident: syn::Ident,
    /// The event type it wraps.
    pub ty: syn::Type,
}

/// `#[derive(Aggregate)]`, checked.
pub struct AggregateModel {
    /// The type's name.
    pub ident: syn::Ident,
    /// The stored aggregate type, not empty.
    pub name: String,
    /// The id type.
    pub id: syn::Type,
    /// The event enum.
    pub event: syn::Type,
    /// The snapshot revision, at least 1.
    pub snapshot_revision: u32,
    /// The schema version of the snapshot state, at least 1.
    pub snapshot_version: u32,
    /// How snapshot states stored at every older schema version reach `snapshot_version`.
    pub chain: UpcastChain,
}
