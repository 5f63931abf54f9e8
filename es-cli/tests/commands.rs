//! Every command, run in-process on an in-memory store with a known history: text and JSON
//! outputs, and exit codes.

mod support;

use es_cli::Exit;
use es_core::{Aggregate, Snapshot, SnapshotStore, StreamId};
use serde_json::Value;
use support::{fixture, Fixture, Ticket};

/// Runs `es ARGS` on `cli`: the exit code, standard output and standard error.
async fn run_cli<S: es_cli::CliStore>(cli: es_cli::Cli<S>, args: &[&str]) -> (Exit, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let argv = std::iter::once("es").chain(args.iter().copied());
    let exit = cli.execute(argv, &mut out, &mut err).await;
    (
        exit,
        String::from_utf8(out).expect("utf-8"),
        String::from_utf8(err).expect("utf-8"),
    )
}

/// Runs `command` (its words split at spaces) on the fixture's command line, built with
/// `Cli::closing` or without.
async fn run_words(fixture: &Fixture, command: &str, closing: bool) -> (Exit, String, String) {
    let cli = match closing {
        true => fixture.cli().closing(),
        false => fixture.cli(),
    };
    let args: Vec<&str> = command.split(' ').collect();
    run_cli(cli, &args).await
}

impl Fixture {
    async fn run(&self, args: &[&str]) -> (Exit, String, String) {
        run_cli(self.cli(), args).await
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let (exit, out, err) = self.run(&args).await;
        assert_eq!(exit, Exit::Ok, "{args:?}: {err}");
        serde_json::from_str(&out).unwrap_or_else(|error| panic!("{args:?} printed no JSON ({error}): {out}"))
    }
}

#[tokio::test]
async fn streams_are_listed_with_counts_filtered_and_paged() {
    let fixture = fixture().await;
    let (exit, out, _) = fixture.run(&["streams"]).await;
    assert_eq!(exit, Exit::Ok);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("STREAM"), "{out}");
    assert!(lines[1].starts_with("ticket/T-1") && lines[1].contains(" 4 "), "{out}");
    assert!(lines[2].starts_with("ticket/T-2"), "{out}");

    let listed = fixture.json(&["streams", "--id", "T-2"]).await;
    assert_eq!(listed["streams"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["streams"][0]["aggregate_id"], "T-2");
    assert_eq!(listed["streams"][0]["events"], 1);
    let page = fixture.json(&["streams", "--limit", "1"]).await;
    assert_eq!(page["next_after"], "ticket/T-1");
    let next = fixture.json(&["streams", "--after", "ticket/T-1"]).await;
    assert_eq!(next["streams"][0]["aggregate_id"], "T-2");
    assert_eq!(
        fixture.json(&["streams", "--type", "order"]).await["streams"],
        Value::Array(vec![])
    );
}

#[tokio::test]
async fn events_show_metadata_and_payloads_as_stored_and_as_read() {
    let fixture = fixture().await;
    fixture
        .append_raw(&StreamId::new("ticket", "T-2"), "Escalated", 1, "{}")
        .await;
    let shown = fixture.json(&["events", "ticket/T-2"]).await;
    let events = shown["events"].as_array().expect("events");
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["event_name"], "Opened");
    assert!(events[0]["metadata"]["command_id"].is_string());
    assert_eq!(events[1]["payload"], serde_json::json!({}));
    assert_eq!(
        events[1]["decoded"],
        serde_json::json!({ "level": 1 }),
        "upcast on read"
    );

    let (exit, out, _) = fixture.run(&["events", "ticket/T-1", "--from", "2", "--to", "2"]).await;
    assert_eq!(exit, Exit::Ok);
    assert!(out.starts_with("ticket/T-1 v2 "), "{out}");
    assert!(out.contains("\"level\": 2"), "{out}");
    assert!(!out.contains(" v3 "), "{out}");
    let (exit, _, err) = fixture.run(&["events", "ticket/T-9"]).await;
    assert_eq!((exit, exit.code()), (Exit::NotFound, 3), "{err}");
    let (exit, _, err) = fixture.run(&["events", "T-1"]).await;
    assert_eq!(exit, Exit::Usage, "{err}");
    assert!(err.contains("type/id"), "{err}");
}

