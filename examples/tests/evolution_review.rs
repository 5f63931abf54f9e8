//! An outside user's review of schema evolution: a product two years in production whose event
//! schemas changed many times. Old binaries (modules `v1`, `v2`) write; the current binary
//! (module `v3`) reads the same store, on a SQLite file and on a PostgreSQL schema.
//!
//! Covered: upcast chains (JSON and typed steps), renamed/retyped/added/removed fields, enums
//! gaining variants, optional fields added without a bump, aliases, retired events split,
//! merged or dropped by `#[replaced]` rules (versions, time travel, projections, positions),
//! unknown names, payloads newer than the code, snapshots across changes, and the schema lock.

use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use es_core::schema::{check_schema_lock, LockMode, LockOutcome, LockProblem};
use es_core::{
    async_trait, CommandError, DecodeError, DecodedEvent, EventRegistry, EventSet, EventStore, Executed,
    ExpectedVersion, FailurePolicy, GlobalLog, HandlerError, InMemoryReadModel, Metadata, NewEvent, Projection,
    ProjectionError, ProjectionRunner, RecordDecodeError, Repository, RepositoryError, RunnerOptions, Snapshot,
    SnapshotStore, StoreError, StreamId, StreamSlice, UnknownEvents,
};
use es_test_support::{bounded_by, TestDatabase};
use uuid::Uuid;

#[path = "support/review/mod.rs"]
mod review;

use review::running::catch_up_to;
use review::stores::{open_write_transaction, postgres, raw_event, sqlite_in};

// ---------------------------------------------------------------------------------------------
// The binary of two years ago.
// ---------------------------------------------------------------------------------------------

mod v1 {
    use es_core::{event, Aggregate, Apply};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Carrier {
        Post,
        Courier,
    }

    #[event(name = "OrderPlaced")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct OrderPlaced {
        pub item: String,
        pub qty: u32,
        /// Dropped in v2.
        pub legacy_code: String,
    }

    #[event(name = "OrderShipped")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct OrderShipped {
        pub carrier: Carrier,
    }

    /// Retired in v3: dropped.
    #[event(name = "OrderNoteAdded")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct OrderNoteAdded {
        pub note: String,
    }

    /// Retired in v3: split into `OrderPlaced` and `DiscountApplied`.
    #[event(name = "OrderPlacedWithDiscount")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct OrderPlacedWithDiscount {
        pub item: String,
        pub qty: u32,
        pub percent: u8,
    }

    /// Retired in v3: replaced by one `PriorityRaised`.
    #[event(name = "OrderExpedited")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct OrderExpedited;

    /// Renamed `OrderVoided` in v3.
    #[event(name = "OrderCancelled")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct OrderCancelled {
        pub reason: String,
    }

    #[event]
    #[derive(Debug, Clone, PartialEq)]
    pub enum OrderEvent {
        Placed(OrderPlaced),
        Shipped(OrderShipped),
        Note(OrderNoteAdded),
        PlacedWithDiscount(OrderPlacedWithDiscount),
        Expedited(OrderExpedited),
        Cancelled(OrderCancelled),
    }

    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "order", event = OrderEvent)]
    pub struct Order {
        pub item: String,
        pub qty: u32,
        pub notes: Vec<String>,
        pub cancelled: bool,
        pub carrier: Option<Carrier>,
        pub applied: u32,
    }

    impl Apply<OrderPlaced> for Order {
        fn apply(&mut self, e: &OrderPlaced) {
            self.item = e.item.clone();
            self.qty = e.qty;
            self.applied += 1;
        }
    }
    impl Apply<OrderShipped> for Order {
        fn apply(&mut self, e: &OrderShipped) {
            self.carrier = Some(e.carrier.clone());
            self.applied += 1;
        }
    }
    impl Apply<OrderNoteAdded> for Order {
        fn apply(&mut self, e: &OrderNoteAdded) {
            self.notes.push(e.note.clone());
            self.applied += 1;
        }
    }
    impl Apply<OrderPlacedWithDiscount> for Order {
        fn apply(&mut self, e: &OrderPlacedWithDiscount) {
            self.item = e.item.clone();
            self.qty = e.qty;
            self.applied += 1;
        }
    }
    impl Apply<OrderExpedited> for Order {
        fn apply(&mut self, _: &OrderExpedited) {
            self.applied += 1;
        }
    }
    impl Apply<OrderCancelled> for Order {
        fn apply(&mut self, _: &OrderCancelled) {
            self.cancelled = true;
            self.applied += 1;
        }
    }

    pub fn placed(item: &str, qty: u32) -> OrderEvent {
        OrderPlaced {
            item: item.into(),
            qty,
            legacy_code: "LC-9".into(),
        }
        .into()
    }
}

// ---------------------------------------------------------------------------------------------
// The binary of one year ago: `OrderPlaced` v2 gained a priority and lost the legacy code.
// ---------------------------------------------------------------------------------------------

mod v2 {
    use es_core::{event, Aggregate, Apply, UpcastError};
    use serde::{Deserialize, Serialize};
    use serde_json::Value;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Priority {
        Low,
        Normal,
        High,
    }

    #[event(name = "OrderPlaced", version = 2)]
    #[upcast(from = 1, json = add_priority)]
    #[derive(Debug, Clone, PartialEq)]
    pub struct OrderPlaced {
        pub item: String,
        pub qty: u32,
        pub priority: Priority,
    }

    pub fn add_priority(mut v1: Value) -> Result<Value, UpcastError> {
        let fields = v1
            .as_object_mut()
            .ok_or_else(|| UpcastError::new("OrderPlaced v1 is not an object"))?;
        fields.remove("legacy_code");
        fields.insert("priority".into(), "Normal".into());
        Ok(v1)
    }

    #[event]
    #[derive(Debug, Clone, PartialEq)]
    pub enum OrderEvent {
        Placed(OrderPlaced),
    }

    #[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "order", event = OrderEvent)]
    pub struct Order {
        pub item: String,
    }

    impl Apply<OrderPlaced> for Order {
        fn apply(&mut self, e: &OrderPlaced) {
            self.item = e.item.clone();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Today's binary.
// ---------------------------------------------------------------------------------------------

mod v3 {
    use es_core::{event, Aggregate, Apply, UpcastError};
    use serde::{Deserialize, Serialize};
    use serde_json::Value;

    /// Gained `Urgent` in v3.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Priority {
        Low,
        Normal,
        High,
        Urgent,
    }

    /// Gained `Drone` (no version bump: a new variant is compatible).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Carrier {
        Post,
        Courier,
        Drone,
    }

    /// v3: `item` renamed `sku`, `qty` renamed `quantity` and retyped u32 -> u64, `gift_note` added.
    #[event(name = "OrderPlaced", version = 3)]
    #[upcast(from = 1, json = super::v2::add_priority)]
    #[upcast(from = 2, typed = PlacedV2)]
    #[derive(Debug, Clone, PartialEq)]
    pub struct OrderPlaced {
        pub sku: String,
        pub quantity: u64,
        pub priority: Priority,
        pub gift_note: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct PlacedV2 {
        item: String,
        qty: u32,
        priority: Priority,
    }

    impl TryFrom<PlacedV2> for OrderPlaced {
        type Error = String;
        fn try_from(v2: PlacedV2) -> Result<Self, String> {
            if v2.item.is_empty() {
                return Err("an OrderPlaced v2 without an item".into());
            }
            Ok(OrderPlaced {
                sku: v2.item,
                quantity: u64::from(v2.qty),
                priority: v2.priority,
                gift_note: None,
            })
        }
    }

    /// New in v3 (its v1 only ever existed in a pre-release, which added `code` in v2). Its
    /// step is written carelessly on purpose: it indexes the payload and panics on a non-object.
    #[event(name = "DiscountApplied", version = 2)]
    #[upcast(from = 1, json = add_code)]
    #[derive(Debug, Clone, PartialEq)]
    pub struct DiscountApplied {
        pub percent: u8,
        pub code: String,
    }

    fn add_code(mut v1: Value) -> Result<Value, UpcastError> {
        v1["code"] = "none".into();
        Ok(v1)
    }

    /// `tracking` added without a version bump (an `Option`).
    #[event(name = "OrderShipped")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct OrderShipped {
        pub carrier: Carrier,
        pub tracking: Option<String>,
    }

    /// Was stored as `OrderCancelled`.
    #[event(name = "OrderVoided", alias = "OrderCancelled")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct OrderVoided {
        pub reason: String,
    }

    #[event(name = "PriorityRaised")]
    #[derive(Debug, Clone, PartialEq)]
    pub struct PriorityRaised {
        pub to: Priority,
    }

    #[event]
    #[derive(Debug, Clone, PartialEq)]
    #[replaced(name = "OrderPlacedWithDiscount", by = split_discount)]
    #[replaced(name = "OrderNoteAdded", by = drop_note)]
    #[replaced(name = "OrderExpedited", by = expedited)]
    pub enum OrderEvent {
        Placed(OrderPlaced),
        Discount(DiscountApplied),
        Shipped(OrderShipped),
        Voided(OrderVoided),
        PriorityRaised(PriorityRaised),
    }

    #[derive(Deserialize)]
    pub struct PlacedWithDiscount {
        item: String,
        qty: u32,
        percent: u8,
    }

    fn split_discount(old: PlacedWithDiscount) -> Result<Vec<OrderEvent>, UpcastError> {
        Ok(vec![
            OrderPlaced {
                sku: old.item,
                quantity: u64::from(old.qty),
                priority: Priority::Normal,
                gift_note: None,
            }
            .into(),
            DiscountApplied {
                percent: old.percent,
                code: "legacy".into(),
            }
            .into(),
        ])
    }

    fn drop_note(_: Value) -> Result<Vec<OrderEvent>, UpcastError> {
        Ok(Vec::new())
    }

    fn expedited(_: Value) -> Result<Vec<OrderEvent>, UpcastError> {
        Ok(vec![PriorityRaised { to: Priority::High }.into()])
    }

