//! The repository's behaviour on the in-memory store: snapshots, time travel, conflict retries,
//! metadata, and typed errors for bad stored data.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use es_core::{
    CommandError, DecodeError, EventStore, ExpectedVersion, InMemoryStore, Metadata, NewEvent, RecordDecodeError,
    Repository, RepositoryError, Snapshot, SnapshotStore, StreamId, StreamSlice, UnknownEvents,
};
use uuid::Uuid;

mod support;

use support::{add, first_add, new_id, Added, Counter, CounterEvent, InstrumentedStore, NotPositive, Reset};

type Counters = Repository<Counter, InMemoryStore>;

async fn add_times(repo: &Counters, id: &String, times: i64) {
    for n in 1..=times {
        repo.execute(id, Metadata::new(), add(n))
            .await
            .expect("command accepted");
    }
}

/// A repository on a new store that snapshots every `every` events, and a counter in it that
/// was added 1, 2, ... `times`.
async fn counter_snapshotting_every(every: u64, times: i64) -> (Counters, String) {
    let repo = Counters::new(InMemoryStore::new()).with_snapshot_every(every);
    let id = new_id();
    add_times(&repo, &id, times).await;
    (repo, id)
}

#[tokio::test]
async fn commands_fold_into_state_and_rejections_write_nothing() {
    let repo = Repository::<Counter, _>::new(InMemoryStore::new());
    let id = new_id();
    let done = repo.execute(&id, Metadata::new(), add(5)).await.expect("accepted");
    assert_eq!((done.version, done.aggregate.total, done.attempts), (1, 5, 1));
    let refused = repo.execute(&id, Metadata::new(), add(-1)).await;
    assert!(
        matches!(refused, Err(CommandError::Rejected(NotPositive))),
        "{refused:?}"
    );
    let nothing = repo
        .execute(&id, Metadata::new(), |_: &Counter| Ok::<_, NotPositive>(vec![]))
        .await
        .expect("an empty decision is fine");
    assert_eq!(nothing.version, 1);
    let loaded = repo.load(&id).await.expect("load");
    assert_eq!((loaded.version, loaded.aggregate.total), (1, 5));
    assert_eq!(repo.load(&new_id()).await.expect("load missing").version, 0);
}

#[tokio::test]
async fn metadata_is_stored_with_a_shared_correlation_id() {
    let repo = Repository::<Counter, _>::new(InMemoryStore::new());
    let id = new_id();
    let two = |_: &Counter| Ok::<_, NotPositive>(vec![Added { amount: 1 }.into(), Reset.into()]);
    repo.execute(&id, Metadata::new().with_actor("alice"), two)
        .await
        .expect("accepted");
    let causation = Uuid::now_v7();
    let given = Metadata::new()
        .with_correlation_id(causation)
        .with_causation_id(causation);
    repo.execute(&id, given.clone(), add(1)).await.expect("accepted");

    let events = repo.events(&id, StreamSlice::all()).await.expect("read");
    let first = &events[0].envelope.metadata;
    assert_eq!(first.actor.as_deref(), Some("alice"));
    assert!(first.correlation_id.is_some());
    assert_eq!(
        events[1].envelope.metadata.correlation_id, first.correlation_id,
        "one command, one correlation"
    );
    let command_id = events[2].envelope.metadata.command_id;
    assert!(command_id.is_some(), "every command gets an id");
    assert_ne!(command_id, first.command_id, "one id per command");
    let mut expected = given;
    expected.command_id = command_id;
    assert_eq!(events[2].envelope.metadata, expected, "what the caller gave is kept");
    assert_ne!(events[0].envelope.event_id, events[1].envelope.event_id);
    assert_eq!(events[1].event, CounterEvent::Reset(Reset));
}

