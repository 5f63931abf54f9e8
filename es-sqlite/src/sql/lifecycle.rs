//! The statements of stream lifecycle (migration 6): records of closed streams, the archive.

/// The columns of a `stream_states` row, in the order `lifecycle::closed_stream` reads them.
macro_rules! closed_columns {
    () => {
        "aggregate_type, aggregate_id, status, version, events, actor, reason, changed_at"
    };
}

/// The record of stream (`?1`, `?2`), if it is closed.
pub(crate) const STREAM_CLOSURE: &str = concat!(
    "SELECT ",
    closed_columns!(),
    " FROM stream_states WHERE aggregate_type = ?1 AND aggregate_id = ?2"
);
/// Records stream (`?1`, `?2`) as closed: `?3` status, `?4` version, `?5` events, `?6` actor,
/// `?7` reason, `?8` changed_at. A later change replaces the record.
pub(crate) const CLOSE_STREAM: &str = "INSERT INTO stream_states
    (aggregate_type, aggregate_id, status, version, events, actor, reason, changed_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
    ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET
        status = excluded.status, version = excluded.version, events = excluded.events,
        actor = excluded.actor, reason = excluded.reason, changed_at = excluded.changed_at";
/// How many events of stream (`?1`, `?2`) are in `events` and in the archive.
pub(crate) const COUNT_STREAM_EVENTS: &str = "SELECT
    (SELECT count(*) FROM events WHERE aggregate_type = ?1 AND aggregate_id = ?2),
    (SELECT count(*) FROM archived_events WHERE aggregate_type = ?1 AND aggregate_id = ?2)";
/// Copies the events of stream (`?1`, `?2`) into the archive, positions and all.
pub(crate) const ARCHIVE_EVENTS: &str = "INSERT INTO archived_events
    (position, event_id, aggregate_type, aggregate_id, version, event_name, schema_version, payload, metadata, recorded_at)
    SELECT position, event_id, aggregate_type, aggregate_id, version, event_name, schema_version, payload, metadata,
           recorded_at
    FROM events WHERE aggregate_type = ?1 AND aggregate_id = ?2 ORDER BY position";
/// Removes the events of stream (`?1`, `?2`) from `events` (allowed once its record says
/// archived or deleted).
pub(crate) const DELETE_HOT_EVENTS: &str = "DELETE FROM events WHERE aggregate_type = ?1 AND aggregate_id = ?2";
/// Removes the archived events of stream (`?1`, `?2`).
pub(crate) const DELETE_ARCHIVED_EVENTS: &str =
    "DELETE FROM archived_events WHERE aggregate_type = ?1 AND aggregate_id = ?2";
/// Removes the snapshot of stream (`?1`, `?2`).
pub(crate) const DELETE_SNAPSHOT: &str = "DELETE FROM snapshots WHERE aggregate_type = ?1 AND aggregate_id = ?2";
/// The records of status `?1`, in stream order, after stream (`?2`, `?3`) when `?2` is not
/// NULL, at most `?4`.
pub(crate) const CLOSED_STREAMS: &str = concat!(
    "SELECT ",
    closed_columns!(),
    " FROM stream_states
    WHERE status = ?1 AND (?2 IS NULL OR (aggregate_type, aggregate_id) > (?2, ?3))
    ORDER BY aggregate_type, aggregate_id LIMIT ?4"
);
