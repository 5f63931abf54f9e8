//! An outside user's review of the production promises of the README ("Forgettable personal
//! data", "Closing streams", "Tenants", "Projections in production") and of seeds 003/004
//! (crypto-shredding, closing and retention, read-your-writes, idempotency, metadata, limits),
//! through the public API only, each scenario on SQLite and on PostgreSQL.
//!
//! The domains are the test's own: a `customer` whose name, e-mail and street are `#[pii]`
//! (subject: the stream), and an `issue` whose reporter's e-mail is `#[pii]` with the reporter
//! as subject (`#[event(subject = reporter_id)]`).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use es_core::lifecycle::{ClosedQuery, StreamChange, StreamClosed, StreamLifecycle, StreamStatus, STREAM_LIFECYCLE};
use es_core::pii::{Forgettable, KeyStore, PiiStore, SubjectForgotten, FORGOTTEN_SUBJECTS};
use es_core::tenancy::{TenantId, TenantStores, MAX_TENANT_ID_BYTES};
use es_core::{
    async_trait, event, Aggregate, AppendOutcome, Apply, AsOf, CommandError, Decision, DecodedEvent, EventDescriptor,
    EventRegistry, EventSet, EventStore, Executed, ExpectedVersion, GlobalLog, HandlerError, IdRef, InMemoryReadModel,
    Limit, LimitExceeded, Limits, Metadata, NewEvent, PollOnly, Projection, ProjectionRunner, RecordedEvent,
    Repository, RepositoryError, RunnerOptions, Snapshot, SnapshotStore, StoreError, StreamId, StreamSlice, WaitError,
};
use es_postgres::PostgresStore;
use es_sqlite::SqliteStore;
use es_test_support::{bounded, TestDatabase, TestSchema};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

// Of the helpers the Lead suites share, this suite uses `settle` alone.
#[allow(dead_code)]
mod support;

#[path = "support/review/mod.rs"]
mod review;

use crate::support::settle;
use review::running::run_until_stopped;
use review::stores::raw;

// ---------------------------------------------------------------------------------------------
// The customer: personal data of the stream's own subject.
// ---------------------------------------------------------------------------------------------

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerRegistered {
    #[pii]
    pub name: Forgettable<String>,
    #[pii]
    pub email: Forgettable<String>,
    pub country: String,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct AddressChanged {
    #[pii]
    pub street: Forgettable<String>,
    pub city: String,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct NoteAdded {
    pub text: String,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum CustomerEvent {
    Registered(CustomerRegistered),
    Moved(AddressChanged),
    Noted(NoteAdded),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "customer", event = CustomerEvent)]
pub struct Customer {
    pub registered: bool,
    pub name: Forgettable<String>,
    pub email: Forgettable<String>,
    pub street: Forgettable<String>,
    pub city: String,
    pub country: String,
    pub notes: Vec<String>,
}

impl Apply<CustomerRegistered> for Customer {
    fn apply(&mut self, event: &CustomerRegistered) {
        self.registered = true;
        self.name = event.name.clone();
        self.email = event.email.clone();
        self.country = event.country.clone();
    }
}
impl Apply<AddressChanged> for Customer {
    fn apply(&mut self, event: &AddressChanged) {
        self.street = event.street.clone();
        self.city = event.city.clone();
    }
}
impl Apply<NoteAdded> for Customer {
    fn apply(&mut self, event: &NoteAdded) {
        self.notes.push(event.text.clone());
    }
}

impl Customer {
    fn register(&self, name: &str, email: &str, country: &str) -> Result<Vec<CustomerEvent>, String> {
        if self.registered {
            return Err("already registered".into());
        }
        Ok(vec![CustomerRegistered {
            name: name.into(),
            email: email.into(),
            country: country.into(),
        }
        .into()])
    }

    fn move_to(&self, street: &str, city: &str) -> Vec<CustomerEvent> {
        vec![AddressChanged {
            street: street.into(),
            city: city.into(),
        }
        .into()]
    }

    fn note(&self, text: &str) -> Vec<CustomerEvent> {
        vec![NoteAdded { text: text.into() }.into()]
    }
}

// ---------------------------------------------------------------------------------------------
// The issue: personal data of another subject, named by a field (seed 004's reporter).
// ---------------------------------------------------------------------------------------------

#[event(subject = reporter_id)]
#[derive(Debug, Clone, PartialEq)]
pub struct IssueReported {
    pub reporter_id: String,
    #[pii]
    pub reporter_email: Forgettable<String>,
    pub title: String,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct IssueResolved {
    pub resolution: String,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum IssueEvent {
    Reported(IssueReported),
    Resolved(IssueResolved),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "issue", event = IssueEvent)]
pub struct Issue {
    pub reporter_id: String,
    pub reporter_email: Forgettable<String>,
    pub title: String,
    pub resolved: bool,
}

impl Apply<IssueReported> for Issue {
    fn apply(&mut self, event: &IssueReported) {
        self.reporter_id = event.reporter_id.clone();
        self.reporter_email = event.reporter_email.clone();
        self.title = event.title.clone();
    }
}
impl Apply<IssueResolved> for Issue {
    fn apply(&mut self, _: &IssueResolved) {
        self.resolved = true;
    }
}

fn report(reporter: &str, email: &str, title: &str) -> Vec<IssueEvent> {
    vec![IssueReported {
        reporter_id: reporter.into(),
        reporter_email: email.into(),
        title: title.into(),
    }
    .into()]
}

// ---------------------------------------------------------------------------------------------
// A directory read model: names by customer, purged on forgetting and on deletion.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Directory {
    /// Known names by customer id.
    pub names: BTreeMap<String, String>,
    /// Every registration handled: (customer, name as the projection saw it).
    pub seen: Vec<(String, Forgettable<String>)>,
    /// The metadata of every registration handled.
    pub metadata: Vec<Metadata>,
    /// Subjects the projection was told were forgotten.
    pub forgotten: Vec<String>,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum DirectoryEvent {
    Registered(CustomerRegistered),
    Forgotten(SubjectForgotten),
    Closed(StreamClosed),
}

struct DirectoryProjection;

#[async_trait]
impl Projection for DirectoryProjection {
    const NAME: &'static str = "customer-directory";
    const AGGREGATE_TYPES: &'static [&'static str] = &["customer", FORGOTTEN_SUBJECTS, STREAM_LIFECYCLE];
    const SOURCE_EVENTS: &'static [&'static [EventDescriptor]] = &[CustomerEvent::EVENTS];
    type Event = DirectoryEvent;
    type Context = Directory;

    async fn handle(&self, model: &mut Directory, event: &DecodedEvent<DirectoryEvent>) -> Result<(), HandlerError> {
        let id = event.envelope.stream.aggregate_id.clone();
        match &event.event {
            DirectoryEvent::Registered(registered) => {
                model.seen.push((id.clone(), registered.name.clone()));
                model.metadata.push(event.envelope.metadata.clone());
                if let Some(name) = registered.name.known() {
                    model.names.insert(id, name.clone());
                }
            }
            DirectoryEvent::Forgotten(forgotten) => {
                model.forgotten.push(forgotten.subject.clone());
                if let Some(customer) = forgotten.subject.strip_prefix("customer/") {
                    model.names.remove(customer);
                }
            }
            DirectoryEvent::Closed(closed) => {
                if closed.status == StreamStatus::Deleted && closed.aggregate_type == "customer" {
                    model.names.remove(&closed.aggregate_id);
                }
            }
        }
        Ok(())
    }

    async fn reset(&self, model: &mut Directory) -> Result<(), HandlerError> {
        *model = Directory::default();
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The two backends.
// ---------------------------------------------------------------------------------------------

/// What the scenarios need of a backend: its store, everything it holds as text (to look for
/// plaintext where it must not be), and the `es` command line pointed at it.
#[async_trait]
trait Backend: Send + Sync {
    type Store: EventStore
        + GlobalLog
        + SnapshotStore
        + StreamLifecycle
        + KeyStore
        + TenantStores<Store = Self::Store>
        + Clone
        + 'static;

    fn store(&self) -> Self::Store;

    /// Every row of every table (and, on SQLite, every byte of the files), as text.
    async fn raw_dump(&self) -> String;

    /// The examples' `es` binary on this store.
    fn es(&self, args: &[&str]) -> Command;
}

struct Sqlite {
    _dir: tempfile::TempDir,
    path: PathBuf,
    store: SqliteStore,
}

impl Sqlite {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("production.db");
        let store = SqliteStore::open(&path).await.expect("open");
        store.migrate().await.expect("migrate");
        Self { _dir: dir, path, store }
    }
}

#[async_trait]
impl Backend for Sqlite {
    type Store = SqliteStore;

    fn store(&self) -> SqliteStore {
        self.store.clone()
    }

    async fn raw_dump(&self) -> String {
        let mut dump = String::new();
        let dir = self.path.parent().expect("a directory");
        let mut files = vec![];
        collect_files(dir, &mut files);
        for file in files {
            let bytes = std::fs::read(&file).unwrap_or_default();
            dump.push_str(&String::from_utf8_lossy(&bytes));
        }
        dump
    }

    fn es(&self, args: &[&str]) -> Command {
        let mut command = Command::new(assert_cmd::cargo::cargo_bin("es"));
        command
            .env_remove("DATABASE_URL")
            .env_remove("ES_EXAMPLES_DB")
            .arg("--db")
            .arg(&self.path)
            .args(args);
        command
    }
}

fn collect_files(dir: &std::path::Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a readable directory").flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, files);
        } else {
            files.push(path);
        }
    }
}

struct Postgres {
    schema: TestSchema,
}

