//! The `es` binary run as a user runs it, on a SQLite file and on PostgreSQL with known
//! histories: outputs, JSON shapes, exit codes, `doctor` finding rows inserted bad with raw SQL,
//! `log --follow` printing an event committed while it runs.

use std::process::{Command, Output};
use std::time::Duration;

use es_core::pii::KeyStore;
use es_core::{EventStore, GlobalLog, Metadata, Repository, SnapshotStore, StreamCatalog};
use es_postgres::PostgresStore;
use examples::lead::{forgettable_leads, Lead};
use examples::lead_scenario::play_leads;
use examples::ticket::{Priority, Ticket};
use serde_json::Value;

#[path = "support/review/mod.rs"]
mod review;

use review::cli::{http, Running, ERASURE};
use review::stores::{insert_raw_rows, sqlite_file, RawRow};

/// How to point `es` at a store: its environment and leading arguments.
struct Es {
    env: Vec<(&'static str, String)>,
    prefix: Vec<String>,
}

impl Es {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(assert_cmd::cargo::cargo_bin("es"));
        command.env_remove("DATABASE_URL").env_remove("ES_EXAMPLES_DB");
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command.args(&self.prefix).args(args);
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("es runs")
    }

    /// Runs and expects exit code `code`; returns stdout.
    fn expect(&self, args: &[&str], code: i32) -> String {
        let output = self.run(args);
        let (out, err) = (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        );
        assert_eq!(
            output.status.code(),
            Some(code),
            "es {args:?}\nstdout: {out}\nstderr: {err}"
        );
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.expect(&args, 0);
        serde_json::from_str(&out).unwrap_or_else(|error| panic!("es {args:?} printed no JSON ({error}): {out}"))
    }

    /// Runs with `--json` a command that prints one JSON object per line (`log`).
    fn json_lines(&self, args: &[&str]) -> Vec<Value> {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.expect(&args, 0);
        out.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("es {args:?}: {error}: {line}")))
            .collect()
    }
}

/// The text field `field` of every object in the list `list` of a JSON answer.
fn strings<'a>(answer: &'a Value, list: &str, field: &str) -> Vec<&'a str> {
    let Some(items) = answer[list].as_array() else {
        panic!("no list {list:?} in {answer}");
    };
    items.iter().filter_map(|item| item[field].as_str()).collect()
}

/// Ticket T-1 (opened, assigned, escalated: 3 events), ticket T-2 (opened), and 5 leads whose
/// names and phones are sealed with keys the store keeps, as the demo stores them.
async fn history<S: EventStore + SnapshotStore + KeyStore + Clone + 'static>(store: &S, run: &str) {
    let tickets = Repository::<Ticket, S>::new(store.clone());
    tickets
        .execute("T-1", Metadata::new().with_actor("customer:acme"), |t| {
            t.open("Printer on <script>alert(1)</script> fire", "acme", Priority::Normal)
        })
        .await
        .expect("open");
    tickets
        .execute("T-1", Metadata::new(), |t| t.assign("alice"))
        .await
        .expect("assign");
    tickets
        .execute("T-1", Metadata::new(), |t| t.request_escalation("month end"))
        .await
        .expect("escalate");
    tickets
        .execute("T-2", Metadata::new(), |t| t.open("VPN down", "acme", Priority::High))
        .await
        .expect("open");
    let sealed = forgettable_leads(store.clone(), store.clone()).expect("one aggregate");
    // Snapshots too: a forgotten lead's sealed snapshot must not read as broken.
    let leads = Repository::<Lead, _>::new(sealed).with_snapshot_every(2);
    play_leads(&leads, run, 0..5, 3).await.expect("leads");
}

