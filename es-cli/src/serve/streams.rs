//! The pages of streams: the list with its search, a stream's timeline of events, and the
//! aggregate's state at any version.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use es_core::{AsOf, RecordedEvent, StreamId, StreamQuery};
use serde::Deserialize;
use serde_json::Value;

use super::html::{self, encode, escape, json_block, link, link_with_id};
use super::{Browser, PageError};
use crate::commands::{parse_stream, past_the_end, time};
use crate::diff::changes;
use crate::output::{pretty, stored_json};
use crate::rows::{self, Row, Unreadable};
use crate::CliStore;

/// Streams listed per page unless `limit` says otherwise, and the most a page lists.
const STREAMS_PAGE: usize = 50;
const STREAMS_PAGE_MAX: usize = 500;
/// Events shown per page of a stream's timeline.
pub(crate) const EVENTS_PAGE: u64 = 50;

/// The parameters of the stream list: the search form's fields and the page.
#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    #[serde(rename = "type")]
    aggregate_type: Option<String>,
    id: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// A form field as sent: an empty field is no filter.
fn given(field: Option<String>) -> Option<String> {
    field.filter(|value| !value.is_empty())
}

/// `/`: a page of streams, searched by aggregate type and id prefix, in (type, id) order.
pub(crate) async fn list<S: CliStore>(
    State(browser): State<Arc<Browser<S>>>,
    Query(params): Query<ListParams>,
) -> Result<Response, PageError> {
    let limit = params.limit.unwrap_or(STREAMS_PAGE).clamp(1, STREAMS_PAGE_MAX);
    let query = StreamQuery {
        aggregate_type: given(params.aggregate_type),
        id_prefix: given(params.id),
        after: given(params.after).as_deref().map(parse_stream).transpose()?,
        limit,
    };
    let streams = browser.cli.store.list_streams(&query).await.map_err(PageError::store)?;

    let kind = query.aggregate_type.as_deref().unwrap_or_default();
    let prefix = query.id_prefix.as_deref().unwrap_or_default();
    let mut body = String::from("<h1>Streams</h1>");
    let _ = write!(
        body,
        "<form class=\"search\" method=\"get\" action=\"/\">\
         <label>Aggregate type <input name=\"type\" list=\"aggregate-types\" value=\"{}\"></label>\
         <label>Id starts with <input name=\"id\" value=\"{}\"></label>\
         <button id=\"search\" type=\"submit\">Search</button></form><datalist id=\"aggregate-types\">",
        escape(kind),
        escape(prefix)
    );
    for registered in browser.cli.aggregates.keys() {
        let _ = write!(body, "<option value=\"{}\">", escape(registered));
    }
    body.push_str("</datalist>");
    let rows: Vec<Vec<String>> = streams
        .iter()
        .map(|summary| {
            vec![
                link(&html::stream_url(&summary.stream), &summary.stream.to_string()),
                summary.version.to_string(),
                escape(&time(summary.last_recorded_at)),
            ]
        })
        .collect();
    if rows.is_empty() {
        body.push_str("<p id=\"empty\">No stream matches.</p>");
    } else {
        body.push_str(&html::table("streams", &["Stream", "Events", "Last event"], &rows));
    }
    let filters = format!("type={}&id={}&limit={limit}", encode(kind), encode(prefix));
    body.push_str("<p class=\"pager\">");
    if query.after.is_some() {
        body.push_str(&link_with_id("first", &format!("/?{filters}"), "first page"));
    }
    // A full page may have more after it: the catalog pages by the last stream shown.
    if let (true, Some(last)) = (streams.len() == limit, streams.last()) {
        let href = format!("/?{filters}&after={}", encode(&last.stream.to_string()));
        body.push_str(&link_with_id("next", &href, "next page"));
    }
    body.push_str("</p>");
    Ok(html::page(StatusCode::OK, "Streams", &body, None))
}

/// The stream named by a path's two segments.
fn stream_of(Path((aggregate_type, aggregate_id)): Path<(String, String)>) -> StreamId {
    StreamId::new(aggregate_type, aggregate_id)
}

/// The stream's version, or 404 when it has no events.
async fn existing<S: CliStore>(browser: &Browser<S>, stream: &StreamId) -> Result<u64, PageError> {
    let version = browser
        .cli
        .store
        .stream_version(stream)
        .await
        .map_err(PageError::store)?;
    if version == 0 {
        return Err(PageError::NotFound(format!("stream {stream} has no events")));
    }
    Ok(version)
}

/// The parameters of a stream's timeline: its first version shown.
#[derive(Debug, Deserialize)]
pub(crate) struct EventsParams {
    from: Option<u64>,
}

