//! Accumulates errors so a user sees every mistake of one item in one compile.

use std::cell::RefCell;
use std::fmt::Display;

use proc_macro2::TokenStream;
use quote::ToTokens;

/// Collects spanned errors while an item is parsed and checked.
///
/// It must be consumed by [`Ctxt::check`]: dropping it unchecked would lose the errors and let
/// the macro expand an invalid item, so that is a bug in this crate and panics (unless the thread
/// is already panicking).
#[derive(Default)]
pub struct Ctxt {
    errors: RefCell<Vec<syn::Error>>,
    checked: bool,
}

impl Ctxt {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an error at `at`: anything written in the item (a literal, a path, a type, a
    /// whole attribute), so the error underlines all of it.
    pub fn error_at(&self, at: impl ToTokens, message: impl Display) {
        self.syn_error(syn::Error::new_spanned(at, message));
    }

    /// Records an error that syn produced while parsing.
    pub fn syn_error(&self, error: syn::Error) {
        self.errors.borrow_mut().push(error);
    }

    /// All recorded errors as one `compile_error!` stream, or `Ok` if there were none.
    pub fn check(mut self) -> Result<(), TokenStream> {
        self.checked = true;
        let errors = self.errors.take();
        if errors.is_empty() {
            return Ok(());
        }
        Err(errors.iter().map(syn::Error::to_compile_error).collect())
    }
}

impl Drop for Ctxt {
    fn drop(&mut self) {
        if !self.checked && !std::thread::panicking() {
            panic!("es-derive bug: a Ctxt was dropped without `check()`, which would lose its errors");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Ctxt;

    #[test]
    fn check_returns_every_error() {
        let cx = Ctxt::new();
        cx.error_at(quote::quote!(version), "first");
        cx.error_at(quote::quote!(name), "second");
        let errors = cx.check().err().map(|errors| errors.to_string()).unwrap_or_default();
        assert!(errors.contains("first") && errors.contains("second"), "{errors}");
    }

    #[test]
    fn check_without_errors_is_ok() {
        assert!(Ctxt::new().check().is_ok());
    }

    #[test]
    #[should_panic(expected = "without `check()`")]
    fn dropping_an_unchecked_context_panics() {
        let _cx = Ctxt::new();
    }
}
