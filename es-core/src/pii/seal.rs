//! Sealing and opening personal data inside stored JSON: one field at a time in event payloads,
//! a whole state in snapshots.
//!
//! A sealed field is `{"$pii": {"subject": "...", "nonce": "...", "data": "..."}}`: AES-256-GCM
//! under the subject's key, a fresh 96-bit nonce per value, the event id and the field's name as
//! associated data (so a sealed value cannot be moved to another event or field unnoticed). The
//! subject stays readable: it is an id, and readers need it to find the key. A field whose key
//! is gone opens as `{"$forgotten": true}`, which [`Forgettable`](super::Forgettable) reads as
//! forgotten.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::keys::SubjectKey;

/// The key of a sealed value.
pub(crate) const SEALED: &str = "$pii";
/// The key of a sealed snapshot state.
pub(crate) const SEALED_STATE: &str = "$pii-state";
/// The key of a value whose subject was forgotten.
pub(crate) const FORGOTTEN: &str = "$forgotten";

/// Why a sealed value could not be opened, though its key exists: the stored data was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tampered(pub(crate) String);

/// AES-GCM refused to encrypt: only a plaintext past its length limit (64 GiB) does that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLong;

/// `plaintext` encrypted under `key` with a fresh nonce, bound to `context`: the nonce and the
/// ciphertext, as the JSON object that holds them (`{"nonce": ..., "data": ...}`).
fn encrypt(key: &SubjectKey, context: &[u8], plaintext: &[u8]) -> Result<Map<String, Value>, TooLong> {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.as_bytes()));
    let data = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad: context,
            },
        )
        .map_err(|_| TooLong)?;
    let mut sealed = Map::new();
    sealed.insert("nonce".into(), BASE64.encode(nonce).into());
    sealed.insert("data".into(), BASE64.encode(data).into());
    Ok(sealed)
}

/// The plaintext of what [`encrypt`] made (`sealed`, a `what`), opened with `key` and checked
/// against `context`.
fn decrypt(key: &SubjectKey, context: &[u8], sealed: &Map<String, Value>, what: &str) -> Result<Vec<u8>, Tampered> {
    let bytes = |name: &str| {
        sealed
            .get(name)
            .and_then(Value::as_str)
            .and_then(|text| BASE64.decode(text).ok())
            .ok_or_else(|| Tampered(format!("{what} without a valid `{name}`")))
    };
    let (nonce, data) = (bytes("nonce")?, bytes("data")?);
    if nonce.len() != 12 {
        return Err(Tampered(format!("the nonce of a {what} is not 96 bits")));
    }
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.as_bytes()));
    cipher
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &data,
                aad: context,
            },
        )
        .map_err(|_| Tampered(format!("a {what} does not open with its key")))
}

/// `value` sealed under `key` for `subject`, bound to `context` (event id and field).
pub(crate) fn seal(key: &SubjectKey, subject: &str, context: &[u8], value: &Value) -> Result<Value, TooLong> {
    let mut sealed = encrypt(key, context, value.to_string().as_bytes())?;
    sealed.insert("subject".into(), subject.into());
    Ok(json!({ SEALED: sealed }))
}

/// The subject of a sealed value, if `value` is one.
pub(crate) fn sealed_subject(value: &Value) -> Option<&str> {
    value.get(SEALED)?.get("subject")?.as_str()
}

/// The value `sealed` holds, opened with `key` (the key of its subject) and checked against
/// `context`.
pub(crate) fn open(key: &SubjectKey, context: &[u8], sealed: &Value) -> Result<Value, Tampered> {
    let inner = sealed
        .get(SEALED)
        .and_then(Value::as_object)
        .ok_or_else(|| Tampered("not a sealed value".into()))?;
    let plaintext = decrypt(key, context, inner, "sealed value")?;
    serde_json::from_slice(&plaintext).map_err(|error| Tampered(format!("a sealed value is not JSON: {error}")))
}

/// What a value reads as once its subject was forgotten.
pub(crate) fn forgotten() -> Value {
    json!({ FORGOTTEN: true })
}

/// Whether `value` is what a forgotten value reads as (and what `Forgettable::Forgotten` is
/// written as).
pub(crate) fn is_forgotten(value: &Value) -> bool {
    *value == forgotten()
}

