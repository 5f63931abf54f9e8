//! An outside user's review of declaring events and aggregates with the macros and evolving them:
//! realistic payloads, upcast chains (JSON, typed, mixed), retired events, aliases, snapshot
//! upcasts, typed decode errors on the in-memory store, the schema lock and the given/when/then
//! helpers.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use es_core::schema::{check_schema_lock, LockMode, LockOutcome, LockProblem};
use es_core::testing::AggregateTest;
use es_core::{
    event, Aggregate, Apply, DecodeError, EventRegistry, EventSet, EventStore, EventType, ExpectedVersion,
    InMemoryStore, Metadata, NewEvent, Repository, RepositoryError, Snapshot, SnapshotStore, StreamId, StreamSlice,
    UpcastError,
};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn row(name: &str, version: u32, payload: Value) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_name: name.to_owned(),
        schema_version: version,
        payload: payload.to_string().into_bytes(),
        metadata: Metadata::new(),
    }
}

async fn seed(store: &InMemoryStore, stream: &StreamId, rows: Vec<NewEvent>) {
    store
        .append(stream, ExpectedVersion::NoStream, rows)
        .await
        .expect("raw rows append");
}

async fn stored_rows(store: &InMemoryStore, stream: &StreamId) -> Vec<(u64, String, u32, Value)> {
    let events: Vec<_> = store
        .read_stream(stream, StreamSlice::all())
        .try_collect()
        .await
        .expect("stream reads");
    events
        .into_iter()
        .map(|e| {
            let payload: Value = serde_json::from_slice(&e.payload).expect("stored payload is JSON");
            (e.version, e.event_name, e.schema_version, payload)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Realistic payloads
// ---------------------------------------------------------------------------------------------

mod rich {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Priority {
        Low,
        High,
        Custom(u8),
        Escalated { level: u8, by: String },
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Address {
        pub street: String,
        pub city: String,
    }

    fn default_channel() -> String {
        "email".into()
    }

    /// A ticket opened with everything a real one carries; `assignee`, `channel`, `tags` and
    /// `labels` were added after the first events were stored.
    #[event(name = "ticket-opened")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct TicketOpened {
        pub ticket_id: Uuid,
        #[serde(rename = "subject")]
        pub title: String,
        pub priority: Priority,
        pub requester_address: Address,
        pub opened_at: DateTime<Utc>,
        pub assignee: Option<String>,
        #[serde(default = "default_channel")]
        pub channel: String,
        #[serde(default)]
        pub tags: Vec<String>,
        #[serde(default)]
        pub labels: BTreeMap<String, u32>,
    }

    /// A unit struct: no payload at all.
    #[event(name = "ticket-viewed")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct TicketViewed;

    /// A newtype (tuple) struct.
    #[event(name = "ticket-noted")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct TicketNoted(pub String);

    /// A tuple struct of two fields.
    #[event(name = "ticket-rated")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct TicketRated(pub u8, pub Option<String>);

    #[event]
    #[derive(Debug, Clone, PartialEq)]
    pub enum TicketEvent {
        Opened(TicketOpened),
        Viewed(TicketViewed),
        Noted(TicketNoted),
        Rated(TicketRated),
    }

    #[derive(Debug, Default, Clone, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "rich-ticket", id = Uuid, event = TicketEvent)]
    pub struct Ticket {
        pub title: String,
        pub views: u32,
        pub notes: Vec<String>,
        pub rating: Option<u8>,
    }

    impl Apply<TicketOpened> for Ticket {
        fn apply(&mut self, e: &TicketOpened) {
            self.title = e.title.clone();
        }
    }
    impl Apply<TicketViewed> for Ticket {
        fn apply(&mut self, _: &TicketViewed) {
            self.views += 1;
        }
    }
    impl Apply<TicketNoted> for Ticket {
        fn apply(&mut self, e: &TicketNoted) {
            self.notes.push(e.0.clone());
        }
    }
    impl Apply<TicketRated> for Ticket {
        fn apply(&mut self, e: &TicketRated) {
            self.rating = Some(e.0);
        }
    }
}

#[test]
fn rich_payloads_round_trip_and_old_payloads_without_later_fields_still_decode() {
    use rich::*;
    let opened = TicketOpened {
        ticket_id: Uuid::now_v7(),
        title: "VPN down".into(),
        priority: Priority::Escalated {
            level: 2,
            by: "ana".into(),
        },
        requester_address: Address {
            street: "1 Main St".into(),
            city: "Seoul".into(),
        },
        opened_at: Utc.with_ymd_and_hms(2025, 1, 1, 1, 0, 1).unwrap(),
        assignee: Some("bo".into()),
        channel: "phone".into(),
        tags: vec!["vpn".into(), "vip".into()],
        labels: BTreeMap::from([("sla".into(), 4)]),
    };
    let event: TicketEvent = opened.clone().into();
    assert_eq!(event.event_name(), "ticket-opened");
    assert_eq!(event.schema_version(), 1);
    let payload: Value = serde_json::from_slice(&event.encode_payload().unwrap()).unwrap();
    assert_eq!(
        payload["subject"], "VPN down",
        "serde rename is the stored name: {payload}"
    );
    assert!(payload.get("title").is_none());
    assert_eq!(payload["priority"], json!({"escalated": {"level": 2, "by": "ana"}}));
    assert_eq!(payload["opened_at"], "2025-01-01T01:00:01Z");
    let decoded = TicketEvent::decode("ticket-opened", 1, &serde_json::to_vec(&payload).unwrap()).unwrap();
    assert_eq!(decoded, event);

    // A payload stored before `assignee`, `channel`, `tags` and `labels` existed.
    let old = json!({
        "ticket_id": "0190d1e4-0000-7000-8000-000000000001",
        "subject": "Printer",
        "priority": "low",
        "requester_address": {"street": "2 Side St", "city": "Busan"},
        "opened_at": "2024-12-31T23:59:59.5Z",
    });
    let decoded = TicketOpened::decode_payload(1, old.to_string().as_bytes()).expect("old payload decodes");
    assert_eq!(decoded.assignee, None);
    assert_eq!(decoded.channel, "email");
    assert!(decoded.tags.is_empty() && decoded.labels.is_empty());
    assert_eq!(decoded.priority, Priority::Low);
    let custom = TicketOpened::decode_payload(1, old.to_string().replace(r#""low""#, r#"{"custom":7}"#).as_bytes());
    assert_eq!(custom.unwrap().priority, Priority::Custom(7));

    // Unit and tuple structs.
    let viewed: TicketEvent = TicketViewed.into();
    let bytes = viewed.encode_payload().unwrap();
    assert_eq!(TicketEvent::decode("ticket-viewed", 1, &bytes).unwrap(), viewed);
    let noted: TicketEvent = TicketNoted("call back".into()).into();
    let bytes = noted.encode_payload().unwrap();
    assert_eq!(bytes, br#""call back""#);
    assert_eq!(TicketEvent::decode("ticket-noted", 1, &bytes).unwrap(), noted);
    let rated: TicketEvent = TicketRated(5, None).into();
    let bytes = rated.encode_payload().unwrap();
    assert_eq!(TicketEvent::decode("ticket-rated", 1, &bytes).unwrap(), rated);

    let names: Vec<_> = TicketEvent::EVENTS.iter().map(|e| e.name).collect();
    assert_eq!(
        names,
        ["ticket-opened", "ticket-viewed", "ticket-noted", "ticket-rated"]
    );
    assert_eq!(<Ticket as Aggregate>::TYPE, "rich-ticket");
}

#[tokio::test]
async fn an_aggregate_with_a_uuid_id_stores_rich_events_and_reads_them_back() {
    use rich::*;
    let tickets = Repository::<Ticket, _>::new(InMemoryStore::new());
    let id = Uuid::now_v7();
    let opened = TicketOpened {
        ticket_id: id,
        title: "Laptop".into(),
        priority: Priority::Custom(3),
        requester_address: Address {
            street: "x".into(),
            city: "y".into(),
        },
        opened_at: Utc::now(),
        assignee: None,
        channel: "chat".into(),
        tags: vec![],
        labels: BTreeMap::new(),
    };
    let events: Vec<TicketEvent> = vec![
        opened.into(),
        TicketViewed.into(),
        TicketNoted("n1".into()).into(),
        TicketRated(4, Some("good".into())).into(),
    ];
    let executed = tickets
        .execute(&id, Metadata::new(), move |_: &Ticket| events.clone())
        .await
        .expect("executes");
    assert_eq!(executed.version, 4);
    let stream = Repository::<Ticket, InMemoryStore>::stream_id(&id);
    assert_eq!(stream, StreamId::new("rich-ticket", id.to_string()));
    let loaded = tickets.load(&id).await.expect("loads");
    assert_eq!(loaded.aggregate.title, "Laptop");
    assert_eq!((loaded.aggregate.views, loaded.aggregate.rating), (1, Some(4)));
    assert_eq!(loaded.aggregate.notes, ["n1"]);
    let rows = stored_rows(tickets.store(), &stream).await;
    assert_eq!(rows[1].3, Value::Null, "a unit struct stores `null`");
}

// ---------------------------------------------------------------------------------------------
// 2. Names, aliases, versions on the enum
// ---------------------------------------------------------------------------------------------

mod naming {
    use super::*;

    #[event(
        name = "lead-initialized",
        alias = "LeadCreated",
        alias = "lead.created",
        version = 2
    )]
    #[upcast(from = 1, json = add_source)]
    #[derive(Debug, Clone, PartialEq)]
    pub struct LeadInitialized {
        pub name: String,
        pub phone: String,
        pub source: String,
    }

    fn add_source(mut v: Value) -> Result<Value, UpcastError> {
        v.as_object_mut()
            .ok_or_else(|| UpcastError::new("not an object"))?
            .entry("source")
            .or_insert_with(|| "unknown".into());
        Ok(v)
    }

    #[event(name = "followup-set")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct FollowupSet {
        #[serde(rename = "followup-on")]
        pub followup_on: DateTime<Utc>,
    }

    #[event(name = "contacted")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Contacted;

    #[event]
    #[derive(Debug, Clone, PartialEq)]
    pub enum LeadEvent {
        Initialized(LeadInitialized),
        Contacted(Contacted),
        FollowupSet(FollowupSet),
    }

    #[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "lead", event = LeadEvent)]
    pub struct Lead {
        pub name: String,
        pub source: String,
        pub contacts: u32,
        pub followups: u32,
    }
    impl Apply<LeadInitialized> for Lead {
        fn apply(&mut self, e: &LeadInitialized) {
            self.name = e.name.clone();
            self.source = e.source.clone();
        }
    }
    impl Apply<Contacted> for Lead {
        fn apply(&mut self, _: &Contacted) {
            self.contacts += 1;
        }
    }
    impl Apply<FollowupSet> for Lead {
        fn apply(&mut self, _: &FollowupSet) {
            self.followups += 1;
        }
    }
}

#[tokio::test]
async fn renamed_events_load_through_aliases_and_new_ones_are_written_under_the_new_name() {
    use naming::*;
    assert_eq!(LeadInitialized::NAME, "lead-initialized");
    assert_eq!(LeadInitialized::ALIASES, ["LeadCreated", "lead.created"]);
    assert_eq!(LeadInitialized::VERSION, 2);
    assert!(LeadInitialized::is_named("LeadCreated") && !LeadInitialized::is_named("leadcreated"));
    assert!(LeadEvent::handles("lead.created"));

    let mut registry = EventRegistry::new();
    registry.register::<Lead>().unwrap();
    let found = registry.find("lead", "LeadCreated").expect("found by alias");
    assert_eq!((found.event.name, found.event.version), ("lead-initialized", 2));
    assert!(registry.find("lead", "lead-created").is_none());

    let store = InMemoryStore::new();
    let stream = StreamId::new("lead", "1");
    seed(
        &store,
        &stream,
        vec![
            row("LeadCreated", 1, json!({"name": "aab", "phone": "1111"})),
            row("contacted", 1, Value::Null),
            row("followup-set", 1, json!({"followup-on": "2025-01-01T01:00:02.01Z"})),
            row(
                "lead.created",
                2,
                json!({"name": "aaa", "phone": "1111", "source": "web"}),
            ),
        ],
    )
    .await;
    let leads = Repository::<Lead, _>::new(store);
    let loaded = leads.load("1").await.expect("aliases load");
    assert_eq!(loaded.version, 4);
    assert_eq!(
        (loaded.aggregate.name.as_str(), loaded.aggregate.source.as_str()),
        ("aaa", "web")
    );
    assert_eq!((loaded.aggregate.contacts, loaded.aggregate.followups), (1, 1));
    assert_eq!(leads.load_at_version("1", 1).await.unwrap().aggregate.source, "unknown");

    leads
        .execute("1", Metadata::new(), |_: &Lead| {
            vec![LeadInitialized {
                name: "b".into(),
                phone: "2".into(),
                source: "ad".into(),
            }
            .into()]
        })
        .await
        .unwrap();
    let rows = stored_rows(leads.store(), &stream).await;
    assert_eq!((rows[4].1.as_str(), rows[4].2), ("lead-initialized", 2));

    match LeadEvent::decode("lead-initialised", 1, b"{}") {
        Err(DecodeError::UnknownEventType { event_name }) => assert_eq!(event_name, "lead-initialised"),
        other => panic!("an unknown name: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Upcast chains: JSON, typed, mixed
// ---------------------------------------------------------------------------------------------

mod deposits {
    use super::*;

    /// v1: `{"amount": 30}` (whole units). v2: `{"cents": 3000}`. v3: adds `source`. v4: source
    /// becomes an enum (typed step).
    #[event(name = "FundsDeposited", version = 4)]
    #[upcast(from = 1, json = v1_to_cents)]
    #[upcast(from = 2, json = v2_add_source)]
    #[upcast(from = 3, typed = DepositedV3)]
    #[derive(Debug, Clone, PartialEq)]
    pub struct FundsDeposited {
        pub cents: u64,
        pub source: Source,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Source {
        Bank,
        Payroll,
        Unknown,
    }

    fn v1_to_cents(v: Value) -> Result<Value, UpcastError> {
        let amount = v["amount"]
            .as_u64()
            .ok_or_else(|| UpcastError::missing_field("amount"))?;
        let cents = amount
            .checked_mul(100)
            .ok_or_else(|| UpcastError::new("amount overflows"))?;
        Ok(json!({ "cents": cents }))
    }

    fn v2_add_source(mut v: Value) -> Result<Value, UpcastError> {
        let object = v.as_object_mut().ok_or_else(|| UpcastError::new("not an object"))?;
        object.entry("source").or_insert_with(|| "unknown".into());
        Ok(v)
    }

    #[derive(Deserialize)]
    pub struct DepositedV3 {
        cents: u64,
        source: String,
    }

    impl TryFrom<DepositedV3> for FundsDeposited {
        type Error = String;
        fn try_from(v3: DepositedV3) -> Result<Self, String> {
            let source = match v3.source.as_str() {
                "bank_transfer" => Source::Bank,
                "payroll" => Source::Payroll,
                "unknown" => Source::Unknown,
                other => return Err(format!("unknown source {other:?}")),
            };
            Ok(Self {
                cents: v3.cents,
                source,
            })
        }
    }

    /// Typed all the way: v1 -> v2 -> v3 (current), through two old shapes.
    #[event(name = "FundsWithdrawn", version = 3)]
    #[upcast(from = 1, typed = WithdrawnV1)]
    #[upcast(from = 2, typed = WithdrawnV2)]
    #[derive(Debug, Clone, PartialEq)]
    pub struct FundsWithdrawn {
        pub cents: u64,
        pub reason: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct WithdrawnV1 {
        amount: u32,
    }
    #[derive(Deserialize)]
    pub struct WithdrawnV2 {
        cents: u64,
    }
    impl From<WithdrawnV1> for WithdrawnV2 {
        fn from(v1: WithdrawnV1) -> Self {
            Self {
                cents: u64::from(v1.amount) * 100,
            }
        }
    }
    impl From<WithdrawnV2> for FundsWithdrawn {
        fn from(v2: WithdrawnV2) -> Self {
            Self {
                cents: v2.cents,
                reason: None,
            }
        }
    }

    /// v1 payloads were a bare number; the step panics on anything else (the doc says a panic is
    /// caught and reported as a typed error).
    #[event(name = "InterestPaid", version = 2)]
    #[upcast(from = 1, json = interest_v1)]
    #[derive(Debug, Clone, PartialEq)]
    pub struct InterestPaid {
        pub cents: u64,
    }

    #[allow(clippy::unnecessary_wraps)]
    fn interest_v1(v: Value) -> Result<Value, UpcastError> {
        let cents = v.as_u64().expect("v1 interest is a number");
        Ok(json!({ "cents": cents }))
    }

    #[event]
    #[derive(Debug, Clone, PartialEq)]
    pub enum AccountEvent {
        Deposited(FundsDeposited),
        Withdrawn(FundsWithdrawn),
        Interest(InterestPaid),
    }

    #[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "account", event = AccountEvent)]
    pub struct Account {
        pub balance: i64,
        pub unknown_sources: u32,
    }
    impl Apply<FundsDeposited> for Account {
        fn apply(&mut self, e: &FundsDeposited) {
            self.balance += i64::try_from(e.cents).unwrap();
            if e.source == Source::Unknown {
                self.unknown_sources += 1;
            }
        }
    }
    impl Apply<FundsWithdrawn> for Account {
        fn apply(&mut self, e: &FundsWithdrawn) {
            self.balance -= i64::try_from(e.cents).unwrap();
        }
    }
    impl Apply<InterestPaid> for Account {
        fn apply(&mut self, e: &InterestPaid) {
            self.balance += i64::try_from(e.cents).unwrap();
        }
    }
}

#[test]
fn json_then_typed_upcast_chain_reaches_the_current_version_from_every_stored_version() {
    use deposits::*;
    let unknown = FundsDeposited {
        cents: 3000,
        source: Source::Unknown,
    };
    assert_eq!(FundsDeposited::decode_payload(1, br#"{"amount":30}"#).unwrap(), unknown);
    assert_eq!(
        FundsDeposited::decode_payload(2, br#"{"cents":3000}"#).unwrap(),
        unknown
    );
    assert_eq!(
        FundsDeposited::decode_payload(3, br#"{"cents":3000,"source":"payroll"}"#).unwrap(),
        FundsDeposited {
            cents: 3000,
            source: Source::Payroll
        }
    );
    assert_eq!(
        FundsDeposited::decode_payload(4, br#"{"cents":1,"source":"Bank"}"#).unwrap(),
        FundsDeposited {
            cents: 1,
            source: Source::Bank
        }
    );

    // Typed-only chain.
    let w = FundsWithdrawn::decode_payload(1, br#"{"amount":5}"#).unwrap();
    assert_eq!(
        w,
        FundsWithdrawn {
            cents: 500,
            reason: None
        }
    );
    assert_eq!(FundsWithdrawn::decode_payload(2, br#"{"cents":7}"#).unwrap().cents, 7);

    // A JSON step refusing, a TryFrom refusing, a step panicking: all typed Upcast errors.
    match FundsDeposited::decode_payload(1, br#"{"amt":30}"#) {
        Err(DecodeError::Upcast {
            event_name,
            from,
            message,
        }) => {
            assert_eq!((event_name, from), ("FundsDeposited", 1));
            assert!(message.contains("missing field `amount`"), "{message}");
        }
        other => panic!("refused step: {other:?}"),
    }
    match FundsDeposited::decode_payload(3, br#"{"cents":1,"source":"cash"}"#) {
        Err(DecodeError::Upcast { from, message, .. }) => {
            assert_eq!(from, 3);
            assert!(message.contains("unknown source \"cash\""), "{message}");
        }
        other => panic!("refused TryFrom: {other:?}"),
    }
    match InterestPaid::decode_payload(1, br#"{"cents":1}"#) {
        Err(DecodeError::Upcast { from, message, .. }) => {
            assert_eq!(from, 1);
            assert!(message.contains("v1 interest is a number"), "{message}");
        }
        other => panic!("panicking step: {other:?}"),
    }
    // A v1 payload that is not even the old typed shape: a typed error (Payload or Upcast).
    assert!(matches!(
        FundsWithdrawn::decode_payload(1, br#"{"amount":"five"}"#),
        Err(DecodeError::Payload { schema_version: 1, .. } | DecodeError::Upcast { from: 1, .. })
    ));
    // Version 0 is below the chain.
    assert!(matches!(
        FundsDeposited::decode_payload(0, b"{}"),
        Err(DecodeError::NoUpcastPath {
            stored: 0,
            current: 4,
            ..
        })
    ));
}

#[tokio::test]
async fn a_stream_of_mixed_schema_versions_loads_on_the_in_memory_store() {
    use deposits::*;
    let store = InMemoryStore::new();
    let stream = StreamId::new("account", "A-1");
    seed(
        &store,
        &stream,
        vec![
            row("FundsDeposited", 1, json!({"amount": 30})),
            row("FundsDeposited", 2, json!({"cents": 2500})),
            row("FundsDeposited", 3, json!({"cents": 100, "source": "payroll"})),
            row("FundsWithdrawn", 1, json!({"amount": 5})),
            row("InterestPaid", 1, json!(7)),
            row("FundsDeposited", 4, json!({"cents": 1, "source": "Bank"})),
        ],
    )
    .await;
    let accounts = Repository::<Account, _>::new(store);
    let loaded = accounts.load("A-1").await.expect("loads");
    assert_eq!(loaded.version, 6);
    assert_eq!(loaded.aggregate.balance, 3000 + 2500 + 100 - 500 + 7 + 1);
    assert_eq!(loaded.aggregate.unknown_sources, 2);
    assert_eq!(
        accounts.load_at_version("A-1", 2).await.unwrap().aggregate.balance,
        5500
    );
}

#[tokio::test]
async fn a_schema_version_from_the_future_is_a_typed_error_naming_stream_version_and_event() {
    use deposits::*;
    let store = InMemoryStore::new();
    let stream = StreamId::new("account", "A-2");
    seed(
        &store,
        &stream,
        vec![
            row("FundsDeposited", 4, json!({"cents": 1, "source": "Bank"})),
            row("FundsDeposited", 5, json!({"cents": 1, "source": "Bank", "fee": 0})),
        ],
    )
    .await;
    let accounts = Repository::<Account, _>::new(store);
    let error = accounts.load("A-2").await.expect_err("v5 is newer than the code");
    let message = error.to_string();
    match error {
        RepositoryError::Decode(record) => {
            assert_eq!(record.stream, stream);
            assert_eq!((record.version, record.event_name.as_str()), (2, "FundsDeposited"));
            assert!(matches!(
                *record.source,
                DecodeError::SchemaVersionTooNew {
                    event_name: "FundsDeposited",
                    stored: 5,
                    current: 4
                }
            ));
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert!(
        message.contains("account/A-2") && message.contains("version 2"),
        "{message}"
    );
    assert!(message.contains("FundsDeposited"), "{message}");
    // Time travel to before the future event still works.
    assert_eq!(accounts.load_at_version("A-2", 1).await.unwrap().aggregate.balance, 1);
}

#[tokio::test]
async fn a_payload_that_no_longer_decodes_is_a_typed_error_naming_stream_version_and_event() {
    use deposits::*;
    let store = InMemoryStore::new();
    let stream = StreamId::new("account", "A-3");
    seed(
        &store,
        &stream,
        vec![
            row("FundsDeposited", 4, json!({"cents": 1, "source": "Bank"})),
            row("FundsDeposited", 4, json!({"cents": "one", "source": "Bank"})),
            row("InterestPaid", 1, json!({"not": "a number"})),
        ],
    )
    .await;
    let accounts = Repository::<Account, _>::new(store);
    let error = accounts.load("A-3").await.expect_err("corrupt payload");
    let message = error.to_string();
    let RepositoryError::Decode(record) = error else {
        panic!("expected a decode error: {message}");
    };
    assert_eq!((record.stream.clone(), record.version), (stream.clone(), 2));
    assert_eq!(record.event_name, "FundsDeposited");
    assert!(matches!(
        *record.source,
        DecodeError::Payload {
            event_name: "FundsDeposited",
            schema_version: 4,
            ..
        }
    ));
    assert!(
        message.contains("account/A-3") && message.contains("version 2"),
        "{message}"
    );

    // A panicking upcast step on load is reported, not propagated.
    let store = InMemoryStore::new();
    let stream = StreamId::new("account", "A-4");
    seed(
        &store,
        &stream,
        vec![row("InterestPaid", 1, json!({"not": "a number"}))],
    )
    .await;
    let accounts = Repository::<Account, _>::new(store);
    match accounts.load("A-4").await {
        Err(RepositoryError::Decode(record)) => {
            assert_eq!(record.version, 1);
            assert!(matches!(*record.source, DecodeError::Upcast { from: 1, .. }));
        }
        other => panic!("a panicking step: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Retired events: split, merge, drop, with stream versions counted by stored rows
// ---------------------------------------------------------------------------------------------

mod retired {
    use super::*;

    #[event(name = "TicketOpened")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct TicketOpened {
        pub title: String,
    }

    #[event(name = "TicketAssigned")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct TicketAssigned {
        pub agent: String,
    }

    /// Merges the retired `PhoneChanged` and `EmailChanged` (v1 and v2 of the latter).
    #[event(name = "ContactChanged")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct ContactChanged {
        pub email: Option<String>,
        pub phone: Option<String>,
    }

    #[event]
    #[derive(Debug, Clone, PartialEq)]
    #[replaced(name = "TicketOpenedWithAgent", by = split)]
    #[replaced(name = "PhoneChanged", by = phone)]
    #[replaced(name = "EmailChanged", by = email_v1)]
    #[replaced(name = "EmailChanged", version = 2, by = email_v2)]
    #[replaced(name = "TicketViewed", by = dropped)]
    pub enum TicketEvent {
        Opened(TicketOpened),
        Assigned(TicketAssigned),
        Contact(ContactChanged),
    }

    #[derive(Deserialize)]
    pub struct OpenedWithAgent {
        title: String,
        agent: String,
    }

    fn split(old: OpenedWithAgent) -> Result<Vec<TicketEvent>, UpcastError> {
        Ok(vec![
            TicketOpened { title: old.title }.into(),
            TicketAssigned { agent: old.agent }.into(),
        ])
    }

    #[derive(Deserialize)]
    pub struct Phone {
        phone: String,
    }

    #[allow(clippy::unnecessary_wraps)]
    fn phone(old: Phone) -> Result<Vec<TicketEvent>, String> {
        Ok(vec![ContactChanged {
            email: None,
            phone: Some(old.phone),
        }
        .into()])
    }

    fn email_v1(old: Value) -> Result<Vec<TicketEvent>, String> {
        let email = old.as_str().ok_or("v1 stored a bare string")?;
        Ok(vec![ContactChanged {
            email: Some(email.to_owned()),
            phone: None,
        }
        .into()])
    }

    fn email_v2(old: Value) -> Result<Vec<TicketEvent>, String> {
        let email = old["email"].as_str().ok_or("v2 stored {\"email\": ...}")?;
        Ok(vec![ContactChanged {
            email: Some(email.to_owned()),
            phone: None,
        }
        .into()])
    }

    #[allow(clippy::unnecessary_wraps)]
    fn dropped(_: Value) -> Result<Vec<TicketEvent>, UpcastError> {
        Ok(Vec::new())
    }

    #[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "retired-ticket", event = TicketEvent)]
    pub struct Ticket {
        pub applied: Vec<String>,
    }
    impl Apply<TicketOpened> for Ticket {
        fn apply(&mut self, e: &TicketOpened) {
            self.applied.push(format!("opened:{}", e.title));
        }
    }
    impl Apply<TicketAssigned> for Ticket {
        fn apply(&mut self, e: &TicketAssigned) {
            self.applied.push(format!("assigned:{}", e.agent));
        }
    }
    impl Apply<ContactChanged> for Ticket {
        fn apply(&mut self, e: &ContactChanged) {
            self.applied.push(format!("contact:{:?}/{:?}", e.email, e.phone));
        }
    }
}

#[tokio::test]
async fn replaced_rules_split_merge_and_drop_while_versions_count_stored_rows() {
    use retired::*;
    let store = InMemoryStore::new();
    let stream = StreamId::new("retired-ticket", "T-1");
    seed(
        &store,
        &stream,
        vec![
            row("TicketOpenedWithAgent", 1, json!({"title": "VPN", "agent": "ana"})),
            row("TicketViewed", 1, json!({})),
            row("PhoneChanged", 1, json!({"phone": "010"})),
            row("EmailChanged", 1, json!("a@x")),
            row("EmailChanged", 2, json!({"email": "b@x"})),
        ],
    )
    .await;
    let tickets = Repository::<Ticket, _>::new(store);
    let loaded = tickets.load("T-1").await.expect("loads through rules");
    assert_eq!(loaded.version, 5, "the version counts stored rows, not decoded events");
    assert_eq!(
        loaded.aggregate.applied,
        [
            "opened:VPN",
            "assigned:ana",
            r#"contact:None/Some("010")"#,
            r#"contact:Some("a@x")/None"#,
            r#"contact:Some("b@x")/None"#,
        ]
    );
    assert_eq!(
        tickets.load_at_version("T-1", 1).await.unwrap().aggregate.applied.len(),
        2
    );
    assert_eq!(
        tickets.load_at_version("T-1", 2).await.unwrap().aggregate.applied.len(),
        2
    );
    assert_eq!(
        tickets.load_at_version("T-1", 3).await.unwrap().aggregate.applied.len(),
        3
    );

    // A new command appends at stored version 6.
    let executed = tickets
        .execute("T-1", Metadata::new(), |_: &Ticket| {
            vec![TicketAssigned { agent: "bo".into() }.into()]
        })
        .await
        .expect("appends after the retired rows");
    assert_eq!(executed.version, 6);

    // A rule refusing, and a retired name at a version no rule reads.
    assert!(matches!(
        TicketEvent::decode_all("EmailChanged", 1, br#"{"email":"c@x"}"#),
        Err(DecodeError::Upcast {
            event_name: "EmailChanged",
            from: 1,
            ..
        })
    ));
    assert!(matches!(
        TicketEvent::decode_all("EmailChanged", 3, b"{}"),
        Err(DecodeError::NoReplacedRule {
            event_name: "EmailChanged",
            stored: 3
        })
    ));
    assert!(matches!(
        TicketEvent::decode("TicketViewed", 1, b"{}"),
        Err(DecodeError::NotOneEvent { count: 0, .. })
    ));
    let merged = TicketEvent::decode("PhoneChanged", 1, br#"{"phone":"1"}"#).expect("one event");
    assert!(matches!(merged, TicketEvent::Contact(_)));

    let mut registry = EventRegistry::new();
    registry.register::<Ticket>().unwrap();
    assert!(registry.is_replaced("retired-ticket", "EmailChanged"));
    assert!(!registry.is_replaced("retired-ticket", "TicketOpened"));
    assert_eq!(
        TicketEvent::REPLACED,
        ["EmailChanged", "PhoneChanged", "TicketOpenedWithAgent", "TicketViewed"]
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Snapshots: upcast, newer than the code, revision bump
// ---------------------------------------------------------------------------------------------

mod snapshots {
    use super::*;

    #[event(name = "Deposited")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Deposited {
        pub cents: u64,
    }

    #[event]
    #[derive(Debug, Clone, PartialEq)]
    pub enum WalletEvent {
        Deposited(Deposited),
    }

    /// Snapshot v1: `{"balance": n}`; v2: `{"cents": n}`; v3 (current): adds `deposits`.
    #[derive(Debug, Default, Clone, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "wallet", id = Uuid, event = WalletEvent, snapshot_version = 3, snapshot_revision = 2)]
    #[upcast(from = 1, json = rename_balance)]
    #[upcast(from = 2, typed = WalletV2)]
    pub struct Wallet {
        pub cents: u64,
        pub deposits: u32,
    }

    fn rename_balance(mut state: Value) -> Result<Value, UpcastError> {
        let object = state.as_object_mut().ok_or_else(|| UpcastError::new("not an object"))?;
        let balance = object
            .remove("balance")
            .ok_or_else(|| UpcastError::missing_field("balance"))?;
        object.insert("cents".into(), balance);
        Ok(state)
    }

    #[derive(Deserialize)]
    pub struct WalletV2 {
        cents: u64,
    }
    impl From<WalletV2> for Wallet {
        fn from(v2: WalletV2) -> Self {
            Self {
                cents: v2.cents,
                deposits: 0,
            }
        }
    }

    impl Apply<Deposited> for Wallet {
        fn apply(&mut self, e: &Deposited) {
            self.cents += e.cents;
            self.deposits += 1;
        }
    }
}

#[tokio::test]
async fn old_snapshots_are_upcast_on_load_and_unusable_ones_fall_back_to_replay() {
    use snapshots::*;
    assert_eq!((Wallet::SNAPSHOT_VERSION, Wallet::SNAPSHOT_REVISION), (3, 2));
    assert_eq!(Wallet::decode_snapshot(1, br#"{"balance": 5}"#).unwrap().cents, 5);
    assert_eq!(Wallet::decode_snapshot(2, br#"{"cents": 6}"#).unwrap().cents, 6);
    assert!(matches!(
        Wallet::decode_snapshot(4, b"{}"),
        Err(DecodeError::SchemaVersionTooNew {
            stored: 4,
            current: 3,
            ..
        })
    ));
    assert!(matches!(
        Wallet::decode_snapshot(1, br#"{"cents": 5}"#),
        Err(DecodeError::Upcast { from: 1, .. })
    ));

    let store = InMemoryStore::new();
    let wallets = Repository::<Wallet, _>::new(store.clone()).with_snapshot_every(100);
    let id = Uuid::now_v7();
    let stream = Repository::<Wallet, InMemoryStore>::stream_id(&id);
    for cents in [10, 20, 30] {
        wallets
            .execute(&id, Metadata::new(), move |_: &Wallet| vec![Deposited { cents }.into()])
            .await
            .unwrap();
    }
    assert_eq!(wallets.load(&id).await.unwrap().aggregate.cents, 60);

    // A v1 snapshot at version 2 with a marker balance no replay would produce: it is used.
    let snapshot = |schema_version, revision, state: Value| Snapshot {
        stream: stream.clone(),
        version: 2,
        revision,
        schema_version,
        state: state.to_string().into_bytes(),
        taken_at: Utc::now(),
    };
    store
        .save_snapshot(snapshot(1, 2, json!({"balance": 1000, "deposits": 2})))
        .await
        .unwrap();
    let loaded = wallets.load(&id).await.unwrap();
    assert_eq!(loaded.version, 3);
    assert_eq!(
        loaded.aggregate.cents, 1030,
        "the upcast v1 snapshot was used, then event 3"
    );
    assert_eq!(
        loaded.aggregate.deposits, 1,
        "v2 had no `deposits`: the typed step starts it at 0"
    );

    store
        .save_snapshot(snapshot(2, 2, json!({"cents": 2000})))
        .await
        .unwrap();
    assert_eq!(wallets.load(&id).await.unwrap().aggregate.cents, 2030);

    // Newer than the code: ignored, replayed.
    store
        .save_snapshot(snapshot(4, 2, json!({"cents": 3000, "deposits": 2})))
        .await
        .unwrap();
    assert_eq!(wallets.load(&id).await.unwrap().aggregate.cents, 60);
    // A step refusing: ignored, replayed.
    store
        .save_snapshot(snapshot(1, 2, json!({"no_balance": 1})))
        .await
        .unwrap();
    assert_eq!(wallets.load(&id).await.unwrap().aggregate.cents, 60);
    // Another revision: ignored, replayed.
    store
        .save_snapshot(snapshot(3, 1, json!({"cents": 4000, "deposits": 2})))
        .await
        .unwrap();
    assert_eq!(wallets.load(&id).await.unwrap().aggregate.cents, 60);
    // The current version and revision: used.
    store
        .save_snapshot(snapshot(3, 2, json!({"cents": 5000, "deposits": 2})))
        .await
        .unwrap();
    assert_eq!(wallets.load(&id).await.unwrap().aggregate.cents, 5030);
}

#[tokio::test]
async fn snapshots_taken_by_the_repository_carry_the_aggregate_s_schema_version_and_revision() {
    use snapshots::*;
    let store = InMemoryStore::new();
    let wallets = Repository::<Wallet, _>::new(store.clone()).with_snapshot_every(2);
    let id = Uuid::now_v7();
    for cents in [1, 2, 3] {
        wallets
            .execute(&id, Metadata::new(), move |_: &Wallet| vec![Deposited { cents }.into()])
            .await
            .unwrap();
    }
    let stream = Repository::<Wallet, InMemoryStore>::stream_id(&id);
    let snapshot = store
        .load_snapshot(&stream)
        .await
        .unwrap()
        .expect("a snapshot at version 2");
    assert_eq!(
        (snapshot.version, snapshot.revision, snapshot.schema_version),
        (2, 2, 3)
    );
    let state: Value = serde_json::from_slice(&snapshot.state).unwrap();
    assert_eq!(state, json!({"cents": 3, "deposits": 2}));
    assert_eq!(wallets.load(&id).await.unwrap().aggregate.cents, 6);
}

// ---------------------------------------------------------------------------------------------
// 6. The schema lock
// ---------------------------------------------------------------------------------------------

/// The `order` aggregate over the module's own `OrderSubmitted`: each module below is one
/// version of the code, and only the event differs.
macro_rules! order_aggregate {
    () => {
        #[event]
        #[derive(Debug, Clone, PartialEq)]
        pub enum OrderEvent {
            Submitted(OrderSubmitted),
        }

        #[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
        #[aggregate(name = "order", event = OrderEvent)]
        pub struct Order;
        impl Apply<OrderSubmitted> for Order {
            fn apply(&mut self, _: &OrderSubmitted) {}
        }
    };
}

/// `OrderSubmitted` with the fields every version has, `$extra` fields after them, and the
/// `order` aggregate over it.
macro_rules! order_submitted {
    ($(#[$attr:meta])* $($field:ident: $ty:ty),* $(,)?) => {
        $(#[$attr])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct OrderSubmitted {
            #[serde(rename = "payment-deadline")]
            pub payment_deadline: DateTime<Utc>,
            pub total: Money,
            pub lines: Vec<String>,
            pub channel: Channel,
            $(pub $field: $ty,)*
        }

        order_aggregate!();
    };
}

/// The `unit-lead` aggregate over the module's own `Contacted`.
macro_rules! unit_lead_aggregate {
    () => {
        #[event]
        #[derive(Debug, Clone, PartialEq)]
        pub enum LeadEvent {
            Contacted(Contacted),
        }

        #[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
        #[aggregate(name = "unit-lead", event = LeadEvent)]
        pub struct Lead;
        impl Apply<Contacted> for Lead {
            fn apply(&mut self, _: &Contacted) {}
        }
    };
}

/// The same aggregate at four stages of its life, as four modules (as a code base would be at
/// four commits).
mod lock_v1 {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Channel {
        Email,
        Phone { number: String },
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Money {
        pub amount: u64,
        pub currency: String,
    }

    order_submitted!(#[event(name = "OrderSubmitted")]);
}

/// `total.amount` retyped from u64 to String, at the same version.
mod lock_retyped {
    use super::*;
    pub use lock_v1::Channel;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Money {
        pub amount: String,
        pub currency: String,
    }

    order_submitted!(#[event(name = "OrderSubmitted")]);
}

/// The retype done right: version 2 with an upcast.
mod lock_bumped {
    use super::*;
    pub use lock_retyped::{Channel, Money};

    fn amount_to_text(mut v: Value) -> Result<Value, UpcastError> {
        let amount = v
            .pointer_mut("/total/amount")
            .ok_or_else(|| UpcastError::missing_field("total.amount"))?;
        let text = amount.to_string();
        *amount = Value::String(text);
        Ok(v)
    }

    order_submitted!(#[event(name = "OrderSubmitted", version = 2)] #[upcast(from = 1, json = amount_to_text)]);
}

/// A compatible change at v1: an optional field added, and a new variant of the channel enum.
mod lock_optional_added {
    use super::*;
    pub use lock_v1::Money;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Channel {
        Email,
        Phone { number: String },
        Chat,
    }

    order_submitted!(#[event(name = "OrderSubmitted")] coupon: Option<String>);
}

/// `OrderSubmitted` v1 made stricter at the same version.
mod lock_narrowed {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Channel {
        Email,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Money {
        pub amount: u8,
        pub currency: String,
    }

    order_submitted!(#[event(name = "OrderSubmitted")] assignee: String);
}

mod lock_unit_v1 {
    use super::*;

    #[event(name = "contacted")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Contacted;

    unit_lead_aggregate!();
}

mod lock_unit_v2 {
    use super::*;

    #[event(name = "contacted")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Contacted {
        pub note: Option<String>,
    }

    unit_lead_aggregate!();
}

fn lock_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "es-macro-review-{name}-{}-{}",
        std::process::id(),
        Uuid::now_v7()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn registry_of<A: Aggregate>() -> EventRegistry {
    let mut registry = EventRegistry::new();
    registry.register::<A>().unwrap();
    registry
}

#[test]
fn the_schema_lock_catches_a_retype_without_a_bump_and_accepts_a_bump_with_an_upcast() {
    let dir = lock_dir("lock");
    let lock = dir.join("events.lock");

    let report = check_schema_lock(&registry_of::<lock_v1::Order>(), &lock, LockMode::CreateIfMissing).unwrap();
    assert_eq!(report.outcome, LockOutcome::Created);
    assert!(report.is_ok(), "{report}");
    let text = std::fs::read_to_string(&lock).unwrap();
    assert!(text.contains("[order OrderSubmitted v1]"), "{text}");
    assert!(
        text.contains("payment-deadline"),
        "renamed field traced by stored name: {text}"
    );
    // The committed lock passes, through the one-line helper too (unless the env asks for update,
    // which passes as well).
    es_core::testing::assert_schema_lock(&registry_of::<lock_v1::Order>(), &lock);

    // Retyped without a bump: fails, naming the event, version and the nested field.
    let report = check_schema_lock(&registry_of::<lock_retyped::Order>(), &lock, LockMode::Verify).unwrap();
    assert!(!report.is_ok());
    let message = report.to_string();
    assert!(
        message.contains("`order` event `OrderSubmitted` v1 changed its stored shape without a version bump"),
        "{message}"
    );
    assert!(message.contains("amount"), "names the field: {message}");
    assert!(message.contains("Bump `version` to 2"), "{message}");
    assert!(matches!(report.problems[0], LockProblem::ShapeChanged { .. }));
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), text, "verify never writes");
    // CreateIfMissing with an existing file does not write either.
    let report = check_schema_lock(&registry_of::<lock_retyped::Order>(), &lock, LockMode::CreateIfMissing).unwrap();
    assert!(!report.is_ok());
    if std::env::var(es_core::schema::LOCK_ENV).as_deref() != Ok("update") {
        let panicked = std::panic::catch_unwind(|| {
            es_core::testing::assert_schema_lock(&registry_of::<lock_retyped::Order>(), &lock);
        });
        assert!(panicked.is_err(), "assert_schema_lock panics on a retype");
    }

    // Bumped with an upcast: old events decode, the new version needs its entry written once.
    let old = json!({
        "payment-deadline": "2025-01-01T01:10:02.01Z",
        "total": {"amount": 1500, "currency": "KRW"},
        "lines": ["a"],
        "channel": {"Phone": {"number": "1111"}},
    });
    let upcast = lock_bumped::OrderSubmitted::decode_payload(1, old.to_string().as_bytes()).unwrap();
    assert_eq!(upcast.total.amount, "1500");
    let bumped = registry_of::<lock_bumped::Order>();
    let report = check_schema_lock(&bumped, &lock, LockMode::Verify).unwrap();
    assert!(
        report
            .problems
            .iter()
            .all(|p| matches!(p, LockProblem::NotLocked { key } if key.version == 2)),
        "only the new version is missing: {report}"
    );
    let report = check_schema_lock(&bumped, &lock, LockMode::Update).unwrap();
    assert!(report.is_ok() && report.outcome == LockOutcome::Updated, "{report}");
    let report = check_schema_lock(&bumped, &lock, LockMode::Verify).unwrap();
    assert!(report.is_ok(), "{report}");
    let text = std::fs::read_to_string(&lock).unwrap();
    assert!(text.contains("[order OrderSubmitted v1]") && text.contains("[order OrderSubmitted v2]"));
    es_core::testing::assert_schema_lock(&bumped, &lock);

    // Going back to v1 is refused.
    let report = check_schema_lock(&registry_of::<lock_v1::Order>(), &lock, LockMode::Verify).unwrap();
    assert!(report
        .problems
        .iter()
        .any(|p| matches!(p, LockProblem::VersionWentBack { current: 1, .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_schema_lock_tells_compatible_changes_from_breaking_ones_field_by_field() {
    let dir = lock_dir("lock-compat");
    let lock = dir.join("events.lock");
    check_schema_lock(&registry_of::<lock_v1::Order>(), &lock, LockMode::Update).unwrap();
    let report = check_schema_lock(&registry_of::<lock_optional_added::Order>(), &lock, LockMode::Verify).unwrap();
    assert!(!report.is_ok());
    let message = report.to_string();
    assert!(message.contains("coupon"), "{message}");
    assert!(message.contains("Chat"), "{message}");
    assert!(
        message.contains("still decode (every change is compatible)"),
        "{message}"
    );
    let LockProblem::ShapeChanged { changes, .. } = &report.problems[0] else {
        panic!("{report}");
    };
    assert!(changes.iter().all(|c| !c.is_breaking()), "{changes:?}");

    // A payload-less (unit) event that gains an optional field: old `null` payloads no longer
    // decode, and the lock says so (breaking), though the new field is optional.
    let unit_lock = dir.join("unit.lock");
    check_schema_lock(&registry_of::<lock_unit_v1::Lead>(), &unit_lock, LockMode::Update).unwrap();
    let report = check_schema_lock(&registry_of::<lock_unit_v2::Lead>(), &unit_lock, LockMode::Verify).unwrap();
    let message = report.to_string();
    assert!(message.contains("the payload changed from unit to"), "{message}");
    assert!(message.contains("would no longer decode"), "{message}");
    assert!(lock_unit_v2::Contacted::decode_payload(1, b"null").is_err());

    // Narrowing, Option -> required, a variant removed: each named, all breaking.
    let report = check_schema_lock(&registry_of::<lock_narrowed::Order>(), &lock, LockMode::Verify).unwrap();
    let message = report.to_string();
    assert!(
        message.contains("field `total.amount` changed from u64 to u8"),
        "{message}"
    );
    assert!(message.contains("field `assignee` was added (required)"), "{message}");
    assert!(
        message.contains("variant `Phone` was removed from field `channel`"),
        "{message}"
    );
    assert!(message.contains("would no longer decode"), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// 7. Given / when / then
// ---------------------------------------------------------------------------------------------

mod gwt {
    use super::*;

    #[event(name = "Deposited")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Deposited {
        pub cents: u64,
    }

    #[event(name = "Withdrawn")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Withdrawn {
        pub cents: u64,
        /// Not stored: a payload that would not survive storage.
        #[serde(skip_serializing)]
        pub note: String,
    }

    #[event]
    #[derive(Debug, Clone, PartialEq)]
    pub enum AccountEvent {
        Deposited(Deposited),
        Withdrawn(Withdrawn),
    }

    #[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "gwt-account", event = AccountEvent)]
    pub struct Account {
        pub balance: u64,
    }
    impl Apply<Deposited> for Account {
        fn apply(&mut self, e: &Deposited) {
            self.balance += e.cents;
        }
    }
    impl Apply<Withdrawn> for Account {
        fn apply(&mut self, e: &Withdrawn) {
            self.balance -= e.cents;
        }
    }

    #[derive(Debug, PartialEq)]
    pub enum AccountError {
        Insufficient { balance: u64 },
        Zero,
    }

    impl Account {
        pub fn deposit(&self, cents: u64) -> Result<Vec<AccountEvent>, AccountError> {
            if cents == 0 {
                return Err(AccountError::Zero);
            }
            Ok(vec![Deposited { cents }.into()])
        }
        pub fn withdraw(&self, cents: u64) -> Result<Vec<AccountEvent>, AccountError> {
            if cents > self.balance {
                return Err(AccountError::Insufficient { balance: self.balance });
            }
            Ok(vec![Withdrawn {
                cents,
                note: String::new(),
            }
            .into()])
        }
    }
}

#[test]
fn given_when_then_asserts_events_errors_and_the_resulting_state() {
    use gwt::*;
    let state = AggregateTest::<Account>::given([Deposited { cents: 100 }.into()])
        .when(|a| a.deposit(50))
        .then_events([Deposited { cents: 50 }.into()]);
    assert_eq!(state.balance, 150);

    AggregateTest::<Account>::given([Deposited { cents: 10 }.into()])
        .when(|a| a.withdraw(30))
        .then_error(AccountError::Insufficient { balance: 10 });
    AggregateTest::<Account>::given_no_events()
        .when(|a| a.deposit(0))
        .then_error(AccountError::Zero);

    let (result, state) = AggregateTest::<Account>::given_no_events()
        .when(|a| a.deposit(7))
        .into_parts();
    assert_eq!(result.unwrap().len(), 1);
    assert_eq!(state.balance, 7);

    // Failing expectations panic with readable messages.
    let wrong_events = std::panic::catch_unwind(|| {
        AggregateTest::<Account>::given_no_events()
            .when(|a| a.deposit(5))
            .then_events([Deposited { cents: 6 }.into()]);
    });
    assert!(wrong_events.is_err());
    let rejected = std::panic::catch_unwind(|| {
        AggregateTest::<Account>::given_no_events()
            .when(|a| a.withdraw(5))
            .then_events([]);
    })
    .expect_err("a rejected command where events were expected");
    let message = rejected.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("rejected") && message.contains("Insufficient"),
        "{message}"
    );
}

#[test]
fn given_round_trips_events_through_their_stored_form() {
    use gwt::*;
    // `Withdrawn.note` is skipped when serializing but required when deserializing: the helper
    // must catch that such an event does not survive storage.
    let outcome = std::panic::catch_unwind(|| {
        AggregateTest::<Account>::given([
            Deposited { cents: 10 }.into(),
            Withdrawn {
                cents: 1,
                note: "x".into(),
            }
            .into(),
        ]);
    });
    let message = outcome
        .expect_err("an event that does not survive storage fails the test")
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("does not decode from its own payload"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// 8. Declarations the macros should accept
// ---------------------------------------------------------------------------------------------

mod declarations {
    use super::*;

    /// Raw identifiers, fields named like generated items, container-level serde attributes and
    /// `flatten` (traced as `any`).
    #[event(name = "ticket:typed")]
    #[derive(Debug, Clone, PartialEq)]
    #[serde(rename_all = "kebab-case")]
    pub struct Typed {
        /// A field named `type`.
        pub r#type: String,
        pub version: u32,
        pub name: String,
        pub event_name: String,
        pub followup_on: Option<String>,
        #[serde(flatten)]
        pub extra: BTreeMap<String, Value>,
    }

    #[event(name = "defaults", alias = "defaults-old")]
    #[derive(Debug, Clone, PartialEq, Default)]
    #[serde(default)]
    pub(crate) struct Defaults {
        pub a: u8,
        pub b: Vec<u8>,
    }

    #[event]
    #[derive(Debug, Clone, PartialEq)]
    pub enum MachineEvent {
        T(self::Typed),
        D(super::declarations::Defaults),
    }

    /// A projection-style subset sharing an event type with the aggregate's enum.
    #[event]
    #[derive(Debug, Clone, PartialEq)]
    pub enum TypedOnly {
        T(Typed),
    }

    /// An enum aggregate, without `name` (the type's name is the stored type).
    #[derive(Debug, Default, PartialEq, Serialize, Deserialize, Aggregate)]
    #[aggregate(event = MachineEvent)]
    pub enum Machine {
        #[default]
        Empty,
        Typed {
            kind: String,
        },
        Defaulted(u8),
    }
    impl Apply<Typed> for Machine {
        fn apply(&mut self, e: &Typed) {
            *self = Machine::Typed { kind: e.r#type.clone() };
        }
    }
    impl Apply<Defaults> for Machine {
        fn apply(&mut self, e: &Defaults) {
            *self = Machine::Defaulted(e.a);
        }
    }
}

#[test]
fn serde_container_attributes_raw_identifiers_and_enum_aggregates_are_accepted() {
    use declarations::*;
    let typed = Typed {
        r#type: "bug".into(),
        version: 3,
        name: "n".into(),
        event_name: "e".into(),
        followup_on: None,
        extra: BTreeMap::from([("k".into(), json!(1))]),
    };
    let event: MachineEvent = typed.clone().into();
    assert_eq!((event.event_name(), event.schema_version()), ("ticket:typed", 1));
    let payload: Value = serde_json::from_slice(&event.encode_payload().unwrap()).unwrap();
    assert_eq!(
        payload,
        json!({"type": "bug", "version": 3, "name": "n", "event-name": "e", "followup-on": null, "k": 1})
    );
    assert_eq!(
        MachineEvent::decode("ticket:typed", 1, payload.to_string().as_bytes()).unwrap(),
        event
    );
    assert_eq!(
        MachineEvent::decode("defaults-old", 1, b"{}").unwrap(),
        Defaults::default().into()
    );
    let _subset: TypedOnly = typed.into();
    assert_eq!(<Machine as Aggregate>::TYPE, "Machine");
    let given = AggregateTest::<Machine>::given([event]);
    assert_eq!(given.state(), &Machine::Typed { kind: "bug".into() });
}

// ---------------------------------------------------------------------------------------------
// 9. Defects found by this review, fixed since
// ---------------------------------------------------------------------------------------------

mod floats {
    use super::*;

    #[event(name = "Measured")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Measured {
        pub value: f64,
    }

    #[event]
    #[derive(Debug, Clone, PartialEq)]
    pub enum SensorEvent {
        Measured(Measured),
    }

    #[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "sensor", event = SensorEvent)]
    pub struct Sensor {
        pub last: f64,
    }
    impl Apply<Measured> for Sensor {
        fn apply(&mut self, e: &Measured) {
            self.last = e.value;
        }
    }
}

#[tokio::test]
async fn an_event_that_cannot_be_read_back_is_refused_before_it_poisons_the_stream() {
    use floats::*;
    let sensors = Repository::<Sensor, _>::new(InMemoryStore::new());
    let appended = sensors
        .execute("s-1", Metadata::new(), |_: &Sensor| {
            vec![Measured { value: f64::NAN }.into()]
        })
        .await;
    let refusal = appended.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refusal.contains("would not read back"), "refused: {refusal}");
    let loaded = sensors.load("s-1").await.expect("the stream still loads");
    assert_eq!(loaded.version, 0, "nothing was stored");
    let fine = sensors
        .execute("s-1", Metadata::new(), |_: &Sensor| {
            vec![Measured { value: 21.5 }.into()]
        })
        .await
        .expect("a finite value is stored");
    assert_eq!(fine.version, 1);
}

mod retire_before {
    use super::*;

    #[event(name = "EmailChanged", version = 2)]
    #[upcast(from = 1, json = wrap)]
    #[derive(Debug, Clone, PartialEq)]
    pub struct EmailChanged {
        pub email: String,
    }

    #[allow(clippy::unnecessary_wraps)]
    fn wrap(v: Value) -> Result<Value, UpcastError> {
        Ok(json!({ "email": v }))
    }

    #[event(name = "Opened")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Opened;

    #[event]
    #[derive(Debug, Clone, PartialEq)]
    pub enum ContactEvent {
        Opened(Opened),
        Email(EmailChanged),
    }

    #[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "contact", event = ContactEvent)]
    pub struct Contact;
    impl Apply<Opened> for Contact {
        fn apply(&mut self, _: &Opened) {}
    }
    impl Apply<EmailChanged> for Contact {
        fn apply(&mut self, _: &EmailChanged) {}
    }
}

mod retire_after {
    use super::*;

    #[event(name = "Opened")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Opened;

    /// `EmailChanged` (stored at v1 and v2) retired, with a rule for version 1 only.
    #[event]
    #[derive(Debug, Clone, PartialEq)]
    #[replaced(name = "EmailChanged", by = v1_only)]
    pub enum ContactEvent {
        Opened(Opened),
    }

    #[allow(clippy::unnecessary_wraps)]
    fn v1_only(_: Value) -> Result<Vec<ContactEvent>, UpcastError> {
        Ok(Vec::new())
    }

    #[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "contact", event = ContactEvent)]
    pub struct Contact;
    impl Apply<Opened> for Contact {
        fn apply(&mut self, _: &Opened) {}
    }
}

#[test]
fn the_schema_lock_fails_when_a_retired_event_s_locked_version_has_no_rule() {
    let dir = lock_dir("retired");
    let lock = dir.join("events.lock");
    check_schema_lock(&registry_of::<retire_before::Contact>(), &lock, LockMode::Update).unwrap();
    assert!(std::fs::read_to_string(&lock)
        .unwrap()
        .contains("[contact EmailChanged v2]"));
    // Stored v2 events no longer decode...
    assert!(retire_after::ContactEvent::decode_all("EmailChanged", 2, br#"{"email":"a"}"#).is_err());
    // ...so the lock must say so.
    let report = check_schema_lock(&registry_of::<retire_after::Contact>(), &lock, LockMode::Verify).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        matches!(report.problems.as_slice(), [LockProblem::RetiredVersionUnread { key }]
            if key.event == "EmailChanged" && key.version == 2),
        "{report}"
    );
    let message = report.to_string();
    assert!(message.contains("version = 2"), "names the rule to add: {message}");
}

#[test]
fn a_retired_name_at_a_version_without_a_rule_is_not_reported_as_newer_than_the_code() {
    let error =
        retire_after::ContactEvent::decode_all("EmailChanged", 2, br#"{"email":"a"}"#).expect_err("no rule reads v2");
    assert!(
        matches!(
            error,
            DecodeError::NoReplacedRule {
                event_name: "EmailChanged",
                stored: 2
            }
        ),
        "{error}"
    );
    let message = error.to_string();
    assert!(!message.contains("deploy the newer code"), "{message}");
    assert!(
        message.contains("#[replaced(name = \"EmailChanged\", version = 2"),
        "{message}"
    );
}
