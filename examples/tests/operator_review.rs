//! An outside operator's review of the `es` command line and of the read-only browser
//! `es serve`, as the README, the `es-cli` docs and `es --help` describe them: time travel by
//! instant, paging through streams and the log, tailing and serving until Ctrl-C, rebuilds
//! (progress, interruption, a runner holding the projection), `doctor` on corrupt rows, stores
//! of another schema, files that cannot be opened, usage errors, and a browser that writes
//! nothing and pages everything.
//!
//! Every process started here is killed and reaped when its handle drops, every command is
//! bounded in time, and every store lives in a temporary directory (or a fresh PostgreSQL
//! schema) of its own test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use es_core::{Metadata, ProjectionError, ProjectionRunner, Repository};
use es_sqlite::SqliteStore;
use examples::lead_models::{LeadAnalysisProjection, LeadTables};
use examples::ticket::{Priority, Ticket};
use serde_json::Value;

#[path = "support/review/mod.rs"]
mod review;

use review::cli::{entry, http, Es};
use review::running::run_until_stopped;
use review::stores::{insert_raw_rows, schema_tables, schemas_named, RawRow};
use review::tickets::ticket_history;

/// The versions of a stream page's events: its `id="vN"` anchors, in page order.
fn anchored_versions(body: &str) -> Vec<u64> {
    body.split("id=\"v")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            (rest[digits.len()..].starts_with('"') && !digits.is_empty()).then(|| digits.parse().ok())?
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Stores
// ---------------------------------------------------------------------------------------------

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|output| output.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

/// A temporary directory that another user may enter (for the tests run as `nobody`).
fn directory() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let directory = tempfile::tempdir().expect("temporary directory");
    std::fs::set_permissions(directory.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    directory
}

async fn open(file: &Path) -> SqliteStore {
    let store = SqliteStore::open(file).await.expect("open");
    store.migrate().await.expect("migrate");
    store
}

/// Ticket T-1 (opened, assigned to alice, escalated: 3 events, a few milliseconds apart), tickets
/// T-2 to T-12 (opened), and, when `comments` > 0, T-LONG (opened, then `comments` comments).
async fn tickets<S>(store: &S, comments: u32)
where
    S: es_core::EventStore + es_core::SnapshotStore + Clone + 'static,
{
    let tickets = Repository::<Ticket, S>::new(store.clone()).with_snapshot_every(2);
    ticket_history(&tickets, Duration::from_millis(20), 12).await;
    if comments > 0 {
        tickets
            .execute("T-LONG", Metadata::new(), |t| {
                t.open("A long story", "acme", Priority::Low)
            })
            .await
            .expect("open");
        for n in 0..comments {
            tickets
                .execute("T-LONG", Metadata::new(), |t| t.comment("bob", &format!("comment {n}")))
                .await
                .expect("comment");
        }
    }
}

/// A raw connection to the file, as an operator's `sqlite3` would open it.
fn raw(file: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(file).expect("raw connection")
}

/// Folds the write-ahead log into the file, so its bytes are the whole store.
fn settle(file: &Path) {
    raw(file)
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
}

/// The store's file and its write-ahead log, as bytes: what a write would change.
fn written_bytes(file: &Path) -> (Vec<u8>, Vec<u8>) {
    let wal = PathBuf::from(format!("{}-wal", file.display()));
    (
        std::fs::read(file).expect("read the store"),
        std::fs::read(wal).unwrap_or_default(),
    )
}

/// `count` `FollowupSet` events planted in lead streams of 100 events each, in one statement.
fn plant_followups(file: &Path, count: u64) {
    let now = Utc::now().timestamp_micros();
    raw(file)
        .execute_batch(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
             INSERT INTO events (event_id, aggregate_type, aggregate_id, version, event_name, schema_version, \
             payload, metadata, recorded_at) \
             SELECT randomblob(16), 'lead', 'bulk-' || (i / 100), (i % 100) + 1, 'FollowupSet', 1, \
             '{{\"followup_on\":\"2025-01-07T15:00:00Z\"}}', '{{}}', {now} FROM n",
            last = count - 1
        ))
        .expect("planted");
}

/// A lead store with its read-model tables and `count` planted follow-ups.
async fn followup_store(file: &Path, count: u64) -> SqliteStore {
    let store = open(file).await;
    store.create_tables().await.expect("read-model tables");
    plant_followups(file, count);
    store
}

/// The follow-ups the analysis read model counts.
fn followups_in_model(file: &Path) -> i64 {
    raw(file)
        .query_row("SELECT COALESCE(SUM(followups), 0) FROM lead_analysis", [], |row| {
            row.get(0)
        })
        .expect("read model")
}

/// The follow-ups stored at positions up to `position`.
fn followups_until(file: &Path, position: u64) -> i64 {
    raw(file)
        .query_row(
            "SELECT count(*) FROM events WHERE aggregate_type = 'lead' AND event_name = 'FollowupSet' \
             AND position <= ?1",
            [position as i64],
            |row| row.get(0),
        )
        .expect("events")
}

