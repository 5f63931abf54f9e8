//! The statements of bulk imports (`PostgresStore::import`): the `COPY` into `events`, the
//! resume record in `imports` (migration 6), and the look-ups that name the event a refused
//! chunk stumbled on.

use super::INSERTED_COLUMNS;

/// The statements of bulk imports.
#[derive(Debug)]
pub(crate) struct ImportStatements {
    /// Creates the resume record of import `$1` if it has none: events done 0.
    pub begin: String,
    /// Reads the resume record of import `$1`: `events_done`, `last_event_id`, `source_digest`,
    /// `finished`.
    pub record: String,
    /// Opens a chunk, in its transaction: locks the resume record of import `$1` (so two runs
    /// of one import take turns, and the second finds the first's progress) and takes the
    /// transaction id the chunk's positions are made of, first thing. One row: `xid`,
    /// `events_done`, `finished`; none when the record is gone.
    pub claim: String,
    /// The chunk itself, in PostgreSQL's binary format, columns in [`INSERTED_COLUMNS`] order.
    pub copy: String,
    /// Advances the resume record of import `$1` in the chunk's transaction: `$2` events done,
    /// `$3` the last event's id, `$4` the source digest, `$5` whether the source is exhausted.
    pub advance: String,
    /// Marks import `$1` finished when the source ended right after a chunk, if it is still at
    /// `$2` events done and not finished.
    pub finish: String,
    /// The first (by `n`) of the ids `$1` that is stored: a refused chunk's duplicate id.
    pub stored_id: String,
    /// The first (by `n`) of the rows `$1` aggregate types, `$2` aggregate ids, `$3` versions
    /// whose stream already has that version: a refused chunk's taken stream.
    pub taken_version: String,
    /// The first (by `n`) of the streams `$1` aggregate types, `$2` aggregate ids that is
    /// closed (`es_core::lifecycle`): an import writes no event to one.
    pub closed_stream: String,
    /// Refreshes the planner's statistics of `events` after an import.
    pub analyze: String,
}

impl ImportStatements {
    /// The statements for the quoted schema name `s`.
    pub(super) fn new(s: &str) -> Self {
        Self {
            analyze: format!("ANALYZE {s}.events"),
            begin: format!("INSERT INTO {s}.imports (name) VALUES ($1) ON CONFLICT (name) DO NOTHING"),
            record: format!(
                "SELECT events_done, last_event_id, source_digest, finished_at IS NOT NULL AS finished
                 FROM {s}.imports WHERE name = $1"
            ),
            claim: format!(
                "SELECT pg_current_xact_id()::text::bigint AS xid, events_done, finished_at IS NOT NULL AS finished
                 FROM {s}.imports WHERE name = $1
                 FOR UPDATE"
            ),
            copy: format!(
                "COPY {s}.events ({}) FROM STDIN WITH (FORMAT binary)",
                copied_columns().join(", ")
            ),
            advance: format!(
                "UPDATE {s}.imports
                 SET events_done = $2, last_event_id = $3, source_digest = $4, updated_at = now(),
                     finished_at = CASE WHEN $5::bool THEN now() END
                 WHERE name = $1"
            ),
            finish: format!(
                "UPDATE {s}.imports SET finished_at = now(), updated_at = now()
                 WHERE name = $1 AND events_done = $2 AND finished_at IS NULL"
            ),
            stored_id: format!(
                "SELECT r.n FROM unnest($1::uuid[]) WITH ORDINALITY AS r(event_id, n)
                 JOIN {s}.events AS e ON e.event_id = r.event_id
                 ORDER BY r.n LIMIT 1"
            ),
            taken_version: format!(
                "SELECT r.n FROM unnest($1::text[], $2::text[], $3::bigint[])
                     WITH ORDINALITY AS r(aggregate_type, aggregate_id, version, n)
                 JOIN {s}.events AS e
                     ON e.aggregate_type = r.aggregate_type AND e.aggregate_id = r.aggregate_id
                    AND e.version = r.version
                 ORDER BY r.n LIMIT 1"
            ),
            closed_stream: format!(
                "SELECT c.n FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS c(t, i, n)
                 JOIN {s}.stream_states AS closed ON closed.aggregate_type = c.t AND closed.aggregate_id = c.i
                 ORDER BY c.n
                 LIMIT 1"
            ),
        }
    }
}

/// The columns of a `COPY` into `events`, in order: [`INSERTED_COLUMNS`], which the append
/// statements insert too, so both write the same columns.
pub(crate) fn copied_columns() -> Vec<&'static str> {
    INSERTED_COLUMNS
        .split(',')
        .map(str::trim)
        .filter(|column| !column.is_empty())
        .collect()
}
