//! The statements of stream lifecycle (migration 9: records of closed streams, the archive) and
//! of tenants (migration 10).

/// The columns of a `stream_states` row, read by name by `lifecycle::closed_stream`.
const CLOSED_COLUMNS: &str = "aggregate_type, aggregate_id, status, version, events, actor, reason, changed_at";

/// How long a change of a stream's lifecycle waits for the events table's lock before it gives
/// up as unavailable (try again later).
pub(crate) const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The statements of stream lifecycle.
#[derive(Debug)]
pub(crate) struct LifecycleStatements {
    /// First in every change: how long it may wait for the lock, [`LOCK_TIMEOUT`]. New appends
    /// queue behind a change waiting for the lock, so a change must not wait long for a
    /// transaction that keeps appends of its own open (`append_in_transaction`).
    pub lock_timeout: String,
    /// Taken first by every change: waits for appends in flight to commit and keeps new ones
    /// out until the change commits, so none lands unseen between the change's read of the
    /// stream and its commit. Changes are rare administrative acts; appends pause for them.
    pub lock: String,
    /// The record of stream (`$1`, `$2`), if it is closed.
    pub closure: String,
    /// Records stream (`$1`, `$2`) as closed: `$3` status .. `$8` changed_at; replaces an
    /// earlier record.
    pub close: String,
    /// How many events of stream (`$1`, `$2`) are hot (`hot`) and archived (`archived`), and
    /// its last hot version (`version`).
    pub count: String,
    /// Moves the events of stream (`$1`, `$2`) into the archive, positions and all.
    pub archive: String,
    /// Removes the archived events of stream (`$1`, `$2`).
    pub delete_archived: String,
    /// Removes the hot events of stream (`$1`, `$2`).
    pub delete_hot: String,
    /// Removes the snapshot of stream (`$1`, `$2`).
    pub delete_snapshot: String,
    /// The records of status `$1`, in stream order (bytewise), after stream (`$2`, `$3`) when
    /// `$2` is not NULL, at most `$4`.
    pub closed_streams: String,
    /// The archived events of one stream in a slice (the parameters of `read_stream`).
    pub read_archived: String,
    /// Records tenant `$1` (`es_core::tenancy`, migration 10), if it is new.
    pub register_tenant: String,
    /// Every tenant, in order.
    pub tenants: String,
}

impl LifecycleStatements {
    /// The statements for the quoted schema name `s`; `event_columns` and `stream_slice` as the
    /// stream reads use them.
    pub(super) fn new(s: &str, event_columns: &str, stream_slice: &str) -> Self {
        Self {
            lock_timeout: format!("SET LOCAL lock_timeout = '{}ms'", LOCK_TIMEOUT.as_millis()),
            lock: format!("LOCK TABLE {s}.events IN SHARE ROW EXCLUSIVE MODE"),
            closure: format!(
                "SELECT {CLOSED_COLUMNS} FROM {s}.stream_states WHERE aggregate_type = $1 AND aggregate_id = $2"
            ),
            close: format!(
                "INSERT INTO {s}.stream_states AS stored ({CLOSED_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
                 SET status = excluded.status, version = excluded.version, events = excluded.events,
                     actor = excluded.actor, reason = excluded.reason, changed_at = excluded.changed_at"
            ),
            count: format!(
                "SELECT
                     (SELECT count(*) FROM {s}.events WHERE aggregate_type = $1 AND aggregate_id = $2) AS hot,
                     (SELECT count(*) FROM {s}.archived_events WHERE aggregate_type = $1 AND aggregate_id = $2)
                         AS archived,
                     (SELECT coalesce(max(version), 0) FROM {s}.events
                      WHERE aggregate_type = $1 AND aggregate_id = $2) AS version"
            ),
            archive: format!(
                "WITH moved AS (
                     DELETE FROM {s}.events WHERE aggregate_type = $1 AND aggregate_id = $2 RETURNING *
                 )
                 INSERT INTO {s}.archived_events SELECT * FROM moved"
            ),
            delete_archived: format!("DELETE FROM {s}.archived_events WHERE aggregate_type = $1 AND aggregate_id = $2"),
            delete_hot: format!("DELETE FROM {s}.events WHERE aggregate_type = $1 AND aggregate_id = $2"),
            delete_snapshot: format!("DELETE FROM {s}.snapshots WHERE aggregate_type = $1 AND aggregate_id = $2"),
            closed_streams: format!(
                "SELECT {CLOSED_COLUMNS} FROM {s}.stream_states
                 WHERE status = $1
                   AND ($2::text IS NULL
                        OR (aggregate_type COLLATE \"C\", aggregate_id COLLATE \"C\") > ($2::text, $3::text))
                 ORDER BY aggregate_type COLLATE \"C\", aggregate_id COLLATE \"C\"
                 LIMIT $4"
            ),
            register_tenant: format!("INSERT INTO {s}.tenants (tenant) VALUES ($1) ON CONFLICT (tenant) DO NOTHING"),
            tenants: format!("SELECT tenant FROM {s}.tenants ORDER BY tenant COLLATE \"C\""),
            read_archived: format!(
                "SELECT {event_columns} FROM {s}.archived_events WHERE {stream_slice} ORDER BY version"
            ),
        }
    }
}
