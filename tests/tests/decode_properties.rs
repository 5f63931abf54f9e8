//! Property tests of the decoders and upcasters `#[event]` generates: arbitrary stored names
//! (known, aliases, empty, unicode, huge), schema versions (0, each one, newer, `u32::MAX`) and
//! payloads (arbitrary JSON, bytes, text, well-formed old shapes) decode into an event or fail
//! with a typed error that says why; never a panic, not even from an upcast step that panics.
//! Through `EventSet::decode`, `decode_record` and the repository.
//!
//! Fixed seed, no persistence files (see `es-core/tests/support/arbitrary.rs`, shared by path).

#[path = "../../es-core/tests/support/arbitrary.rs"]
mod arbitrary;
#[path = "support/decoding.rs"]
mod decoding;

use es_core::{
    decode_record, encode_batch, DecodeError, EventSet, EventStore, EventType, ExpectedVersion, InMemoryStore,
    Metadata, NewEvent, RecordedEvent, Repository, RepositoryError, StreamId, UnknownEvents,
};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{json, Value};

use decoding::{Closed, Escalated, Inner, Moved, Noted, Paid, Prop, PropEvent, Tagged};

/// Every stored name the set knows, aliases included.
fn known_names() -> Vec<&'static str> {
    PropEvent::EVENTS
        .iter()
        .flat_map(|event| std::iter::once(event.name).chain(event.aliases.iter().copied()))
        .collect()
}

/// A stored name: one the set knows, a near miss, arbitrary text, empty or huge.
fn stored_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(known_names()).prop_map(str::to_owned),
        1 => proptest::sample::select(known_names()).prop_map(|name| name.to_lowercase()),
        1 => proptest::sample::select(known_names()).prop_map(|name| format!("{name} ")),
        2 => any::<String>(),
        1 => Just(String::new()),
        1 => (1usize..=100_000).prop_map(|n| "N".repeat(n)),
    ]
}

/// A schema version: each one the set uses, 0, newer ones, the largest, any.
fn stored_version() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 1..=4u32, 1 => Just(0u32), 1 => 5..=9u32, 1 => Just(u32::MAX), 1 => any::<u32>()]
}

/// A payload: shapes the events had at some version, arbitrary JSON, bytes or text.
fn stored_payload() -> impl Strategy<Value = Vec<u8>> {
    let shapes = prop_oneof![
        Just(json!({})),
        Just(Value::Null),
        any::<String>().prop_map(|reason| json!({ "reason": reason })),
        (any::<String>(), any::<u8>()).prop_map(|(reason, level)| json!({ "reason": reason, "level": level })),
        any::<i64>().prop_map(|amount| json!({ "amount": amount })),
        any::<i64>().prop_map(|units| json!({ "units": units })),
        (any::<i64>(), "[A-Z]{3}").prop_map(|(cents, currency)| json!({ "cents": cents, "currency": currency })),
        any::<u32>().prop_map(|room| json!({ "room": room })),
        (any::<String>(), any::<i64>()).prop_map(|(to, floor)| json!({ "to": to, "floor": floor })),
        (any::<String>(), -2..300i64).prop_map(|(to, floor)| json!({ "to": to, "floor": floor })),
        (any::<String>(), any::<i64>()).prop_map(|(text, count)| json!({ "text": text, "count": count, "tags": [] })),
    ];
    prop_oneof![
        4 => shapes.prop_map(|value| value.to_string().into_bytes()),
        3 => arbitrary::json().prop_map(|value| value.to_string().into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => any::<String>().prop_map(String::into_bytes),
    ]
}

/// The descriptor of the event stored under `name`, if any.
fn described(name: &str) -> Option<&'static es_core::EventDescriptor> {
    PropEvent::EVENTS
        .iter()
        .find(|event| event.name == name || event.aliases.contains(&name))
}

