use es_core::{event, UpcastError};
use serde_json::Value;

fn step(payload: Value) -> Result<Value, UpcastError> {
    Ok(payload)
}

#[event(version = 2)]
#[upcast(from = 1, json = step)]
#[upcast(from = 2, json = step)]
pub struct TicketEscalated {
    pub reason: String,
}

fn main() {}
