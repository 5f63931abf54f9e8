//! The statements of the stream catalog: streams listed by a walk over the unique index on
//! `(aggregate_type, aggregate_id, version)`, snapshots paged on their primary key.
//!
//! # The walk
//!
//! A recursive CTE visits one stream per step: each step is one index seek, `ORDER BY
//! aggregate_type, aggregate_id LIMIT 1` on a row comparison, to the first event of the next
//! stream; it never reads a stream's other events. The walk stops once `limit` streams passed
//! the filters, or when the index has no further stream. A type filter is an equality on the
//! index's first column, so the walk starts in that type and never leaves it. Each stream that
//! passed is then described by one more seek, backwards, to its last event.
//!
//! # Prefixes and collations
//!
//! Ids compare in the column's collation, and only in a bytewise one (`C`, `POSIX`, or any
//! collation of PostgreSQL's `builtin` provider, which sorts by code point) do the ids that start
//! with a prefix form one range that starts at the prefix itself. Elsewhere they need not: in
//! Welsh (`cy`), `ng` is a letter sorted between `g` and `h`, so `ngo` sorts before `n`. The
//! statement therefore asks the catalog whether `aggregate_id` sorts bytewise (`id_order`), and
//!
//! - if it does, jumps to the prefix within each type, and from the end of the prefix's range to
//!   the next type: about `limit` seeks per page, plus two per type passed through;
//! - if not, walks every stream (of the type, if given) after `after`, keeping those that
//!   `starts_with` the prefix: one seek per stream visited, until `limit` of them matched.
//!
//! Without a prefix, every stream visited is listed, in any collation: `limit` seeks per page.
//! Parameters: `$1` the aggregate type (unused without one), `$2` the id prefix or NULL, `$3`
//! and `$4` the stream the page starts after or NULLs, `$5` the limit.

use super::SNAPSHOT_COLUMNS;

/// The statements of the stream catalog.
#[derive(Debug)]
pub(crate) struct CatalogStatements {
    /// Streams of one type (`$1`), filtered and paged: see the module docs.
    pub streams_of_type: String,
    /// Streams of every type, filtered and paged: see the module docs.
    pub streams: String,
    /// The first `$1` snapshots in stream order.
    pub snapshots: String,
    /// The `$3` snapshots after stream (`$1`, `$2`), in stream order.
    pub snapshots_after: String,
}

impl CatalogStatements {
    /// The statements for the quoted schema name `s`.
    pub(super) fn new(s: &str) -> Self {
        let seek = |condition: &str| {
            format!(
                "(SELECT aggregate_type, aggregate_id FROM {s}.events
                  WHERE {condition}
                  ORDER BY aggregate_type, aggregate_id
                  LIMIT 1)"
            )
        };
        // Streams of one type: seeks on `aggregate_type = $1` and a bound on the id alone, so
        // the index scan starts at the bound (a row comparison would start at the type's first
        // entry and filter its way to the bound).
        let streams_of_type = walk(
            s,
            &format!(
                "{} UNION ALL {}",
                seek("$3 = $1 AND aggregate_type = $1 AND aggregate_id > $4"),
                seek("$3::text IS DISTINCT FROM $1 AND aggregate_type = $1"),
            ),
            &format!(
                "{} UNION ALL {}",
                seek("w.phase = 0 AND aggregate_type = $1 AND aggregate_id > w.aggregate_id"),
                seek("w.phase = -1 AND aggregate_type = $1 AND aggregate_id >= $2"),
            ),
        );
        let streams = walk(
            s,
            &format!(
                "{} UNION ALL {}",
                seek("$3::text IS NULL"),
                seek("(aggregate_type, aggregate_id) > ($3, $4)"),
            ),
            &format!(
                "{} UNION ALL {} UNION ALL {}",
                seek("w.phase = 0 AND (aggregate_type, aggregate_id) > (w.aggregate_type, w.aggregate_id)"),
                seek("w.phase = -1 AND (aggregate_type, aggregate_id) >= (w.aggregate_type, $2)"),
                seek("w.phase = 1 AND aggregate_type > w.aggregate_type"),
            ),
        );
        Self {
            streams_of_type,
            streams,
            snapshots: format!(
                "SELECT aggregate_type, aggregate_id, {SNAPSHOT_COLUMNS} FROM {s}.snapshots
                 ORDER BY aggregate_type, aggregate_id
                 LIMIT $1"
            ),
            snapshots_after: format!(
                "SELECT aggregate_type, aggregate_id, {SNAPSHOT_COLUMNS} FROM {s}.snapshots
                 WHERE (aggregate_type, aggregate_id) > ($1, $2)
                 ORDER BY aggregate_type, aggregate_id
                 LIMIT $3"
            ),
        }
    }
}

