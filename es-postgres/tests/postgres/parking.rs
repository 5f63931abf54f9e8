//! Parked events: parked and unparked within a unit of work (committed with its checkpoint, or
//! not at all), listed, marked for a retry and dropped outside any unit; and a runner that parks
//! a failing event and handles it once asked to retry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use es_core::{
    async_trait, event, CheckpointStore, DecodedEvent, EventStore, ExpectedVersion, FailurePolicy, HandlerError,
    ParkedEvent, Projection, ProjectionRunner, RunnerOptions, StreamId,
};
use es_postgres::{PostgresCheckpoints, PostgresUnit};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::support::{fresh_stream, schema};

/// Now, at the microsecond: what the table keeps of an instant.
fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

fn parked(projection: &str, position: u64, error: &str, attempts: u32) -> ParkedEvent {
    ParkedEvent {
        projection: projection.to_owned(),
        position,
        event_id: Uuid::now_v7(),
        stream: StreamId::new("case", format!("case-{position}")),
        version: position + 1,
        event_name: "NoteAdded".to_owned(),
        error: error.to_owned(),
        attempts,
        parked_at: now(),
        retry_requested: false,
    }
}

/// Begins a unit, retrying transient failures as the runner does: after a unit was dropped
/// (its connection with it), the server may take a moment to release the claim's old lock.
async fn begin(checkpoints: &PostgresCheckpoints, claim: &mut es_postgres::PostgresClaim) -> PostgresUnit {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match checkpoints.begin(claim).await {
            Ok((unit, _)) => return unit,
            Err(error) if error.is_transient() && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("begin: {error}"),
        }
    }
}

