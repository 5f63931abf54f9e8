//! The global log (a page of it, and its live updates) and the projections.
//!
//! **The latest page.** [`GlobalLog::read_all`](es_core::GlobalLog::read_all) reads forward
//! from a position, and positions are sparse in PostgreSQL (a rolled-back transaction leaves a
//! gap), so "the last 50 events" is not "the events after head − 50". The page reads backwards
//! in windows instead: the events in the 50 positions before the head, then, while that found
//! fewer than 50 events, a window 4 times wider, up to [`WIDEST_WINDOW`] positions; it shows the
//! last 50 of what it found (fewer only when the log is that sparse, with a link to earlier
//! events either way). Each read is bounded by its window, so a page reads at most a few
//! thousand rows, whatever the size of the store.
//!
//! The head comes from [`GlobalLog::tail`](es_core::GlobalLog::tail): the first time, with
//! `tail(0)`, one count over the log (an index-only aggregate, no rows loaded); after that,
//! from the highest position seen, so it counts only the events committed since. The live view
//! starts at that head: its script asks `/log.json?after=POS` every second for what was
//! committed after the last row shown, and appends the rows. Older events are reached by the
//! "earlier" links (`/log?before=POS`), and any point of the log by `/log?after=POS`.
//!
//! A stored row that cannot be read (see [`crate::rows`]) is a row of its own, marked as such
//! with the store's reason and linked to its stream, in the pages and in `/log.json` (with
//! `error` set and no name, time or actor): the events around it stay viewable.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use es_core::{ClaimStatus, LogFilter, StreamId};
use serde::Deserialize;
use serde_json::{json, Value};

use super::html::{self, escape, link, link_with_id};
use super::{Browser, PageError};
use crate::commands::time;
use crate::rows::{self, Row};
use crate::CliStore;

/// Events per page of the log.
const LOG_PAGE: usize = 50;
/// The widest window of positions read backwards for one page.
const WIDEST_WINDOW: u64 = LOG_PAGE as u64 * 64;
/// The most events one `/log.json` answer holds; the next poll gets the rest.
const JSON_PAGE_MAX: usize = 500;

/// The parameters of the log page: at most one of `after` (the events after a position) and
/// `before` (the events before one); neither is the latest page, kept up to date.
#[derive(Debug, Deserialize)]
pub(crate) struct LogParams {
    after: Option<u64>,
    before: Option<u64>,
}

/// Up to `limit` rows of the global log after `after`, unreadable ones in their place.
async fn rows_after<S: CliStore>(browser: &Browser<S>, after: u64, limit: usize) -> Result<Vec<Row>, PageError> {
    let page = rows::log_page(&browser.cli.store, after, limit, &LogFilter::all())
        .await
        .map_err(PageError::store)?;
    Ok(page.rows)
}

/// Up to [`LOG_PAGE`] of the last events with positions below `end`, in position order; see the
/// module's documentation.
async fn page_before<S: CliStore>(browser: &Browser<S>, end: u64) -> Result<Vec<Row>, PageError> {
    let mut window = LOG_PAGE as u64;
    loop {
        let after = end.saturating_sub(window.saturating_add(1));
        let limit = usize::try_from(window).unwrap_or(usize::MAX);
        let mut events = rows_after(browser, after, limit).await?;
        events.retain(|row| row.position().is_some_and(|position| position < end));
        if events.len() >= LOG_PAGE || after == 0 || window >= WIDEST_WINDOW {
            let skip = events.len().saturating_sub(LOG_PAGE);
            return Ok(events.split_off(skip));
        }
        window = window.saturating_mul(4).min(WIDEST_WINDOW);
    }
}