/// `es forget` destroys a lead's key: its state then shows name and phone forgotten, and the
/// other leads keep theirs.
fn forget_forgets_a_lead(es: &Es) {
    let before = es.json(&["state", "lead/cli-L0000"]);
    assert!(before["state"]["name"].is_string(), "{before}");
    es.expect(&["forget", "lead/cli-L0000"], 2);
    let out = es.expect(&["forget", "lead/cli-L0000", "--yes"], 0);
    assert!(out.contains("forgot `lead/cli-L0000`"), "{out}");
    let after = es.json(&["state", "lead/cli-L0000"]);
    assert_eq!(
        after["state"]["name"],
        serde_json::json!({ "$forgotten": true }),
        "{after}"
    );
    assert_eq!(
        after["state"]["phone"],
        serde_json::json!({ "$forgotten": true }),
        "{after}"
    );
    let other = es.json(&["state", "lead/cli-L0001"]);
    assert!(other["state"]["name"].is_string(), "{other}");
    // Its snapshot stays sealed for good: counted as forgotten, not as a problem.
    let doctor = es.json(&["doctor"]);
    assert_eq!(doctor["forgotten_snapshots"], 1, "{doctor}");
    assert_eq!(doctor["problems"], serde_json::json!([]), "{doctor}");
}

/// The checks every store must pass, on the history of [`history`].
async fn check_every_command<S>(store: &S, es: &Es)
where
    S: EventStore + GlobalLog + StreamCatalog,
{
    let streams = es.json(&["streams", "--type", "ticket"]);
    let listed = streams["streams"].as_array().expect("streams");
    assert_eq!(listed.len(), 2, "{streams}");
    assert_eq!(
        (listed[0]["aggregate_id"].as_str(), listed[0]["events"].as_u64()),
        (Some("T-1"), Some(3))
    );
    let text = es.expect(&["streams", "--type", "ticket", "--id", "T-2"], 0);
    assert!(
        text.lines().nth(1).is_some_and(|line| line.starts_with("ticket/T-2")),
        "{text}"
    );

    let events = es.json(&["events", "ticket/T-1"]);
    let events = events["events"].as_array().expect("events");
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["metadata"]["actor"], "customer:acme");
    assert!(events[0]["metadata"]["causation_id"].is_string());
    assert!(events[0]["payload"]["title"]
        .as_str()
        .is_some_and(|title| title.contains("<script>")));
    let text = es.expect(&["events", "ticket/T-1", "--to", "1"], 0);
    assert!(
        text.contains("TicketOpened") && !text.contains("TicketAssigned"),
        "{text}"
    );

    let past = es.json(&["state", "ticket/T-1", "--version", "1"]);
    assert_eq!(past["version"], 1);
    assert!(past["state"]["assignee"].is_null(), "{past}");
    let now = es.json(&["state", "ticket/T-1"]);
    assert_eq!(now["state"]["assignee"], "alice");
    let diff = es.expect(&["diff", "ticket/T-1", "1", "2"], 0);
    assert!(diff.contains("$.assignee"), "{diff}");

    let total = store.tail(0).await.expect("tail").events;
    let log = es.expect(&["log", "--limit", "1000"], 0);
    assert_eq!(log.lines().count() as u64, total);
    // An audit across streams: one kind of event, or one aggregate type, however far apart.
    let assigned = es.expect(&["log", "--name", "TicketAssigned"], 0);
    assert_eq!(assigned.lines().count(), 1, "{assigned}");
    assert!(assigned.contains("ticket/T-1 v2  TicketAssigned"), "{assigned}");
    let tickets = es.expect(&["log", "--type", "ticket", "--limit", "3"], 0);
    assert_eq!(
        tickets.lines().count(),
        3,
        "the limit counts what is printed: {tickets}"
    );
    let opened = es.json_lines(&["log", "--type", "ticket", "--name", "TicketOpened"]);
    assert_eq!(opened.len(), 2, "{opened:?}");
    // A name no event is stored as (the Rust type's, not the stored one) finds nothing, and
    // says so on stderr with the names to use instead.
    let unknown = es.run(&["log", "--name", "StreamClosed"]);
    let note = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(0), "{note}");
    assert!(unknown.stdout.is_empty());
    assert!(
        note.contains("no event this program knows is stored as `StreamClosed`") && note.contains("es.stream-closed"),
        "{note}"
    );
    let known = es.run(&["log", "--name", "TicketAssigned"]);
    assert!(known.stderr.is_empty(), "{}", String::from_utf8_lossy(&known.stderr));
    let registry = es.json(&["registry"]);
    // `es.pii`: the streams that record forgotten subjects, registered by `Cli::forgetting`;
    // `es.stream`: those that record closed streams, known to every command line.
    assert_eq!(
        strings(&registry, "aggregates", "aggregate_type"),
        ["es.pii", "es.stream", "lead", "ticket"]
    );

    let projections = es.json(&["projections"]);
    let names = strings(&projections, "projections", "name");
    assert_eq!(names.len(), 2, "{projections}");
    assert!(projections["projections"][0]["events_behind"].as_u64() > Some(0));
    let rebuilt = es.run(&["rebuild", names[0]]);
    assert_eq!(rebuilt.status.code(), Some(0));
    let (out, progress) = (
        String::from_utf8_lossy(&rebuilt.stdout),
        String::from_utf8_lossy(&rebuilt.stderr),
    );
    assert!(out.starts_with(&format!("rebuilt {}", names[0])), "{out}");
    // Not a terminal: progress comes as plain lines, the last one complete.
    let last = progress.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("rebuild {}: {total}/{total} events", names[0])),
        "{progress}"
    );
    let after = es.json(&["projections"]);
    assert_eq!(after["projections"][0]["events_behind"], 0, "{after}");

    let doctor = es.expect(&["doctor"], 0);
    assert!(doctor.contains(&format!("checked {total} events")), "{doctor}");
    assert_eq!(es.run(&["events", "ticket/T-404"]).status.code(), Some(3));
    assert_eq!(es.run(&["rebuild", "no_such_projection"]).status.code(), Some(3));
    assert_eq!(es.run(&["state"]).status.code(), Some(2));
}

