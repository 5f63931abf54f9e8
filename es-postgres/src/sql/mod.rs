//! The schema, the migrations and every SQL statement, built once per schema name.

mod append;
mod catalog;
mod checkpoints;
mod import;
mod keys;
mod lifecycle;
mod migrations;
mod parking;

use es_core::ExpectedVersion;

use crate::error::PostgresError;
use crate::row::{EVENT_COLUMNS, FILTERED_COLUMNS, PAGE_COLUMNS, REPLAY_COLUMNS, STORED_EVENT_COLUMNS};

use append::INSERTED_COLUMNS;
pub(crate) use append::{AppendBase, AppendStatements, BatchShape, LOCK_STREAM};
use catalog::CatalogStatements;
use checkpoints::CheckpointStatements;
#[cfg(test)]
pub(crate) use import::copied_columns;
pub(crate) use import::ImportStatements;
pub(crate) use keys::KeyStatements;
pub(crate) use lifecycle::LifecycleStatements;
use migrations::MIGRATIONS;
pub(crate) use parking::ParkingStatements;

/// Bits of a position that number the events of one transaction: `position = xid << 20 | n`.
pub(crate) const POSITION_SHIFT: u32 = 20;

/// The most events one transaction can append: the largest `n` that fits in [`POSITION_SHIFT`] bits.
pub(crate) const MAX_EVENTS_PER_TRANSACTION: usize = (1 << POSITION_SHIFT) - 1;

/// The name of the unique constraint on `(aggregate_type, aggregate_id, version)`.
pub(crate) const STREAM_VERSION_CONSTRAINT: &str = "events_stream_version_key";

/// The name of the unique constraint on `event_id`.
pub(crate) const EVENT_ID_CONSTRAINT: &str = "events_event_id_key";

/// The end of the global order a reader may see: the first position of the oldest transaction
/// still in flight (`xmin` of the reader's snapshot). Every transaction below it has ended, and
/// every transaction that can still commit numbers its events above it (see the crate docs).
fn settled_bound() -> String {
    format!("(pg_snapshot_xmin(pg_current_snapshot())::text::bigint << {POSITION_SHIFT})")
}

/// The oldest write transaction open in the cluster, which holds back the global log of every
/// schema: a session's (not this one's) or a prepared one's, described as text columns `who`,
/// `state`, `since` (UTC), `application` and `statement`.
pub(crate) const HELD_BACK_BY: &str = "SELECT who, state, since, application, statement FROM (
     SELECT 'session ' || pid AS who, coalesce(state, 'unknown state') AS state,
            coalesce(to_char(xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC', 'unknown') AS since,
            coalesce(application_name, '') AS application, left(coalesce(query, ''), 200) AS statement,
            age(backend_xid) AS held_for
     FROM pg_stat_activity
     WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
     UNION ALL
     SELECT 'prepared transaction ' || quote_literal(gid), 'prepared',
            to_char(prepared AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC', '', '', age(transaction)
     FROM pg_prepared_xacts
 ) AS held
 ORDER BY held_for DESC
 LIMIT 1";

/// The columns of a snapshot row but its stream, decoded by name by `snapshot::snapshot`; the
/// state comes as text, the form the store hands out.
const SNAPSHOT_COLUMNS: &str = "version, revision, schema_version, state::text AS state, taken_at";

/// The rows of one stream in a slice, from the five parameters `read.rs` binds: `$1`
/// aggregate_type, `$2` aggregate_id, `$3`..`$4` the version range, `$5` the `recorded_until`
/// cut-off (or NULL).
const STREAM_SLICE: &str = "aggregate_type = $1 AND aggregate_id = $2
                   AND version >= $3 AND version <= $4
                   AND ($5::timestamptz IS NULL OR recorded_at <= $5::timestamptz)";

/// How the append statement takes an [`ExpectedVersion`]: its kind by name as `$3`, and as `$4`
/// the version an `Exact` expectation names. The statement's `CASE` is written from these names
/// and conditions, so the two sides cannot drift apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expectation {
    /// [`ExpectedVersion::Any`].
    Any,
    /// [`ExpectedVersion::NoStream`].
    NoStream,
    /// [`ExpectedVersion::StreamExists`].
    StreamExists,
    /// [`ExpectedVersion::Exact`].
    Exact,
}

impl Expectation {
    const ALL: [Self; 4] = [Self::Any, Self::NoStream, Self::StreamExists, Self::Exact];

    /// The append statement's `$3` and `$4` for `expected`.
    pub(crate) fn parameters(expected: ExpectedVersion) -> (&'static str, i64) {
        match expected {
            ExpectedVersion::Any => (Self::Any.name(), 0),
            ExpectedVersion::NoStream => (Self::NoStream.name(), 0),
            ExpectedVersion::StreamExists => (Self::StreamExists.name(), 0),
            // A version beyond i64 cannot be stored, so no stream is at it: -1 never matches.
            ExpectedVersion::Exact(version) => (Self::Exact.name(), i64::try_from(version).unwrap_or(-1)),
        }
    }

    /// The name bound as `$3`.
    const fn name(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::NoStream => "no_stream",
            Self::StreamExists => "stream_exists",
            Self::Exact => "exact",
        }
    }

    /// When the expectation holds, in terms of `cur_version` (the stream's version, 0 when it
    /// has no event) and `$4`.
    const fn condition(self) -> &'static str {
        match self {
            Self::Any => "true",
            Self::NoStream => "cur_version = 0",
            Self::StreamExists => "cur_version > 0",
            Self::Exact => "cur_version = $4::bigint",
        }
    }

    /// The SQL expression: whether the expectation named by `$3` holds.
    fn holds() -> String {
        let arms: String = Self::ALL
            .iter()
            .map(|kind| format!(" WHEN '{}' THEN {}", kind.name(), kind.condition()))
            .collect();
        format!("CASE $3::text{arms} END")
    }
}

