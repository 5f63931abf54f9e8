//! Real processes on one file. The parent tests run this test binary again as their children
//! (`--exact <child test>`), telling a child what to do through environment variables; without
//! them the child tests return at once.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use es_core::{CheckpointStore, ClaimStatus, EventStore, ExpectedVersion, GlobalLog, NewEvent, StoreError, StreamId};
use es_sqlite::SqliteStore;
use uuid::Uuid;

use crate::support::{assert_intact, count, event, fresh, fresh_stream, numbered, read, runtime, TestDb};

const DB: &str = "ES_SQLITE_CHILD_DB";
const NAME: &str = "ES_SQLITE_CHILD_NAME";
const STREAM: &str = "ES_SQLITE_CHILD_STREAM";
/// A directory where the child says it is ready and the parent says go.
const SIGNALS: &str = "ES_SQLITE_CHILD_SIGNALS";
/// The ids of the batch a child appends, comma-separated.
const EVENT_IDS: &str = "ES_SQLITE_CHILD_EVENT_IDS";
/// Appends each child attempts.
const ATTEMPTS: u64 = 100;
/// The exit code of a child that died right after its append returned, without reporting it.
const DIED_AFTER_APPEND: i32 = 86;

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

/// Waits (up to 2 minutes) for `child` to exit successfully; returns its standard output.
fn finish(child: Child) -> String {
    let (status, output) = exited(child);
    assert!(status.success(), "the child failed ({status}):\n{output}");
    output
}

