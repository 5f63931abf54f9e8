use es_core::event;

fn add_reason(payload: serde_json::Value) -> Result<serde_json::Value, es_core::UpcastError> {
    Ok(payload)
}

// `jsn` for `json`: one error, not a second one for the step it then lacks.
#[event(version = 2)]
#[upcast(from = 1, jsn = add_reason)]
pub struct TicketEscalated {
    pub reason: String,
}

fn main() {}
