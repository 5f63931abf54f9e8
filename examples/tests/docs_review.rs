//! A careful outside user's review of the documentation: every concrete claim of the README,
//! `docs/DESIGN.md`, `docs/RELIABILITY.md` and the crate and item docs is a promise, checked here
//! by a test of the behaviour it describes, through the public API only.
//!
//! One test per claim (or per small group of related claims), each quoting the claim and
//! naming where it is. A test that shows the docs and the behaviour disagree is kept, marked
//! `//!
//! Every store lives in a temporary directory or a fresh PostgreSQL schema of its own test, and
//! every test is bounded in time.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use es_cli::{Cli, Exit};
use es_core::lifecycle::{ClosedQuery, StreamChange, StreamLifecycle, StreamStatus, STREAM_LIFECYCLE};
use es_core::pii::{Forgettable, InMemoryKeyStore, PiiStore, FORGOTTEN_SUBJECTS};
use es_core::tenancy::{TenantId, TenantStores, MAX_TENANT_ID_BYTES};
use es_core::{
    async_trait, command_event_id, event, Aggregate, Apply, AsOf, Backoff, CommandError, DecodedEvent, EventDescriptor,
    EventRegistry, EventSet, EventStore, ExpectedVersion, FailurePolicy, GlobalLog, HandlerError, InMemoryReadModel,
    InMemoryStore, Limit, Limits, Metadata, NewEvent, PollOnly, Projection, ProjectionError, ProjectionRunner,
    RecordedEvent, Repository, RepositoryError, RunnerOptions, SnapshotStore, StoreError, StreamId, StreamSlice,
    UnknownEvents, WaitError,
};
use es_postgres::PostgresStore;
use es_sqlite::{SqliteContext, SqliteOptions};
use es_test_support::{bounded, TestDatabase, TestSchema};
use serde::{Deserialize, Serialize};
use sqlx::Connection;
use uuid::Uuid;

#[path = "support/review/mod.rs"]
mod review;

use review::cli::ERASURE;
use review::running::run_until_stopped;
use review::stores::{on_postgres, open_write_transaction, postgres, raw, sqlite_at, sqlite_in, whole_log};

// ---------------------------------------------------------------------------------------------
// A small domain: a note (the aggregate most tests use), a ping of another aggregate type, a
// tally whose state serde_json cannot write, and a person with personal data.
// ---------------------------------------------------------------------------------------------

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct NoteOpened {
    pub title: String,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct NoteEdited {
    pub text: String,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum NoteEvent {
    Opened(NoteOpened),
    Edited(NoteEdited),
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "note", event = NoteEvent)]
pub struct Note {
    title: String,
    edits: u32,
}

impl Apply<NoteOpened> for Note {
    fn apply(&mut self, event: &NoteOpened) {
        self.title = event.title.clone();
    }
}

impl Apply<NoteEdited> for Note {
    fn apply(&mut self, _: &NoteEdited) {
        self.edits += 1;
    }
}

fn open(title: &str) -> impl Fn(&Note) -> Vec<NoteEvent> + Send + Sync + 'static {
    let title = title.to_owned();
    move |_: &Note| vec![NoteOpened { title: title.clone() }.into()]
}

fn edit(n: usize) -> impl Fn(&Note) -> Vec<NoteEvent> + Send + Sync + 'static {
    move |_: &Note| {
        (0..n)
            .map(|i| {
                NoteEdited {
                    text: format!("edit {i}"),
                }
                .into()
            })
            .collect()
    }
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct Pinged;

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum PingEvent {
    Pinged(Pinged),
}

#[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "ping", event = PingEvent)]
pub struct Ping {
    count: u32,
}

impl Apply<Pinged> for Ping {
    fn apply(&mut self, _: &Pinged) {
        self.count += 1;
    }
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct Counted {
    pub a: u32,
    pub b: u32,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum TallyEvent {
    Counted(Counted),
}

/// A state serde_json cannot write: a map whose keys are not strings.
#[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "tally", event = TallyEvent)]
pub struct Tally {
    by_pair: BTreeMap<(u32, u32), u32>,
}

impl Apply<Counted> for Tally {
    fn apply(&mut self, event: &Counted) {
        *self.by_pair.entry((event.a, event.b)).or_default() += 1;
    }
}

#[event]
#[derive(Debug, Clone)]
pub struct PersonNamed {
    #[pii]
    pub name: Forgettable<String>,
}

#[event]
#[derive(Debug, Clone)]
pub enum PersonEvent {
    Named(PersonNamed),
}

#[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "person", event = PersonEvent)]
pub struct Person {
    name: Forgettable<String>,
}

impl Apply<PersonNamed> for Person {
    fn apply(&mut self, event: &PersonNamed) {
        self.name = event.name.clone();
    }
}

// ---------------------------------------------------------------------------------------------
// Stores and helpers
// ---------------------------------------------------------------------------------------------

/// Closes the schema's pool before the schema is dropped. A lifecycle change that returns early
/// (refused, or already done) on PostgreSQL hands its connection back to the pool with the
/// change's transaction (and its `SHARE ROW EXCLUSIVE` lock on `events`) still to be rolled back
/// by a task of the runtime; `TestSchema`'s drop blocks the runtime's thread while it drops the
/// schema, so that rollback would never run and the drop would wait for ever.
async fn release(pg: TestSchema) {
    pg.store().pool().close().await;
    drop(pg);
}

/// Runs `scenario(&store, backend)` on a fresh SQLite file, on a fresh PostgreSQL schema (then
/// released) and, where `memory` is named, in memory: within the suite's bound.
macro_rules! on_each_store {
    ($scenario:ident: sqlite, postgres) => {
        on_each_store!(@run $scenario, {})
    };
    ($scenario:ident: sqlite, postgres, memory) => {
        on_each_store!(@run $scenario, { $scenario(&InMemoryStore::new(), "memory").await; })
    };
    (@run $scenario:ident, { $($memory:tt)* }) => {
        bounded(async {
            let dir = tempfile::tempdir().unwrap();
            $scenario(&sqlite_in(&dir).await, "sqlite").await;
            let pg = postgres().await;
            $scenario(pg.store(), "postgres").await;
            release(pg).await;
            $($memory)*
        })
        .await
    };
}

fn note(id: &str) -> StreamId {
    StreamId::new("note", id)
}

fn by() -> StreamChange {
    StreamChange::new("ops@example.com", "docs review")
}

/// Every event of the global log once nothing committed is held back from it any more (on
/// PostgreSQL, other tests' write transactions hold the log back for a moment).
async fn settled_log<S: GlobalLog>(store: &S) -> Vec<RecordedEvent> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.unsettled(0).await.expect("unsettled") > 0 {
        assert!(Instant::now() < deadline, "the global log settles");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    whole_log(store).await
}

/// The versions of `stream` as stream reads see them (through `replay_stream`: `read_stream`
/// needs a `futures` trait this crate does not depend on).
async fn versions<S: EventStore>(store: &S, stream: &StreamId) -> Vec<u64> {
    let mut seen = Vec::new();
    store
        .replay_stream(stream, StreamSlice::all(), &mut |event| {
            seen.push(event.version);
            ControlFlow::Continue(())
        })
        .await
        .expect("replay");
    seen
}

// =============================================================================================
// Limits
// =============================================================================================

/// RELIABILITY.md, "Limits": "A refused append writes nothing, and the same batch will be
/// refused again: the error names the limit, the value found, the limit's value and the event
/// (`#n` in the message, `event` as an index in `LimitExceeded`)."
/// `Limits::check_append`: the first limit exceeded is reported "(the stream id, the number of
/// events, then each event in batch order, then the batch's bytes)".
#[tokio::test]
async fn a_refused_append_names_limit_value_maximum_and_event() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits::default().with_max_payload_bytes(10).with_max_batch_events(2);
        let store = sqlite_at(
            &dir.path().join("events.db"),
            SqliteOptions::default().with_limits(limits),
        )
        .await;
        let stream = note("N-1");
        let batch = vec![raw("NoteOpened", "{}"), raw("NoteEdited", r#"{"text":"0123456789"}"#)];
        for _ in 0..2 {
            let Err(StoreError::LimitExceeded(exceeded)) =
                store.append(&stream, ExpectedVersion::Any, batch.clone()).await
            else {
                panic!("refused as over a limit");
            };
            assert_eq!(exceeded.limit, Limit::PayloadBytes);
            assert_eq!((exceeded.event, exceeded.actual, exceeded.max), (Some(1), 21, 10));
            let message = exceeded.to_string();
            for part in ["#2", "21", "10", "max_payload_bytes", "note/N-1"] {
                assert!(message.contains(part), "{message:?} names {part}");
            }
        }
        // The number of events is checked before the events themselves.
        let mut three = batch.clone();
        three.push(raw("NoteEdited", "{}"));
        match store.append(&stream, ExpectedVersion::Any, three).await {
            Err(StoreError::LimitExceeded(exceeded)) => {
                assert_eq!(
                    (exceeded.limit, exceeded.event, exceeded.actual),
                    (Limit::BatchEvents, None, 3)
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(store.stream_version(&stream).await.unwrap(), 0, "nothing written");
    })
    .await;
}

/// `EventStore::append`: "An empty batch writes nothing but still checks `expected`."
/// `Limits::check_append`: "what every store calls before writing anything (an empty batch
/// included: its stream id is checked)".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_batch_still_checks_its_stream_id_and_expected_version() {
    on_each_store!(check_empty_batches: sqlite, postgres, memory);
}

async fn check_empty_batches<S: EventStore>(store: &S, backend: &str) {
    let long = StreamId::new("note", "x".repeat(2000));
    match store.append(&long, ExpectedVersion::Any, vec![]).await {
        Err(StoreError::LimitExceeded(exceeded)) => assert_eq!(exceeded.limit, Limit::StreamIdBytes, "{backend}"),
        other => panic!("{backend}: an empty batch to a too-long stream id: {other:?}"),
    }
    match store.append(&note("E-1"), ExpectedVersion::Exact(5), vec![]).await {
        Err(StoreError::Conflict(conflict)) => assert_eq!(conflict.actual, 0, "{backend}"),
        other => panic!("{backend}: an empty batch at the wrong version: {other:?}"),
    }
    let outcome = store
        .append(&note("E-1"), ExpectedVersion::NoStream, vec![])
        .await
        .unwrap_or_else(|error| panic!("{backend}: {error}"));
    assert_eq!((outcome.previous_version, outcome.new_version), (0, 0), "{backend}");
    assert_eq!(store.stream_version(&note("E-1")).await.unwrap(), 0, "{backend}");
}

/// DESIGN.md, "Limits": "Sizes are bytes as stored: metadata as its JSON (`{}` is 2 bytes)".
#[tokio::test]
async fn metadata_is_measured_as_its_json_and_empty_metadata_is_two_bytes() {
    bounded(async {
        let limits = Limits::default().with_max_metadata_bytes(2);
        let dir = tempfile::tempdir().unwrap();
        let lite = sqlite_at(
            &dir.path().join("events.db"),
            SqliteOptions::default().with_limits(limits),
        )
        .await;
        let memory = InMemoryStore::new().with_limits(limits);
        for (store, backend) in [(&lite as &dyn EventStoreDyn, "sqlite"), (&memory, "memory")] {
            store
                .append_one(&note("M-1"), raw("NoteOpened", "{}"))
                .await
                .unwrap_or_else(|error| panic!("{backend}: empty metadata is 2 bytes: {error}"));
            let mut with_actor = raw("NoteEdited", "{}");
            with_actor.metadata = Metadata::new().with_actor("a");
            match store.append_one(&note("M-1"), with_actor).await {
                Err(StoreError::LimitExceeded(exceeded)) => {
                    assert_eq!(exceeded.limit, Limit::MetadataBytes, "{backend}");
                    assert!(exceeded.actual > 2, "{backend}: {exceeded}");
                }
                other => panic!("{backend}: metadata over 2 bytes: {other:?}"),
            }
        }
    })
    .await;
}

/// An object-safe corner of `EventStore` to loop over stores of different types.
#[async_trait]
trait EventStoreDyn: Sync {
    async fn append_one(&self, stream: &StreamId, event: NewEvent) -> Result<(), StoreError>;
}

#[async_trait]
impl<S: EventStore> EventStoreDyn for S {
    async fn append_one(&self, stream: &StreamId, event: NewEvent) -> Result<(), StoreError> {
        self.append(stream, ExpectedVersion::Any, vec![event]).await.map(|_| ())
    }
}

/// DESIGN.md, "Limits", the table of ceilings: SQLite 800,000,000 / 100,000,000 / 1,000,000 /
/// 1,000,000 / none / none; PostgreSQL 256 MiB − 1 / 256 MiB − 1 / none / 2,048 / 1,048,575 /
/// 512 MiB. "Each store takes other limits (`InMemoryStore::with_limits`,
/// `SqliteOptions::with_limits`, `PostgresStore::with_limits`) up to its backend's ceiling;
/// `EventStore::limits` says what a store enforces."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_above_a_backends_ceiling_are_capped_to_the_documented_ceiling() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let lite = sqlite_at(
            &dir.path().join("events.db"),
            SqliteOptions::default().with_limits(Limits::UNLIMITED),
        )
        .await;
        let sqlite_limits = lite.limits();
        assert_eq!(
            (
                sqlite_limits.max_payload_bytes,
                sqlite_limits.max_metadata_bytes,
                sqlite_limits.max_event_name_bytes,
                sqlite_limits.max_stream_id_bytes,
                sqlite_limits.max_batch_events,
                sqlite_limits.max_batch_bytes,
            ),
            (800_000_000, 100_000_000, 1_000_000, 1_000_000, usize::MAX, usize::MAX),
            "SQLite's ceilings"
        );
        let pg = postgres().await;
        let capped = pg.store().clone().with_limits(Limits::UNLIMITED).limits();
        assert_eq!(
            (
                capped.max_payload_bytes,
                capped.max_metadata_bytes,
                capped.max_event_name_bytes,
                capped.max_stream_id_bytes,
                capped.max_batch_events,
                capped.max_batch_bytes,
            ),
            (
                (256 << 20) - 1,
                (256 << 20) - 1,
                usize::MAX,
                2048,
                (1 << 20) - 1,
                512 << 20
            ),
            "PostgreSQL's ceilings"
        );
        assert_eq!(
            InMemoryStore::new().limits(),
            Limits::DEFAULT,
            "the same defaults everywhere"
        );
        assert_eq!(pg.store().limits(), Limits::DEFAULT);
        assert_eq!(sqlite_in(&tempfile::tempdir().unwrap()).await.limits(), Limits::DEFAULT);
    })
    .await;
}

