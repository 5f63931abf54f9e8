-- The two rows of benches/floor/run.sh, in a schema of their own.
DROP SCHEMA IF EXISTS es_floor CASCADE;
CREATE SCHEMA es_floor;
-- The raw baseline's table (benches/src/raw.rs).
CREATE TABLE es_floor.raw_events (
    position       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id      text   NOT NULL,
    version        bigint NOT NULL,
    event_name     text   NOT NULL,
    schema_version int    NOT NULL,
    payload        jsonb  NOT NULL,
    UNIQUE (stream_id, version)
);
-- es-postgres's events table after migration 5 (es-postgres/src/sql/migrations.rs).
CREATE TABLE es_floor.events (
    position       bigint      NOT NULL,
    event_id       uuid        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    version        bigint      NOT NULL,
    event_name     text        NOT NULL,
    schema_version integer     NOT NULL,
    payload        jsonb       NOT NULL,
    metadata       jsonb,
    recorded_at    timestamptz NOT NULL,
    command_id     uuid,
    correlation_id uuid,
    causation_id   uuid,
    actor          text,
    CONSTRAINT events_pkey PRIMARY KEY (position),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (aggregate_type, aggregate_id, version),
    CONSTRAINT events_position_check CHECK (position > 0),
    CONSTRAINT events_version_check CHECK (version > 0),
    CONSTRAINT events_schema_version_check CHECK (schema_version >= 0)
);
-- Closed streams (migration 9): every append probes it.
CREATE TABLE es_floor.stream_states (
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);