/// The listing statement: a walk from the stream `first` finds (a union of guarded seeks of
/// which at most one returns a row) through the streams each `next` finds from the previous one
/// `w`, then the last event of every stream that passed the filters.
///
/// Each visited stream carries `hit` (it passes the prefix filter), `hits` (how many visited so
/// far did) and `phase`: 0 when ids do not sort bytewise, without a prefix, or within the
/// prefix's range (the next stream is the next one); -1 before the range (jump to the prefix);
/// 1 past it (jump to the next type). The `next` seek guarded by the stream's phase runs; the
/// guards are one-time filters, decided before the index is touched.
fn walk(s: &str, first: &str, next: &str) -> String {
    let classify = |stream: &str| {
        format!(
            "CROSS JOIN LATERAL (
                 SELECT $2::text IS NULL OR starts_with({stream}.aggregate_id, $2) AS hit,
                        CASE WHEN $2::text IS NULL OR NOT o.bytewise OR starts_with({stream}.aggregate_id, $2) THEN 0
                             WHEN {stream}.aggregate_id < $2 THEN -1
                             ELSE 1
                        END AS phase
                 FROM id_order AS o
             ) AS m"
        )
    };
    let (classify_first, classify_next) = (classify("f"), classify("n"));
    format!(
        "WITH RECURSIVE
         id_order AS MATERIALIZED ({ID_ORDER}),
         walk AS (
             SELECT f.aggregate_type, f.aggregate_id, m.hit, m.hit::int AS hits, m.phase
             FROM ({first}) AS f
             {classify_first}
             WHERE $3::text IS NULL OR (f.aggregate_type, f.aggregate_id) > ($3, $4)
           UNION ALL
             SELECT n.aggregate_type, n.aggregate_id, m.hit, w.hits + m.hit::int, m.phase
             FROM walk AS w
             CROSS JOIN LATERAL ({next}) AS n
             {classify_next}
             WHERE w.hits < $5
         )
         SELECT w.aggregate_type, w.aggregate_id, last.version, last.recorded_at
         FROM walk AS w
         CROSS JOIN LATERAL (
             SELECT version, recorded_at FROM {s}.events AS e
             WHERE e.aggregate_type = w.aggregate_type AND e.aggregate_id = w.aggregate_id
             ORDER BY version DESC
             LIMIT 1
         ) AS last
         WHERE w.hit
         ORDER BY w.aggregate_type, w.aggregate_id
         LIMIT $5",
        ID_ORDER = id_order(s),
    )
}

/// One row, `bytewise`: whether `events.aggregate_id` sorts bytewise, from its collation (the
/// database's for the default one): three catalog lookups by key per listing, so the answer
/// follows an `ALTER TABLE` of the column. PostgreSQL 13 and 14 have no `datlocprovider`: read through
/// `to_jsonb`, it is NULL there, and their databases are all `libc`.
fn id_order(s: &str) -> String {
    format!(
        "SELECT CASE c.collprovider
                    WHEN 'c' THEN c.collcollate IN ('C', 'POSIX')
                    WHEN 'b' THEN true
                    WHEN 'd' THEN CASE coalesce(to_jsonb(d) ->> 'datlocprovider', 'c')
                                      WHEN 'c' THEN d.datcollate IN ('C', 'POSIX')
                                      WHEN 'b' THEN true
                                      ELSE false
                                  END
                    ELSE false
                END AS bytewise
         FROM pg_attribute AS a
         JOIN pg_collation AS c ON c.oid = a.attcollation
         JOIN pg_database AS d ON d.datname = current_database()
         WHERE a.attrelid = '{s}.events'::regclass AND a.attname = 'aggregate_id'"
    )
}
