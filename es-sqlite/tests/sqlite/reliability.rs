//! Reliability under faults (issue 13), on SQLite: writer processes killed with `SIGKILL` at
//! random moments while they append multi-event batches to one file. No batch is ever visible
//! in part, the history of every writer holds after every kill, and the file stays sound.
//!
//! `ES_RELIABILITY_KILLS` (default 6) sets how many writers are killed.

use std::time::Duration;

use es_sqlite::SqliteStore;
use es_test_support::bounded_by;
use es_test_support::killing::{write_until_killed, KillRun};

use crate::support::{assert_intact, fresh, runtime};

const DB: &str = "ES_RELIABILITY_CHILD_DB";

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// `ES_RELIABILITY_KILLS` (6) times: a child process of this test binary appends batches of 1
/// to 40 events with 3 writers, flat out, and is killed with `SIGKILL` 0-300 ms after its first
/// append. A watcher reads the streams all along; after every kill the journal of every child
/// so far is checked against the file.
#[test]
fn reliability_writers_killed_at_random_leave_no_partial_batch() {
    let kills = knob("ES_RELIABILITY_KILLS", 6);
    let bound = Duration::from_secs(60 + kills * 6);
    runtime().block_on(bounded_by(bound, async {
        let db = fresh().await;
        let run = KillRun {
            child_test: "reliability::child_appends".into(),
            vars: vec![(DB.into(), db.path().to_string_lossy().into_owned())],
            kills,
            writing: Duration::ZERO..Duration::from_millis(300),
            seed: knob("ES_RELIABILITY_SEED", 0x13),
        };
        let figures = run.run(&db.store).await.unwrap_or_else(|error| panic!("{error}"));
        eprintln!("reliability (killed writers, SQLite): {figures}");
        assert_eq!(figures.seen_in_part, 0, "a batch was visible in part");
        assert!(figures.reads > 0, "the watcher read nothing");
        figures.report.assert_clean();
        assert_intact(&db.store).await;
    }));
}

/// The child of the test above: appends until it is killed. Does nothing without its variable
/// (when it runs with the suite).
#[test]
fn child_appends() {
    let Ok(path) = std::env::var(DB) else { return };
    runtime().block_on(async {
        let store = SqliteStore::open(&path).await.expect("open the file");
        write_until_killed(&store)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
    });
}
