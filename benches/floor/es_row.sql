\set id random(1, 1000000000000)
INSERT INTO es_floor.events (position, event_id, aggregate_type, aggregate_id, version, event_name, schema_version,
                             payload, recorded_at, command_id, correlation_id, causation_id, actor, metadata)
VALUES ((pg_current_xact_id()::text::bigint << 20) | 1, (lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0') || substr(md5(random()::text), 13))::uuid, 'account', :id::text, 1, 'AccountOpened', 1,
        '{"owner":"Alice Example"}'::text::jsonb, statement_timestamp(),
        '01930000-0000-7b96-aae2-6da74d5357b5', '01930000-0000-7b96-aae2-6da74d5357b5',
        '01930000-0000-7b96-aae2-6da74d5357b5', NULL, NULL);
