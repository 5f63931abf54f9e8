//! The schema, the migrations and every SQL statement. Statements take bind parameters only and
//! are prepared once per connection (`prepare_cached`).

mod keys;
mod lifecycle;
mod migrations;

pub(crate) use keys::*;
pub(crate) use lifecycle::*;
pub(crate) use migrations::MIGRATIONS;

use crate::row::{event_columns, filtered_row, replay_columns, stored_columns};

/// The newest migration this code knows.
pub(crate) fn newest_migration() -> i64 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

// Migration bookkeeping.

/// Whether the migration history exists: no parameters.
pub(crate) const HISTORY_EXISTS: &str =
    "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'es_migrations'";
/// The newest migration recorded: no parameters; NULL when none is.
pub(crate) const NEWEST_APPLIED: &str = "SELECT max(version) FROM es_migrations";
pub(crate) const CREATE_HISTORY: &str = "CREATE TABLE IF NOT EXISTS es_migrations (
    version     INTEGER NOT NULL PRIMARY KEY,
    description TEXT    NOT NULL,
    applied_at  INTEGER NOT NULL
) STRICT";
pub(crate) const APPLIED: &str = "SELECT version FROM es_migrations ORDER BY version";
/// `?1` version, `?2` description, `?3` time.
pub(crate) const RECORD_MIGRATION: &str =
    "INSERT INTO es_migrations (version, description, applied_at) VALUES (?1, ?2, ?3)";

// Transactions.

/// Takes the database's write lock at once (waiting up to the busy timeout), so the transaction
/// reads what it then writes under the lock.
pub(crate) const BEGIN_IMMEDIATE: &str = "BEGIN IMMEDIATE";
pub(crate) const COMMIT: &str = "COMMIT";
pub(crate) const ROLLBACK: &str = "ROLLBACK";
/// Brackets an append inside a caller's transaction, so that a failed append leaves nothing of
/// its batch in the transaction, which stays usable.
pub(crate) const SAVEPOINT_APPEND: &str = "SAVEPOINT es_append";
/// Keeps the append's writes in the enclosing transaction.
pub(crate) const RELEASE_APPEND: &str = "RELEASE es_append";
/// Undoes the append's writes (the savepoint stays open: release it afterwards).
pub(crate) const ROLLBACK_TO_APPEND: &str = "ROLLBACK TO es_append";
/// A read transaction: the statements up to its end read one snapshot of the file.
pub(crate) const BEGIN_READ: &str = "BEGIN DEFERRED";
/// Reads the database header: fails on a file that is not a database.
pub(crate) const PROBE: &str = "SELECT count(*) FROM sqlite_schema";

// Appends.

/// The stream's version: `?1` aggregate_type, `?2` aggregate_id.
pub(crate) const STREAM_VERSION: &str = "SELECT version FROM events
    WHERE aggregate_type = ?1 AND aggregate_id = ?2
    ORDER BY version DESC LIMIT 1";
/// What an append reads of its stream, in one statement: its version, and whether it is closed
/// (`stream_states`, migration 6). `?1` aggregate_type, `?2` aggregate_id.
pub(crate) const STREAM_HEAD: &str = "SELECT
    coalesce((SELECT version FROM events WHERE aggregate_type = ?1 AND aggregate_id = ?2
              ORDER BY version DESC LIMIT 1), 0),
    EXISTS (SELECT 1 FROM stream_states WHERE aggregate_type = ?1 AND aggregate_id = ?2)";
