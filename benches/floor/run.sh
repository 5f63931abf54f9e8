#!/usr/bin/env bash
# The server-side floor of scenarios 1a and 4b, measured with pgbench on DATABASE_URL: the same
# statements with the raw baseline's row (benches/src/raw.rs) and with es-postgres's row (event
# id under a unique index, aggregate type and id, metadata columns, timestamp, position from the
# transaction id), each in its own transaction, one client, prepared statements, no client code
# beyond pgbench. What separates the two is what es-rs stores beyond the raw row, not how it
# sends it: a ratio here is the best es-rs / raw ratio the benchmark can show for that row.
#
#   1a, one-event appends: raw_row (the raw INSERT), es_row (es-postgres's row, as a plain
#       INSERT ... VALUES) and es_statement (the append statement es-postgres runs, with its
#       expected-version condition and the closed-stream probe).
#   4b, 10,000 events in one statement: raw_batch and es_batch, then es_batch again without the
#       event-id index, to show what that index costs.
#
# The kinds alternate within each round, and the medians over the rounds are printed, so that
# a passing load moves all of them alike.
#
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres benches/floor/run.sh [seconds] [rounds]
set -euo pipefail
cd "$(dirname "$0")"
: "${DATABASE_URL:?set DATABASE_URL to a PostgreSQL server to measure on}"
seconds="${1:-8}"
rounds="${2:-3}"
export PGOPTIONS="-c client_min_messages=warning"
results=$(mktemp)
trap 'rm -f "$results"; psql -q -X "$DATABASE_URL" -c "DROP SCHEMA IF EXISTS es_floor CASCADE" >/dev/null 2>&1 || true' EXIT
psql -q -X -v ON_ERROR_STOP=1 "$DATABASE_URL" -f schema.sql

# Average latency in ms of pgbench running script $1 for $seconds.
latency() {
    pgbench -n -M prepared -T "$seconds" -c 1 -f "$1.sql" "$DATABASE_URL" 2>/dev/null |
        sed -n 's/^latency average = \(.*\) ms$/\1/p'
}

for round in $(seq "$rounds"); do
    for kind in raw_row es_row es_statement raw_batch es_batch; do
        echo "$kind $(latency "$kind")" >>"$results"
    done
    psql -q -X "$DATABASE_URL" -c "ALTER TABLE es_floor.events DROP CONSTRAINT events_event_id_key"
    echo "es_batch_without_event_id_index $(latency es_batch)" >>"$results"
    psql -q -X "$DATABASE_URL" -c "ALTER TABLE es_floor.events ADD CONSTRAINT events_event_id_key UNIQUE (event_id)"
    echo "round $round of $rounds done" >&2
done

median() {
    grep "^$1 " "$results" | cut -d' ' -f2 | sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'
}
raw_row=$(median raw_row)
raw_batch=$(median raw_batch)
echo "Medians over $rounds rounds of $seconds s each (ms per statement, and the ratio to raw in es-bench's terms):"
for kind in raw_row es_row es_statement; do
    value=$(median "$kind")
    echo "  1a $kind: $value ms, throughput $(awk -v r="$raw_row" -v v="$value" 'BEGIN {printf "%.2fx", r / v}') raw"
done
for kind in raw_batch es_batch es_batch_without_event_id_index; do
    value=$(median "$kind")
    echo "  4b $kind: $value ms, time $(awk -v r="$raw_batch" -v v="$value" 'BEGIN {printf "%.2fx", v / r}') raw"
done
