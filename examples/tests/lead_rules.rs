//! The Lead's business rules, as given/when/then tests, and the book's example stream.

use chrono::{DateTime, TimeDelta, Utc};
use es_core::testing::AggregateTest;
use es_core::{CommandError, EventSet, InMemoryStore, Metadata, Repository, StreamSlice};
use examples::lead::*;
use examples::text::Empty;

// Of what the Lead suites share, this suite uses `SEED_EVENT_NAMES` alone.
#[allow(dead_code)]
mod support;

use crate::support::SEED_EVENT_NAMES;

/// The fixed instant every command is decided at.
fn now() -> DateTime<Utc> {
    "2025-03-01T09:00:00Z".parse().expect("a valid RFC 3339 instant")
}

fn days(n: i64) -> DateTime<Utc> {
    now() + TimeDelta::days(n)
}

fn initialized() -> LeadEvent {
    LeadInitialized {
        name: "aab".into(),
        phone: "1111".into(),
    }
    .into()
}

fn contacted() -> LeadEvent {
    Contacted.into()
}

fn followup_set(on: DateTime<Utc>) -> LeadEvent {
    FollowupSet { followup_on: on }.into()
}

fn order_submitted(deadline: DateTime<Utc>) -> LeadEvent {
    OrderSubmitted {
        payment_deadline: deadline,
    }
    .into()
}

/// Initialized, contacted, with an order awaiting payment.
fn pending() -> Vec<LeadEvent> {
    vec![initialized(), contacted(), order_submitted(days(7))]
}

fn with(mut history: Vec<LeadEvent>, event: impl Into<LeadEvent>) -> Vec<LeadEvent> {
    history.push(event.into());
    history
}

type Command = fn(&Lead) -> Result<Vec<LeadEvent>, LeadError>;

/// Every command but `initialize`, with arguments an active lead would accept.
const COMMANDS_AFTER_INITIALIZE: [(&str, Command); 7] = [
    ("contact", Lead::contact),
    ("schedule_followup", |l| l.schedule_followup(days(1), now())),
    ("update_contact_details", |l| l.update_contact_details("aaa", "1111")),
    ("submit_order", |l| l.submit_order(days(7), now())),
    ("confirm_payment", Lead::confirm_payment),
    ("fail_payment", Lead::fail_payment),
    ("close", Lead::close),
];

/// Asserts that a lead that has seen `history` refuses each of [`COMMANDS_AFTER_INITIALIZE`]
/// with `error`.
#[track_caller]
fn every_command_is_refused(history: &[LeadEvent], error: &LeadError) {
    for (name, command) in COMMANDS_AFTER_INITIALIZE {
        let (result, _) = AggregateTest::<Lead>::given(history.to_vec())
            .when(command)
            .into_parts();
        assert_eq!(result, Err(error.clone()), "{name}");
    }
}

/// The book's example, command by command, with the event each one produces.
fn the_books_example() -> [(Command, LeadEvent); 7] {
    let details = ContactDetailsUpdated {
        name: "aaa".into(),
        phone: "2222".into(),
    };
    [
        (|l| l.initialize("aab", "1111"), initialized()),
        (Lead::contact, contacted()),
        (|l| l.schedule_followup(days(2), now()), followup_set(days(2))),
        (|l| l.update_contact_details("aaa", "2222"), details.into()),
        (Lead::contact, contacted()),
        (|l| l.submit_order(days(7), now()), order_submitted(days(7))),
        (Lead::confirm_payment, PaymentConfirmed.into()),
    ]
}

#[test]
fn a_new_lead_is_initialized_once() {
    let lead = AggregateTest::<Lead>::given_no_events()
        .when(|l| l.initialize(" aab ", " 1111 "))
        .then_events([initialized()]);
    assert_eq!(
        (
            lead.status,
            lead.name.known().map_or("", String::as_str),
            lead.phone.known().map_or("", String::as_str)
        ),
        (Some(LeadStatus::NewLead), "aab", "1111")
    );
    AggregateTest::<Lead>::given([initialized()])
        .when(|l| l.initialize("bbb", "2222"))
        .then_error(LeadError::AlreadyInitialized);
}