    /// Snapshot state v2; v1 was the old binary's `Order`.
    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "order", event = OrderEvent, snapshot_version = 2)]
    #[upcast(from = 1, json = state_v1_to_v2)]
    pub struct Order {
        pub sku: String,
        pub quantity: u64,
        pub priority: Option<Priority>,
        pub discount: u8,
        pub voided: bool,
        pub carrier: Option<Carrier>,
        pub applied: u32,
        /// Set only by the snapshot upcast: proves a loaded state came from an old snapshot.
        #[serde(default)]
        pub restored_from: Option<String>,
    }

    pub const RESTORED: &str = "v1-snapshot";

    fn state_v1_to_v2(mut state: Value) -> Result<Value, UpcastError> {
        let fields = state
            .as_object_mut()
            .ok_or_else(|| UpcastError::new("state v1 is not an object"))?;
        let item = fields
            .remove("item")
            .ok_or_else(|| UpcastError::missing_field("item"))?;
        let qty = fields.remove("qty").ok_or_else(|| UpcastError::missing_field("qty"))?;
        let cancelled = fields.remove("cancelled").unwrap_or(Value::Bool(false));
        fields.remove("notes");
        fields.insert("sku".into(), item);
        fields.insert("quantity".into(), qty);
        fields.insert("voided".into(), cancelled);
        fields.insert("priority".into(), Value::Null);
        fields.insert("discount".into(), 0.into());
        fields.insert("restored_from".into(), RESTORED.into());
        Ok(state)
    }

    impl Apply<OrderPlaced> for Order {
        fn apply(&mut self, e: &OrderPlaced) {
            self.sku = e.sku.clone();
            self.quantity = e.quantity;
            self.priority = Some(e.priority.clone());
            self.applied += 1;
        }
    }
    impl Apply<DiscountApplied> for Order {
        fn apply(&mut self, e: &DiscountApplied) {
            self.discount = e.percent;
            self.applied += 1;
        }
    }
    impl Apply<OrderShipped> for Order {
        fn apply(&mut self, e: &OrderShipped) {
            self.carrier = Some(e.carrier.clone());
            self.applied += 1;
        }
    }
    impl Apply<OrderVoided> for Order {
        fn apply(&mut self, _: &OrderVoided) {
            self.voided = true;
            self.applied += 1;
        }
    }
    impl Apply<PriorityRaised> for Order {
        fn apply(&mut self, e: &PriorityRaised) {
            self.priority = Some(e.to.clone());
            self.applied += 1;
        }
    }

    /// The same events, with the apply logic changed: old snapshots are wrong.
    #[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "order", event = OrderEvent, snapshot_revision = 2)]
    pub struct OrderRevised {
        pub applied: u32,
    }

    impl<E> Apply<E> for OrderRevised {
        fn apply(&mut self, _: &E) {
            self.applied += 1;
        }
    }

    pub fn placed(sku: &str, quantity: u64, priority: Priority) -> OrderEvent {
        OrderPlaced {
            sku: sku.into(),
            quantity,
            priority,
            gift_note: Some("happy birthday".into()),
        }
        .into()
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

trait Store: EventStore + SnapshotStore + GlobalLog + Clone + Send + Sync + 'static {}
impl<T: EventStore + SnapshotStore + GlobalLog + Clone + Send + Sync + 'static> Store for T {}

const BOUND: Duration = Duration::from_secs(20);

/// One test per backend for `scenario(store, backend)`, each with attributes of its own (an
/// `#[ignore]` where a backend shows a defect).
macro_rules! on_both {
    ($scenario:ident, $(#[$sqlite_attr:meta])* $sqlite:ident, $(#[$postgres_attr:meta])* $postgres:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$sqlite_attr])*
        async fn $sqlite() {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let store = sqlite_in(&dir).await;
            bounded_by(BOUND, $scenario(store, "sqlite")).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$postgres_attr])*
        async fn $postgres() {
            let schema = postgres().await;
            bounded_by(BOUND, $scenario(schema.store().clone(), "postgres")).await;
        }
    };
}

fn order_stream(id: &str) -> StreamId {
    StreamId::new("order", id)
}

/// Appends raw events to the end of a stream; their positions.
async fn append_raw<S: Store>(store: &S, id: &str, events: Vec<NewEvent>) -> Vec<u64> {
    store
        .append(&order_stream(id), ExpectedVersion::Any, events)
        .await
        .expect("appended")
        .positions
}

fn old_repo<S: Store>(store: &S) -> Repository<v1::Order, S> {
    Repository::new(store.clone())
}

fn repo<S: Store>(store: &S) -> Repository<v3::Order, S> {
    Repository::new(store.clone())
}

/// Today's command on order `id`: void it, for `reason`.
async fn void_order<S: Store>(
    orders: &Repository<v3::Order, S>,
    id: &str,
    reason: &str,
) -> Result<Executed<v3::Order>, CommandError<Infallible>> {
    orders
        .execute(id, Metadata::new(), |_: &v3::Order| {
            vec![v3::OrderVoided { reason: reason.into() }.into()]
        })
        .await
}

/// The decode error behind a failed load.
fn decode_error(error: RepositoryError) -> RecordDecodeError {
    match error {
        RepositoryError::Decode(error) => *error,
        other => panic!("expected a decode error, got {other:?}"),
    }
}

/// A projection over today's events that writes down what it is given.
struct Recorder;

fn label(event: &v3::OrderEvent) -> String {
    match event {
        v3::OrderEvent::Placed(e) => format!("placed {} x{} {:?}", e.sku, e.quantity, e.priority),
        v3::OrderEvent::Discount(e) => format!("discount {}", e.percent),
        v3::OrderEvent::Shipped(e) => format!("shipped {:?} {:?}", e.carrier, e.tracking),
        v3::OrderEvent::Voided(e) => format!("voided {}", e.reason),
        v3::OrderEvent::PriorityRaised(e) => format!("priority {:?}", e.to),
    }
}

#[async_trait]
impl Projection for Recorder {
    const NAME: &'static str = "order-recorder";
    const AGGREGATE_TYPES: &'static [&'static str] = &["order"];
    type Event = v3::OrderEvent;
    type Context = Vec<(String, u64, u64, String)>;

    async fn handle(&self, seen: &mut Self::Context, event: &DecodedEvent<v3::OrderEvent>) -> Result<(), HandlerError> {
        seen.push((
            event.envelope.stream.aggregate_id.clone(),
            event.envelope.version,
            event.envelope.position,
            label(&event.event),
        ));
        Ok(())
    }

    async fn reset(&self, seen: &mut Self::Context) -> Result<(), HandlerError> {
        seen.clear();
        Ok(())
    }
}

type Seen = Vec<(String, u64, u64, String)>;

/// How long a catch-up may take to reach a position the log already shows.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(5);

