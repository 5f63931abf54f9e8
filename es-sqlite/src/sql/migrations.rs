//! The versioned migrations of the file's schema, oldest first. Never edit an applied
//! migration: append a new one.

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Applied in ascending order; recorded in `es_migrations`.
    pub version: i64,
    /// What it does, for the history and errors.
    pub description: &'static str,
    /// The statements.
    pub sql: &'static str,
}

/// The versioned migrations, oldest first. Never edit an applied migration: append a new one.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "events and snapshots",
        sql: r#"
-- Append-only: every event of every aggregate. `position` is the rowid: assigned under the
-- database's single write lock as the highest position + 1, so positions are dense and commit in
-- order (see the crate docs). Times are microseconds since the Unix epoch, UTC.
CREATE TABLE events (
    position       INTEGER PRIMARY KEY,
    event_id       BLOB    NOT NULL UNIQUE CHECK (length(event_id) = 16),
    aggregate_type TEXT    NOT NULL,
    aggregate_id   TEXT    NOT NULL,
    version        INTEGER NOT NULL CHECK (version > 0),
    event_name     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL CHECK (schema_version >= 0),
    payload        TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    recorded_at    INTEGER NOT NULL,
    UNIQUE (aggregate_type, aggregate_id, version)
) STRICT;

-- A deleted last event would let its position be handed out again, behind readers' checkpoints.
CREATE TRIGGER events_are_append_only_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: never update or delete them');
END;
CREATE TRIGGER events_are_append_only_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: never update or delete them');
END;

-- The latest snapshot of each stream.
CREATE TABLE snapshots (
    aggregate_type TEXT    NOT NULL,
    aggregate_id   TEXT    NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 0),
    revision       INTEGER NOT NULL CHECK (revision >= 0),
    state          TEXT    NOT NULL,
    taken_at       INTEGER NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
) STRICT, WITHOUT ROWID;
"#,
    },
    Migration {
        version: 2,
        description: "projection checkpoints and claims",
        sql: r#"
-- Per projection: the position of the last event its read model reflects, committed with the
-- read model; and the claim epoch, raised by every runner that claims the projection, so that a
-- unit of work commits only under the latest claim.
CREATE TABLE projection_checkpoints (
    projection  TEXT    NOT NULL PRIMARY KEY,
    position    INTEGER NOT NULL CHECK (position >= 0),
    updated_at  INTEGER NOT NULL,
    claim_epoch INTEGER NOT NULL DEFAULT 0,
    claim_owner BLOB,
    claimed_at  INTEGER
) STRICT, WITHOUT ROWID;
"#,
    },
    Migration {
        version: 3,
        description: "parked events",
        sql: r#"
-- Per projection: the events it gave up on and went on without, with the last error, until an
-- operator retries or drops them; written in the unit of work that commits the projection's
-- checkpoint. `position` is the event's in `events`; `attempts` counts the tries over all its
-- retries; `parked_at` (microseconds since the Unix epoch, UTC) is when it was first parked,
-- kept when a retry fails again; `retry_requested` is set by an operator once the cause is
-- fixed, and the projection's runner then tries the event again.
CREATE TABLE parked_events (
    projection      TEXT    NOT NULL,
    position        INTEGER NOT NULL CHECK (position > 0),
    event_id        BLOB    NOT NULL CHECK (length(event_id) = 16),
    aggregate_type  TEXT    NOT NULL,
    aggregate_id    TEXT    NOT NULL,
    version         INTEGER NOT NULL CHECK (version > 0),
    event_name      TEXT    NOT NULL,
    error           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL CHECK (attempts >= 0),
    parked_at       INTEGER NOT NULL,
    retry_requested INTEGER NOT NULL DEFAULT 0 CHECK (retry_requested IN (0, 1)),
    PRIMARY KEY (projection, position)
) STRICT, WITHOUT ROWID;
"#,
    },
    Migration {
        version: 4,
        description: "snapshot schema versions",
        sql: r#"
-- The schema version of a snapshot's state (Aggregate::SNAPSHOT_VERSION when it was taken);
-- older states are upcast on load. Snapshots taken before this migration are at version 1.
ALTER TABLE snapshots ADD COLUMN schema_version INTEGER NOT NULL DEFAULT 1 CHECK (schema_version >= 0);
"#,
    },
    Migration {
        version: 5,
        description: "keys of data subjects",
        sql: r#"
-- The key of each data subject, which seals their personal data (es_core::pii). Forgetting a
-- subject sets `key` to NULL for good (times are microseconds since the Unix epoch, UTC).
CREATE TABLE pii_keys (
    subject      TEXT    NOT NULL PRIMARY KEY,
    key          BLOB    CHECK (key IS NULL OR length(key) = 32),
    created_at   INTEGER NOT NULL,
    forgotten_at INTEGER,
    CHECK ((key IS NULL) = (forgotten_at IS NOT NULL))
) STRICT, WITHOUT ROWID;

-- Which streams hold personal data of which subjects: their snapshots are sealed with those
-- subjects' keys.
CREATE TABLE pii_subject_streams (
    aggregate_type TEXT NOT NULL,
    aggregate_id   TEXT NOT NULL,
    subject        TEXT NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, subject)
) STRICT, WITHOUT ROWID;
"#,
    },
    Migration {
        version: 6,
        description: "stream lifecycle: tombstones, archives, deletions",
        sql: r#"
-- The record of each closed stream (es_core::lifecycle): appends to it are refused. A deleted
-- stream's row is the audit record of the deletion and is never removed.
CREATE TABLE stream_states (
    aggregate_type TEXT    NOT NULL,
    aggregate_id   TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('tombstoned', 'archived', 'deleted')),
    version        INTEGER NOT NULL CHECK (version >= 0),
    events         INTEGER NOT NULL CHECK (events >= 0),
    actor          TEXT    NOT NULL,
    reason         TEXT    NOT NULL,
    changed_at     INTEGER NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
) STRICT, WITHOUT ROWID;

-- The events of archived streams, moved out of `events` with their positions: the global
-- log reads both tables, stream reads and appends only `events`.
CREATE TABLE archived_events (
    position       INTEGER PRIMARY KEY,
    event_id       BLOB    NOT NULL UNIQUE CHECK (length(event_id) = 16),
    aggregate_type TEXT    NOT NULL,
    aggregate_id   TEXT    NOT NULL,
    version        INTEGER NOT NULL CHECK (version > 0),
    event_name     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL CHECK (schema_version >= 0),
    payload        TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    recorded_at    INTEGER NOT NULL,
    UNIQUE (aggregate_type, aggregate_id, version)
) STRICT;

-- Events leave `events` only when their stream is archived or deleted, and only after its
-- record says so. The change appends its lifecycle event first, so the highest position stays
-- in `events` and is never handed out again.
DROP TRIGGER events_are_append_only_delete;
CREATE TRIGGER events_are_append_only_delete BEFORE DELETE ON events
WHEN NOT EXISTS (
    SELECT 1 FROM stream_states AS closed
    WHERE closed.aggregate_type = OLD.aggregate_type AND closed.aggregate_id = OLD.aggregate_id
      AND closed.status IN ('archived', 'deleted')
)
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: only archiving or deleting their stream removes them');
END;
"#,
    },
    Migration {
        version: 7,
        description: "tenants",
        sql: r#"
-- The tenants of this file (es_core::tenancy): each has a file of its own,
-- `<this file>.tenants/<tenant>.db`, with the same tables (times are microseconds since the
-- Unix epoch, UTC).
CREATE TABLE tenants (
    tenant     TEXT    NOT NULL PRIMARY KEY,
    created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
"#,
    },
];
