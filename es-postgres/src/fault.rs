//! Which database failures are outages (worth retrying later) and which are not.

use es_core::StoreError;

/// Whether `error` says the connection or the server failed, not the statement: a refused or
/// cut connection, a server shutting down, restarting or out of connections, a serialization
/// failure or deadlock. Trying again later, on a new connection, may succeed.
pub(crate) fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(database) => {
            database.code().is_some_and(|code| is_transient_sqlstate(&code)) || session_ended(error)
        }
        _ => session_ended(error),
    }
}

/// Whether the error ended the connection's session (and so released its session locks): the
/// socket failed, or the server sent a `FATAL`/`PANIC` error (terminated, timed out, shut down).
/// A TLS error is not counted: a bad certificate or setting does not mend by retrying.
pub(crate) fn session_ended(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => database
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .is_some_and(|error| {
                matches!(
                    error.severity(),
                    sqlx::postgres::PgSeverity::Fatal | sqlx::postgres::PgSeverity::Panic
                )
            }),
        _ => false,
    }
}

/// A database error as a [`StoreError`]: [`StoreError::Unavailable`] for an outage, else
/// [`StoreError::Backend`].
pub(crate) fn store_error(error: sqlx::Error) -> StoreError {
    let transient = is_transient(&error);
    StoreError::from_backend(error, transient)
}

/// SQLSTATEs of outages: class 08 (connection exception), class 53 (insufficient resources),
/// 57P01-57P05 (the server is shutting down, crashed or starting, the database was dropped, an
/// idle session timed out), 25P03 (idle-in-transaction timeout), 57014 (statement cancelled),
/// 55P03 (lock timeout), 40001 and 40P01 (serialization failure, deadlock).
fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || matches!(code, "25P03" | "57014" | "55P03" | "40001" | "40P01")
}

/// Ends `transaction` now, for a path that will not commit it. Dropping it would leave its
/// `ROLLBACK` for the connection's next use, and until then the session sits idle in a
/// transaction with its locks (a stream's advisory lock, a schema a `DROP` waits for) and, after
/// a write, a transaction id that holds back every reader of the cluster's global log. A failed
/// rollback is only logged: the connection is then dropped, which ends the session.
pub(crate) async fn end_now(transaction: sqlx::Transaction<'_, sqlx::Postgres>, what: &str) {
    if let Err(error) = transaction.rollback().await {
        tracing::debug!(%error, what, "rolling back failed");
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn connection_failures_are_transient_and_statement_failures_are_not() {
        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_transient(&refused));
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(!is_transient(&sqlx::Error::Tls("bad certificate".into())));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        assert!(!is_transient(&sqlx::Error::PoolClosed));
        for code in ["08006", "57P01", "57P03", "57P05", "25P03", "55P03", "53300", "40001"] {
            assert!(is_transient_sqlstate(code), "{code}");
        }
        for code in ["42P01", "23505", "22P02", "42501"] {
            assert!(!is_transient_sqlstate(code), "{code}");
        }
    }

    #[test]
    fn a_wrapped_connection_failure_is_found_in_the_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("writing the read model failed")]
        struct Wrapper(#[source] sqlx::Error);

        let wrapped = Wrapper(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        // The runner walks the sources; the store recognises the sqlx error among them.
        let inner = wrapped.source().and_then(|error| error.downcast_ref::<sqlx::Error>());
        assert!(inner.is_some_and(is_transient));
        let plain = Wrapper(sqlx::Error::RowNotFound);
        assert!(!is_transient(&plain.0), "a missing row is not an outage");
    }
}
