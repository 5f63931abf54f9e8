//! The key store of data subjects (`es_core::pii::KeyStore`), in the schema's `pii_keys` and
//! `pii_subject_streams` tables (migration 8).

use std::collections::HashMap;

use async_trait::async_trait;
use es_core::pii::{KeyStore, KeyStoreError, SubjectKey};
use es_core::StreamId;
use sqlx::Row;

use crate::PostgresStore;

/// A failure of the database, as the key store reports it.
fn backend(error: sqlx::Error) -> KeyStoreError {
    KeyStoreError::Backend(Box::new(error))
}

/// Keys live in the store's own schema, so one `PostgresStore` is both the event store and the
/// key store of a [`PiiStore`](es_core::pii::PiiStore); to keep keys apart from the events
/// (and their backups), give the `PiiStore` a `PostgresStore` of another schema or database.
///
/// Forgetting sets the key to `NULL` for good; PostgreSQL keeps the old row version (and WAL
/// archives keep the change) until the table is vacuumed and the archives expire, so vacuum
/// `pii_keys` and mind the retention of WAL archives and backups.
#[async_trait]
impl KeyStore for PostgresStore {
    async fn key_for_writing(&self, subject: &str) -> Result<SubjectKey, KeyStoreError> {
        let forgotten = || KeyStoreError::Forgotten {
            subject: subject.to_owned(),
        };
        // Usually the key exists: one round trip. Otherwise create it, and if another writer
        // created it first, read theirs, so every writer seals with the same key.
        for attempt in 0..2 {
            let stored: Option<Option<Vec<u8>>> = sqlx::query_scalar(&self.sql.keys.key)
                .bind(subject)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
            match stored {
                Some(Some(key)) => return SubjectKey::from_stored(key),
                Some(None) => return Err(forgotten()),
                None if attempt == 0 => {
                    let key = SubjectKey::generate();
                    let created: Option<Vec<u8>> = sqlx::query_scalar(&self.sql.keys.create)
                        .bind(subject)
                        .bind(key.as_bytes().as_slice())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(backend)?;
                    if created.is_some() {
                        return Ok(key);
                    }
                }
                None => {}
            }
        }
        Err(KeyStoreError::Backend(
            format!("the key of subject `{subject}` was neither found nor created").into(),
        ))
    }

    async fn keys(&self, subjects: &[&str]) -> Result<HashMap<String, SubjectKey>, KeyStoreError> {
        if subjects.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query(&self.sql.keys.keys)
            .bind(subjects)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.into_iter()
            .map(|row| {
                let subject: String = row.try_get(0).map_err(backend)?;
                let key: Vec<u8> = row.try_get(1).map_err(backend)?;
                Ok((subject, SubjectKey::from_stored(key)?))
            })
            .collect()
    }

    async fn forget(&self, subject: &str) -> Result<bool, KeyStoreError> {
        let forgotten = sqlx::query(&self.sql.keys.forget)
            .bind(subject)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        if forgotten.is_none() {
            sqlx::query(&self.sql.keys.forget_unseen)
                .bind(subject)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
        }
        Ok(forgotten.is_some())
    }

    async fn note_stream(&self, subject: &str, stream: &StreamId) -> Result<(), KeyStoreError> {
        sqlx::query(&self.sql.keys.note_stream)
            .bind(stream.aggregate_type.as_str())
            .bind(stream.aggregate_id.as_str())
            .bind(subject)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn subjects_of(&self, stream: &StreamId) -> Result<Vec<String>, KeyStoreError> {
        sqlx::query_scalar(&self.sql.keys.subjects_of)
            .bind(stream.aggregate_type.as_str())
            .bind(stream.aggregate_id.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(backend)
    }
}
