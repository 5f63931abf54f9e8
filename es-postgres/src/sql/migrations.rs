//! The versioned migrations of the schema, oldest first. Each is recorded in `es_migrations`
//! once applied (see `PostgresStore::migrate`).

/// The versioned migrations, oldest first: `(version, description, SQL)`. `{schema}` stands for
/// the quoted schema name. Never edit an applied migration: append a new one.
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "events and snapshots",
        r#"
CREATE TABLE {schema}.events (
    position       bigint      NOT NULL,
    event_id       uuid        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    version        bigint      NOT NULL,
    event_name     text        NOT NULL,
    schema_version integer     NOT NULL,
    payload        jsonb       NOT NULL,
    metadata       jsonb       NOT NULL,
    recorded_at    timestamptz NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (position),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (aggregate_type, aggregate_id, version),
    CONSTRAINT events_position_check CHECK (position > 0),
    CONSTRAINT events_version_check CHECK (version > 0),
    CONSTRAINT events_schema_version_check CHECK (schema_version >= 0)
);

COMMENT ON TABLE {schema}.events IS
    'Append-only: every event of every aggregate. Written by es-postgres only; never update or delete rows.';
COMMENT ON COLUMN {schema}.events.position IS
    'Global order: writing transaction id << 20 | index in the transaction. Sparse, strictly increasing.';

CREATE TABLE {schema}.snapshots (
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    version        bigint      NOT NULL,
    revision       integer     NOT NULL,
    state          jsonb       NOT NULL,
    taken_at       timestamptz NOT NULL,
    CONSTRAINT snapshots_pkey PRIMARY KEY (aggregate_type, aggregate_id),
    CONSTRAINT snapshots_version_check CHECK (version >= 0),
    CONSTRAINT snapshots_revision_check CHECK (revision >= 0)
);

