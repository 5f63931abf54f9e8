//! The proxies. The cutting proxy relays untouched until armed, then loses the answer of the
//! statement that carries the marker, after the server committed it, and only that one. The
//! chaos proxy, calm, relays; switched at run time, it refuses new connections, drops them,
//! stalls them and loses the answers of marked, committed statements.

use std::time::{Duration, Instant};

use es_test_support::{bounded, Chaos, ChaosProxy, CuttingProxy, TestDatabase, TestSchema};
use sqlx::{Connection, PgConnection};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_armed_proxy_loses_the_answer_of_a_committed_statement() {
    bounded(lose_one_answer()).await;
}

async fn lose_one_answer() {
    let database = TestDatabase::get().unwrap_or_else(|error| panic!("{error}"));
    let (schema, insert, count) = marks_table(database).await;

    let proxy = CuttingProxy::in_front_of(database.url()).await.expect("a proxy");
    let mut conn = PgConnection::connect_with(&proxy.connect_options())
        .await
        .expect("connect through the proxy");
    sqlx::query(&insert)
        .bind("before")
        .execute(&mut conn)
        .await
        .expect("an unarmed proxy relays");

    let marker = format!("lost-answer-{}", uuid::Uuid::now_v7().simple());
    proxy.arm(marker.as_str());
    sqlx::query(&insert)
        .bind("unmarked")
        .execute(&mut conn)
        .await
        .expect("statements without the marker pass while armed");
    assert!(proxy.is_armed());
    assert_eq!(proxy.cuts(), 0);

    let lost = sqlx::query(&insert).bind(&marker).execute(&mut conn).await;
    assert!(
        matches!(lost, Err(sqlx::Error::Io(_))),
        "the marked statement's answer is lost: {lost:?}"
    );
    assert_eq!(proxy.cuts(), 1);
    assert!(!proxy.is_armed(), "a cut disarms the proxy");
    let stored: i64 = sqlx::query_scalar(&count)
        .bind(&marker)
        .fetch_one(schema.pool())
        .await
        .expect("count directly");
    assert_eq!(stored, 1, "the statement committed before its answer was lost");

    let mut again = PgConnection::connect_with(&proxy.connect_options())
        .await
        .expect("a new connection through the proxy");
    let stored: i64 = sqlx::query_scalar(&count)
        .bind(&marker)
        .fetch_one(&mut again)
        .await
        .expect("a disarmed proxy relays");
    assert_eq!(stored, 1);
    // Dropping the proxy closes the connections it relays: their tasks are aborted, at once
    // or at their next wake-up, so a statement already on its way may still pass.
    drop(proxy);
    while sqlx::query("SELECT 1").execute(&mut again).await.is_ok() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chaos_proxy_does_what_it_is_switched_to() {
    bounded(switch_faults()).await;
}

async fn switch_faults() {
    let database = TestDatabase::get().unwrap_or_else(|error| panic!("{error}"));
    let (schema, insert, count) = marks_table(database).await;
    let proxy = ChaosProxy::in_front_of(database.url(), 7).await.expect("a proxy");
    let options = proxy.connect_options();
    let connect = || PgConnection::connect_with(&options);

    // Calm: everything passes.
    let mut conn = connect().await.expect("a calm proxy relays");
    sqlx::query(&insert)
        .bind("calm")
        .execute(&mut conn)
        .await
        .expect("insert");
    assert_eq!(proxy.counts().connections, 1);

    // Refusing: new connections fail, the open one carries on; then it ends by itself.
    proxy.refuse_for(Duration::from_millis(300));
    assert!(proxy.is_refusing());
    assert!(connect().await.is_err(), "a refusing proxy closes new connections");
    sqlx::query("SELECT 1")
        .execute(&mut conn)
        .await
        .expect("open connections carry on");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(!proxy.is_refusing());
    let mut fresh = connect().await.expect("refusing ends");
    assert!(proxy.counts().refused >= 1);

    // Losing answers: a marked statement commits and its client hears nothing.
    proxy.set(Chaos::default().losing_answers(1.0, ["lost-mark"]));
    let lost = sqlx::query(&insert).bind("lost-mark").execute(&mut fresh).await;
    assert!(lost.is_err(), "the answer is lost: {lost:?}");
    let stored: i64 = sqlx::query_scalar(&count)
        .bind("lost-mark")
        .fetch_one(schema.pool())
        .await
        .expect("count directly");
    assert_eq!(stored, 1, "the statement committed before its answer was lost");
    assert_eq!(proxy.counts().answers_lost, 1);

    // Stalling: every chunk is held back, and still arrives.
    proxy.set(Chaos::default().stalling(1.0, Duration::from_millis(40)..Duration::from_millis(60)));
    let started = Instant::now();
    sqlx::query("SELECT 1")
        .execute(&mut conn)
        .await
        .expect("a stalled statement");
    assert!(started.elapsed() >= Duration::from_millis(80), "held back both ways");
    assert!(proxy.counts().stalled >= 2);

    // Dropping: the next chunk cuts the connection.
    proxy.set(Chaos::default().dropping(1.0));
    assert!(sqlx::query("SELECT 1").execute(&mut conn).await.is_err(), "dropped");
    assert!(proxy.counts().dropped >= 1);

    proxy.set(Chaos::default());
    assert!(proxy.chaos().is_calm());
    let mut calm = connect().await.expect("calm again");
    sqlx::query("SELECT 1").execute(&mut calm).await.expect("relayed");
    eprintln!("chaos proxy: {}", proxy.counts());
}

/// A fresh schema with a table of marks, and the statements that insert a mark and count one.
async fn marks_table(database: &TestDatabase) -> (TestSchema, String, String) {
    let schema = database.schema().await.expect("a fresh schema");
    let table = format!("\"{}\".marks", schema.schema());
    sqlx::query(&format!("CREATE TABLE {table} (mark text NOT NULL)"))
        .execute(schema.pool())
        .await
        .expect("create the table");
    let insert = format!("INSERT INTO {table} (mark) VALUES ($1)");
    let count = format!("SELECT count(*) FROM {table} WHERE mark = $1");
    (schema, insert, count)
}
