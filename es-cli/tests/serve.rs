//! The event browser's pages (`es serve`), called in-process through its router on an
//! in-memory store with a known history: statuses, key contents, escaping of untrusted data,
//! 404s, and no route that writes.

mod pages;
mod support;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use es_core::{EventStore, GlobalLog, Metadata, RecordedEvent, Repository, StreamId, StreamSlice};
use futures_util::TryStreamExt;
use pages::{get, request};
use serde_json::Value;
use support::{fixture, Escalated, Ticket, TicketEvent, ATTRIBUTE_ACTOR, ODD_ID, SCRIPT_TITLE};
use tower::ServiceExt;

async fn router() -> (support::Fixture, Router) {
    let fixture = fixture().await.with_untrusted().await;
    let router = fixture.cli().into_router();
    (fixture, router)
}

#[tokio::test]
async fn the_stream_list_searches_and_pages() {
    let (_fixture, router) = router().await;
    let page = get(&router, "/").await;
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    assert!(page.policy.contains("script-src 'nonce-"), "{}", page.policy);
    for stream in ["/streams/ticket/T-1", "/streams/ticket/T-2", "/streams/order/O-1"] {
        assert!(
            page.body.contains(&format!("href=\"{stream}\"")),
            "{stream}: {}",
            page.body
        );
    }
    assert!(page.body.contains("<td>4</td>"), "T-1 has 4 events: {}", page.body);

    let found = get(&router, "/?type=ticket&id=T-1").await.body;
    assert!(found.contains("ticket/T-1") && !found.contains("ticket/T-2"), "{found}");
    assert!(found.contains("value=\"T-1\""), "the form keeps the search: {found}");
    let none = get(&router, "/?type=invoice&id=").await.body;
    assert!(none.contains("No stream matches"), "{none}");

    let first = get(&router, "/?type=ticket&id=T-&limit=2").await.body;
    let next = "/?type=ticket&amp;id=T-&amp;limit=2&amp;after=ticket%2FT-2";
    assert!(first.contains(&format!("id=\"next\" href=\"{next}\"")), "{first}");
    let second = get(&router, &next.replace("&amp;", "&")).await.body;
    assert!(
        second.contains("ticket/T-3") && second.contains("ticket/T-4"),
        "{second}"
    );
    assert!(!second.contains(">ticket/T-2<"), "{second}");
    let bad = request(&router, Method::GET, "/?after=nothing").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    let rejected = request(&router, Method::GET, "/?limit=%3Cb%3E").await;
    assert_eq!(
        rejected.status,
        StatusCode::BAD_REQUEST,
        "axum's rejection: {}",
        rejected.body
    );
    assert!(
        !rejected.content_type.starts_with("text/html"),
        "{}",
        rejected.content_type
    );
}

#[tokio::test]
async fn a_stream_shows_its_events_with_metadata_and_payloads() {
    let (fixture, router) = router().await;
    let t1 = StreamId::new("ticket", "T-1");
    let page = get(&router, "/streams/ticket/T-1").await.body;
    assert_eq!(page.matches("<article class=\"event\"").count(), 4, "{page}");
    let events: Vec<RecordedEvent> = fixture
        .store
        .read_stream(&t1, StreamSlice::all())
        .try_collect()
        .await
        .expect("read");
    let metadata = &events[0].metadata;
    for shown in [
        events[0].event_id.to_string(),
        events[3].event_id.to_string(),
        metadata.correlation_id.expect("correlation").to_string(),
        metadata.causation_id.expect("causation").to_string(),
        metadata.command_id.expect("command").to_string(),
        "<dd>alice</dd>".to_owned(),
        "&quot;level&quot;: 3".to_owned(),
        "Escalated".to_owned(),
        "href=\"/streams/ticket/T-1/state?version=2\"".to_owned(),
    ] {
        assert!(page.contains(&shown), "shows {shown}: {page}");
    }

    let t4 = get(&router, "/streams/ticket/T-4").await.body;
    assert!(t4.contains("&quot;level&quot;: 1"), "upcast as the code reads it: {t4}");
    assert!(t4.contains("as stored:"), "and as stored, as it differs: {t4}");
    assert!(t4.contains("does not decode"), "{t4}");
    assert!(t4.contains("schema version 9"), "with the error: {t4}");
    let order = get(&router, "/streams/order/O-1").await.body;
    assert!(order.contains("no aggregate of type `order` is registered"), "{order}");
    assert!(order.contains("&quot;total&quot;: 3"), "{order}");
}

