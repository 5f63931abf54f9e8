//! Why personal data could not be sealed for writing.

use super::keys::KeyStoreError;
use crate::store::{StoreError, StreamId};

/// Why personal data could not be sealed for writing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PiiError {
    /// The event names its subject by a field, and the payload lacks it (or it is not a string
    /// or a number).
    #[error(
        "event `{event_name}` for {stream} has no usable subject field `{field}` (a string or a number): its \
         personal data cannot be sealed"
    )]
    NoSubject {
        /// The stream written.
        stream: StreamId,
        /// The event's stored name.
        event_name: String,
        /// The subject field.
        field: &'static str,
    },
    /// The event's payload is not a JSON object, so its fields cannot be sealed.
    #[error("event `{event_name}` for {stream} is not a JSON object: its personal data cannot be sealed")]
    NotAnObject {
        /// The stream written.
        stream: StreamId,
        /// The event's stored name.
        event_name: String,
    },
    /// The event names a subject (by its subject field) longer than the store's stream ids,
    /// so the subject could never be forgotten: its record stream would be refused.
    #[error(
        "event `{event_name}` for {stream} names a data subject of {bytes} bytes, over the {max} bytes a subject \
         may have on this store (max_stream_id_bytes, plus one): it could never be forgotten"
    )]
    SubjectTooLong {
        /// The stream written.
        stream: StreamId,
        /// The event's stored name.
        event_name: String,
        /// The subject's length in bytes.
        bytes: usize,
        /// The longest subject the store takes.
        max: usize,
    },
    /// The key store refused or failed (a forgotten subject, an outage).
    #[error(transparent)]
    Keys(#[from] KeyStoreError),
    /// A value too long for AES-GCM (64 GiB) could not be sealed.
    #[error("a personal value of {stream} is too long to seal")]
    TooLong {
        /// The stream written.
        stream: StreamId,
    },
}

impl From<PiiError> for StoreError {
    fn from(error: PiiError) -> Self {
        StoreError::Pii(Box::new(error))
    }
}

impl From<KeyStoreError> for StoreError {
    fn from(error: KeyStoreError) -> Self {
        PiiError::Keys(error).into()
    }
}
