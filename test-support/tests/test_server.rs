//! The restartable server: stopped, it refuses connections; started again, the same URL works
//! and the committed data is there.

use es_test_support::TestServer;
use sqlx::{Connection, PgConnection};

async fn connect(url: &str) -> Result<PgConnection, sqlx::Error> {
    PgConnection::connect(url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_refuses_connections_and_comes_back_on_the_same_url() {
    let server = TestServer::start().unwrap_or_else(|error| panic!("{error}"));
    let url = server.url().to_owned();
    assert!(url.ends_with(&format!(":{}/postgres", server.port())), "{url}");
    if let Ok(shared) = std::env::var("DATABASE_URL") {
        assert_ne!(shared, url, "a server of its own, even when DATABASE_URL is set");
    }

    let mut before = connect(&url).await.expect("connect to the started server");
    sqlx::raw_sql("CREATE TABLE survivor (id int); INSERT INTO survivor VALUES (1)")
        .execute(&mut before)
        .await
        .expect("write before the stop");

    server.stop().expect("stop");
    assert!(!server.is_running());
    assert!(
        sqlx::query("SELECT 1").execute(&mut before).await.is_err(),
        "an open connection is cut"
    );
    assert!(connect(&url).await.is_err(), "a stopped server refuses connections");
    server.stop().expect("stopping again does nothing");

    server.restart().expect("start again");
    assert!(server.is_running());
    assert_eq!(server.url(), url, "the same URL");
    let mut after = connect(&url).await.expect("connect after the restart");
    let survivors: i64 = sqlx::query_scalar("SELECT count(*) FROM survivor")
        .fetch_one(&mut after)
        .await
        .expect("the committed table survived the crash");
    assert_eq!(survivors, 1);
    after.close().await.expect("close");

    server
        .restart()
        .expect("a restart of a running server crashes and recovers it");
    let schema = server.schema().await.expect("a fresh schema on the server");
    assert!(schema.schema().starts_with("es_test_"));
}
