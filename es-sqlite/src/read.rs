//! The store's [`EventStore`] and [`GlobalLog`] impls. Reads: one stream (whole events, or the
//! replay that lends rows' bytes), one event by id, a stream's version, and the global order
//! (`read_all`, `read_filtered`, `tail`). Each runs on a reader connection on a blocking
//! thread; stream reads hand their rows over in chunks while SQLite reads on.

use std::sync::Arc;

use async_trait::async_trait;
use es_core::lifecycle::StreamClosed;
use es_core::EventStream;
use es_core::{
    AppendOutcome, EventStore, ExpectedVersion, GlobalLog, Limits, LogFilter, LogPage, NewEvent, RecordedEvent,
    ReplayFn, StoreError, StoreResult, StreamId, StreamSlice, Tail,
};
use futures_core::stream::Stream;
use futures_util::StreamExt;
use rusqlite::{params, Connection};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::append::stream_version as version_of;
use crate::connection::{blocking, Database};
use crate::error::SqliteError;
use crate::row::{instant, left_out_position, micros, recorded_event, wanted, ReplayChunk};
use crate::{sql, SqliteStore};

/// How many events of a stream read are handed over at a time.
const READ_CHUNK: usize = 256;

/// Appends are in `append.rs`; every read is here.
#[async_trait]
impl EventStore for SqliteStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendOutcome> {
        crate::append::append(self, stream, expected, events).await
    }

    /// The limits of the store's [`SqliteOptions::limits`](crate::SqliteOptions::limits), as
    /// capped by [`SqliteStore::MAX_LIMITS`].
    fn limits(&self) -> Limits {
        self.database.options.limits
    }

    /// [`EventStore::read_stream`](es_core::EventStore::read_stream): rows are read on a blocking
    /// thread, at most two chunks ahead of the consumer, all from one snapshot of the file.
    fn read_stream<'a>(&'a self, stream: &'a StreamId, slice: StreamSlice) -> EventStream<'a> {
        stream_rows(&self.database, stream, slice, sql::READ_STREAM)
    }

    /// [`EventStore::replay_stream`](es_core::EventStore::replay_stream): the blocking thread
    /// copies each row's version, name, schema version and payload into a chunk's buffer, and
    /// `apply` borrows them from there; no envelope is built. Stops reading when `apply` breaks.
    async fn replay_stream(&self, stream: &StreamId, slice: StreamSlice, apply: &mut ReplayFn<'_>) -> StoreResult<()> {
        replay(self, stream, slice, apply, false).await
    }

    /// [`EventStore::replay_if_open`](es_core::EventStore::replay_if_open): the replay
    /// of `replay_stream`, then the probe of `stream_closure`, on the same connection and
    /// blocking thread.
    async fn replay_if_open(&self, stream: &StreamId, slice: StreamSlice, apply: &mut ReplayFn<'_>) -> StoreResult<()> {
        replay(self, stream, slice, apply, true).await
    }

    /// [`EventStore::read_event`](es_core::EventStore::read_event): one probe of the unique
    /// `event_id` index, decoded like every read of whole events.
    async fn read_event(&self, event_id: Uuid) -> StoreResult<Option<RecordedEvent>> {
        let database = Arc::clone(&self.database);
        blocking(move || {
            database.with_reader(|connection| {
                let failed = |error| StoreError::from(database.error(error));
                let mut statement = connection.prepare_cached(sql::READ_EVENT).map_err(failed)?;
                let mut rows = statement.query([event_id.as_bytes()]).map_err(failed)?;
                match rows.next().map_err(failed)? {
                    Some(row) => recorded_event(row).map(Some),
                    None => Ok(None),
                }
            })
        })
        .await
    }

    /// [`EventStore::stream_closure`](es_core::EventStore::stream_closure): one probe of the
    /// records of closed streams.
    async fn stream_closure(&self, stream: &StreamId) -> StoreResult<Option<StreamClosed>> {
        crate::lifecycle::stream_closure(self, stream).await
    }

    /// [`EventStore::stream_version`](es_core::EventStore::stream_version).
    async fn stream_version(&self, stream: &StreamId) -> StoreResult<u64> {
        let (database, stream) = (Arc::clone(&self.database), stream.clone());
        blocking(move || {
            database
                .with_reader(|connection| version_of(connection, &stream).map_err(|error| database.error(error).into()))
        })
        .await
    }
}