fn assert_doctor_finds(es: &Es, expected: &[&str]) {
    let out = es.expect(&["doctor"], 1);
    for needle in expected {
        assert!(out.contains(needle), "doctor names {needle:?}: {out}");
    }
    let report = es.run(&["doctor", "--json"]);
    let report: Value = serde_json::from_slice(&report.stdout).expect("JSON");
    assert_eq!(
        report["problems"].as_array().map(Vec::len),
        Some(expected.len()),
        "{report}"
    );
}

/// `close` deletes a stream through the binary on this backend, and `closed` lists the audit.
fn close_deletes_and_audits(es: &Es) {
    let closed = es.json(&[&["close", "ticket/T-2"][..], &ERASURE].concat());
    assert_eq!(closed["status"], "deleted", "{closed}");
    assert_eq!(
        es.run(&["events", "ticket/T-2"]).status.code(),
        Some(3),
        "its events are gone"
    );
    let audit = es.json(&["closed"]);
    assert_eq!(strings(&audit, "closed", "stream"), ["ticket/T-2"]);
    assert_eq!(audit["closed"][0]["reason"], "erasure #42");
    let doctor = es.expect(&["doctor"], 0);
    assert!(
        doctor.contains("checked"),
        "the lifecycle event reads like any other: {doctor}"
    );
}

/// A plain HTTP/1.1 GET on loopback: status line and body.
fn get(url: &str, path: &str) -> (String, String) {
    let response = http(url, "GET", path, None);
    (
        response.head.lines().next().unwrap_or_default().to_owned(),
        response.body,
    )
}

/// `es serve` on this store: the stream list and a stream's page answer, payloads escaped.
fn serve_shows_the_store(es: &Es) {
    let mut serving = Running::spawn(es.command(&["serve", "--port", "0"]));
    let pages = serving.stdout_line(Duration::from_secs(20)).map(|first| {
        let url = first.trim().trim_start_matches("listening on ").to_owned();
        (get(&url, "/?type=ticket"), get(&url, "/streams/ticket/T-1"))
    });
    drop(serving);
    let ((list_status, list), (stream_status, stream)) = pages.expect("es serve printed its URL");
    assert!(list_status.contains(" 200 "), "{list_status}");
    assert!(list.contains("T-1") && list.contains("T-2"), "{list}");
    assert!(stream_status.contains(" 200 "), "{stream_status}");
    assert!(
        stream.contains("&lt;script&gt;") && !stream.contains("<script>alert"),
        "escaped: {stream}"
    );
}

