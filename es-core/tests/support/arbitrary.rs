//! Arbitrary appends for the property tests of every backend's batch checks, and the property
//! they must hold: an append of anything is stored whole and read back as written, or refused
//! with a typed error that writes nothing; it never panics, and never fails untyped.
//!
//! Shared by the in-memory store's tests (es-core), es-sqlite's and es-postgres's, which
//! include this file by path (`#[path = ...] mod arbitrary;`): the same cases for every backend,
//! without a crate of their own.
//!
//! Runs are reproducible: [`config`] fixes the seed (override it with `PROPTEST_RNG_SEED`, the
//! number of cases with `PROPTEST_CASES`) and writes no persistence files; a failure is shrunk
//! and printed, and belongs in a regression test of its own.

#![allow(dead_code)] // each backend uses the parts it needs

use es_core::{EventStore, ExpectedVersion, Limits, Metadata, NewEvent, StoreError, StreamId};
use futures_util::TryStreamExt;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError};
use serde_json::Value;
use uuid::Uuid;

/// The seed of every property test unless `PROPTEST_RNG_SEED` says otherwise.
pub const SEED: u64 = 0x0e5_2026_0013;

/// `cases` cases (or `PROPTEST_CASES`), the fixed [`SEED`] (or `PROPTEST_RNG_SEED`), no
/// persistence files, and shrinking bounded so a failure is reported in seconds.
pub fn config(cases: u32) -> Config {
    let defaults = Config::default();
    Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            defaults.cases
        } else {
            cases
        },
        rng_seed: match defaults.rng_seed {
            RngSeed::Random => RngSeed::Fixed(SEED),
            fixed => fixed,
        },
        failure_persistence: None,
        max_shrink_iters: 256,
        ..defaults
    }
}

/// Limits small enough that arbitrary appends cross each of them often, and cheaply.
pub const SMALL: Limits = Limits::DEFAULT
    .with_max_payload_bytes(256)
    .with_max_metadata_bytes(256)
    .with_max_event_name_bytes(24)
    .with_max_stream_id_bytes(72)
    .with_max_batch_events(6)
    .with_max_batch_bytes(512);

/// An append to make: where, and what. Ids are given when it is made ([`BatchCase::build`]),
/// so every case writes to a stream and with ids no other case uses, shrinking included.
#[derive(Debug, Clone)]
pub struct BatchCase {
    /// The aggregate type.
    pub kind: String,
    /// Appended to a unique id (32 hex digits).
    pub id_suffix: String,
    /// The events.
    pub events: Vec<EventCase>,
}

/// One event of a [`BatchCase`].
#[derive(Debug, Clone)]
pub struct EventCase {
    pub name: String,
    pub schema_version: u32,
    pub payload: Vec<u8>,
    pub metadata: Metadata,
    /// Repeat the id of this earlier event of the batch (a duplicate id), instead of a new one.
    pub repeat_id_of: Option<usize>,
}

impl BatchCase {
    /// The stream (with a new unique id) and the events (with new ids).
    pub fn build(&self) -> (StreamId, Vec<NewEvent>) {
        let stream = StreamId::new(
            self.kind.as_str(),
            format!("{}{}", Uuid::now_v7().simple(), self.id_suffix),
        );
        let mut events: Vec<NewEvent> = Vec::with_capacity(self.events.len());
        for event in &self.events {
            let event_id = event
                .repeat_id_of
                .and_then(|index| events.get(index % events.len().max(1)))
                .map_or_else(Uuid::now_v7, |earlier| earlier.event_id);
            events.push(NewEvent {
                event_id,
                event_name: event.name.clone(),
                schema_version: event.schema_version,
                payload: event.payload.clone(),
                metadata: event.metadata.clone(),
            });
        }
        (stream, events)
    }
}