/// The events of `stream` within `slice` that `statement` reads (the parameters of
/// [`sql::READ_STREAM`]): rows are read on a blocking thread, at most two chunks ahead of the
/// consumer, all from one snapshot of the file.
pub(crate) fn stream_rows<'a>(
    database: &Arc<Database>,
    stream: &StreamId,
    slice: StreamSlice,
    statement: &'static str,
) -> EventStream<'a> {
    let owned_stream = stream.clone();
    chunks(Arc::clone(database), move |connection, send| {
        let mut statement = connection.prepare_cached(statement)?;
        let mut rows = statement.query(slice_parameters(&owned_stream, slice))?;
        let mut chunk = Vec::with_capacity(READ_CHUNK);
        while let Some(row) = rows.next()? {
            chunk.push(recorded_event(row)?);
            if chunk.len() == READ_CHUNK && !send(std::mem::replace(&mut chunk, Vec::with_capacity(READ_CHUNK))) {
                return Ok(());
            }
        }
        if !chunk.is_empty() {
            send(chunk);
        }
        Ok(())
    })
    .flat_map(|chunk| {
        let events: Box<dyn Iterator<Item = _> + Send> = match chunk {
            Ok(events) => Box::new(events.into_iter().map(Ok)),
            Err(error) => Box::new(std::iter::once(Err(error))),
        };
        futures_util::stream::iter(events)
    })
    .boxed()
}

#[async_trait]
impl GlobalLog for SqliteStore {
    /// [`GlobalLog::read_all`](es_core::GlobalLog::read_all): positions are dense and commit in
    /// order, so a plain range read never skips (see the crate docs).
    async fn read_all(&self, after: u64, limit: usize) -> StoreResult<Vec<RecordedEvent>> {
        // Positions are positive i64: nothing lies beyond i64::MAX.
        let Ok(after) = i64::try_from(after) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let database = Arc::clone(&self.database);
        blocking(move || {
            database.with_reader(|connection| {
                let failed = |error| StoreError::from(database.error(error));
                let mut statement = connection.prepare_cached(sql::READ_ALL).map_err(failed)?;
                let mut rows = statement
                    .query(params![after, saturating_i64(limit as u64)])
                    .map_err(failed)?;
                let mut events = Vec::with_capacity(limit.min(1024));
                while let Some(row) = rows.next().map_err(failed)? {
                    events.push(recorded_event(row)?);
                }
                Ok(events)
            })
        })
        .await
    }

    /// [`GlobalLog::read_filtered`](es_core::GlobalLog::read_filtered): `read_all`'s page
    /// (the same range, the limit counted over every row), in which only the rows the filter
    /// wants come whole and are decoded; of the others only the position is read, so their
    /// payload and metadata cannot fail the read. The types and names are bound as JSON arrays.
    /// A filter that leaves nothing out is `read_all` itself.
    async fn read_filtered(&self, after: u64, limit: usize, filter: &LogFilter) -> StoreResult<LogPage> {
        let Ok(db_after) = i64::try_from(after) else {
            return Ok(LogPage::filter_read(after, limit, Vec::new(), filter));
        };
        if limit == 0 || filter.is_all() {
            let events = self.read_all(after, limit).await?;
            return Ok(LogPage::filter_read(after, limit, events, filter));
        }
        let json = |list: &[String]| {
            serde_json::to_string(list).map_err(|error| SqliteError::Unexpected(format!("a filter as JSON: {error}")))
        };
        let (types, excluded, names) = (
            json(filter.types())?,
            json(filter.excluded())?,
            json(filter.included())?,
        );
        let database = Arc::clone(&self.database);
        blocking(move || {
            database.with_reader(|connection| {
                let failed = |error| StoreError::from(database.error(error));
                let mut statement = connection.prepare_cached(sql::READ_FILTERED).map_err(failed)?;
                let mut rows = statement
                    .query(params![db_after, saturating_i64(limit as u64), types, excluded, names])
                    .map_err(failed)?;
                let mut page = LogPage {
                    events: Vec::new(),
                    scanned: 0,
                    scanned_to: after,
                    at_head: false,
                };
                while let Some(row) = rows.next().map_err(failed)? {
                    page.scanned_to = if wanted(row)? {
                        let event = recorded_event(row)?;
                        let position = event.position;
                        page.events.push(event);
                        position
                    } else {
                        left_out_position(row)?
                    };
                    page.scanned += 1;
                }
                page.at_head = page.scanned < limit;
                Ok(page)
            })
        })
        .await
    }

