//! Subject keys and where they are kept.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::OsRng;
use async_trait::async_trait;
use zeroize::Zeroize;

use crate::store::StreamId;

/// The 256-bit key that encrypts one data subject's personal data. Destroying it (forgetting the
/// subject) makes every value encrypted with it unreadable for good.
///
/// Its bytes never appear in `Debug` output, and are wiped from memory when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SubjectKey([u8; 32]);

impl SubjectKey {
    /// A new random key, from the operating system's random source.
    pub fn generate() -> Self {
        let mut bytes = [0; 32];
        OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// A key from its stored bytes (a key store's own business).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A key as a key store read it back: 32 bytes, else a [`KeyStoreError::Backend`].
    pub fn from_stored(bytes: Vec<u8>) -> Result<Self, KeyStoreError> {
        let bytes: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| {
            KeyStoreError::Backend(format!("a stored key has {} bytes, not 32", bytes.len()).into())
        })?;
        Ok(Self(bytes))
    }

    /// The key's bytes, for a key store to keep.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectKey(<redacted>)")
    }
}

impl Drop for SubjectKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Why a key store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyStoreError {
    /// Personal data of a subject that was forgotten cannot be written again: its key is gone
    /// for good, on purpose.
    #[error("data subject `{subject}` was forgotten: its personal data cannot be written again")]
    Forgotten {
        /// The subject.
        subject: String,
    },
    /// The store that keeps the keys failed.
    #[error("the key store failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Where the subjects' keys are kept: the only place personal data can be read back from.
///
/// Keep it apart from backups of the events if you can (a key in an old backup reads data the
/// live system has forgotten). Implementations: [`InMemoryKeyStore`] (tests); the PostgreSQL
/// and SQLite stores keep keys in a table of their own.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// The key that encrypts `subject`'s data, created on first use. A forgotten subject has
    /// no key and gets none: [`KeyStoreError::Forgotten`].
    async fn key_for_writing(&self, subject: &str) -> Result<SubjectKey, KeyStoreError>;

    /// The keys of those of `subjects` that have one; a forgotten (or never seen) subject is
    /// left out.
    async fn keys(&self, subjects: &[&str]) -> Result<HashMap<String, SubjectKey>, KeyStoreError>;

    /// Destroys `subject`'s key for good; whether it had one.
    async fn forget(&self, subject: &str) -> Result<bool, KeyStoreError>;

    /// Records that `stream` holds personal data of `subject`, so that the stream's snapshots
    /// are sealed with that subject's key too. Idempotent.
    async fn note_stream(&self, subject: &str, stream: &StreamId) -> Result<(), KeyStoreError>;

    /// The subjects whose personal data `stream` holds, in a stable order.
    async fn subjects_of(&self, stream: &StreamId) -> Result<Vec<String>, KeyStoreError>;
}

/// Keys in memory, for tests: gone when the process ends (and with them, every value they
/// encrypted). Clones share the keys.
#[derive(Clone, Default)]
pub struct InMemoryKeyStore {
    shared: Arc<Mutex<Keys>>,
}

#[derive(Default)]
struct Keys {
    keys: HashMap<String, SubjectKey>,
    forgotten: BTreeSet<String>,
    streams: BTreeMap<StreamId, BTreeSet<String>>,
}

impl InMemoryKeyStore {
    /// An empty key store.
    pub fn new() -> Self {
        Self::default()
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, Keys> {
        // A panic while the lock was held cannot leave the maps half-changed: each change is
        // one insert or remove.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for InMemoryKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.locked();
        f.debug_struct("InMemoryKeyStore")
            .field("subjects", &keys.keys.len())
            .field("forgotten", &keys.forgotten.len())
            .finish()
    }
}

#[async_trait]
impl KeyStore for InMemoryKeyStore {
    async fn key_for_writing(&self, subject: &str) -> Result<SubjectKey, KeyStoreError> {
        let mut keys = self.locked();
        if keys.forgotten.contains(subject) {
            return Err(KeyStoreError::Forgotten {
                subject: subject.to_owned(),
            });
        }
        Ok(keys
            .keys
            .entry(subject.to_owned())
            .or_insert_with(SubjectKey::generate)
            .clone())
    }

    async fn keys(&self, subjects: &[&str]) -> Result<HashMap<String, SubjectKey>, KeyStoreError> {
        let keys = self.locked();
        Ok(subjects
            .iter()
            .filter_map(|subject| keys.keys.get(*subject).map(|key| ((*subject).to_owned(), key.clone())))
            .collect())
    }

    async fn forget(&self, subject: &str) -> Result<bool, KeyStoreError> {
        let mut keys = self.locked();
        keys.forgotten.insert(subject.to_owned());
        Ok(keys.keys.remove(subject).is_some())
    }

    async fn note_stream(&self, subject: &str, stream: &StreamId) -> Result<(), KeyStoreError> {
        self.locked()
            .streams
            .entry(stream.clone())
            .or_default()
            .insert(subject.to_owned());
        Ok(())
    }

    async fn subjects_of(&self, stream: &StreamId) -> Result<Vec<String>, KeyStoreError> {
        Ok(self
            .locked()
            .streams
            .get(stream)
            .map(|subjects| subjects.iter().cloned().collect())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_never_shows_its_bytes() {
        let key = SubjectKey::from_bytes([0xAB; 32]);
        let shown = format!("{key:?} {:?}", InMemoryKeyStore::new());
        assert!(
            !shown.contains("171") && !shown.to_lowercase().contains("ab, "),
            "{shown}"
        );
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[tokio::test]
    async fn a_forgotten_subject_has_no_key_and_gets_none() {
        let store = InMemoryKeyStore::new();
        let key = store.key_for_writing("lead/1").await.expect("created");
        assert_eq!(
            store.key_for_writing("lead/1").await.ok(),
            Some(key),
            "the same key again"
        );
        assert_eq!(
            store.keys(&["lead/1", "lead/2"]).await.map(|keys| keys.len()).ok(),
            Some(1)
        );
        assert!(store.forget("lead/1").await.expect("forgets"));
        assert!(!store.forget("lead/1").await.expect("again"), "nothing left to forget");
        assert!(store.keys(&["lead/1"]).await.expect("reads").is_empty());
        assert!(matches!(
            store.key_for_writing("lead/1").await,
            Err(KeyStoreError::Forgotten { .. })
        ));
    }
}
