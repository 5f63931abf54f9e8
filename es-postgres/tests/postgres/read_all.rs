//! `read_all` never skips: a reader tails the global order while writers append, some in
//! transactions held open while others commit later positions, some rolled back.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use es_core::{EventStore, ExpectedVersion, GlobalLog, RecordedEvent, StreamId};
use es_postgres::PostgresStore;
use tokio::sync::watch;
use uuid::Uuid;

use crate::support::{event, fresh_stream, plans, schema, store_on_one_connection, stream_with, Rng};

const WRITERS: u64 = 8;
const EVENTS_PER_WRITER: usize = 1_000;

struct Written {
    stream: StreamId,
    committed: Vec<Uuid>,
    rolled_back: Vec<Uuid>,
    /// Held-open appends that later positions overtook: other transactions committed events
    /// with higher positions while this one was still open.
    overtaken: u32,
}

async fn writer(store: PostgresStore, writer: u64) -> Written {
    let mut rng = Rng::new(1_000 + writer);
    let stream = fresh_stream("tail");
    let mut written = Written {
        stream: stream.clone(),
        committed: Vec::new(),
        rolled_back: Vec::new(),
        overtaken: 0,
    };
    let max_position_of = format!(
        "SELECT max(position) FROM \"{}\".events WHERE event_id = ANY($1)",
        store.schema()
    );
    let count_above = format!("SELECT count(*) FROM \"{}\".events WHERE position > $1", store.schema());
    let mut version = 0;
    while written.committed.len() < EVENTS_PER_WRITER {
        let len = rng.range(1..17);
        let batch: Vec<_> = (0..len)
            .map(|i| event("Tailed", serde_json::json!({ "writer": writer, "i": i })))
            .collect();
        let ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
        match rng.range(0..10) {
            0..=6 => {
                store
                    .append(&stream, ExpectedVersion::Exact(version), batch)
                    .await
                    .expect("append");
                version += len;
                written.committed.extend(ids);
            }
            7 | 8 => {
                // Begin, insert, stay open while the other writers commit later positions,
                // then commit: the late commit a naive `position > checkpoint` reader skips.
                let mut tx = store.pool().begin().await.expect("begin");
                store
                    .append_in_transaction(&mut tx, &stream, ExpectedVersion::Exact(version), batch)
                    .await
                    .expect("append in transaction");
                let mine: i64 = sqlx::query_scalar(&max_position_of)
                    .bind(&ids)
                    .fetch_one(&mut *tx)
                    .await
                    .expect("own positions");
                tokio::time::sleep(Duration::from_millis(rng.range(50..200))).await;
                let above: i64 = sqlx::query_scalar(&count_above)
                    .bind(mine)
                    .fetch_one(store.pool())
                    .await
                    .expect("count committed events above");
                written.overtaken += u32::from(above > 0);
                tx.commit().await.expect("commit");
                version += len;
                written.committed.extend(ids);
            }
            _ => {
                let mut tx = store.pool().begin().await.expect("begin");
                store
                    .append_in_transaction(&mut tx, &stream, ExpectedVersion::Exact(version), batch)
                    .await
                    .expect("append in transaction");
                tokio::time::sleep(Duration::from_millis(rng.range(5..50))).await;
                tx.rollback().await.expect("rollback");
                written.rolled_back.extend(ids);
            }
        }
    }
    written
}

