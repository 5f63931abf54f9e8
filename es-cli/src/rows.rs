//! Reading past stored rows that do not map to an event.
//!
//! A row the store cannot turn into an event (its metadata is not JSON, say: written behind the
//! framework's back, or damaged) fails the read that meets it with
//! [`StoreError::Corrupt`], naming its stream and version. The commands that look, and the
//! browser's pages, must still show everything else, and name that row: so they read through
//! these functions, which read again around such a row and hand it back as [`Row::Unreadable`]
//! in its place. Reads that meet no such row cost what the plain read costs.
//!
//! - A stream is read by version, and versions are dense: the row's version, from the error, is
//!   where to go on.
//! - The global log is read by position, which the error does not carry: the page is read again
//!   one row at a time, and the bad row's position is found with a read whose filter wants no
//!   row, which a store answers without decoding any (the promise of [`LogFilter`]).

use es_core::{EventStore, GlobalLog, LogFilter, RecordedEvent, StoreError, StoreResult, StreamId, StreamSlice};
use futures_util::StreamExt;

/// A stored row that does not map to an event.
#[derive(Debug, Clone)]
pub(crate) struct Unreadable {
    pub stream: StreamId,
    pub version: u64,
    /// Its place in the global log, when the read that met it knows it.
    pub position: Option<u64>,
    /// What is wrong with it, as the store says.
    pub reason: String,
}

impl Unreadable {
    /// What an operator reads about it.
    pub fn message(&self) -> String {
        format!("the stored row cannot be read: {}", self.reason)
    }
}

/// A row of a read: an event, or a row in its place that does not map to one.
#[derive(Debug, Clone)]
pub(crate) enum Row {
    Event(RecordedEvent),
    Unreadable(Unreadable),
}

impl Row {
    pub fn version(&self) -> u64 {
        match self {
            Self::Event(event) => event.version,
            Self::Unreadable(row) => row.version,
        }
    }

    pub fn position(&self) -> Option<u64> {
        match self {
            Self::Event(event) => Some(event.position),
            Self::Unreadable(row) => row.position,
        }
    }
}

/// The rows of `stream` from version `from` up to `to` (inclusive; the end when `None`).
pub(crate) async fn stream_rows<S: EventStore + ?Sized>(
    store: &S,
    stream: &StreamId,
    from: u64,
    to: Option<u64>,
) -> StoreResult<Vec<Row>> {
    let mut rows = Vec::new();
    // Versions start at 1.
    let mut next = from.max(1);
    loop {
        let Err(error) = read_slice(store, stream, next, to, &mut rows).await else {
            return Ok(rows);
        };
        let StoreError::Corrupt {
            stream: bad,
            version,
            reason,
        } = error
        else {
            return Err(error);
        };
        // A store may drop the events read with the bad row but before it (SQLite hands rows
        // over in chunks): read them again, up to it.
        let resume = rows.last().map_or(next, |row| row.version() + 1).max(next);
        if bad != *stream || version < resume || to.is_some_and(|to| version > to) {
            // Not a row of this slice (or no version to go on from): nothing to read past.
            return Err(StoreError::Corrupt {
                stream: bad,
                version,
                reason,
            });
        }
        if version > resume {
            read_slice(store, stream, resume, Some(version - 1), &mut rows).await?;
        }
        rows.push(Row::Unreadable(Unreadable {
            stream: bad,
            version,
            position: None,
            reason,
        }));
        next = version + 1;
    }
}

/// Appends the events of `stream` from `from` up to `to` to `rows`, until the first error.
async fn read_slice<S: EventStore + ?Sized>(
    store: &S,
    stream: &StreamId,
    from: u64,
    to: Option<u64>,
    rows: &mut Vec<Row>,
) -> StoreResult<()> {
    let mut slice = StreamSlice::from_version(from);
    if let Some(to) = to {
        slice = slice.to_version(to);
    }
    let mut read = store.read_stream(stream, slice);
    while let Some(event) = read.next().await {
        rows.push(Row::Event(event?));
    }
    Ok(())
}

/// A page of the global log: [`GlobalLog::read_filtered`]'s, with its rows.
#[derive(Debug)]
pub(crate) struct Page {
    pub rows: Vec<Row>,
    /// Every row up to this position was returned or left out by the filter.
    pub scanned_to: u64,
    /// Whether the read reached the end of the log.
    pub at_head: bool,
}

/// Up to `limit` rows after `after` that pass `filter` (the limit counted over every row, as
/// [`GlobalLog::read_filtered`] counts it).
pub(crate) async fn log_page<S: GlobalLog + ?Sized>(
    store: &S,
    after: u64,
    limit: usize,
    filter: &LogFilter,
) -> StoreResult<Page> {
    match store.read_filtered(after, limit, filter).await {
        Ok(page) => {
            return Ok(Page {
                rows: page.events.into_iter().map(Row::Event).collect(),
                scanned_to: page.scanned_to,
                at_head: page.at_head,
            })
        }
        Err(StoreError::Corrupt { .. }) => {}
        Err(error) => return Err(error),
    }
    // A row of the page does not map: read the page again a row at a time, to show the others.
    let mut page = Page {
        rows: Vec::new(),
        scanned_to: after,
        at_head: false,
    };
    let mut scanned = 0;
    while scanned < limit {
        match next_row(store, page.scanned_to, filter).await? {
            Next::Head => {
                page.at_head = true;
                break;
            }
            Next::LeftOut(position) => page.scanned_to = position,
            Next::Row(row) => {
                page.scanned_to = row.position().unwrap_or(page.scanned_to);
                page.rows.push(*row);
            }
        }
        scanned += 1;
    }
    Ok(page)
}

/// What follows a position in the global log.
#[derive(Debug)]
pub(crate) enum Next {
    /// Nothing: the end of the log.
    Head,
    /// A row the filter leaves out, at this position.
    LeftOut(u64),
    /// A row the filter wants (an unreadable one with its position); boxed, as an event is
    /// large beside a position.
    Row(Box<Row>),
}

/// The row after `after` in the global log.
pub(crate) async fn next_row<S: GlobalLog + ?Sized>(store: &S, after: u64, filter: &LogFilter) -> StoreResult<Next> {
    match store.read_filtered(after, 1, filter).await {
        Ok(page) => Ok(match page.events.into_iter().next() {
            Some(event) => Next::Row(Box::new(Row::Event(event))),
            None if page.scanned == 0 => Next::Head,
            None => Next::LeftOut(page.scanned_to),
        }),
        Err(StoreError::Corrupt {
            stream,
            version,
            reason,
        }) => {
            // The bad row is the one after `after`; a read that wants no row passes over it
            // without decoding it, and says where it is.
            let nothing = LogFilter::all().aggregate_types([""]).names([""]);
            let corrupt = || StoreError::Corrupt {
                stream: stream.clone(),
                version,
                reason: reason.clone(),
            };
            let located = store.read_filtered(after, 1, &nothing).await.map_err(|_| corrupt())?;
            if located.scanned == 0 || located.scanned_to <= after {
                return Err(corrupt());
            }
            Ok(Next::Row(Box::new(Row::Unreadable(Unreadable {
                stream,
                version,
                position: Some(located.scanned_to),
                reason,
            }))))
        }
        Err(error) => Err(error),
    }
}
