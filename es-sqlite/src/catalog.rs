//! The store's [`StreamCatalog`]: streams listed by walking the stream index from stream to
//! stream, snapshots by ranges of their key. The walk reads index entries, and one event row
//! per stream it lists (the last).
//!
//! The `events` table has no row per stream, but its unique index on `(aggregate_type,
//! aggregate_id, version)` holds every stream's entries together, in `StreamId` order (SQLite's
//! default BINARY collation compares the UTF-8 bytes, as Rust compares strings). One seek
//! (`STREAM_AFTER`) jumps from a stream past all its entries to the next stream, another
//! (`LAST_EVENT`) finds a stream's last entry and reads that one row: a page of `n` streams costs
//! about `2n` seeks, however many events the streams hold. Filters steer the seeks: ids with a
//! prefix are contiguous within a type, from the prefix itself up to the first id that does not
//! start with it, so the walk seeks to the prefix, takes streams while they match, and then
//! leaves the type (`STREAM_OF_NEXT_TYPE`), or stops when the query names the type. The prefix
//! is compared in Rust, never with `LIKE`, so `%` and `_` in it are plain characters.

use std::sync::Arc;

use async_trait::async_trait;
use es_core::{Snapshot, StoreError, StoreResult, StreamCatalog, StreamId, StreamQuery, StreamSummary};
use rusqlite::{params, Connection, OptionalExtension};

use crate::connection::{blocking, run, Database};
use crate::row::instant;
use crate::snapshot::{snapshot_row, stored_snapshot};
use crate::{sql, SqliteStore};

/// The most room reserved for a page up front, whatever its limit.
const PAGE_CAPACITY: usize = 1024;

#[async_trait]
impl StreamCatalog for SqliteStore {
    /// [`StreamCatalog::list_streams`]: a walk over the stream index in one read transaction, so
    /// the page is one snapshot of the file.
    async fn list_streams(&self, query: &StreamQuery) -> StoreResult<Vec<StreamSummary>> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let (database, query) = (Arc::clone(&self.database), query.clone());
        blocking(move || {
            database
                .with_reader(|connection| in_one_read(&database, connection, || walk(&database, connection, &query)))
        })
        .await
    }

    /// [`StreamCatalog::list_snapshots`]: one range of the `snapshots` table's primary key.
    async fn list_snapshots(&self, after: Option<&StreamId>, limit: usize) -> StoreResult<Vec<Snapshot>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (database, after) = (Arc::clone(&self.database), after.cloned());
        // More than any table holds: a limit past i64 is no limit.
        let db_limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = blocking(move || {
            database.with_reader(|connection| {
                let (statement, bound) = match &after {
                    Some(after) => (sql::SNAPSHOTS_AFTER, after.clone()),
                    // Every text sorts at or after the empty one.
                    None => (sql::SNAPSHOTS_FROM, StreamId::new("", "")),
                };
                connection
                    .prepare_cached(statement)
                    .and_then(|mut statement| {
                        let rows = statement.query_map(
                            params![bound.aggregate_type, bound.aggregate_id, db_limit],
                            |row| {
                                let stream = StreamId::new(row.get::<_, String>(0)?, row.get::<_, String>(1)?);
                                Ok((stream, snapshot_row(row, 2)?))
                            },
                        )?;
                        rows.collect::<Result<Vec<_>, _>>()
                    })
                    .map_err(|error| StoreError::from(database.error(error)))
            })
        })
        .await?;
        rows.into_iter()
            .map(|(stream, row)| stored_snapshot(stream, row))
            .collect()
    }
}

/// Runs `read` in a read transaction on `connection`, so that its statements see one snapshot
/// of the file (blocking).
fn in_one_read<T>(
    database: &Database,
    connection: &Connection,
    read: impl FnOnce() -> StoreResult<T>,
) -> StoreResult<T> {
    run(connection, sql::BEGIN_READ).map_err(|error| StoreError::from(database.error(error)))?;
    let result = read();
    if !connection.is_autocommit() {
        // Nothing was written: ending the read by rollback is the same as by commit. Should it
        // fail, the connection stays in the transaction and the pool closes it, which ends it.
        let _ = run(connection, sql::ROLLBACK);
    }
    result
}

/// Where the walk looks for the next stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seek {
    /// The first stream at or after this one.
    From(StreamId),
    /// The first stream after this one.
    After(StreamId),
    /// The first stream of the first aggregate type after this one.
    NextType(String),
}

/// What the walk does with a stream it found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// List it, and go on after it.
    Take,
    /// Skip it and whatever lies before this seek's target: nothing there can match.
    Skip(Seek),
    /// Nothing from here on can match.
    Stop,
}

