//! The database side of an import: the resume record, each chunk's transaction (claim, `COPY`,
//! progress, commit), and what a refused chunk means.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, Postgres, Row};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::copy::Chunk;
use super::error::ImportError;
use crate::fault::store_error;
use crate::sql::{ImportStatements, Statements, EVENT_ID_CONSTRAINT, STREAM_VERSION_CONSTRAINT};

/// The SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";
/// The class of data exceptions: the server refused a value (JSON it cannot parse or hold, a
/// NUL in text, a timestamp out of range).
const DATA_EXCEPTION_CLASS: &str = "22";
/// `program_limit_exceeded`: a value over one of the server's own limits (a `jsonb` value whose
/// binary form passes 256 MiB).
const PROGRAM_LIMIT_EXCEEDED: &str = "54000";

/// An import's resume record.
#[derive(Debug, Clone, Copy)]
pub(super) struct Record {
    /// How many events of the source are stored.
    pub(super) events_done: u64,
    /// The id of the last one.
    pub(super) last_event_id: Option<Uuid>,
    /// The digest of the stored events' streams and ids, in source order.
    pub(super) digest: u64,
    /// Whether the source was exhausted.
    pub(super) finished: bool,
}

/// What a chunk's transaction records with it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Progress {
    /// Events stored before the chunk.
    pub(super) events_before: u64,
    /// The digest after the chunk's events.
    pub(super) digest: u64,
    /// Whether the source ended with this chunk.
    pub(super) exhausted: bool,
}

/// Writes an import's chunks one after the other on one connection, each from a task of its
/// own: while a chunk is copied, the next is read from the source and encoded (on another core,
/// on a multi-threaded runtime). A chunk starts only once the one before it committed.
pub(super) struct Writer {
    sql: Arc<Statements>,
    name: Arc<str>,
    /// The connection, when no chunk is in flight.
    conn: Option<PoolConnection<Postgres>>,
    in_flight: Option<JoinHandle<Written>>,
}

/// What the task writing a chunk hands back.
struct Written {
    conn: PoolConnection<Postgres>,
    chunk: Chunk,
    result: Result<(), ImportError>,
}

impl Writer {
    /// A writer for import `name` on `conn`.
    pub(super) fn new(sql: Arc<Statements>, name: &str, conn: PoolConnection<Postgres>) -> Self {
        Self {
            sql,
            name: name.into(),
            conn: Some(conn),
            in_flight: None,
        }
    }

    fn unexpected(message: &str) -> ImportError {
        ImportError::Store(crate::PostgresError::Unexpected(message.to_owned()).into())
    }

    /// Starts writing `chunk`, after the chunk before it was [settled](Writer::settle).
    pub(super) fn start(&mut self, chunk: Chunk, progress: Progress) -> Result<(), ImportError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Self::unexpected("no Tokio runtime"))?;
        let mut conn = self
            .conn
            .take()
            .ok_or_else(|| Self::unexpected("a chunk started before the one in flight settled"))?;
        let (sql, name) = (Arc::clone(&self.sql), Arc::clone(&self.name));
        self.in_flight = Some(runtime.spawn(async move {
            let mut chunk = chunk;
            let result = write_chunk(&sql.import, &mut conn, &name, &mut chunk, progress).await;
            Written { conn, chunk, result }
        }));
        Ok(())
    }

    /// Waits for the chunk in flight, if any: once it committed, the chunk (to fill again).
    pub(super) async fn settle(&mut self) -> Result<Option<Chunk>, ImportError> {
        let Some(in_flight) = self.in_flight.take() else {
            return Ok(None);
        };
        let written = in_flight
            .await
            .map_err(|error| Self::unexpected(&format!("the task writing a chunk failed: {error}")))?;
        self.conn = Some(written.conn);
        written.result.map(|()| Some(written.chunk))
    }

    /// Marks the import finished, when the source ended right after its last chunk (settled).
    pub(super) async fn finish(&mut self, events_done: u64) -> Result<(), ImportError> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Self::unexpected("finishing with a chunk in flight"))?;
        finish(&self.sql.import, conn, &self.name, events_done).await
    }
}

fn sql_error(error: sqlx::Error) -> ImportError {
    ImportError::Store(store_error(error))
}

fn count(value: i64, what: &str) -> Result<u64, ImportError> {
    u64::try_from(value).map_err(|_| Writer::unexpected(&format!("a negative {what} ({value}) in the imports table")))
}