/// Checks a schema name: `[a-z_][a-z0-9_]{0,62}`, and not `pg_`-prefixed (reserved by PostgreSQL).
pub(crate) fn validate_schema_name(name: &str) -> Result<(), PostgresError> {
    let mut chars = name.chars();
    let valid_first = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let valid_rest = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid_first && valid_rest && name.len() <= 63 && !name.starts_with("pg_") {
        Ok(())
    } else {
        Err(PostgresError::InvalidSchemaName { name: name.to_owned() })
    }
}

/// Every statement of the store, with the (validated, quoted) schema name in place.
#[derive(Debug)]
pub(crate) struct Statements {
    pub schema: String,
    pub migration_lock: &'static str,
    pub ensure_schema: String,
    pub applied_migrations: String,
    pub record_migration: String,
    pub migrations: Vec<(i64, &'static str, String)>,
    pub xid_check: String,
    /// The statements of appends on the pool, each in a transaction of its own.
    pub append: AppendStatements,
    /// The append inside a caller's transaction, which checks everything: see
    /// [`Statements::new`].
    pub append_in_transaction: String,
    /// The LISTEN/NOTIFY channel appends notify.
    pub channel: String,
    /// Sends a notification on `$1`, the channel.
    pub notify: &'static str,
    pub read_stream: String,
    pub replay_stream: String,
    /// `replay_stream`, led by a row of version 0 and no name when the stream is closed, and
    /// then without its events: see `read::replay`.
    pub replay_if_open: String,
    pub stream_version: String,
    pub read_all: String,
    /// `read_all`'s page, with the payload and the metadata only of the rows a filter wants:
    /// `$1` after, `$2` limit, `$3` the aggregate types wanted (all when empty), `$4` the event
    /// names left out, `$5` the event names wanted (all when empty). Decoded by
    /// `read::read_filtered`.
    pub read_filtered: String,
    pub tail: String,
    /// How many events past `$1` are committed beyond the settled bound: what `read_all` holds
    /// back while older transactions are open.
    pub unsettled: String,
    /// Where the ids `$1` are stored, decoded by `row::stored_event`.
    pub stored_events: String,
    /// One whole event by its id, `$1`.
    pub read_event: String,
    pub save_snapshot: String,
    pub load_snapshot: String,
    pub checkpoints: CheckpointStatements,
    pub parking: ParkingStatements,
    pub catalog: CatalogStatements,
    pub import: ImportStatements,
    /// The key store of data subjects (`es_core::pii::KeyStore`).
    pub keys: KeyStatements,
    /// Stream lifecycle (`es_core::lifecycle`).
    pub lifecycle: LifecycleStatements,
}

/// The LISTEN/NOTIFY channel appends to schema `schema` notify: at most 63 bytes, PostgreSQL's
/// identifier limit.
pub(crate) fn notification_channel(schema: &str) -> String {
    let mut channel = format!("es_events_{schema}");
    channel.truncate(63);
    channel
}

impl Statements {
    /// The statements for schema `schema`, which must have passed [`validate_schema_name`].
    pub(crate) fn new(schema: &str) -> Self {
        let s = format!("\"{schema}\"");
        let shift = POSITION_SHIFT;
        let low_mask = MAX_EVENTS_PER_TRANSACTION;
        // What `read_all` may return after position `$1`.
        let settled_after = format!("position > $1 AND position < {}", settled_bound());
        let expectation_holds = Expectation::holds();
        let closed = append::stream_is_closed(&s);
        // The global log: the hot table and the archive, whose events keep their positions.
        let settled_log = format!(
            "(SELECT * FROM {s}.events WHERE {settled_after}
              UNION ALL
              SELECT * FROM {s}.archived_events WHERE {settled_after}) AS logged"
        );
        // A page of it, `$2` events from `$1` with `columns`, in order. Each side is ordered and
        // limited on its own so that the planner merges two position-ordered scans (Merge
        // Append); over the bare union it sorts the whole log, spilling to disk, before the
        // first row (a test checks the plan). Each side selects the columns itself, so the
        // merge passes rows on without projecting them again.
        let settled_page = |columns: &str| {
            format!(
                "((SELECT {columns} FROM {s}.events WHERE {settled_after} ORDER BY position LIMIT $2)
                  UNION ALL
                  (SELECT {columns} FROM {s}.archived_events WHERE {settled_after} ORDER BY position LIMIT $2))
                 AS logged"
            )
        };
        let (in_transaction_rows, in_transaction_metadata) = BatchShape::Many.rows(5);
        Self {
            schema: schema.to_owned(),
            migration_lock: "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            ensure_schema: format!(
                "CREATE SCHEMA IF NOT EXISTS {s};
                 CREATE TABLE IF NOT EXISTS {s}.es_migrations (
                     version     bigint      PRIMARY KEY,
                     description text        NOT NULL,
                     applied_at  timestamptz NOT NULL DEFAULT now()
                 );"
            ),
            applied_migrations: format!("SELECT version FROM {s}.es_migrations ORDER BY version"),
            record_migration: format!("INSERT INTO {s}.es_migrations (version, description) VALUES ($1, $2)"),
            migrations: MIGRATIONS
                .iter()
                .map(|(version, description, sql)| (*version, *description, sql.replace("{schema}", &s)))
                .collect(),
            // Every committed, visible event was written by a transaction that got its xid before
            // this statement began, so its xid is below ours. Otherwise the data was copied from
            // another cluster whose xid counter was further along.
            xid_check: format!(
                "SELECT (SELECT max(position) >> {shift} FROM {s}.events) AS stored_xid,
                        pg_current_xact_id()::text::bigint AS current_xid"
            ),
            channel: notification_channel(schema),
            notify: "SELECT pg_notify($1, '')",
            // One statement, one round trip, inside a caller's transaction that may already
            // have appended (or written anything). `head` reads the stream's last event and,
            // only when the calling transaction already has an xid, how many positions of that
            // xid are taken. `verdict` checks the expectation. The insert runs only if it
            // holds; its position and timestamp are scalar subqueries (init plans), evaluated
            // on first use only, so a refused or empty append never assigns an xid and commits
            // without a WAL flush.
            //
            // It returns the positions the rows were stored at, in batch order (versions grow
            // with the batch), NULL when nothing was inserted: the outcome names what is stored.
            //
            // $1 aggregate_type, $2 aggregate_id, $3 and $4 the expectation (`Expectation`),
            // $5..$13 the batch as arrays (`Batch::bind`).
            append_in_transaction: format!(
                "WITH last AS (
                     SELECT version, position FROM {s}.events
                     WHERE aggregate_type = $1 AND aggregate_id = $2
                     ORDER BY version DESC
                     LIMIT 1
                 ),
                 head AS MATERIALIZED (
                     SELECT
                         coalesce((SELECT version FROM last), 0) AS cur_version,
                         coalesce((SELECT position FROM last), 0) AS last_position,
                         coalesce((
                             SELECT max(position) & {low_mask} FROM {s}.events
                             WHERE position > (pg_current_xact_id_if_assigned()::text::bigint << {shift})
                               AND position < ((pg_current_xact_id_if_assigned()::text::bigint + 1) << {shift})
                         ), 0) AS used,
                         pg_current_xact_id_if_assigned()::text::bigint << {shift} AS assigned_base
                 ),
                 verdict AS (
                     SELECT
                         cur_version,
                         used,
                         {expectation_holds} AS accepted,
                         coalesce((assigned_base | (used + 1)) > last_position, true) AS fresh,
                         used + cardinality($5::uuid[]) <= {low_mask} AS fits,
                         {closed} AS closed
                     FROM head
                 ),
                 inserted AS (
                     INSERT INTO {s}.events ({INSERTED_COLUMNS})
                     SELECT (SELECT pg_current_xact_id()::text::bigint << {shift}) | (v.used + e.n),
                            e.event_id, $1, $2, v.cur_version + e.n,
                            e.event_name, e.schema_version, e.payload::jsonb, (SELECT clock_timestamp()),
                            {in_transaction_metadata}
                     FROM verdict v
                     CROSS JOIN {in_transaction_rows}
                     WHERE v.accepted AND v.fresh AND v.fits AND NOT v.closed
                     RETURNING position, version
                 )
                 SELECT cur_version, used, accepted, fresh, fits, closed,
                        (SELECT array_agg(position ORDER BY version) FROM inserted) AS positions
                 FROM verdict"
            ),
            append: AppendStatements::new(&s),
            read_stream: format!(
                "SELECT {EVENT_COLUMNS}
                 FROM {s}.events
                 WHERE {STREAM_SLICE}
                 ORDER BY version"
            ),
            // What loading an aggregate needs, and no more.
            replay_stream: format!(
                "SELECT {REPLAY_COLUMNS}
                 FROM {s}.events
                 WHERE {STREAM_SLICE}
                 ORDER BY version"
            ),
            // Both sides ordered by version, so the plan merges them: nothing is sorted. The
            // closure is asked once for the marker row and once (an init plan) for the guard.
            replay_if_open: format!(
                "SELECT {REPLAY_COLUMNS} FROM (
                     (SELECT 0::bigint AS version, NULL::text AS event_name, NULL::integer AS schema_version,
                             NULL::jsonb AS payload
                      FROM {s}.stream_states WHERE aggregate_type = $1 AND aggregate_id = $2)
                     UNION ALL
                     (SELECT version, event_name, schema_version, payload
                      FROM {s}.events
                      WHERE {STREAM_SLICE}
                        AND NOT EXISTS (SELECT FROM {s}.stream_states
                                        WHERE aggregate_type = $1 AND aggregate_id = $2)
                      ORDER BY version)
                 ) AS replay
                 ORDER BY version"
            ),
            stream_version: format!(
                "SELECT version FROM {s}.events
                 WHERE aggregate_type = $1 AND aggregate_id = $2
                 ORDER BY version DESC
                 LIMIT 1"
            ),
            // Only transactions older than every transaction still in flight: see the crate docs.
            read_all: format!(
                "SELECT * FROM {} ORDER BY position LIMIT $2",
                settled_page(EVENT_COLUMNS)
            ),
            // The same rows as `read_all` (the same bound and limit, so a page means the same),
            // each marked `wanted` by the filter; the rows it leaves out come without their
            // payload and metadata, which are neither converted to text nor decoded.
            read_filtered: format!(
                "SELECT {FILTERED_COLUMNS}
                 FROM (
                     SELECT {PAGE_COLUMNS},
                            (cardinality($3::text[]) = 0 OR aggregate_type = ANY($3::text[]))
                                AND (cardinality($5::text[]) = 0 OR event_name = ANY($5::text[]))
                                AND event_name <> ALL($4::text[]) AS wanted
                     FROM {}
                     ORDER BY position
                     LIMIT $2
                 ) AS page
                 ORDER BY position",
                settled_page(PAGE_COLUMNS)
            ),
            unsettled: format!(
                "SELECT count(*) FROM {s}.events WHERE position > $1 AND position >= {}",
                settled_bound()
            ),
            // `read_all`'s bound, counted: what it would still return, and its last event.
            tail: format!(
                "SELECT
                     (SELECT count(*) FROM {settled_log}) AS events,
                     head.position,
                     head.recorded_at,
                     head.aggregate_type,
                     head.aggregate_id,
                     head.version
                 FROM (SELECT 1) AS one
                 LEFT JOIN LATERAL (
                     SELECT position, recorded_at, aggregate_type, aggregate_id, version FROM {s}.events
                     WHERE {settled_after}
                     ORDER BY position DESC
                     LIMIT 1
                 ) AS head ON true"
            ),
            // Only on the failure paths of an append: where the batch's ids are stored, if
            // anywhere (a retried batch, or a duplicate id). `$1` the batch's ids.
            stored_events: format!("SELECT {STORED_EVENT_COLUMNS} FROM {s}.events WHERE event_id = ANY($1)"),
            read_event: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events WHERE event_id = $1
                 UNION ALL
                 SELECT {EVENT_COLUMNS} FROM {s}.archived_events WHERE event_id = $1"
            ),
            save_snapshot: format!(
                "INSERT INTO {s}.snapshots AS stored
                     (aggregate_type, aggregate_id, version, revision, schema_version, state, taken_at)
                 VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)
                 ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
                 SET version = excluded.version, revision = excluded.revision,
                     schema_version = excluded.schema_version, state = excluded.state, taken_at = excluded.taken_at
                 WHERE stored.version <= excluded.version"
            ),
            load_snapshot: format!(
                "SELECT {SNAPSHOT_COLUMNS} FROM {s}.snapshots
                 WHERE aggregate_type = $1 AND aggregate_id = $2"
            ),
            checkpoints: CheckpointStatements::new(&s),
            parking: ParkingStatements::new(&s),
            catalog: CatalogStatements::new(&s),
            import: ImportStatements::new(&s),
            keys: KeyStatements::new(&s),
            lifecycle: LifecycleStatements::new(&s, EVENT_COLUMNS, STREAM_SLICE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_validated_strictly() {
        for good in ["public", "_", "events_2", "a", &"x".repeat(63)] {
            assert!(validate_schema_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Public",
            "1abc",
            "a-b",
            "a b",
            "a\"b",
            "pg_catalog",
            "é",
            &"x".repeat(64),
            "x;drop",
        ] {
            assert!(validate_schema_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_expectation_has_its_arm_in_the_append_statement() {
        let statements = Statements::new("public");
        for expected in [
            ExpectedVersion::Any,
            ExpectedVersion::NoStream,
            ExpectedVersion::StreamExists,
            ExpectedVersion::Exact(3),
        ] {
            let (name, _) = Expectation::parameters(expected);
            assert!(
                statements
                    .append_in_transaction
                    .contains(&format!("WHEN '{name}' THEN")),
                "{expected}"
            );
        }
        assert_eq!(Expectation::parameters(ExpectedVersion::Exact(u64::MAX)).1, -1);
    }

    #[test]
    fn read_all_read_filtered_and_tail_share_the_settled_bound() {
        let statements = Statements::new("public");
        // The hot table and the archive, each bounded.
        assert_eq!(statements.read_all.matches(&settled_bound()).count(), 2);
        assert_eq!(statements.read_filtered.matches(&settled_bound()).count(), 2);
        assert_eq!(statements.tail.matches(&settled_bound()).count(), 3);
    }

    #[test]
    fn statements_quote_the_schema() {
        let statements = Statements::new("tenant_1");
        assert!(statements.append_in_transaction.contains("\"tenant_1\".events"));
        assert!(statements
            .append
            .get(BatchShape::Many, AppendBase::AfterHead)
            .contains("\"tenant_1\".events"));
        assert!(statements
            .migrations
            .iter()
            .all(|(_, _, sql)| !sql.contains("{schema}")));
    }
}
