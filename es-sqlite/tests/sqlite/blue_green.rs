//! A blue/green rebuild on SQLite: a copy of the read model is built in a table of its own
//! while the live table keeps serving and being updated, then the tables are renamed in the
//! unit that switches. Readers always see a complete model; every event ends up in the new
//! one exactly once.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use es_core::conformance::{event, fresh_stream, MarkingEvent};
use es_core::{
    async_trait, DecodedEvent, EventStore, ExpectedVersion, HandlerError, Projection, ProjectionRunner, RunnerOptions,
};
use es_sqlite::{SqliteContext, SqliteStore};

use crate::support::fresh;

/// Writes each event's mark into `table`.
struct Marks {
    table: &'static str,
}

#[async_trait]
impl Projection for Marks {
    const NAME: &'static str = "marks";
    type Event = MarkingEvent;
    type Context = SqliteContext;

    async fn handle(&self, db: &mut SqliteContext, event: &DecodedEvent<MarkingEvent>) -> Result<(), HandlerError> {
        let MarkingEvent::Marked(marked) = &event.event;
        db.execute(
            &format!("INSERT INTO {} (n) VALUES (?1)", self.table),
            [i64::try_from(marked.n)?],
        )?;
        Ok(())
    }

    async fn reset(&self, db: &mut SqliteContext) -> Result<(), HandlerError> {
        db.execute_batch(&format!("DELETE FROM {}", self.table))?;
        Ok(())
    }
}

async fn mark(store: &SqliteStore, n: u64) -> u64 {
    let appended = store
        .append(
            &fresh_stream("marking"),
            ExpectedVersion::NoStream,
            vec![event("marked", serde_json::json!({ "n": n }))],
        )
        .await
        .expect("append");
    appended.positions[0]
}

async fn marks(store: &SqliteStore) -> Vec<i64> {
    store
        .read(|db| {
            let mut rows = db.prepare("SELECT n FROM marks ORDER BY n")?;
            let marks = rows.query_map([], |row| row.get(0))?;
            marks.collect()
        })
        .await
        .expect("reading the live table")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_a_complete_model_through_a_blue_green_rebuild() {
    const WAIT: Duration = Duration::from_secs(30);
    let db = fresh().await;
    let store = db.store.clone();
    store
        .write(|db| {
            db.execute_batch("CREATE TABLE marks (n INTEGER NOT NULL); CREATE TABLE marks_next (n INTEGER NOT NULL);")
        })
        .await
        .expect("tables");
    let mut head = 0;
    for n in 1..=200 {
        head = mark(&store, n).await;
    }
    let options = RunnerOptions {
        batch_size: 20,
        ..RunnerOptions::default()
    };
    let live =
        ProjectionRunner::new(Marks { table: "marks" }, store.clone(), store.checkpoints()).with_options(options);
    let live_progress = live.progress();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let wake = store.wake_up();
    let live_task = tokio::spawn(async move { live.run(wake, async { stopped.await.unwrap_or_default() }).await });
    live_progress
        .wait_for(head, WAIT)
        .await
        .expect("the live model catches up");

    // A reader checks the live table all along: never emptied, never a mark twice.
    let (done, reads) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU32::new(0)));
    let reader = tokio::spawn({
        let (store, done, reads) = (store.clone(), Arc::clone(&done), Arc::clone(&reads));
        async move {
            while !done.load(Ordering::SeqCst) {
                let seen = marks(&store).await;
                assert!(seen.len() >= 200, "a reader saw a partial model: {} marks", seen.len());
                assert!(seen.windows(2).all(|pair| pair[0] < pair[1]), "a mark twice");
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        }
    });
    let writer = tokio::spawn({
        let store = store.clone();
        async move {
            let mut head = 0;
            for n in 201..=300 {
                head = mark(&store, n).await;
            }
            head
        }
    });
    let next = ProjectionRunner::new(Marks { table: "marks_next" }, store.clone(), store.checkpoints())
        .with_name("marks-next")
        .with_options(options);
    let rebuilt = next
        .rebuild_beside(
            "marks",
            |_| {},
            |db| {
                Box::pin(async move {
                    db.execute_batch("ALTER TABLE marks RENAME TO marks_old; ALTER TABLE marks_next RENAME TO marks;")?;
                    Ok(())
                })
            },
        )
        .await
        .expect("rebuilt beside the live model and switched");
    assert!(rebuilt.read >= 200, "{rebuilt:?}");

    let head = writer.await.expect("writer");
    live_progress
        .wait_for(head, WAIT)
        .await
        .expect("the live runner goes on in the new table");
    done.store(true, Ordering::SeqCst);
    reader.await.expect("every read saw a complete model");
    assert!(reads.load(Ordering::SeqCst) > 0);
    assert_eq!(
        marks(&store).await,
        (1..=300).collect::<Vec<i64>>(),
        "every event once, in the new table"
    );
    let old: i64 = store
        .read(|db| db.query_row("SELECT count(*) FROM marks_old", [], |row| row.get(0)))
        .await
        .expect("the old table is kept aside");
    assert!(old >= 200);
    let _ = stop.send(());
    live_task.await.expect("join").expect("the live runner stops cleanly");
}