    /// [`GlobalLog::tail`](es_core::GlobalLog::tail): one query.
    async fn tail(&self, after: u64) -> StoreResult<Tail> {
        let empty = Tail {
            events: 0,
            head_position: after,
            head_recorded_at: None,
        };
        let Ok(db_after) = i64::try_from(after) else {
            return Ok(empty);
        };
        let database = Arc::clone(&self.database);
        let (count, head) = blocking(move || {
            database.with_reader(|connection| {
                connection
                    .prepare_cached(sql::TAIL)
                    .and_then(|mut statement| {
                        statement.query_row([db_after], |row| {
                            let head = (
                                row.get::<_, Option<i64>>(1)?,
                                row.get::<_, Option<i64>>(2)?,
                                row.get::<_, Option<String>>(3)?,
                                row.get::<_, Option<String>>(4)?,
                                row.get::<_, Option<i64>>(5)?,
                            );
                            let head = match head {
                                (Some(position), Some(recorded_at), Some(kind), Some(id), Some(version)) => {
                                    Some((position, recorded_at, StreamId::new(kind, id), version))
                                }
                                _ => None,
                            };
                            Ok((row.get::<_, i64>(0)?, head))
                        })
                    })
                    .map_err(|error| StoreError::from(database.error(error)))
            })
        })
        .await?;
        let Some((position, recorded_at, stream, version)) = head else {
            return Ok(empty);
        };
        let unexpected = |what: String| StoreError::from(SqliteError::Unexpected(what));
        let head_recorded_at = instant(recorded_at).ok_or_else(|| StoreError::Corrupt {
            stream,
            version: u64::try_from(version).unwrap_or_default(),
            reason: format!("recorded_at {recorded_at} is out of range"),
        })?;
        Ok(Tail {
            events: u64::try_from(count).map_err(|_| unexpected(format!("negative count {count} in tail")))?,
            head_position: u64::try_from(position).map_err(|_| unexpected(format!("negative position {position}")))?,
            head_recorded_at: Some(head_recorded_at),
        })
    }
}

/// The parameters of a slice statement: the stream, the version range, the cut-off.
fn slice_parameters(stream: &StreamId, slice: StreamSlice) -> impl rusqlite::Params + '_ {
    (
        stream.aggregate_type.as_str(),
        stream.aggregate_id.as_str(),
        saturating_i64(slice.from_version),
        slice.to_version.map_or(i64::MAX, saturating_i64),
        // Stored instants are truncated to microseconds, so truncating the cut-off keeps
        // exactly the events recorded at or before it.
        slice.recorded_until.map_or(i64::MAX, micros),
    )
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// What a reading task sends.
enum Message<T> {
    Chunk(T),
    Failed(StoreError),
    /// The read finished: without it, a channel that closes means the task died.
    Finished,
}