#[test]
fn initializing_needs_a_name_and_a_phone() {
    AggregateTest::<Lead>::given_no_events()
        .when(|l| l.initialize("  ", "1111"))
        .then_error(LeadError::Empty(Empty("the name")));
    AggregateTest::<Lead>::given_no_events()
        .when(|l| l.initialize("aab", ""))
        .then_error(LeadError::Empty(Empty("the phone")));
}

#[test]
fn commands_on_a_lead_never_initialized_are_refused() {
    every_command_is_refused(&[], &LeadError::NotInitialized);
}

#[test]
fn a_converted_lead_accepts_no_further_commands() {
    let converted = with(pending(), PaymentConfirmed);
    every_command_is_refused(&converted, &LeadError::AlreadyConverted);
    AggregateTest::<Lead>::given(converted)
        .when(|l| l.initialize("aab", "1111"))
        .then_error(LeadError::AlreadyInitialized);
}

#[test]
fn a_closed_lead_accepts_no_further_commands() {
    every_command_is_refused(&[initialized(), contacted(), LeadClosed.into()], &LeadError::Closed);
}

#[test]
fn a_lead_can_be_closed_at_any_point_before_conversion() {
    let histories = [
        vec![initialized()],
        vec![initialized(), followup_set(days(1))],
        pending(),
        with(pending(), PaymentFailed),
    ];
    for history in histories {
        let lead = AggregateTest::<Lead>::given(history)
            .when(|l| l.close())
            .then_events([LeadClosed.into()]);
        assert_eq!(lead.status, Some(LeadStatus::Closed));
        assert_eq!(
            lead.followup_on, None,
            "a closed lead has no follow-up (the seed's state table)"
        );
    }
}

#[test]
fn contacting_counts_contacts_and_keeps_the_status() {
    let lead = AggregateTest::<Lead>::given([initialized(), contacted(), followup_set(days(1))])
        .when(|l| l.contact())
        .then_events([contacted()]);
    assert_eq!((lead.contacts, lead.status), (2, Some(LeadStatus::FollowupSet)));
    let lead = AggregateTest::<Lead>::given(pending())
        .when(|l| l.contact())
        .then_events([contacted()]);
    assert_eq!(lead.status, Some(LeadStatus::PendingPayment));
}

#[test]
fn a_followup_must_be_in_the_future() {
    AggregateTest::<Lead>::given([initialized()])
        .when(|l| l.schedule_followup(now(), now()))
        .then_error(LeadError::FollowupNotInFuture {
            followup_on: now(),
            now: now(),
        });
    AggregateTest::<Lead>::given([initialized()])
        .when(|l| l.schedule_followup(days(-1), now()))
        .then_error(LeadError::FollowupNotInFuture {
            followup_on: days(-1),
            now: now(),
        });
    let lead = AggregateTest::<Lead>::given([initialized()])
        .when(|l| l.schedule_followup(days(2), now()))
        .then_events([followup_set(days(2))]);
    assert_eq!(
        (lead.status, lead.followup_on, lead.followups),
        (Some(LeadStatus::FollowupSet), Some(days(2)), 1)
    );
}

#[test]
fn a_followup_can_be_rescheduled_but_not_while_an_order_awaits_payment() {
    let lead = AggregateTest::<Lead>::given([initialized(), followup_set(days(1))])
        .when(|l| l.schedule_followup(days(3), now()))
        .then_events([followup_set(days(3))]);
    assert_eq!((lead.followup_on, lead.followups), (Some(days(3)), 2));
    AggregateTest::<Lead>::given(pending())
        .when(|l| l.schedule_followup(days(1), now()))
        .then_error(LeadError::AwaitingPayment);
    AggregateTest::<Lead>::given(with(pending(), PaymentFailed))
        .when(|l| l.schedule_followup(days(1), now()))
        .then_events([followup_set(days(1))]);
}

