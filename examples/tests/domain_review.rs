//! An outside review of the Ticket and Lead example domains against the event-sourcing chapter
//! they come from (seed 004: "DDD(1) - 이벤트 소싱 도메인 모델 패턴"): its lead history, its
//! state table, its search and analysis projections, its escalation command, time travel,
//! optimistic concurrency, snapshots, forgettable payloads, and the README's "two commands".
//!
//! Every scenario that does not depend on a backend runs on the in-memory store and on the
//! embedded SQLite store (a temporary file, removed when the test ends).

use std::fmt::Debug;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use es_core::pii::{InMemoryKeyStore, PiiStore};
use es_core::{
    Aggregate, CommandError, Decision, EventStore, Executed, ExpectedVersion, IdRef, InMemoryReadModel, InMemoryStore,
    Metadata, NewEvent, ProjectionRunner, Repository, RepositoryError, SnapshotStore, StreamId, StreamSlice,
};
use es_sqlite::SqliteStore;
use es_test_support::bounded;
use examples::lead::{forget_lead, forgettable_leads, Lead, LeadError, LeadEvent, LeadStatus};
use examples::lead_models::{lead_runners, AnalysisModel, LeadSearchProjection, LeadTables, SearchModel};
use examples::ticket::{stored_v1_records, Priority, Status, Ticket, TicketError, TicketEvent, UNRECORDED_REASON};
use tempfile::TempDir;

// Of what the Lead suites share, this suite uses `rebuilt_in_memory` and `SEED_EVENT_NAMES`.
#[path = "support/review/mod.rs"]
mod review;
#[allow(dead_code)]
mod support;

use crate::support::{rebuilt_in_memory, SEED_EVENT_NAMES};
use review::stores::sqlite_file;

/// A lead command, as a test lists several to try in turn.
type LeadCommand = dyn Fn(&Lead) -> Result<Vec<LeadEvent>, LeadError> + Send + Sync;

/// A lead command of the seed, decided at the seed's time of its event.
type SeedCommand = dyn Fn(&Lead, DateTime<Utc>) -> Result<Vec<LeadEvent>, LeadError> + Send + Sync;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn at(instant: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(instant)
        .expect("an RFC 3339 instant")
        .with_timezone(&Utc)
}

/// The timestamps of lead 1's events in the seed (lines 104-151), in order.
const SEED_TIMES: [&str; 7] = [
    "2025-01-01T01:00:01.01Z", // lead-initialized
    "2025-01-01T01:00:02.01Z", // contacted
    "2025-01-01T01:00:02.01Z", // followup-set
    "2025-01-01T01:00:03.01Z", // contact-details-updated
    "2025-01-01T01:00:04.01Z", // contacted
    "2025-01-01T01:00:05.01Z", // order-submitted
    "2025-01-01T01:01:01.01Z", // payment-confirmed
];
/// The seed's follow-up date (line 122) is its own event's timestamp, which the domain refuses
/// (a follow-up must be after now): the replay schedules it one day later.
const REPLAY_FOLLOWUP_ON: &str = "2025-01-02T01:00:02.01Z";
/// The seed's payment deadline (line 142).
const SEED_PAYMENT_DEADLINE: &str = "2025-01-01T01:10:02.01Z";

async fn sqlite_store() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = sqlite_file(&dir, "domain.db").await;
    (dir, store)
}

fn rep(name: &str) -> Metadata {
    Metadata::new().with_actor(name)
}

/// Ticket `id` of customer acme, opened by the customer.
async fn open_ticket<S: EventStore>(
    tickets: &Repository<Ticket, S>,
    id: &str,
    title: &str,
    priority: Priority,
) -> Executed<Ticket> {
    tickets
        .execute(id, rep("customer"), |t: &Ticket| t.open(title, "acme", priority))
        .await
        .expect("opened")
}

/// A ticket repository on `store` whose ticket `id` the customer opened: where a test starts.
async fn with_opened_ticket<S: EventStore>(
    store: S,
    id: &str,
    title: &str,
    priority: Priority,
) -> Repository<Ticket, S> {
    let tickets = Repository::<Ticket, _>::new(store);
    open_ticket(&tickets, id, title, priority).await;
    tickets
}

/// The business refusal of `actor`'s command on `id`, which must be refused.
async fn refusal<A, S, D>(repo: &Repository<A, S>, id: &str, actor: &str, decide: impl FnMut(&A) -> D) -> D::Error
where
    A: Aggregate + Debug,
    A::Event: Debug,
    str: IdRef<A::Id>,
    S: EventStore,
    D: Decision<A::Event>,
    D::Error: Debug,
{
    match repo.execute(id, rep(actor), decide).await {
        Err(CommandError::Rejected(error)) => error,
        other => panic!("expected {actor}'s command on {id} to be rejected by a business rule, got {other:?}"),
    }
}

/// Plays lead 1 of the seed (lines 102-152) through the domain's commands, each decided at the
/// seed's timestamp; `set_clock` is told each timestamp before its command (for a store on a
/// test clock).
async fn play_seed_lead_1<S: EventStore>(leads: &Repository<Lead, S>, id: &str, set_clock: impl Fn(DateTime<Utc>)) {
    let (followup_on, deadline) = (at(REPLAY_FOLLOWUP_ON), at(SEED_PAYMENT_DEADLINE));
    // Who decided each event of SEED_EVENT_NAMES, and how, at its time of SEED_TIMES (`now`).
    let actors = [
        "rep-kim", "rep-kim", "rep-kim", "rep-kim", "rep-lee", "rep-lee", "payments",
    ];
    let commands: [Box<SeedCommand>; 7] = [
        Box::new(|l: &Lead, _| l.initialize("aab", "1111")),
        Box::new(|l: &Lead, _| l.contact()),
        Box::new(move |l: &Lead, now| l.schedule_followup(followup_on, now)),
        // The typo in the name fixed.
        Box::new(|l: &Lead, _| l.update_contact_details("aaa", "1111")),
        Box::new(|l: &Lead, _| l.contact()),
        Box::new(move |l: &Lead, now| l.submit_order(deadline, now)),
        Box::new(|l: &Lead, _| l.confirm_payment()),
    ];
    for (n, command) in commands.iter().enumerate() {
        let now = at(SEED_TIMES[n]);
        set_clock(now);
        leads
            .execute(id, rep(actors[n]), |l: &Lead| command(l, now))
            .await
            .expect(SEED_EVENT_NAMES[n]);
    }
}

/// A lead repository on `store` holding lead 1 of the seed, played as [`play_seed_lead_1`] does.
async fn with_seed_lead_1<S: EventStore>(store: S) -> Repository<Lead, S> {
    let leads = Repository::<Lead, _>::new(store);
    play_seed_lead_1(&leads, "1", |_| {}).await;
    leads
}

