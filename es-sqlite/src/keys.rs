//! The key store of data subjects (`es_core::pii::KeyStore`), in the file's `pii_keys` and
//! `pii_subject_streams` tables (migration 5).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use es_core::pii::{KeyStore, KeyStoreError, SubjectKey};
use es_core::StreamId;
use rusqlite::{params, Connection, OptionalExtension};

use crate::connection::{blocking, Database};
use crate::error::SqliteError;
use crate::row::micros;
use crate::{sql, SqliteStore};

/// A failure of the file, as the key store reports it.
fn backend(error: SqliteError) -> KeyStoreError {
    KeyStoreError::Backend(Box::new(error))
}

/// The key of `subject` as stored: `Some(None)` when it was forgotten.
fn read_key(
    database: &Database,
    connection: &Connection,
    subject: &str,
) -> Result<Option<Option<Vec<u8>>>, SqliteError> {
    connection
        .prepare_cached(sql::SUBJECT_KEY)
        .and_then(|mut statement| statement.query_row([subject], |row| row.get(0)).optional())
        .map_err(|error| database.error(error))
}

/// The writer, with no transaction left open by a failed rollback to swallow the write.
fn writer<'d>(
    database: &'d Database,
    operation: &'static str,
) -> Result<std::sync::MutexGuard<'d, Connection>, SqliteError> {
    let writer = database.writer(operation)?;
    if !writer.is_autocommit() {
        writer
            .execute_batch("ROLLBACK")
            .map_err(|error| database.error(error))?;
    }
    Ok(writer)
}

/// Keys live in the store's own file, so one `SqliteStore` is both the event store and the key
/// store of a [`PiiStore`](es_core::pii::PiiStore); to keep keys apart from the events (and
/// their copies), give the `PiiStore` a `SqliteStore` of another file.
///
/// Forgetting overwrites the key with `secure_delete` on, so the freed page holds zeros; in
/// WAL mode the old page stays in the `-wal` file until the next checkpoint, and copies of the
/// file keep whatever they held.
#[async_trait]
impl KeyStore for SqliteStore {
    async fn key_for_writing(&self, subject: &str) -> Result<SubjectKey, KeyStoreError> {
        let (database, owned) = (Arc::clone(&self.database), subject.to_owned());
        let stored = blocking(move || {
            if let Some(stored) = database.with_reader(|connection| read_key(&database, connection, &owned))? {
                return Ok(stored);
            }
            // None yet: create it, or read the one another writer created first, so every
            // writer seals with the same key.
            let writer = writer(&database, "create a subject's key")?;
            let key = SubjectKey::generate();
            writer
                .prepare_cached(sql::CREATE_SUBJECT_KEY)
                .and_then(|mut statement| {
                    statement.execute(params![owned, key.as_bytes().as_slice(), micros(Utc::now())])
                })
                .map_err(|error| database.error(error))?;
            Ok::<_, SqliteError>(read_key(&database, &writer, &owned)?.flatten())
        })
        .await
        .map_err(backend)?;
        match stored {
            Some(key) => SubjectKey::from_stored(key),
            None => Err(KeyStoreError::Forgotten {
                subject: subject.to_owned(),
            }),
        }
    }

    async fn keys(&self, subjects: &[&str]) -> Result<HashMap<String, SubjectKey>, KeyStoreError> {
        let (database, subjects) = (
            Arc::clone(&self.database),
            subjects.iter().map(|subject| (*subject).to_owned()).collect::<Vec<_>>(),
        );
        let stored = blocking(move || {
            database.with_reader(|connection| {
                let mut found = Vec::new();
                for subject in subjects {
                    if let Some(Some(key)) = read_key(&database, connection, &subject)? {
                        found.push((subject, key));
                    }
                }
                Ok::<_, SqliteError>(found)
            })
        })
        .await
        .map_err(backend)?;
        stored
            .into_iter()
            .map(|(subject, key)| Ok((subject, SubjectKey::from_stored(key)?)))
            .collect()
    }

    async fn forget(&self, subject: &str) -> Result<bool, KeyStoreError> {
        let (database, owned) = (Arc::clone(&self.database), subject.to_owned());
        blocking(move || {
            let writer = writer(&database, "forget a subject")?;
            let now = micros(Utc::now());
            // The page that held the key is zeroed as it is freed.
            writer
                .execute_batch("PRAGMA secure_delete = ON")
                .map_err(|error| database.error(error))?;
            let forgotten = writer
                .prepare_cached(sql::FORGET_SUBJECT)
                .and_then(|mut statement| statement.execute(params![owned, now]))
                .and_then(|forgotten| {
                    writer
                        .prepare_cached(sql::FORGET_UNSEEN_SUBJECT)
                        .and_then(|mut statement| statement.execute(params![owned, now]))
                        .map(|_| forgotten)
                });
            let restored = writer.execute_batch("PRAGMA secure_delete = OFF");
            let forgotten = forgotten.map_err(|error| database.error(error))?;
            restored.map_err(|error| database.error(error))?;
            Ok::<_, SqliteError>(forgotten > 0)
        })
        .await
        .map_err(backend)
    }

    async fn note_stream(&self, subject: &str, stream: &StreamId) -> Result<(), KeyStoreError> {
        let (database, subject, stream) = (Arc::clone(&self.database), subject.to_owned(), stream.clone());
        blocking(move || {
            let writer = writer(&database, "note a subject's stream")?;
            writer
                .prepare_cached(sql::NOTE_SUBJECT_STREAM)
                .and_then(|mut statement| {
                    statement.execute(params![stream.aggregate_type, stream.aggregate_id, subject])
                })
                .map_err(|error| database.error(error))?;
            Ok::<_, SqliteError>(())
        })
        .await
        .map_err(backend)
    }

    async fn subjects_of(&self, stream: &StreamId) -> Result<Vec<String>, KeyStoreError> {
        let (database, stream) = (Arc::clone(&self.database), stream.clone());
        blocking(move || {
            database.with_reader(|connection| {
                connection
                    .prepare_cached(sql::SUBJECTS_OF_STREAM)
                    .and_then(|mut statement| {
                        statement
                            .query_map(params![stream.aggregate_type, stream.aggregate_id], |row| row.get(0))?
                            .collect::<Result<Vec<String>, _>>()
                    })
                    .map_err(|error| database.error(error))
            })
        })
        .await
        .map_err(backend)
    }
}
