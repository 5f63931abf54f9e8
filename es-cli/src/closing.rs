//! `close` and `closed`: stream lifecycle from the command line, on programs built with
//! [`Cli::closing`](crate::Cli::closing).

use es_core::lifecycle::{ClosedQuery, StreamChange, StreamClosed, StreamLifecycle, StreamStatus};
use es_core::EventStream;
use es_core::{RecordedEvent, StoreResult, StreamId, StreamSlice};
use futures_util::future::BoxFuture;
use futures_util::TryStreamExt;
use serde_json::{json, Value};

use crate::args::Closing;
use crate::commands::past_the_end;
use crate::output::{Failure, Output};
use crate::rows::Row;
use crate::{Cli, CliStore, Exit};

/// Closes a stream in the store: set by [`Cli::closing`](crate::Cli::closing).
pub(crate) type CloseFn<S> =
    for<'a> fn(&'a S, &'a StreamId, StreamStatus, StreamChange) -> BoxFuture<'a, StoreResult<StreamClosed>>;
/// Lists closed streams in the store.
pub(crate) type ClosedFn<S> = for<'a> fn(&'a S, &'a ClosedQuery) -> BoxFuture<'a, StoreResult<Vec<StreamClosed>>>;

/// Reads the events of an archived stream.
pub(crate) type ArchivedFn<S> = for<'a> fn(&'a S, &'a StreamId, StreamSlice) -> EventStream<'a>;

/// What [`Cli::closing`](crate::Cli::closing) enables.
pub(crate) struct Lifecycle<S> {
    pub(crate) close: CloseFn<S>,
    pub(crate) closed: ClosedFn<S>,
    pub(crate) read_archived: ArchivedFn<S>,
}

impl<S> Clone for Lifecycle<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Lifecycle<S> {}

impl<S: StreamLifecycle> Lifecycle<S> {
    pub(crate) fn of() -> Self {
        Self {
            close: |store, stream, status, change| store.close(stream, status, change),
            closed: |store, query| store.closed_streams(query),
            read_archived: |store, stream, slice| store.read_archived(stream, slice),
        }
    }
}

fn enabled<S>(cli: &Cli<S>) -> Result<Lifecycle<S>, Failure> {
    cli.lifecycle.ok_or_else(|| {
        Failure::new(
            Exit::Usage,
            "this program does not close streams: its command line is built without closing (`Cli::closing`)",
        )
    })
}

fn record_json(closed: &StreamClosed) -> Value {
    json!({
        "stream": closed.stream().to_string(),
        "status": closed.status.as_str(),
        "version": closed.version,
        "events": closed.events,
        "by": closed.actor,
        "reason": closed.reason,
        "at": closed.at.to_rfc3339(),
    })
}

fn record_line(closed: &StreamClosed) -> String {
    format!(
        "{} {} at version {} ({} events moved or removed) by {} at {}: {}",
        closed.stream(),
        closed.status,
        closed.version,
        closed.events,
        closed.actor,
        closed.at.to_rfc3339(),
        closed.reason
    )
}

/// `close`: tombstones, archives or deletes a stream, when enabled and confirmed.
pub(crate) async fn close<S: CliStore>(
    cli: &Cli<S>,
    out: &mut Output<'_>,
    stream: &StreamId,
    closing: Closing,
    change: StreamChange,
    confirmed: bool,
) -> Result<Exit, Failure> {
    let lifecycle = enabled(cli)?;
    let status = closing.status();
    if !confirmed {
        return Err(Failure::new(
            Exit::Usage,
            format!("closing {stream} as {status} cannot be undone: add --yes to confirm"),
        ));
    }
    // A stream that never had an event is most likely a mistyped id: closing it would reserve
    // that id for good and write an audit record of nothing. The API still allows it.
    let never_written = cli.store.stream_version(stream).await.map_err(Failure::store)? == 0
        && cli
            .store
            .stream_closure(stream)
            .await
            .map_err(Failure::store)?
            .is_none();
    if never_written {
        return Err(Failure::new(
            Exit::NotFound,
            format!("stream {stream} has no events: nothing to close (check the id)"),
        ));
    }
    let closed = (lifecycle.close)(&cli.store, stream, status, change)
        .await
        .map_err(|error| match error {
            // A change the stream's status does not allow: the request's fault, not the store's.
            es_core::StoreError::StreamClosed(current) => Failure::new(
                Exit::Usage,
                format!(
                    "stream {stream} is {} (by {} at {}: {}): it cannot become {status} (a stream goes open, \
                     tombstoned, archived, deleted, never back)",
                    current.status,
                    current.actor,
                    current.at.to_rfc3339(),
                    current.reason
                ),
            ),
            error => Failure::store(error),
        })?;
    if out.json {
        out.json(&record_json(&closed))?;
    } else {
        out.line(record_line(&closed))?;
    }
    Ok(Exit::Ok)
}

/// `closed`: the records of closed streams of one status, a page at a time.
pub(crate) async fn closed<S: CliStore>(
    cli: &Cli<S>,
    out: &mut Output<'_>,
    closing: Closing,
    after: Option<StreamId>,
    limit: usize,
) -> Result<Exit, Failure> {
    let lifecycle = enabled(cli)?;
    let mut query = ClosedQuery::new(closing.status()).limit(limit);
    if let Some(after) = after {
        query = query.after(after);
    }
    let records = (lifecycle.closed)(&cli.store, &query).await.map_err(Failure::store)?;
    if out.json {
        let listed: Vec<Value> = records.iter().map(record_json).collect();
        out.json(&json!({ "closed": listed }))?;
    } else if records.is_empty() {
        out.line(format!("no stream is {}", closing.status()))?;
    } else {
        for record in &records {
            out.line(record_line(record))?;
        }
    }
    Ok(Exit::Ok)
}

/// The events of `stream` from `from` to `to` in the archive, and its record, when it is
/// archived and the program closes streams ([`Cli::closing`](crate::Cli::closing)).
pub(crate) async fn archived_rows<S: CliStore>(
    cli: &Cli<S>,
    stream: &StreamId,
    from: Option<u64>,
    to: Option<u64>,
) -> Result<Option<(Vec<Row>, StreamClosed)>, Failure> {
    let Some(lifecycle) = cli.lifecycle else {
        return Ok(None);
    };
    let closed = match cli.store.stream_closure(stream).await.map_err(Failure::store)? {
        Some(closed) if closed.status == StreamStatus::Archived => closed,
        _ => return Ok(None),
    };
    let from = from.unwrap_or(1);
    if from > closed.version {
        return Err(past_the_end(stream, closed.version, &format!("--from {from}")));
    }
    let mut slice = StreamSlice::from_version(from);
    if let Some(to) = to {
        slice = slice.to_version(to);
    }
    let events: Vec<RecordedEvent> = (lifecycle.read_archived)(&cli.store, stream, slice)
        .try_collect()
        .await
        .map_err(Failure::store)?;
    Ok(Some((events.into_iter().map(Row::Event).collect(), closed)))
}