/// The resume record of import `name`, created (at 0 events) if it has none.
pub(super) async fn begin(sql: &ImportStatements, conn: &mut PgConnection, name: &str) -> Result<Record, ImportError> {
    sqlx::query(&sql.begin)
        .bind(name)
        .execute(&mut *conn)
        .await
        .map_err(sql_error)?;
    let row = sqlx::query(&sql.record)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(sql_error)?
        .ok_or_else(|| ImportError::ConcurrentRun { name: name.to_owned() })?;
    let events_done: i64 = row.try_get("events_done").map_err(sql_error)?;
    let digest: i64 = row.try_get("source_digest").map_err(sql_error)?;
    Ok(Record {
        events_done: count(events_done, "events_done")?,
        last_event_id: row.try_get("last_event_id").map_err(sql_error)?,
        digest: u64::from_be_bytes(digest.to_be_bytes()),
        finished: row.try_get("finished").map_err(sql_error)?,
    })
}

/// Marks import `name` finished, when the source ended right after its last chunk.
async fn finish(
    sql: &ImportStatements,
    conn: &mut PgConnection,
    name: &str,
    events_done: u64,
) -> Result<(), ImportError> {
    let done = i64::try_from(events_done).unwrap_or(i64::MAX);
    let marked = sqlx::query(&sql.finish)
        .bind(name)
        .bind(done)
        .execute(&mut *conn)
        .await
        .map_err(sql_error)?;
    match marked.rows_affected() {
        1 => Ok(()),
        _ => Err(ImportError::ConcurrentRun { name: name.to_owned() }),
    }
}

/// Writes `chunk` in one transaction: takes the transaction id and locks the resume record,
/// copies the rows with their positions, advances the record, commits. On any error the
/// transaction rolls back: nothing of the chunk is written.
async fn write_chunk(
    sql: &ImportStatements,
    conn: &mut PgConnection,
    name: &str,
    chunk: &mut Chunk,
    progress: Progress,
) -> Result<(), ImportError> {
    let concurrent = || ImportError::ConcurrentRun { name: name.to_owned() };
    let Some(last_event_id) = chunk.rows().last().map(|row| row.at.event_id) else {
        return Ok(());
    };
    let beyond = |_| Writer::unexpected("more events than a bigint counts");
    let events_before = i64::try_from(progress.events_before).map_err(beyond)?;
    let events_after = i64::try_from(progress.events_before + chunk.len() as u64).map_err(beyond)?;
    let mut tx = conn.begin().await.map_err(sql_error)?;
    let claim = sqlx::query(&sql.claim)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql_error)?
        .ok_or_else(concurrent)?;
    let xid: i64 = claim.try_get("xid").map_err(sql_error)?;
    let stored: i64 = claim.try_get("events_done").map_err(sql_error)?;
    let finished: bool = claim.try_get("finished").map_err(sql_error)?;
    if stored != events_before || finished {
        return Err(concurrent());
    }
    let data = chunk.seal(xid).map_err(|message| Writer::unexpected(&message))?;
    let mut copy = tx.copy_in_raw(&sql.copy).await.map_err(sql_error)?;
    copy.send(data).await.map_err(sql_error)?;
    let copied = match copy.finish().await {
        Ok(copied) => copied,
        Err(error) => {
            tx.rollback().await.map_err(sql_error)?;
            return Err(explain(sql, conn, error, chunk, progress.events_before).await);
        }
    };
    if copied != chunk.len() as u64 {
        return Err(Writer::unexpected(&format!(
            "COPY stored {copied} of {} events",
            chunk.len()
        )));
    }
    // After the COPY, in its transaction: a change of a stream's lifecycle locks `events`
    // against writers, so it either committed before this look-up or waits for the chunk.
    let (types, ids): (Vec<&str>, Vec<&str>) = chunk
        .rows()
        .iter()
        .map(|row| {
            (
                row.at.stream.aggregate_type.as_str(),
                row.at.stream.aggregate_id.as_str(),
            )
        })
        .unzip();
    let closed: Option<i64> = sqlx::query_scalar(&sql.closed_stream)
        .bind(types)
        .bind(ids)
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql_error)?;
    if let Some(n) = closed {
        let row = usize::try_from(n - 1).ok().and_then(|index| chunk.rows().get(index));
        let event = row
            .map(|row| row.at.clone())
            .ok_or_else(|| Writer::unexpected("a closed stream outside the chunk"))?;
        tx.rollback().await.map_err(sql_error)?;
        return Err(ImportError::StreamClosed { event });
    }
    sqlx::query(&sql.advance)
        .bind(name)
        .bind(events_after)
        .bind(last_event_id)
        .bind(i64::from_be_bytes(progress.digest.to_be_bytes()))
        .bind(progress.exhausted)
        .execute(&mut *tx)
        .await
        .map_err(sql_error)?;
    tx.commit().await.map_err(sql_error)
}

