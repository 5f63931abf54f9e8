//! Commands as users write them: what `execute` reports, idempotent commands, retries after
//! outages and lost answers, async decisions, and load–change–save.

use std::sync::atomic::Ordering;
use std::time::Duration;

use es_core::{
    command_event_id, CommandError, EventStore, InMemoryStore, Metadata, RecordedEvent, Repository, RepositoryError,
    RetryPolicy, StoreError, StreamSlice,
};
use futures_util::TryStreamExt;
use uuid::Uuid;

mod support;

use support::{add, new_id, Added, Counter, CounterEvent, InstrumentedStore, NotPositive};

/// Stops at the first refusal: a command that is not idempotent by itself.
fn add_once(counter: &Counter) -> Result<Vec<CounterEvent>, &'static str> {
    match counter.changes {
        0 => Ok(vec![Added { amount: 1 }.into(), Added { amount: 2 }.into()]),
        _ => Err("already added"),
    }
}

#[tokio::test]
async fn execute_reports_where_its_events_went_and_links_them_to_the_command() {
    let repo = Repository::<Counter, _>::new(InMemoryStore::new());
    let id = new_id();
    repo.execute(id.as_str(), Metadata::new(), add(1))
        .await
        .expect("accepted");
    let done = repo
        .execute(id.as_str(), Metadata::new().with_actor("alice"), add_twice)
        .await
        .expect("accepted");
    let stored: Vec<_> = repo.events(&id, StreamSlice::from_version(2)).await.expect("read");
    assert_eq!(done.appended.len(), 2);
    for (appended, stored) in done.appended.iter().zip(&stored) {
        assert_eq!(appended.event_id, stored.envelope.event_id);
        assert_eq!(appended.version, stored.envelope.version);
        assert_eq!(appended.position, stored.envelope.position);
        let metadata = &stored.envelope.metadata;
        assert_eq!(metadata.command_id, Some(done.command_id));
        assert_eq!(metadata.causation_id, Some(done.command_id), "caused by the command");
        assert_eq!(
            metadata.correlation_id,
            Some(done.command_id),
            "it starts the conversation"
        );
        assert_eq!(metadata.actor.as_deref(), Some("alice"));
    }
    assert_eq!(
        done.appended[0].event_id,
        command_event_id(
            done.command_id,
            &Repository::<Counter, InMemoryStore>::stream_id(&id),
            0
        )
    );
    assert!(!done.already_stored);
}

fn add_twice(_: &Counter) -> Vec<CounterEvent> {
    vec![Added { amount: 1 }.into(), Added { amount: 2 }.into()]
}

/// The stored envelope of the first event of counter `id`.
async fn first_envelope(repo: &Repository<Counter, InMemoryStore>, id: &str) -> RecordedEvent {
    let events = repo.events(id, StreamSlice::all()).await.expect("read");
    events.into_iter().next().expect("an event").envelope
}

#[tokio::test]
async fn a_command_reacting_to_an_event_names_it_as_cause() {
    let repo = Repository::<Counter, _>::new(InMemoryStore::new());
    let (trigger, reaction) = (new_id(), new_id());
    let correlation = Uuid::now_v7();
    repo.execute(&trigger, Metadata::new().with_correlation_id(correlation), add(1))
        .await
        .expect("accepted");
    let cause = first_envelope(&repo, &trigger).await;
    let done = repo
        .execute(&reaction, Metadata::caused_by(&cause), add(2))
        .await
        .expect("accepted");
    let effect = first_envelope(&repo, &reaction).await;
    assert_eq!(effect.metadata.causation_id, Some(cause.event_id));
    assert_eq!(
        effect.metadata.correlation_id,
        Some(correlation),
        "the conversation goes on"
    );
    assert_eq!(effect.metadata.command_id, Some(done.command_id));
}