/// Catches up until the runner fails (or reaches `position`, which the caller did not expect).
async fn catch_up_until_error<P, E, C>(runner: &ProjectionRunner<P, E, C>, position: u64) -> ProjectionError
where
    P: Projection,
    E: GlobalLog,
    C: es_core::CheckpointStore<Context = P::Context>,
{
    loop {
        match runner.catch_up().await {
            Err(error) => return error,
            Ok(caught_up) if caught_up.position >= position => {
                panic!("expected the runner to fail, but it reached {}", caught_up.position)
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Waits until the global log shows the event at `position`.
async fn visible<S: Store>(store: &S, position: u64) {
    while store.read_all(position - 1, 1).await.unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn fast_failures(failure: FailurePolicy, unknown_events: UnknownEvents) -> RunnerOptions {
    RunnerOptions {
        failure,
        unknown_events,
        poll_interval: Duration::from_millis(20),
        ..RunnerOptions::default()
    }
}

fn seen_of(model: &InMemoryReadModel<Seen>, id: &str) -> Vec<(u64, u64, String)> {
    model.read(|seen| {
        seen.iter()
            .filter(|(stream, ..)| stream == id)
            .map(|(_, version, position, label)| (*version, *position, label.clone()))
            .collect()
    })
}

// ---------------------------------------------------------------------------------------------
// 1. Upcast chains: v1 -> v2 -> v3, JSON then typed steps, renamed/retyped/added/removed fields,
//    enums gaining variants, an Option field added without a bump.
// ---------------------------------------------------------------------------------------------

async fn upcast_chain_scenario<S: Store>(store: S, backend: &str) {
    let old = old_repo(&store);
    old.execute("O-1", Metadata::new(), |_: &v1::Order| vec![v1::placed("widget", 2)])
        .await
        .unwrap();
    old.execute("O-1", Metadata::new(), |_: &v1::Order| {
        vec![v1::OrderShipped {
            carrier: v1::Carrier::Courier,
        }
        .into()]
    })
    .await
    .unwrap();
    let middle = Repository::<v2::Order, S>::new(store.clone());
    middle
        .execute("O-2", Metadata::new(), |_: &v2::Order| {
            vec![v2::OrderPlaced {
                item: "gadget".into(),
                qty: 5,
                priority: v2::Priority::High,
            }
            .into()]
        })
        .await
        .unwrap();
    let orders = repo(&store);
    orders
        .execute("O-3", Metadata::new(), |_: &v3::Order| {
            vec![
                v3::placed("gizmo", 7, v3::Priority::Urgent),
                v3::OrderShipped {
                    carrier: v3::Carrier::Drone,
                    tracking: Some("TRK-1".into()),
                }
                .into(),
            ]
        })
        .await
        .unwrap();

    // v1 payloads go through the JSON step, then the typed step.
    let o1 = orders.load("O-1").await.unwrap();
    assert_eq!(o1.version, 2, "{backend}");
    assert_eq!(
        (
            o1.aggregate.sku.as_str(),
            o1.aggregate.quantity,
            o1.aggregate.priority.clone()
        ),
        ("widget", 2, Some(v3::Priority::Normal)),
        "{backend}"
    );
    assert_eq!(o1.aggregate.carrier, Some(v3::Carrier::Courier), "{backend}");
    let history = orders.events("O-1", StreamSlice::all()).await.unwrap();
    let stored: Vec<_> = history
        .iter()
        .map(|e| (e.envelope.event_name.as_str(), e.envelope.schema_version))
        .collect();
    assert_eq!(
        stored,
        [("OrderPlaced", 1), ("OrderShipped", 1)],
        "{backend}: never rewritten"
    );
    match &history[0].event {
        v3::OrderEvent::Placed(placed) => assert_eq!(placed.gift_note, None, "{backend}"),
        other => panic!("{backend}: {other:?}"),
    }
    match &history[1].event {
        v3::OrderEvent::Shipped(shipped) => {
            assert_eq!(
                shipped.tracking, None,
                "{backend}: Option added without a bump reads as None"
            )
        }
        other => panic!("{backend}: {other:?}"),
    }

    // v2 payloads through the typed step only.
    let o2 = orders.load("O-2").await.unwrap();
    assert_eq!(
        (o2.aggregate.sku.as_str(), o2.aggregate.quantity, o2.aggregate.priority),
        ("gadget", 5, Some(v3::Priority::High)),
        "{backend}"
    );

    // Current payloads straight; new enum variants round-trip.
    let o3 = orders.load("O-3").await.unwrap();
    assert_eq!(o3.aggregate.priority, Some(v3::Priority::Urgent), "{backend}");
    assert_eq!(o3.aggregate.carrier, Some(v3::Carrier::Drone), "{backend}");

    // Projections read through the same chain.
    let model = InMemoryReadModel::<Seen>::new();
    let runner = ProjectionRunner::new(Recorder, store.clone(), model.clone());
    let head = orders.events("O-3", StreamSlice::all()).await.unwrap()[1]
        .envelope
        .position;
    catch_up_to(&runner, head, CATCH_UP_WITHIN).await;
    let labels: Vec<String> = model.read(|seen| seen.iter().map(|s| s.3.clone()).collect());
    assert_eq!(
        labels,
        [
            "placed widget x2 Normal",
            "shipped Courier None",
            "placed gadget x5 High",
            "placed gizmo x7 Urgent",
            "shipped Drone Some(\"TRK-1\")",
        ],
        "{backend}"
    );

    // The old binary, still running somewhere during a rolling deploy, meets today's events:
    // a typed error, not a panic, not a silent default.
    let error = decode_error(old.load("O-3").await.unwrap_err());
    assert_eq!(
        (error.version, error.event_name.as_str()),
        (1, "OrderPlaced"),
        "{backend}"
    );
    assert!(
        matches!(
            *error.source,
            DecodeError::SchemaVersionTooNew {
                stored: 3,
                current: 1,
                ..
            }
        ),
        "{backend}: {error}"
    );
}

on_both!(
    upcast_chain_scenario,
    upcast_chain_v1_v2_v3_sqlite,
    upcast_chain_v1_v2_v3_postgres
);

/// What a decode error must look like.
type Expected = fn(&DecodeError) -> bool;

/// A step gets whatever was stored: odd payloads are typed errors naming the stream, version and
/// event; a panicking step is caught; the process goes on.
async fn upcast_failures_scenario<S: Store>(store: S, backend: &str) {
    let orders = repo(&store);
    let cases: [(&str, NewEvent, Expected); 6] = [
        // The JSON step refuses a payload that is not an object.
        ("F-1", raw_event("OrderPlaced", 1, r#""a string""#), |e| {
            matches!(e, DecodeError::Upcast { from: 1, .. })
        }),
        // The typed step's TryFrom refuses.
        (
            "F-2",
            raw_event("OrderPlaced", 2, r#"{"item":"","qty":1,"priority":"Low"}"#),
            |e| matches!(e, DecodeError::Upcast { from: 2, message, .. } if message.contains("without an item")),
        ),
        // The typed step's old shape does not fit.
        (
            "F-3",
            raw_event("OrderPlaced", 2, r#"{"item":"x","qty":-1,"priority":"Low"}"#),
            |e| matches!(e, DecodeError::Payload { schema_version: 2, .. }),
        ),
        // A careless step that panics (indexing an array) is caught.
        (
            "F-4",
            raw_event("DiscountApplied", 1, "[1,2]"),
            |e| matches!(e, DecodeError::Upcast { from: 1, message, .. } if message.contains("panicked")),
        ),
        // Below the chain.
        ("F-5", raw_event("OrderPlaced", 0, r#"{"item":"x","qty":1}"#), |e| {
            matches!(
                e,
                DecodeError::NoUpcastPath {
                    stored: 0,
                    current: 3,
                    ..
                }
            )
        }),
        // The current version with the wrong shape.
        ("F-6", raw_event("OrderPlaced", 3, r#"{"sku":1}"#), |e| {
            matches!(e, DecodeError::Payload { schema_version: 3, .. })
        }),
    ];
    for (id, event, expected) in cases {
        append_raw(
            &store,
            id,
            vec![raw_event("OrderVoided", 1, r#"{"reason":"first"}"#), event],
        )
        .await;
        let error = decode_error(orders.load(id).await.unwrap_err());
        assert_eq!(error.stream, order_stream(id), "{backend} {id}");
        assert_eq!(error.version, 2, "{backend} {id}");
        assert!(expected(&error.source), "{backend} {id}: {:?}", error.source);
        let message = error.to_string();
        assert!(
            message.contains(&format!("order/{id}")) && message.contains("version 2"),
            "{backend} {id}: {message}"
        );
        // Listing the stream fails the same way rather than panicking.
        assert!(orders.events(id, StreamSlice::all()).await.is_err(), "{backend} {id}");
        // A command refuses to decide on a state it cannot build; nothing is appended.
        let executed = void_order(&orders, id, "x").await;
        assert!(executed.is_err(), "{backend} {id}");
        assert_eq!(
            store.stream_version(&order_stream(id)).await.unwrap(),
            2,
            "{backend} {id}"
        );
    }
}

on_both!(
    upcast_failures_scenario,
    upcast_failures_are_typed_errors_sqlite,
    upcast_failures_are_typed_errors_postgres
);

/// Decoding without a store: the chain of JSON then typed steps, through `EventSet::decode`.
#[test]
fn upcast_chain_decodes_without_a_store() {
    let from_v1 = v3::OrderEvent::decode("OrderPlaced", 1, br#"{"item":"a","qty":3,"legacy_code":"x"}"#).unwrap();
    assert_eq!(
        from_v1,
        v3::OrderPlaced {
            sku: "a".into(),
            quantity: 3,
            priority: v3::Priority::Normal,
            gift_note: None
        }
        .into()
    );
    // A v1 payload with a qty too big for v2's u32 fails in the typed step's decode, typed.
    let too_big = v3::OrderEvent::decode("OrderPlaced", 1, br#"{"item":"a","qty":5000000000}"#).unwrap_err();
    assert!(matches!(too_big, DecodeError::Payload { .. }), "{too_big:?}");
    // Unknown variant of an enum inside an event: a typed error naming the event.
    let unknown_variant =
        v3::OrderEvent::decode("OrderShipped", 1, br#"{"carrier":"Teleport","tracking":null}"#).unwrap_err();
    assert!(
        matches!(
            unknown_variant,
            DecodeError::Payload {
                event_name: "OrderShipped",
                ..
            }
        ),
        "{unknown_variant:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Retired events: split (two), replaced (one), dropped (zero); versions, time travel by
//    version and instant, listings, commands after them, projections and their positions.
// ---------------------------------------------------------------------------------------------

/// The old binary writes one event per command, a little apart in time; their envelopes as the
/// store recorded them.
async fn old_history<S: Store>(store: &S, id: &str, events: Vec<v1::OrderEvent>) -> Vec<es_core::RecordedEvent> {
    let old = old_repo(store);
    let mut recorded = Vec::new();
    for event in events {
        tokio::time::sleep(Duration::from_millis(15)).await;
        let executed = old
            .execute(id, Metadata::new(), move |_: &v1::Order| vec![event.clone()])
            .await
            .unwrap();
        let stored = store.read_event(executed.appended[0].event_id).await.unwrap().unwrap();
        recorded.push(stored);
    }
    tokio::time::sleep(Duration::from_millis(15)).await;
    recorded
}

async fn split_and_drop_scenario<S: Store>(store: S, backend: &str) {
    let stored = old_history(
        &store,
        "S-1",
        vec![
            v1::placed("widget", 1),
            v1::OrderNoteAdded {
                note: "call first".into(),
            }
            .into(),
            v1::OrderPlacedWithDiscount {
                item: "gadget".into(),
                qty: 3,
                percent: 10,
            }
            .into(),
            v1::OrderExpedited.into(),
            v1::OrderCancelled {
                reason: "changed mind".into(),
            }
            .into(),
        ],
    )
    .await;
    let orders = repo(&store);

    // Stream versions count stored events: 5, though 1 + 0 + 2 + 1 + 1 events apply.
    let now = orders.load("S-1").await.unwrap();
    assert_eq!(now.version, 5, "{backend}");
    assert_eq!(now.aggregate.applied, 5, "{backend}");
    assert_eq!(
        (
            now.aggregate.sku.as_str(),
            now.aggregate.quantity,
            now.aggregate.discount
        ),
        ("gadget", 3, 10),
        "{backend}"
    );
    assert_eq!(
        now.aggregate.priority,
        Some(v3::Priority::High),
        "{backend}: merged rule"
    );
    assert!(now.aggregate.voided, "{backend}: alias");

    // Time travel by version.
    let at = |v| orders.load_at_version("S-1", v);
    let (v1_, v2_, v3_, v4_) = (
        at(1).await.unwrap(),
        at(2).await.unwrap(),
        at(3).await.unwrap(),
        at(4).await.unwrap(),
    );
    assert_eq!(
        (v1_.version, v1_.aggregate.applied, v1_.aggregate.sku.as_str()),
        (1, 1, "widget"),
        "{backend}"
    );
    assert_eq!(
        (v2_.version, v2_.aggregate.applied, v2_.aggregate.sku.as_str()),
        (2, 1, "widget"),
        "{backend}: the dropped event counts its version and changes nothing"
    );
    assert_eq!(
        (v3_.version, v3_.aggregate.applied, v3_.aggregate.discount),
        (3, 3, 10),
        "{backend}: both halves of the split apply at version 3"
    );
    assert_eq!(v4_.aggregate.priority, Some(v3::Priority::High), "{backend}");

    // Time travel by instant, at each stored event's own timestamp.
    for (index, event) in stored.iter().enumerate() {
        let then = orders.load_at_instant("S-1", event.recorded_at).await.unwrap();
        assert_eq!(then.version, index as u64 + 1, "{backend}: at {}", event.recorded_at);
    }
    let between: DateTime<Utc> = stored[2].recorded_at + chrono::Duration::milliseconds(5);
    let then = orders.load_at_instant("S-1", between).await.unwrap();
    assert_eq!((then.version, then.aggregate.discount), (3, 10), "{backend}");

    // The listing: once per event it stands for, with the stored envelope.
    let listed = orders.events("S-1", StreamSlice::all()).await.unwrap();
    let listed: Vec<_> = listed
        .iter()
        .map(|e| (e.envelope.version, e.envelope.event_name.clone(), label(&e.event)))
        .collect();
    assert_eq!(
        listed,
        [
            (1, "OrderPlaced".to_string(), "placed widget x1 Normal".to_string()),
            (3, "OrderPlacedWithDiscount".into(), "placed gadget x3 Normal".into()),
            (3, "OrderPlacedWithDiscount".into(), "discount 10".into()),
            (4, "OrderExpedited".into(), "priority High".into()),
            (5, "OrderCancelled".into(), "voided changed mind".into()),
        ],
        "{backend}"
    );
    // A slice starting at the dropped event.
    let from_two = orders
        .events("S-1", StreamSlice::from_version(2).to_version(3))
        .await
        .unwrap();
    assert_eq!(
        from_two.len(),
        2,
        "{backend}: version 2 stands for nothing, version 3 for two"
    );

    // Today's commands append after the stored events; new names are written.
    let executed = void_order(&orders, "S-1", "again").await.unwrap();
    assert_eq!(executed.version, 6, "{backend}");
    let written = store.read_event(executed.appended[0].event_id).await.unwrap().unwrap();
    assert_eq!(
        written.event_name, "OrderVoided",
        "{backend}: the alias is never written"
    );

    // A projection gets each event with the stored envelope, none for the dropped one.
    let model = InMemoryReadModel::<Seen>::new();
    let runner = ProjectionRunner::new(Recorder, store.clone(), model.clone());
    catch_up_to(&runner, executed.position(), CATCH_UP_WITHIN).await;
    let p: Vec<u64> = stored.iter().map(|e| e.position).collect();
    assert_eq!(
        seen_of(&model, "S-1"),
        [
            (1, p[0], "placed widget x1 Normal".to_string()),
            (3, p[2], "placed gadget x3 Normal".into()),
            (3, p[2], "discount 10".into()),
            (4, p[3], "priority High".into()),
            (5, p[4], "voided changed mind".into()),
            (6, executed.position(), "voided again".into()),
        ],
        "{backend}"
    );
    // A rebuild gives the same model.
    let before = model.read(Clone::clone);
    runner.rebuild(|_| {}).await.unwrap();
    assert_eq!(model.read(Clone::clone), before, "{backend}");
}

on_both!(
    split_and_drop_scenario,
    split_merge_drop_sqlite,
    split_merge_drop_postgres
);

/// A log whose last event is dropped by a rule: the projection's checkpoint still passes it, so
/// a reader waiting for that position is not left waiting.
async fn dropped_last_scenario<S: Store>(store: S, backend: &str) {
    let stored = old_history(
        &store,
        "D-1",
        vec![
            v1::placed("widget", 1),
            v1::OrderNoteAdded { note: "last".into() }.into(),
        ],
    )
    .await;
    let model = InMemoryReadModel::<Seen>::new();
    let runner = ProjectionRunner::new(Recorder, store.clone(), model.clone());
    catch_up_to(&runner, stored[1].position, CATCH_UP_WITHIN).await;
    es_core::wait_for_checkpoint(
        &model,
        Recorder::NAME,
        stored[1].position,
        Duration::from_millis(10),
        Duration::from_secs(2),
    )
    .await
    .unwrap_or_else(|error| panic!("{backend}: waiting for the dropped event's position: {error}"));
    assert_eq!(seen_of(&model, "D-1").len(), 1, "{backend}");

    // The aggregate after a dropped last event: the version counts it, so a command appends.
    let orders = repo(&store);
    assert_eq!(orders.load("D-1").await.unwrap().version, 2, "{backend}");
    let executed = void_order(&orders, "D-1", "x").await.unwrap();
    assert_eq!(executed.version, 3, "{backend}");
}

on_both!(
    dropped_last_scenario,
    dropped_last_event_advances_checkpoint_sqlite,
    dropped_last_event_advances_checkpoint_postgres
);

/// Snapshots over a stream with split and dropped events: taken at the stored version, and time
/// travel before them still right.
async fn snapshots_over_split_scenario<S: Store>(store: S, backend: &str) {
    old_history(
        &store,
        "SS-1",
        vec![
            v1::placed("widget", 1),
            v1::OrderPlacedWithDiscount {
                item: "gadget".into(),
                qty: 3,
                percent: 10,
            }
            .into(),
            v1::OrderNoteAdded { note: "x".into() }.into(),
        ],
    )
    .await;
    let orders = repo(&store).with_snapshot_every(2);
    let executed = orders
        .execute("SS-1", Metadata::new(), |_: &v3::Order| {
            vec![v3::OrderShipped {
                carrier: v3::Carrier::Post,
                tracking: None,
            }
            .into()]
        })
        .await
        .unwrap();
    assert_eq!(executed.version, 4, "{backend}");
    let snapshot = store
        .load_snapshot(&order_stream("SS-1"))
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!((snapshot.version, snapshot.schema_version), (4, 2), "{backend}");
    let loaded = orders.load("SS-1").await.unwrap();
    assert_eq!((loaded.version, loaded.aggregate.applied), (4, 4), "{backend}");
    let before = orders.load_at_version("SS-1", 2).await.unwrap();
    assert_eq!(
        (before.version, before.aggregate.applied, before.aggregate.carrier),
        (2, 3, None),
        "{backend}"
    );
}

on_both!(
    snapshots_over_split_scenario,
    snapshots_over_split_streams_sqlite,
    snapshots_over_split_streams_postgres
);

/// Retired names at a version no rule reads.
#[test]
fn retired_name_at_an_unread_version_is_typed() {
    let error = v3::OrderEvent::decode_all("OrderNoteAdded", 2, br#"{"note":"x"}"#).unwrap_err();
    assert!(
        matches!(
            error,
            DecodeError::NoReplacedRule {
                event_name: "OrderNoteAdded",
                stored: 2
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("version = 2"), "{error}");
    // `decode` (one event) refuses a split and a drop with a typed error.
    let split = v3::OrderEvent::decode("OrderPlacedWithDiscount", 1, br#"{"item":"a","qty":1,"percent":5}"#);
    assert!(
        matches!(split, Err(DecodeError::NotOneEvent { count: 2, .. })),
        "{split:?}"
    );
    let dropped = v3::OrderEvent::decode("OrderNoteAdded", 1, br#"{"note":"a"}"#);
    assert!(
        matches!(dropped, Err(DecodeError::NotOneEvent { count: 0, .. })),
        "{dropped:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Renames and unknown names: aliases, projections over a subset of the events, an event
//    stored under a name today's code does not know, and `es doctor`.
// ---------------------------------------------------------------------------------------------

/// Voids only: handles `OrderVoided` (stored under its alias by the old binary), and passes the
/// other events of the aggregate over (`SOURCE_EVENTS`). The retired names get rules of their
/// own, as the docs ask of a subset.
struct Voids;

mod voids {
    use es_core::{event, UpcastError};
    use serde_json::Value;

    pub use super::v3::OrderVoided;

    #[event]
    #[derive(Debug, Clone, PartialEq)]
    #[replaced(name = "OrderPlacedWithDiscount", by = nothing)]
    #[replaced(name = "OrderNoteAdded", by = nothing)]
    #[replaced(name = "OrderExpedited", by = nothing)]
    pub enum VoidEvent {
        Voided(OrderVoided),
    }

    fn nothing(_: Value) -> Result<Vec<VoidEvent>, UpcastError> {
        Ok(Vec::new())
    }
}

#[async_trait]
impl Projection for Voids {
    const NAME: &'static str = "order-voids";
    const AGGREGATE_TYPES: &'static [&'static str] = &["order"];
    const SOURCE_EVENTS: &'static [&'static [es_core::EventDescriptor]] = &[v3::OrderEvent::EVENTS];
    type Event = voids::VoidEvent;
    type Context = Vec<String>;

    async fn handle(&self, seen: &mut Vec<String>, event: &DecodedEvent<voids::VoidEvent>) -> Result<(), HandlerError> {
        let voids::VoidEvent::Voided(voided) = &event.event;
        seen.push(format!("{}:{}", event.envelope.stream.aggregate_id, voided.reason));
        Ok(())
    }

    async fn reset(&self, seen: &mut Vec<String>) -> Result<(), HandlerError> {
        seen.clear();
        Ok(())
    }
}

/// Shipments only: does not handle `OrderVoided`, so an event stored under its alias must be
/// passed over like one stored under its name.
struct Shipments;

mod shipments {
    use es_core::{event, UpcastError};
    use serde_json::Value;

    pub use super::v3::OrderShipped;

    #[event]
    #[derive(Debug, Clone, PartialEq)]
    #[replaced(name = "OrderPlacedWithDiscount", by = nothing)]
    #[replaced(name = "OrderNoteAdded", by = nothing)]
    #[replaced(name = "OrderExpedited", by = nothing)]
    pub enum ShipmentEvent {
        Shipped(OrderShipped),
    }

    fn nothing(_: Value) -> Result<Vec<ShipmentEvent>, UpcastError> {
        Ok(Vec::new())
    }
}

#[async_trait]
impl Projection for Shipments {
    const NAME: &'static str = "order-shipments";
    const AGGREGATE_TYPES: &'static [&'static str] = &["order"];
    const SOURCE_EVENTS: &'static [&'static [es_core::EventDescriptor]] = &[v3::OrderEvent::EVENTS];
    type Event = shipments::ShipmentEvent;
    type Context = Vec<String>;

    async fn handle(
        &self,
        seen: &mut Vec<String>,
        event: &DecodedEvent<shipments::ShipmentEvent>,
    ) -> Result<(), HandlerError> {
        let shipments::ShipmentEvent::Shipped(shipped) = &event.event;
        seen.push(format!("{}:{:?}", event.envelope.stream.aggregate_id, shipped.carrier));
        Ok(())
    }

    async fn reset(&self, seen: &mut Vec<String>) -> Result<(), HandlerError> {
        seen.clear();
        Ok(())
    }
}

async fn aliases_in_projections_scenario<S: Store>(store: S, backend: &str) {
    let stored = old_history(
        &store,
        "A-1",
        vec![
            v1::placed("widget", 1),
            v1::OrderShipped {
                carrier: v1::Carrier::Post,
            }
            .into(),
            v1::OrderCancelled {
                reason: "old name".into(),
            }
            .into(),
            v1::OrderNoteAdded { note: "n".into() }.into(),
        ],
    )
    .await;
    let executed = void_order(&repo(&store), "A-1", "new name").await.unwrap();
    assert_eq!(executed.version, 5, "{backend}");
    let head = executed.position();

    let voids = InMemoryReadModel::<Vec<String>>::new();
    let runner = ProjectionRunner::new(Voids, store.clone(), voids.clone());
    catch_up_to(&runner, head, CATCH_UP_WITHIN).await;
    assert_eq!(
        voids.read(Clone::clone),
        ["A-1:old name", "A-1:new name"],
        "{backend}: an event stored under an alias reaches the projection that handles it"
    );

    let shipments = InMemoryReadModel::<Vec<String>>::new();
    let runner = ProjectionRunner::new(Shipments, store.clone(), shipments.clone());
    catch_up_to(&runner, head, CATCH_UP_WITHIN).await;
    assert_eq!(shipments.read(Clone::clone), ["A-1:Post"], "{backend}");
    assert!(stored.len() == 4, "{backend}");
}

on_both!(
    aliases_in_projections_scenario,
    aliases_reach_subset_projections_sqlite,
    aliases_reach_subset_projections_postgres
);

async fn unknown_name_scenario<S: Store>(store: S, backend: &str) {
    let orders = repo(&store);
    let placed = orders
        .execute("U-1", Metadata::new(), |_: &v3::Order| {
            vec![v3::placed("widget", 1, v3::Priority::Low)]
        })
        .await
        .unwrap();
    // Written by a newer binary, or by a branch that was rolled back.
    let positions = append_raw(&store, "U-1", vec![raw_event("OrderTeleported", 1, r#"{"to":"mars"}"#)]).await;

    // Loading names the stream, version and name, and says what to do.
    let error = decode_error(orders.load("U-1").await.unwrap_err());
    assert_eq!(
        (error.stream.clone(), error.version, error.event_name.as_str()),
        (order_stream("U-1"), 2, "OrderTeleported"),
        "{backend}"
    );
    assert!(
        matches!(*error.source, DecodeError::UnknownEventType { .. }),
        "{backend}: {error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("order/U-1") && message.contains("OrderTeleported") && message.contains("alias"),
        "{backend}: {message}"
    );
    // A command refuses; nothing is written.
    let refused = void_order(&orders, "U-1", "x").await;
    assert!(refused.is_err(), "{backend}");
    assert_eq!(
        store.stream_version(&order_stream("U-1")).await.unwrap(),
        2,
        "{backend}"
    );

    // Skipping, when asked: the version still counts it, so the next append checks against the
    // real stream.
    let skipping = repo(&store).with_unknown_events(UnknownEvents::Skip);
    let loaded = skipping.load("U-1").await.unwrap();
    assert_eq!((loaded.version, loaded.aggregate.applied), (2, 1), "{backend}");
    let executed = void_order(&skipping, "U-1", "x").await.unwrap();
    assert_eq!(executed.version, 3, "{backend}");
    // Time travel with skipping.
    assert_eq!(
        skipping.load_at_version("U-1", 2).await.unwrap().version,
        2,
        "{backend}"
    );

    // A projection stops on it by default, naming it; skips it when told.
    let model = InMemoryReadModel::<Seen>::new();
    let runner = ProjectionRunner::new(Recorder, store.clone(), model.clone())
        .with_options(fast_failures(FailurePolicy::Stop, UnknownEvents::Fail));
    match catch_up_until_error(&runner, executed.position()).await {
        ProjectionError::UnknownEvent {
            position,
            stream,
            version,
            ..
        } => assert_eq!(
            (position, stream, version),
            (positions[0], order_stream("U-1"), 2),
            "{backend}"
        ),
        other => panic!("{backend}: {other:?}"),
    }
    // (Whether the event before it is committed is not promised for unknown names; it is not.)
    assert!(
        seen_of(&model, "U-1").len() <= 1,
        "{backend}: nothing past the unknown event"
    );
    let skipping = ProjectionRunner::new(Recorder, store.clone(), model.clone())
        .with_options(fast_failures(FailurePolicy::Stop, UnknownEvents::Skip));
    catch_up_to(&skipping, executed.position(), CATCH_UP_WITHIN).await;
    assert_eq!(seen_of(&model, "U-1").len(), 2, "{backend}");
    assert_eq!(placed.version, 1, "{backend}");
}

on_both!(
    unknown_name_scenario,
    unknown_stored_name_sqlite,
    unknown_stored_name_postgres
);

/// `es doctor`, embedded through `es_cli::Cli::execute`: it reports the events today's code cannot
/// read (unknown name, payload newer than the code, failing upcast), naming each, and exits 1;
/// events read through aliases and retired-event rules are fine.
async fn doctor_scenario<S: Store + es_core::StreamCatalog>(store: S, backend: &str) {
    let history = old_history(
        &store,
        "DR-1",
        vec![
            v1::placed("widget", 1),
            v1::OrderPlacedWithDiscount {
                item: "g".into(),
                qty: 1,
                percent: 5,
            }
            .into(),
            v1::OrderNoteAdded { note: "n".into() }.into(),
            v1::OrderCancelled { reason: "r".into() }.into(),
        ],
    )
    .await;
    let doctor = |store: S| async move {
        let cli = es_cli::Cli::new(store).aggregate::<v3::Order>().unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let exit = cli.execute(["es", "doctor"], &mut out, &mut err).await;
        let text = format!("{}{}", String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
        (exit, text)
    };
    visible(&store, history[3].position).await;
    let (exit, text) = doctor(store.clone()).await;
    assert_eq!(
        exit,
        es_cli::Exit::Ok,
        "{backend}: a healthy history after renames:\n{text}"
    );
    assert!(text.contains("checked 4 events"), "{backend}: {text}");

    append_raw(&store, "DR-2", vec![raw_event("OrderTeleported", 1, "{}")]).await;
    append_raw(&store, "DR-3", vec![raw_event("OrderPlaced", 9, "{}")]).await;
    let last = append_raw(&store, "DR-4", vec![raw_event("OrderPlaced", 1, "[]")]).await[0];
    // On PostgreSQL the global log shows an event once older transactions of the cluster end
    // (see `doctor_with_an_open_transaction_elsewhere_postgres`): wait for that first.
    visible(&store, last).await;
    let (exit, text) = doctor(store.clone()).await;
    assert_eq!(exit, es_cli::Exit::Problems, "{backend}:\n{text}");
    for expected in ["order/DR-2", "OrderTeleported", "order/DR-3", "order/DR-4"] {
        assert!(
            text.contains(expected),
            "{backend}: doctor does not name {expected}:\n{text}"
        );
    }
    assert!(!text.contains("DR-1"), "{backend}: DR-1 is fine:\n{text}");
}

on_both!(
    doctor_scenario,
    doctor_reports_undecodable_events_sqlite,
    doctor_reports_undecodable_events_postgres
);

// ---------------------------------------------------------------------------------------------
// 4. Snapshots across changes: the old binary's snapshot upcast by the new one, a revision
//    bump, snapshots newer than the code, refused by a step, corrupt, ahead of the stream.
// ---------------------------------------------------------------------------------------------

async fn old_snapshot_upcast_scenario<S: Store>(store: S, backend: &str) {
    let old = old_repo(&store).with_snapshot_every(2);
    old.execute("P-1", Metadata::new(), |_: &v1::Order| vec![v1::placed("widget", 4)])
        .await
        .unwrap();
    old.execute("P-1", Metadata::new(), |_: &v1::Order| {
        vec![
            v1::OrderNoteAdded { note: "n".into() }.into(),
            v1::OrderShipped {
                carrier: v1::Carrier::Courier,
            }
            .into(),
        ]
    })
    .await
    .unwrap();
    let snapshot = store
        .load_snapshot(&order_stream("P-1"))
        .await
        .unwrap()
        .expect("the old snapshot");
    assert_eq!(
        (snapshot.version, snapshot.schema_version, snapshot.revision),
        (3, 1, 1),
        "{backend}"
    );

    let orders = repo(&store).with_snapshot_every(2);
    let loaded = orders.load("P-1").await.unwrap();
    assert_eq!(loaded.version, 3, "{backend}");
    assert_eq!(
        loaded.aggregate.restored_from.as_deref(),
        Some(v3::RESTORED),
        "{backend}: the old snapshot was upcast and used"
    );
    assert_eq!(
        (
            loaded.aggregate.sku.as_str(),
            loaded.aggregate.quantity,
            loaded.aggregate.applied
        ),
        ("widget", 4, 3),
        "{backend}"
    );
    assert_eq!(loaded.aggregate.carrier, Some(v3::Carrier::Courier), "{backend}");

    // Time travel before the snapshot replays from the start.
    let at_one = orders.load_at_version("P-1", 1).await.unwrap();
    assert_eq!(
        (at_one.aggregate.applied, at_one.aggregate.restored_from),
        (1, None),
        "{backend}"
    );

    // A new snapshot is written at the new schema version.
    void_order(&orders, "P-1", "x").await.unwrap();
    let snapshot = store.load_snapshot(&order_stream("P-1")).await.unwrap().unwrap();
    assert_eq!((snapshot.version, snapshot.schema_version), (4, 2), "{backend}");

    // And the old binary, rolled back, meets a snapshot newer than it: it replays instead.
    // (It cannot read OrderVoided either, which it does not know: a typed error.)
    let rolled_back = old_repo(&store).with_snapshot_every(2);
    let error = decode_error(rolled_back.load("P-1").await.unwrap_err());
    assert_eq!(
        (error.version, error.event_name.as_str()),
        (4, "OrderVoided"),
        "{backend}"
    );
}

on_both!(
    old_snapshot_upcast_scenario,
    old_snapshot_is_upcast_sqlite,
    old_snapshot_is_upcast_postgres
);

/// Writes two of today's events to `id` and puts `snapshot` (at version 2) beside them.
async fn forged<S: Store>(store: &S, id: &str, revision: u32, schema_version: u32, state: &[u8]) {
    append_raw(
        store,
        id,
        vec![
            raw_event(
                "OrderPlaced",
                3,
                r#"{"sku":"real","quantity":1,"priority":"Low","gift_note":null}"#,
            ),
            raw_event("OrderVoided", 1, r#"{"reason":"real"}"#),
        ],
    )
    .await;
    forge_snapshot(store, id, 2, revision, schema_version, state).await;
}

async fn forge_snapshot<S: Store>(store: &S, id: &str, version: u64, revision: u32, schema_version: u32, state: &[u8]) {
    store
        .save_snapshot(Snapshot {
            stream: order_stream(id),
            version,
            revision,
            schema_version,
            state: state.to_vec(),
            taken_at: Utc::now(),
        })
        .await
        .unwrap();
}

fn fake_state() -> Vec<u8> {
    serde_json::to_vec(&v3::Order {
        sku: "FAKE".into(),
        applied: 999,
        ..v3::Order::default()
    })
    .unwrap()
}

async fn snapshot_revision_and_versions_scenario<S: Store>(store: S, backend: &str) {
    let orders = repo(&store).with_snapshot_every(100);

    // Control: a snapshot at today's revision and version is used (so the cases below can fail).
    forged(&store, "R-0", 1, 2, &fake_state()).await;
    let loaded = orders.load("R-0").await.unwrap();
    assert_eq!(loaded.aggregate.applied, 999, "{backend}: the forged snapshot is used");

    // Another revision: thrown away, replayed.
    forged(&store, "R-1", 7, 2, &fake_state()).await;
    let loaded = orders.load("R-1").await.unwrap();
    assert_eq!(
        (loaded.version, loaded.aggregate.applied),
        (2, 2),
        "{backend}: other revision ignored"
    );

    // A revision bump in the code: today's snapshots are thrown away.
    let revised = Repository::<v3::OrderRevised, S>::new(store.clone()).with_snapshot_every(100);
    forged(&store, "R-5", 1, 1, br#"{"applied":555}"#).await;
    let loaded = revised.load("R-5").await.unwrap();
    assert_eq!(
        loaded.aggregate.applied, 2,
        "{backend}: revision 1 snapshot ignored at revision 2"
    );

    // A snapshot newer than the code: ignored, replayed.
    forged(&store, "R-2", 1, 9, &fake_state()).await;
    let loaded = orders.load("R-2").await.unwrap();
    assert_eq!(
        (loaded.version, loaded.aggregate.applied),
        (2, 2),
        "{backend}: newer snapshot ignored"
    );

    // An old snapshot the step refuses (no `item`): ignored, replayed.
    forged(
        &store,
        "R-3",
        1,
        1,
        br#"{"qty":1,"notes":[],"cancelled":false,"carrier":null,"applied":999}"#,
    )
    .await;
    let loaded = orders.load("R-3").await.unwrap();
    assert_eq!(
        (loaded.version, loaded.aggregate.applied),
        (2, 2),
        "{backend}: refused snapshot ignored"
    );

    // Ahead of the stream (restored from another backup?): not used.
    append_raw(
        &store,
        "R-4",
        vec![raw_event(
            "OrderPlaced",
            3,
            r#"{"sku":"real","quantity":1,"priority":"Low","gift_note":null}"#,
        )],
    )
    .await;
    forge_snapshot(&store, "R-4", 9, 1, 2, &fake_state()).await;
    let loaded = orders.load("R-4").await.unwrap();
    assert_eq!(
        (loaded.version, loaded.aggregate.applied),
        (1, 1),
        "{backend}: a snapshot ahead ignored"
    );

    // Not JSON: refused by the store, nothing saved.
    let refused = store
        .save_snapshot(Snapshot {
            stream: order_stream("R-1"),
            version: 2,
            revision: 1,
            schema_version: 2,
            state: b"not json".to_vec(),
            taken_at: Utc::now(),
        })
        .await;
    assert!(matches!(refused, Err(StoreError::Backend(_))), "{backend}: {refused:?}");
    let kept = store.load_snapshot(&order_stream("R-1")).await.unwrap().unwrap();
    assert_eq!(kept.revision, 7, "{backend}: the earlier snapshot stays");
}

on_both!(
    snapshot_revision_and_versions_scenario,
    snapshot_revisions_and_versions_sqlite,
    snapshot_revisions_and_versions_postgres
);

/// A snapshot at today's version whose state does not decode (the state's shape changed without
/// a `snapshot_version` bump, or the row was damaged). A snapshot is an optimisation: the
/// aggregate should still load from its events.
async fn corrupt_snapshot_scenario<S: Store>(store: S, backend: &str) {
    let orders = repo(&store).with_snapshot_every(100);
    forged(&store, "C-1", 1, 2, br#"{"sku":5,"applied":"many"}"#).await;
    let loaded = orders.load("C-1").await;
    let loaded =
        loaded.unwrap_or_else(|error| panic!("{backend}: a corrupt snapshot makes the aggregate unloadable: {error}"));
    assert_eq!((loaded.version, loaded.aggregate.applied), (2, 2), "{backend}");
    // A command also gets through.
    let executed = void_order(&orders, "C-1", "x").await.unwrap();
    assert_eq!(executed.version, 3, "{backend}");
}

on_both!(
    corrupt_snapshot_scenario,
    corrupt_snapshot_falls_back_to_replay_sqlite,
    corrupt_snapshot_falls_back_to_replay_postgres
);

// ---------------------------------------------------------------------------------------------
// 6. Payloads stored at a schema version newer than the code: typed, never a panic, nothing lost.
// ---------------------------------------------------------------------------------------------

async fn too_new_scenario<S: Store>(store: S, backend: &str) {
    let orders = repo(&store);
    let first = orders
        .execute("N-1", Metadata::new(), |_: &v3::Order| {
            vec![v3::placed("widget", 1, v3::Priority::Low)]
        })
        .await
        .unwrap();
    let from_tomorrow = raw_event(
        "OrderPlaced",
        4,
        r#"{"sku":"w","quantity":1,"priority":"Low","lane":"express"}"#,
    );
    let tomorrow_id = from_tomorrow.event_id;
    let positions = append_raw(
        &store,
        "N-1",
        vec![
            from_tomorrow,
            raw_event("OrderShipped", 2, r#"{"carrier":"Post","tracking":null,"eta":"x"}"#),
        ],
    )
    .await;

    let error = decode_error(orders.load("N-1").await.unwrap_err());
    assert_eq!(
        (error.version, error.event_name.as_str()),
        (2, "OrderPlaced"),
        "{backend}"
    );
    assert!(
        matches!(
            *error.source,
            DecodeError::SchemaVersionTooNew {
                event_name: "OrderPlaced",
                stored: 4,
                current: 3
            }
        ),
        "{backend}: {error:?}"
    );
    assert!(
        error.to_string().contains("deploy the newer code"),
        "{backend}: {error}"
    );

    // Skipping unknown names does not skip a known name at an unknown version.
    let skipping = repo(&store).with_unknown_events(UnknownEvents::Skip);
    assert!(
        skipping.load("N-1").await.is_err(),
        "{backend}: a newer event is not silently skipped"
    );
    assert!(void_order(&skipping, "N-1", "x").await.is_err(), "{backend}");
    // Time travel before it still works.
    assert_eq!(orders.load_at_version("N-1", 1).await.unwrap().version, 1, "{backend}");

    // Nothing lost: the stored event is as written.
    let kept = store.read_event(tomorrow_id).await.unwrap().expect("still stored");
    assert_eq!(kept.schema_version, 4, "{backend}");
    let payload: serde_json::Value = serde_json::from_slice(&kept.payload).unwrap();
    assert_eq!(payload["lane"], "express", "{backend}");
    assert_eq!(
        store.stream_version(&order_stream("N-1")).await.unwrap(),
        3,
        "{backend}"
    );

    // A projection stops on it (a decode error naming its position), after committing the event
    // before it; parked, it is kept with its position.
    let model = InMemoryReadModel::<Seen>::new();
    let runner = ProjectionRunner::new(Recorder, store.clone(), model.clone())
        .with_options(fast_failures(FailurePolicy::Stop, UnknownEvents::Fail));
    match catch_up_until_error(&runner, positions[1]).await {
        ProjectionError::Decode { position, source, .. } => {
            assert_eq!(position, positions[0], "{backend}");
            assert!(
                matches!(*source.source, DecodeError::SchemaVersionTooNew { .. }),
                "{backend}"
            );
        }
        other => panic!("{backend}: {other:?}"),
    }
    assert_eq!(seen_of(&model, "N-1").len(), 1, "{backend}");
    let parking = ProjectionRunner::new(Recorder, store.clone(), model.clone()).with_options(fast_failures(
        FailurePolicy::Park {
            attempts: 1,
            backoff: Duration::ZERO,
        },
        UnknownEvents::Fail,
    ));
    catch_up_to(&parking, positions[1], CATCH_UP_WITHIN).await;
    let parked: Vec<u64> = parking.parked().await.unwrap().iter().map(|p| p.position).collect();
    assert_eq!(parked, positions, "{backend}: both newer events parked, none lost");
    assert_eq!(first.version, 1, "{backend}");
}

on_both!(
    too_new_scenario,
    payload_newer_than_code_sqlite,
    payload_newer_than_code_postgres
);

// ---------------------------------------------------------------------------------------------
// 5. The schema lock: every lock file lives in a temporary directory.
// ---------------------------------------------------------------------------------------------

/// The `order` aggregate of a lock test: the events given, and a state that ignores them.
macro_rules! lock_aggregate {
    ($($variants:tt)*) => {
        crate::review::events_only_aggregate!(Order "order", OrderEvent { $($variants)* });
    };
}

/// What the lock was first written from.
mod lock_base {
    use es_core::event;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    pub enum Carrier {
        Post,
        Courier,
    }

    #[event(name = "OrderPlaced")]
    #[derive(Debug)]
    pub struct OrderPlaced {
        pub item: String,
        pub qty: u32,
        pub legacy_code: String,
    }

    #[event(name = "OrderShipped")]
    #[derive(Debug)]
    pub struct OrderShipped {
        pub carrier: Carrier,
    }

    #[event(name = "OrderCancelled")]
    #[derive(Debug)]
    pub struct OrderCancelled {
        pub reason: String,
    }

    #[event(name = "OrderNoteAdded")]
    #[derive(Debug)]
    pub struct OrderNoteAdded {
        pub note: String,
    }

    lock_aggregate!(
        Placed(OrderPlaced),
        Shipped(OrderShipped),
        Cancelled(OrderCancelled),
        Note(OrderNoteAdded)
    );
}

/// `item` retyped to a number, no bump.
mod lock_retyped {
    use es_core::event;

    pub use super::lock_base::{OrderCancelled, OrderNoteAdded, OrderShipped};

    #[event(name = "OrderPlaced")]
    #[derive(Debug)]
    pub struct OrderPlaced {
        pub item: u64,
        pub qty: u32,
        pub legacy_code: String,
    }

    lock_aggregate!(
        Placed(OrderPlaced),
        Shipped(OrderShipped),
        Cancelled(OrderCancelled),
        Note(OrderNoteAdded)
    );
}

/// The same change done right: v2 with an upcast.
mod lock_bumped {
    use es_core::{event, UpcastError};
    use serde_json::Value;

    pub use super::lock_base::{OrderCancelled, OrderNoteAdded, OrderShipped};

    #[event(name = "OrderPlaced", version = 2)]
    #[upcast(from = 1, json = item_to_number)]
    #[derive(Debug)]
    pub struct OrderPlaced {
        pub item: u64,
        pub qty: u32,
        pub legacy_code: String,
    }

    fn item_to_number(mut v1: Value) -> Result<Value, UpcastError> {
        let fields = v1.as_object_mut().ok_or_else(|| UpcastError::new("not an object"))?;
        fields.insert("item".into(), 0.into());
        Ok(v1)
    }

    lock_aggregate!(
        Placed(OrderPlaced),
        Shipped(OrderShipped),
        Cancelled(OrderCancelled),
        Note(OrderNoteAdded)
    );
}

/// Compatible changes without a bump: an `Option` field added, an enum variant added.
mod lock_compatible {
    use es_core::event;
    use serde::{Deserialize, Serialize};

    pub use super::lock_base::{OrderCancelled, OrderNoteAdded, OrderPlaced};

    #[derive(Debug, Serialize, Deserialize)]
    pub enum Carrier {
        Post,
        Courier,
        Drone,
    }

    #[event(name = "OrderShipped")]
    #[derive(Debug)]
    pub struct OrderShipped {
        pub carrier: Carrier,
        pub tracking: Option<String>,
    }

    lock_aggregate!(
        Placed(OrderPlaced),
        Shipped(OrderShipped),
        Cancelled(OrderCancelled),
        Note(OrderNoteAdded)
    );
}

/// A variant removed from an enum inside an event: stored `Courier`s no longer decode.
mod lock_variant_removed {
    use es_core::event;
    use serde::{Deserialize, Serialize};

    pub use super::lock_base::{OrderCancelled, OrderNoteAdded, OrderPlaced};

    #[derive(Debug, Serialize, Deserialize)]
    pub enum Carrier {
        Post,
    }

    #[event(name = "OrderShipped")]
    #[derive(Debug)]
    pub struct OrderShipped {
        pub carrier: Carrier,
    }

    lock_aggregate!(
        Placed(OrderPlaced),
        Shipped(OrderShipped),
        Cancelled(OrderCancelled),
        Note(OrderNoteAdded)
    );
}

/// `item` renamed `sku`, the old name kept as a serde alias: stored v1 payloads still decode.
mod lock_alias_rename {
    use es_core::event;

    pub use super::lock_base::{OrderCancelled, OrderNoteAdded, OrderShipped};

    #[event(name = "OrderPlaced")]
    #[derive(Debug)]
    pub struct OrderPlaced {
        #[serde(alias = "item")]
        pub sku: String,
        pub qty: u32,
        pub legacy_code: String,
    }

    lock_aggregate!(
        Placed(OrderPlaced),
        Shipped(OrderShipped),
        Cancelled(OrderCancelled),
        Note(OrderNoteAdded)
    );
}

/// A field added with `#[serde(default)]`, and one removed.
mod lock_default_added {
    use es_core::event;

    pub use super::lock_base::{OrderCancelled, OrderNoteAdded, OrderShipped};

    #[event(name = "OrderPlaced")]
    #[derive(Debug)]
    pub struct OrderPlaced {
        pub item: String,
        pub qty: u32,
        pub legacy_code: String,
        #[serde(default)]
        pub warehouse: String,
    }

    lock_aggregate!(
        Placed(OrderPlaced),
        Shipped(OrderShipped),
        Cancelled(OrderCancelled),
        Note(OrderNoteAdded)
    );

    pub mod removed {
        use es_core::event;

        pub use super::{OrderCancelled, OrderNoteAdded, OrderShipped};

        #[event(name = "OrderPlaced")]
        #[derive(Debug)]
        pub struct OrderPlaced {
            pub item: String,
            pub qty: u32,
        }

        lock_aggregate!(
            Placed(OrderPlaced),
            Shipped(OrderShipped),
            Cancelled(OrderCancelled),
            Note(OrderNoteAdded)
        );
    }
}

/// A required field added without a bump: stored payloads lack it.
mod lock_required_added {
    use es_core::event;

    pub use super::lock_base::{OrderCancelled, OrderNoteAdded, OrderShipped};

    #[event(name = "OrderPlaced")]
    #[derive(Debug)]
    pub struct OrderPlaced {
        pub item: String,
        pub qty: u32,
        pub legacy_code: String,
        pub warehouse: String,
    }

    lock_aggregate!(
        Placed(OrderPlaced),
        Shipped(OrderShipped),
        Cancelled(OrderCancelled),
        Note(OrderNoteAdded)
    );
}

/// `OrderCancelled` renamed `OrderVoided`, with the old name as an alias; the Rust type of
/// `OrderPlaced` renamed too (the stored name kept).
mod lock_renamed {
    use es_core::event;

    pub use super::lock_base::{OrderNoteAdded, OrderShipped};

    #[event(name = "OrderPlaced")]
    #[derive(Debug)]
    pub struct PurchaseMade {
        pub item: String,
        pub qty: u32,
        pub legacy_code: String,
    }

    #[event(name = "OrderVoided", alias = "OrderCancelled")]
    #[derive(Debug)]
    pub struct OrderVoided {
        pub reason: String,
    }

    lock_aggregate!(
        Placed(PurchaseMade),
        Shipped(OrderShipped),
        Voided(OrderVoided),
        Note(OrderNoteAdded)
    );
}

/// The same rename, the alias forgotten.
mod lock_renamed_no_alias {
    use es_core::event;

    pub use super::lock_base::{OrderNoteAdded, OrderPlaced, OrderShipped};

    #[event(name = "OrderVoided")]
    #[derive(Debug)]
    pub struct OrderVoided {
        pub reason: String,
    }

    lock_aggregate!(
        Placed(OrderPlaced),
        Shipped(OrderShipped),
        Voided(OrderVoided),
        Note(OrderNoteAdded)
    );
}

/// `OrderNoteAdded` retired with a rule (at v1, what is stored), or with a rule at the wrong
/// version.
mod lock_retired {
    use es_core::{event, Aggregate, Apply, UpcastError};
    use serde::{Deserialize, Serialize};
    use serde_json::Value;

    pub use super::lock_base::{OrderCancelled, OrderPlaced, OrderShipped};

    #[event]
    #[derive(Debug)]
    #[replaced(name = "OrderNoteAdded", by = dropped)]
    pub enum OrderEvent {
        Placed(OrderPlaced),
        Shipped(OrderShipped),
        Cancelled(OrderCancelled),
    }

    fn dropped(_: Value) -> Result<Vec<OrderEvent>, UpcastError> {
        Ok(Vec::new())
    }

    #[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "order", event = OrderEvent)]
    pub struct Order;

    impl<E> Apply<E> for Order {
        fn apply(&mut self, _: &E) {}
    }

    pub mod wrong_version {
        use es_core::{event, Aggregate, Apply, UpcastError};
        use serde::{Deserialize, Serialize};
        use serde_json::Value;

        pub use super::{OrderCancelled, OrderPlaced, OrderShipped};

        #[event]
        #[derive(Debug)]
        #[replaced(name = "OrderNoteAdded", version = 2, by = dropped)]
        pub enum OrderEvent {
            Placed(OrderPlaced),
            Shipped(OrderShipped),
            Cancelled(OrderCancelled),
        }

        fn dropped(_: Value) -> Result<Vec<OrderEvent>, UpcastError> {
            Ok(Vec::new())
        }

        #[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
        #[aggregate(name = "order", event = OrderEvent)]
        pub struct Order;

        impl<E> Apply<E> for Order {
            fn apply(&mut self, _: &E) {}
        }
    }
}

fn registry_of<A: es_core::Aggregate>() -> EventRegistry {
    let mut registry = EventRegistry::new();
    registry.register::<A>().expect("registered");
    registry
}

/// A lock file written from `lock_base`, in a temporary directory.
fn base_lock() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.lock");
    let report = check_schema_lock(&registry_of::<lock_base::Order>(), &path, LockMode::CreateIfMissing).unwrap();
    assert_eq!(report.outcome, LockOutcome::Created, "{report}");
    assert!(report.is_ok(), "{report}");
    (dir, path)
}

fn verify<A: es_core::Aggregate>(path: &std::path::Path) -> es_core::schema::LockReport {
    check_schema_lock(&registry_of::<A>(), path, LockMode::Verify).unwrap()
}

#[test]
fn lock_shape_change_without_bump_fails_naming_the_field() {
    let (_dir, path) = base_lock();
    let report = verify::<lock_retyped::Order>(&path);
    assert!(!report.is_ok());
    assert!(
        matches!(&report.problems[..], [LockProblem::ShapeChanged { key, .. }] if key.event == "OrderPlaced" && key.version == 1),
        "{report}"
    );
    let message = report.to_string();
    assert!(
        message.contains("`order` event `OrderPlaced` v1 changed its stored shape"),
        "{message}"
    );
    assert!(message.contains("field `item`"), "{message}");
    assert!(message.contains("Bump `version` to 2"), "{message}");
    // Outside CI nothing is written over a disagreement either.
    let before = std::fs::read_to_string(&path).unwrap();
    let report = check_schema_lock(&registry_of::<lock_retyped::Order>(), &path, LockMode::CreateIfMissing).unwrap();
    assert!(!report.is_ok(), "{report}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
}

#[test]
fn lock_bump_with_upcast_passes_and_keeps_the_old_entry() {
    let (_dir, path) = base_lock();
    // In CI the new version must be committed first.
    let report = verify::<lock_bumped::Order>(&path);
    assert!(
        matches!(&report.problems[..], [LockProblem::NotLocked { key }] if key.version == 2),
        "{report}"
    );
    // Outside CI it is recorded at once.
    let report = check_schema_lock(&registry_of::<lock_bumped::Order>(), &path, LockMode::CreateIfMissing).unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.outcome, LockOutcome::Updated, "{report}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("[order OrderPlaced v1]") && text.contains("[order OrderPlaced v2]"),
        "{text}"
    );
    assert!(verify::<lock_bumped::Order>(&path).is_ok());
    // Going back to the old code: the version went back.
    let report = verify::<lock_base::Order>(&path);
    assert!(
        matches!(&report.problems[..], [LockProblem::VersionWentBack { current: 1, key }] if key.version == 2),
        "{report}"
    );
}

#[test]
fn lock_compatible_changes_say_so() {
    let (_dir, path) = base_lock();
    let report = verify::<lock_compatible::Order>(&path);
    assert!(!report.is_ok(), "a change at the same version is still reported");
    let message = report.to_string();
    assert!(message.contains("`OrderShipped` v1"), "{message}");
    assert!(message.contains("tracking") && message.contains("Drone"), "{message}");
    assert!(message.contains("still decode"), "{message}");
}

#[test]
fn lock_enum_variant_removed_is_breaking() {
    let (_dir, path) = base_lock();
    let message = verify::<lock_variant_removed::Order>(&path).to_string();
    assert!(message.contains("Courier"), "{message}");
    assert!(message.contains("would no longer decode"), "{message}");
}

#[test]
fn lock_required_field_added_is_breaking() {
    let (_dir, path) = base_lock();
    let message = verify::<lock_required_added::Order>(&path).to_string();
    assert!(message.contains("warehouse"), "{message}");
    assert!(message.contains("would no longer decode"), "{message}");
}

#[test]
fn lock_default_field_added_is_compatible_and_removed_field_is_breaking() {
    let (_dir, path) = base_lock();
    let message = verify::<lock_default_added::Order>(&path).to_string();
    assert!(
        message.contains("warehouse") && message.contains("still decode"),
        "{message}"
    );
    // Documented on `ShapeChange::is_breaking`: a removed field counts as breaking.
    let message = verify::<lock_default_added::removed::Order>(&path).to_string();
    assert!(
        message.contains("`legacy_code` was removed") && message.contains("would no longer decode"),
        "{message}"
    );
}

#[test]
fn lock_field_renamed_with_serde_alias_is_compatible() {
    let (_dir, path) = base_lock();
    // Prove the claim first: a payload of the locked shape decodes with the changed type.
    let old = br#"{"item":"widget","qty":2,"legacy_code":"LC"}"#;
    assert!(lock_alias_rename::OrderEvent::decode("OrderPlaced", 1, old).is_ok());
    let message = verify::<lock_alias_rename::Order>(&path).to_string();
    assert!(message.contains("`OrderPlaced` v1"), "{message}");
    assert!(
        message.contains("still decode"),
        "stored v1 payloads do decode, yet the lock says they would not:\n{message}"
    );
}

#[test]
fn lock_renamed_event_with_alias_passes() {
    let (_dir, path) = base_lock();
    let report = verify::<lock_renamed::Order>(&path);
    assert!(
        report
            .problems
            .iter()
            .all(|p| matches!(p, LockProblem::NotLocked { key } if key.event == "OrderVoided")),
        "only the new name is new; the Rust rename is invisible:\n{report}"
    );
    let report = check_schema_lock(&registry_of::<lock_renamed::Order>(), &path, LockMode::CreateIfMissing).unwrap();
    assert!(report.is_ok(), "{report}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("[order OrderCancelled v1]"),
        "the old name's entry stays: {text}"
    );
    assert!(verify::<lock_renamed::Order>(&path).is_ok());
}

#[test]
fn lock_renamed_event_without_alias_fails() {
    let (_dir, path) = base_lock();
    let report = verify::<lock_renamed_no_alias::Order>(&path);
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, LockProblem::EventRemoved { key } if key.event == "OrderCancelled")),
        "{report}"
    );
    assert!(report.to_string().contains("alias"), "{report}");
}

#[test]
fn lock_retired_event_needs_a_rule_for_each_stored_version() {
    let (_dir, path) = base_lock();
    let report = verify::<lock_retired::Order>(&path);
    assert!(report.is_ok(), "a rule reads v1:\n{report}");
    let report = verify::<lock_retired::wrong_version::Order>(&path);
    assert!(
        matches!(&report.problems[..], [LockProblem::RetiredVersionUnread { key }] if key.event == "OrderNoteAdded" && key.version == 1),
        "{report}"
    );
    assert!(report.to_string().contains("version = 1"), "{report}");
}

#[test]
fn lock_missing_file_in_verify_mode_and_corrupt_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("renamed.lock");
    let report = verify::<lock_base::Order>(&path);
    assert!(matches!(&report.problems[..], [LockProblem::NoLockFile]), "{report}");
    assert!(!path.exists(), "verify writes nothing");

    std::fs::write(&path, "[order OrderPlaced v1] zz\n{ nonsense").unwrap();
    let error = check_schema_lock(&registry_of::<lock_base::Order>(), &path, LockMode::Verify).unwrap_err();
    assert!(
        matches!(error, es_core::schema::SchemaLockError::Parse { .. }),
        "{error:?}"
    );
}

/// The fingerprint written beside each entry: an entry whose shape was edited by hand (to make a
/// change pass) no longer matches its fingerprint.
#[test]
fn lock_hand_edited_shape_is_not_trusted() {
    let (_dir, path) = base_lock();
    let text = std::fs::read_to_string(&path).unwrap();
    // Edit the shape to what `lock_retyped` has, leaving the fingerprint as it was.
    let edited = text.replacen("item: str", "item: u64", 1);
    assert_ne!(edited, text, "the lock lists `item: str`:\n{text}");
    std::fs::write(&path, &edited).unwrap();
    let outcome = check_schema_lock(&registry_of::<lock_retyped::Order>(), &path, LockMode::Verify);
    assert!(
        !matches!(&outcome, Ok(report) if report.is_ok()),
        "a hand-edited shape with a stale fingerprint passes: {outcome:?}"
    );
}

static ENV: Mutex<()> = Mutex::new(());

/// Runs `f` with `ES_SCHEMA_LOCK` and `CI` set as given (None: unset), restoring them after.
fn with_env<T>(lock: Option<&str>, ci: Option<&str>, f: impl FnOnce() -> T) -> T {
    let _guard = ENV.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let saved = (std::env::var("ES_SCHEMA_LOCK").ok(), std::env::var("CI").ok());
    let set = |name: &str, value: Option<&str>| match value {
        Some(value) => std::env::set_var(name, value),
        None => std::env::remove_var(name),
    };
    set("ES_SCHEMA_LOCK", lock);
    set("CI", ci);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    set("ES_SCHEMA_LOCK", saved.0.as_deref());
    set("CI", saved.1.as_deref());
    outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn assert_lock_panics<A: es_core::Aggregate>(path: &std::path::Path) -> String {
    let registry = registry_of::<A>();
    let panic = std::panic::catch_unwind(|| es_core::testing::assert_schema_lock(&registry, path))
        .expect_err("assert_schema_lock should fail");
    panic_message(panic)
}

#[test]
fn lock_env_update_accepts_a_change() {
    let (_dir, path) = base_lock();
    let message = with_env(None, None, || assert_lock_panics::<lock_retyped::Order>(&path));
    assert!(message.contains("field `item`"), "{message}");
    with_env(Some("update"), None, || {
        es_core::testing::assert_schema_lock(&registry_of::<lock_retyped::Order>(), &path)
    });
    assert!(verify::<lock_retyped::Order>(&path).is_ok(), "the change is accepted");
    // A value that is neither update nor verify is refused, naming it.
    let message = with_env(Some("yes-please"), None, || {
        assert_lock_panics::<lock_retyped::Order>(&path)
    });
    assert!(message.contains("yes-please"), "{message}");
    // ES_SCHEMA_LOCK=verify fails outside CI as in CI.
    let message = with_env(Some("verify"), None, || assert_lock_panics::<lock_base::Order>(&path));
    assert!(message.contains("field `item`"), "{message}");
}

#[test]
fn lock_missing_file_is_created_outside_ci_and_fails_in_ci() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.lock");
    let message = with_env(None, Some("true"), || assert_lock_panics::<lock_base::Order>(&path));
    assert!(message.contains("does not exist"), "{message}");
    assert!(!path.exists());
    // `CI=false` is outside CI.
    with_env(None, Some("false"), || {
        es_core::testing::assert_schema_lock(&registry_of::<lock_base::Order>(), &path)
    });
    assert!(path.exists());
    // In CI a new version not in the lock fails.
    let message = with_env(None, Some("1"), || assert_lock_panics::<lock_bumped::Order>(&path));
    assert!(message.contains("not in the lock"), "{message}");
}

/// `es doctor` on PostgreSQL while another session of the cluster holds a write transaction open
/// (a long migration, a session idle in transaction): undecodable events committed meanwhile
/// must not be reported as a healthy store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_with_an_open_transaction_elsewhere_postgres() {
    let schema = postgres().await;
    let store = schema.store().clone();
    bounded_by(BOUND, async move {
        use sqlx::Connection;
        let mut other = sqlx::PgConnection::connect(TestDatabase::get().unwrap().url())
            .await
            .unwrap();
        let open = open_write_transaction(&mut other).await;

        append_raw(&store, "DT-1", vec![raw_event("OrderTeleported", 1, "{}")]).await;
        let cli = es_cli::Cli::new(store.clone()).aggregate::<v3::Order>().unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        // Not waiting for the open transaction to end: the other tests of this binary must not
        // wait behind it either.
        let exit = cli.execute(["es", "doctor", "--wait", "0"], &mut out, &mut err).await;
        let text = format!("{}{}", String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
        open.rollback().await.unwrap();
        assert_ne!(
            exit,
            es_cli::Exit::Ok,
            "doctor says all is well with an undecodable event stored:\n{text}"
        );
        assert!(text.contains("were not checked"), "{text}");
    })
    .await;
}

/// `CatchUp::handled` is documented as "events handed to the projection": a stored event a rule
/// drops is handed nothing, one it splits is handed as two.
async fn handled_count_scenario<S: Store>(store: S, backend: &str) {
    let dropped = old_history(
        &store,
        "H-1",
        vec![v1::placed("widget", 1), v1::OrderNoteAdded { note: "x".into() }.into()],
    )
    .await;
    let model = InMemoryReadModel::<Seen>::new();
    let runner = ProjectionRunner::new(Recorder, store.clone(), model.clone());
    let handled = catch_up_to(&runner, dropped[1].position, CATCH_UP_WITHIN).await;
    assert_eq!(model.read(Vec::len), 1, "{backend}");
    assert_eq!(
        handled, 1,
        "{backend}: one event handed to the projection, the dropped one none"
    );

    let split = old_history(
        &store,
        "H-2",
        vec![v1::OrderPlacedWithDiscount {
            item: "g".into(),
            qty: 1,
            percent: 5,
        }
        .into()],
    )
    .await;
    let handled = catch_up_to(&runner, split[0].position, CATCH_UP_WITHIN).await;
    assert_eq!(model.read(Vec::len), 3, "{backend}");
    assert_eq!(handled, 2, "{backend}: a split event is handed as two");
}

on_both!(
    handled_count_scenario,
    catch_up_handled_counts_events_handed_sqlite,
    catch_up_handled_counts_events_handed_postgres
);

/// Fails on `DiscountApplied`, the second half of a split stored event.
struct FailsOnDiscount;

#[async_trait]
impl Projection for FailsOnDiscount {
    const NAME: &'static str = "order-fails-on-discount";
    const AGGREGATE_TYPES: &'static [&'static str] = &["order"];
    type Event = v3::OrderEvent;
    type Context = Seen;

    async fn handle(&self, seen: &mut Seen, event: &DecodedEvent<v3::OrderEvent>) -> Result<(), HandlerError> {
        if let v3::OrderEvent::Discount(_) = event.event {
            return Err("discounts are not supported yet".into());
        }
        Recorder.handle(seen, event).await
    }

    async fn reset(&self, seen: &mut Seen) -> Result<(), HandlerError> {
        seen.clear();
        Ok(())
    }
}

/// The events a rule makes of one stored event reach a projection "all in one unit of work":
/// when the second half fails and the policy skips or parks the stored event, the first half
/// must not stay applied on its own.
async fn split_half_failure_scenario<S: Store>(store: S, backend: &str) {
    let stored = old_history(
        &store,
        "HF-1",
        vec![
            v1::placed("widget", 1),
            v1::OrderPlacedWithDiscount {
                item: "gadget".into(),
                qty: 3,
                percent: 10,
            }
            .into(),
            v1::OrderCancelled { reason: "r".into() }.into(),
        ],
    )
    .await;
    for failure in [
        FailurePolicy::Skip {
            attempts: 1,
            backoff: Duration::ZERO,
        },
        FailurePolicy::Park {
            attempts: 1,
            backoff: Duration::ZERO,
        },
    ] {
        let model = InMemoryReadModel::<Seen>::new();
        let runner = ProjectionRunner::new(FailsOnDiscount, store.clone(), model.clone())
            .with_options(fast_failures(failure, UnknownEvents::Fail));
        catch_up_to(&runner, stored[2].position, CATCH_UP_WITHIN).await;
        let labels: Vec<String> = seen_of(&model, "HF-1").into_iter().map(|s| s.2).collect();
        assert_eq!(
            labels,
            ["placed widget x1 Normal", "voided r"],
            "{backend} {failure:?}: half of a split stored event stayed applied"
        );
    }
    // Stopping: the checkpoint stays before the stored event, and nothing of it is applied.
    let model = InMemoryReadModel::<Seen>::new();
    let runner = ProjectionRunner::new(FailsOnDiscount, store.clone(), model.clone())
        .with_options(fast_failures(FailurePolicy::Stop, UnknownEvents::Fail));
    let error = catch_up_until_error(&runner, stored[2].position).await;
    assert!(matches!(error, ProjectionError::Handler(_)), "{backend}: {error:?}");
    let labels: Vec<String> = seen_of(&model, "HF-1").into_iter().map(|s| s.2).collect();
    assert!(
        !labels.iter().any(|l| l.starts_with("placed gadget")),
        "{backend}: half of a split stored event committed on Stop: {labels:?}"
    );
}

on_both!(
    split_half_failure_scenario,
    split_event_is_one_unit_on_failure_sqlite,
    split_event_is_one_unit_on_failure_postgres
);

/// A projection over a subset of the events, listing the aggregate's events in SOURCE_EVENTS but
/// with no rule for a retired name: the docs say to give it a rule; without one the runner
/// stops with a typed error naming the stored event (never a panic, never a silent skip).
struct NoRules;

mod no_rules {
    use es_core::event;

    pub use super::v3::OrderShipped;

    #[event]
    #[derive(Debug, Clone, PartialEq)]
    pub enum ShipmentEvent {
        Shipped(OrderShipped),
    }
}

#[async_trait]
impl Projection for NoRules {
    const NAME: &'static str = "order-no-rules";
    const AGGREGATE_TYPES: &'static [&'static str] = &["order"];
    const SOURCE_EVENTS: &'static [&'static [es_core::EventDescriptor]] = &[v3::OrderEvent::EVENTS];
    type Event = no_rules::ShipmentEvent;
    type Context = Vec<String>;

    async fn handle(
        &self,
        seen: &mut Vec<String>,
        event: &DecodedEvent<no_rules::ShipmentEvent>,
    ) -> Result<(), HandlerError> {
        seen.push(event.envelope.event_name.clone());
        Ok(())
    }

    async fn reset(&self, seen: &mut Vec<String>) -> Result<(), HandlerError> {
        seen.clear();
        Ok(())
    }
}

async fn subset_without_rules_scenario<S: Store>(store: S, backend: &str) {
    let stored = old_history(
        &store,
        "NR-1",
        vec![v1::placed("widget", 1), v1::OrderNoteAdded { note: "x".into() }.into()],
    )
    .await;
    let model = InMemoryReadModel::<Vec<String>>::new();
    let runner = ProjectionRunner::new(NoRules, store.clone(), model.clone())
        .with_options(fast_failures(FailurePolicy::Stop, UnknownEvents::Fail));
    match catch_up_until_error(&runner, stored[1].position).await {
        ProjectionError::UnknownEvent {
            position, event_name, ..
        } => assert_eq!(
            (position, event_name.as_str()),
            (stored[1].position, "OrderNoteAdded"),
            "{backend}"
        ),
        other => panic!("{backend}: {other:?}"),
    }
}

on_both!(
    subset_without_rules_scenario,
    subset_projection_without_rules_stops_typed_sqlite,
    subset_projection_without_rules_stops_typed_postgres
);

/// One retired name read at two stored versions, by two rules.
mod two_rules {
    use es_core::{event, UpcastError};
    use serde::Deserialize;

    pub use super::v3::OrderVoided;

    #[derive(Deserialize)]
    pub struct NoteV1 {
        note: String,
    }

    #[derive(Deserialize)]
    pub struct NoteV2 {
        text: String,
    }

    #[event]
    #[derive(Debug, Clone, PartialEq)]
    #[replaced(name = "OrderNoteAdded", by = from_v1)]
    #[replaced(name = "OrderNoteAdded", version = 2, by = from_v2)]
    pub enum Events {
        Voided(OrderVoided),
    }

    fn from_v1(old: NoteV1) -> Result<Vec<Events>, UpcastError> {
        Ok(vec![OrderVoided { reason: old.note }.into()])
    }

    fn from_v2(old: NoteV2) -> Result<Vec<Events>, UpcastError> {
        Ok(vec![OrderVoided { reason: old.text }.into()])
    }
}

#[test]
fn retired_name_read_at_two_versions_by_two_rules() {
    let v1 = two_rules::Events::decode_all("OrderNoteAdded", 1, br#"{"note":"a"}"#).unwrap();
    let v2 = two_rules::Events::decode_all("OrderNoteAdded", 2, br#"{"text":"b"}"#).unwrap();
    let reasons: Vec<String> = v1
        .into_iter()
        .chain(v2)
        .map(|two_rules::Events::Voided(v)| v.reason)
        .collect();
    assert_eq!(reasons, ["a", "b"]);
    let v3 = two_rules::Events::decode_all("OrderNoteAdded", 3, b"{}").unwrap_err();
    assert!(matches!(v3, DecodeError::NoReplacedRule { stored: 3, .. }), "{v3:?}");
    // A v1 payload read by the v1 rule's shape: a typed error when it does not fit.
    let odd = two_rules::Events::decode_all("OrderNoteAdded", 1, br#"{"text":"b"}"#).unwrap_err();
    assert!(matches!(odd, DecodeError::Payload { .. }), "{odd:?}");
}

/// `qty` was retyped from u32 to u64 in v3: values past i64 and f64 precision come back exact.
async fn wide_integer_scenario<S: Store>(store: S, backend: &str) {
    let orders = repo(&store);
    for (id, quantity) in [("W-1", u64::MAX), ("W-2", (1 << 53) + 1), ("W-3", i64::MAX as u64 + 1)] {
        orders
            .execute(id, Metadata::new(), move |_: &v3::Order| {
                vec![v3::placed("widget", quantity, v3::Priority::Low)]
            })
            .await
            .unwrap_or_else(|error| panic!("{backend} {quantity}: {error}"));
        let loaded = orders
            .load(id)
            .await
            .unwrap_or_else(|error| panic!("{backend} {quantity}: {error}"));
        assert_eq!(loaded.aggregate.quantity, quantity, "{backend}");
    }
}

on_both!(
    wide_integer_scenario,
    retyped_wide_integers_survive_sqlite,
    retyped_wide_integers_survive_postgres
);

/// Snapshot upcasts on the aggregate: a JSON step then a typed one; a step that panics on an odd
/// state is caught and the stream replayed.
mod snapshot_steps {
    use es_core::{event, Aggregate, Apply, UpcastError};
    use serde::{Deserialize, Serialize};
    use serde_json::Value;

    pub use super::v3::{DiscountApplied, OrderPlaced, OrderShipped, OrderVoided, PriorityRaised};

    #[event]
    #[derive(Debug, Clone, PartialEq)]
    pub enum Events {
        Placed(OrderPlaced),
        Discount(DiscountApplied),
        Shipped(OrderShipped),
        Voided(OrderVoided),
        PriorityRaised(PriorityRaised),
    }

    #[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "order", event = Events, snapshot_version = 3)]
    #[upcast(from = 1, json = careless)]
    #[upcast(from = 2, typed = StateV2)]
    pub struct Counted {
        pub applied: u32,
        pub note: String,
    }

    /// Panics on a state that is not an object.
    fn careless(mut v1: Value) -> Result<Value, UpcastError> {
        v1["count"] = v1["n"].clone();
        Ok(v1)
    }

    #[derive(Deserialize)]
    pub struct StateV2 {
        count: u32,
    }

    impl TryFrom<StateV2> for Counted {
        type Error = String;
        fn try_from(v2: StateV2) -> Result<Self, String> {
            if v2.count == 0 {
                return Err("an empty state".into());
            }
            Ok(Counted {
                applied: v2.count,
                note: "upcast".into(),
            })
        }
    }

    impl<E> Apply<E> for Counted {
        fn apply(&mut self, _: &E) {
            self.applied += 1;
        }
    }
}

async fn snapshot_steps_scenario<S: Store>(store: S, backend: &str) {
    let counted = Repository::<snapshot_steps::Counted, S>::new(store.clone()).with_snapshot_every(100);
    // Through both steps: used.
    forged(&store, "SU-1", 1, 1, br#"{"n":40}"#).await;
    let loaded = counted.load("SU-1").await.unwrap();
    assert_eq!(
        (loaded.aggregate.applied, loaded.aggregate.note.as_str()),
        (40, "upcast"),
        "{backend}"
    );
    // The JSON step panics: ignored, replayed.
    forged(&store, "SU-2", 1, 1, b"[1]").await;
    let loaded = counted.load("SU-2").await.unwrap();
    assert_eq!(
        (loaded.aggregate.applied, loaded.aggregate.note.as_str()),
        (2, ""),
        "{backend}"
    );
    // The typed step refuses: ignored, replayed.
    forged(&store, "SU-3", 1, 2, br#"{"count":0}"#).await;
    let loaded = counted.load("SU-3").await.unwrap();
    assert_eq!(
        (loaded.aggregate.applied, loaded.aggregate.note.as_str()),
        (2, ""),
        "{backend}"
    );
    // Below the chain (version 0): ignored, replayed.
    forged(&store, "SU-4", 1, 0, br#"{"applied":99,"note":"x"}"#).await;
    let loaded = counted.load("SU-4").await.unwrap();
    assert_eq!(loaded.aggregate.applied, 2, "{backend}");
}

on_both!(
    snapshot_steps_scenario,
    snapshot_upcast_steps_sqlite,
    snapshot_upcast_steps_postgres
);

/// A request sent again after a lost answer, across a deploy: the old binary carried the command
/// out, today's binary gets it again with the same command id. It must be recognised (not
/// appended twice) even when what the old binary stored is now split or dropped by a rule.
async fn resend_across_deploy<S: Store>(store: &S, backend: &str, id: &str, event: v1::OrderEvent) {
    let old = old_repo(store);
    let orders = repo(store);
    let command = Uuid::now_v7();
    let first = old
        .execute(id, Metadata::new().with_command_id(command), move |_: &v1::Order| {
            vec![event.clone()]
        })
        .await
        .unwrap();
    assert_eq!(first.version, 1, "{backend} {id}");
    let again = orders
        .execute(id, Metadata::new().with_command_id(command), |_: &v3::Order| {
            vec![v3::OrderVoided {
                reason: "decided again".into(),
            }
            .into()]
        })
        .await;
    assert_eq!(
        store.stream_version(&order_stream(id)).await.unwrap(),
        1,
        "{backend} {id}: appended twice"
    );
    let again = again.unwrap_or_else(|error| panic!("{backend} {id}: {error}"));
    assert!(again.already_stored, "{backend} {id}");
    assert_eq!(again.version, 1, "{backend} {id}");
}

async fn resent_plain_scenario<S: Store>(store: S, backend: &str) {
    resend_across_deploy(&store, backend, "RS-1", v1::placed("widget", 1)).await;
}

async fn resent_split_scenario<S: Store>(store: S, backend: &str) {
    let split = v1::OrderPlacedWithDiscount {
        item: "gadget".into(),
        qty: 3,
        percent: 10,
    };
    resend_across_deploy(&store, backend, "RS-2", split.into()).await;
}

async fn resent_dropped_scenario<S: Store>(store: S, backend: &str) {
    resend_across_deploy(&store, backend, "RS-3", v1::OrderNoteAdded { note: "n".into() }.into()).await;
}

on_both!(
    resent_plain_scenario,
    resent_command_across_deploy_sqlite,
    resent_command_across_deploy_postgres
);

on_both!(
    resent_split_scenario,
    resent_command_now_split_sqlite,
    resent_command_now_split_postgres
);

on_both!(
    resent_dropped_scenario,
    resent_command_now_dropped_sqlite,
    resent_command_now_dropped_postgres
);