/// What a refused `COPY` means, after its transaction rolled back: the event it stumbled on,
/// when that can be told. A unique violation is explained by looking the chunk's ids or
/// versions up (never from the message); a refused value by the row number of the error's
/// context (`COPY events, line N`), the only place the server names it.
async fn explain(
    sql: &ImportStatements,
    conn: &mut PgConnection,
    error: sqlx::Error,
    chunk: &Chunk,
    first_index: u64,
) -> ImportError {
    let Some(db) = error.as_database_error() else {
        return sql_error(error);
    };
    let code = db.code().map(|code| code.into_owned()).unwrap_or_default();
    if code.starts_with(DATA_EXCEPTION_CLASS) || code == PROGRAM_LIMIT_EXCEEDED {
        let message = db.message().to_owned();
        let line = db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .and_then(|pg| pg.r#where())
            .and_then(copy_line);
        return match line.and_then(|line| chunk.rows().get(line - 1)) {
            Some(row) => ImportError::Refused {
                event: row.at.clone(),
                message,
            },
            None => ImportError::RefusedChunk {
                first: first_index,
                last: first_index + (chunk.len() as u64).saturating_sub(1),
                message,
            },
        };
    }
    if code != UNIQUE_VIOLATION {
        return sql_error(error);
    }
    let rows = chunk.rows();
    let found = match db.constraint() {
        Some(EVENT_ID_CONSTRAINT) => {
            if let Some(repeated) = repeated_id(chunk) {
                return ImportError::DuplicateEventId {
                    event: rows[repeated].at.clone(),
                };
            }
            let ids: Vec<Uuid> = rows.iter().map(|row| row.at.event_id).collect();
            sqlx::query_scalar::<_, i64>(&sql.stored_id)
                .bind(ids)
                .fetch_optional(&mut *conn)
                .await
                .map(|n| n.map(|n| (n, false)))
        }
        Some(STREAM_VERSION_CONSTRAINT) => {
            let types: Vec<&str> = rows.iter().map(|row| row.at.stream.aggregate_type.as_str()).collect();
            let ids: Vec<&str> = rows.iter().map(|row| row.at.stream.aggregate_id.as_str()).collect();
            let versions: Vec<i64> = rows.iter().map(|row| row.version).collect();
            sqlx::query_scalar::<_, i64>(&sql.taken_version)
                .bind(types)
                .bind(ids)
                .bind(versions)
                .fetch_optional(&mut *conn)
                .await
                .map(|n| n.map(|n| (n, true)))
        }
        _ => return sql_error(error),
    };
    let row = match found {
        Ok(Some((n, taken))) => usize::try_from(n - 1)
            .ok()
            .and_then(|i| rows.get(i))
            .map(|row| (row, taken)),
        // The clashing row is gone (or the look-up failed): report the database's error.
        Ok(None) | Err(_) => None,
    };
    match row {
        Some((row, true)) => ImportError::StreamHasEvents {
            event: row.at.clone(),
            version: u64::try_from(row.version).unwrap_or(0),
        },
        Some((row, false)) => ImportError::DuplicateEventId { event: row.at.clone() },
        None => sql_error(error),
    }
}

/// The row number (from 1) in a `COPY` error's context, whose lines go from the innermost out:
/// `JSON data, line 1: {bad` then `COPY events, line 3, column payload: ...`.
fn copy_line(context: &str) -> Option<usize> {
    context
        .lines()
        .filter(|line| line.starts_with("COPY "))
        .find_map(|line| {
            let after = line.split(", line ").nth(1)?;
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok().filter(|line| *line > 0)
        })
}

/// The index in `chunk` of the first event whose id an earlier event of the chunk has.
fn repeated_id(chunk: &Chunk) -> Option<usize> {
    let mut seen = HashSet::with_capacity(chunk.len());
    chunk.rows().iter().position(|row| !seen.insert(row.at.event_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_row_of_a_copy_error_is_read_from_its_context() {
        assert_eq!(copy_line("COPY events, line 3, column payload: \"{bad\""), Some(3));
        assert_eq!(copy_line("COPY events, line 12"), Some(12));
        assert_eq!(
            copy_line("JSON data, line 1: {bad\nCOPY events, line 7, column payload: \"{bad\""),
            Some(7)
        );
        assert_eq!(copy_line("JSON data, line 1: {bad"), None);
        assert_eq!(copy_line("COPY events, line 0"), None);
        assert_eq!(copy_line("something else"), None);
    }
}
