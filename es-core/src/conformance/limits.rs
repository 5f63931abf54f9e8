//! Checks of the limits a store states ([`EventStore::limits`]): exactly at each limit an append
//! is stored, one byte or one event over it is refused with a typed error and writes nothing.

use uuid::Uuid;

use super::{fresh_stream, read};
use crate::metadata::Metadata;
use crate::store::{
    EventStore, ExpectedVersion, Limit, LimitExceeded, Limits, NewEvent, StoreError, StreamId, StreamSlice,
};

/// Payload, metadata, event name and stream id: each exactly at the store's limit is stored
/// whole, each one byte over is refused with [`StoreError::LimitExceeded`] naming the limit, the
/// value and the event, and nothing of the refused batch is written.
pub async fn event_limits_hold_at_the_boundary<S: EventStore>(store: &S) {
    let limits = store.limits();
    let max = limits.max_payload_bytes;
    assert!(max >= 2, "a store must take a payload of 2 bytes (`{{}}`)");
    at_and_over(store, &limits, Limit::PayloadBytes, Some(1), |over| {
        vec![sized(1, 1, 0), sized(1, max + usize::from(over), 0)]
    })
    .await;

    let max = limits.max_metadata_bytes;
    at_and_over(store, &limits, Limit::MetadataBytes, Some(0), |over| {
        let mut event = sized(1, 2, 0);
        event.metadata = metadata_of(max + usize::from(over));
        vec![event]
    })
    .await;

    let max = limits.max_event_name_bytes;
    at_and_over(store, &limits, Limit::EventNameBytes, Some(2), |over| {
        vec![sized(1, 2, 0), sized(1, 2, 0), sized(max + usize::from(over), 2, 0)]
    })
    .await;

    // The stream id: one event, to a stream whose id is exactly at the limit, then one byte over.
    let max = limits.max_stream_id_bytes;
    let unique = Uuid::now_v7().simple().to_string();
    let kind = "limits";
    assert!(
        max >= kind.len() + unique.len(),
        "a store must take a stream id of 38 bytes"
    );
    for over in [false, true] {
        let id = format!(
            "{unique}{}",
            "i".repeat(max + usize::from(over) - kind.len() - unique.len())
        );
        let stream = StreamId::new(kind, id);
        let result = store
            .append(&stream, ExpectedVersion::NoStream, vec![sized(1, 2, 0)])
            .await;
        judge(store, &stream, result, over, Limit::StreamIdBytes, None, max, 1).await;
    }
}

/// Events and bytes of one append: a batch exactly at the store's limit is stored whole, one
/// event or one byte over is refused with [`StoreError::LimitExceeded`] and writes nothing.
pub async fn batch_limits_hold_at_the_boundary<S: EventStore>(store: &S) {
    let limits = store.limits();
    // The smallest events: name "E", payload `0`, metadata `{}`: 4 bytes each.
    let max = limits.max_batch_events;
    assert!(
        max.saturating_mul(4) <= limits.max_batch_bytes,
        "the conformance suite needs {max} events of 4 bytes to fit max_batch_bytes"
    );
    at_and_over(store, &limits, Limit::BatchEvents, None, |over| {
        (0..max + usize::from(over)).map(|_| sized(1, 1, 0)).collect()
    })
    .await;

    // Events of name "B" (1 byte), metadata `{}` (2 bytes) and payloads up to the payload
    // limit, as few as will make exactly max_batch_bytes; one byte over lengthens a name.
    let max = limits.max_batch_bytes;
    let per_event = limits.max_payload_bytes.saturating_add(3);
    let count = max.div_ceil(per_event);
    assert!(
        count <= limits.max_batch_events && limits.max_event_name_bytes >= 2,
        "the conformance suite needs max_batch_bytes to fit max_batch_events events of the largest payload"
    );
    let (base, longer) = (max / count - 3, max % count);
    at_and_over(store, &limits, Limit::BatchBytes, None, |over| {
        (0..count)
            .map(|index| {
                let name = if over && index == 0 { 2 } else { 1 };
                sized(name, base + usize::from(index < longer), 0)
            })
            .collect()
    })
    .await;
}