/// What decoding (`name`, `version`, any payload) may give, by the rules of the generated code.
fn judge(name: &str, version: u32, result: &Result<PropEvent, DecodeError>) -> Result<(), TestCaseError> {
    let Some(event) = described(name) else {
        prop_assert!(
            matches!(result, Err(DecodeError::UnknownEventType { event_name }) if event_name == name),
            "{result:?}"
        );
        return Ok(());
    };
    let current = event.version;
    match result {
        Ok(decoded) => {
            prop_assert_eq!(decoded.event_name(), event.name);
            prop_assert!((1..=current).contains(&version));
        }
        Err(DecodeError::SchemaVersionTooNew {
            event_name,
            stored,
            current: known,
        }) => {
            prop_assert_eq!((*event_name, *stored, *known), (event.name, version, current));
            prop_assert!(version > current);
        }
        Err(DecodeError::NoUpcastPath { event_name, stored, .. }) => {
            prop_assert_eq!((*event_name, *stored, version), (event.name, 0, 0));
        }
        Err(DecodeError::Payload {
            event_name,
            schema_version,
            ..
        }) => {
            prop_assert_eq!(*event_name, event.name);
            prop_assert!((version..=current).contains(schema_version) && version >= 1);
        }
        Err(DecodeError::Upcast { event_name, from, .. }) => {
            prop_assert_eq!(*event_name, event.name);
            prop_assert!((version..current).contains(from) && version >= 1);
        }
        Err(other) => prop_assert!(false, "an unexpected error: {other:?}"),
    }
    if let Err(error) = result {
        prop_assert!(!error.to_string().is_empty());
    }
    Ok(())
}

fn run<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    if let Err(failure) = TestRunner::new(arbitrary::config(cases)).run(&strategy, test) {
        panic!("{failure}");
    }
}

fn record(name: &str, schema_version: u32, payload: Vec<u8>, version: u64) -> RecordedEvent {
    RecordedEvent {
        event_id: uuid::Uuid::now_v7(),
        stream: StreamId::new("prop", "P-1"),
        version,
        position: version,
        event_name: name.to_owned(),
        schema_version,
        payload,
        metadata: Metadata::new(),
        recorded_at: chrono::Utc::now(),
    }
}

#[test]
fn decoding_anything_gives_an_event_or_says_why() {
    run(
        2048,
        (stored_name(), stored_version(), stored_payload(), 1..u64::MAX),
        |(name, version, payload, at)| {
            let result = PropEvent::decode(&name, version, &payload);
            judge(&name, version, &result)?;
            // The record codec wraps the same outcome with the record's place.
            let stored = record(&name, version, payload, at);
            match (decode_record::<PropEvent>(&stored), result) {
                (Ok(by_record), Ok(direct)) => prop_assert_eq!(by_record, direct),
                (Err(error), Err(direct)) => {
                    prop_assert_eq!((&error.stream, error.version), (&stored.stream, at));
                    prop_assert_eq!(&error.event_name, &name);
                    prop_assert_eq!(error.source.to_string(), direct.to_string());
                }
                (by_record, direct) => prop_assert!(false, "{by_record:?} but {direct:?}"),
            }
            Ok(())
        },
    );
}

/// Each older version of each upcast event, fed arbitrary JSON, upgrades or fails typed, even
/// through the sloppy steps (their panics come back as `DecodeError::Upcast`).
#[test]
fn upcast_chains_take_arbitrary_json() {
    let older = (1..=3u32).prop_flat_map(|from| (Just(from), arbitrary::json()));
    run(1024, older, |(from, value)| {
        let payload = value.to_string().into_bytes();
        for (name, current, result) in [
            (
                "Escalated",
                3,
                Escalated::decode_payload(from, &payload).map(PropEvent::from),
            ),
            ("Paid", 4, Paid::decode_payload(from, &payload).map(PropEvent::from)),
            ("Moved", 3, Moved::decode_payload(from, &payload).map(PropEvent::from)),
        ] {
            if from < current {
                judge(name, from, &result)?;
            }
        }
        Ok(())
    });
}