/// A consumer sees an event again (at-least-once delivery): its reaction, named, is carried
/// out once; another reaction to the same event is a command of its own.
#[tokio::test]
async fn a_reaction_to_an_event_seen_again_is_carried_out_once() {
    let repo = Repository::<Counter, _>::new(InMemoryStore::new());
    let (trigger, reaction) = (new_id(), new_id());
    repo.execute(&trigger, Metadata::new(), add(1)).await.expect("accepted");
    let cause = first_envelope(&repo, &trigger).await;
    let first = repo
        .execute(&reaction, Metadata::in_reaction_to(&cause, "add two"), add(2))
        .await
        .expect("accepted");
    let again = repo
        .execute(&reaction, Metadata::in_reaction_to(&cause, "add two"), add(2))
        .await
        .expect("answered");
    assert!(!first.already_stored);
    assert!(again.already_stored, "recognised as the same command");
    assert_eq!((again.version, again.command_id), (first.version, first.command_id));
    let other = repo
        .execute(&reaction, Metadata::in_reaction_to(&cause, "add three"), add(3))
        .await
        .expect("accepted");
    assert!(!other.already_stored, "another reaction is another command");
    let counter = repo.load(&reaction).await.expect("load");
    assert_eq!((counter.version, counter.aggregate.total), (2, 5));
    let effect = first_envelope(&repo, &reaction).await;
    assert_eq!(effect.metadata.causation_id, Some(cause.event_id));
    // Without a command id, the same reaction is carried out again: what `in_reaction_to` is for.
    let twice = repo
        .execute(&reaction, Metadata::caused_by(&cause), add(2))
        .await
        .expect("accepted");
    assert!(!twice.already_stored);
}

#[tokio::test]
async fn a_command_sent_again_returns_the_original_outcome_and_writes_nothing() {
    let repo = Repository::<Counter, _>::new(InMemoryStore::new());
    let id = new_id();
    let request = Uuid::now_v7();
    let first = repo
        .execute(&id, Metadata::new().with_command_id(request), add_once)
        .await
        .expect("accepted");
    repo.execute(&id, Metadata::new(), add(10))
        .await
        .expect("another command");

    // The decision now refuses, yet the same request is answered as before.
    let again = repo
        .execute(&id, Metadata::new().with_command_id(request), add_once)
        .await
        .expect("recognised, not refused");
    assert!(again.already_stored);
    assert_eq!(again.command_id, request);
    assert_eq!(again.appended, first.appended);
    assert_eq!(again.events, first.events);
    assert_eq!(
        (again.version, again.aggregate.clone()),
        (first.version, first.aggregate.clone()),
        "the state right after it"
    );

    // A decision that would now append again is recognised too (same ids, same place).
    let replayed = repo
        .execute(&id, Metadata::new().with_command_id(request), add_twice)
        .await
        .expect("recognised");
    assert!(replayed.already_stored);
    assert_eq!(replayed.appended, first.appended);
    assert_eq!(repo.load(&id).await.expect("load").version, 3, "nothing written twice");
    let found = repo.find_command(&id, request).await.expect("look up").expect("found");
    assert_eq!(found.appended, first.appended);
    assert!(repo.find_command(&id, Uuid::now_v7()).await.expect("look up").is_none());
}

