//! Reads: one stream (whole events, or the zero-copy replay), one event by id, a stream's
//! version, and the global order (`read_all`, `read_filtered`, `tail`).

use chrono::{DateTime, Utc};
use es_core::EventStream;
use es_core::{
    LogFilter, LogPage, LogReplay, LogReplayFn, RecordedEvent, ReplayFn, StoreError, StoreResult, StreamId,
    StreamSlice, Tail,
};
use futures_util::{StreamExt, TryStreamExt};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{Postgres, Row};
use uuid::Uuid;

use crate::error::PostgresError;
use crate::fault::store_error;
use crate::row::{col, corrupt_row, logged_event, negative_version, recorded_event, replayed_event, stored_metadata};
use crate::PostgresStore;

/// [`EventStore::read_stream`](es_core::EventStore::read_stream): rows are mapped as they
/// arrive.
pub(crate) fn read_stream<'a>(store: &'a PostgresStore, stream: &'a StreamId, slice: StreamSlice) -> EventStream<'a> {
    stream_rows(store, &store.sql.read_stream, stream, slice)
}

/// The events of `stream` within `slice` that `statement` (with the parameters of
/// `read_stream`) reads: the hot table's or the archive's.
pub(crate) fn stream_rows<'a>(
    store: &'a PostgresStore,
    statement: &'a str,
    stream: &'a StreamId,
    slice: StreamSlice,
) -> EventStream<'a> {
    if never_stored(stream) {
        return futures_util::stream::empty().boxed();
    }
    slice_query(statement, stream, slice)
        .fetch(&store.pool)
        .map(|row| match row {
            Ok(row) => recorded_event(&row),
            Err(error) => Err(store_error(error)),
        })
        .boxed()
}

/// [`EventStore::replay_stream`](es_core::EventStore::replay_stream), and with `if_open`
/// [`EventStore::replay_if_open`](es_core::EventStore::replay_if_open): the rows are lent to
/// `apply` as they arrive. The statement of `replay_if_open` is one too: a closed stream's
/// record leads the rows as a marker (version 0, no name) and its events are left out, all in
/// one snapshot; only then is the record itself read.
pub(crate) async fn replay(
    store: &PostgresStore,
    stream: &StreamId,
    slice: StreamSlice,
    apply: &mut ReplayFn<'_>,
    if_open: bool,
) -> StoreResult<()> {
    if never_stored(stream) {
        return Ok(());
    }
    let sql = match if_open {
        true => &store.sql.replay_if_open,
        false => &store.sql.replay_stream,
    };
    let mut rows = slice_query(sql, stream, slice).fetch(&store.pool);
    let mut marked = if_open;
    while let Some(row) = rows.try_next().await.map_err(store_error)? {
        if std::mem::take(&mut marked) {
            let name: Option<&str> = row.try_get(col::EVENT_NAME).map_err(store_error)?;
            if name.is_none() {
                drop(rows);
                return Err(closed(store, stream).await);
            }
        }
        if apply(replayed_event(&row, stream)?).is_break() {
            break;
        }
    }
    Ok(())
}

/// The refusal of `stream`, whose marker a replay found. A stream never reopens, so the record
/// read now is the one the marker stood for.
async fn closed(store: &PostgresStore, stream: &StreamId) -> StoreError {
    match crate::lifecycle::closure_on(store, &store.pool, stream).await {
        Ok(Some(closed)) => StoreError::StreamClosed(Box::new(closed)),
        Ok(None) => PostgresError::Unexpected(format!("the record of closed stream {stream} is gone")).into(),
        Err(error) => error,
    }
}

/// A statement over a slice of one stream, its five parameters bound: the stream, the version
/// range, the `recorded_until` cut-off.
fn slice_query<'q>(sql: &'q str, stream: &'q StreamId, slice: StreamSlice) -> Query<'q, Postgres, PgArguments> {
    sqlx::query(sql)
        .bind(stream.aggregate_type.as_str())
        .bind(stream.aggregate_id.as_str())
        .bind(saturating_i64(slice.from_version))
        .bind(slice.to_version.map_or(i64::MAX, saturating_i64))
        .bind(slice.recorded_until.map(|until| until.max(earliest_timestamptz())))
}

/// Whether no store could hold `stream`: its id holds a NUL character, which PostgreSQL cannot
/// take even as a parameter. Every append refuses such an id
/// ([`Limits::check_append`](es_core::Limits::check_append)), so reads answer at once that
/// there is nothing, as the other stores do.
pub(crate) fn never_stored(stream: &StreamId) -> bool {
    stream.aggregate_type.contains('\0') || stream.aggregate_id.contains('\0')
}