#[test]
fn contact_details_need_a_name_and_a_phone() {
    AggregateTest::<Lead>::given([initialized()])
        .when(|l| l.update_contact_details(" ", "1111"))
        .then_error(LeadError::Empty(Empty("the name")));
    AggregateTest::<Lead>::given([initialized()])
        .when(|l| l.update_contact_details("aaa", "\t"))
        .then_error(LeadError::Empty(Empty("the phone")));
}

#[test]
fn updating_contact_details_to_the_same_ones_is_refused() {
    AggregateTest::<Lead>::given([initialized()])
        .when(|l| l.update_contact_details(" aab", "1111 "))
        .then_error(LeadError::NothingChanged);
    let lead = AggregateTest::<Lead>::given([initialized(), followup_set(days(1))])
        .when(|l| l.update_contact_details("aab", "2222"))
        .then_events([ContactDetailsUpdated {
            name: "aab".into(),
            phone: "2222".into(),
        }
        .into()]);
    assert_eq!(
        (
            lead.name.known().map_or("", String::as_str),
            lead.phone.known().map_or("", String::as_str),
            lead.status
        ),
        ("aab", "2222", Some(LeadStatus::FollowupSet))
    );
}

#[test]
fn an_order_needs_a_contact_first() {
    AggregateTest::<Lead>::given([initialized(), followup_set(days(1))])
        .when(|l| l.submit_order(days(7), now()))
        .then_error(LeadError::NeverContacted);
}

#[test]
fn an_order_deadline_must_be_in_the_future() {
    AggregateTest::<Lead>::given([initialized(), contacted()])
        .when(|l| l.submit_order(now(), now()))
        .then_error(LeadError::DeadlineNotInFuture {
            payment_deadline: now(),
            now: now(),
        });
    let lead = AggregateTest::<Lead>::given([initialized(), contacted(), followup_set(days(1))])
        .when(|l| l.submit_order(days(7), now()))
        .then_events([order_submitted(days(7))]);
    assert_eq!(
        (lead.status, lead.payment_deadline),
        (Some(LeadStatus::PendingPayment), Some(days(7)))
    );
}

#[test]
fn only_one_order_awaits_payment_at_a_time() {
    AggregateTest::<Lead>::given(pending())
        .when(|l| l.submit_order(days(14), now()))
        .then_error(LeadError::AwaitingPayment);
}

#[test]
fn payment_is_confirmed_or_fails_only_while_an_order_awaits_it() {
    let not_pending = [
        vec![initialized(), contacted()],
        vec![initialized(), contacted(), followup_set(days(1))],
        with(pending(), PaymentFailed),
    ];
    for history in not_pending {
        AggregateTest::<Lead>::given(history.clone())
            .when(|l| l.confirm_payment())
            .then_error(LeadError::NoPendingOrder);
        AggregateTest::<Lead>::given(history)
            .when(|l| l.fail_payment())
            .then_error(LeadError::NoPendingOrder);
    }
}

#[test]
fn the_books_example_converts_the_lead() {
    let mut history = Vec::new();
    let mut lead = Lead::default();
    for (command, expected) in the_books_example() {
        lead = AggregateTest::<Lead>::given(history.clone())
            .when(command)
            .then_events([expected.clone()]);
        history.push(expected);
    }
    assert_eq!(lead.status, Some(LeadStatus::Converted));
    assert_eq!((lead.followups, lead.contacts), (1, 2));
    assert_eq!(
        (
            lead.name.known().map_or("", String::as_str),
            lead.phone.known().map_or("", String::as_str)
        ),
        ("aaa", "2222")
    );
    assert_eq!(
        (lead.followup_on, lead.payment_deadline),
        (None, Some(days(7))),
        "the follow-up is over once an order is submitted"
    );
}