/// `/streams/{type}/{id}`: a page of the stream's events, from version `from`.
pub(crate) async fn events<S: CliStore>(
    State(browser): State<Arc<Browser<S>>>,
    path: Path<(String, String)>,
    Query(params): Query<EventsParams>,
) -> Result<Response, PageError> {
    let stream = stream_of(path);
    let version = existing(&browser, &stream).await?;
    let from = params.from.unwrap_or(1).clamp(1, version);
    let to = from.saturating_add(EVENTS_PAGE - 1).min(version);
    let events = rows::stream_rows(&browser.cli.store, &stream, from, Some(to))
        .await
        .map_err(PageError::store)?;

    let name = stream.to_string();
    let mut body = format!(
        "<h1 id=\"stream\">{}</h1><p>{version} {}; versions {from} to {to} below. {}</p>",
        escape(&name),
        if version == 1 { "event" } else { "events" },
        link_with_id("state-link", &html::state_url(&stream, version), "state now"),
    );
    let pager = pager(&stream, from, version);
    body.push_str(&pager);
    for row in &events {
        body.push_str(&row_html(&browser, &stream, row));
    }
    if events.len() > 3 {
        body.push_str(&pager);
    }
    Ok(html::page(StatusCode::OK, &name, &body, None))
}

/// The links between the pages of a stream's timeline.
fn pager(stream: &StreamId, from: u64, version: u64) -> String {
    let url = |from: u64| format!("{}?from={from}", html::stream_url(stream));
    let mut links = String::from("<p class=\"pager\">");
    if from > 1 {
        links.push_str(&link(&url(1), "first"));
        links.push_str(&link(&url(from.saturating_sub(EVENTS_PAGE).max(1)), "earlier events"));
    }
    let next = from.saturating_add(EVENTS_PAGE);
    if next <= version {
        links.push_str(&link(&url(next), "later events"));
        let last = version.saturating_sub(EVENTS_PAGE - 1).max(1);
        links.push_str(&link(&url(last), "last"));
    }
    links.push_str("</p>");
    links
}

/// One row of a timeline: an event, or a stored row that cannot be read.
fn row_html<S: CliStore>(browser: &Browser<S>, stream: &StreamId, row: &Row) -> String {
    match row {
        Row::Event(event) => event_html(browser, stream, event),
        Row::Unreadable(bad) => unreadable_html(stream, bad),
    }
}

/// A stored row that cannot be read, in its place on the timeline: its version and why.
fn unreadable_html(stream: &StreamId, bad: &Unreadable) -> String {
    format!(
        "<article class=\"event\" id=\"v{version}\"><h2><a href=\"#v{version}\">v{version}</a> \
         <span class=\"error\">cannot be read</span> · {state}</h2><p class=\"error unreadable\">{message}</p>\
         <p class=\"muted\">The events before and after it read as usual; <code>doctor</code> lists every stored \
         row that cannot be read.</p></article>",
        version = bad.version,
        state = link(&html::state_url(stream, bad.version), "state after"),
        message = escape(&bad.message()),
    )
}

/// One event of a timeline: envelope, metadata, and payload as read (and as stored when it
/// differs or does not decode).
fn event_html<S: CliStore>(browser: &Browser<S>, stream: &StreamId, event: &RecordedEvent) -> String {
    let metadata = &event.metadata;
    let uuid = |id: Option<uuid::Uuid>| id.map_or_else(|| "-".to_owned(), |id| id.to_string());
    let mut html = format!(
        "<article class=\"event\" id=\"v{version}\"><h2><a href=\"#v{version}\">v{version}</a> \
         <span class=\"event-name\">{name}</span> <span class=\"muted\">schema v{schema} · position \
         {position}</span> · {state}</h2><dl class=\"meta\">",
        version = event.version,
        name = escape(&event.event_name),
        schema = event.schema_version,
        position = event.position,
        state = link(&html::state_url(stream, event.version), "state after"),
    );
    let fields = [
        ("event id", event.event_id.to_string()),
        ("recorded at", time(event.recorded_at)),
        ("correlation", uuid(metadata.correlation_id)),
        ("causation", uuid(metadata.causation_id)),
        ("command", uuid(metadata.command_id)),
        ("actor", metadata.actor.clone().unwrap_or_else(|| "-".to_owned())),
    ];
    for (label, value) in fields {
        let _ = write!(html, "<dt>{label}</dt><dd>{}</dd>", escape(&value));
    }
    if !metadata.extra.is_empty() {
        let extra = Value::Object(metadata.extra.clone());
        let _ = write!(html, "<dt>extra</dt><dd>{}</dd>", escape(&extra.to_string()));
    }
    html.push_str("</dl>");
    let stored = stored_json(&event.payload);
    match browser
        .cli
        .aggregates
        .get(event.stream.aggregate_type.as_str())
        .map(|view| view.decode(event))
    {
        Some(Ok(decoded)) => {
            html.push_str(&json_block("payload", &decoded));
            if decoded != stored {
                html.push_str("<p class=\"muted\">as stored:</p>");
                html.push_str(&json_block("payload stored", &stored));
            }
        }
        Some(Err(error)) => {
            let _ = write!(html, "<p class=\"error\">does not decode: {}</p>", escape(&error));
            html.push_str("<p class=\"muted\">as stored:</p>");
            html.push_str(&json_block("payload stored", &stored));
        }
        None => {
            let _ = write!(
                html,
                "<p class=\"muted\">no aggregate of type `{}` is registered; as stored:</p>",
                escape(&event.stream.aggregate_type)
            );
            html.push_str(&json_block("payload stored", &stored));
        }
    }
    html.push_str("</article>");
    html
}

