//! The es-core repository on SQLite: commands, loads at a version, snapshots.

use es_core::{event, Aggregate, Apply, Metadata, Repository};
use serde::{Deserialize, Serialize};

use crate::support::fresh;

#[event(name = "Deposited")]
#[derive(Debug, Clone, PartialEq)]
pub struct Deposited {
    pub cents: u64,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum AccountEvent {
    Deposited(Deposited),
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "account", id = String, event = AccountEvent)]
pub struct Account {
    pub balance: u64,
}

impl Apply<Deposited> for Account {
    fn apply(&mut self, event: &Deposited) {
        self.balance += event.cents;
    }
}

fn deposit(cents: u64) -> impl Fn(&Account) -> Vec<AccountEvent> {
    move |_| vec![Deposited { cents }.into()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_executes_loads_in_the_past_and_snapshots() {
    let db = fresh().await;
    let accounts = Repository::<Account, _>::new(db.store.clone()).with_snapshot_every(10);
    let id = "a-1".to_string();
    for cents in 1..=25 {
        accounts
            .execute(&id, Metadata::new(), deposit(cents))
            .await
            .expect("deposit");
    }
    let now = accounts.load(&id).await.expect("load");
    assert_eq!((now.aggregate.balance, now.version), ((1..=25).sum(), 25));
    let past = accounts.load_at_version(&id, 3).await.expect("load at version 3");
    assert_eq!(past.aggregate.balance, 6);
    let snapshot = es_core::SnapshotStore::load_snapshot(&db.store, &es_core::StreamId::new("account", "a-1"))
        .await
        .expect("load snapshot")
        .expect("a snapshot was taken");
    assert!(snapshot.version >= 10, "snapshot at version {}", snapshot.version);
}
