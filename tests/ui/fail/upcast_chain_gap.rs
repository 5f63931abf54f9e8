use es_core::{event, UpcastError};
use serde_json::Value;

fn v1_to_v2(payload: Value) -> Result<Value, UpcastError> {
    Ok(payload)
}

#[event(version = 4)]
#[upcast(from = 1, json = v1_to_v2)]
pub struct TicketEscalated {
    pub reason: String,
}

fn main() {}
