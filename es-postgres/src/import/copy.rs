//! One chunk of an import as `COPY` data in PostgreSQL's binary format: encoded while the source
//! is read, before the chunk's transaction begins, with its positions patched in once that
//! transaction's id is known.
//!
//! Binary rather than text: the server decodes uuids, integers and timestamps without parsing
//! them, and the client escapes nothing (see the crate docs for the measurements).

use chrono::{DateTime, Utc};
use es_core::Metadata;

use super::error::{EventAt, ImportError};
use crate::row::{MetadataRow, POSTGRES_EPOCH_MICROS};
use crate::sql::{MAX_EVENTS_PER_TRANSACTION, POSITION_SHIFT};

/// The binary format's header: signature, flags (none), header extension length (0).
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The binary format's trailer: a field count of -1.
const TRAILER: [u8; 2] = (-1_i16).to_be_bytes();

/// The columns a row holds, in the order [`Chunk::push`] writes them: the same as
/// `sql::copied_columns` (a test checks).
const COLUMNS: [&str; 14] = [
    "position",
    "event_id",
    "aggregate_type",
    "aggregate_id",
    "version",
    "event_name",
    "schema_version",
    "payload",
    "recorded_at",
    "command_id",
    "correlation_id",
    "causation_id",
    "actor",
    "metadata",
];

/// The version byte of a binary `jsonb` value, followed by the JSON text.
const JSONB_VERSION: u8 = 1;

/// An event that passed the client-side checks, ready to be written.
#[derive(Debug)]
pub(super) struct Checked {
    /// Which event it is.
    pub(super) at: EventAt,
    pub(super) event_name: String,
    pub(super) schema_version: i32,
    /// UTF-8, checked.
    pub(super) payload: Vec<u8>,
    pub(super) metadata: Metadata,
    pub(super) recorded_at: DateTime<Utc>,
}

/// One row of a chunk: which event, at which version, and where its position goes.
#[derive(Debug)]
pub(super) struct Row {
    pub(super) at: EventAt,
    pub(super) version: i64,
    /// The offset of the row's position in [`Chunk::data`].
    position_offset: usize,
}

/// The `COPY` data of one chunk and its rows.
#[derive(Debug)]
pub(super) struct Chunk {
    data: Vec<u8>,
    rows: Vec<Row>,
}

impl Chunk {
    /// An empty chunk, with room for `events` events.
    pub(super) fn with_capacity(events: usize) -> Self {
        let mut data = Vec::with_capacity(events.saturating_mul(256).min(64 << 20));
        data.extend_from_slice(HEADER);
        Self {
            data,
            rows: Vec::with_capacity(events),
        }
    }

    /// Empties the chunk, keeping its memory.
    pub(super) fn clear(&mut self) {
        self.data.clear();
        self.data.extend_from_slice(HEADER);
        self.rows.clear();
    }

    /// How many events the chunk holds.
    pub(super) fn len(&self) -> usize {
        self.rows.len()
    }

    /// The chunk's rows, in source order.
    pub(super) fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// Appends `event` at `version` of its stream. Its position is written as its number in
    /// the chunk until [`Chunk::seal`] adds the transaction id.
    pub(super) fn push(&mut self, event: Checked, version: u64) -> Result<(), ImportError> {
        let at = event.at;
        let invalid = |reason: String| ImportError::InvalidEvent {
            event: at.clone(),
            reason,
        };
        let version = i64::try_from(version).map_err(|_| invalid(format!("version {version} is beyond a bigint")))?;
        let recorded_at = event
            .recorded_at
            .timestamp_micros()
            .checked_sub(POSTGRES_EPOCH_MICROS)
            .ok_or_else(|| {
                invalid(format!(
                    "recorded_at {} is out of PostgreSQL's range",
                    event.recorded_at
                ))
            })?;
        let number = i64::try_from(self.rows.len() + 1).unwrap_or(i64::MAX);
        let metadata = MetadataRow::from(event.metadata);
        let start = self.data.len();
        let written = (|| {
            let data = &mut self.data;
            data.extend_from_slice(&(COLUMNS.len() as i16).to_be_bytes());
            data.extend_from_slice(&8_i32.to_be_bytes());
            let position_offset = data.len();
            data.extend_from_slice(&number.to_be_bytes());
            uuid(data, Some(at.event_id));
            text(data, Some(&at.stream.aggregate_type))?;
            text(data, Some(&at.stream.aggregate_id))?;
            data.extend_from_slice(&8_i32.to_be_bytes());
            data.extend_from_slice(&version.to_be_bytes());
            text(data, Some(&event.event_name))?;
            data.extend_from_slice(&4_i32.to_be_bytes());
            data.extend_from_slice(&event.schema_version.to_be_bytes());
            jsonb(data, &event.payload)?;
            data.extend_from_slice(&8_i32.to_be_bytes());
            data.extend_from_slice(&recorded_at.to_be_bytes());
            uuid(data, metadata.command_id);
            uuid(data, metadata.correlation_id);
            uuid(data, metadata.causation_id);
            text(data, metadata.actor.as_deref())?;
            extra_metadata(data, metadata.extra.as_ref())?;
            Ok::<_, String>(position_offset)
        })();
        match written {
            Ok(position_offset) => {
                self.rows.push(Row {
                    at,
                    version,
                    position_offset,
                });
                Ok(())
            }
            Err(reason) => {
                self.data.truncate(start);
                Err(invalid(reason))
            }
        }
    }

