//! NUL characters, which PostgreSQL cannot store in text or `jsonb`: every store refuses them
//! ([`Limits::check_append`](super::Limits::check_append)), so that what a test stores in memory
//! is stored in production too.

/// Whether the JSON text `json` holds the escape of a NUL character, `\u0000` (a raw NUL byte
/// is not JSON at all, which the store's next check finds). A backslash escapes the character
/// after it, so `\\u0000` (a backslash, then the text `u0000`) holds none.
pub(super) fn json_holds_nul(json: &[u8]) -> bool {
    let mut from = 0;
    while let Some(offset) = json
        .get(from..)
        .and_then(|rest| rest.iter().position(|&byte| byte == b'\\'))
    {
        let at = from + offset;
        if json.get(at + 1..at + 6) == Some(b"u0000".as_slice()) {
            return true;
        }
        from = at + 2;
    }
    false
}

/// Whether a string of `value`, or a key of its objects, holds a NUL character.
pub(super) fn value_holds_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(value_holds_nul),
        serde_json::Value::Object(fields) => fields
            .iter()
            .any(|(key, value)| key.contains('\0') || value_holds_nul(value)),
        _ => false,
    }
}