/// Tails `read_all` from 0 until `target` says how many events to expect and that many came.
async fn tail(store: PostgresStore, mut target: watch::Receiver<Option<usize>>) -> Vec<RecordedEvent> {
    let mut seen: Vec<RecordedEvent> = Vec::new();
    let mut after = 0;
    let mut deadline = None;
    loop {
        let page = store.read_all(after, 250).await.expect("read_all");
        for event in page.iter() {
            assert!(
                event.position > after,
                "positions strictly increase: {} after {after}",
                event.position
            );
            after = event.position;
        }
        let empty = page.is_empty();
        seen.extend(page);
        if let Some(target) = *target.borrow_and_update() {
            if seen.len() >= target {
                return seen;
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(60));
            assert!(
                Instant::now() < deadline,
                "only {} of {target} events after 60 s",
                seen.len()
            );
        }
        if empty {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// What a reader that trusts `position > checkpoint` alone would see.
async fn naive_tail(store: PostgresStore, writing: Arc<AtomicBool>) -> HashSet<Uuid> {
    let sql = format!(
        "SELECT position, event_id FROM \"{}\".events WHERE position > $1 ORDER BY position LIMIT 250",
        store.schema()
    );
    let mut seen = HashSet::new();
    let mut after = 0i64;
    loop {
        let still_writing = writing.load(Ordering::SeqCst);
        let page: Vec<(i64, Uuid)> = sqlx::query_as(&sql)
            .bind(after)
            .fetch_all(store.pool())
            .await
            .expect("naive read");
        if let Some((position, _)) = page.last() {
            after = *position;
        }
        if page.is_empty() {
            if !still_writing {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        seen.extend(page.into_iter().map(|(_, id)| id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tailing_reader_gets_every_committed_event_once_in_order() {
    let schema = schema().await;
    let store = schema.store().clone();
    let (target_tx, target_rx) = watch::channel(None);
    let writing = Arc::new(AtomicBool::new(true));
    let reader = tokio::spawn(tail(store.clone(), target_rx));
    let naive = tokio::spawn(naive_tail(store.clone(), Arc::clone(&writing)));
    let writers: Vec<_> = (0..WRITERS).map(|w| tokio::spawn(writer(store.clone(), w))).collect();

    let mut committed = HashSet::new();
    let mut rolled_back = HashSet::new();
    let mut streams = Vec::new();
    let mut overtaken = 0;
    for writer in futures_util::future::join_all(writers).await {
        let written = writer.expect("writer task");
        committed.extend(written.committed);
        rolled_back.extend(written.rolled_back);
        overtaken += written.overtaken;
        streams.push(written.stream);
    }
    writing.store(false, Ordering::SeqCst);
    target_tx.send_replace(Some(committed.len()));
    let seen = reader.await.expect("reader task");
    let naive_seen = naive.await.expect("naive reader task");

    assert!(committed.len() >= 8_000, "{} events committed", committed.len());
    assert!(!rolled_back.is_empty(), "some appends rolled back");
    assert!(
        overtaken > 0,
        "no held-open append was overtaken: the late-commit case was not provoked"
    );

    let ids: Vec<Uuid> = seen.iter().map(|e| e.event_id).collect();
    let unique: HashSet<Uuid> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no event returned twice");
    assert!(unique.is_disjoint(&rolled_back), "no rolled-back event returned");
    assert_eq!(unique, committed, "every committed event returned");
    assert!(seen.windows(2).all(|w| w[0].position < w[1].position));
    let more = store
        .read_all(seen.last().map_or(0, |e| e.position), 10)
        .await
        .expect("read_all");
    assert!(more.is_empty(), "nothing beyond the committed events");

    // Within each stream, the global order follows the versions.
    let mut next_version: HashMap<&StreamId, u64> = streams.iter().map(|s| (s, 1)).collect();
    for event in &seen {
        let next = next_version.get_mut(&event.stream).expect("a writer's stream");
        assert_eq!(event.version, *next, "stream {} out of order in read_all", event.stream);
        *next += 1;
    }

    let naive_missed = committed.difference(&naive_seen).count();
    eprintln!(
        "read_all: {} committed, {} rolled back, {overtaken} held-open appends overtaken; \
         a naive position reader missed {naive_missed}",
        committed.len(),
        rolled_back.len()
    );
    assert!(naive_missed > 0, "the naive reader should have skipped late commits");
}

/// `tail` counts what `read_all` would still return, in one query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_counts_what_read_all_would_return() {
    let schema = schema().await;
    let empty = schema.tail(0).await.expect("tail");
    assert_eq!(
        (empty.events, empty.head_position, empty.head_recorded_at),
        (0, 0, None)
    );
    stream_with(&schema, "tail", 7).await;
    let all = crate::support::read_all_until(&**schema, 7).await;
    let last = all.last().expect("events");
    let tail = schema.tail(0).await.expect("tail");
    assert_eq!(
        (tail.events, tail.head_position, tail.head_recorded_at),
        (7, last.position, Some(last.recorded_at))
    );
    let tail = schema.tail(all[4].position).await.expect("tail");
    assert_eq!((tail.events, tail.head_position), (2, last.position));
    let tail = schema.tail(last.position).await.expect("tail");
    assert_eq!(
        (tail.events, tail.head_position, tail.head_recorded_at),
        (0, last.position, None)
    );
}

/// On 20,000 events, analysed, with one stream archived, a page of the global log (`read_all`,
/// and `read_filtered`, which `replay_all` and the projection runner use) merges two
/// position-ordered index scans, of the hot table and of the archive, in the plan of each call
/// (custom) and in the plan the statement falls back to (generic): never a sort of the whole
/// log before its first row, which is what the planner chose over a bare `UNION ALL`.
#[tokio::test]
async fn a_page_of_the_log_merges_two_ordered_scans() {
    use es_core::lifecycle::{StreamChange, StreamLifecycle};
    use es_core::LogFilter;

    let schema = schema().await;
    let s = schema.schema();
    crate::support::twenty_thousand_events(&schema).await;
    schema
        .archive(
            &StreamId::new("kind", "stream-7"),
            StreamChange::new("test", "an archive to merge"),
        )
        .await
        .expect("archived");
    crate::support::analyze(&schema, &["events", "archived_events"]).await;

    let (store, pool) = store_on_one_connection(s).await;
    assert_eq!(store.read_all(0, 100).await.expect("read_all").len(), 100);
    let filter = LogFilter::all().excluding_names(["Skipped"]);
    assert_eq!(
        store
            .read_filtered(0, 100, &filter)
            .await
            .expect("read_filtered")
            .events
            .len(),
        100
    );

    // The page statements: read_all's (two parameters) and read_filtered's (five).
    let plans = plans(&pool, &["archived_events", "LIMIT $2"], |parameters| match parameters {
        5 => "0, 100, '{}', '{Skipped}', '{}'".to_owned(),
        _ => "0, 100".to_owned(),
    })
    .await;
    let mut kinds: Vec<i32> = plans.iter().map(|(parameters, _)| *parameters).collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(
        kinds,
        [2, 5],
        "read_all's and read_filtered's statements, each in two modes"
    );
    for (parameters, plan) in plans {
        assert!(plan.contains("Merge Append"), "{parameters} parameters, {plan}");
        assert!(
            plan.contains("Index Scan using events_pkey on events"),
            "{parameters} parameters, {plan}"
        );
        assert!(!plan.contains("Seq Scan on events"), "{parameters} parameters, {plan}");
    }
}

/// What an open write transaction elsewhere holds back is counted (`unsettled`) and its holder
/// named (`held_back_by`), for `es doctor`, `es projections` and the runner's warning; both go
/// back to nothing once it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_held_back_by_an_open_transaction_are_counted_and_their_holder_named() {
    use sqlx::Connection;
    let schema = schema().await;
    let store = schema.store().clone();
    let before = store.tail(0).await.expect("tail").head_position;
    let mut other = sqlx::PgConnection::connect(crate::support::database().url())
        .await
        .expect("another session");
    sqlx::query("SET application_name = 'held-open-by-test'")
        .execute(&mut other)
        .await
        .expect("named");
    let mut open = other.begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *open)
        .await
        .expect("an xid");
    let stream = fresh_stream("held");
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![event("Held", serde_json::json!({}))],
        )
        .await
        .expect("appended");
    let held_back = store.unsettled(before).await.expect("counted");
    let by = store.held_back_by().await.expect("asked");
    open.rollback().await.expect("rolled back");
    assert!(
        held_back >= 1,
        "the append is held back behind the open transaction: {held_back}"
    );
    let by = by.expect("a holder is named");
    assert!(by.starts_with("session "), "{by}");
    // Another test's transaction may be older than ours; when ours is named, it is described.
    if by.contains("held-open-by-test") {
        assert!(by.contains("idle in transaction since"), "{by}");
        assert!(by.contains("pg_current_xact_id"), "{by}");
    }
    // Once it ended, the event joins the log.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.unsettled(before).await.expect("counted") > 0 {
        assert!(Instant::now() < deadline, "still held back after the transaction ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logged = store.read_all(before, 10_000).await.expect("read");
    assert!(
        logged.iter().any(|logged| logged.stream == stream),
        "the held-back event is in the log"
    );
}