/// `Limits`: "The streams the framework keeps about another stream or a data subject ... are
/// measured as the stream or subject they name ... So every stream a store accepts can also be
/// tombstoned, archived, deleted and forgotten."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_at_the_stream_id_limit_can_be_closed_and_forgotten() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let lite = sqlite_in(&dir).await;
        let pg = postgres().await;
        close_at_the_limit(&lite, "sqlite").await;
        close_at_the_limit(pg.store(), "postgres").await;
        close_at_the_limit(&InMemoryStore::new(), "memory").await;
        release(pg).await;

        // Forgetting: the subject of a stream's own data is "person/<id>", one byte longer than
        // the stream id.
        let mut registry = EventRegistry::new();
        registry.register::<Person>().unwrap();
        let people = PiiStore::new(lite.clone(), lite.clone(), registry);
        let id = "p".repeat(Limits::DEFAULT.max_stream_id_bytes - "person".len());
        let repository = Repository::<Person, _>::new(people.clone());
        repository
            .execute(id.as_str(), Metadata::new(), |_: &Person| {
                vec![PersonNamed { name: "Ada".into() }.into()]
            })
            .await
            .expect("a person at the stream id limit");
        people
            .forget(&format!("person/{id}"))
            .await
            .expect("the subject of a stream at the limit can be forgotten");
        assert!(repository
            .load(id.as_str())
            .await
            .unwrap()
            .aggregate
            .name
            .is_forgotten());
    })
    .await;
}

async fn close_at_the_limit<S: StreamLifecycle>(store: &S, backend: &str) {
    let max = store.limits().max_stream_id_bytes;
    for (n, status) in [StreamStatus::Tombstoned, StreamStatus::Archived, StreamStatus::Deleted]
        .into_iter()
        .enumerate()
    {
        let id = format!("{n}{}", "i".repeat(max - "note".len() - 1));
        let stream = note(&id);
        store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                vec![raw("NoteOpened", r#"{"title":"t"}"#)],
            )
            .await
            .unwrap_or_else(|error| panic!("{backend}: a stream id at the limit is stored: {error}"));
        store
            .close(&stream, status, by())
            .await
            .unwrap_or_else(|error| panic!("{backend}: a stream at the limit can be {status}: {error}"));
    }
}

/// DESIGN.md, "Limits": PostgreSQL's ceiling for `max_stream_id_bytes` is "2,048 (a b-tree
/// entry is at most 2,704 bytes)": a store given that limit stores, and closes, such a stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_stream_id_at_its_2048_byte_ceiling_is_stored_and_closed() {
    bounded(async {
        let pg = postgres().await;
        let store = pg
            .store()
            .clone()
            .with_limits(Limits::default().with_max_stream_id_bytes(2048));
        assert_eq!(store.limits().max_stream_id_bytes, 2048);
        // Random text: nothing for the index to compress.
        let mut id = String::new();
        while id.len() < 2048 - "note".len() {
            id.push_str(&Uuid::new_v4().simple().to_string());
        }
        id.truncate(2048 - "note".len());
        let stream = note(&id);
        store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                vec![raw("NoteOpened", r#"{"title":"t"}"#)],
            )
            .await
            .expect("a stream id at the ceiling is stored");
        store.tombstone(&stream, by()).await.expect("and can be tombstoned");
        release(pg).await;
    })
    .await;
}

/// `Limits`: "An empty aggregate type or id is a valid, if odd, stream."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_aggregate_type_and_id_are_a_valid_stream() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let lite = sqlite_in(&dir).await;
        let pg = postgres().await;
        for (store, backend) in [(&lite as &dyn EventStoreDyn, "sqlite"), (pg.store(), "postgres")] {
            for stream in [StreamId::new("", "x"), StreamId::new("note", ""), StreamId::new("", "")] {
                store
                    .append_one(&stream, raw("NoteOpened", "{}"))
                    .await
                    .unwrap_or_else(|error| panic!("{backend}: {stream:?}: {error}"));
            }
        }
    })
    .await;
}

// =============================================================================================
// Closing streams
// =============================================================================================

/// `StreamLifecycle`: "A change to the status a stream already has returns its existing record
/// and writes nothing, so retrying after a lost answer is safe".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_to_the_same_status_again_returns_the_first_record_and_writes_nothing() {
    on_each_store!(close_twice: sqlite, postgres);
}