/// The parameters of the state page: the version to show (the latest when absent).
#[derive(Debug, Deserialize)]
pub(crate) struct StateParams {
    version: Option<u64>,
}

/// `/streams/{type}/{id}/state`: the aggregate's state after a version, the event that led to
/// it and what it changed, with links to step through the versions.
pub(crate) async fn state<S: CliStore>(
    State(browser): State<Arc<Browser<S>>>,
    path: Path<(String, String)>,
    Query(params): Query<StateParams>,
) -> Result<Response, PageError> {
    let stream = stream_of(path);
    let latest = existing(&browser, &stream).await?;
    let view = browser.cli.view(&stream.aggregate_type)?;
    let version = params.version.unwrap_or(latest);
    if version > latest {
        return Err(past_the_end(&stream, latest, &format!("version {version}")).into());
    }
    // Version 0 is the initial state; any other is folded once, with the state before it.
    let fold = match version {
        0 => view
            .state(&browser.cli.store, &stream, AsOf::Version(0))
            .await
            .map(|(_, state)| (None, state)),
        _ => view
            .step(&browser.cli.store, &stream, version)
            .await
            .map(|(before, after)| (Some(before), after)),
    };
    let (before, state) = fold.map_err(|error| PageError::Internal(format!("the state does not load: {error}")))?;

    let name = stream.to_string();
    let mut body = format!(
        "<h1>{} <span class=\"muted\">state</span></h1><p>After version <span id=\"version\">{version}</span> \
         of {latest} (see {}).</p><p class=\"steps\">",
        escape(&name),
        link(&html::stream_url(&stream), "the timeline"),
    );
    let step = |id: &str, target: u64, text: &str| link_with_id(id, &html::state_url(&stream, target), text);
    if version > 0 {
        body.push_str(&step("first", 0, "initial"));
        body.push_str(&step("previous", version - 1, "previous"));
    }
    if version < latest {
        body.push_str(&step("next", version + 1, "next"));
        body.push_str(&step("latest", latest, "latest"));
    }
    let _ = write!(
        body,
        "</p><form method=\"get\" action=\"{}\"><label>Version <input name=\"version\" type=\"number\" \
         min=\"0\" max=\"{latest}\" value=\"{version}\"></label> <button type=\"submit\">Show</button></form>",
        escape(&format!("{}/state", html::stream_url(&stream))),
    );
    body.push_str("<h2>State</h2>");
    let _ = write!(body, "<pre id=\"state\">{}</pre>", escape(&pretty(&state)));

    if version > 0 {
        let led_here = rows::stream_rows(&browser.cli.store, &stream, version, Some(version))
            .await
            .map_err(PageError::store)?;
        if let Some(row) = led_here.first() {
            let _ = write!(body, "<h2>The event of version {version}</h2>");
            body.push_str(&row_html(&browser, &stream, row));
        }
        let mut found = Vec::new();
        changes("$", before.as_ref(), Some(&state), &mut found);
        let _ = write!(
            body,
            "<h2>Changed since version {}</h2><ul id=\"changes\">",
            version - 1
        );
        if found.is_empty() {
            body.push_str("<li>nothing</li>");
        }
        for change in found {
            let shown = |value: &Option<Value>| value.as_ref().map_or_else(|| "(absent)".to_owned(), Value::to_string);
            let _ = write!(
                body,
                "<li><code>{}</code>: {} → {}</li>",
                escape(&change.path),
                escape(&shown(&change.before)),
                escape(&shown(&change.after))
            );
        }
        body.push_str("</ul>");
    }
    Ok(html::page(StatusCode::OK, &format!("{name} state"), &body, None))
}