/// When the last event was recorded: a new append is never recorded before it.
pub(crate) const LAST_RECORDED_AT: &str = "SELECT recorded_at FROM events ORDER BY position DESC LIMIT 1";
/// One event; SQLite assigns the position. `?1` event_id .. `?9` recorded_at.
pub(crate) const INSERT_EVENT: &str = "INSERT INTO events
    (event_id, aggregate_type, aggregate_id, version, event_name, schema_version, payload, metadata, recorded_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
/// Whether an event id is stored: `?1` event_id.
pub(crate) const EVENT_ID_EXISTS: &str = "SELECT count(*) FROM events WHERE event_id = ?1";
/// Where an event is stored, to recognise a retried batch: `?1` event_id. A probe of the
/// unique `event_id` index; no row for an id never stored.
pub(crate) const STORED_EVENT: &str = concat!("SELECT ", stored_columns!(), " FROM events WHERE event_id = ?1");

// Reads.

/// The rows of one stream in a slice: `?1` aggregate_type, `?2` aggregate_id, `?3`..`?4` the
/// version range, `?5` the `recorded_until` cut-off (`i64::MAX` for none).
macro_rules! stream_slice {
    () => {
        " FROM events
        WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND version >= ?3 AND version <= ?4 AND recorded_at <= ?5
        ORDER BY version"
    };
}

pub(crate) const READ_STREAM: &str = concat!("SELECT ", event_columns!(), stream_slice!());
/// What loading an aggregate needs, and no more.
pub(crate) const REPLAY_STREAM: &str = concat!("SELECT ", replay_columns!(), stream_slice!());
/// One event by its id: `?1` event_id.
pub(crate) const READ_EVENT: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE event_id = ?1 UNION ALL SELECT ",
    event_columns!(),
    " FROM archived_events WHERE event_id = ?1"
);
/// The archived rows of one stream in a slice (the parameters of `READ_STREAM`).
pub(crate) const READ_ARCHIVED: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM archived_events
    WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND version >= ?3 AND version <= ?4 AND recorded_at <= ?5
    ORDER BY version"
);
/// `?1` after, `?2` limit.
/// Archived events keep their positions and are read with the others, in one merge of the two
/// position indexes.
pub(crate) const READ_ALL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE position > ?1 UNION ALL SELECT ",
    event_columns!(),
    " FROM archived_events WHERE position > ?1 ORDER BY position LIMIT ?2"
);
/// `READ_ALL`'s page, with the payload and the metadata only of the rows a filter wants: `?1`
/// after, `?2` limit, `?3` the aggregate types wanted (a JSON array of strings; all when
/// empty), `?4` the event names left out (a JSON array), `?5` the event names wanted (all when
/// empty). One merge of the two position ranges,
/// each read in order: a row left out has its payload and metadata never read.
pub(crate) const READ_FILTERED: &str = concat!(
    "SELECT ",
    filtered_row!(),
    " FROM events WHERE position > ?1 UNION ALL SELECT ",
    filtered_row!(),
    " FROM archived_events WHERE position > ?1 ORDER BY position LIMIT ?2"
);
/// What `READ_ALL` would still return after `?1`: how many events, and the last one.
/// The head is always in `events`: a change that archives events appends its lifecycle event
/// after them.
pub(crate) const TAIL: &str = "SELECT
        (SELECT count(*) FROM events WHERE position > ?1)
            + (SELECT count(*) FROM archived_events WHERE position > ?1),
        head.position,
        head.recorded_at,
        head.aggregate_type,
        head.aggregate_id,
        head.version
    FROM (SELECT 1) AS one
    LEFT JOIN (
        SELECT position, recorded_at, aggregate_type, aggregate_id, version FROM events
        WHERE position > ?1 ORDER BY position DESC LIMIT 1
    ) AS head";

// Snapshots.

/// `?1` aggregate_type, `?2` aggregate_id, `?3` version, `?4` revision, `?5` state, `?6` taken_at,
/// `?7` schema_version. An older snapshot never replaces a newer one.
pub(crate) const SAVE_SNAPSHOT: &str = "INSERT INTO snapshots
        (aggregate_type, aggregate_id, version, revision, state, taken_at, schema_version)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
    ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
    SET version = excluded.version, revision = excluded.revision,
        state = excluded.state, taken_at = excluded.taken_at, schema_version = excluded.schema_version
    WHERE snapshots.version <= excluded.version";
/// `?1` aggregate_type, `?2` aggregate_id.
pub(crate) const LOAD_SNAPSHOT: &str = "SELECT version, revision, state, taken_at, schema_version FROM snapshots
    WHERE aggregate_type = ?1 AND aggregate_id = ?2";