#[test]
fn a_failed_payment_allows_a_new_order() {
    let lead = AggregateTest::<Lead>::given(pending())
        .when(|l| l.fail_payment())
        .then_events([PaymentFailed.into()]);
    assert_eq!(lead.status, Some(LeadStatus::PaymentFailed));
    let failed = with(pending(), PaymentFailed);
    let lead = AggregateTest::<Lead>::given(failed.clone())
        .when(|l| l.submit_order(days(10), now()))
        .then_events([order_submitted(days(10))]);
    assert_eq!(
        (lead.status, lead.payment_deadline),
        (Some(LeadStatus::PendingPayment), Some(days(10)))
    );
    let lead = AggregateTest::<Lead>::given(with(failed, order_submitted(days(10))))
        .when(|l| l.confirm_payment())
        .then_events([PaymentConfirmed.into()]);
    assert_eq!(lead.status, Some(LeadStatus::Converted));
}

#[test]
fn statuses_are_stored_in_screaming_snake_case() {
    let statuses = [
        (LeadStatus::NewLead, "NEW_LEAD"),
        (LeadStatus::FollowupSet, "FOLLOWUP_SET"),
        (LeadStatus::PendingPayment, "PENDING_PAYMENT"),
        (LeadStatus::Converted, "CONVERTED"),
        (LeadStatus::PaymentFailed, "PAYMENT_FAILED"),
        (LeadStatus::Closed, "CLOSED"),
    ];
    for (status, name) in statuses {
        assert_eq!(status.as_str(), name);
        assert_eq!(serde_json::to_value(status).ok(), Some(name.into()));
        assert_eq!(serde_json::from_value::<LeadStatus>(name.into()).ok(), Some(status));
    }
}

#[test]
fn events_are_stored_under_the_books_names() {
    let names: Vec<_> = LeadEvent::EVENTS.iter().map(|e| e.name).collect();
    assert_eq!(
        names,
        [
            "LeadInitialized",
            "Contacted",
            "FollowupSet",
            "ContactDetailsUpdated",
            "OrderSubmitted",
            "PaymentConfirmed",
            "PaymentFailed",
            "LeadClosed"
        ]
    );
    let payload = followup_set(days(2)).encode_payload().unwrap_or_default();
    assert_eq!(payload, br#"{"followup_on":"2025-03-03T09:00:00Z"}"#);
}

#[tokio::test]
async fn the_books_example_runs_through_the_repository_and_time_travels() {
    let leads = Repository::<Lead, _>::new(InMemoryStore::new());
    let id = "12".to_string();
    for (command, _) in the_books_example() {
        leads
            .execute(&id, Metadata::new().with_actor("rep:casey"), command)
            .await
            .expect("the book's commands are accepted");
    }

    let lead = leads.load(&id).await.expect("the lead loads");
    assert_eq!(lead.version, 7);
    assert_eq!(lead.aggregate.status, Some(LeadStatus::Converted));
    assert_eq!((lead.aggregate.followups, lead.aggregate.contacts), (1, 2));

    let before = leads.load_at_version(&id, 3).await.expect("version 3 loads");
    assert_eq!(
        (
            before.aggregate.name.known().map_or("", String::as_str),
            before.aggregate.phone.known().map_or("", String::as_str)
        ),
        ("aab", "1111")
    );
    assert_eq!(before.aggregate.status, Some(LeadStatus::FollowupSet));
    let after = leads.load_at_version(&id, 4).await.expect("version 4 loads");
    assert_eq!(
        (
            after.aggregate.name.known().map_or("", String::as_str),
            after.aggregate.phone.known().map_or("", String::as_str)
        ),
        ("aaa", "2222")
    );

    let stored: Vec<_> = leads
        .events(&id, StreamSlice::all())
        .await
        .expect("the stream reads")
        .into_iter()
        .map(|e| e.envelope.event_name)
        .collect();
    assert_eq!(stored, SEED_EVENT_NAMES);

    let refused = leads.execute(&id, Metadata::new(), Lead::close).await;
    assert!(
        matches!(refused, Err(CommandError::Rejected(LeadError::AlreadyConverted))),
        "{refused:?}"
    );
}
