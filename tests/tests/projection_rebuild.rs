//! Blue/green rebuilds on the in-memory model: readers see the complete live model all along,
//! and after the switch every event is in the new model exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use es_core::{
    async_trait, event, Aggregate, Apply, DecodedEvent, HandlerError, InMemoryReadModel, InMemoryStore, Metadata,
    Projection, ProjectionError, ProjectionRunner, Repository, RunnerOptions,
};
use serde::{Deserialize, Serialize};

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct Deposited {
    pub cents: u64,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum AccountEvent {
    Deposited(Deposited),
}

#[derive(Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "account", event = AccountEvent)]
pub struct Account;

impl Apply<Deposited> for Account {
    fn apply(&mut self, _: &Deposited) {}
}

/// Two copies of the balances, as two tables would be: the one readers use, and the one a
/// rebuild fills. `version` tells them apart.
#[derive(Debug, Clone, Default)]
struct Tables {
    live: Balances,
    next: Balances,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Balances {
    /// Which build of the model this is.
    version: u32,
    /// Deposits handled, per account.
    deposits: BTreeMap<String, Vec<u64>>,
}

impl Balances {
    fn total(&self) -> u64 {
        self.deposits.values().flatten().sum()
    }
}

/// Writes to one of the two tables.
struct BalanceProjection {
    into_next: bool,
}

#[async_trait]
impl Projection for BalanceProjection {
    const NAME: &'static str = "balances";
    type Event = AccountEvent;
    type Context = Tables;

    async fn handle(&self, tables: &mut Tables, event: &DecodedEvent<AccountEvent>) -> Result<(), HandlerError> {
        let AccountEvent::Deposited(deposit) = &event.event;
        let table = if self.into_next {
            &mut tables.next
        } else {
            &mut tables.live
        };
        let account = table
            .deposits
            .entry(event.envelope.stream.aggregate_id.clone())
            .or_default();
        account.push(deposit.cents);
        Ok(())
    }

    async fn reset(&self, tables: &mut Tables) -> Result<(), HandlerError> {
        let table = if self.into_next {
            &mut tables.next
        } else {
            &mut tables.live
        };
        *table = Balances {
            version: table.version + 1,
            ..Balances::default()
        };
        Ok(())
    }
}

async fn deposit(store: &InMemoryStore, account: &str, cents: u64) -> u64 {
    let repo = Repository::<Account, _>::new(store.clone());
    let events = move |_: &Account| vec![Deposited { cents }.into()];
    repo.execute(account, Metadata::new(), events)
        .await
        .expect("deposit")
        .position()
}

fn options() -> RunnerOptions {
    RunnerOptions {
        batch_size: 5,
        poll_interval: Duration::from_millis(2),
        ..RunnerOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_beside_the_live_model_switches_without_readers_seeing_a_partial_model() {
    const WAIT: Duration = Duration::from_secs(10);
    let store = InMemoryStore::new();
    let mut head = 0;
    for n in 1..=40 {
        head = deposit(&store, &format!("acct-{}", n % 7), n).await;
    }
    let model = InMemoryReadModel::<Tables>::new();
    let live = ProjectionRunner::new(BalanceProjection { into_next: false }, store.clone(), model.clone())
        .with_options(options());
    let live_progress = live.progress();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let wake = store.wake_up();
    let live_task = tokio::spawn(async move { live.run(wake, async { stopped.await.unwrap_or_default() }).await });
    live_progress
        .wait_for(head, WAIT)
        .await
        .expect("the live model catches up");
    let complete = model.read(|tables| tables.live.clone());
    assert_eq!(complete.total(), (1..=40).sum::<u64>());

    // Writers go on during the rebuild; readers check the live model after every batch of it.
    let writer = tokio::spawn({
        let store = store.clone();
        async move {
            let mut head = 0;
            for n in 41..=60 {
                head = deposit(&store, &format!("acct-{}", n % 7), n).await;
                tokio::task::yield_now().await;
            }
            head
        }
    });
    let next = ProjectionRunner::new(BalanceProjection { into_next: true }, store.clone(), model.clone())
        .with_name("balances-next")
        .with_options(options());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let rebuilt = next
        .rebuild_beside(
            "balances",
            |_| {
                let live = model.read(|tables| tables.live.clone());
                seen.lock().expect("seen").push(live);
            },
            |tables| {
                Box::pin(async move {
                    std::mem::swap(&mut tables.live, &mut tables.next);
                    Ok(())
                })
            },
        )
        .await
        .expect("rebuilt and switched");
    assert!(rebuilt.read >= 40, "the copy replayed every event: {rebuilt:?}");
    for live in seen.lock().expect("seen").iter() {
        assert_eq!(
            live.version, complete.version,
            "readers saw the old build during the rebuild"
        );
        assert!(live.total() >= complete.total(), "and never a partial one: {live:?}");
    }

    let head = writer.await.expect("writer");
    live_progress
        .wait_for(head, WAIT)
        .await
        .expect("the live runner goes on after the switch");
    let switched = model.read(|tables| tables.live.clone());
    assert_eq!(switched.version, 1, "readers now see the rebuilt copy");
    assert_eq!(switched.total(), (1..=60).sum::<u64>(), "every event in it");
    let mut handled: Vec<u64> = switched.deposits.values().flatten().copied().collect();
    handled.sort_unstable();
    assert_eq!(handled, (1..=60).collect::<Vec<_>>(), "exactly once");
    let _ = stop.send(());
    live_task.await.expect("join").expect("the live runner stops cleanly");
}

#[tokio::test]
async fn a_copy_must_have_a_name_of_its_own() {
    let store = InMemoryStore::new();
    let next = ProjectionRunner::new(
        BalanceProjection { into_next: true },
        store,
        InMemoryReadModel::<Tables>::new(),
    );
    let refused = next
        .rebuild_beside("balances", |_| {}, |_| Box::pin(async { Ok(()) }))
        .await;
    assert!(matches!(refused, Err(ProjectionError::Switch { .. })), "{refused:?}");
}