/// A lead, initialized and contacted once: ready for any outcome of the call.
async fn contacted_lead<S: EventStore>(leads: &Repository<Lead, S>, id: &str, name: &str, phone: &str) {
    let (name, phone) = (name.to_owned(), phone.to_owned());
    leads
        .execute(id, rep("rep"), move |l: &Lead| l.initialize(&name, &phone))
        .await
        .expect("initialized");
    leads.execute(id, rep("rep"), Lead::contact).await.expect("contacted");
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn in_a_day() -> DateTime<Utc> {
    Utc::now() + chrono::Duration::days(1)
}

/// Runs `scenario` on a fresh in-memory store and on a fresh SQLite file.
macro_rules! on_both_stores {
    ($(#[$attr:meta])* $name:ident, $scenario:ident) => {
        mod $name {
            #[tokio::test]
            $(#[$attr])*
            async fn in_memory() {
                super::bounded(super::$scenario(super::InMemoryStore::new())).await;
            }

            #[tokio::test]
            $(#[$attr])*
            async fn sqlite() {
                super::bounded(async {
                    let (_dir, store) = super::sqlite_store().await;
                    super::$scenario(store).await;
                })
                .await;
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Lead: the seed's history and its state table (§1, lines 60-193)
// ---------------------------------------------------------------------------------------------

/// Seed lines 100-155 and 190: lead 1's seven events, applied in order, give its row of the state
/// table (line 64): name `aaa`, phone `1111`, status CONVERTED; the stream keeps every event in
/// order, with who did it and when (lines 435-437).
async fn seed_lead_history_gives_its_state_row<S: EventStore>(store: S) {
    let leads = with_seed_lead_1(store).await;

    let lead = leads.load("1").await.expect("load lead 1");
    assert_eq!(lead.version, 7, "seven events, one version each (seed line 98)");
    assert_eq!(lead.aggregate.status, Some(LeadStatus::Converted));
    assert_eq!(lead.aggregate.name.known().map(String::as_str), Some("aaa"));
    assert_eq!(lead.aggregate.phone.known().map(String::as_str), Some("1111"));
    // Seed line 81: how many calls before the conversion.
    assert_eq!(lead.aggregate.contacts, 2);
    assert_eq!(lead.aggregate.followups, 1);
    assert_eq!(lead.aggregate.payment_deadline, Some(at(SEED_PAYMENT_DEADLINE)));

    let events = leads.events("1", StreamSlice::all()).await.expect("lead 1's events");
    let names: Vec<&str> = events.iter().map(|e| e.envelope.event_name.as_str()).collect();
    assert_eq!(names, SEED_EVENT_NAMES);
    let versions: Vec<u64> = events.iter().map(|e| e.envelope.version).collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7]);
    let actors: Vec<Option<&str>> = events.iter().map(|e| e.envelope.metadata.actor.as_deref()).collect();
    assert_eq!(actors[0], Some("rep-kim"));
    assert_eq!(actors[4], Some("rep-lee"));
    assert_eq!(actors[6], Some("payments"));
    // The typo stays in the stream: the first event still says `aab` (seed line 108).
    match &events[0].event {
        LeadEvent::Initialized(e) => assert_eq!(e.name.known().map(String::as_str), Some("aab")),
        other => panic!("the first event is {other:?}"),
    }
}
on_both_stores!(
    seed_lead_history_gives_its_state_row_on,
    seed_lead_history_gives_its_state_row
);

/// Seed line 64 with line 190: the CONVERTED lead's row has an empty `followup-on`, and applying
/// its events must reproduce that row exactly. Likewise a lead closed after a follow-up (line 65,
/// CLOSED, empty `followup-on`): only the FOLLOWUP_SET row (line 67) carries a date.
async fn followup_date_is_empty_once_the_lead_moves_on<S: EventStore>(store: S) {
    let leads = with_seed_lead_1(store).await;
    let converted = leads.load("1").await.expect("load lead 1").aggregate;
    assert_eq!(converted.status, Some(LeadStatus::Converted));

    contacted_lead(&leads, "2", "bbb", "2222").await;
    let followup_on = in_a_day();
    leads
        .execute("2", rep("rep"), move |l: &Lead| l.schedule_followup(followup_on, now()))
        .await
        .expect("followup-set");
    assert_eq!(
        leads.load("2").await.expect("lead 2").aggregate.followup_on,
        Some(followup_on)
    );
    leads.execute("2", rep("rep"), Lead::close).await.expect("closed");
    let closed = leads.load("2").await.expect("lead 2").aggregate;

    assert_eq!(
        (converted.followup_on, closed.followup_on),
        (None, None),
        "the state table shows a follow-up date only for a lead in FOLLOWUP_SET"
    );
}
on_both_stores!(
    followup_date_is_empty_once_the_lead_moves_on_on,
    followup_date_is_empty_once_the_lead_moves_on
);

/// The status of lead `id` once `actor`'s command, which must be accepted, is stored.
async fn status_after<S: EventStore>(
    leads: &Repository<Lead, S>,
    id: &str,
    actor: &str,
    command: impl FnMut(&Lead) -> Result<Vec<LeadEvent>, LeadError>,
) -> Option<LeadStatus> {
    let done = leads
        .execute(id, rep(actor), command)
        .await
        .unwrap_or_else(|error| panic!("{actor}'s command on lead {id}: {error:?}"));
    done.aggregate.status
}

/// Seed lines 71-76: the flow starts in NEW_LEAD; a sales call ends with the lead not interested
/// (CLOSED), a follow-up booked (FOLLOWUP_SET) or the offer accepted (PENDING_PAYMENT); a
/// successful payment converts it (CONVERTED), a failed one leaves it PAYMENT_FAILED. Every row
/// of the state table (lines 64-68) is reachable.
async fn a_sales_call_ends_in_one_of_the_seed_statuses<S: EventStore>(store: S) {
    let leads = Repository::<Lead, _>::new(store);

    let started = status_after(&leads, "3", "rep", |l: &Lead| l.initialize("ccc", "3333")).await;
    assert_eq!(started, Some(LeadStatus::NewLead));
    let called = leads.execute("3", rep("rep"), Lead::contact).await.expect("contacted");
    assert_eq!(
        called.aggregate.status,
        Some(LeadStatus::NewLead),
        "a call alone changes no status"
    );
    assert_eq!(called.aggregate.contacts, 1);

    contacted_lead(&leads, "2", "bbb", "2222").await;
    let not_interested = status_after(&leads, "2", "rep", Lead::close).await;
    assert_eq!(not_interested, Some(LeadStatus::Closed));

    contacted_lead(&leads, "4", "ddd", "4444").await;
    let followup_on = in_a_day();
    let booked = leads
        .execute("4", rep("rep"), move |l: &Lead| l.schedule_followup(followup_on, now()))
        .await
        .expect("follow-up booked");
    assert_eq!(booked.aggregate.status, Some(LeadStatus::FollowupSet));
    assert_eq!(booked.aggregate.followup_on, Some(followup_on));

    contacted_lead(&leads, "6", "eee", "5555").await;
    let deadline = in_a_day();
    let submit = move |l: &Lead| l.submit_order(deadline, now());
    let accepted = status_after(&leads, "6", "rep", submit).await;
    assert_eq!(accepted, Some(LeadStatus::PendingPayment));
    let failed = status_after(&leads, "6", "payments", Lead::fail_payment).await;
    assert_eq!(failed, Some(LeadStatus::PaymentFailed));

    // From PAYMENT_FAILED a new order may be submitted (LeadStatus docs), and paid this time.
    let again = status_after(&leads, "6", "rep", submit).await;
    assert_eq!(again, Some(LeadStatus::PendingPayment));
    let paid = status_after(&leads, "6", "payments", Lead::confirm_payment).await;
    assert_eq!(paid, Some(LeadStatus::Converted));

    // The state table as stored names the statuses (seed lines 64-68).
    let table: Vec<(&str, &str)> = [
        ("2", "CLOSED"),
        ("3", "NEW_LEAD"),
        ("4", "FOLLOWUP_SET"),
        ("6", "CONVERTED"),
    ]
    .into_iter()
    .collect();
    for (id, expected) in table {
        let lead = leads.load(id).await.expect("load").aggregate;
        assert_eq!(lead.status.map(LeadStatus::as_str), Some(expected), "lead {id}");
        assert_eq!(LeadStatus::from_str_name(expected), lead.status);
    }
}
on_both_stores!(
    a_sales_call_ends_in_one_of_the_seed_statuses_on,
    a_sales_call_ends_in_one_of_the_seed_statuses
);

/// CONVERTED and CLOSED end the funnel (LeadStatus docs: "Final"): every command is refused,
/// and nothing is appended.
async fn converted_and_closed_leads_take_no_more_commands<S: EventStore>(store: S) {
    let leads = with_seed_lead_1(store).await;
    contacted_lead(&leads, "2", "bbb", "2222").await;
    leads.execute("2", rep("rep"), Lead::close).await.expect("closed");

    for (id, expected) in [("1", LeadError::AlreadyConverted), ("2", LeadError::Closed)] {
        let before = leads.load(id).await.expect("load").version;
        let later = in_a_day();
        let commands: Vec<(&str, Box<LeadCommand>)> = vec![
            ("contact", Box::new(Lead::contact)),
            ("follow-up", Box::new(move |l: &Lead| l.schedule_followup(later, now()))),
            ("details", Box::new(|l: &Lead| l.update_contact_details("zzz", "9999"))),
            ("order", Box::new(move |l: &Lead| l.submit_order(later, now()))),
            ("confirm", Box::new(Lead::confirm_payment)),
            ("fail", Box::new(Lead::fail_payment)),
            ("close", Box::new(Lead::close)),
        ];
        for (what, command) in commands {
            let error = refusal(&leads, id, "rep", |l: &Lead| command(l)).await;
            assert_eq!(error, expected, "{what} on lead {id}");
        }
        assert_eq!(
            leads.load(id).await.expect("load").version,
            before,
            "nothing appended to lead {id}"
        );
    }

    // A lead that was never initialized, and one initialized twice.
    assert_eq!(
        refusal(&leads, "404", "rep", Lead::contact).await,
        LeadError::NotInitialized
    );
    assert_eq!(
        refusal(&leads, "1", "rep", |l: &Lead| l.initialize("aaa", "1111")).await,
        LeadError::AlreadyInitialized
    );
}
on_both_stores!(
    converted_and_closed_leads_take_no_more_commands_on,
    converted_and_closed_leads_take_no_more_commands
);

/// The order and payment rules the Lead docs state around the seed's flow: an order needs a call
/// first (seed lines 134-143: contacted, then order-submitted) and a deadline ahead; one order
/// awaits payment at a time; a payment needs an order; a correction must change something.
async fn order_and_payment_rules<S: EventStore>(store: S) {
    let leads = Repository::<Lead, _>::new(store);
    leads
        .execute("7", rep("rep"), |l: &Lead| l.initialize("fff", "7777"))
        .await
        .expect("initialized");
    let deadline = in_a_day();

    let never_called = refusal(&leads, "7", "rep", move |l: &Lead| l.submit_order(deadline, now())).await;
    assert_eq!(never_called, LeadError::NeverContacted);
    assert_eq!(
        refusal(&leads, "7", "rep", Lead::confirm_payment).await,
        LeadError::NoPendingOrder
    );
    assert_eq!(
        refusal(&leads, "7", "rep", Lead::fail_payment).await,
        LeadError::NoPendingOrder
    );

    leads.execute("7", rep("rep"), Lead::contact).await.expect("contacted");
    let decided_at = now();
    let past = decided_at - chrono::Duration::minutes(1);
    let late = refusal(&leads, "7", "rep", move |l: &Lead| l.submit_order(past, decided_at)).await;
    assert_eq!(
        late,
        LeadError::DeadlineNotInFuture {
            payment_deadline: past,
            now: decided_at
        }
    );

    leads
        .execute("7", rep("rep"), move |l: &Lead| l.submit_order(deadline, now()))
        .await
        .expect("order submitted");
    let second = refusal(&leads, "7", "rep", move |l: &Lead| l.submit_order(deadline, now())).await;
    assert_eq!(second, LeadError::AwaitingPayment);
    let followup = refusal(&leads, "7", "rep", move |l: &Lead| l.schedule_followup(deadline, now())).await;
    assert_eq!(followup, LeadError::AwaitingPayment);

    let unchanged = refusal(&leads, "7", "rep", |l: &Lead| l.update_contact_details("fff", "7777")).await;
    assert_eq!(unchanged, LeadError::NothingChanged);
    let blank = refusal(&leads, "7", "rep", |l: &Lead| l.update_contact_details("  ", "7777")).await;
    assert!(matches!(blank, LeadError::Empty(_)), "{blank:?}");
    assert_eq!(
        leads.load("7").await.expect("lead 7").version,
        3,
        "refusals append nothing"
    );
}
on_both_stores!(order_and_payment_rules_on, order_and_payment_rules);

/// Seed lines 118-124: the follow-up is booked *at* the instant of its own event
/// (`followup-on` = `timestamp` = 01:00:02.01). The domain documents that a follow-up must be
/// after now, so that exact event is refused, with both instants in the error.
#[tokio::test]
async fn the_seed_followup_at_its_own_instant_is_refused_as_documented() {
    bounded(async {
        let leads = Repository::<Lead, _>::new(InMemoryStore::new());
        contacted_lead(&leads, "1", "aab", "1111").await;
        let seed_instant = at(SEED_TIMES[2]);
        let error = refusal(&leads, "1", "rep", move |l: &Lead| {
            l.schedule_followup(seed_instant, seed_instant)
        })
        .await;
        assert_eq!(
            error,
            LeadError::FollowupNotInFuture {
                followup_on: seed_instant,
                now: seed_instant
            }
        );
        let message = error.to_string();
        assert!(message.contains("2025-01-01 01:00:02.010"), "{message}");
        assert_eq!(
            leads.load("1").await.expect("lead 1").aggregate.status,
            Some(LeadStatus::NewLead)
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Time travel (seed lines 155-193, 426-430)
// ---------------------------------------------------------------------------------------------

/// Seed lines 192-193: "the state at version 5 is the first 5 events applied". Every version of
/// lead 1 loads as the fold of exactly its first `n` events.
async fn time_travel_by_version_is_the_fold_of_the_first_events<S: EventStore>(store: S) {
    let leads = with_seed_lead_1(store).await;
    let events = leads.events("1", StreamSlice::all()).await.expect("lead 1's events");
    assert_eq!(events.len(), 7);

    let mut folded = Lead::default();
    for n in 0..=7u64 {
        if n > 0 {
            folded.apply_event(&events[n as usize - 1].event);
        }
        let then = leads.load_at_version("1", n).await.expect("time travel");
        assert_eq!(then.version, n);
        assert_eq!(then.aggregate, folded, "lead 1 at version {n}");
    }

    let v5 = leads.load_at_version("1", 5).await.expect("version 5").aggregate;
    assert_eq!(v5.status, Some(LeadStatus::FollowupSet));
    assert_eq!(v5.name.known().map(String::as_str), Some("aaa"));
    assert_eq!((v5.contacts, v5.followups), (2, 1));
    let v3 = leads.load_at_version("1", 3).await.expect("version 3").aggregate;
    assert_eq!(
        v3.name.known().map(String::as_str),
        Some("aab"),
        "before the typo was fixed"
    );
    let beyond = leads.load_at_version("1", 99).await.expect("a version past the end");
    assert_eq!(
        (beyond.version, beyond.aggregate.status),
        (7, Some(LeadStatus::Converted))
    );
}
on_both_stores!(
    time_travel_by_version_on,
    time_travel_by_version_is_the_fold_of_the_first_events
);

/// Seed lines 426-430 (retroactive debugging: the state at the moment a bug happened), on the
/// seed's own clock: the in-memory store stamps each event with the seed's timestamp.
#[tokio::test]
async fn time_travel_by_instant_on_the_seed_clock() {
    bounded(async {
        let clock = Arc::new(Mutex::new(at(SEED_TIMES[0])));
        let reading = Arc::clone(&clock);
        let store = InMemoryStore::new().with_clock(move || *reading.lock().unwrap());
        let leads = Repository::<Lead, _>::new(store);
        play_seed_lead_1(&leads, "1", |t| *clock.lock().unwrap() = t).await;

        let stamps: Vec<DateTime<Utc>> = leads
            .events("1", StreamSlice::all())
            .await
            .expect("events")
            .iter()
            .map(|e| e.envelope.recorded_at)
            .collect();
        let seed: Vec<DateTime<Utc>> = SEED_TIMES.iter().map(|t| at(t)).collect();
        assert_eq!(stamps, seed, "each event carries the seed's timestamp");

        let before = leads
            .load_at_instant("1", at("2025-01-01T01:00:00Z"))
            .await
            .expect("before");
        assert_eq!((before.version, before.aggregate.status), (0, None));
        let typo_fixed = leads
            .load_at_instant("1", at("2025-01-01T01:00:03.5Z"))
            .await
            .expect("at 01:00:03.5");
        assert_eq!(typo_fixed.version, 4);
        assert_eq!(typo_fixed.aggregate.name.known().map(String::as_str), Some("aaa"));
        assert_eq!(typo_fixed.aggregate.status, Some(LeadStatus::FollowupSet));
        assert_eq!(typo_fixed.aggregate.contacts, 1);
        let pending = leads
            .load_at_instant("1", at("2025-01-01T01:01:01.00Z"))
            .await
            .expect("pending");
        assert_eq!(
            (pending.version, pending.aggregate.status),
            (6, Some(LeadStatus::PendingPayment))
        );
        let paid = leads.load_at_instant("1", at(SEED_TIMES[6])).await.expect("paid");
        assert_eq!((paid.version, paid.aggregate.status), (7, Some(LeadStatus::Converted)));
    })
    .await;
}

/// The same on the SQLite file, which stamps events with the real clock: the state at an instant
/// taken between two commands is the state after the first of them.
#[tokio::test]
async fn time_travel_by_instant_on_sqlite() {
    bounded(async {
        let (_dir, store) = sqlite_store().await;
        let tickets = Repository::<Ticket, _>::new(store);
        let pause = || tokio::time::sleep(Duration::from_millis(20));
        open_ticket(&tickets, "T-1", "VPN down", Priority::Normal).await;
        pause().await;
        let after_open = Utc::now();
        pause().await;
        tickets
            .execute("T-1", rep("customer"), |t: &Ticket| t.request_escalation("VIP"))
            .await
            .expect("escalated");
        pause().await;
        let after_escalation = Utc::now();

        let then = tickets
            .load_at_instant("T-1", after_open)
            .await
            .expect("at the first instant");
        assert_eq!((then.version, then.aggregate.escalation.clone()), (1, None));
        let later = tickets
            .load_at_instant("T-1", after_escalation)
            .await
            .expect("at the second instant");
        assert_eq!(later.version, 2);
        assert_eq!(later.aggregate.escalation.as_deref(), Some("VIP"));
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Read models (seed §1.1 lines 197-241, §1.2 lines 246-292)
// ---------------------------------------------------------------------------------------------

/// The seed's other leads (state table lines 65-68) played beside lead 1: lead 2 closed after
/// two follow-ups ("leads closed later", line 249), lead 3 new, lead 4 with a follow-up, lead 6
/// with a failed payment.
async fn play_seed_table<S: EventStore>(leads: &Repository<Lead, S>) {
    play_seed_lead_1(leads, "1", |_| {}).await;
    contacted_lead(leads, "2", "bbb", "2222").await;
    for days in [1, 2] {
        let on = Utc::now() + chrono::Duration::days(days);
        leads
            .execute("2", rep("rep"), move |l: &Lead| l.schedule_followup(on, now()))
            .await
            .expect("follow-up");
    }
    leads.execute("2", rep("rep"), Lead::close).await.expect("closed");
    leads
        .execute("3", rep("rep"), |l: &Lead| l.initialize("ccc", "3333"))
        .await
        .expect("new");
    contacted_lead(leads, "4", "ddd", "4444").await;
    let on = in_a_day();
    leads
        .execute("4", rep("rep"), move |l: &Lead| l.schedule_followup(on, now()))
        .await
        .expect("follow-up");
    contacted_lead(leads, "6", "eee", "5555").await;
    leads
        .execute("6", rep("rep"), move |l: &Lead| l.submit_order(on, now()))
        .await
        .expect("order");
    leads
        .execute("6", rep("payments"), Lead::fail_payment)
        .await
        .expect("failed");
}

fn check_search_model(search: &SearchModel) {
    // Seed lines 237-241: name ['aab', 'aaa'], phone ['1111'].
    let lead_1 = search.leads.get("1").expect("lead 1 in the search model");
    assert_eq!(
        lead_1.names.iter().map(String::as_str).collect::<Vec<_>>(),
        ["aaa", "aab"]
    );
    assert_eq!(lead_1.phones.iter().map(String::as_str).collect::<Vec<_>>(), ["1111"]);
    assert_eq!(search.find("aab"), ["1"], "found by the old, misspelled name");
    assert_eq!(search.find("aaa"), ["1"]);
    assert_eq!(search.find("1111"), ["1"]);
    assert_eq!(search.find("5555"), ["6"]);
    assert!(search.find("zzz").is_empty());
}

fn check_analysis_model(analysis: &AnalysisModel) {
    let row = |id: &str| {
        let row = analysis
            .leads
            .get(id)
            .unwrap_or_else(|| panic!("lead {id} in the analysis model"));
        (row.followups, row.status)
    };
    // Seed lines 285-290: followups 1, status converted.
    assert_eq!(row("1"), (1, LeadStatus::Converted));
    assert_eq!(row("2"), (2, LeadStatus::Closed));
    assert_eq!(row("3"), (0, LeadStatus::NewLead));
    assert_eq!(row("4"), (1, LeadStatus::FollowupSet));
    assert_eq!(row("6"), (0, LeadStatus::PaymentFailed));
    assert_eq!(analysis.leads.len(), 5);
    // Line 249: follow-up counts of the leads that were closed later.
    let closed_followups: u32 = analysis
        .leads
        .values()
        .filter(|r| r.status == LeadStatus::Closed)
        .map(|r| r.followups)
        .sum();
    assert_eq!(closed_followups, 2);
}

#[tokio::test]
async fn search_and_analysis_models_in_memory() {
    bounded(async {
        let store = InMemoryStore::new();
        let leads = Repository::<Lead, _>::new(store.clone());
        play_seed_table(&leads).await;

        let (search, analysis) = rebuilt_in_memory(&store).await;
        check_search_model(&search);
        check_analysis_model(&analysis);
    })
    .await;
}

/// Seed line 292: the projected models are kept in a database: here the tables of the SQLite
/// file that holds the events.
#[tokio::test]
async fn search_and_analysis_tables_in_the_sqlite_file() {
    bounded(async {
        let (_dir, store) = sqlite_store().await;
        store.create_tables().await.expect("read-model tables");
        let leads = Repository::<Lead, _>::new(store.clone());
        play_seed_table(&leads).await;

        let (search, analysis) = lead_runners(&store);
        search.catch_up().await.expect("search projection");
        analysis.catch_up().await.expect("analysis projection");
        check_search_model(&store.load_search().await.expect("search table"));
        check_analysis_model(&store.load_analysis().await.expect("analysis table"));
        assert_eq!(store.find("aab").await.expect("find"), ["1"]);

        // A later change reaches the tables on the next catch-up, and only it.
        leads
            .execute("3", rep("rep"), |l: &Lead| l.update_contact_details("ccd", "3334"))
            .await
            .expect("fixed");
        search.catch_up().await.expect("search again");
        assert_eq!(store.find("ccc").await.expect("old name"), ["3"]);
        assert_eq!(store.find("3334").await.expect("new phone"), ["3"]);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Ticket: the escalation command (seed lines 336-420)
// ---------------------------------------------------------------------------------------------

/// Seed lines 344-419: RequestEscalation(reason) on a rehydrated ticket records TicketEscalated;
/// the state says the ticket is escalated from then on, and not before.
async fn escalation_is_requested_with_a_reason<S: EventStore>(store: S) {
    let tickets = Repository::<Ticket, _>::new(store);
    let opened = open_ticket(&tickets, "T-1", "VPN down", Priority::Normal).await;
    assert_eq!((opened.version, opened.aggregate.status), (1, Status::Open));
    assert_eq!(
        opened.aggregate.escalation, None,
        "isEscalated = false after initialization"
    );

    let escalated = tickets
        .execute("T-1", rep("customer"), |t: &Ticket| {
            t.request_escalation("  VIP customer  ")
        })
        .await
        .expect("escalated");
    assert_eq!(escalated.version, 2);
    match escalated.events.as_slice() {
        [TicketEvent::Escalated(e)] => assert_eq!(e.reason, "VIP customer"),
        other => panic!("expected one TicketEscalated, got {other:?}"),
    }
    let now = tickets.load("T-1").await.expect("load");
    assert_eq!(now.aggregate.escalation.as_deref(), Some("VIP customer"));
    let before = tickets.load_at_version("T-1", 1).await.expect("version 1");
    assert_eq!(before.aggregate.escalation, None);

    let again = refusal(&tickets, "T-1", "customer", |t: &Ticket| t.request_escalation("again")).await;
    assert_eq!(again, TicketError::AlreadyEscalated);
    let never_opened = refusal(&tickets, "T-404", "customer", |t: &Ticket| t.request_escalation("VIP")).await;
    assert_eq!(never_opened, TicketError::NotOpened);
    open_ticket(&tickets, "T-2", "Printer", Priority::Low).await;
    let blank = refusal(&tickets, "T-2", "customer", |t: &Ticket| t.request_escalation(" ")).await;
    assert!(matches!(blank, TicketError::Empty(_)), "{blank:?}");
    tickets
        .execute("T-2", rep("agent"), Ticket::close)
        .await
        .expect("closed");
    assert_eq!(
        refusal(&tickets, "T-2", "customer", |t: &Ticket| t.request_escalation("VIP")).await,
        TicketError::Closed,
        "a closed ticket cannot be escalated (Ticket::request_escalation docs)"
    );
    assert_eq!(tickets.load("T-2").await.expect("T-2").version, 2);
}
on_both_stores!(
    escalation_is_requested_with_a_reason_on,
    escalation_is_requested_with_a_reason
);

/// Seed line 405: the ticket's first event is `TicketInitialized`. Streams stored under that name
/// (and escalations stored without a reason) still load, and commands decide on them.
async fn a_stream_stored_as_ticket_initialized_loads<S: EventStore>(store: S) {
    let stream = StreamId::new("ticket", "T-old");
    let records = stored_v1_records().expect("the stored v1 fixture");
    let batch: Vec<NewEvent> = records
        .iter()
        .map(|r| NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_name: r.event_name.clone(),
            schema_version: r.schema_version,
            payload: serde_json::to_vec(&r.payload).expect("payload"),
            metadata: Metadata::new(),
        })
        .collect();
    assert_eq!(records[0].event_name, "TicketInitialized");
    store
        .append(&stream, ExpectedVersion::NoStream, batch)
        .await
        .expect("append the old stream");

    let tickets = Repository::<Ticket, _>::new(store);
    let ticket = tickets.load("T-old").await.expect("load the old stream");
    assert_eq!(ticket.version, 5);
    assert_eq!(ticket.aggregate.status, Status::Open);
    assert_eq!(ticket.aggregate.title, "VPN drops every hour");
    assert_eq!(ticket.aggregate.assignee.as_deref(), Some("bob"));
    assert_eq!(ticket.aggregate.escalation.as_deref(), Some(UNRECORDED_REASON));
    assert_eq!(ticket.aggregate.comments.len(), 2);
    let first = tickets
        .events("T-old", StreamSlice::all().to_version(1))
        .await
        .expect("first event");
    assert!(matches!(first[0].event, TicketEvent::Opened(_)), "{:?}", first[0].event);
    assert_eq!(
        refusal(&tickets, "T-old", "customer", |t: &Ticket| t.request_escalation("VIP")).await,
        TicketError::AlreadyEscalated
    );
    let resolved = tickets
        .execute("T-old", rep("bob"), |t: &Ticket| t.resolve("replaced the router"))
        .await
        .expect("resolved");
    assert_eq!((resolved.version, resolved.aggregate.status), (6, Status::Resolved));
}
on_both_stores!(
    a_stream_stored_as_ticket_initialized_loads_on,
    a_stream_stored_as_ticket_initialized_loads
);

/// The ticket's life as its docs state it: assigned, resolved only when assigned, closed
/// resolved or not, reopened only when finished (the resolution goes, a count goes up), and a
/// closed ticket takes neither comments nor escalations.
async fn a_ticket_does_in_each_status_what_its_docs_say<S: EventStore>(store: S) {
    let tickets = with_opened_ticket(store, "T-1", "Printer on fire", Priority::High).await;
    assert_eq!(
        refusal(&tickets, "T-1", "agent", |t: &Ticket| t.resolve("water")).await,
        TicketError::Unassigned
    );
    assert_eq!(
        refusal(&tickets, "T-1", "agent", |t: &Ticket| t.reopen("why")).await,
        TicketError::NotFinished
    );
    tickets
        .execute("T-1", rep("lead"), |t: &Ticket| t.assign("alice"))
        .await
        .expect("assigned");
    assert_eq!(
        refusal(&tickets, "T-1", "lead", |t: &Ticket| t.assign(" alice ")).await,
        TicketError::AlreadyAssignedTo("alice".into())
    );
    let resolved = tickets
        .execute("T-1", rep("alice"), |t: &Ticket| t.resolve("water"))
        .await
        .expect("resolved");
    assert_eq!(resolved.aggregate.status, Status::Resolved);
    assert_eq!(resolved.aggregate.resolution.as_deref(), Some("water"));
    assert_eq!(
        refusal(&tickets, "T-1", "alice", |t: &Ticket| t.resolve("again")).await,
        TicketError::AlreadyResolved
    );
    let closed = tickets
        .execute("T-1", rep("alice"), Ticket::close)
        .await
        .expect("closed");
    assert_eq!(closed.aggregate.status, Status::Closed);
    assert_eq!(
        closed.aggregate.resolution.as_deref(),
        Some("water"),
        "closed after resolution"
    );
    assert_eq!(
        refusal(&tickets, "T-1", "alice", |t: &Ticket| t.comment("alice", "hi")).await,
        TicketError::Closed
    );
    assert_eq!(
        refusal(&tickets, "T-1", "alice", Ticket::close).await,
        TicketError::Closed
    );
    let reopened = tickets
        .execute("T-1", rep("customer"), |t: &Ticket| t.reopen("on fire again"))
        .await
        .expect("reopened");
    assert_eq!(reopened.aggregate.status, Status::Open);
    assert_eq!(reopened.aggregate.resolution, None);
    assert_eq!(reopened.aggregate.reopened, 1);
    assert_eq!(reopened.version, 5);

    // Closed without being resolved: no resolution to show.
    open_ticket(&tickets, "T-2", "Spam", Priority::Low).await;
    let dropped = tickets
        .execute("T-2", rep("agent"), Ticket::close)
        .await
        .expect("closed unresolved");
    assert_eq!(
        (dropped.aggregate.status, dropped.aggregate.resolution),
        (Status::Closed, None)
    );
    let opened_again = refusal(&tickets, "T-2", "customer", |t: &Ticket| {
        t.open("Spam", "acme", Priority::Low)
    })
    .await;
    assert_eq!(opened_again, TicketError::AlreadyOpened);
}
on_both_stores!(
    a_ticket_does_in_each_status_what_its_docs_say_on,
    a_ticket_does_in_each_status_what_its_docs_say
);

// ---------------------------------------------------------------------------------------------
// Optimistic concurrency (seed lines 318-325, 358-361, 439-466)
// ---------------------------------------------------------------------------------------------

/// Seed lines 358-361 and 450-453: a change committed against the version it was loaded at is
/// refused when another writer got there first, and nothing is written; lines 441-442: the
/// events appended in between can be read exactly, and a command decided again on them sees
/// whether it still holds (a second escalation is refused, not appended).
async fn a_stale_escalation_is_refused_and_the_winner_is_readable<S: EventStore>(store: S) {
    let tickets = with_opened_ticket(store, "T-1", "VPN down", Priority::Normal).await;

    let mut stale = tickets.load_for_update("T-1").await.expect("load for update");
    assert_eq!(stale.loaded_version(), 1);
    tickets
        .execute("T-1", rep("support-lead"), |t: &Ticket| t.request_escalation("outage"))
        .await
        .expect("the other writer escalates first");

    stale
        .decide(|t: &Ticket| t.request_escalation("VIP"))
        .expect("the stale copy still thinks it may");
    match tickets.save(&mut stale, rep("customer")).await {
        Err(RepositoryError::Conflict(conflict)) => {
            assert_eq!(conflict.expected, ExpectedVersion::Exact(1));
            assert_eq!(conflict.actual, 2);
            let meanwhile = tickets
                .events("T-1", StreamSlice::from_version(2).to_version(conflict.actual))
                .await
                .expect("the events appended meanwhile");
            assert_eq!(meanwhile.len(), 1);
            match &meanwhile[0].event {
                TicketEvent::Escalated(e) => assert_eq!(e.reason, "outage"),
                other => panic!("expected the winner's escalation, got {other:?}"),
            }
            assert_eq!(meanwhile[0].envelope.metadata.actor.as_deref(), Some("support-lead"));
        }
        other => panic!("expected a concurrency conflict, got {other:?}"),
    }
    assert_eq!(
        tickets.load("T-1").await.expect("load").version,
        2,
        "the stale change was not written"
    );
    assert_eq!(
        refusal(&tickets, "T-1", "customer", |t: &Ticket| t.request_escalation("VIP")).await,
        TicketError::AlreadyEscalated,
        "decided again on the real state"
    );
}
on_both_stores!(
    a_stale_escalation_is_refused_on,
    a_stale_escalation_is_refused_and_the_winner_is_readable
);

/// Seed lines 439-442 and 450-453 under a real race: eight requests escalate the same ticket at
/// once. Exactly one escalation is stored; every other request is decided again on the state
/// with the winner's event and refused by the rule (never appended twice, never a bare conflict).
async fn racing_escalations_store_exactly_one<S: EventStore + Clone + Send + Sync + 'static>(store: S) {
    let tickets = with_opened_ticket(store, "T-1", "VPN down", Priority::Normal).await;
    let mut racers = tokio::task::JoinSet::new();
    for n in 0..8 {
        let tickets = tickets.clone();
        racers.spawn(async move {
            let reason = format!("reason {n}");
            tickets
                .execute("T-1", rep("customer"), move |t: &Ticket| t.request_escalation(&reason))
                .await
        });
    }
    let (mut stored, mut refused_by_rule) = (0, 0);
    while let Some(outcome) = racers.join_next().await {
        match outcome.expect("a racer") {
            Ok(executed) => {
                stored += 1;
                assert_eq!(executed.version, 2);
            }
            Err(CommandError::Rejected(TicketError::AlreadyEscalated)) => refused_by_rule += 1,
            Err(other) => panic!("a racing escalation failed otherwise: {other:?}"),
        }
    }
    assert_eq!((stored, refused_by_rule), (1, 7));
    let events = tickets.events("T-1", StreamSlice::all()).await.expect("events");
    let escalations = events
        .iter()
        .filter(|e| matches!(e.event, TicketEvent::Escalated(_)))
        .count();
    assert_eq!((events.len(), escalations), (2, 1));
}
on_both_stores!(
    racing_escalations_store_exactly_one_on,
    racing_escalations_store_exactly_one
);

/// The same on a lead: two reps work the same lead; one submits an order while the other,
/// looking at a stale copy, books a follow-up. The follow-up is refused as a conflict, and,
/// decided again, refused by the rule (an order awaits payment).
async fn two_reps_on_one_lead<S: EventStore>(store: S) {
    let leads = Repository::<Lead, _>::new(store);
    contacted_lead(&leads, "9", "ggg", "9999").await;
    let mut rep_b = leads.load_for_update("9").await.expect("rep B loads the lead");
    let deadline = in_a_day();
    leads
        .execute("9", rep("rep-a"), move |l: &Lead| l.submit_order(deadline, now()))
        .await
        .expect("rep A's order");
    rep_b
        .decide(|l: &Lead| l.schedule_followup(deadline, now()))
        .expect("rep B's stale copy allows a follow-up");
    assert!(
        matches!(leads.save(&mut rep_b, rep("rep-b")).await, Err(RepositoryError::Conflict(c)) if c.actual == 3),
        "rep B's save must conflict"
    );
    let again = refusal(&leads, "9", "rep-b", move |l: &Lead| {
        l.schedule_followup(deadline, now())
    })
    .await;
    assert_eq!(again, LeadError::AwaitingPayment);
    let lead = leads.load("9").await.expect("lead 9");
    assert_eq!(
        (lead.version, lead.aggregate.status),
        (3, Some(LeadStatus::PendingPayment))
    );
}
on_both_stores!(two_reps_on_one_lead_on, two_reps_on_one_lead);

// ---------------------------------------------------------------------------------------------
// Event store properties (seed lines 312-316, 513-523, 543-551)
// ---------------------------------------------------------------------------------------------

/// Seed line 314: the event store is append-only; events cannot be changed or deleted. The SQLite
/// file refuses it even to a program that bypasses the store.
#[tokio::test]
async fn the_sqlite_file_refuses_to_change_or_delete_events() {
    bounded(async {
        let (dir, store) = sqlite_store().await;
        let leads = with_seed_lead_1(store.clone()).await;
        drop(leads);
        drop(store);

        let path = dir.path().join("domain.db");
        let outcome = tokio::task::spawn_blocking(move || {
            let db = rusqlite::Connection::open(path).expect("open the file directly");
            let update = db.execute("UPDATE events SET payload = '{}' WHERE version = 1", []);
            let delete = db.execute("DELETE FROM events WHERE version = 7", []);
            let count: i64 = db
                .query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))
                .expect("count");
            (update.is_err(), delete.is_err(), count)
        })
        .await
        .expect("the direct connection");
        assert_eq!(
            outcome,
            (true, true, 7),
            "(update refused, delete refused, events left)"
        );

        let reopened = SqliteStore::open(dir.path().join("domain.db")).await.expect("reopen");
        let lead = Repository::<Lead, _>::new(reopened).load("1").await.expect("lead 1");
        assert_eq!(lead.aggregate.name.known().map(String::as_str), Some("aaa"));
    })
    .await;
}

/// Seed lines 513-523 (Forgettable Payload): personal data is stored encrypted with a key per
/// aggregate; deleting the key leaves the events in place but unreadable. The lead still loads
/// (status, counts), the search model drops it, the analysis model keeps its row.
#[tokio::test]
async fn a_forgotten_lead_keeps_its_events_but_not_its_name_on_sqlite() {
    bounded(async {
        let (_dir, inner) = sqlite_store().await;
        let store = forgettable_leads(inner.clone(), inner.clone()).expect("a PII store");
        store.create_tables().await.expect("tables");
        let leads = Repository::<Lead, _>::new(store.clone());
        play_seed_table(&leads).await;

        let raw = es_core::GlobalLog::read_all(&inner, 0, 1)
            .await
            .expect("the first stored event, raw");
        assert_eq!(
            (raw[0].stream.aggregate_id.as_str(), raw[0].event_name.as_str()),
            ("1", "LeadInitialized")
        );
        let first = String::from_utf8_lossy(&raw[0].payload).into_owned();
        assert!(
            !first.contains("aab") && !first.contains("1111"),
            "sealed on disk: {first}"
        );

        assert!(
            forget_lead(&store, "1").await.expect("forget lead 1"),
            "lead 1 had personal data"
        );
        let lead = leads.load("1").await.expect("a forgotten lead still loads");
        assert_eq!(lead.version, 7, "the events stay");
        assert!(lead.aggregate.name.is_forgotten() && lead.aggregate.phone.is_forgotten());
        assert_eq!(lead.aggregate.status, Some(LeadStatus::Converted));
        assert_eq!(lead.aggregate.contacts, 2);
        let old = leads
            .load_at_version("1", 3)
            .await
            .expect("time travel on a forgotten lead");
        assert!(old.aggregate.name.is_forgotten());

        let (search, analysis) = lead_runners(&store);
        search.catch_up().await.expect("search");
        analysis.catch_up().await.expect("analysis");
        let model = store.load_search().await.expect("search table");
        assert!(!model.leads.contains_key("1"), "the search model forgets lead 1");
        assert!(model.find("aab").is_empty() && model.find("1111").is_empty());
        assert_eq!(model.find("bbb"), ["2"], "other leads are kept");
        let rows = store.load_analysis().await.expect("analysis table");
        assert_eq!(
            rows.leads.get("1").map(|r| (r.followups, r.status)),
            Some((1, LeadStatus::Converted))
        );

        // Lead 2 was not forgotten and still reads in full.
        let other = leads.load("2").await.expect("lead 2").aggregate;
        assert_eq!(other.name.known().map(String::as_str), Some("bbb"));
    })
    .await;
}

#[tokio::test]
async fn a_forgotten_lead_in_memory() {
    bounded(async {
        let mut registry = es_core::EventRegistry::new();
        registry.register::<Lead>().expect("register Lead");
        let store = PiiStore::new(InMemoryStore::new(), InMemoryKeyStore::new(), registry);
        let leads = with_seed_lead_1(store.clone()).await;
        assert!(forget_lead(&store, "1").await.expect("forget"));
        let lead = leads.load("1").await.expect("load").aggregate;
        assert!(lead.name.is_forgotten());
        assert_eq!(lead.status, Some(LeadStatus::Converted));

        let search = InMemoryReadModel::<SearchModel>::new();
        ProjectionRunner::new(LeadSearchProjection::default(), store.clone(), search.clone())
            .catch_up()
            .await
            .expect("search projection from scratch, after forgetting");
        assert!(search.read(|m| m.leads.is_empty()), "nothing of lead 1 to search");
    })
    .await;
}

/// Seed lines 543-551: a snapshot every N versions, then only the events after it are replayed;
/// the state is the same as a full replay, and time travel to before the snapshot still works.
#[tokio::test]
async fn snapshots_give_the_state_of_a_full_replay_on_sqlite() {
    bounded(async {
        let (_dir, store) = sqlite_store().await;
        let leads = Repository::<Lead, _>::new(store.clone()).with_snapshot_every(100);
        leads
            .execute("L", rep("rep"), |l: &Lead| l.initialize("hhh", "0000"))
            .await
            .expect("initialized");
        for _ in 0..3 {
            // 100 calls logged at once (a dialer's batch).
            leads
                .execute("L", rep("dialer"), |l: &Lead| {
                    let mut events = Vec::new();
                    for _ in 0..100 {
                        events.extend(l.contact()?);
                    }
                    Ok::<_, LeadError>(events)
                })
                .await
                .expect("100 calls");
        }
        for _ in 0..5 {
            leads.execute("L", rep("rep"), Lead::contact).await.expect("one call");
        }
        let snapshot = store
            .load_snapshot(&StreamId::new("lead", "L"))
            .await
            .expect("read the snapshot")
            .expect("a snapshot was taken");
        // The third batch carried the stream from 201 past 300, to 301.
        assert_eq!(snapshot.version, 301);

        let with_snapshot = leads.load("L").await.expect("load with the snapshot");
        let full = Repository::<Lead, _>::new(store.clone())
            .load("L")
            .await
            .expect("full replay");
        assert_eq!(with_snapshot.version, 306);
        assert_eq!(with_snapshot.aggregate, full.aggregate);
        assert_eq!(with_snapshot.aggregate.contacts, 305);
        let before = leads.load_at_version("L", 150).await.expect("before the snapshot");
        assert_eq!((before.version, before.aggregate.contacts), (150, 149));
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The README's two commands
// ---------------------------------------------------------------------------------------------

/// Runs `program` with `args` and no PostgreSQL in the environment (the README: on PostgreSQL
/// when `DATABASE_URL` is set), within `limit`; its exit success, stdout and stderr.
fn run_bounded(program: &str, args: &[&str], dir: &Path, limit: Duration) -> (bool, String, String) {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("ES_EXAMPLES_DB")
        .env_remove("ES_EXAMPLES_SCHEMA")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the program");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let read_out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let read_err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            child.kill().expect("kill the program that ran out of time");
            let _ = child.wait();
            panic!("{program} {args:?} ran longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.success(), read_out.join().unwrap(), read_err.join().unwrap())
}

/// README "The two commands": `cargo run -p examples` plays the ticket and a sales week over 200
/// leads on a SQLite file (`--db PATH`), with the read models in tables of the same file and one
/// lead forgotten; a second run continues the same history, as its first line says; then `es`
/// shows what was stored.
#[test]
fn the_two_commands_run_both_domains_on_a_sqlite_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("examples.db");
    let db_arg = db.to_str().expect("a UTF-8 path");
    let limit = Duration::from_secs(120);

    let (ok, first, err) = run_bounded(env!("CARGO_BIN_EXE_domains"), &["--db", db_arg], dir.path(), limit);
    assert!(ok, "the first run failed:\n{first}\n{err}");
    assert!(
        first.lines().next().unwrap_or("").contains("new, empty"),
        "first line: {first}"
    );
    assert!(db.exists(), "the events went to the file given");
    assert!(!dir.path().join("es-examples.db").exists(), "not to the default file");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (leads_after_one, tickets_after_one, analysis_rows, forgotten_in_search) = rt.block_on(bounded(async {
        let store = SqliteStore::open(&db).await.expect("open the demo's file");
        let rows = store.load_analysis().await.expect("the analysis table is in the file");
        let search = store.load_search().await.expect("the search table is in the file");
        let counts = stream_counts(&db).await;
        (counts.0, counts.1, rows.leads.len(), 200 - search.leads.len())
    }));
    assert_eq!(leads_after_one, 200, "a sales week over 200 leads");
    assert!(tickets_after_one >= 1, "the support ticket's life");
    assert_eq!(analysis_rows, 200, "one analysis row per lead");
    assert_eq!(
        forgotten_in_search, 1,
        "one lead forgotten at its request is gone from the search model"
    );

    let (ok, second, err) = run_bounded(env!("CARGO_BIN_EXE_domains"), &["--db", db_arg], dir.path(), limit);
    assert!(ok, "the second run failed:\n{second}\n{err}");
    let first_line = second.lines().next().unwrap_or("");
    assert!(
        first_line.contains("already stored") || first_line.contains("continue"),
        "first line: {first_line}"
    );
    let (leads_after_two, tickets_after_two) = rt.block_on(bounded(stream_counts(&db)));
    assert_eq!(leads_after_two, 400, "the second run adds a week to the same history");
    assert!(tickets_after_two > tickets_after_one);

    let (ok, listed, err) = run_bounded(
        env!("CARGO_BIN_EXE_es"),
        &["--db", db_arg, "streams", "--type", "ticket"],
        dir.path(),
        Duration::from_secs(60),
    );
    assert!(ok, "es streams failed:\n{listed}\n{err}");
    assert!(listed.contains("ticket/"), "es lists the ticket streams:\n{listed}");

    // `-- --memory` keeps everything in memory: no file anywhere in the working directory.
    let scratch = tempfile::tempdir().expect("an empty working directory");
    let (ok, out, err) = run_bounded(env!("CARGO_BIN_EXE_domains"), &["--memory"], scratch.path(), limit);
    assert!(ok, "the in-memory run failed:\n{out}\n{err}");
    assert!(
        out.contains("200 leads"),
        "the in-memory run plays the sales week:\n{out}"
    );
    let left: Vec<_> = std::fs::read_dir(scratch.path()).expect("list").collect();
    assert!(left.is_empty(), "an in-memory run leaves no file: {left:?}");
}

/// Lead and ticket streams in the demo's file, counted through the store's global log.
async fn stream_counts(db: &Path) -> (usize, usize) {
    use es_core::GlobalLog;
    use std::collections::BTreeSet;
    let store = SqliteStore::open(db).await.expect("open the demo's file");
    let mut streams = BTreeSet::new();
    let mut from = 0;
    loop {
        let page = store.read_all(from, 1000).await.expect("the global log");
        let Some(last) = page.last() else { break };
        from = last.position;
        for event in &page {
            streams.insert((event.stream.aggregate_type.clone(), event.stream.aggregate_id.clone()));
        }
    }
    let count = |kind: &str| streams.iter().filter(|(t, _)| t == kind).count();
    (count("lead"), count("ticket"))
}

/// README "The two commands", second half: `es state <stream> --version N` is time travel from
/// the command line. On lead 1 of the seed, version 5 is the first five events (seed line 193):
/// FOLLOWUP_SET, named `aaa`, called twice; now it is CONVERTED. The lead is written both as
/// the demo writes leads (sealed by a `PiiStore`) and through a plain store (the Lead docs: sealed
/// only "when the store is a PiiStore").
#[test]
fn es_state_time_travels_over_the_seed_lead() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("leads.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(bounded(async {
        let inner = SqliteStore::open(&db).await.expect("open");
        inner.migrate().await.expect("migrate");
        let sealed = forgettable_leads(inner.clone(), inner.clone()).expect("a PII store");
        play_seed_lead_1(&Repository::<Lead, _>::new(sealed), "1", |_| {}).await;
        play_seed_lead_1(&Repository::<Lead, _>::new(inner), "plain", |_| {}).await;
    }));
    let db_arg = db.to_str().expect("a UTF-8 path");
    for id in ["1", "plain"] {
        let stream = format!("lead/{id}");
        let state = |version: Option<&str>| {
            let mut args = vec!["--db", db_arg, "--json", "state", stream.as_str()];
            args.extend(version.map(|v| ["--version", v]).into_iter().flatten());
            let (ok, out, err) = run_bounded(env!("CARGO_BIN_EXE_es"), &args, dir.path(), Duration::from_secs(60));
            assert!(ok, "es {args:?} failed:\n{out}\n{err}");
            serde_json::from_str::<serde_json::Value>(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
        };
        let v5 = state(Some("5"));
        assert_eq!(v5["version"], 5, "{stream}: {v5}");
        assert_eq!(v5["state"]["status"], "FOLLOWUP_SET", "{stream}: {v5}");
        assert_eq!(v5["state"]["contacts"], 2, "{stream}: {v5}");
        assert_eq!(v5["state"]["name"], "aaa", "{stream}: {v5}");
        let latest = state(None);
        assert_eq!(latest["version"], 7, "{stream}: {latest}");
        assert_eq!(latest["state"]["status"], "CONVERTED", "{stream}: {latest}");
    }
}
