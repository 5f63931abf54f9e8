//! The typed model of what the user declared: event structs, event enums, aggregates.

use proc_macro2::Span;

/// `#[event]` on a struct: one event type.
pub struct EventStruct {
    pub ident: syn::Ident,
    /// The stored name, with the span to report problems at.
    pub name: (String, Span),
    pub aliases: Vec<syn::LitStr>,
    pub version: u32,
    /// Where `version = N` was written, or the struct's name when it was not.
    pub version_span: Span,
    pub steps: Vec<UpcastStep>,
}

/// One `#[upcast(from = N, ...)]`: how to upgrade a payload from version `from` to `from + 1`.
pub struct UpcastStep {
    pub from: u32,
    pub from_span: Span,
    pub kind: StepKind,
}

pub enum StepKind {
    /// `json = path::to::fn`: a `fn(Value) -> Result<Value, UpcastError>`.
    Json(syn::Path),
    /// `typed = OldShape`: the payload at `from` decodes as `OldShape`, which converts into the
    /// next version's type with `From`/`TryFrom`.
    Typed(syn::Type),
}

/// `#[event]` on an enum: the events of one aggregate.
pub struct EventEnum {
    pub ident: syn::Ident,
    pub variants: Vec<EventVariant>,
}

pub struct EventVariant {
    pub ident: syn::Ident,
    pub ty: syn::Type,
}

/// `#[derive(Aggregate)]`.
pub struct AggregateModel {
    pub ident: syn::Ident,
    pub name: String,
    pub id: syn::Type,
    pub event: syn::Type,
    pub snapshot_revision: u32,
}
