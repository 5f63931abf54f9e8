//! The one definition of an event row: the columns every read selects, decoded by their place
//! ([`col`]), and the
//! batch as the append statement binds it.

use es_core::{
    Limits, LoggedEvent, Metadata, NewEvent, RecordedEvent, ReplayedEvent, StoreError, StoreResult, StoredEventPlace,
    StreamId,
};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, Row};
use uuid::Uuid;

use crate::error::PostgresError;
use crate::fault::store_error;

mod binary;

pub(crate) use binary::{timestamptz_named, POSTGRES_EPOCH_MICROS};

/// The head of [`EVENT_COLUMNS`]: what a replay needs, and no more.
macro_rules! replay_columns {
    () => {
        "version, event_name, schema_version, payload::text AS payload"
    };
}

/// The metadata columns, decoded by [`stored_metadata`]: the well-known fields in columns
/// of their own, the rest as JSON text.
macro_rules! metadata_columns {
    () => {
        "command_id, correlation_id, causation_id, actor, metadata::text AS metadata"
    };
}

/// The columns [`EventStore::replay_stream`](es_core::EventStore::replay_stream) selects: the
/// head of [`EVENT_COLUMNS`], decoded by [`replayed_event`]. Loading an aggregate skips the ids,
/// the metadata and the timestamps.
pub(crate) const REPLAY_COLUMNS: &str = replay_columns!();

/// The columns every read of whole events selects, decoded by [`recorded_event`] (their places
/// are [`col`]). The
/// jsonb columns come as text, the form the store hands out.
pub(crate) const EVENT_COLUMNS: &str = concat!(
    replay_columns!(),
    ", position, event_id, aggregate_type, aggregate_id, recorded_at, ",
    metadata_columns!()
);

/// The raw columns of the page a filtered read selects from: the columns of [`EVENT_COLUMNS`]
/// as stored, jsonb and all.
pub(crate) const PAGE_COLUMNS: &str =
    "version, event_name, schema_version, payload, position, event_id, aggregate_type,
    aggregate_id, recorded_at, command_id, correlation_id, causation_id, actor, metadata";

/// The columns a filtered read selects from its page: [`EVENT_COLUMNS`] by name, but the payload
/// and the metadata only for the rows the filter wants (NULL for the others, whose jsonb is
/// never turned into text), then `wanted`. A wanted row is decoded by [`recorded_event`]; of the
/// others only `position` is read.
pub(crate) const FILTERED_COLUMNS: &str = "version, event_name, schema_version,
    CASE WHEN wanted THEN payload::text END AS payload,
    position, event_id, aggregate_type, aggregate_id, recorded_at,
    command_id, correlation_id, causation_id, actor,
    CASE WHEN wanted THEN metadata::text END AS metadata,
    wanted";

/// Where each column of [`EVENT_COLUMNS`] (and of [`FILTERED_COLUMNS`], which adds
/// [`col::WANTED`]) is in a row: the hot decoders read columns by index, since a lookup by name
/// costs a hash per column per row. A unit test checks these against the lists.
pub(crate) mod col {
    pub(crate) const VERSION: usize = 0;
    pub(crate) const EVENT_NAME: usize = 1;
    pub(crate) const SCHEMA_VERSION: usize = 2;
    pub(crate) const PAYLOAD: usize = 3;
    pub(crate) const POSITION: usize = 4;
    pub(crate) const EVENT_ID: usize = 5;
    pub(crate) const AGGREGATE_TYPE: usize = 6;
    pub(crate) const AGGREGATE_ID: usize = 7;
    pub(crate) const RECORDED_AT: usize = 8;
    pub(crate) const COMMAND_ID: usize = 9;
    pub(crate) const CORRELATION_ID: usize = 10;
    pub(crate) const CAUSATION_ID: usize = 11;
    pub(crate) const ACTOR: usize = 12;
    pub(crate) const METADATA: usize = 13;
    pub(crate) const WANTED: usize = 14;
}

/// The columns [`stored_event`] decodes: where an event is stored, which is all an append needs
/// to recognise a batch it stored before.
pub(crate) const STORED_EVENT_COLUMNS: &str = "event_id, aggregate_type, aggregate_id, version, position";

/// Decodes the [`REPLAY_COLUMNS`] of an event row of `stream`, borrowing the name and the payload
/// from the row.
pub(crate) fn replayed_event<'r>(row: &'r PgRow, stream: &StreamId) -> StoreResult<ReplayedEvent<'r>> {
    replayed_fields(row, || stream.clone())
}

