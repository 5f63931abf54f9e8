//! A snapshot state upcast through an older Rust type, and the trait's default decoding for an
//! aggregate without steps.
use es_core::{event, Aggregate, Apply};
use serde::{Deserialize, Serialize};

#[event]
#[derive(Debug)]
pub struct Deposited {
    pub cents: u64,
}

#[event]
#[derive(Debug)]
pub enum AccountEvent {
    Deposited(Deposited),
}

#[derive(Debug, Default, PartialEq, Serialize, Deserialize, Aggregate)]
#[aggregate(event = AccountEvent, snapshot_version = 2)]
#[upcast(from = 1, typed = AccountV1)]
pub struct Account {
    cents: u64,
    deposits: u32,
}

#[derive(Deserialize)]
pub struct AccountV1 {
    balance: u64,
}

impl From<AccountV1> for Account {
    fn from(v1: AccountV1) -> Self {
        Account { cents: v1.balance, deposits: 0 }
    }
}

impl Apply<Deposited> for Account {
    fn apply(&mut self, event: &Deposited) {
        self.cents += event.cents;
        self.deposits += 1;
    }
}

#[derive(Debug, Default, PartialEq, Serialize, Deserialize, Aggregate)]
#[aggregate(event = AccountEvent)]
pub struct Plain {
    cents: u64,
}

impl Apply<Deposited> for Plain {
    fn apply(&mut self, event: &Deposited) {
        self.cents += event.cents;
    }
}

fn main() {
    assert_eq!(Account::SNAPSHOT_VERSION, 2);
    let upcast = Account::decode_snapshot(1, br#"{"balance": 7}"#).unwrap();
    assert_eq!(upcast, Account { cents: 7, deposits: 0 });
    let current = Account::decode_snapshot(2, br#"{"cents": 9, "deposits": 3}"#).unwrap();
    assert_eq!(current, Account { cents: 9, deposits: 3 });
    assert!(Account::decode_snapshot(3, b"{}").is_err());

    assert_eq!(Plain::SNAPSHOT_VERSION, 1);
    assert_eq!(Plain::decode_snapshot(1, br#"{"cents": 4}"#).unwrap(), Plain { cents: 4 });
    let newer = Plain::decode_snapshot(2, br#"{"cents": 4}"#).unwrap_err();
    assert!(newer.to_string().contains("schema version 2"), "{newer}");
}