/// `/log`: a page of the global log, live when it is the latest.
pub(crate) async fn page<S: CliStore>(
    State(browser): State<Arc<Browser<S>>>,
    Query(params): Query<LogParams>,
) -> Result<Response, PageError> {
    let (events, live_after, title) = match (params.after, params.before) {
        (Some(_), Some(_)) => {
            return Err(PageError::BadRequest("give `after` or `before`, not both".into()));
        }
        (Some(after), None) => {
            let events = rows_after(&browser, after, LOG_PAGE).await?;
            (events, None, format!("after position {after}"))
        }
        (None, Some(before)) => {
            let events = page_before(&browser, before).await?;
            (events, None, format!("before position {before}"))
        }
        (None, None) => {
            let head = browser.head().await?;
            let events = page_before(&browser, head.saturating_add(1)).await?;
            (events, Some(head), "latest".to_owned())
        }
    };
    if let Some(last) = events.last().and_then(Row::position) {
        browser.saw(last);
    }

    let mut body = format!("<h1>Global log <span class=\"muted\">{}</span></h1>", escape(&title));
    if let Some(head) = live_after {
        let _ = write!(
            body,
            "<p>Every event of every stream, in commit order. New events appear below as they are \
             committed. <span id=\"live-status\" class=\"muted\" data-after=\"{head}\">live</span></p>"
        );
    }
    body.push_str("<p class=\"pager\">");
    // Positions start at 1: before the first, there is nothing.
    if let Some(first) = events.first().and_then(Row::position).filter(|first| *first > 1) {
        body.push_str(&link_with_id("earlier", &format!("/log?before={first}"), "earlier"));
    }
    if live_after.is_none() {
        if let Some(last) = events.last().and_then(Row::position) {
            body.push_str(&link_with_id("later", &format!("/log?after={last}"), "later"));
        }
        body.push_str(&link_with_id("latest", "/log", "latest (live)"));
    }
    body.push_str("</p>");
    let rows: Vec<Vec<String>> = events.iter().map(row).collect();
    body.push_str(&html::table(
        "log",
        &["Position", "Recorded at", "Stream", "Version", "Event", "Actor"],
        &rows,
    ));
    if events.is_empty() {
        body.push_str("<p id=\"empty\">No events here.</p>");
    }
    let script = live_after.map(|_| LIVE_SCRIPT);
    Ok(html::page(StatusCode::OK, "Global log", &body, script))
}

/// One row of the log's table: an event, or a stored row that cannot be read.
fn row(row: &Row) -> Vec<String> {
    match row {
        Row::Event(event) => vec![
            event.position.to_string(),
            escape(&time(event.recorded_at)),
            link(&event_url(&event.stream, event.version), &event.stream.to_string()),
            event.version.to_string(),
            escape(&event.event_name),
            escape(event.metadata.actor.as_deref().unwrap_or("-")),
        ],
        Row::Unreadable(bad) => vec![
            bad.position
                .map_or_else(|| "-".to_owned(), |position| position.to_string()),
            "-".to_owned(),
            link(&event_url(&bad.stream, bad.version), &bad.stream.to_string()),
            bad.version.to_string(),
            format!("<span class=\"error\">{}</span>", escape(&bad.message())),
            "-".to_owned(),
        ],
    }
}

/// Version `version` of `stream` on the stream's timeline.
fn event_url(stream: &StreamId, version: u64) -> String {
    let page_start = (version.saturating_sub(1) / super::streams::EVENTS_PAGE) * super::streams::EVENTS_PAGE + 1;
    format!("{}?from={page_start}#v{version}", html::stream_url(stream))
}

