//! Schema lock: the stored shape of every event, checked against the code.
//!
//! TODO docs
mod parse;
mod shape;
mod trace;
#[cfg(test)]
mod trace_tests;

pub use parse::ParseShapeError;
pub use shape::{Field, Shape, Variant, VariantData};
pub use trace::{trace_shape, ShapeError};