#[tokio::test]
async fn long_streams_are_paged_by_version() {
    let (fixture, router) = router().await;
    let tickets = Repository::<Ticket, _>::new(fixture.store.clone());
    for level in 0..119 {
        let escalate = move |_: &Ticket| vec![TicketEvent::from(Escalated { level })];
        tickets
            .execute("T-1", Metadata::new(), escalate)
            .await
            .expect("escalate");
    }
    // 123 events: pages of 50 from version 1.
    let first = get(&router, "/streams/ticket/T-1").await.body;
    assert!(first.contains("id=\"v1\"") && first.contains("id=\"v50\""), "{first}");
    assert!(!first.contains("id=\"v51\""), "{first}");
    assert!(
        first.contains("href=\"/streams/ticket/T-1?from=51\">later events"),
        "{first}"
    );
    assert!(first.contains("href=\"/streams/ticket/T-1?from=74\">last"), "{first}");
    let middle = get(&router, "/streams/ticket/T-1?from=51").await.body;
    assert_eq!(middle.matches("<article class=\"event\"").count(), 50);
    assert!(
        middle.contains("id=\"v51\"") && middle.contains("id=\"v100\""),
        "{middle}"
    );
    assert!(
        middle.contains("href=\"/streams/ticket/T-1?from=1\">earlier events"),
        "{middle}"
    );
    let beyond = get(&router, "/streams/ticket/T-1?from=900").await.body;
    assert!(
        beyond.contains("id=\"v123\""),
        "a page past the end shows the last: {beyond}"
    );
}

#[tokio::test]
async fn states_step_through_versions() {
    let (_fixture, router) = router().await;
    let latest = get(&router, "/streams/ticket/T-1/state").await.body;
    assert!(latest.contains("<span id=\"version\">4</span> of 4"), "{latest}");
    assert!(latest.contains("&quot;open&quot;: false"), "{latest}");
    assert!(!latest.contains("id=\"next\""), "{latest}");

    let second = get(&router, "/streams/ticket/T-1/state?version=2").await.body;
    assert!(second.contains("<span id=\"version\">2</span>"), "{second}");
    assert!(second.contains("&quot;level&quot;: 2"), "{second}");
    assert!(second.contains("&quot;open&quot;: true"), "{second}");
    for (id, version) in [("previous", 1), ("next", 3), ("first", 0), ("latest", 4)] {
        let link = format!("id=\"{id}\" href=\"/streams/ticket/T-1/state?version={version}\"");
        assert!(second.contains(&link), "{link}: {second}");
    }
    assert!(second.contains("<code>$.level</code>: 0 → 2"), "what changed: {second}");
    assert!(second.contains("The event of version 2"), "{second}");

    let initial = get(&router, "/streams/ticket/T-1/state?version=0").await.body;
    assert!(
        initial.contains("&quot;title&quot;: &quot;&quot;"),
        "the default state: {initial}"
    );
    assert!(!initial.contains("id=\"previous\""), "{initial}");
    let upcast = get(&router, "/streams/ticket/T-4/state?version=2").await.body;
    assert!(
        upcast.contains("&quot;level&quot;: 1"),
        "folded as the code reads it: {upcast}"
    );
}