/// A projection's entry in `es projections --json`.
fn projection(es: &Es, name: &str) -> Value {
    let projections = es.json(&["projections"]);
    projections["projections"]
        .as_array()
        .and_then(|list| list.iter().find(|p| p["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no projection {name}: {projections}"))
}

// ---------------------------------------------------------------------------------------------
// Looking: time travel, paging, tailing
// ---------------------------------------------------------------------------------------------

/// `state --at INSTANT` (RFC 3339, as the help says) gives the state as of that instant, with
/// the version it shows; instants before and after the stream say which version they show
/// rather than inventing one. A version past the stream's end does not exist: it is not found
/// (exit 3), naming the stream's last version, in `state`, `diff` and `events --from`, and in
/// the browser (404); `events --from` after `--to` is a usage error (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_travels_to_an_instant_and_names_the_version_it_shows() {
    es_test_support::bounded(async {
        let directory = directory();
        let file = directory.path().join("es.db");
        tickets(&open(&file).await, 0).await;
        let es = Es::sqlite(&file);

        let events = es.json(&["events", "ticket/T-1"]);
        let at = |index: usize| -> DateTime<Utc> {
            let recorded = events["events"][index]["recorded_at"].as_str().expect("recorded_at");
            DateTime::parse_from_rfc3339(recorded)
                .expect("RFC 3339")
                .with_timezone(&Utc)
        };
        let (first, second) = (at(0), at(1));
        assert!(second > first, "{events}");
        let between = first + (second - first) / 2;

        let state = es.json(&["state", "ticket/T-1", "--at", &between.to_rfc3339()]);
        assert_eq!(state["version"], 1, "{state}");
        assert!(state["state"]["assignee"].is_null(), "{state}");
        // The same instant written with an offset.
        let seoul = between.with_timezone(&chrono::FixedOffset::east_opt(9 * 3600).expect("offset"));
        let state = es.json(&["state", "ticket/T-1", "--at", &seoul.to_rfc3339()]);
        assert_eq!(state["version"], 1, "{state}");
        let text = es
            .expect(&["state", "ticket/T-1", "--at", &second.to_rfc3339()], 0)
            .stdout;
        assert!(text.contains("at version 2") && text.contains("alice"), "{text}");

        let before = es.json(&["state", "ticket/T-1", "--at", "2000-01-01T00:00:00Z"]);
        assert_eq!(before["version"], 0, "before its first event: {before}");
        let after = es.json(&["state", "ticket/T-1", "--at", "2999-01-01T00:00:00Z"]);
        assert_eq!(after["version"], 3, "{after}");
        // The review's first version of this test took version 3 for `--version 99` (exit 0);
        // a version that does not exist is now refused, naming the last one.
        for args in [
            &["state", "ticket/T-1", "--version", "99"][..],
            &["diff", "ticket/T-1", "2", "99"],
            &["events", "ticket/T-1", "--from", "5"],
        ] {
            let past_the_end = es.expect(args, 3);
            assert!(
                past_the_end.stderr.contains("its last version is 3"),
                "es {args:?} names the last version: {}",
                past_the_end.stderr
            );
            assert!(past_the_end.stdout.is_empty(), "{}", past_the_end.stdout);
        }
        let reversed = es.expect(&["events", "ticket/T-1", "--from", "3", "--to", "2"], 2);
        assert!(
            reversed.stderr.contains("--from 3 is after --to 2"),
            "{}",
            reversed.stderr
        );
        let up_to_past_the_end = es.json(&["events", "ticket/T-1", "--from", "2", "--to", "99"]);
        assert_eq!(up_to_past_the_end["events"].as_array().map(Vec::len), Some(2));
        let serve = es.serve();
        let missing = serve.get("/streams/ticket/T-1/state?version=99");
        assert_eq!(missing.status, 404, "{}", missing.body);
        assert!(missing.body.contains("its last version is 3"), "{}", missing.body);
        assert_eq!(serve.get("/streams/ticket/T-1/state?version=3").status, 200);
        drop(serve);

        let wrong = es.expect(&["state", "ticket/T-1", "--at", "yesterday"], 2);
        assert!(wrong.stderr.contains("--at"), "{}", wrong.stderr);
        let wrong = es.expect(&["state", "ticket/T-1", "--at", "2026-12-04"], 2);
        assert!(
            wrong.stderr.contains("--at"),
            "a date alone is not an instant: {}",
            wrong.stderr
        );
    })
    .await;
}