#[tokio::test]
async fn states_travel_in_time_and_diff() {
    let fixture = fixture().await;
    let now = fixture.json(&["state", "ticket/T-1"]).await;
    assert_eq!(
        (now["version"].as_u64(), &now["state"]["open"]),
        (Some(4), &Value::Bool(false))
    );
    let past = fixture.json(&["state", "ticket/T-1", "--version", "2"]).await;
    assert_eq!(past["state"]["level"], 2);
    let before = fixture
        .json(&["state", "ticket/T-1", "--at", "2000-01-01T00:00:00Z"])
        .await;
    assert_eq!(before["version"], 0);

    let diff = fixture.json(&["diff", "ticket/T-1", "1", "4"]).await;
    let changed: Vec<&str> = diff["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter_map(|change| change["path"].as_str())
        .collect();
    assert_eq!(changed, ["$.level", "$.open"]);
    let (exit, out, _) = fixture.run(&["diff", "ticket/T-1", "1", "2"]).await;
    assert_eq!(exit, Exit::Ok);
    assert!(out.contains("~ $.level: 0 -> 2"), "{out}");
    let (exit, _, err) = fixture.run(&["state", "order/O-1"]).await;
    assert_eq!(exit, Exit::NotFound, "{err}");
    assert!(err.contains("ticket"), "names what is registered: {err}");
}

#[tokio::test]
async fn the_log_pages_through_every_stream() {
    let fixture = fixture().await;
    let (exit, out, _) = fixture.run(&["log", "--limit", "3"]).await;
    assert_eq!(exit, Exit::Ok);
    assert_eq!(out.lines().count(), 3, "{out}");
    let (_, json, _) = fixture.run(&["log", "--after", "4", "--json"]).await;
    let lines: Vec<Value> = json
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["stream"], "ticket/T-2");
}

#[tokio::test]
async fn the_registry_lists_names_aliases_versions_and_upcasts() {
    let fixture = fixture().await;
    let registry = fixture.json(&["registry"]).await;
    let aggregates = registry["aggregates"].as_array().expect("a list of aggregates");
    let types: Vec<&str> = aggregates.iter().filter_map(|a| a["aggregate_type"].as_str()).collect();
    // Every command line knows the events that record closed streams.
    assert_eq!(types, ["es.stream", "ticket"]);
    let events = &aggregates[1]["events"];
    assert_eq!(events[1]["name"], "Escalated");
    assert_eq!(events[1]["schema_version"], 2);
    assert_eq!(events[1]["upcast_from"], serde_json::json!([1]));
    assert_eq!(events[2]["aliases"], serde_json::json!(["Done"]));
    let (_, out, _) = fixture.run(&["registry"]).await;
    assert!(out.contains("v1 -> v2"), "{out}");
}

