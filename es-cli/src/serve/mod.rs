//! `es serve`: a read-only web browser of the event store, on 127.0.0.1.
//!
//! Server-side rendered pages (see [`html`] for escaping), GET only: there is no route that
//! writes, and any other method on a page is answered 405. Every request does bounded work:
//! a page of the catalog, a slice of one stream by version, or a page of the global log from a
//! position; nothing scans the store or loads every stream (see [`log`] for the latest page of
//! the global log). The one exception is inherent: the state at version N folds the stream's
//! first N events (once: the state before it comes from the same fold).

mod html;
mod log;
mod streams;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use es_core::StoreError;

use crate::interrupt::Interrupt;
use crate::output::{Exit, Failure, Output};
use crate::{Cli, CliStore};

/// What the pages share: the command line's store, aggregates and projections, and the
/// highest global-log position seen so far.
pub(crate) struct Browser<S> {
    cli: Cli<S>,
    /// A lower bound of the log's head: asking the store for what follows it (rather than
    /// following 0) keeps that question small after the first time.
    known_head: AtomicU64,
}

impl<S: CliStore> Browser<S> {
    /// The position of the last event of the global log (0 when empty).
    async fn head(&self) -> Result<u64, PageError> {
        let known = self.known_head.load(Ordering::Relaxed);
        let tail = self.cli.store.tail(known).await.map_err(PageError::store)?;
        let head = tail.head_position.max(known);
        self.known_head.fetch_max(head, Ordering::Relaxed);
        Ok(head)
    }

    /// Records that the log reaches at least `position`.
    fn saw(&self, position: u64) {
        self.known_head.fetch_max(position, Ordering::Relaxed);
    }
}

/// The browser's routes over `cli`.
pub(crate) fn router<S: CliStore>(cli: Cli<S>) -> Router {
    let browser = Arc::new(Browser {
        cli,
        known_head: AtomicU64::new(0),
    });
    Router::new()
        .route("/", get(streams::list::<S>))
        .route("/streams/{aggregate_type}/{aggregate_id}", get(streams::events::<S>))
        .route(
            "/streams/{aggregate_type}/{aggregate_id}/state",
            get(streams::state::<S>),
        )
        .route("/log", get(log::page::<S>))
        .route("/log.json", get(log::json::<S>))
        .route("/projections", get(log::projections::<S>))
        .fallback(not_found)
        .layer(middleware::from_fn(local_host_only))
        .with_state(browser)
}

/// Runs `es serve`: listens on 127.0.0.1:`port` (any free port for 0), prints the URL as the
/// first line of output, and serves until Ctrl-C (then ends with [`Exit::Interrupted`], as every
/// command Ctrl-C ends).
pub(crate) async fn run<S: CliStore>(
    cli: Cli<S>,
    port: u16,
    out: &mut Output<'_>,
    mut interrupt: Interrupt,
) -> Result<Exit, Failure> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .map_err(|error| Failure::new(Exit::Problems, format!("cannot listen on 127.0.0.1:{port}: {error}")))?;
    let address = listener.local_addr()?;
    let url = format!("http://{address}");
    if out.json {
        out.json_line(&serde_json::json!({ "listening": url }))?;
    } else {
        out.line(format!("listening on {url}"))?;
        out.out.flush()?;
    }
    // Without a Ctrl-C handler, `recv` never resolves: it serves until the process is killed.
    axum::serve(listener, router(cli))
        .with_graceful_shutdown(async move { interrupt.recv().await })
        .await
        .map_err(|error| Failure::new(Exit::Problems, format!("the server failed: {error}")))?;
    Ok(Exit::Interrupted)
}

/// Refuses requests whose `Host` is not this machine's loopback name, so that a web page
/// rebinding its own domain name to 127.0.0.1 cannot read the store through the browser; and
/// marks every answer (axum's own rejections of bad parameters too) as not to be sniffed.
async fn local_host_only(request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST).map(|host| host.to_str());
    let mut response = match host {
        None => next.run(request).await,
        Some(Ok(host)) if is_loopback_host(host) => next.run(request).await,
        Some(_) => html::error_page(
            StatusCode::FORBIDDEN,
            "this event browser answers only on 127.0.0.1 or localhost",
        ),
    };
    response
        .headers_mut()
        .insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// Whether `host` (a `Host` header: a name and an optional port) names the loopback.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    matches!(name.to_ascii_lowercase().as_str(), "127.0.0.1" | "localhost" | "::1")
}

async fn not_found() -> Response {
    html::error_page(StatusCode::NOT_FOUND, "there is no such page")
}

/// Why a page cannot be shown; answered as an error page with its status.
#[derive(Debug)]
pub(crate) enum PageError {
    /// What was asked for does not exist: 404.
    NotFound(String),
    /// The request's parameters are wrong: 400.
    BadRequest(String),
    /// The store failed: 503.
    Store(String),
    /// Anything else: 500.
    Internal(String),
}

impl PageError {
    fn store(error: StoreError) -> Self {
        Self::Store(error.to_string())
    }
}

impl From<Failure> for PageError {
    fn from(failure: Failure) -> Self {
        match failure.exit {
            Exit::NotFound => Self::NotFound(failure.message),
            Exit::Usage => Self::BadRequest(failure.message),
            Exit::Store => Self::Store(failure.message),
            _ => Self::Internal(failure.message),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::NotFound(message) => (StatusCode::NOT_FOUND, message),
            Self::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            Self::Store(message) => (StatusCode::SERVICE_UNAVAILABLE, format!("the store failed: {message}")),
            Self::Internal(message) => (StatusCode::INTERNAL_SERVER_ERROR, message),
        };
        html::error_page(status, &message)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_loopback_names_are_served() {
        for host in ["127.0.0.1:8080", "localhost:1", "LOCALHOST", "[::1]:80", "127.0.0.1"] {
            assert!(super::is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "[::2]:80",
            "",
            "0.0.0.0:80",
        ] {
            assert!(!super::is_loopback_host(host), "{host}");
        }
    }
}
