//! The statements of the key store of data subjects (migration 5).

/// The key of subject `?1`: NULL when it was forgotten; no row when it has none yet.
pub(crate) const SUBJECT_KEY: &str = "SELECT key FROM pii_keys WHERE subject = ?1";
/// Gives subject `?1` the key `?2` (created at `?3`) unless it has a row already.
pub(crate) const CREATE_SUBJECT_KEY: &str = "INSERT INTO pii_keys (subject, key, created_at) VALUES (?1, ?2, ?3)
    ON CONFLICT (subject) DO NOTHING";
/// Destroys the key of subject `?1` (at `?2`), if it has one.
pub(crate) const FORGET_SUBJECT: &str = "UPDATE pii_keys SET key = NULL, forgotten_at = ?2
    WHERE subject = ?1 AND key IS NOT NULL";
/// Marks subject `?1` forgotten (at `?2`) when it has no row yet, so that it never gets a key.
pub(crate) const FORGET_UNSEEN_SUBJECT: &str = "INSERT INTO pii_keys (subject, key, created_at, forgotten_at)
    VALUES (?1, NULL, ?2, ?2) ON CONFLICT (subject) DO NOTHING";
/// Records that stream (`?1`, `?2`) holds data of subject `?3`.
pub(crate) const NOTE_SUBJECT_STREAM: &str = "INSERT INTO pii_subject_streams (aggregate_type, aggregate_id, subject)
    VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING";
/// The subjects of stream (`?1`, `?2`), in order.
pub(crate) const SUBJECTS_OF_STREAM: &str = "SELECT subject FROM pii_subject_streams
    WHERE aggregate_type = ?1 AND aggregate_id = ?2 ORDER BY subject";
