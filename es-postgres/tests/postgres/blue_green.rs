//! A blue/green rebuild on PostgreSQL: a copy of the read model is built in a table of its own
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
use es_postgres::PostgresStore;
use sqlx::{PgConnection, PgPool};

use crate::support::exclusive_schema;

/// Writes each event's mark into `table`.
struct Marks {
    table: &'static str,
}

#[async_trait]
impl Projection for Marks {
    const NAME: &'static str = "marks";
    type Event = MarkingEvent;
    type Context = PgConnection;

    async fn handle(&self, db: &mut PgConnection, event: &DecodedEvent<MarkingEvent>) -> Result<(), HandlerError> {
        let MarkingEvent::Marked(marked) = &event.event;
        sqlx::query(&format!("INSERT INTO {} (n) VALUES ($1)", self.table))
            .bind(i64::try_from(marked.n)?)
            .execute(db)
            .await?;
        Ok(())
    }

    async fn reset(&self, db: &mut PgConnection) -> Result<(), HandlerError> {
        sqlx::query(&format!("DELETE FROM {}", self.table)).execute(db).await?;
        Ok(())
    }
}

async fn mark(store: &PostgresStore, n: u64) -> u64 {
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

async fn marks(pool: &PgPool, schema: &str) -> Vec<i64> {
    sqlx::query_scalar(&format!("SELECT n FROM \"{schema}\".marks ORDER BY n"))
        .fetch_all(pool)
        .await
        .expect("reading the live table")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_a_complete_model_through_a_blue_green_rebuild() {
    const WAIT: Duration = Duration::from_secs(30);
    let db = exclusive_schema().await;
    let (store, pool, schema) = (db.store().clone(), db.pool().clone(), db.schema().to_owned());
    for table in ["marks", "marks_next"] {
        sqlx::query(&format!("CREATE TABLE \"{schema}\".{table} (n bigint NOT NULL)"))
            .execute(&pool)
            .await
            .expect("tables");
    }
    let mut head = 0;
    for n in 1..=200 {
        head = mark(&store, n).await;
    }
    let options = RunnerOptions {
        batch_size: 20,
        ..RunnerOptions::default()
    };
    let live = ProjectionRunner::new(Marks { table: "marks" }, store.clone(), db.checkpoints()).with_options(options);
    let live_progress = live.progress();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let wake = store.wake_up().await.expect("LISTEN");
    let live_task = tokio::spawn(async move { live.run(wake, async { stopped.await.unwrap_or_default() }).await });
    live_progress
        .wait_for(head, WAIT)
        .await
        .expect("the live model catches up");

    // A reader checks the live table all along: never emptied, never a mark twice.
    let (done, reads) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU32::new(0)));
    let reader = tokio::spawn({
        let (pool, schema, done, reads) = (pool.clone(), schema.clone(), Arc::clone(&done), Arc::clone(&reads));
        async move {
            while !done.load(Ordering::SeqCst) {
                let seen = marks(&pool, &schema).await;
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
    let next = ProjectionRunner::new(Marks { table: "marks_next" }, store.clone(), db.checkpoints())
        .with_name("marks-next")
        .with_options(options);
    let rebuilt = next
        .rebuild_beside(
            "marks",
            |_| {},
            |db| {
                Box::pin(async move {
                    // Unqualified: a unit's search_path starts with the store's schema.
                    sqlx::query("ALTER TABLE marks RENAME TO marks_old")
                        .execute(&mut *db)
                        .await?;
                    sqlx::query("ALTER TABLE marks_next RENAME TO marks")
                        .execute(&mut *db)
                        .await?;
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
        marks(&pool, &schema).await,
        (1..=300).collect::<Vec<i64>>(),
        "every event once, in the new table"
    );
    let old: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{schema}\".marks_old"))
        .fetch_one(&pool)
        .await
        .expect("the old table is kept aside");
    assert!(old >= 200);
    let _ = stop.send(());
    live_task.await.expect("join").expect("the live runner stops cleanly");
}