// The catalog: listing streams by walking the stream index, and snapshots by their key.

/// The first stream at or after `(?1 aggregate_type, ?2 aggregate_id)`: one seek into the stream
/// index (`(aggregate_type, aggregate_id, version)`), which holds every stream in
/// `StreamId` order (BINARY collation compares UTF-8 bytes, as Rust compares strings).
pub(crate) const STREAM_FROM: &str = "SELECT aggregate_type, aggregate_id FROM events
    WHERE (aggregate_type, aggregate_id) >= (?1, ?2)
    ORDER BY aggregate_type, aggregate_id LIMIT 1";
/// The first stream after `(?1 aggregate_type, ?2 aggregate_id)`: one seek past that stream's
/// entries in the stream index.
pub(crate) const STREAM_AFTER: &str = "SELECT aggregate_type, aggregate_id FROM events
    WHERE (aggregate_type, aggregate_id) > (?1, ?2)
    ORDER BY aggregate_type, aggregate_id LIMIT 1";
/// The first stream of the first aggregate type after `?1`: one seek past the type's entries.
pub(crate) const STREAM_OF_NEXT_TYPE: &str = "SELECT aggregate_type, aggregate_id FROM events
    WHERE aggregate_type > ?1
    ORDER BY aggregate_type, aggregate_id LIMIT 1";
/// A stream's last event: its version (the stream's, since versions run 1, 2, 3, ... without a
/// gap) and when it was recorded. `?1` aggregate_type, `?2` aggregate_id.
pub(crate) const LAST_EVENT: &str = "SELECT version, recorded_at FROM events
    WHERE aggregate_type = ?1 AND aggregate_id = ?2
    ORDER BY version DESC LIMIT 1";

/// The snapshot columns listings select, in this order.
macro_rules! snapshot_page {
    ($bound:literal) => {
        concat!(
            "SELECT aggregate_type, aggregate_id, version, revision, state, taken_at, schema_version FROM snapshots
            WHERE (aggregate_type, aggregate_id) ",
            $bound,
            " (?1, ?2)
            ORDER BY aggregate_type, aggregate_id LIMIT ?3"
        )
    };
}

/// Up to `?3` snapshots of the streams at or after `(?1 aggregate_type, ?2 aggregate_id)`, in
/// key order: a range of the primary key.
pub(crate) const SNAPSHOTS_FROM: &str = snapshot_page!(">=");
/// Up to `?3` snapshots of the streams after `(?1 aggregate_type, ?2 aggregate_id)`.
pub(crate) const SNAPSHOTS_AFTER: &str = snapshot_page!(">");

// Projection checkpoints and claims.

/// Raises the claim epoch for a new owner: `?1` projection, `?2` owner, `?3` time.
pub(crate) const TAKE_CLAIM: &str = "INSERT INTO projection_checkpoints
        (projection, position, updated_at, claim_epoch, claim_owner, claimed_at)
    VALUES (?1, 0, ?3, 1, ?2, ?3)
    ON CONFLICT (projection) DO UPDATE
    SET claim_epoch = claim_epoch + 1, claim_owner = excluded.claim_owner, claimed_at = excluded.claimed_at
    RETURNING claim_epoch";
/// The checkpoint and claim, read inside a unit's write transaction: `?1` projection.
pub(crate) const UNIT_CHECKPOINT: &str =
    "SELECT position, claim_epoch, claim_owner FROM projection_checkpoints WHERE projection = ?1";
/// Saves the checkpoint under the unit's claim: `?1` projection, `?2` position, `?3` epoch,
/// `?4` time.
pub(crate) const SAVE_CHECKPOINT: &str = "UPDATE projection_checkpoints SET position = ?2, updated_at = ?4
    WHERE projection = ?1 AND claim_epoch = ?3";
/// Reads the checkpoint outside any unit: `?1` projection.
/// Sets another projection's checkpoint within a unit (a blue/green switch); its claim is
/// untouched: `?1` projection, `?2` position, `?3` now.
pub(crate) const HAND_OVER: &str = "INSERT INTO projection_checkpoints (projection, position, updated_at)
     VALUES (?1, ?2, ?3)
     ON CONFLICT (projection) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at";