#[tokio::test]
async fn an_answer_lost_after_commit_is_retried_into_the_original_outcome() {
    let store = InstrumentedStore::losing_answers(1);
    let repo = Repository::<Counter, _>::new(store.clone());
    let id = new_id();
    let done = repo.execute(&id, Metadata::new(), add_once).await.expect("retried");
    assert_eq!(done.attempts, 2, "the lost answer was retried");
    assert!(done.already_stored, "the first attempt had committed");
    assert_eq!((done.version, done.aggregate.total), (2, 3));
    let stored: Vec<_> = store
        .read_stream(
            &Repository::<Counter, InstrumentedStore>::stream_id(&id),
            StreamSlice::all(),
        )
        .try_collect()
        .await
        .expect("read");
    assert_eq!(stored.len(), 2, "one copy of the events");
    assert_eq!(store.lost_answers.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn outages_are_retried_within_the_budget_then_returned() {
    let store = InstrumentedStore::with_outages(2);
    let repo = Repository::<Counter, _>::new(store.clone());
    let id = new_id();
    let done = repo.execute(&id, Metadata::new(), add(4)).await.expect("third attempt");
    assert_eq!((done.attempts, done.version, done.already_stored), (3, 1, false));

    let down = InstrumentedStore::with_outages(u32::MAX);
    let patient = RetryPolicy::default()
        .with_max_attempts(3)
        .with_backoff(Duration::ZERO, Duration::ZERO);
    let repo = Repository::<Counter, _>::new(down).with_retry(patient);
    match repo.execute(&id, Metadata::new(), add(4)).await {
        Err(CommandError::Repository(RepositoryError::Store(error))) => assert!(error.is_transient(), "{error}"),
        other => panic!("expected the outage, got {other:?}"),
    }
    let impatient =
        Repository::<Counter, _>::new(InstrumentedStore::with_outages(1)).with_retry(RetryPolicy::no_retries());
    assert!(matches!(
        impatient.execute(&id, Metadata::new(), add(4)).await,
        Err(CommandError::Repository(RepositoryError::Store(
            StoreError::Unavailable(_)
        )))
    ));
}

#[tokio::test]
async fn the_time_budget_ends_retries() {
    let store = InstrumentedStore::with_outages(u32::MAX);
    let policy = RetryPolicy::default()
        .with_max_attempts(u32::MAX)
        .with_max_elapsed(Duration::from_millis(50))
        .with_backoff(Duration::from_millis(5), Duration::from_millis(5));
    let repo = Repository::<Counter, _>::new(store).with_retry(policy);
    let refused = repo.execute(&new_id(), Metadata::new(), add(1)).await;
    assert!(matches!(refused, Err(CommandError::Repository(_))), "{refused:?}");
}

async fn price_of(amount: i64) -> Result<i64, NotPositive> {
    tokio::task::yield_now().await;
    if amount <= 0 {
        return Err(NotPositive);
    }
    Ok(amount * 10)
}

#[tokio::test]
async fn decisions_may_await_and_the_command_can_be_spawned() {
    let repo = Repository::<Counter, _>::new(InMemoryStore::new());
    let id = new_id();
    let task = {
        let (repo, id) = (repo.clone(), id.clone());
        tokio::spawn(async move {
            repo.execute_async(&id, Metadata::new(), |counter| {
                Box::pin(async move {
                    let amount = price_of(counter.total + 1).await?;
                    // As in any async block, `?` leaves the error type to be named once.
                    Ok::<_, NotPositive>(vec![Added { amount }.into()])
                })
            })
            .await
        })
    };
    let done = task.await.expect("joined").expect("accepted");
    assert_eq!(done.aggregate.total, 10);
    let refused = repo
        .execute_async(&id, Metadata::new(), |_| {
            Box::pin(async { price_of(-1).await.map(|_| vec![]) })
        })
        .await;
    assert!(
        matches!(refused, Err(CommandError::Rejected(NotPositive))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn two_copies_loaded_together_cannot_both_be_saved() {
    let repo = Repository::<Counter, _>::new(InMemoryStore::new());
    let id = new_id();
    repo.execute(&id, Metadata::new(), add(1)).await.expect("accepted");
    let mut first = repo.load_for_update(&id).await.expect("load");
    let mut second = repo.load_for_update(&id).await.expect("load");
    first.decide(add(2)).expect("decided");
    first.record(Added { amount: 3 });
    assert_eq!((first.loaded_version(), first.version(), first.total), (1, 3, 6));
    let saved = repo.save(&mut first, Metadata::new()).await.expect("saved");
    assert_eq!((saved.version, saved.appended.len()), (3, 2));
    assert!(first.pending().is_empty());

    second.decide(add(100)).expect("decided");
    match repo.save(&mut second, Metadata::new()).await {
        Err(RepositoryError::Conflict(conflict)) => assert_eq!(conflict.actual, 3),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(second.pending().len(), 1, "kept, for the caller to look at");
    assert_eq!(repo.load(&id).await.expect("load").aggregate.total, 6);
    assert!(matches!(second.decide(add(-1)), Err(NotPositive)));

    // The saved copy goes on from its new version.
    first.record(Added { amount: 4 });
    assert_eq!(repo.save(&mut first, Metadata::new()).await.expect("saved").version, 4);
}

#[tokio::test]
async fn a_save_that_lost_its_answer_is_saved_again_without_a_copy() {
    let store = InstrumentedStore::losing_answers(1);
    let repo = Repository::<Counter, _>::new(store.clone());
    let id = new_id();
    let mut counter = repo.load_for_update(&id).await.expect("load");
    counter.record(Added { amount: 5 });
    let lost = repo.save(&mut counter, Metadata::new()).await;
    assert!(
        matches!(lost, Err(RepositoryError::Store(ref error)) if error.is_transient()),
        "{lost:?}"
    );
    let saved = repo.save(&mut counter, Metadata::new()).await.expect("saved again");
    assert!(saved.already_stored);
    assert_eq!((saved.version, counter.loaded_version(), counter.total), (1, 1, 5));
    assert_eq!(repo.load(&id).await.expect("load").version, 1, "one copy");
}
