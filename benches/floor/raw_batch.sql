\set id random(1, 1000000000000)
-- The raw baseline's batch (scenario 4b): 10,000 events of one new stream in one statement.
INSERT INTO es_floor.raw_events (stream_id, version, event_name, schema_version, payload)
SELECT :id::text, n, 'MoneyDeposited', 2, ('{"amount":' || n || ',"reference":"deposit-' || n || '"}')::jsonb
FROM generate_series(1, 10000) AS n;