pub(crate) const LOAD_CHECKPOINT: &str = "SELECT position FROM projection_checkpoints WHERE projection = ?1";

// Parked events.

/// The columns of a parked event, in the order `parking::parked_event` reads them.
macro_rules! parked_columns {
    () => {
        "projection, position, event_id, aggregate_type, aggregate_id, version, event_name, error, attempts, \
         parked_at, retry_requested"
    };
}

/// Parks an event within a unit, or replaces the error and attempts of one parked before
/// (keeping when it was first parked) and clears its retry request: `?1` projection, `?2`
/// position, `?3` event_id, `?4` aggregate_type, `?5` aggregate_id, `?6` version, `?7`
/// event_name, `?8` error, `?9` attempts, `?10` parked_at.
pub(crate) const PARK: &str = concat!(
    "INSERT INTO parked_events (",
    parked_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0)
    ON CONFLICT (projection, position) DO UPDATE
    SET event_id = excluded.event_id, aggregate_type = excluded.aggregate_type,
        aggregate_id = excluded.aggregate_id, version = excluded.version, event_name = excluded.event_name,
        error = excluded.error, attempts = excluded.attempts, retry_requested = 0"
);
/// Removes a parked event (within a unit, or for good): `?1` projection, `?2` position.
pub(crate) const UNPARK: &str = "DELETE FROM parked_events WHERE projection = ?1 AND position = ?2";
/// The parked events of `?1` projection, in position order: a range of the primary key.
pub(crate) const PARKED: &str = concat!(
    "SELECT ",
    parked_columns!(),
    " FROM parked_events WHERE projection = ?1 ORDER BY position"
);
/// Asks for a parked event to be retried: `?1` projection, `?2` position.
pub(crate) const REQUEST_RETRY: &str =
    "UPDATE parked_events SET retry_requested = 1 WHERE projection = ?1 AND position = ?2";

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A database in memory with every migration applied.
    pub(crate) fn migrated() -> rusqlite::Result<rusqlite::Connection> {
        let connection = rusqlite::Connection::open_in_memory()?;
        connection.execute_batch(CREATE_HISTORY)?;
        for migration in MIGRATIONS {
            connection.execute_batch(migration.sql)?;
        }
        Ok(connection)
    }

    #[test]
    fn migrations_ascend_and_every_statement_prepares() -> rusqlite::Result<()> {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        let connection = migrated()?;
        for sql in [
            HISTORY_EXISTS,
            NEWEST_APPLIED,
            APPLIED,
            RECORD_MIGRATION,
            PROBE,
            STREAM_VERSION,
            LAST_RECORDED_AT,
            INSERT_EVENT,
            EVENT_ID_EXISTS,
            STORED_EVENT,
            READ_EVENT,
            READ_STREAM,
            REPLAY_STREAM,
            READ_ALL,
            READ_FILTERED,
            TAIL,
            SAVE_SNAPSHOT,
            LOAD_SNAPSHOT,
            STREAM_FROM,
            STREAM_AFTER,
            STREAM_OF_NEXT_TYPE,
            LAST_EVENT,
            SNAPSHOTS_FROM,
            SNAPSHOTS_AFTER,
            BEGIN_READ,
            TAKE_CLAIM,
            UNIT_CHECKPOINT,
            SAVE_CHECKPOINT,
            LOAD_CHECKPOINT,
            PARK,
            UNPARK,
            PARKED,
            REQUEST_RETRY,
        ] {
            if let Err(error) = connection.prepare(sql) {
                panic!("{sql}: {error}");
            }
        }
        Ok(())
    }

    /// What SQLite will do for `sql`: the details of `EXPLAIN QUERY PLAN`, joined.
    fn plan(connection: &rusqlite::Connection, sql: &str) -> rusqlite::Result<String> {
        Ok(connection
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .and_then(|mut statement| {
                let zeros = rusqlite::params_from_iter(std::iter::repeat_n(0, statement.parameter_count()));
                let details = statement.query_map(zeros, |row| row.get::<_, String>(3))?;
                details.collect::<Result<Vec<_>, _>>()
            })?
            .join("; "))
    }

    #[test]
    fn stream_reads_and_lookups_by_id_use_an_index() -> rusqlite::Result<()> {
        let connection = migrated()?;
        // STORED_EVENT runs in every append (the retry probe): a scan would make appends read the table.
        // The catalog's statements are the steps of its walk over the stream index: a scan in any
        // of them would read every event for each stream listed.
        for sql in [
            READ_STREAM,
            REPLAY_STREAM,
            STREAM_VERSION,
            STORED_EVENT,
            READ_EVENT,
            EVENT_ID_EXISTS,
            STREAM_FROM,
            STREAM_AFTER,
            STREAM_OF_NEXT_TYPE,
            LAST_EVENT,
        ] {
            let plan = plan(&connection, sql)?;
            assert!(
                plan.contains("SEARCH events USING") && plan.contains("INDEX"),
                "{sql}: {plan}"
            );
            assert!(!plan.contains("SCAN"), "{sql}: {plan}");
            assert!(!plan.contains("TEMP B-TREE"), "no sort step: {plan}");
        }
        // The walk's steps seek on both columns (or the type) of the stream index, not on a
        // prefix of it, and read no row but the last event's.
        for (sql, seek) in [
            (STREAM_FROM, "(aggregate_type,aggregate_id)>"),
            (STREAM_AFTER, "(aggregate_type,aggregate_id)>"),
            (STREAM_OF_NEXT_TYPE, "(aggregate_type>?)"),
            (LAST_EVENT, "(aggregate_type=? AND aggregate_id=?)"),
        ] {
            let plan = plan(&connection, sql)?;
            assert!(plan.contains(seek), "{sql}: {plan}");
            assert_eq!(plan.contains("COVERING INDEX"), sql != LAST_EVENT, "{sql}: {plan}");
        }
        // The filtered read is one range of the position key, flattened (no subquery run as a
        // co-routine or materialized, which would read every row's payload and metadata).
        // An append's one read of its stream: two index probes, nothing scanned.
        let head = plan(&connection, STREAM_HEAD)?;
        for probe in [
            "SEARCH events USING COVERING INDEX",
            "SEARCH stream_states USING PRIMARY KEY (aggregate_type=? AND aggregate_id=?)",
        ] {
            assert!(head.contains(probe), "{head}");
        }
        assert!(
            !head.contains("SCAN events") && !head.contains("SCAN stream_states"),
            "{head}"
        );
        // Both reads of the global log merge two ranges of the position keys, each read in
        // order: no sort of what lies after the page, no scan, nothing materialized.
        for sql in [READ_ALL, READ_FILTERED] {
            let plan = plan(&connection, sql)?;
            assert!(plan.contains("MERGE (UNION ALL)"), "{plan}");
            for range in [
                "SEARCH events USING INTEGER PRIMARY KEY (rowid>?)",
                "SEARCH archived_events USING INTEGER PRIMARY KEY (rowid>?)",
            ] {
                assert!(plan.contains(range), "{plan}");
            }
            for not in ["MATERIALIZE", "TEMP B-TREE", "SCAN events", "SCAN archived_events"] {
                assert!(!plan.contains(not), "{plan}");
            }
        }
        let parked = plan(&connection, PARKED)?;
        assert!(
            parked.contains("SEARCH parked_events USING PRIMARY KEY (projection=?)"),
            "{parked}"
        );
        assert!(!parked.contains("TEMP B-TREE"), "no sort step: {parked}");
        for sql in [SNAPSHOTS_FROM, SNAPSHOTS_AFTER] {
            let plan = plan(&connection, sql)?;
            assert!(
                plan.contains("SEARCH snapshots USING PRIMARY KEY ((aggregate_type,aggregate_id)>"),
                "{sql}: {plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "no sort step: {plan}");
        }
        Ok(())
    }
}
