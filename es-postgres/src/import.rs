//! Bulk import: another system's history loaded with its own ids, timestamps and metadata through
//! `COPY`, one transaction per chunk, resumable after a failure (see the crate docs).

mod copy;
mod error;
mod write;

use std::collections::HashMap;
use std::pin::{pin, Pin};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use es_core::{Limits, Metadata, NewEvent, StoreError, StreamId};
use futures_core::Stream;
use futures_util::StreamExt;
use uuid::Uuid;

pub use error::{EventAt, ImportError, SourceChange};

use crate::fault::store_error;
use crate::sql::MAX_EVENTS_PER_TRANSACTION;
use crate::PostgresStore;
use copy::{Checked, Chunk};
use write::{Progress, Record};

/// One event of the history an import loads, as the system it comes from recorded it.
///
/// Unlike a [`NewEvent`], it names its stream and keeps its original id, timestamp and
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
        }
    }

    /// The same options with chunks of `events` events (1 to [`ImportOptions::MAX_CHUNK_SIZE`];
    /// `import` refuses others with [`ImportError::InvalidChunkSize`]).
    pub fn with_chunk_size(mut self, events: usize) -> Self {
        self.chunk_size = events;
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
    /// [`Limits`], per event; UTF-8 payloads) before its transaction begins. The transaction
    /// locks the import's resume record (the `imports` table, keyed by
    /// [`ImportOptions::name`]), takes its transaction id, copies the rows, records its progress
    /// and commits; `on_progress` is called after each commit. A chunk that fails is rolled back
    /// whole; the chunks before it stay.
    ///
    /// Calling `import` again with the same name and source resumes: the events earlier runs
    /// stored are read from the source and skipped (they rebuild the per-stream versions), after
    /// checking that the source replays them as they were ([`ImportError::SourceChanged`]
    /// otherwise). A finished import imports nothing ([`ImportReport::already_finished`]), without
    /// reading the source. Run one import at a time under one name
    /// ([`ImportError::ConcurrentRun`]). Listeners of [`PostgresStore::wake_up`] are notified at
    /// the end.
    ///
    /// Memory: one chunk of encoded events, and a version counter per stream of the whole
    /// import. While a chunk's transaction is open (its `COPY`), it holds back `read_all` for
    /// every reader of the cluster, as any write transaction does: smaller chunks hold it back
    /// for less.
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
        let ImportOptions { name, chunk_size } = options;
        if chunk_size == 0 || chunk_size > ImportOptions::MAX_CHUNK_SIZE {
            return Err(ImportError::InvalidChunkSize {
                chunk_size,
                max: ImportOptions::MAX_CHUNK_SIZE,
            });
        }
        let mut tally = Tally::new();
        let sql = &self.sql.import;
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|error| ImportError::Store(store_error(error)))?;
        let record = write::begin(sql, &mut conn, &name).await?;
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
        let mut chunk = Chunk::with_capacity(chunk_size);
        loop {
            chunk.clear();
            let exhausted = cursor.fill(&mut source, &mut chunk, chunk_size, &self.limits).await?;
            let len = chunk.len() as u64;
            if len == 0 {
                if exhausted {
                    write::finish(sql, &mut conn, &name, cursor.index).await?;
                }
                break;
            }
            let progress = Progress {
                events_before: cursor.index - len,
                digest: cursor.digest.0,
                exhausted,
            };
            write::write_chunk(sql, &mut conn, &name, &mut chunk, progress).await?;
            tally.imported += len;
            tally.chunks += 1;
            on_progress(&tally.progress());
            if exhausted {
                break;
            }
        }
        drop(conn);
        if tally.imported > 0 {
            self.notify_listeners();
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

/// A 64-bit FNV-1a digest of the streams and ids of events, in order: what a rerun checks its
/// source's skipped events against. Stable across builds and platforms (it is stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Digest(u64);

impl Digest {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn bytes(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(Self::PRIME);
        }
    }

    /// Adds one event. A 0xff byte (never in UTF-8) ends each string.
    fn add(&mut self, stream: &StreamId, event_id: Uuid) {
        self.bytes(stream.aggregate_type.as_bytes());
        self.bytes(&[0xff]);
        self.bytes(stream.aggregate_id.as_bytes());
        self.bytes(&[0xff]);
        self.bytes(event_id.as_bytes());
    }
}

/// Where a run is in its source: the index of the next event, each stream's last version, and
/// the digest of the events so far.
struct Cursor {
    index: u64,
    versions: HashMap<StreamId, u64>,
    digest: Digest,
}

impl Cursor {
    fn new() -> Self {
        Self {
            index: 0,
            versions: HashMap::new(),
            digest: Digest(Digest::OFFSET),
        }
    }

    /// Counts an event of `stream`: its version.
    fn advance(&mut self, stream: &StreamId, event_id: Uuid) -> u64 {
        self.index += 1;
        self.digest.add(stream, event_id);
        match self.versions.get_mut(stream) {
            Some(version) => {
                *version += 1;
                *version
            }
            None => {
                self.versions.insert(stream.clone(), 1);
                1
            }
        }
    }

