use es_core::{event, Aggregate, Apply};
use serde::{Deserialize, Serialize};

#[event]
pub struct Deposited;

#[event]
pub enum AccountEvent {
    Deposited(Deposited),
}

fn v1_to_v2(state: serde_json::Value) -> Result<serde_json::Value, es_core::UpcastError> {
    Ok(state)
}

// The snapshot state is at version 4: steps from 2 and 3 are missing, and one from 4 is at the
// current version.
#[derive(Default, Serialize, Deserialize, Aggregate)]
#[aggregate(event = AccountEvent, snapshot_version = 4)]
#[upcast(from = 1, json = v1_to_v2)]
#[upcast(from = 4, json = v1_to_v2)]
pub struct Account;

impl Apply<Deposited> for Account {
    fn apply(&mut self, _: &Deposited) {}
}

fn main() {}
