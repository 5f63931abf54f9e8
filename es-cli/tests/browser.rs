//! The event browser in a real headless Chromium, driven over WebDriver (ChromeDriver): the
//! stream list and its search, a stream's timeline, stepping the state back through versions,
//! a `<script>` payload shown as text (and not run), and the live global log showing an event
//! appended while the page is open. A PNG screenshot of each page is saved under
//! `target/browser-screenshots/` for a person to look at.
//!
//! It needs Debian's `chromium` and `chromium-driver` (`apt-get install chromium
//! chromium-driver`; or point `ES_CHROMIUM` and `ES_CHROMEDRIVER` at other builds). Without
//! them it fails, saying so, unless `ES_SKIP_BROWSER_TESTS=1`.

mod support;
mod webdriver;

use std::path::PathBuf;
use std::time::Duration;

use es_core::{Metadata, Repository};
use support::{fixture, Escalated, Ticket, TicketEvent, ATTRIBUTE_ACTOR, SCRIPT_TITLE};
use webdriver::{Driver, Session};

/// How long a page may take to show what the test waits for.
const PAGE: Duration = Duration::from_secs(15);

/// Chromium's and ChromeDriver's paths; `None` when they are missing and the test may skip.
fn tools() -> Option<(PathBuf, PathBuf)> {
    let path =
        |variable: &str, default: &str| PathBuf::from(std::env::var(variable).unwrap_or_else(|_| default.into()));
    let chromium = path("ES_CHROMIUM", "/usr/bin/chromium");
    let chromedriver = path("ES_CHROMEDRIVER", "/usr/bin/chromedriver");
    let missing: Vec<String> = [&chromium, &chromedriver]
        .into_iter()
        .filter(|tool| !tool.is_file())
        .map(|tool| tool.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some((chromium, chromedriver));
    }
    if std::env::var("ES_SKIP_BROWSER_TESTS").as_deref() == Ok("1") {
        eprintln!(
            "SKIPPED the browser test (ES_SKIP_BROWSER_TESTS=1): {} not found",
            missing.join(", ")
        );
        return None;
    }
    panic!(
        "the browser test needs Chromium and ChromeDriver, and {} is missing: install them with \
         `apt-get install chromium chromium-driver` (or set ES_CHROMIUM / ES_CHROMEDRIVER to their \
         paths), or set ES_SKIP_BROWSER_TESTS=1 to skip this test",
        missing.join(" and ")
    );
}

/// `target/browser-screenshots/`, in `CARGO_TARGET_DIR` when set.
fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target"),
        PathBuf::from,
    );
    let directory = target.join("browser-screenshots");
    std::fs::create_dir_all(&directory).expect("the screenshots directory");
    directory
}

/// Fails the test with the WebDriver error, naming the step.
trait Step<T> {
    fn at(self, step: &str) -> T;
}

impl<T> Step<T> for Result<T, String> {
    fn at(self, step: &str) -> T {
        self.unwrap_or_else(|error| panic!("{step}: {error}"))
    }
}