/// PostgreSQL's earliest `timestamptz` (4713 BC): no event is recorded before it, so an earlier
/// instant (`DateTime::<Utc>::MIN_UTC`) reads as this one instead of failing out of range.
fn earliest_timestamptz() -> DateTime<Utc> {
    chrono::NaiveDate::from_ymd_opt(-4712, 11, 24)
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .map_or(DateTime::<Utc>::MIN_UTC, |earliest| earliest.and_utc())
}

/// [`EventStore::read_event`](es_core::EventStore::read_event): one query on the unique
/// `event_id` index.
pub(crate) async fn read_event(store: &PostgresStore, event_id: Uuid) -> StoreResult<Option<RecordedEvent>> {
    let row = sqlx::query(&store.sql.read_event)
        .bind(event_id)
        .fetch_optional(&store.pool)
        .await
        .map_err(store_error)?;
    row.as_ref().map(recorded_event).transpose()
}

/// [`EventStore::stream_version`](es_core::EventStore::stream_version).
pub(crate) async fn stream_version(store: &PostgresStore, stream: &StreamId) -> StoreResult<u64> {
    if never_stored(stream) {
        return Ok(0);
    }
    let version: Option<i64> = sqlx::query_scalar(&store.sql.stream_version)
        .bind(stream.aggregate_type.as_str())
        .bind(stream.aggregate_id.as_str())
        .fetch_optional(&store.pool)
        .await
        .map_err(store_error)?;
    match version {
        None => Ok(0),
        Some(version) => u64::try_from(version).map_err(|_| negative_version(stream, version)),
    }
}

