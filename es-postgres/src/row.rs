//! The one definition of an event row: the columns every read selects, decoded by name, and the
//! batch as the append statement binds it.

use chrono::{DateTime, Utc};
use es_core::{
    Limits, Metadata, NewEvent, RecordedEvent, ReplayedEvent, StoreError, StoreResult, StoredEventPlace, StreamId,
};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, Row};
use uuid::Uuid;

use crate::error::PostgresError;
use crate::fault::store_error;

/// The head of [`EVENT_COLUMNS`]: what a replay needs, and no more.
macro_rules! replay_columns {
    () => {
        "version, event_name, schema_version, payload::text AS payload"
    };
}

/// The columns [`EventStore::replay_stream`](es_core::EventStore::replay_stream) selects: the
/// head of [`EVENT_COLUMNS`], decoded by [`replayed_event`]. Loading an aggregate skips the ids,
/// the metadata and the timestamps.
pub(crate) const REPLAY_COLUMNS: &str = replay_columns!();

/// The columns every read of whole events selects, decoded by name by [`recorded_event`]. The
/// jsonb columns come as text, the form the store hands out.
pub(crate) const EVENT_COLUMNS: &str = concat!(
    replay_columns!(),
    ", position, event_id, aggregate_type, aggregate_id, metadata::text AS metadata, recorded_at"
);

/// The raw columns of the page a filtered read selects from: the columns of [`EVENT_COLUMNS`]
/// as stored, jsonb and all.
pub(crate) const PAGE_COLUMNS: &str =
    "version, event_name, schema_version, payload, position, event_id, aggregate_type, aggregate_id, metadata, recorded_at";

/// The columns a filtered read selects from its page: [`EVENT_COLUMNS`] by name, but the payload
/// and the metadata only for the rows the filter wants (NULL for the others, whose jsonb is
/// never turned into text), then `wanted`. A wanted row is decoded by [`recorded_event`]; of the
/// others only `position` is read.
pub(crate) const FILTERED_COLUMNS: &str = "version, event_name, schema_version,
    CASE WHEN wanted THEN payload::text END AS payload,
    position, event_id, aggregate_type, aggregate_id,
    CASE WHEN wanted THEN metadata::text END AS metadata,
    recorded_at, wanted";

/// The columns [`stored_event`] decodes: where an event is stored, which is all an append needs
/// to recognise a batch it stored before.
pub(crate) const STORED_EVENT_COLUMNS: &str = "event_id, aggregate_type, aggregate_id, version, position";

/// Decodes the [`REPLAY_COLUMNS`] of an event row of `stream`, borrowing the name and the payload
/// from the row.
pub(crate) fn replayed_event<'r>(row: &'r PgRow, stream: &StreamId) -> StoreResult<ReplayedEvent<'r>> {
    let version: i64 = row.try_get("version").map_err(store_error)?;
    let Ok(version) = u64::try_from(version) else {
        return Err(negative_version(stream, version));
    };
    let corrupt = |reason: String| StoreError::Corrupt {
        stream: stream.clone(),
        version,
        reason,
    };
    let event_name: &str = row
        .try_get("event_name")
        .map_err(|e| corrupt(format!("event name: {e}")))?;
    let schema_version: i32 = row
        .try_get("schema_version")
        .map_err(|e| corrupt(format!("schema version: {e}")))?;
    let schema_version =
        u32::try_from(schema_version).map_err(|_| corrupt(format!("negative schema version {schema_version}")))?;
    let payload: &str = row.try_get("payload").map_err(|e| corrupt(format!("payload: {e}")))?;
    Ok(ReplayedEvent {
        version,
        event_name,
        schema_version,
        payload: payload.as_bytes(),
    })
}

/// Decodes the [`EVENT_COLUMNS`] of an event row.
pub(crate) fn recorded_event(row: &PgRow) -> StoreResult<RecordedEvent> {
    let stream = StreamId {
        aggregate_type: row.try_get("aggregate_type").map_err(store_error)?,
        aggregate_id: row.try_get("aggregate_id").map_err(store_error)?,
    };
    let replayed = replayed_event(row, &stream)?;
    let corrupt = |reason: String| StoreError::Corrupt {
        stream: stream.clone(),
        version: replayed.version,
        reason,
    };
    let position: i64 = row.try_get("position").map_err(|e| corrupt(format!("position: {e}")))?;
    let position = u64::try_from(position).map_err(|_| corrupt(format!("negative position {position}")))?;
    let event_id: Uuid = row.try_get("event_id").map_err(|e| corrupt(format!("event id: {e}")))?;
    let metadata: &str = row.try_get("metadata").map_err(|e| corrupt(format!("metadata: {e}")))?;
    let metadata: Metadata =
        serde_json::from_str(metadata).map_err(|e| corrupt(format!("metadata does not decode: {e}")))?;
    let recorded_at: DateTime<Utc> = row
        .try_get("recorded_at")
        .map_err(|e| corrupt(format!("recorded_at: {e}")))?;
    Ok(RecordedEvent {
        event_id,
        version: replayed.version,
        position,
        event_name: replayed.event_name.to_owned(),
        schema_version: replayed.schema_version,
        payload: replayed.payload.to_vec(),
        metadata,
        recorded_at,
        stream,
    })
}