async fn listed(checkpoints: &PostgresCheckpoints, projection: &str) -> Vec<ParkedEvent> {
    checkpoints.parked(projection).await.expect("list the parked events")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_events_commit_with_the_unit_and_nothing_else() {
    let schema = schema().await;
    let checkpoints = schema.checkpoints();
    let mut claim = checkpoints.claim("parking").await.expect("claim");

    let mut unit = begin(&checkpoints, &mut claim).await;
    checkpoints
        .park(&mut unit, &parked("parking", 5, "boom", 3))
        .await
        .expect("park");
    checkpoints.rollback(unit).await.expect("rollback");
    let mut unit = begin(&checkpoints, &mut claim).await;
    checkpoints
        .park(&mut unit, &parked("parking", 5, "boom", 3))
        .await
        .expect("park");
    drop(unit);
    assert!(
        listed(&checkpoints, "parking").await.is_empty(),
        "rolled back and dropped units park nothing"
    );

    let (nine, five) = (parked("parking", 9, "later", 1), parked("parking", 5, "boom", 3));
    let mut unit = begin(&checkpoints, &mut claim).await;
    checkpoints.park(&mut unit, &nine).await.expect("park");
    checkpoints.park(&mut unit, &five).await.expect("park");
    checkpoints.commit(unit, 10).await.expect("commit");
    assert_eq!(
        listed(&checkpoints, "parking").await,
        [five.clone(), nine.clone()],
        "in position order, whole"
    );
    assert_eq!(checkpoints.checkpoint("parking").await.expect("checkpoint"), 10);
    assert!(
        listed(&checkpoints, "other").await.is_empty(),
        "each projection has its own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parking_again_keeps_the_first_time_and_clears_the_retry_request() {
    let schema = schema().await;
    let checkpoints = schema.checkpoints();
    let mut claim = checkpoints.claim("reparking").await.expect("claim");
    let first = parked("reparking", 5, "boom", 3);
    let mut unit = begin(&checkpoints, &mut claim).await;
    checkpoints.park(&mut unit, &first).await.expect("park");
    checkpoints.commit(unit, 5).await.expect("commit");

    assert!(checkpoints
        .request_retry("reparking", 5)
        .await
        .expect("request a retry"));
    assert!(
        !checkpoints
            .request_retry("reparking", 6)
            .await
            .expect("request a retry"),
        "nothing parked at 6"
    );
    assert!(
        !checkpoints.request_retry("other", 5).await.expect("request a retry"),
        "nor in another projection"
    );
    assert!(listed(&checkpoints, "reparking").await[0].retry_requested);

    // The retry failed again: the runner parks it anew.
    let again = ParkedEvent {
        error: "boom again".to_owned(),
        attempts: 4,
        parked_at: now() + chrono::Duration::seconds(60),
        ..first.clone()
    };
    let mut unit = begin(&checkpoints, &mut claim).await;
    checkpoints.park(&mut unit, &again).await.expect("park again");
    checkpoints.commit(unit, 5).await.expect("commit");
    let expected = ParkedEvent {
        parked_at: first.parked_at,
        retry_requested: false,
        ..again
    };
    assert_eq!(listed(&checkpoints, "reparking").await, [expected]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparking_commits_with_the_unit_and_dropping_is_for_good() {
    let schema = schema().await;
    let checkpoints = schema.checkpoints();
    let mut claim = checkpoints.claim("unparking").await.expect("claim");
    let mut unit = begin(&checkpoints, &mut claim).await;
    for position in [3, 4] {
        let event = parked("unparking", position, "boom", 1);
        checkpoints.park(&mut unit, &event).await.expect("park");
    }
    checkpoints.commit(unit, 4).await.expect("commit");

    let mut unit = begin(&checkpoints, &mut claim).await;
    checkpoints.unpark(&mut unit, "unparking", 3).await.expect("unpark");
    checkpoints.rollback(unit).await.expect("rollback");
    assert_eq!(
        listed(&checkpoints, "unparking").await.len(),
        2,
        "a rolled-back unpark leaves it parked"
    );
    let mut unit = begin(&checkpoints, &mut claim).await;
    checkpoints.unpark(&mut unit, "unparking", 3).await.expect("unpark");
    checkpoints.commit(unit, 4).await.expect("commit");
    let positions: Vec<u64> = listed(&checkpoints, "unparking")
        .await
        .iter()
        .map(|p| p.position)
        .collect();
    assert_eq!(positions, [4]);

    assert!(checkpoints.drop_parked("unparking", 4).await.expect("drop"));
    assert!(
        !checkpoints.drop_parked("unparking", 4).await.expect("drop"),
        "already dropped"
    );
    assert!(listed(&checkpoints, "unparking").await.is_empty());
}

#[event(name = "CaseOpened")]
#[derive(Debug, Clone, PartialEq)]
struct CaseOpened {
    title: String,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
enum CaseEvent {
    Opened(CaseOpened),
}

/// Lists case titles; refuses titles starting with `!` while `strict` is set.
struct Titles {
    strict: Arc<AtomicBool>,
}

#[async_trait]
impl Projection for Titles {
    const NAME: &'static str = "titles";
    const AGGREGATE_TYPES: &'static [&'static str] = &["case"];
    type Event = CaseEvent;
    type Context = PgConnection;

    async fn handle(&self, db: &mut PgConnection, event: &DecodedEvent<CaseEvent>) -> Result<(), HandlerError> {
        let CaseEvent::Opened(opened) = &event.event;
        if self.strict.load(Ordering::SeqCst) && opened.title.starts_with('!') {
            return Err(format!("refusing {}", opened.title).into());
        }
        sqlx::query("INSERT INTO titles (title) VALUES ($1)")
            .bind(&opened.title)
            .execute(db)
            .await?;
        Ok(())
    }

    async fn reset(&self, db: &mut PgConnection) -> Result<(), HandlerError> {
        sqlx::query("DELETE FROM titles").execute(db).await?;
        Ok(())
    }
}

async fn open(store: &es_postgres::PostgresStore, title: &str) -> (StreamId, u64) {
    let stream = fresh_stream("case");
    let opened = es_core::conformance::event("CaseOpened", serde_json::json!({ "title": title }));
    let outcome = store
        .append(&stream, ExpectedVersion::NoStream, vec![opened])
        .await
        .expect("append");
    (stream, outcome.positions[0])
}

/// Catches up until the checkpoint reaches `position` (other tests' open transactions can hold
/// the newest events back for a while): the events handled and parked on the way.
async fn catch_up_to<P, E, C>(runner: &ProjectionRunner<P, E, C>, position: u64) -> (u64, u64)
where
    P: Projection,
    E: es_core::GlobalLog,
    C: CheckpointStore<Context = P::Context>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (mut handled, mut parked) = (0, 0);
    loop {
        let done = runner.catch_up().await.expect("catch up");
        (handled, parked) = (handled + done.handled, parked + done.parked);
        if done.position >= position {
            return (handled, parked);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stuck at {} before {position}",
            done.position
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_parks_a_failing_event_and_handles_it_on_request() {
    let schema = schema().await;
    sqlx::query(&format!(
        "CREATE TABLE \"{}\".titles (title text PRIMARY KEY)",
        schema.schema()
    ))
    .execute(schema.pool())
    .await
    .expect("titles table");
    let strict = Arc::new(AtomicBool::new(true));
    let options = RunnerOptions {
        failure: FailurePolicy::Park {
            attempts: 2,
            backoff: Duration::from_millis(1),
        },
        ..RunnerOptions::default()
    };
    let projection = Titles {
        strict: Arc::clone(&strict),
    };
    let runner = ProjectionRunner::new(projection, schema.store().clone(), schema.checkpoints()).with_options(options);
    open(&schema, "first").await;
    let (refused, _) = open(&schema, "!second").await;
    let (_, last) = open(&schema, "third").await;
    let titles = || async {
        let sql = format!("SELECT title FROM \"{}\".titles ORDER BY title", schema.schema());
        let titles: Vec<String> = sqlx::query_scalar(&sql).fetch_all(schema.pool()).await.expect("titles");
        titles
    };

    assert_eq!(catch_up_to(&runner, last).await, (2, 1), "handled, parked");
    assert_eq!(titles().await, ["first", "third"]);
    let parked = runner.parked().await.expect("parked");
    assert_eq!(parked.len(), 1);
    assert_eq!((&parked[0].stream, parked[0].attempts), (&refused, 2));
    assert!(parked[0].error.contains("refusing !second"), "{}", parked[0].error);

    strict.store(false, Ordering::SeqCst);
    assert!(runner.retry_parked(parked[0].position).await.expect("retry"));
    runner.catch_up().await.expect("catch up");
    assert_eq!(titles().await, ["!second", "first", "third"]);
    assert!(
        runner.parked().await.expect("parked").is_empty(),
        "handled, so no longer parked"
    );
}
