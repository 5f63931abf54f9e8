//! The source side of an import: reading the source, skipping what earlier runs stored (and
//! checking it replays as it did), numbering versions per stream, checking each event.

use std::collections::HashMap;
use std::pin::Pin;

use es_core::{Limits, NewEvent, StoreError, StreamId};
use futures_core::Stream;
use futures_util::StreamExt;
use uuid::Uuid;

use super::copy::{Checked, Chunk};
use super::error::{EventAt, ImportError, SourceChange};
use super::write::Record;
use super::ImportedEvent;

/// A 64-bit FNV-1a digest of the streams and ids of events, in order: what a rerun checks its
/// source's skipped events against. Stable across builds and platforms (it is stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Digest(pub(super) u64);

impl Digest {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn bytes(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(Self::PRIME);
        }
    }

    /// Adds one event. A 0xff byte (never in UTF-8) ends each string.
    fn add(&mut self, stream: &StreamId, event_id: Uuid) {
        self.bytes(stream.aggregate_type.as_bytes());
        self.bytes(&[0xff]);
        self.bytes(stream.aggregate_id.as_bytes());
        self.bytes(&[0xff]);
        self.bytes(event_id.as_bytes());
    }
}

/// Where a run is in its source: the index of the next event, each stream's last version, and
/// the digest of the events so far.
pub(super) struct Cursor {
    /// The index of the next event.
    pub(super) index: u64,
    /// Each stream's last version.
    pub(super) versions: HashMap<StreamId, u64>,
    /// The digest of the events before `index`.
    pub(super) digest: Digest,
}

impl Cursor {
    pub(super) fn new() -> Self {
        Self {
            index: 0,
            versions: HashMap::new(),
            digest: Digest(Digest::OFFSET),
        }
    }

    /// Counts an event of `stream`: its version.
    fn advance(&mut self, stream: &StreamId, event_id: Uuid) -> u64 {
        self.index += 1;
        self.digest.add(stream, event_id);
        match self.versions.get_mut(stream) {
            Some(version) => {
                *version += 1;
                *version
            }
            None => {
                self.versions.insert(stream.clone(), 1);
                1
            }
        }
    }

    /// The source's next event.
    async fn next<S, E>(&self, source: &mut Pin<&mut S>) -> Result<Option<ImportedEvent>, ImportError>
    where
        S: Stream<Item = Result<ImportedEvent, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match source.next().await {
            Some(Ok(event)) => Ok(Some(event)),
            Some(Err(error)) => Err(ImportError::Source {
                index: self.index,
                source: error.into(),
            }),
            None => Ok(None),
        }
    }

    /// Reads past the events earlier runs stored, counting their versions, and checks that
    /// they are the events those runs stored, in the same order.
    pub(super) async fn skip<S, E>(
        &mut self,
        source: &mut Pin<&mut S>,
        name: &str,
        record: &Record,
    ) -> Result<(), ImportError>
    where
        S: Stream<Item = Result<ImportedEvent, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let changed = |change| ImportError::SourceChanged {
            name: name.to_owned(),
            events_done: record.events_done,
            change,
        };
        while self.index < record.events_done {
            let Some(event) = self.next(source).await? else {
                return Err(changed(SourceChange::Shorter { events: self.index }));
            };
            self.advance(&event.stream, event.event_id);
            if self.index == record.events_done {
                if let Some(imported) = record.last_event_id.filter(|id| *id != event.event_id) {
                    let found = event.event_id;
                    return Err(changed(SourceChange::LastEventMoved { imported, found }));
                }
            }
        }
        // A record at 0 events holds no digest yet (the column's default).
        if record.events_done > 0 && self.digest.0 != record.digest {
            return Err(changed(SourceChange::OrderDiffers));
        }
        Ok(())
    }

    /// Reads, checks and encodes the source's next events into `chunk`, up to `size`; whether
    /// the source ended.
    pub(super) async fn fill<S, E>(
        &mut self,
        source: &mut Pin<&mut S>,
        chunk: &mut Chunk,
        size: usize,
        limits: &Limits,
    ) -> Result<bool, ImportError>
    where
        S: Stream<Item = Result<ImportedEvent, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        while chunk.len() < size {
            let Some(event) = self.next(source).await? else {
                return Ok(true);
            };
            let checked = check(limits, event, self.index)?;
            let version = self.advance(&checked.at.stream, checked.at.event_id);
            chunk.push(checked, version)?;
        }
        Ok(false)
    }
}

/// Checks `event`, at `index` in the source, as an append checks each of its events: the
/// store's limits and rules for names, then a UTF-8 payload (the server parses the JSON).
fn check(limits: &Limits, event: ImportedEvent, index: u64) -> Result<Checked, ImportError> {
    let ImportedEvent {
        stream,
        event_id,
        event_name,
        schema_version,
        payload,
        metadata,
        recorded_at,
    } = event;
    let event = NewEvent {
        event_id,
        event_name,
        schema_version,
        payload,
        metadata,
    };
    let at = EventAt::new(stream, index, event_id);
    if let Err(error) = limits.check_append(&at.stream, std::slice::from_ref(&event)) {
        return Err(match error {
            StoreError::LimitExceeded(exceeded) => ImportError::LimitExceeded {
                event: at,
                limit: exceeded.limit,
                actual: exceeded.actual,
                max: exceeded.max,
            },
            // The reason speaks of a batch of one.
            StoreError::InvalidBatch { reason, .. } => ImportError::InvalidEvent {
                event: at,
                reason: reason.replace(" of event #1", ""),
            },
            other => ImportError::InvalidEvent {
                event: at,
                reason: other.to_string(),
            },
        });
    }
    let NewEvent {
        event_name,
        schema_version,
        payload,
        metadata,
        ..
    } = event;
    if std::str::from_utf8(&payload).is_err() {
        return Err(ImportError::PayloadNotUtf8 { event: at });
    }
    let Ok(schema_version) = i32::try_from(schema_version) else {
        let reason = format!("schema version {schema_version} is above {}", i32::MAX);
        return Err(ImportError::InvalidEvent { event: at, reason });
    };
    Ok(Checked {
        at,
        event_name,
        schema_version,
        payload,
        metadata,
        recorded_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_fnv_1a_and_depends_on_order() {
        let mut empty = Digest(Digest::OFFSET);
        empty.bytes(b"a");
        assert_eq!(empty.0, 0xaf63_dc4c_8601_ec8c, "FNV-1a 64 of `a`");
        let (a, b) = (StreamId::new("t", "a"), StreamId::new("t", "b"));
        let (x, y) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut one = Digest(Digest::OFFSET);
        one.add(&a, x);
        one.add(&b, y);
        let mut other = Digest(Digest::OFFSET);
        other.add(&b, y);
        other.add(&a, x);
        assert_ne!(one, other);
        let mut split = Digest(Digest::OFFSET);
        split.add(&StreamId::new("ta", ""), x);
        let mut joined = Digest(Digest::OFFSET);
        joined.add(&StreamId::new("t", "a"), x);
        assert_ne!(split, joined, "the stream's parts are delimited");
    }
}
