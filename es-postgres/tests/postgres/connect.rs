//! Connecting fails fast, with the address and the cause: a closed port at once, a server that
//! never answers after the connect timeout. Neither needs a database.

use std::time::Duration;

use es_core::{EventStore, StoreError};
use es_postgres::{PostgresError, PostgresOptions, PostgresStore};
use sqlx::postgres::PgPoolOptions;

use crate::support::{database, stream_with};

/// Bounds the tests' own time: a connect that hangs fails the test instead of stalling the run.
const TEST_BOUND: Duration = Duration::from_secs(30);

/// A port of 127.0.0.1 that nothing listens on: bound, then released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_closed_port_fails_at_once_naming_the_address() {
    let port = closed_port();
    let url = format!("postgres://app:secret@127.0.0.1:{port}/events");
    let result = tokio::time::timeout(TEST_BOUND, PostgresStore::connect(&url))
        .await
        .expect("connect returned within the test's bound");
    let error = result.expect_err("nothing listens on the port");
    match &error {
        PostgresError::ConnectFailed { address, .. } => assert_eq!(address, &format!("app@127.0.0.1:{port}/events")),
        other => panic!("expected ConnectFailed, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(message.to_lowercase().contains("refused"), "the cause: {message}");
    assert!(!message.contains("secret"), "never the password: {message}");
    assert!(
        StoreError::from(error).is_transient(),
        "a refused connection is an outage"
    );
}

/// A listener that never accepts: the TCP handshake completes in its backlog, and then the
/// server never says a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_times_out_after_the_connect_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = silent.local_addr().expect("its address").port();
    let options = PostgresOptions::new(&format!("postgres://app@127.0.0.1:{port}/events"))
        .expect("a valid URL")
        .with_connect_timeout(Duration::from_millis(300));
    let result = tokio::time::timeout(TEST_BOUND, PostgresStore::connect_with(options))
        .await
        .expect("connect returned within the test's bound");
    match result {
        Err(PostgresError::ConnectTimedOut { address, timeout }) => {
            assert_eq!(address, format!("app@127.0.0.1:{port}/events"));
            assert_eq!(timeout, Duration::from_millis(300));
        }
        other => panic!("expected ConnectTimedOut, got {other:?}"),
    }
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_options_gives_a_working_store() {
    let options = PostgresOptions::new(database().url())
        .expect("the test server's URL")
        .with_connect_timeout(Duration::from_secs(10))
        .with_pool_options(PgPoolOptions::new().max_connections(2));
    let store = PostgresStore::connect_with(options).await.expect("connect");
    assert_eq!(store.pool().options().get_max_connections(), 2);
    let schema = format!("es_connect_{}", uuid::Uuid::now_v7().simple());
    let store = store.with_schema(&schema).expect("a valid schema name");
    store.migrate().await.expect("migrate");
    let stream = stream_with(&store, "connect", 2).await;
    assert_eq!(store.stream_version(&stream).await.expect("version"), 2);
    sqlx::raw_sql(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(store.pool())
        .await
        .expect("drop the schema");
}