/// Where the walk starts: at the first stream the filters allow, or after `query.after` if that
/// is further on.
fn start(query: &StreamQuery) -> Seek {
    // Every stream that passes the filters sorts at or after this one, the named type (or the
    // empty one, the first of all) with the prefix as its id: an id sorts at or after any
    // prefix of it, and a stream of a later type after every stream of an earlier one.
    let first = StreamId::new(
        query.aggregate_type.clone().unwrap_or_default(),
        query.id_prefix.clone().unwrap_or_default(),
    );
    match &query.after {
        Some(after) if *after >= first => Seek::After(after.clone()),
        _ => Seek::From(first),
    }
}

/// Whether `stream`, found by the walk at or after its start, is listed; if not, where the next
/// stream that may be listed can be.
fn judge(query: &StreamQuery, stream: &StreamId) -> Step {
    let prefix = query.id_prefix.as_deref().unwrap_or_default();
    if let Some(kind) = &query.aggregate_type {
        match stream.aggregate_type.cmp(kind) {
            std::cmp::Ordering::Less => return Step::Skip(Seek::From(StreamId::new(kind, prefix))),
            std::cmp::Ordering::Greater => return Step::Stop,
            std::cmp::Ordering::Equal => {}
        }
    }
    if stream.aggregate_id.starts_with(prefix) {
        Step::Take
    } else if stream.aggregate_id.as_str() < prefix {
        // Before the prefix's ids of this type: they start at the prefix itself.
        Step::Skip(Seek::From(StreamId::new(&stream.aggregate_type, prefix)))
    } else if query.aggregate_type.is_some() {
        // Past them, in the only type listed.
        Step::Stop
    } else {
        Step::Skip(Seek::NextType(stream.aggregate_type.clone()))
    }
}

/// Walks the stream index as `query` says, up to its limit (blocking).
fn walk(database: &Database, connection: &Connection, query: &StreamQuery) -> StoreResult<Vec<StreamSummary>> {
    let failed = |error| StoreError::from(database.error(error));
    let mut listed = Vec::with_capacity(query.limit.min(PAGE_CAPACITY));
    let mut seek = start(query);
    while listed.len() < query.limit {
        // Every seek lands strictly past the stream that led to it: the walk only moves on.
        let Some(stream) = next_stream(connection, &seek).map_err(failed)? else {
            break;
        };
        match judge(query, &stream) {
            Step::Take => {
                listed.extend(summarize(database, connection, stream.clone())?);
                seek = Seek::After(stream);
            }
            Step::Skip(next) => seek = next,
            Step::Stop => break,
        }
    }
    Ok(listed)
}

/// The stream `seek` lands on, if any: one seek into the stream index.
fn next_stream(connection: &Connection, seek: &Seek) -> rusqlite::Result<Option<StreamId>> {
    let stream_of = |row: &rusqlite::Row<'_>| Ok(StreamId::new(row.get::<_, String>(0)?, row.get::<_, String>(1)?));
    match seek {
        Seek::From(stream) | Seek::After(stream) => {
            let statement = if matches!(seek, Seek::From(_)) {
                sql::STREAM_FROM
            } else {
                sql::STREAM_AFTER
            };
            connection
                .prepare_cached(statement)?
                .query_row(params![stream.aggregate_type, stream.aggregate_id], stream_of)
                .optional()
        }
        Seek::NextType(kind) => connection
            .prepare_cached(sql::STREAM_OF_NEXT_TYPE)?
            .query_row([kind], stream_of)
            .optional(),
    }
}

