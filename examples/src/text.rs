//! What the domains ask of the texts their commands take: a required text is trimmed, and
//! refused when nothing is left.

/// A required text was empty, or only white space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} must not be empty")]
pub struct Empty(
    /// What the text is, e.g. `"the title"`.
    pub &'static str,
);

/// `value` without its leading and trailing white space; [`Empty`], naming it `what`, when
/// nothing is left.
pub fn required(value: &str, what: &'static str) -> Result<String, Empty> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(Empty(what));
    }
    Ok(trimmed.to_owned())
}