/// Polls `/log.json` every second for the events after the last row shown, and appends them.
/// Rows are built with `textContent` (never HTML), so store data stays text.
const LIVE_SCRIPT: &str = r#"
(function () {
  var status = document.getElementById('live-status');
  var rows = document.getElementById('log-rows');
  var after = Number(status.dataset.after);
  function cell(row, text) { var td = document.createElement('td'); td.textContent = text; row.appendChild(td); return td; }
  function append(event) {
    var row = document.createElement('tr');
    row.className = 'new';
    row.id = 'position-' + event.position;
    cell(row, String(event.position));
    cell(row, event.recorded_at === null ? '-' : event.recorded_at);
    var link = document.createElement('a');
    link.href = event.url;
    link.textContent = event.stream;
    cell(row, '').appendChild(link);
    cell(row, String(event.version));
    if (event.error === null) {
      cell(row, event.event_name);
    } else {
      cell(row, event.error).className = 'error';
    }
    cell(row, event.actor === null ? '-' : event.actor);
    rows.appendChild(row);
    var empty = document.getElementById('empty');
    if (empty) { empty.remove(); }
  }
  function poll() {
    fetch('/log.json?after=' + after, { headers: { accept: 'application/json' } })
      .then(function (response) {
        if (!response.ok) { throw new Error('HTTP ' + response.status); }
        return response.json();
      })
      .then(function (page) {
        page.events.forEach(function (event) { append(event); after = event.position; });
        status.dataset.after = String(after);
        status.textContent = 'live, checked at ' + new Date().toLocaleTimeString();
      })
      .catch(function (error) { status.textContent = 'live updates failing: ' + error.message; })
      .finally(function () { setTimeout(poll, 1000); });
  }
  setTimeout(poll, 1000);
})();
"#;

/// The parameters of `/log.json`.
#[derive(Debug, Deserialize)]
pub(crate) struct JsonParams {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

/// `/log.json?after=POS`: the events after a position, as JSON, for the live view.
pub(crate) async fn json<S: CliStore>(
    State(browser): State<Arc<Browser<S>>>,
    Query(params): Query<JsonParams>,
) -> Result<Response, PageError> {
    let limit = params.limit.unwrap_or(JSON_PAGE_MAX).clamp(1, JSON_PAGE_MAX);
    let events = rows_after(&browser, params.after, limit).await?;
    let last = events.last().and_then(Row::position).unwrap_or(params.after);
    browser.saw(last);
    let listed: Vec<Value> = events
        .iter()
        .map(|row| match row {
            Row::Event(event) => json!({
                "position": event.position,
                "recorded_at": time(event.recorded_at),
                "stream": event.stream.to_string(),
                "url": event_url(&event.stream, event.version),
                "version": event.version,
                "event_name": event.event_name,
                "actor": event.metadata.actor,
                "error": Value::Null,
            }),
            Row::Unreadable(bad) => json!({
                "position": bad.position,
                "recorded_at": Value::Null,
                "stream": bad.stream.to_string(),
                "url": event_url(&bad.stream, bad.version),
                "version": bad.version,
                "event_name": Value::Null,
                "actor": Value::Null,
                "error": bad.message(),
            }),
        })
        .collect();
    Ok(html::json_response(&json!({ "events": listed, "after": last })))
}

/// `/projections`: each projection's checkpoint, lag and claim.
pub(crate) async fn projections<S: CliStore>(State(browser): State<Arc<Browser<S>>>) -> Response {
    let mut rows = Vec::new();
    for view in &browser.cli.projections {
        let name = escape(view.name());
        let claim = match view.claim_status().await {
            Ok(ClaimStatus::Held) => "held by a runner".to_owned(),
            Ok(ClaimStatus::Free) => "no runner".to_owned(),
            Err(error) => format!("<span class=\"error\">{}</span>", escape(&error.to_string())),
        };
        match view.lag().await {
            Ok(lag) => rows.push(vec![
                name,
                lag.checkpoint.to_string(),
                lag.events_behind.to_string(),
                format!("{:.1}", lag.seconds_behind),
                claim,
            ]),
            Err(error) => {
                let error = format!("<span class=\"error\">{}</span>", escape(&error.to_string()));
                rows.push(vec![name, error, "-".to_owned(), "-".to_owned(), claim]);
            }
        }
    }
    let mut body = String::from("<h1>Projections</h1>");
    if rows.is_empty() {
        body.push_str("<p id=\"empty\">No projection is registered with this command line.</p>");
    } else {
        body.push_str(&html::table(
            "projections",
            &["Projection", "Checkpoint", "Events behind", "Seconds behind", "Claim"],
            &rows,
        ));
    }
    html::page(StatusCode::OK, "Projections", &body, None)
}