#[tokio::test]
async fn store_data_is_escaped_everywhere() {
    let (_fixture, router) = router().await;
    let escaped_title = "&lt;script&gt;alert(1)&lt;/script&gt;";
    let escaped_actor = "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;";
    let pages = [
        "/",
        "/streams/ticket/T-3",
        "/streams/ticket/T-3/state?version=1",
        "/log",
        "/log?after=0",
    ];
    for uri in pages {
        let body = get(&router, uri).await.body;
        assert!(!body.contains(SCRIPT_TITLE), "{uri} shows the script as text: {body}");
        assert!(!body.contains(ATTRIBUTE_ACTOR), "{uri}: {body}");
        assert!(!body.contains("<img"), "{uri}: {body}");
        // The only script is the log page's own, under its nonce.
        let scripts = body.matches("<script").count();
        let own = body.matches("<script nonce=\"").count();
        assert_eq!(scripts, own, "{uri}: {body}");
    }
    let stream = get(&router, "/streams/ticket/T-3").await.body;
    assert!(stream.contains(escaped_title), "{stream}");
    assert!(stream.contains(escaped_actor), "{stream}");
    let log = get(&router, "/log").await.body;
    assert!(log.contains(escaped_actor), "{log}");

    // An id with a slash, quotes and HTML: encoded in links, escaped in text, and found again.
    let list = get(&router, "/").await.body;
    let href = "/streams/ticket/a%2Fb%20%3C%26%3E%22%3F%23";
    assert!(list.contains(&format!("href=\"{href}\"")), "{list}");
    assert!(list.contains("ticket/a/b &lt;&amp;&gt;&quot;?#"), "{list}");
    let odd = get(&router, href).await.body;
    assert!(odd.contains("&quot;title&quot;: &quot;odd&quot;"), "{odd}");
    assert!(ODD_ID.contains('/'));
    let json = get(&router, "/log.json?after=0").await;
    assert_eq!(json.content_type, "application/json");
    let listed: Value = serde_json::from_str(&json.body).expect("JSON");
    let actors: Vec<&Value> = listed["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| &event["actor"])
        .collect();
    assert!(
        actors.contains(&&Value::from(ATTRIBUTE_ACTOR)),
        "JSON carries the data as it is"
    );
}

#[tokio::test]
async fn unknown_streams_and_pages_are_not_found() {
    let (_fixture, router) = router().await;
    for uri in [
        "/streams/ticket/T-9",
        "/streams/ticket/T-9/state",
        "/streams/order/O-1/state",
        "/streams/ticket/T-1/state?version=5",
        "/nothing",
        "/streams/ticket",
    ] {
        let page = request(&router, Method::GET, uri).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{uri}: {}", page.body);
        assert_eq!(page.content_type, "text/html; charset=utf-8", "{uri}");
    }
    let unregistered = request(&router, Method::GET, "/streams/order/O-1/state").await.body;
    assert!(
        unregistered.contains("no aggregate of type `order` is registered"),
        "{unregistered}"
    );
    let past = request(&router, Method::GET, "/streams/ticket/T-1/state?version=5")
        .await
        .body;
    assert!(past.contains("its last version is 4"), "names the last version: {past}");
    let missing = request(&router, Method::GET, "/streams/ticket/%3Cb%3E").await.body;
    assert!(missing.contains("stream ticket/&lt;b&gt; has no events"), "{missing}");
}

#[tokio::test]
async fn nothing_writes_and_only_loopback_names_are_answered() {
    let (_fixture, router) = router().await;
    let routes = [
        "/",
        "/streams/ticket/T-1",
        "/streams/ticket/T-1/state",
        "/log",
        "/log.json",
        "/projections",
    ];
    for uri in routes {
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            let page = request(&router, method.clone(), uri).await;
            assert_eq!(page.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        }
    }
    let head = request(&router, Method::HEAD, "/").await;
    assert_eq!(head.status, StatusCode::OK);

    let rebound = Request::builder()
        .uri("/")
        .header(header::HOST, "attacker.example:8080")
        .body(Body::empty())
        .expect("a request");
    let response = router.clone().oneshot(rebound).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_log_shows_the_latest_page_and_what_follows() {
    let (fixture, router) = router().await;
    let head = fixture.store.tail(0).await.expect("tail").head_position;
    let latest = get(&router, "/log").await.body;
    assert!(
        latest.contains(&format!("data-after=\"{head}\"")),
        "live from the head: {latest}"
    );
    assert!(latest.contains("<script nonce=\""), "{latest}");
    assert!(
        latest.contains("<td>1</td>") && latest.contains(&format!("<td>{head}</td>")),
        "{latest}"
    );
    assert!(latest.contains("href=\"/streams/ticket/T-1?from=1#v2\""), "{latest}");

    let after: Value =
        serde_json::from_str(&get(&router, &format!("/log.json?after={head}")).await.body).expect("JSON");
    assert_eq!(after["events"], Value::Array(vec![]));
    assert_eq!(after["after"], head);
    let tickets = Repository::<Ticket, _>::new(fixture.store.clone());
    let escalate = |_: &Ticket| vec![TicketEvent::from(Escalated { level: 7 })];
    tickets
        .execute("T-2", Metadata::new().with_actor("bob"), escalate)
        .await
        .expect("escalate");
    let after: Value =
        serde_json::from_str(&get(&router, &format!("/log.json?after={head}")).await.body).expect("JSON");
    let event = &after["events"][0];
    assert_eq!(
        (
            &event["stream"],
            &event["version"],
            &event["event_name"],
            &event["actor"]
        ),
        (
            &Value::from("ticket/T-2"),
            &Value::from(2),
            &Value::from("Escalated"),
            &Value::from("bob")
        )
    );
    assert_eq!(event["url"], "/streams/ticket/T-2?from=1#v2");
    assert_eq!(after["after"], head + 1);

    let before = get(&router, "/log?before=3").await.body;
    assert!(
        before.contains("<td>1</td>") && before.contains("<td>2</td>"),
        "{before}"
    );
    assert!(
        !before.contains("<td>3</td>") && !before.contains("data-after"),
        "{before}"
    );
    let forward = get(&router, "/log?after=10").await.body;
    assert!(
        forward.contains("<td>11</td>") && !forward.contains("<td>10</td>"),
        "{forward}"
    );
    let both = request(&router, Method::GET, "/log?after=1&before=3").await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn projections_show_checkpoint_lag_and_claim() {
    let (fixture, router) = router().await;
    let page = get(&router, "/projections").await.body;
    let events = fixture.store.tail(0).await.expect("tail").events;
    let row = format!("<td>opened_count</td><td>0</td><td>{events}</td>");
    assert!(page.contains(&row), "{row}: {page}");
    assert!(page.contains("no runner"), "{page}");
    let held = es_core::CheckpointStore::claim(&fixture.model, "opened_count")
        .await
        .expect("claim");
    assert!(get(&router, "/projections").await.body.contains("held by a runner"));
    drop(held);
}

#[tokio::test]
async fn es_serve_prints_its_url_and_serves_on_loopback() {
    let (fixture, _) = router().await;
    let (sender, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        let mut out = support::LineSender::new(sender);
        let mut err = Vec::new();
        fixture
            .cli()
            .execute(["es", "serve", "--port", "0"], &mut out, &mut err)
            .await
    });
    let line = tokio::time::timeout(std::time::Duration::from_secs(10), lines.recv())
        .await
        .expect("the URL within 10 s")
        .expect("a line");
    let port: u16 = line
        .strip_prefix("listening on http://127.0.0.1:")
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("not a URL line: {line}"));
    let page = tokio::task::spawn_blocking(move || support::http_get(port, "/streams/ticket/T-1"))
        .await
        .expect("joined")
        .expect("GET over the socket");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("<h1 id=\"stream\">ticket/T-1</h1>"), "{page}");
    assert!(!server.is_finished());
    server.abort();
}
