//! The statements of the key store of data subjects (migration 8).

/// The statements of the key store.
#[derive(Debug)]
pub(crate) struct KeyStatements {
    /// The key of subject `$1`: one row, `key` NULL when the subject was forgotten; none when
    /// it has none yet.
    pub key: String,
    /// Gives subject `$1` the key `$2` unless it has a row already (another writer got there
    /// first, or the subject was forgotten): returns the key when it did.
    pub create: String,
    /// The keys of those of subjects `$1` that have one: `subject`, `key`.
    pub keys: String,
    /// Destroys the key of subject `$1`: one row when it had one.
    pub forget: String,
    /// Marks subject `$1` forgotten when it has no row yet, so that it never gets a key.
    pub forget_unseen: String,
    /// Records that stream (`$1`, `$2`) holds data of subject `$3`.
    pub note_stream: String,
    /// The subjects of stream (`$1`, `$2`), in order.
    pub subjects_of: String,
}

impl KeyStatements {
    /// The statements for the quoted schema name `s`.
    pub(super) fn new(s: &str) -> Self {
        Self {
            key: format!("SELECT key FROM {s}.pii_keys WHERE subject = $1"),
            create: format!(
                "INSERT INTO {s}.pii_keys (subject, key) VALUES ($1, $2)
                 ON CONFLICT (subject) DO NOTHING
                 RETURNING key"
            ),
            keys: format!("SELECT subject, key FROM {s}.pii_keys WHERE subject = ANY($1) AND key IS NOT NULL"),
            forget: format!(
                "UPDATE {s}.pii_keys SET key = NULL, forgotten_at = now()
                 WHERE subject = $1 AND key IS NOT NULL
                 RETURNING subject"
            ),
            forget_unseen: format!(
                "INSERT INTO {s}.pii_keys (subject, key, forgotten_at) VALUES ($1, NULL, now())
                 ON CONFLICT (subject) DO NOTHING"
            ),
            note_stream: format!(
                "INSERT INTO {s}.pii_subject_streams (aggregate_type, aggregate_id, subject) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING"
            ),
            subjects_of: format!(
                "SELECT subject FROM {s}.pii_subject_streams
                 WHERE aggregate_type = $1 AND aggregate_id = $2
                 ORDER BY subject"
            ),
        }
    }
}