    /// The source's next event.
    async fn next<S, E>(&self, source: &mut Pin<&mut S>) -> Result<Option<ImportedEvent>, ImportError>
    where
        S: Stream<Item = Result<ImportedEvent, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match source.next().await {
            Some(Ok(event)) => Ok(Some(event)),
            Some(Err(error)) => Err(ImportError::Source {
                index: self.index,
                source: error.into(),
            }),
            None => Ok(None),
        }
    }

    /// Reads past the events earlier runs stored, counting their versions, and checks that
    /// they are the events those runs stored, in the same order.
    async fn skip<S, E>(&mut self, source: &mut Pin<&mut S>, name: &str, record: &Record) -> Result<(), ImportError>
    where
        S: Stream<Item = Result<ImportedEvent, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let changed = |change| ImportError::SourceChanged {
            name: name.to_owned(),
            events_done: record.events_done,
            change,
        };
        while self.index < record.events_done {
            let Some(event) = self.next(source).await? else {
                return Err(changed(SourceChange::Shorter { events: self.index }));
            };
            self.advance(&event.stream, event.event_id);
            if self.index == record.events_done {
                if let Some(imported) = record.last_event_id.filter(|id| *id != event.event_id) {
                    let found = event.event_id;
                    return Err(changed(SourceChange::LastEventMoved { imported, found }));
                }
            }
        }
        // A record at 0 events holds no digest yet (the column's default).
        if record.events_done > 0 && self.digest.0 != record.digest {
            return Err(changed(SourceChange::OrderDiffers));
        }
        Ok(())
    }

    /// Reads, checks and encodes the source's next events into `chunk`, up to `size`; whether
    /// the source ended.
    async fn fill<S, E>(
        &mut self,
        source: &mut Pin<&mut S>,
        chunk: &mut Chunk,
        size: usize,
        limits: &Limits,
    ) -> Result<bool, ImportError>
    where
        S: Stream<Item = Result<ImportedEvent, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        while chunk.len() < size {
            let Some(event) = self.next(source).await? else {
                return Ok(true);
            };
            let checked = check(limits, event, self.index)?;
            let version = self.advance(&checked.at.stream, checked.at.event_id);
            chunk.push(checked, version)?;
        }
        Ok(false)
    }
}

/// Checks `event`, at `index` in the source, as an append checks each of its events: the
/// store's limits and rules for names, then a UTF-8 payload (the server parses the JSON).
fn check(limits: &Limits, event: ImportedEvent, index: u64) -> Result<Checked, ImportError> {
    let ImportedEvent {
        stream,
        event_id,
        event_name,
        schema_version,
        payload,
        metadata,
        recorded_at,
    } = event;
    let event = NewEvent {
        event_id,
        event_name,
        schema_version,
        payload,
        metadata,
    };
    let at = EventAt::new(stream, index, event_id);
    if let Err(error) = limits.check_append(&at.stream, std::slice::from_ref(&event)) {
        return Err(match error {
            StoreError::LimitExceeded(exceeded) => ImportError::LimitExceeded {
                event: at,
                limit: exceeded.limit,
                actual: exceeded.actual,
                max: exceeded.max,
            },
            // The reason speaks of a batch of one.
            StoreError::InvalidBatch { reason, .. } => ImportError::InvalidEvent {
                event: at,
                reason: reason.replace(" of event #1", ""),
            },
            other => ImportError::InvalidEvent {
                event: at,
                reason: other.to_string(),
            },
        });
    }
    let NewEvent {
        event_name,
        schema_version,
        payload,
        metadata,
        ..
    } = event;
    if std::str::from_utf8(&payload).is_err() {
        return Err(ImportError::PayloadNotUtf8 { event: at });
    }
    let Ok(schema_version) = i32::try_from(schema_version) else {
        let reason = format!("schema version {schema_version} is above {}", i32::MAX);
        return Err(ImportError::InvalidEvent { event: at, reason });
    };
    Ok(Checked {
        at,
        event_name,
        schema_version,
        payload,
        metadata,
        recorded_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_fnv_1a_and_depends_on_order() {
        let mut empty = Digest(Digest::OFFSET);
        empty.bytes(b"a");
        assert_eq!(empty.0, 0xaf63_dc4c_8601_ec8c, "FNV-1a 64 of `a`");
        let (a, b) = (StreamId::new("t", "a"), StreamId::new("t", "b"));
        let (x, y) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut one = Digest(Digest::OFFSET);
        one.add(&a, x);
        one.add(&b, y);
        let mut other = Digest(Digest::OFFSET);
        other.add(&b, y);
        other.add(&a, x);
        assert_ne!(one, other);
        let mut split = Digest(Digest::OFFSET);
        split.add(&StreamId::new("ta", ""), x);
        let mut joined = Digest(Digest::OFFSET);
        joined.add(&StreamId::new("t", "a"), x);
        assert_ne!(split, joined, "the stream's parts are delimited");
    }
}
