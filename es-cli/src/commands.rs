//! The commands that look: streams, events, states, the global log, the registry.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use es_core::lifecycle::StreamStatus;
use es_core::{LogFilter, RecordedEvent, StreamId, StreamQuery};
use serde_json::{json, Value};

use crate::interrupt::Interrupt;
use crate::output::{pretty, stored_json, Exit, Failure, Output};
use crate::rows::{self, Row, Unreadable};
use crate::{Cli, CliStore};

/// `type/id` as a stream; the id may contain `/`. (Arguments are parsed by the grammar; this is
/// for the browser's parameters.)
pub(crate) fn parse_stream(text: &str) -> Result<StreamId, Failure> {
    crate::args::stream_arg(text).map_err(|message| Failure::new(Exit::Usage, message))
}

pub(crate) fn time(instant: DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

pub(crate) async fn streams<S: CliStore>(
    cli: &Cli<S>,
    out: &mut Output<'_>,
    aggregate_type: Option<String>,
    id_prefix: Option<String>,
    after: Option<&StreamId>,
    limit: usize,
) -> Result<Exit, Failure> {
    let query = StreamQuery {
        aggregate_type,
        id_prefix,
        after: after.cloned(),
        limit,
    };
    let streams = cli.store.list_streams(&query).await.map_err(Failure::store)?;
    // A full page may have more after it.
    let next = (streams.len() == limit)
        .then(|| streams.last().map(|last| last.stream.to_string()))
        .flatten();
    if out.json {
        let listed: Vec<Value> = streams
            .iter()
            .map(|summary| {
                json!({
                    "aggregate_type": summary.stream.aggregate_type,
                    "aggregate_id": summary.stream.aggregate_id,
                    "events": summary.version,
                    "last_recorded_at": time(summary.last_recorded_at),
                })
            })
            .collect();
        out.json(&json!({ "streams": listed, "next_after": next }))?;
        return Ok(Exit::Ok);
    }
    let rows: Vec<Vec<String>> = streams
        .iter()
        .map(|summary| {
            vec![
                summary.stream.to_string(),
                summary.version.to_string(),
                time(summary.last_recorded_at),
            ]
        })
        .collect();
    out.table(&["STREAM", "EVENTS", "LAST EVENT"], &rows)?;
    if let Some(next) = next {
        out.line(format!("(more: --after {next})"))?;
    }
    Ok(Exit::Ok)
}

/// An event as JSON: envelope, metadata, the payload as stored and as the code reads it.
fn event_json<S: CliStore>(cli: &Cli<S>, event: &RecordedEvent) -> Value {
    let decoded = cli
        .aggregates
        .get(event.stream.aggregate_type.as_str())
        .map(|view| view.decode(event));
    let metadata = serde_json::to_value(&event.metadata).unwrap_or(Value::Null);
    json!({
        "stream": event.stream.to_string(),
        "version": event.version,
        "position": event.position,
        "event_id": event.event_id,
        "event_name": event.event_name,
        "schema_version": event.schema_version,
        "recorded_at": time(event.recorded_at),
        "metadata": metadata,
        "payload": stored_json(&event.payload),
        "decoded": decoded.as_ref().and_then(|decoded| decoded.as_ref().ok()),
        "decode_error": match &decoded {
            Some(Err(error)) => Value::String(error.clone()),
            None => Value::String(format!("no aggregate of type `{}` is registered", event.stream.aggregate_type)),
            Some(Ok(_)) => Value::Null,
        },
    })
}

fn print_event<S: CliStore>(cli: &Cli<S>, out: &mut Output<'_>, event: &RecordedEvent) -> Result<(), Failure> {
    let metadata = &event.metadata;
    out.line(format!(
        "{} v{} pos {}  {} (schema v{})  {}",
        event.stream,
        event.version,
        event.position,
        event.event_name,
        event.schema_version,
        time(event.recorded_at)
    ))?;
    out.line(format!(
        "  event {}  command {}  correlation {}  causation {}  actor {}",
        event.event_id,
        or_dash(metadata.command_id),
        or_dash(metadata.correlation_id),
        or_dash(metadata.causation_id),
        or_dash(metadata.actor.as_deref()),
    ))?;
    let payload = stored_json(&event.payload);
    for line in pretty(&payload).lines() {
        out.line(format!("  {line}"))?;
    }
    match cli
        .aggregates
        .get(event.stream.aggregate_type.as_str())
        .map(|view| view.decode(event))
    {
        Some(Ok(decoded)) if decoded != payload => {
            out.line("  read by the current code as:")?;
            for line in pretty(&decoded).lines() {
                out.line(format!("  {line}"))?;
            }
        }
        Some(Ok(_)) => {}
        Some(Err(error)) => out.line(format!("  does not decode: {error}"))?,
        None => out.line(format!(
            "  (no aggregate of type `{}` is registered)",
            event.stream.aggregate_type
        ))?,
    }
    Ok(())
}

/// A row that cannot be read, as JSON: where it is and why, in place of an event.
pub(crate) fn unreadable_json(row: &Unreadable) -> Value {
    json!({
        "stream": row.stream.to_string(),
        "version": row.version,
        "position": row.position,
        "unreadable": row.reason,
    })
}

/// A row as JSON: the event, or why it cannot be read.
fn row_json<S: CliStore>(cli: &Cli<S>, row: &Row) -> Value {
    match row {
        Row::Event(event) => event_json(cli, event),
        Row::Unreadable(row) => unreadable_json(row),
    }
}

pub(crate) async fn events<S: CliStore>(
    cli: &Cli<S>,
    out: &mut Output<'_>,
    stream: &StreamId,
    from: Option<u64>,
    to: Option<u64>,
) -> Result<Exit, Failure> {
    let (rows, archived) = match last_version(cli, stream).await {
        Ok(last) => {
            let from = from.unwrap_or(1);
            if from > last {
                return Err(past_the_end(stream, last, &format!("--from {from}")));
            }
            let rows = rows::stream_rows(&cli.store, stream, from, to)
                .await
                .map_err(Failure::store)?;
            (rows, None)
        }
        // An archived stream's events are shown from the archive, on programs that close streams.
        Err(failure) => match crate::closing::archived_rows(cli, stream, from, to).await? {
            Some((rows, closed)) => (rows, Some(closed)),
            None => return Err(failure),
        },
    };
    if let Some(closed) = &archived {
        if !out.json {
            out.line(format!(
                "{stream} is archived (by {} at {}: {}); its events, read from the archive:",
                closed.actor,
                closed.at.to_rfc3339(),
                closed.reason
            ))?;
            out.line("")?;
        }
    }
    if out.json {
        let listed: Vec<Value> = rows.iter().map(|row| row_json(cli, row)).collect();
        out.json(&json!({ "stream": stream.to_string(), "archived": archived.is_some(), "events": listed }))?;
        return Ok(Exit::Ok);
    }
    for (index, row) in rows.iter().enumerate() {
        if index > 0 {
            out.line("")?;
        }
        match row {
            Row::Event(event) => print_event(cli, out, event)?,
            Row::Unreadable(row) => {
                out.line(format!("{} v{}  cannot be read", row.stream, row.version))?;
                out.line(format!("  {}", row.message()))?;
                out.line("  (`doctor` lists every stored row that cannot be read)")?;
            }
        }
    }
    Ok(Exit::Ok)
}

/// The stream's last version; not found (naming why) when it has no events.
pub(crate) async fn last_version<S: CliStore>(cli: &Cli<S>, stream: &StreamId) -> Result<u64, Failure> {
    match cli.store.stream_version(stream).await.map_err(Failure::store)? {
        0 => Err(no_events(cli, stream).await),
        last => Ok(last),
    }
}

/// A version asked for (`asked`, as the command line gave it) past the stream's last.
pub(crate) fn past_the_end(stream: &StreamId, last: u64, asked: &str) -> Failure {
    Failure::new(
        Exit::NotFound,
        format!("{asked} is past the end of {stream}: its last version is {last}"),
    )
}

/// Why `stream` shows no events: it has none, or it was archived or deleted (who, when, why).
async fn no_events<S: CliStore>(cli: &Cli<S>, stream: &StreamId) -> Failure {
    let message = match cli.store.stream_closure(stream).await {
        Ok(Some(closed)) => {
            let whereabouts = match closed.status {
                StreamStatus::Archived => "its events are in the archive",
                _ => "its events are gone",
            };
            format!(
                "stream {stream} is {} (by {} at {}: {}); {whereabouts}",
                closed.status,
                closed.actor,
                closed.at.to_rfc3339(),
                closed.reason
            )
        }
        Ok(None) => format!("stream {stream} has no events"),
        Err(error) => return Failure::store(error),
    };
    Failure::new(Exit::NotFound, message)
}

/// How often `log --follow` looks for new events.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// `log`: pages of the global log; with `follow`, until Ctrl-C (exit 130), which a read in
/// progress does not delay (reads change nothing, so dropping one is safe).
pub(crate) async fn log<S: CliStore>(
    cli: &Cli<S>,
    out: &mut Output<'_>,
    after: Option<u64>,
    filter: &LogFilter,
    limit: usize,
    follow: bool,
    interrupt: &mut Interrupt,
) -> Result<Exit, Failure> {
    // Following starts at the head unless told where; a listing starts at the first event.
    let mut position = match (after, follow) {
        (Some(after), _) => after,
        (None, true) => cli.store.tail(0).await.map_err(Failure::store)?.head_position,
        (None, false) => 0,
    };
    let mut printed = 0;
    loop {
        let page_size = if follow { 500 } else { (limit - printed).min(500) };
        if page_size == 0 {
            return Ok(Exit::Ok);
        }
        let page = tokio::select! {
            page = rows::log_page(&cli.store, position, page_size, filter) => page.map_err(Failure::store)?,
            () = interrupt.recv() => return Ok(Exit::Interrupted),
        };
        for row in &page.rows {
            if out.json {
                out.json_line(&row_json(cli, row))?;
                continue;
            }
            match row {
                Row::Event(event) => out.line(format!(
                    "{:>8}  {}  {} v{}  {}  actor {}",
                    event.position,
                    time(event.recorded_at),
                    event.stream,
                    event.version,
                    event.event_name,
                    or_dash(event.metadata.actor.as_deref()),
                ))?,
                Row::Unreadable(row) => out.line(format!(
                    "{:>8}  {} v{}  cannot be read: {} (`doctor` lists every such row)",
                    or_dash(row.position),
                    row.stream,
                    row.version,
                    row.reason,
                ))?,
            }
            out.out.flush()?;
        }
        // Past the events the filter left out too.
        position = page.scanned_to;
        printed += page.rows.len();
        if !page.at_head {
            continue;
        }
        if !follow {
            return Ok(Exit::Ok);
        }
        tokio::select! {
            () = tokio::time::sleep(FOLLOW_POLL) => {}
            () = interrupt.recv() => return Ok(Exit::Interrupted),
        }
    }
}

/// `forget`: destroys a data subject's key, when the program enabled it and the user confirmed.
pub(crate) async fn forget<S: CliStore>(
    cli: &Cli<S>,
    out: &mut Output<'_>,
    subject: &str,
    confirmed: bool,
) -> Result<Exit, Failure> {
    let Some(forget) = cli.forget else {
        return Err(Failure::new(
            Exit::Usage,
            "this program does not seal personal data, so there is nothing to forget: its command line is built \
             without forgetting (`Cli::forgetting`)",
        ));
    };
    if !confirmed {
        return Err(Failure::new(
            Exit::Usage,
            format!(
                "forgetting `{subject}` destroys its key for good, and its personal data can never be read again: \
                 add --yes to confirm"
            ),
        ));
    }
    let had_key = forget(&cli.store, subject).await.map_err(Failure::store)?;
    if out.json {
        out.json(&json!({ "subject": subject, "had_key": had_key }))?;
    } else if had_key {
        out.line(format!(
            "forgot `{subject}`: its key is destroyed, and its personal data reads as forgotten from now on"
        ))?;
    } else {
        out.line(format!(
            "`{subject}` had no key (forgotten already, or none of its data was stored); it stays forgotten"
        ))?;
    }
    Ok(Exit::Ok)
}

pub(crate) fn registry<S: CliStore>(cli: &Cli<S>, out: &mut Output<'_>) -> Result<Exit, Failure> {
    let events: Vec<_> = cli.registry.events().collect();
    let upcasts = |version: u32| -> Vec<u32> { (1..version).collect() };
    if out.json {
        let mut aggregates: Vec<Value> = Vec::new();
        for aggregate_type in cli.aggregates.keys() {
            let listed: Vec<Value> = events
                .iter()
                .filter(|registered| registered.aggregate_type == *aggregate_type)
                .map(|registered| {
                    let event = registered.event;
                    json!({
                        "name": event.name,
                        "aliases": event.aliases,
                        "schema_version": event.version,
                        "rust_type": event.rust_type,
                        "upcast_from": upcasts(event.version),
                    })
                })
                .collect();
            aggregates.push(json!({ "aggregate_type": aggregate_type, "events": listed }));
        }
        out.json(&json!({ "aggregates": aggregates }))?;
        return Ok(Exit::Ok);
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|registered| {
            let event = registered.event;
            let chain = match event.version {
                0 | 1 => "-".to_owned(),
                version => {
                    let steps: Vec<String> = (1..=version).map(|step| format!("v{step}")).collect();
                    steps.join(" -> ")
                }
            };
            vec![
                registered.aggregate_type.to_owned(),
                event.name.to_owned(),
                format!("v{}", event.version),
                if event.aliases.is_empty() {
                    "-".to_owned()
                } else {
                    event.aliases.join(", ")
                },
                chain,
                event.rust_type.to_owned(),
            ]
        })
        .collect();
    out.table(
        &[
            "AGGREGATE",
            "EVENT",
            "SCHEMA",
            "ALIASES",
            "UPCASTS ON LOAD",
            "RUST TYPE",
        ],
        &rows,
    )?;
    Ok(Exit::Ok)
}