#[test]
fn the_event_browser_works_in_a_real_browser() {
    let Some((chromium, chromedriver)) = tools() else {
        return;
    };
    let shots = screenshots();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");

    // The server, in-process, on a known history, as `es serve --port 0` runs it.
    let fixture = runtime.block_on(async { fixture().await.with_untrusted().await });
    let store = fixture.store.clone();
    let (sender, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let cli = fixture.cli();
    let server = runtime.spawn(async move {
        let (mut out, mut err) = (support::LineSender::new(sender), Vec::new());
        cli.execute(["es", "serve", "--port", "0"], &mut out, &mut err).await
    });
    let first_line = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), lines.recv()).await })
        .expect("`es serve` printed its URL within 10 s")
        .expect("a line");
    let base = first_line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("not the URL line: {first_line}"))
        .to_owned();

    let driver = Driver::start(&chromedriver, &shots.join("chromedriver.log")).at("start chromedriver");
    let args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--no-first-run",
    ];
    let browser = Session::new(&driver, &chromium, &args).at("open headless Chromium");
    let shot = |name: &str| {
        let path = browser.screenshot(&shots.join(name)).at(name);
        eprintln!("screenshot: {}", path.display());
    };
    let text_of = |css: &str| browser.find(css, PAGE).and_then(|element| element.text());
    let wait_text = |css: &str, wanted: &str| {
        browser
            .wait(&format!("`{css}` to read {wanted:?}"), PAGE, || {
                Ok(browser
                    .find_all(css)?
                    .first()
                    .map(|element| element.text())
                    .transpose()?
                    .filter(|text| text == wanted))
            })
            .at(&format!("`{css}` reads {wanted:?}"))
    };

    // The stream list: every stream, then a search by type and id prefix.
    browser.goto(&format!("{base}/")).at("open the stream list");
    assert_eq!(browser.title().at("title"), "Streams · event store");
    let rows = browser.find_all("#streams-rows tr").at("stream rows");
    assert_eq!(rows.len(), 6, "T-1..T-4, the odd id and order/O-1");
    shot("01-streams.png");
    browser
        .find("input[name=type]", PAGE)
        .and_then(|field| field.send_keys("ticket"))
        .at("type the aggregate type");
    browser
        .find("input[name=id]", PAGE)
        .and_then(|field| field.send_keys("T-1"))
        .at("type the id prefix");
    browser
        .find("#search", PAGE)
        .and_then(|button| button.click())
        .at("search");
    browser
        .wait("the search's URL", PAGE, || {
            Ok(browser.url()?.contains("type=ticket&id=T-1").then_some(()))
        })
        .at("search");
    let found = browser.find_all("#streams-rows tr").at("found rows");
    assert_eq!(found.len(), 1);
    assert!(found[0].text().at("row").starts_with("ticket/T-1"));
    shot("02-search.png");

    // Into the stream: its events with metadata and payloads.
    browser
        .find("#streams-rows a", PAGE)
        .and_then(|link| link.click())
        .at("click the stream");
    wait_text("#stream", "ticket/T-1");
    assert_eq!(browser.find_all("article.event").at("events").len(), 4);
    let first_event = text_of("#v1").at("v1");
    assert!(
        first_event.contains("actor") && first_event.contains("alice"),
        "{first_event}"
    );
    assert!(first_event.contains("\"title\": \"Printer\""), "{first_event}");
    shot("03-stream.png");

    // The state now, then stepped back with "previous".
    browser
        .find("#state-link", PAGE)
        .and_then(|link| link.click())
        .at("state now");
    wait_text("#version", "4");
    assert!(text_of("#state").at("state").contains("\"open\": false"));
    browser
        .find("#previous", PAGE)
        .and_then(|link| link.click())
        .at("previous");
    wait_text("#version", "3");
    let state = text_of("#state").at("state at 3");
    assert!(
        state.contains("\"level\": 3") && state.contains("\"open\": true"),
        "{state}"
    );
    browser
        .find("#previous", PAGE)
        .and_then(|link| link.click())
        .at("previous again");
    wait_text("#version", "2");
    assert!(text_of("#state").at("state at 2").contains("\"level\": 2"));
    assert!(text_of("#changes").at("changes").contains("$.level: 0 → 2"));
    shot("04-state.png");

    // A payload that is a script: shown as text, not run.
    browser.goto(&format!("{base}/streams/ticket/T-3")).at("open T-3");
    wait_text("#stream", "ticket/T-3");
    let payload = text_of("#v1 pre.payload").at("payload");
    assert!(payload.contains(SCRIPT_TITLE), "the script is text: {payload}");
    assert!(text_of("#v1 dl.meta").at("metadata").contains(ATTRIBUTE_ACTOR));
    assert_eq!(browser.alert_text().at("alert"), None, "no alert was opened");
    let (scripts, images) = (
        browser.execute("return document.scripts.length").at("scripts"),
        browser.execute("return document.images.length").at("images"),
    );
    assert_eq!(
        (scripts, images),
        (0.into(), 0.into()),
        "no element came from the payload"
    );
    shot("05-script-as-text.png");

    // The global log, live: an event appended now appears without reloading.
    browser.goto(&format!("{base}/log")).at("open the log");
    let head = runtime
        .block_on(es_core::GlobalLog::tail(&store, 0))
        .expect("tail")
        .head_position;
    assert_eq!(browser.find_all("#log-rows tr").at("log rows").len() as u64, head);
    browser
        .wait("the live view's first poll", PAGE, || {
            Ok(text_of("#live-status")?.contains("checked at").then_some(()))
        })
        .at("live status");
    let tickets = Repository::<Ticket, _>::new(store.clone());
    let escalate = |_: &Ticket| vec![TicketEvent::from(Escalated { level: 7 })];
    runtime
        .block_on(tickets.execute("T-2", Metadata::new().with_actor("bob"), escalate))
        .expect("append while the page is open");
    let appended = format!("#position-{}", head + 1);
    let row = browser
        .wait("the appended event's row", PAGE, || {
            browser.find_all(&appended)?.first().map(|row| row.text()).transpose()
        })
        .at("live row");
    for shown in ["ticket/T-2", "Escalated", "bob"] {
        assert!(row.contains(shown), "{shown} in {row}");
    }
    assert_eq!(browser.find_all("#log-rows tr").at("log rows").len() as u64, head + 1);
    assert_eq!(browser.alert_text().at("alert"), None);
    shot("06-live-log.png");
    browser
        .find(&format!("{appended} a"), PAGE)
        .and_then(|link| link.click())
        .at("click the live row");
    wait_text("#stream", "ticket/T-2");

    // The projections.
    browser.goto(&format!("{base}/projections")).at("open the projections");
    let projections = text_of("#projections-rows").at("projections");
    assert!(
        projections.contains("opened_count") && projections.contains("no runner"),
        "{projections}"
    );
    shot("07-projections.png");

    assert!(!server.is_finished(), "the server is still serving");
    drop(browser);
    drop(driver);
    server.abort();
}
