use es_core::{event, UpcastError};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
pub struct EscalatedV1 {}

fn v2_to_v3(payload: Value) -> Result<Value, UpcastError> {
    Ok(payload)
}

#[event(version = 3)]
#[upcast(from = 1, typed = EscalatedV1)]
#[upcast(from = 2, json = v2_to_v3)]
pub struct TicketEscalated {
    pub reason: String,
}

fn main() {}
