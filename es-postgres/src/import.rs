//! Bulk import: another system's history loaded with its own ids, timestamps and metadata through
//! `COPY`, one transaction per chunk, resumable after a failure (see the crate docs).

mod copy;
mod error;
mod source;
mod write;

use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use es_core::{Metadata, StreamId};
use futures_core::Stream;
use uuid::Uuid;

pub use error::{EventAt, ImportError, SourceChange};

use crate::fault::store_error;
use crate::sql::MAX_EVENTS_PER_TRANSACTION;
use crate::PostgresStore;
use copy::Chunk;
use source::Cursor;
use write::{Progress, Writer};

/// One event of the history an import loads, as the system it comes from recorded it.
///
/// Unlike a [`NewEvent`](es_core::NewEvent), it names its stream and keeps its original id, timestamp and
/// metadata; its version and position are the store's to give (see
/// [`PostgresStore::import`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedEvent {
    /// The stream it belongs to.
    pub stream: StreamId,
    /// Its id, kept as it is: unique across the store.
    pub event_id: Uuid,
    /// The stored event name.
    pub event_name: String,
    /// The payload's schema version.
    pub schema_version: u32,
    /// The payload, as JSON.
    pub payload: Vec<u8>,
    /// Its metadata: the well-known fields and the application's own.
    pub metadata: Metadata,
    /// When it was originally recorded, stored as `recorded_at` (to the microsecond, truncated).
    /// Kept as given, even when it goes back in time along its stream (legacy clocks do):
    /// time travel by instant then gives the longest prefix of the stream recorded by the
    /// instant ([`AsOf::Instant`](es_core::AsOf::Instant)).
    pub recorded_at: DateTime<Utc>,
}

/// How [`PostgresStore::import`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportOptions {
    /// The import's name: it keys the resume record (the `imports` table), so a rerun under the
    /// same name resumes where the last one stopped, and a finished import is not run twice.
    pub name: String,
    /// How many events each chunk (one transaction) holds, at most
    /// [`ImportOptions::MAX_CHUNK_SIZE`]. Default [`ImportOptions::DEFAULT_CHUNK_SIZE`].
    pub chunk_size: usize,
    /// Whether a run that stored events ends with `ANALYZE` of the events table. Default on.
    ///
    /// Until autovacuum gets to it (a minute or more), a table just filled has no statistics,
    /// or stale ones, and PostgreSQL's planner misjudges the global log's reads: on a table
    /// never analyzed it reads a page of `read_all` by sorting every event after it instead of
    /// walking the position index, and a replay from position 0 sorts the whole log on disk.
    /// PostgreSQL's own advice after populating a database is the same: run `ANALYZE`. It
    /// takes a sample (about 30,000 rows at the default statistics target), so it costs a
    /// fraction of a second; a role not allowed to analyze the table gets a warning in the log
    /// and the import still succeeds.
    pub analyze: bool,
}

impl ImportOptions {
    /// The default chunk size: 50,000 events, about half a second of `COPY` each, so an import
    /// loses little to a failure and holds back readers of `read_all` briefly.
    pub const DEFAULT_CHUNK_SIZE: usize = 50_000;

    /// The largest chunk: 2^20 - 1 events, the most one transaction can number.
    pub const MAX_CHUNK_SIZE: usize = MAX_EVENTS_PER_TRANSACTION;

    /// Options for the import named `name`, with the default chunk size.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            chunk_size: Self::DEFAULT_CHUNK_SIZE,
            analyze: true,
        }
    }

    /// The same options with chunks of `events` events (1 to [`ImportOptions::MAX_CHUNK_SIZE`];
    /// `import` refuses others with [`ImportError::InvalidChunkSize`]).
    pub fn with_chunk_size(mut self, events: usize) -> Self {
        self.chunk_size = events;
        self
    }

    /// The same options, ending (`true`, the default) or not with `ANALYZE` of the events
    /// table: see [`ImportOptions::analyze`].
    pub fn with_analyze(mut self, analyze: bool) -> Self {
        self.analyze = analyze;
        self
    }
}