/// `streams --limit N` and `--after` (its `next_after`, or the `(more: --after X)` line) walk
/// every stream once, in (type, id) order; `log --after P --limit N` walks the global log once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_the_log_page_through_everything_exactly_once() {
    es_test_support::bounded(async {
        let directory = directory();
        let file = directory.path().join("es.db");
        tickets(&open(&file).await, 4).await;
        let es = Es::sqlite(&file);

        let all = es.json(&["streams", "--limit", "1000"]);
        let all: Vec<String> = all["streams"]
            .as_array()
            .expect("streams")
            .iter()
            .map(|s| {
                format!(
                    "{}/{}",
                    s["aggregate_type"].as_str().unwrap(),
                    s["aggregate_id"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(all.len(), 13, "{all:?}");
        let mut sorted = all.clone();
        sorted.sort_by(|a, b| a.split_once('/').cmp(&b.split_once('/')));
        assert_eq!(all, sorted, "in (type, id) order");

        let mut paged = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..20 {
            let mut args = vec!["streams", "--limit", "5"];
            if let Some(after) = &after {
                args.extend(["--after", after.as_str()]);
            }
            let page = es.json(&args);
            for s in page["streams"].as_array().expect("streams") {
                paged.push(format!(
                    "{}/{}",
                    s["aggregate_type"].as_str().unwrap(),
                    s["aggregate_id"].as_str().unwrap()
                ));
            }
            match page["next_after"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(paged, all, "pages of 5 cover every stream once");
        let text = es.expect(&["streams", "--limit", "5"], 0).stdout;
        let first_page = es.json(&["streams", "--limit", "5"]);
        let next = first_page["next_after"].as_str().expect("a next page");
        assert!(
            text.contains(&format!("--after {next}")),
            "the text names the next page: {text}"
        );

        let prefixed = es.json(&["streams", "--type", "ticket", "--id", "T-1"]);
        let ids: Vec<&str> = prefixed["streams"]
            .as_array()
            .expect("streams")
            .iter()
            .filter_map(|s| s["aggregate_id"].as_str())
            .collect();
        assert_eq!(ids, ["T-1", "T-10", "T-11", "T-12"]);

        let whole = es.json_lines(&["log", "--limit", "100000"]);
        let positions: Vec<u64> = whole
            .iter()
            .map(|e| e["position"].as_u64().expect("position"))
            .collect();
        assert_eq!(positions.len(), 3 + 11 + 5, "{positions:?}");
        let mut walked = Vec::new();
        let mut after = 0;
        for _ in 0..20 {
            let page = es.json_lines(&["log", "--after", &after.to_string(), "--limit", "4"]);
            assert!(page.len() <= 4);
            let Some(last) = page.last() else { break };
            after = last["position"].as_u64().expect("position");
            walked.extend(page.iter().map(|e| e["position"].as_u64().unwrap()));
        }
        assert_eq!(walked, positions, "pages of the log in commit order, each event once");
        let past = es.expect(&["log", "--after", &positions.last().unwrap().to_string()], 0);
        assert!(past.stdout.is_empty(), "{}", past.stdout);
    })
    .await;
}

/// `log --follow --after P` prints what follows P, then keeps following until Ctrl-C; `serve`
/// serves until Ctrl-C. Both end promptly on it, without a panic, with the documented 130 (the
/// review first accepted 0, or `log --follow` killed by the signal itself right after its
/// backlog: its handler was installed late; it is now installed before anything is printed, so
/// an interruption right after the backlog is tried several times). A port already taken is a
/// message naming it, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tailing_and_serving_end_cleanly_on_ctrl_c() {
    es_test_support::bounded(async {
        let directory = directory();
        let file = directory.path().join("es.db");
        tickets(&open(&file).await, 0).await;
        let es = Es::sqlite(&file);
        let head = es.json_lines(&["log", "--limit", "1000"]).len() as u64;

        for _ in 0..5 {
            let mut follow = es.spawn(&["log", "--follow", "--after", &(head - 2).to_string(), "--json"]);
            let lines: Vec<Value> = (0..2)
                .map(|_| {
                    let line = follow
                        .stdout_line(Duration::from_secs(20))
                        .expect("the backlog is printed");
                    serde_json::from_str(&line).expect("a JSON line")
                })
                .collect();
            assert_eq!(
                lines
                    .iter()
                    .map(|e| e["position"].as_u64().unwrap())
                    .collect::<Vec<_>>(),
                [head - 1, head]
            );
            follow.interrupt();
            let ended = follow.finish(Duration::from_secs(10));
            ended.assert_no_panic();
            assert!(ended.ended_by_ctrl_c(), "{ended:?}");
        }

        let mut serve = es.serve();
        assert_eq!(serve.get("/").status, 200);
        serve.running.interrupt();
        let ended = serve.running.finish(Duration::from_secs(10));
        ended.assert_no_panic();
        assert!(ended.ended_by_ctrl_c(), "{ended:?}");

        // A port already in use.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let port = listener.local_addr().expect("address").port().to_string();
        let taken = es.run(&["serve", "--port", &port]);
        assert!(!matches!(taken.code, Some(0) | None), "{taken:?}");
        assert!(taken.stderr.contains(&port), "names the address: {}", taken.stderr);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Rebuilds
// ---------------------------------------------------------------------------------------------

/// `rebuild` on a store of 200,000 follow-ups, interrupted with Ctrl-C after its first progress
/// line: exit 130 ("interrupted (Ctrl-C); what was committed stays consistent"), a read model
/// that matches its checkpoint exactly, and a second `rebuild` that completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_interrupted_by_ctrl_c_exits_130_with_a_consistent_read_model() {
    es_test_support::bounded_by(Duration::from_secs(240), async {
        let directory = directory();
        let file = directory.path().join("leads.db");
        let total = 200_000;
        let _store = followup_store(&file, total).await;
        let es = Es::sqlite(&file);

        let mut rebuild = es.spawn(&["rebuild", "lead-analysis"]);
        let progress = rebuild.stderr_line_starting("rebuild lead-analysis: ", Duration::from_secs(60));
        assert!(progress.is_some(), "a first progress line on stderr");
        rebuild.interrupt();
        let ended = rebuild.finish(Duration::from_secs(30));
        ended.assert_no_panic();
        ended.expect_code(130, "an interrupted rebuild");
        assert!(ended.stderr.contains("interrupted"), "{}", ended.stderr);

        let interrupted = projection(&es, "lead-analysis");
        let checkpoint = interrupted["checkpoint"].as_u64().expect("checkpoint");
        assert!(checkpoint < total, "interrupted before the end: {interrupted}");
        assert_eq!(
            interrupted["events_behind"].as_u64(),
            Some(total - checkpoint),
            "{interrupted}"
        );
        assert_eq!(
            followups_in_model(&file),
            followups_until(&file, checkpoint),
            "the read model holds exactly the events up to its checkpoint"
        );

        let done = es.expect(&["rebuild", "lead-analysis"], 0);
        assert!(done.stdout.starts_with("rebuilt lead-analysis"), "{}", done.stdout);
        let last = done.stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(&format!("rebuild lead-analysis: {total}/{total} events")),
            "{}",
            done.stderr
        );
        assert_eq!(projection(&es, "lead-analysis")["events_behind"], 0);
        assert_eq!(followups_in_model(&file), total as i64);
    })
    .await;
}

/// The line an interrupted rebuild prints ("interrupted at position N ...; the read model and
/// its checkpoint agree") names the checkpoint it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_interrupted_names_the_checkpoint_it_left() {
    es_test_support::bounded_by(Duration::from_secs(400), async {
        let directory = directory();
        let file = directory.path().join("leads.db");
        let _store = followup_store(&file, 200_000).await;
        let es = Es::sqlite(&file);
        // About half the attempts named the checkpoint one batch behind before the fix: enough
        // interrupted attempts make a wrong name all but certain to show.
        let mut interrupted = 0;
        for (attempt, delay) in [300_u64, 900, 1500, 600, 100, 700, 400, 1100].into_iter().enumerate() {
            let mut rebuild = es.spawn(&["rebuild", "lead-analysis"]);
            rebuild
                .stderr_line_starting("rebuild lead-analysis: ", Duration::from_secs(60))
                .expect("progress");
            std::thread::sleep(Duration::from_millis(delay));
            rebuild.interrupt();
            let ended = rebuild.finish(Duration::from_secs(30));
            if ended.code != Some(130) {
                continue; // it finished first: nothing to compare
            }
            let line = ended
                .stderr
                .lines()
                .find(|line| line.contains("interrupted at position"))
                .unwrap_or_else(|| panic!("{}", ended.stderr));
            let named: u64 = line
                .split("interrupted at position ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{line}"));
            let stored = projection(&es, "lead-analysis")["checkpoint"]
                .as_u64()
                .expect("checkpoint");
            assert_eq!(
                named, stored,
                "attempt {attempt}: `{line}`, but the stored checkpoint is {stored}"
            );
            assert!(
                !line.contains("without waiting"),
                "it waited for the batch in hand: {line}"
            );
            interrupted += 1;
        }
        assert!(
            interrupted >= 4,
            "only {interrupted} attempts were interrupted before the end"
        );
    })
    .await;
}

/// A runner holds the projection: `projections` shows the claim, `rebuild` is refused with
/// exit 5 ("the projection is busy: a runner holds it") and changes nothing; once the runner
/// stops, `rebuild` works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_is_refused_with_exit_5_while_a_runner_holds_the_projection() {
    es_test_support::bounded_by(Duration::from_secs(120), async {
        let directory = directory();
        let file = directory.path().join("leads.db");
        let store = followup_store(&file, 300).await;
        let es = Es::sqlite(&file);

        let runner = ProjectionRunner::new(LeadAnalysisProjection::default(), store.clone(), store.read_models());
        let wake_up = store.wake_up();
        let (stop, running) = run_until_stopped(runner, wake_up);

        let looking = es.clone();
        let held = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let entry = projection(&looking, "lead-analysis");
                if entry["claim"] != "free" && entry["events_behind"] == 0 {
                    return entry;
                }
                assert!(Instant::now() < deadline, "the runner never showed as holding: {entry}");
                std::thread::sleep(Duration::from_millis(200));
            }
        })
        .await
        .expect("looked");
        assert_eq!(held["checkpoint"], 300, "{held}");
        let model = followups_in_model(&file);
        assert_eq!(model, 300);

        let refusing = es.clone();
        let refused = tokio::task::spawn_blocking(move || refusing.run(&["rebuild", "lead-analysis"]))
            .await
            .expect("ran");
        refused.expect_code(5, "rebuild while a runner holds the projection");
        assert!(refused.stderr.contains("lead-analysis"), "{}", refused.stderr);
        assert_eq!(followups_in_model(&file), model, "a refused rebuild empties nothing");

        let _ = stop.send(());
        let outcome: Result<(), ProjectionError> = running.await.expect("joined");
        outcome.expect("the runner stopped cleanly");
        let rebuilding = es.clone();
        let rebuilt = tokio::task::spawn_blocking(move || rebuilding.run(&["rebuild", "lead-analysis"]))
            .await
            .expect("ran");
        rebuilt.expect_code(0, "rebuild once the runner stopped");
        assert_eq!(followups_in_model(&file), 300);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// doctor on corrupt rows
// ---------------------------------------------------------------------------------------------

/// A payload that is not JSON and a snapshot that no longer decodes, planted with raw SQL:
/// `doctor` names each (stream, version, kind) and exits 1, in text and JSON (progress stays on
/// stderr); `events` shows the stored bytes and why they do not decode; time travel before the
/// bad event still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_a_corrupt_payload_and_snapshot_and_exits_1() {
    es_test_support::bounded(async {
        let directory = directory();
        let file = directory.path().join("es.db");
        tickets(&open(&file).await, 0).await;
        let es = Es::sqlite(&file);
        let healthy = es.json(&["doctor"]);
        assert_eq!(healthy["problems"], serde_json::json!([]), "{healthy}");
        let snapshots = healthy["snapshots_checked"].as_u64().expect("snapshots");
        assert!(snapshots >= 1, "T-1 has a snapshot: {healthy}");

        let db = raw(&file);
        db.execute(
            "INSERT INTO events (event_id, aggregate_type, aggregate_id, version, event_name, schema_version, \
             payload, metadata, recorded_at) VALUES (randomblob(16), 'ticket', 'T-1', 4, 'TicketAssigned', 1, \
             '{not json', '{}', ?1)",
            [Utc::now().timestamp_micros()],
        )
        .expect("planted event");
        let changed = db
            .execute(
                "UPDATE snapshots SET state = '{\"truncated\":' WHERE aggregate_type = 'ticket' AND aggregate_id = 'T-1'",
                [],
            )
            .expect("planted snapshot");
        assert_eq!(changed, 1);
        drop(db);

        let text = es.expect(&["doctor"], 1).stdout;
        assert!(text.contains("event ticket/T-1 v4 (TicketAssigned)"), "{text}");
        assert!(text.contains("snapshot ticket/T-1"), "{text}");
        assert!(text.contains("2 problems"), "{text}");
        let report = es.run(&["doctor", "--json"]);
        report.expect_code(1, "doctor --json with problems");
        let report: Value = serde_json::from_str(&report.stdout).expect("stdout is one JSON document");
        let problems = report["problems"].as_array().expect("problems");
        let kinds: Vec<(&str, &str, u64)> = problems
            .iter()
            .map(|p| {
                (
                    p["kind"].as_str().unwrap_or_default(),
                    p["stream"].as_str().unwrap_or_default(),
                    p["version"].as_u64().unwrap_or_default(),
                )
            })
            .collect();
        assert!(kinds.contains(&("event", "ticket/T-1", 4)), "{report}");
        assert!(kinds.iter().any(|(kind, stream, _)| *kind == "snapshot" && *stream == "ticket/T-1"), "{report}");

        let events = es.json(&["events", "ticket/T-1", "--from", "4"]);
        let bad = &events["events"][0];
        assert_eq!(bad["payload"], "{not json", "as stored: {events}");
        assert!(bad["decode_error"].as_str().is_some_and(|e| e.contains("TicketAssigned")), "{events}");
        let before = es.json(&["state", "ticket/T-1", "--version", "3"]);
        assert_eq!(before["state"]["assignee"], "alice", "{before}");
        let now = es.expect(&["state", "ticket/T-1"], 1);
        assert!(now.stderr.contains("version 4"), "names the event: {}", now.stderr);
    })
    .await;
}

/// A row whose metadata is not JSON (planted with raw SQL, as the payload above): `doctor`
/// ("report each that fails, and exit with 1 if any does") reports it with the other problems
/// and exits 1, in text and JSON; `events`, `log` and the browser show it in its place, marked
/// as unreadable, with the events before and after it, instead of failing whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_an_event_whose_metadata_is_not_json() {
    es_test_support::bounded(async {
        let directory = directory();
        let file = directory.path().join("es.db");
        tickets(&open(&file).await, 0).await;
        let es = Es::sqlite(&file);
        // One projection caught up before the bad row is planted: the row is the first it has
        // not read.
        es.expect(&["rebuild", "lead-analysis"], 0);
        let now = Utc::now().timestamp_micros();
        raw(&file)
            .execute_batch(&format!(
                "INSERT INTO events (event_id, aggregate_type, aggregate_id, version, event_name, schema_version, \
                 payload, metadata, recorded_at) VALUES \
                 (randomblob(16), 'ticket', 'T-1', 4, 'TicketAssigned', 1, '{{\"agent\":\"z\"}}', 'not json', {now}), \
                 (randomblob(16), 'ticket', 'T-2', 2, 'TicketAssigned', 1, '{{not json', '{{}}', {now}), \
                 (randomblob(16), 'ticket', 'T-1', 5, 'TicketAssigned', 1, '{{\"agent\":\"y\"}}', '{{}}', {now});"
            ))
            .expect("planted");
        let rows = 3 + 11 + 3;

        let doctor = es.run(&["doctor"]);
        doctor.expect_code(1, "doctor reports problems with 1");
        assert!(doctor.stdout.contains("ticket/T-1 v4"), "{}", doctor.stdout);
        assert!(doctor.stdout.contains("ticket/T-2 v2"), "{}", doctor.stdout);
        assert!(
            doctor.stdout.contains("metadata"),
            "says what is wrong: {}",
            doctor.stdout
        );
        assert!(
            doctor.stdout.contains(&format!("checked {rows} events")) && doctor.stdout.contains("2 problems"),
            "every row is checked, past the bad one: {}",
            doctor.stdout
        );
        let report = es.json_exiting(&["doctor"], 1);
        let bad = entry(&report, "problems", |p| {
            p["stream"] == "ticket/T-1" && p["version"] == 4
        });
        assert_eq!(bad["kind"], "event", "{report}");
        assert_eq!(bad["position"], 15, "where it is: {report}");
        assert_eq!(report["events_checked"], rows, "{report}");

        // `projections` lists every projection still, the one whose next event is the bad row
        // with its lag in events, and names the row: a problem (1), not a store failure (4).
        let listed = es.run(&["projections"]);
        listed.expect_code(1, "projections with a row that cannot be read");
        assert!(listed.stdout.contains("lead-search"), "{}", listed.stdout);
        assert!(
            listed
                .stdout
                .contains("lead-analysis: the first event after its checkpoint cannot be read")
                && listed.stdout.contains("ticket/T-1 at version 4"),
            "{}",
            listed.stdout
        );
        let listed = es.json_exiting(&["projections"], 1);
        let analysis = entry(&listed, "projections", |p| p["name"] == "lead-analysis");
        assert_eq!(
            (&analysis["checkpoint"], &analysis["events_behind"]),
            (&Value::from(14), &Value::from(3)),
            "{listed}"
        );
        assert!(
            analysis["unreadable"]
                .as_str()
                .is_some_and(|why| why.contains("metadata"))
                && analysis["seconds_behind"].is_null(),
            "{listed}"
        );

        // The events before the bad row are still there to look at, and those after it.
        let log = es.run(&["log", "--limit", "1000"]);
        log.expect_code(0, "the log around a bad row");
        assert_eq!(log.stdout.lines().count(), rows, "{}", log.stdout);
        assert!(log.stdout.contains("ticket/T-1 v4  cannot be read"), "{}", log.stdout);
        assert!(log.stdout.contains("ticket/T-1 v5"), "{}", log.stdout);
        let lines = es.json_lines(&["log", "--after", "13", "--limit", "3"]);
        let positions: Vec<u64> = lines.iter().filter_map(|line| line["position"].as_u64()).collect();
        assert_eq!(positions, [14, 15, 16], "a page through the bad row: {lines:?}");
        assert!(
            lines[1]["unreadable"]
                .as_str()
                .is_some_and(|why| why.contains("metadata")),
            "{lines:?}"
        );
        assert_eq!(lines[1]["stream"], "ticket/T-1");

        let events = es.json(&["events", "ticket/T-1"]);
        let versions: Vec<u64> = events["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter_map(|event| event["version"].as_u64())
            .collect();
        assert_eq!(versions, [1, 2, 3, 4, 5], "{events}");
        assert!(events["events"][3]["unreadable"].is_string(), "{events}");
        assert_eq!(events["events"][4]["event_name"], "TicketAssigned", "{events}");
        let text = es.expect(&["events", "ticket/T-1"], 0).stdout;
        assert!(text.contains("ticket/T-1 v4  cannot be read"), "{text}");
        // A state folds payloads, which are readable.
        let state = es.json(&["state", "ticket/T-1"]);
        assert_eq!(state["version"], 5, "{state}");

        let serve = es.serve();
        for page in [
            "/log",
            "/log?after=13",
            "/streams/ticket/T-1",
            "/streams/ticket/T-1/state?version=4",
        ] {
            let shown = serve.get(page);
            assert_eq!(shown.status, 200, "GET {page}: {}", shown.body);
            assert!(
                shown.body.contains("cannot be read"),
                "GET {page} names the bad row: {}",
                shown.body
            );
        }
        assert_eq!(
            anchored_versions(&serve.get("/streams/ticket/T-1").body),
            [1, 2, 3, 4, 5],
            "the stream's page shows every version"
        );
        let live = serve.get("/log.json?after=0").json();
        let listed = live["events"].as_array().expect("events");
        assert_eq!(listed.len(), rows, "{live}");
        assert!(
            listed[14]["error"].is_string() && listed[14]["event_name"].is_null(),
            "{live}"
        );
        assert!(listed[15]["error"].is_null(), "{live}");
    })
    .await;
}

/// PostgreSQL keeps metadata as `jsonb`, so text that is not JSON cannot be stored there; JSON
/// that is not metadata can (an array, a string), written behind the framework's back. `doctor`
/// reports it, and `events` and `log` read past it, as on SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_whose_metadata_does_not_decode_are_reported_and_read_past() {
    es_test_support::bounded_by(Duration::from_secs(120), async {
        let database = es_test_support::TestDatabase::get().expect("a PostgreSQL server");
        let schema = database.schema().await.expect("a fresh schema");
        let store = schema.store().clone();
        tickets(&store, 0).await;
        let directory = directory();
        let es = Es::postgres(database.url(), store.schema(), directory.path());
        let row = |version, payload, metadata| RawRow {
            aggregate_type: "ticket",
            aggregate_id: "T-1",
            version,
            event_name: "TicketAssigned",
            schema_version: 1,
            payload,
            metadata,
        };
        insert_raw_rows(
            &store,
            &[row(4, r#"{"agent":"z"}"#, "[1, 2]"), row(5, r#"{"agent":"y"}"#, "{}")],
        )
        .await;
        let rows = 3 + 11 + 2;
        let deadline = Instant::now() + Duration::from_secs(20);
        while es.run(&["log", "--limit", "1000"]).stdout.lines().count() < rows {
            assert!(Instant::now() < deadline, "the events never became visible");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let doctor = es.run(&["doctor"]);
        doctor.expect_code(1, "doctor reports the row");
        assert!(doctor.stdout.contains("event ticket/T-1 v4"), "{}", doctor.stdout);
        assert!(
            doctor.stdout.contains(&format!("checked {rows} events")),
            "{}",
            doctor.stdout
        );
        let log = es.run(&["log", "--limit", "1000"]);
        log.expect_code(0, "the log around the bad row");
        assert!(log.stdout.contains("ticket/T-1 v4  cannot be read"), "{}", log.stdout);
        let events = es.json(&["events", "ticket/T-1"]);
        assert_eq!(events["events"].as_array().map(Vec::len), Some(5), "{events}");
        assert!(events["events"][3]["unreadable"].is_string(), "{events}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Stores that cannot be used as they are
// ---------------------------------------------------------------------------------------------

/// A file migrated by newer code: every command, looking or writing, is refused with exit 4 and
/// the message of `SqliteError::SchemaTooNew` (the migrations, and "deploy that code"); nothing
/// in the file changes, and `serve` does not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_migrated_by_newer_code_is_refused_by_every_command_and_left_untouched() {
    es_test_support::bounded(async {
        let directory = directory();
        let file = directory.path().join("es.db");
        tickets(&open(&file).await, 0).await;
        raw(&file)
            .execute("INSERT INTO es_migrations VALUES (99, 'from the future', 0)", [])
            .expect("a newer migration");
        settle(&file);
        let before = written_bytes(&file);
        let es = Es::sqlite(&file);
        for args in [
            &["streams"][..],
            &["events", "ticket/T-1"],
            &["state", "ticket/T-1", "--version", "1"],
            &["log"],
            &["doctor"],
            &["projections"],
            &["serve", "--port", "0"],
            &["rebuild", "lead-analysis"],
            &["parked", "lead-analysis", "--drop", "1"],
            &["forget", "lead/L-1", "--yes"],
        ] {
            let refused = es.run(args);
            refused.expect_code(4, &format!("es {args:?} on a newer store"));
            assert!(
                refused.stderr.contains("migration 99") && refused.stderr.contains("deploy"),
                "es {args:?} names the migration and the fix: {}",
                refused.stderr
            );
            assert!(!refused.stdout.contains("listening"), "{}", refused.stdout);
        }
        assert!(written_bytes(&file) == before, "nothing written to the newer store");
    })
    .await;
}

/// A file of an older release (its last migrations not applied yet: the application was not
/// upgraded, the operator's `es` was): looking does not migrate it, and either works or says the
/// store needs migrating, rather than an SQL error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looking_at_a_store_of_an_older_schema_works_or_names_the_fix() {
    es_test_support::bounded(async {
        let directory = directory();
        let file = directory.path().join("es.db");
        tickets(&open(&file).await, 0).await;
        // Migrations 6 (stream lifecycle) and 7 (tenants) not applied yet.
        raw(&file)
            .execute_batch(
                "DROP TABLE stream_states; DROP TABLE archived_events; DROP TABLE tenants; \
                 DELETE FROM es_migrations WHERE version >= 6;",
            )
            .expect("an older store");
        let es = Es::sqlite(&file);
        es.expect(&["streams"], 0);
        for args in [&["log"][..], &["doctor"], &["projections"]] {
            let looked = es.run(args);
            assert!(
                looked.code == Some(0) || looked.stderr.contains("migrat"),
                "es {args:?} on an older store: {looked:?}"
            );
        }
        let applied: i64 = raw(&file)
            .query_row("SELECT max(version) FROM es_migrations", [], |row| row.get(0))
            .expect("migrations");
        assert_eq!(applied, 5, "looking never migrates");
    })
    .await;
}

/// A file the operator may not read, and a path under a missing directory: a message naming the
/// path, the documented exit codes (4: the store cannot be reached; 3: it does not exist), and
/// nothing created, by looking or by writing commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_that_cannot_be_opened_are_named_and_nothing_is_created() {
    use std::os::unix::fs::PermissionsExt;
    es_test_support::bounded(async {
        let directory = directory();
        let missing = directory.path().join("no/such/dir/es.db");
        let es = Es {
            cwd: directory.path().to_owned(),
            ..Es::sqlite(&missing)
        };
        for args in [&["streams"][..], &["serve", "--port", "0"], &["rebuild", "lead-search"]] {
            let refused = es.run(args);
            refused.expect_code(3, &format!("es {args:?} on a missing store"));
            assert!(refused.stderr.contains("es.db"), "{}", refused.stderr);
        }
        assert!(!directory.path().join("no").exists(), "nothing created");

        let file = directory.path().join("secret.db");
        tickets(&open(&file).await, 0).await;
        settle(&file);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).expect("chmod");
        let mut es = Es::sqlite(&file);
        if is_root() {
            es = es.run_as_nobody();
        }
        for args in [&["streams"][..], &["doctor"]] {
            let refused = es.run(args);
            refused.expect_code(4, &format!("es {args:?} on an unreadable file"));
            assert!(
                refused.stderr.contains("secret.db"),
                "names the file: {}",
                refused.stderr
            );
        }
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod back");
    })
    .await;
}

/// A path that is a directory, and an empty file (what `touch` leaves): messages that say what
/// is wrong with the path, not "disk I/O error" or a raw "no such table".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_that_is_not_a_store_is_named_as_such() {
    es_test_support::bounded(async {
        let directory = directory();
        let folder = directory.path().join("events.db");
        std::fs::create_dir(&folder).expect("a directory");
        let refused = Es::sqlite(&folder).run(&["streams"]);
        assert_ne!(refused.code, Some(0));
        assert!(
            !refused.stderr.contains("disk I/O error") && refused.stderr.contains("directory"),
            "{}",
            refused.stderr
        );

        let empty = directory.path().join("empty.db");
        std::fs::write(&empty, b"").expect("an empty file");
        let refused = Es::sqlite(&empty).run(&["streams"]);
        assert_ne!(refused.code, Some(0));
        assert!(
            !refused.stderr.contains("no such table"),
            "an empty file is no store: {}",
            refused.stderr
        );

        // Like a missing store: exit 3, named as no store, with where to name the right one;
        // `serve` does not start, and a writing command does not make the file a store.
        for path in [&folder, &empty] {
            let es = Es::sqlite(path);
            for args in [&["streams"][..], &["serve", "--port", "0"], &["rebuild", "lead-search"]] {
                let refused = es.run(args);
                refused.expect_code(3, &format!("es {args:?} on {}", path.display()));
                assert!(
                    refused.stderr.contains("not an es-rs store") && refused.stderr.contains("--db PATH"),
                    "es {args:?}: {}",
                    refused.stderr
                );
                assert!(!refused.stdout.contains("listening"), "{}", refused.stdout);
            }
        }
        assert_eq!(std::fs::metadata(&empty).expect("still there").len(), 0, "left empty");
    })
    .await;
}

/// README: commands that only look "open the SQLite file read-only"; `es_cli::Preflight`:
/// "looking works ... on a file the process may only read, and changes nothing". Here the file
/// and its directory may only be read (a backup, or the store of a stopped application seen from
/// an operator's account).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looking_works_on_a_store_the_operator_may_only_read() {
    use std::os::unix::fs::PermissionsExt;
    es_test_support::bounded(async {
        let directory = directory();
        let source = directory.path().join("live.db");
        tickets(&open(&source).await, 0).await;
        settle(&source);
        let shelf = directory.path().join("shelf");
        std::fs::create_dir(&shelf).expect("mkdir");
        let file = shelf.join("backup.db");
        std::fs::copy(&source, &file).expect("copied");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).expect("chmod");
        let mut es = Es::sqlite(&file);
        if is_root() {
            es = es.run_as_nobody();
        } else {
            std::fs::set_permissions(&shelf, std::fs::Permissions::from_mode(0o555)).expect("chmod");
        }
        let outcome = es.run(&["streams"]);
        let events = es.run(&["events", "ticket/T-1"]);
        let writing = es.run(&["rebuild", "lead-analysis"]);
        std::fs::set_permissions(&shelf, std::fs::Permissions::from_mode(0o755)).expect("chmod back");
        outcome.expect_code(0, "streams on a file the operator may only read");
        assert!(outcome.stdout.contains("ticket/T-1"), "{}", outcome.stdout);
        assert!(
            outcome.stderr.contains("read as it is now"),
            "says it reads a snapshot: {}",
            outcome.stderr
        );
        events.expect_code(0, "events on a file the operator may only read");
        // A command that writes says why it cannot, in an operator's words.
        writing.expect_code(4, "rebuild on a file the operator may only read");
        assert!(
            writing.stderr.contains("this user may not write") && !writing.stderr.contains("open_read_only"),
            "{}",
            writing.stderr
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The command line itself
// ---------------------------------------------------------------------------------------------

/// Wrong arguments are usage errors (exit 2, a message on stderr, nothing on stdout), answered
/// before any store is opened: a missing store file is never reached, nor created. Help and the
/// version need no store.
#[test]
fn usage_errors_exit_2_before_any_store_is_opened() {
    let directory = directory();
    let missing = directory.path().join("missing.db");
    let es = Es::sqlite(&missing);
    for args in [
        &["bogus"][..],
        &[],
        &["--json"],
        &["streams", "--limit", "-1"],
        &["streams", "--limit", "many"],
        &["events"],
        &["events", "ticket/T-1", "--from", "x"],
        &["state", "ticket/T-1", "--version", "1", "--at", "2026-01-01T00:00:00Z"],
        &["state", "ticket/T-1", "--version", "1", "--version", "2"],
        &["state", "ticket/T-1", "--at", "tomorrow"],
        &["diff", "ticket/T-1", "1"],
        &["log", "--after", "-3"],
        &["log", "--limit", "x", "--follow"],
        &["doctor", "--batch", "x"],
        &["parked", "lead-search", "--retry", "1", "--drop", "1"],
        &["serve", "--port", "70000"],
        // What needs no store to be wrong is a usage error before the missing store is named.
        &["events", "T-1"],
        &["state", "ticket"],
        &["streams", "--after", "T-1"],
        &["events", "ticket/T-1", "--from", "5", "--to", "2"],
        &[
            "close",
            "ticket/T-1",
            "--as",
            "gone",
            "--by",
            "ops",
            "--reason",
            "x",
            "--yes",
        ],
    ] {
        let wrong = es.run(args);
        wrong.expect_code(2, &format!("es {args:?}"));
        assert!(wrong.stdout.is_empty(), "es {args:?}: {}", wrong.stdout);
        assert!(
            wrong.stderr.contains("error") || wrong.stderr.contains("Usage"),
            "{}",
            wrong.stderr
        );
    }
    for args in [&["--help"][..], &["serve", "--help"], &["-V"]] {
        let help = es.run(args);
        help.expect_code(0, &format!("es {args:?}"));
        assert!(!help.stdout.is_empty());
    }
    assert!(!missing.exists(), "no store created");
    assert_eq!(
        std::fs::read_dir(directory.path()).expect("ls").count(),
        0,
        "nothing created"
    );
}

/// README: "It uses the same store as the examples: the SQLite file (`--db PATH` before the
/// command), or PostgreSQL when `DATABASE_URL` is set." `es --help` is where an operator looks
/// for that, and for the exit codes scripts rely on (`es_cli::Exit`).
#[test]
fn help_tells_how_to_choose_the_store_and_the_exit_codes() {
    let directory = directory();
    let es = Es::sqlite(&directory.path().join("es.db"));
    let help = es.expect(&["--help"], 0).stdout;
    assert!(help.contains("--db"), "{help}");
    assert!(help.contains("DATABASE_URL"), "{help}");
    assert!(help.contains("130"), "the exit codes: {help}");
    assert!(help.contains("wins over DATABASE_URL"), "which wins: {help}");
    assert!(
        help.contains("ES_EXAMPLES_DB") && help.contains("ES_EXAMPLES_SCHEMA"),
        "{help}"
    );
    for library_talk in ["embeds", "Cli::", "#[pii]"] {
        assert!(
            !help.contains(library_talk),
            "operator-facing, not library docs ({library_talk}): {help}"
        );
    }
    let version = es.expect(&["-V"], 0).stdout;
    assert!(version.starts_with("es "), "the binary's name: {version}");
    let bare = Es {
        prefix: vec!["--db".into()],
        ..es.clone()
    };
    let missing_path = bare.run(&[]);
    missing_path.expect_code(2, "--db without a path");
    assert!(
        !missing_path.stderr.contains("unexpected argument '--db'") && missing_path.stderr.contains("--db PATH"),
        "{}",
        missing_path.stderr
    );
    let after_the_command = Es {
        prefix: Vec::new(),
        ..es.clone()
    }
    .run(&["streams", "--db", "x.db"]);
    after_the_command.expect_code(2, "--db after the command");
    assert!(
        after_the_command.stderr.contains("--db goes before the command"),
        "{}",
        after_the_command.stderr
    );
    // Before the command, among es-cli's own options, it is taken.
    let with_json = Es {
        prefix: vec![
            "--json".into(),
            "--db".into(),
            directory.path().join("es.db").display().to_string(),
        ],
        ..es
    }
    .run(&["streams"]);
    with_json.expect_code(3, "a missing store named after --json");
    assert!(with_json.stderr.contains("no store at"), "{}", with_json.stderr);
}

// ---------------------------------------------------------------------------------------------
// es serve
// ---------------------------------------------------------------------------------------------

/// "Its pages, all read-only (no route writes; other methods are answered 405)", answering
/// "only requests whose `Host` is a loopback name": after every page is browsed, and every
/// other method tried on each, the file and its write-ahead log hold the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_writes_nothing_and_answers_other_methods_405() {
    es_test_support::bounded(async {
        let directory = directory();
        let file = directory.path().join("es.db");
        {
            let store = open(&file).await;
            tickets(&store, 3).await;
            store.create_tables().await.expect("read-model tables");
        }
        settle(&file);
        let es = Es::sqlite(&file);
        let projections_before = es.json(&["projections"]);
        let before = written_bytes(&file);

        let serve = es.serve();
        let pages = [
            "/",
            "/?type=ticket&id=T-1",
            "/streams/ticket/T-1",
            "/streams/ticket/T-LONG?from=2",
            "/streams/ticket/T-1/state?version=2",
            "/streams/ticket/T-1/state",
            "/log",
            "/log?before=5",
            "/log?after=3",
            "/log.json?after=0",
            "/projections",
        ];
        for page in pages {
            let response = serve.get(page);
            assert_eq!(response.status, 200, "GET {page}: {}", response.body);
            assert!(!response.body.is_empty(), "GET {page}");
            for method in ["POST", "PUT", "DELETE", "PATCH"] {
                let refused = http(&serve.url, method, page, None);
                assert_eq!(refused.status, 405, "{method} {page}: {}", refused.head);
                let allow = refused.header("allow").unwrap_or_default();
                assert!(
                    !allow.contains("POST") && allow.contains("GET"),
                    "{method} {page}: {allow}"
                );
            }
        }
        let log = serve.get("/log.json?after=0").json();
        assert_eq!(log["events"].as_array().map(Vec::len), Some(3 + 11 + 4), "{log}");
        let foreign = http(&serve.url, "GET", "/", Some("evil.example"));
        assert_eq!(foreign.status, 403, "a rebinding page's Host is refused");
        assert!(!foreign.body.contains("ticket/T-1"), "{}", foreign.body);
        drop(serve);

        assert!(written_bytes(&file) == before, "es serve wrote to the store");
        let projections_after = es.json(&["projections"]);
        for (a, b) in projections_before["projections"]
            .as_array()
            .unwrap()
            .iter()
            .zip(projections_after["projections"].as_array().unwrap())
        {
            assert_eq!((&a["checkpoint"], &a["claim"]), (&b["checkpoint"], &b["claim"]));
        }
    })
    .await;
}

/// "Every request does bounded work": a 130-event stream is shown 50 versions a page with links
/// to the next; 600 streams and 700 events are never listed whole (`?limit=100000` included);
/// the live log's JSON is bounded and resumes where it stopped; wrong parameters are 400 and
/// unknown streams 404, never a server error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_pages_long_streams_and_caps_every_list() {
    es_test_support::bounded(async {
        let directory = directory();
        let file = directory.path().join("es.db");
        tickets(&open(&file).await, 129).await;
        let now = Utc::now().timestamp_micros();
        raw(&file)
            .execute_batch(&format!(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 599) \
                 INSERT INTO events (event_id, aggregate_type, aggregate_id, version, event_name, schema_version, \
                 payload, metadata, recorded_at) \
                 SELECT randomblob(16), 'ticket', printf('B-%04d', i), 1, 'TicketOpened', 1, \
                 '{{\"title\":\"bulk\",\"customer\":\"acme\",\"priority\":\"normal\"}}', '{{}}', {now} FROM n"
            ))
            .expect("600 streams");
        let total_events = 3 + 11 + 130 + 600;
        let serve = Es::sqlite(&file).serve();

        let first = serve.get("/streams/ticket/T-LONG");
        assert_eq!(first.status, 200);
        assert_eq!(anchored_versions(&first.body), (1..=50).collect::<Vec<u64>>());
        assert!(
            first.body.contains("/streams/ticket/T-LONG?from=51"),
            "a link to the next page"
        );
        let last = serve.get("/streams/ticket/T-LONG?from=101");
        assert_eq!(anchored_versions(&last.body), (101..=130).collect::<Vec<u64>>());
        let state = serve.get("/streams/ticket/T-LONG/state?version=130");
        assert_eq!(state.status, 200);
        assert!(state.body.contains("comment 128"), "the last comment is in the state");

        let streams = serve.get("/?limit=100000");
        assert_eq!(streams.status, 200);
        let rows = streams.body.matches("<tr").count();
        assert!(rows > 1 && rows <= 501, "a capped page of streams, not {rows} rows");
        assert!(streams.body.contains("id=\"next\""), "with a next page");

        let log = serve.get("/log");
        let rows = log.body.matches("<tr").count();
        assert!(rows <= 51, "the latest page of the log: {rows} rows");
        assert!(log.body.contains("id=\"earlier\""), "with earlier pages");

        let mut after = 0;
        let mut seen = 0;
        for _ in 0..10 {
            let answer = serve.get(&format!("/log.json?after={after}")).json();
            let events = answer["events"].as_array().expect("events");
            assert!(events.len() < total_events, "one answer holds a bounded slice");
            let Some(last) = events.last() else { break };
            let positions: Vec<u64> = events.iter().map(|e| e["position"].as_u64().unwrap()).collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]) && positions[0] > after);
            after = last["position"].as_u64().unwrap();
            seen += events.len();
        }
        assert_eq!(
            seen, total_events,
            "polling after the last position shown gets the rest"
        );

        for (page, status) in [
            ("/log.json?after=abc", 400),
            ("/streams/ticket/T-1/state?version=x", 400),
            ("/?after=garbage", 400),
            ("/log?after=1&before=9", 400),
            ("/streams/ticket/T-404", 404),
            ("/streams/invoice/I-1", 404),
            ("/no/such/page", 404),
        ] {
            assert_eq!(serve.get(page).status, status, "GET {page}");
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------------

/// Rows of every table of `schema`: what a write would change.
async fn row_counts(store: &es_postgres::PostgresStore) -> Vec<(String, i64)> {
    let tables = schema_tables(store).await;
    let mut counts = Vec::new();
    for table in tables {
        let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{}\".\"{table}\"", store.schema()))
            .fetch_one(store.pool())
            .await
            .expect("count");
        counts.push((table, count));
    }
    counts
}

