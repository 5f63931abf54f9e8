//! Forgettable personal data: crypto-shredding.
//!
//! Events are never changed or deleted, yet a person may ask to be forgotten. The answer is to
//! store their personal data encrypted with a key of their own, and to destroy the key on
//! request: every copy of the data, in every event, snapshot and backup of the events, becomes
//! unreadable at once, while the rest of each event stays plain JSON that queries and
//! projections keep using.
//!
//! - Mark the personal fields of an event `#[pii]`, with the type [`Forgettable<T>`], so they
//!   can read as forgotten. Whose data they are (the *data subject*) is the stream by default
//!   (`"lead/<id>"`), or a field of the event: `#[event(subject = person_id)]`.
//! - Wrap the store in a [`PiiStore`] with a [`KeyStore`] (the PostgreSQL and SQLite stores
//!   are key stores too, in tables of their own; [`InMemoryKeyStore`] is for tests): appends
//!   seal the marked fields
//!   (AES-256-GCM, a fresh nonce per value, keys created on first use), reads open them, and
//!   snapshots of streams holding personal data are sealed whole, with a key that needs every
//!   subject's key.
//! - [`PiiStore::forget`] destroys a subject's key. From then on, the subject's fields read as
//!   [`Forgettable::Forgotten`] (never an error, never the plaintext), snapshots that held their
//!   data are replayed over, and a [`SubjectForgotten`] event in the global log tells
//!   projections to purge what they keep of the subject. Writing personal data of a forgotten
//!   subject again is refused with a typed error; carrying a field that reads as forgotten
//!   forward is not (it holds no data). A subject named by a field must fit the store's stream
//!   ids ([`PiiError::SubjectTooLong`]), so that it can always be forgotten.
//!
//! **Sizes.** The store's [`Limits`](crate::Limits) apply to what is stored: a sealed field is
//! its JSON text encrypted and base64-encoded (about 4/3 of it) in an object with its nonce and
//! subject (about 80 bytes more), so a payload with large personal fields reaches
//! `max_payload_bytes` sooner than its plaintext suggests.
//!
//! What it does not do: the subject's id (the stream, or the subject field) stays readable, as
//! it must to find the key; a value is only as forgotten as every copy of its key (vacuum the
//! key table, mind WAL archives and backups of the key store); a field of a shape that is not
//! JSON-serializable as a whole cannot be marked. The schema lock traces a `Forgettable<T>`
//! field as `any`.
//!
//! ```
//! use es_core::pii::{Forgettable, InMemoryKeyStore, PiiStore};
//! use es_core::{event, Aggregate, Apply, EventRegistry, InMemoryStore, Metadata, Repository};
//! use serde::{Deserialize, Serialize};
//!
//! #[event]
//! #[derive(Debug, Clone)]
//! pub struct LeadEntered {
//!     #[pii]
//!     pub name: Forgettable<String>,
//!     pub source: String,
//! }
//! #[event] #[derive(Debug)] pub enum LeadEvent { Entered(LeadEntered) }
//!
//! #[derive(Default, Serialize, Deserialize, Aggregate)]
//! #[aggregate(name = "lead", event = LeadEvent)]
//! pub struct Lead { name: Forgettable<String> }
//! impl Apply<LeadEntered> for Lead {
//!     fn apply(&mut self, event: &LeadEntered) { self.name = event.name.clone(); }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! let mut registry = EventRegistry::new();
//! registry.register::<Lead>()?;
//! let store = PiiStore::new(InMemoryStore::new(), InMemoryKeyStore::new(), registry);
//! let leads = Repository::<Lead, _>::new(store.clone());
//! let entered = LeadEntered { name: "Ada".to_owned().into(), source: "fair".into() };
//! leads.execute("1", Metadata::new(), move |_: &Lead| vec![entered.clone().into()]).await?;
//! assert_eq!(leads.load("1").await?.aggregate.name.known().map(String::as_str), Some("Ada"));
//!
//! store.forget("lead/1").await?;
//! assert!(leads.load("1").await?.aggregate.name.is_forgotten());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod keys;
mod lifecycle;
mod seal;
mod store;

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use error::PiiError;
pub use keys::{InMemoryKeyStore, KeyStore, KeyStoreError, SubjectKey};
pub use store::{ForgetSubjects, PiiStore};

use crate::event;

/// Whether a snapshot's `state` is still sealed personal data: how [`PiiStore`] lists (and
/// loads ignore) the snapshot of a stream one of whose subjects was forgotten, since nothing
/// can open it any more. Loads replay such a stream's events instead, whose forgotten fields
/// read as [`Forgettable::Forgotten`]. Tools that check snapshots (`es doctor`) count it as
/// forgotten rather than broken.
pub fn is_sealed_state(state: &[u8]) -> bool {
    seal::sealed_state_subjects(state).is_some()
}

/// The aggregate type of the streams of [`SubjectForgotten`] events, one per forgotten subject.
pub const FORGOTTEN_SUBJECTS: &str = "es.pii";