/// [`replayed_event`], naming the stream in an error with `stream()`: only a failure pays
/// for the copy.
fn replayed_fields<'r>(row: &'r PgRow, stream: impl Fn() -> StreamId) -> StoreResult<ReplayedEvent<'r>> {
    let version = binary::int8(row, col::VERSION)
        .map_err(|reason| PostgresError::Unexpected(format!("an event row's version: {reason}")))?;
    let Ok(version) = u64::try_from(version) else {
        return Err(negative_version(&stream(), version));
    };
    let corrupt = |reason: String| StoreError::Corrupt {
        stream: stream(),
        version,
        reason,
    };
    let event_name = binary::text(row, col::EVENT_NAME).map_err(|e| corrupt(format!("event name: {e}")))?;
    let schema_version = binary::int4(row, col::SCHEMA_VERSION).map_err(|e| corrupt(format!("schema version: {e}")))?;
    let schema_version =
        u32::try_from(schema_version).map_err(|_| corrupt(format!("negative schema version {schema_version}")))?;
    let payload = binary::text(row, col::PAYLOAD).map_err(|e| corrupt(format!("payload: {e}")))?;
    Ok(ReplayedEvent {
        version,
        event_name,
        schema_version,
        payload: payload.as_bytes(),
    })
}

/// Decodes the [`EVENT_COLUMNS`] of an event row into an event of its own: the row as
/// [`logged_event`] lends it, copied.
pub(crate) fn recorded_event(row: &PgRow) -> StoreResult<RecordedEvent> {
    let metadata = stored_metadata(row).map_err(|reason| corrupt_row(row, reason))?;
    let lent = logged_event(row, &metadata)?;
    let (stream, event_name, payload) = (lent.stream(), lent.event_name.to_owned(), lent.payload.to_vec());
    let (event_id, version, position, schema_version, recorded_at) = (
        lent.event_id,
        lent.version,
        lent.position,
        lent.schema_version,
        lent.recorded_at,
    );
    Ok(RecordedEvent {
        event_id,
        stream,
        version,
        position,
        event_name,
        schema_version,
        payload,
        metadata,
        recorded_at,
    })
}

/// A row whose metadata does not decode, named by its stream and version as far as they read.
pub(crate) fn corrupt_row(row: &PgRow, reason: String) -> StoreError {
    let text = |column: usize| row.try_get::<String, _>(column).unwrap_or_default();
    StoreError::Corrupt {
        stream: StreamId::new(text(col::AGGREGATE_TYPE), text(col::AGGREGATE_ID)),
        version: row
            .try_get::<i64, _>(col::VERSION)
            .ok()
            .and_then(|version| u64::try_from(version).ok())
            .unwrap_or(0),
        reason,
    }
}

/// Decodes the [`EVENT_COLUMNS`] of an event row into a [`LoggedEvent`] that borrows the
/// row's strings and payload, and `metadata`, decoded before by [`stored_metadata`].
pub(crate) fn logged_event<'r>(row: &'r PgRow, metadata: &'r Metadata) -> StoreResult<LoggedEvent<'r>> {
    let stream_column = |index| {
        binary::text(row, index).map_err(|reason| PostgresError::Unexpected(format!("an event row's stream: {reason}")))
    };
    let aggregate_type = stream_column(col::AGGREGATE_TYPE)?;
    let aggregate_id = stream_column(col::AGGREGATE_ID)?;
    let stream = || StreamId::new(aggregate_type, aggregate_id);
    let replayed = replayed_fields(row, stream)?;
    let corrupt = |reason: String| StoreError::Corrupt {
        stream: stream(),
        version: replayed.version,
        reason,
    };
    let position = binary::int8(row, col::POSITION).map_err(|e| corrupt(format!("position: {e}")))?;
    let position = u64::try_from(position).map_err(|_| corrupt(format!("negative position {position}")))?;
    Ok(LoggedEvent {
        position,
        event_id: binary::uuid(row, col::EVENT_ID)
            .and_then(|id| id.ok_or_else(binary::null))
            .map_err(|e| corrupt(format!("event id: {e}")))?,
        aggregate_type,
        aggregate_id,
        version: replayed.version,
        event_name: replayed.event_name,
        schema_version: replayed.schema_version,
        payload: replayed.payload,
        metadata,
        recorded_at: binary::timestamptz(row, col::RECORDED_AT).map_err(|e| corrupt(format!("recorded_at: {e}")))?,
    })
}

