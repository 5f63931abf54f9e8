//! Real processes on one file. The parent tests run this test binary again as their children
//! (`--exact <child test>`), telling a child what to do through environment variables; without
//! them the child tests return at once.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use es_core::{CheckpointStore, EventStore, ExpectedVersion, GlobalLog, StoreError, StreamId};
use es_sqlite::SqliteStore;

use crate::support::{event, fresh, read, TestDb};

const DB: &str = "ES_SQLITE_CHILD_DB";
const NAME: &str = "ES_SQLITE_CHILD_NAME";
const STREAM: &str = "ES_SQLITE_CHILD_STREAM";
/// A directory where the child says it is ready and the parent says go.
const SIGNALS: &str = "ES_SQLITE_CHILD_SIGNALS";
/// Appends each child attempts.
const ATTEMPTS: u64 = 100;

/// What a parent test shares with its children: a fresh file, and an empty directory beside it
/// for signals.
struct Parent {
    runtime: tokio::runtime::Runtime,
    db: TestDb,
    signals: PathBuf,
}

impl Parent {
    fn new() -> Self {
        let runtime = runtime();
        let db = runtime.block_on(fresh());
        let signals = db.path().with_file_name("signals");
        std::fs::create_dir(&signals).expect("signal directory");
        Self { runtime, db, signals }
    }

    /// Runs `test` of this binary in a child process, told the file, the signal directory and
    /// `vars`.
    fn child(&self, test: &str, vars: &[(&str, &str)]) -> Child {
        let exe = std::env::current_exe().expect("the test binary");
        let mut command = Command::new(exe);
        command
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(DB, self.db.path())
            .env(SIGNALS, &self.signals)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, value) in vars {
            command.env(name, value);
        }
        command.spawn().expect("spawn a child process")
    }
}