impl Postgres {
    async fn new() -> Self {
        let schema = TestDatabase::get()
            .expect("a PostgreSQL server (DATABASE_URL)")
            .schema()
            .await
            .expect("a fresh schema");
        Self { schema }
    }
}

#[async_trait]
impl Backend for Postgres {
    type Store = PostgresStore;

    fn store(&self) -> PostgresStore {
        self.schema.store().clone()
    }

    async fn raw_dump(&self) -> String {
        let store = self.schema.store();
        let tables: Vec<(String, String)> = sqlx::query_as(
            "SELECT table_schema::text, table_name::text FROM information_schema.tables \
             WHERE table_schema = $1 OR starts_with(table_schema, $1 || '__')",
        )
        .bind(store.schema())
        .fetch_all(store.pool())
        .await
        .expect("tables");
        let mut dump = String::new();
        for (schema, table) in tables {
            let rows: Option<String> = sqlx::query_scalar(&format!(
                "SELECT string_agg(row_to_json(t)::text, E'\\n') FROM \"{schema}\".\"{table}\" t"
            ))
            .fetch_one(store.pool())
            .await
            .expect("rows");
            dump.push_str(&rows.unwrap_or_default());
            dump.push('\n');
        }
        dump
    }

    fn es(&self, args: &[&str]) -> Command {
        let mut command = Command::new(assert_cmd::cargo::cargo_bin("es"));
        command
            .env_remove("ES_EXAMPLES_DB")
            .env("DATABASE_URL", TestDatabase::get().expect("a server").url())
            .env("ES_EXAMPLES_SCHEMA", self.schema.store().schema())
            .args(args);
        command
    }
}

/// Whether `dump` holds `secret`, as text or as the hex of its bytes (PostgreSQL's `bytea`).
fn holds(dump: &str, secret: &str) -> bool {
    let hex: String = secret.bytes().map(|byte| format!("{byte:02x}")).collect();
    dump.contains(secret) || dump.contains(&hex)
}

/// `store` sealing the `#[pii]` fields of customers and issues with the keys it keeps itself.
fn sealed<S: EventStore + KeyStore + Clone>(store: S) -> PiiStore<S, S> {
    let mut registry = EventRegistry::new();
    registry.register::<Customer>().expect("customer registered");
    registry.register::<Issue>().expect("issue registered");
    PiiStore::new(store.clone(), store, registry)
}

fn customer(id: &str) -> StreamId {
    StreamId::new("customer", id)
}

fn change(reason: &str) -> StreamChange {
    StreamChange::new("dpo@example.com", reason)
}

/// One stored event as `EventStore::replay_stream` lends it: version, name, payload.
#[derive(Debug, Clone, PartialEq)]
struct Replayed {
    version: u64,
    name: String,
    payload: Value,
}

/// The events of `stream` through `replay_stream` (the stream read that needs no `futures`
/// crate: `read_stream` and `read_archived` return a `BoxStream` that only a `futures` trait
/// can poll).
async fn stream_events<S: EventStore>(store: &S, stream: &StreamId) -> Vec<Replayed> {
    let mut events = Vec::new();
    store
        .replay_stream(stream, StreamSlice::all(), &mut |event| {
            events.push(Replayed {
                version: event.version,
                name: event.event_name.to_owned(),
                payload: serde_json::from_slice(event.payload).expect("a JSON payload"),
            });
            std::ops::ControlFlow::Continue(())
        })
        .await
        .expect("stream read");
    events
}

/// Every event of the global log, in order (PostgreSQL: once every earlier commit is visible).
async fn whole_log<S: EventStore + GlobalLog>(store: &S) -> Vec<RecordedEvent> {
    settle(store).await;
    let mut events = Vec::new();
    loop {
        let after = events.last().map_or(0, |event: &RecordedEvent| event.position);
        let page = store.read_all(after, 1000).await.expect("global read");
        if page.is_empty() {
            return events;
        }
        events.extend(page);
    }
}

fn payload(event: &RecordedEvent) -> Value {
    serde_json::from_slice(&event.payload).expect("a JSON payload")
}

fn forgotten_marker() -> Value {
    json!({ "$forgotten": true })
}

/// The `SubjectForgotten` events of `subject` in the global log of `store`.
async fn told_forgotten<S: EventStore + GlobalLog>(store: &S, subject: &str) -> Vec<RecordedEvent> {
    let told = StreamId::new(FORGOTTEN_SUBJECTS, subject);
    whole_log(store)
        .await
        .into_iter()
        .filter(|event| event.stream == told)
        .collect()
}

/// The latest snapshot of `stream` that `store` can open, if any.
async fn snapshot_of<S: SnapshotStore>(store: &S, stream: &StreamId) -> Option<Snapshot> {
    store.load_snapshot(stream).await.expect("a snapshot read")
}

/// Appends a note to customer `id` as a raw event, expecting `expected`: what the store answers.
async fn append_note<S: EventStore>(
    store: &S,
    id: &str,
    expected: ExpectedVersion,
) -> Result<AppendOutcome, StoreError> {
    let note = raw("NoteAdded", r#"{"text":"a note"}"#);
    store.append(&customer(id), expected, vec![note]).await
}

/// Runs `decide` on aggregate `id` as a command without metadata, which must be accepted; `what`
/// names it if it is not.
async fn accepted<A, S, D>(repo: &Repository<A, S>, id: &str, what: &str, decide: impl FnMut(&A) -> D) -> Executed<A>
where
    A: Aggregate,
    S: EventStore,
    str: IdRef<A::Id>,
    D: Decision<A::Event>,
    D::Error: std::fmt::Debug,
{
    repo.execute(id, Metadata::new(), decide)
        .await
        .unwrap_or_else(|error| panic!("{what}: {error:?}"))
}

/// A runner of the customer directory, reading `S`, keeping the model in memory.
type DirectoryRunner<S> = ProjectionRunner<DirectoryProjection, S, InMemoryReadModel<Directory>>;

/// A runner of the customer directory on `store`, and the model it fills.
fn directory_on<S: GlobalLog + Clone>(store: &S) -> (DirectoryRunner<S>, InMemoryReadModel<Directory>) {
    let model = InMemoryReadModel::<Directory>::new();
    (
        ProjectionRunner::new(DirectoryProjection, store.clone(), model.clone()),
        model,
    )
}

/// Catches `directory` up with everything appended to `store` so far.
async fn catch_up_directory<S: EventStore + GlobalLog>(directory: &DirectoryRunner<S>, store: &S) {
    settle(store).await;
    directory.catch_up().await.expect("the directory caught up");
}

async fn on_sqlite<F, Fut>(scenario: F)
where
    F: FnOnce(Sqlite) -> Fut,
    Fut: Future<Output = ()>,
{
    bounded(async { scenario(Sqlite::new().await).await }).await
}

async fn on_postgres<F, Fut>(scenario: F)
where
    F: FnOnce(Postgres) -> Fut,
    Fut: Future<Output = ()>,
{
    bounded(async { scenario(Postgres::new().await).await }).await
}

// ---------------------------------------------------------------------------------------------
// 1. Forgetting a data subject: every read path.
// ---------------------------------------------------------------------------------------------

const NAME: &str = "Jeong Da-eun 정다은";
const EMAIL: &str = "da-eun.jeong@example.kr";
const STREET: &str = "12 Teheran-ro 테헤란로";
const OTHER_NAME: &str = "Ada Lovelace";

/// README: "`PiiStore::forget(subject)` destroys the key: the fields then read as `Forgotten`
/// everywhere, loading and projections keep working, and a `SubjectForgotten` event tells
/// projections to purge their rows." es_core::pii: "every copy of the data, in every event,
/// snapshot and backup of the events, becomes unreadable at once, while the rest of each event
/// stays plain JSON".
async fn forgetting_hides_personal_data_everywhere<B: Backend>(backend: B) {
    let store = sealed(backend.store());
    let customers = Repository::<Customer, _>::new(store.clone()).with_snapshot_every(2);
    customers
        .execute("C-1", Metadata::new().with_actor("signup"), |c: &Customer| {
            c.register(NAME, EMAIL, "KR")
        })
        .await
        .expect("registered");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    accepted(&customers, "C-1", "moved", |c| c.move_to(STREET, "Seoul")).await;
    accepted(&customers, "C-1", "noted", |c| c.note("prefers e-mail")).await;
    let other_customer = |c: &Customer| c.register(OTHER_NAME, "ada@example.com", "UK");
    accepted(&customers, "C-2", "another customer", other_customer).await;
    let stream = customer("C-1");

    // Before: readable through the sealed store, never stored in plaintext.
    let before = customers.load("C-1").await.expect("load").aggregate;
    assert_eq!(before.name.known().map(String::as_str), Some(NAME));
    assert!(
        snapshot_of(&store, &stream).await.is_some(),
        "a snapshot every 2 events"
    );
    let dump = backend.raw_dump().await;
    for secret in [NAME, EMAIL, STREET, OTHER_NAME] {
        assert!(!holds(&dump, secret), "`{secret}` is stored in plaintext");
    }
    assert!(dump.contains("prefers e-mail"), "non-personal data stays plain");
    let (directory, model) = directory_on(&store);
    catch_up_directory(&directory, &store).await;
    assert_eq!(model.read(|m| m.names.get("C-1").cloned()).as_deref(), Some(NAME));

    assert!(store.forget("customer/C-1").await.expect("forgets"), "C-1 had a key");

    // Loading: the personal fields are forgotten, the rest intact, the version unchanged.
    let now = customers.load("C-1").await.expect("a forgotten customer still loads");
    assert_eq!(now.version, 3);
    let state = now.aggregate;
    assert!(
        state.name.is_forgotten() && state.email.is_forgotten() && state.street.is_forgotten(),
        "{state:?}"
    );
    assert_eq!(
        (state.city.as_str(), state.country.as_str(), state.notes.clone()),
        ("Seoul", "KR", vec!["prefers e-mail".to_owned()])
    );
    // Time travel, by version and by instant.
    let v1 = customers.load_at_version("C-1", 1).await.expect("v1").aggregate;
    assert!(
        v1.registered && v1.name.is_forgotten() && v1.email.is_forgotten(),
        "{v1:?}"
    );
    assert_eq!(v1.country, "KR");
    let then = customers.load_at_instant("C-1", between).await.expect("at an instant");
    assert_eq!(then.version, 1);
    assert!(then.aggregate.name.is_forgotten());
    // Snapshots: the sealed one is ignored, nothing opens it.
    assert!(
        snapshot_of(&store, &stream).await.is_none(),
        "a snapshot sealed for a forgotten subject is no snapshot"
    );
    // The repository's event listing, stream reads, reads by id.
    let listed = customers.events("C-1", StreamSlice::all()).await.expect("events");
    match &listed[0].event {
        CustomerEvent::Registered(registered) => {
            assert!(registered.name.is_forgotten() && registered.email.is_forgotten());
            assert_eq!(registered.country, "KR");
        }
        other => panic!("the first event: {other:?}"),
    }
    let events = stream_events(&store, &stream).await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].payload["name"], forgotten_marker());
    assert_eq!(events[0].payload["email"], forgotten_marker());
    assert_eq!(events[0].payload["country"], "KR");
    assert_eq!(events[1].payload["street"], forgotten_marker());
    assert_eq!(events[1].payload["city"], "Seoul");
    let by_id = store
        .read_event(listed[0].envelope.event_id)
        .await
        .expect("read by id")
        .expect("stored");
    assert_eq!(payload(&by_id)["name"], forgotten_marker());
    // The global log: forgotten for C-1, known for C-2, and the SubjectForgotten event.
    let log = whole_log(&store).await;
    let text: String = log
        .iter()
        .map(|event| String::from_utf8_lossy(&event.payload).into_owned())
        .collect();
    for secret in [NAME, EMAIL, STREET] {
        assert!(!text.contains(secret), "`{secret}` in the global log");
    }
    assert!(text.contains(OTHER_NAME), "another customer's name stays readable");
    let told = told_forgotten(&store, "customer/C-1").await;
    assert_eq!(told.len(), 1, "one SubjectForgotten event");
    assert_eq!(payload(&told[0])["subject"], "customer/C-1");
    // A live projection purges; a rebuilt one never sees the name again.
    catch_up_directory(&directory, &store).await;
    model.read(|m| {
        assert!(!m.names.contains_key("C-1"), "{m:?}");
        assert_eq!(m.names.get("C-2").map(String::as_str), Some(OTHER_NAME));
        assert_eq!(m.forgotten, vec!["customer/C-1".to_owned()]);
    });
    directory.rebuild(|_| {}).await.expect("rebuilt");
    model.read(|m| {
        assert!(!m.names.contains_key("C-1"), "{m:?}");
        assert!(m.seen.contains(&("C-1".to_owned(), Forgettable::Forgotten)), "{m:?}");
        assert_eq!(m.names.get("C-2").map(String::as_str), Some(OTHER_NAME));
    });
    // Still nothing in plaintext anywhere.
    let dump = backend.raw_dump().await;
    for secret in [NAME, EMAIL, STREET] {
        assert!(!holds(&dump, secret), "`{secret}` is stored in plaintext");
    }

    // The customer still takes commands that carry no personal data...
    let noted = accepted(&customers, "C-1", "a command without personal data", |c| {
        c.note("account closed")
    })
    .await;
    assert_eq!(noted.version, 4);
    // ...and refuses, typed, new personal data of the forgotten subject, writing nothing.
    match customers
        .execute("C-1", Metadata::new(), |c: &Customer| {
            c.move_to("1 New Street", "Busan")
        })
        .await
    {
        Err(CommandError::Repository(RepositoryError::Store(StoreError::Pii(error)))) => {
            assert!(error.to_string().contains("customer/C-1"), "{error}")
        }
        other => panic!("personal data of a forgotten subject: {other:?}"),
    }
    assert_eq!(customers.load("C-1").await.expect("load").version, 4);
    let other = customers.load("C-2").await.expect("load").aggregate;
    assert_eq!(other.name.known().map(String::as_str), Some(OTHER_NAME));
}

