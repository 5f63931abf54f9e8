\set id random(1, 1000000000000)
-- es-postgres's one-event append with NoStream, as AppendStatements builds it.
INSERT INTO es_floor.events (position, event_id, aggregate_type, aggregate_id, version, event_name, schema_version,
                             payload, recorded_at, command_id, correlation_id, causation_id, actor, metadata)
SELECT (SELECT pg_current_xact_id()::text::bigint << 20) | e.n, e.event_id, 'account', :id::text, 0 + e.n,
       e.event_name, e.schema_version, e.payload::jsonb, statement_timestamp(),
       '01930000-0000-7b96-aae2-6da74d5357b5'::uuid, '01930000-0000-7b96-aae2-6da74d5357b5'::uuid,
       '01930000-0000-7b96-aae2-6da74d5357b5'::uuid, NULL::text, NULL::text::jsonb
FROM (SELECT (lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0') || substr(md5(random()::text), 13))::uuid AS event_id, 'AccountOpened'::text AS event_name, 1::int AS schema_version,
             '{"owner":"Alice Example"}'::text AS payload, 1::bigint AS n) AS e
WHERE (0 = 0 OR EXISTS (SELECT 1 FROM es_floor.events WHERE aggregate_type = 'account' AND aggregate_id = :id::text AND version = 0))
  AND NOT EXISTS (SELECT 1 FROM es_floor.stream_states WHERE aggregate_type = 'account' AND aggregate_id = :id::text)
RETURNING 1::bigint AS inserted, position AS first_position, version AS first_version;