async fn close_twice<S: StreamLifecycle + GlobalLog>(store: &S, backend: &str) {
    let stream = note("T-1");
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![raw("NoteOpened", r#"{"title":"t"}"#)],
        )
        .await
        .unwrap();
    for status in [StreamStatus::Tombstoned, StreamStatus::Archived, StreamStatus::Deleted] {
        let first = store.close(&stream, status, by()).await.unwrap();
        let logged = settled_log(store).await.len();
        let again = store
            .close(&stream, status, StreamChange::new("someone else", "again"))
            .await
            .unwrap_or_else(|error| panic!("{backend}: {status} again: {error}"));
        assert_eq!(again, first, "{backend}: {status} again returns the first record");
        assert_eq!(
            settled_log(store).await.len(),
            logged,
            "{backend}: {status} again writes nothing"
        );
    }
}

/// DESIGN.md, "Stream lifecycle": "PostgreSQL takes `SHARE ROW EXCLUSIVE` on the events table for
/// the change (... appends pause for the change, which is an administrative act ...)";
/// `StreamLifecycle`: "A change to the status a stream already has returns its existing record
/// and writes nothing, so retrying after a lost answer is safe". Once `close` has answered, the
/// change is over: appends from another pool go on at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_refused_or_repeated_close_leaves_no_lock_behind() {
    bounded(async {
        let pg = postgres().await;
        let connect = || async {
            PostgresStore::connect(TestDatabase::get().unwrap().url())
                .await
                .unwrap()
                .with_schema(pg.store().schema())
                .unwrap()
        };
        let other = connect().await;
        other
            .append(&note("L-1"), ExpectedVersion::NoStream, vec![raw("NoteOpened", "{}")])
            .await
            .unwrap();
        other.archive(&note("L-1"), by()).await.unwrap();
        let mut outcomes = Vec::new();
        for (n, status) in [StreamStatus::Archived, StreamStatus::Tombstoned]
            .into_iter()
            .enumerate()
        {
            let closing = connect().await;
            let answered = closing.close(&note("L-1"), status, by()).await;
            let stream = note(&format!("L-{}", n + 2));
            let append = other.append(&stream, ExpectedVersion::NoStream, vec![raw("NoteOpened", "{}")]);
            let appended = tokio::time::timeout(Duration::from_secs(3), append).await;
            outcomes.push((status, answered.is_ok(), appended.is_ok()));
            // End whatever the close left open before the next step.
            closing.pool().close().await;
        }
        other.pool().close().await;
        release(pg).await;
        for (status, _, appended) in &outcomes {
            assert!(
                appended,
                "an append after a close to {status} that returned early waited: {outcomes:?}"
            );
        }
    })
    .await;
}

/// `StreamLifecycle`: "a change backwards (archived to tombstoned, say) is refused with
/// `StoreError::StreamClosed`"; `close`: "A change to `StreamStatus::Open` is refused
/// (`StoreError::InvalidBatch`)"; `check_change`: "The streams of `STREAM_LIFECYCLE` ... cannot be
/// changed themselves (`StoreError::InvalidBatch`)".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_backwards_to_open_or_a_lifecycle_stream_is_refused_typed() {
    on_each_store!(close_wrongly: sqlite, postgres, memory);
}

async fn close_wrongly<S: StreamLifecycle>(store: &S, backend: &str) {
    let stream = note("B-1");
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![raw("NoteOpened", r#"{"title":"t"}"#)],
        )
        .await
        .unwrap();
    assert!(
        matches!(
            store.close(&stream, StreamStatus::Open, by()).await,
            Err(StoreError::InvalidBatch { .. })
        ),
        "{backend}: to open"
    );
    store.archive(&stream, by()).await.unwrap();
    match store.tombstone(&stream, by()).await {
        Err(StoreError::StreamClosed(closed)) => assert_eq!(closed.status, StreamStatus::Archived, "{backend}"),
        other => panic!("{backend}: archived to tombstoned: {other:?}"),
    }
    let lifecycle = StreamId::new(STREAM_LIFECYCLE, "note/B-1");
    assert!(
        matches!(
            store.tombstone(&lifecycle, by()).await,
            Err(StoreError::InvalidBatch { .. })
        ),
        "{backend}: the lifecycle stream itself"
    );
}

/// README, "Closing streams": "`store.delete_stream(&stream, by)`: events removed; the audit
/// record stays"; DESIGN.md, "Stream lifecycle": "the `stream_states` row is the audit record and
/// is never removed, so the id is never reused"; `lifecycle`: appends "refused" once deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_streams_id_is_never_reused() {
    on_each_store!(delete_then_reuse: sqlite, postgres);
}