/// A length: small, around `limit`, or anywhere up to twice it (at most 4 MiB).
pub fn size(limit: usize) -> impl Strategy<Value = usize> {
    let near = limit.saturating_sub(2)..=limit.saturating_add(2);
    prop_oneof![
        3 => 0..=32usize,
        2 => near,
        1 => 0..=limit.saturating_mul(2).min(4 << 20),
    ]
}

/// Arbitrary JSON, a few levels deep, with arbitrary strings (NUL and all) and numbers.
pub fn json() -> impl Strategy<Value = Value> {
    json_of(any::<String>().boxed(), 4, 48, 6)
}

/// Arbitrary JSON of short, plain strings: small enough to fit small limits.
pub fn small_json() -> impl Strategy<Value = Value> {
    json_of("[a-z ]{0,8}".boxed(), 3, 12, 4)
}

/// JSON with `strings` for its strings and keys, at most `depth` levels and about `nodes` values
/// deep, collections of at most `items`.
fn json_of(strings: BoxedStrategy<String>, depth: u32, nodes: u32, items: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        strings.clone().prop_map(Value::from),
    ];
    let size = 0..items as usize;
    leaf.prop_recursive(depth, nodes, items, move |inner| {
        prop_oneof![
            vec(inner.clone(), size.clone()).prop_map(Value::Array),
            btree_map(strings.clone(), inner, size.clone()).prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// JSON that parses, or nearly does, but trips one store or another.
fn odd_payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(br#""\u0000""#.to_vec()),
        Just(br#"{"a":"x\u0000y"}"#.to_vec()),
        Just(br#""\ud800""#.to_vec()),
        Just(b"1e1000000".to_vec()),
        Just(b"-0".to_vec()),
        Just(br#"{"a":1,"a":2}"#.to_vec()),
        Just("\u{feff}{}".as_bytes().to_vec()),
        Just(b"{} x".to_vec()),
        Just(b"[1, 2".to_vec()),
        Just(Vec::new()),
        Just(b"  ".to_vec()),
        (100usize..=140).prop_map(|depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()),
    ]
}

/// A payload: arbitrary JSON, a JSON string of a size around `limit`, arbitrary bytes or text,
/// or odd JSON.
pub fn payload(limit: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => json().prop_map(|value| value.to_string().into_bytes()),
        2 => size(limit).prop_map(json_string_of),
        1 => vec(any::<u8>(), 0..48),
        1 => any::<String>().prop_map(String::into_bytes),
        1 => odd_payload(),
    ]
}

/// A JSON string exactly `bytes` long (a number under 2 bytes).
pub fn json_string_of(bytes: usize) -> Vec<u8> {
    match bytes {
        0 | 1 => b"0".to_vec(),
        n => format!("\"{}\"", "p".repeat(n - 2)).into_bytes(),
    }
}

/// A name: a plain one, arbitrary text (empty and NUL included), or one of a size around
/// `limit` in one- or two-byte characters.
pub fn name(limit: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[A-Z][A-Za-z]{0,15}",
        2 => any::<String>(),
        1 => Just(String::new()),
        1 => size(limit).prop_map(|n| "N".repeat(n)),
        1 => size(limit).prop_map(|n| "é".repeat(n / 2)),
    ]
}

/// Metadata: empty, or any of its fields with arbitrary text and JSON, or padded to a size
/// around `limit`.
pub fn metadata(limit: usize) -> impl Strategy<Value = Metadata> {
    let fields = (
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<u128>()),
        proptest::option::of(any::<u128>()),
        btree_map(any::<String>(), json(), 0..4),
    )
        .prop_map(|(actor, correlation, command, extra)| {
            let mut metadata = Metadata::new();
            metadata.actor = actor;
            metadata.correlation_id = correlation.map(Uuid::from_u128);
            metadata.command_id = command.map(Uuid::from_u128);
            metadata.extra = extra.into_iter().collect();
            metadata
        });
    prop_oneof![
        2 => Just(Metadata::new()),
        2 => fields,
        1 => size(limit).prop_map(|n| Metadata::new().with_extra("pad", "m".repeat(n))),
    ]
}

/// A schema version: the usual ones, the edges of `i32` and `u32`, or any.
pub fn schema_version() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => 1..=3u32,
        1 => Just(0u32),
        1 => Just(i32::MAX as u32),
        1 => Just(i32::MAX as u32 + 1),
        1 => Just(u32::MAX),
        1 => any::<u32>(),
    ]
}