/// The associated data of field `field` of event `event_id`.
pub(crate) fn field_context(event_id: uuid::Uuid, field: &str) -> Vec<u8> {
    let mut context = event_id.as_bytes().to_vec();
    context.extend_from_slice(field.as_bytes());
    context
}

/// One key for a snapshot from the keys of every subject whose data it may hold, in subject
/// order: forgetting any of them makes the snapshot unreadable. The keys are uniformly random,
/// so one SHA-256 over them is a sound derivation.
pub(crate) fn snapshot_key(keys: &[&SubjectKey]) -> SubjectKey {
    let mut digest = Sha256::new();
    digest.update(b"es-rs snapshot key v1");
    for key in keys {
        digest.update(key.as_bytes());
    }
    SubjectKey::from_bytes(digest.finalize().into())
}

/// A snapshot state sealed for `subjects` (with `key`, derived from theirs).
pub(crate) fn seal_state(
    key: &SubjectKey,
    subjects: &[String],
    context: &[u8],
    state: &[u8],
) -> Result<Vec<u8>, TooLong> {
    let mut sealed = encrypt(key, context, state)?;
    sealed.insert("subjects".into(), subjects.into());
    Ok(json!({ SEALED_STATE: sealed }).to_string().into_bytes())
}

/// The subjects a sealed snapshot state was sealed for; `None` if it is not sealed.
pub(crate) fn sealed_state_subjects(state: &[u8]) -> Option<Vec<String>> {
    let value: Value = serde_json::from_slice(state).ok()?;
    let subjects = value.get(SEALED_STATE)?.get("subjects")?.as_array()?;
    subjects
        .iter()
        .map(|subject| subject.as_str().map(str::to_owned))
        .collect()
}

/// The state a sealed snapshot holds.
pub(crate) fn open_state(key: &SubjectKey, context: &[u8], state: &[u8]) -> Result<Vec<u8>, Tampered> {
    let value: Value = serde_json::from_slice(state).map_err(|error| Tampered(error.to_string()))?;
    let inner = value
        .get(SEALED_STATE)
        .and_then(Value::as_object)
        .ok_or_else(|| Tampered("not a sealed state".into()))?;
    decrypt(key, context, inner, "sealed snapshot")
}

/// The fields of an event payload, if it is a JSON object.
pub(crate) fn fields(payload: &mut Value) -> Option<&mut Map<String, Value>> {
    payload.as_object_mut()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_with_its_key_and_context_only() {
        let key = SubjectKey::generate();
        let context = field_context(uuid::Uuid::now_v7(), "name");
        let sealed = seal(&key, "lead/1", &context, &json!("Ada Lovelace")).expect("seals");
        assert!(!sealed.to_string().contains("Ada"), "{sealed}");
        assert_eq!(sealed_subject(&sealed), Some("lead/1"));
        assert_eq!(open(&key, &context, &sealed), Ok(json!("Ada Lovelace")));
        assert!(open(&SubjectKey::generate(), &context, &sealed).is_err(), "another key");
        let elsewhere = field_context(uuid::Uuid::now_v7(), "name");
        assert!(open(&key, &elsewhere, &sealed).is_err(), "moved to another event");
        let again = seal(&key, "lead/1", &context, &json!("Ada Lovelace")).expect("seals");
        assert_ne!(again, sealed, "a fresh nonce per value");
    }

    #[test]
    fn a_sealed_state_needs_every_subject_s_key() {
        let (a, b) = (SubjectKey::generate(), SubjectKey::generate());
        let key = snapshot_key(&[&a, &b]);
        let subjects = vec!["lead/1".to_owned(), "person/2".to_owned()];
        let sealed = seal_state(&key, &subjects, b"lead/1", br#"{"name":"Ada"}"#).expect("seals");
        assert!(!String::from_utf8_lossy(&sealed).contains("Ada"));
        assert_eq!(sealed_state_subjects(&sealed), Some(subjects));
        assert_eq!(
            open_state(&snapshot_key(&[&a, &b]), b"lead/1", &sealed).ok(),
            Some(br#"{"name":"Ada"}"#.to_vec())
        );
        assert!(open_state(&snapshot_key(&[&a]), b"lead/1", &sealed).is_err());
        assert_eq!(sealed_state_subjects(br#"{"name":"Ada"}"#), None, "a plain state");
    }
}