async fn delete_then_reuse<S: StreamLifecycle + Clone + 'static>(store: &S, backend: &str) {
    let store = store.clone();
    let notes = Repository::<Note, _>::new(store.clone());
    notes.execute("D-1", Metadata::new(), open("doomed")).await.unwrap();
    let record = store.delete_stream(&note("D-1"), by()).await.unwrap();
    assert_eq!((record.status, record.events), (StreamStatus::Deleted, 1), "{backend}");
    assert_eq!(store.stream_version(&note("D-1")).await.unwrap(), 0, "{backend}");
    for expected in [ExpectedVersion::NoStream, ExpectedVersion::Any] {
        match store
            .append(&note("D-1"), expected, vec![raw("NoteOpened", r#"{"title":"again"}"#)])
            .await
        {
            Err(StoreError::StreamClosed(closed)) => assert_eq!(closed.status, StreamStatus::Deleted, "{backend}"),
            other => panic!("{backend}: an append to a deleted stream ({expected:?}): {other:?}"),
        }
    }
    let again = notes.create("D-1", Metadata::new(), open("reborn")).await;
    assert!(
        again.is_err(),
        "{backend}: a command cannot start the deleted stream again: {again:?}"
    );
    let closed = store
        .stream_closure(&note("D-1"))
        .await
        .unwrap()
        .expect("the audit record stays");
    assert_eq!(
        (closed.actor.as_str(), closed.reason.as_str()),
        ("ops@example.com", "docs review")
    );
}

/// `es_core::lifecycle`, "Retries across a close": "A batch sent again whose events were stored
/// before the stream was tombstoned is answered as stored (`already_stored`), as on an open
/// stream ...; once the stream is archived or deleted ... the batch is refused as closed."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stored_before_a_tombstone_is_recognised_when_sent_again() {
    on_each_store!(retry_across_a_close: sqlite, postgres);
}

async fn retry_across_a_close<S: StreamLifecycle>(store: &S, backend: &str) {
    let stream = note("R-1");
    let batch = vec![
        raw("NoteOpened", r#"{"title":"t"}"#),
        raw("NoteEdited", r#"{"text":"x"}"#),
    ];
    let first = store
        .append(&stream, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    store.tombstone(&stream, by()).await.unwrap();
    let again = store
        .append(&stream, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap_or_else(|error| panic!("{backend}: a retry after a tombstone: {error}"));
    assert!(again.already_stored, "{backend}");
    assert_eq!(again.positions, first.positions, "{backend}");
    store.archive(&stream, by()).await.unwrap();
    let after_archive = store.append(&stream, ExpectedVersion::NoStream, batch).await;
    assert!(
        matches!(after_archive, Err(StoreError::StreamClosed(_))),
        "{backend}: a retry after an archive is refused as closed: {after_archive:?}"
    );
}

/// The same claim ("once the stream is archived or deleted its events are no longer where
/// appends look, and the batch is refused as closed") on the in-memory store, which README says
/// passes "the same conformance suite" as the durable ones.
#[tokio::test]
async fn memory_a_batch_sent_again_after_an_archive_is_refused_as_closed() {
    bounded(retry_across_a_close(&InMemoryStore::new(), "memory")).await;
}

/// README, "Closing streams": archive: "events leave the hot table, keep their positions";
/// "Archived events stay in the global log at their positions ...; a deletion removes them from
/// it. Each change also appends a `StreamClosed` event (stored as `es.stream-closed`) to the
/// stream (`es.stream`, `"<type>/<id>"`)"; "`Repository::load` refuses a closed stream with
/// `RepositoryError::StreamClosed` (the record says who closed it, when and why)".
/// `StreamLifecycle::archive`: "Its snapshot is dropped." `StreamClosed::events`: "all of them
/// for an archive ...; 0 for a tombstone". `Repository::load_stream`: "an archived or deleted
/// one has none in the stream reads and loads as `A::default()` at version 0".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiving_keeps_positions_drops_the_snapshot_and_deleting_removes_the_events() {
    on_each_store!(archive_then_delete: sqlite, postgres);
}

async fn archive_then_delete<S: StreamLifecycle + SnapshotStore + GlobalLog + Clone + 'static>(
    store: &S,
    backend: &str,
) {
    let store = store.clone();
    let notes = Repository::<Note, _>::new(store.clone()).with_snapshot_every(2);
    notes.execute("A-1", Metadata::new(), open("kept")).await.unwrap();
    let last = notes.execute("A-1", Metadata::new(), edit(2)).await.unwrap();
    assert!(
        store.load_snapshot(&note("A-1")).await.unwrap().is_some(),
        "{backend}: a snapshot"
    );
    let before: Vec<(u64, String)> = settled_log(&store)
        .await
        .into_iter()
        .filter(|event| event.stream == note("A-1"))
        .map(|event| (event.position, event.event_name))
        .collect();
    assert_eq!(before.len(), 3);

    let tombstoned = store.tombstone(&note("A-1"), by()).await.unwrap();
    assert_eq!(tombstoned.events, 0, "{backend}: a tombstone moves nothing");
    match notes.load("A-1").await {
        Err(error @ RepositoryError::StreamClosed(_)) => {
            let message = error.to_string();
            assert!(
                message.contains("ops@example.com") && message.contains("docs review"),
                "{backend}: says who and why: {message}"
            );
        }
        other => panic!("{backend}: load of a tombstoned stream: {other:?}"),
    }
    let archived = store.archive(&note("A-1"), by()).await.unwrap();
    assert_eq!(archived.events, 3, "{backend}: an archive moves every event");
    assert!(
        versions(&store, &note("A-1")).await.is_empty(),
        "{backend}: out of the hot table"
    );
    assert!(
        store.load_snapshot(&note("A-1")).await.unwrap().is_none(),
        "{backend}: the archive drops the snapshot"
    );
    let loaded = notes.load_stream(&note("A-1"), AsOf::Latest).await.unwrap();
    assert_eq!(
        (loaded.version, loaded.aggregate),
        (0, Note::default()),
        "{backend}: load_stream"
    );
    let closed = notes.load_closed("A-1", AsOf::Version(2)).await.unwrap();
    assert_eq!(
        (closed.version, closed.aggregate.edits),
        (2, 1),
        "{backend}: load_closed"
    );
    assert_eq!(
        notes.load_closed("A-1", AsOf::Latest).await.unwrap().version,
        last.version
    );

    let log = settled_log(&store).await;
    let after: Vec<(u64, String)> = log
        .iter()
        .filter(|event| event.stream == note("A-1"))
        .map(|event| (event.position, event.event_name.clone()))
        .collect();
    assert_eq!(
        after, before,
        "{backend}: archived events stay in the log at their positions"
    );
    let lifecycle: Vec<&RecordedEvent> = log
        .iter()
        .filter(|event| event.stream == StreamId::new("es.stream", "note/A-1"))
        .collect();
    assert_eq!(lifecycle.len(), 2, "{backend}: one lifecycle event per change");
    assert!(
        lifecycle.iter().all(|event| event.event_name == "es.stream-closed"),
        "{backend}"
    );

    store.delete_stream(&note("A-1"), by()).await.unwrap();
    assert!(
        settled_log(&store)
            .await
            .iter()
            .all(|event| event.stream != note("A-1")),
        "{backend}: a deletion removes the events from the log"
    );
    assert!(matches!(
        notes.load_closed("A-1", AsOf::Latest).await,
        Err(RepositoryError::StreamClosed(_))
    ));
}

/// `StreamLifecycle::closed_streams`: "The records of the streams closed with the query's
/// status, in stream order (aggregate type, then id, bytewise), a page at a time".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_streams_come_in_bytewise_stream_order_a_page_at_a_time() {
    on_each_store!(list_closed: sqlite, postgres, memory);
}

async fn list_closed<S: StreamLifecycle>(store: &S, backend: &str) {
    let streams = [
        note("b"),
        note("a"),
        note("B"),
        StreamId::new("abc", "z"),
        note("a-1"),
        note("é"),
    ];
    for stream in &streams {
        store
            .append(stream, ExpectedVersion::NoStream, vec![raw("NoteOpened", "{}")])
            .await
            .unwrap();
        store.tombstone(stream, by()).await.unwrap();
    }
    let mut expected: Vec<StreamId> = streams.to_vec();
    expected.sort_by(|x, y| {
        (x.aggregate_type.as_bytes(), x.aggregate_id.as_bytes())
            .cmp(&(y.aggregate_type.as_bytes(), y.aggregate_id.as_bytes()))
    });
    let mut listed = Vec::new();
    let mut query = ClosedQuery::new(StreamStatus::Tombstoned).limit(4);
    loop {
        let page = store.closed_streams(&query).await.unwrap();
        let Some(last) = page.last() else { break };
        query = query.clone().after(last.stream());
        listed.extend(page.iter().map(|closed| closed.stream()));
    }
    assert_eq!(listed, expected, "{backend}");
}

// =============================================================================================
// The repository
// =============================================================================================

/// `Repository::load_at_version`: "Time travel: the state after the last event at or below
/// `version`"; `AsOf::Instant`: "The state after the last event recorded at or before this
/// instant"; `Repository::load`: "An aggregate with no events loads as `A::default()` at
/// version 0."
#[tokio::test]
async fn time_travel_past_the_end_is_the_last_state_and_before_the_start_the_default() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let notes = Repository::<Note, _>::new(sqlite_in(&dir).await);
        notes.execute("N-1", Metadata::new(), open("t")).await.unwrap();
        notes.execute("N-1", Metadata::new(), edit(1)).await.unwrap();
        let past = notes.load_at_version("N-1", 99).await.unwrap();
        assert_eq!((past.version, past.aggregate.edits), (2, 1));
        let long_ago = Utc.with_ymd_and_hms(2001, 1, 1, 0, 0, 0).unwrap();
        let before = notes.load_at_instant("N-1", long_ago).await.unwrap();
        assert_eq!((before.version, before.aggregate), (0, Note::default()));
        let zero = notes.load_at_version("N-1", 0).await.unwrap();
        assert_eq!(zero.version, 0);
    })
    .await;
}

/// `Repository::with_snapshot_every`: "Takes a snapshot whenever a command ... carries the
/// stream past a multiple of `events`. `0` turns snapshots off."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_taken_when_a_command_carries_the_stream_past_a_multiple() {
    on_each_store!(snapshots_past_a_multiple: sqlite, postgres);
}

async fn snapshots_past_a_multiple<S: EventStore + SnapshotStore + Clone + 'static>(store: &S, backend: &str) {
    let store = store.clone();
    let notes = Repository::<Note, _>::new(store.clone()).with_snapshot_every(3);
    notes.execute("S-1", Metadata::new(), open("t")).await.unwrap();
    assert!(
        store.load_snapshot(&note("S-1")).await.unwrap().is_none(),
        "{backend}: at 1"
    );
    // From 1 to 4: past 3 without landing on it.
    notes.execute("S-1", Metadata::new(), edit(3)).await.unwrap();
    let snapshot = store.load_snapshot(&note("S-1")).await.unwrap();
    assert_eq!(
        snapshot.map(|s| s.version),
        Some(4),
        "{backend}: a snapshot after passing 3"
    );

    let off = Repository::<Note, _>::new(store.clone()).with_snapshot_every(0);
    off.execute("S-2", Metadata::new(), open("t")).await.unwrap();
    off.execute("S-2", Metadata::new(), edit(5)).await.unwrap();
    assert!(
        store.load_snapshot(&note("S-2")).await.unwrap().is_none(),
        "{backend}: 0 is off"
    );
}

/// `Repository::with_snapshot_every`: "one that cannot be taken (a state serde_json cannot
/// write, such as a map with non-string keys, or a failed save) is logged as a warning and
/// skipped, and the command succeeds all the same."
#[tokio::test]
async fn a_snapshot_serde_json_cannot_write_is_skipped_and_the_command_succeeds() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_in(&dir).await;
        let tallies = Repository::<Tally, _>::new(store.clone()).with_snapshot_every(1);
        for n in 0..3 {
            tallies
                .execute("T-1", Metadata::new(), move |_: &Tally| {
                    vec![Counted { a: n, b: 1 }.into()]
                })
                .await
                .expect("the command succeeds without its snapshot");
        }
        assert!(store
            .load_snapshot(&StreamId::new("tally", "T-1"))
            .await
            .unwrap()
            .is_none());
        assert_eq!(tallies.load("T-1").await.unwrap().aggregate.by_pair.len(), 3);
    })
    .await;
}

/// `Executed::position`: "The global position of the last event the command wrote (0 when it
/// wrote none)"; `Repository::find_command`: "`None` when the command was never carried out, or
/// appended no event."
#[tokio::test]
async fn a_command_that_appends_nothing_has_position_0_and_no_stored_outcome() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let notes = Repository::<Note, _>::new(sqlite_in(&dir).await);
        notes.execute("N-1", Metadata::new(), open("t")).await.unwrap();
        let command = Uuid::now_v7();
        let nothing = notes
            .execute("N-1", Metadata::new().with_command_id(command), |_: &Note| {
                Vec::<NoteEvent>::new()
            })
            .await
            .unwrap();
        assert_eq!((nothing.position(), nothing.appended.len()), (0, 0));
        assert!(notes.find_command("N-1", command).await.unwrap().is_none());
        assert!(notes.find_command("N-1", Uuid::now_v7()).await.unwrap().is_none());
    })
    .await;
}

/// `command_event_id`: "A UUID v8: the first 48 bits are the command id's"; `Repository::execute`:
/// "The events' ids are derived from the command id (`command_event_id`)".
#[tokio::test]
async fn command_event_ids_are_v8_and_keep_the_command_ids_first_48_bits() {
    bounded(async {
        let notes = Repository::<Note, _>::new(InMemoryStore::new());
        let command = Uuid::now_v7();
        let executed = notes
            .execute("N-1", Metadata::new().with_command_id(command), |note: &Note| {
                let mut events = open("t")(note);
                events.extend(edit(1)(note));
                events
            })
            .await
            .unwrap();
        for (index, appended) in executed.appended.iter().enumerate() {
            let expected = command_event_id(command, &note("N-1"), index);
            assert_eq!(appended.event_id, expected);
            assert_eq!(expected.get_version_num(), 8);
            assert_eq!(expected.as_bytes()[..6], command.as_bytes()[..6]);
        }
    })
    .await;
}