/// Decodes the [`STORED_EVENT_COLUMNS`] of an event row.
pub(crate) fn stored_event(row: &PgRow) -> StoreResult<StoredEventPlace> {
    let stream = StreamId {
        aggregate_type: row.try_get("aggregate_type").map_err(store_error)?,
        aggregate_id: row.try_get("aggregate_id").map_err(store_error)?,
    };
    let version: i64 = row.try_get("version").map_err(store_error)?;
    let Ok(version) = u64::try_from(version) else {
        return Err(negative_version(&stream, version));
    };
    let corrupt = |reason: String| StoreError::Corrupt {
        stream: stream.clone(),
        version,
        reason,
    };
    let position: i64 = row.try_get("position").map_err(|e| corrupt(format!("position: {e}")))?;
    let position = u64::try_from(position).map_err(|_| corrupt(format!("negative position {position}")))?;
    let event_id: Uuid = row.try_get("event_id").map_err(|e| corrupt(format!("event id: {e}")))?;
    Ok(StoredEventPlace {
        event_id,
        stream,
        version,
        position,
    })
}

/// A stored version that does not fit a `u64`: the row was not written by this store.
pub(crate) fn negative_version(stream: &StreamId, version: i64) -> StoreError {
    StoreError::Corrupt {
        stream: stream.clone(),
        version: 0,
        reason: format!("stored version {version} is negative"),
    }
}

/// A batch as the append statement takes it: one array per column, bound by [`Batch::bind`].
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) ids: Vec<Uuid>,
    names: Vec<String>,
    schema_versions: Vec<i32>,
    payloads: Vec<String>,
    metadata: Vec<String>,
}

impl Batch {
    /// Checks and converts `events` for `stream`: they must be within `limits` (which
    /// [`PostgresStore::MAX_LIMITS`](crate::PostgresStore::MAX_LIMITS) caps to what one
    /// transaction can number), their schema versions must fit an `integer`, and their payloads
    /// must be UTF-8 (the server checks the JSON).
    pub(crate) fn new(limits: &Limits, stream: &StreamId, events: Vec<NewEvent>) -> StoreResult<Self> {
        limits.check_append(stream, &events)?;
        let mut batch = Self {
            ids: Vec::with_capacity(events.len()),
            names: Vec::with_capacity(events.len()),
            schema_versions: Vec::with_capacity(events.len()),
            payloads: Vec::with_capacity(events.len()),
            metadata: Vec::with_capacity(events.len()),
        };
        // The events of one command share their metadata: serialize it once per run of equal
        // metadata, not once per event.
        let mut previous: Option<(Metadata, String)> = None;
        for event in events {
            let NewEvent {
                event_id,
                event_name,
                schema_version,
                payload,
                metadata,
            } = event;
            let schema_version = i32::try_from(schema_version).map_err(|_| PostgresError::OutOfRange {
                stream: stream.clone(),
                what: "schema version",
                value: u64::from(schema_version),
            })?;
            // The bytes are moved, not copied: validated as UTF-8 here, parsed as JSON by the
            // server's `::jsonb` cast.
            let payload = String::from_utf8(payload).map_err(|_| PostgresError::PayloadNotUtf8 {
                stream: stream.clone(),
                event_id,
            })?;
            let metadata = match &previous {
                Some((same, text)) if *same == metadata => text.clone(),
                _ => {
                    let text = serde_json::to_string(&metadata).map_err(|source| PostgresError::Metadata {
                        stream: stream.clone(),
                        event_id,
                        source,
                    })?;
                    previous = Some((metadata, text.clone()));
                    text
                }
            };
            batch.ids.push(event_id);
            batch.names.push(event_name);
            batch.schema_versions.push(schema_version);
            batch.payloads.push(payload);
            batch.metadata.push(metadata);
        }
        Ok(batch)
    }

    /// How many events the batch holds.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Binds the batch as the next five parameters of `query`, in the order the append
    /// statement's `unnest` takes them: ids, names, schema versions, payloads, metadata.
    pub(crate) fn bind<'q>(&'q self, query: Query<'q, Postgres, PgArguments>) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(self.ids.as_slice())
            .bind(self.names.as_slice())
            .bind(self.schema_versions.as_slice())
            .bind(self.payloads.as_slice())
            .bind(self.metadata.as_slice())
    }
}