COMMENT ON TABLE {schema}.snapshots IS 'The latest snapshot of each stream.';
"#,
    ),
    (
        2,
        "projection checkpoints",
        r#"
CREATE TABLE {schema}.projection_checkpoints (
    projection text        NOT NULL,
    position   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT projection_checkpoints_pkey PRIMARY KEY (projection),
    CONSTRAINT projection_checkpoints_position_check CHECK (position >= 0)
);

COMMENT ON TABLE {schema}.projection_checkpoints IS
    'Per projection: the position of the last event its read model reflects, committed with the read model.';
"#,
    ),
    (
        3,
        "projection claims",
        r#"
ALTER TABLE {schema}.projection_checkpoints
    ADD COLUMN claim_epoch bigint NOT NULL DEFAULT 0,
    ADD COLUMN claim_owner uuid,
    ADD COLUMN claimed_at  timestamptz;

COMMENT ON COLUMN {schema}.projection_checkpoints.claim_epoch IS
    'Raised by every runner that claims the projection; a unit of work commits only under the latest claim.';
COMMENT ON COLUMN {schema}.projection_checkpoints.claim_owner IS 'The runner that claimed the projection last.';
"#,
    ),
    (
        4,
        "parked events",
        r#"
CREATE TABLE {schema}.parked_events (
    projection      text        NOT NULL,
    position        bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    version         bigint      NOT NULL,
    event_name      text        NOT NULL,
    error           text        NOT NULL,
    attempts        bigint      NOT NULL,
    parked_at       timestamptz NOT NULL,
    retry_requested boolean     NOT NULL DEFAULT false,
    CONSTRAINT parked_events_pkey PRIMARY KEY (projection, position),
    CONSTRAINT parked_events_position_check CHECK (position > 0),
    CONSTRAINT parked_events_version_check CHECK (version > 0),
    CONSTRAINT parked_events_attempts_check CHECK (attempts >= 0)
);

COMMENT ON TABLE {schema}.parked_events IS
    'Per projection: the events it gave up on and went on without, with the last error, until an operator retries or drops them. Written with the projection''s checkpoint.';
COMMENT ON COLUMN {schema}.parked_events.position IS 'The event''s position in events: with the projection, the key.';
COMMENT ON COLUMN {schema}.parked_events.attempts IS 'How many times the projection tried the event, over all its retries.';
COMMENT ON COLUMN {schema}.parked_events.parked_at IS 'When the event was first parked; kept when a retry fails again.';
COMMENT ON COLUMN {schema}.parked_events.retry_requested IS
    'Set by an operator once the cause is fixed: the projection''s runner tries the event again, and removes it with the writes of its success.';
"#,
    ),
    (
        5,
        "well-known metadata in columns",
        r#"
ALTER TABLE {schema}.events
    ADD COLUMN command_id     uuid,
    ADD COLUMN correlation_id uuid,
    ADD COLUMN causation_id   uuid,
    ADD COLUMN actor          text,
    ALTER COLUMN metadata DROP NOT NULL;

COMMENT ON COLUMN {schema}.events.command_id IS 'Metadata: the command that recorded the event (NULL in rows written before migration 5, which keep it in metadata).';
COMMENT ON COLUMN {schema}.events.correlation_id IS 'Metadata: the request or conversation the event belongs to (see command_id for older rows).';
COMMENT ON COLUMN {schema}.events.causation_id IS 'Metadata: the message that directly caused the event (see command_id for older rows).';
COMMENT ON COLUMN {schema}.events.actor IS 'Metadata: who acted (see command_id for older rows).';
COMMENT ON COLUMN {schema}.events.metadata IS
    'The rest of the metadata as JSON ({"extra": {...}}), NULL when there is none. Rows written before migration 5 hold all of their metadata here; a column that is not NULL takes precedence.';
"#,
    ),
    (
        6,
        "bulk import progress",
        r#"
CREATE TABLE {schema}.imports (
    name          text        NOT NULL,
    events_done   bigint      NOT NULL DEFAULT 0,
    last_event_id uuid,
    source_digest bigint      NOT NULL DEFAULT 0,
    started_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    CONSTRAINT imports_pkey PRIMARY KEY (name),
    CONSTRAINT imports_events_done_check CHECK (events_done >= 0)
);

COMMENT ON TABLE {schema}.imports IS
    'Per bulk import (PostgresStore::import), by name: how far it got. Advanced in the transaction of each chunk it writes, so a run that fails resumes after the last chunk committed.';
COMMENT ON COLUMN {schema}.imports.events_done IS 'How many events of the source are stored: the next run skips them.';
COMMENT ON COLUMN {schema}.imports.last_event_id IS 'The id of the last event stored: a rerun checks that its source has it at the same place.';
COMMENT ON COLUMN {schema}.imports.source_digest IS
    'A 64-bit FNV-1a digest of the stream and id of every event stored, in source order: a rerun checks that its source replays them in that order.';
COMMENT ON COLUMN {schema}.imports.finished_at IS 'When the source was exhausted: a finished import imports nothing more.';
"#,
    ),
    (
        7,
        "snapshot schema versions",
        r#"
ALTER TABLE {schema}.snapshots
    ADD COLUMN schema_version integer NOT NULL DEFAULT 1,
    ADD CONSTRAINT snapshots_schema_version_check CHECK (schema_version >= 0);

COMMENT ON COLUMN {schema}.snapshots.schema_version IS
    'The schema version of state (Aggregate::SNAPSHOT_VERSION when taken); older states are upcast on load. Snapshots taken before migration 7 are at version 1.';
"#,
    ),
    (
        8,
        "keys of data subjects",
        r#"
CREATE TABLE {schema}.pii_keys (
    subject      text        NOT NULL,
    key          bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    forgotten_at timestamptz,
    CONSTRAINT pii_keys_pkey PRIMARY KEY (subject),
    CONSTRAINT pii_keys_key_check CHECK ((key IS NULL) = (forgotten_at IS NOT NULL)),
    CONSTRAINT pii_keys_length_check CHECK (key IS NULL OR length(key) = 32)
);

COMMENT ON TABLE {schema}.pii_keys IS
    'The key of each data subject, which seals their personal data (es_core::pii). Forgetting a subject sets key to NULL for good; the old row version keeps the bytes until the table is vacuumed, and WAL archives and backups keep them as long as they are kept.';

CREATE TABLE {schema}.pii_subject_streams (
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    subject        text NOT NULL,
    CONSTRAINT pii_subject_streams_pkey PRIMARY KEY (aggregate_type, aggregate_id, subject)
);

COMMENT ON TABLE {schema}.pii_subject_streams IS
    'Which streams hold personal data of which subjects: their snapshots are sealed with those subjects'' keys.';
"#,
    ),
    (
        9,
        "stream lifecycle: tombstones, archives, deletions",
        r#"
CREATE TABLE {schema}.stream_states (
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    status         text        NOT NULL,
    version        bigint      NOT NULL,
    events         bigint      NOT NULL,
    actor          text        NOT NULL,
    reason         text        NOT NULL,
    changed_at     timestamptz NOT NULL,
    CONSTRAINT stream_states_pkey PRIMARY KEY (aggregate_type, aggregate_id),
    CONSTRAINT stream_states_status_check CHECK (status IN ('tombstoned', 'archived', 'deleted')),
    CONSTRAINT stream_states_version_check CHECK (version >= 0),
    CONSTRAINT stream_states_events_check CHECK (events >= 0)
);

COMMENT ON TABLE {schema}.stream_states IS
    'The record of each closed stream (es_core::lifecycle): appends to it are refused. A deleted stream''s row is the audit record of the deletion and is never removed.';

-- Same columns, constraints and indexes as events. A later migration that changes the columns
-- of events must change these too: the global log reads both as one.
CREATE TABLE {schema}.archived_events (LIKE {schema}.events INCLUDING ALL);

COMMENT ON TABLE {schema}.archived_events IS
    'The events of archived streams, moved out of events with their positions: the global log reads both tables, stream reads and appends only events.';
"#,
    ),
    (
        10,
        "tenants",
        r#"
CREATE TABLE {schema}.tenants (
    tenant     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenants_pkey PRIMARY KEY (tenant)
);

COMMENT ON TABLE {schema}.tenants IS
    'The tenants of this schema (es_core::tenancy): each has the schema <this schema>__<tenant>, with the same tables.';
"#,
    ),
];
