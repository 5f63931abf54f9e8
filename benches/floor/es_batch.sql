\set id random(1, 1000000000000)
-- es-postgres's row for the same batch (scenario 4b), without the client: event ids led by the
-- millisecond clock and random after it (as es-core derives them from a UUID v7 command id),
-- the metadata shared by the batch, positions from the transaction id.
INSERT INTO es_floor.events (position, event_id, aggregate_type, aggregate_id, version, event_name, schema_version,
                             payload, recorded_at, command_id, correlation_id, causation_id, actor, metadata)
SELECT (pg_current_xact_id()::text::bigint << 20) | n, (lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0') || substr(md5(random()::text), 13))::uuid, 'account', :id::text, n,
       'MoneyDeposited', 2, ('{"amount":' || n || ',"reference":"deposit-' || n || '"}')::jsonb,
       statement_timestamp(), '01930000-0000-7b96-aae2-6da74d5357b5', '01930000-0000-7b96-aae2-6da74d5357b5',
       '01930000-0000-7b96-aae2-6da74d5357b5', NULL, NULL
FROM generate_series(1, 10000) AS n;
