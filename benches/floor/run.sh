#!/usr/bin/env bash
# The server-side floor of a one-event append, measured with pgbench on DATABASE_URL: the same
# single-row INSERT of the raw baseline's row (benches/src/raw.rs) and of es-postgres's row
# (event id under a unique index, aggregate type and id, metadata columns, timestamp, position
# from the transaction id), each in its own transaction, one client, prepared statements.
# What separates the two is what es-rs stores beyond the raw row, not how it sends it.
#
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres benches/floor/run.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")"
: "${DATABASE_URL:?set DATABASE_URL to a PostgreSQL server to measure on}"
seconds="${1:-10}"
export PGOPTIONS="-c client_min_messages=warning"
psql -q -X -v ON_ERROR_STOP=1 "$DATABASE_URL" -f schema.sql
for statement in raw_row es_row es_statement; do
    latency=$(pgbench -n -M prepared -T "$seconds" -c 1 -f "$statement.sql" "$DATABASE_URL" 2>/dev/null |
        sed -n 's/^latency average = \(.*\) ms$/\1/p')
    echo "$statement: $latency ms per one-event append (average, $seconds s)"
done
psql -q -X "$DATABASE_URL" -c "DROP SCHEMA es_floor CASCADE"