// ---------------------------------------------------------------------------------------------
// 2. Forgetting twice, forgetting a subject the store never saw.
// ---------------------------------------------------------------------------------------------

/// `PiiStore::forget`: "Whether the subject had a key. Forgetting again does no harm."
/// `KeyStore::key_for_writing`: "A forgotten subject has no key and gets none".
async fn forgetting_twice_and_unknown_subjects<B: Backend>(backend: B) {
    let store = sealed(backend.store());
    let customers = Repository::<Customer, _>::new(store.clone());
    let id = "고객-😀";
    accepted(&customers, id, "registered", |c| c.register(NAME, EMAIL, "KR")).await;
    let subject = format!("customer/{id}");
    assert!(store.forget(&subject).await.expect("first forget"), "it had a key");
    assert!(
        !store.forget(&subject).await.expect("forgetting again does no harm"),
        "no key the second time"
    );
    let state = customers.load(id).await.expect("still loads").aggregate;
    assert!(state.name.is_forgotten() && state.registered, "{state:?}");
    let told = told_forgotten(&store, &subject).await.len();
    assert!(told >= 1, "a SubjectForgotten event for {subject}");

    // A subject the store never saw: no key, no error.
    let unknown = "customer/never-seen";
    assert!(!store.forget(unknown).await.expect("forgetting an unknown subject"));
    assert!(
        customers.load("never-seen").await.expect("loads").version == 0,
        "nothing was written to the customer's own stream"
    );
    let told_unknown = told_forgotten(&store, unknown).await.len();
    // Whatever the log says about it, the store must agree with itself: if projections were
    // told the subject is forgotten, its personal data is refused from now on; if they were
    // not, it is accepted and readable.
    let written = customers
        .execute("never-seen", Metadata::new(), |c: &Customer| {
            c.register("Late Comer", "late@example.com", "FR")
        })
        .await;
    match (told_unknown, written) {
        (0, Ok(_)) => {
            let state = customers.load("never-seen").await.expect("loads").aggregate;
            assert_eq!(state.name.known().map(String::as_str), Some("Late Comer"));
        }
        (n, Err(CommandError::Repository(RepositoryError::Store(StoreError::Pii(_))))) if n > 0 => {}
        (n, outcome) => panic!(
            "forgetting an unknown subject told projections {n} time(s), then its personal data was: {outcome:?}"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// 3. A subject named by a field: one person's data across many streams.
// ---------------------------------------------------------------------------------------------

/// es_core::event: "`subject = field` | the field whose value names the data subject of the
/// `#[pii]` fields"; es_core::pii: "snapshots of streams holding personal data are sealed whole,
/// with a key that needs every subject's key"; `PiiError`: "The event names its subject by a
/// field, and the payload lacks it" / "The event's payload is not a JSON object".
async fn a_subject_named_by_a_field<B: Backend>(backend: B) {
    let store = sealed(backend.store());
    let issues = Repository::<Issue, _>::new(store.clone()).with_snapshot_every(1);
    for (id, reporter, email) in [
        ("I-1", "person-7", "seven@example.com"),
        ("I-2", "person-7", "seven@example.com"),
        ("I-3", "person-8", "eight@example.com"),
    ] {
        accepted(&issues, id, "reported", |_| report(reporter, email, "printer on fire")).await;
        let resolved = IssueResolved {
            resolution: "replaced".into(),
        };
        accepted(&issues, id, "resolved", |_| vec![IssueEvent::from(resolved.clone())]).await;
    }
    assert!(snapshot_of(&store, &StreamId::new("issue", "I-1")).await.is_some());
    assert!(!holds(&backend.raw_dump().await, "seven@example.com"));

    assert!(store.forget("person-7").await.expect("forgets"));
    for id in ["I-1", "I-2"] {
        let issue = issues.load(id).await.expect("loads");
        assert_eq!(issue.version, 2);
        let state = issue.aggregate;
        assert!(state.reporter_email.is_forgotten(), "{id}: {state:?}");
        assert_eq!(
            (state.reporter_id.as_str(), state.title.as_str(), state.resolved),
            ("person-7", "printer on fire", true),
            "the subject id and everything else stay readable"
        );
        assert!(
            snapshot_of(&store, &StreamId::new("issue", id)).await.is_none(),
            "{id}'s snapshot held person-7's data"
        );
    }
    let kept = issues.load("I-3").await.expect("loads").aggregate;
    assert_eq!(
        kept.reporter_email.known().map(String::as_str),
        Some("eight@example.com")
    );
    assert!(snapshot_of(&store, &StreamId::new("issue", "I-3")).await.is_some());
    // The stream of an issue is no subject of its own here: forgetting it does not touch the
    // reporter's data.
    assert!(!store.forget("issue/I-3").await.expect("forget the stream"));
    let kept = issues.load("I-3").await.expect("loads").aggregate;
    assert_eq!(
        kept.reporter_email.known().map(String::as_str),
        Some("eight@example.com")
    );

    // Payloads the store cannot seal are refused, typed, before anything is written.
    let stream = StreamId::new("issue", "I-raw");
    let refused = store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![raw(
                "IssueReported",
                r#"{"reporter_email":"x@example.com","title":"no reporter"}"#,
            )],
        )
        .await;
    assert!(matches!(refused, Err(StoreError::Pii(_))), "{refused:?}");
    let refused = store
        .append(&stream, ExpectedVersion::NoStream, vec![raw("IssueReported", "[1, 2]")])
        .await;
    assert!(matches!(refused, Err(StoreError::Pii(_))), "{refused:?}");
    assert_eq!(store.stream_version(&stream).await.expect("version"), 0);
}

// ---------------------------------------------------------------------------------------------
// 4. Closing streams: tombstones, archives, deletions.
// ---------------------------------------------------------------------------------------------

#[track_caller]
fn assert_refused_closed<T: std::fmt::Debug>(result: Result<T, StoreError>, status: StreamStatus, reason: &str) {
    match result {
        Err(StoreError::StreamClosed(closed)) => {
            assert_eq!(closed.status, status);
            assert_eq!(closed.actor, "dpo@example.com");
            assert_eq!(closed.reason, reason);
        }
        other => panic!("expected StoreError::StreamClosed ({status}), got {other:?}"),
    }
}

/// The record a close returned: closed `as` that status, at that stream version, moving or
/// removing that many events.
#[track_caller]
fn assert_closed(
    result: Result<StreamClosed, StoreError>,
    status: StreamStatus,
    version: u64,
    events: u64,
) -> StreamClosed {
    let closed = result.unwrap_or_else(|error| panic!("closing as {status}: {error:?}"));
    assert_eq!(
        (closed.status, closed.version, closed.events),
        (status, version, events)
    );
    closed
}

/// README "Closing streams" and es_core::lifecycle: tombstoned streams refuse appends
/// (`StoreError::StreamClosed`) and keep their events; archived ones leave the hot table and
/// keep their global positions; deleted ones leave the global log, keep an audit record, and
/// their id is never reused; a change to the same status returns the existing record and writes
/// nothing; a change backwards is refused; projections purge deleted streams, live and rebuilt.
async fn closing_streams<B: Backend>(backend: B) {
    let store = backend.store();
    let customers = Repository::<Customer, _>::new(store.clone()).with_snapshot_every(2);
    for id in ["C-T", "C-A", "C-D", "C-O"] {
        accepted(&customers, id, "registered", |c| c.register(id, "x@example.com", "KR")).await;
        accepted(&customers, id, "noted", |c| c.note("first note")).await;
    }
    let (directory, model) = directory_on(&store);
    catch_up_directory(&directory, &store).await;
    assert_eq!(model.read(|m| m.names.len()), 4);
    let log_before = whole_log(&store).await;
    let positions_of = |log: &[RecordedEvent], id: &str| -> Vec<u64> {
        log.iter()
            .filter(|event| event.stream == customer(id))
            .map(|event| event.position)
            .collect()
    };

    // Tombstone: appends refused whatever the expectation, events stay, loads say why.
    let last_of_c_t = {
        let event = log_before
            .iter()
            .rfind(|event| event.stream == customer("C-T"))
            .expect("C-T's last event");
        NewEvent {
            event_id: event.event_id,
            event_name: event.event_name.clone(),
            schema_version: event.schema_version,
            payload: event.payload.clone(),
            metadata: event.metadata.clone(),
        }
    };
    let started = Utc::now();
    let tombstoned = assert_closed(
        store.tombstone(&customer("C-T"), change("duplicate of C-O")).await,
        StreamStatus::Tombstoned,
        2,
        0,
    );
    assert!(tombstoned.at >= started - chrono::Duration::seconds(5));
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::Exact(2),
        ExpectedVersion::StreamExists,
        ExpectedVersion::NoStream,
    ] {
        let refused = append_note(&store, "C-T", expected).await;
        assert_refused_closed(refused, StreamStatus::Tombstoned, "duplicate of C-O");
    }
    assert_eq!(stream_events(&store, &customer("C-T")).await.len(), 2, "events stay");
    match customers.load("C-T").await {
        Err(RepositoryError::StreamClosed(closed)) => assert_eq!(*closed, tombstoned),
        other => panic!("loading a tombstoned customer: {other:?}"),
    }
    assert_eq!(
        customers
            .load_closed("C-T", AsOf::Version(1))
            .await
            .expect("load_closed")
            .version,
        1
    );
    // A batch stored before the tombstone, sent again (its answer was lost): recognised.
    let resent = store
        .append(&customer("C-T"), ExpectedVersion::Exact(1), vec![last_of_c_t.clone()])
        .await
        .expect("a retried batch is recognised, closed stream or not");
    assert!(resent.already_stored && resent.new_version == 2, "{resent:?}");
    // Again: the same record, nothing written.
    let again = store
        .tombstone(&customer("C-T"), change("asked twice"))
        .await
        .expect("tombstoning again");
    assert_eq!(again, tombstoned, "the existing record");

    // Archive: out of the stream reads, same positions in the global log, snapshot dropped.
    assert_closed(
        store.archive(&customer("C-A"), change("closed in 2019")).await,
        StreamStatus::Archived,
        2,
        2,
    );
    assert!(stream_events(&store, &customer("C-A")).await.is_empty());
    assert!(snapshot_of(&store, &customer("C-A")).await.is_none());
    let log_archived = whole_log(&store).await;
    assert_eq!(positions_of(&log_archived, "C-A"), positions_of(&log_before, "C-A"));
    let old = customers
        .load_closed("C-A", AsOf::Latest)
        .await
        .expect("from the archive");
    assert_eq!((old.version, old.aggregate.notes.len()), (2, 1));
    let refused = append_note(&store, "C-A", ExpectedVersion::Any).await;
    assert_refused_closed(refused, StreamStatus::Archived, "closed in 2019");
    // Backwards is refused; "open" is no change at all; the record streams cannot be closed.
    assert_refused_closed(
        store.tombstone(&customer("C-A"), change("backwards")).await,
        StreamStatus::Archived,
        "closed in 2019",
    );
    let reopened = store
        .close(&customer("C-O"), StreamStatus::Open, change("reopen"))
        .await;
    assert!(matches!(reopened, Err(StoreError::InvalidBatch { .. })), "{reopened:?}");
    let record_stream = StreamId::new(STREAM_LIFECYCLE, "customer/C-T");
    let meta = store.delete_stream(&record_stream, change("hide the audit")).await;
    assert!(matches!(meta, Err(StoreError::InvalidBatch { .. })), "{meta:?}");

    // Delete: gone from the log, the audit record stays, the id is never reused.
    let deleted_ids: Vec<Uuid> = customers
        .events("C-D", StreamSlice::all())
        .await
        .expect("events")
        .iter()
        .map(|event| event.envelope.event_id)
        .collect();
    let deleted = assert_closed(
        store
            .delete_stream(&customer("C-D"), change("erasure request #42"))
            .await,
        StreamStatus::Deleted,
        2,
        2,
    );
    assert_eq!(store.stream_version(&customer("C-D")).await.expect("version"), 0);
    for id in &deleted_ids {
        assert!(
            store.read_event(*id).await.expect("read by id").is_none(),
            "{id} still readable"
        );
    }
    let log_deleted = whole_log(&store).await;
    assert!(
        positions_of(&log_deleted, "C-D").is_empty(),
        "deleted events left the global log"
    );
    assert_eq!(positions_of(&log_deleted, "C-A"), positions_of(&log_before, "C-A"));
    assert!(snapshot_of(&store, &customer("C-D")).await.is_none());
    let reused = append_note(&store, "C-D", ExpectedVersion::NoStream).await;
    assert_refused_closed(reused, StreamStatus::Deleted, "erasure request #42");
    match customers
        .execute("C-D", Metadata::new(), |c: &Customer| {
            c.register("Again", "again@example.com", "KR")
        })
        .await
    {
        Err(CommandError::Repository(RepositoryError::StreamClosed(closed))) => {
            assert_eq!(closed.status, StreamStatus::Deleted)
        }
        other => panic!("re-creating a deleted customer: {other:?}"),
    }
    // A stream that never existed can be deleted (its id reserved) too.
    let never = assert_closed(
        store
            .delete_stream(&customer("C-never"), change("erasure before any data"))
            .await,
        StreamStatus::Deleted,
        0,
        0,
    );
    let refused = append_note(&store, "C-never", ExpectedVersion::NoStream).await;
    assert_refused_closed(refused, StreamStatus::Deleted, "erasure before any data");

    // The audit, by status and a page at a time; and the lifecycle events in the log.
    let audit = store
        .closed_streams(&ClosedQuery::new(StreamStatus::Deleted))
        .await
        .expect("audit");
    assert_eq!(audit, vec![deleted.clone(), never.clone()]);
    let first_page = store
        .closed_streams(&ClosedQuery::new(StreamStatus::Deleted).limit(1))
        .await
        .expect("a page");
    assert_eq!(first_page, vec![deleted.clone()]);
    let second_page = store
        .closed_streams(&ClosedQuery::new(StreamStatus::Deleted).after(customer("C-D")).limit(1))
        .await
        .expect("the next page");
    assert_eq!(second_page, vec![never.clone()]);
    assert_eq!(
        store
            .closed_streams(&ClosedQuery::new(StreamStatus::Tombstoned))
            .await
            .expect("tombstones"),
        vec![tombstoned.clone()]
    );
    let records: Vec<StreamClosed> = whole_log(&store)
        .await
        .iter()
        .filter(|event| event.stream.aggregate_type == STREAM_LIFECYCLE)
        .map(|event| serde_json::from_slice(&event.payload).expect("a StreamClosed payload"))
        .collect();
    let statuses: Vec<(String, StreamStatus)> = records
        .iter()
        .map(|record| (record.aggregate_id.clone(), record.status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("C-T".to_owned(), StreamStatus::Tombstoned),
            ("C-A".to_owned(), StreamStatus::Archived),
            ("C-D".to_owned(), StreamStatus::Deleted),
            ("C-never".to_owned(), StreamStatus::Deleted),
        ],
        "one lifecycle event per change, none for the repeated tombstone"
    );

    // Projections: the live one purges C-D; a rebuild never sees it; archived C-A stays.
    catch_up_directory(&directory, &store).await;
    let live = model.read(|m| m.names.clone());
    assert_eq!(live.keys().cloned().collect::<Vec<_>>(), ["C-A", "C-O", "C-T"]);
    directory.rebuild(|_| {}).await.expect("rebuilt");
    assert_eq!(model.read(|m| m.names.clone()), live, "a rebuild after the deletion");
    assert!(
        model.read(|m| m.seen.iter().all(|(id, _)| id != "C-D")),
        "the rebuild saw C-D"
    );
    // The open stream is untouched.
    assert_eq!(customers.load("C-O").await.expect("open").version, 2);
}

// ---------------------------------------------------------------------------------------------
// 5. Closing and forgetting together.
// ---------------------------------------------------------------------------------------------

/// es_core::pii::lifecycle: "archived events are opened as stream reads are"; README: a
/// deleted stream's rows stay in the heap/WAL "Personal data that must be unreadable at once
/// belongs in `#[pii]` fields, whose key is destroyed by forgetting".
async fn closing_and_forgetting<B: Backend>(backend: B) {
    let store = sealed(backend.store());
    let customers = Repository::<Customer, _>::new(store.clone()).with_snapshot_every(1);
    for id in ["C-A", "C-D"] {
        accepted(&customers, id, "registered", |c| {
            c.register(&format!("{NAME} {id}"), EMAIL, "KR")
        })
        .await;
        accepted(&customers, id, "moved", |c| c.move_to(STREET, "Seoul")).await;
    }
    store
        .archive(&customer("C-A"), change("closed in 2019"))
        .await
        .expect("archive");
    // Archived, still sealed and still readable until forgotten.
    let archived = customers.load_closed("C-A", AsOf::Latest).await.expect("load_closed");
    assert_eq!(
        archived.aggregate.name.known().cloned(),
        Some(format!("{NAME} C-A")),
        "archived events are opened"
    );
    assert!(store.forget("customer/C-A").await.expect("forget"));
    for as_of in [AsOf::Latest, AsOf::Version(1)] {
        let state = customers
            .load_closed("C-A", as_of)
            .await
            .expect("load_closed")
            .aggregate;
        assert!(state.name.is_forgotten() && state.email.is_forgotten(), "{state:?}");
        assert_eq!(state.country, "KR");
    }
    let log = whole_log(&store).await;
    let archived_in_log: Vec<&RecordedEvent> = log.iter().filter(|e| e.stream == customer("C-A")).collect();
    assert_eq!(archived_in_log.len(), 2, "archived events stay in the global log");
    assert_eq!(payload(archived_in_log[0])["name"], forgotten_marker());
    assert_eq!(payload(archived_in_log[1])["street"], forgotten_marker());

    // Deleting, then forgetting: no error, no trace.
    store
        .delete_stream(&customer("C-D"), change("erasure request #7"))
        .await
        .expect("delete");
    assert!(store.forget("customer/C-D").await.expect("forget after deletion"));
    let dump = backend.raw_dump().await;
    for secret in [NAME, EMAIL, STREET] {
        assert!(!holds(&dump, secret), "`{secret}` is stored in plaintext");
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Tenants.
// ---------------------------------------------------------------------------------------------

/// README "Tenants": "A tenant's store cannot reach another tenant's streams, global log,
/// snapshots or checkpoints"; es_core::tenancy::TenantId: "1 to MAX_TENANT_ID_BYTES of lowercase
/// ASCII letters, digits and single underscores, starting with a letter".
async fn tenants_are_isolated<B: Backend>(backend: B) {
    let main = backend.store();
    let (acme, globex) = (TenantId::new("acme").expect("id"), TenantId::new("globex").expect("id"));
    let acme_store = main.tenant(&acme).await.expect("acme");
    let globex_store = main.tenant(&globex).await.expect("globex");
    // The same stream id in both tenants, with different histories.
    let acme_customers = Repository::<Customer, _>::new(acme_store.clone()).with_snapshot_every(1);
    let globex_customers = Repository::<Customer, _>::new(globex_store.clone()).with_snapshot_every(1);
    accepted(&acme_customers, "C-1", "acme's C-1", |c| {
        c.register("Acme's", "a@acme.test", "KR")
    })
    .await;
    accepted(&acme_customers, "C-1", "acme's note", |c| c.note("acme only")).await;
    let same_id = "globex's C-1: the same id is another stream";
    accepted(&globex_customers, "C-1", same_id, |c| {
        c.register("Globex's", "g@globex.test", "US")
    })
    .await;
    let a = acme_customers.load("C-1").await.expect("acme").aggregate;
    let g = globex_customers.load("C-1").await.expect("globex").aggregate;
    assert_eq!((a.country.as_str(), a.notes.len()), ("KR", 1));
    assert_eq!((g.country.as_str(), g.notes.len()), ("US", 0));
    assert_eq!(globex_store.stream_version(&customer("C-1")).await.expect("version"), 1);
    // Global logs: each tenant's own; the main store holds none of them.
    let acme_log = whole_log(&acme_store).await;
    let globex_log = whole_log(&globex_store).await;
    assert_eq!(acme_log.iter().filter(|e| e.stream == customer("C-1")).count(), 2);
    assert_eq!(globex_log.iter().filter(|e| e.stream == customer("C-1")).count(), 1);
    assert!(globex_log
        .iter()
        .all(|e| !String::from_utf8_lossy(&e.payload).contains("acme")));
    let main_log = whole_log(&main).await;
    assert!(
        main_log.iter().all(|e| e.stream != customer("C-1")),
        "the main store saw a tenant's event"
    );
    for event in &acme_log {
        assert!(
            globex_store
                .read_event(event.event_id)
                .await
                .expect("read by id")
                .is_none(),
            "globex reads acme's event {}",
            event.event_id
        );
    }
    // Snapshots.
    let acme_snapshot = snapshot_of(&acme_store, &customer("C-1"))
        .await
        .expect("acme's snapshot");
    let globex_snapshot = snapshot_of(&globex_store, &customer("C-1"))
        .await
        .expect("globex's snapshot");
    assert_eq!((acme_snapshot.version, globex_snapshot.version), (2, 1));
    // Lifecycle: closing acme's stream leaves globex's open.
    acme_store
        .tombstone(&customer("C-1"), change("acme's duplicate"))
        .await
        .expect("tombstone in acme");
    accepted(&globex_customers, "C-1", "globex's stream is open", |c| {
        c.note("globex goes on")
    })
    .await;
    assert!(matches!(
        acme_customers.load("C-1").await,
        Err(RepositoryError::StreamClosed(_))
    ));
    assert!(
        globex_store
            .closed_streams(&ClosedQuery::new(StreamStatus::Tombstoned))
            .await
            .expect("audit")
            .is_empty(),
        "globex's audit holds acme's record"
    );
    // Projections: one per tenant, each sees its own log only.
    for (store, expected) in [(&acme_store, "Acme's"), (&globex_store, "Globex's")] {
        let (directory, model) = directory_on(store);
        catch_up_directory(&directory, store).await;
        assert_eq!(
            model.read(|m| m.names.clone()),
            BTreeMap::from([("C-1".to_owned(), expected.to_owned())])
        );
    }
    // Opening a tenant again gives the same tenant; the list is in order.
    let acme_again = main.tenant(&acme).await.expect("acme again");
    assert_eq!(acme_again.stream_version(&customer("C-1")).await.expect("version"), 2);
    assert_eq!(main.tenants().await.expect("tenants"), vec![acme, globex]);

    // Ids that could clash as schema or file names are refused, typed; the longest is kept.
    for bad in [
        "",
        "Acme",
        "ACME",
        "a__b",
        "1abc",
        "_abc",
        "a-b",
        "a b",
        "a.b",
        "../etc",
        "acmé",
        "ａｃｍｅ",
        "a\0b",
    ] {
        assert!(TenantId::new(bad).is_err(), "`{}` is accepted", bad.escape_debug());
    }
    let too_long = "t".repeat(MAX_TENANT_ID_BYTES + 1);
    assert!(TenantId::new(too_long).is_err());
    for good in ["a", "a_b_c", "x1"] {
        let id = TenantId::new(good).expect("a valid id");
        assert_eq!(id.as_str(), good);
    }
}

/// es_core::tenancy: "`MAX_TENANT_ID_BYTES`: The longest tenant id: short enough for a
/// PostgreSQL schema name beside the main schema's", and `TenantStores::tenant`: "The store of
/// `tenant`, created (and migrated) on first use". Every valid id should get its store; here the
/// main schema is a test schema (`es_test_` and 32 hex digits, 40 characters, which
/// `PostgresStore::with_schema` accepts: it takes up to 63).
async fn the_longest_tenant_id_gets_a_store<B: Backend>(backend: B) {
    the_longest_tenant_id_gets_a_store_beside(&backend.store()).await;
}

/// Checks that the longest valid tenant id gets a store beside `main`, one that takes an append
/// and that `main` lists.
async fn the_longest_tenant_id_gets_a_store_beside<S: TenantStores>(main: &S)
where
    S::Store: EventStore,
{
    let longest = TenantId::new("t".repeat(MAX_TENANT_ID_BYTES)).expect("the longest valid id");
    let store = match main.tenant(&longest).await {
        Ok(store) => store,
        Err(error) => panic!("a valid tenant id of {MAX_TENANT_ID_BYTES} bytes has no store: {error:?}"),
    };
    append_note(&store, "C-1", ExpectedVersion::NoStream)
        .await
        .expect("an append in the tenant");
    assert_eq!(main.tenants().await.expect("tenants"), vec![longest]);
}

/// On PostgreSQL a tenant is the schema `<main>__<tenant>`, at most 63 bytes: the longest id
/// gets a store beside a main schema of up to 31 bytes, as `MAX_TENANT_ID_BYTES` says; beside a
/// longer main schema an id it leaves no room for is refused with a typed error that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_tenant_id_gets_a_store_on_postgres() {
    bounded(async {
        let Postgres { schema } = Postgres::new().await;
        let short = format!("pr_{}", &Uuid::now_v7().simple().to_string()[..28]);
        assert_eq!(short.len(), 31);
        let main = schema.store().clone().with_schema(&short).expect("a 31-byte schema");
        main.migrate().await.expect("migrated");
        let longest = TenantId::new("t".repeat(MAX_TENANT_ID_BYTES)).expect("the longest valid id");
        let outcome = async {
            // Beside a 31-byte main schema.
            the_longest_tenant_id_gets_a_store_beside(&main).await;

            // The test schema's name is longer than 31 bytes: it leaves less room.
            let long_main = schema.store();
            assert!(long_main.schema().len() > 31, "{}", long_main.schema());
            match long_main.tenant(&longest).await {
                Err(StoreError::Backend(error)) => {
                    let message = error.to_string();
                    assert!(
                        message.contains("over PostgreSQL's 63 bytes") && message.contains("at most"),
                        "{message}"
                    );
                }
                Err(other) => panic!("refused, but as {other:?}"),
                Ok(_) => panic!("a schema name over 63 bytes"),
            }
        }
        .await;
        for dropped in [main.tenant_schema(&longest), short.clone()] {
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {dropped} CASCADE"))
                .execute(main.pool())
                .await
                .expect("dropping the test's schemas");
        }
        outcome
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// 7. Idempotent commands and metadata.
// ---------------------------------------------------------------------------------------------

/// The metadata of the first event of customer `id` in `slice`, as the repository lists it.
async fn first_metadata<S: EventStore>(customers: &Repository<Customer, S>, id: &str, slice: StreamSlice) -> Metadata {
    let events = customers.events(id, slice).await.expect("events");
    events[0].envelope.metadata.clone()
}

/// `Repository::execute`: "Give the command id the client sent (`Metadata::with_command_id`) and
/// a request sent again after a lost answer is recognised: its events are not appended twice, and
/// the original outcome comes back with `Executed::already_stored` set, even when `decide` would
/// now refuse"; "Every event carries `metadata`, with what it leaves empty filled in: a new
/// command id, used as the causation and correlation id too"; `Metadata::in_reaction_to`; seed
/// 003's correlation/causation ids.
async fn idempotent_commands_and_metadata<B: Backend>(backend: B) {
    // Through the sealing store: a command sent again is sealed again with fresh nonces.
    let store = sealed(backend.store());
    let customers = Repository::<Customer, _>::new(store.clone());
    let (command, correlation, causation) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let metadata = Metadata::new()
        .with_command_id(command)
        .with_correlation_id(correlation)
        .with_causation_id(causation)
        .with_actor("agent:김철수 🧑‍💼")
        .with_extra("ip", "203.0.113.7")
        .with_extra(
            "request",
            json!({ "path": "/customers/C-1", "retries": [1, 2], "ok": true, "ratio": 0.1 }),
        )
        .with_extra("big", json!(18_446_744_073_709_551_615u64));
    let send = || customers.execute("C-1", metadata.clone(), |c: &Customer| c.register(NAME, EMAIL, "KR"));
    let first = send().await.expect("registered");
    assert!(!first.already_stored);
    let again = send()
        .await
        .expect("the same request, sent again, even though the rule would now refuse it");
    assert!(again.already_stored);
    assert_eq!(
        (again.appended.clone(), again.version, again.command_id),
        (first.appended.clone(), 1, command)
    );
    assert_eq!(again.aggregate.name.known().map(String::as_str), Some(NAME));
    assert_eq!(
        store.stream_version(&customer("C-1")).await.expect("version"),
        1,
        "stored once"
    );
    let found = customers
        .find_command("C-1", command)
        .await
        .expect("find_command")
        .expect("the command is stored");
    assert_eq!(found.appended, first.appended);
    // The same command id on another customer is another command.
    let elsewhere = customers
        .execute("C-2", metadata.clone(), |c: &Customer| {
            c.register(OTHER_NAME, "ada@example.com", "UK")
        })
        .await
        .expect("another stream");
    assert!(!elsewhere.already_stored);
    assert_ne!(elsewhere.appended[0].event_id, first.appended[0].event_id);

    // The metadata round-trips through every read path.
    let mut expected = metadata.clone();
    expected.command_id = Some(command);
    let listed = first_metadata(&customers, "C-1", StreamSlice::all()).await;
    assert_eq!(listed, expected, "stream read");
    let by_id = store
        .read_event(first.appended[0].event_id)
        .await
        .expect("read by id")
        .expect("stored");
    assert_eq!(by_id.metadata, expected, "read by id");
    let log = whole_log(&store).await;
    let logged = log
        .iter()
        .find(|event| event.event_id == first.appended[0].event_id)
        .expect("in the global log");
    assert_eq!(logged.metadata, expected, "global log");
    assert_eq!(logged.position, first.appended[0].position);
    let (directory, model) = directory_on(&store);
    catch_up_directory(&directory, &store).await;
    assert_eq!(
        model.read(|m| m.metadata[0].clone()),
        expected,
        "a projection's envelope"
    );

    // What a command leaves empty is filled in: command id = causation = correlation.
    let plain = accepted(&customers, "C-3", "registered", |c| {
        c.register("Third", "third@example.com", "DE")
    })
    .await;
    let stored = first_metadata(&customers, "C-3", StreamSlice::all()).await;
    assert_eq!(stored.command_id, Some(plain.command_id));
    assert_eq!(stored.causation_id, Some(plain.command_id));
    assert_eq!(stored.correlation_id, Some(plain.command_id));

    // A reaction to an event, delivered twice, is carried out once; it keeps the correlation.
    let trigger = by_id;
    let react = || {
        let reaction = Metadata::in_reaction_to(&trigger, "welcome-note");
        customers.execute("C-1", reaction, |c: &Customer| c.note("welcome!"))
    };
    let reacted = react().await.expect("reacted");
    let reacted_again = react().await.expect("reacted again");
    assert!(reacted_again.already_stored);
    assert_eq!(reacted_again.appended, reacted.appended);
    let notes = customers.load("C-1").await.expect("load").aggregate.notes;
    assert_eq!(notes, vec!["welcome!".to_owned()], "carried out once");
    let note_metadata = first_metadata(&customers, "C-1", StreamSlice::from_version(2)).await;
    assert_eq!(note_metadata.causation_id, Some(trigger.event_id));
    assert_eq!(
        note_metadata.correlation_id,
        Some(correlation),
        "the correlation carries over"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Large and unicode payloads at the documented limits.
// ---------------------------------------------------------------------------------------------

/// A JSON payload `{"text":"..."}` of exactly `bytes` bytes, its text mixing 1- to 4-byte UTF-8
/// characters, a right-to-left override, a combining accent, a ligature, U+2028 and characters
/// JSON escapes. Returns the payload and its text.
fn unicode_payload(bytes: usize) -> (Vec<u8>, String) {
    let head = "정다은 😀 \u{202e}rtl\u{202c} e\u{301} ﬁ \\\" \u{2028} \u{1}";
    let json_len = |text: &str| serde_json::to_string(text).expect("a JSON string").len();
    let (prefix, suffix) = (r#"{"text":"#, "}");
    let budget = bytes - prefix.len() - suffix.len();
    let pairs = (budget - json_len(head)) / "😀한".len();
    let mut text = String::with_capacity(bytes);
    text.push_str(head);
    text.push_str(&"😀한".repeat(pairs));
    let rest = budget - json_len(&text);
    text.push_str(&"a".repeat(rest));
    let payload = format!("{prefix}{}{suffix}", serde_json::to_string(&text).expect("JSON"));
    assert_eq!(payload.len(), bytes, "the payload is built to size");
    (payload.into_bytes(), text)
}

#[track_caller]
fn assert_limit<T: std::fmt::Debug>(result: Result<T, StoreError>, limit: Limit, event: Option<usize>, actual: usize) {
    match result {
        Err(StoreError::LimitExceeded(exceeded)) => {
            assert_eq!(
                (exceeded.limit, exceeded.event, exceeded.actual),
                (limit, event, actual),
                "{exceeded}"
            );
        }
        other => panic!("expected LimitExceeded ({limit:?}), got {other:?}"),
    }
}

/// The limit that `outcome`, a command's answer, says was exceeded; any other answer fails,
/// naming `what`.
fn exceeded_limit<T: std::fmt::Debug, E: std::fmt::Debug>(
    outcome: Result<T, CommandError<E>>,
    what: &str,
) -> LimitExceeded {
    match outcome {
        Err(CommandError::Repository(RepositoryError::Store(StoreError::LimitExceeded(exceeded)))) => exceeded,
        other => panic!("{what}: expected LimitExceeded, got {other:?}"),
    }
}

/// Registers customer `C-sealed` through `sealing` with a name of 840,000 bytes of plaintext,
/// over 1 MiB once sealed: checks that the command is refused for its size and writes nothing;
/// returns the limit exceeded.
async fn register_a_name_too_long_once_sealed<S: EventStore + KeyStore + Clone>(
    sealing: &PiiStore<S, S>,
) -> LimitExceeded {
    let customers = Repository::<Customer, _>::new(sealing.clone());
    let long_name = "정".repeat(280_000);
    let refused = customers
        .execute("C-sealed", Metadata::new(), |c: &Customer| {
            c.register(&long_name, "x@example.com", "KR")
        })
        .await;
    let exceeded = exceeded_limit(refused, "a sealed payload over 1 MiB");
    let version = sealing.stream_version(&customer("C-sealed")).await.expect("version");
    assert_eq!(version, 0, "a refused command wrote nothing");
    exceeded
}

/// README: "all refuse, before writing anything and with a typed error naming the limit,
/// appends over the same limits (1 MiB payloads, 10,000 events or 16 MiB per append, ...)";
/// DESIGN "Limits": "Sizes are bytes as stored: metadata as its JSON".
async fn limits_hold_for_unicode_and_sealed_payloads<B: Backend>(backend: B) {
    let store = backend.store();
    assert_eq!(store.limits(), Limits::default(), "the same defaults on every store");
    let max = Limits::default().max_payload_bytes;
    let head = store.tail(0).await.expect("tail").head_position;

    // Exactly at the payload limit: stored whole and read back as the same text.
    let (at_limit, text) = unicode_payload(max);
    let stream = StreamId::new("note", "고객-😀-ﬁ");
    let mut event = raw("NoteAdded", "{}");
    event.payload = at_limit;
    let stored = store
        .append(&stream, ExpectedVersion::NoStream, vec![event.clone()])
        .await
        .expect("a payload of exactly 1 MiB");
    let read = store
        .read_event(event.event_id)
        .await
        .expect("read by id")
        .expect("stored");
    assert_eq!(read.stream, stream, "a unicode stream id round-trips");
    assert_eq!(
        payload(&read)["text"],
        Value::String(text.clone()),
        "the text round-trips"
    );
    assert_eq!(read.position, stored.positions[0]);

    // One byte over, second in a batch: refused, naming the event; nothing of the batch written.
    let (over, _) = unicode_payload(max + 1);
    let small = raw("NoteAdded", r#"{"text":"small"}"#);
    let mut big = raw("NoteAdded", "{}");
    big.payload = over;
    let fresh = StreamId::new("note", "over");
    assert_limit(
        store
            .append(&fresh, ExpectedVersion::NoStream, vec![small.clone(), big])
            .await,
        Limit::PayloadBytes,
        Some(1),
        max + 1,
    );
    assert_eq!(store.stream_version(&fresh).await.expect("version"), 0);
    assert!(
        store.read_event(small.event_id).await.expect("read").is_none(),
        "half a batch written"
    );

    // Metadata: 64 KiB as JSON, unicode included, is the limit.
    let metadata_max = Limits::default().max_metadata_bytes;
    let sized = |wide: usize, narrow: usize| {
        Metadata::new()
            .with_actor("김철수")
            .with_extra("note", "한".repeat(wide))
            .with_extra("pad", "p".repeat(narrow))
    };
    let size = |metadata: &Metadata| serde_json::to_vec(metadata).expect("JSON").len();
    let empty = size(&sized(0, 0));
    let wide = (metadata_max - empty) / 3 - 10;
    let narrow = metadata_max - empty - 3 * wide;
    let mut fits = raw("NoteAdded", r#"{"text":"metadata"}"#);
    fits.metadata = sized(wide, narrow);
    assert_eq!(size(&fits.metadata), metadata_max);
    let meta_stream = StreamId::new("note", "metadata");
    store
        .append(&meta_stream, ExpectedVersion::NoStream, vec![fits.clone()])
        .await
        .expect("metadata of exactly 64 KiB");
    let back = store.read_event(fits.event_id).await.expect("read").expect("stored");
    assert_eq!(back.metadata, fits.metadata, "the metadata round-trips");
    let mut over_meta = raw("NoteAdded", r#"{"text":"metadata"}"#);
    over_meta.metadata = sized(wide, narrow + 1);
    assert_limit(
        store.append(&meta_stream, ExpectedVersion::Any, vec![over_meta]).await,
        Limit::MetadataBytes,
        Some(0),
        metadata_max + 1,
    );
    assert_eq!(store.stream_version(&meta_stream).await.expect("version"), 1);

    // Through a repository: a note over the limit is the same typed error, nothing written.
    let customers = Repository::<Customer, _>::new(store.clone());
    accepted(&customers, "C-big", "registered", |c| {
        c.register("Big", "big@example.com", "KR")
    })
    .await;
    let refused = customers
        .execute("C-big", Metadata::new(), |c: &Customer| c.note(&"😀".repeat(max / 4)))
        .await;
    let exceeded = exceeded_limit(refused, "a note over 1 MiB");
    assert_eq!((exceeded.limit, exceeded.event), (Limit::PayloadBytes, Some(0)));
    assert_eq!(customers.load("C-big").await.expect("load").version, 1);

    // Sealed personal data counts as stored: a name under 1 MiB of plaintext whose sealed form
    // is over it is refused, typed, and nothing is written.
    let exceeded = register_a_name_too_long_once_sealed(&sealed(store.clone())).await;
    assert_eq!(exceeded.limit, Limit::PayloadBytes);
    assert!(exceeded.actual > max, "{exceeded}");

    // Nothing refused reached the global log: only the three stored events (and the marker).
    let after: Vec<RecordedEvent> = whole_log(&store)
        .await
        .into_iter()
        .filter(|event| event.position > head && event.stream.aggregate_type != "settle")
        .collect();
    let streams: Vec<String> = after.iter().map(|event| event.stream.to_string()).collect();
    assert_eq!(after.len(), 3, "{streams:?}");
}

/// `StoreError::LimitExceeded`: "Nothing was written; retrying will not help"; `Limits`: "Every
/// backend checks a batch against its limits before anything is written (before any lock or
/// round trip)". Through a `PiiStore`, an append refused for its size should leave no key and
/// no record that the stream holds the subject's data.
async fn a_refused_sealed_append_leaves_nothing<B: Backend>(backend: B) {
    let store = backend.store();
    let sealing = sealed(store.clone());
    register_a_name_too_long_once_sealed(&sealing).await;
    let keys = store.keys(&["customer/C-sealed"]).await.expect("keys");
    let subjects = store.subjects_of(&customer("C-sealed")).await.expect("subjects");
    assert!(
        keys.is_empty() && subjects.is_empty(),
        "a refused append left a key ({} key(s)) and noted the stream as holding {subjects:?}",
        keys.len()
    );
    // Hence forgetting the subject, which never had data stored, says it had a key.
    assert!(!sealing.forget("customer/C-sealed").await.expect("forget"));
}

// ---------------------------------------------------------------------------------------------
// 9. Read-your-writes and lag, forgetting included.
// ---------------------------------------------------------------------------------------------

/// README "Projections in production": "`let progress = runner.progress();` before starting the
/// runner, then `progress.wait_for(executed.position(), timeout)` after a command: no polling, a
/// typed `WaitError::Timeout`"; `ProjectionRunner::lag`: "How far the projection is behind the
/// head of the store"; seed 003: "프로젝션 모니터링: 지연과 실패 추적".
async fn read_your_writes_and_lag<B: Backend>(backend: B) {
    let store = sealed(backend.store());
    let customers = Repository::<Customer, _>::new(store.clone());
    let model = InMemoryReadModel::<Directory>::new();
    let options = RunnerOptions {
        poll_interval: Duration::from_millis(50),
        ..RunnerOptions::default()
    };
    let runner = std::sync::Arc::new(
        ProjectionRunner::new(DirectoryProjection, store.clone(), model.clone()).with_options(options),
    );
    let progress = runner.progress();
    let (stop, running) = run_until_stopped(runner.clone(), PollOnly);

    let executed = accepted(&customers, "C-1", "registered", |c| c.register(NAME, EMAIL, "KR")).await;
    let reached = progress
        .wait_for(executed.position(), Duration::from_secs(20))
        .await
        .expect("the runner reaches the command's position");
    assert!(reached >= executed.position());
    assert_eq!(
        model.read(|m| m.names.get("C-1").cloned()).as_deref(),
        Some(NAME),
        "the command's write is readable once waited for"
    );

    // Forgetting: its SubjectForgotten event is what to wait for (forget returns no position:
    // read it from the subject's stream of the global log).
    assert!(store.forget("customer/C-1").await.expect("forgets"));
    let told = told_forgotten(&store, "customer/C-1")
        .await
        .iter()
        .map(|event| event.position)
        .max()
        .expect("a SubjectForgotten event");
    progress
        .wait_for(told, Duration::from_secs(20))
        .await
        .expect("the runner reaches the forgetting");
    assert!(model.read(|m| !m.names.contains_key("C-1")), "purged once waited for");

    // A position nobody wrote: a typed timeout that says where the projection got to.
    let beyond = told + 1_000_000_000;
    match progress.wait_for(beyond, Duration::from_millis(200)).await {
        Err(WaitError::Timeout {
            projection,
            position,
            reached,
            ..
        }) => {
            assert_eq!((projection, position), (DirectoryProjection::NAME, beyond));
            assert!(reached >= told);
        }
        other => panic!("waiting for a position nobody wrote: {other:?}"),
    }
    let _ = stop.send(());
    running
        .await
        .expect("the runner's task")
        .expect("the runner stops cleanly");

    // Lag: behind by what was appended while it was stopped, caught up after.
    catch_up_directory(&runner, &store).await;
    let caught = runner.lag().await.expect("lag");
    assert_eq!((caught.events_behind, caught.seconds_behind), (0, 0.0), "{caught:?}");
    for index in 0..3 {
        let id = format!("C-lag-{index}");
        accepted(&customers, &id, "registered", |c| {
            c.register("Lagging", "lag@example.com", "KR")
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    settle(&store).await;
    let behind = runner.lag().await.expect("lag");
    assert!(
        (3..=4).contains(&behind.events_behind) && behind.seconds_behind > 0.0,
        "three registrations (and a marker) behind: {behind:?}"
    );
    runner.catch_up().await.expect("caught up");
    assert_eq!(runner.lag().await.expect("lag").events_behind, 0);
}

// ---------------------------------------------------------------------------------------------
// 10. `es`-style reads of a forgotten lead (seed 004's Lead, the examples' command line).
// ---------------------------------------------------------------------------------------------

fn es_output(mut command: Command) -> String {
    let output = command.output().expect("es runs");
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(
        output.status.success(),
        "es failed ({:?})\nstdout: {out}\nstderr: {err}",
        output.status
    );
    out + &err
}

/// README: "one lead forgotten at its request: its name and phone are `#[pii]` fields, sealed
/// with the lead's key, which forgetting destroys", and `es events`, `log`, `state --version`
/// read the same store. Before forgetting, `es` shows the lead's name (it opens sealed fields);
/// after, no command shows the name or the phone, including the contact details the lead
/// corrected (seed 004: "이름에 오타가 있어서 수정함").
async fn es_reads_of_a_forgotten_lead<B: Backend>(backend: B) {
    use examples::lead::{forget_lead, forgettable_leads, Lead};
    let store = backend.store();
    let sealed_leads = forgettable_leads(store.clone(), store.clone()).expect("one aggregate");
    let leads = Repository::<Lead, _>::new(sealed_leads.clone()).with_snapshot_every(2);
    let (typo, name, phone) = ("Jeong Da-eum", "Jeong Da-eun 정다은", "010-5555-0199");
    accepted(&leads, "L-1", "initialized", |lead| lead.initialize(typo, phone)).await;
    accepted(&leads, "L-1", "contacted", |lead| lead.contact()).await;
    accepted(&leads, "L-1", "details corrected", |lead| {
        lead.update_contact_details(name, phone)
    })
    .await;
    accepted(&leads, "L-2", "another lead", |lead| {
        lead.initialize("Kept Person", "010-0000-0002")
    })
    .await;

    let reads: [&[&str]; 5] = [
        &["events", "lead/L-1", "--json"],
        &["events", "lead/L-1"],
        &["state", "lead/L-1", "--version", "1", "--json"],
        &["state", "lead/L-1", "--json"],
        &["log", "--json"],
    ];
    let before = es_output(backend.es(&["state", "lead/L-1", "--json"]));
    assert!(before.contains(name), "es opens sealed fields: {before}");

    assert!(forget_lead(&sealed_leads, "L-1").await.expect("forgets"));
    for args in reads {
        let out = es_output(backend.es(args));
        for secret in [typo, name, phone] {
            assert!(
                !out.contains(secret),
                "`es {}` shows `{secret}`:\n{out}",
                args.join(" ")
            );
        }
    }
    let state = es_output(backend.es(&["state", "lead/L-1", "--json"]));
    assert!(state.contains("$forgotten"), "{state}");
    let other = es_output(backend.es(&["state", "lead/L-2", "--json"]));
    assert!(other.contains("Kept Person"), "another lead keeps its name: {other}");
}

// ---------------------------------------------------------------------------------------------
// 11. Streams whose ids the store accepted, at the stream id limit.
// ---------------------------------------------------------------------------------------------

/// Registers the customer whose id is the longest the store accepts (type and id together at
/// `max_stream_id_bytes`), which must be accepted: its id, and the repository.
async fn register_at_the_id_limit<S: EventStore + Clone>(store: &S) -> (String, Repository<Customer, S>) {
    let id = "i".repeat(store.limits().max_stream_id_bytes - "customer".len());
    let customers = Repository::<Customer, _>::new(store.clone());
    let what = "a stream id within the limits is accepted";
    accepted(&customers, &id, what, |c| c.register(NAME, EMAIL, "KR")).await;
    (id, customers)
}

/// es_core::pii: "`PiiStore::forget` destroys a subject's key. From then on, the subject's
/// fields read as `Forgotten` ..., and a `SubjectForgotten` event in the global log tells
/// projections to purge what they keep of the subject"; `PiiStore::forget`: "Forgetting again
/// does no harm". A customer whose stream the store accepted can be forgotten.
async fn a_stream_at_the_id_limit_can_be_forgotten<B: Backend>(backend: B) {
    let store = sealed(backend.store());
    let (id, customers) = register_at_the_id_limit(&store).await;
    let (directory, model) = directory_on(&store);
    catch_up_directory(&directory, &store).await;
    assert_eq!(model.read(|m| m.names.len()), 1);

    let subject = format!("customer/{id}");
    let forgotten = store.forget(&subject).await;
    let state = customers.load(id.as_str()).await.expect("loads").aggregate;
    let forgotten = match forgotten {
        Ok(had_key) => had_key,
        Err(error) => panic!(
            "forget failed: {error}; the key is {} and no SubjectForgotten event was appended, so \
             projections keep the name ({} row(s)); forgetting again: {:?}",
            if state.name.is_forgotten() {
                "destroyed anyway"
            } else {
                "kept"
            },
            model.read(|m| m.names.len()),
            store.forget(&subject).await.map_err(|error| error.to_string()),
        ),
    };
    assert!(forgotten && state.name.is_forgotten());
    catch_up_directory(&directory, &store).await;
    assert_eq!(model.read(|m| m.names.len()), 0, "the projection was told");
}

/// es_core::lifecycle: "removed for legal reasons by a deletion that leaves an audit record";
/// `delete_stream`: "Removes the events of `stream` (hot or archived) and its snapshot, for
/// legal reasons". A stream the store accepted can be tombstoned, archived and deleted.
async fn a_stream_at_the_id_limit_can_be_closed<B: Backend>(backend: B) {
    let store = backend.store();
    let (id, _) = register_at_the_id_limit(&store).await;
    let stream = customer(&id);
    let closed = store.tombstone(&stream, change("duplicate")).await;
    assert!(
        closed.is_ok(),
        "tombstone: {:?}",
        closed.map_err(|error| error.to_string())
    );
    let deleted = store.delete_stream(&stream, change("erasure request #9")).await;
    match deleted {
        Ok(record) => assert_eq!((record.status, record.events), (StreamStatus::Deleted, 1)),
        Err(error) => panic!("the stream cannot be erased: {error}"),
    }
    assert_eq!(store.stream_version(&stream).await.expect("version"), 0);
}

// ---------------------------------------------------------------------------------------------
// 12. Domain code after forgetting.
// ---------------------------------------------------------------------------------------------

/// es_core::pii::Forgettable: "it reads as `Known` while its subject's key exists and as
/// `Forgotten` once the subject was forgotten, so domain code handles a forgotten person like
/// any other state"; es_core::pii: "Writing personal data of a forgotten subject again is
/// refused". A command that carries the state's forgotten street into a new event writes no
/// personal data, so it should be accepted (and the value read back as forgotten).
async fn a_forgotten_value_can_be_carried_forward<B: Backend>(backend: B) {
    let store = sealed(backend.store());
    let customers = Repository::<Customer, _>::new(store.clone());
    accepted(&customers, "C-1", "registered", |c| c.register(NAME, EMAIL, "KR")).await;
    accepted(&customers, "C-1", "moved", |c| c.move_to(STREET, "Seoul")).await;
    assert!(store.forget("customer/C-1").await.expect("forgets"));
    // The city changes (a municipal merger); the street is carried as the state has it.
    let moved = customers
        .execute("C-1", Metadata::new(), |c: &Customer| {
            vec![AddressChanged {
                street: c.street.clone(),
                city: "Seoul Special City".into(),
            }
            .into()]
        })
        .await;
    match moved {
        Ok(executed) => {
            assert_eq!(executed.version, 3);
            let state = customers.load("C-1").await.expect("loads").aggregate;
            assert!(state.street.is_forgotten());
            assert_eq!(state.city, "Seoul Special City");
        }
        Err(error) => panic!("an event carrying only forgotten values is refused: {error:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Each scenario above, as a test on each backend.
// ---------------------------------------------------------------------------------------------

/// One `#[tokio::test]` per scenario in module `sqlite`, through `on_sqlite`, and in module
/// `postgres`, through `on_postgres`; the scenarios after `sqlite only:` are in `sqlite` alone.
macro_rules! scenario_tests {
    ($($scenario:ident),+ $(,)?; sqlite only: $($sqlite_only:ident),+ $(,)?) => {
        mod sqlite {
            $(scenario_tests!(@test on_sqlite, $scenario);)+
            $(scenario_tests!(@test on_sqlite, $sqlite_only);)+
        }
        mod postgres {
            $(scenario_tests!(@test on_postgres, $scenario);)+
        }
    };
    (@test $run:ident, $scenario:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $scenario() {
            super::$run(super::$scenario).await;
        }
    };
}

scenario_tests!(
    forgetting_hides_personal_data_everywhere,
    forgetting_twice_and_unknown_subjects,
    a_subject_named_by_a_field,
    closing_streams,
    closing_and_forgetting,
    tenants_are_isolated,
    idempotent_commands_and_metadata,
    limits_hold_for_unicode_and_sealed_payloads,
    a_refused_sealed_append_leaves_nothing,
    read_your_writes_and_lag,
    es_reads_of_a_forgotten_lead,
    a_stream_at_the_id_limit_can_be_forgotten,
    a_stream_at_the_id_limit_can_be_closed,
    a_forgotten_value_can_be_carried_forward;
    // On PostgreSQL the test schema's name leaves the longest id no room: the test
    // `the_longest_tenant_id_gets_a_store_on_postgres` gives it a shorter main schema.
    sqlite only: the_longest_tenant_id_gets_a_store,
);