/// [`GlobalLog::unsettled`](es_core::GlobalLog::unsettled): one count past the settled bound.
pub(crate) async fn unsettled(store: &PostgresStore, after: u64) -> StoreResult<u64> {
    let count: i64 = sqlx::query_scalar(&store.sql.unsettled)
        .bind(saturating_i64(after))
        .fetch_one(&store.pool)
        .await
        .map_err(store_error)?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// [`GlobalLog::held_back_by`](es_core::GlobalLog::held_back_by): the oldest write transaction
/// open in the cluster, as an operator reads it.
pub(crate) async fn held_back_by(store: &PostgresStore) -> StoreResult<Option<String>> {
    let row: Option<(String, String, String, String, String)> = sqlx::query_as(crate::sql::HELD_BACK_BY)
        .fetch_optional(&store.pool)
        .await
        .map_err(store_error)?;
    Ok(row.map(|(who, state, since, application, statement)| {
        let mut text = who;
        if !application.is_empty() {
            text.push_str(&format!(" (`{application}`)"));
        }
        text.push_str(&format!(", {state} since {since}"));
        if !statement.is_empty() {
            text.push_str(&format!(
                ", last statement `{}`",
                statement.split_whitespace().collect::<Vec<_>>().join(" ")
            ));
        }
        text
    }))
}

/// [`GlobalLog::read_all`](es_core::GlobalLog::read_all): only events of transactions older
/// than every transaction still in flight (see the crate docs).
pub(crate) async fn read_all(store: &PostgresStore, after: u64, limit: usize) -> StoreResult<Vec<RecordedEvent>> {
    // Positions are positive i64: nothing lies beyond i64::MAX.
    // A limit past a bigint asks for everything: the most a bigint counts.
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let (Ok(after), limit @ 1..) = (i64::try_from(after), limit) else {
        return Ok(Vec::new());
    };
    let mut rows = sqlx::query(&store.sql.read_all)
        .bind(after)
        .bind(limit)
        .fetch(&store.pool);
    let mut events = Vec::with_capacity(usize::try_from(limit.min(1024)).unwrap_or(0));
    while let Some(row) = rows.try_next().await.map_err(store_error)? {
        events.push(recorded_event(&row)?);
    }
    Ok(events)
}

/// [`GlobalLog::read_filtered`](es_core::GlobalLog::read_filtered): `read_all`'s page (the
/// same bound, the same limit counted over every row), in which only the rows the filter wants
/// come whole and are decoded; of the others only the position is read, so their payload and
/// metadata cannot fail the read. A filter that leaves nothing out is `read_all` itself.
pub(crate) async fn read_filtered(
    store: &PostgresStore,
    after: u64,
    limit: usize,
    filter: &LogFilter,
) -> StoreResult<LogPage> {
    let db_limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let (Ok(db_after), db_limit @ 1..) = (i64::try_from(after), db_limit) else {
        return Ok(LogPage::filter_read(after, limit, Vec::new(), filter));
    };
    if filter.is_all() {
        let events = read_all(store, after, limit).await?;
        return Ok(LogPage::filter_read(after, limit, events, filter));
    }
    let mut rows = sqlx::query(&store.sql.read_filtered)
        .bind(db_after)
        .bind(db_limit)
        .bind(filter.types())
        .bind(filter.excluded())
        .bind(filter.included())
        .fetch(&store.pool);
    let mut page = LogPage {
        events: Vec::new(),
        scanned: 0,
        scanned_to: after,
        at_head: false,
    };
    while let Some(row) = rows.try_next().await.map_err(store_error)? {
        let wanted: bool = row.try_get(col::WANTED).map_err(store_error)?;
        page.scanned_to = if wanted {
            let event = recorded_event(&row)?;
            let position = event.position;
            page.events.push(event);
            position
        } else {
            let position: i64 = row.try_get(col::POSITION).map_err(store_error)?;
            u64::try_from(position)
                .map_err(|_| PostgresError::Unexpected(format!("negative position {position} in the events table")))?
        };
        page.scanned += 1;
    }
    page.at_head = page.scanned < limit;
    Ok(page)
}

/// [`GlobalLog::replay_all`](es_core::GlobalLog::replay_all): `read_filtered`'s statement
/// (or `read_all`'s, for a filter that leaves nothing out) without a limit, so one query
/// bounded once by the horizon of its snapshot, its rows lent as they arrive. A replay stopped
/// before the last row closes its connection rather than let the pool drain the rest.
pub(crate) async fn replay_all(
    store: &PostgresStore,
    after: u64,
    filter: &LogFilter,
    apply: &mut LogReplayFn<'_>,
) -> StoreResult<LogReplay> {
    let mut replay = LogReplay::starting_at(after);
    let Ok(db_after) = i64::try_from(after) else {
        return Ok(replay);
    };
    let everything = filter.is_all();
    let query = if everything {
        sqlx::query(&store.sql.read_all).bind(db_after).bind(i64::MAX)
    } else {
        sqlx::query(&store.sql.read_filtered)
            .bind(db_after)
            .bind(i64::MAX)
            .bind(filter.types())
            .bind(filter.excluded())
            .bind(filter.included())
    };
    let mut connection = store.pool.acquire().await.map_err(store_error)?;
    let mut rows = query.fetch(&mut *connection);
    let lent = async {
        while let Some(row) = rows.try_next().await.map_err(store_error)? {
            let wanted = everything || row.try_get::<bool, _>(col::WANTED).map_err(store_error)?;
            replay.scanned += 1;
            if !wanted {
                let position: i64 = row.try_get(col::POSITION).map_err(store_error)?;
                replay.scanned_to = u64::try_from(position).map_err(|_| {
                    PostgresError::Unexpected(format!("negative position {position} in the events table"))
                })?;
                continue;
            }
            let metadata = stored_metadata(&row).map_err(|reason| corrupt_row(&row, reason))?;
            let event = logged_event(&row, &metadata)?;
            replay.scanned_to = event.position;
            if apply(event).is_break() {
                replay.stopped = true;
                break;
            }
        }
        StoreResult::Ok(())
    }
    .await;
    drop(rows);
    if lent.is_err() || replay.stopped {
        // The server would go on sending the rest of the result, and the pool would read it
        // all before handing the connection out again.
        connection.close_on_drop();
    }
    lent.map(|()| replay)
}

/// [`GlobalLog::tail`](es_core::GlobalLog::tail): what `read_all` would still return.
pub(crate) async fn tail(store: &PostgresStore, after: u64) -> StoreResult<Tail> {
    let Ok(db_after) = i64::try_from(after) else {
        return Ok(Tail {
            events: 0,
            head_position: after,
            head_recorded_at: None,
        });
    };
    let row = sqlx::query(&store.sql.tail)
        .bind(db_after)
        .fetch_one(&store.pool)
        .await
        .map_err(store_error)?;
    let count: i64 = row.try_get("events").map_err(store_error)?;
    let head: Option<i64> = row.try_get("position").map_err(store_error)?;
    let head_recorded_at = crate::row::timestamptz_named(&row, "recorded_at").map_err(|reason| {
        let stream = StreamId::new(
            row.try_get::<String, _>("aggregate_type").unwrap_or_default(),
            row.try_get::<String, _>("aggregate_id").unwrap_or_default(),
        );
        let version = row.try_get::<i64, _>("version").unwrap_or_default();
        StoreError::Corrupt {
            stream,
            version: u64::try_from(version).unwrap_or_default(),
            reason: format!("recorded_at: {reason}"),
        }
    })?;
    let unexpected = |what: &str| StoreError::from(PostgresError::Unexpected(format!("negative {what} in tail")));
    Ok(Tail {
        events: u64::try_from(count).map_err(|_| unexpected("count"))?,
        head_position: match head {
            Some(head) => u64::try_from(head).map_err(|_| unexpected("position"))?,
            None => after,
        },
        head_recorded_at,
    })
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