    /// The chunk's `COPY` data, with the positions of transaction `xid` (`xid << 20 | n`, `n`
    /// from 1 in source order) and the trailer.
    pub(super) fn seal(&mut self, xid: i64) -> Result<&[u8], String> {
        if self.rows.len() > MAX_EVENTS_PER_TRANSACTION {
            return Err(format!("{} events in one transaction", self.rows.len()));
        }
        let base = xid
            .checked_mul(1 << POSITION_SHIFT)
            .filter(|base| *base > 0)
            .ok_or_else(|| format!("transaction id {xid} does not make positions that fit a bigint"))?;
        for (n, row) in (1_i64..).zip(&self.rows) {
            let position = (base | n).to_be_bytes();
            self.data[row.position_offset..row.position_offset + position.len()].copy_from_slice(&position);
        }
        self.data.extend_from_slice(&TRAILER);
        Ok(&self.data)
    }
}

/// A field's length, or -1 for NULL.
fn length(data: &mut Vec<u8>, len: usize) -> Result<(), String> {
    let len = i32::try_from(len).map_err(|_| format!("a value of {len} bytes is over the 2 GiB a field can hold"))?;
    data.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

fn null(data: &mut Vec<u8>) {
    data.extend_from_slice(&(-1_i32).to_be_bytes());
}

fn uuid(data: &mut Vec<u8>, value: Option<uuid::Uuid>) {
    match value {
        Some(value) => {
            data.extend_from_slice(&16_i32.to_be_bytes());
            data.extend_from_slice(value.as_bytes());
        }
        None => null(data),
    }
}

/// A `text` value: its UTF-8 bytes (the server refuses a NUL).
fn text(data: &mut Vec<u8>, value: Option<&str>) -> Result<(), String> {
    match value {
        Some(value) => {
            length(data, value.len())?;
            data.extend_from_slice(value.as_bytes());
        }
        None => null(data),
    }
    Ok(())
}

/// A `jsonb` value from JSON text, which the server parses.
fn jsonb(data: &mut Vec<u8>, json: &[u8]) -> Result<(), String> {
    length(data, json.len() + 1)?;
    data.push(JSONB_VERSION);
    data.extend_from_slice(json);
    Ok(())
}

/// The `metadata` column: `{"extra": {...}}`, or NULL when there is no extra metadata (the
/// well-known fields have columns of their own), as appends store it.
fn extra_metadata(data: &mut Vec<u8>, extra: Option<&Metadata>) -> Result<(), String> {
    let Some(rest) = extra else {
        null(data);
        return Ok(());
    };
    let length_offset = data.len();
    data.extend_from_slice(&0_i32.to_be_bytes());
    data.push(JSONB_VERSION);
    serde_json::to_writer(&mut *data, rest).map_err(|error| format!("the metadata does not serialize: {error}"))?;
    let len = data.len() - length_offset - 4;
    let len = i32::try_from(len).map_err(|_| format!("metadata of {len} bytes is over the 2 GiB a field can hold"))?;
    data[length_offset..length_offset + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use es_core::StreamId;

    use crate::sql::copied_columns;

    use super::*;

    #[test]
    fn rows_hold_the_columns_of_appends_in_their_order() {
        assert_eq!(copied_columns(), COLUMNS);
    }

    fn checked(index: u64, payload: &str) -> Checked {
        Checked {
            at: EventAt::new(StreamId::new("t", "1"), index, uuid::Uuid::from_u128(index.into())),
            event_name: "E".into(),
            schema_version: 1,
            payload: payload.as_bytes().to_vec(),
            metadata: Metadata::new().with_actor("a"),
            recorded_at: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn positions_are_patched_with_the_transaction_id() {
        let mut chunk = Chunk::with_capacity(2);
        chunk.push(checked(0, "{}"), 1).expect("push");
        chunk.push(checked(1, "[1]"), 2).expect("push");
        let offsets: Vec<usize> = chunk.rows().iter().map(|row| row.position_offset).collect();
        let data = chunk.seal(7).expect("seal").to_vec();
        let position = |offset: usize| {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(&data[offset..offset + 8]);
            i64::from_be_bytes(bytes)
        };
        assert_eq!(position(offsets[0]), 7 << 20 | 1);
        assert_eq!(position(offsets[1]), 7 << 20 | 2);
        assert!(data.starts_with(HEADER));
        assert!(data.ends_with(&TRAILER));
        assert!(chunk.seal(1 << 43).is_err(), "positions past a bigint are refused");
    }
}
