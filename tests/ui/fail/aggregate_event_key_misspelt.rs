use es_core::{event, Aggregate};
use serde::{Deserialize, Serialize};

#[event]
pub struct Opened;

#[event]
pub enum AccountEvent {
    Opened(Opened),
}

// `events` for `event`: one error naming the keys, not another saying no event type is named.
#[derive(Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "account", events = AccountEvent)]
pub struct Account;

fn main() {}