/// Decodes the metadata columns of an event row: the JSON column (all the metadata in rows
/// written before migration 5, `extra` alone or NULL since), overlaid with the columns of the
/// well-known fields that are not NULL. The error is the reason the row is corrupt.
pub(crate) fn stored_metadata(row: &PgRow) -> Result<Metadata, String> {
    let json = binary::optional_text(row, col::METADATA).map_err(|e| format!("metadata: {e}"))?;
    let mut metadata = match json {
        Some(json) => serde_json::from_str(json).map_err(|e| format!("metadata does not decode: {e}"))?,
        None => Metadata::new(),
    };
    let uuid = |column: usize, name: &str| binary::uuid(row, column).map_err(|e| format!("{name}: {e}"));
    if let Some(id) = uuid(col::COMMAND_ID, "command_id")? {
        metadata.command_id = Some(id);
    }
    if let Some(id) = uuid(col::CORRELATION_ID, "correlation_id")? {
        metadata.correlation_id = Some(id);
    }
    if let Some(id) = uuid(col::CAUSATION_ID, "causation_id")? {
        metadata.causation_id = Some(id);
    }
    if let Some(actor) = binary::optional_text(row, col::ACTOR).map_err(|e| format!("actor: {e}"))? {
        metadata.actor = Some(actor.to_owned());
    }
    Ok(metadata)
}

/// Decodes the [`STORED_EVENT_COLUMNS`] of an event row.
pub(crate) fn stored_event(row: &PgRow) -> StoreResult<StoredEventPlace> {
    let stream = StreamId {
        aggregate_type: row.try_get("aggregate_type").map_err(store_error)?,
        aggregate_id: row.try_get("aggregate_id").map_err(store_error)?,
    };
    let version = version_column(row, &stream)?;
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
/// The `version` column of a row of `stream`, read by name: a negative one is corrupt.
pub(crate) fn version_column(row: &PgRow, stream: &StreamId) -> StoreResult<u64> {
    let version: i64 = row.try_get("version").map_err(store_error)?;
    u64::try_from(version).map_err(|_| negative_version(stream, version))
}

pub(crate) fn negative_version(stream: &StreamId, version: i64) -> StoreError {
    StoreError::Corrupt {
        stream: stream.clone(),
        version: 0,
        reason: format!("stored version {version} is negative"),
    }
}

/// A batch as the append statements take it: one array per column, bound by [`Batch::bind`]
/// (or, for a single event, its values by [`Batch::bind_one`]).
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) ids: Vec<Uuid>,
    names: Vec<String>,
    schema_versions: Vec<i32>,
    payloads: Vec<String>,
    metadata: MetadataColumns,
}

/// The metadata of a batch, one array per column: one entry when every event of the batch has
/// the same metadata (a command's events do), so it is sent and stored without repeating it
/// per event; otherwise one entry per event. The statements pick entry `n` of an array of
/// more than one entry for the `n`-th event, and entry 1 of an array of one.
#[derive(Debug, Default)]
struct MetadataColumns {
    command_ids: Vec<Option<Uuid>>,
    correlation_ids: Vec<Option<Uuid>>,
    causation_ids: Vec<Option<Uuid>>,
    actors: Vec<Option<String>>,
    /// `{"extra": {...}}`, or `None` when there is no extra metadata.
    extra: Vec<Option<String>>,
}

impl MetadataColumns {
    /// Adds the columns of `metadata`.
    fn push(&mut self, stream: &StreamId, event_id: Uuid, metadata: Metadata) -> StoreResult<()> {
        let row = MetadataRow::from(metadata);
        let extra = match &row.extra {
            None => None,
            Some(rest) => Some(serde_json::to_string(rest).map_err(|source| PostgresError::Metadata {
                stream: stream.clone(),
                event_id,
                source,
            })?),
        };
        self.command_ids.push(row.command_id);
        self.correlation_ids.push(row.correlation_id);
        self.causation_ids.push(row.causation_id);
        self.actors.push(row.actor);
        self.extra.push(extra);
        Ok(())
    }
}

/// An event's metadata as its row stores it (migration 5): the well-known fields in columns of
/// their own, and the rest, when there is any, as the `metadata` JSON column's `{"extra": ...}`.
/// What the append binds and what bulk import copies.
pub(crate) struct MetadataRow {
    pub(crate) command_id: Option<Uuid>,
    pub(crate) correlation_id: Option<Uuid>,
    pub(crate) causation_id: Option<Uuid>,
    pub(crate) actor: Option<String>,
    /// The `metadata` column's value, serialized as `{"extra": {...}}`; `None` for NULL.
    pub(crate) extra: Option<Metadata>,
}

impl From<Metadata> for MetadataRow {
    fn from(metadata: Metadata) -> Self {
        let Metadata {
            correlation_id,
            causation_id,
            command_id,
            actor,
            extra,
            ..
        } = metadata;
        let extra = (!extra.is_empty()).then(|| {
            let mut rest = Metadata::new();
            rest.extra = extra;
            rest
        });
        Self {
            command_id,
            correlation_id,
            causation_id,
            actor,
            extra,
        }
    }
}