/// Follows the log, appends while it runs, and expects the new event on its output.
async fn follow_sees_a_new_event<S: EventStore + SnapshotStore + Clone + 'static>(store: &S, es: &Es) {
    let mut following = Running::spawn(es.command(&["log", "--follow", "--json"]));
    // The follower starts at the head: give it time to get there, then append.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let tickets = Repository::<Ticket, S>::new(store.clone());
    tickets
        .execute("T-followed", Metadata::new(), |t| {
            t.open("Followed", "acme", Priority::Low)
        })
        .await
        .expect("open");
    let line = following.stdout_line(Duration::from_secs(20));
    drop(following);
    let line = line.expect("the new event is printed within 20 s");
    let event: Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(event["stream"], "ticket/T-followed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es_on_a_sqlite_file() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = sqlite_file(&directory, "es.db").await;
    let file = store.path().to_owned();
    history(&store, "cli").await;
    let es = Es {
        env: Vec::new(),
        prefix: vec!["--db".into(), file.display().to_string()],
    };
    check_every_command(&store, &es).await;
    forget_forgets_a_lead(&es);
    serve_shows_the_store(&es);
    follow_sees_a_new_event(&store, &es).await;
    close_deletes_and_audits(&es);

    // Rows written behind the framework's back: a schema version from the future, an unknown
    // event, and an aggregate type nobody registered.
    let connection = rusqlite::Connection::open(&file).expect("raw connection");
    for (id, kind, stream, version, name, schema) in [
        (1_u8, "ticket", "T-1", 4, "TicketEscalated", 99),
        (2, "ticket", "T-1", 5, "TicketTeleported", 1),
        (3, "invoice", "I-1", 1, "InvoiceSent", 1),
    ] {
        connection
            .execute(
                "INSERT INTO events (event_id, aggregate_type, aggregate_id, version, event_name, \
                 schema_version, payload, metadata, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, '{}', '{}', 0)",
                rusqlite::params![[id; 16].to_vec(), kind, stream, version, name, schema],
            )
            .expect("raw insert");
    }
    assert_doctor_finds(
        &es,
        &[
            "event ticket/T-1 v4 (TicketEscalated)",
            "event ticket/T-1 v5 (TicketTeleported)",
            "event invoice/I-1 v1 (InvoiceSent): no aggregate of type `invoice`",
        ],
    );

    let missing = directory.path().join("missing.db");
    let es = Es {
        env: Vec::new(),
        prefix: vec!["--db".into(), missing.display().to_string()],
    };
    assert_eq!(es.run(&["streams"]).status.code(), Some(3));
    assert!(!missing.exists(), "es does not create a store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es_on_postgres() {
    let database = es_test_support::TestDatabase::get().expect("a PostgreSQL server");
    let schema = database.schema().await.expect("a fresh schema");
    let store: PostgresStore = schema.store().clone();
    history(&store, "cli").await;
    let es = Es {
        env: vec![
            ("DATABASE_URL", database.url().to_owned()),
            ("ES_EXAMPLES_SCHEMA", store.schema().to_owned()),
        ],
        prefix: Vec::new(),
    };
    check_every_command(&store, &es).await;
    serve_shows_the_store(&es);
    follow_sees_a_new_event(&store, &es).await;
    close_deletes_and_audits(&es);

    let row = |aggregate_type, aggregate_id, version, event_name, schema_version| RawRow {
        aggregate_type,
        aggregate_id,
        version,
        event_name,
        schema_version,
        payload: "{}",
        metadata: "{}",
    };
    insert_raw_rows(
        &store,
        &[
            row("ticket", "T-1", 4, "TicketEscalated", 99),
            row("ticket", "T-1", 5, "TicketTeleported", 1),
            row("invoice", "I-1", 1, "InvoiceSent", 1),
        ],
    )
    .await;
    assert_doctor_finds(
        &es,
        &[
            "event ticket/T-1 v4 (TicketEscalated)",
            "event ticket/T-1 v5 (TicketTeleported)",
            "event invoice/I-1 v1 (InvoiceSent): no aggregate of type `invoice`",
        ],
    );
}