/// The same promises on PostgreSQL: the browser pages a long stream and writes nothing (every
/// table's rows unchanged); an unreachable server is exit 4 naming the address; a schema that
/// does not exist is named, and looking does not create it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_serve_pages_and_writes_nothing_and_store_problems_are_named() {
    es_test_support::bounded_by(Duration::from_secs(120), async {
        let database = es_test_support::TestDatabase::get().expect("a PostgreSQL server");
        let schema = database.schema().await.expect("a fresh schema");
        let store = schema.store().clone();
        tickets(&store, 59).await;
        store.create_tables().await.expect("read-model tables");
        let directory = directory();
        let es = Es::postgres(database.url(), store.schema(), directory.path());
        // Everything committed is visible before counting.
        let deadline = Instant::now() + Duration::from_secs(20);
        while es.json_lines(&["log", "--limit", "1000"]).len() < 3 + 11 + 60 {
            assert!(Instant::now() < deadline, "the events never became visible");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let before = row_counts(&store).await;

        let serve = es.serve();
        let first = serve.get("/streams/ticket/T-LONG");
        assert_eq!(first.status, 200, "{}", first.body);
        assert_eq!(anchored_versions(&first.body), (1..=50).collect::<Vec<u64>>());
        let rest = serve.get("/streams/ticket/T-LONG?from=51");
        assert_eq!(anchored_versions(&rest.body), (51..=60).collect::<Vec<u64>>());
        for page in [
            "/",
            "/log",
            "/log.json?after=0",
            "/projections",
            "/streams/ticket/T-1/state?version=1",
        ] {
            assert_eq!(serve.get(page).status, 200, "GET {page}");
            assert_eq!(http(&serve.url, "POST", page, None).status, 405, "POST {page}");
        }
        drop(serve);
        assert_eq!(row_counts(&store).await, before, "es serve changed rows");

        let unreachable = Es {
            env: vec![("DATABASE_URL".into(), "postgres://postgres@127.0.0.1:1/postgres".into())],
            ..es.clone()
        };
        let refused = unreachable.run(&["streams"]);
        refused.expect_code(4, "an unreachable server");
        assert!(refused.stderr.contains("127.0.0.1:1"), "{}", refused.stderr);

        let absent = format!("opreview_absent_{}", uuid::Uuid::new_v4().simple());
        let nowhere = Es::postgres(database.url(), &absent, directory.path());
        for args in [&["streams"][..], &["doctor"], &["log"]] {
            let refused = nowhere.run(args);
            assert!(matches!(refused.code, Some(3 | 4)), "es {args:?}: {refused:?}");
            assert!(refused.stderr.contains(&absent), "names the schema: {}", refused.stderr);
        }
        assert_eq!(schemas_named(&store, &absent).await, 0, "looking created the schema");
    })
    .await;
}