/// Waits (up to `limit`) for `path` to exist.
fn wait_for_file(path: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {limit:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits (up to 2 minutes) for `child` to exit; returns its standard output.
fn finish(mut child: Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().expect("child status") {
            let mut output = String::new();
            if let Some(mut stdout) = child.stdout.take() {
                std::io::Read::read_to_string(&mut stdout, &mut output).expect("child output");
            }
            assert!(status.success(), "the child failed ({status}):\n{output}");
            return output;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("a child process did not finish within 2 minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Two processes append batches of 2 events to one stream, each attempting versions 0, 2, 4, ...
/// in turn. Whoever loses a version gets a typed conflict and moves on, so the stream ends at
/// exactly `2 * ATTEMPTS` events and the two see `ATTEMPTS` conflicts between them, whatever
/// the interleaving. Nothing is lost, nothing is repeated, the file stays sound.
#[test]
fn two_processes_appending_to_one_stream_get_typed_conflicts_and_lose_nothing() {
    let parent = Parent::new();
    let stream = StreamId::new("shared", "s-1");
    let children: Vec<Child> = ["left", "right"]
        .iter()
        .map(|name| parent.child("multi_process::child_appends", &[(NAME, name), (STREAM, "s-1")]))
        .collect();
    for name in ["left", "right"] {
        wait_for_file(&parent.signals.join(format!("ready-{name}")), Duration::from_secs(60));
    }
    std::fs::write(parent.signals.join("go"), b"").expect("go");
    let (mut appended, mut conflicts) = (0, 0);
    for child in children {
        let output = finish(child);
        let result = output
            .lines()
            .find_map(|line| line.split_once("ES_SQLITE_CHILD_RESULT ").map(|(_, result)| result))
            .unwrap_or_else(|| panic!("no result in the child's output:\n{output}"));
        let numbers: Vec<u64> = result
            .split_whitespace()
            .map(|pair| {
                pair.split_once('=')
                    .and_then(|(_, n)| n.parse().ok())
                    .expect("a number")
            })
            .collect();
        appended += numbers[0];
        conflicts += numbers[1];
        eprintln!("child: {result}");
    }
    assert_eq!(
        (appended, conflicts),
        (ATTEMPTS, ATTEMPTS),
        "each version won once, lost once"
    );

    let db = &parent.db;
    parent.runtime.block_on(async {
        let events = read(&db.store, &stream).await;
        let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=2 * ATTEMPTS).collect::<Vec<_>>(), "every version once");
        let all = db.store.read_all(0, 10_000).await.expect("read_all");
        let positions: Vec<u64> = all.iter().map(|e| e.position).collect();
        assert_eq!(positions, (1..=2 * ATTEMPTS).collect::<Vec<_>>(), "dense positions");
        let check: String = db
            .store
            .read(|conn| conn.query_row("PRAGMA integrity_check", [], |row| row.get(0)))
            .await
            .expect("integrity check");
        assert_eq!(check, "ok");
    });
}

/// The child of the test above: appends when told to, prints what happened.
#[test]
fn child_appends() {
    let Ok(path) = std::env::var(DB) else { return };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let (name, stream, signals) = (
        var(NAME),
        StreamId::new("shared", var(STREAM)),
        PathBuf::from(var(SIGNALS)),
    );
    let runtime = runtime();
    let store = runtime.block_on(SqliteStore::open(&path)).expect("open");
    runtime.block_on(store.migrate()).expect("migrate (a no-op)");
    std::fs::write(signals.join(format!("ready-{name}")), b"").expect("ready");
    wait_for_file(&signals.join("go"), Duration::from_secs(60));
    let (mut appended, mut conflicts) = (0, 0);
    for k in 0..ATTEMPTS {
        let batch = (0..2)
            .map(|half| event("Appended", serde_json::json!({ "child": name, "k": k, "half": half })))
            .collect();
        match runtime.block_on(store.append(&stream, ExpectedVersion::Exact(2 * k), batch)) {
            Ok(_) => appended += 1,
            Err(StoreError::Conflict(conflict)) => {
                assert!(conflict.actual > 2 * k, "the stream is ahead of a lost version");
                conflicts += 1;
            }
            Err(other) => panic!("only conflicts may refuse an append, got {other}"),
        }
    }
    println!("ES_SQLITE_CHILD_RESULT appended={appended} conflicts={conflicts}");
}

/// A process that holds a projection's claim is killed: another process takes the projection
/// over at once, with a higher epoch, from the dead runner's last commit.
#[test]
fn a_claim_held_by_a_killed_process_is_taken_over() {
    let parent = Parent::new();
    let mut holder = parent.child("multi_process::child_holds_claim", &[]);
    wait_for_file(&parent.signals.join("claimed"), Duration::from_secs(60));

    let checkpoints = parent.db.store.checkpoints();
    parent.runtime.block_on(async {
        let waiting = tokio::time::timeout(Duration::from_millis(600), checkpoints.claim("held")).await;
        assert!(waiting.is_err(), "a claim resolved while another process held it");
    });
    holder.kill().expect("kill the holder");
    let status = holder.wait().expect("the holder's exit");
    assert!(!status.success(), "the holder was killed, not finished");
    parent.runtime.block_on(async {
        let taken = tokio::time::timeout(Duration::from_secs(10), checkpoints.claim("held")).await;
        let mut claim = taken
            .expect("taken over within 10 s of the holder's death")
            .expect("claim");
        assert_eq!(claim.epoch(), 2, "the new claim raised the dead runner's epoch");
        let (unit, position) = checkpoints.begin(&mut claim).await.expect("begin");
        assert_eq!(position, 7, "resumes from the dead runner's last commit");
        checkpoints.commit(unit, 8).await.expect("commit");
    });
}

/// The child of the test above: claims, commits position 7, leaves a unit open, and waits to be
/// killed (for a minute at most).
#[test]
fn child_holds_claim() {
    let Ok(path) = std::env::var(DB) else { return };
    let signals = PathBuf::from(std::env::var(SIGNALS).expect("signals"));
    let runtime = runtime();
    runtime.block_on(async {
        let store = SqliteStore::open(&path).await.expect("open");
        let checkpoints = store.checkpoints();
        let mut claim = checkpoints.claim("held").await.expect("claim");
        let (unit, _) = checkpoints.begin(&mut claim).await.expect("begin");
        checkpoints.commit(unit, 7).await.expect("commit");
        let (in_flight, _) = checkpoints.begin(&mut claim).await.expect("begin");
        // Only the lock matters to the parent; the open unit must die with the process too.
        drop(in_flight);
        std::fs::write(signals.join("claimed"), b"").expect("claimed");
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(claim);
    });
}