#[tokio::test]
async fn doctor_reports_every_row_that_does_not_decode() {
    let fixture = fixture().await;
    let (exit, out, _) = fixture.run(&["doctor"]).await;
    assert_eq!(exit, Exit::Ok, "{out}");
    assert!(out.contains("checked 5 events"), "{out}");

    let t1 = StreamId::new("ticket", "T-1");
    fixture.append_raw(&t1, "Escalated", 9, r#"{"level":9}"#).await;
    fixture.append_raw(&t1, "Reopened", 1, "{}").await;
    fixture
        .append_raw(&StreamId::new("order", "O-1"), "Placed", 1, "{}")
        .await;
    let broken = Snapshot {
        stream: StreamId::new("ticket", "T-2"),
        version: 1,
        revision: Ticket::SNAPSHOT_REVISION,
        schema_version: 1,
        state: br#"{"title": 7}"#.to_vec(),
        taken_at: chrono::Utc::now(),
    };
    fixture.store.save_snapshot(broken).await.expect("snapshot");
    let (exit, out, _) = fixture.run(&["doctor", "--batch", "2"]).await;
    assert_eq!((exit, exit.code()), (Exit::Problems, 1), "{out}");
    assert!(out.contains("event ticket/T-1 v5 (Escalated)"), "{out}");
    assert!(out.contains("schema version 9"), "{out}");
    assert!(out.contains("event ticket/T-1 v6 (Reopened)"), "{out}");
    assert!(
        out.contains("event order/O-1 v1 (Placed): no aggregate of type `order`"),
        "{out}"
    );
    assert!(out.contains("snapshot ticket/T-2 v1"), "{out}");
    assert!(out.contains("4 problems"), "{out}");
    let report = fixture.run(&["doctor", "--json"]).await;
    let report: Value = serde_json::from_str(&report.1).expect("JSON");
    assert_eq!(report["events_checked"], 8);
    assert_eq!(report["problems"].as_array().map(Vec::len), Some(4));
}

#[tokio::test]
async fn projections_show_their_lag_and_rebuild() {
    let fixture = fixture().await;
    let listed = fixture.json(&["projections"]).await;
    let projection = &listed["projections"][0];
    assert_eq!(projection["name"], "opened_count");
    assert_eq!(
        (projection["checkpoint"].as_u64(), projection["events_behind"].as_u64()),
        (Some(0), Some(5))
    );
    assert_eq!(projection["claim"], "free");

    let rebuilt = fixture.json(&["rebuild", "opened_count"]).await;
    assert_eq!(
        (rebuilt["read"].as_u64(), rebuilt["handled"].as_u64()),
        (Some(5), Some(2))
    );
    assert_eq!(fixture.model.read(|model| model.len()), 2);
    let listed = fixture.json(&["projections"]).await;
    assert_eq!(listed["projections"][0]["events_behind"], 0);

    let (exit, _, err) = fixture.run(&["rebuild", "nothing"]).await;
    assert_eq!(exit, Exit::NotFound, "{err}");
    // A projection held by a running runner is not rebuilt under it.
    let held = es_core::CheckpointStore::claim(&fixture.model, "opened_count")
        .await
        .expect("claim");
    let (exit, _, err) = fixture.run(&["rebuild", "opened_count"]).await;
    assert_eq!((exit, exit.code()), (Exit::Busy, 5), "{err}");
    assert_eq!(fixture.json(&["projections"]).await["projections"][0]["claim"], "held");
    drop(held);
}

#[tokio::test]
async fn help_and_usage_errors_have_their_exit_codes() {
    let fixture = fixture().await;
    let (exit, out, _) = fixture.run(&["--help"]).await;
    assert_eq!(exit, Exit::Ok);
    for command in [
        "streams",
        "events",
        "state",
        "diff",
        "log",
        "projections",
        "rebuild",
        "doctor",
        "registry",
        "serve",
    ] {
        assert!(out.contains(command), "--help lists {command}: {out}");
    }
    let (exit, out, _) = fixture.run(&["doctor", "--help"]).await;
    assert_eq!(exit, Exit::Ok);
    assert!(out.contains("--batch"), "{out}");
    let (exit, _, err) = fixture.run(&["unknown"]).await;
    assert_eq!((exit, exit.code()), (Exit::Usage, 2), "{err}");
    // Every exit code, as `Exit` documents them, ends the help.
    for code in ["0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "130 "] {
        assert!(
            out_of(&fixture, &["--help"]).await.contains(&format!("\n  {code}")),
            "exit {code}"
        );
    }
}

async fn out_of(fixture: &Fixture, args: &[&str]) -> String {
    fixture.run(args).await.1
}

/// A binary describes itself with a `Program`: its name and version, its usage line, and how it
/// chooses its store, before the exit codes; `preflight` answers help the same way.
#[tokio::test]
async fn a_program_names_itself_and_how_it_chooses_its_store() {
    let fixture = fixture().await;
    let program = es_cli::Program::new("tickets-admin", "2.3.0")
        .usage("tickets-admin [--store URL] <COMMAND>")
        .store_help("Choosing the store:\n  --store URL  before the command");
    let (exit, out, _) = run_cli(fixture.cli().program(program.clone()), &["-V"]).await;
    assert_eq!((exit, out.trim()), (Exit::Ok, "tickets-admin 2.3.0"));
    let (exit, help, _) = run_cli(fixture.cli().program(program.clone()), &["--help"]).await;
    assert_eq!(exit, Exit::Ok);
    assert!(help.contains("Usage: tickets-admin [--store URL] <COMMAND>"), "{help}");
    let store = help.find("Choosing the store:").expect("the store section");
    let exits = help.find("Exit codes:").expect("the exit codes");
    assert!(store < exits, "{help}");
    assert!(
        !help.contains("Cli::") && !help.contains("embeds"),
        "operator-facing: {help}"
    );
    assert_eq!(
        program.preflight(["tickets-admin", "streams"]),
        es_cli::Preflight::Reads
    );
    assert_eq!(
        program.preflight(["tickets-admin", "rebuild", "opened_count"]),
        es_cli::Preflight::Writes
    );
}

/// What the arguments alone show to be wrong is a usage error, which `preflight` answers before
/// a store is opened; a version past a stream's last is not found, naming the last.
#[tokio::test]
async fn streams_and_ranges_are_checked_and_versions_past_the_end_are_not_found() {
    for args in [
        &["es", "events", "T-1"][..],
        &["es", "state", "ticket"],
        &["es", "diff", "/T-1", "1", "2"],
        &["es", "streams", "--after", "T-1"],
        &[
            "es", "close", "ticket", "--as", "deleted", "--by", "ops", "--reason", "x", "--yes",
        ],
        &["es", "events", "ticket/T-1", "--from", "3", "--to", "2"],
    ] {
        assert_eq!(
            es_cli::preflight(args),
            es_cli::Preflight::Answered(Exit::Usage),
            "{args:?}"
        );
    }
    let fixture = fixture().await;
    let (exit, _, err) = fixture.run(&["events", "T-1"]).await;
    assert_eq!(exit, Exit::Usage);
    assert!(err.contains("`T-1` is not a stream: write it as `type/id`"), "{err}");
    let (exit, _, err) = fixture.run(&["events", "ticket/T-1", "--from", "3", "--to", "2"]).await;
    assert_eq!(exit, Exit::Usage);
    assert!(err.contains("--from 3 is after --to 2"), "{err}");
    let (exit, _, err) = fixture.run(&["diff", "ticket/T-1", "3", "2"]).await;
    assert_eq!(exit, Exit::Usage);
    assert!(err.contains("version 3 is after version 2"), "{err}");

    for args in [
        &["state", "ticket/T-1", "--version", "5"][..],
        &["diff", "ticket/T-1", "1", "9"],
        &["diff", "ticket/T-1", "9", "1"],
        &["events", "ticket/T-1", "--from", "5"],
    ] {
        let (exit, out, err) = fixture.run(args).await;
        assert_eq!(exit, Exit::NotFound, "{args:?}: {err}");
        assert!(
            err.contains("past the end of ticket/T-1: its last version is 4"),
            "{args:?}: {err}"
        );
        assert!(out.is_empty(), "{out}");
    }
    let last = fixture.json(&["state", "ticket/T-1", "--version", "4"]).await;
    assert_eq!(last["version"], 4);
    let initial = fixture.json(&["state", "ticket/T-1", "--version", "0"]).await;
    assert_eq!(initial["version"], 0);
    let to_past_the_end = fixture
        .json(&["events", "ticket/T-1", "--from", "3", "--to", "99"])
        .await;
    assert_eq!(to_past_the_end["events"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn states_start_from_the_latest_usable_snapshot() {
    let fixture = fixture().await;
    // A recognisable state at version 3: a state shown from version 3 on must start from it.
    let planted = serde_json::json!({ "title": "from the snapshot", "level": 3, "open": true });
    let snapshot = Snapshot {
        stream: StreamId::new("ticket", "T-1"),
        version: 3,
        revision: Ticket::SNAPSHOT_REVISION,
        schema_version: 1,
        state: planted.to_string().into_bytes(),
        taken_at: chrono::Utc::now(),
    };
    fixture.store.save_snapshot(snapshot).await.expect("snapshot");
    let now = fixture.json(&["state", "ticket/T-1"]).await;
    assert_eq!(
        (&now["state"]["title"], &now["state"]["open"]),
        (&Value::from("from the snapshot"), &Value::Bool(false))
    );
    let before = fixture.json(&["state", "ticket/T-1", "--version", "2"]).await;
    assert_eq!(
        before["state"]["title"], "Printer",
        "an older version replays from the start"
    );
}

#[tokio::test]
async fn parked_events_are_listed_retried_and_dropped() {
    use es_core::{CheckpointStore, GlobalLog, ParkedEvent};
    let fixture = fixture().await;
    let (exit, out, err) = fixture.run(&["parked", "opened_count"]).await;
    assert_eq!(exit, Exit::Ok, "{err}");
    assert!(out.contains("no parked events"), "{out}");

    // Park the second event as a runner with `FailurePolicy::Park` would.
    let second = fixture.store.read_all(1, 1).await.expect("read")[0].clone();
    let mut claim = fixture.model.claim("opened_count").await.expect("claim");
    let (mut unit, _) = fixture.model.begin(&mut claim).await.expect("begin");
    let parked = ParkedEvent::new("opened_count", &second, "the mail server is down", 3);
    fixture.model.park(&mut unit, &parked).await.expect("park");
    fixture.model.commit(unit, second.position).await.expect("commit");
    drop(claim);

    let (exit, out, err) = fixture.run(&["parked", "opened_count"]).await;
    assert_eq!(exit, Exit::Ok, "{err}");
    for expected in ["ticket/T-1", "Escalated", "the mail server is down"] {
        assert!(out.contains(expected), "{expected} in {out}");
    }
    let listed = fixture.json(&["projections"]).await;
    assert_eq!(
        listed["projections"][0]["parked"], 1,
        "the projections list counts parked events"
    );
    let listed = fixture.json(&["parked", "opened_count"]).await;
    let event = &listed["parked"][0];
    assert_eq!(
        (
            event["position"].as_u64(),
            event["attempts"].as_u64(),
            event["retry_requested"].as_bool()
        ),
        (Some(second.position), Some(3), Some(false))
    );

    let position = second.position.to_string();
    let (exit, out, err) = fixture.run(&["parked", "opened_count", "--retry", &position]).await;
    assert_eq!(exit, Exit::Ok, "{err}");
    assert!(out.contains("retried"), "{out}");
    let listed = fixture.json(&["parked", "opened_count"]).await;
    assert_eq!(listed["parked"][0]["retry_requested"], true);

    let (exit, _, err) = fixture.run(&["parked", "opened_count", "--drop", &position]).await;
    assert_eq!(exit, Exit::Ok, "{err}");
    assert_eq!(
        fixture.json(&["parked", "opened_count"]).await["parked"],
        serde_json::json!([])
    );
    let (exit, _, err) = fixture.run(&["parked", "opened_count", "--drop", &position]).await;
    assert_eq!(exit, Exit::NotFound, "dropping twice: {err}");
    let (exit, _, err) = fixture.run(&["parked", "nothing"]).await;
    assert_eq!(exit, Exit::NotFound, "{err}");
}

/// `forget` destroys a data subject's key, on a program that enabled it and with `--yes`.
#[tokio::test]
async fn forget_destroys_a_subject_s_key_when_enabled_and_confirmed() {
    use es_core::pii::{InMemoryKeyStore, KeyStore, PiiStore};
    use es_core::{EventRegistry, InMemoryStore};

    let keys = InMemoryKeyStore::new();
    keys.key_for_writing("lead/L-7").await.expect("a key");
    let store = PiiStore::new(InMemoryStore::new(), keys.clone(), EventRegistry::new());
    let run = |args: &'static [&'static str], forgetting: bool| {
        let cli = es_cli::Cli::new(store.clone());
        let cli = match forgetting {
            true => cli.forgetting().expect("registers"),
            false => cli,
        };
        run_cli(cli, args)
    };

    let (exit, _, err) = run(&["forget", "lead/L-7", "--yes"], false).await;
    assert_eq!(exit, Exit::Usage, "not enabled: {err}");
    assert!(err.contains("Cli::forgetting"), "{err}");
    let (exit, _, err) = run(&["forget", "lead/L-7"], true).await;
    assert_eq!(exit, Exit::Usage, "not confirmed: {err}");
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(
        keys.keys(&["lead/L-7"]).await.map(|keys| keys.len()).ok(),
        Some(1),
        "nothing forgotten yet"
    );

    let (exit, out, err) = run(&["forget", "lead/L-7", "--yes"], true).await;
    assert_eq!(exit, Exit::Ok, "{err}");
    assert!(out.contains("forgot `lead/L-7`"), "{out}");
    assert!(
        keys.keys(&["lead/L-7"]).await.is_ok_and(|keys| keys.is_empty()),
        "the key is gone"
    );
    let (exit, out, _) = run(&["forget", "lead/L-7", "--yes", "--json"], true).await;
    assert_eq!(exit, Exit::Ok);
    let answer: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(answer, serde_json::json!({ "subject": "lead/L-7", "had_key": false }));
}

/// `close` tombstones, archives or deletes a stream on a program that enabled it, with `--yes`;
/// `closed` lists the records, the audit of deletions by default; `doctor` reads the lifecycle
/// events like any other.
#[tokio::test]
async fn close_and_closed_on_a_program_that_enabled_them() {
    use es_core::lifecycle::{ClosedQuery, StreamLifecycle, StreamStatus};
    use es_core::EventStore;

    let fixture = fixture().await;
    let delete_t2 = "close ticket/T-2 --as deleted --by dpo --reason erasure";

    let (exit, _, err) = run_words(&fixture, &format!("{delete_t2} --yes"), false).await;
    assert_eq!(exit, Exit::Usage, "not enabled: {err}");
    assert!(err.contains("Cli::closing"), "{err}");
    let (exit, _, err) = run_words(&fixture, delete_t2, true).await;
    assert_eq!(exit, Exit::Usage, "not confirmed: {err}");
    assert!(err.contains("--yes"), "{err}");
    let t2 = StreamId::new("ticket", "T-2");
    assert_eq!(
        fixture.store.stream_version(&t2).await.expect("version"),
        1,
        "nothing closed yet"
    );

    let (exit, out, err) = run_words(&fixture, &format!("{delete_t2} --yes --json"), true).await;
    assert_eq!(exit, Exit::Ok, "{err}");
    let record: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(record["stream"], "ticket/T-2");
    assert_eq!(
        (record["status"].as_str(), record["events"].as_u64()),
        (Some("deleted"), Some(1))
    );
    assert_eq!(
        (record["by"].as_str(), record["reason"].as_str()),
        (Some("dpo"), Some("erasure"))
    );
    assert_eq!(fixture.store.stream_version(&t2).await.expect("version"), 0, "deleted");

    let (exit, out, _) = run_words(
        &fixture,
        "close ticket/T-1 --as tombstoned --by ops --reason done --yes",
        true,
    )
    .await;
    assert_eq!(exit, Exit::Ok);
    assert!(out.contains("ticket/T-1 tombstoned at version 4"), "{out}");
    let closure = fixture
        .store
        .stream_closure(&StreamId::new("ticket", "T-1"))
        .await
        .expect("closure");
    assert_eq!(closure.map(|closed| closed.status), Some(StreamStatus::Tombstoned));

    let (exit, out, _) = run_words(&fixture, "closed", true).await;
    assert_eq!(exit, Exit::Ok);
    assert_eq!(out.lines().count(), 1, "the audit lists the deletion only: {out}");
    assert!(
        out.contains("ticket/T-2 deleted") && out.contains("by dpo") && out.contains(": erasure"),
        "{out}"
    );
    let (exit, out, _) = run_words(&fixture, "closed --status tombstoned --json", true).await;
    assert_eq!(exit, Exit::Ok);
    let listed: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(listed["closed"][0]["stream"], "ticket/T-1");
    let audit = fixture
        .store
        .closed_streams(&ClosedQuery::new(StreamStatus::Deleted))
        .await
        .expect("audit");
    assert_eq!(audit.len(), 1);

    // A deleted stream says so; a tombstoned one still shows its events and state.
    let (exit, _, err) = run_words(&fixture, "events ticket/T-2", true).await;
    assert_eq!(exit, Exit::NotFound);
    assert!(
        err.contains("ticket/T-2 is deleted (by dpo") && err.contains("its events are gone"),
        "{err}"
    );
    let (exit, out, err) = run_words(&fixture, "state ticket/T-1", true).await;
    assert_eq!(exit, Exit::Ok, "{err}");
    assert!(out.starts_with("ticket/T-1 at version 4"), "{out}");
    assert!(
        out.contains("(tombstoned by ops at ") && out.contains(": done; it takes no more events)"),
        "{out}"
    );
    let (exit, out, _) = run_words(&fixture, "state ticket/T-1 --json", true).await;
    assert_eq!(exit, Exit::Ok);
    let state: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(state["closed"]["status"], "tombstoned");

    // The lifecycle events are in the log, and read like any other.
    let (exit, out, _) = run_words(&fixture, "doctor", true).await;
    assert_eq!(exit, Exit::Ok, "{out}");
}

/// `events`, `state` and `diff` of an archived stream read the archive on a program that closes
/// streams, with the record of who archived it; elsewhere they say where the events are.
#[tokio::test]
async fn events_of_an_archived_stream_come_from_the_archive() {
    let fixture = fixture().await;
    let (exit, before, _) = run_words(&fixture, "events ticket/T-1 --json", true).await;
    assert_eq!(exit, Exit::Ok);
    let mut before_states = std::collections::BTreeMap::new();
    for version in [0, 2, 4] {
        let command = format!("state ticket/T-1 --version {version} --json");
        let (exit, out, err) = run_words(&fixture, &command, true).await;
        assert_eq!(exit, Exit::Ok, "{err}");
        let state: Value = serde_json::from_str(&out).expect("JSON");
        before_states.insert(version, state["state"].clone());
    }
    assert_ne!(
        before_states[&2], before_states[&4],
        "the versions differ, so the check can fail"
    );
    let (exit, _, err) = run_words(
        &fixture,
        "close ticket/T-1 --as archived --by ops --reason cold --yes",
        true,
    )
    .await;
    assert_eq!(exit, Exit::Ok, "{err}");

    let (exit, out, err) = run_words(&fixture, "events ticket/T-1", true).await;
    assert_eq!(exit, Exit::Ok, "{err}");
    assert!(
        out.starts_with("ticket/T-1 is archived (by ops at ")
            && out.contains(": cold); its events, read from the archive:"),
        "{out}"
    );
    assert!(out.contains("ticket/T-1 v4 pos "), "{out}");
    let (exit, after, _) = run_words(&fixture, "events ticket/T-1 --json", true).await;
    assert_eq!(exit, Exit::Ok);
    let (before, after): (Value, Value) = (
        serde_json::from_str(&before).expect("JSON"),
        serde_json::from_str(&after).expect("JSON"),
    );
    assert_eq!(after["archived"], true);
    assert_eq!(before["events"], after["events"], "the same events, ids and positions");
    let (exit, out, _) = run_words(&fixture, "events ticket/T-1 --from 3 --to 3 --json", true).await;
    assert_eq!(exit, Exit::Ok);
    let sliced: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(sliced["events"].as_array().map(Vec::len), Some(1), "{out}");
    let (exit, _, err) = run_words(&fixture, "events ticket/T-1 --from 5", true).await;
    assert_eq!(exit, Exit::NotFound, "{err}");

    // Its state, now and back in time, is folded from the archive: the same as before.
    for (asked, version) in [("", 4), (" --version 2", 2), (" --version 0", 0)] {
        let command = format!("state ticket/T-1{asked} --json");
        let (exit, out, err) = run_words(&fixture, &command, true).await;
        assert_eq!(exit, Exit::Ok, "{command}: {err}");
        let archived: Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(archived["version"], version, "{out}");
        assert_eq!(archived["closed"]["status"], "archived", "{out}");
        assert_eq!(archived["state"], before_states[&version], "{command}");
    }
    let (exit, out, err) = run_words(&fixture, "state ticket/T-1", true).await;
    assert_eq!(exit, Exit::Ok, "{err}");
    assert!(
        out.contains("(archived by ops at ") && out.contains(": cold; folded from the archive)"),
        "{out}"
    );
    let (exit, _, err) = run_words(&fixture, "state ticket/T-1 --version 5", true).await;
    assert_eq!(exit, Exit::NotFound, "{err}");
    assert!(err.contains("its last version is 4"), "{err}");
    let (exit, out, err) = run_words(&fixture, "diff ticket/T-1 2 4 --json", true).await;
    assert_eq!(exit, Exit::Ok, "{err}");
    let diff: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        (diff["from"].as_u64(), diff["to"].as_u64()),
        (Some(2), Some(4)),
        "{out}"
    );
    assert!(
        diff["changes"].as_array().is_some_and(|changes| !changes.is_empty()),
        "{out}"
    );

    // Without `closing`, the program only says where they are.
    let (exit, _, err) = run_words(&fixture, "events ticket/T-1", false).await;
    assert_eq!(exit, Exit::NotFound);
    assert!(err.contains("its events are in the archive"), "{err}");
    let (exit, _, err) = run_words(&fixture, "state ticket/T-1", false).await;
    assert_eq!(exit, Exit::NotFound);
    assert!(err.contains("its events are in the archive"), "{err}");
}

/// `close` of a stream that never had an event is refused as not found: most likely a mistyped
/// id, which closing would reserve for good. Nothing is written.
#[tokio::test]
async fn closing_a_stream_that_never_had_events_is_refused() {
    use es_core::EventStore;
    let fixture = fixture().await;
    let nope = StreamId::new("ticket", "T-NOPE");
    let (exit, _, err) = run_cli(
        fixture.cli().closing(),
        &[
            "close",
            "ticket/T-NOPE",
            "--as",
            "deleted",
            "--by",
            "dpo",
            "--reason",
            "erasure",
            "--yes",
        ],
    )
    .await;
    assert_eq!(exit, Exit::NotFound, "{err}");
    assert!(err.contains("ticket/T-NOPE has no events: nothing to close"), "{err}");
    assert_eq!(fixture.store.stream_closure(&nope).await.expect("closure"), None);
}
