//! Reading the flags of the benchmark binaries.

use std::str::FromStr;

/// The value after flag `name`, the next of `args`, if it parses and `accept` takes it;
/// otherwise the message that `name` takes `wanted` (`"a number above 0"`, say).
pub fn value_of<T: FromStr>(
    args: &mut std::slice::Iter<'_, String>,
    name: &str,
    wanted: &str,
    accept: impl Fn(&T) -> bool,
) -> Result<T, String> {
    args.next()
        .and_then(|value| value.parse::<T>().ok())
        .filter(|value| accept(value))
        .ok_or_else(|| format!("{name} takes {wanted}"))
}