/// A data subject was forgotten: their key is destroyed, and their personal data reads as
/// [`Forgettable::Forgotten`] from now on. Appended by [`PiiStore::forget`] to the stream
/// ([`FORGOTTEN_SUBJECTS`], subject), so that projections reading that aggregate type purge what
/// they keep of the subject.
#[event(name = "es.subject-forgotten")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectForgotten {
    /// The subject: `"<aggregate type>/<aggregate id>"` for a stream, else the subject field's
    /// value.
    pub subject: String,
}

/// The events of a stream of [`FORGOTTEN_SUBJECTS`].
#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForgottenSubjectEvent {
    /// See [`SubjectForgotten`].
    Forgotten(SubjectForgotten),
}

/// A forgotten data subject, as its stream ([`FORGOTTEN_SUBJECTS`], subject) tells: what tools
/// that read every stream register to know those events (es-cli's `Cli::forgetting` does).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize, crate::Aggregate)]
#[aggregate(name = "es.pii", event = ForgottenSubjectEvent)]
pub struct ForgottenSubject {
    /// Whether the subject was forgotten (it always is, once its stream has an event).
    pub forgotten: bool,
}

impl crate::Apply<SubjectForgotten> for ForgottenSubject {
    fn apply(&mut self, _: &SubjectForgotten) {
        self.forgotten = true;
    }
}

/// A piece of personal data that may have been forgotten: the type of every `#[pii]` field.
///
/// Stored events and snapshots hold it sealed; it reads as `Known` while its subject's key
/// exists and as `Forgotten` once the subject was forgotten, so domain code handles a forgotten
/// person like any other state, and loading never fails because of it.
///
/// A `Forgotten` value may be written, say by a command that carries a field forward after
/// its subject was forgotten: it is no personal data, so it is stored as it is, with no key.
///
/// The [`Default`] is `Forgotten`: no value is known (an aggregate's state before its first
/// event reads as forgotten too; `Option<Forgettable<T>>` tells "never given" apart).
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Forgettable<T> {
    /// The value.
    Known(T),
    /// The value's subject was forgotten.
    #[default]
    Forgotten,
}

impl<T> Forgettable<T> {
    /// The value, unless it was forgotten.
    pub fn known(&self) -> Option<&T> {
        match self {
            Self::Known(value) => Some(value),
            Self::Forgotten => None,
        }
    }

    /// The value, unless it was forgotten.
    pub fn into_known(self) -> Option<T> {
        match self {
            Self::Known(value) => Some(value),
            Self::Forgotten => None,
        }
    }

    /// Whether the value's subject was forgotten.
    pub fn is_forgotten(&self) -> bool {
        matches!(self, Self::Forgotten)
    }
}

impl<T> From<T> for Forgettable<T> {
    fn from(value: T) -> Self {
        Self::Known(value)
    }
}

impl From<&str> for Forgettable<String> {
    fn from(value: &str) -> Self {
        Self::Known(value.to_owned())
    }
}

impl<T: fmt::Debug> fmt::Debug for Forgettable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Known(value) => f.debug_tuple("Known").field(value).finish(),
            Self::Forgotten => f.write_str("Forgotten"),
        }
    }
}

/// The value, or `(forgotten)`.
impl<T: fmt::Display> fmt::Display for Forgettable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Known(value) => value.fmt(f),
            Self::Forgotten => f.pad("(forgotten)"),
        }
    }
}

/// `Known` is the value itself; `Forgotten` is `{"$forgotten": true}`.
impl<T: Serialize> Serialize for Forgettable<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Known(value) => value.serialize(serializer),
            Self::Forgotten => ForgottenMarker { forgotten: true }.serialize(serializer),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Forgettable<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored<T> {
            Forgotten(ForgottenMarker),
            Known(T),
        }
        match Stored::deserialize(deserializer)? {
            Stored::Forgotten(ForgottenMarker { forgotten: true }) => Ok(Self::Forgotten),
            Stored::Forgotten(_) => Err(serde::de::Error::custom(
                "`$forgotten` is false: a forgotten value says `true`",
            )),
            Stored::Known(value) => Ok(Self::Known(value)),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForgottenMarker {
    #[serde(rename = "$forgotten")]
    forgotten: bool,
}

#[cfg(test)]
mod tests {
    use super::Forgettable;

    #[test]
    fn forgettable_reads_the_value_or_the_forgotten_marker() {
        let known: Forgettable<String> = serde_json::from_str(r#""Ada""#).expect("a value");
        assert_eq!(known, Forgettable::Known("Ada".into()));
        let forgotten: Forgettable<String> = serde_json::from_str(r#"{"$forgotten": true}"#).expect("the marker");
        assert!(forgotten.is_forgotten());
        assert_eq!(
            serde_json::to_string(&forgotten).ok().as_deref(),
            Some(r#"{"$forgotten":true}"#)
        );
        assert_eq!(serde_json::to_string(&known).ok().as_deref(), Some(r#""Ada""#));
        let map: Forgettable<std::collections::BTreeMap<String, u8>> =
            serde_json::from_str(r#"{"a": 1}"#).expect("a map value");
        assert_eq!(map.known().map(|map| map.len()), Some(1));
    }
}