/// `Repository::with_unknown_events`: "`UnknownEvents::Skip` leaves the event out of the state
/// ... and still counts its version, so the next append checks against the real stream."
#[tokio::test]
async fn loading_with_unknown_events_skipped_still_counts_their_versions() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_in(&dir).await;
        let notes = Repository::<Note, _>::new(store.clone());
        notes.execute("U-1", Metadata::new(), open("t")).await.unwrap();
        store
            .append(
                &note("U-1"),
                ExpectedVersion::Exact(1),
                vec![raw("NoteFromTheFuture", "{}")],
            )
            .await
            .unwrap();
        assert!(matches!(notes.load("U-1").await, Err(RepositoryError::Decode(_))));
        let skipping = Repository::<Note, _>::new(store.clone()).with_unknown_events(UnknownEvents::Skip);
        let loaded = skipping.load("U-1").await.unwrap();
        assert_eq!((loaded.version, loaded.aggregate.title.as_str()), (2, "t"));
        let executed = skipping.execute("U-1", Metadata::new(), edit(1)).await.unwrap();
        assert_eq!((executed.version, executed.attempts), (3, 1));
    })
    .await;
}

// =============================================================================================
// Projections
// =============================================================================================

/// A projection of notes into a SQLite table `note_rows (id, title)` that may lack a column.
struct SqliteNoteRows;

#[async_trait]
impl Projection for SqliteNoteRows {
    const NAME: &'static str = "note-rows";
    const AGGREGATE_TYPES: &'static [&'static str] = &["note"];
    type Event = NoteEvent;
    type Context = SqliteContext;

    async fn handle(&self, db: &mut SqliteContext, event: &DecodedEvent<NoteEvent>) -> Result<(), HandlerError> {
        if let NoteEvent::Opened(opened) = &event.event {
            db.execute(
                "INSERT INTO note_rows (id, title) VALUES (?1, ?2)",
                (&event.envelope.stream.aggregate_id, &opened.title),
            )?;
        }
        Ok(())
    }

    async fn reset(&self, db: &mut SqliteContext) -> Result<(), HandlerError> {
        db.execute("DELETE FROM note_rows", [])?;
        Ok(())
    }
}

/// README, "Projections in production": "A read-model table or column the database says does
/// not exist (a migration the deploy left out) stops the runner whatever the policy
/// (`ProjectionError::ReadModelBroken`): skipping or parking would pass over every event."
/// Here the table exists but lacks the column `title` that the handler inserts into.
#[tokio::test]
async fn sqlite_an_insert_into_a_missing_column_stops_the_runner_as_read_model_broken() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_in(&dir).await;
        {
            let db = rusqlite::Connection::open(store.path()).unwrap();
            db.execute("CREATE TABLE note_rows (id TEXT PRIMARY KEY)", []).unwrap();
        }
        let notes = Repository::<Note, _>::new(store.clone());
        for id in ["N-1", "N-2"] {
            notes.execute(id, Metadata::new(), open("t")).await.unwrap();
        }
        let runner =
            ProjectionRunner::new(SqliteNoteRows, store.clone(), store.checkpoints()).with_options(RunnerOptions {
                failure: FailurePolicy::Skip {
                    attempts: 1,
                    backoff: Duration::from_millis(1),
                },
                ..RunnerOptions::default()
            });
        let outcome = runner.catch_up().await;
        assert!(
            matches!(outcome, Err(ProjectionError::ReadModelBroken { .. })),
            "a missing column stops the runner: {outcome:?}"
        );
    })
    .await;
}

/// A projection of notes into a PostgreSQL table `note_rows (id, title)` that may lack a column.
struct PostgresNoteRows;

#[async_trait]
impl Projection for PostgresNoteRows {
    const NAME: &'static str = "note-rows";
    const AGGREGATE_TYPES: &'static [&'static str] = &["note"];
    type Event = NoteEvent;
    type Context = sqlx::PgConnection;

    async fn handle(&self, db: &mut sqlx::PgConnection, event: &DecodedEvent<NoteEvent>) -> Result<(), HandlerError> {
        if let NoteEvent::Opened(opened) = &event.event {
            sqlx::query("INSERT INTO note_rows (id, title) VALUES ($1, $2)")
                .bind(&event.envelope.stream.aggregate_id)
                .bind(&opened.title)
                .execute(&mut *db)
                .await?;
        }
        Ok(())
    }

    async fn reset(&self, db: &mut sqlx::PgConnection) -> Result<(), HandlerError> {
        sqlx::query("DELETE FROM note_rows").execute(&mut *db).await?;
        Ok(())
    }
}

/// README, "Projections in production" (as above), on PostgreSQL, where the docs name the
/// SQLSTATEs (undefined table or column): a missing column under `Park` stops the runner with
/// `ReadModelBroken`, parks nothing and commits nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_missing_column_stops_the_runner_whatever_the_policy() {
    on_postgres(|store| async move {
        store
            .execute_in_schema("CREATE TABLE note_rows (id text PRIMARY KEY)")
            .await
            .unwrap();
        let notes = Repository::<Note, _>::new(store.clone());
        for id in ["N-1", "N-2"] {
            notes.execute(id, Metadata::new(), open("t")).await.unwrap();
        }
        let runner =
            ProjectionRunner::new(PostgresNoteRows, store.clone(), store.checkpoints()).with_options(RunnerOptions {
                failure: FailurePolicy::Park {
                    attempts: 1,
                    backoff: Duration::from_millis(1),
                },
                ..RunnerOptions::default()
            });
        // catch_up reads up to the head of the log as it is now: let other tests' writes end.
        settled_log(&store).await;
        let outcome = runner.catch_up().await;
        assert!(
            matches!(outcome, Err(ProjectionError::ReadModelBroken { .. })),
            "a missing column stops the runner: {outcome:?}"
        );
        assert!(runner.parked().await.unwrap().is_empty(), "nothing parked");
        assert_eq!(runner.lag().await.unwrap().checkpoint, 0, "nothing committed");
    })
    .await;
}

/// A projection over the in-memory read model that fails on notes whose title is "poison".
struct Titles {
    tries: Arc<AtomicU32>,
}

#[async_trait]
impl Projection for Titles {
    const NAME: &'static str = "titles";
    const AGGREGATE_TYPES: &'static [&'static str] = &["note"];
    type Event = NoteEvent;
    type Context = Vec<String>;

    async fn handle(&self, titles: &mut Vec<String>, event: &DecodedEvent<NoteEvent>) -> Result<(), HandlerError> {
        if let NoteEvent::Opened(opened) = &event.event {
            if opened.title == "poison" {
                self.tries.fetch_add(1, Ordering::SeqCst);
                return Err("poisoned".into());
            }
            titles.push(opened.title.clone());
        }
        Ok(())
    }

    async fn reset(&self, titles: &mut Vec<String>) -> Result<(), HandlerError> {
        titles.clear();
        Ok(())
    }
}

fn titles() -> (Titles, Arc<AtomicU32>) {
    let tries = Arc::new(AtomicU32::new(0));
    (Titles { tries: tries.clone() }, tries)
}

/// `FailurePolicy`: "An event that does not decode is not retried (decoding it again gives the
/// same answer): once the events before it are committed, it goes straight to what the policy
/// does after its retries." README: "An event that does not decode is never retried".
#[tokio::test]
async fn an_event_that_does_not_decode_is_parked_without_waiting_out_retries() {
    bounded(async {
        let store = InMemoryStore::new();
        let notes = Repository::<Note, _>::new(store.clone());
        notes.execute("N-1", Metadata::new(), open("fine")).await.unwrap();
        store
            .append(
                &note("N-2"),
                ExpectedVersion::NoStream,
                vec![raw("NoteOpened", r#"{"title":5}"#)],
            )
            .await
            .unwrap();
        notes.execute("N-3", Metadata::new(), open("after")).await.unwrap();
        let model = InMemoryReadModel::<Vec<String>>::new();
        let (projection, _) = titles();
        let runner = ProjectionRunner::new(projection, store.clone(), model.clone()).with_options(RunnerOptions {
            failure: FailurePolicy::Park {
                attempts: 5,
                backoff: Duration::from_secs(2),
            },
            ..RunnerOptions::default()
        });
        let started = Instant::now();
        let done = runner.catch_up().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "no retries waited out: {:?}",
            started.elapsed()
        );
        assert_eq!(done.parked, 1);
        let parked = runner.parked().await.unwrap();
        assert_eq!(parked.len(), 1);
        assert_eq!(parked[0].stream, note("N-2"));
        assert_eq!(model.read(|titles| titles.clone()), vec!["fine", "after"]);
    })
    .await;
}

/// `ProjectionRunner::retry_parked`: "failing again, it stays parked with one more attempt";
/// `ParkedEvent::attempts`: "How many times it was tried, over all its retries."
#[tokio::test]
async fn a_parked_event_that_fails_again_stays_parked_with_one_more_attempt() {
    bounded(async {
        let store = InMemoryStore::new();
        let notes = Repository::<Note, _>::new(store.clone());
        notes.execute("N-1", Metadata::new(), open("poison")).await.unwrap();
        let model = InMemoryReadModel::<Vec<String>>::new();
        let (projection, tries) = titles();
        let runner = ProjectionRunner::new(projection, store.clone(), model.clone()).with_options(RunnerOptions {
            failure: FailurePolicy::Park {
                attempts: 2,
                backoff: Duration::from_millis(1),
            },
            ..RunnerOptions::default()
        });
        runner.catch_up().await.unwrap();
        let parked = runner.parked().await.unwrap();
        assert_eq!(parked.len(), 1);
        assert_eq!(parked[0].attempts, 2);
        assert_eq!(tries.load(Ordering::SeqCst), 2);
        assert!(runner.retry_parked(parked[0].position).await.unwrap());
        runner.catch_up().await.unwrap();
        let again = runner.parked().await.unwrap();
        assert_eq!(again.len(), 1, "still parked");
        assert_eq!(again[0].attempts, 3, "with one more attempt");
        assert_eq!(tries.load(Ordering::SeqCst), 3);
        assert!(runner.drop_parked(parked[0].position).await.unwrap());
        assert!(
            !runner.drop_parked(parked[0].position).await.unwrap(),
            "nothing left to drop"
        );
    })
    .await;
}

/// Counts the notes it sees in a SQLite or PostgreSQL read model: it writes nothing, which is
/// all the wait needs.
struct NotesSeen<C>(std::marker::PhantomData<fn() -> C>);

#[async_trait]
impl<C: Send + 'static> Projection for NotesSeen<C> {
    const NAME: &'static str = "notes-seen";
    const AGGREGATE_TYPES: &'static [&'static str] = &["note"];
    type Event = NoteEvent;
    type Context = C;

    async fn handle(&self, _: &mut C, _: &DecodedEvent<NoteEvent>) -> Result<(), HandlerError> {
        Ok(())
    }

    async fn reset(&self, _: &mut C) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// `ProjectionProgress::wait_for`: "Waits until the projection has processed every event up to