#[tokio::test]
async fn snapshots_are_taken_every_n_events_and_used_on_load() {
    let (repo, id) = counter_snapshotting_every(3, 7).await;
    let store = repo.store();
    let stream = Counters::stream_id(&id);
    let snapshot = store
        .load_snapshot(&stream)
        .await
        .expect("load")
        .expect("a snapshot was taken");
    assert_eq!((snapshot.version, snapshot.revision), (6, 3));

    // Replace the snapshot with a recognisably different state: loading must start from it.
    let marked = Counter {
        total: 1000,
        changes: 6,
    };
    store
        .save_snapshot(Snapshot {
            state: serde_json::to_vec(&marked).expect("serialize"),
            ..snapshot
        })
        .await
        .expect("save");
    let loaded = repo.load(&id).await.expect("load");
    assert_eq!((loaded.version, loaded.aggregate.total), (7, 1007));
    // Without snapshots configured, the same store replays everything.
    let plain = Counters::new(store.clone()).load(&id).await.expect("load");
    assert_eq!(plain.aggregate.total, 28);
}

#[tokio::test]
async fn stale_or_undecodable_snapshots_are_ignored() {
    let (repo, id) = counter_snapshotting_every(100, 4).await;
    let store = repo.store();
    let stream = Counters::stream_id(&id);
    let bogus = |revision: u32, state: &[u8]| Snapshot {
        stream: stream.clone(),
        version: 4,
        revision,
        schema_version: 1,
        state: state.to_vec(),
        taken_at: chrono::Utc::now(),
    };
    store
        .save_snapshot(bogus(2, br#"{"total":-1,"changes":4}"#))
        .await
        .expect("save");
    assert_eq!(
        repo.load(&id).await.expect("load").aggregate.total,
        10,
        "another revision is ignored"
    );
    store.save_snapshot(bogus(3, b"not json")).await.expect("save");
    assert_eq!(
        repo.load(&id).await.expect("load").aggregate.total,
        10,
        "an undecodable one too"
    );
}

#[tokio::test]
async fn time_travel_by_version_and_by_instant() {
    let repo = Repository::<Counter, _>::new(InMemoryStore::new()).with_snapshot_every(2);
    let id = new_id();
    let mut instants = Vec::new();
    for n in 1..=5 {
        repo.execute(&id, Metadata::new(), add(n)).await.expect("accepted");
        instants.push(chrono::Utc::now());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let totals = [1, 3, 6, 10, 15];
    for (version, total) in (1..=5).zip(totals) {
        let past = repo.load_at_version(&id, version).await.expect("load");
        assert_eq!((past.version, past.aggregate.total), (version, total));
    }
    assert_eq!(
        repo.load_at_version(&id, 0).await.expect("load").aggregate,
        Counter::default()
    );
    assert_eq!(repo.load_at_version(&id, 99).await.expect("load").version, 5);
    for (index, instant) in instants.iter().enumerate() {
        let past = repo.load_at_instant(&id, *instant).await.expect("load");
        assert_eq!((past.version, past.aggregate.total), (index as u64 + 1, totals[index]));
    }
    let before = instants[0] - chrono::Duration::seconds(1);
    assert_eq!(repo.load_at_instant(&id, before).await.expect("load").version, 0);
}

/// A snapshot's `taken_at` is the application's clock; the events' `recorded_at` is the
/// store's. Time travel must go by the store's: a snapshot stamped before an instant by a clock
/// running behind still holds an event recorded after it.
#[tokio::test]
async fn time_travel_by_instant_ignores_a_snapshot_holding_later_events_whatever_its_clock() {
    let repo = Counters::new(InMemoryStore::new()).with_snapshot_every(2);
    let id = new_id();
    repo.execute(&id, Metadata::new(), add(1)).await.expect("accepted");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    repo.execute(&id, Metadata::new(), add(2)).await.expect("accepted");
    let store = repo.store();
    let stream = Counters::stream_id(&id);
    let events = es_core::conformance::whole_stream(store, &stream).await;
    let (first, second) = (events[0].recorded_at, events[1].recorded_at);
    assert!(first < second, "the two events were recorded apart");
    let snapshot = store
        .load_snapshot(&stream)
        .await
        .expect("load snapshot")
        .expect("a snapshot at version 2");
    assert_eq!(snapshot.version, 2);
    // The application's clock ran behind: the snapshot says it was taken before event 2.
    let before_second = first + (second - first) / 2;
    store
        .save_snapshot(Snapshot {
            taken_at: first,
            ..snapshot
        })
        .await
        .expect("save");
    let past = repo.load_at_instant(&id, before_second).await.expect("load");
    assert_eq!(
        (past.version, past.aggregate.total),
        (1, 1),
        "the state after event 1 only"
    );
    // From the event's own instant on, the snapshot is the state.
    let at_second = repo.load_at_instant(&id, second).await.expect("load");
    assert_eq!((at_second.version, at_second.aggregate.total), (2, 3));
}

/// A store on a set clock: the state at the end of a month without waiting for it, and a
/// clock set back never stamps an event before the one stored last.
#[tokio::test]
async fn time_travel_by_instant_on_a_set_clock() {
    use chrono::TimeZone;
    let at = |month, day, hour| {
        chrono::Utc
            .with_ymd_and_hms(2026, month, day, hour, 0, 0)
            .single()
            .expect("a date")
    };
    let now = Arc::new(std::sync::Mutex::new(at(10, 30, 9)));
    let clock = Arc::clone(&now);
    let store = InMemoryStore::new().with_clock(move || *clock.lock().unwrap_or_else(|e| e.into_inner()));
    let repo = Counters::new(store).with_snapshot_every(2);
    let id = new_id();
    for (amount, day) in [(1, at(10, 30, 9)), (2, at(10, 31, 9)), (3, at(11, 1, 9))] {
        *now.lock().expect("clock") = day;
        repo.execute(&id, Metadata::new(), add(amount)).await.expect("accepted");
    }
    let end_of_october = repo.load_at_instant(&id, at(10, 31, 23)).await.expect("load");
    assert_eq!((end_of_october.version, end_of_october.aggregate.total), (2, 3));
    let before = repo.load_at_instant(&id, at(10, 30, 8)).await.expect("load");
    assert_eq!(before.version, 0);

    *now.lock().expect("clock") = at(10, 1, 0);
    repo.execute(&id, Metadata::new(), add(4)).await.expect("accepted");
    let events = repo.events(&id, StreamSlice::all()).await.expect("read");
    let stamps: Vec<_> = events.iter().map(|event| event.envelope.recorded_at).collect();
    assert_eq!(stamps[3], at(11, 1, 9), "a clock set back stamps the last event's time");
}

#[tokio::test]
async fn a_conflict_reloads_and_decides_again() {
    let store = InstrumentedStore {
        races: Arc::new(AtomicU32::new(2)),
        ..Default::default()
    };
    let repo = Repository::<Counter, _>::new(store).with_max_attempts(3);
    let id = new_id();
    let decided = AtomicU32::new(0);
    let done = repo
        .execute(&id, Metadata::new(), |counter: &Counter| {
            decided.fetch_add(1, Ordering::SeqCst);
            Ok::<_, NotPositive>(vec![Added {
                amount: counter.total + 1,
            }
            .into()])
        })
        .await
        .expect("third attempt wins");
    assert_eq!((done.attempts, decided.load(Ordering::SeqCst)), (3, 3));
    // Two competitors added 100 each; the winning decision saw both: 200 + (200 + 1).
    assert_eq!(
        (done.version, done.aggregate.total),
        (3, 401),
        "decided on the reloaded state"
    );
}

#[tokio::test]
async fn conflicts_beyond_the_attempt_budget_are_returned_typed() {
    let store = InstrumentedStore {
        races: Arc::new(AtomicU32::new(u32::MAX)),
        ..Default::default()
    };
    let repo = Repository::<Counter, _>::new(store).with_max_attempts(2);
    let id = new_id();
    match repo.execute(&id, Metadata::new(), add(1)).await {
        Err(CommandError::Conflict { attempts, conflict }) => {
            assert_eq!(attempts, 2);
            assert_eq!(conflict.expected, ExpectedVersion::Exact(1));
            assert_eq!(conflict.actual, 2);
            assert_eq!(conflict.stream, StreamId::new("counter", id.clone()));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let version = repo.load(&id).await.expect("load").version;
    assert_eq!(version, 2, "only the competitor's events were written");
}

async fn load_after_raw(event_name: &str, schema_version: u32, payload: &[u8]) -> Result<u64, RepositoryError> {
    let store = InMemoryStore::new();
    let repo = Repository::<Counter, _>::new(store.clone());
    let id = new_id();
    repo.execute(&id, Metadata::new(), add(1)).await.expect("accepted");
    let raw = NewEvent {
        event_id: Uuid::now_v7(),
        event_name: event_name.into(),
        schema_version,
        payload: payload.to_vec(),
        metadata: Metadata::new(),
    };
    let stream = Repository::<Counter, InMemoryStore>::stream_id(&id);
    store
        .append(&stream, ExpectedVersion::Exact(1), vec![raw])
        .await
        .expect("raw append");
    repo.load(&id).await.map(|loaded| loaded.version)
}

#[tokio::test]
async fn bad_stored_data_is_a_typed_error_naming_stream_version_and_event() {
    let check = |result: Result<u64, RepositoryError>, name: &str| match result {
        Err(RepositoryError::Decode(error)) => {
            let RecordDecodeError {
                stream,
                version,
                event_name,
                source,
            } = *error;
            assert_eq!(
                (stream.aggregate_type.as_str(), version, event_name.as_str()),
                ("counter", 2, name)
            );
            *source
        }
        other => panic!("expected a decode error, got {other:?}"),
    };
    let unknown = check(load_after_raw("Multiplied", 1, b"{}").await, "Multiplied");
    assert!(matches!(unknown, DecodeError::UnknownEventType { .. }), "{unknown}");
    let corrupt = check(load_after_raw("Added", 2, br#"{"amount":"lots"}"#).await, "Added");
    assert!(
        matches!(corrupt, DecodeError::Payload { schema_version: 2, .. }),
        "{corrupt}"
    );
    let too_new = check(load_after_raw("Added", 3, br#"{"amount":1}"#).await, "Added");
    assert!(
        matches!(
            too_new,
            DecodeError::SchemaVersionTooNew {
                stored: 3,
                current: 2,
                ..
            }
        ),
        "{too_new}"
    );
    let no_path = check(load_after_raw("Added", 0, br#"{"amount":1}"#).await, "Added");
    assert!(
        matches!(no_path, DecodeError::NoUpcastPath { stored: 0, .. }),
        "{no_path}"
    );
    let failed_step = check(load_after_raw("Added", 1, br#"{"amount":1}"#).await, "Added");
    assert!(
        matches!(failed_step, DecodeError::Upcast { from: 1, .. }),
        "{failed_step}"
    );
    assert!(failed_step.to_string().contains("hundreds"), "{failed_step}");
    assert_eq!(
        load_after_raw("Added", 1, br#"{"hundreds":2}"#)
            .await
            .expect("v1 upcasts"),
        2
    );
}

#[tokio::test]
async fn a_decode_error_message_says_where_and_what() {
    let error = load_after_raw("Added", 9, b"{}").await.expect_err("too new");
    let message = error.to_string();
    assert!(message.contains("counter/"), "{message}");
    assert!(message.contains("version 2"), "{message}");
    assert!(message.contains("`Added`"), "{message}");
    assert!(message.contains("schema version 9"), "{message}");
}

#[tokio::test]
async fn create_appends_without_reading_and_falls_back_when_the_stream_exists() {
    let store = InstrumentedStore::default();
    let repo = Repository::<Counter, _>::new(store.clone());
    let id = new_id();
    let created = repo.create(&id, Metadata::new(), first_add).await.expect("created");
    assert_eq!((created.version, created.attempts), (1, 1));
    assert_eq!(
        store.stream_reads.load(Ordering::SeqCst),
        0,
        "a new aggregate is not read"
    );

    let again = repo.create(&id, Metadata::new(), first_add).await;
    assert!(
        matches!(again, Err(CommandError::Rejected("already started"))),
        "{again:?}"
    );
    assert_eq!(
        store.stream_reads.load(Ordering::SeqCst),
        1,
        "the existing stream was loaded"
    );
    let added = repo
        .create(&id, Metadata::new(), add(5))
        .await
        .expect("decided on the real state");
    assert_eq!(
        (added.version, added.aggregate.total, added.attempts),
        (2, 6, 1),
        "the guess that the stream is new is no attempt of the retry policy's"
    );
    // So even a repository that never retries decides on the real state.
    let once = repo.clone().with_max_attempts(1);
    let added = once
        .create(&id, Metadata::new(), add(1))
        .await
        .expect("decided on the real state");
    assert_eq!((added.version, added.aggregate.total), (3, 7));
}

#[tokio::test]
async fn the_cache_saves_loads_and_stays_correct_when_another_writer_appends() {
    let store = InstrumentedStore::default();
    let cached = Repository::<Counter, _>::new(store.clone()).with_cache(100);
    let other = Repository::<Counter, _>::new(store.clone());
    let id = new_id();
    for n in 1..=3 {
        cached.execute(&id, Metadata::new(), add(n)).await.expect("accepted");
    }
    assert_eq!(
        store.stream_reads.load(Ordering::SeqCst),
        1,
        "loaded once, then served from the cache"
    );
    let refused = cached.execute(&id, Metadata::new(), add(-1)).await;
    assert!(matches!(refused, Err(CommandError::Rejected(NotPositive))));

    other
        .execute(&id, Metadata::new(), add(100))
        .await
        .expect("another writer");
    let reads_before = store.stream_reads.load(Ordering::SeqCst);
    let done = cached
        .execute(&id, Metadata::new(), add(10))
        .await
        .expect("accepted after a reload");
    assert_eq!(
        (done.attempts, done.version, done.aggregate.total),
        (1, 5, 116),
        "a stale cached state costs a reload, not an attempt"
    );
    assert_eq!(
        store.stream_reads.load(Ordering::SeqCst),
        reads_before + 1,
        "one reload after the conflict"
    );
    assert_eq!(cached.load(&id).await.expect("load").aggregate.total, 116);

    // Nor does it need a retry: a repository allowed one attempt reloads the same way.
    let once = cached.clone().with_max_attempts(1);
    other
        .execute(&id, Metadata::new(), add(1))
        .await
        .expect("another writer");
    let done = once
        .execute(&id, Metadata::new(), add(1))
        .await
        .expect("a stale cache is no conflict");
    assert_eq!((done.attempts, done.version, done.aggregate.total), (1, 7, 118));
}

#[tokio::test]
async fn the_cache_is_bounded() {
    let store = InstrumentedStore::default();
    let cached = Repository::<Counter, _>::new(store.clone()).with_cache(2);
    let ids: Vec<_> = (0..3).map(|_| new_id()).collect();
    for id in &ids {
        cached.execute(id, Metadata::new(), add(1)).await.expect("accepted");
    }
    let reads = store.stream_reads.load(Ordering::SeqCst);
    cached.execute(&ids[2], Metadata::new(), add(1)).await.expect("cached");
    cached.execute(&ids[1], Metadata::new(), add(1)).await.expect("cached");
    assert_eq!(
        store.stream_reads.load(Ordering::SeqCst),
        reads,
        "the two most recent are cached"
    );
    cached
        .execute(&ids[0], Metadata::new(), add(1))
        .await
        .expect("evicted, reloaded");
    assert_eq!(
        store.stream_reads.load(Ordering::SeqCst),
        reads + 1,
        "the oldest was evicted"
    );
}

/// An event whose name the aggregate does not know (written by a newer program) fails loading
/// by default; under `UnknownEvents::Skip` it is left out of the state but counts for the
/// version, so the next command appends after it.
#[tokio::test]
async fn unknown_events_fail_loading_or_are_skipped_by_policy() {
    let store = InMemoryStore::new();
    let strict = Repository::<Counter, _>::new(store.clone());
    let id = new_id();
    strict.execute(&id, Metadata::new(), add(2)).await.expect("accepted");
    let stream = StreamId::new("counter", id.clone());
    let unheard = es_core::conformance::event("counter-archived", serde_json::json!({}));
    store
        .append(&stream, ExpectedVersion::Exact(1), vec![unheard])
        .await
        .expect("a newer program's event");
    let refused = strict.load(&id).await;
    assert!(
        matches!(&refused, Err(RepositoryError::Decode(error)) if matches!(*error.source, DecodeError::UnknownEventType { .. })),
        "{refused:?}"
    );
    let lenient = Repository::<Counter, _>::new(store).with_unknown_events(UnknownEvents::Skip);
    let loaded = lenient.load(&id).await.expect("the unknown event is skipped");
    assert_eq!((loaded.version, loaded.aggregate.total), (2, 2));
    let done = lenient
        .execute(&id, Metadata::new(), add(3))
        .await
        .expect("appends after it");
    assert_eq!((done.version, done.aggregate.total, done.attempts), (3, 5, 1));
}
