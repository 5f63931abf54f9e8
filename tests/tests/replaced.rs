//! Retired events replaced by `#[replaced]` rules, as a projection and a single-event reader see
//! them (the repository side runs in the conformance suite, on every backend).

use std::sync::atomic::{AtomicU32, Ordering};

use es_core::conformance::{ContactChanged, DeskEvent, DeskOpened, DeskStaffed};
use es_core::{
    async_trait, DecodeError, Decoded, DecodedEvent, EventSet, EventStore, ExpectedVersion, FailurePolicy,
    HandlerError, InMemoryReadModel, InMemoryStore, Metadata, NewEvent, Projection, ProjectionRunner, RunnerOptions,
    StreamId,
};

fn stored(name: &str, payload: serde_json::Value) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_name: name.to_owned(),
        schema_version: 1,
        payload: payload.to_string().into_bytes(),
        metadata: Metadata::new(),
    }
}

#[test]
fn one_event_readers_get_a_rule_s_single_event_and_a_typed_error_otherwise() {
    let opened = br#"{"title": "Printers", "agent": "ana"}"#;
    match DeskEvent::decode("desk.opened-with-agent", 1, opened) {
        Err(DecodeError::NotOneEvent { event_name, count }) => {
            assert_eq!((event_name, count), ("desk.opened-with-agent", 2));
        }
        other => panic!("a split read as one event: {other:?}"),
    }
    assert!(matches!(
        DeskEvent::decode("desk.noted", 1, b"{}"),
        Err(DecodeError::NotOneEvent { count: 0, .. })
    ));
    let merged = DeskEvent::decode("desk.email-changed", 1, br#"{"email": "a@example.com"}"#);
    let expected = ContactChanged {
        email: Some("a@example.com".into()),
        phone: None,
    };
    assert_eq!(merged.ok(), Some(expected.into()));

    let all = DeskEvent::decode_all("desk.opened-with-agent", 1, opened).expect("decodes");
    assert_eq!(all.len(), 2);
    let all: Vec<DeskEvent> = all.into_iter().collect();
    assert_eq!(
        all,
        [
            DeskOpened {
                title: "Printers".into()
            }
            .into(),
            DeskStaffed { agent: "ana".into() }.into()
        ]
    );
    let current = DeskEvent::decode_all("desk.staffed", 1, br#"{"agent": "bo"}"#).expect("decodes");
    assert_eq!(current, Decoded::One(DeskStaffed { agent: "bo".into() }.into()));

    assert!(DeskEvent::handles("desk.noted") && DeskEvent::handles("desk.staffed"));
    assert!(!DeskEvent::handles("desk.closed"));
    assert_eq!(
        DeskEvent::REPLACED,
        [
            "desk.email-changed",
            "desk.noted",
            "desk.opened-with-agent",
            "desk.phone-changed"
        ]
    );
    let unknown_version = DeskEvent::decode_all("desk.noted", 2, b"{}");
    assert!(matches!(
        unknown_version,
        Err(DecodeError::NoReplacedRule {
            event_name: "desk.noted",
            stored: 2
        })
    ));
}

/// Counts the desk events it sees, by kind, and fails once on the first staffing when told to.
#[derive(Default)]
struct DeskCounts {
    fail_on_staffing: AtomicU32,
}

/// Openings, staffings and contact changes seen, and the (version, kind) of each.
type Counts = Vec<(u64, &'static str)>;

#[async_trait]
impl Projection for DeskCounts {
    const NAME: &'static str = "desk-counts";
    const AGGREGATE_TYPES: &'static [&'static str] = &["conformance-desk"];
    type Event = DeskEvent;
    type Context = Counts;

    async fn handle(&self, counts: &mut Counts, event: &DecodedEvent<DeskEvent>) -> Result<(), HandlerError> {
        let kind = match &event.event {
            DeskEvent::Opened(_) => "opened",
            DeskEvent::Staffed(_) => "staffed",
            DeskEvent::ContactChanged(_) => "contact",
        };
        counts.push((event.envelope.version, kind));
        if kind == "staffed"
            && self
                .fail_on_staffing
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err("staffing fails once".into());
        }
        Ok(())
    }

    async fn reset(&self, counts: &mut Counts) -> Result<(), HandlerError> {
        counts.clear();
        Ok(())
    }
}

#[tokio::test]
async fn a_projection_sees_each_event_a_rule_makes_and_a_failure_undoes_all_of_them() {
    let store = InMemoryStore::new();
    let stream = StreamId::new("conformance-desk", "desk-1");
    let events = vec![
        stored(
            "desk.opened-with-agent",
            serde_json::json!({ "title": "Printers", "agent": "ana" }),
        ),
        stored("desk.noted", serde_json::json!({})),
        stored("desk.phone-changed", serde_json::json!({ "phone": "555-0100" })),
    ];
    store
        .append(&stream, ExpectedVersion::NoStream, events)
        .await
        .expect("append");

    // The second half of the split fails once: the first half must not stay applied.
    let projection = DeskCounts {
        fail_on_staffing: AtomicU32::new(1),
    };
    let model = InMemoryReadModel::<Counts>::new();
    let runner = ProjectionRunner::new(projection, store.clone(), model.clone()).with_options(RunnerOptions {
        failure: FailurePolicy::Stop,
        ..RunnerOptions::default()
    });
    assert!(
        runner.catch_up().await.is_err(),
        "the handler's failure stops the runner"
    );
    assert_eq!(model.read(Clone::clone), [], "nothing of the failed unit is committed");

    let caught_up = runner.catch_up().await.expect("the retry succeeds");
    assert_eq!(caught_up.read, 3);
    assert_eq!(
        model.read(Clone::clone),
        [(1, "opened"), (1, "staffed"), (3, "contact")],
        "a split is two events at the stored version, a dropped event none"
    );
}
