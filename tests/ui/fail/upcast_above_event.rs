use es_core::event;

// `#[upcast]` belongs below `#[event]`, which reads it; above, nothing reads it.
#[upcast(from = 1, json = add_reason)]
#[event(version = 2)]
pub struct TicketEscalated {
    pub reason: String,
}

fn add_reason(payload: serde_json::Value) -> Result<serde_json::Value, es_core::UpcastError> {
    Ok(payload)
}

fn main() {}
