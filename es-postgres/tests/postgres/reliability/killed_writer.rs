//! Writer processes killed with `SIGKILL` at random moments while they append multi-event
//! batches: no batch is ever visible in part, and the history holds after every kill.

use std::time::Duration;

use es_postgres::PostgresStore;
use es_test_support::bounded_by;
use es_test_support::killing::{write_until_killed, KillRun};
use sqlx::postgres::PgPoolOptions;

use super::{bound, knob};
use crate::support::{database, schema};

const URL: &str = "ES_RELIABILITY_CHILD_URL";
const SCHEMA: &str = "ES_RELIABILITY_CHILD_SCHEMA";

/// `ES_RELIABILITY_KILLS` (6) times: a child process of this test binary appends batches of 1
/// to 40 events with 3 writers, flat out, and is killed with `SIGKILL` 0-300 ms after its first
/// append. A watcher reads the streams all along; after every kill the journal of every child
/// so far is checked against the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliability_writers_killed_at_random_leave_no_partial_batch() {
    let kills = knob("ES_RELIABILITY_KILLS", 6);
    bounded_by(bound(Duration::from_secs(kills * 2)), killings(kills)).await;
}

async fn killings(kills: u64) {
    let schema = schema().await;
    let run = KillRun {
        child_test: "reliability::killed_writer::child_appends".into(),
        vars: vec![
            (URL.into(), database().url().into()),
            (SCHEMA.into(), schema.schema().into()),
        ],
        kills,
        writing: Duration::ZERO..Duration::from_millis(300),
        seed: knob("ES_RELIABILITY_SEED", 0x13),
    };
    let figures = run.run(schema.store()).await.unwrap_or_else(|error| panic!("{error}"));
    eprintln!("reliability (killed writers, PostgreSQL): {figures}");
    assert_eq!(figures.seen_in_part, 0, "a batch was visible in part");
    assert!(figures.reads > 0, "the watcher read nothing");
    figures.report.assert_clean();
}

/// The child of the test above: appends until it is killed. Does nothing without its
/// variables (when it runs with the suite).
#[test]
fn child_appends() {
    let (Ok(url), Ok(schema)) = (std::env::var(URL), std::env::var(SCHEMA)) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .expect("a pool");
        let store = PostgresStore::new(pool).with_schema(&schema).expect("the schema");
        write_until_killed(&store)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
    });
}
