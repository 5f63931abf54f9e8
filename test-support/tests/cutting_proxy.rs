//! The cutting proxy: it relays untouched until armed, then loses the answer of the statement
//! that carries the marker, after the server committed it, and only that one.

use std::time::Duration;

use es_test_support::{bounded, CuttingProxy, TestDatabase};
use sqlx::{Connection, PgConnection};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_armed_proxy_loses_the_answer_of_a_committed_statement() {
    bounded(lose_one_answer()).await;
}

async fn lose_one_answer() {
    let database = TestDatabase::get().unwrap_or_else(|error| panic!("{error}"));
    let schema = database.schema().await.expect("a fresh schema");
    let table = format!("\"{}\".marks", schema.schema());
    sqlx::query(&format!("CREATE TABLE {table} (mark text NOT NULL)"))
        .execute(schema.pool())
        .await
        .expect("create the table");
    let insert = format!("INSERT INTO {table} (mark) VALUES ($1)");
    let count = format!("SELECT count(*) FROM {table} WHERE mark = $1");

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