/// An empty event name, a NUL character in an event name, aggregate type, aggregate id, payload
/// (`\u0000`) or metadata, or a schema version above `i32::MAX`, is an invalid batch: refused
/// with [`StoreError::InvalidBatch`], nothing written. Reading a stream whose id holds a NUL
/// finds nothing (no store can hold one), rather than failing.
pub async fn empty_names_and_nul_characters_are_refused<S: EventStore>(store: &S) {
    let unique = Uuid::now_v7().simple().to_string();
    type Spoil = fn(&mut NewEvent);
    let cases: [(StreamId, Spoil); 8] = [
        (StreamId::new("lim\0its", &unique), |_| {}),
        (StreamId::new("limits", format!("{unique}\0")), |_| {}),
        (fresh_stream("limits"), |event| event.event_name.clear()),
        (fresh_stream("limits"), |event| event.event_name.push('\0')),
        (fresh_stream("limits"), |event| event.schema_version = 1 << 31),
        (fresh_stream("limits"), |event| {
            event.payload = br#"{"note":"a\u0000b"}"#.to_vec()
        }),
        (fresh_stream("limits"), |event| {
            event.metadata = Metadata::new().with_actor("al\0ice");
        }),
        (fresh_stream("limits"), |event| {
            event.metadata = Metadata::new().with_extra("note", "a\0b");
        }),
    ];
    for (stream, spoil) in cases {
        let mut event = sized(1, 2, 0);
        spoil(&mut event);
        let batch = vec![sized(1, 2, 0), event];
        match store.append(&stream, ExpectedVersion::Any, batch).await {
            Err(StoreError::InvalidBatch { stream: refused, .. }) => assert_eq!(refused, stream),
            other => panic!("{stream:?}: expected InvalidBatch, got {other:?}"),
        }
        let version = store.stream_version(&stream).await;
        assert!(matches!(version, Ok(0)), "nothing written to {stream:?}: {version:?}");
        let events = read(store, &stream, StreamSlice::all()).await;
        assert!(events.is_empty(), "nothing to read in {stream:?}: {events:?}");
    }
}

/// Appends `batch(false)`, which must be stored, and `batch(true)`, which must be refused over
/// `limit` by exactly one (byte or event) at `event`, each to a fresh stream.
async fn at_and_over<S: EventStore>(
    store: &S,
    limits: &Limits,
    limit: Limit,
    event: Option<usize>,
    batch: impl Fn(bool) -> Vec<NewEvent>,
) {
    let Some(max) = limits.get(limit) else {
        panic!("{limit} is not one of the store's limits");
    };
    for over in [false, true] {
        let stream = fresh_stream("limits");
        let events = batch(over);
        let count = events.len();
        let result = store.append(&stream, ExpectedVersion::NoStream, events).await;
        judge(store, &stream, result, over, limit, event, max, count).await;
    }
}

/// Checks the outcome of an append of `count` events at (`over == false`) or one over `limit`.
#[allow(clippy::too_many_arguments)] // the whole case, spelt out
async fn judge<S: EventStore, T: std::fmt::Debug>(
    store: &S,
    stream: &StreamId,
    result: Result<T, StoreError>,
    over: bool,
    limit: Limit,
    event: Option<usize>,
    max: usize,
    count: usize,
) {
    if !over {
        if let Err(error) = result {
            panic!("a batch exactly at {limit} = {max} must be stored: {error}");
        }
        let stored = read(store, stream, StreamSlice::all()).await;
        assert_eq!(stored.len(), count, "the batch at {limit} is stored whole");
        return;
    }
    let expected = LimitExceeded {
        stream: stream.clone(),
        limit,
        event,
        actual: max + 1,
        max,
    };
    match result {
        Err(StoreError::LimitExceeded(exceeded)) => assert_eq!(exceeded, expected),
        other => panic!("expected {expected}, got {other:?}"),
    }
    assert_eq!(
        store.stream_version(stream).await.ok(),
        Some(0),
        "nothing written past {limit}"
    );
}

/// An event with a name of `name` bytes, a JSON payload of `payload` bytes (a number for 1
/// byte, else a string) and metadata of `metadata` bytes (`{}` for 0).
fn sized(name: usize, payload: usize, metadata: usize) -> NewEvent {
    let payload = match payload {
        0 | 1 => b"0".to_vec(),
        n => format!("\"{}\"", "p".repeat(n - 2)).into_bytes(),
    };
    NewEvent {
        event_id: Uuid::now_v7(),
        event_name: "E".repeat(name),
        schema_version: 1,
        payload,
        metadata: if metadata == 0 {
            Metadata::new()
        } else {
            metadata_of(metadata)
        },
    }
}

/// Metadata whose JSON is exactly `bytes` long: one `extra` entry, padded.
fn metadata_of(bytes: usize) -> Metadata {
    let empty = Metadata::new().with_extra("pad", "");
    let base = serde_json::to_vec(&empty).map_or(0, |text| text.len());
    assert!(
        bytes >= base,
        "the conformance suite needs metadata of {base} bytes to be accepted"
    );
    Metadata::new().with_extra("pad", "m".repeat(bytes - base))
}