/// An event: most of the time a plain one that a store should take, else an arbitrary one with
/// its sizes drawn around `limits`. Batches of several events hold both.
pub fn event(limits: Limits) -> impl Strategy<Value = EventCase> {
    let plain = (
        "[A-Z][A-Za-z]{0,15}",
        0..=3u32,
        small_json().prop_map(|value| value.to_string().into_bytes()),
        prop_oneof![3 => Just(Metadata::new()), 1 => any::<u128>().prop_map(|id| {
            Metadata::new().with_correlation_id(Uuid::from_u128(id)).with_actor("prop")
        })],
        Just(None),
    );
    let arbitrary = (
        name(limits.max_event_name_bytes),
        schema_version(),
        payload(limits.max_payload_bytes),
        metadata(limits.max_metadata_bytes),
        prop_oneof![4 => Just(None), 1 => (0..8usize).prop_map(Some)],
    );
    prop_oneof![6 => plain.boxed(), 1 => arbitrary.boxed()].prop_map(
        |(name, schema_version, payload, metadata, repeat_id_of)| EventCase {
            name,
            schema_version,
            payload,
            metadata,
            repeat_id_of,
        },
    )
}

/// An arbitrary append: a stream id and up to one event more than `limits` allow (at most 12),
/// everything else drawn around `limits`.
pub fn batch(limits: Limits) -> impl Strategy<Value = BatchCase> {
    let most = limits.max_batch_events.saturating_add(1).min(12);
    (
        prop_oneof![8 => Just("prop".to_owned()), 1 => any::<String>(), 1 => Just(String::new())],
        prop_oneof![
            8 => Just(String::new()),
            1 => any::<String>(),
            1 => size(limits.max_stream_id_bytes.saturating_sub(36)).prop_map(|n| "s".repeat(n)),
        ],
        vec(event(limits), 0..=most),
    )
        .prop_map(|(kind, id_suffix, events)| BatchCase {
            kind,
            id_suffix,
            events,
        })
}

/// The property, on `store`: appending `case` either stores the batch whole (read back as
/// written, and a second append of it recognised as already stored), or is refused with a
/// typed error that wrote nothing; the store enforces exactly the limits it states.
pub async fn append_stores_or_refuses<S: EventStore>(store: &S, case: &BatchCase) -> Result<(), TestCaseError> {
    let (stream, events) = case.build();
    let verdict = store.limits().check_append(&stream, &events);
    let result = store.append(&stream, ExpectedVersion::NoStream, events.clone()).await;
    match (&result, &verdict) {
        // Over a limit: exactly the stated limit's error.
        (_, Err(StoreError::LimitExceeded(expected))) => match &result {
            Err(StoreError::LimitExceeded(exceeded)) => prop_assert_eq!(exceeded, expected),
            other => prop_assert!(false, "expected {expected}, got {other:?}"),
        },
        (_, Err(StoreError::InvalidBatch { .. })) => {
            prop_assert!(matches!(result, Err(StoreError::InvalidBatch { .. })), "{result:?}");
        }
        (Ok(outcome), _) => return stored_as_written(store, &stream, &events, outcome.new_version).await,
        (Err(StoreError::InvalidBatch { stream: refused, .. }), _)
        | (Err(StoreError::DuplicateEventId { stream: refused, .. }), _) => prop_assert_eq!(refused, &stream),
        (Err(other), _) => prop_assert!(false, "an untyped or unexpected refusal: {other:?} ({other})"),
    }
    // Refused: nothing of the batch anywhere. (A store may refuse to look up an id it cannot
    // store at all: PostgreSQL and NUL.)
    for event in &events {
        let found = store.read_event(event.event_id).await;
        prop_assert!(
            matches!(found, Ok(None)),
            "event {} of a refused batch: {found:?}",
            event.event_id
        );
    }
    let version = store.stream_version(&stream).await;
    prop_assert!(matches!(version, Ok(0) | Err(_)), "a refused batch left {version:?}");
    Ok(())
}