/// [`EventStore::replay_stream`](es_core::EventStore::replay_stream), and with `refuse_closed`
/// [`EventStore::replay_if_open`](es_core::EventStore::replay_if_open): asking after
/// the replay is what makes the two reads answer as one (see the trait's default).
async fn replay(
    store: &SqliteStore,
    stream: &StreamId,
    slice: StreamSlice,
    apply: &mut ReplayFn<'_>,
    refuse_closed: bool,
) -> StoreResult<()> {
    let owned_stream = stream.clone();
    let database = Arc::clone(&store.database);
    let chunks = chunks(Arc::clone(&store.database), move |connection, send| {
        let mut statement = connection.prepare_cached(sql::REPLAY_STREAM)?;
        let mut rows = statement.query(slice_parameters(&owned_stream, slice))?;
        let mut chunk = ReplayChunk::first();
        while let Some(row) = rows.next()? {
            chunk.push(row, &owned_stream)?;
            if chunk.is_full() {
                let next = chunk.next();
                if !send(std::mem::replace(&mut chunk, next)) {
                    return Ok(());
                }
            }
        }
        if !chunk.is_empty() && !send(chunk) {
            return Ok(());
        }
        if refuse_closed {
            if let Some(closed) = crate::lifecycle::closure_on(&database, connection, &owned_stream)? {
                return Err(StoreError::StreamClosed(Box::new(closed)).into());
            }
        }
        Ok(())
    });
    futures_util::pin_mut!(chunks);
    while let Some(chunk) = chunks.next().await {
        for event in chunk?.replayed(stream) {
            if apply(event?).is_break() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Runs `produce` on a reader connection on a blocking thread once the stream is first polled.
/// It hands chunks to `send`, which says whether the consumer still wants more; the bounded
/// channel keeps it at most two chunks ahead. Dropping the stream stops it.
fn chunks<T, P>(database: Arc<Database>, produce: P) -> impl Stream<Item = StoreResult<T>> + Send
where
    T: Send + 'static,
    P: FnOnce(&Connection, &mut dyn FnMut(T) -> bool) -> Result<(), ReadError> + Send + 'static,
{
    enum State<T, P> {
        Start(Arc<Database>, P),
        Reading(mpsc::Receiver<Message<T>>),
        Done,
    }
    futures_util::stream::unfold(State::Start(database, produce), |state| async move {
        let mut receiver = match state {
            State::Start(database, produce) => match start(database, produce) {
                Ok(receiver) => receiver,
                Err(error) => return Some((Err(error), State::Done)),
            },
            State::Reading(receiver) => receiver,
            State::Done => return None,
        };
        match receiver.recv().await {
            Some(Message::Chunk(chunk)) => Some((Ok(chunk), State::Reading(receiver))),
            Some(Message::Failed(error)) => Some((Err(error), State::Done)),
            Some(Message::Finished) => None,
            None => {
                let error = SqliteError::Task("the task reading the stream stopped before the end".into());
                Some((Err(error.into()), State::Done))
            }
        }
    })
}

fn start<T, P>(database: Arc<Database>, produce: P) -> StoreResult<mpsc::Receiver<Message<T>>>
where
    T: Send + 'static,
    P: FnOnce(&Connection, &mut dyn FnMut(T) -> bool) -> Result<(), ReadError> + Send + 'static,
{
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| SqliteError::NoRuntime)?;
    let (sender, receiver) = mpsc::channel(2);
    runtime.spawn_blocking(move || {
        let read = database.with_reader(|connection| {
            produce(connection, &mut |chunk| {
                sender.blocking_send(Message::Chunk(chunk)).is_ok()
            })
        });
        let last = match read {
            Ok(()) => Message::Finished,
            Err(ReadError::Sqlite(error)) => Message::Failed(database.error(error).into()),
            Err(ReadError::Store(error)) => Message::Failed(error),
        };
        // The consumer may be gone: nothing left to tell.
        let _ = sender.blocking_send(last);
    });
    Ok(receiver)
}

/// Why producing chunks failed: SQLite's error, sorted by the database afterwards, or a row's.
enum ReadError {
    Sqlite(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for ReadError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Sqlite(error)
    }
}

impl From<StoreError> for ReadError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

impl From<SqliteError> for ReadError {
    fn from(error: SqliteError) -> Self {
        Self::Store(error.into())
    }
}
