//! The statement of an append on the pool: the fast single statement, or, after a lost race,
//! the same in a transaction queued on the stream's lock.

use es_core::{AppendOutcome, ExpectedVersion, StoreResult, StreamId};
use sqlx::Row;

use crate::error::PostgresError;
use crate::row::Batch;
use crate::sql::{AppendBase, BatchShape, LOCK_STREAM};
use crate::PostgresStore;

/// What an append statement on the pool did.
pub(super) enum Inserted {
    /// Its condition did not hold: nothing was inserted.
    Refused,
    /// The whole batch was inserted, at consecutive positions and versions from these.
    Stored { first_position: i64, first_version: i64 },
}

/// Runs the pool statement that fits the batch's size and `expected` (see
/// [`AppendStatements`](crate::sql::AppendStatements)); when `queued`, in a transaction that
/// first takes the stream's lock ([`LOCK_STREAM`]).
pub(super) async fn insert(
    store: &PostgresStore,
    stream: &StreamId,
    expected: ExpectedVersion,
    batch: &Batch,
    queued: bool,
) -> Result<Inserted, sqlx::Error> {
    let shape = BatchShape::of(batch.len());
    let query = |base| {
        sqlx::query(store.sql.append.get(shape, base))
            .bind(stream.aggregate_type.as_str())
            .bind(stream.aggregate_id.as_str())
    };
    let query = match expected {
        ExpectedVersion::NoStream => query(AppendBase::At).bind(0_i64),
        // No stream reaches a version whose batch would number past a bigint: refused as a
        // conflict before the database computes an out-of-range version.
        ExpectedVersion::Exact(version) => match i64::try_from(version) {
            Ok(version) if version.checked_add(batch.len() as i64).is_some() => query(AppendBase::At).bind(version),
            _ => return Ok(Inserted::Refused),
        },
        ExpectedVersion::Any => query(AppendBase::AfterHead).bind(false),
        ExpectedVersion::StreamExists => query(AppendBase::AfterHead).bind(true),
    };
    let query = match shape {
        BatchShape::One => batch.bind_one(query),
        BatchShape::Many => batch.bind(query),
    };
    let row = if queued {
        let mut transaction = store.pool.begin().await?;
        let locked = sqlx::query(LOCK_STREAM)
            .bind(stream.aggregate_type.as_str())
            .bind(stream.aggregate_id.as_str())
            .execute(&mut *transaction)
            .await;
        let inserted = match locked {
            Ok(_) => query.fetch_optional(&mut *transaction).await,
            Err(error) => Err(error),
        };
        match inserted {
            Ok(row) => {
                transaction.commit().await?;
                row
            }
            Err(error) => {
                crate::fault::end_now(transaction, "a lost append").await;
                return Err(error);
            }
        }
    } else {
        query.fetch_optional(&store.pool).await?
    };
    let Some(row) = row else {
        return Ok(Inserted::Refused);
    };
    let inserted: i64 = row.try_get("inserted")?;
    let first_position: Option<i64> = row.try_get("first_position")?;
    let first_version: Option<i64> = row.try_get("first_version")?;
    Ok(match (inserted, first_position, first_version) {
        (1.., Some(first_position), Some(first_version)) => Inserted::Stored {
            first_position,
            first_version,
        },
        _ => Inserted::Refused,
    })
}

/// The outcome of a batch of `len` events stored from `first_position` and `first_version`.
pub(super) fn stored_outcome(
    stream: &StreamId,
    first_position: i64,
    first_version: i64,
    len: usize,
) -> StoreResult<AppendOutcome> {
    let unexpected = || PostgresError::Unexpected(format!("a negative position or version inserted into {stream}"));
    let first_position = u64::try_from(first_position).map_err(|_| unexpected())?;
    let previous_version = u64::try_from(first_version - 1).map_err(|_| unexpected())?;
    let positions = (first_position..).take(len).collect();
    Ok(AppendOutcome::new(previous_version, positions))
}