/// The batch is stored whole, as written (JSON as JSON: a store may normalize its text), and
/// appending it again writes nothing and says so.
async fn stored_as_written<S: EventStore>(
    store: &S,
    stream: &StreamId,
    events: &[NewEvent],
    new_version: u64,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(new_version, events.len() as u64);
    let stored: Vec<_> = store
        .read_stream(stream, es_core::StreamSlice::all())
        .try_collect()
        .await
        .map_err(|error| TestCaseError::fail(format!("reading back {stream}: {error}")))?;
    prop_assert_eq!(stored.len(), events.len());
    for (stored, event) in stored.iter().zip(events) {
        prop_assert_eq!(stored.event_id, event.event_id);
        prop_assert_eq!(&stored.event_name, &event.event_name);
        prop_assert_eq!(stored.schema_version, event.schema_version);
        prop_assert!(
            same_json(&stored.payload, &event.payload),
            "payload {:?} read back as {:?}",
            String::from_utf8_lossy(&event.payload),
            String::from_utf8_lossy(&stored.payload)
        );
        let (read, written) = (
            serde_json::to_value(&stored.metadata),
            serde_json::to_value(&event.metadata),
        );
        prop_assert!(
            matches!((&read, &written), (Ok(read), Ok(written)) if json_equivalent(read, written)),
            "metadata {written:?} read back as {read:?}"
        );
    }
    if !events.is_empty() {
        let again = store.append(stream, ExpectedVersion::NoStream, events.to_vec()).await;
        prop_assert!(matches!(again, Ok(ref outcome) if outcome.already_stored), "{again:?}");
    }
    Ok(())
}

/// Whether two floats are equal but for a few units in the last place.
fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 4.0 * f64::EPSILON * a.abs().max(b.abs())
}

/// Whether two payloads are the same JSON (or the same bytes).
fn same_json(a: &[u8], b: &[u8]) -> bool {
    a == b
        || matches!(
            (serde_json::from_slice::<Value>(a), serde_json::from_slice::<Value>(b)),
            (Ok(a), Ok(b)) if json_equivalent(&a, &b)
        )
}

/// JSON equality where numbers compare by value: `jsonb` keeps numbers as exact decimals and
/// prints `1e16` as `10000000000000000`, which parses back as an integer; and serde_json's
/// default float parser (without its `float_roundtrip` feature) may read an exponent form one
/// unit in the last place away from the same number written out in digits.
pub fn json_equivalent(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => a == b || a.as_f64().zip(b.as_f64()).is_some_and(|(a, b)| close(a, b)),
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(a, b)| json_equivalent(a, b)),
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(key, a)| b.get(key).is_some_and(|b| json_equivalent(a, b)))
        }
        _ => a == b,
    }
}

/// Runs [`append_stores_or_refuses`] on `store` for `cases` batches drawn around the store's own
/// limits, each on `runtime`; panics with the shrunk failing case.
pub fn check_appends<S: EventStore>(runtime: &tokio::runtime::Runtime, store: &S, cases: u32) {
    let limits = store.limits();
    let mut runner = proptest::test_runner::TestRunner::new(config(cases));
    let outcome = runner.run(&batch(limits), |case| {
        runtime.block_on(append_stores_or_refuses(store, &case))
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

/// A runtime for property tests, which drive async stores from proptest's synchronous runner.
pub fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => panic!("a Tokio runtime for the property tests: {error}"),
    }
}