impl Batch {
    /// Checks and converts `events` for `stream`: they must be within `limits` (which
    /// [`PostgresStore::MAX_LIMITS`](crate::PostgresStore::MAX_LIMITS) caps to what one
    /// transaction can number), their schema versions must fit an `integer`, and their payloads
    /// must be UTF-8 (the server checks the JSON).
    pub(crate) fn new(limits: &Limits, stream: &StreamId, events: Vec<NewEvent>) -> StoreResult<Self> {
        limits.check_append(stream, &events)?;
        let shared = events.windows(2).all(|pair| pair[0].metadata == pair[1].metadata);
        let mut batch = Self {
            ids: Vec::with_capacity(events.len()),
            names: Vec::with_capacity(events.len()),
            schema_versions: Vec::with_capacity(events.len()),
            payloads: Vec::with_capacity(events.len()),
            metadata: MetadataColumns::default(),
        };
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
            if !shared || batch.ids.is_empty() {
                batch.metadata.push(stream, event_id, metadata)?;
            }
            batch.ids.push(event_id);
            batch.names.push(event_name);
            batch.schema_versions.push(schema_version);
            batch.payloads.push(payload);
        }
        Ok(batch)
    }

    /// How many events the batch holds.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Binds the batch as the next nine parameters of `query`, in the order the batch
    /// statements take them: the `unnest` arrays (ids, names, schema versions, payloads), then
    /// the metadata arrays (command, correlation and causation ids, actors, the rest).
    pub(crate) fn bind<'q>(&'q self, query: Query<'q, Postgres, PgArguments>) -> Query<'q, Postgres, PgArguments> {
        let metadata = &self.metadata;
        query
            .bind(self.ids.as_slice())
            .bind(self.names.as_slice())
            .bind(self.schema_versions.as_slice())
            .bind(self.payloads.as_slice())
            .bind(metadata.command_ids.as_slice())
            .bind(metadata.correlation_ids.as_slice())
            .bind(metadata.causation_ids.as_slice())
            .bind(metadata.actors.as_slice())
            .bind(metadata.extra.as_slice())
    }

    /// Binds the first event as the next nine parameters of `query`, in the order of
    /// [`Batch::bind`] but as single values: what the one-event statements take.
    pub(crate) fn bind_one<'q>(&'q self, query: Query<'q, Postgres, PgArguments>) -> Query<'q, Postgres, PgArguments> {
        let metadata = &self.metadata;
        query
            .bind(self.ids.first().copied())
            .bind(self.names.first().map(String::as_str))
            .bind(self.schema_versions.first().copied())
            .bind(self.payloads.first().map(String::as_str))
            .bind(metadata.command_ids.first().copied().flatten())
            .bind(metadata.correlation_ids.first().copied().flatten())
            .bind(metadata.causation_ids.first().copied().flatten())
            .bind(metadata.actors.first().and_then(Option::as_deref))
            .bind(metadata.extra.first().and_then(Option::as_deref))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name each column of a list goes by: its alias, or the column itself.
    fn names(columns: &str) -> Vec<String> {
        columns
            .split(',')
            .map(|column| {
                let column = column.trim();
                let name = column.rsplit(" AS ").next().unwrap_or(column);
                name.split_whitespace().last().unwrap_or(name).to_owned()
            })
            .collect()
    }

    #[test]
    fn column_indexes_match_the_column_lists() {
        let expected = [
            (col::VERSION, "version"),
            (col::EVENT_NAME, "event_name"),
            (col::SCHEMA_VERSION, "schema_version"),
            (col::PAYLOAD, "payload"),
            (col::POSITION, "position"),
            (col::EVENT_ID, "event_id"),
            (col::AGGREGATE_TYPE, "aggregate_type"),
            (col::AGGREGATE_ID, "aggregate_id"),
            (col::RECORDED_AT, "recorded_at"),
            (col::COMMAND_ID, "command_id"),
            (col::CORRELATION_ID, "correlation_id"),
            (col::CAUSATION_ID, "causation_id"),
            (col::ACTOR, "actor"),
            (col::METADATA, "metadata"),
        ];
        let event = names(EVENT_COLUMNS);
        let filtered = names(FILTERED_COLUMNS);
        assert_eq!(event.len(), expected.len(), "{event:?}");
        for (index, name) in expected {
            assert_eq!(event[index], name, "EVENT_COLUMNS");
            assert_eq!(filtered[index], name, "FILTERED_COLUMNS");
        }
        assert_eq!(filtered[col::WANTED], "wanted");
        assert_eq!(names(REPLAY_COLUMNS), event[..4]);
    }
}