/// Waits (up to 2 minutes) for `child` to exit, however it does; returns how, and its standard
/// output.
fn exited(mut child: Child) -> (ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().expect("child status") {
            let mut output = String::new();
            if let Some(mut stdout) = child.stdout.take() {
                std::io::Read::read_to_string(&mut stdout, &mut output).expect("child output");
            }
            return (status, output);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a child process did not finish within 2 minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
        assert_intact(&db.store).await;
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

/// A projection claimed by another process shows as held, to a store of this process that
/// holds no claim of its own, and as free once that process is killed: the status reads the
/// operating system's lock, which dies with its holder.
#[test]
fn a_claim_held_by_another_process_shows_as_held_until_it_is_killed() {
    let parent = Parent::new();
    let checkpoints = parent.db.store.checkpoints();
    let status = || {
        parent
            .runtime
            .block_on(checkpoints.claim_status("held"))
            .expect("claim status")
    };
    assert_eq!(status(), ClaimStatus::Free, "before the child claims");
    let mut holder = parent.child("multi_process::child_holds_claim", &[]);
    wait_for_file(&parent.signals.join("claimed"), Duration::from_secs(60));
    assert_eq!(status(), ClaimStatus::Held, "while the child holds the claim");
    assert_eq!(status(), ClaimStatus::Held, "asking does not take the claim away");
    holder.kill().expect("kill the holder");
    let killed = holder.wait().expect("the holder's exit");
    assert!(!killed.success(), "the holder was killed, not finished");
    // The kernel releases a dead process's locks as it closes its files, before `wait` can
    // return. Allow a moment anyway.
    let deadline = Instant::now() + Duration::from_secs(10);
    while status() == ClaimStatus::Held {
        assert!(Instant::now() < deadline, "still held 10 s after the holder was killed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The child of the tests above: claims, commits position 7, leaves a unit open, and waits to be
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

/// The batch of the lost-answer test, the same in parent and child: ids from the parent, names
/// and payloads fixed.
fn lost_answer_batch(ids: &[Uuid]) -> Vec<NewEvent> {
    ids.iter()
        .enumerate()
        .map(|(n, &event_id)| NewEvent {
            event_id,
            ..event("Lost", serde_json::json!({ "n": n }))
        })
        .collect()
}

/// The lost answer, for an embedded database: a process appends a batch, the commit is durable,
/// and the process dies before anyone sees the outcome. The parent, with no answer, retries the
/// same batch (the same event ids) with the same expectation: it gets the original outcome,
/// marked `already_stored`, with the versions and positions the child's append took, and no
/// second copy is written. A retry with the version it reloads gets the same. The file stays
/// sound.
#[test]
fn a_batch_whose_process_died_before_answering_is_stored_once_when_retried() {
    let parent = Parent::new();
    let store = &parent.db.store;
    let stream = fresh_stream("lost");
    parent.runtime.block_on(async {
        // Events of another stream first, so positions and versions differ.
        parent.db.stream_with("other", 2).await;
        store
            .append(&stream, ExpectedVersion::NoStream, numbered(1))
            .await
            .expect("the stream's first event");
    });
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let joined = ids.iter().map(Uuid::to_string).collect::<Vec<_>>().join(",");
    let child = parent.child(
        "multi_process::child_appends_then_dies",
        &[(STREAM, &stream.aggregate_id), (EVENT_IDS, &joined)],
    );
    let (status, output) = exited(child);
    assert_eq!(
        status.code(),
        Some(DIED_AFTER_APPEND),
        "the child must die right after its append returned ({status}):\n{output}"
    );

    parent.runtime.block_on(async {
        let batch = lost_answer_batch(&ids);
        let retried = store
            .append(&stream, ExpectedVersion::Exact(1), batch.clone())
            .await
            .expect("the retry with the same expectation");
        assert!(retried.already_stored, "the child's append committed: {retried:?}");
        assert_eq!((retried.previous_version, retried.new_version), (1, 4));
        let events = read(store, &stream).await;
        let stored: Vec<(Uuid, u64)> = events.iter().map(|e| (e.event_id, e.version)).collect();
        let expected: Vec<(Uuid, u64)> = ids.iter().copied().zip(2..).collect();
        assert_eq!(stored[1..], expected[..], "the batch, once, where the child put it");
        let positions: Vec<u64> = events[1..].iter().map(|e| e.position).collect();
        assert_eq!(retried.positions, positions, "the positions the child's append took");
        assert_eq!(positions, [4, 5, 6]);

        let reloaded = store.stream_version(&stream).await.expect("the version");
        assert_eq!(reloaded, 4);
        let again = store
            .append(&stream, ExpectedVersion::Exact(reloaded), batch)
            .await
            .expect("the retry with the reloaded version");
        assert_eq!(again, retried, "the same original outcome");

        for (id, position) in ids.iter().zip(&positions) {
            let found = store.read_event(*id).await.expect("read_event").expect("stored");
            assert_eq!((found.stream.clone(), found.position), (stream.clone(), *position));
        }
        assert_eq!(read(store, &stream).await.len(), 4, "retries wrote nothing");
        assert_eq!(
            count(store, "SELECT count(*) FROM events").await,
            6,
            "nothing anywhere else"
        );
        assert_intact(store).await;
    });
}

/// The child of the test above: appends the batch it is given, then dies at once, without a
/// word about the outcome and without closing the store. `exit` rather than `abort`: for the
/// file both are a crash (no destructor runs, the connection is never closed, the WAL stays as
/// the commit left it), and `exit` leaves no core dump behind.
#[test]
fn child_appends_then_dies() {
    let (Ok(path), Ok(ids)) = (std::env::var(DB), std::env::var(EVENT_IDS)) else {
        return;
    };
    let stream = StreamId::new("lost", std::env::var(STREAM).expect("the stream"));
    let ids: Vec<Uuid> = ids.split(',').map(|id| id.parse().expect("an event id")).collect();
    let runtime = runtime();
    let store = runtime.block_on(SqliteStore::open(&path)).expect("open");
    let appended = runtime.block_on(store.append(&stream, ExpectedVersion::Exact(1), lost_answer_batch(&ids)));
    if let Err(error) = appended {
        panic!("the child's append failed: {error}");
    }
    std::process::exit(DIED_AFTER_APPEND);
}