/// `position` (handled it, or passed it as an event it does not read)"; `es projections --help`:
/// "a running runner moves its checkpoint past the ones it does not read".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_returns_for_a_position_the_projection_does_not_read() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let lite = sqlite_in(&dir).await;
        let runner = ProjectionRunner::new(
            NotesSeen::<SqliteContext>(Default::default()),
            lite.clone(),
            lite.checkpoints(),
        );
        wait_past_unread(runner, lite.clone(), lite.wake_up(), "sqlite").await;

        let pg = postgres().await;
        let store = pg.store().clone();
        let runner = ProjectionRunner::new(
            NotesSeen::<sqlx::PgConnection>(Default::default()),
            store.clone(),
            store.checkpoints(),
        );
        wait_past_unread(runner, store.clone(), PollOnly, "postgres").await;
    })
    .await;
}

async fn wait_past_unread<S, C, W>(
    runner: ProjectionRunner<NotesSeen<C::Context>, S, C>,
    store: S,
    wake_up: W,
    backend: &str,
) where
    S: EventStore + GlobalLog + Clone + 'static,
    C: es_core::CheckpointStore + 'static,
    C::Context: Send + 'static,
    W: es_core::WakeUp + 'static,
{
    let progress = runner.progress();
    let (stop, running) = run_until_stopped(runner, wake_up);
    let notes = Repository::<Note, _>::new(store.clone());
    notes.execute("N-1", Metadata::new(), open("t")).await.unwrap();
    let pings = Repository::<Ping, _>::new(store.clone());
    let ping = pings
        .execute("P-1", Metadata::new(), |_: &Ping| vec![Pinged.into()])
        .await
        .unwrap();
    let reached = progress
        .wait_for(ping.position(), Duration::from_secs(10))
        .await
        .unwrap_or_else(|error| panic!("{backend}: waiting for an event the projection does not read: {error}"));
    assert!(reached >= ping.position(), "{backend}");
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

/// `ProjectionProgress::wait_for`: "Fails at once with `WaitError::Stopped` when the runner's
/// `run` has returned (or the runner was dropped) short of `position`, and with
/// `WaitError::Timeout` when time runs out while it runs (or before it starts)."
#[tokio::test]
async fn wait_for_times_out_before_the_start_and_ends_at_once_when_run_has_returned() {
    bounded(async {
        let store = InMemoryStore::new();
        let notes = Repository::<Note, _>::new(store.clone());
        notes.execute("N-1", Metadata::new(), open("fine")).await.unwrap();
        let poison = notes.execute("N-2", Metadata::new(), open("poison")).await.unwrap();
        let (projection, _) = titles();
        let runner = ProjectionRunner::new(projection, store.clone(), InMemoryReadModel::<Vec<String>>::new())
            .with_options(RunnerOptions {
                failure: FailurePolicy::Stop,
                ..RunnerOptions::default()
            });
        let progress = runner.progress();
        match progress.wait_for(poison.position(), Duration::from_millis(50)).await {
            Err(WaitError::Timeout { .. }) => {}
            other => panic!("before the start: {other:?}"),
        }
        let stopped = runner.run(store.wake_up(), std::future::pending()).await;
        assert!(matches!(stopped, Err(ProjectionError::Handler(_))), "{stopped:?}");
        let started = Instant::now();
        match progress.wait_for(poison.position(), Duration::from_secs(5)).await {
            Err(WaitError::Stopped { .. }) => {}
            other => panic!("after run returned: {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "at once: {:?}",
            started.elapsed()
        );
    })
    .await;
}

/// `RunnerOptions`: poll interval "Default: 500 ms"; failure "Default: 3 tries in a row, 200 ms
/// apart, then stop"; transient retry "Default: retry at once, then after 100 ms, doubling up to
/// every 5 s, without limit"; unknown events "Default: fail"; batch time budget "Default: 1 s".
/// `Backoff`: "The first failure is retried at once ...; the second after `initial`, each
/// further one after twice the previous pause, up to `max`."
#[test]
fn runner_options_and_backoff_defaults_are_the_documented_ones() {
    let options = RunnerOptions::default();
    assert_eq!(options.poll_interval, Duration::from_millis(500));
    assert_eq!(
        options.failure,
        FailurePolicy::Retry {
            attempts: 3,
            backoff: Duration::from_millis(200)
        }
    );
    assert_eq!(options.unknown_events, UnknownEvents::Fail);
    assert_eq!(options.batch_time_budget, Duration::from_secs(1));
    let backoff = options.transient_retry;
    assert_eq!(
        (backoff.initial, backoff.max, backoff.max_attempts),
        (Duration::from_millis(100), Duration::from_secs(5), None)
    );
    assert_eq!(backoff, Backoff::default());
    let delays: Vec<Duration> = (1..=9).map(|failures| backoff.delay(failures)).collect();
    let ms = |n| Duration::from_millis(n);
    assert_eq!(
        delays,
        vec![
            ms(0),
            ms(100),
            ms(200),
            ms(400),
            ms(800),
            ms(1600),
            ms(3200),
            ms(5000),
            ms(5000)
        ]
    );
}

/// `CatchUp::skipped`: "Events skipped: unknown ones under `UnknownEvents::Skip`, failing ones
/// under `FailurePolicy::Skip`"; `CatchUp::read`: "Stored events read: handed to the projection,
/// passed over, skipped or parked."
#[tokio::test]
async fn skipped_unknown_and_failing_events_are_counted_in_the_catch_up() {
    bounded(async {
        let store = InMemoryStore::new();
        let notes = Repository::<Note, _>::new(store.clone());
        notes.execute("N-1", Metadata::new(), open("fine")).await.unwrap();
        store
            .append(
                &note("N-1"),
                ExpectedVersion::Exact(1),
                vec![raw("NoteFromTheFuture", "{}")],
            )
            .await
            .unwrap();
        notes.execute("N-2", Metadata::new(), open("poison")).await.unwrap();
        let (projection, _) = titles();
        let runner = ProjectionRunner::new(projection, store.clone(), InMemoryReadModel::<Vec<String>>::new())
            .with_options(RunnerOptions {
                unknown_events: UnknownEvents::Skip,
                failure: FailurePolicy::Skip {
                    attempts: 1,
                    backoff: Duration::from_millis(1),
                },
                ..RunnerOptions::default()
            });
        let done = runner.catch_up().await.unwrap();
        assert_eq!(
            (done.read, done.handled, done.skipped, done.parked),
            (3, 1, 2, 0),
            "{done:?}"
        );
    })
    .await;
}

/// Records the schemas a PostgreSQL handler sees.
struct SchemasSeen {
    seen: Arc<Mutex<Vec<Vec<String>>>>,
}

#[async_trait]
impl Projection for SchemasSeen {
    const NAME: &'static str = "schemas-seen";
    const AGGREGATE_TYPES: &'static [&'static str] = &["note"];
    type Event = NoteEvent;
    type Context = sqlx::PgConnection;

    async fn handle(&self, db: &mut sqlx::PgConnection, _: &DecodedEvent<NoteEvent>) -> Result<(), HandlerError> {
        let schemas: Vec<String> = sqlx::query_scalar("SELECT current_schemas(false)::text[]")
            .fetch_one(&mut *db)
            .await?;
        self.seen.lock().unwrap().push(schemas);
        Ok(())
    }

    async fn reset(&self, _: &mut sqlx::PgConnection) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// es-postgres, "Projections": handlers write "with `search_path` set to the store's schema
/// alone"; README, "Tenants": "handlers see the tenant's schema alone, never `public`".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_handlers_see_the_stores_schema_alone_and_a_tenants_alone() {
    bounded(async {
        let pg = postgres().await;
        let acme = pg.store().tenant(&TenantId::new("acme").unwrap()).await.unwrap();
        assert_eq!(acme.schema(), format!("{}__acme", pg.store().schema()));
        for store in [pg.store().clone(), acme] {
            Repository::<Note, _>::new(store.clone())
                .execute("N-1", Metadata::new(), open("t"))
                .await
                .unwrap();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let runner = ProjectionRunner::new(SchemasSeen { seen: seen.clone() }, store.clone(), store.checkpoints());
            settled_log(&store).await;
            runner.catch_up().await.unwrap();
            let seen = seen.lock().unwrap().clone();
            assert_eq!(seen, vec![vec![store.schema().to_owned()]]);
        }
    })
    .await;
}

// =============================================================================================
// Events held back on PostgreSQL
// =============================================================================================

/// `GlobalLog::unsettled`: "How many events after `after` are committed but not in the global
/// log yet: held back until older write transactions still open end"; `GlobalLog::held_back_by`:
/// "on PostgreSQL the oldest session of the cluster with a write transaction open (its process
/// id, state, since when, application and statement) ... `None` when nothing does".
/// The write transaction is held for well under a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unsettled_counts_held_back_events_and_held_back_by_names_the_session() {
    on_postgres(|store| async move {
        let url = TestDatabase::get().unwrap().url().to_owned();
        let application = format!("docs-review-{}", Uuid::now_v7().simple());
        let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query(&format!("SET application_name = '{application}'"))
            .execute(&mut holder)
            .await
            .unwrap();
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut holder)
            .await
            .unwrap();

        let transaction = open_write_transaction(&mut holder).await;
        let appended = store
            .append(
                &note("H-1"),
                ExpectedVersion::NoStream,
                vec![raw("NoteOpened", r#"{"title":"t"}"#)],
            )
            .await;
        let unsettled = store.unsettled(0).await;
        let held_by = store.held_back_by().await;
        transaction.rollback().await.unwrap();
        appended.unwrap();
        assert!(
            unsettled.unwrap() >= 1,
            "the event is held back while the transaction is open"
        );
        let held_by = held_by.unwrap().expect("something holds the log back");
        // The oldest write transaction of the cluster may be another test's; when it is ours, it
        // is named with its process id and application.
        if held_by.contains(&pid.to_string()) {
            assert!(held_by.contains(&application), "names the application: {held_by}");
        }
        assert!(held_by.contains("session ") && held_by.contains("since"), "{held_by}");

        let deadline = Instant::now() + Duration::from_secs(10);
        while store.unsettled(0).await.unwrap() > 0 {
            assert!(Instant::now() < deadline, "settles once the transaction ended");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(whole_log(&store).await.len(), 1);
    })
    .await;
}

/// es-postgres, "`read_all` never skips": "Read-only transactions hold no xid and do not
/// matter".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_read_only_transaction_holds_nothing_back() {
    on_postgres(|store| async move {
        let url = TestDatabase::get().unwrap().url().to_owned();
        let mut reader = sqlx::PgConnection::connect(&url).await.unwrap();
        let mut transaction = reader.begin().await.unwrap();
        sqlx::query("SELECT count(*) FROM pg_class")
            .execute(&mut *transaction)
            .await
            .unwrap();
        store
            .append(
                &note("R-1"),
                ExpectedVersion::NoStream,
                vec![raw("NoteOpened", r#"{"title":"t"}"#)],
            )
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let seen = loop {
            if !whole_log(&store).await.is_empty() {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        transaction.rollback().await.unwrap();
        assert!(seen, "the event shows in the log while a read-only transaction is open");
    })
    .await;
}

/// `GlobalLog::unsettled`: "The default, for stores whose log shows each event as it commits, is
/// 0"; `held_back_by`: "`None` when nothing does"; es-sqlite: "Unlike PostgreSQL, no open
/// transaction holds readers back".
#[tokio::test]
async fn stores_whose_log_shows_each_commit_report_nothing_held_back() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let lite = sqlite_in(&dir).await;
        let memory = InMemoryStore::new();
        for id in ["N-1", "N-2"] {
            Repository::<Note, _>::new(lite.clone())
                .execute(id, Metadata::new(), open("t"))
                .await
                .unwrap();
            Repository::<Note, _>::new(memory.clone())
                .execute(id, Metadata::new(), open("t"))
                .await
                .unwrap();
        }
        assert_eq!(lite.unsettled(0).await.unwrap(), 0);
        assert_eq!(memory.unsettled(0).await.unwrap(), 0);
        assert_eq!(lite.held_back_by().await.unwrap(), None);
        assert_eq!(memory.held_back_by().await.unwrap(), None);
    })
    .await;
}

// =============================================================================================
// The `es` command line
// =============================================================================================

/// Runs `es` in-process on `cli` with `args` (after the program's name).
async fn es<S: es_cli::CliStore>(cli: Cli<S>, args: &[&str]) -> (Exit, String, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let all: Vec<&str> = std::iter::once("es").chain(args.iter().copied()).collect();
    let exit = tokio::time::timeout(Duration::from_secs(20), cli.execute(all, &mut out, &mut err))
        .await
        .expect("es ends in time");
    (exit, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

async fn two_version_note() -> InMemoryStore {
    let store = InMemoryStore::new();
    let notes = Repository::<Note, _>::new(store.clone());
    notes.execute("N-1", Metadata::new(), open("t")).await.unwrap();
    notes.execute("N-1", Metadata::new(), edit(1)).await.unwrap();
    store
}

fn note_cli(store: InMemoryStore) -> Cli<InMemoryStore> {
    Cli::new(store).aggregate::<Note>().unwrap().closing()
}

/// README, "The two commands": "A version past a stream's last (`state --version`, `diff`,
/// `events --from`) is not found (exit 3, naming the last)."
#[tokio::test]
async fn es_versions_past_the_last_are_not_found_naming_the_last() {
    bounded(async {
        let store = two_version_note().await;
        for args in [
            &["state", "note/N-1", "--version", "3"][..],
            &["diff", "note/N-1", "1", "3"],
            &["events", "note/N-1", "--from", "3"],
        ] {
            let (exit, _, err) = es(note_cli(store.clone()), args).await;
            assert_eq!(exit, Exit::NotFound, "{args:?}: {err}");
            assert!(err.contains("last version is 2"), "{args:?} names the last: {err}");
        }
    })
    .await;
}

/// es-cli, "Ranges": "`--to` past the last, and `--at` after the last event, mean the last."
#[tokio::test]
async fn es_to_past_the_last_and_at_after_the_last_mean_the_last() {
    bounded(async {
        let store = two_version_note().await;
        let (exit, out, err) = es(note_cli(store.clone()), &["--json", "events", "note/N-1", "--to", "99"]).await;
        assert_eq!(exit, Exit::Ok, "{err}");
        assert!(out.contains("NoteEdited"), "{out}");
        let (exit, out, err) = es(
            note_cli(store.clone()),
            &["--json", "state", "note/N-1", "--at", "2999-01-01T00:00:00Z"],
        )
        .await;
        assert_eq!(exit, Exit::Ok, "{err}");
        let (_, latest, _) = es(note_cli(store), &["--json", "state", "note/N-1"]).await;
        assert_eq!(out, latest, "the state at a future instant is the latest");
    })
    .await;
}

/// es-cli, "Ranges": "`events --from` after `--to` is a usage error"; `Exit`: 2 is "the command
/// line is wrong (... a reversed range)".
#[tokio::test]
async fn es_events_from_after_to_is_a_usage_error() {
    bounded(async {
        let store = two_version_note().await;
        let (exit, _, err) = es(note_cli(store), &["events", "note/N-1", "--from", "2", "--to", "1"]).await;
        assert_eq!(exit, Exit::Usage, "{err}");
    })
    .await;
}

/// `Exit`: 3 is "what was asked for does not exist (the store, a stream, a version past a
/// stream's last, an aggregate type, a projection)".
#[tokio::test]
async fn es_unknown_streams_aggregate_types_and_projections_are_not_found() {
    bounded(async {
        let store = two_version_note().await;
        for args in [
            &["state", "note/N-404"][..],
            &["events", "note/N-404"],
            &["state", "invoice/I-1"],
            &["rebuild", "no-such-projection"],
            &["parked", "no-such-projection"],
        ] {
            let (exit, _, err) = es(note_cli(store.clone()), args).await;
            assert_eq!(exit, Exit::NotFound, "{args:?}: {err}");
        }
    })
    .await;
}

/// `Cli::execute`: "Runs the command of `args` printing to `out` (results) and `err` (errors,
/// progress)." `es log --name` of a name no event of the program is stored as prints a note.
#[tokio::test]
async fn es_log_notes_an_unknown_name_on_the_given_error_writer() {
    bounded(async {
        let store = two_version_note().await;
        let (exit, _, err) = es(note_cli(store), &["log", "--name", "NoSuchEvent"]).await;
        assert_eq!(exit, Exit::Ok);
        assert!(err.contains("NoSuchEvent"), "the note is written to `err`: {err:?}");
    })
    .await;
}

/// es-cli: `es close ... --yes` ("(with `Cli::closing`)"), `close --help`: "Confirms: closing
/// cannot be undone"; `Exit`: 4 is "the store failed or cannot be reached". A change the
/// lifecycle refuses (an archived stream tombstoned) is the operator's mistake, not a store
/// failure.
#[tokio::test]
async fn es_close_needs_yes_and_a_change_backwards_is_not_a_store_failure() {
    bounded(async {
        let store = two_version_note().await;
        let close = |status: &'static str, yes: bool| {
            let mut args = vec!["close", "note/N-1", "--as", status, "--by", "ops", "--reason", "test"];
            if yes {
                args.push("--yes");
            }
            args
        };
        let (exit, _, err) = es(note_cli(store.clone()), &close("archived", false)).await;
        assert_eq!(exit, Exit::Usage, "{err}");
        assert!(
            store.stream_closure(&note("N-1")).await.unwrap().is_none(),
            "nothing closed"
        );
        let (exit, _, err) = es(note_cli(store.clone()), &close("archived", true)).await;
        assert_eq!(exit, Exit::Ok, "{err}");
        let (exit, _, err) = es(note_cli(store.clone()), &close("tombstoned", true)).await;
        assert_ne!(exit, Exit::Ok, "{err}");
        assert_ne!(
            exit,
            Exit::Store,
            "a refused change backwards is not a store failure: {err}"
        );
    })
    .await;
}

/// README, "Closing streams": "`es closed`" lists the audit of deletions; `closed --help`:
/// "Each record says how many events went."
#[tokio::test]
async fn es_closed_lists_deletions_with_who_why_and_how_many_events() {
    bounded(async {
        let store = two_version_note().await;
        let (exit, _, err) = es(
            note_cli(store.clone()),
            &[&["close", "note/N-1"][..], &ERASURE].concat(),
        )
        .await;
        assert_eq!(exit, Exit::Ok, "{err}");
        let (exit, out, err) = es(note_cli(store), &["--json", "closed"]).await;
        assert_eq!(exit, Exit::Ok, "{err}");
        let listed: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
        let record = &listed["closed"][0];
        assert_eq!(record["stream"], "note/N-1", "{out}");
        assert_eq!(record["by"], "dpo", "{out}");
        assert_eq!(record["reason"], "erasure #42", "{out}");
        assert_eq!(record["events"], 2, "{out}");
    })
    .await;
}

// =============================================================================================
// Personal data
// =============================================================================================

/// `es_core::pii`: "Writing personal data of a forgotten subject again is refused with a typed
/// error; carrying a field that reads as forgotten forward is not (it holds no data)."
/// `PiiStore::forget`: "A subject never seen gets the event too, returns `false`, and its
/// personal data is refused from then on."
#[tokio::test]
async fn a_forgotten_subject_takes_no_new_personal_data_but_forgotten_values_carry_forward() {
    bounded(async {
        let mut registry = EventRegistry::new();
        registry.register::<Person>().unwrap();
        let store = PiiStore::new(InMemoryStore::new(), InMemoryKeyStore::new(), registry);
        let people = Repository::<Person, _>::new(store.clone());
        let name = |name: Forgettable<String>| move |_: &Person| vec![PersonNamed { name: name.clone() }.into()];
        people
            .execute("P-1", Metadata::new(), name("Ada".into()))
            .await
            .unwrap();
        assert!(store.forget("person/P-1").await.unwrap(), "had a key");
        let refused = people.execute("P-1", Metadata::new(), name("Ada again".into())).await;
        assert!(
            matches!(
                refused,
                Err(CommandError::Repository(RepositoryError::Store(StoreError::Pii(_))))
            ),
            "{refused:?}"
        );
        people
            .execute("P-1", Metadata::new(), name(Forgettable::Forgotten))
            .await
            .expect("a forgotten value carried forward is stored");

        assert!(!store.forget("person/P-never").await.unwrap(), "never seen: no key");
        let refused = people.execute("P-never", Metadata::new(), name("Bob".into())).await;
        assert!(
            refused.is_err(),
            "personal data of a subject forgotten before it was seen: {refused:?}"
        );
    })
    .await;
}

/// README, "Forgettable personal data": "a `SubjectForgotten` event (stored as
/// `es.subject-forgotten`, in the stream `es.pii`/subject) tells projections to purge their
/// rows"; "those fields are stored encrypted".
#[tokio::test]
async fn forgetting_records_es_subject_forgotten_in_the_subjects_es_pii_stream() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let lite = sqlite_in(&dir).await;
        let mut registry = EventRegistry::new();
        registry.register::<Person>().unwrap();
        let store = PiiStore::new(lite.clone(), lite.clone(), registry);
        Repository::<Person, _>::new(store.clone())
            .execute("P-1", Metadata::new(), |_: &Person| {
                vec![PersonNamed {
                    name: "Ada Lovelace".into(),
                }
                .into()]
            })
            .await
            .unwrap();
        let stored = whole_log(&lite).await;
        assert!(
            !String::from_utf8_lossy(&stored[0].payload).contains("Lovelace"),
            "sealed as stored"
        );
        store.forget("person/P-1").await.unwrap();
        let log = whole_log(&lite).await;
        let record = log.last().unwrap();
        assert_eq!(record.stream, StreamId::new(FORGOTTEN_SUBJECTS, "person/P-1"));
        assert_eq!(
            (record.stream.aggregate_type.as_str(), record.event_name.as_str()),
            ("es.pii", "es.subject-forgotten")
        );
    })
    .await;
}

