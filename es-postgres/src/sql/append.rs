//! The statements of appends on the pool, one per batch shape and base version, and the parts
//! the append inside a caller's transaction shares with them.

use super::POSITION_SHIFT;

/// The columns an append inserts, in the order of the statements' `SELECT` lists.
pub(super) const INSERTED_COLUMNS: &str =
    "position, event_id, aggregate_type, aggregate_id, version, event_name, schema_version,
    payload, recorded_at, command_id, correlation_id, causation_id, actor, metadata";

/// Whether the stream `$1`, `$2` has a record in `stream_states`: an SQL condition.
pub(crate) fn stream_is_closed(s: &str) -> String {
    format!("EXISTS (SELECT 1 FROM {s}.stream_states WHERE aggregate_type = $1 AND aggregate_id = $2)")
}

/// How an append statement takes its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchShape {
    /// One event, bound as single values (`Batch::bind_one`): no `unnest`, whose function scan
    /// costs a one-event append about a tenth of its time.
    One,
    /// Any number of events, bound as arrays (`Batch::bind`).
    Many,
}

impl BatchShape {
    /// The shape of a batch of `len` events.
    pub(crate) fn of(len: usize) -> Self {
        if len == 1 {
            Self::One
        } else {
            Self::Many
        }
    }

    /// The `FROM` item of the events, `e` (`event_id`, `event_name`, `schema_version`,
    /// `payload` as text, `n` from 1), and the five metadata values of event `e.n`, from the
    /// nine parameters starting at `$first`.
    pub(super) fn rows(self, first: usize) -> (String, String) {
        let p = |offset: usize| first + offset;
        match self {
            Self::One => (
                format!(
                    "(SELECT ${}::uuid AS event_id, ${}::text AS event_name, ${}::int AS schema_version,
                             ${}::text AS payload, 1::bigint AS n) AS e",
                    p(0),
                    p(1),
                    p(2),
                    p(3)
                ),
                format!(
                    "${}::uuid, ${}::uuid, ${}::uuid, ${}::text, ${}::text::jsonb",
                    p(4),
                    p(5),
                    p(6),
                    p(7),
                    p(8)
                ),
            ),
            Self::Many => {
                // One metadata entry for the whole batch, or one per event.
                let entry = format!("CASE WHEN cardinality(${}::uuid[]) = 1 THEN 1 ELSE e.n END", p(4));
                (
                    format!(
                        "unnest(${}::uuid[], ${}::text[], ${}::int[], ${}::text[])
                             WITH ORDINALITY AS e(event_id, event_name, schema_version, payload, n)",
                        p(0),
                        p(1),
                        p(2),
                        p(3)
                    ),
                    format!(
                        "(${a}::uuid[])[{entry}], (${b}::uuid[])[{entry}], (${c}::uuid[])[{entry}],
                         (${d}::text[])[{entry}], ((${x}::text[])[{entry}])::jsonb",
                        a = p(4),
                        b = p(5),
                        c = p(6),
                        d = p(7),
                        x = p(8)
                    ),
                )
            }
        }
    }
}

/// Serializes the appends to one stream that lost a race on a version: taken at the start of
/// the transaction of their next attempt, so that its statement's snapshot sees every append
/// that held the lock before (`$1` aggregate_type, `$2` aggregate_id). Two streams whose ids
/// hash alike only share a queue. Advisory locks take no transaction id, so the positions of
/// the append that follows stay `xid << 20 | n`.
pub(crate) const LOCK_STREAM: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 0))";

/// Where an append on the pool numbers its events from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AppendBase {
    /// From the version bound as `$3` (0 for a new stream): inserted only if the stream has an
    /// event at that version, and the unique `(aggregate_type, aggregate_id, version)`
    /// constraint refuses the insert if it has one above. What `NoStream` and `Exact` need,
    /// without reading the stream's head.
    At,
    /// From the stream's last version, read by the statement; with `$3` true, only if the
    /// stream has events. What `Any` and `StreamExists` need.
    AfterHead,
}

/// The statements of appends on the pool, one per [`BatchShape`] and [`AppendBase`]. Each runs
/// in a transaction of its own, which has no xid before it and appends nothing else, so the
/// positions are `xid << 20 | n` and nothing else needs checking; a stream that another writer
/// moved meanwhile fails on the unique constraint.
///
/// Each returns one row per inserted event (the one-event statements) or one row in all (the
/// others): `inserted` (how many events), `first_position`, `first_version` (NULL when nothing
/// was inserted). The batch's positions and versions are consecutive from those. `$1`
/// aggregate_type, `$2` aggregate_id, `$3` the base (see [`AppendBase`]), `$4..$12` the batch.
#[derive(Debug)]
pub(crate) struct AppendStatements {
    one_at: String,
    one_after_head: String,
    many_at: String,
    many_after_head: String,
}

impl AppendStatements {
    pub(super) fn new(s: &str) -> Self {
        let statement = |shape: BatchShape, base: AppendBase| {
            let (rows, metadata) = shape.rows(4);
            let (version, from, condition) = match base {
                AppendBase::At => (
                    "$3::bigint + e.n",
                    rows,
                    format!(
                        "$3::bigint = 0 OR EXISTS (
                             SELECT 1 FROM {s}.events
                             WHERE aggregate_type = $1 AND aggregate_id = $2 AND version = $3::bigint
                         )"
                    ),
                ),
                AppendBase::AfterHead => (
                    "head.version + e.n",
                    format!(
                        "(SELECT coalesce(max(version), 0) AS version FROM {s}.events
                          WHERE aggregate_type = $1 AND aggregate_id = $2) AS head
                         CROSS JOIN {rows}"
                    ),
                    "NOT $3::bool OR head.version > 0".to_owned(),
                ),
            };
            // A closed stream takes no more events (es_core::lifecycle); a change of its status
            // locks the table against appends, so this probe cannot miss one.
            let condition = format!("({condition}) AND NOT {}", stream_is_closed(s));
            let insert = format!(
                "INSERT INTO {s}.events ({INSERTED_COLUMNS})
                 SELECT (SELECT pg_current_xact_id()::text::bigint << {POSITION_SHIFT}) | e.n,
                        e.event_id, $1, $2, {version}, e.event_name, e.schema_version, e.payload::jsonb,
                        statement_timestamp(), {metadata}
                 FROM {from}
                 WHERE {condition}"
            );
            match shape {
                BatchShape::One => {
                    format!("{insert} RETURNING 1::bigint AS inserted, position AS first_position, version AS first_version")
                }
                BatchShape::Many => format!(
                    "WITH inserted AS ({insert} RETURNING position, version)
                     SELECT count(*) AS inserted, min(position) AS first_position, min(version) AS first_version
                     FROM inserted"
                ),
            }
        };
        Self {
            one_at: statement(BatchShape::One, AppendBase::At),
            one_after_head: statement(BatchShape::One, AppendBase::AfterHead),
            many_at: statement(BatchShape::Many, AppendBase::At),
            many_after_head: statement(BatchShape::Many, AppendBase::AfterHead),
        }
    }

    /// The statement for a batch of `shape` numbered from `base`.
    pub(crate) fn get(&self, shape: BatchShape, base: AppendBase) -> &str {
        match (shape, base) {
            (BatchShape::One, AppendBase::At) => &self.one_at,
            (BatchShape::One, AppendBase::AfterHead) => &self.one_after_head,
            (BatchShape::Many, AppendBase::At) => &self.many_at,
            (BatchShape::Many, AppendBase::AfterHead) => &self.many_after_head,
        }
    }
}
