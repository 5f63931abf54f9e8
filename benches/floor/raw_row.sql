\set id random(1, 1000000000000)
INSERT INTO es_floor.raw_events (stream_id, version, event_name, schema_version, payload)
VALUES (:id::text, 1, 'AccountOpened', 1, '{"owner":"Alice Example"}'::text::jsonb);
