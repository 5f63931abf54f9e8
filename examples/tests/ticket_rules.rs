//! The Ticket's business rules, as given/when/then tests, and its stored schema history.

use es_core::testing::AggregateTest;
use es_core::{EventSet, EventType, ExpectedVersion, InMemoryStore, Metadata, NewEvent, Repository, StreamId};
use examples::text::Empty;
use examples::ticket::*;

fn opened() -> TicketEvent {
    TicketOpened {
        title: "Printer on fire".into(),
        customer: "acme".into(),
        priority: Priority::Low,
    }
    .into()
}

fn assigned(agent: &str) -> TicketEvent {
    TicketAssigned { agent: agent.into() }.into()
}

#[test]
fn a_new_ticket_can_be_opened_once() {
    let ticket = AggregateTest::<Ticket>::given_no_events()
        .when(|t| t.open(" Printer on fire ", "acme", Priority::Low))
        .then_events([opened()]);
    assert_eq!(ticket.status, Status::Open);
    AggregateTest::<Ticket>::given([opened()])
        .when(|t| t.open("again", "acme", Priority::Low))
        .then_error(TicketError::AlreadyOpened);
}

#[test]
fn opening_needs_a_title_and_a_customer() {
    AggregateTest::<Ticket>::given_no_events()
        .when(|t| t.open("   ", "acme", Priority::Low))
        .then_error(TicketError::Empty(Empty("the title")));
    AggregateTest::<Ticket>::given_no_events()
        .when(|t| t.open("title", "", Priority::Low))
        .then_error(TicketError::Empty(Empty("the customer")));
}

#[test]
fn commands_on_a_ticket_never_opened_are_refused() {
    let given = || AggregateTest::<Ticket>::given_no_events();
    given().when(|t| t.assign("alice")).then_error(TicketError::NotOpened);
    given()
        .when(|t| t.request_escalation("why"))
        .then_error(TicketError::NotOpened);
    given().when(|t| t.close()).then_error(TicketError::NotOpened);
    given().when(|t| t.reopen("why")).then_error(TicketError::NotOpened);
}

#[test]
fn assigning_to_the_current_assignee_is_refused() {
    AggregateTest::<Ticket>::given([opened(), assigned("alice")])
        .when(|t| t.assign("alice"))
        .then_error(TicketError::AlreadyAssignedTo("alice".into()));
    let ticket = AggregateTest::<Ticket>::given([opened(), assigned("alice")])
        .when(|t| t.assign("bob"))
        .then_events([assigned("bob")]);
    assert_eq!(ticket.assignee.as_deref(), Some("bob"));
}

#[test]
fn escalation_raises_priority_and_happens_once() {
    let ticket = AggregateTest::<Ticket>::given([opened()])
        .when(|t| t.request_escalation("VIP customer"))
        .then_events([TicketEscalated {
            reason: "VIP customer".into(),
        }
        .into()]);
    assert_eq!(ticket.priority, Priority::High);
    let escalated = TicketEscalated { reason: "VIP".into() };
    AggregateTest::<Ticket>::given([opened(), escalated.into()])
        .when(|t| t.request_escalation("again"))
        .then_error(TicketError::AlreadyEscalated);
}

#[test]
fn a_closed_ticket_cannot_be_escalated_or_commented() {
    let closed = || AggregateTest::<Ticket>::given([opened(), TicketClosed.into()]);
    closed()
        .when(|t| t.request_escalation("urgent"))
        .then_error(TicketError::Closed);
    closed()
        .when(|t| t.comment("bob", "hello"))
        .then_error(TicketError::Closed);
    closed().when(|t| t.close()).then_error(TicketError::Closed);
}

#[test]
fn only_an_assigned_open_ticket_can_be_resolved() {
    AggregateTest::<Ticket>::given([opened()])
        .when(|t| t.resolve("fixed"))
        .then_error(TicketError::Unassigned);
    let resolved: TicketEvent = TicketResolved {
        resolution: "fixed".into(),
    }
    .into();
    let ticket = AggregateTest::<Ticket>::given([opened(), assigned("alice")])
        .when(|t| t.resolve("fixed"))
        .then_events([resolved.clone()]);
    assert_eq!(ticket.status, Status::Resolved);
    AggregateTest::<Ticket>::given([opened(), assigned("alice"), resolved])
        .when(|t| t.resolve("again"))
        .then_error(TicketError::AlreadyResolved);
}