/// Well-formed old payloads upgrade to what the steps say; a step that panics is reported,
/// with its message, as a failed step.
#[test]
fn old_payloads_upgrade_and_panicking_steps_fail_typed() {
    let v1 = br#"{"note":"x"}"#;
    let upgraded = Escalated::decode_payload(1, v1).ok();
    assert_eq!(
        upgraded,
        Some(Escalated {
            reason: "not recorded".into(),
            level: 1
        })
    );
    assert_eq!(
        Paid::decode_payload(1, br#"{"amount":3}"#).ok(),
        Some(Paid {
            cents: 300,
            currency: "EUR".into()
        })
    );
    for (from, payload, panic) in [
        (2, &b"[1]"[..], "cannot access key"),
        (3, br#"{"units":9223372036854775807}"#, "overflow"),
    ] {
        match Paid::decode_payload(from, payload) {
            Err(DecodeError::Upcast {
                event_name,
                from: failed,
                message,
            }) => {
                assert_eq!((event_name, failed), ("Paid", from));
                assert!(message.contains("panicked") && message.contains(panic), "{message}");
            }
            other => panic!("a panicking step must fail typed, got {other:?}"),
        }
    }
    match Moved::decode_payload(2, br#"{"to":"attic","floor":300}"#) {
        Err(DecodeError::Upcast { from: 2, message, .. }) => {
            assert!(message.contains("a floor fits a u8"), "{message}")
        }
        other => panic!("a panicking typed step must fail typed, got {other:?}"),
    }
    assert!(matches!(
        Moved::decode_payload(1, br#"{"room":0}"#),
        Err(DecodeError::Upcast { from: 1, .. })
    ));
    assert_eq!(
        Moved::decode_payload(1, br#"{"room":214}"#).ok(),
        Some(Moved {
            to: "room 214".into(),
            floor: 2
        })
    );
}

/// A value of the event set, of every kind.
fn prop_event() -> impl Strategy<Value = PropEvent> {
    let inner = proptest::option::of((any::<u8>(), any::<bool>()).prop_map(|(level, flag)| Inner { level, flag }));
    prop_oneof![
        (
            any::<String>(),
            any::<i64>(),
            proptest::collection::vec(any::<String>(), 0..4),
            inner
        )
            .prop_map(|(text, count, tags, inner)| Noted {
                text,
                count,
                tags,
                inner
            }
            .into()),
        Just(Closed.into()),
        any::<String>().prop_map(|tag| Tagged(tag).into()),
        (any::<String>(), any::<u8>()).prop_map(|(reason, level)| Escalated { reason, level }.into()),
        (any::<i64>(), any::<String>()).prop_map(|(cents, currency)| Paid { cents, currency }.into()),
        (any::<String>(), any::<u8>()).prop_map(|(to, floor)| Moved { to, floor }.into()),
    ]
}

#[test]
fn encoded_events_decode_to_themselves() {
    let stream = StreamId::new("prop", "P-1");
    run(512, proptest::collection::vec(prop_event(), 1..6), |events| {
        let encoded =
            encode_batch(&stream, &events, &Metadata::new()).map_err(|error| TestCaseError::fail(error.to_string()))?;
        for (index, (event, new)) in events.iter().zip(encoded).enumerate() {
            let stored = record(&new.event_name, new.schema_version, new.payload, index as u64 + 1);
            prop_assert_eq!(&decode_record::<PropEvent>(&stored).ok(), &Some(event.clone()));
        }
        Ok(())
    });
}

/// A stream of arbitrary stored events loads, or fails with a typed decode error naming the
/// first event that does not decode (unknown names skipped when told so).
#[test]
fn loading_a_stream_of_arbitrary_events_loads_or_names_the_bad_event() {
    let runtime = arbitrary::runtime();
    let stored = (stored_name(), stored_version(), stored_payload(), any::<bool>());
    run(256, proptest::collection::vec(stored, 1..8), |events| {
        // Only what a store accepts: JSON payloads, within the limits.
        let events: Vec<NewEvent> = events
            .into_iter()
            .filter(|(name, version, payload, _)| {
                !name.is_empty()
                    && !name.contains('\0')
                    && name.len() <= 256
                    && *version <= i32::MAX as u32
                    && serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok()
            })
            .map(|(event_name, schema_version, payload, _)| NewEvent {
                event_id: uuid::Uuid::now_v7(),
                event_name,
                schema_version,
                payload,
                metadata: Metadata::new(),
            })
            .collect();
        runtime.block_on(async {
            let store = InMemoryStore::new();
            let id = uuid::Uuid::now_v7().to_string();
            let stream = StreamId::new("prop", id.as_str());
            store
                .append(&stream, ExpectedVersion::NoStream, events.clone())
                .await
                .map_err(|error| TestCaseError::fail(error.to_string()))?;
            for policy in [UnknownEvents::Fail, UnknownEvents::Skip] {
                let skip = policy == UnknownEvents::Skip;
                let first_bad = events.iter().position(|event| {
                    let unknown = !PropEvent::handles(&event.event_name);
                    !(skip && unknown)
                        && PropEvent::decode(&event.event_name, event.schema_version, &event.payload).is_err()
                });
                let repository = Repository::<Prop, _>::new(store.clone()).with_unknown_events(policy);
                match (repository.load(id.as_str()).await, first_bad) {
                    (Ok(loaded), None) => prop_assert_eq!(loaded.version, events.len() as u64),
                    (Err(RepositoryError::Decode(error)), Some(index)) => {
                        prop_assert_eq!(error.version, index as u64 + 1);
                        prop_assert_eq!(&error.event_name, &events[index].event_name);
                    }
                    (loaded, expected) => prop_assert!(false, "{loaded:?}, expected a failure at {expected:?}"),
                }
            }
            Ok(())
        })
    });
}