// =============================================================================================
// Tenants and the schema lock
// =============================================================================================

/// `TenantId`: "1 to `MAX_TENANT_ID_BYTES` of lowercase ASCII letters, digits and single
/// underscores, starting with a letter".
#[test]
fn tenant_ids_follow_the_documented_rule() {
    for valid in ["a", "acme", "acme_eu", "a1_b2", &"a".repeat(MAX_TENANT_ID_BYTES)] {
        assert!(TenantId::new(valid).is_ok(), "{valid:?} is valid");
    }
    for invalid in [
        "",
        "Acme",
        "1acme",
        "_acme",
        "acme__eu",
        "acme-eu",
        "acmé",
        &"a".repeat(MAX_TENANT_ID_BYTES + 1),
    ] {
        assert!(TenantId::new(invalid).is_err(), "{invalid:?} is refused");
    }
}

/// `TenantId` (as above): "single underscores between them, starting with a letter and not
/// ending with an underscore (`acme_eu`, not `acme__eu` or `acme_`)"; the refusal says so.
#[test]
fn a_tenant_id_ending_with_an_underscore_is_refused_as_documented() {
    assert!(TenantId::new("acme_eu").is_ok());
    for id in ["acme_", "acme__eu", "_acme", "1acme", "Acme"] {
        let refused = TenantId::new(id).expect_err(id);
        assert!(
            refused.to_string().contains("not ending with an underscore"),
            "{refused}"
        );
    }
}