#[test]
fn reopening_needs_a_finished_ticket_and_clears_escalation() {
    AggregateTest::<Ticket>::given([opened()])
        .when(|t| t.reopen("why"))
        .then_error(TicketError::NotFinished);
    let escalated = TicketEscalated { reason: "VIP".into() };
    let ticket = AggregateTest::<Ticket>::given([opened(), escalated.into(), TicketClosed.into()])
        .when(|t| t.reopen("broken again"))
        .then_events([TicketReopened {
            reason: "broken again".into(),
        }
        .into()]);
    assert_eq!(
        (ticket.status, ticket.escalation, ticket.reopened),
        (Status::Open, None, 1)
    );
}

#[test]
fn escalated_v1_payload_upcasts_with_a_placeholder_reason() {
    let event = TicketEscalated::decode_payload(1, b"{}").map_err(|e| e.to_string());
    assert_eq!(
        event,
        Ok(TicketEscalated {
            reason: UNRECORDED_REASON.into()
        })
    );
    let not_an_object = TicketEscalated::decode_payload(1, b"[1]");
    assert!(
        matches!(not_an_object, Err(es_core::DecodeError::Upcast { from: 1, .. })),
        "{not_an_object:?}"
    );
}

#[test]
fn comment_v1_payload_upcasts_through_the_typed_step() {
    let event = CommentAdded::decode_payload(1, br#"{"text":"hello"}"#).map_err(|e| e.to_string());
    assert_eq!(
        event,
        Ok(CommentAdded {
            author: "unknown".into(),
            body: "hello".into()
        })
    );
    let wrong_shape = CommentAdded::decode_payload(1, br#"{"body":"hello"}"#);
    assert!(matches!(
        wrong_shape,
        Err(es_core::DecodeError::Payload { schema_version: 1, .. })
    ));
}

#[test]
fn new_events_are_written_at_the_current_schema_version() {
    let comment: TicketEvent = CommentAdded {
        author: "a".into(),
        body: "b".into(),
    }
    .into();
    assert_eq!((comment.event_name(), comment.schema_version()), ("CommentAdded", 2));
    let payload = comment.encode_payload().unwrap_or_default();
    assert_eq!(payload, br#"{"author":"a","body":"b"}"#);
}

#[tokio::test]
async fn the_shipped_v1_stream_loads_through_the_repository() {
    let store = InMemoryStore::new();
    let records = stored_v1_records().expect("the fixture is valid JSON");
    assert!(records
        .iter()
        .any(|r| r.schema_version == 1 && r.event_name == "TicketEscalated"));
    assert!(
        records.iter().any(|r| r.event_name == "TicketInitialized"),
        "uses the old name"
    );
    let batch = records
        .into_iter()
        .map(|r| NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_name: r.event_name,
            schema_version: r.schema_version,
            payload: r.payload.to_string().into_bytes(),
            metadata: Metadata::new(),
        })
        .collect();
    let id = "T-0042".to_string();
    let stream = StreamId::new("ticket", id.clone());
    es_core::EventStore::append(&store, &stream, ExpectedVersion::NoStream, batch)
        .await
        .expect("append the legacy stream");

    let tickets = Repository::<Ticket, _>::new(store);
    let loaded = tickets.load(&id).await.expect("the legacy stream loads");
    assert_eq!(loaded.version, 5);
    let ticket = loaded.aggregate;
    assert_eq!(ticket.title, "VPN drops every hour");
    assert_eq!(ticket.escalation.as_deref(), Some(UNRECORDED_REASON));
    assert_eq!(ticket.priority, Priority::High);
    assert_eq!(
        ticket.comments,
        [
            Comment {
                author: "unknown".into(),
                body: "Customer sent logs".into()
            },
            Comment {
                author: "bob".into(),
                body: "Escalated to network team".into()
            }
        ]
    );
    // Commands keep working on the upcast state, and new events use the current versions.
    let done = tickets
        .execute(&id, Metadata::new(), |t: &Ticket| {
            t.comment("bob", "Fixed by the network team")
        })
        .await
        .expect("comment on the legacy ticket");
    assert_eq!(done.version, 6);
}