/// How far a run of [`PostgresStore::import`] got: passed to its callback after each chunk
/// commits.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ImportProgress {
    /// Events this run stored.
    pub events_imported: u64,
    /// Events of the source skipped because an earlier run of the import stored them.
    pub events_skipped: u64,
    /// Chunks this run committed.
    pub chunks: u64,
    /// Time since this run started.
    pub elapsed: Duration,
    /// Events this run stored per second of its time.
    pub events_per_second: f64,
}

/// What a run of [`PostgresStore::import`] did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ImportReport {
    /// The run's figures, as its last [`ImportProgress`] (or the only one, when it imported
    /// nothing).
    pub progress: ImportProgress,
    /// The events of the import stored over all its runs: the source's length once finished.
    pub events_total: u64,
    /// Whether an earlier run had finished the import: this run read nothing and stored nothing.
    pub already_finished: bool,
}

impl PostgresStore {
    /// Loads a history of events from another system: with their original ids, timestamps and
    /// metadata, in the order of `source`, through `COPY` in chunks of one transaction each,
    /// restartable after a failure without storing anything twice.
    ///
    /// `source` gives the events in the order to store them, which must be the same in every
    /// run of the import. Each event's version is its number in its stream among the source's
    /// events, from 1, so every stream must be new: an event whose stream has events this
    /// import did not write is refused ([`ImportError::StreamHasEvents`]). Positions are the
    /// store's: those of the chunks' transactions (`xid << 20 | n`), so imported events sort
    /// after everything stored before, in source order, and projections see them as new events.
    ///
    /// Each chunk of [`ImportOptions::chunk_size`] events is read and checked (the store's
    /// [`Limits`](es_core::Limits), per event; UTF-8 payloads) and encoded before its transaction
    /// begins. The transaction locks the import's resume record (the `imports` table, keyed by
    /// [`ImportOptions::name`]), takes its transaction id, copies the rows, records its progress
    /// and commits. Chunks are written one at a time on one connection, from a task of their own:
    /// while one is copied, the next is read and encoded. `on_progress` is called once a chunk's
    /// commit is seen. A chunk that fails is rolled back whole; the chunks before it stay.
    ///
    /// Calling `import` again with the same name and source resumes: the events earlier runs
    /// stored are read from the source and skipped (they rebuild the per-stream versions), after
    /// checking that the source replays them as they were ([`ImportError::SourceChanged`]
    /// otherwise). A finished import imports nothing ([`ImportReport::already_finished`]), without
    /// reading the source. Run one import at a time under one name
    /// ([`ImportError::ConcurrentRun`]). A run that stored events ends with `ANALYZE` of the
    /// events table ([`ImportOptions::analyze`]), and listeners of [`PostgresStore::wake_up`]
    /// are notified.
    ///
    /// Memory: two chunks of encoded events (one being copied, one being read), and a version
    /// counter per stream of the whole import. Dropping the future stops the import; a chunk
    /// already being written commits or rolls back on its own, and a rerun resumes after it.
    /// While a chunk's transaction is open (its `COPY`), it holds back `read_all` for every
    /// reader of the cluster, as any write transaction does: smaller chunks hold it back for
    /// less.
    ///
    /// ```no_run
    /// use es_core::{Metadata, StreamId};
    /// use es_postgres::{ImportOptions, ImportedEvent, PostgresStore};
    ///
    /// # async fn demo(store: PostgresStore, legacy: Vec<(String, uuid::Uuid, String, chrono::DateTime<chrono::Utc>)>)
    /// # -> Result<(), Box<dyn std::error::Error>> {
    /// // Rows from the old system, in the order they were recorded.
    /// let events = legacy.into_iter().map(|(ticket, id, json, at)| {
    ///     Ok::<_, std::convert::Infallible>(ImportedEvent {
    ///         stream: StreamId::new("ticket", ticket),
    ///         event_id: id,
    ///         event_name: "TicketOpened".into(),
    ///         schema_version: 1,
    ///         payload: json.into_bytes(),
    ///         metadata: Metadata::new(),
    ///         recorded_at: at,
    ///     })
    /// });
    /// let options = ImportOptions::new("tickets-from-legacy");
    /// let report = store
    ///     .import(options, futures_util::stream::iter(events), |progress| {
    ///         println!("{} events, {:.0}/s", progress.events_imported, progress.events_per_second);
    ///     })
    ///     .await?;
    /// println!("{} events in the store", report.events_total);
    /// # Ok(()) }
    /// ```
    pub async fn import<S, E, F>(
        &self,
        options: ImportOptions,
        source: S,
        mut on_progress: F,
    ) -> Result<ImportReport, ImportError>
    where
        S: Stream<Item = Result<ImportedEvent, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
        F: FnMut(&ImportProgress),
    {
        let ImportOptions {
            name,
            chunk_size,
            analyze,
        } = options;
        if chunk_size == 0 || chunk_size > ImportOptions::MAX_CHUNK_SIZE {
            return Err(ImportError::InvalidChunkSize {
                chunk_size,
                max: ImportOptions::MAX_CHUNK_SIZE,
            });
        }
        let mut tally = Tally::new();
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|error| ImportError::Store(store_error(error)))?;
        let record = write::begin(&self.sql.import, &mut conn, &name).await?;
        if record.finished {
            tracing::info!(
                import = name,
                events = record.events_done,
                "import finished before: nothing to do"
            );
            return Ok(tally.report(record.events_done, true));
        }
        let mut source = pin!(source);
        let mut cursor = Cursor::new();
        cursor.skip(&mut source, &name, &record).await?;
        tally.skipped = record.events_done;
        let mut writer = Writer::new(Arc::clone(&self.sql), &name, conn);
        let mut spare = None;
        let mut settle = async |writer: &mut Writer, tally: &mut Tally, spare: &mut Option<Chunk>| {
            if let Some(written) = writer.settle().await? {
                tally.imported += written.len() as u64;
                tally.chunks += 1;
                on_progress(&tally.progress());
                *spare = Some(written);
            }
            Ok::<_, ImportError>(())
        };
        loop {
            let mut chunk = spare.take().unwrap_or_else(|| Chunk::with_capacity(chunk_size));
            chunk.clear();
            let filled = cursor.fill(&mut source, &mut chunk, chunk_size, &self.limits).await;
            // The chunk in flight committed (and is reported) or failed before anything of this
            // one counts: its error, or this one's, in source order.
            settle(&mut writer, &mut tally, &mut spare).await?;
            let exhausted = filled?;
            let len = chunk.len() as u64;
            if len == 0 {
                // The source ended right after the last chunk written (or was empty).
                writer.finish(cursor.index).await?;
                break;
            }
            let progress = Progress {
                events_before: cursor.index - len,
                digest: cursor.digest.0,
                exhausted,
            };
            writer.start(chunk, progress)?;
            if exhausted {
                settle(&mut writer, &mut tally, &mut spare).await?;
                break;
            }
        }
        drop(writer);
        if tally.imported > 0 {
            self.notify_listeners();
            if analyze {
                self.analyze_events(&name).await;
            }
        }
        tracing::info!(
            import = name,
            imported = tally.imported,
            skipped = tally.skipped,
            streams = cursor.versions.len(),
            "import finished"
        );
        Ok(tally.report(cursor.index, false))
    }
}

impl PostgresStore {
    /// `ANALYZE` of the events table after import `name`. The events are stored whatever
    /// happens here, so a failure is logged, not returned: the statistics only speed reads up.
    async fn analyze_events(&self, name: &str) {
        if let Err(error) = sqlx::query(&self.sql.import.analyze).execute(&self.pool).await {
            tracing::warn!(import = name, %error, "cannot ANALYZE the events table after the import");
        }
    }
}

/// A run's figures so far.
struct Tally {
    started: Instant,
    imported: u64,
    skipped: u64,
    chunks: u64,
}

impl Tally {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            imported: 0,
            skipped: 0,
            chunks: 0,
        }
    }

    fn progress(&self) -> ImportProgress {
        let elapsed = self.started.elapsed();
        let seconds = elapsed.as_secs_f64();
        ImportProgress {
            events_imported: self.imported,
            events_skipped: self.skipped,
            chunks: self.chunks,
            elapsed,
            events_per_second: if seconds > 0.0 {
                self.imported as f64 / seconds
            } else {
                0.0
            },
        }
    }

    fn report(&self, events_total: u64, already_finished: bool) -> ImportReport {
        ImportReport {
            progress: self.progress(),
            events_total,
            already_finished,
        }
    }
}