/// README, "Tenants": "on SQLite a file of its own (`<file>.tenants/acme.db`) ...; each is
/// created and migrated on first use. A tenant's store cannot reach another tenant's streams".
#[tokio::test]
async fn a_sqlite_tenant_is_a_file_of_its_own_beside_the_main_one() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let main = sqlite_in(&dir).await;
        let acme = main.tenant(&TenantId::new("acme").unwrap()).await.unwrap();
        assert_eq!(acme.path(), dir.path().join("events.db.tenants").join("acme.db"));
        assert!(acme.path().is_file());
        Repository::<Note, _>::new(acme.clone())
            .execute("N-1", Metadata::new(), open("acme's"))
            .await
            .expect("migrated on first use");
        assert_eq!(main.stream_version(&note("N-1")).await.unwrap(), 0);
        let globex = main.tenant(&TenantId::new("globex").unwrap()).await.unwrap();
        assert_eq!(globex.stream_version(&note("N-1")).await.unwrap(), 0);
        assert!(whole_log(&globex).await.is_empty());
    })
    .await;
}

/// `es_core::pii`: "The schema lock traces a `Forgettable<T>` field as `any`."
#[test]
fn a_forgettable_field_traces_as_any() {
    let shape = es_core::schema::trace_shape::<PersonNamed>().expect("traced");
    let text = shape.to_string();
    assert!(text.contains("name: any"), "{text}");
}

/// README, "Projections in production": "a projection names the events it handles (`type
/// Event`) and the aggregates' full event sets it reads (`const SOURCE_EVENTS`): those it leaves
/// out are passed without decoding anything"; `Projection::SOURCE_EVENTS`: "passed without a
/// trace (and never decoded)". A left-out event whose payload would not decode is passed.
#[tokio::test]
async fn events_left_out_through_source_events_are_passed_without_decoding() {
    bounded(async {
        struct OpenedOnly;
        #[event]
        #[derive(Debug, Clone, PartialEq)]
        pub enum OpenedOnlyEvent {
            Opened(NoteOpened),
        }
        #[async_trait]
        impl Projection for OpenedOnly {
            const NAME: &'static str = "opened-only";
            const AGGREGATE_TYPES: &'static [&'static str] = &["note"];
            const SOURCE_EVENTS: &'static [&'static [EventDescriptor]] = &[NoteEvent::EVENTS];
            type Event = OpenedOnlyEvent;
            type Context = Vec<String>;
            async fn handle(
                &self,
                seen: &mut Vec<String>,
                event: &DecodedEvent<OpenedOnlyEvent>,
            ) -> Result<(), HandlerError> {
                let OpenedOnlyEvent::Opened(opened) = &event.event;
                seen.push(opened.title.clone());
                Ok(())
            }
            async fn reset(&self, seen: &mut Vec<String>) -> Result<(), HandlerError> {
                seen.clear();
                Ok(())
            }
        }
        let store = InMemoryStore::new();
        Repository::<Note, _>::new(store.clone())
            .execute("N-1", Metadata::new(), open("t"))
            .await
            .unwrap();
        store
            .append(
                &note("N-1"),
                ExpectedVersion::Any,
                vec![raw("NoteEdited", r#"{"text":7}"#)],
            )
            .await
            .unwrap();
        let model = InMemoryReadModel::<Vec<String>>::new();
        let runner = ProjectionRunner::new(OpenedOnly, store.clone(), model.clone());
        let done = runner
            .catch_up()
            .await
            .expect("the undecodable left-out event is passed");
        assert_eq!(model.read(|seen| seen.clone()), vec!["t"]);
        assert_eq!(done.handled, 1);
    })
    .await;
}