/// `stream`'s version and last activity, from its last event: one lookup in the stream index
/// and one row read. `None` if the stream has no event, which cannot happen within the walk's
/// read transaction (events are never deleted); a value out of range is corrupt.
fn summarize(database: &Database, connection: &Connection, stream: StreamId) -> StoreResult<Option<StreamSummary>> {
    let last: Option<(i64, i64)> = connection
        .prepare_cached(sql::LAST_EVENT)
        .and_then(|mut statement| {
            statement
                .query_row(params![stream.aggregate_type, stream.aggregate_id], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()
        })
        .map_err(|error| StoreError::from(database.error(error)))?;
    let Some((version, recorded_at)) = last else {
        return Ok(None);
    };
    let corrupt = |reason: String| StoreError::Corrupt {
        stream: stream.clone(),
        version: u64::try_from(version).unwrap_or(0),
        reason,
    };
    let version = u64::try_from(version).map_err(|_| corrupt(format!("stored version {version} is negative")))?;
    let last_recorded_at =
        instant(recorded_at).ok_or_else(|| corrupt(format!("recorded_at {recorded_at} is out of range")))?;
    Ok(Some(StreamSummary {
        stream,
        version,
        last_recorded_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(kind: Option<&str>, prefix: Option<&str>, after: Option<(&str, &str)>) -> StreamQuery {
        StreamQuery {
            aggregate_type: kind.map(str::to_owned),
            id_prefix: prefix.map(str::to_owned),
            after: after.map(|(kind, id)| StreamId::new(kind, id)),
            limit: 10,
        }
    }

    fn id(kind: &str, id: &str) -> StreamId {
        StreamId::new(kind, id)
    }

    #[test]
    fn the_walk_starts_at_the_furthest_bound() {
        assert_eq!(start(&query(None, None, None)), Seek::From(id("", "")));
        assert_eq!(start(&query(Some("t"), Some("p"), None)), Seek::From(id("t", "p")));
        // `after` before the filters' first stream: start at the filters'.
        assert_eq!(
            start(&query(Some("t"), Some("p"), Some(("s", "z")))),
            Seek::From(id("t", "p"))
        );
        assert_eq!(
            start(&query(Some("t"), Some("p"), Some(("t", "a")))),
            Seek::From(id("t", "p"))
        );
        // At or past it: start after `after`.
        assert_eq!(
            start(&query(Some("t"), Some("p"), Some(("t", "p")))),
            Seek::After(id("t", "p"))
        );
        assert_eq!(
            start(&query(Some("t"), None, Some(("t", "a")))),
            Seek::After(id("t", "a"))
        );
        assert_eq!(
            start(&query(None, Some("p"), Some(("a", "a")))),
            Seek::After(id("a", "a"))
        );
    }

    #[test]
    fn the_walk_skips_to_where_a_match_can_be_and_stops_past_the_last() {
        let typed = query(Some("t"), Some("p%_"), None);
        assert_eq!(judge(&typed, &id("t", "p%_1")), Step::Take);
        assert_eq!(judge(&typed, &id("s", "p%_1")), Step::Skip(Seek::From(id("t", "p%_"))));
        assert_eq!(judge(&typed, &id("t", "a")), Step::Skip(Seek::From(id("t", "p%_"))));
        // `%` and `_` are characters, not patterns.
        assert_eq!(judge(&typed, &id("t", "p%x")), Step::Stop);
        assert_eq!(judge(&typed, &id("t", "pxx")), Step::Stop);
        assert_eq!(judge(&typed, &id("u", "p%_1")), Step::Stop);

        let any_type = query(None, Some("p"), None);
        assert_eq!(judge(&any_type, &id("a", "pa")), Step::Take);
        assert_eq!(judge(&any_type, &id("a", "o")), Step::Skip(Seek::From(id("a", "p"))));
        assert_eq!(judge(&any_type, &id("a", "q")), Step::Skip(Seek::NextType("a".into())));

        let everything = query(None, None, None);
        assert_eq!(judge(&everything, &id("", "")), Step::Take);
        assert_eq!(judge(&everything, &id("z", "z")), Step::Take);
    }

    #[test]
    fn prefixes_are_contiguous_in_the_order_sqlite_walks() -> rusqlite::Result<()> {
        // The walk relies on SQLite ordering ids as Rust does, so that ids with a prefix are
        // one run from the prefix on: check it on ids that a character-wise or case-blind
        // order would sort differently.
        let connection = crate::sql::tests::migrated()?;
        let ids = [
            "ab",
            "a",
            "aé",
            "a%",
            "a_",
            "aB",
            "b",
            "é",
            "Z",
            "a\u{10000}",
            "a\u{ffff}",
        ];
        for (n, aggregate_id) in ids.iter().enumerate() {
            connection.execute(
                "INSERT INTO events (event_id, aggregate_type, aggregate_id, version, event_name, schema_version,
                    payload, metadata, recorded_at) VALUES (?1, 't', ?2, 1, 'E', 1, '{}', '{}', 0)",
                params![uuid::Uuid::from_u128(n as u128).as_bytes(), aggregate_id],
            )?;
        }
        let mut walked = Vec::new();
        let mut seek = Seek::From(id("", ""));
        while let Some(stream) = next_stream(&connection, &seek)? {
            walked.push(stream.aggregate_id.clone());
            seek = Seek::After(stream);
        }
        let mut sorted: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
        sorted.sort();
        assert_eq!(walked, sorted);
        Ok(())
    }
}
